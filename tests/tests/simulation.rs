//! Deterministic simulation: one relay engine, hundreds of tunnel clients and
//! thousands of callers on a virtual clock, with seeded network latency,
//! lost and late answers, streams that stall, callers hanging up, sockets
//! dying, takeovers, clients that never answer a challenge or a ping, and bad
//! host answers.
//!
//! Every call's expected outcome is derived afterwards from what the
//! simulation did (when each answer reached the relay, when the tunnel was
//! lost, when the caller left) and compared byte for byte with what the relay
//! answered. A failure names its seed; `SIM_SEED=<seed>` replays just that one.

use osaurus_relay_engine::auth::{Address, SecretKey};
use osaurus_relay_engine::frame::{Body, ClientFrame, ServerFrame};
use osaurus_relay_engine::{CallId, Config, Input, Output, SeededRng, TunnelId};
use osaurus_relay_tests::harness::{host_of, key, lower, test_config, Harness, DOMAIN};
use osaurus_relay_tests::sim::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;

#[path = "simulation/plan.rs"]
mod plan;

const SEEDS: u64 = 8;
/// RECONNECT_GRACE: clients reconnect 0.5 to 2.5 s after their socket dies.
const GRACE: u64 = 1_500;
const CLIENTS: usize = 220;
const CALLS: usize = 5_000;
/// Agents nobody ever registers.
const GHOSTS: usize = 8;
/// Connection requests are numbered apart from the callers' calls.
const CONNECT: u64 = 1 << 32;
/// No caller starts after this; the run stops 30 s later.
const LAST_CALL_MS: u64 = 2_500 + CALLS as u64 * 12;
const OUTCOMES: &str = "auth_timeout|keepalive timeout|superseded|gateway timeout|\
    stream idle timeout|tunnel closed|tunnel lost mid-stream|agent offline|bad answer|\
    caller gone|answered|held, then delivered|held, then offline";

/// Fails with the seed to replay unless `$ok`.
macro_rules! ensure {
    ($sim:expr, $ok:expr, $($why:tt)+) => {
        if !$ok {
            $sim.fail(format!($($why)+))
        }
    };
}

#[path = "simulation/outcomes.rs"]
mod outcomes;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Normal,
    /// Never answers its challenge: the relay must time the handshake out.
    MuteHandshake,
    /// Never answers a ping: the relay must close it for keepalive.
    MutePings,
}

#[derive(Debug)]
enum Ev {
    /// A client opens a WebSocket; `true` while its old socket still lives.
    Connect(usize, bool),
    /// A client's socket dies; it reconnects later.
    Drop(usize),
    Caller(usize),
    Hangup(usize),
    /// A frame of this many bytes reaches the client.
    ToClient(TunnelId, ServerFrame, u64),
    /// The client sees the relay close its socket.
    Closed(TunnelId),
    /// The client's local server has an answer to call `usize` ready.
    Ready(TunnelId, usize, Answer),
    ToRelay(TunnelId, String, Note),
    /// The relay's driver sees a socket die.
    SocketGone(TunnelId),
}

#[derive(Debug)]
enum Note {
    Auth,
    Pong,
    Answer(usize, Answer),
}

struct Agent {
    key: SecretKey,
    address: Address,
    lower: String,
    host: String,
}

#[derive(Default)]
struct Client {
    agents: Vec<usize>,
    conn: Option<TunnelId>,
    connects: u32,
}

#[derive(Debug, Default)]
struct Conn {
    client: usize,
    mode: Mode,
    opened: u64,
    authed: Option<u64>,
    /// When the relay lost the tunnel (closed it or saw the socket die).
    lost: Option<Key>,
    /// Lost because a newer session took its agents over.
    superseded: bool,
    /// Last delivery time each way: a socket delivers in order.
    to_relay: u64,
    to_client: u64,
    cancelled: HashSet<usize>,
}

