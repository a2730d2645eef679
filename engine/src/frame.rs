//! Tunnel wire frames (JSON text messages), encode and parse, both directions.

use crate::fields::Fields;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

mod body;
mod escape;
pub(crate) mod fast;
mod request;
pub use body::{base64_from_json, push_base64, Body, ChunkData, BASE64};
pub use escape::escape_into;
pub(crate) use request::push_ip;
pub use request::{encode_request, encode_request_into, Names, RelayHeaders, RequestText};

/// What this relay understands beyond the contract, listed in `auth_ok` and
/// `agent_added` so a client knows it may send base64 bodies and chunks.
pub const FEATURES: [&str; 2] = ["body_encoding", "stream_body_encoding"];

/// Header name/value pairs, in order; a JSON object of strings on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of `name`, compared case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Headers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    out.push((k, v));
                }
                Ok(Headers(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// One agent's proof of ownership in an `auth` frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSig {
    /// `0x` + 40 hex digits, exactly as signed.
    pub address: String,
    /// `0x` + r||s||v hex over [`crate::auth::tunnel_message`].
    pub signature: String,
}

/// An agent the relay now serves, with where callers reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentUrl {
    /// `0x` + lowercase hex.
    pub address: String,
    /// `https://<address>.<base domain>`.
    pub url: String,
}

/// An agent from `auth` that the relay did not register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// `0x` + lowercase hex.
    pub address: String,
    /// Why, e.g. `already_registered`.
    pub reason: String,
}

/// Frames the relay sends to a tunnel client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The nonce to sign: first on a new tunnel, and the answer to `request_challenge`.
    Challenge {
        /// 64 hex digits, signed in `auth` or `add_agent`.
        nonce: String,
    },
    /// The handshake succeeded.
    AuthOk {
        /// The agents now served.
        agents: Vec<AgentUrl>,
        /// Agents not registered: another tunnel or instance holds them (policy `reject`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        rejected: Vec<Rejected>,
        /// Extensions the relay understands (see [`FEATURES`]); the app ignores it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
        /// Where the relay runs (`FLY_REGION`, or `local`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
    },
    /// The handshake failed; the relay closes the tunnel next.
    AuthError {
        /// An [`AuthError`](crate::error::AuthError) code.
        error: String,
    },
    /// An `add_agent` succeeded.
    AgentAdded {
        /// `0x` + lowercase hex.
        address: String,
        /// Where callers reach the agent.
        url: String,
        /// Extensions the relay understands (see [`FEATURES`]).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
        /// Where the relay runs (`FLY_REGION`, or `local`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
    },
    /// The tunnel no longer serves an agent.
    AgentRemoved {
        /// `0x` + lowercase hex.
        address: String,
        /// `superseded` when another tunnel took the agent over; absent after `remove_agent`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A call for one of the tunnel's agents.
    Request {
        /// Request id that the answer frames carry back.
        id: String,
        /// HTTP method of the call.
        method: String,
        /// Request target: path and query.
        path: String,
        /// The caller's headers, filtered, plus `x-agent-address` and `x-forwarded-for`.
        headers: Headers,
        /// Always sent (`""` without a body), as the reference relay does.
        #[serde(flatten)]
        body: Body,
    },
    /// Keepalive; the client answers `pong` with the same `ts`.
    Ping {
        /// The relay's Unix seconds when it sent the ping.
        ts: u64,
    },
    /// A refused control frame (the tunnel stays open), or `relay_restarting` before a close.
    Error {
        /// Error code, e.g. `rate_limited` or `invalid_nonce`.
        error: String,
    },
    /// The relay dropped the call: the client should stop working on it.
    Cancel {
        /// The request id of the dropped call.
        id: String,
    },
}

impl ServerFrame {
    /// The frame as JSON text, one WebSocket text message.
    pub fn encode(&self) -> String {
        match self {
            // Requests are most of what the relay writes: written directly,
            // byte for byte what serde writes (property-tested).
            ServerFrame::Request {
                id,
                method,
                path,
                headers,
                body,
            } => encode_request(
                id,
                RequestText {
                    method,
                    path,
                    headers: headers.0.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    headers_size: Fields::Pairs(&headers.0).size_hint(),
                    names: Names::AsGiven,
                },
                None,
                body,
            ),
            _ => {
                // Control frames are small.
                let mut out = Vec::with_capacity(128);
                match serde_json::to_writer(&mut out, self) {
                    Ok(()) => String::from_utf8(out).unwrap_or_default(),
                    Err(_) => String::new(),
                }
            }
        }
    }

