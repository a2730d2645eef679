//! Actions the engine asks the driver to carry out, in order.

use crate::cluster::ForwardRequest;
use crate::http::{Response, ResponseHead};
use crate::input::{CallId, TunnelId};
use core::net::IpAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Answer the call with a complete response; the call is over.
    Respond {
        call: CallId,
        response: Response,
    },
    /// Send the head of a streamed response (chunked); chunks follow.
    StartStream {
        call: CallId,
        head: ResponseHead,
    },
    /// Write and flush one chunk; report with `CallDrained` once written.
    WriteChunk {
        call: CallId,
        data: Vec<u8>,
    },
    /// Finish the streamed response cleanly; the call is over.
    EndStream {
        call: CallId,
    },
    /// Cut the streamed response short (close the connection without the
    /// last chunk) so the caller sees it is incomplete; the call is over.
    AbortStream {
        call: CallId,
    },
    /// Complete the WebSocket handshake of `call`; it becomes `tunnel`.
    Upgrade {
        call: CallId,
        tunnel: TunnelId,
    },
    /// Send one text frame; report with `TunnelDrained` once written.
    SendFrame {
        tunnel: TunnelId,
        text: String,
    },
    /// Send a close frame and drop the socket; the engine forgot the tunnel.
    CloseTunnel {
        tunnel: TunnelId,
        code: u16,
        reason: &'static str,
    },
    /// Several instances: claim `agent` for this instance (`SET agent:<a> id
    /// EX 120 NX GET`, without `NX` when `takeover`); answer with `Claimed`.
    Claim {
        tunnel: TunnelId,
        agent: String,
        takeover: bool,
    },
    /// Several instances: renew the claims of a tunnel that answered a ping;
    /// answer `ClaimLost` for each agent whose key names another instance.
    Refresh {
        tunnel: TunnelId,
        agents: Vec<String>,
    },
    /// Several instances: delete the agent's key if it still names us.
    Release {
        agent: String,
    },
    /// Several instances: who owns `agent`? Answer with `Located`.
    Lookup {
        agent: String,
    },
    /// Several instances: replay the call on `instance` and relay its answer;
    /// the engine forgot the call.
    Forward {
        call: CallId,
        instance: String,
        /// Boxed: it would make every output five times larger.
        request: Box<ForwardRequest>,
    },
    /// Something worth one log line.
    /// Drop the connection to the owner of this forwarded call: the engine
    /// ended the call (caller gone, timeout, slow caller, bad answer).
    CancelForward {
        call: CallId,
    },
    /// The tunnel authenticated: its frames may now be as large as
    /// `max_frame_bytes` (before, `pre_auth_read_budget` bytes in all).
    Authenticated {
        tunnel: TunnelId,
    },
    Event(Event),
    /// Shutdown finished: every tunnel was told and closed.
    ShutdownComplete,
}

/// Notable events for logs. Never carries secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    TunnelUp {
        tunnel: TunnelId,
        ip: IpAddr,
        agents: usize,
    },
    TunnelDown {
        tunnel: TunnelId,
        agents: usize,
        reason: &'static str,
    },
    AuthFailed {
        tunnel: TunnelId,
        ip: IpAddr,
        reason: &'static str,
    },
    AgentAdded {
        tunnel: TunnelId,
        address: String,
    },
    AgentRemoved {
        tunnel: TunnelId,
        address: String,
        reason: &'static str,
    },
    BadHostResponse {
        tunnel: TunnelId,
        why: &'static str,
    },
    SlowConsumer {
        tunnel: TunnelId,
    },
    /// The owner instance answered a forwarded call with something invalid.
    BadOwnerAnswer {
        call: CallId,
        why: &'static str,
    },
    ShuttingDown {
        calls: usize,
        tunnels: usize,
    },
}
