//! Arbitrary input sequences against the relay engine, checking its invariants
//! after every step: each call answered at most once and nothing after its end,
//! no frame for a closed tunnel, and no state left once everything is closed.

use osaurus_relay_engine::auth::{to_checksum, to_lower, tunnel_message, SecretKey};
use osaurus_relay_engine::frame::{AgentSig, ClientFrame, ServerFrame};
use osaurus_relay_engine::{
    CallId, Config, Http1Answer, Input, Now, Output, OwnedHead, Relay, SeededRng, TunnelId,
};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> Option<T> {
        from.get(self.next()? as usize % from.len().max(1)).copied()
    }
}

#[derive(Default)]
struct CallLog {
    heads: u32,
    done: bool,
    gone: bool,
}

struct World {
    relay: Relay<SeededRng>,
    now: Now,
    keys: Vec<SecretKey>,
    calls: HashMap<CallId, CallLog>,
    next_call: u64,
    /// Open tunnels and the last challenge nonce each was sent.
    tunnels: HashMap<TunnelId, String>,
    closed: HashSet<TunnelId>,
    /// Live request ids per tunnel (from request frames seen).
    reqs: Vec<(TunnelId, String)>,
    receiving: Vec<CallId>,
}

const TEMPLATES: &[&str] = &[
    r#"{"type":"response","id":"ID","status":200,"headers":{"content-type":"text/plain"},"body":"ok"}"#,
    r#"{"type":"response","id":"ID","status":204,"headers":{},"body":"dropped"}"#,
    r#"{"type":"response","id":"ID","status":0,"headers":{}}"#,
    r#"{"type":"response","id":"ID","status":"200","headers":{}}"#,
    r#"{"type":"response","id":"ID","status":200,"headers":{"a b":"c"}}"#,
    r#"{"type":"response","id":"ID","status":200,"headers":{"x":"a\r\nb"}}"#,
    r#"{"type":"response","id":"ID","status":200}"#,
    r#"{"type":"stream_start","id":"ID","status":200,"headers":{}}"#,
    r#"{"type":"stream_start","id":"ID","status":304,"headers":{}}"#,
    r#"{"type":"stream_chunk","id":"ID","data":"data: x\n\n"}"#,
    r#"{"type":"stream_chunk","id":"ID","data":7}"#,
    r#"{"type":"stream_end","id":"ID"}"#,
    r#"{"type":"pong","ts":1}"#,
    r#"{"type":"request_challenge"}"#,
    r#"{"type":"remove_agent","address":"ADDR"}"#,
    r#"{"type":"nonsense"}"#,
    "not json",
];

impl World {
    fn new() -> World {
        let cfg = Config {
            base_domain: "f.test".into(),
            auth_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(700),
            stream_idle_timeout: Duration::from_millis(600),
            ping_interval: Duration::from_millis(900),
            nonce_ttl: Duration::from_millis(800),
            drain_timeout: Duration::from_millis(1000),
            max_body_bytes: 64,
            max_stream_buffer: 40,
            max_tunnel_buffer: 4096,
            max_agents_per_tunnel: 2,
            tunnel_connects_per_min: 20,
            max_tunnels_per_ip: 3,
            agent_requests_per_min: 30,
            ..Config::default()
        };
        let now = Now::new(0, 1_709_136_000);
        let keys = (1u8..=3)
            .map(|n| {
                let mut b = [0u8; 32];
                b[31] = n;
                SecretKey::from_bytes(&b).expect("small scalars are keys")
            })
            .collect();
        World {
            relay: Relay::new(cfg, SeededRng::new(7), now),
            now,
            keys,
            calls: HashMap::new(),
            next_call: 0,
            tunnels: HashMap::new(),
            closed: HashSet::new(),
            reqs: Vec::new(),
            receiving: Vec::new(),
        }
    }

    fn head(&self, method: &str, target: &str, host: String, websocket: bool, ip: u8) -> OwnedHead {
        OwnedHead {
            method: method.into(),
            target: target.into(),
            host: Some(host),
            headers: vec![],
            peer: std::net::IpAddr::from([10, 0, 0, ip]),
            content_length: None,
            body_follows: false,
            websocket,
            hop: Default::default(),
            // Half the callers take answers the engine writes as bytes.
            http1: (ip % 2 == 0).then_some(Http1Answer {
                minor_version: ip % 4 / 2,
                keep_alive: true,
                head_request: method == "HEAD",
            }),
        }
    }

    fn new_call(&mut self) -> CallId {
        self.next_call += 1;
        let c = CallId(self.next_call);
        self.calls.insert(c, CallLog::default());
        c
    }

