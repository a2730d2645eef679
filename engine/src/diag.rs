//! Diagnostic headers on every answer of an agent host, relay errors and
//! 307s included: where the call was served (`x-relay-region`,
//! `x-relay-machine`, `x-relay-via` when forwarded) and how long it took
//! (`Server-Timing`), all measured on the engine's clock.

use crate::input::CallId;
use crate::relay::Relay;
use crate::time::Entropy;

/// Headers the owner instance sets on a forwarded call's answer that the
/// first hop passes on.
pub(crate) fn is_owner_diag(name: &str) -> bool {
    name.eq_ignore_ascii_case("x-relay-region") || name.eq_ignore_ascii_case("x-relay-machine")
}

impl<E: Entropy> Relay<E> {
    /// The call's first answer head goes out now: its diagnostic headers.
    pub(crate) fn diagnose(
        &mut self,
        call: CallId,
        status: u16,
        headers: &mut Vec<crate::http::Header>,
    ) {
        let now = self.now.mono_ms;
        let Some(t) = self.records.get_mut(&call) else {
            return;
        };
        if t.head_at.is_some() {
            return;
        }
        t.head_at = Some(now);
        t.status = Some(status);
        if !t.forwarded {
            t.host_ms = t.sent.map(|sent| now.saturating_sub(sent));
        }
        let (lookup_ms, forwarded, host_ms, start) = (t.lookup_ms, t.forwarded, t.host_ms, t.start);
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
        if let Some(ms) = lookup_ms {
            part("lookup", ms);
        }
        headers.reserve(3);
        if forwarded {
            // The owner's region, machine and timings came with its answer.
            headers.push(("x-relay-via".into(), self.cfg.machine.clone()));
        } else {
            if let Some(ms) = host_ms {
                part("host", ms);
            }
            part("relay", now.saturating_sub(start));
            headers.push(("x-relay-region".into(), self.cfg.region.clone()));
            headers.push(("x-relay-machine".into(), self.cfg.machine.clone()));
        }
        if !timing.is_empty() {
            headers.push(("server-timing".into(), timing.into()));
        }
    }
}

/// Appends `n` in decimal.
fn push_u64(out: &mut String, n: u64) {
    let (d, i) = crate::wire::http1::digits::<10>(n);
    out.extend(d[i..].iter().map(|&c| c as char));
}
