//! The client engine against the relay engine, in memory, on a virtual clock.

use super::*;
use crate::frame::Headers;
use crate::input::{CallId, Input, OwnedHead, TunnelId};
use crate::output::Output;
use crate::time::SeededRng;
use crate::{Config, Relay};

fn key(n: u8) -> SecretKey {
    let mut b = [0u8; 32];
    b[31] = n;
    SecretKey::from_bytes(&b).unwrap()
}

/// One relay, one client, and the wire between them.
struct Pair {
    relay: Relay<SeededRng>,
    client: Client<SeededRng>,
    now: Now,
    tunnel: Option<TunnelId>,
    /// Outputs of the client the pair does not carry itself.
    seen: Vec<ClientOutput>,
    responses: Vec<(CallId, u16, Vec<u8>)>,
    next_call: u64,
    /// Every frame the client sent.
    sent: Vec<String>,
    /// Plays a relay without our extensions (the reference): `features` is
    /// taken out of `auth_ok` and `agent_added`.
    strip_features: bool,
}

impl Pair {
    fn new(keys: Vec<SecretKey>) -> Pair {
        Pair::with(keys, false)
    }

    fn with(keys: Vec<SecretKey>, strip_features: bool) -> Pair {
        let now = Now::new(0, 1_709_136_000);
        let cfg = Config {
            base_domain: "relay.test".into(),
            tunnel_connects_per_min: 0,
            ..Config::default()
        };
        let mut p = Pair {
            relay: Relay::new(cfg, SeededRng::new(1), now),
            client: Client::new(ClientConfig::default(), keys, SeededRng::new(2), now),
            now,
            tunnel: None,
            seen: Vec::new(),
            responses: Vec::new(),
            next_call: 0,
            sent: Vec::new(),
            strip_features,
        };
        p.run();
        p
    }

