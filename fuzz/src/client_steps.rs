//! Arbitrary input sequences against the tunnel-client engine: it never
//! panics, never sends before it is connected, answers each request at most
//! once, and always has a way forward (a timer or a connect) unless stopped.

use osaurus_relay_engine::auth::SecretKey;
use osaurus_relay_engine::client::{Client, ClientConfig, ClientInput, ClientOutput};
use osaurus_relay_engine::frame::Headers;
use osaurus_relay_engine::{Now, SeededRng};
use std::collections::HashSet;

const FRAMES: &[&str] = &[
    r#"{"type":"challenge","nonce":"00ff"}"#,
    r#"{"type":"auth_ok","agents":[{"address":"0x01","url":"https://x"}]}"#,
    r#"{"type":"auth_error","error":"signature_verification_failed"}"#,
    r#"{"type":"request","id":"r1","method":"GET","path":"/","headers":{}}"#,
    r#"{"type":"request","id":"r2","method":"POST","path":"/p","headers":{"a":"b"},"body":"x"}"#,
    r#"{"type":"cancel","id":"r1"}"#,
    r#"{"type":"cancel","id":"r2"}"#,
    r#"{"type":"ping","ts":5}"#,
    r#"{"type":"error","error":"relay_restarting"}"#,
    r#"{"type":"error","error":"invalid_nonce"}"#,
    r#"{"type":"agent_added","address":"0xabc","url":"u"}"#,
    r#"{"type":"agent_removed","address":"0x7e5f4552091a69125d5dfcb7b8c2659029395bdf","reason":"superseded"}"#,
    r#"{"type":"agent_removed","address":"0x2b5ad5c4795c026514f8317c7a215e218dccd6cf"}"#,
    "garbage",
];

fn key(n: u8) -> SecretKey {
    let mut b = [0u8; 32];
    b[31] = n;
    SecretKey::from_bytes(&b).expect("small scalars are keys")
}

pub fn client_steps(data: &[u8]) {
    let mut now = Now::new(0, 1_709_136_000);
    let mut c = Client::new(
        ClientConfig::default(),
        vec![key(1), key(2)],
        SeededRng::new(3),
        now,
    );
    let mut connected = false;
    let mut stopped = false;
    let mut answered: HashSet<String> = HashSet::new();
    let mut forwarded: HashSet<String> = HashSet::new();
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0);
        let id = if arg % 2 == 0 { "r1" } else { "r2" }.to_string();
        match op % 9 {
            0 => {
                c.handle(now, ClientInput::Connected);
            }
            1 | 2 => c.handle(now, ClientInput::Text(FRAMES[arg as usize % FRAMES.len()])),
            3 => c.handle(now, ClientInput::Disconnected),
            4 => c.handle(
                now,
                ClientInput::LocalResponse {
                    id,
                    status: 200,
                    headers: Headers::default(),
                    body: "b".into(),
                },
            ),
            5 => match arg % 4 {
                0 => c.handle(
                    now,
                    ClientInput::LocalStreamStart {
                        id,
                        status: 200,
                        headers: Headers::default(),
                    },
                ),
                1 => c.handle(
                    now,
                    ClientInput::LocalStreamChunk {
                        id,
                        data: "d".into(),
                    },
                ),
                2 => c.handle(now, ClientInput::LocalStreamEnd { id }),
                _ => c.handle(now, ClientInput::LocalFailed { id }),
            },
            6 => c.handle(now, ClientInput::AddAgent(key(arg % 4 + 1))),
            7 => c.handle(now, ClientInput::RemoveAgent(key(arg % 4 + 1).address())),
            _ => {
                now = now.advanced(arg as u64 * 500);
                c.handle_timeout(now);
            }
        }
        while let Some(o) = c.poll_output() {
            assert!(!stopped, "output after Stopped: {o:?}");
            match o {
                ClientOutput::Connect => connected = true,
                ClientOutput::Send(text) => {
                    assert!(connected, "sent before connecting: {text}");
                    let f: serde_json_free::Frame = serde_json_free::parse(&text);
                    if let Some(done) = f.final_for {
                        assert!(forwarded.contains(&done), "answer for unknown {done}");
                        assert!(answered.insert(done.clone()), "{done} answered twice");
                    }
                }
                ClientOutput::Forward { id, .. } => {
                    answered.remove(&id);
                    forwarded.insert(id);
                }
                ClientOutput::Stopped => stopped = true,
                ClientOutput::Close
                | ClientOutput::CancelLocal { .. }
                | ClientOutput::Status(_) => {}
            }
        }
        if !stopped {
            assert!(
                c.poll_timeout().is_some() || connected,
                "stuck with no timer and no connection"
            );
        }
    }
}

/// Which request a client frame finishes, without a JSON dependency here.
mod serde_json_free {
    pub struct Frame {
        pub final_for: Option<String>,
    }

    pub fn parse(text: &str) -> Frame {
        let id = || {
            text.split("\"id\":\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_string)
        };
        let final_for = if text.starts_with(r#"{"type":"response""#)
            || text.starts_with(r#"{"type":"stream_end""#)
        {
            id()
        } else {
            None
        };
        Frame { final_for }
    }
}
