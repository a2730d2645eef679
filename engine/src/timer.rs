//! One ordered deadline queue for every timer of the engine.
//!
//! Most deadlines are set at "now plus a fixed timeout" and cancelled soon
//! after (every relayed call arms its first-byte timeout and cancels it when
//! the answer comes), so they arrive in order: calls' deadlines go to the
//! back of a sorted run (the lane), where setting is a push and cancelling
//! a pop from the front, or a binary search and a mark. Every other
//! deadline, and a call's that would break the run's order, goes to a
//! B-tree. Both together pop in exactly the order one B-tree of `(at, key)`
//! would (tested against one).

use std::collections::{BTreeSet, VecDeque};

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

/// Cancelled marks the lane keeps are at most this many, or as many as its
/// live entries, whichever is more; past that it is compacted.
const DEAD_SLACK: usize = 64;

/// Each key has at most one deadline; the caller keeps it to cancel it.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// Calls' deadlines, by themselves: a tunnel's ping or the next sweep
    /// does not sit in front of the calls, which are mostly cancelled in
    /// the order they were set.
    calls: Lane,
    /// Every other deadline, and calls' that did not fit the lane's order.
    /// (Idle tunnels' deadlines take less memory in a B-tree than in a
    /// run with room to grow.)
    tree: BTreeSet<(u64, TimerKey)>,
}

/// A sorted run of deadlines.
#[derive(Debug, Default)]
struct Lane {
    /// Sorted by `(at, key)`, cancelled entries included (`live` false);
    /// never starts with a cancelled one.
    q: VecDeque<Entry>,
    /// Cancelled entries still in `q`.
    dead: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: u64,
    key: TimerKey,
    live: bool,
}

impl Lane {
    /// Appends `(at, key)` if it keeps the run in order.
    fn push(&mut self, at: u64, key: TimerKey) -> bool {
        let fits = self.q.back().is_none_or(|l| (l.at, l.key) < (at, key));
        if fits {
            self.q.push_back(Entry {
                at,
                key,
                live: true,
            });
        }
        fits
    }

    /// Cancels `(at, key)` if the run holds it.
    fn cancel(&mut self, at: u64, key: TimerKey) -> bool {
        // Answers mostly come in the order their calls went out.
        if self.q.front().is_some_and(|e| (e.at, e.key) == (at, key)) {
            self.q.pop_front();
            self.trim_front();
            self.shrink();
            return true;
        }
        let i = self.q.partition_point(|e| (e.at, e.key) < (at, key));
        match self.q.get_mut(i) {
            Some(e) if e.live && (e.at, e.key) == (at, key) => e.live = false,
            _ => return false,
        }
        self.dead += 1;
        if self.dead > DEAD_SLACK && self.dead > self.q.len() - self.dead {
            self.q.retain(|e| e.live);
            self.dead = 0;
            self.shrink();
        }
        true
    }

    /// A burst's memory goes back once the run is short again.
    fn shrink(&mut self) {
        if self.q.capacity() > 4 * self.q.len().max(DEAD_SLACK) {
            self.q.shrink_to(2 * self.q.len());
        }
    }

    /// Drops cancelled entries from the front.
    fn trim_front(&mut self) {
        while self.q.front().is_some_and(|e| !e.live) {
            self.q.pop_front();
            self.dead -= 1;
        }
    }

    fn first(&self) -> Option<(u64, TimerKey)> {
        self.q.front().map(|e| (e.at, e.key))
    }

    fn len(&self) -> usize {
        self.q.len() - self.dead
    }
}

impl Timers {
    pub fn set(&mut self, at: u64, key: TimerKey) {
        if !(matches!(key, TimerKey::Call(_)) && self.calls.push(at, key)) {
            self.tree.insert((at, key));
        }
    }

    pub fn cancel(&mut self, at: u64, key: TimerKey) {
        if !(matches!(key, TimerKey::Call(_)) && self.calls.cancel(at, key)) {
            self.tree.remove(&(at, key));
        }
    }

    /// The earliest deadline, as `(at, key)`, and whether it is the lane's.
    fn first(&self) -> Option<((u64, TimerKey), bool)> {
        match (self.calls.first(), self.tree.first()) {
            (Some(l), Some(&t)) if t < l => Some((t, false)),
            (Some(l), _) => Some((l, true)),
            (None, Some(&t)) => Some((t, false)),
            (None, None) => None,
        }
    }

    pub fn next(&self) -> Option<u64> {
        self.first().map(|((at, _), _)| at)
    }

    /// Removes and returns one deadline due at `now`, earliest first.
    pub fn pop_due(&mut self, now: u64) -> Option<TimerKey> {
        let ((at, key), in_lane) = self.first()?;
        if at > now {
            return None;
        }
        if in_lane {
            self.calls.q.pop_front();
            self.calls.trim_front();
            self.calls.shrink();
        } else {
            self.tree.pop_first();
        }
        Some(key)
    }

    pub fn len(&self) -> usize {
        self.calls.len() + self.tree.len()
    }
}

#[cfg(test)]
mod tests;
