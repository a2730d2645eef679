//! Events the driver feeds into the engine.

use crate::cluster::{ClaimOutcome, Hop, Located};
use crate::fields::Fields;
use core::net::IpAddr;

/// A tunnel (one authenticated WebSocket), numbered by the engine at upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TunnelId(pub u64);

/// One HTTP request/response exchange, numbered by the driver (unique for
/// the engine's lifetime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

/// A parsed HTTP request head, borrowed from where it arrived: a call that
/// goes straight to its tunnel copies none of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHead<'a> {
    /// Request method, as sent (`GET`, `POST`, ...).
    pub method: &'a str,
    /// Path and query as sent (`/v1/chat?stream=true`).
    pub target: &'a str,
    /// The `Host` header (or the absolute-form authority): it names the agent.
    pub host: Option<&'a str>,
    /// Header names as sent; the engine lowercases what it forwards.
    pub headers: Fields<'a>,
    /// TCP peer address.
    pub peer: IpAddr,
    /// Declared `Content-Length`, if any (lets 413 fire before any body byte).
    pub content_length: Option<u64>,
    /// Whether body events and a `CallBodyEnd` follow this head.
    pub body_follows: bool,
    /// A well-formed WebSocket upgrade request.
    pub websocket: bool,
    /// Whether another relay instance forwarded it.
    pub hop: Hop,
    /// Set by a driver that serves HTTP/1.x: a tunnel's complete answer
    /// then comes as the bytes to write ([`Output::Answer`](crate::Output::Answer)).
    pub http1: Option<Http1Answer>,
}

/// How the caller's HTTP/1.x connection takes a complete answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http1Answer {
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    /// The connection stays open after the answer.
    pub keep_alive: bool,
    /// A HEAD request: the answer's head alone.
    pub head_request: bool,
}

/// A [`RequestHead`] that owns its text, for tests and drivers that keep heads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedHead {
    /// See [`RequestHead::method`].
    pub method: String,
    /// See [`RequestHead::target`].
    pub target: String,
    /// See [`RequestHead::host`].
    pub host: Option<String>,
    /// See [`RequestHead::headers`].
    pub headers: Vec<(String, String)>,
    /// See [`RequestHead::peer`].
    pub peer: IpAddr,
    /// See [`RequestHead::content_length`].
    pub content_length: Option<u64>,
    /// See [`RequestHead::body_follows`].
    pub body_follows: bool,
    /// See [`RequestHead::websocket`].
    pub websocket: bool,
    /// See [`RequestHead::hop`].
    pub hop: Hop,
    /// See [`RequestHead::http1`].
    pub http1: Option<Http1Answer>,
}

impl OwnedHead {
    /// The head, borrowed.
    pub fn view(&self) -> RequestHead<'_> {
        RequestHead {
            method: &self.method,
            target: &self.target,
            host: self.host.as_deref(),
            headers: Fields::Pairs(&self.headers),
            peer: self.peer,
            content_length: self.content_length,
            body_follows: self.body_follows,
            websocket: self.websocket,
            hop: self.hop,
            http1: self.http1,
        }
    }
}

/// Why a forwarded call's owner gave no complete answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerFault {
    /// No connection, or it closed before a complete head.
    Unreachable,
    /// Not valid HTTP/1.1, or a body that broke off or was framed wrongly.
    BadAnswer(&'static str),
}

