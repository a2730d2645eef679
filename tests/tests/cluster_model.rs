//! A proptest over the engine as one of several instances, against an
//! in-memory directory with Redis's semantics (claims, renewals,
//! compare-and-delete, look-ups) that can go down and come back, and another
//! instance that takes agents over.
//!
//! Invariants: every output passes the `Ledger` (one answer per call, nothing
//! to closed tunnels); an agent served locally is never released; the
//! directory never names another instance for an agent the engine still
//! serves after a renewal; at the end, with every tunnel closed, every
//! operation answered and every deadline passed, no key names this instance
//! (unless its release was lost while Redis was down) and all state is freed.

use osaurus_relay_engine::auth::SecretKey;
use osaurus_relay_engine::frame::{ClientFrame, ServerFrame};
use osaurus_relay_engine::{
    CallId, ClaimOutcome, ClusterConfig, DuplicatePolicy, Hop, Input, Located, Output, RemoteRoute,
    TunnelId,
};
use osaurus_relay_tests::harness::{
    auth_text, checksum, host_of, key, lower, test_config, Harness,
};
use osaurus_relay_tests::sim::Driven;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

const ME: &str = "me";
const OTHER: &str = "other";
const KEYS: usize = 4;

#[derive(Clone, Debug)]
enum Op {
    /// Opens a tunnel that authenticates with these keys.
    Open(Vec<usize>),
    AddAgent(usize, usize),
    Pong(usize),
    Close(usize),
    /// Carries out the oldest `n` directory operations.
    Process(usize),
    RedisDown,
    RedisUp,
    /// The other instance claims the agent (a newer session there).
    OtherTakes(usize),
    Call(usize, Hop),
    Reply(usize),
    Gone(usize),
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS;
    prop_oneof![
        3 => vec(0..KEYS, 1..3).prop_map(Op::Open),
        1 => (0..4usize, k.clone()).prop_map(|(t, k)| Op::AddAgent(t, k)),
        2 => (0..4usize).prop_map(Op::Pong),
        1 => (0..4usize).prop_map(Op::Close),
        5 => (1..4usize).prop_map(Op::Process),
        1 => Just(Op::RedisDown),
        1 => Just(Op::RedisUp),
        1 => k.clone().prop_map(Op::OtherTakes),
        4 => (k, prop_oneof![4 => Just(Hop::Direct), 1 => Just(Hop::Trusted), 1 => Just(Hop::Untrusted)])
            .prop_map(|(k, h)| Op::Call(k, h)),
        3 => (0..4usize).prop_map(Op::Reply),
        1 => (0..4usize).prop_map(Op::Gone),
        2 => prop_oneof![Just(100u64), Just(700), Just(3_500)].prop_map(Op::Tick),
    ]
}

/// A directory operation the engine asked for, not yet carried out.
#[derive(Debug)]
enum Pending {
    Claim(TunnelId, String, bool),
    Refresh(TunnelId, Vec<String>),
    Release(String),
    Lookup(String),
}

struct Run {
    d: Driven,
    keys: Vec<SecretKey>,
    /// Redis: agent → owner.
    redis: HashMap<String, String>,
    up: bool,
    ops: VecDeque<Pending>,
    /// Releases lost while Redis was down (their keys may stay ours).
    lost: HashSet<String>,
    tunnels: Vec<TunnelId>,
    /// Request frames not yet answered: (tunnel, id).
    requests: Vec<(TunnelId, String)>,
    calls: Vec<CallId>,
    next_call: u64,
    nonces: HashMap<TunnelId, String>,
}

fn fail(why: String) -> TestCaseError {
    TestCaseError::fail(why)
}

impl Run {
    fn new(policy: DuplicatePolicy) -> Run {
        let mut cfg = test_config();
        cfg.duplicate_policy = policy;
        cfg.cluster = Some(ClusterConfig {
            lookup_ttl: Duration::from_millis(500),
            ..ClusterConfig::new(ME, RemoteRoute::Forward)
        });
        for n in [
            &mut cfg.tunnel_connects_per_min,
            &mut cfg.max_tunnels_per_ip,
        ] {
            *n = 0;
        }
        cfg.agent_requests_per_min = 0;
        cfg.caller_requests_per_min = 0;
        cfg.control_frames_per_min = 0;
        Run {
            d: Driven::new(cfg, 7),
            keys: (1..=KEYS as u64).map(key).collect(),
            redis: HashMap::new(),
            up: true,
            ops: VecDeque::new(),
            lost: HashSet::new(),
            tunnels: Vec::new(),
            requests: Vec::new(),
            calls: Vec::new(),
            next_call: 0,
            nonces: HashMap::new(),
        }
    }

