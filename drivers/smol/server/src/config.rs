//! `osaurus-relay serve` settings: each an environment variable and a flag.

use clap::Args;
use osaurus_relay_engine::{
    BinaryBodies, ClientIpSource, ClusterConfig, Config, DuplicatePolicy, RemoteRoute,
};
use std::net::IpAddr;
use std::time::Duration;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use a unit: 30s, 250ms, 1m)"))
}

fn policy(s: &str) -> Result<DuplicatePolicy, String> {
    match s {
        "takeover" => Ok(DuplicatePolicy::Takeover),
        "reject" => Ok(DuplicatePolicy::Reject),
        _ => Err("expected takeover or reject".into()),
    }
}

fn binary_bodies(s: &str) -> Result<BinaryBodies, String> {
    match s {
        "base64" => Ok(BinaryBodies::Base64),
        "reject" => Ok(BinaryBodies::Reject),
        _ => Err("expected base64 or reject".into()),
    }
}

fn header_name(s: &str) -> Result<String, String> {
    let s = s.trim().to_ascii_lowercase();
    if osaurus_relay_engine::http::is_token(&s) {
        Ok(s)
    } else {
        Err("not a valid header name".into())
    }
}

fn public_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    let scheme = s.starts_with("https://") || s.starts_with("http://");
    if scheme && s.matches("{address}").count() == 1 && !s.contains(char::is_whitespace) {
        Ok(s.to_string())
    } else {
        Err(
            "expected http(s)://… with {address} once, e.g. https://{address}.agent.example.com"
                .into(),
        )
    }
}

fn domain(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !s.is_empty()
        && s.split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if ok {
        Ok(s)
    } else {
        Err("not a domain name".into())
    }
}

