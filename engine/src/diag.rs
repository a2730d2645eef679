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

/// A call's diagnostic headers, once measured: written as header pairs or
/// straight into an answer's head.
pub(crate) struct Diag {
    lookup_ms: Option<u64>,
    /// Forwarded: only `x-relay-via` (the owner sent the rest).
    forwarded: bool,
    host_ms: Option<u64>,
    relay_ms: u64,
}

impl Diag {
    /// The `server-timing` value, written into `buf` (empty: none).
    fn timing<'b>(&self, buf: &'b mut [u8; 96]) -> &'b [u8] {
        let mut n = 0;
        let mut part = |name: &str, ms: u64| {
            let (d, i) = crate::wire::http1::digits::<10>(ms);
            let sep: &[u8] = if n == 0 { b"" } else { b", " };
            for piece in [sep, name.as_bytes(), b";dur=", &d[i..]] {
                buf[n..n + piece.len()].copy_from_slice(piece);
                n += piece.len();
            }
        };
        if let Some(ms) = self.lookup_ms {
            part("lookup", ms);
        }
        if !self.forwarded {
            if let Some(ms) = self.host_ms {
                part("host", ms);
            }
            part("relay", self.relay_ms);
        }
        &buf[..n]
    }

    /// Appends the headers as pairs.
    pub(crate) fn push(&self, cfg: &crate::Config, headers: &mut Vec<crate::http::Header>) {
        headers.reserve(3);
        if self.forwarded {
            headers.push(("x-relay-via".into(), cfg.machine.clone()));
        } else {
            headers.push(("x-relay-region".into(), cfg.region.clone()));
            headers.push(("x-relay-machine".into(), cfg.machine.clone()));
        }
        let timing = self.timing(&mut [0; 96]).to_vec();
        if !timing.is_empty() {
            // Names and digits only: always text.
            let text = String::from_utf8(timing).unwrap_or_default();
            headers.push(("server-timing".into(), text.into()));
        }
    }

    /// Writes the header lines: where the call was served as `lines` has
    /// them, then the timings.
    pub(crate) fn write(&self, lines: &DiagLines, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.forwarded {
            &lines.via
        } else {
            &lines.here
        });
        let mut buf = [0; 96];
        let timing = self.timing(&mut buf);
        if !timing.is_empty() {
            crate::wire::http1::write_field(out, b"server-timing", timing);
        }
    }
}

/// This instance's own diagnostic lines, written once: every answer of an
/// agent host carries them.
pub(crate) struct DiagLines {
    /// `x-relay-region` and `x-relay-machine`.
    here: Box<[u8]>,
    /// `x-relay-via`.
    via: Box<[u8]>,
}

impl DiagLines {
    pub(crate) fn new(cfg: &crate::Config) -> Self {
        // A value a header cannot carry is left out, as `write_head` leaves it.
        let line = |out: &mut Vec<u8>, k: &str, v: &str| {
            if crate::http::is_field_value(v) {
                crate::wire::http1::write_field(out, k.as_bytes(), v.as_bytes());
            }
        };
        let (mut here, mut via) = (Vec::new(), Vec::new());
        line(&mut here, "x-relay-region", &cfg.region);
        line(&mut here, "x-relay-machine", &cfg.machine);
        line(&mut via, "x-relay-via", &cfg.machine);
        DiagLines {
            here: here.into(),
            via: via.into(),
        }
    }
}

impl<E: Entropy> Relay<E> {
    /// The call's first answer head goes out now: its diagnostic headers
    /// (none for a call without a record, or a second head).
    pub(crate) fn diag(&mut self, call: CallId, status: u16) -> Option<Diag> {
        let now = self.now.mono_ms;
        let t = self.records.get_mut(&call)?;
        if t.head_at.is_some() {
            return None;
        }
        t.head_at = Some(now);
        t.status = Some(status);
        if !t.forwarded {
            t.host_ms = t.sent.map(|sent| now.saturating_sub(sent));
        }
        Some(Diag {
            lookup_ms: t.lookup_ms,
            forwarded: t.forwarded,
            host_ms: t.host_ms,
            relay_ms: now.saturating_sub(t.start),
        })
    }

    /// [`Relay::diag`], appended to `headers`.
    pub(crate) fn diagnose(
        &mut self,
        call: CallId,
        status: u16,
        headers: &mut Vec<crate::http::Header>,
    ) {
        if let Some(d) = self.diag(call, status) {
            d.push(&self.cfg, headers);
        }
    }
}
