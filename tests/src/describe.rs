//! Outputs rendered as short comparable lines (random ids resolved), and the
//! answers a test tunnel sends, as frames.

use osaurus_relay_engine::frame::{Body, ChunkData, ClientFrame, Headers, ServerFrame};
use osaurus_relay_engine::{CallId, Output, TunnelId};
use std::collections::HashMap;

/// Whom an output concerns. Outputs are compared per call and per tunnel:
/// in order within each, in any order across them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Call(u64),
    Tunnel(u64),
    Relay,
}

/// Sorts by scope, keeping the order within each scope.
pub fn by_scope(mut v: Vec<(Scope, String)>) -> Vec<(Scope, String)> {
    v.sort_by_key(|(s, _)| *s);
    v
}

/// Renders outputs as short lines with their random parts resolved: request
/// ids become the call number of the request path `/c<n>`, addresses become
/// their names in `names`, and challenge nonces are set aside in `challenges`.
#[derive(Debug, Default)]
pub struct Describer {
    pub names: HashMap<String, String>,
    pub req_call: HashMap<String, u64>,
    pub call_req: HashMap<u64, String>,
    pub challenges: Vec<(TunnelId, String)>,
}

impl Describer {
    pub fn describe(&mut self, o: &Output) -> Option<(Scope, String)> {
        let text = |b: &[u8]| show(b);
        let call = |c: &CallId| Scope::Call(c.0);
        Some(match o {
            Output::Respond { call: c, response } => {
                let (status, body) = (response.status, text(&response.body));
                (call(c), format!("{status} {body}"))
            }
            Output::Answer { call: c, bytes, .. } => (call(c), format!("answer {}", text(bytes))),
            Output::StartStream { call: c, head } => (call(c), format!("start {}", head.status)),
            Output::WriteChunk { call: c, data } => (call(c), format!("chunk {}", text(data))),
            Output::EndStream { call: c } => (call(c), "end".into()),
            Output::AbortStream { call: c } => (call(c), "abort".into()),
            Output::Upgrade { call: c, tunnel } => {
                (Scope::Tunnel(tunnel.0), format!("upgrade c{}", c.0))
            }
            Output::SendFrame { tunnel, text } => {
                (Scope::Tunnel(tunnel.0), self.frame(*tunnel, text))
            }
            Output::CloseTunnel {
                tunnel,
                code,
                reason,
            } => (Scope::Tunnel(tunnel.0), format!("close {code} {reason}")),
            Output::ShutdownComplete => (Scope::Relay, "shutdown complete".into()),
            Output::Forward {
                call: c, instance, ..
            } => (call(c), format!("forward to {instance}")),
            Output::CancelForward { call: c } => (call(c), "cancel forward".into()),
            Output::ForwardBody { call: c, data } => (call(c), format!("upload {}", text(data))),
            Output::ForwardBodyEnd { call: c } => (call(c), "upload end".into()),
            Output::Claim { .. }
            | Output::Refresh { .. }
            | Output::Release { .. }
            | Output::Lookup { .. }
            | Output::PresenceLookup { .. }
            | Output::Authenticated { .. }
            | Output::Event(_) => return None,
        })
    }

