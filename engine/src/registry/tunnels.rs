//! Every tunnel, which tunnel serves each agent, and the open tunnels per
//! IP: one owner, so the counts can never drift from the maps.

use crate::auth::Address;
use crate::input::{CallId, TunnelId};
use crate::limits::Bucket;
use crate::map::{map, Map, Set};
use core::net::IpAddr;
use std::collections::VecDeque;

pub(crate) struct Tunnel {
    pub ip: IpAddr,
    /// What the per-IP tunnel count is kept under.
    pub limit_key: IpAddr,
    phase: Phase,
    /// The agents this tunnel serves (kept with the registry's agent map).
    agents: Vec<Address>,
    /// Mid-session nonces with the time they were issued.
    pub pending: VecDeque<(String, u64)>,
    pub control: Bucket,
    pub missed_pings: u32,
    pub deadline: u64,
    /// Frame bytes handed to the driver and not yet written.
    pub queued: u64,
    pub calls: Set<CallId>,
    /// Several instances: `add_agent`s waiting for their claims.
    pub pending_adds: Vec<Address>,
    /// Draining: no new call goes to it; it closes once its calls are done.
    pub closing: bool,
}

/// Where a tunnel's handshake is.
pub(crate) enum Phase {
    /// The challenge went out; the `auth` frame must answer this nonce.
    AwaitingAuth { nonce: String },
    /// `auth` arrived and is being checked: its nonce is used up.
    NonceUsed,
    /// With several instances the handshake waits here for the directory's
    /// claims (boxed: an idle tunnel's phase is `Ready`, and small).
    Claiming(Box<PendingAuth>),
    /// `auth_ok` went out: agents are served.
    Ready,
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

impl Tunnel {
    /// A tunnel that was just sent the challenge `nonce`.
    pub fn new(
        ip: IpAddr,
        limit_key: IpAddr,
        nonce: String,
        control: Bucket,
        calls: Set<CallId>,
    ) -> Self {
        Tunnel {
            ip,
            limit_key,
            phase: Phase::AwaitingAuth { nonce },
            agents: Vec::new(),
            pending: VecDeque::new(),
            control,
            missed_pings: 0,
            deadline: 0,
            queued: 0,
            calls,
            pending_adds: Vec::new(),
            closing: false,
        }
    }

    pub fn authed(&self) -> bool {
        matches!(self.phase, Phase::Ready)
    }

    pub fn agents(&self) -> &[Address] {
        &self.agents
    }

    /// Uses the challenge up: the `auth` frame's nonce must equal what this
    /// returns; a second `auth` gets `None`.
    pub fn take_nonce(&mut self) -> Option<String> {
        match std::mem::replace(&mut self.phase, Phase::NonceUsed) {
            Phase::AwaitingAuth { nonce } => Some(nonce),
            // A second `auth`: the claims of the first stay to be undone.
            other => {
                self.phase = other;
                None
            }
        }
    }

    /// The handshake now waits for the directory to answer these claims.
    pub fn await_claims(&mut self, p: PendingAuth) {
        if !self.authed() {
            self.phase = Phase::Claiming(Box::new(p));
        }
    }

    pub fn claiming_mut(&mut self) -> Option<&mut PendingAuth> {
        match &mut self.phase {
            Phase::Claiming(p) => Some(p),
            _ => None,
        }
    }
}

pub(crate) struct Tunnels {
    map: Map<TunnelId, Box<Tunnel>>,
    /// Which tunnel serves each registered agent.
    serving: Map<Address, TunnelId>,
    /// Open WebSockets per IP (per [`crate::http::limit_key`]), from the upgrade on.
    per_ip: Map<IpAddr, u32>,
    ready: usize,
    next: u64,
}

impl Tunnels {
    pub fn new(seed: u64) -> Self {
        Tunnels {
            map: map(seed),
            serving: map(seed),
            per_ip: map(seed),
            ready: 0,
            next: 1,
        }
    }

    /// Adds `t` under a fresh id, counted against its IP.
    pub fn open(&mut self, t: Tunnel) -> TunnelId {
        let id = TunnelId(self.next);
        self.next += 1;
        *self.per_ip.entry(t.limit_key).or_insert(0) += 1;
        // Boxed: the map's spare slots then cost a pointer, not a whole tunnel.
        self.map.insert(id, Box::new(t));
        id
    }

    /// Removes a tunnel; returns it and the agents it still served (now
    /// served by nobody).
    pub fn close(&mut self, id: TunnelId) -> Option<(Box<Tunnel>, Vec<Address>)> {
        let t = self.map.remove(&id)?;
        if let Some(n) = self.per_ip.get_mut(&t.limit_key) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&t.limit_key);
            }
        }
        if t.authed() {
            self.ready -= 1;
        }
        let mut gone = Vec::new();
        for a in &t.agents {
            if self.serving.get(a) == Some(&id) {
                self.serving.remove(a);
                gone.push(*a);
            }
        }
        Some((t, gone))
    }

    /// The handshake completed.
    pub fn mark_ready(&mut self, id: TunnelId) {
        if let Some(t) = self.map.get_mut(&id) {
            if !t.authed() {
                t.phase = Phase::Ready;
                self.ready += 1;
            }
        }
    }

    /// `addr` is served by `id` from now on.
    pub fn register(&mut self, id: TunnelId, addr: Address) {
        if let Some(t) = self.map.get_mut(&id) {
            self.serving.insert(addr, id);
            if !t.agents.contains(&addr) {
                // Exactly as many as served: most tunnels serve one agent.
                t.agents.reserve_exact(1);
                t.agents.push(addr);
            }
        }
    }

    /// `addr` leaves tunnel `id`; `true` if `id` was the one serving it.
    pub fn unregister(&mut self, id: TunnelId, addr: &Address) -> bool {
        if let Some(t) = self.map.get_mut(&id) {
            t.agents.retain(|a| a != addr);
        }
        let served = self.serving.get(addr) == Some(&id);
        if served {
            self.serving.remove(addr);
        }
        served
    }

    pub fn serving(&self, addr: &Address) -> Option<TunnelId> {
        self.serving.get(addr).copied()
    }

    pub fn get(&self, id: &TunnelId) -> Option<&Tunnel> {
        self.map.get(id).map(|t| &**t)
    }

    pub fn get_mut(&mut self, id: &TunnelId) -> Option<&mut Tunnel> {
        self.map.get_mut(id).map(|t| &mut **t)
    }

    /// Every tunnel id, in order.
    pub fn ids(&self) -> Vec<TunnelId> {
        let mut ids: Vec<TunnelId> = self.map.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn open_from(&self, key: &IpAddr) -> u32 {
        self.per_ip.get(key).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Tunnels whose handshake completed.
    pub fn ready(&self) -> usize {
        self.ready
    }

    /// Agents served.
    pub fn agents(&self) -> usize {
        self.serving.len()
    }

    pub fn ip_entries(&self) -> usize {
        self.per_ip.len()
    }
}
