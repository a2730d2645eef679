//! The clock and randomness the driver hands in: the engine owns neither.

/// The current time as the driver saw it when an event happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds since an arbitrary driver-chosen origin: every timer.
    pub mono_ms: u64,
    /// Wall-clock Unix seconds: the auth timestamp window and ping `ts`.
    pub unix_secs: u64,
}

impl Now {
    /// Both clocks as read at the same moment.
    pub fn new(mono_ms: u64, unix_secs: u64) -> Self {
        Now { mono_ms, unix_secs }
    }

    /// This instant moved forward by `ms` milliseconds, on both clocks.
    pub fn advanced(self, ms: u64) -> Self {
        let mono_ms = self.mono_ms.saturating_add(ms);
        let unix_secs = self.unix_secs + (self.mono_ms % 1000 + ms) / 1000;
        Now { mono_ms, unix_secs }
    }
}

/// A source of random bytes (nonces, request ids). The driver passes the OS's;
/// tests and fuzzers pass [`SeededRng`] so every run replays from its seed.
pub trait Entropy {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

/// A small deterministic generator (SplitMix64). Not for production secrets.
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator that replays the same sequence for the same `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (n > 0); slight modulo bias is fine for simulations.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

impl Entropy for SeededRng {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

impl<E: Entropy + ?Sized> Entropy for &mut E {
    fn fill(&mut self, buf: &mut [u8]) {
        (**self).fill(buf)
    }
}

/// `n` random bytes as lowercase hex.
pub fn random_hex<E: Entropy + ?Sized>(rng: &mut E, n: usize) -> String {
    let mut out = String::with_capacity(2 * n);
    push_random_hex(rng, n, &mut out);
    out
}

/// Appends `n` random bytes as lowercase hex, without allocating on the way.
pub(crate) fn push_random_hex<E: Entropy + ?Sized>(rng: &mut E, n: usize, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (mut left, mut bytes, mut text) = (n, [0u8; 32], [0u8; 64]);
    out.reserve(2 * n);
    while left > 0 {
        let k = left.min(32);
        rng.fill(&mut bytes[..k]);
        // Every call's id is made here: written as bytes, added as text once.
        for (pair, &b) in text.chunks_exact_mut(2).zip(&bytes[..k]) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 15)];
        }
        out.push_str(std::str::from_utf8(&text[..2 * k]).unwrap_or_default());
        left -= k;
    }
}

/// A duration in whole milliseconds, as the engine's clock counts.
pub(crate) fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (proleptic Gregorian calendar).
pub fn iso8601(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Howard Hinnant's days-to-civil, shifted so the era starts in March.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (secs / 3_600, secs / 60 % 60, secs % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_iso8601_in_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_709_136_000), "2024-02-28T16:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn advanced_carries_wall_seconds() {
        let t = Now::new(1_500, 100).advanced(700);
        assert_eq!(t, Now::new(2_200, 101));
        assert_eq!(Now::new(0, 5).advanced(999).unix_secs, 5);
    }

    #[test]
    fn seeded_rng_replays_and_fills_odd_lengths() {
        let (mut a, mut b) = (SeededRng::new(7), SeededRng::new(7));
        let (mut x, mut y) = ([0u8; 13], [0u8; 13]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert_ne!(x, [0u8; 13]);
        assert_eq!(random_hex(&mut SeededRng::new(1), 32).len(), 64);
    }

    #[test]
    fn random_hex_is_the_bytes_in_lowercase_hex() {
        for n in [0, 1, 8, 32, 33, 70] {
            let mut bytes = vec![0; n];
            SeededRng::new(3).fill(&mut bytes);
            let mut out = String::from("req_");
            push_random_hex(&mut SeededRng::new(3), n, &mut out);
            assert_eq!(out, format!("req_{}", hex::encode(&bytes)), "{n}");
        }
    }
}
