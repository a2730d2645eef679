//! One ordered deadline queue for every timer of the engine.

use crate::map::{map, Map};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What a deadline belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum TimerKey {
    /// Auth timeout before auth, ping interval after.
    Tunnel(u64),
    /// First-byte timeout, then stream idle timeout.
    Call(u64),
    /// Periodic rate-limiter sweep.
    Sweep,
    /// End of the shutdown drain window.
    Drain,
}

/// Each key has at most one deadline; the caller keeps it to cancel it.
/// A heap with lazy deletion: nearly every call's deadline is set and then
/// cancelled by its answer, and a cancel here is one hash-map removal
/// (a B-tree insert and remove, and a node allocation, cost several times
/// that). The heap's top is always live; stale entries below it are
/// dropped when they surface or when they outnumber the live ones.
#[derive(Debug)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(u64, TimerKey)>>,
    /// Each armed key's deadline.
    live: Map<TimerKey, u64>,
}

impl Default for Timers {
    fn default() -> Self {
        // The keys are the engine's own ids, not a caller's: a fixed seed.
        Timers {
            heap: BinaryHeap::new(),
            live: map(0x7469_6d65_7273),
        }
    }
}

impl Timers {
    pub fn set(&mut self, at: u64, key: TimerKey) {
        self.live.insert(key, at);
        self.heap.push(Reverse((at, key)));
        self.settle();
    }

    pub fn cancel(&mut self, at: u64, key: TimerKey) {
        if self.live.get(&key) == Some(&at) {
            self.live.remove(&key);
            self.settle();
        }
    }

    pub fn next(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns one deadline due at `now`, earliest first.
    pub fn pop_due(&mut self, now: u64) -> Option<TimerKey> {
        match self.heap.peek() {
            Some(&Reverse((at, key))) if at <= now => {
                self.heap.pop();
                self.live.remove(&key);
                self.settle();
                Some(key)
            }
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    fn is_live(live: &Map<TimerKey, u64>, at: u64, key: &TimerKey) -> bool {
        live.get(key) == Some(&at)
    }

    /// Drops stale entries from the top, and all of them once they are most
    /// of the heap (amortised: each was pushed once).
    fn settle(&mut self) {
        if self.heap.len() > 2 * self.live.len() + 64 {
            let live = &self.live;
            self.heap
                .retain(|Reverse((at, key))| Self::is_live(live, *at, key));
        }
        while let Some(Reverse((at, key))) = self.heap.peek() {
            if Self::is_live(&self.live, *at, key) {
                break;
            }
            self.heap.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_and_cancels() {
        let mut t = Timers::default();
        t.set(30, TimerKey::Call(1));
        t.set(10, TimerKey::Tunnel(1));
        t.set(20, TimerKey::Call(2));
        t.cancel(20, TimerKey::Call(2));
        assert_eq!(t.next(), Some(10));
        assert_eq!(t.pop_due(9), None);
        assert_eq!(t.pop_due(30), Some(TimerKey::Tunnel(1)));
        assert_eq!(t.pop_due(30), Some(TimerKey::Call(1)));
        assert_eq!(t.pop_due(30), None);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_reset_deadline_replaces_the_old_one_and_stale_entries_stay_bounded() {
        let mut t = Timers::default();
        t.set(10, TimerKey::Call(1));
        t.set(50, TimerKey::Call(1));
        assert_eq!(t.next(), Some(50), "the old deadline is gone");
        assert_eq!(t.pop_due(49), None);
        for i in 0..10_000u64 {
            t.set(100 + i, TimerKey::Call(2 + i));
            t.cancel(100 + i, TimerKey::Call(2 + i));
            // A cancel naming another deadline leaves the timer armed.
            t.cancel(99, TimerKey::Call(1));
        }
        assert!(t.heap.len() <= 2 * t.len() + 65, "{} entries", t.heap.len());
        assert_eq!(t.len(), 1);
        assert_eq!(t.pop_due(1_000_000), Some(TimerKey::Call(1)));
        assert_eq!(t.pop_due(1_000_000), None);
        assert_eq!(t.next(), None);
    }
}
