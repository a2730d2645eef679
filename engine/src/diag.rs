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
    /// Each header, in order, with `server-timing` written into `timing`.
    fn each(
        &self,
        cfg: &crate::Config,
        timing: &mut [u8; 96],
        mut f: impl FnMut(&'static str, &[u8]),
    ) {
        if self.forwarded {
            f("x-relay-via", cfg.machine.as_bytes());
        } else {
            f("x-relay-region", cfg.region.as_bytes());
            f("x-relay-machine", cfg.machine.as_bytes());
        }
        let mut n = 0;
        let mut part = |name: &str, ms: u64| {
            let (d, i) = crate::wire::http1::digits::<10>(ms);
            let sep: &[u8] = if n == 0 { b"" } else { b", " };
            for piece in [sep, name.as_bytes(), b";dur=", &d[i..]] {
                timing[n..n + piece.len()].copy_from_slice(piece);
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
        if n > 0 {
            f("server-timing", &timing[..n]);
        }
    }

    /// Appends the headers as pairs.
    pub(crate) fn push(&self, cfg: &crate::Config, headers: &mut Vec<crate::http::Header>) {
        headers.reserve(3);
        let mut timing = [0; 96];
        self.each(cfg, &mut timing, |k, v| {
            let v = match k {
                "x-relay-via" | "x-relay-machine" => cfg.machine.clone(),
                "x-relay-region" => cfg.region.clone(),
                // Names and digits only: always text.
                _ => String::from_utf8_lossy(v).into_owned().into(),
            };
            headers.push((std::borrow::Cow::Borrowed(k), v));
        });
    }

    /// Writes the header lines.
    pub(crate) fn write(&self, cfg: &crate::Config, out: &mut Vec<u8>) {
        let mut timing = [0; 96];
        self.each(cfg, &mut timing, |k, v| {
            crate::wire::http1::write_field(out, k.as_bytes(), v)
        });
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
