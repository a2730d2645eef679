//! Model test of held calls: one agent whose tunnel drops and comes back
//! with calls, hang-ups, answers and time in between, in random order. A
//! small model says what the engine must answer at every step: a call while
//! the agent is online goes to its tunnel; while it is away within the grace
//! it is held (up to the per-agent bound, then 503); held calls reach the
//! next tunnel oldest first right after `auth_ok`, or get 502 at the grace;
//! calls a dying tunnel had taken get 502 `tunnel_closed` and are never
//! re-sent; a held caller that hangs up is forgotten.

use osaurus_relay_engine::frame::ServerFrame;
use osaurus_relay_engine::{CallId, Config, Input, Output, TunnelId};
use osaurus_relay_tests::harness::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

const GRACE: u64 = 1_000;
const PER_AGENT: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Connect,
    Close,
    /// `true`: a POST with a body.
    Call(bool),
    Reply(usize),
    Gone(usize),
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Connect),
        2 => Just(Op::Close),
        6 => any::<bool>().prop_map(Op::Call),
        3 => (0usize..8).prop_map(Op::Reply),
        1 => (0usize..8).prop_map(Op::Gone),
        3 => prop_oneof![0u64..300, 900u64..1_200].prop_map(Op::Tick),
    ]
}

#[derive(Default)]
struct Model {
    tunnel: Option<TunnelId>,
    left_at: Option<u64>,
    now: u64,
    /// Held calls with their deadlines, oldest first.
    held: VecDeque<(CallId, u64)>,
    /// Calls sent to the tunnel, with their request ids.
    inflight: Vec<(CallId, String)>,
}

type Answers = BTreeMap<CallId, (u16, String)>;

/// Answers by call, frames by tunnel, in output order.
fn seen(out: &[Output]) -> (Answers, Vec<(TunnelId, ServerFrame)>) {
    let mut answers = BTreeMap::new();
    let mut sent = Vec::new();
    for o in out {
        match o {
            Output::Respond { call, response } => {
                let body = String::from_utf8_lossy(&response.body).into_owned();
                assert!(
                    answers.insert(*call, (response.status, body)).is_none(),
                    "two answers"
                );
            }
            Output::SendFrame { tunnel, text } => {
                sent.push((*tunnel, ServerFrame::parse(text).expect("a valid frame")))
            }
            _ => {}
        }
    }
    (answers, sent)
}

fn error(status: u16, code: &str) -> (u16, String) {
    (status, format!(r#"{{"error":"{code}"}}"#))
}

fn run(ops: Vec<Op>) {
    let mut h = Harness::new(Config {
        reconnect_grace: Duration::from_millis(GRACE),
        max_held_per_agent: PER_AGENT as u32,
        tunnel_connects_per_min: 0,
        agent_requests_per_min: 0,
        caller_requests_per_min: 0,
        // Only the tunnel's own fate ends its calls here.
        response_timeout: Duration::from_secs(3_600),
        ping_interval: Duration::from_secs(3_600),
        ..test_config()
    });
    let a = key(1);
    let mut m = Model::default();
    for op in ops {
        let mut want = Answers::new();
        let out = match op {
            Op::Connect if m.tunnel.is_none() => {
                let (t, nonce) = h.open_from("192.0.2.1");
                let out = h.text(t, &h.auth_frame(&[&a], &nonce));
                let (_, sent) = seen(&out);
                let frames: Vec<&ServerFrame> = sent.iter().map(|(_, f)| f).collect();
                assert!(
                    matches!(frames.first(), Some(ServerFrame::AuthOk { .. })),
                    "{out:?}"
                );
                // The held calls, oldest first, right after auth_ok.
                let paths: Vec<String> = (frames[1..].iter())
                    .map(|f| match f {
                        ServerFrame::Request { path, .. } => path.clone(),
                        other => panic!("{other:?}"),
                    })
                    .collect();
                let held: Vec<String> = m.held.iter().map(|(c, _)| format!("/c{}", c.0)).collect();
                assert_eq!(paths, held);
                for ((c, _), f) in m.held.drain(..).zip(&frames[1..]) {
                    if let ServerFrame::Request { id, .. } = f {
                        m.inflight.push((c, id.clone()));
                    }
                }
                (m.tunnel, m.left_at) = (Some(t), None);
                out
            }
            Op::Close if m.tunnel.is_some() => {
                for (c, _) in m.inflight.drain(..) {
                    want.insert(c, error(502, "tunnel_closed"));
                }
                let t = m.tunnel.take().unwrap();
                m.left_at = Some(m.now);
                h.step(Input::TunnelClosed { tunnel: t })
            }
            Op::Call(post) => {
                let call = h.new_call();
                let method = ["GET", "POST"][post as usize];
                let mut head = Harness::head(method, &format!("/c{}", call.0), &host_of(&a));
                let mut out = if post {
                    (head.content_length, head.body_follows) = (Some(4), true);
                    let mut out = h.step(Input::CallHead {
                        call,
                        head: head.view(),
                    });
                    out.extend(h.step(Input::CallBody {
                        call,
                        chunk: b"body",
                    }));
                    out
                } else {
                    h.step(Input::CallHead {
                        call,
                        head: head.view(),
                    })
                };
                if post {
                    out.extend(h.step(Input::CallBodyEnd { call }));
                }
                let (_, sent) = seen(&out);
                match m.tunnel {
                    Some(t) => {
                        let [(to, ServerFrame::Request { id, .. })] = sent.as_slice() else {
                            panic!("{out:?}")
                        };
                        assert_eq!(*to, t);
                        m.inflight.push((call, id.clone()));
                    }
                    None if m.left_at.is_some_and(|at| at + GRACE > m.now) => {
                        if m.held.len() >= PER_AGENT {
                            want.insert(call, error(503, "agent_reconnecting"));
                        } else {
                            m.held.push_back((call, m.now + GRACE));
                        }
                    }
                    None => {
                        want.insert(call, error(502, "agent_offline"));
                    }
                }
                out
            }
            Op::Reply(i) if !m.inflight.is_empty() => {
                let (c, id) = m.inflight.remove(i % m.inflight.len());
                want.insert(c, (200, "ok".into()));
                h.reply(m.tunnel.expect("a tunnel"), &id, 200, "ok")
            }
            Op::Gone(i) if !m.held.is_empty() || !m.inflight.is_empty() => {
                let n = m.held.len() + m.inflight.len();
                let i = i % n;
                let call = if i < m.held.len() {
                    m.held.remove(i).unwrap().0
                } else {
                    m.inflight.remove(i - m.held.len()).0
                };
                h.step(Input::CallGone { call })
            }
            Op::Tick(ms) => {
                m.now += ms;
                while m.held.front().is_some_and(|(_, at)| *at <= m.now) {
                    let (c, _) = m.held.pop_front().unwrap();
                    want.insert(c, error(502, "agent_offline"));
                }
                h.advance(ms)
            }
            _ => continue,
        };
        let (answers, _) = seen(&out);
        assert_eq!(answers, want, "after {op:?}: {out:?}");
    }
    assert_eq!(
        h.relay.stats().active_calls,
        m.held.len() + m.inflight.len()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn held_calls_follow_the_model(ops in prop::collection::vec(op(), 20..120)) {
        run(ops);
    }
}