#[derive(Debug, Default)]
struct Call {
    agent: usize,
    body: Option<Vec<u8>>,
    /// Answers the agent's host sends, each this long after the request arrives.
    plan: Vec<(u64, Answer)>,
    hangup: Option<u64>,
    sent: u64,
    /// The agent's tunnel when the call arrived, as the simulation saw it
    /// (or the one a held call was delivered to).
    expect: Option<TunnelId>,
    /// It arrived while its agent was away within the grace: held.
    held: bool,
    dispatched: Option<(TunnelId, u64)>,
    facts: Vec<(Key, Fact)>,
    got: Vec<String>,
}

struct Sim<'a> {
    seed: u64,
    rng: SeededRng,
    cfg: Config,
    e: Driven,
    d: Describer,
    q: EventQueue<Ev>,
    agents: &'a [Agent],
    clients: Vec<Client>,
    conns: HashMap<TunnelId, Conn>,
    calls: Vec<Call>,
    /// Which tunnel serves each agent, as the simulation sees it.
    mirror: HashMap<usize, TunnelId>,
    /// When each agent's tunnel was last lost, and the calls held for it.
    left: HashMap<usize, u64>,
    held: HashMap<usize, Vec<usize>>,
    step: Key,
    connecting: Option<(usize, Mode)>,
    /// The client whose handshake the relay is processing.
    authing: Option<usize>,
    count: BTreeMap<&'static str, usize>,
}

impl<'a> Sim<'a> {
    fn new(seed: u64, agents: &'a [Agent]) -> Self {
        let cfg = Config {
            tunnel_connects_per_min: 0,
            max_tunnels_per_ip: 0,
            agent_requests_per_min: 0,
            caller_requests_per_min: 0,
            // Calls for an agent whose socket just died wait for it.
            reconnect_grace: std::time::Duration::from_millis(GRACE),
            ..test_config()
        };
        Sim {
            seed,
            rng: SeededRng::new(seed),
            e: Driven::new(cfg.clone(), seed ^ 0x5eed),
            cfg,
            d: Describer::default(),
            q: EventQueue::default(),
            agents,
            clients: Vec::new(),
            conns: HashMap::new(),
            calls: Vec::new(),
            mirror: HashMap::new(),
            left: HashMap::new(),
            held: HashMap::new(),
            step: (0, 2, 0),
            connecting: None,
            authing: None,
            count: BTreeMap::new(),
        }
    }

    fn fail(&self, what: impl Debug) -> ! {
        let (seed, now) = (self.seed, self.now());
        panic!("seed {seed} (replay with SIM_SEED={seed}), at {now} ms: {what:?}")
    }

    fn now(&self) -> u64 {
        self.e.now.mono_ms
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.below(n)
    }

    /// One-way network latency: mostly short, sometimes a spike.
    fn latency(&mut self) -> u64 {
        let spike = [0, self.below(250)][(self.below(50) == 0) as usize];
        1 + self.below(40) + spike
    }

    fn tally(&mut self, what: &'static str) {
        *self.count.entry(what).or_default() += 1;
    }

    /// Runs events and relay deadlines in time order until `stop`.
    fn run(&mut self, stop: u64) {
        loop {
            let timer = self.e.relay.poll_timeout().unwrap_or(u64::MAX);
            let event = self.q.next_time().unwrap_or(u64::MAX);
            if timer.min(event) > stop {
                return;
            }
            if timer <= event {
                self.step = (timer, 0, 0);
                let out = self.e.timeout(timer).unwrap_or_else(|e| self.fail(e));
                self.outputs(out);
                continue;
            }
            let (at, seq, ev) = self.q.pop().expect("an event is due");
            self.e.set_time(at);
            self.step = (at, 2, seq);
            self.event(ev);
        }
    }

    fn input(&mut self, input: Input<'_>) {
        let out = self.e.handle(input).unwrap_or_else(|e| self.fail(e));
        self.outputs(out);
    }

