//! Every limit and timeout of the relay in one `Config`: the engine decides
//! with them, and the drivers read the ones that bound their IO.

use std::borrow::Cow;
use std::time::Duration;

/// What happens when an agent authenticates while another live tunnel holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DuplicatePolicy {
    /// Newest authenticated session wins; the old tunnel is told `superseded`.
    Takeover,
    /// The first tunnel keeps the agent; the newcomer gets `already_registered`.
    Reject,
}

/// What becomes of a request body that is not UTF-8 text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryBodies {
    /// Sent as base64 with `"bodyEncoding": "base64"` (the app decodes it).
    Base64,
    /// 415 `body_not_utf8`, for app builds that predate `bodyEncoding`.
    Reject,
}

/// Where the client IP of a call comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientIpSource {
    /// The TCP peer: nobody can spoof it.
    Peer,
    /// A header set by a trusted front proxy (lowercase name). For
    /// `x-forwarded-for` the rightmost entry is used; falls back to the peer.
    Header(String),
}

/// Every number of the contract, with its default. A rate or count of 0 means unlimited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Agents are served at `0x<address>.<base_domain>`.
    pub base_domain: String,
    /// Where this relay runs (`FLY_REGION`; `local` elsewhere): in `auth_ok`,
    /// `agent_added`, `/health` and the `x-relay-region` header. A `Cow`: a
    /// driver that leaks its one configuration string writes the header on
    /// every call without copying it.
    pub region: Cow<'static, str>,
    /// This machine's id (`FLY_MACHINE_ID`, else the instance id; `local`
    /// alone): in `/health` and `x-relay-machine`.
    pub machine: Cow<'static, str>,
    /// What to do when an agent a live tunnel holds authenticates again.
    pub duplicate_policy: DuplicatePolicy,
    /// Where a call's client IP (for per-IP limits and `x-forwarded-for`) comes from.
    pub client_ip: ClientIpSource,
    /// Tunnel connects per client IP (IPv6: per /64) per minute.
    pub tunnel_connects_per_min: u32,
    /// Open tunnels per client IP (IPv6: per /64), authenticated or not.
    pub max_tunnels_per_ip: u32,
    /// `/stats` requests per client IP (IPv6: per /64) per minute.
    pub stats_requests_per_min: u32,
    /// Calls per agent per minute, from all callers together.
    pub agent_requests_per_min: u32,
    /// Calls per caller IP (IPv6: per /64) per minute, to all agents together.
    pub caller_requests_per_min: u32,
    /// The bearer token of `GET /presence` (at least 32 characters); `None`:
    /// the endpoint is off (404).
    pub presence_token: Option<String>,
    /// `/presence` queries per IP per minute.
    pub presence_requests_per_min: u32,
    /// Agents one tunnel may serve, at auth and through `add_agent`.
    pub max_agents_per_tunnel: u32,
    /// `request_challenge` and `add_agent` per connection per minute.
    pub control_frames_per_min: u32,
    /// The agent URL in `auth_ok` and `agent_added`: `{address}` stands for
    /// the agent's address. `None`: `https://{address}.<base_domain>`.
    pub public_url: Option<String>,
    /// Request body limit; 0 means unlimited.
    pub max_body_bytes: u64,
    /// Emit `Event::CallDone` with method and path for every agent-host
    /// call (the `relay.request` log line); off saves two strings per call.
    pub log_calls: bool,
    /// Largest request frame sent to a tunnel (413 beyond); 0 means only
    /// `max_body_bytes` applies. The app drops its whole tunnel on a message
    /// over its WebSocket limit (about 1 MiB).
    pub max_request_frame_bytes: u64,
    /// How a request body that is not UTF-8 reaches the tunnel.
    pub binary_request_bodies: BinaryBodies,
    /// Time a new tunnel has to authenticate (then close).
    pub auth_timeout: Duration,
    /// Time a call waits for the head of its answer (then 504).
    pub response_timeout: Duration,
    /// Longest silence on a streamed answer before it is cut.
    pub stream_idle_timeout: Duration,
    /// Time between keepalive pings to an authenticated tunnel.
    pub ping_interval: Duration,
    /// Pings in a row a tunnel may leave unanswered before it is dropped; 0 never drops.
    pub max_missed_pings: u32,
    /// Lifetime of a mid-session challenge nonce (for `add_agent`).
    pub nonce_ttl: Duration,
    /// Largest distance allowed between an auth timestamp and the relay's Unix clock.
    pub timestamp_window: Duration,
    /// How long calls in flight may finish after shutdown begins.
    pub drain_timeout: Duration,
    /// How long a call for an agent that was online moments ago waits for it
    /// to come back (here or elsewhere); 0: 502 at once.
    pub reconnect_grace: Duration,
    /// Held calls in all (503 `agent_reconnecting` beyond); 0: unlimited.
    pub max_held_calls: u32,
    /// Held calls per agent; 0: unlimited.
    pub max_held_per_agent: u32,
    /// Request body bytes of held calls in all; 0: unlimited.
    pub max_held_bytes: u64,
    /// Largest answer body collected for a caller (a forwarded call's owner
    /// answer); 0 means unlimited.
    pub max_response_body_bytes: u64,
    /// How much longer than its own limits a forwarded call waits for the
    /// owner instance, which enforces them itself.
    pub forward_margin: Duration,
    /// Bytes a slow caller may have queued on a stream before it is aborted.
    pub max_stream_buffer: u64,
    /// Bytes queued towards a tunnel that does not read before new calls fail.
    pub max_tunnel_buffer: u64,
    /// Largest `stream_chunk.data` accepted from a tunnel.
    pub max_chunk_bytes: u64,
    /// Mid-session nonces a tunnel may hold unused at once.
    pub max_pending_nonces: usize,
    /// Time a caller has to send a complete request head (then 408).
    pub header_timeout: Duration,
    /// Time a caller has to send a whole request body (then 408).
    pub body_timeout: Duration,
    /// Idle keep-alive connections are closed after this long.
    pub idle_timeout: Duration,
    /// Request heads: largest size and most header lines (then 431).
    pub head_limits: crate::wire::http1::HeadLimits,
    /// Largest WebSocket message accepted from a tunnel (then close 1009).
    pub max_frame_bytes: u64,
    /// How long a rejected caller's error may take to write, and how long
    /// its connection is drained afterwards so the error is not reset away.
    pub reject_linger: Duration,
    /// One of several instances sharing an ownership directory; `None` alone.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            base_domain: "agent.osaurus.ai".into(),
            region: "local".into(),
            machine: "local".into(),
            duplicate_policy: DuplicatePolicy::Takeover,
            client_ip: ClientIpSource::Peer,
            tunnel_connects_per_min: 5,
            max_tunnels_per_ip: 10,
            stats_requests_per_min: 10,
            agent_requests_per_min: 100,
            caller_requests_per_min: 300,
            presence_token: None,
            presence_requests_per_min: 120,
            max_agents_per_tunnel: 50,
            control_frames_per_min: 10,
            max_body_bytes: 10 * 1024 * 1024,
            public_url: None,
            log_calls: true,
            max_request_frame_bytes: 0,
            binary_request_bodies: BinaryBodies::Base64,
            auth_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            stream_idle_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(30),
            max_missed_pings: 3,
            nonce_ttl: Duration::from_secs(30),
            timestamp_window: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(20),
            reconnect_grace: Duration::from_secs(5),
            max_held_calls: 10_000,
            max_held_per_agent: 1_000,
            max_held_bytes: 64 * 1024 * 1024,
            max_response_body_bytes: 10 * 1024 * 1024,
            forward_margin: Duration::from_secs(5),
            max_stream_buffer: 4 * 1024 * 1024,
            max_tunnel_buffer: 64 * 1024 * 1024,
            max_chunk_bytes: 1024 * 1024,
            max_pending_nonces: 4,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            head_limits: crate::wire::http1::HeadLimits::default(),
            max_frame_bytes: 64 * 1024 * 1024,
            reject_linger: Duration::from_secs(2),
            cluster: None,
        }
    }
}

impl Config {
    /// Bytes a tunnel may send before it authenticates: one auth frame of
    /// about 200 bytes per agent, at least 64 KiB; unlimited agents, no cap.
    pub fn pre_auth_read_budget(&self) -> u64 {
        match self.max_agents_per_tunnel {
            0 => u64::MAX,
            n => (u64::from(n) * 512).max(64 * 1024),
        }
    }

    /// Longest wait for progress on one read or write of a body or answer
    /// (a caller or tunnel that stops reading is dropped after it).
    pub fn io_timeout(&self) -> Duration {
        self.response_timeout.max(Duration::from_secs(1))
    }
}
