//! Held calls: a call for an agent that was online moments ago (its tunnel
//! closed or was drained) is not answered 502 at once. It waits up to
//! `reconnect_grace` for the agent to come back, here (delivered to the new
//! tunnel, oldest first) or on another instance (forwarded or replayed
//! there), and is answered 502 `agent_offline` only then. Held calls are
//! bounded per agent, in all and in body bytes (503 `agent_reconnecting`).

use crate::auth::Address;
use crate::error::CallError;
use crate::input::CallId;
use crate::map::{map, Map};
use crate::registry::calls::{Call, CallState, Parked};
use crate::relay::Relay;
use crate::time::{ms, Entropy};
use std::collections::VecDeque;

/// Agents that left recently and the calls waiting for them.
pub(crate) struct HeldCalls {
    /// When each agent left a tunnel here (monotonic ms).
    left: Map<Address, u64>,
    /// Held calls per agent, oldest first.
    queues: Map<Address, VecDeque<CallId>>,
    count: usize,
    bytes: u64,
}

impl HeldCalls {
    pub fn new(seed: u64) -> Self {
        HeldCalls {
            left: map(seed),
            queues: map(seed),
            count: 0,
            bytes: 0,
        }
    }

    /// Entries kept, for the size checks.
    pub fn len(&self) -> usize {
        self.left.len() + self.count
    }

    fn remove(&mut self, agent: &Address, call: CallId, bytes: u64) {
        if let Some(q) = self.queues.get_mut(agent) {
            if let Some(i) = q.iter().position(|c| *c == call) {
                q.remove(i);
                self.count -= 1;
                self.bytes = self.bytes.saturating_sub(bytes);
            }
            if q.is_empty() {
                self.queues.remove(agent);
            }
        }
    }
}

impl<E: Entropy> Relay<E> {
    fn grace_ms(&self) -> u64 {
        ms(self.cfg.reconnect_grace)
    }

    /// `agent` left a tunnel here: calls for it wait a while.
    pub(crate) fn agent_left(&mut self, agent: Address) {
        if self.grace_ms() > 0 {
            self.held.left.insert(agent, self.now.mono_ms);
        }
    }

    /// Holds the call if its agent was online within the grace; else hands
    /// the request back (moved, not boxed: a held call is rare, a box would
    /// cost every call that is parked).
    #[allow(clippy::result_large_err)]
    pub(crate) fn try_hold(
        &mut self,
        call: CallId,
        agent: Address,
        relayed: bool,
        req: Parked,
    ) -> Result<(), Parked> {
        let (now, grace) = (self.now.mono_ms, self.grace_ms());
        // Still on a draining tunnel here (a long stream keeps it open): the
        // agent can move only once that ends, so its calls wait for as long
        // as the drain may last.
        let draining_here = grace > 0 && self.tunnels.serving(&agent).is_some();
        if !draining_here && !self.recently_left(&agent) {
            return Err(req);
        }
        let until = match self.draining {
            Some(end) if draining_here => end.max(now + grace),
            _ => now + grace,
        };
        let size = req.body.len() as u64;
        let per_agent = self.held.queues.get(&agent).map_or(0, |q| q.len());
        let c = &self.cfg;
        let full = over(self.held.count, c.max_held_calls)
            || over(per_agent, c.max_held_per_agent)
            || (c.max_held_bytes != 0 && self.held.bytes + size > c.max_held_bytes);
        if full {
            self.refuse(call, CallError::AgentReconnecting);
            return Ok(());
        }
        self.held.queues.entry(agent).or_default().push_back(call);
        self.held.count += 1;
        self.held.bytes += size;
        self.hold_until(call, agent, relayed, until, CallState::Held(req));
        Ok(())
    }

    /// `agent` left within the grace: calls for it are held, not refused.
    pub(crate) fn recently_left(&self, agent: &Address) -> bool {
        let (now, grace) = (self.now.mono_ms, self.grace_ms());
        (self.held.left.get(agent)).is_some_and(|&at| at + grace > now)
    }

    /// A held call is forgotten (answered, timed out, or its caller gone).
    pub(crate) fn held_forgotten(&mut self, agent: &Address, call: CallId, bytes: u64) {
        self.held.remove(agent, call, bytes);
    }

    /// The held calls of `agent`, oldest first, taken out of the hold.
    fn take_held(&mut self, agent: &Address) -> Vec<(CallId, bool, Parked)> {
        let Some(q) = self.held.queues.get(agent) else {
            return Vec::new();
        };
        let ids: Vec<CallId> = q.iter().copied().collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(Call {
                relayed,
                state: CallState::Held(req),
                ..
            }) = self.forget(id)
            {
                out.push((id, relayed, req));
            }
        }
        out
    }

    /// `agent` is served by a tunnel here again: its held calls go to it.
    pub(crate) fn agent_back(&mut self, agent: Address) {
        self.held.left.remove(&agent);
        for (call, relayed, mut req) in self.take_held(&agent) {
            // Held while its agent was away, it was not counted then.
            if !req.counted {
                let ip = self.records.get(&call).map(|r| r.ip);
                if !self.within_limits(&agent, ip) {
                    self.refuse(call, CallError::RateLimited);
                    continue;
                }
                req.counted = true;
            }
            let done = req.body_done;
            let c = Call {
                agent,
                relayed,
                deadline: None,
                state: CallState::Receiving(req),
            };
            self.calls.insert(call, c);
            if done {
                self.dispatch(call);
            }
        }
    }

    /// Another instance claimed `agent`: its held calls follow it there.
    /// Even one forwarded here goes on once more: it moves only with its
    /// agent, so it cannot loop.
    pub(crate) fn agent_claimed_elsewhere(&mut self, agent: Address, owner: String) {
        self.held.left.remove(&agent);
        for (call, _, req) in self.take_held(&agent) {
            self.route(call, agent, Some(owner.clone()), req);
        }
    }

    /// A held call's grace ran out: the agent did not come back.
    pub(crate) fn held_timed_out(&mut self, call: CallId) {
        self.fail_call(call, CallError::AgentOffline);
    }

    /// Forgets agents gone longer than the grace.
    pub(crate) fn sweep_left(&mut self) {
        let (now, grace) = (self.now.mono_ms, self.grace_ms());
        self.held.left.retain(|_, at| *at + grace > now);
    }
}

/// `n` reached the limit `max` (0: unlimited).
fn over(n: usize, max: u32) -> bool {
    max != 0 && n >= max as usize
}
