//! The engine's clock input: monotonic milliseconds since start for timers,
//! Unix seconds for signed timestamps.

use osaurus_relay_engine::Now;
use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The wall clock is read again at most this often (monotonic ms).
const WALL_EVERY_MS: u64 = 100;

/// One process's clock, as the engine sees it.
pub struct Clock {
    origin: Instant,
    /// The wall clock as last read (monotonic ms, unix seconds).
    wall: Cell<(u64, u64)>,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock whose millisecond 0 is now.
    pub fn new() -> Self {
        Clock {
            origin: Instant::now(),
            wall: Cell::new((0, unix_now())),
        }
    }

    /// The current time; the wall clock is read every 100 ms, not on every call.
    pub fn now(&self) -> Now {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (read_at, mut unix) = self.wall.get();
        if ms.saturating_sub(read_at) >= WALL_EVERY_MS {
            unix = unix_now();
            self.wall.set((ms, unix));
        }
        Now::new(ms, unix)
    }

    /// The instant of engine time `ms` (for a timer at an engine deadline).
    pub fn instant(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
