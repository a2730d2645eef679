//! Diagnostic headers on every answer of an agent host, relay errors and
//! 307s included: where the call was served (`x-relay-region`,
//! `x-relay-machine`, `x-relay-via` when forwarded) and how long it took
//! (`Server-Timing`), all measured on the engine's clock.

use crate::input::CallId;
use crate::relay::Relay;
use crate::time::Entropy;

/// What is known about an agent-host call's timing while it is in flight.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Timing {
    /// When its head arrived (monotonic ms).
    pub start: u64,
    /// When an owner look-up began, and how long it took once answered.
    pub lookup_from: Option<u64>,
    pub lookup_ms: Option<u64>,
    /// When the request frame went to the tunnel.
    pub sent: Option<u64>,
    /// Forwarded to the owner instance: its own headers say where it ran.
    pub forwarded: bool,
}

/// Headers the owner instance sets on a forwarded call's answer that the
/// first hop passes on.
pub(crate) fn is_owner_diag(name: &str) -> bool {
    name.eq_ignore_ascii_case("x-relay-region") || name.eq_ignore_ascii_case("x-relay-machine")
}

impl<E: Entropy> Relay<E> {
    /// Starts timing an agent-host call.
    pub(crate) fn time_call(&mut self, call: CallId) {
        let start = self.now.mono_ms;
        let t = Timing {
            start,
            ..Timing::default()
        };
        self.timing.insert(call, t);
    }

    pub(crate) fn timing_mut(&mut self, call: CallId) -> Option<&mut Timing> {
        self.timing.get_mut(&call)
    }

    /// The call's first answer head goes out now: its diagnostic headers.
    pub(crate) fn diagnose(&mut self, call: CallId, headers: &mut Vec<(String, String)>) {
        let Some(t) = self.timing.remove(&call) else {
            return;
        };
        let now = self.now.mono_ms;
        // One string, numbers written without `fmt`: this runs on every call.
        let mut timing = String::with_capacity(48);
        let mut part = |name: &str, ms: u64| {
            if !timing.is_empty() {
                timing.push_str(", ");
            }
            timing.push_str(name);
            timing.push_str(";dur=");
            push_u64(&mut timing, ms);
        };
        if let Some(ms) = t.lookup_ms {
            part("lookup", ms);
        }
        headers.reserve(3);
        if t.forwarded {
            // The owner's region, machine and timings came with its answer.
            headers.push(("x-relay-via".into(), self.cfg.machine.clone()));
        } else {
            if let Some(sent) = t.sent {
                part("host", now.saturating_sub(sent));
            }
            part("relay", now.saturating_sub(t.start));
            headers.push(("x-relay-region".into(), self.cfg.region.clone()));
            headers.push(("x-relay-machine".into(), self.cfg.machine.clone()));
        }
        if !timing.is_empty() {
            headers.push(("server-timing".into(), timing));
        }
    }

    /// The caller left: nothing will be answered.
    pub(crate) fn untime(&mut self, call: CallId) {
        self.timing.remove(&call);
    }
}

/// Appends `n` in decimal.
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[i..].iter().map(|&d| d as char));
}
