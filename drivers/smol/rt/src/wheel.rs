//! Coarse deadlines for a thread's many short waits: a timing wheel that
//! one task per thread ([`run`]) drives. A keep-alive caller's wait for its
//! next request sets a deadline, and nearly always its request comes first.
//! async-io keeps every timer in one B-tree behind a lock and an op queue,
//! which cost more per request than the engine's work on it; here setting
//! a deadline is a push into a bucket, and cancelling a swap-remove.
//! Deadlines fire at most one tick ([`TICK`]) late and never early. Without
//! a running wheel on the thread, [`until`] uses an async-io timer.

use async_io::Timer;
use futures_util::FutureExt as _;
use smol::future::FutureExt as _;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The wheel's resolution: how late a deadline may fire.
pub const TICK: Duration = Duration::from_millis(8);
/// Buckets in one turn of the wheel (about 8 s); later deadlines wait
/// whole turns in their bucket.
const SLOTS: u64 = 1024;
/// Not in a bucket: fired, or free.
const NOWHERE: u32 = u32::MAX;

struct Entry {
    tick: u64,
    waker: Option<Waker>,
    /// Index in its bucket, or [`NOWHERE`].
    pos: u32,
    fired: bool,
    /// A [`Deadline`] holds this slot.
    used: bool,
}

struct Wheel {
    origin: Instant,
    entries: Vec<Entry>,
    /// Free slots, lowest first: the live ones stay at the front, so the
    /// memory of a burst (10,000 handshakes at once) is given back after it.
    free: BinaryHeap<Reverse<u32>>,
    buckets: Vec<Vec<u32>>,
    /// Every tick up to this one has fired.
    done: u64,
    /// Entries in buckets.
    pending: usize,
    /// The driver while it runs, and the tick it sleeps until.
    driver: Option<Waker>,
    armed: u64,
    running: bool,
}

thread_local! {
    static WHEEL: RefCell<Wheel> = RefCell::new(Wheel::new(Instant::now()));
}

impl Wheel {
    fn new(origin: Instant) -> Wheel {
        Wheel {
            origin,
            entries: Vec::new(),
            free: BinaryHeap::new(),
            buckets: (0..SLOTS).map(|_| Vec::new()).collect(),
            done: 0,
            pending: 0,
            driver: None,
            armed: u64::MAX,
            running: false,
        }
    }

    /// When tick `t` begins.
    fn instant(&self, t: u64) -> Instant {
        self.origin + Duration::from_nanos(t.saturating_mul(TICK.as_nanos() as u64))
    }

