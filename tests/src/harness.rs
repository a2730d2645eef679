//! Drives one relay engine by hand on a virtual clock.

use osaurus_relay_engine::auth::{tunnel_message, SecretKey};
use osaurus_relay_engine::frame::{AgentSig, ClientFrame, Headers, ServerFrame};
use osaurus_relay_engine::{
    CallId, Config, Input, Now, Output, OwnedHead, Relay, SeededRng, TunnelId,
};
use std::net::IpAddr;
use std::time::Duration;

pub const DOMAIN: &str = "relay.test";

/// Limits as in the contract, timeouts short so tests run on a virtual clock.
pub fn test_config() -> Config {
    Config {
        base_domain: DOMAIN.into(),
        auth_timeout: Duration::from_millis(1_000),
        response_timeout: Duration::from_millis(3_000),
        stream_idle_timeout: Duration::from_millis(3_000),
        ping_interval: Duration::from_millis(3_000),
        nonce_ttl: Duration::from_millis(3_000),
        drain_timeout: Duration::from_millis(2_000),
        // Exact output lists stay free of log events; `engine_record` turns it on.
        log_calls: false,
        // 502 at once, as before held calls; `engine_held` turns them on.
        reconnect_grace: Duration::ZERO,
        ..Config::default()
    }
}

/// Deterministic key number `n` (n > 0).
pub fn key(n: u64) -> SecretKey {
    let mut b = [0u8; 32];
    b[24..].copy_from_slice(&n.to_be_bytes());
    SecretKey::from_bytes(&b).expect("small scalars are valid keys")
}

pub fn checksum(k: &SecretKey) -> String {
    osaurus_relay_engine::auth::to_checksum(&k.address())
}

pub fn lower(k: &SecretKey) -> String {
    osaurus_relay_engine::auth::to_lower(&k.address())
}

pub fn host_of(k: &SecretKey) -> String {
    format!("{}.{DOMAIN}", lower(k))
}

/// An `auth` frame in which each key signs, as the Osaurus app does, with
/// its checksummed address.
pub fn auth_text(keys: &[&SecretKey], nonce: &str, ts: u64) -> String {
    let agents = keys
        .iter()
        .map(|k| {
            let address = checksum(k);
            let signature = k.sign_message(tunnel_message(&address, nonce, ts).as_bytes());
            AgentSig { address, signature }
        })
        .collect();
    let nonce = nonce.into();
    ClientFrame::Auth {
        agents,
        nonce,
        timestamp: ts,
    }
    .encode()
}

/// Headers from string pairs.
pub fn hv(pairs: &[(&str, &str)]) -> Headers {
    Headers(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IPs parse")
}

pub struct Harness {
    pub relay: Relay<SeededRng>,
    pub now: Now,
    next_call: u64,
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new(test_config())
    }
}

impl Harness {
    pub fn new(cfg: Config) -> Self {
        let now = Now::new(0, 1_709_136_000);
        Harness {
            relay: Relay::new(cfg, SeededRng::new(42), now),
            now,
            next_call: 1,
        }
    }

