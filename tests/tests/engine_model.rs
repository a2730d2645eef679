//! A proptest state machine over the relay engine against a reference model.
//!
//! Every op runs on the engine and on the model. The model predicts each
//! answer, frame and close (random nonces and request ids aside); the engine
//! must emit exactly that, keep the `Ledger` invariants, and its sizes must
//! equal the model's live state after every step. At the end every tunnel
//! closes and every deadline passes: every call must be answered and all
//! state freed.

use osaurus_relay_engine::auth::SecretKey;
use osaurus_relay_engine::frame::AgentSig;
use osaurus_relay_engine::{CallId, Config, Input, Output, TunnelId};
use osaurus_relay_tests::harness::{
    checksum, host_of, ip, key, lower, test_config, Harness, DOMAIN,
};
use osaurus_relay_tests::sim::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use serde_json::json;
use std::collections::{BTreeMap, VecDeque};

#[path = "engine_model/rules.rs"]
mod rules;

const KEYS: usize = 5;
const IPS: [&str; 3] = ["192.0.2.1", "192.0.2.2", "2001:db8::1"];

/// How a client signs: right (with the newest or the oldest nonce it holds),
/// with a nonce the relay never issued, or with another key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    Newest,
    Oldest,
    WrongNonce,
    BadSig,
}

/// A call's body: none, announced by `content-length`, or chunked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    None,
    Declared(u64),
    Chunked,
}

/// Operands pick among the newest tunnels or calls (0 = newest) in the state
/// the op is meant for (`auth` at a tunnel awaiting it, say) unless `stray`.
#[derive(Clone, Debug)]
enum Op {
    /// Opens a WebSocket from one of `IPS`, maybe answering its challenge.
    Open(usize, Option<(Vec<usize>, How)>),
    Tunnel(usize, TunnelOp, bool),
    /// A call to an agent: an online one unless stray.
    Call(usize, Body, bool),
    OnCall(usize, CallOp, bool),
    /// Answers a dispatched call, on its own tunnel or on another one.
    Reply(usize, Answer, Option<usize>, bool),
    Tick(u64),
    Shutdown,
}

/// What a tunnel client (or its socket) does.
#[derive(Clone, Debug)]
enum TunnelOp {
    Auth(Vec<usize>, How),
    Challenge,
    Add(usize, How),
    Remove(usize),
    Closed,
    Binary,
    Junk(bool),
    Pong,
}

