//! Pieces shared by the model test and the simulation: an engine driven on a
//! virtual clock, a ledger that checks every output against the run-loop
//! invariants, an event queue ordered by virtual time, a describer that
//! renders outputs comparably, and the frames a tunnel client sends.

use crate::harness::checksum;
use osaurus_relay_engine::auth::{tunnel_message, SecretKey};
use osaurus_relay_engine::frame::AgentSig;
use osaurus_relay_engine::{CallId, Config, Input, Now, Output, Relay, SeededRng, TunnelId};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

pub use crate::describe::{by_scope, show, Answer, Describer, Scope};

/// One engine on a virtual clock; every output passes a [`Ledger`].
pub struct Driven {
    pub relay: Relay<SeededRng>,
    pub now: Now,
    pub ledger: Ledger,
}

impl Driven {
    pub fn new(cfg: Config, seed: u64) -> Self {
        let now = Now::new(0, 1_709_136_000);
        let relay = Relay::new(cfg, SeededRng::new(seed), now);
        let ledger = Ledger::default();
        Driven { relay, now, ledger }
    }

    /// Feeds one input now and returns its outputs; the ledger first learns
    /// what the input says (a head came in, a caller left, a socket closed).
    pub fn handle(&mut self, input: Input<'_>) -> Result<Vec<Output>, String> {
        match &input {
            Input::CallHead { call, .. } => self.ledger.head_in(*call),
            Input::CallGone { call } => self.ledger.gone(*call),
            Input::TunnelClosed { tunnel } => self.ledger.driver_closed(*tunnel),
            _ => {}
        }
        self.relay.handle(self.now, input);
        self.drain()
    }

    /// Moves the clock to `at` and runs the deadlines due.
    pub fn timeout(&mut self, at: u64) -> Result<Vec<Output>, String> {
        self.set_time(at);
        self.relay.handle_timeout(self.now);
        self.drain()
    }

    /// Moves the clock forward to `at` (never back).
    pub fn set_time(&mut self, at: u64) {
        self.now = self.now.advanced(at.saturating_sub(self.now.mono_ms));
    }

    fn drain(&mut self) -> Result<Vec<Output>, String> {
        let out: Vec<Output> = std::iter::from_fn(|| self.relay.poll_output()).collect();
        self.ledger.observe_all(&out)?;
        Ok(out)
    }

    /// Once every tunnel closed and every deadline passed: every call has
    /// its answer and the relay holds nothing but its periodic sweep.
    pub fn check_clean(&self) -> Result<(), String> {
        let (calls, tunnels) = (self.ledger.unanswered(), self.ledger.open_tunnels());
        let s = self.relay.sizes();
        let held = s.tunnels + s.agents + s.ip_entries + s.calls + s.req_ids;
        match calls.is_empty() && tunnels.is_empty() && held == 0 && s.timers == 1 {
            true => Ok(()),
            false => Err(format!("unanswered {calls:?}, open {tunnels:?}, {s:?}")),
        }
    }
}

impl Default for Driven {
    fn default() -> Self {
        Driven::new(crate::harness::test_config(), 1)
    }
}

/// What the driver and the engine have said about one call so far.
#[derive(Clone, Copy, Debug, Default)]
struct CallLog {
    /// The driver passed its head in.
    head_in: bool,
    /// A response head (`Respond`, `StartStream` or `Upgrade`) went out.
    head_out: bool,
    streaming: bool,
    /// `Respond`, `EndStream`, `AbortStream` or `Upgrade` went out.
    terminal: bool,
    /// The driver said the caller went away.
    gone: bool,
    /// Handed to another instance (`Forward`), and whether that was cancelled.
    forwarded: bool,
    cancelled: bool,
    /// `ForwardBodyEnd` went out.
    upload_ended: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct TunnelLog {
    relay_closed: bool,
    driver_closed: bool,
}

/// Checks, output by output, that no call is answered twice or after it
/// ended, and that no tunnel gets a frame before its upgrade or after it closed.
#[derive(Debug, Default)]
pub struct Ledger {
    calls: HashMap<CallId, CallLog>,
    tunnels: HashMap<TunnelId, TunnelLog>,
    shutdown_complete: bool,
}

impl Ledger {
    /// The driver passes `CallHead` for `call`.
    pub fn head_in(&mut self, call: CallId) {
        self.calls.entry(call).or_default().head_in = true;
    }

