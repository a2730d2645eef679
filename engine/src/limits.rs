//! Every limit and timeout of the relay in one `Config`, and token buckets.

use std::hash::Hash;
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
    pub base_domain: String,
    pub duplicate_policy: DuplicatePolicy,
    pub client_ip: ClientIpSource,
    pub tunnel_connects_per_min: u32,
    pub max_tunnels_per_ip: u32,
    pub stats_requests_per_min: u32,
    pub agent_requests_per_min: u32,
    pub max_agents_per_tunnel: u32,
    /// `request_challenge` and `add_agent` per connection per minute.
    pub control_frames_per_min: u32,
    /// Request body limit; 0 means unlimited.
    pub max_body_bytes: u64,
    /// Largest request frame sent to a tunnel (413 beyond); 0 means only
    /// `max_body_bytes` applies. The app drops its whole tunnel on a message
    /// over its WebSocket limit (about 1 MiB).
    pub max_request_frame_bytes: u64,
    pub binary_request_bodies: BinaryBodies,
    pub auth_timeout: Duration,
    pub response_timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub ping_interval: Duration,
    pub max_missed_pings: u32,
    pub nonce_ttl: Duration,
    pub timestamp_window: Duration,
    pub drain_timeout: Duration,
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
            duplicate_policy: DuplicatePolicy::Takeover,
            client_ip: ClientIpSource::Peer,
            tunnel_connects_per_min: 5,
            max_tunnels_per_ip: 10,
            stats_requests_per_min: 10,
            agent_requests_per_min: 100,
            max_agents_per_tunnel: 50,
            control_frames_per_min: 10,
            max_body_bytes: 10 * 1024 * 1024,
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
            max_response_body_bytes: 10 * 1024 * 1024,
            forward_margin: Duration::from_secs(5),
            max_stream_buffer: 4 * 1024 * 1024,
            max_tunnel_buffer: 64 * 1024 * 1024,
            max_chunk_bytes: 1024 * 1024,
            max_pending_nonces: 4,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
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

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

const SCALE: u64 = 60_000; // token units per request: refill is per minute, time in ms

/// A token bucket of `per_min` requests per minute, burst `per_min`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bucket {
    units: u64,
    last_ms: u64,
}

impl Bucket {
    pub fn full(per_min: u32, now_ms: u64) -> Self {
        Bucket {
            units: per_min as u64 * SCALE,
            last_ms: now_ms,
        }
    }

    /// Takes one token; `false` means rate limited. 0 per minute is unlimited.
    pub fn take(&mut self, per_min: u32, now_ms: u64) -> bool {
        if per_min == 0 {
            return true;
        }
        self.refill(per_min as u64, now_ms);
        if self.units >= SCALE {
            self.units -= SCALE;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, per_min: u64, now_ms: u64) {
        let cap = per_min * SCALE;
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.units = self
            .units
            .saturating_add(elapsed.saturating_mul(per_min))
            .min(cap);
        self.last_ms = now_ms.max(self.last_ms);
    }

    fn is_full(&self, per_min: u64) -> bool {
        self.units >= per_min * SCALE
    }
}

/// Buckets keyed by IP, agent or connection. Full buckets carry no
/// information, so [`RateLimiter::sweep`] drops them: memory stays bounded by
/// the keys seen within one refill period.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_min: u64,
    buckets: crate::map::Map<K, Bucket>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(per_min: u32) -> Self {
        Self::with_seed(per_min, 0)
    }

    /// Buckets hashed with `seed` (from the driver's entropy).
    pub fn with_seed(per_min: u32, seed: u64) -> Self {
        RateLimiter {
            per_min: per_min as u64,
            buckets: crate::map::map(seed),
        }
    }

    /// Takes one token; `false` means rate limited.
    pub fn check(&mut self, key: &K, now_ms: u64) -> bool {
        if self.per_min == 0 {
            return true;
        }
        let per_min = self.per_min as u32;
        let b = match self.buckets.get_mut(key) {
            Some(b) => b,
            None => self
                .buckets
                .entry(key.clone())
                .or_insert(Bucket::full(per_min, now_ms)),
        };
        b.take(per_min, now_ms)
    }

    /// Forgets every key whose bucket has refilled completely.
    pub fn sweep(&mut self, now_ms: u64) {
        let per_min = self.per_min;
        self.buckets.retain(|_, b| {
            b.refill(per_min, now_ms);
            !b.is_full(per_min)
        });
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_per_minute() {
        let mut rl = RateLimiter::new(5);
        for _ in 0..5 {
            assert!(rl.check(&1u8, 0));
        }
        assert!(!rl.check(&1u8, 0));
        assert!(rl.check(&2u8, 0), "keys are independent");
        assert!(!rl.check(&1u8, 11_999), "one token takes 12 s at 5/min");
        assert!(rl.check(&1u8, 12_000));
        assert!(!rl.check(&1u8, 12_000));
    }

    #[test]
    fn zero_means_unlimited_and_keeps_no_state() {
        let mut rl = RateLimiter::new(0);
        for i in 0..1000u32 {
            assert!(rl.check(&i, 0));
        }
        assert!(rl.is_empty());
    }

    #[test]
    fn sweep_forgets_only_refilled_buckets() {
        let mut rl = RateLimiter::new(10);
        rl.check(&1u8, 0);
        rl.check(&2u8, 57_000);
        rl.sweep(60_000);
        assert_eq!(rl.len(), 1, "key 1 refilled after 6 s, key 2 not yet");
        rl.sweep(63_000);
        assert!(rl.is_empty());
    }

    #[test]
    fn clock_going_backwards_does_not_mint_tokens() {
        let mut rl = RateLimiter::new(1);
        assert!(rl.check(&0u8, 100_000));
        assert!(!rl.check(&0u8, 0));
        assert!(!rl.check(&0u8, 100_000));
    }
}
