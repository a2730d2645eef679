//! One tunnel: handshake, agents, keepalive, and the frames it sends.

use crate::auth::{self, to_lower, Address};
use crate::config::DuplicatePolicy;
use crate::error::{AuthError, CallError};
use crate::frame::fast::Fast;
use crate::frame::{AgentSig, AgentUrl, Body, ClientFrame, Inbound, Rejected, ServerFrame};
use crate::input::{CallId, TunnelId};
use crate::limits::Bucket;
use crate::map::set;
use crate::output::{Event, Output};
use crate::registry::tunnels::{PendingAuth, Tunnel};
use crate::relay::Relay;
use crate::time::ms;
use crate::time::{random_hex, Entropy};
use crate::timer::TimerKey;
use core::net::IpAddr;

fn features() -> Vec<String> {
    crate::frame::FEATURES
        .iter()
        .map(|f| f.to_string())
        .collect()
}

impl<E: Entropy> Relay<E> {
    pub(crate) fn url(&self, addr: &str) -> String {
        match &self.cfg.public_url {
            Some(template) => template.replace("{address}", addr),
            None => format!("https://{addr}.{}", self.cfg.base_domain),
        }
    }

    pub(crate) fn send_text(&mut self, id: TunnelId, text: String) {
        if let Some(t) = self.tunnels.get_mut(&id) {
            t.queued = t.queued.saturating_add(text.len() as u64);
            self.out.push_back(Output::SendFrame { tunnel: id, text });
        }
    }

    pub(crate) fn send(&mut self, id: TunnelId, frame: &ServerFrame) {
        self.send_text(id, frame.encode());
    }

    fn set_tunnel_timer(&mut self, id: TunnelId, at: u64) {
        if let Some(t) = self.tunnels.get_mut(&id) {
            self.timers.cancel(t.deadline, TimerKey::Tunnel(id.0));
            t.deadline = at;
            self.timers.set(at, TimerKey::Tunnel(id.0));
        }
    }

    /// Upgrades `call` to a new tunnel and sends it the challenge.
    pub(crate) fn open_tunnel(&mut self, call: CallId, ip: IpAddr, limit_key: IpAddr) {
        let nonce = random_hex(&mut self.rng, 32);
        let deadline = self.now.mono_ms + ms(self.cfg.auth_timeout);
        let control = Bucket::full(self.cfg.control_frames_per_min, self.now.mono_ms);
        let mut t = Tunnel::new(ip, limit_key, nonce.clone(), control, set(self.seed));
        t.deadline = deadline;
        let id = self.tunnels.open(t);
        self.emit(Output::Upgrade { call, tunnel: id });
        self.timers.set(deadline, TimerKey::Tunnel(id.0));
        self.send(id, &ServerFrame::Challenge { nonce });
    }

