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
    /// The relay's own error answers, by code (every endpoint).
    pub errors: Tally,
    /// Failed tunnel handshakes, by `auth_error` code.
    pub auth_failures_by: Tally,
    /// Finished agent-host calls, by outcome and status class.
    pub calls: CallTally,
    /// Request body bytes of agent-host calls, from callers.
    pub request_bytes: u64,
    /// Response body bytes of agent-host calls, to callers.
    pub response_bytes: u64,
    /// Agent-host calls, head in to last byte out.
    pub call_seconds: Histogram,
    /// Request frame sent to a tunnel to its answer head.
    pub host_seconds: Histogram,
}

/// Counts by a name from a fixed set (error codes, reasons): bounded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally(pub Vec<(&'static str, u64)>);

impl Tally {
    /// Adds `n` to `name`'s count.
    pub fn add(&mut self, name: &'static str, n: u64) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v += n,
            None => self.0.push((name, n)),
        }
    }

    /// The count of `name`.
    pub fn get(&self, name: &str) -> u64 {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map_or(0, |(_, v)| *v)
    }
}

/// Finished calls by outcome and status class (`1`..`5`; `0`: no status).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallTally(pub Vec<(&'static str, u8, u64)>);

impl CallTally {
    /// Counts one call.
    pub fn add_call(&mut self, outcome: &'static str, status: Option<u16>) {
        let class = status.map_or(0, |s| (s / 100).min(9) as u8);
        match self
            .0
            .iter_mut()
            .find(|(o, c, _)| *o == outcome && *c == class)
        {
            Some((_, _, v)) => *v += 1,
            None => self.0.push((outcome, class, 1)),
        }
    }

    /// All calls counted.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, _, n)| n).sum()
    }
}

/// Upper bounds of the duration histograms' buckets, in milliseconds.
pub const BUCKETS_MS: [u64; 13] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
];

/// A duration histogram on the engine's millisecond clock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket of [`BUCKETS_MS`], the last past all of them.
    pub counts: [u64; BUCKETS_MS.len() + 1],
    /// Sum of all observations, in milliseconds.
    pub sum_ms: u64,
}

impl Histogram {
    /// Counts one duration.
    pub fn observe_ms(&mut self, ms: u64) {
        let i = BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(BUCKETS_MS.len());
        self.counts[i] += 1;
        self.sum_ms += ms;
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound in seconds, observations in that bucket)`; the last
    /// bound is infinite.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let bounds = BUCKETS_MS.iter().map(|&b| b as f64 / 1000.0);
        (bounds
            .chain([f64::INFINITY])
            .zip(self.counts.iter().copied()))
        .collect()
    }
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
