//! Counters behind `/health` and `/stats`.

/// Monotonic counters; gauges are computed from the live state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Request frames sent to tunnels.
    pub total_requests_relayed: u64,
    /// Tunnels that completed the handshake.
    pub total_tunnel_connections: u64,
    /// Invalid answers from tunnels or owner instances.
    pub bad_host_responses: u64,
    /// Non-JSON, unknown or unmatched frames from tunnels.
    pub invalid_frames: u64,
    /// Streams cut because the caller read too slowly.
    pub slow_consumer_aborts: u64,
    /// Calls answered 504 because no answer head came in time.
    pub gateway_timeouts: u64,
    /// Failed tunnel handshakes.
    pub auth_failures: u64,
    /// Calls for agents another instance holds (replayed or forwarded).
    pub remote_calls: u64,
    /// Of those, answered with a 307 `fly-replay`.
    pub replays: u64,
    /// Of those, forwarded to the owner instance.
    pub internal_forwards: u64,
    /// Agents a newer session took over from an older tunnel.
    pub takeovers: u64,
}

/// A snapshot for `/stats`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Seconds since the relay was created.
    pub uptime_seconds: u64,
    /// Tunnels that completed the handshake and are still open.
    pub active_tunnels: usize,
    /// Agents served by a tunnel here.
    pub active_agents: usize,
    /// Calls the relay holds now.
    pub active_calls: usize,
    /// Totals since the relay started.
    pub counters: Counters,
    /// Several instances: this instance's id and whether the directory answers.
    pub instance: Option<(String, bool)>,
    /// Several instances: owner answers cached and look-ups waiting.
    pub route_cache_entries: usize,
}

impl Stats {
    /// The `/stats` JSON body; cluster fields only with several instances.
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.counters;
        let mut v = serde_json::json!({
            "uptime_seconds": self.uptime_seconds,
            "active_tunnels": self.active_tunnels,
            "active_agents": self.active_agents,
            "active_calls": self.active_calls,
            "total_requests_relayed": c.total_requests_relayed,
            "total_tunnel_connections": c.total_tunnel_connections,
            "bad_host_responses": c.bad_host_responses,
            "invalid_frames": c.invalid_frames,
            "slow_consumer_aborts": c.slow_consumer_aborts,
            "gateway_timeouts": c.gateway_timeouts,
            "auth_failures": c.auth_failures,
        });
        if let Some((id, up)) = &self.instance {
            v["instance_id"] = id.as_str().into();
            v["redis"] = if *up { "ok" } else { "down" }.into();
            v["redis_degraded"] = (!*up).into();
            v["remote_calls"] = c.remote_calls.into();
            v["total_replays"] = c.replays.into();
            v["total_internal_forwards"] = c.internal_forwards.into();
            v["route_cache_entries"] = self.route_cache_entries.into();
        }
        v["total_takeovers"] = c.takeovers.into();
        v
    }
}