    /// Client side: `None` for non-JSON or frame types this version does not know.
    pub fn parse(text: &str) -> Option<ServerFrame> {
        serde_json::from_str(text).ok()
    }
}

/// Frames a tunnel client sends to the relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// The handshake: one signature per agent over the challenge nonce.
    Auth {
        /// The agents to serve, each with its signature.
        agents: Vec<AgentSig>,
        /// The nonce from `challenge`.
        nonce: String,
        /// Unix seconds that were signed; must be near the relay's clock.
        timestamp: u64,
    },
    /// Asks for a fresh nonce, to add an agent mid-session.
    RequestChallenge,
    /// Adds one agent to an authenticated tunnel.
    AddAgent {
        /// `0x` + 40 hex digits, exactly as signed.
        address: String,
        /// `0x` + r||s||v hex over [`crate::auth::tunnel_message`].
        signature: String,
        /// A nonce from a mid-session `challenge`.
        nonce: String,
        /// Unix seconds that were signed; must be near the relay's clock.
        timestamp: u64,
    },
    /// Stops serving one agent; the relay answers `agent_removed`.
    RemoveAgent {
        /// The agent to remove, `0x` + 40 hex digits.
        address: String,
    },
    /// Answers `ping`: keeps the tunnel alive.
    Pong {
        /// The `ts` of the ping answered.
        ts: u64,
    },
    /// A whole answer to one request.
    Response {
        /// The id from the `request` frame.
        id: String,
        /// HTTP status, 200-599.
        status: u16,
        /// Response headers for the caller.
        headers: Headers,
        /// `body`, as text or base64 with `"bodyEncoding": "base64"`.
        #[serde(flatten)]
        body: Body,
    },
    /// The head of a streamed answer; `stream_chunk`s and `stream_end` follow.
    StreamStart {
        /// The id from the `request` frame.
        id: String,
        /// HTTP status, 200-599.
        status: u16,
        /// Response headers for the caller.
        headers: Headers,
    },
    /// One piece of a streamed answer's body.
    StreamChunk {
        /// The id from the `request` frame.
        id: String,
        /// `data`, as text or base64 with `"bodyEncoding": "base64"`.
        #[serde(flatten)]
        data: ChunkData,
    },
    /// The streamed answer is complete.
    StreamEnd {
        /// The id from the `request` frame.
        id: String,
    },
}

impl ClientFrame {
    /// The frame as JSON text, one WebSocket text message.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("frames always serialize")
    }
}

/// What the relay makes of one text message from a tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A frame the relay understands.
    Frame(ClientFrame),
    /// A reply frame naming `id` whose other fields are not valid.
    BadReply {
        /// The request id the frame names.
        id: String,
        /// What was wrong with it, for the log.
        why: &'static str,
    },
    /// A JSON object of a type the relay does not handle, or with unusable fields.
    Unknown,
    /// Not a JSON object.
    Invalid,
}

/// Every field any client frame has, each kept raw so that one bad field does
/// not hide the frame's `type` and `id`.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    status: Option<&'a RawValue>,
    #[serde(borrow)]
    headers: Option<&'a RawValue>,
    #[serde(borrow)]
    body: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    agents: Option<&'a RawValue>,
    #[serde(borrow)]
    nonce: Option<&'a RawValue>,
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    address: Option<&'a RawValue>,
    #[serde(borrow)]
    signature: Option<&'a RawValue>,
    #[serde(borrow)]
    ts: Option<&'a RawValue>,
    #[serde(rename = "bodyEncoding", borrow)]
    body_encoding: Option<&'a RawValue>,
}

fn field<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>) -> Option<T> {
    raw.and_then(|r| serde_json::from_str(r.get()).ok())
}

/// Missing or malformed auth fields become values that fail their check
/// later (empty nonce, timestamp 0), so the engine picks the error code.
fn lenient_agent(raw: &RawValue) -> AgentSig {
    #[derive(Deserialize)]
    struct A {
        address: Option<String>,
        signature: Option<String>,
    }
    let a: Option<A> = serde_json::from_str(raw.get()).ok();
    let (address, signature) = a.map_or((None, None), |a| (a.address, a.signature));
    AgentSig {
        address: address.unwrap_or_default(),
        signature: signature.unwrap_or_default(),
    }
}

/// A JSON string value. Without escapes it is its raw text between the
/// quotes (already checked by the parser): one copy instead of a second scan.
fn json_string(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) if !inner.as_bytes().contains(&b'\\') => Some(inner.to_string()),
        _ => serde_json::from_str(text).ok(),
    }
}

