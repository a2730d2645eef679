//! Several instances, behaviour: claims of agents in the shared directory,
//! renewals and releases, look-ups of owners, and routing a call for an
//! agent held elsewhere (fly-replay or forwarding).

use crate::auth::{self, to_lower, Address};
use crate::cluster::{ClaimOutcome, Located, RemoteRoute};
use crate::error::CallError;
use crate::frame::Rejected;
use crate::http::{Header, Response};
use crate::input::{CallId, TunnelId};
use crate::output::Output;
use crate::registry::calls::{CallState, Parked};
use crate::relay::Relay;
use crate::time::ms;
use crate::time::Entropy;

/// The largest request body Fly's proxy replays (1 MB).
const FLY_REPLAY_MAX_BODY: u64 = 1_000_000;

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
        self.release_as(addr, false);
    }

    /// `moving`: its tunnel closed; it is likely to come back somewhere.
    pub(crate) fn release_as(&mut self, addr: &Address, moving: bool) {
        if self.cfg.cluster.is_some() {
            let moving = moving && !self.cfg.reconnect_grace.is_zero();
            self.emit(Output::Release {
                agent: to_lower(addr),
                moving,
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
        let agents: Vec<String> = (t.agents().iter())
            .filter(|a| self.tunnels.serving(a) == Some(id))
            .map(to_lower)
            .collect();
        if !agents.is_empty() {
            self.emit(Output::Refresh { tunnel: id, agents });
        }
    }

    /// The directory came back: every agent accepted while it was away (no
    /// key written) gets its key now, not only at the next refresh.
    pub(crate) fn on_directory_health(&mut self, up: bool) {
        self.directory.known = true;
        let was = std::mem::replace(&mut self.directory.up, up);
        if up && !was {
            for id in self.tunnels.ids() {
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
        if let Some(p) = t.claiming_mut() {
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
        if *outcome == ClaimOutcome::Ours && self.tunnels.serving(addr).is_none() {
            self.release(addr);
        }
    }

    /// A refresh found another instance's id in the key: that instance took
    /// the agent over, so this tunnel loses it.
    pub(crate) fn on_claim_lost(&mut self, id: TunnelId, agent: &str) {
        let Some(addr) = auth::parse_address(agent) else {
            return;
        };
        if self.tunnels.serving(&addr) == Some(id) {
            self.supersede(id, addr);
        }
    }

    /// A body on its way to another machine: it is streamed there (the owner
    /// looked up at head time) rather than collected first.
    pub(crate) fn forwards_body(&self, unknown_length: bool, declared: Option<u64>) -> bool {
        match &self.cfg.cluster {
            Some(c) => match c.remote {
                RemoteRoute::Forward => true,
                RemoteRoute::FlyReplay => {
                    unknown_length || declared.is_some_and(|n| n > FLY_REPLAY_MAX_BODY)
                }
            },
            None => false,
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
            return self.offline(call, agent, relayed, req);
        }
        let now = self.now.mono_ms;
        if let Some(owner) = self.directory.owner(&agent, now) {
            return self.route(call, agent, owner, req);
        }
        let at = now + ms(self.cfg.response_timeout);
        self.hold_until(call, agent, relayed, at, CallState::Locating(req));
        if let Some(t) = self.record_mut(call) {
            t.lookup_from = Some(now);
        }
        if self.directory.wait(agent, call) {
            self.emit(Output::Lookup {
                agent: to_lower(&agent),
            });
        }
    }

    pub(crate) fn on_located(&mut self, agent: &str, found: Located) {
        let Some(addr) = auth::parse_address(agent) else {
            return;
        };
        let cache = !matches!(found, Located::Unavailable | Located::Moving);
        if found == Located::Moving {
            // Its tunnel closed moments ago elsewhere: wait for it here too.
            self.agent_left(addr);
        }
        let owner = match found {
            Located::Owner(o) => Some(o),
            Located::Nobody | Located::Unavailable | Located::Moving => None,
        };
        if let (true, Some(c)) = (cache, &self.cfg.cluster) {
            let ttl = ms(if owner.is_some() {
                c.lookup_ttl
            } else {
                c.lookup_miss_ttl
            });
            if ttl > 0 {
                let (exp, max) = (self.now.mono_ms + ttl, c.lookup_cache_entries);
                self.directory.remember(addr, owner.clone(), exp, max);
            }
        }
        for call in self.directory.answered(&addr) {
            if !matches!(
                self.calls.get(&call).map(|c| &c.state),
                Some(CallState::Locating(_))
            ) {
                continue;
            }
            let Some(c) = self.forget(call) else { continue };
            let now = self.now.mono_ms;
            if let Some(t) = self.record_mut(call) {
                t.lookup_ms = t.lookup_from.map(|from| now.saturating_sub(from));
            }
            if let CallState::Locating(req) = c.state {
                self.route(call, addr, owner.clone(), req);
            }
        }
    }

    /// Another instance (or this one, for a local tunnel) claimed `agent`.
    pub(crate) fn on_agent_claimed(&mut self, agent: &str, instance: &str) {
        let Some(addr) = auth::parse_address(agent) else {
            return;
        };
        let Some(c) = &self.cfg.cluster else { return };
        if instance == c.instance_id {
            return;
        }
        // Whatever was cached about it is stale now.
        self.directory.forget(&addr);
        self.agent_claimed_elsewhere(addr, instance.to_string());
    }

    /// Another instance's tunnel for `agent` closed moments ago.
    pub(crate) fn on_agent_moving(&mut self, agent: &str) {
        let Some(addr) = auth::parse_address(agent) else {
            return;
        };
        self.directory.forget(&addr);
        if self.tunnels.serving(&addr).is_none() {
            self.agent_left(addr);
        }
    }

    /// A located call timed out waiting for the directory.
    pub(crate) fn locate_timed_out(&mut self, call: CallId, agent: Address) {
        self.directory.stop_waiting(&agent, call);
        self.forget(call);
        self.refuse(call, CallError::AgentOffline);
    }

    /// No tunnel serves `agent` anywhere now: held if it was online moments
    /// ago, else 502.
    pub(crate) fn offline(&mut self, call: CallId, agent: Address, relayed: bool, req: Parked) {
        if self.try_hold(call, agent, relayed, req).is_err() {
            self.refuse(call, CallError::AgentOffline);
        }
    }

    pub(crate) fn route(
        &mut self,
        call: CallId,
        agent: Address,
        owner: Option<String>,
        req: Parked,
    ) {
        let Some(cluster) = &self.cfg.cluster else {
            return;
        };
        let owner = match owner {
            Some(o) if o != cluster.instance_id => o,
            // Nobody, or a stale key naming this instance.
            _ => return self.offline(call, agent, false, req),
        };
        self.counters.remote_calls += 1;
        match cluster.remote {
            // Fly's proxy cannot replay a body over 1 MB or of unknown length:
            // those go machine to machine.
            RemoteRoute::FlyReplay
                if req.unknown_length
                    || req.declared.unwrap_or(req.body.len() as u64) > FLY_REPLAY_MAX_BODY =>
            {
                self.counters.internal_forwards += 1;
                self.forward(call, agent, owner, req)
            }
            RemoteRoute::FlyReplay => {
                self.counters.replays += 1;
                self.note_outcome(call, "replayed");
                let mut headers: Vec<Header> =
                    vec![("fly-replay".into(), format!("instance={owner}").into())];
                if req.replay_cache_hit {
                    // Fly's cached route led to a machine that no longer has the agent.
                    headers.push(("fly-replay-cache".into(), "invalidate".into()));
                } else {
                    let host = format!("{}.{}/*", to_lower(&agent), self.cfg.base_domain);
                    headers.push(("fly-replay-cache".into(), host.into()));
                    headers.push(("fly-replay-cache-ttl-secs".into(), "30".into()));
                }
                self.respond(
                    call,
                    Response {
                        status: 307,
                        headers,
                        body: Vec::new(),
                    },
                );
            }
            RemoteRoute::Forward => {
                self.counters.internal_forwards += 1;
                self.forward(call, agent, owner, req)
            }
        }
    }

    pub(crate) fn sweep_located(&mut self) {
        let now = self.now.mono_ms;
        self.directory.sweep(now);
    }
}
