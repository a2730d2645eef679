use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts its wake-ups.
struct Count(AtomicUsize);

impl std::task::Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counter() -> (Arc<Count>, Waker) {
    let c = Arc::new(Count(AtomicUsize::new(0)));
    (c.clone(), Waker::from(c))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn deadlines_fire_in_their_tick_never_early_and_cancelled_ones_never() {
    let t0 = Instant::now();
    let mut w = Wheel::new(t0);
    let mut wake = Vec::new();
    let (fired, waker) = counter();
    let (cancelled, other) = counter();
    let a = w.insert(t0 + ms(20), waker.clone());
    let b = w.insert(t0 + ms(20), other);
    // Beyond one turn of the wheel: it shares a bucket with earlier ticks.
    let far = TICK * SLOTS as u32 + ms(20);
    let c = w.insert(t0 + far, waker);
    w.remove(b);
    assert_eq!(w.pending, 2);
    w.advance(t0 + ms(19), &mut wake);
    assert!(wake.is_empty(), "not before its deadline");
    w.advance(t0 + ms(20) + TICK, &mut wake);
    assert_eq!(wake.len(), 1);
    wake.drain(..).for_each(Waker::wake);
    assert_eq!(fired.0.load(Ordering::SeqCst), 1);
    assert!(w.entries[a as usize].fired);
    assert!(
        !w.entries[c as usize].fired,
        "a later turn's deadline waits"
    );
    assert!(w.next_tick() > w.done, "the next look is ahead");
    w.advance(t0 + far - ms(1), &mut wake);
    assert!(wake.is_empty());
    w.advance(t0 + far + TICK, &mut wake);
    assert_eq!(wake.len(), 1);
    assert_eq!(w.pending, 0);
    assert_eq!(w.next_tick(), u64::MAX);
    assert_eq!(cancelled.0.load(Ordering::SeqCst), 0);
    // Freed slots are reused.
    w.remove(a);
    w.remove(c);
    let (_, waker) = counter();
    let d = w.insert(t0, waker);
    assert!(d == a || d == c);
}

#[test]
fn removing_from_the_middle_of_a_bucket_keeps_the_others() {
    let t0 = Instant::now();
    let mut w = Wheel::new(t0);
    let (count, waker) = counter();
    let ids: Vec<u32> = (0..50)
        .map(|_| w.insert(t0 + ms(40), waker.clone()))
        .collect();
    for &i in ids.iter().step_by(3) {
        w.remove(i);
    }
    let left = ids.len() - ids.iter().step_by(3).count();
    assert_eq!(w.pending, left);
    let mut wake = Vec::new();
    w.advance(t0 + ms(48), &mut wake);
    wake.drain(..).for_each(Waker::wake);
    assert_eq!(count.0.load(Ordering::SeqCst), left);
    for (n, &i) in ids.iter().enumerate() {
        assert_eq!(w.entries[i as usize].fired, n % 3 != 0, "entry {n}");
    }
}

#[test]
fn a_past_deadline_fires_on_the_next_tick() {
    let t0 = Instant::now();
    let mut w = Wheel::new(t0);
    let mut wake = Vec::new();
    w.advance(t0 + ms(100), &mut wake);
    let (_, waker) = counter();
    let i = w.insert(t0, waker);
    assert_eq!(w.next_tick(), w.done + 1);
    w.advance(t0 + ms(100) + TICK, &mut wake);
    assert!(w.entries[i as usize].fired);
}

#[test]
fn until_on_a_driven_wheel_times_out_and_lets_ready_work_through() {
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(async {
        ex.spawn(run()).detach();
        smol::future::yield_now().await;
        let start = Instant::now();
        let r = until(start + ms(30), smol::future::pending::<()>()).await;
        assert_eq!(r, None);
        assert!(start.elapsed() >= ms(30), "never early");
        let quick = until(Instant::now() + ms(30), async { 7 }).await;
        assert_eq!(quick, Some(7));
        // Many waits at once, half of them answered first.
        let waits = (0..200u64).map(|i| {
            let at = Instant::now() + ms(5 + i % 20);
            ex.spawn(async move {
                let work = async_io::Timer::after(ms(if i % 2 == 0 { 1 } else { 500 }));
                (i, until(at, work).await.is_some(), Instant::now() >= at)
            })
        });
        for t in waits.collect::<Vec<_>>() {
            let (i, answered, past) = t.await;
            assert_eq!(answered, i % 2 == 0, "wait {i}");
            assert!(answered || past, "wait {i} timed out early");
        }
        WHEEL.with(|w| assert_eq!(w.borrow().pending, 0));
    }));
}

#[test]
fn until_without_a_driver_uses_a_timer() {
    smol::block_on(async {
        let start = Instant::now();
        let r = until(start + ms(20), smol::future::pending::<()>()).await;
        assert_eq!(r, None);
        assert!(start.elapsed() >= ms(20));
    });
}

#[test]
fn a_burst_s_memory_is_given_back_once_it_is_over() {
    let t0 = Instant::now();
    let mut w = Wheel::new(t0);
    let (count, waker) = counter();
    let keep = w.insert(t0 + ms(500), waker.clone());
    let burst: Vec<u32> = (0..10_000u64)
        .map(|i| w.insert(t0 + ms(i % 200), waker.clone()))
        .collect();
    assert_eq!(w.pending, 10_001);
    for &i in burst.iter().rev().step_by(2) {
        w.remove(i);
    }
    let mut wake = Vec::new();
    w.advance(t0 + ms(300), &mut wake);
    assert_eq!(wake.len(), 5_000, "the rest fired");
    for &i in burst.iter().rev().skip(1).step_by(2) {
        w.remove(i);
    }
    assert_eq!(w.entries.len(), 1, "only the live slot is left");
    assert!(w.entries.capacity() <= 64, "{}", w.entries.capacity());
    let held: usize = w.buckets.iter().map(Vec::capacity).sum();
    assert!(held < 1_000, "bucket memory {held}");
    // The live deadline still fires, and new ones reuse the front.
    let next = w.insert(t0 + ms(400), waker);
    assert_eq!(next, 1);
    w.advance(t0 + ms(600), &mut wake);
    assert!(w.entries[keep as usize].fired && w.entries[next as usize].fired);
    drop(wake);
    assert_eq!(count.0.load(Ordering::SeqCst), 0);
}
