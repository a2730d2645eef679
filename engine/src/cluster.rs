//! Several relay instances behind one domain: agent ownership claims in a
//! shared directory (Redis, in the driver) and routing calls for agents
//! held elsewhere. Every directory operation is an output; its result comes
//! back as an input.

use crate::auth::{self, to_lower, Address};
use crate::call::{Call, CallState};
use crate::error::CallError;
use crate::frame::{Headers, Rejected};
use crate::http::Response;
use crate::input::{CallId, TunnelId};
use crate::limits::ms;
use crate::output::Output;
use crate::relay::Relay;
use crate::time::Entropy;
use crate::timer::TimerKey;
use crate::tunnel::Phase;
use std::time::Duration;

/// Settings of a relay that is one of several instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This instance's id, as stored in the ownership keys.
    pub instance_id: String,
    pub remote: RemoteRoute,
    /// How long a directory look-up result is reused.
    pub lookup_ttl: Duration,
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
    Owner(String),
    Nobody,
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
    pub method: String,
    pub path: String,
    /// `<agent>.<base domain>`.
    pub host: String,
    /// As a tunnel would see them (filtered, with `x-forwarded-for`).
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A waiting call's request, kept while its agent is looked up.
pub(crate) struct Parked {
    pub method: String,
    pub path: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl<E: Entropy> Relay<E> {
    fn takeover(&self) -> bool {
        self.cfg.duplicate_policy == crate::DuplicatePolicy::Takeover
    }

    /// Asks the directory for `addr` on behalf of tunnel `id`.
    pub(crate) fn claim(&mut self, id: TunnelId, addr: &Address) {
        let takeover = self.takeover();
        self.emit(Output::Claim {
            tunnel: id,
            agent: to_lower(addr),
            takeover,
        });
    }

    /// The agent left this instance: drop its key if it still names us.
    pub(crate) fn release(&mut self, addr: &Address) {
        if self.cfg.cluster.is_some() {
            self.emit(Output::Release {
                agent: to_lower(addr),
            });
        }
    }

    pub(crate) fn refresh(&mut self, id: TunnelId) {
        if self.cfg.cluster.is_none() {
            return;
        }
        let Some(t) = self.tunnels.get(&id) else {
            return;
        };
        let agents: Vec<String> = t
            .agents
            .iter()
            .filter(|a| self.agents.get(*a) == Some(&id))
            .map(to_lower)
            .collect();
        if !agents.is_empty() {
            self.emit(Output::Refresh { tunnel: id, agents });
        }
    }

    /// The directory came back: every agent accepted while it was away (no
    /// key written) gets its key now, not only at the next refresh.
    pub(crate) fn on_directory_health(&mut self, up: bool) {
        let was = std::mem::replace(&mut self.directory_up, up);
        if up && !was {
            let mut ids: Vec<TunnelId> = self.tunnels.keys().copied().collect();
            ids.sort_unstable();
            for id in ids {
                self.refresh(id);
            }
        }
    }

    pub(crate) fn on_claimed(&mut self, id: TunnelId, agent: &str, outcome: ClaimOutcome) {
        let Some(addr) = auth::parse_address(agent) else {
            return;
        };
        let Some(t) = self.tunnels.get_mut(&id) else {
            return self.release_if_unheld(&addr, &outcome);
        };
        let held = matches!(outcome, ClaimOutcome::HeldBy(_));
        if let Phase::Claiming(p) = &mut t.phase {
            if let Some(i) = p.waiting.iter().position(|a| *a == addr) {
                p.waiting.swap_remove(i);
                if held {
                    p.held.push(addr);
                }
                if p.waiting.is_empty() {
                    let p = std::mem::take(p);
                    let rejected = p
                        .held
                        .iter()
                        .map(|a| Rejected {
                            address: to_lower(a),
                            reason: "already_registered".into(),
                        })
                        .collect();
                    let accepted = p.all.into_iter().filter(|a| !p.held.contains(a));
                    self.finish_auth(id, accepted.collect(), rejected);
                }
                return;
            }
        }
        if let Some(i) = t.pending_adds.iter().position(|a| *a == addr) {
            t.pending_adds.swap_remove(i);
            if held {
                return self.error_frame(id, "address_already_registered");
            }
            return self.add_verified(id, addr);
        }
        self.release_if_unheld(&addr, &outcome);
    }

    /// A claim came back for a tunnel that is gone: undo it unless another
    /// local tunnel holds the agent meanwhile.
    fn release_if_unheld(&mut self, addr: &Address, outcome: &ClaimOutcome) {
        if *outcome == ClaimOutcome::Ours && !self.agents.contains_key(addr) {
            self.release(addr);
        }
    }

    /// A refresh found another instance's id in the key: that instance took
    /// the agent over, so this tunnel loses it.
    pub(crate) fn on_claim_lost(&mut self, id: TunnelId, agent: &str) {
        let Some(addr) = auth::parse_address(agent) else {
            return;
        };
        if self.agents.get(&addr) == Some(&id) {
            self.supersede(id, addr);
        }
    }

    /// No local tunnel for the call's agent: answer from the directory.
    pub(crate) fn route_elsewhere(
        &mut self,
        call: CallId,
        agent: Address,
        relayed: bool,
        req: Parked,
    ) {
        if self.cfg.cluster.is_none() || relayed {
            // Single instance, or another instance sent it here: never bounce it on.
            return self.respond(call, CallError::AgentOffline.response());
        }
        let now = self.now.mono_ms;
        if let Some((owner, _)) = self.located.get(&agent).filter(|(_, exp)| *exp > now) {
            let owner = owner.clone();
            return self.route(call, agent, owner, req);
        }
        let at = now + ms(self.cfg.response_timeout);
        self.timers.set(at, TimerKey::Call(call.0));
        self.calls.insert(
            call,
            Call {
                agent,
                relayed,
                deadline: Some(at),
                state: CallState::Locating(req),
            },
        );
        let waiting = self.locating.entry(agent).or_default();
        waiting.push(call);
        if waiting.len() == 1 {
            self.emit(Output::Lookup {
                agent: to_lower(&agent),
            });
        }
    }

    pub(crate) fn on_located(&mut self, agent: &str, found: Located) {
        let Some(addr) = auth::parse_address(agent) else {
            return;
        };
        let cache = found != Located::Unavailable;
        let owner = match found {
            Located::Owner(o) => Some(o),
            Located::Nobody | Located::Unavailable => None,
        };
        if cache {
            let ttl = self.cfg.cluster.as_ref().map_or(0, |c| ms(c.lookup_ttl));
            if ttl > 0 {
                let exp = self.now.mono_ms + ttl;
                self.located.insert(addr, (owner.clone(), exp));
            }
        }
        for call in self.locating.remove(&addr).unwrap_or_default() {
            if !matches!(
                self.calls.get(&call).map(|c| &c.state),
                Some(CallState::Locating(_))
            ) {
                continue;
            }
            let Some(c) = self.forget(call) else { continue };
            if let CallState::Locating(req) = c.state {
                self.route(call, addr, owner.clone(), req);
            }
        }
    }

    /// A located call timed out waiting for the directory.
    pub(crate) fn locate_timed_out(&mut self, call: CallId, agent: Address) {
        if let Some(w) = self.locating.get_mut(&agent) {
            w.retain(|c| *c != call);
            if w.is_empty() {
                self.locating.remove(&agent);
            }
        }
        self.forget(call);
        self.respond(call, CallError::AgentOffline.response());
    }

    fn route(&mut self, call: CallId, agent: Address, owner: Option<String>, req: Parked) {
        let Some(cluster) = &self.cfg.cluster else {
            return;
        };
        let owner = match owner {
            Some(o) if o != cluster.instance_id => o,
            // Nobody, or a stale key naming this instance.
            _ => return self.respond(call, CallError::AgentOffline.response()),
        };
        self.counters.remote_calls += 1;
        match cluster.remote {
            RemoteRoute::FlyReplay => {
                let headers = vec![("fly-replay".to_string(), format!("instance={owner}"))];
                self.respond(
                    call,
                    Response {
                        status: 307,
                        headers,
                        body: Vec::new(),
                    },
                );
            }
            RemoteRoute::Forward => self.forward(call, agent, owner, req),
        }
    }

    pub(crate) fn sweep_located(&mut self) {
        let now = self.now.mono_ms;
        self.located.retain(|_, (_, exp)| *exp > now);
    }
}

/// An authentication waiting for its claims.
#[derive(Default)]
pub(crate) struct PendingAuth {
    /// Every verified agent, in the order the tunnel listed them.
    pub all: Vec<Address>,
    pub waiting: Vec<Address>,
    /// Agents another instance holds.
    pub held: Vec<Address>,
}