/// Every setting of the relay server. A rate, count or size limit of 0 means unlimited.
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// TCP port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Agents are served at 0x<address>.<BASE_DOMAIN>.
    #[arg(long, env = "BASE_DOMAIN", default_value = "agent.osaurus.ai", value_parser = domain)]
    pub base_domain: String,
    /// Agent URLs in auth_ok and agent_added, `{address}` standing for the
    /// agent's (e.g. http://{address}.localhost:8080). Unset:
    /// https://{address}.<BASE_DOMAIN>.
    #[arg(long, env = "PUBLIC_URL", value_parser = public_url)]
    pub public_url: Option<String>,
    /// Address to bind.
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0")]
    pub bind_addr: IpAddr,
    /// Header a trusted front proxy sets with the client IP (fly-client-ip, or
    /// x-forwarded-for whose rightmost entry is used). Unset: the TCP peer.
    #[arg(long, env = "CLIENT_IP_HEADER", value_parser = header_name)]
    pub client_ip_header: Option<String>,
    /// When an agent connects twice: takeover (newest wins) or reject.
    #[arg(long, env = "DUPLICATE_POLICY", default_value = "takeover", value_parser = policy)]
    pub duplicate_policy: DuplicatePolicy,
    #[arg(long, env = "TUNNEL_CONNECTS_PER_MIN", default_value_t = 5)]
    pub tunnel_connects_per_min: u32,
    #[arg(long, env = "MAX_TUNNELS_PER_IP", default_value_t = 10)]
    pub max_tunnels_per_ip: u32,
    #[arg(long, env = "STATS_REQUESTS_PER_MIN", default_value_t = 10)]
    pub stats_requests_per_min: u32,
    #[arg(long, env = "AGENT_REQUESTS_PER_MIN", default_value_t = 100)]
    pub agent_requests_per_min: u32,
    /// Bearer token of GET /presence (at least 32 characters; shorter or
    /// unset: the endpoint answers 404).
    #[arg(long, env = "PRESENCE_TOKEN", hide_env_values = true)]
    pub presence_token: Option<String>,
    /// Calls per caller IP per minute, counted where the agent's tunnel is.
    #[arg(long, env = "CALLER_REQUESTS_PER_MIN", default_value_t = 300)]
    pub caller_requests_per_min: u32,
    #[arg(long, env = "MAX_AGENTS_PER_TUNNEL", default_value_t = 50)]
    pub max_agents_per_tunnel: u32,
    /// request_challenge and add_agent frames per tunnel per minute.
    #[arg(long, env = "CONTROL_FRAMES_PER_MIN", default_value_t = 10)]
    pub control_frames_per_min: u32,
    /// Request body limit in bytes (0: unlimited).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: u64,
    /// Largest request frame sent to a tunnel, in bytes (0: only
    /// MAX_BODY_BYTES applies). The Osaurus app drops its whole tunnel on a
    /// message over about 1 MiB: 1048576 answers such calls 413 instead.
    #[arg(long, env = "MAX_REQUEST_FRAME_BYTES", default_value_t = 0)]
    pub max_request_frame_bytes: u64,
    /// Request bodies that are not UTF-8: base64 (sent with
    /// bodyEncoding "base64") or reject (415, for app builds before it).
    #[arg(long, env = "BINARY_REQUEST_BODIES", default_value = "base64", value_parser = binary_bodies)]
    pub binary_request_bodies: BinaryBodies,
    #[arg(long, env = "AUTH_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub auth_timeout: Duration,
    /// Time a tunnel has to start answering a call (then 504).
    #[arg(long, env = "RESPONSE_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub response_timeout: Duration,
    #[arg(long, env = "STREAM_IDLE_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub stream_idle_timeout: Duration,
    #[arg(long, env = "PING_INTERVAL", default_value = "30s", value_parser = duration)]
    pub ping_interval: Duration,
    #[arg(long, env = "MAX_MISSED_PINGS", default_value_t = 3)]
    pub max_missed_pings: u32,
    /// Lifetime of a mid-session challenge nonce.
    #[arg(long, env = "NONCE_TTL", default_value = "30s", value_parser = duration)]
    pub nonce_ttl: Duration,
    /// Allowed distance between an auth timestamp and the relay's clock.
    #[arg(long, env = "TIMESTAMP_WINDOW", default_value = "30s", value_parser = duration)]
    pub timestamp_window: Duration,
    /// How long calls in flight may finish after SIGTERM.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "20s", value_parser = duration)]
    pub drain_timeout: Duration,
    /// How long a call for an agent that was online moments ago waits for it
    /// to come back, here or on another instance (0: 502 at once).
    #[arg(long, env = "RECONNECT_GRACE", default_value = "5s", value_parser = duration)]
    pub reconnect_grace: Duration,
    /// Calls held for reconnecting agents, in all.
    #[arg(long, env = "MAX_HELD_CALLS", default_value_t = 10_000)]
    pub max_held_calls: u32,
    /// Calls held for one reconnecting agent.
    #[arg(long, env = "MAX_HELD_PER_AGENT", default_value_t = 1_000)]
    pub max_held_per_agent: u32,
    /// Request body bytes of held calls, in all.
    #[arg(long, env = "MAX_HELD_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_held_bytes: u64,
    /// Time a caller has to send a complete request head (slowloris guard).
    #[arg(long, env = "HEADER_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub header_timeout: Duration,
    /// Time a caller has to send a whole request body (then 408).
    #[arg(long, env = "BODY_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub body_timeout: Duration,
    /// Idle keep-alive connections are closed after this long.
    #[arg(long, env = "IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub idle_timeout: Duration,
    /// Frame bytes queued for a tunnel that does not read before calls to it
    /// fail with 502 tunnel_send_failed.
    #[arg(long, env = "MAX_TUNNEL_BUFFER", default_value_t = 64 * 1024 * 1024)]
    pub max_tunnel_buffer: u64,
    /// Stream bytes buffered for a caller that reads slower than the tunnel
    /// sends before the response is cut.
    #[arg(long, env = "MAX_STREAM_BUFFER", default_value_t = 4 * 1024 * 1024)]
    pub max_stream_buffer: u64,
    /// Largest answer body collected for a caller from another instance
    /// (a forwarded call's owner; then 502 bad_host_response). 0: no limit.
    #[arg(long, env = "MAX_RESPONSE_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_response_body_bytes: u64,
    /// How much longer than RESPONSE_TIMEOUT / STREAM_IDLE_TIMEOUT a call
    /// forwarded to another instance waits (that instance enforces them).
    #[arg(long, env = "FORWARD_MARGIN", default_value = "5s", value_parser = duration)]
    pub forward_margin: Duration,
    /// Largest WebSocket message accepted from a tunnel.
    #[arg(long, env = "MAX_FRAME_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_frame_bytes: usize,
    /// Prometheus metrics: GET /metrics (and /ready) on this address, e.g.
    /// 127.0.0.1:9090. Unset: off.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// PEM certificate chain (a wildcard for *.<BASE_DOMAIN> plus the base
    /// domain): the relay then serves https and wss on PORT. SIGHUP reloads it.
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of TLS_CERT.
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Several instances: the shared Redis (redis://host:port). Unset: one instance.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Where the relay runs (set by Fly.io): in auth_ok, /health and the
    /// x-relay-region header.
    #[arg(long, env = "FLY_REGION", default_value = "local")]
    pub region: String,
    /// Set by Fly.io: this instance's id; calls for agents held elsewhere get
    /// 307 with fly-replay.
    #[arg(long, env = "FLY_MACHINE_ID")]
    pub fly_machine_id: Option<String>,
    /// This instance's id outside Fly.io (default: random at start).
    #[arg(long, env = "INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// This instance's internal address, where other instances forward calls
    /// (http://10.0.0.5:8080). Needed with REDIS_URL outside Fly.io.
    #[arg(long, env = "INSTANCE_URL")]
    pub instance_url: Option<String>,
    /// Longest wait for one Redis operation.
    #[arg(long, env = "REDIS_TIMEOUT", default_value = "1s", value_parser = duration)]
    pub redis_timeout: Duration,
    /// Lifetime of an agent's ownership key in Redis, renewed on every pong:
    /// how long a crashed instance's agents stay claimed. Keep it well above
    /// PING_INTERVAL.
    #[arg(long, env = "CLAIM_TTL", default_value = "120s", value_parser = duration)]
    pub claim_ttl: Duration,
    /// How long a Redis answer naming an agent's owner is reused.
    #[arg(long, env = "LOOKUP_CACHE", default_value = "10s", value_parser = duration)]
    pub lookup_cache: Duration,
    /// How long a Redis answer that nobody holds an agent is reused.
    #[arg(long, env = "LOOKUP_MISS_CACHE", default_value = "2s", value_parser = duration)]
    pub lookup_miss_cache: Duration,
    /// Set by Fly.io: the app's name, for machine-to-machine addresses
    /// (http://<machine>.vm.<app>.internal:<PORT>) unless INSTANCE_URL is set.
    #[arg(long, env = "FLY_APP_NAME")]
    pub fly_app_name: Option<String>,
}