    fn event(&mut self, ev: Ev) {
        let now = self.now();
        match ev {
            Ev::Connect(c, takeover) => self.connect(c, takeover),
            Ev::Drop(c) => {
                if let Some(t) = self.clients[c].conn.take() {
                    let at = (now + self.latency()).max(self.conns[&t].to_relay);
                    self.q.push(at, Ev::SocketGone(t));
                    let at = now + 500 + self.below(2_000);
                    self.q.push(at, Ev::Connect(c, false));
                }
            }
            Ev::SocketGone(tunnel) => {
                self.input(Input::TunnelClosed { tunnel });
                self.lose(tunnel);
            }
            Ev::Closed(t) => {
                let c = self.conns[&t].client;
                if self.clients[c].conn == Some(t) {
                    self.clients[c].conn = None;
                    let at = now + 500 + self.below(2_000);
                    self.q.push(at, Ev::Connect(c, false));
                }
            }
            Ev::ToClient(tunnel, frame, bytes) => {
                self.input(Input::TunnelDrained { tunnel, bytes });
                self.client_gets(tunnel, frame);
            }
            Ev::Ready(t, c, a) => {
                let conn = &self.conns[&t];
                if self.clients[conn.client].conn == Some(t) && !conn.cancelled.contains(&c) {
                    let text = a.frame(&self.d.call_req[&(c as u64 + 1)]);
                    self.send_up(t, text, Note::Answer(c, a));
                }
            }
            Ev::ToRelay(t, text, note) => self.relay_gets(t, &text, note),
            Ev::Caller(c) => self.caller(c),
            Ev::Hangup(c) => {
                self.calls[c].facts.push((self.step, Fact::Gone));
                let call = CallId(c as u64 + 1);
                self.input(Input::CallGone { call });
            }
        }
    }

    fn connect(&mut self, c: usize, takeover: bool) {
        let live = self.clients[c].conn.map(|t| &self.conns[&t]);
        let authed = live.is_some_and(|conn| conn.authed.is_some() && conn.lost.is_none());
        if (takeover && !authed) || (!takeover && live.is_some()) {
            return;
        }
        let mode = match (c, self.clients[c].connects, takeover, self.below(100)) {
            (0, 0, ..) => Mode::MuteHandshake,
            (1, 0, ..) => Mode::MutePings,
            (_, _, false, 0..=1) => Mode::MuteHandshake,
            (_, _, false, 2..=4) => Mode::MutePings,
            _ => Mode::Normal,
        };
        self.clients[c].connects += 1;
        self.connecting = Some((c, mode));
        let call = CallId(CONNECT + self.conns.len() as u64);
        let mut head = Harness::head("GET", "/tunnel/connect", DOMAIN);
        (head.websocket, head.peer) = (true, [10, 0, (c / 250) as u8, (c % 250) as u8].into());
        self.input(Input::CallHead {
            call,
            head: head.view(),
        });
        ensure!(self, self.connecting.is_none(), "client {c}: no upgrade");
    }

    /// Sends `text` over `t` to the relay, in order after what went before.
    fn send_up(&mut self, t: TunnelId, text: String, note: Note) {
        let at = self.now() + self.latency();
        let conn = self.conns.get_mut(&t).expect("a known socket");
        conn.to_relay = conn.to_relay.max(at);
        let at = conn.to_relay;
        self.q.push(at, Ev::ToRelay(t, text, note));
    }

    fn client_gets(&mut self, t: TunnelId, frame: ServerFrame) {
        let (conn, ts) = (&self.conns[&t], self.e.now.unix_secs);
        let client = &self.clients[conn.client];
        if client.conn != Some(t) {
            return; // a socket the client gave up on
        }
        let lower = |a: &usize| self.agents[*a].lower.as_str();
        match frame {
            ServerFrame::Challenge { nonce } if conn.mode != Mode::MuteHandshake => {
                let keys = client.agents.iter().map(|a| &self.agents[*a].key);
                let agents = keys.map(|k| agent_sig(k, k, &nonce, ts)).collect();
                let text = ClientFrame::Auth {
                    agents,
                    nonce,
                    timestamp: ts,
                }
                .encode();
                self.send_up(t, text, Note::Auth);
            }
            ServerFrame::AuthOk {
                agents, rejected, ..
            } => {
                let got: Vec<&str> = agents.iter().map(|a| a.address.as_str()).collect();
                let want: Vec<&str> = client.agents.iter().map(lower).collect();
                let ok = got == want && rejected.is_empty();
                ensure!(self, ok, "auth_ok {got:?} {rejected:?}");
            }
            ServerFrame::Ping { ts } if conn.mode != Mode::MutePings => {
                self.send_up(t, ClientFrame::Pong { ts }.encode(), Note::Pong);
            }
            ServerFrame::Request {
                method,
                path,
                headers,
                body,
                ..
            } => {
                let c = path[2..].parse::<usize>().expect("our paths") - 1;
                let call = &self.calls[c];
                let ok = method == ["GET", "POST"][call.body.is_some() as usize]
                    && body == Body::from_bytes(call.body.clone().unwrap_or_default())
                    && headers.get("x-agent-address") == Some(lower(&call.agent));
                ensure!(self, ok, "c{} got {method} {headers:?} {body:?}", c + 1);
                for (after, a) in call.plan.clone() {
                    self.q.push(self.now() + after, Ev::Ready(t, c, a));
                }
            }
            ServerFrame::Cancel { id } => {
                let c = self.d.req_call[&id] as usize - 1;
                self.conns.get_mut(&t).expect("known").cancelled.insert(c);
            }
            _ => {}
        }
    }