    /// The first tick at or after `at`.
    fn tick_of(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.origin).as_nanos();
        d.div_ceil(TICK.as_nanos()) as u64
    }

    fn insert(&mut self, at: Instant, waker: Waker) -> u32 {
        let tick = self.tick_of(at).max(self.done + 1);
        let bucket = &mut self.buckets[(tick % SLOTS) as usize];
        let entry = Entry {
            tick,
            waker: Some(waker),
            pos: bucket.len() as u32,
            fired: false,
            used: true,
        };
        // Slots past the end were cut off with the free tail.
        while self
            .free
            .peek()
            .is_some_and(|i| i.0 as usize >= self.entries.len())
        {
            self.free.pop();
        }
        let idx = match self.free.pop() {
            Some(Reverse(i)) => {
                self.entries[i as usize] = entry;
                i
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        };
        bucket.push(idx);
        self.pending += 1;
        if tick < self.armed {
            // The driver sleeps past this deadline: it re-arms.
            self.armed = tick;
            if let Some(w) = self.driver.take() {
                w.wake();
            }
        }
        idx
    }

    fn remove(&mut self, idx: u32) {
        let Some(e) = self.entries.get_mut(idx as usize) else {
            return;
        };
        if !e.used {
            return;
        }
        let (tick, pos) = (e.tick, e.pos);
        e.waker = None;
        e.pos = NOWHERE;
        e.used = false;
        if pos != NOWHERE {
            let bucket = &mut self.buckets[(tick % SLOTS) as usize];
            bucket.swap_remove(pos as usize);
            if let Some(&moved) = bucket.get(pos as usize) {
                self.entries[moved as usize].pos = pos;
            }
            self.pending -= 1;
        }
        self.free.push(Reverse(idx));
        while self.entries.last().is_some_and(|e| !e.used) {
            self.entries.pop();
        }
        let len = self.entries.len();
        if self.entries.capacity() > 64 && self.entries.capacity() > 4 * len {
            self.entries.shrink_to(2 * len);
        }
        if self.free.len() > 2 * len + 64 {
            self.free.retain(|i| (i.0 as usize) < len);
        }
    }

    /// Fires every deadline up to `now`; the wakers to call.
    fn advance(&mut self, now: Instant, wake: &mut Vec<Waker>) {
        let now_tick = now.saturating_duration_since(self.origin).as_nanos() / TICK.as_nanos();
        let now_tick = now_tick as u64;
        // A long sleep: one turn covers every bucket.
        let from = self.done.max(now_tick.saturating_sub(SLOTS));
        for t in from + 1..=now_tick {
            let b = (t % SLOTS) as usize;
            let mut i = 0;
            while let Some(&idx) = self.buckets[b].get(i) {
                let e = &mut self.entries[idx as usize];
                if e.tick > now_tick {
                    // A later turn's.
                    e.pos = i as u32;
                    i += 1;
                    continue;
                }
                e.fired = true;
                e.pos = NOWHERE;
                wake.extend(e.waker.take());
                self.buckets[b].swap_remove(i);
                self.pending -= 1;
            }
            if self.buckets[b].is_empty() && self.buckets[b].capacity() > 8 {
                // A burst's bucket: its memory back.
                self.buckets[b] = Vec::new();
            }
        }
        self.done = self.done.max(now_tick);
    }

    /// The next tick with a bucket to look at, if any deadline is pending.
    fn next_tick(&self) -> u64 {
        if self.pending == 0 {
            return u64::MAX;
        }
        (self.done + 1..=self.done + SLOTS)
            .find(|t| !self.buckets[(t % SLOTS) as usize].is_empty())
            .unwrap_or(u64::MAX)
    }
}

/// Drives this thread's wheel; spawn it once on the thread's executor.
pub async fn run() {
    struct Stop;
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = WHEEL.try_with(|w| {
                let mut w = w.borrow_mut();
                w.running = false;
                w.driver = None;
            });
        }
    }
    let _stop = Stop;
    let mut clock = Clock::new();
    // The tick `clock` is set for.
    let mut armed = u64::MAX;
    let mut wake = Vec::new();
    std::future::poll_fn(move |cx| loop {
        let (next, at) = WHEEL.with(|w| {
            let mut w = w.borrow_mut();
            w.running = true;
            w.advance(Instant::now(), &mut wake);
            w.driver = Some(cx.waker().clone());
            w.armed = w.next_tick();
            (w.armed, w.instant(w.armed))
        });
        // Woken outside the borrow: a woken task may set a deadline.
        wake.drain(..).for_each(Waker::wake);
        if next == u64::MAX {
            armed = next;
            return Poll::<()>::Pending;
        }
        if next != armed {
            armed = next;
            clock.set_at(at);
        }
        if clock.poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Fired: a clock fires once, so the next pass sets it again.
        armed = u64::MAX;
    })
    .await
}

/// What the driver sleeps on: a timerfd on Linux, else an async-io timer.
#[cfg(target_os = "linux")]
enum Clock {
    Fd(async_io::Async<std::os::fd::OwnedFd>),
    /// No timerfd (descriptors exhausted at start, say).
    Timer(Timer),
}