    fn check(&mut self) {
        while let Some(o) = self.relay.poll_output() {
            match o {
                Output::Respond { call, .. } => self.end(call, true),
                Output::Answer { call, bytes, .. } => {
                    assert!(
                        bytes.starts_with(b"HTTP/1.1 ")
                            && bytes.windows(4).any(|w| w == b"\r\n\r\n")
                    );
                    self.end(call, true)
                }
                Output::StartStream { call, .. } => {
                    let c = self.calls.get_mut(&call).expect("a known call");
                    assert!(
                        !c.done && !c.gone && c.heads == 0,
                        "second head for {call:?}"
                    );
                    c.heads = 1;
                }
                Output::WriteChunk { call, .. } => {
                    let c = &self.calls[&call];
                    assert!(c.heads == 1 && !c.done && !c.gone, "chunk outside a stream");
                }
                Output::EndStream { call } | Output::AbortStream { call } => self.end(call, false),
                // One instance (no cluster in this config) never forwards.
                Output::Forward { .. }
                | Output::ForwardBody { .. }
                | Output::ForwardBodyEnd { .. }
                | Output::CancelForward { .. }
                | Output::PresenceLookup { .. } => {
                    unreachable!("a forward without a cluster")
                }
                Output::Claim { .. }
                | Output::Refresh { .. }
                | Output::Release { .. }
                | Output::Lookup { .. } => {}
                Output::Upgrade { call, tunnel } => {
                    self.end(call, false);
                    assert!(!self.tunnels.contains_key(&tunnel) && !self.closed.contains(&tunnel));
                    self.tunnels.insert(tunnel, String::new());
                }
                Output::SendFrame { tunnel, text } => {
                    assert!(!self.closed.contains(&tunnel), "frame to closed {tunnel:?}");
                    assert!(self.tunnels.contains_key(&tunnel), "frame before upgrade");
                    match ServerFrame::parse(&text).expect("the relay sends valid frames") {
                        ServerFrame::Challenge { nonce } => {
                            self.tunnels.insert(tunnel, nonce);
                        }
                        ServerFrame::Request { id, .. } => self.reqs.push((tunnel, id)),
                        _ => {}
                    }
                }
                Output::CloseTunnel { tunnel, .. } => {
                    assert!(
                        self.tunnels.remove(&tunnel).is_some(),
                        "close of unknown tunnel"
                    );
                    self.closed.insert(tunnel);
                }
                Output::Authenticated { tunnel } => {
                    assert!(
                        self.tunnels.contains_key(&tunnel),
                        "authenticated unknown tunnel"
                    );
                }
                Output::Event(_) | Output::ShutdownComplete => {}
            }
        }
        let s = self.relay.sizes();
        assert!(s.calls <= self.calls.values().filter(|c| !c.done && !c.gone).count());
        assert!(s.tunnels <= self.tunnels.len());
    }

    fn end(&mut self, call: CallId, head_too: bool) {
        let c = self.calls.get_mut(&call).expect("a known call");
        assert!(!c.done, "{call:?} answered twice");
        assert!(!c.gone, "{call:?} answered after it went away");
        if head_too {
            assert_eq!(c.heads, 0, "full response after a stream head");
        }
        c.done = true;
    }

