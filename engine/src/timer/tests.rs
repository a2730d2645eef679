use super::*;
use proptest::prelude::*;

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

/// Calls set at "now plus one timeout" and cancelled out of order: the
/// lane keeps cancelled marks to a bounded share, and gives a burst's
/// memory back.
#[test]
fn cancelled_marks_stay_bounded() {
    let mut t = Timers::default();
    // One slow call at the front keeps every later mark from the front.
    t.set(1_000_000, TimerKey::Call(0));
    for i in 1..100_000u64 {
        t.set(1_000_000 + i, TimerKey::Call(i));
        t.cancel(1_000_000 + i, TimerKey::Call(i));
        assert!(t.calls.q.len() <= 2 * DEAD_SLACK + 2, "{}", t.calls.q.len());
    }
    assert_eq!(t.len(), 1);
    let cap = t.calls.q.capacity();
    assert!(cap <= 4 * DEAD_SLACK, "{cap}");
    assert_eq!(t.pop_due(u64::MAX), Some(TimerKey::Call(0)));
}

#[derive(Debug, Clone)]
enum Op {
    /// Sets the key (if unset) at `now + delay`.
    Set(u8, u64),
    /// Cancels the key's deadline, if set.
    Cancel(u8),
    /// Moves the clock on and pops everything due.
    Advance(u64),
}

fn key(k: u8) -> TimerKey {
    match k % 8 {
        0..=3 => TimerKey::Call(u64::from(k / 8)),
        4..=6 => TimerKey::Tunnel(u64::from(k / 8)),
        _ if k < 128 => TimerKey::Sweep,
        _ => TimerKey::Drain,
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // A few fixed timeouts (mostly in order) and anything else.
        4 => (any::<u8>(), prop_oneof![Just(0u64), Just(10), Just(30), 0u64..40]).prop_map(|(k, d)| Op::Set(k, d)),
        3 => any::<u8>().prop_map(Op::Cancel),
        1 => (0u64..15).prop_map(Op::Advance),
    ]
}

proptest! {
    /// Whatever the order of sets and cancels, deadlines pop exactly as
    /// from one B-tree of `(at, key)`.
    #[test]
    fn pops_as_one_ordered_set(ops in proptest::collection::vec(op(), 0..300)) {
        let (mut t, mut model) = (Timers::default(), BTreeSet::new());
        let mut armed = std::collections::HashMap::new();
        let mut now = 0;
        for op in ops {
            match op {
                Op::Set(k, d) => {
                    let k = key(k);
                    if let std::collections::hash_map::Entry::Vacant(e) = armed.entry(k) {
                        e.insert(now + d);
                        t.set(now + d, k);
                        model.insert((now + d, k));
                    }
                }
                Op::Cancel(k) => {
                    let k = key(k);
                    if let Some(at) = armed.remove(&k) {
                        t.cancel(at, k);
                        model.remove(&(at, k));
                    }
                }
                Op::Advance(d) => {
                    now += d;
                    loop {
                        let want = match model.first() {
                            Some(&(at, k)) if at <= now => Some(k),
                            _ => None,
                        };
                        prop_assert_eq!(t.pop_due(now), want);
                        let Some(k) = want else { break };
                        model.pop_first();
                        armed.remove(&k);
                    }
                }
            }
            prop_assert_eq!(t.next(), model.first().map(|&(at, _)| at));
            prop_assert_eq!(t.len(), model.len());
            prop_assert!(t.calls.q.front().is_none_or(|e| e.live));
        }
    }
}

/// A burst of calls, each cancelled in turn, leaves no burst-sized lane.
#[test]
fn a_burst_gives_its_memory_back() {
    let mut t = Timers::default();
    for i in 0..10_000u64 {
        t.set(1_000 + i, TimerKey::Call(i));
    }
    for i in 0..10_000u64 {
        t.cancel(1_000 + i, TimerKey::Call(i));
    }
    assert_eq!(t.len(), 0);
    let cap = t.calls.q.capacity();
    assert!(cap <= 4 * DEAD_SLACK, "{cap}");
}