    /// Forgets a tunnel: its agents, its calls (502 or aborted), its IP slot.
    pub(crate) fn drop_tunnel(
        &mut self,
        id: TunnelId,
        reason: &'static str,
        close: Option<(u16, &'static str)>,
    ) {
        let Some((mut t, gone)) = self.tunnels.close(id) else {
            return;
        };
        self.timers.cancel(t.deadline, TimerKey::Tunnel(id.0));
        for a in &gone {
            self.release_as(a, true);
            self.agent_left(*a);
        }
        if let Some(p) = t.claiming_mut() {
            // Claimed for a handshake that never finished: undo the claims.
            for a in p.all.iter().filter(|a| !p.waiting.contains(a)) {
                if !p.held.contains(a) && self.tunnels.serving(a).is_none() {
                    self.release(a);
                }
            }
        }
        let (authed, agents) = (t.authed(), t.agents().len());
        let mut calls: Vec<CallId> = t.calls.into_iter().collect();
        calls.sort();
        for c in calls {
            self.fail_call(c, CallError::TunnelClosed);
        }
        if authed {
            self.event(Event::TunnelDown {
                tunnel: id,
                agents,
                reason,
            });
        }
        if let Some((code, reason)) = close {
            self.emit(Output::CloseTunnel {
                tunnel: id,
                code,
                reason,
            });
        }
    }

    fn auth_error(&mut self, id: TunnelId, why: AuthError) {
        let (error, code) = (why.code(), why.close_code());
        let ip = self.tunnels.get(&id).map(|t| t.ip);
        self.counters.auth_failures += 1;
        self.counters.auth_failures_by.add(why.code(), 1);
        if let Some(ip) = ip {
            self.event(Event::AuthFailed {
                tunnel: id,
                ip,
                reason: error,
            });
        }
        self.send(
            id,
            &ServerFrame::AuthError {
                error: error.into(),
            },
        );
        self.drop_tunnel(id, error, Some((code, error)));
    }

    pub(crate) fn error_frame(&mut self, id: TunnelId, error: &str) {
        self.send(
            id,
            &ServerFrame::Error {
                error: error.into(),
            },
        );
    }

    pub(crate) fn on_tunnel_timer(&mut self, id: TunnelId) {
        let Some(t) = self.tunnels.get_mut(&id) else {
            return;
        };
        if !t.authed() {
            return self.auth_error(id, AuthError::AuthTimeout);
        }
        let max = self.cfg.max_missed_pings;
        if max != 0 && t.missed_pings >= max {
            return self.drop_tunnel(id, "keepalive timeout", Some((1000, "keepalive timeout")));
        }
        t.missed_pings += 1;
        let ts = self.now.unix_secs;
        self.send(id, &ServerFrame::Ping { ts });
        let at = self.now.mono_ms + ms(self.cfg.ping_interval).max(1);
        self.set_tunnel_timer(id, at);
    }

    pub(crate) fn on_binary(&mut self, id: TunnelId) {
        match self.tunnels.get(&id) {
            Some(t) if !t.authed() => self.auth_error(id, AuthError::InvalidJson),
            Some(_) => self.counters.invalid_frames += 1,
            None => {}
        }
    }

    pub(crate) fn on_text(&mut self, id: TunnelId, text: &str) {
        let Some(authed) = self.tunnels.get(&id).map(|t| t.authed()) else {
            return;
        };
        // Answer frames as clients write them: the id is borrowed, no owned
        // frame is built.
        if authed {
            match crate::frame::fast::parse_in(text, &mut self.spare) {
                Some(Fast::Chunk { id: req, data }) => {
                    return self.on_stream_chunk(id, req, Body::Text(data))
                }
                Some(Fast::End { id: req }) => return self.on_stream_end(id, req),
                Some(Fast::Response {
                    id: req,
                    status,
                    headers,
                    body,
                }) => return self.on_raw_response(id, req, status, headers, body),
                Some(Fast::Start {
                    id: req,
                    status,
                    headers,
                }) => return self.on_stream_start(id, req, status, headers),
                None => {}
            }
        }
        let inbound = Inbound::parse_full(text);
        if !authed {
            return match inbound {
                Inbound::Frame(ClientFrame::Auth {
                    agents,
                    nonce,
                    timestamp,
                }) => self.on_auth(id, agents, nonce, timestamp),
                Inbound::Invalid => self.auth_error(id, AuthError::InvalidJson),
                _ => self.auth_error(id, AuthError::ExpectedAuthFrame),
            };
        }
        match inbound {
            Inbound::Frame(f) => self.on_frame(id, f),
            Inbound::BadReply { id: req, why } => self.on_bad_reply(id, &req, why),
            Inbound::Unknown | Inbound::Invalid => self.counters.invalid_frames += 1,
        }
    }

    fn on_frame(&mut self, id: TunnelId, f: ClientFrame) {
        match f {
            ClientFrame::Pong { .. } => {
                if let Some(t) = self.tunnels.get_mut(&id) {
                    t.missed_pings = 0;
                }
                self.refresh(id);
            }
            ClientFrame::RequestChallenge => self.on_request_challenge(id),
            ClientFrame::AddAgent {
                address,
                signature,
                nonce,
                timestamp,
            } => self.on_add_agent(id, address, signature, nonce, timestamp),
            ClientFrame::RemoveAgent { address } => self.on_remove_agent(id, &address),
            ClientFrame::Response {
                id: req,
                status,
                headers,
                body,
            } => self.on_response(id, &req, status, headers, body),
            ClientFrame::StreamStart {
                id: req,
                status,
                headers,
            } => self.on_stream_start(id, &req, status, headers),
            ClientFrame::StreamChunk { id: req, data } => self.on_stream_chunk(id, &req, data.0),
            ClientFrame::StreamEnd { id: req } => self.on_stream_end(id, &req),
            ClientFrame::Auth { .. } => self.counters.invalid_frames += 1,
        }
    }

    fn on_auth(&mut self, id: TunnelId, agents: Vec<AgentSig>, nonce: String, ts: u64) {
        // The nonce is used up: the handshake either succeeds now or the socket closes.
        let expected = self.tunnels.get_mut(&id).and_then(|t| t.take_nonce());
        if expected.as_deref() != Some(nonce.as_str()) {
            // 4000, as the reference relay closes it.
            return self.auth_error(id, AuthError::InvalidNonce);
        }
        if agents.is_empty() {
            return self.auth_error(id, AuthError::NoAgents);
        }
        let max = self.cfg.max_agents_per_tunnel as usize;
        if max != 0 && agents.len() > max {
            return self.auth_error(id, AuthError::TooManyAgents);
        }
        let window = self.cfg.timestamp_window.as_secs();
        let mut verified: Vec<Address> = Vec::with_capacity(agents.len());
        for a in &agents {
            let ok = auth::verify_agent(
                &a.address,
                &a.signature,
                &nonce,
                ts,
                self.now.unix_secs,
                window,
            );
            match ok {
                Ok(addr) if !verified.contains(&addr) => verified.push(addr),
                Ok(_) => {}
                Err(_) => return self.auth_error(id, AuthError::SignatureVerificationFailed),
            }
        }
        if self.cfg.cluster.is_some() {
            for a in &verified {
                self.claim(id, a);
            }
            if let Some(t) = self.tunnels.get_mut(&id) {
                t.await_claims(PendingAuth {
                    waiting: verified.clone(),
                    all: verified,
                    held: Vec::new(),
                });
            }
            return;
        }
        self.finish_auth(id, verified, Vec::new());
    }

    /// Registers the verified (and, with several instances, claimed) agents
    /// and completes the handshake.
    pub(crate) fn finish_auth(
        &mut self,
        id: TunnelId,
        verified: Vec<Address>,
        mut rejected: Vec<Rejected>,
    ) {
        let mut accepted = Vec::new();
        let mut back = Vec::new();
        for addr in verified {
            let lower = to_lower(&addr);
            match self.tunnels.serving(&addr) {
                Some(other)
                    if other != id && self.cfg.duplicate_policy == DuplicatePolicy::Reject =>
                {
                    rejected.push(Rejected {
                        address: lower,
                        reason: "already_registered".into(),
                    });
                    continue;
                }
                Some(other) if other != id => self.supersede(other, addr),
                _ => {}
            }
            self.tunnels.register(id, addr);
            self.directory.forget(&addr);
            back.push(addr);
            accepted.push(AgentUrl {
                url: self.url(&lower),
                address: lower,
            });
        }
        let at = self.now.mono_ms + ms(self.cfg.ping_interval).max(1);
        let Some(ip) = self.tunnels.get(&id).map(|t| t.ip) else {
            return;
        };
        self.tunnels.mark_ready(id);
        self.counters.total_tunnel_connections += 1;
        self.set_tunnel_timer(id, at);
        let n = accepted.len();
        self.send(
            id,
            &ServerFrame::AuthOk {
                agents: accepted,
                rejected,
                features: features(),
                region: Some(self.cfg.region.to_string()),
            },
        );
        self.emit(Output::Authenticated { tunnel: id });
        self.event(Event::TunnelUp {
            tunnel: id,
            ip,
            agents: n,
        });
        // After auth_ok: the app takes requests only once authenticated.
        for a in back {
            self.agent_back(a);
        }
    }

    /// Takeover: `addr` leaves tunnel `old`, which closes once it holds no agent.
    pub(crate) fn supersede(&mut self, old: TunnelId, addr: Address) {
        self.counters.takeovers += 1;
        self.tunnels.unregister(old, &addr);
        let Some(t) = self.tunnels.get(&old) else {
            return;
        };
        let empty = t.agents().is_empty();
        self.end_agent_calls(old, addr);
        let address = to_lower(&addr);
        self.send(
            old,
            &ServerFrame::AgentRemoved {
                address: address.clone(),
                reason: Some("superseded".into()),
            },
        );
        self.event(Event::AgentRemoved {
            tunnel: old,
            address,
            reason: "superseded",
        });
        if empty {
            self.drop_tunnel(old, "superseded", Some((1000, "superseded")));
        }
    }

    fn take_control_token(&mut self, id: TunnelId) -> bool {
        let (per_min, now) = (self.cfg.control_frames_per_min, self.now.mono_ms);
        let ok = self
            .tunnels
            .get_mut(&id)
            .is_some_and(|t| t.control.take(per_min, now));
        if !ok {
            self.error_frame(id, "rate_limited");
        }
        ok
    }

    fn on_request_challenge(&mut self, id: TunnelId) {
        if !self.take_control_token(id) {
            return;
        }
        let nonce = random_hex(&mut self.rng, 32);
        let (now, max) = (self.now.mono_ms, self.cfg.max_pending_nonces.max(1));
        if let Some(t) = self.tunnels.get_mut(&id) {
            while t.pending.len() >= max {
                t.pending.pop_front();
            }
            t.pending.push_back((nonce.clone(), now));
        }
        self.send(id, &ServerFrame::Challenge { nonce });
    }

    fn on_add_agent(&mut self, id: TunnelId, address: String, sig: String, nonce: String, ts: u64) {
        if !self.take_control_token(id) {
            return;
        }
        let (now, ttl) = (self.now.mono_ms, ms(self.cfg.nonce_ttl));
        let Some(t) = self.tunnels.get_mut(&id) else {
            return;
        };
        let fresh = match t
            .pending
            .iter()
            .position(|(n, _)| *n == nonce && !nonce.is_empty())
        {
            Some(i) => t
                .pending
                .remove(i)
                .is_some_and(|(_, at)| now <= at.saturating_add(ttl)),
            None => false,
        };
        if !fresh {
            return self.error_frame(id, "invalid_nonce");
        }
        let window = self.cfg.timestamp_window.as_secs();
        let addr = match auth::verify_agent(&address, &sig, &nonce, ts, self.now.unix_secs, window)
        {
            Ok(a) => a,
            Err(_) => return self.error_frame(id, "invalid_signature"),
        };
        let holds = t.agents().contains(&addr);
        let max = self.cfg.max_agents_per_tunnel as usize;
        if !holds && max != 0 && t.agents().len() + t.pending_adds.len() >= max {
            return self.error_frame(id, "max_agents_reached");
        }
        if self.cfg.cluster.is_some() && !holds {
            if !t.pending_adds.contains(&addr) {
                t.pending_adds.push(addr);
                self.claim(id, &addr);
            }
            return;
        }
        self.add_verified(id, addr);
    }

    /// Registers an agent added mid-session (claimed, with several instances).
    pub(crate) fn add_verified(&mut self, id: TunnelId, addr: Address) {
        let Some(t) = self.tunnels.get(&id) else {
            return;
        };
        let holds = t.agents().contains(&addr);
        let max = self.cfg.max_agents_per_tunnel as usize;
        if !holds && max != 0 && t.agents().len() >= max {
            return self.error_frame(id, "max_agents_reached");
        }
        match self.tunnels.serving(&addr) {
            Some(other) if other != id && self.cfg.duplicate_policy == DuplicatePolicy::Reject => {
                return self.error_frame(id, "address_already_registered");
            }
            Some(other) if other != id => self.supersede(other, addr),
            _ => {}
        }
        self.tunnels.register(id, addr);
        self.directory.forget(&addr);
        let lower = to_lower(&addr);
        self.send(
            id,
            &ServerFrame::AgentAdded {
                url: self.url(&lower),
                address: lower.clone(),
                features: features(),
                region: Some(self.cfg.region.to_string()),
            },
        );
        self.event(Event::AgentAdded {
            tunnel: id,
            address: lower,
        });
        self.agent_back(addr);
    }

    fn on_remove_agent(&mut self, id: TunnelId, address: &str) {
        let Some(addr) = auth::parse_address(address) else {
            return;
        };
        if !(self.tunnels.get(&id)).is_some_and(|t| t.agents().contains(&addr)) {
            return;
        }
        let served = self.tunnels.unregister(id, &addr);
        self.end_agent_calls(id, addr);
        if served {
            self.release(&addr);
        }
        let lower = to_lower(&addr);
        self.send(
            id,
            &ServerFrame::AgentRemoved {
                address: lower.clone(),
                reason: None,
            },
        );
        self.event(Event::AgentRemoved {
            tunnel: id,
            address: lower,
            reason: "removed",
        });
    }
}