    fn auth(&mut self, t: TunnelId, mask: u8, good: bool) {
        let nonce = self.tunnels.get(&t).cloned().unwrap_or_default();
        let ts = self.now.unix_secs;
        let agents = self
            .keys
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, k)| {
                let address = to_checksum(&k.address());
                let msg = tunnel_message(&address, &nonce, if good { ts } else { ts + 1 });
                AgentSig {
                    signature: k.sign_message(msg.as_bytes()),
                    address,
                }
            })
            .collect();
        let text = ClientFrame::Auth {
            agents,
            nonce,
            timestamp: ts,
        }
        .encode();
        self.relay.handle(
            self.now,
            Input::TunnelText {
                tunnel: t,
                text: &text,
            },
        );
    }

    fn step(&mut self, b: &mut Bytes) -> Option<()> {
        let op = b.next()?;
        let tunnels: Vec<TunnelId> = {
            let mut v: Vec<_> = self.tunnels.keys().copied().collect();
            v.sort();
            v
        };
        match op % 12 {
            0 => {
                let head = self.head(
                    "GET",
                    "/tunnel/connect",
                    "f.test".into(),
                    true,
                    b.next()? % 3,
                );
                let c = self.new_call();
                self.relay.handle(
                    self.now,
                    Input::CallHead {
                        call: c,
                        head: head.view(),
                    },
                );
            }
            1 => {
                let t = b.pick(&tunnels)?;
                let (mask, good) = (b.next()?, b.next()? % 4 != 0);
                self.auth(t, mask & 7, good);
            }
            2 => {
                let k = &self.keys[(b.next()? % 3) as usize];
                let host = format!("{}.f.test", to_lower(&k.address()));
                let method = b.pick(&["GET", "POST", "OPTIONS", "HEAD"])?;
                let mut head = self.head(method, "/x", host, false, 9);
                let body = b.next()?;
                // Read every byte first: a short input must not leave a call the relay never saw.
                let c = self.new_call();
                if body % 3 == 0 {
                    head.body_follows = true;
                    head.content_length = (body % 2 == 0).then_some(body as u64);
                    self.receiving.push(c);
                }
                self.relay.handle(
                    self.now,
                    Input::CallHead {
                        call: c,
                        head: head.view(),
                    },
                );
            }
            3 => {
                let c = b.pick(&self.receiving)?;
                let n = b.next()? as usize % 40;
                if b.next()? % 3 == 0 {
                    self.relay.handle(self.now, Input::CallBodyEnd { call: c });
                } else {
                    let chunk = vec![b'a'; n];
                    self.relay.handle(
                        self.now,
                        Input::CallBody {
                            call: c,
                            chunk: &chunk,
                        },
                    );
                }
            }
            4 | 5 => {
                let i = b.next()? as usize;
                let (t, id) = self.reqs.get(i % self.reqs.len().max(1)).cloned()?;
                // Sometimes answer from another tunnel.
                let t = if b.next()? % 5 == 0 {
                    b.pick(&tunnels).unwrap_or(t)
                } else {
                    t
                };
                let tpl = b.pick(TEMPLATES)?;
                let addr = to_lower(&self.keys[i % 3].address());
                let text = tpl.replace("ID", &id).replace("ADDR", &addr);
                self.relay.handle(
                    self.now,
                    Input::TunnelText {
                        tunnel: t,
                        text: &text,
                    },
                );
            }
            6 => {
                let ids: Vec<CallId> = self
                    .calls
                    .iter()
                    .filter(|(_, c)| !c.done && !c.gone)
                    .map(|(k, _)| *k)
                    .collect();
                let c = b.pick(&ids)?;
                if b.next()? % 2 == 0 {
                    self.calls.get_mut(&c).expect("picked").gone = true;
                    self.relay.handle(self.now, Input::CallGone { call: c });
                } else {
                    self.relay.handle(
                        self.now,
                        Input::CallDrained {
                            call: c,
                            bytes: b.next()? as u64,
                        },
                    );
                }
            }
            7 => {
                let t = b.pick(&tunnels)?;
                self.tunnels.remove(&t);
                self.closed.insert(t);
                self.relay
                    .handle(self.now, Input::TunnelClosed { tunnel: t });
            }
            8 | 9 => self.tick(b.next()? as u64 * 20),
            10 => {
                let t = b.pick(&tunnels)?;
                if b.next()? % 2 == 0 {
                    self.relay
                        .handle(self.now, Input::TunnelBinary { tunnel: t });
                } else {
                    let raw: Vec<u8> = (0..b.next()? % 16).filter_map(|_| b.next()).collect();
                    let text = String::from_utf8_lossy(&raw).into_owned();
                    self.relay.handle(
                        self.now,
                        Input::TunnelText {
                            tunnel: t,
                            text: &text,
                        },
                    );
                }
            }
            _ => {
                if b.next()? == 0 {
                    self.relay.handle(self.now, Input::Shutdown);
                }
            }
        }
        Some(())
    }

    fn tick(&mut self, ms: u64) {
        let end = self.now.mono_ms + ms;
        while let Some(at) = self.relay.poll_timeout().filter(|at| *at <= end) {
            self.now = self.now.advanced(at.saturating_sub(self.now.mono_ms));
            self.relay.handle_timeout(self.now);
            self.check();
        }
        self.now = self.now.advanced(end - self.now.mono_ms);
    }
}

pub fn relay_steps(data: &[u8]) {
    relay_steps_counters(data);
}

/// Runs the steps; returns the relay's counters (to check seeds reach deep).
pub fn relay_steps_counters(data: &[u8]) -> osaurus_relay_engine::stats::Counters {
    let mut w = World::new();
    let mut b = Bytes(data);
    while !b.0.is_empty() {
        if w.step(&mut b).is_none() && b.0.is_empty() {
            break;
        }
        w.check();
    }
    // Wind down: every tunnel goes, time passes, and nothing may be left.
    let mut open: Vec<TunnelId> = w.tunnels.keys().copied().collect();
    open.sort();
    for t in open {
        w.tunnels.remove(&t);
        w.closed.insert(t);
        w.relay.handle(w.now, Input::TunnelClosed { tunnel: t });
        w.check();
    }
    for c in w.receiving.clone() {
        w.relay.handle(w.now, Input::CallBodyEnd { call: c });
        w.check();
    }
    w.tick(120_000);
    for (id, c) in &w.calls {
        assert!(c.done || c.gone, "{id:?} never answered");
    }
    let s = w.relay.sizes();
    assert_eq!(
        (s.tunnels, s.agents, s.ip_entries, s.calls, s.req_ids),
        (0, 0, 0, 0, 0),
        "{s:?}"
    );
    assert!(s.timers <= 1, "only the sweep may stay armed: {s:?}");
    w.relay.stats().counters
}
