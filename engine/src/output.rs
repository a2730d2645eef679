//! Actions the engine asks the driver to carry out, in order.

use crate::cluster::ForwardRequest;
use crate::http::{Response, ResponseHead};
use crate::input::{CallId, TunnelId};
use core::net::IpAddr;

/// An action for the driver, taken from [`Relay::poll_output`](crate::Relay::poll_output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Answer the call with a complete response; the call is over.
    Respond {
        /// The call to answer.
        call: CallId,
        /// Status, headers and body to write.
        response: Response,
    },
    /// Write these bytes, a complete HTTP/1.x answer framed as the call's
    /// [`Http1Answer`](crate::Http1Answer) asked; the call is over.
    Answer {
        /// The call to answer.
        call: CallId,
        /// Head and body, ready to write.
        bytes: Vec<u8>,
        /// The body's length (for a HEAD request, the one it would have had).
        body_len: usize,
        /// Whether the head lets the connection stay open.
        keep_alive: bool,
    },
    /// Send the head of a streamed response (chunked); chunks follow.
    StartStream {
        /// The call to answer.
        call: CallId,
        /// Status and headers; the body follows as chunks.
        head: ResponseHead,
    },
    /// Write and flush one chunk; report with `CallDrained` once written.
    WriteChunk {
        /// The streaming call.
        call: CallId,
        /// Body bytes to write as one chunk.
        data: Vec<u8>,
    },
    /// Finish the streamed response cleanly; the call is over.
    EndStream {
        /// The streaming call.
        call: CallId,
    },
    /// Cut the streamed response short (close the connection without the
    /// last chunk) so the caller sees it is incomplete; the call is over.
    AbortStream {
        /// The streaming call.
        call: CallId,
    },
    /// Complete the WebSocket handshake of `call`; it becomes `tunnel`.
    Upgrade {
        /// The call that asked for `/tunnel/connect`.
        call: CallId,
        /// The id its WebSocket is known by from now on.
        tunnel: TunnelId,
    },
    /// Send one text frame; report with `TunnelDrained` once written.
    SendFrame {
        /// The tunnel to write to.
        tunnel: TunnelId,
        /// The frame's JSON text.
        text: String,
    },
    /// Send a close frame and drop the socket; the engine forgot the tunnel.
    CloseTunnel {
        /// The tunnel to close.
        tunnel: TunnelId,
        /// WebSocket close code.
        code: u16,
        /// WebSocket close reason.
        reason: &'static str,
    },
    /// Several instances: claim `agent` for this instance (`SET agent:<a> id
    /// EX <CLAIM_TTL> NX GET`, without `NX` when `takeover`); answer with `Claimed`.
    Claim {
        /// The tunnel the claim is for.
        tunnel: TunnelId,
        /// `0x` + lowercase hex.
        agent: String,
        /// Overwrite a key held by another instance.
        takeover: bool,
    },
    /// Several instances: renew the claims of a tunnel that answered a ping;
    /// answer `ClaimLost` for each agent whose key names another instance.
    Refresh {
        /// The tunnel that answered.
        tunnel: TunnelId,
        /// Its agents, `0x` + lowercase hex.
        agents: Vec<String>,
    },
    /// Several instances: delete the agent's key if it still names us.
    Release {
        /// `0x` + lowercase hex.
        agent: String,
        /// Its tunnel closed (rather than the app removing it): leave a
        /// short-lived mark so other instances hold calls for it a while.
        moving: bool,
    },
    /// Several instances: who owns `agent`? Answer with `Located`.
    Lookup {
        /// `0x` + lowercase hex.
        agent: String,
    },
    /// Several instances: replay the call on `instance` and relay its answer;
    /// the engine forgot the call.
    Forward {
        /// The call to forward.
        call: CallId,
        /// The id of the instance that owns the agent.
        instance: String,
        /// Boxed: it would make every output five times larger.
        request: Box<ForwardRequest>,
    },
    /// More of a forwarded call's request body, to go to the owner in order.
    ForwardBody {
        /// The forwarded call.
        call: CallId,
        /// The body bytes.
        data: Vec<u8>,
    },
    /// The forwarded call's request body is complete.
    ForwardBodyEnd {
        /// The forwarded call.
        call: CallId,
    },
    /// Drop the connection to the owner of this forwarded call: the engine
    /// ended the call (caller gone, timeout, slow caller, bad answer).
    CancelForward {
        /// The forwarded call.
        call: CallId,
    },
    /// Read whether these agents have a claim in the directory (one `MGET`);
    /// answer with `Input::PresenceFound`.
    PresenceLookup {
        /// The presence query.
        call: CallId,
        /// Lowercase addresses.
        agents: Vec<String>,
    },
    /// The tunnel authenticated: its frames may now be as large as
    /// `max_frame_bytes` (before, `pre_auth_read_budget` bytes in all).
    Authenticated {
        /// The tunnel that authenticated.
        tunnel: TunnelId,
    },
    /// Something worth one log line.
    Event(Event),
    /// Shutdown finished: every tunnel was told and closed.
    ShutdownComplete,
}

/// Notable events for logs. Never carries secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A tunnel completed its handshake.
    TunnelUp {
        /// The new tunnel.
        tunnel: TunnelId,
        /// The client IP it connected from.
        ip: IpAddr,
        /// Agents it serves after the handshake.
        agents: usize,
    },
    /// An authenticated tunnel went away.
    TunnelDown {
        /// The tunnel that went away.
        tunnel: TunnelId,
        /// Agents it served then.
        agents: usize,
        /// Why, e.g. `closed by peer` or `superseded`.
        reason: &'static str,
    },
    /// A tunnel's handshake failed.
    AuthFailed {
        /// The tunnel that failed.
        tunnel: TunnelId,
        /// The client IP it connected from.
        ip: IpAddr,
        /// The [`AuthError`](crate::AuthError) code.
        reason: &'static str,
    },
    /// A tunnel added an agent mid-session.
    AgentAdded {
        /// The tunnel that added it.
        tunnel: TunnelId,
        /// `0x` + lowercase hex.
        address: String,
    },
    /// A tunnel stopped serving an agent.
    AgentRemoved {
        /// The tunnel that served it.
        tunnel: TunnelId,
        /// `0x` + lowercase hex.
        address: String,
        /// `superseded` or `removed`.
        reason: &'static str,
    },
    /// A tunnel answered a call with something invalid.
    BadHostResponse {
        /// The tunnel that answered.
        tunnel: TunnelId,
        /// What was wrong.
        why: &'static str,
    },
    /// A stream was cut because its caller read too slowly.
    SlowConsumer {
        /// The tunnel that sent the stream.
        tunnel: TunnelId,
    },
    /// The owner instance answered a forwarded call with something invalid.
    BadOwnerAnswer {
        /// The forwarded call.
        call: CallId,
        /// What was wrong.
        why: &'static str,
    },
    /// An agent-host call finished (one `relay.request` log line).
    CallDone(Box<crate::record::CallDone>),
    /// Shutdown began.
    ShuttingDown {
        /// Calls in flight then.
        calls: usize,
        /// Tunnels open then.
        tunnels: usize,
    },
}
