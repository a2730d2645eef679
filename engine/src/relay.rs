//! `Relay`: the server-side state machine facade, routing and timers.

use crate::auth::Address;
use crate::config::Config;
use crate::error::CallError;
use crate::http::{self, agent_from_host};
use crate::input::{CallId, Input, RequestHead, TunnelId};
use crate::limits::RateLimiter;
use crate::map::{map, Map};
use crate::output::{Event, Output};
use crate::registry::calls::Calls;
use crate::registry::directory::DirectoryCache;
use crate::registry::tunnels::Tunnels;
use crate::stats::{Counters, Stats};
use crate::time::ms;
use crate::time::{Entropy, Now};
use crate::timer::{TimerKey, Timers};
use core::net::IpAddr;
use std::collections::VecDeque;

/// How often idle rate-limit buckets are forgotten.
const SWEEP_MS: u64 = 10_000;

/// Buffers kept for reuse (chunks' data, request frames, answers), at most,
/// and the largest kept: enough for a busy turn's calls, whose buffers glibc
/// would otherwise take back through its slow path.
const SPARE_BUFFERS: usize = 64;
const SPARE_BYTES: usize = 4096;

/// The relay's complete protocol state. See the crate docs for the run loop.
pub struct Relay<E: Entropy> {
    pub(crate) cfg: Config,
    pub(crate) rng: E,
    pub(crate) now: Now,
    started_ms: u64,
    pub(crate) out: VecDeque<Output>,
    pub(crate) timers: Timers,
    /// Seeds every hash map (drawn from the driver's entropy).
    pub(crate) seed: u64,
    pub(crate) tunnels: Tunnels,
    pub(crate) calls: Calls,
    connect_rl: RateLimiter<IpAddr>,
    stats_rl: RateLimiter<IpAddr>,
    pub(crate) agent_rl: RateLimiter<Address>,
    pub(crate) caller_rl: RateLimiter<IpAddr>,
    pub(crate) presence_rl: RateLimiter<IpAddr>,
    /// Presence queries waiting for the directory.
    pub(crate) presence_waiting: Map<CallId, crate::presence::PendingPresence>,
    pub(crate) counters: Counters,
    /// Drain deadline once shutdown began.
    pub(crate) draining: Option<u64>,
    stopped: bool,
    /// Several instances: owner look-ups.
    pub(crate) directory: DirectoryCache,
    /// Calls waiting for an agent that was online moments ago.
    pub(crate) held: crate::held::HeldCalls,
    /// Chunk buffers the driver is done with, for the next tokens' data.
    pub(crate) spare: Vec<Vec<u8>>,
    /// Agent-host calls in flight: their diagnostic headers and log line.
    pub(crate) records: Map<CallId, crate::record::Record>,
    /// This instance's diagnostic header lines, for answers the engine writes.
    pub(crate) diag_lines: crate::diag::DiagLines,
}

/// Sizes of everything the engine holds, for invariant checks.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Sizes {
    /// Tunnel connections, authenticated or not.
    pub tunnels: usize,
    /// Agents a tunnel serves.
    pub agents: usize,
    /// Client IPs (IPv6: /64s) with at least one open tunnel.
    pub ip_entries: usize,
    /// Calls in flight.
    pub calls: usize,
    /// Tunnel request ids mapped back to their calls.
    pub req_ids: usize,
    /// Armed timers.
    pub timers: usize,
    /// Keys in all rate limiters together.
    pub limiter_keys: usize,
    /// Outputs not yet taken by [`Relay::poll_output`].
    pub queued_outputs: usize,
    /// Cached and pending directory look-ups.
    pub directory: usize,
    /// Agent-host calls whose record is open (not yet finished).
    pub timed_calls: usize,
    /// Agents that left recently, and held calls.
    pub held: usize,
}

