//! What goes into the tunnel client, what comes out, and what it reports.

use crate::auth::{Address, SecretKey};
use crate::frame::{AgentUrl, Headers, Rejected};

/// What happens to the client: the relay link, its frames, the local server.
#[derive(Debug)]
pub enum ClientInput<'a> {
    /// The WebSocket to the relay is open.
    Connected,
    /// A text frame from the relay.
    Text(&'a str),
    /// The WebSocket closed or failed (or could not be opened).
    Disconnected,
    /// The local server answered a request in full.
    LocalResponse {
        /// The relay's request id.
        id: String,
        /// The local server's status.
        status: u16,
        /// Its headers, as it sent them.
        headers: Headers,
        /// The whole body, any bytes.
        body: Vec<u8>,
    },
    /// The local server started a streamed answer.
    LocalStreamStart {
        /// The relay's request id.
        id: String,
        /// The local server's status.
        status: u16,
        /// Its headers, as it sent them.
        headers: Headers,
    },
    /// One chunk of a streamed answer (see [`stream::Splitter`]).
    LocalStreamChunk {
        /// The relay's request id.
        id: String,
        /// The chunk's bytes.
        data: Vec<u8>,
    },
    /// A streamed answer ended.
    LocalStreamEnd {
        /// The relay's request id.
        id: String,
    },
    /// The local server could not be reached or failed mid-answer.
    LocalFailed {
        /// The relay's request id.
        id: String,
    },
    /// Serve this agent too (on the open tunnel if there is one).
    AddAgent(SecretKey),
    /// Stop serving this agent.
    RemoveAgent(Address),
}

/// What the driver must do for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOutput {
    /// Open the WebSocket to the relay now.
    Connect,
    /// Send this text frame to the relay.
    Send(String),
    /// Close the WebSocket; a `Disconnected` input should follow.
    Close,
    /// Call the local server.
    Forward {
        /// The relay's request id: answers name it.
        id: String,
        /// The request method.
        method: String,
        /// Path and query string.
        path: String,
        /// The request headers the relay forwarded.
        headers: Headers,
        /// The exact bytes the caller sent (base64 on the wire already decoded).
        body: Vec<u8>,
        /// The relay decodes binary stream chunks: an answer that is large or
        /// of unknown length may stream, whatever its type.
        stream_any: bool,
    },
    /// Drop the local call `id`.
    CancelLocal {
        /// The relay's request id.
        id: String,
    },
    /// Something to tell the person running the client.
    Status(ClientEvent),
    /// Nothing left to serve: every agent was superseded or removed.
    Stopped,
}

/// What a person running the client should be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// The handshake succeeded.
    Online {
        /// The agents served, with their public URLs.
        agents: Vec<AgentUrl>,
        /// Agents the relay refused, with why.
        rejected: Vec<Rejected>,
    },
    /// An agent added mid-session is served.
    AgentAdded(AgentUrl),
    /// The relay confirmed an agent's removal.
    AgentRemoved {
        /// Its lowercase address.
        address: String,
    },
    /// A newer session elsewhere took this agent over.
    Superseded {
        /// Its lowercase address.
        address: String,
    },
    /// The relay refused the handshake.
    AuthFailed {
        /// The relay's `auth_error` code.
        error: String,
        /// What the person can do about it.
        hint: &'static str,
    },
    /// The relay sent an `error` frame.
    RelayError {
        /// Its code.
        error: String,
    },
    /// The link is down; the next attempt is in `in_ms`.
    Reconnecting {
        /// Delay before the next attempt, in ms.
        in_ms: u64,
        /// How many attempts failed in a row.
        attempt: u32,
    },
    /// The relay is restarting: reconnecting at once.
    RelayRestarting,
    /// The local answer to `id` is not UTF-8 and the relay does not
    /// advertise `body_encoding` (the reference relay): answered 502 instead
    /// of sending base64 that would reach the caller as text.
    BinaryNotRelayed {
        /// The relay's request id.
        id: String,
    },
}
