//! Keeps the CPU pool's other threads awake while ops keep coming. A rayon thread that finds
//! no work sleeps after a few dozen yields, and waking it again is a futex call on both sides:
//! with a graph of short ops (a sentence through BERT is ~100 ops of 10-100 us), that was
//! a sixth of the time on two cores. After each op the pool's other threads keep looking for
//! work (and run it: `yield_now` steals) for `WINDOW`, then sleep as before. ONNX Runtime's
//! pool spins the same way by default.

use rayon::{ThreadPool, Yield};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long after the last op the other threads stay awake, unless the policy says otherwise.
pub const WINDOW: Duration = Duration::from_micros(300);

pub struct KeepWarm {
    /// Nanoseconds since `epoch` at the last op's start or end.
    last_activity_ns: AtomicU64,
    /// Threads currently kept awake.
    awake: AtomicUsize,
    epoch: Instant,
    /// The window in nanoseconds (0: off); the policy may change it (`keep_warm`).
    window_ns: AtomicU64,
}

impl KeepWarm {
    pub fn new(window: Duration) -> Arc<KeepWarm> {
        Arc::new(KeepWarm {
            last_activity_ns: AtomicU64::new(0),
            awake: AtomicUsize::new(0),
            epoch: Instant::now(),
            window_ns: AtomicU64::new(window.as_nanos() as u64),
        })
    }

    pub fn set_window(&self, window: Duration) {
        self.window_ns.store(window.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.window_ns.load(Ordering::Relaxed))
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Marks activity and makes sure the pool's other threads are awake (called by a thread
    /// of the pool, before and after each parallel op).
    pub fn touch(self: &Arc<Self>, pool: &Arc<ThreadPool>) {
        if self.window_ns.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.last_activity_ns.store(self.now_ns(), Ordering::Relaxed);
        let others = pool.current_num_threads().saturating_sub(1);
        while self.awake.load(Ordering::Relaxed) < others {
            self.awake.fetch_add(1, Ordering::Relaxed);
            let (me, p) = (Arc::clone(self), Arc::downgrade(pool));
            pool.spawn(move || {
                if let Some(pool) = p.upgrade() {
                    me.stay_awake(&pool);
                }
                me.awake.fetch_sub(1, Ordering::Release);
            });
        }
    }

    /// Returns once no thread is kept awake any more (no new op may start meanwhile).
    pub fn wait_asleep(&self) {
        while self.awake.load(Ordering::Acquire) > 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    fn stay_awake(&self, pool: &ThreadPool) {
        loop {
            if let Some(Yield::Executed) = pool.yield_now() {
                continue;
            }
            let window = self.window_ns.load(Ordering::Relaxed);
            if self.now_ns().saturating_sub(self.last_activity_ns.load(Ordering::Relaxed)) > window {
                return;
            }
            // Offer the core to other threads between looks, as rayon's own idle loop does:
            // with many awake threads, tight stealing loops slow the thread that has the work.
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_threads_stay_awake_for_the_window_then_sleep() {
        let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap());
        let warm = KeepWarm::new(Duration::from_millis(20));
        pool.install(|| warm.touch(&pool));
        assert_eq!(warm.awake.load(Ordering::Relaxed), 2, "both other threads are kept awake");
        // Work sent to the pool meanwhile still runs (the awake threads run it).
        let sum: u64 = pool.install(|| {
            use rayon::prelude::*;
            (0..10_000u64).into_par_iter().sum()
        });
        assert_eq!(sum, 10_000 * 9_999 / 2);
        let deadline = Instant::now() + Duration::from_secs(5);
        while warm.awake.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(warm.awake.load(Ordering::Relaxed), 0, "they stop once the window passed");
    }

    #[test]
    fn a_zero_window_keeps_nothing_awake() {
        let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap());
        let warm = KeepWarm::new(Duration::ZERO);
        warm.touch(&pool);
        assert_eq!(warm.awake.load(Ordering::Relaxed), 0);
    }
}