/// What a caller (or its socket) does.
#[derive(Clone, Copy, Debug)]
enum CallOp {
    /// A body chunk of that many bytes; `true`: bytes that are not UTF-8.
    Chunk(usize, bool),
    BodyEnd,
    Gone,
    Drained(u64),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum TunnelState {
    #[default]
    Pending,
    Authed,
    Closed,
}

/// A tunnel of the model; tunnel `i` is the engine's `TunnelId(i + 1)`.
#[derive(Default)]
struct ModelTunnel {
    ip: usize,
    st: TunnelState,
    /// The auth deadline while pending, the next ping after.
    at: u64,
    agents: Vec<usize>,
    /// Unused challenge nonces with the time each was issued.
    nonces: VecDeque<(String, u64)>,
    missed: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct ModelCall {
    agent: usize,
    tun: usize,
    /// Body bytes so far while the body arrives.
    body: Option<u64>,
    /// Some body byte was not UTF-8: the request frame carries base64.
    binary: bool,
    call: CallModel,
}

/// The engine and the reference model, driven side by side.
#[derive(Default)]
struct Run {
    e: Driven,
    d: Describer,
    keys: Vec<SecretKey>,
    cfg: Config,
    tuns: Vec<ModelTunnel>,
    agents: [Option<usize>; KEYS],
    calls: BTreeMap<u64, ModelCall>,
    dispatched: Vec<u64>,
    ip_open: [u32; IPS.len()],
    draining: Option<u64>,
    stopped: bool,
    /// What the model expects from the engine's current step.
    exp: Vec<(Scope, String)>,
}

type R = Result<(), TestCaseError>;

fn tid(t: usize) -> TunnelId {
    TunnelId(t as u64 + 1)
}

/// The `i`-th newest `aim`ed at among `all`; among all when `stray` or none is.
fn pick<X: Copy>(mut all: Vec<X>, aim: impl Fn(&X) -> bool, i: usize, stray: bool) -> Option<X> {
    all.reverse();
    let hits: Vec<X> = all.iter().copied().filter(aim).collect();
    let from = if stray || hits.is_empty() { all } else { hits };
    from.get(i % from.len().max(1)).copied()
}

impl Run {
    fn new() -> Self {
        // Limits off: the handler tests cover them, the model covers the rest.
        let cfg = Config {
            tunnel_connects_per_min: 0,
            max_tunnels_per_ip: 0,
            agent_requests_per_min: 0,
            caller_requests_per_min: 0,
            control_frames_per_min: 0,
            max_body_bytes: 64,
            max_stream_buffer: 24,
            max_chunk_bytes: 16,
            ..test_config()
        };
        let keys: Vec<SecretKey> = (1..=KEYS as u64).map(key).collect();
        let mut d = Describer::default();
        for (i, k) in keys.iter().enumerate() {
            d.names.insert(lower(k), format!("k{i}"));
        }
        let (mut run, e) = (Run::default(), Driven::new(cfg.clone(), 7));
        (run.e, run.d, run.keys, run.cfg) = (e, d, keys, cfg);
        run
    }

    fn now(&self) -> u64 {
        self.e.now.mono_ms
    }

    fn expect_frame(&mut self, t: usize, line: impl Into<String>) {
        self.exp.push((Scope::Tunnel(tid(t).0), line.into()));
    }

    fn expect_answer(&mut self, c: u64, lines: impl IntoIterator<Item = String>) {
        self.exp
            .extend(lines.into_iter().map(|l| (Scope::Call(c), l)));
    }

    fn phase(&self, c: u64) -> Phase {
        self.calls.get(&c).map_or(Phase::Done, |m| m.call.phase)
    }

    fn receiving(&self, c: u64) -> bool {
        self.calls.get(&c).is_some_and(|m| m.body.is_some())
    }

    fn count(&self, f: impl Fn(&ModelCall) -> bool) -> usize {
        self.calls.values().filter(|m| f(m)).count()
    }

    /// Feeds the engine one input the model has already taken, then checks.
    fn handle(&mut self, input: Input<'_>) -> R {
        let out = self.e.handle(input).map_err(TestCaseError::fail)?;
        self.after_handle();
        self.check(out)
    }

    fn text(&mut self, t: usize, text: &str) -> R {
        let tunnel = tid(t);
        self.handle(Input::TunnelText { tunnel, text })
    }

    fn check(&mut self, out: Vec<Output>) -> R {
        let got = by_scope(out.iter().filter_map(|o| self.d.describe(o)).collect());
        let want = by_scope(std::mem::take(&mut self.exp));
        prop_assert_eq!(got, want, "outputs at {} ms", self.now());
        for (t, nonce) in std::mem::take(&mut self.d.challenges) {
            if let Some(last) = self.tuns[t.0 as usize - 1].nonces.back_mut() {
                last.0 = nonce;
            }
        }
        let open = self
            .tuns
            .iter()
            .filter(|t| t.st != TunnelState::Closed)
            .count();
        let wired = self.count(|m| m.call.phase != Phase::Done);
        let live = wired + self.count(|m| m.body.is_some());
        let ips = self.ip_open.iter().filter(|n| **n > 0).count();
        let agents = self.agents.iter().flatten().count();
        let s = self.e.relay.sizes();
        let got = [s.tunnels, s.agents, s.ip_entries, s.calls, s.req_ids];
        let what = "tunnels, agents, ip entries, calls, request ids";
        prop_assert_eq!(got, [open, agents, ips, live, wired], "{}", what);
        let (st, authed) = (self.e.relay.stats(), self.tuns.iter());
        let authed = authed.filter(|t| t.st == TunnelState::Authed).count();
        let got = [st.active_tunnels, st.active_agents, st.active_calls];
        prop_assert_eq!(got, [authed, agents, live], "stats");
        // The sweep, one per tunnel, one per call sent to a tunnel, the drain.
        let drain = usize::from(self.draining.is_some() && !self.stopped);
        prop_assert_eq!(s.timers, 1 + open + wired + drain, "timers");
        for (k, key) in self.keys.iter().enumerate() {
            let want = self.agents[k].map(tid);
            prop_assert_eq!(self.e.relay.agent_tunnel(&key.address()), want, "k{}", k);
        }
        Ok(())
    }