/// The resolved multi-instance settings.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    pub redis_url: String,
    pub engine: ClusterConfig,
    pub instance_url: Option<String>,
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

impl ServeArgs {
    /// Several-instance settings, checked; `None` without `REDIS_URL`.
    pub fn cluster(&self) -> Result<Option<ClusterSettings>, String> {
        let Some(redis_url) = self.redis_url.clone() else {
            return Ok(None);
        };
        let (id, remote) = match &self.fly_machine_id {
            Some(id) => (id.clone(), RemoteRoute::FlyReplay),
            None => {
                let url = self.instance_url.as_deref().unwrap_or("");
                if osaurus_relay_engine::wire::http1::http_authority(url).is_none() {
                    return Err("with REDIS_URL outside Fly.io, set INSTANCE_URL to this \
                         instance's internal http://host:port (where others forward calls)"
                        .into());
                }
                let id =
                    (self.instance_id.clone()).unwrap_or_else(|| osaurus_relay_rt::random_hex(8));
                (id, RemoteRoute::Forward)
            }
        };
        if !valid_id(&id) {
            return Err(format!("instance id {id:?}: use letters, digits and -_.:"));
        }
        // On Fly.io the others reach this machine over its private network
        // (for calls whose bodies Fly cannot replay).
        let fly_url = (self.fly_machine_id.as_ref()).zip(self.fly_app_name.as_ref());
        let fly_url = fly_url.map(|(m, app)| format!("http://{m}.vm.{app}.internal:{}", self.port));
        let instance_url = self.instance_url.clone().or(fly_url);
        Ok(Some(ClusterSettings {
            redis_url,
            engine: ClusterConfig {
                lookup_ttl: self.lookup_cache,
                lookup_miss_ttl: self.lookup_miss_cache,
                claim_ttl: self.claim_ttl.max(Duration::from_secs(1)),
                directory_timeout: self.redis_timeout,
                ..ClusterConfig::new(id, remote)
            },
            instance_url,
        }))
    }