    pub fn frame(&mut self, tunnel: TunnelId, text: &str) -> String {
        let Some(f) = ServerFrame::parse(text) else {
            return format!("unparsable {text}");
        };
        let name = |a: &str| self.names.get(a).cloned().unwrap_or_else(|| a.to_string());
        match f {
            ServerFrame::Challenge { nonce } => {
                self.challenges.push((tunnel, nonce));
                "challenge".into()
            }
            ServerFrame::AuthOk {
                agents, rejected, ..
            } => {
                let ok: Vec<String> = agents.iter().map(|a| name(&a.address)).collect();
                let no: Vec<String> = rejected.iter().map(|r| name(&r.address)).collect();
                format!("auth_ok [{}] rejected [{}]", ok.join(" "), no.join(" "))
            }
            ServerFrame::AuthError { error } => format!("auth_error {error}"),
            ServerFrame::AgentAdded { address, .. } => format!("agent_added {}", name(&address)),
            ServerFrame::AgentRemoved { address, reason } => {
                let why = reason.as_deref().unwrap_or("-");
                format!("agent_removed {} {why}", name(&address))
            }
            ServerFrame::Request { id, path, body, .. } => {
                let call = path.strip_prefix("/c").and_then(|n| n.parse().ok());
                let call = call.unwrap_or(u64::MAX);
                self.req_call.insert(id.clone(), call);
                self.call_req.insert(call, id);
                let enc = if matches!(body, Body::Binary(_)) {
                    " base64"
                } else {
                    ""
                };
                format!("request c{call} {}{enc}", body.len())
            }
            ServerFrame::Ping { .. } => "ping".into(),
            ServerFrame::Error { error } => format!("error {error}"),
            ServerFrame::Cancel { id } => match self.req_call.get(&id) {
                Some(c) => format!("cancel c{c}"),
                None => format!("cancel {id}"),
            },
        }
    }
}

/// A tunnel client's answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Response(u16, String),
    /// A `response` whose status is not an integer in range.
    BadStatus,
    /// A `response` with a header name that is not a token.
    BadHeader,
    Start(u16),
    Chunk(String),
    End,
    /// A `response` whose body travels as base64 (`bodyEncoding`).
    Base64Response(u16, Vec<u8>),
    /// A `stream_chunk` whose data travels as base64.
    Base64Chunk(Vec<u8>),
    /// A `response` marked base64 whose body is not.
    BadBase64,
    /// A `stream_chunk` marked base64 whose data is not.
    BadBase64Chunk,
}

/// Bytes as the simulations write them: text when UTF-8, else hex, so a
/// binary body compares byte for byte.
pub fn show(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(t) => t.to_string(),
        Err(_) => format!("hex:{}", hex(b)),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Answer {
    /// Bytes a chunk carries to the caller.
    pub fn chunk_len(&self) -> u64 {
        match self {
            Answer::Chunk(d) => d.len() as u64,
            Answer::Base64Chunk(b) => b.len() as u64,
            _ => 0,
        }
    }

    /// The frame answering request `id` this way.
    pub fn frame(&self, id: &str) -> String {
        let id = id.to_string();
        let headers = |name: &str| Headers(vec![(name.into(), "text/plain".into())]);
        let frame = match self.clone() {
            Answer::Response(status, body) => {
                let headers = headers("content-type");
                ClientFrame::Response {
                    id,
                    status,
                    headers,
                    body: body.into(),
                }
            }
            Answer::BadHeader => {
                let (headers, body) = (headers("bad name"), String::new());
                ClientFrame::Response {
                    id,
                    status: 200,
                    headers,
                    body: body.into(),
                }
            }
            Answer::BadStatus => {
                return format!(r#"{{"type":"response","id":"{id}","status":0,"headers":{{}}}}"#)
            }
            Answer::Start(status) => {
                let headers = headers("content-type");
                ClientFrame::StreamStart {
                    id,
                    status,
                    headers,
                }
            }
            Answer::Chunk(data) => ClientFrame::StreamChunk {
                id,
                data: data.into(),
            },
            Answer::End => ClientFrame::StreamEnd { id },
            Answer::Base64Response(status, bytes) => ClientFrame::Response {
                id,
                status,
                headers: headers("content-type"),
                body: Body::Binary(bytes),
            },
            Answer::Base64Chunk(bytes) => ClientFrame::StreamChunk {
                id,
                data: ChunkData(Body::Binary(bytes)),
            },
            Answer::BadBase64 => {
                return format!(
                    r#"{{"type":"response","id":"{id}","status":200,"headers":{{}},"body":"a=b","bodyEncoding":"base64"}}"#
                )
            }
            Answer::BadBase64Chunk => {
                return format!(
                    r#"{{"type":"stream_chunk","id":"{id}","data":"é","bodyEncoding":"base64"}}"#
                )
            }
        };
        frame.encode()
    }
}
