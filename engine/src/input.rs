//! Events the driver feeds into the engine.

use crate::cluster::{ClaimOutcome, Hop, Located};
use core::net::IpAddr;

/// A tunnel (one authenticated WebSocket), numbered by the engine at upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TunnelId(pub u64);

/// One HTTP request/response exchange, numbered by the driver (unique for
/// the engine's lifetime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

/// A parsed HTTP request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// Path and query as sent (`/v1/chat?stream=true`).
    pub target: String,
    pub host: Option<String>,
    /// Header names as sent; the engine lowercases what it forwards.
    pub headers: Vec<(String, String)>,
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
}

/// One event. Ids the engine does not know (already answered, closed) are
/// ignored: races between the driver and the engine are normal.
/// Why a forwarded call's owner gave no complete answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerFault {
    /// No connection, or it closed before a complete head.
    Unreachable,
    /// Not valid HTTP/1.1, or a body that broke off or was framed wrongly.
    BadAnswer(&'static str),
}

#[derive(Debug)]
pub enum Input<'a> {
    CallHead {
        call: CallId,
        head: RequestHead,
    },
    CallBody {
        call: CallId,
        chunk: &'a [u8],
    },
    CallBodyEnd {
        call: CallId,
    },
    /// The caller went away (connection closed or failed).
    CallGone {
        call: CallId,
    },
    /// `bytes` of streamed data reached the caller's socket.
    CallDrained {
        call: CallId,
        bytes: u64,
    },
    TunnelText {
        tunnel: TunnelId,
        text: &'a str,
    },
    TunnelBinary {
        tunnel: TunnelId,
    },
    /// `bytes` of frames reached the tunnel's socket.
    TunnelDrained {
        tunnel: TunnelId,
        bytes: u64,
    },
    /// The tunnel's socket closed or failed.
    TunnelClosed {
        tunnel: TunnelId,
    },
    /// Begin graceful shutdown.
    Shutdown,
    /// The result of `Output::Claim`.
    Claimed {
        tunnel: TunnelId,
        agent: &'a str,
        outcome: ClaimOutcome,
    },
    /// A refresh found the agent's key naming another instance.
    ClaimLost {
        tunnel: TunnelId,
        agent: &'a str,
    },
    /// The result of `Output::Lookup`.
    Located {
        agent: &'a str,
        found: Located,
    },
    /// Whether the shared directory answers (shown in `/stats`).
    DirectoryHealth {
        up: bool,
    },
    /// The owner instance's answer head to a forwarded call (`Output::Forward`).
    /// `streamed`: chunked or until close, so it streams to the caller; else
    /// its body (`OwnerBody`) is collected and answered with its length.
    OwnerHead {
        call: CallId,
        status: u16,
        headers: Vec<(String, String)>,
        streamed: bool,
    },
    /// Body bytes of the owner's answer, decoded from its framing.
    OwnerBody {
        call: CallId,
        chunk: &'a [u8],
    },
    /// The owner's answer is complete.
    OwnerEnd {
        call: CallId,
    },
    /// The owner could not be reached, or its answer broke off or was not
    /// valid HTTP.
    OwnerFailed {
        call: CallId,
        fault: OwnerFault,
    },
}