/// `bodyEncoding: "base64"`; any other value (or none) means text, as the app reads it.
fn is_base64(raw: Option<&RawValue>) -> bool {
    raw.is_some_and(|r| r.get() == "\"base64\"")
}

/// A body or chunk: text, or base64 decoded straight from the frame's text.
fn payload(raw: &RawValue, base64: bool) -> Option<Body> {
    if base64 {
        base64_from_json(raw.get()).map(Body::Binary)
    } else {
        json_string(raw).map(Body::Text)
    }
}

fn status(raw: Option<&RawValue>) -> Result<u16, &'static str> {
    let n: u64 = field(raw).ok_or("status is not an integer")?;
    if (200..=599).contains(&n) {
        Ok(n as u16)
    } else {
        Err("status outside 200-599")
    }
}

fn headers(raw: Option<&RawValue>) -> Result<Headers, &'static str> {
    field(raw).ok_or("headers is not an object of strings")
}

impl Inbound {
    /// Classifies one text message from a tunnel; never fails.
    pub fn parse(text: &str) -> Inbound {
        fast::parse(text).map_or_else(|| Self::parse_full(text), fast::Fast::into_inbound)
    }

    /// [`Inbound::parse`] without its fast path for plain stream frames.
    pub fn parse_full(text: &str) -> Inbound {
        let w: Wire = match serde_json::from_str(text) {
            Ok(w) => w,
            Err(e) if e.is_data() => return Inbound::Unknown,
            Err(_) => return Inbound::Invalid,
        };
        let Some(ty) = w.ty else {
            return Inbound::Unknown;
        };
        let reply_id: Option<String> = field(w.id);
        let frame = match (ty.as_ref(), reply_id) {
            ("auth", _) => ClientFrame::Auth {
                agents: w
                    .agents
                    .and_then(|r| serde_json::from_str::<Vec<&RawValue>>(r.get()).ok())
                    .map(|v| v.into_iter().map(lenient_agent).collect())
                    .unwrap_or_default(),
                nonce: field(w.nonce).unwrap_or_default(),
                timestamp: field(w.timestamp).unwrap_or(0),
            },
            ("request_challenge", _) => ClientFrame::RequestChallenge,
            ("add_agent", _) => ClientFrame::AddAgent {
                address: field(w.address).unwrap_or_default(),
                signature: field(w.signature).unwrap_or_default(),
                nonce: field(w.nonce).unwrap_or_default(),
                timestamp: field(w.timestamp).unwrap_or(0),
            },
            ("remove_agent", _) => match field(w.address) {
                Some(address) => ClientFrame::RemoveAgent { address },
                None => return Inbound::Unknown,
            },
            ("pong", _) => ClientFrame::Pong {
                ts: field(w.ts).unwrap_or(0),
            },
            ("response", Some(id)) => {
                let base64 = is_base64(w.body_encoding);
                let parsed = status(w.status).and_then(|st| {
                    let body = match w.body {
                        None => Body::default(),
                        Some(r) if r.get() == "null" => Body::default(),
                        Some(r) => payload(r, base64).ok_or(if base64 {
                            "body is not valid base64"
                        } else {
                            "body is not a string"
                        })?,
                    };
                    Ok((st, headers(w.headers)?, body))
                });
                match parsed {
                    Ok((status, headers, body)) => ClientFrame::Response {
                        id,
                        status,
                        headers,
                        body,
                    },
                    Err(why) => return Inbound::BadReply { id, why },
                }
            }
            ("stream_start", Some(id)) => {
                match status(w.status).and_then(|st| Ok((st, headers(w.headers)?))) {
                    Ok((status, headers)) => ClientFrame::StreamStart {
                        id,
                        status,
                        headers,
                    },
                    Err(why) => return Inbound::BadReply { id, why },
                }
            }
            ("stream_chunk", Some(id)) => {
                let base64 = is_base64(w.body_encoding);
                match w.data.and_then(|r| payload(r, base64)) {
                    Some(data) => ClientFrame::StreamChunk {
                        id,
                        data: ChunkData(data),
                    },
                    None if base64 => {
                        return Inbound::BadReply {
                            id,
                            why: "data is not valid base64",
                        }
                    }
                    None => {
                        return Inbound::BadReply {
                            id,
                            why: "data is not a string",
                        }
                    }
                }
            }
            ("stream_end", Some(id)) => ClientFrame::StreamEnd { id },
            _ => return Inbound::Unknown,
        };
        Inbound::Frame(frame)
    }
}

#[cfg(test)]
mod tests;
