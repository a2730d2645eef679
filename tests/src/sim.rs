//! Pieces shared by the model test and the simulation: an engine driven on a
//! virtual clock, a ledger that checks every output against the run-loop
//! invariants, an event queue ordered by virtual time, a describer that
//! renders outputs comparably, and the frames a tunnel client sends.

use crate::harness::checksum;
use osaurus_relay_engine::auth::{tunnel_message, SecretKey};
use osaurus_relay_engine::frame::{AgentSig, Body, ChunkData, ClientFrame, Headers, ServerFrame};
use osaurus_relay_engine::{CallId, Config, Input, Now, Output, Relay, SeededRng, TunnelId};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

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
            Output::Respond { call, .. } => call_rule(self.entry(*call), true, false, true),
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
            | Output::Lookup { .. } => Ok(()),
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

/// Whom an output concerns. Outputs are compared per call and per tunnel:
/// in order within each, in any order across them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Call(u64),
    Tunnel(u64),
    Relay,
}

/// Sorts by scope, keeping the order within each scope.
pub fn by_scope(mut v: Vec<(Scope, String)>) -> Vec<(Scope, String)> {
    v.sort_by_key(|(s, _)| *s);
    v
}

/// Renders outputs as short lines with their random parts resolved: request
/// ids become the call number of the request path `/c<n>`, addresses become
/// their names in `names`, and challenge nonces are set aside in `challenges`.
#[derive(Debug, Default)]
pub struct Describer {
    pub names: HashMap<String, String>,
    pub req_call: HashMap<String, u64>,
    pub call_req: HashMap<u64, String>,
    pub challenges: Vec<(TunnelId, String)>,
}

impl Describer {
    pub fn describe(&mut self, o: &Output) -> Option<(Scope, String)> {
        let text = |b: &[u8]| show(b);
        let call = |c: &CallId| Scope::Call(c.0);
        Some(match o {
            Output::Respond { call: c, response } => {
                let (status, body) = (response.status, text(&response.body));
                (call(c), format!("{status} {body}"))
            }
            Output::StartStream { call: c, head } => (call(c), format!("start {}", head.status)),
            Output::WriteChunk { call: c, data } => (call(c), format!("chunk {}", text(data))),
            Output::EndStream { call: c } => (call(c), "end".into()),
            Output::AbortStream { call: c } => (call(c), "abort".into()),
            Output::Upgrade { call: c, tunnel } => {
                (Scope::Tunnel(tunnel.0), format!("upgrade c{}", c.0))
            }
            Output::SendFrame { tunnel, text } => {
                (Scope::Tunnel(tunnel.0), self.frame(*tunnel, text))
            }
            Output::CloseTunnel {
                tunnel,
                code,
                reason,
            } => (Scope::Tunnel(tunnel.0), format!("close {code} {reason}")),
            Output::ShutdownComplete => (Scope::Relay, "shutdown complete".into()),
            Output::Forward {
                call: c, instance, ..
            } => (call(c), format!("forward to {instance}")),
            Output::CancelForward { call: c } => (call(c), "cancel forward".into()),
            Output::Claim { .. }
            | Output::Refresh { .. }
            | Output::Release { .. }
            | Output::Lookup { .. }
            | Output::Authenticated { .. }
            | Output::Event(_) => return None,
        })
    }