    fn relay_gets(&mut self, t: TunnelId, text: &str, note: Note) {
        let conn = &self.conns[&t];
        match note {
            Note::Auth if conn.lost.is_none() => {
                // The handshake must succeed: every agent moves to `t` and the
                // client's previous tunnel, now empty, is superseded.
                let client = conn.client;
                let now = self.now();
                for a in self.clients[client].agents.clone() {
                    self.mirror.insert(a, t);
                    self.left.remove(&a);
                    // Held calls go to it, oldest first; those whose grace
                    // ran out (the relay's deadline fires first) or whose
                    // caller left are not.
                    for c in self.held.remove(&a).unwrap_or_default() {
                        let call = &mut self.calls[c];
                        let gone = call.facts.iter().any(|(_, f)| matches!(f, Fact::Gone));
                        if !gone && now < call.sent + GRACE {
                            (call.expect, call.sent) = (Some(t), now);
                        }
                    }
                }
                self.conns.get_mut(&t).expect("known").authed = Some(self.now());
                self.authing = Some(client);
            }
            Note::Answer(c, a) => self.calls[c].facts.push((self.step, Fact::Answer(a))),
            _ => {}
        }
        self.input(Input::TunnelText { tunnel: t, text });
        self.authing = None;
    }

    fn caller(&mut self, c: usize) {
        let (call, now) = (&self.calls[c], self.now());
        let agent = &self.agents[call.agent];
        let expect = self.mirror.get(&call.agent).copied();
        let serving = self.e.relay.agent_tunnel(&agent.address);
        ensure!(self, serving == expect, "agent on {serving:?}");
        let (id, body) = (CallId(c as u64 + 1), call.body.clone());
        let (method, target) = (
            ["GET", "POST"][body.is_some() as usize],
            format!("/c{}", c + 1),
        );
        let mut head = Harness::head(method, &target, &agent.host);
        if let Some(b) = &body {
            (head.content_length, head.body_follows) = (Some(b.len() as u64), true);
        }
        (self.calls[c].sent, self.calls[c].expect) = (now, expect);
        self.input(Input::CallHead {
            call: id,
            head: head.view(),
        });
        if let Some(b) = body {
            for chunk in b.chunks(97) {
                self.input(Input::CallBody { call: id, chunk });
            }
            self.input(Input::CallBodyEnd { call: id });
        }
        let sent = self.calls[c].dispatched;
        let want = expect.map(|t| (t, now));
        ensure!(self, sent == want, "{id:?} went to {sent:?}");
        let away = self.left.get(&self.calls[c].agent);
        if expect.is_none() && away.is_some_and(|at| at + GRACE > now) {
            self.calls[c].held = true;
            let agent = self.calls[c].agent;
            self.held.entry(agent).or_default().push(c);
        }
        if let Some(after) = self.calls[c].hangup {
            self.q.push(now + after, Ev::Hangup(c));
        }
    }