    /// Carries messages both ways until both sides are quiet.
    fn run(&mut self) {
        loop {
            let mut busy = false;
            while let Some(o) = self.client.poll_output() {
                busy = true;
                match o {
                    ClientOutput::Connect => {
                        let call = self.call_id();
                        let head = OwnedHead {
                            method: "GET".into(),
                            target: "/tunnel/connect".into(),
                            host: Some("relay.test".into()),
                            headers: vec![],
                            peer: "192.0.2.1".parse().unwrap(),
                            content_length: None,
                            body_follows: false,
                            websocket: true,
                            hop: Default::default(),
                            http1: None,
                        };
                        self.relay.handle(
                            self.now,
                            Input::CallHead {
                                call,
                                head: head.view(),
                            },
                        );
                    }
                    ClientOutput::Send(text) => {
                        self.sent.push(text.clone());
                        if let Some(t) = self.tunnel {
                            self.relay.handle(
                                self.now,
                                Input::TunnelText {
                                    tunnel: t,
                                    text: &text,
                                },
                            );
                        }
                    }
                    ClientOutput::Close => {
                        if let Some(t) = self.tunnel.take() {
                            self.relay
                                .handle(self.now, Input::TunnelClosed { tunnel: t });
                            self.client.handle(self.now, ClientInput::Disconnected);
                        }
                    }
                    other => self.seen.push(other),
                }
            }
            while let Some(o) = self.relay.poll_output() {
                busy = true;
                match o {
                    Output::Upgrade { tunnel, .. } => {
                        self.tunnel = Some(tunnel);
                        self.client.handle(self.now, ClientInput::Connected);
                    }
                    Output::SendFrame { tunnel, text } if Some(tunnel) == self.tunnel => {
                        let text = if self.strip_features {
                            without_features(&text)
                        } else {
                            text
                        };
                        self.client.handle(self.now, ClientInput::Text(&text));
                    }
                    Output::CloseTunnel { tunnel, .. } if Some(tunnel) == self.tunnel => {
                        self.tunnel = None;
                        self.client.handle(self.now, ClientInput::Disconnected);
                    }
                    Output::Respond { call, response } => {
                        self.responses.push((call, response.status, response.body));
                    }
                    _ => {}
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn call_id(&mut self) -> CallId {
        self.next_call += 1;
        CallId(self.next_call)
    }

    /// Advances the clock to `ms` later, firing both sides' deadlines in order.
    fn advance(&mut self, ms: u64) {
        let end = self.now.mono_ms + ms;
        loop {
            let next = [self.relay.poll_timeout(), self.client.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.advanced(at.saturating_sub(self.now.mono_ms));
                    self.relay.handle_timeout(self.now);
                    self.client.handle_timeout(self.now);
                    self.run();
                }
                _ => break,
            }
        }
        self.now = self.now.advanced(end - self.now.mono_ms);
    }

    /// The relay's socket to the client dies.
    fn cut(&mut self) {
        if let Some(t) = self.tunnel.take() {
            self.relay
                .handle(self.now, Input::TunnelClosed { tunnel: t });
            self.client.handle(self.now, ClientInput::Disconnected);
            self.run();
        }
    }

    fn get(&mut self, k: &SecretKey, path: &str) -> CallId {
        let call = self.call_id();
        let head = OwnedHead {
            method: "GET".into(),
            target: path.into(),
            host: Some(format!("{}.relay.test", to_lower(&k.address()))),
            headers: vec![],
            peer: "198.51.100.1".parse().unwrap(),
            content_length: None,
            body_follows: false,
            websocket: false,
            hop: Default::default(),
            http1: None,
        };
        self.relay.handle(
            self.now,
            Input::CallHead {
                call,
                head: head.view(),
            },
        );
        self.run();
        call
    }

    fn take_seen(&mut self) -> Vec<ClientOutput> {
        std::mem::take(&mut self.seen)
    }

    fn forwarded(&mut self) -> Vec<String> {
        self.take_seen()
            .into_iter()
            .filter_map(|o| match o {
                ClientOutput::Forward { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }

    fn reconnect_delays(&self) -> Vec<u64> {
        self.seen
            .iter()
            .filter_map(|o| match o {
                ClientOutput::Status(ClientEvent::Reconnecting { in_ms, .. }) => Some(*in_ms),
                _ => None,
            })
            .collect()
    }
}

fn without_features(text: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    if let Some(o) = v.as_object_mut() {
        o.remove("features");
    }
    v.to_string()
}

/// Bytes that are not UTF-8.
const BINARY: &[u8] = &[0x89, b'P', b'N', b'G', 0xff, 0x00, 0xfe];

/// Serves one call for `a` with a binary local answer; returns what the
/// caller got and the frames the client sent for it.
fn binary_answer(p: &mut Pair, a: &SecretKey) -> ((CallId, u16, Vec<u8>), Vec<String>) {
    p.take_seen();
    p.sent.clear();
    let call = p.get(a, "/image.png");
    let id = p.forwarded().remove(0);
    let headers = Headers(vec![("content-type".into(), "image/png".into())]);
    let input = ClientInput::LocalResponse {
        id,
        status: 200,
        headers,
        body: BINARY.to_vec(),
    };
    p.client.handle(p.now, input);
    p.run();
    let got = p.responses.pop().expect("the caller got an answer");
    assert_eq!(got.0, call);
    (got, std::mem::take(&mut p.sent))
}

#[test]
fn a_binary_answer_is_base64_only_to_a_relay_that_decodes_it() {
    let a = key(1);
    let mut ours = Pair::new(vec![a.clone()]);
    let ((_, status, body), sent) = binary_answer(&mut ours, &a);
    assert_eq!((status, body.as_slice()), (200, BINARY));
    assert!(sent[0].contains(r#""bodyEncoding":"base64""#), "{sent:?}");
    assert!(!ours.take_seen().iter().any(|o| matches!(
        o,
        ClientOutput::Status(ClientEvent::BinaryNotRelayed { .. })
    )));

    let mut reference = Pair::with(vec![a.clone()], true);
    assert!(reference.client.is_online());
    let ((_, status, body), sent) = binary_answer(&mut reference, &a);
    assert_eq!(
        (status, body.as_slice()),
        (502, br#"{"error":"local_server_error"}"#.as_slice())
    );
    assert!(
        sent.iter().all(|f| !f.contains("base64")),
        "no base64 to a relay that would pass it on as text: {sent:?}"
    );
    assert!(reference.take_seen().iter().any(|o| matches!(
        o,
        ClientOutput::Status(ClientEvent::BinaryNotRelayed { .. })
    )));
    // Without the stream extension nothing is streamed that need not be.
    let _ = reference.get(&a, "/big");
    let forwarded = reference.take_seen();
    assert!(
        forwarded.iter().any(|o| matches!(
            o,
            ClientOutput::Forward {
                stream_any: false,
                ..
            }
        )),
        "{forwarded:?}"
    );
    let _ = ours.get(&a, "/big");
    assert!(ours.take_seen().iter().any(|o| matches!(
        o,
        ClientOutput::Forward {
            stream_any: true,
            ..
        }
    )));
}

#[test]
fn connects_serves_buffered_and_streamed_calls() {
    let a = key(1);
    let mut p = Pair::new(vec![a.clone()]);
    assert!(p.client.is_online());
    let online = p.take_seen();
    let ClientOutput::Status(ClientEvent::Online { agents, .. }) = &online[0] else {
        panic!("{online:?}")
    };
    assert_eq!(
        agents[0].url,
        format!("https://{}.relay.test", to_lower(&a.address()))
    );
    let call = p.get(&a, "/v1/models");
    let ids = p.forwarded();
    assert_eq!(ids.len(), 1);
    let headers = Headers(vec![("content-type".into(), "application/json".into())]);
    let input = ClientInput::LocalResponse {
        id: ids[0].clone(),
        status: 200,
        headers: headers.clone(),
        body: "{}".into(),
    };
    p.client.handle(p.now, input);
    p.run();
    assert_eq!(p.responses, vec![(call, 200, b"{}".to_vec())]);
    let _ = p.get(&a, "/sse");
    let id = p.forwarded().remove(0);
    p.client.handle(
        p.now,
        ClientInput::LocalStreamStart {
            id: id.clone(),
            status: 200,
            headers,
        },
    );
    p.client.handle(
        p.now,
        ClientInput::LocalStreamChunk {
            id: id.clone(),
            data: "data: 1\n\n".into(),
        },
    );
    p.client.handle(p.now, ClientInput::LocalStreamEnd { id });
    p.run();
    assert_eq!(p.relay.sizes().calls, 0, "the stream ended on the relay");
    assert_eq!(p.client.inflight(), 0);
}

#[test]
fn answers_pings_so_the_relay_keeps_the_tunnel() {
    let a = key(1);
    let mut p = Pair::new(vec![a.clone()]);
    p.advance(10 * 60 * 1000);
    assert!(p.client.is_online());
    assert!(p.reconnect_delays().is_empty());
    assert!(p.relay.agent_tunnel(&a.address()).is_some());
}

#[test]
fn local_failure_is_a_502_and_cancel_drops_the_local_call() {
    let a = key(1);
    let mut p = Pair::new(vec![a.clone()]);
    p.take_seen();
    let call = p.get(&a, "/");
    let id = p.forwarded().remove(0);
    p.client.handle(p.now, ClientInput::LocalFailed { id });
    p.run();
    assert_eq!(
        p.responses,
        vec![(call, 502, br#"{"error":"local_server_error"}"#.to_vec())]
    );
    let call = p.get(&a, "/slow");
    let id = p.forwarded().remove(0);
    p.relay.handle(p.now, Input::CallGone { call });
    p.run();
    assert_eq!(
        p.take_seen(),
        vec![ClientOutput::CancelLocal { id: id.clone() }]
    );
    // A late local answer is dropped, not sent.
    p.client.handle(
        p.now,
        ClientInput::LocalResponse {
            id,
            status: 200,
            headers: Headers::default(),
            body: Vec::new(),
        },
    );
    assert_eq!(p.client.poll_output(), None);
}

#[test]
fn backoff_doubles_with_jitter_up_to_a_minute() {
    let mut p = Pair::new(vec![key(1)]);
    // The relay refuses every handshake from now on: connects fail at once.
    for _ in 0..9 {
        p.cut();
        let at = p.client.poll_timeout().unwrap();
        p.advance(at - p.now.mono_ms);
        // Reconnected and re-authenticated; cut again before it is healthy.
    }
    let delays = p.reconnect_delays();
    let nominal = [
        1_000u64, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000,
    ];
    assert_eq!(delays.len(), nominal.len());
    for (d, n) in delays.iter().zip(nominal) {
        assert!(
            *d >= n * 80 / 100 && *d <= n * 120 / 100,
            "{d} vs {n}: {delays:?}"
        );
    }
    assert!(
        delays.windows(2).any(|w| w[0] != w[1]),
        "jitter varies: {delays:?}"
    );
    // Online for a minute resets the backoff.
    p.advance(60_000);
    p.seen.clear();
    p.cut();
    let d = p.reconnect_delays()[0];
    assert!((800..=1_200).contains(&d), "{d}");
}

#[test]
fn relay_restarting_reconnects_at_once() {
    let a = key(1);
    let mut p = Pair::new(vec![a.clone()]);
    p.relay.handle(p.now, Input::Shutdown);
    p.run();
    assert_eq!(p.reconnect_delays(), vec![0]);
    assert!(p
        .seen
        .contains(&ClientOutput::Status(ClientEvent::RelayRestarting)));
}

#[test]
fn superseded_agents_are_dropped_and_an_empty_client_stops() {
    let (a, b) = (key(1), key(2));
    let mut p = Pair::new(vec![a.clone(), b.clone()]);
    // Another session takes `a` over: the relay tells this client.
    let mut other = Client::new(
        ClientConfig::default(),
        vec![a.clone()],
        SeededRng::new(9),
        p.now,
    );
    let call = p.call_id();
    let head = OwnedHead {
        method: "GET".into(),
        target: "/tunnel/connect".into(),
        host: None,
        headers: vec![],
        peer: "192.0.2.2".parse().unwrap(),
        content_length: None,
        body_follows: false,
        websocket: true,
        hop: Default::default(),
        http1: None,
    };
    assert_eq!(other.poll_output(), Some(ClientOutput::Connect));
    p.relay.handle(
        p.now,
        Input::CallHead {
            call,
            head: head.view(),
        },
    );
    let mut t2 = None;
    let mut to_other = Vec::new();
    while let Some(o) = p.relay.poll_output() {
        match o {
            Output::Upgrade { tunnel, .. } => t2 = Some(tunnel),
            Output::SendFrame { tunnel, text } if Some(tunnel) == t2 => to_other.push(text),
            _ => {}
        }
    }
    other.handle(p.now, ClientInput::Connected);
    other.handle(p.now, ClientInput::Text(&to_other[0]));
    let Some(ClientOutput::Send(auth)) = other.poll_output() else {
        panic!()
    };
    p.relay.handle(
        p.now,
        Input::TunnelText {
            tunnel: t2.unwrap(),
            text: &auth,
        },
    );
    // Route the relay's outputs for the first tunnel to the first client.
    let first = p.tunnel.unwrap();
    while let Some(o) = p.relay.poll_output() {
        if let Output::SendFrame { tunnel, text } = o {
            if tunnel == first {
                p.client.handle(p.now, ClientInput::Text(&text));
            }
        }
    }
    p.run();
    let superseded = ClientOutput::Status(ClientEvent::Superseded {
        address: to_lower(&a.address()),
    });
    assert!(p.seen.contains(&superseded), "{:?}", p.seen);
    assert_eq!(p.client.agents(), vec![b.address()]);
    // If its last agent goes too, the client stops instead of fighting back.
    p.client
        .handle(p.now, ClientInput::RemoveAgent(b.address()));
    p.cut();
    assert!(p.seen.contains(&ClientOutput::Stopped));
    assert_eq!(p.client.poll_timeout(), None);
}

#[test]
fn adds_and_removes_agents_mid_session() {
    let (a, b) = (key(1), key(2));
    let mut p = Pair::new(vec![a.clone()]);
    p.client.handle(p.now, ClientInput::AddAgent(b.clone()));
    p.run();
    assert_eq!(p.relay.agent_tunnel(&b.address()), p.tunnel);
    assert_eq!(p.client.agents(), vec![a.address(), b.address()]);
    p.client
        .handle(p.now, ClientInput::RemoveAgent(a.address()));
    p.run();
    assert_eq!(p.relay.agent_tunnel(&a.address()), None);
    // After a reconnect only `b` is authenticated.
    p.cut();
    let at = p.client.poll_timeout().unwrap();
    p.advance(at - p.now.mono_ms);
    assert!(p.client.is_online());
    assert_eq!(p.relay.agent_tunnel(&b.address()), p.tunnel);
    assert_eq!(p.relay.agent_tunnel(&a.address()), None);
}

#[test]
fn a_silent_relay_is_dropped_and_redialled() {
    let mut p = Pair::new(vec![key(1)]);
    // The relay stops talking: the wire swallows everything from now on.
    p.tunnel = None;
    p.seen.clear();
    p.advance(100_000);
    assert_eq!(p.reconnect_delays().len(), 1);
}

#[test]
fn auth_errors_explain_themselves() {
    let mut p = Pair::new(vec![key(1)]);
    p.client.handle(
        p.now,
        ClientInput::Text(r#"{"type":"auth_error","error":"signature_verification_failed"}"#),
    );
    p.run();
    let want = ClientEvent::AuthFailed {
        error: "signature_verification_failed".into(),
        hint: "check this machine's clock and the key files",
    };
    assert!(p.seen.contains(&ClientOutput::Status(want)), "{:?}", p.seen);
    assert_eq!(p.reconnect_delays().len(), 1, "it closed and will retry");
}

#[test]
fn a_rate_limited_add_does_not_shift_later_adds() {
    let (a, b, c) = (key(1), key(2), key(3));
    let mut p = Pair::new(vec![a.clone()]);
    // The relay refuses the first request_challenge; the second add must still sign for `c`.
    p.client.handle(p.now, ClientInput::AddAgent(b.clone()));
    p.client.handle(p.now, ClientInput::AddAgent(c.clone()));
    let mut sent = Vec::new();
    while let Some(o) = p.client.poll_output() {
        sent.push(o);
    }
    assert_eq!(sent.len(), 2, "two request_challenge frames: {sent:?}");
    p.client.handle(
        p.now,
        ClientInput::Text(r#"{"type":"error","error":"rate_limited"}"#),
    );
    // Deliver the second request_challenge to the relay for real.
    let ClientOutput::Send(rc) = &sent[1] else {
        panic!()
    };
    let t = p.tunnel.unwrap();
    p.relay.handle(
        p.now,
        Input::TunnelText {
            tunnel: t,
            text: rc,
        },
    );
    p.run();
    assert_eq!(p.relay.agent_tunnel(&c.address()), Some(t), "c was added");
    assert_eq!(p.relay.agent_tunnel(&b.address()), None);
    assert_eq!(p.client.agents(), vec![a.address(), c.address()]);
}
