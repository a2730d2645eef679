//! Token buckets for the rate limits.

use std::hash::Hash;

const SCALE: u64 = 60_000; // token units per request: refill is per minute, time in ms

/// A token bucket of `per_min` requests per minute, burst `per_min`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bucket {
    units: u64,
    last_ms: u64,
}

impl Bucket {
    pub fn full(per_min: u32, now_ms: u64) -> Self {
        Bucket {
            units: per_min as u64 * SCALE,
            last_ms: now_ms,
        }
    }

    /// Takes one token; `false` means rate limited. 0 per minute is unlimited.
    pub fn take(&mut self, per_min: u32, now_ms: u64) -> bool {
        if per_min == 0 {
            return true;
        }
        self.refill(per_min as u64, now_ms);
        if self.units >= SCALE {
            self.units -= SCALE;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, per_min: u64, now_ms: u64) {
        let cap = per_min * SCALE;
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.units = self
            .units
            .saturating_add(elapsed.saturating_mul(per_min))
            .min(cap);
        self.last_ms = now_ms.max(self.last_ms);
    }

    fn is_full(&self, per_min: u64) -> bool {
        self.units >= per_min * SCALE
    }
}

/// Buckets keyed by IP, agent or connection. Full buckets carry no
/// information, so [`RateLimiter::sweep`] drops them: memory stays bounded by
/// the keys seen within one refill period.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_min: u64,
    buckets: crate::map::Map<K, Bucket>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter of `per_min` per key per minute (0: unlimited), hashed with seed 0.
    pub fn new(per_min: u32) -> Self {
        Self::with_seed(per_min, 0)
    }

    /// Buckets hashed with `seed` (from the driver's entropy).
    pub fn with_seed(per_min: u32, seed: u64) -> Self {
        RateLimiter {
            per_min: per_min as u64,
            buckets: crate::map::map(seed),
        }
    }

    /// Takes one token; `false` means rate limited.
    pub fn check(&mut self, key: &K, now_ms: u64) -> bool {
        if self.per_min == 0 {
            return true;
        }
        let per_min = self.per_min as u32;
        let b = match self.buckets.get_mut(key) {
            Some(b) => b,
            None => self
                .buckets
                .entry(key.clone())
                .or_insert(Bucket::full(per_min, now_ms)),
        };
        b.take(per_min, now_ms)
    }

    /// Forgets every key whose bucket has refilled completely.
    pub fn sweep(&mut self, now_ms: u64) {
        let per_min = self.per_min;
        self.buckets.retain(|_, b| {
            b.refill(per_min, now_ms);
            !b.is_full(per_min)
        });
    }

    /// Keys currently holding a bucket.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// `true` when no key holds a bucket.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_per_minute() {
        let mut rl = RateLimiter::new(5);
        for _ in 0..5 {
            assert!(rl.check(&1u8, 0));
        }
        assert!(!rl.check(&1u8, 0));
        assert!(rl.check(&2u8, 0), "keys are independent");
        assert!(!rl.check(&1u8, 11_999), "one token takes 12 s at 5/min");
        assert!(rl.check(&1u8, 12_000));
        assert!(!rl.check(&1u8, 12_000));
    }

    #[test]
    fn zero_means_unlimited_and_keeps_no_state() {
        let mut rl = RateLimiter::new(0);
        for i in 0..1000u32 {
            assert!(rl.check(&i, 0));
        }
        assert!(rl.is_empty());
    }

    #[test]
    fn sweep_forgets_only_refilled_buckets() {
        let mut rl = RateLimiter::new(10);
        rl.check(&1u8, 0);
        rl.check(&2u8, 57_000);
        rl.sweep(60_000);
        assert_eq!(rl.len(), 1, "key 1 refilled after 6 s, key 2 not yet");
        rl.sweep(63_000);
        assert!(rl.is_empty());
    }

    #[test]
    fn clock_going_backwards_does_not_mint_tokens() {
        let mut rl = RateLimiter::new(1);
        assert!(rl.check(&0u8, 100_000));
        assert!(!rl.check(&0u8, 0));
        assert!(!rl.check(&0u8, 100_000));
    }
}