impl<E: Entropy> Relay<E> {
    /// A relay with no tunnels or calls; `rng` seeds its hash maps and makes nonces.
    pub fn new(cfg: Config, mut rng: E, now: Now) -> Self {
        let seed = {
            let mut b = [0u8; 8];
            rng.fill(&mut b);
            u64::from_le_bytes(b)
        };
        let mut timers = Timers::default();
        timers.set(now.mono_ms + SWEEP_MS, TimerKey::Sweep);
        Relay {
            connect_rl: RateLimiter::with_seed(cfg.tunnel_connects_per_min, seed),
            stats_rl: RateLimiter::with_seed(cfg.stats_requests_per_min, seed),
            agent_rl: RateLimiter::with_seed(cfg.agent_requests_per_min, seed),
            caller_rl: RateLimiter::with_seed(cfg.caller_requests_per_min, seed),
            presence_rl: RateLimiter::with_seed(cfg.presence_requests_per_min, seed),
            presence_waiting: map(seed),
            diag_lines: crate::diag::DiagLines::new(&cfg),
            cfg,
            rng,
            now,
            started_ms: now.mono_ms,
            out: VecDeque::new(),
            timers,
            seed,
            tunnels: Tunnels::new(seed),
            calls: Calls::new(seed),
            counters: Counters::default(),
            draining: None,
            stopped: false,
            directory: DirectoryCache::new(seed),
            records: map(seed),
            held: crate::held::HeldCalls::new(seed),
            spare: Vec::new(),
        }
    }

    /// Hands back a buffer the engine gave out once it is written (a chunk's
    /// data, an `Output::Answer`'s bytes, an `Output::SendFrame`'s text): the
    /// next one is written into it instead of a fresh allocation.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS && buf.capacity() <= SPARE_BYTES {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// A recycled buffer, or a new empty one.
    pub(crate) fn spare_string(&mut self) -> String {
        spare_string(&mut self.spare)
    }

    /// A recycled buffer with room for `hint` bytes, or a new one.
    pub(crate) fn spare_bytes(&mut self, hint: usize) -> Vec<u8> {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.reserve(hint);
        buf
    }

    /// The configuration the relay was built with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Feeds one event. Drain [`Relay::poll_output`] afterwards.
    pub fn handle(&mut self, now: Now, input: Input<'_>) {
        self.set_now(now);
        match input {
            Input::CallHead { call, head } => self.on_head(call, head),
            Input::CallBody { call, chunk } => self.on_body(call, chunk),
            Input::CallBodyEnd { call } => self.on_body_end(call),
            Input::CallGone { call } => self.on_call_gone(call),
            Input::CallDrained { call, bytes } => self.on_call_drained(call, bytes),
            Input::TunnelText { tunnel, text } => self.on_text(tunnel, text),
            Input::TunnelBinary { tunnel } => self.on_binary(tunnel),
            Input::TunnelDrained { tunnel, bytes } => {
                if let Some(t) = self.tunnels.get_mut(&tunnel) {
                    t.queued = t.queued.saturating_sub(bytes);
                }
            }
            Input::TunnelClosed { tunnel } => self.drop_tunnel(tunnel, "closed by peer", None),
            Input::Shutdown => self.begin_shutdown(),
            Input::Claimed {
                tunnel,
                agent,
                outcome,
            } => self.on_claimed(tunnel, agent, outcome),
            Input::ClaimLost { tunnel, agent } => self.on_claim_lost(tunnel, agent),
            Input::Located { agent, found } => self.on_located(agent, found),
            Input::AgentClaimed { agent, instance } => self.on_agent_claimed(agent, instance),
            Input::DirectoryHealth { up } => self.on_directory_health(up),
            Input::OwnerHead {
                call,
                status,
                headers,
                streamed,
            } => self.on_owner_head(call, status, headers, streamed),
            Input::OwnerBody { call, chunk } => self.on_owner_body(call, chunk),
            Input::OwnerEnd { call } => self.on_owner_end(call),
            Input::OwnerFailed { call, fault } => self.on_owner_failed(call, fault),
            Input::OwnerRefused { call, request } => self.on_owner_refused(call, *request),
            Input::AgentMoving { agent } => self.on_agent_moving(agent),
            Input::PresenceFound { call, claimed } => self.on_presence_found(call, claimed),
        }
        self.maybe_finish_shutdown();
    }