#[cfg(target_os = "linux")]
impl Clock {
    fn new() -> Clock {
        use rustix::time::{timerfd_create, TimerfdClockId, TimerfdFlags};
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        );
        match fd.ok().and_then(|fd| async_io::Async::new(fd).ok()) {
            Some(fd) => Clock::Fd(fd),
            None => Clock::Timer(Timer::never()),
        }
    }

    fn set_at(&mut self, at: Instant) {
        use rustix::time::{timerfd_settime, Itimerspec, TimerfdTimerFlags, Timespec};
        let fd = match self {
            Clock::Fd(fd) => fd,
            Clock::Timer(t) => return t.set_at(at),
        };
        // Relative, at least a nanosecond: zero would disarm it.
        let d = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        let value = Timespec {
            tv_sec: d.as_secs() as i64,
            tv_nsec: d.subsec_nanos().into(),
        };
        let spec = Itimerspec {
            it_interval: Timespec::default(),
            it_value: value,
        };
        if timerfd_settime(fd.get_ref(), TimerfdTimerFlags::empty(), &spec).is_err() {
            *self = Clock::Timer(Timer::at(at));
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let fd = match self {
            Clock::Fd(fd) => fd,
            Clock::Timer(t) => return Pin::new(t).poll(cx).map(|_| ()),
        };
        loop {
            if fd.poll_readable(cx).is_pending() {
                return Poll::Pending;
            }
            // Reading clears the expiry; nothing to read means a stale
            // readiness: wait again.
            let mut expirations = [0u8; 8];
            if rustix::io::read(fd.get_ref(), &mut expirations).is_ok() {
                return Poll::Ready(());
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
struct Clock(Timer);

#[cfg(not(target_os = "linux"))]
impl Clock {
    fn new() -> Clock {
        Clock(Timer::never())
    }

    fn set_at(&mut self, at: Instant) {
        self.0.set_at(at);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// A deadline on this thread's wheel.
pub struct Deadline {
    at: Instant,
    slot: Slot,
    /// Its slot is in this thread's wheel.
    _local: PhantomData<Rc<()>>,
}

enum Slot {
    Unset,
    Wheel(u32),
    Timer(Timer),
}

impl Deadline {
    pub fn at(at: Instant) -> Deadline {
        Deadline {
            at,
            slot: Slot::Unset,
            _local: PhantomData,
        }
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let at = self.at;
        if let Slot::Timer(t) = &mut self.slot {
            return Pin::new(t).poll(cx).map(|_| ());
        }
        let slot = match self.slot {
            Slot::Wheel(i) => Some(i),
            _ => None,
        };
        let state = WHEEL.with(|w| {
            let mut w = w.borrow_mut();
            if !w.running {
                // No driver on this thread (any more): a timer of async-io's.
                if let Some(i) = slot {
                    w.remove(i);
                }
                return None;
            }
            let Some(i) = slot else {
                return Some((w.insert(at, cx.waker().clone()), false));
            };
            let e = &mut w.entries[i as usize];
            match &mut e.waker {
                _ if e.fired => {}
                Some(old) if old.will_wake(cx.waker()) => {}
                waker => *waker = Some(cx.waker().clone()),
            }
            Some((i, e.fired))
        });
        match state {
            Some((_, true)) => Poll::Ready(()),
            Some((i, false)) => {
                self.slot = Slot::Wheel(i);
                Poll::Pending
            }
            None => {
                self.slot = Slot::Timer(Timer::at(at));
                self.poll(cx)
            }
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Slot::Wheel(i) = self.slot {
            let _ = WHEEL.try_with(|w| w.borrow_mut().remove(i));
        }
    }
}

/// Runs `fut` until `deadline` on this thread's wheel; `None` if the
/// deadline came first.
pub fn until<T>(
    deadline: Instant,
    fut: impl Future<Output = T>,
) -> impl Future<Output = Option<T>> {
    fut.map(Some).or(Deadline::at(deadline).map(|_| None))
}

#[cfg(test)]
mod tests;