    pub fn frame(&mut self, tunnel: TunnelId, text: &str) -> String {
        let Some(f) = ServerFrame::parse(text) else {
            return format!("unparsable {text}");
        };
        let name = |a: &str| self.names.get(a).cloned().unwrap_or_else(|| a.to_string());
        match f {
            ServerFrame::Challenge { nonce } => {
                self.challenges.push((tunnel, nonce));
                "challenge".into()
            }
            ServerFrame::AuthOk {
                agents, rejected, ..
            } => {
                let ok: Vec<String> = agents.iter().map(|a| name(&a.address)).collect();
                let no: Vec<String> = rejected.iter().map(|r| name(&r.address)).collect();
                format!("auth_ok [{}] rejected [{}]", ok.join(" "), no.join(" "))
            }
            ServerFrame::AuthError { error } => format!("auth_error {error}"),
            ServerFrame::AgentAdded { address, .. } => format!("agent_added {}", name(&address)),
            ServerFrame::AgentRemoved { address, reason } => {
                let why = reason.as_deref().unwrap_or("-");
                format!("agent_removed {} {why}", name(&address))
            }
            ServerFrame::Request { id, path, body, .. } => {
                let call = path.strip_prefix("/c").and_then(|n| n.parse().ok());
                let call = call.unwrap_or(u64::MAX);
                self.req_call.insert(id.clone(), call);
                self.call_req.insert(call, id);
                let enc = if matches!(body, Body::Binary(_)) {
                    " base64"
                } else {
                    ""
                };
                format!("request c{call} {}{enc}", body.len())
            }
            ServerFrame::Ping { .. } => "ping".into(),
            ServerFrame::Error { error } => format!("error {error}"),
            ServerFrame::Cancel { id } => match self.req_call.get(&id) {
                Some(c) => format!("cancel c{c}"),
                None => format!("cancel {id}"),
            },
        }
    }
}

/// A tunnel client's answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Response(u16, String),
    /// A `response` whose status is not an integer in range.
    BadStatus,
    /// A `response` with a header name that is not a token.
    BadHeader,
    Start(u16),
    Chunk(String),
    End,
    /// A `response` whose body travels as base64 (`bodyEncoding`).
    Base64Response(u16, Vec<u8>),
    /// A `stream_chunk` whose data travels as base64.
    Base64Chunk(Vec<u8>),
    /// A `response` marked base64 whose body is not.
    BadBase64,
    /// A `stream_chunk` marked base64 whose data is not.
    BadBase64Chunk,
}

/// Bytes as the simulations write them: text when UTF-8, else hex, so a
/// binary body compares byte for byte.
pub fn show(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(t) => t.to_string(),
        Err(_) => format!("hex:{}", hex(b)),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Answer {
    /// Bytes a chunk carries to the caller.
    pub fn chunk_len(&self) -> u64 {
        match self {
            Answer::Chunk(d) => d.len() as u64,
            Answer::Base64Chunk(b) => b.len() as u64,
            _ => 0,
        }
    }

    /// The frame answering request `id` this way.
    pub fn frame(&self, id: &str) -> String {
        let id = id.to_string();
        let headers = |name: &str| Headers(vec![(name.into(), "text/plain".into())]);
        let frame = match self.clone() {
            Answer::Response(status, body) => {
                let headers = headers("content-type");
                ClientFrame::Response {
                    id,
                    status,
                    headers,
                    body: body.into(),
                }
            }
            Answer::BadHeader => {
                let (headers, body) = (headers("bad name"), String::new());
                ClientFrame::Response {
                    id,
                    status: 200,
                    headers,
                    body: body.into(),
                }
            }
            Answer::BadStatus => {
                return format!(r#"{{"type":"response","id":"{id}","status":0,"headers":{{}}}}"#)
            }
            Answer::Start(status) => {
                let headers = headers("content-type");
                ClientFrame::StreamStart {
                    id,
                    status,
                    headers,
                }
            }
            Answer::Chunk(data) => ClientFrame::StreamChunk {
                id,
                data: data.into(),
            },
            Answer::End => ClientFrame::StreamEnd { id },
            Answer::Base64Response(status, bytes) => ClientFrame::Response {
                id,
                status,
                headers: headers("content-type"),
                body: Body::Binary(bytes),
            },
            Answer::Base64Chunk(bytes) => ClientFrame::StreamChunk {
                id,
                data: ChunkData(Body::Binary(bytes)),
            },
            Answer::BadBase64 => {
                return format!(
                    r#"{{"type":"response","id":"{id}","status":200,"headers":{{}},"body":"a=b","bodyEncoding":"base64"}}"#
                )
            }
            Answer::BadBase64Chunk => {
                return format!(
                    r#"{{"type":"stream_chunk","id":"{id}","data":"é","bodyEncoding":"base64"}}"#
                )
            }
        };
        frame.encode()
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