/// An event the driver hands to [`Relay::handle`](crate::Relay::handle). Ids
/// the engine does not know (already answered, closed) are ignored: races
/// between the driver and the engine are normal.
#[derive(Debug)]
pub enum Input<'a> {
    /// A request head arrived: a new call.
    CallHead {
        /// A fresh id for this exchange.
        call: CallId,
        /// The parsed head.
        head: RequestHead<'a>,
    },
    /// Request body bytes, decoded from their framing.
    CallBody {
        /// The call the bytes belong to.
        call: CallId,
        /// The next bytes, in order.
        chunk: &'a [u8],
    },
    /// The request body is complete.
    CallBodyEnd {
        /// The call whose body ended.
        call: CallId,
    },
    /// The caller went away (connection closed or failed).
    CallGone {
        /// The call whose caller left.
        call: CallId,
    },
    /// `bytes` of streamed data reached the caller's socket.
    CallDrained {
        /// The call whose chunks were written.
        call: CallId,
        /// Bytes written since the last report.
        bytes: u64,
    },
    /// A text message from a tunnel.
    TunnelText {
        /// The tunnel it came from.
        tunnel: TunnelId,
        /// The whole message.
        text: &'a str,
    },
    /// A binary message from a tunnel (the protocol uses none).
    TunnelBinary {
        /// The tunnel it came from.
        tunnel: TunnelId,
    },
    /// `bytes` of frames reached the tunnel's socket.
    TunnelDrained {
        /// The tunnel whose frames were written.
        tunnel: TunnelId,
        /// Bytes written since the last report.
        bytes: u64,
    },
    /// The tunnel's socket closed or failed.
    TunnelClosed {
        /// The tunnel that closed.
        tunnel: TunnelId,
    },
    /// Begin graceful shutdown.
    Shutdown,
    /// The result of `Output::Claim`.
    Claimed {
        /// The tunnel that asked for the claim.
        tunnel: TunnelId,
        /// The agent as sent in `Output::Claim`.
        agent: &'a str,
        /// What the directory answered.
        outcome: ClaimOutcome,
    },
    /// A refresh found the agent's key naming another instance.
    ClaimLost {
        /// The tunnel that served the agent.
        tunnel: TunnelId,
        /// The agent whose key was lost.
        agent: &'a str,
    },
    /// The result of `Output::Lookup`.
    Located {
        /// The agent as sent in `Output::Lookup`.
        agent: &'a str,
        /// What the directory answered.
        found: Located,
    },
    /// The directory saw `instance` claim `agent` (its claims watcher):
    /// calls held for the agent here follow it there.
    AgentClaimed {
        /// Lowercase address.
        agent: &'a str,
        /// The instance that now holds it.
        instance: &'a str,
    },
    /// Whether the shared directory answers (shown in `/stats`).
    DirectoryHealth {
        /// `true` when the directory answers.
        up: bool,
    },
    /// The owner instance's answer head to a forwarded call (`Output::Forward`).
    /// `streamed`: chunked or until close, so it streams to the caller; else
    /// its body (`OwnerBody`) is collected and answered with its length.
    OwnerHead {
        /// The forwarded call.
        call: CallId,
        /// The owner's HTTP status.
        status: u16,
        /// The owner's headers; the engine checks and filters them as a tunnel's.
        headers: Vec<(String, String)>,
        /// `true` for a chunked or close-delimited body.
        streamed: bool,
    },
    /// Body bytes of the owner's answer, decoded from its framing.
    OwnerBody {
        /// The forwarded call.
        call: CallId,
        /// The next bytes, in order.
        chunk: &'a [u8],
    },
    /// The owner's answer is complete.
    OwnerEnd {
        /// The forwarded call.
        call: CallId,
    },
    /// The directory's answer to `Output::PresenceLookup`: whether each
    /// agent asked about has a claim, in the order asked.
    PresenceFound {
        /// The presence query.
        call: CallId,
        /// One per agent of the lookup.
        claimed: &'a [bool],
    },
    /// The owner could not be reached, or its answer broke off or was not
    /// valid HTTP.
    OwnerFailed {
        /// The forwarded call.
        call: CallId,
        /// What went wrong.
        fault: OwnerFault,
    },
    /// The owner refused the connection before anything was sent (it is
    /// restarting or gone): the request comes back to be held for its agent.
    OwnerRefused {
        /// The forwarded call.
        call: CallId,
        /// The request as `Output::Forward` carried it (its body complete).
        request: Box<crate::cluster::ForwardRequest>,
    },
    /// Another instance's tunnel for `agent` closed (it left a moving mark):
    /// what is cached about it is stale, and calls for it wait a while.
    AgentMoving {
        /// Lowercase address.
        agent: &'a str,
    },
}