    /// The driver passes `CallGone` for `call`.
    pub fn gone(&mut self, call: CallId) {
        self.calls.entry(call).or_default().gone = true;
    }

    /// The driver passes `TunnelClosed` for `tunnel`.
    pub fn driver_closed(&mut self, tunnel: TunnelId) {
        if let Some(t) = self.tunnels.get_mut(&tunnel) {
            t.driver_closed = true;
        }
    }

    /// Upgraded and closed by neither side.
    pub fn tunnel_open(&self, tunnel: TunnelId) -> bool {
        self.tunnels
            .get(&tunnel)
            .is_some_and(|t| !t.relay_closed && !t.driver_closed)
    }

    pub fn open_tunnels(&self) -> Vec<TunnelId> {
        let mut v: Vec<TunnelId> = self
            .tunnels
            .keys()
            .copied()
            .filter(|t| self.tunnel_open(*t))
            .collect();
        v.sort();
        v
    }

    /// Calls whose head reached the engine and that have no terminal output,
    /// except those the driver declared gone.
    pub fn unanswered(&self) -> Vec<CallId> {
        let mut v: Vec<CallId> = self
            .calls
            .iter()
            .filter(|(_, l)| l.head_in && !l.terminal && !l.gone)
            .map(|(c, _)| *c)
            .collect();
        v.sort();
        v
    }

    /// Records one output; `Err` names the broken invariant.
    pub fn observe(&mut self, o: &Output) -> Result<(), String> {
        let call_rule = |l: &mut CallLog, head: bool, needs_stream: bool, ends: bool| {
            if !l.head_in {
                return Err("output for a call whose head never came in");
            }
            if l.gone {
                return Err("output after CallGone");
            }
            if l.terminal {
                return Err("output after the call's terminal output");
            }
            if head && l.head_out {
                return Err("second response head");
            }
            if needs_stream && !l.streaming {
                return Err("stream output without StartStream");
            }
            l.head_out |= head;
            l.terminal |= ends;
            Ok(())
        };
        let r = match o {
            Output::Respond { call, .. } | Output::Answer { call, .. } => {
                call_rule(self.entry(*call), true, false, true)
            }
            Output::StartStream { call, .. } => {
                let r = call_rule(self.entry(*call), true, false, false);
                self.entry(*call).streaming = true;
                r
            }
            Output::WriteChunk { call, .. } => call_rule(self.entry(*call), false, true, false),
            Output::EndStream { call } | Output::AbortStream { call } => {
                call_rule(self.entry(*call), false, true, true)
            }
            // The call stays the engine's: the owner's answer comes back as inputs.
            Output::Forward { call, .. } => {
                let l = self.entry(*call);
                match std::mem::replace(&mut l.forwarded, true) {
                    true => Err("forwarded twice"),
                    false => call_rule(l, false, false, false),
                }
            }
            // The rest of a body: after the Forward, before its end or a cancel.
            Output::ForwardBody { call, .. } | Output::ForwardBodyEnd { call } => {
                let end = matches!(o, Output::ForwardBodyEnd { .. });
                let l = self.entry(*call);
                if !l.forwarded {
                    Err("body for a call never forwarded")
                } else if l.cancelled || l.terminal {
                    Err("body after the forward ended")
                } else if l.upload_ended {
                    Err("body after ForwardBodyEnd")
                } else {
                    l.upload_ended = end;
                    Ok(())
                }
            }
            // Comes before the call's last answer, or after its caller left.
            Output::CancelForward { call } => {
                let l = self.entry(*call);
                if !l.forwarded {
                    Err("CancelForward of a call never forwarded")
                } else if std::mem::replace(&mut l.cancelled, true) {
                    Err("CancelForward twice")
                } else if l.terminal {
                    Err("CancelForward after the call's terminal output")
                } else {
                    Ok(())
                }
            }
            Output::Upgrade { call, tunnel } => {
                match self.tunnels.insert(*tunnel, TunnelLog::default()) {
                    Some(_) => Err("tunnel id upgraded twice"),
                    None => call_rule(self.entry(*call), true, false, true),
                }
            }
            Output::SendFrame { tunnel, .. } | Output::Authenticated { tunnel } => {
                self.tunnel_rule(*tunnel)
            }
            Output::CloseTunnel { tunnel, .. } => self.tunnel_rule(*tunnel).map(|()| {
                if let Some(t) = self.tunnels.get_mut(tunnel) {
                    t.relay_closed = true;
                }
            }),
            Output::Event(_)
            | Output::Claim { .. }
            | Output::Refresh { .. }
            | Output::Release { .. }
            | Output::Lookup { .. }
            | Output::PresenceLookup { .. } => Ok(()),
            Output::ShutdownComplete => {
                match std::mem::replace(&mut self.shutdown_complete, true) {
                    true => Err("ShutdownComplete twice"),
                    false => Ok(()),
                }
            }
        };
        r.map_err(|why| format!("{why}: {o:?}"))
    }