    fn call_id(&mut self) -> CallId {
        self.next_call += 1;
        CallId(self.next_call)
    }

    fn input(&mut self, i: Input<'_>) -> Result<(), TestCaseError> {
        let out = self.d.handle(i).map_err(fail)?;
        self.absorb(out)
    }

    /// Queues directory work, remembers frames, and checks that nothing
    /// served locally is released.
    fn absorb(&mut self, out: Vec<Output>) -> Result<(), TestCaseError> {
        for o in out {
            match o {
                Output::Claim {
                    tunnel,
                    agent,
                    takeover,
                } => self.ops.push_back(Pending::Claim(tunnel, agent, takeover)),
                Output::Refresh { tunnel, agents } => {
                    self.ops.push_back(Pending::Refresh(tunnel, agents))
                }
                Output::Release { agent, .. } => {
                    let addr = osaurus_relay_engine::auth::parse_address(&agent).unwrap();
                    prop_assert!(
                        self.d.relay.agent_tunnel(&addr).is_none(),
                        "released {agent} while serving it"
                    );
                    self.ops.push_back(Pending::Release(agent));
                }
                Output::Lookup { agent } => self.ops.push_back(Pending::Lookup(agent)),
                Output::Forward { instance, .. } => prop_assert_eq!(instance, OTHER),
                Output::SendFrame { tunnel, text } => match ServerFrame::parse(&text) {
                    Some(ServerFrame::Request { id, .. }) => self.requests.push((tunnel, id)),
                    Some(ServerFrame::Challenge { nonce }) => {
                        self.nonces.insert(tunnel, nonce);
                    }
                    _ => {}
                },
                Output::Upgrade { tunnel, .. } => self.tunnels.push(tunnel),
                _ => {}
            }
        }
        Ok(())
    }

    fn process_one(&mut self) -> Result<(), TestCaseError> {
        let Some(p) = self.ops.pop_front() else {
            return Ok(());
        };
        match p {
            Pending::Claim(tunnel, agent, takeover) => {
                let outcome = if !self.up {
                    ClaimOutcome::Unavailable
                } else {
                    match self.redis.get(&agent).cloned() {
                        Some(o) if o != ME && !takeover => ClaimOutcome::HeldBy(o),
                        _ => {
                            self.redis.insert(agent.clone(), ME.into());
                            ClaimOutcome::Ours
                        }
                    }
                };
                self.input(Input::Claimed {
                    tunnel,
                    agent: &agent,
                    outcome,
                })
            }
            Pending::Refresh(tunnel, agents) => {
                if !self.up {
                    return Ok(());
                }
                for agent in agents {
                    let owner = self.redis.entry(agent.clone()).or_insert_with(|| ME.into());
                    if owner != ME {
                        self.input(Input::ClaimLost {
                            tunnel,
                            agent: &agent,
                        })?;
                        let addr = osaurus_relay_engine::auth::parse_address(&agent).unwrap();
                        prop_assert_ne!(
                            self.d.relay.agent_tunnel(&addr),
                            Some(tunnel),
                            "still serving {} after another instance took it",
                            agent
                        );
                    }
                }
                Ok(())
            }
            Pending::Release(agent) => {
                if !self.up {
                    self.lost.insert(agent);
                } else if self.redis.get(&agent).map(String::as_str) == Some(ME) {
                    self.redis.remove(&agent);
                }
                Ok(())
            }
            Pending::Lookup(agent) => {
                let found = match (self.up, self.redis.get(&agent)) {
                    (false, _) => Located::Unavailable,
                    (true, None) => Located::Nobody,
                    (true, Some(o)) => Located::Owner(o.clone()),
                };
                self.input(Input::Located {
                    agent: &agent,
                    found,
                })
            }
        }
    }

