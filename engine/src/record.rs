//! One record per agent-host call, from its head to its last byte: what the
//! diagnostic headers need while it is in flight, and at its end one
//! [`CallDone`] for the log and the metrics (outcome, status, times and
//! bytes). Never a body, a query string or a header value.

use crate::auth::{to_lower, Address};
use crate::error::CallError;
use crate::input::CallId;
use crate::output::{Event, Output};
use crate::relay::Relay;
use crate::time::Entropy;
use core::net::IpAddr;

/// What is known about an agent-host call while it is in flight.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    /// When its head arrived (monotonic ms).
    pub start: u64,
    /// When an owner look-up began, and how long it took once answered.
    pub lookup_from: Option<u64>,
    pub lookup_ms: Option<u64>,
    /// When the request frame went to the tunnel.
    pub sent: Option<u64>,
    /// Forwarded to the owner instance: its own headers say where it ran.
    pub forwarded: bool,
    /// Its answer head went out (the diagnostic headers are on it).
    pub head_at: Option<u64>,
    pub status: Option<u16>,
    /// Request frame sent → the tunnel's answer head.
    pub host_ms: Option<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// A relay error or a replay; `None`: answered by the agent.
    pub outcome: Option<&'static str>,
    pub agent: Address,
    pub ip: IpAddr,
    /// Only when `Config::log_calls`: two strings per call otherwise saved.
    pub method: String,
    pub path: String,
}

/// A finished agent-host call, for one log line and the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallDone {
    /// `0x` + lowercase hex.
    pub agent: String,
    /// Empty unless `Config::log_calls`.
    pub method: String,
    /// Without its query string; empty unless `Config::log_calls`.
    pub path: String,
    /// The caller's IP, as the limits saw it.
    pub client_ip: IpAddr,
    /// The status sent; `None` if the caller left before any.
    pub status: Option<u16>,
    /// `ok` (the agent answered), a relay error code (`agent_offline`,
    /// `slow_consumer`...), `replayed` (a 307 `fly-replay`) or `caller_gone`.
    pub outcome: &'static str,
    /// Forwarded to the instance that holds the agent.
    pub forwarded: bool,
    /// Head in → answer head out.
    pub ttfb_ms: Option<u64>,
    /// Request frame sent to the tunnel → its answer head.
    pub host_ms: Option<u64>,
    /// Owner look-up, when one happened.
    pub lookup_ms: Option<u64>,
    /// Head in → last byte out (or the end).
    pub total_ms: u64,
    /// Request body bytes from the caller.
    pub bytes_in: u64,
    /// Response body bytes to the caller.
    pub bytes_out: u64,
}

impl<E: Entropy> Relay<E> {
    /// Starts the record of an agent-host call.
    pub(crate) fn record_call(
        &mut self,
        call: CallId,
        agent: Address,
        ip: IpAddr,
        method: &str,
        target: &str,
    ) {
        let (method, path) = if self.cfg.log_calls {
            let path = target.split('?').next().unwrap_or("");
            (method.to_string(), path.to_string())
        } else {
            (String::new(), String::new())
        };
        let r = Record {
            start: self.now.mono_ms,
            lookup_from: None,
            lookup_ms: None,
            sent: None,
            forwarded: false,
            head_at: None,
            status: None,
            host_ms: None,
            bytes_in: 0,
            bytes_out: 0,
            outcome: None,
            agent,
            ip,
            method,
            path,
        };
        self.records.insert(call, r);
    }

    pub(crate) fn record_mut(&mut self, call: CallId) -> Option<&mut Record> {
        self.records.get_mut(&call)
    }

    /// The call ends with a relay error (or a replay): its outcome.
    pub(crate) fn note_outcome(&mut self, call: CallId, outcome: &'static str) {
        if let Some(r) = self.records.get_mut(&call) {
            r.outcome.get_or_insert(outcome);
        }
    }

    /// Answers `call` with the relay's own error, counted by its code.
    pub(crate) fn refuse(&mut self, call: CallId, why: CallError) {
        self.count_error(call, why);
        self.respond(call, why.response());
    }

    pub(crate) fn count_error(&mut self, call: CallId, why: CallError) {
        self.counters.errors.add(why.code(), 1);
        self.note_outcome(call, why.code());
    }

    /// Keeps the record in step with an output the driver is about to get;
    /// the call's `CallDone` if that output ends it.
    pub(crate) fn record_output(&mut self, o: &Output) -> Option<Event> {
        let (call, bytes, ends) = match o {
            Output::WriteChunk { call, data } => (call, data.len(), false),
            Output::Respond { call, response } => (call, response.body.len(), true),
            Output::Answer { call, body_len, .. } => (call, *body_len, true),
            Output::EndStream { call } | Output::AbortStream { call } => (call, 0, true),
            _ => return None,
        };
        let r = self.records.get_mut(call)?;
        r.bytes_out += bytes as u64;
        if ends {
            if matches!(o, Output::AbortStream { .. }) {
                // Cut after its head: the cause was noted, or the agent's stream broke.
                r.outcome.get_or_insert("stream_cut");
            }
            let call = *call;
            return self.finish_record(call, None);
        }
        None
    }

    /// The call is over: the metrics, and its `CallDone` for the log.
    pub(crate) fn finish_record(
        &mut self,
        call: CallId,
        outcome: Option<&'static str>,
    ) -> Option<Event> {
        let r = self.records.remove(&call)?;
        let now = self.now.mono_ms;
        let total_ms = now.saturating_sub(r.start);
        let outcome = outcome.or(r.outcome).unwrap_or("ok");
        self.counters.calls.add_call(outcome, r.status);
        self.counters.request_bytes += r.bytes_in;
        self.counters.response_bytes += r.bytes_out;
        self.counters.call_seconds.observe_ms(total_ms);
        if let Some(ms) = r.host_ms {
            self.counters.host_seconds.observe_ms(ms);
        }
        if !self.cfg.log_calls {
            return None;
        }
        let done = CallDone {
            agent: to_lower(&r.agent),
            method: r.method,
            path: r.path,
            client_ip: r.ip,
            status: r.status,
            outcome,
            forwarded: r.forwarded,
            ttfb_ms: r.head_at.map(|at| at.saturating_sub(r.start)),
            host_ms: r.host_ms,
            lookup_ms: r.lookup_ms,
            total_ms,
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
        };
        Some(Event::CallDone(Box::new(done)))
    }
}
