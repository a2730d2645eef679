//! One ordered deadline queue for every timer of the engine.

use std::collections::BTreeSet;

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
#[derive(Debug, Default)]
pub(crate) struct Timers {
    queue: BTreeSet<(u64, TimerKey)>,
}

impl Timers {
    pub fn set(&mut self, at: u64, key: TimerKey) {
        self.queue.insert((at, key));
    }

    pub fn cancel(&mut self, at: u64, key: TimerKey) {
        self.queue.remove(&(at, key));
    }

    pub fn next(&self) -> Option<u64> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Removes and returns one deadline due at `now`, earliest first.
    pub fn pop_due(&mut self, now: u64) -> Option<TimerKey> {
        match self.queue.first() {
            Some(&(at, _)) if at <= now => self.queue.pop_first().map(|(_, k)| k),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
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
}