    /// Runs every deadline due at `now`. Spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Now) {
        self.set_now(now);
        while let Some(key) = self.timers.pop_due(self.now.mono_ms) {
            match key {
                TimerKey::Tunnel(id) => self.on_tunnel_timer(TunnelId(id)),
                TimerKey::Call(id) => self.on_call_timer(CallId(id)),
                TimerKey::Sweep => {
                    let t = self.now.mono_ms;
                    self.connect_rl.sweep(t);
                    self.stats_rl.sweep(t);
                    self.agent_rl.sweep(t);
                    self.caller_rl.sweep(t);
                    self.presence_rl.sweep(t);
                    self.sweep_located();
                    self.sweep_left();
                    self.timers.set(t + SWEEP_MS, TimerKey::Sweep);
                }
                TimerKey::Drain => self.finish_shutdown(),
            }
        }
        self.maybe_finish_shutdown();
    }

    /// The next action for the driver, oldest first; `None` when drained.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The earliest deadline (monotonic ms): call `handle_timeout` then.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.next()
    }

    /// Counters and gauges, as `/stats` reports them.
    pub fn stats(&self) -> Stats {
        Stats {
            uptime_seconds: (self.now.mono_ms - self.started_ms) / 1000,
            active_tunnels: self.tunnels.ready(),
            active_agents: self.tunnels.agents(),
            active_calls: self.calls.len(),
            counters: self.counters.clone(),
            instance: (self.cfg.cluster.as_ref())
                .map(|c| (c.instance_id.clone(), self.directory.up)),
            route_cache_entries: self.directory.len(),
        }
    }

    /// Shutdown began: calls in flight finish, new ones are refused.
    pub fn is_draining(&self) -> bool {
        self.draining.is_some()
    }

    /// Sizes of everything held, for invariant checks.
    pub fn sizes(&self) -> Sizes {
        Sizes {
            tunnels: self.tunnels.len(),
            agents: self.tunnels.agents(),
            ip_entries: self.tunnels.ip_entries(),
            calls: self.calls.len(),
            req_ids: self.calls.req_ids(),
            timers: self.timers.len(),
            limiter_keys: self.connect_rl.len()
                + self.stats_rl.len()
                + self.agent_rl.len()
                + self.caller_rl.len()
                + self.presence_rl.len(),
            queued_outputs: self.out.len(),
            directory: self.directory.len() + self.presence_waiting.len(),
            held: self.held.len(),
            timed_calls: self.records.len(),
        }
    }

    /// The tunnel currently serving `agent`, if any.
    pub fn agent_tunnel(&self, agent: &Address) -> Option<TunnelId> {
        self.tunnels.serving(agent)
    }

    fn set_now(&mut self, now: Now) {
        // A clock that steps back must not re-fire or stretch deadlines.
        self.now = Now {
            mono_ms: now.mono_ms.max(self.now.mono_ms),
            unix_secs: now.unix_secs,
        };
    }

    pub(crate) fn emit(&mut self, o: Output) {
        let call_output = matches!(
            o,
            Output::WriteChunk { .. }
                | Output::Respond { .. }
                | Output::Answer { .. }
                | Output::EndStream { .. }
                | Output::AbortStream { .. }
        );
        let done = match call_output && !self.records.is_empty() {
            true => self.record_output(&o),
            false => None,
        };
        self.out.push_back(o);
        // The call's last output first, then its `CallDone`.
        if let Some(e) = done {
            self.event(e);
        }
    }

    pub(crate) fn event(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    pub(crate) fn respond(&mut self, call: CallId, mut response: http::Response) {
        self.diagnose(call, response.status, &mut response.headers);
        self.emit(Output::Respond { call, response });
    }

    /// A stream's head goes out (with the call's diagnostic headers).
    pub(crate) fn start_stream(&mut self, call: CallId, mut head: http::ResponseHead) {
        self.diagnose(call, head.status, &mut head.headers);
        self.emit(Output::StartStream { call, head });
    }

    fn on_head(&mut self, call: CallId, head: RequestHead) {
        if self.calls.contains(&call) {
            return;
        }
        let path = head.target.split('?').next().unwrap_or("");
        let ip = match head.hop {
            // Another instance already chose the caller's IP and sent it this way.
            crate::Hop::Trusted => http::client_ip(
                head.headers,
                head.peer,
                &crate::ClientIpSource::Header("x-forwarded-for".into()),
            ),
            _ => http::client_ip(head.headers, head.peer, &self.cfg.client_ip),
        };
        // An agent host belongs to the agent: every path goes to its tunnel,
        // `/health` included (the app probes it to prove the public route).
        let agent = head
            .host
            .and_then(|h| agent_from_host(h, &self.cfg.base_domain));
        if let Some(agent) = agent {
            return self.agent_call(call, head, agent, ip);
        }
        match path {
            "/health" => self.health(call),
            "/stats" => {
                if self.stats_rl.check(&http::limit_key(ip), self.now.mono_ms) {
                    let body = self.stats().to_json();
                    self.respond(call, http::json_response(200, &body));
                } else {
                    self.refuse(call, CallError::RateLimited);
                }
            }
            "/tunnel/connect" => self.connect(call, &head, ip),
            "/presence" => self.presence(call, &head, ip),
            _ => self.refuse(call, CallError::InvalidSubdomain),
        }
    }

    fn health(&mut self, call: CallId) {
        // Before its first word from Redis an instance cannot route yet: a
        // load balancer waits for it (once known, a Redis outage is only
        // "degraded", so the fleet stays up).
        let starting = self.cfg.cluster.is_some() && !self.directory.known;
        let (status, word) = match self.draining {
            Some(_) => (503, "shutting_down"),
            None if starting => (503, "starting"),
            None => (200, "ok"),
        };
        let mut body = serde_json::json!({
            "status": word,
            "tunnels": self.tunnels.ready(),
            "region": self.cfg.region,
            "machine": self.cfg.machine,
        });
        if self.cfg.cluster.is_some() {
            body["redis"] = if self.directory.up { "ok" } else { "degraded" }.into();
        }
        self.respond(call, http::json_response(status, &body));
    }

    fn connect(&mut self, call: CallId, head: &RequestHead, ip: IpAddr) {
        let cap = self.cfg.max_tunnels_per_ip;
        let key = http::limit_key(ip);
        let open = self.tunnels.open_from(&key);
        let why = if self.draining.is_some() {
            CallError::RelayRestarting
        } else if !head.websocket {
            CallError::WebsocketRequired
        } else if !self.connect_rl.check(&key, self.now.mono_ms) {
            CallError::RateLimited
        } else if cap != 0 && open >= cap {
            CallError::TooManyConnections
        } else {
            return self.open_tunnel(call, ip, key);
        };
        self.refuse(call, why);
    }

    fn begin_shutdown(&mut self) {
        if self.draining.is_some() {
            return;
        }
        let at = self.now.mono_ms + ms(self.cfg.drain_timeout);
        self.draining = Some(at);
        self.timers.set(at, TimerKey::Drain);
        let (calls, tunnels) = (self.calls.len(), self.tunnels.len());
        self.event(Event::ShuttingDown { calls, tunnels });
        if self.cfg.cluster.is_some() {
            // Hand the agents over now: each tunnel takes no new call and
            // closes once its calls are done; calls meanwhile are held and
            // follow their agent to its next instance.
            for id in self.tunnels.ids() {
                self.close_when_idle(id);
            }
        }
    }

    /// A draining tunnel: no new call goes to it, and it closes (with
    /// `relay_restarting`) as soon as no call is in flight on it.
    pub(crate) fn close_when_idle(&mut self, id: TunnelId) {
        let Some(t) = self.tunnels.get_mut(&id) else {
            return;
        };
        t.closing = true;
        let (idle, agents) = (t.calls.is_empty(), t.agents().to_vec());
        for a in agents {
            self.agent_left(a);
        }
        if idle {
            self.close_restarting(id);
        }
    }

    fn close_restarting(&mut self, id: TunnelId) {
        let bye = crate::frame::ServerFrame::Error {
            error: "relay_restarting".into(),
        };
        self.send(id, &bye);
        self.drop_tunnel(id, "relay restarting", Some((1012, "relay restarting")));
    }

    fn maybe_finish_shutdown(&mut self) {
        if self.draining.is_some() && !self.stopped && self.calls.is_empty() {
            self.finish_shutdown();
        }
    }

    /// Tells every tunnel the relay restarts, closes it with 1012, and stops.
    fn finish_shutdown(&mut self) {
        let Some(at) = self.draining else {
            return;
        };
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.timers.cancel(at, TimerKey::Drain);
        for id in self.tunnels.ids() {
            self.close_restarting(id);
        }
        // Calls still waiting for an agent: the caller may try again.
        for call in self.calls.waiting_ids() {
            self.fail_call(call, CallError::RelayRestarting);
        }
        self.emit(Output::ShutdownComplete);
    }
}

/// A buffer from `spare` (cleared when recycled: an empty vector is valid
/// UTF-8), or a new empty one.
pub(crate) fn spare_string(spare: &mut Vec<Vec<u8>>) -> String {
    (spare.pop())
        .and_then(|v| String::from_utf8(v).ok())
        .unwrap_or_default()
}