    pub fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.relay.poll_output()).collect()
    }

    pub fn step(&mut self, input: Input<'_>) -> Vec<Output> {
        self.relay.handle(self.now, input);
        self.drain()
    }

    /// Moves the clock forward, firing every deadline on the way in order.
    pub fn advance(&mut self, ms: u64) -> Vec<Output> {
        let end = self.now.mono_ms + ms;
        let mut out = Vec::new();
        while let Some(at) = self.relay.poll_timeout().filter(|at| *at <= end) {
            self.now = self.now.advanced(at.saturating_sub(self.now.mono_ms));
            self.relay.handle_timeout(self.now);
            out.extend(self.drain());
        }
        self.now = self.now.advanced(end - self.now.mono_ms);
        out
    }

    pub fn new_call(&mut self) -> CallId {
        self.next_call += 1;
        CallId(self.next_call)
    }

    pub fn head(method: &str, target: &str, host: &str) -> OwnedHead {
        OwnedHead {
            method: method.into(),
            target: target.into(),
            host: Some(host.into()),
            headers: vec![("host".into(), host.into())],
            peer: ip("198.51.100.9"),
            content_length: None,
            body_follows: false,
            websocket: false,
            hop: Default::default(),
            http1: None,
        }
    }

    /// A WebSocket upgrade request for `/tunnel/connect` from `peer`.
    pub fn connect_head(peer: &str) -> OwnedHead {
        let mut head = Harness::head("GET", "/tunnel/connect", DOMAIN);
        head.websocket = true;
        head.peer = ip(peer);
        head
    }

    /// A GET to `k` that tunnel `t` has answered with `stream_start` 200;
    /// returns the call and its request id.
    pub fn open_stream(&mut self, t: TunnelId, k: &SecretKey, path: &str) -> (CallId, String) {
        let (call, out) = self.get(k, path);
        let id = request_id(&out);
        let start = ClientFrame::StreamStart {
            id: id.clone(),
            status: 200,
            headers: Headers::default(),
        };
        self.send(t, &start);
        (call, id)
    }

    /// Sends a complete request; returns its id and the outputs.
    pub fn request(&mut self, mut head: OwnedHead, body: &[u8]) -> (CallId, Vec<Output>) {
        let call = self.new_call();
        if !body.is_empty() {
            head.content_length = Some(body.len() as u64);
            head.body_follows = true;
        }
        let mut out = self.step(Input::CallHead {
            call,
            head: head.view(),
        });
        if !body.is_empty() {
            out.extend(self.step(Input::CallBody { call, chunk: body }));
            out.extend(self.step(Input::CallBodyEnd { call }));
        }
        (call, out)
    }

    /// The directory answers a look-up of `k`.
    pub fn located(&mut self, k: &SecretKey, found: osaurus_relay_engine::Located) -> Vec<Output> {
        let agent = lower(k);
        self.step(Input::Located {
            agent: &agent,
            found,
        })
    }

    pub fn get(&mut self, k: &SecretKey, path: &str) -> (CallId, Vec<Output>) {
        self.request(Harness::head("GET", path, &host_of(k)), b"")
    }

    /// Upgrades a WebSocket from `peer`; returns the tunnel and its nonce.
    pub fn open_from(&mut self, peer: &str) -> (TunnelId, String) {
        let (_, out) = self.request(Harness::connect_head(peer), b"");
        let tunnel = out
            .iter()
            .find_map(|o| match o {
                Output::Upgrade { tunnel, .. } => Some(*tunnel),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no upgrade: {out:?}"));
        match frames(&out, tunnel).as_slice() {
            [ServerFrame::Challenge { nonce }] => (tunnel, nonce.clone()),
            other => panic!("expected one challenge, got {other:?}"),
        }
    }

    pub fn auth_frame(&self, keys: &[&SecretKey], nonce: &str) -> String {
        auth_text(keys, nonce, self.now.unix_secs)
    }

    pub fn text(&mut self, tunnel: TunnelId, text: &str) -> Vec<Output> {
        self.step(Input::TunnelText { tunnel, text })
    }

    pub fn send(&mut self, tunnel: TunnelId, f: &ClientFrame) -> Vec<Output> {
        self.text(tunnel, &f.encode())
    }

    /// A full handshake from `peer`; asserts `auth_ok`.
    pub fn connect_from(&mut self, peer: &str, keys: &[&SecretKey]) -> TunnelId {
        let (t, nonce) = self.open_from(peer);
        let auth = self.auth_frame(keys, &nonce);
        let out = self.text(t, &auth);
        assert!(
            matches!(frames(&out, t).first(), Some(ServerFrame::AuthOk { .. })),
            "auth failed: {out:?}"
        );
        t
    }

    pub fn connect(&mut self, keys: &[&SecretKey]) -> TunnelId {
        self.connect_from("192.0.2.1", keys)
    }

    pub fn add_agent(&mut self, t: TunnelId, k: &SecretKey) -> Vec<Output> {
        let out = self.send(t, &ClientFrame::RequestChallenge);
        let nonce = match frames(&out, t).as_slice() {
            [ServerFrame::Challenge { nonce }] => nonce.clone(),
            other => {
                return other
                    .iter()
                    .map(|f| Output::SendFrame {
                        tunnel: t,
                        text: f.encode(),
                    })
                    .collect()
            }
        };
        let address = checksum(k);
        let ts = self.now.unix_secs;
        let signature = k.sign_message(tunnel_message(&address, &nonce, ts).as_bytes());
        self.send(
            t,
            &ClientFrame::AddAgent {
                address,
                signature,
                nonce,
                timestamp: ts,
            },
        )
    }

    pub fn reply(&mut self, t: TunnelId, id: &str, status: u16, body: &str) -> Vec<Output> {
        let headers = Headers(vec![("content-type".into(), "text/plain".into())]);
        self.send(
            t,
            &ClientFrame::Response {
                id: id.into(),
                status,
                headers,
                body: body.into(),
            },
        )
    }
}

/// Frames sent to `tunnel` among `out`.
pub fn frames(out: &[Output], tunnel: TunnelId) -> Vec<ServerFrame> {
    out.iter()
        .filter_map(|o| match o {
            Output::SendFrame { tunnel: t, text } if *t == tunnel => {
                Some(ServerFrame::parse(text).unwrap_or_else(|| panic!("unparsable frame {text}")))
            }
            _ => None,
        })
        .collect()
}

/// The one request frame's id in `out`.
pub fn request_id(out: &[Output]) -> String {
    let ids: Vec<String> = out
        .iter()
        .filter_map(|o| match o {
            Output::SendFrame { text, .. } => match ServerFrame::parse(text) {
                Some(ServerFrame::Request { id, .. }) => Some(id),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 1, "expected one request frame in {out:?}");
    ids[0].clone()
}

/// The status and body of the complete response to `call` in `out`.
pub fn response(out: &[Output], call: CallId) -> Option<(u16, String)> {
    out.iter().find_map(|o| match o {
        Output::Respond { call: c, response } if *c == call => Some((
            response.status,
            String::from_utf8_lossy(&response.body).into_owned(),
        )),
        _ => None,
    })
}

pub fn header<'a>(out: &'a [Output], call: CallId, name: &str) -> Option<&'a str> {
    out.iter().find_map(|o| match o {
        Output::Respond { call: c, response } if *c == call => response
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref()),
        _ => None,
    })
}

pub fn closes(out: &[Output]) -> Vec<(TunnelId, u16, &'static str)> {
    out.iter()
        .filter_map(|o| match o {
            Output::CloseTunnel {
                tunnel,
                code,
                reason,
            } => Some((*tunnel, *code, *reason)),
            _ => None,
        })
        .collect()
}