    /// Moves the clock, stopping at every engine or model deadline on the way.
    fn tick(&mut self, ms: u64) -> R {
        let end = self.now() + ms;
        loop {
            let model = self.next_deadline().map(|d| d.0);
            let next = self.e.relay.poll_timeout().into_iter().chain(model).min();
            let Some(at) = next.filter(|at| *at <= end) else {
                break;
            };
            let out = self.e.timeout(at).map_err(TestCaseError::fail)?;
            self.fire();
            self.check(out)?;
        }
        self.e.set_time(end);
        Ok(())
    }

    fn apply(&mut self, op: &Op, call: CallId) -> R {
        let (n, c) = (self.tuns.len(), call.0);
        match op.clone() {
            Op::Open(i, auth) => {
                let mut head = Harness::head("GET", "/tunnel/connect", DOMAIN);
                (head.websocket, head.peer) = (true, ip(IPS[i]));
                if self.draining.is_some() {
                    self.expect_answer(c, [error_line(503, "relay_restarting")]);
                } else {
                    self.ip_open[i] += 1;
                    self.tuns.push(ModelTunnel::default());
                    let (at, tun) = (self.now() + ms(self.cfg.auth_timeout), &mut self.tuns[n]);
                    (tun.ip, tun.at) = (i, at);
                    tun.nonces.push_back((String::new(), 0));
                    self.expect_frame(n, format!("upgrade c{c}"));
                    self.expect_frame(n, "challenge");
                }
                self.handle(Input::CallHead {
                    call,
                    head: head.view(),
                })?;
                match auth {
                    Some((keys, how)) if self.tuns.len() > n => {
                        self.tunnel(n, TunnelOp::Auth(keys, how))
                    }
                    _ => Ok(()),
                }
            }
            Op::Call(a, body, stray) => {
                let online = |k: &usize| self.agents[*k].is_some();
                let agent = pick((0..KEYS).collect(), online, a, stray).unwrap_or(a);
                let method = ["GET", "POST"][(body != Body::None) as usize];
                let (target, host) = (format!("/c{c}"), host_of(&self.keys[agent]));
                let mut head = Harness::head(method, &target, &host);
                head.body_follows = body != Body::None;
                if let Body::Declared(n) = body {
                    head.content_length = Some(n);
                }
                let m = self.calls.entry(c).or_default();
                m.agent = agent;
                // Draining, calls for agents still here are served.
                if self.agents[agent].is_none() {
                    self.expect_answer(c, [error_line(502, "agent_offline")]);
                } else if matches!(body, Body::Declared(n) if n > self.cfg.max_body_bytes) {
                    self.expect_answer(c, [error_line(413, "body_too_large")]);
                } else {
                    m.body = Some(0);
                    if body == Body::None {
                        self.dispatch(c);
                    }
                }
                self.handle(Input::CallHead {
                    call,
                    head: head.view(),
                })
            }
            Op::OnCall(i, op, stray) => {
                let aim = |c: &u64| match op {
                    CallOp::Chunk(..) | CallOp::BodyEnd => self.receiving(*c),
                    CallOp::Gone => self.receiving(*c) || self.phase(*c) != Phase::Done,
                    CallOp::Drained(_) => self.phase(*c) == Phase::Streaming,
                };
                let Some(c) = pick(self.calls.keys().copied().collect(), aim, i, stray) else {
                    return Ok(());
                };
                let (call, m) = (CallId(c), self.calls.get_mut(&c).expect("picked"));
                match op {
                    CallOp::Chunk(len, binary) => {
                        m.binary |= binary && len > 0;
                        let size = m.body.map(|n| n + len as u64);
                        m.body = size.filter(|n| *n <= self.cfg.max_body_bytes);
                        if m.body != size {
                            self.expect_answer(c, [error_line(413, "body_too_large")]);
                        }
                        let chunk = &vec![if binary { 0xff } else { b'a' }; len];
                        self.handle(Input::CallBody { call, chunk })
                    }
                    CallOp::BodyEnd => {
                        self.dispatch(c);
                        self.handle(Input::CallBodyEnd { call })
                    }
                    CallOp::Gone => {
                        let (live, t) = (m.call.phase != Phase::Done, m.tun);
                        (m.body, m.call.phase) = (None, Phase::Done);
                        if live {
                            self.expect_frame(t, format!("cancel c{c}"));
                        }
                        self.handle(Input::CallGone { call })
                    }
                    CallOp::Drained(bytes) => {
                        m.call.queued = m.call.queued.saturating_sub(bytes);
                        self.handle(Input::CallDrained { call, bytes })
                    }
                }
            }
            Op::Reply(i, a, other, stray) => {
                let body = matches!(
                    a,
                    Answer::Chunk(_)
                        | Answer::Base64Chunk(_)
                        | Answer::BadBase64Chunk
                        | Answer::End
                );
                let want = [Phase::Waiting, Phase::Streaming][body as usize];
                let aim = |c: &u64| self.phase(*c) == want;
                let Some(c) = pick(self.dispatched.clone(), aim, i, stray) else {
                    return Ok(());
                };
                let own = self.calls[&c].tun;
                let t = other.map_or(own, |o| n - 1 - o % n);
                let text = a.frame(&self.d.call_req[&c]);
                // Only a live call's own tunnel may answer it; the rest is dropped.
                if self.after_auth(t, false) && t == own && self.phase(c) != Phase::Done {
                    let now = self.now();
                    let m = self.calls.get_mut(&c).expect("dispatched");
                    let (lines, cancel) = m.call.answer(&a, now, &self.cfg);
                    self.expect_answer(c, lines);
                    if cancel {
                        self.expect_frame(t, format!("cancel c{c}"));
                    }
                }
                self.text(t, &text)
            }
            Op::Tick(ms) => self.tick(ms),
            Op::Shutdown => {
                let at = self.now() + ms(self.cfg.drain_timeout);
                self.draining.get_or_insert(at);
                self.handle(Input::Shutdown)
            }
            Op::Tunnel(i, op, stray) => {
                let aim = |t: &usize| match (&op, &self.tuns[*t]) {
                    (TunnelOp::Auth(..), tun) => tun.st == TunnelState::Pending,
                    (TunnelOp::Add(..), tun) => {
                        tun.st == TunnelState::Authed && !tun.nonces.is_empty()
                    }
                    (_, tun) => tun.st == TunnelState::Authed,
                };
                match pick((0..n).collect(), aim, i, stray) {
                    Some(t) => self.tunnel(t, op),
                    None => Ok(()),
                }
            }
        }
    }