    fn tunnel(&self, i: usize) -> Option<TunnelId> {
        self.tunnels.iter().rev().nth(i).copied()
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Open(ks) => {
                let call = self.call_id();
                let head = Harness::connect_head("192.0.2.1");
                self.d.ledger.head_in(call);
                self.input(Input::CallHead {
                    call,
                    head: head.view(),
                })?;
                let t = *self.tunnels.last().unwrap();
                let nonce = self.nonces[&t].clone();
                let keys: Vec<&SecretKey> = ks.iter().map(|k| &self.keys[*k]).collect();
                let text = auth_text(&keys, &nonce, self.d.now.unix_secs);
                self.input(Input::TunnelText {
                    tunnel: t,
                    text: &text,
                })
            }
            Op::AddAgent(t, k) => {
                let Some(t) = self.tunnel(*t) else {
                    return Ok(());
                };
                let ask = ClientFrame::RequestChallenge.encode();
                self.input(Input::TunnelText {
                    tunnel: t,
                    text: &ask,
                })?;
                let Some(nonce) = self.nonces.get(&t).cloned() else {
                    return Ok(());
                };
                let k = &self.keys[*k];
                let address = checksum(k);
                let ts = self.d.now.unix_secs;
                let msg = osaurus_relay_engine::auth::tunnel_message(&address, &nonce, ts);
                let signature = k.sign_message(msg.as_bytes());
                let f = ClientFrame::AddAgent {
                    address,
                    signature,
                    nonce,
                    timestamp: ts,
                };
                self.input(Input::TunnelText {
                    tunnel: t,
                    text: &f.encode(),
                })
            }
            Op::Pong(t) => {
                let Some(t) = self.tunnel(*t) else {
                    return Ok(());
                };
                let f = ClientFrame::Pong { ts: 1 }.encode();
                self.input(Input::TunnelText {
                    tunnel: t,
                    text: &f,
                })
            }
            Op::Close(t) => {
                let Some(t) = self.tunnel(*t) else {
                    return Ok(());
                };
                self.input(Input::TunnelClosed { tunnel: t })
            }
            Op::Process(n) => (0..*n).try_for_each(|_| self.process_one()),
            Op::RedisDown => {
                self.up = false;
                // A crash without persistence: every key is gone.
                self.redis.clear();
                Ok(())
            }
            Op::RedisUp => {
                self.up = true;
                Ok(())
            }
            Op::OtherTakes(k) => {
                if self.up {
                    self.redis.insert(lower(&self.keys[*k]), OTHER.into());
                }
                Ok(())
            }
            Op::Call(k, hop) => {
                let call = self.call_id();
                let mut head = Harness::head("GET", "/", &host_of(&self.keys[*k]));
                head.hop = *hop;
                self.calls.push(call);
                self.input(Input::CallHead {
                    call,
                    head: head.view(),
                })
            }
            Op::Reply(i) => {
                let Some((t, id)) = self.requests.iter().rev().nth(*i).cloned() else {
                    return Ok(());
                };
                self.requests.retain(|(_, r)| *r != id);
                let f = ClientFrame::Response {
                    id,
                    status: 200,
                    headers: Default::default(),
                    body: "ok".into(),
                };
                self.input(Input::TunnelText {
                    tunnel: t,
                    text: &f.encode(),
                })
            }
            Op::Gone(i) => {
                let Some(call) = self.calls.iter().rev().nth(*i).copied() else {
                    return Ok(());
                };
                self.input(Input::CallGone { call })
            }
            Op::Tick(ms) => {
                let end = self.d.now.mono_ms + ms;
                while let Some(at) = self.d.relay.poll_timeout().filter(|at| *at <= end) {
                    let out = self.d.timeout(at).map_err(fail)?;
                    self.absorb(out)?;
                }
                self.d.set_time(end);
                Ok(())
            }
        }
    }

    /// Closes every tunnel, carries out every operation with Redis up, lets
    /// every deadline pass, then checks what is left.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        self.up = true;
        for t in self.tunnels.clone() {
            self.input(Input::TunnelClosed { tunnel: t })?;
        }
        while !self.ops.is_empty() {
            self.process_one()?;
        }
        self.apply(&Op::Tick(60_000))?;
        while !self.ops.is_empty() {
            self.process_one()?;
        }
        let ours: BTreeSet<&String> = (self.redis.iter())
            .filter(|(a, o)| *o == ME && !self.lost.contains(*a))
            .map(|(a, _)| a)
            .collect();
        prop_assert!(ours.is_empty(), "claims left behind: {ours:?}");
        self.d.check_clean().map_err(fail)?;
        prop_assert_eq!(self.d.relay.sizes().directory, 0);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_keeps_the_directory_consistent(
        takeover in any::<bool>(),
        ops in vec(op(), 20..120),
    ) {
        let policy = if takeover { DuplicatePolicy::Takeover } else { DuplicatePolicy::Reject };
        let mut run = Run::new(policy);
        for op in &ops {
            run.apply(op)?;
        }
        run.finish()?;
    }
}
