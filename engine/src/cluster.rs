//! Several relay instances behind one domain: agent ownership claims in a
//! shared directory (Redis, in the driver) and routing calls for agents
//! held elsewhere. Every directory operation is an output; its result comes
//! back as an input.

use crate::frame::Headers;
use std::time::Duration;

/// Settings of a relay that is one of several instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This instance's id, as stored in the ownership keys.
    pub instance_id: String,
    /// How calls for agents another instance holds are served.
    pub remote: RemoteRoute,
    /// How long a look-up that found the owner is reused.
    pub lookup_ttl: Duration,
    /// How long a look-up that found nobody is reused.
    pub lookup_miss_ttl: Duration,
    /// Most look-up answers held (the oldest go first).
    pub lookup_cache_entries: usize,
    /// Lifetime of an agent's ownership key, renewed on every pong.
    pub claim_ttl: Duration,
    /// Longest wait for one directory operation.
    pub directory_timeout: Duration,
    /// After a failed connection, operations fail fast for this long.
    pub directory_retry_after: Duration,
    /// How often the directory link is checked and this instance's address renewed.
    pub heartbeat: Duration,
    /// Lifetime of this instance's address key (renewed by the heartbeat).
    pub instance_ttl: Duration,
    /// How long another instance's address is reused.
    pub peer_url_cache: Duration,
}

impl ClusterConfig {
    /// Instance `instance_id` routing remote calls by `remote`, the other
    /// settings at their defaults.
    pub fn new(instance_id: impl Into<String>, remote: RemoteRoute) -> Self {
        ClusterConfig {
            instance_id: instance_id.into(),
            remote,
            lookup_ttl: Duration::from_secs(10),
            lookup_miss_ttl: Duration::from_secs(2),
            lookup_cache_entries: 50_000,
            claim_ttl: Duration::from_secs(120),
            directory_timeout: Duration::from_secs(1),
            directory_retry_after: Duration::from_millis(500),
            heartbeat: Duration::from_secs(10),
            instance_ttl: Duration::from_secs(30),
            peer_url_cache: Duration::from_secs(10),
        }
    }
}

/// What happens to a call for an agent another instance holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteRoute {
    /// 307 with `fly-replay: instance=<id>`: Fly's proxy replays the call there.
    FlyReplay,
    /// The driver forwards the call to the owner and streams its answer back.
    Forward,
}

/// The result of a `Claim`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key names this instance now.
    Ours,
    /// Another live instance holds the agent (only without takeover).
    HeldBy(String),
    /// The directory did not answer: registration goes on locally and the
    /// next refresh writes the claim.
    Unavailable,
}

/// The result of a `Lookup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Located {
    /// The id of the instance that holds the agent.
    Owner(String),
    /// No instance holds the agent.
    Nobody,
    /// No instance holds it, but its tunnel closed moments ago (the key an
    /// instance leaves with `Output::Release { moving: true }`): it is
    /// probably reconnecting, so calls for it are held (not cached).
    Moving,
    /// The directory did not answer (the result is not cached).
    Unavailable,
}

/// How a call reached this instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Hop {
    /// Straight from a caller.
    #[default]
    Direct,
    /// Forwarded by another instance (its shared secret checked by the
    /// driver): `x-forwarded-for` carries the caller's IP.
    Trusted,
    /// Claims to be forwarded but the secret did not match: treated as a
    /// direct call that is never forwarded again.
    Untrusted,
}

/// A call handed to another instance: everything needed to replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardRequest {
    /// Request method, as the caller sent it.
    pub method: String,
    /// Request target: path and query.
    pub path: String,
    /// `<agent>.<base domain>`.
    pub host: String,
    /// As a tunnel would see them (filtered, with `x-forwarded-for`).
    pub headers: Headers,
    /// The request body, or its first part while it still arrives.
    pub body: Vec<u8>,
    /// The whole body's length when known (`content-length`), else the
    /// forward carries it chunked.
    pub body_length: Option<u64>,
    /// `false`: the rest of the body follows as `Output::ForwardBody`,
    /// ended by `Output::ForwardBodyEnd`.
    pub body_complete: bool,
}
