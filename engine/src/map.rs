//! Hash maps seeded from the driver's entropy: std's `RandomState` would read
//! OS randomness inside the engine, and per-call lookups want a faster hash.

use foldhash::fast::FixedState;
use std::collections::{HashMap, HashSet};

/// A `HashMap` with a fixed, seeded hasher; make one with [`map`].
pub type Map<K, V> = HashMap<K, V, FixedState>;
/// A `HashSet` with a fixed, seeded hasher; make one with [`set`].
pub type Set<K> = HashSet<K, FixedState>;

/// A map hashing with `seed`.
pub fn map<K, V>(seed: u64) -> Map<K, V> {
    HashMap::with_hasher(FixedState::with_seed(seed))
}

/// A set hashing with `seed`.
pub fn set<K>(seed: u64) -> Set<K> {
    HashSet::with_hasher(FixedState::with_seed(seed))
}