    pub fn observe_all(&mut self, outs: &[Output]) -> Result<(), String> {
        outs.iter().try_for_each(|o| self.observe(o))
    }

    fn entry(&mut self, call: CallId) -> &mut CallLog {
        self.calls.entry(call).or_default()
    }

    fn tunnel_rule(&self, tunnel: TunnelId) -> Result<(), &'static str> {
        match self.tunnels.get(&tunnel) {
            None => Err("frame or close for a tunnel before its upgrade"),
            Some(t) if t.relay_closed => Err("frame or close after CloseTunnel"),
            Some(t) if t.driver_closed => Err("frame or close after TunnelClosed"),
            Some(_) => Ok(()),
        }
    }
}

/// Events ordered by virtual time, ties broken by insertion order.
#[derive(Debug)]
pub struct EventQueue<E> {
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    slots: Vec<Option<E>>,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
        }
    }
}

impl<E> EventQueue<E> {
    /// Schedules `e` at `at`; returns its sequence number.
    pub fn push(&mut self, at: u64, e: E) -> u64 {
        let seq = self.slots.len() as u64;
        self.slots.push(Some(e));
        self.heap.push(Reverse((at, seq)));
        seq
    }

    pub fn next_time(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The earliest event with its time and sequence number.
    pub fn pop(&mut self) -> Option<(u64, u64, E)> {
        let Reverse((at, seq)) = self.heap.pop()?;
        let e = self.slots[seq as usize].take()?;
        Some((at, seq, e))
    }

    pub fn clear(&mut self) {
        self.heap.clear();
    }
}

/// One agent's handshake entry: `key`'s checksummed address, signed by
/// `signer` (the same key, unless forging).
pub fn agent_sig(key: &SecretKey, signer: &SecretKey, nonce: &str, ts: u64) -> AgentSig {
    let address = checksum(key);
    let signature = signer.sign_message(tunnel_message(&address, nonce, ts).as_bytes());
    AgentSig { address, signature }
}

/// Where a call the relay sent to a tunnel stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    Waiting,
    Streaming,
    #[default]
    Done,
}

/// The contract for one call the relay sent to a tunnel: what the caller
/// gets for each answer, failure and deadline. Both the model test and the
/// simulation predict the relay with it.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallModel {
    pub phase: Phase,
    /// The answer deadline while waiting, the last chunk's time while streaming.
    pub at: u64,
    /// Chunk bytes handed to the caller and not reported written.
    pub queued: u64,
}

