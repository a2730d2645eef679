//! Every call the engine holds, and the request-frame ids of those sent to
//! a tunnel: one owner, so an id always names a live call and back.

use crate::auth::Address;
use crate::frame::Headers;
use crate::http::ResponseHead;
use crate::input::{CallId, Http1Answer, TunnelId};
use crate::map::{map, Map};
use core::net::IpAddr;

pub(crate) struct Call {
    pub agent: Address,
    /// Forwarded here by another instance (never forwarded again).
    pub relayed: bool,
    /// The call's one live deadline, if any.
    pub deadline: Option<u64>,
    pub state: CallState,
}

/// A call's request, kept while its body arrives or its agent is looked up.
pub(crate) struct Parked {
    pub method: String,
    pub path: String,
    pub headers: Headers,
    /// `Some(caller's IP)`: `headers` still lacks `x-agent-address` and
    /// `x-forwarded-for`, which go straight into the request frame.
    pub forwarding: Option<IpAddr>,
    pub body: Vec<u8>,
    /// The body came chunked: its length was not known up front.
    pub unknown_length: bool,
    /// The body's declared length (`content-length`).
    pub declared: Option<u64>,
    /// The whole body is in `body` (it may still arrive while the owner is
    /// looked up, for a call that will be forwarded).
    pub body_done: bool,
    /// Fly's proxy replayed this call from its cache (`fly-replay-cache-status: hit`).
    pub replay_cache_hit: bool,
    /// How the caller's connection takes the answer, if the engine writes it.
    pub http1: Option<Http1Answer>,
    /// Counted against the agent's and the caller's rate limits already (its
    /// agent's tunnel was here when the head came); a held call is counted
    /// when it is delivered.
    pub counted: bool,
}

pub(crate) enum CallState {
    /// Head accepted; the body is still arriving.
    Receiving(Parked),
    /// No local tunnel: waiting for the directory to name the owner.
    Locating(Parked),
    /// Its agent was online moments ago: waiting for it to come back.
    Held(Parked),
    /// The request frame went to the tunnel; no answer yet.
    Waiting {
        tunnel: TunnelId,
        req: String,
        http1: Option<Http1Answer>,
    },
    /// Handed to the instance that owns the agent.
    Forwarded {
        head_request: bool,
        at: Forwarded,
        /// Body bytes sent on so far while the caller's body still arrives;
        /// `None` once it is complete.
        uploading: Option<u64>,
    },
    /// Head sent to the caller; chunks flow.
    Streaming {
        tunnel: TunnelId,
        req: String,
        last_activity: u64,
        /// Chunk bytes handed to the driver and not yet written.
        queued: u64,
    },
}

/// Where a forwarded call is.
pub(crate) enum Forwarded {
    /// Handed to the owner; no answer head yet.
    Waiting,
    /// The owner answered with a length: its body is collected here.
    Buffering { head: ResponseHead, body: Vec<u8> },
    /// The owner streams: chunks go to the caller as they come.
    Streaming {
        last_activity: u64,
        /// Chunk bytes handed to the driver and not yet written.
        queued: u64,
    },
}

impl Calls {
    /// Calls waiting for an agent to come back or for its owner's name, in
    /// id order.
    pub fn waiting_ids(&self) -> Vec<CallId> {
        let mut ids: Vec<CallId> = (self.map.iter())
            .filter(|(_, c)| matches!(c.state, CallState::Held(_) | CallState::Locating(_)))
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }
}

impl CallState {
    /// The tunnel and request id of a call sent to a tunnel.
    pub fn tunnel_req(&self) -> Option<(TunnelId, &str)> {
        match self {
            CallState::Waiting { tunnel, req, .. } | CallState::Streaming { tunnel, req, .. } => {
                Some((*tunnel, req))
            }
            CallState::Receiving(_)
            | CallState::Locating(_)
            | CallState::Held(_)
            | CallState::Forwarded { .. } => None,
        }
    }
}

pub(crate) struct Calls {
    map: Map<CallId, Call>,
    /// Request frame id → call, for calls sent to a tunnel; keyed by
    /// [`req_key`]: no copy of the id, a cheaper hash.
    by_req: Map<u128, CallId>,
}

/// A request id of the relay's form, `req_` + 16 characters, as a number:
/// its 16 bytes themselves, so equal keys are equal ids, with no parse.
/// `None` for any other text (which names no call).
pub(crate) fn req_key(req: &str) -> Option<u128> {
    let rest: [u8; 16] = req.strip_prefix("req_")?.as_bytes().try_into().ok()?;
    Some(u128::from_le_bytes(rest))
}

impl Calls {
    pub fn new(seed: u64) -> Self {
        Calls {
            map: map(seed),
            by_req: map(seed),
        }
    }

    /// Holds `c`; a call sent to a tunnel becomes findable by its request id.
    pub fn insert(&mut self, call: CallId, c: Call) {
        if let Some((_, req)) = c.state.tunnel_req() {
            debug_assert!(req_key(req).is_some(), "a request id of the relay's form");
            if let Some(key) = req_key(req) {
                self.by_req.insert(key, call);
            }
        }
        if let Some(old) = self.map.insert(call, c) {
            self.unindex(&old);
        }
    }

    pub fn remove(&mut self, call: &CallId) -> Option<Call> {
        let c = self.map.remove(call)?;
        self.unindex(&c);
        Some(c)
    }

    fn unindex(&mut self, c: &Call) {
        if let Some(key) = c.state.tunnel_req().and_then(|(_, req)| req_key(req)) {
            self.by_req.remove(&key);
        }
    }

    pub fn get(&self, call: &CallId) -> Option<&Call> {
        self.map.get(call)
    }

    /// For changes that keep the call's request id (waiting → streaming).
    pub fn get_mut(&mut self, call: &CallId) -> Option<&mut Call> {
        self.map.get_mut(call)
    }

    pub fn contains(&self, call: &CallId) -> bool {
        self.map.contains_key(call)
    }

    /// The call a tunnel's answer names, if it is live.
    pub fn by_req(&self, req: &str) -> Option<CallId> {
        self.by_req.get(&req_key(req)?).copied()
    }

    pub fn req_in_use(&self, req: &str) -> bool {
        req_key(req).is_some_and(|k| self.by_req.contains_key(&k))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn req_ids(&self) -> usize {
        self.by_req.len()
    }
}

#[cfg(test)]
mod tests {
    use super::req_key;

    #[test]
    fn request_ids_of_the_relay_s_form_have_a_key_and_others_none() {
        let k = |s: &str| req_key(s).expect(s);
        assert_eq!(k("req_0123456789abcdef"), k("req_0123456789abcdef"));
        assert_ne!(k("req_0123456789abcdef"), k("req_0123456789abcdee"));
        assert_ne!(k("req_0123456789abcdef"), k("req_0123456789ABCDEF"));
        assert_ne!(k("req_1000000000000000"), k("req_0000000000000001"));
        for other in [
            "req_0123456789abcde",
            "req_0123456789abcdef0",
            "REQ_0123456789abcdef",
            "",
            "req_",
        ] {
            assert_eq!(req_key(other), None, "{other}");
        }
    }
}
