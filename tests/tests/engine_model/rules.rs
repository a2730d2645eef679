//! The model's rules: what the engine must do for each event.

use super::*;

/// The model's rules for tunnels, agents, dispatch and time.
impl Run {
    /// The complete request goes to the agent's tunnel, if it has one.
    pub(super) fn dispatch(&mut self, c: u64) {
        let (now, t) = (self.now(), self.agents[self.calls[&c].agent]);
        let m = self.calls.get_mut(&c).expect("a known call");
        let Some(len) = m.body.take() else {
            return;
        };
        let Some(t) = t else {
            return self.expect_answer(c, [error_line(502, "agent_offline")]);
        };
        (m.tun, m.call) = (t, CallModel::sent(now, &self.cfg));
        let enc = if m.binary { " base64" } else { "" };
        self.expect_frame(t, format!("request c{c} {len}{enc}"));
        self.dispatched.push(c);
    }

    pub(super) fn drop_tunnel(&mut self, t: usize, close: Option<(u16, &str)>) {
        if self.tuns[t].st == TunnelState::Closed {
            return;
        }
        self.tuns[t].st = TunnelState::Closed;
        self.ip_open[self.tuns[t].ip] -= 1;
        for k in std::mem::take(&mut self.tuns[t].agents) {
            if self.agents[k] == Some(t) {
                self.agents[k] = None;
            }
        }
        for (c, m) in self.calls.iter_mut().filter(|(_, m)| m.tun == t) {
            let line = m.call.fail("tunnel_closed");
            self.exp.extend(line.map(|l| (Scope::Call(*c), l)));
        }
        if let Some((code, reason)) = close {
            self.expect_frame(t, format!("close {code} {reason}"));
        }
    }

    pub(super) fn auth_error(&mut self, t: usize, error: &str, code: u16) {
        self.expect_frame(t, format!("auth_error {error}"));
        self.drop_tunnel(t, Some((code, error)));
    }

    /// Whether `t` takes a frame other than `auth`: one before auth is fatal
    /// (`syntax`: not even JSON).
    pub(super) fn after_auth(&mut self, t: usize, syntax: bool) -> bool {
        if self.tuns[t].st == TunnelState::Pending {
            let error = ["expected_auth_frame", "invalid_json"][syntax as usize];
            self.auth_error(t, error, 4000);
        }
        self.tuns[t].st == TunnelState::Authed
    }

    pub(super) fn auth(&mut self, t: usize, keys: &[usize], how: How) {
        match (self.tuns[t].st, how) {
            (TunnelState::Authed | TunnelState::Closed, _) => return,
            (_, How::WrongNonce) => return self.auth_error(t, "invalid_nonce", 4000),
            _ if keys.is_empty() => return self.auth_error(t, "no_agents", 4000),
            (_, How::BadSig) => return self.auth_error(t, "signature_verification_failed", 4001),
            _ => {}
        }
        let mut names: Vec<String> = Vec::new();
        for &k in keys {
            if !self.tuns[t].agents.contains(&k) {
                self.take_over(t, k);
                names.push(format!("k{k}"));
            }
        }
        let (at, tun) = (self.now() + ms(self.cfg.ping_interval), &mut self.tuns[t]);
        (tun.st, tun.at) = (TunnelState::Authed, at);
        tun.nonces.clear();
        self.expect_frame(t, format!("auth_ok [{}] rejected []", names.join(" ")));
    }

    /// `k` left `t`: its calls there end at once (the app drops them itself).
    pub(super) fn end_agent_calls(&mut self, t: usize, k: usize) {
        let ended = (self.calls.iter_mut()).filter(|(_, m)| m.tun == t && m.agent == k);
        for (c, m) in ended {
            let line = m.call.fail("agent_offline");
            self.exp.extend(line.map(|l| (Scope::Call(*c), l)));
        }
    }

    /// Registers `k` on `t`. Under takeover `k` leaves the tunnel that held
    /// it, which closes once it holds no agent.
    pub(super) fn take_over(&mut self, t: usize, k: usize) {
        if let Some(old) = self.agents[k].filter(|o| *o != t) {
            self.tuns[old].agents.retain(|x| *x != k);
            self.end_agent_calls(old, k);
            self.expect_frame(old, format!("agent_removed k{k} superseded"));
            if self.tuns[old].agents.is_empty() {
                self.drop_tunnel(old, Some((1000, "superseded")));
            }
        }
        self.agents[k] = Some(t);
        if !self.tuns[t].agents.contains(&k) {
            self.tuns[t].agents.push(k);
        }
    }

    /// After every `handle*`: a drain with no call left finishes at once.
    pub(super) fn after_handle(&mut self) {
        let live = self.count(|m| m.body.is_some() || m.call.phase != Phase::Done);
        if self.draining.is_some() && !self.stopped && live == 0 {
            self.shut_down();
        }
    }

    pub(super) fn shut_down(&mut self) {
        self.stopped = true;
        for t in 0..self.tuns.len() {
            if self.tuns[t].st != TunnelState::Closed {
                self.expect_frame(t, "error relay_restarting");
                self.drop_tunnel(t, Some((1012, "relay restarting")));
            }
        }
        self.exp.push((Scope::Relay, "shutdown complete".into()));
    }

    /// The earliest deadline as (time, kind, id). At one instant tunnel
    /// deadlines come first, then calls by id, then the drain.
    pub(super) fn next_deadline(&self) -> Option<(u64, u8, u64)> {
        let tuns = self
            .tuns
            .iter()
            .enumerate()
            .filter(|(_, t)| t.st != TunnelState::Closed);
        let tuns = tuns.map(|(i, t)| (t.at, 0, i as u64));
        let call = |(c, m): (&u64, &ModelCall)| Some((m.call.deadline(&self.cfg)?, 1, *c));
        let drain = self.draining.filter(|_| !self.stopped).map(|at| (at, 2, 0));
        tuns.chain(self.calls.iter().filter_map(call))
            .chain(drain)
            .min()
    }

    pub(super) fn fire(&mut self) {
        let (now, max) = (self.now(), self.cfg.max_missed_pings);
        let ping = ms(self.cfg.ping_interval);
        while let Some((_, kind, id)) = self.next_deadline().filter(|d| d.0 <= now) {
            let t = id as usize;
            match kind {
                0 if self.tuns[t].st == TunnelState::Pending => {
                    self.auth_error(t, "auth_timeout", 4001)
                }
                0 if max != 0 && self.tuns[t].missed >= max => {
                    self.drop_tunnel(t, Some((1000, "keepalive timeout")))
                }
                0 => {
                    let tun = &mut self.tuns[t];
                    (tun.missed, tun.at) = (tun.missed + 1, now + ping);
                    self.expect_frame(t, "ping");
                }
                1 => {
                    let m = self.calls.get_mut(&id).expect("a live call");
                    let (t, line) = (m.tun, m.call.expire());
                    self.expect_answer(id, line);
                    self.expect_frame(t, format!("cancel c{id}"));
                }
                _ => self.shut_down(),
            }
        }
        self.after_handle();
    }
}