    /// `k`'s handshake entry, signed by another key when `forged`.
    fn sig(&self, k: usize, forged: bool, nonce: &str) -> AgentSig {
        let signer = &self.keys[(k + forged as usize) % KEYS];
        agent_sig(&self.keys[k], signer, nonce, self.e.now.unix_secs)
    }

    fn tunnel(&mut self, t: usize, op: TunnelOp) -> R {
        let (ts, now, tunnel) = (self.e.now.unix_secs, self.now(), tid(t));
        let q = &self.tuns[t].nonces;
        let nonce = match op {
            TunnelOp::Auth(_, How::WrongNonce) | TunnelOp::Add(_, How::WrongNonce) => None,
            TunnelOp::Add(_, How::Oldest) => q.front(),
            _ => q.back(),
        };
        let nonce = nonce.map_or_else(|| "ab".repeat(32), |(n, _)| n.clone());
        let frame = match op {
            TunnelOp::Closed => {
                self.drop_tunnel(t, None);
                return self.handle(Input::TunnelClosed { tunnel });
            }
            TunnelOp::Binary => {
                self.after_auth(t, true);
                return self.handle(Input::TunnelBinary { tunnel });
            }
            TunnelOp::Junk(syntax) => {
                self.after_auth(t, syntax);
                return self.text(t, ["{\"type\":\"hello\"}", "{nope"][syntax as usize]);
            }
            TunnelOp::Pong => {
                if self.after_auth(t, false) {
                    self.tuns[t].missed = 0;
                }
                json!({"type": "pong", "ts": ts})
            }
            TunnelOp::Challenge => {
                if self.after_auth(t, false) {
                    // At most `max_pending_nonces` unused: the oldest makes room.
                    let q = &mut self.tuns[t].nonces;
                    if q.len() >= self.cfg.max_pending_nonces.max(1) {
                        q.pop_front();
                    }
                    q.push_back((String::new(), now));
                    self.expect_frame(t, "challenge");
                }
                json!({"type": "request_challenge"})
            }
            TunnelOp::Remove(k) => {
                if self.after_auth(t, false) && self.tuns[t].agents.contains(&k) {
                    self.tuns[t].agents.retain(|x| *x != k);
                    self.end_agent_calls(t, k);
                    if self.agents[k] == Some(t) {
                        self.agents[k] = None;
                    }
                    self.expect_frame(t, format!("agent_removed k{k} -"));
                }
                json!({"type": "remove_agent", "address": checksum(&self.keys[k])})
            }
            TunnelOp::Auth(keys, how) => {
                let forged = |i| how == How::BadSig && i == 0;
                let sigs = keys.iter().enumerate();
                let agents: Vec<AgentSig> =
                    sigs.map(|(i, k)| self.sig(*k, forged(i), &nonce)).collect();
                self.auth(t, &keys, how);
                json!({"type": "auth", "agents": agents, "nonce": nonce, "timestamp": ts})
            }
            TunnelOp::Add(k, how) => {
                let AgentSig { address, signature } = self.sig(k, how == How::BadSig, &nonce);
                if self.after_auth(t, false) {
                    let ttl = ms(self.cfg.nonce_ttl);
                    let q = &mut self.tuns[t].nonces;
                    let at = q
                        .iter()
                        .position(|(n, _)| *n == nonce)
                        .and_then(|i| q.remove(i));
                    if at.is_none_or(|(_, at)| now > at + ttl) {
                        self.expect_frame(t, "error invalid_nonce");
                    } else if how == How::BadSig {
                        self.expect_frame(t, "error invalid_signature");
                    } else {
                        self.take_over(t, k);
                        self.expect_frame(t, format!("agent_added k{k}"));
                    }
                }
                json!({"type": "add_agent", "address": address, "signature": signature,
                    "nonce": nonce, "timestamp": ts})
            }
        };
        self.text(t, &frame.to_string())
    }