    fn outputs(&mut self, out: Vec<Output>) {
        let now = self.now();
        for o in out {
            match &o {
                Output::Upgrade { tunnel, .. } => {
                    let Some((client, mode)) = self.connecting.take() else {
                        self.fail("an upgrade nobody asked for")
                    };
                    let conn = Conn {
                        client,
                        mode,
                        opened: now,
                        ..Conn::default()
                    };
                    self.conns.insert(*tunnel, conn);
                    self.clients[client].conn = Some(*tunnel);
                }
                Output::SendFrame { tunnel, text } => {
                    let f = ServerFrame::parse(text).unwrap_or_else(|| self.fail(text));
                    if let ServerFrame::Request { path, .. } = &f {
                        let c = path[2..].parse::<usize>().expect("our paths") - 1;
                        self.calls[c].dispatched = Some((*tunnel, now));
                        self.d.frame(*tunnel, text);
                    }
                    let at = now + self.latency();
                    let conn = self.conns.get_mut(tunnel).expect("a known socket");
                    conn.to_client = conn.to_client.max(at);
                    let at = conn.to_client;
                    self.q.push(at, Ev::ToClient(*tunnel, f, text.len() as u64));
                }
                Output::CloseTunnel {
                    tunnel,
                    code,
                    reason,
                } => self.closed(*tunnel, *code, reason),
                Output::Authenticated { tunnel } => {
                    ensure!(
                        self,
                        self.conns.contains_key(tunnel),
                        "authenticated {tunnel:?}"
                    );
                }
                Output::Event(_) => {}
                Output::ShutdownComplete => self.fail("nobody asked to shut down"),
                _ => {
                    let Some((Scope::Call(c), line)) = self.d.describe(&o) else {
                        self.fail(o)
                    };
                    ensure!(self, c < CONNECT, "a connection got {line}");
                    self.calls[c as usize - 1].got.push(line);
                    if let Output::WriteChunk { call, data } = o {
                        let bytes = data.len() as u64;
                        self.input(Input::CallDrained { call, bytes });
                    }
                }
            }
        }
    }

    /// The relay closed `t`: only ever for a reason the simulation caused.
    fn closed(&mut self, t: TunnelId, code: u16, reason: &'static str) {
        let (conn, now) = (&self.conns[&t], self.now());
        let pings = self.cfg.max_missed_pings as u64 + 1;
        let expected = match (code, reason) {
            (4001, "auth_timeout") => {
                let due = conn.opened + ms(self.cfg.auth_timeout);
                conn.mode == Mode::MuteHandshake && now == due
            }
            (1000, "keepalive timeout") => {
                let ping = ms(self.cfg.ping_interval);
                let due = conn.authed.map(|at| at + pings * ping);
                conn.mode == Mode::MutePings && due == Some(now)
            }
            (1000, "superseded") => self.authing == Some(conn.client),
            _ => false,
        };
        ensure!(self, expected, "{t:?} closed {code} {reason}: {conn:?}");
        self.tally(reason);
        if reason == "superseded" {
            if let Some(conn) = self.conns.get_mut(&t) {
                conn.superseded = conn.lost.is_none();
            }
        }
        self.lose(t);
        let at = now + self.latency();
        self.q.push(at, Ev::Closed(t));
    }

    fn lose(&mut self, t: TunnelId) {
        let (step, conn) = (self.step, self.conns.get_mut(&t).expect("a known socket"));
        conn.lost.get_or_insert(step);
        let now = self.now();
        let gone: Vec<usize> = (self.mirror.iter())
            .filter(|(_, on)| **on == t)
            .map(|(a, _)| *a)
            .collect();
        for a in gone {
            self.mirror.remove(&a);
            self.left.insert(a, now);
        }
    }
}

#[test]
fn seeded_simulations_match_expectations() {
    let agent = |n| {
        let key = key(n);
        let (address, lower, host) = (key.address(), lower(&key), host_of(&key));
        Agent {
            key,
            address,
            lower,
            host,
        }
    };
    let agents: Vec<Agent> = (1..=CLIENTS as u64 * 3 + GHOSTS as u64)
        .map(agent)
        .collect();
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED is a number")],
        Err(_) => (1..=SEEDS).collect(),
    };
    for seed in seeds {
        let mut sim = Sim::new(seed, &agents);
        sim.plan();
        sim.run(LAST_CALL_MS + 30_000);
        sim.finish();
        eprintln!("seed {seed}: {:?}", sim.count);
    }
}