    /// The engine's view of these settings.
    /// The certificate, when TLS_CERT and TLS_KEY are set.
    pub fn tls(&self) -> Result<Option<crate::tls::Tls>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => crate::tls::Tls::new(c.clone(), k.clone()).map(Some),
            (None, None) => Ok(None),
            (Some(_), None) => Err("TLS_CERT is set but TLS_KEY is not".into()),
            (None, Some(_)) => Err("TLS_KEY is set but TLS_CERT is not".into()),
        }
    }

    pub fn engine_config(&self) -> Config {
        Config {
            base_domain: self.base_domain.clone(),
            public_url: self.public_url.clone(),
            region: for_life(self.region.clone()),
            machine: for_life(
                (self.fly_machine_id.clone())
                    .or_else(|| self.instance_id.clone())
                    .unwrap_or_else(|| "local".into()),
            ),
            duplicate_policy: self.duplicate_policy,
            client_ip: match (&self.client_ip_header, &self.fly_app_name) {
                (Some(h), _) => ClientIpSource::Header(h.clone()),
                // Fly's edge sets it on every call and callers cannot forge it there.
                (None, Some(_)) => ClientIpSource::Header("fly-client-ip".into()),
                (None, None) => ClientIpSource::Peer,
            },
            tunnel_connects_per_min: self.tunnel_connects_per_min,
            max_tunnels_per_ip: self.max_tunnels_per_ip,
            stats_requests_per_min: self.stats_requests_per_min,
            agent_requests_per_min: self.agent_requests_per_min,
            caller_requests_per_min: self.caller_requests_per_min,
            presence_token: (self.presence_token.clone()).filter(|t| t.len() >= 32),
            max_agents_per_tunnel: self.max_agents_per_tunnel,
            control_frames_per_min: self.control_frames_per_min,
            max_body_bytes: self.max_body_bytes,
            max_request_frame_bytes: self.max_request_frame_bytes,
            binary_request_bodies: self.binary_request_bodies,
            auth_timeout: self.auth_timeout,
            response_timeout: self.response_timeout,
            stream_idle_timeout: self.stream_idle_timeout,
            ping_interval: self.ping_interval,
            max_missed_pings: self.max_missed_pings,
            nonce_ttl: self.nonce_ttl,
            timestamp_window: self.timestamp_window,
            drain_timeout: self.drain_timeout,
            reconnect_grace: self.reconnect_grace,
            max_held_calls: self.max_held_calls,
            max_held_per_agent: self.max_held_per_agent,
            max_held_bytes: self.max_held_bytes,
            max_tunnel_buffer: self.max_tunnel_buffer,
            max_stream_buffer: self.max_stream_buffer,
            max_response_body_bytes: self.max_response_body_bytes,
            forward_margin: self.forward_margin,
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            idle_timeout: self.idle_timeout,
            max_frame_bytes: self.max_frame_bytes as u64,
            ..Config::default()
        }
    }

    /// Defaults, for tests and embedding.
    pub fn defaults() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            a: ServeArgs,
        }
        P::parse_from(["osaurus-relay"]).a
    }
}

#[cfg(test)]
mod tests;

/// A configuration string for the life of the process: the engine writes it
/// into a header on every call, and a borrowed one is not copied each time.
/// Leaked once per relay started (a few bytes).
pub(crate) fn for_life(s: String) -> std::borrow::Cow<'static, str> {
    std::borrow::Cow::Borrowed(Box::leak(s.into_boxed_str()))
}