    /// Ends every body, closes every tunnel and lets every deadline pass:
    /// then every call must have been answered and all state freed.
    fn finish(&mut self) -> R {
        for c in self.calls.keys().copied().collect::<Vec<_>>() {
            if self.receiving(c) {
                self.dispatch(c);
                self.handle(Input::CallBodyEnd { call: CallId(c) })?;
            }
        }
        for t in 0..self.tuns.len() {
            self.tunnel(t, TunnelOp::Closed)?;
        }
        self.tick(100_000)?;
        self.e.check_clean().map_err(TestCaseError::fail)
    }
}

fn op() -> impl Strategy<Value = Op> {
    let i = || 0usize..4;
    let stray = || prop::bool::weighted(0.1);
    let how = || {
        use How::*;
        select(vec![
            Newest, Newest, Newest, Newest, Newest, Oldest, WrongNonce, BadSig,
        ])
    };
    let keys = prop_oneof![9 => vec(0usize..4, 1..=3), 1 => Just(vec![])];
    let auth = (keys, how());
    let tunnel = prop_oneof![
        4 => auth.clone().prop_map(|(k, h)| TunnelOp::Auth(k, h)),
        3 => (0..KEYS, how()).prop_map(|(k, h)| TunnelOp::Add(k, h)),
        1 => (0..KEYS).prop_map(TunnelOp::Remove),
        1 => any::<bool>().prop_map(TunnelOp::Junk),
        4 => select(vec![TunnelOp::Challenge, TunnelOp::Challenge, TunnelOp::Closed, TunnelOp::Binary]),
        8 => Just(TunnelOp::Pong),
    ];
    let call = prop_oneof![
        3 => (0usize..40, prop::bool::weighted(0.25)).prop_map(|(n, b)| CallOp::Chunk(n, b)),
        4 => (0u64..30).prop_map(CallOp::Drained),
        4 => select(vec![CallOp::BodyEnd, CallOp::BodyEnd, CallOp::BodyEnd, CallOp::Gone]),
    ];
    let body = prop_oneof![
        4 => Just(Body::None),
        1 => (0u64..100).prop_map(Body::Declared),
        1 => Just(Body::Chunked),
    ];
    let answer = {
        use Answer::*;
        let (ok, no_content) = (Response(200, "ok".into()), Response(204, "dropped".into()));
        let bytes = || prop::collection::vec(any::<u8>(), 0..24);
        prop_oneof![
            8 => (0usize..20).prop_map(|n| Chunk("x".repeat(n))),
            3 => bytes().prop_map(Base64Chunk),
            3 => Just(ok),
            2 => (prop::sample::select(vec![200u16, 204]), bytes()).prop_map(|(s, b)| Base64Response(s, b)),
            4 => Just(Start(200)),
            3 => Just(End),
            4 => select(vec![no_content, BadStatus, BadHeader, Start(204), BadBase64, BadBase64Chunk]),
        ]
    };
    prop_oneof![
        24 => (0..IPS.len(), prop::option::weighted(0.8, auth)).prop_map(|(i, a)| Op::Open(i, a)),
        80 => (i(), tunnel, stray()).prop_map(|(t, o, s)| Op::Tunnel(t, o, s)),
        60 => (0..KEYS, body, stray()).prop_map(|(a, b, s)| Op::Call(a, b, s)),
        40 => (i(), call, stray()).prop_map(|(c, o, s)| Op::OnCall(c, o, s)),
        100 => (i(), answer, prop::option::weighted(0.05, i()), stray())
            .prop_map(|(c, a, o, s)| Op::Reply(c, a, o, s)),
        32 => prop_oneof![8 => 0u64..1_500, 1 => 0u64..40_000].prop_map(Op::Tick),
        1 => Just(Op::Shutdown),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        max_shrink_iters: 4_096,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_agrees_with_the_model(ops in vec(op(), 50..150)) {
        let mut run = Run::new();
        for (n, op) in ops.iter().enumerate() {
            run.apply(op, CallId(n as u64 + 1))?;
        }
        run.finish()?;
    }
}