/// A relay-made error answer as a [`Describer`] line.
pub fn error_line(status: u16, code: &str) -> String {
    format!(r#"{status} {{"error":"{code}"}}"#)
}

/// A duration in the engine's clock unit.
pub fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

impl CallModel {
    /// The request frame went out at `now`.
    pub fn sent(now: u64, cfg: &Config) -> Self {
        let at = now + ms(cfg.response_timeout);
        CallModel {
            phase: Phase::Waiting,
            at,
            queued: 0,
        }
    }

    /// When the relay gives up on the call, while it is live.
    pub fn deadline(&self, cfg: &Config) -> Option<u64> {
        match self.phase {
            Phase::Waiting => Some(self.at),
            Phase::Streaming => Some(self.at + ms(cfg.stream_idle_timeout)),
            Phase::Done => None,
        }
    }

    /// Ends the call with error `code`: JSON before any head, else a cut
    /// stream. The caller's line, if the call was live.
    pub fn fail(&mut self, code: &str) -> Option<String> {
        let line = match self.phase {
            Phase::Waiting if code == "gateway_timeout" => error_line(504, code),
            Phase::Waiting => error_line(502, code),
            Phase::Streaming => "abort".into(),
            Phase::Done => return None,
        };
        self.phase = Phase::Done;
        Some(line)
    }

    /// The deadline passed: 504 before a head, else the stream went idle.
    pub fn expire(&mut self) -> Option<String> {
        let waiting = self.phase == Phase::Waiting;
        self.fail(["stream_idle_timeout", "gateway_timeout"][waiting as usize])
    }

    /// The tunnel answered `a` at `now`: the caller's lines, and whether the
    /// relay tells the tunnel to `cancel` (a bad answer or a slow caller).
    pub fn answer(&mut self, a: &Answer, now: u64, cfg: &Config) -> (Vec<String>, bool) {
        let no_body = |s: &u16| matches!(s, 204 | 205 | 304);
        let (waiting, streaming) = (self.phase == Phase::Waiting, self.phase == Phase::Streaming);
        let line = match a {
            Answer::Response(s, _) | Answer::Start(s) if waiting && no_body(s) => format!("{s} "),
            Answer::Base64Response(s, _) if waiting && no_body(s) => format!("{s} "),
            Answer::Response(s, body) if waiting => format!("{s} {body}"),
            Answer::Base64Response(s, body) if waiting => format!("{s} {}", show(body)),
            Answer::Start(s) if waiting => {
                (self.phase, self.at, self.queued) = (Phase::Streaming, now, 0);
                return (vec![format!("start {s}")], false);
            }
            Answer::Chunk(_) | Answer::Base64Chunk(_)
                if streaming && a.chunk_len() <= cfg.max_chunk_bytes =>
            {
                let d = match a {
                    Answer::Chunk(d) => d.clone(),
                    Answer::Base64Chunk(b) => show(b),
                    _ => unreachable!(),
                };
                self.at = now;
                self.queued += a.chunk_len();
                let cap = cfg.max_stream_buffer;
                if cap != 0 && self.queued > cap {
                    return (self.fail("slow_consumer").into_iter().collect(), true);
                }
                let chunk = (!d.is_empty()).then(|| format!("chunk {d}"));
                return (chunk.into_iter().collect(), false);
            }
            Answer::End if streaming => "end".into(),
            _ => return (self.fail("bad_host_response").into_iter().collect(), true),
        };
        self.phase = Phase::Done;
        (vec![line], false)
    }
}

/// When something happened, in the order a simulation ran it: (ms, class,
/// seq). At one instant tunnel deadlines (class 0) run before call deadlines
/// (1), which run before events (2, by sequence number).
pub type Key = (u64, u8, u64);

/// What reached the relay for a call: an answer, the caller leaving, or the
/// loss of its tunnel.
#[derive(Clone, Debug)]
pub enum Fact {
    Answer(Answer),
    Gone,
    /// Its tunnel is gone; `superseded` when a newer session took its agent
    /// (the call then ends as `agent_offline`).
    Lost {
        superseded: bool,
    },
}

impl CallModel {
    /// Replays what reached the relay for a call sent at `sent`, in time
    /// order with the relay's deadlines in between: the caller's lines and
    /// how the call ended. The loss of its tunnel ends any call.
    pub fn replay(
        sent: u64,
        mut facts: Vec<(Key, Fact)>,
        cfg: &Config,
    ) -> (Vec<String>, &'static str) {
        facts.sort_by_key(|f| f.0);
        let (mut m, mut out) = (CallModel::sent(sent, cfg), Vec::new());
        for (key, fact) in facts {
            let streaming = (m.phase == Phase::Streaming) as usize;
            if m.deadline(cfg).is_some_and(|at| (at, 1, 0) < key) {
                out.extend(m.expire());
                return (out, ["gateway timeout", "stream idle timeout"][streaming]);
            }
            match fact {
                Fact::Lost { superseded } => {
                    out.extend(m.fail(["tunnel_closed", "agent_offline"][superseded as usize]));
                    return (out, ["tunnel closed", "tunnel lost mid-stream"][streaming]);
                }
                Fact::Gone => return (out, "caller gone"),
                Fact::Answer(a) => {
                    let (lines, cancel) = m.answer(&a, key.0, cfg);
                    out.extend(lines);
                    if m.phase == Phase::Done {
                        return (out, ["answered", "bad answer"][cancel as usize]);
                    }
                }
            }
        }
        (out, "open")
    }
}
