//! A seat for the CPU device's first worker loop inside the CPU pool, so an op's parallel
//! kernels start on the worker itself without a thread hand-off.
//!
//! The loop never returns while the runtime lives, so it must be the outermost frame of its
//! pool thread. Sent into the pool as an ordinary job (`pool.install(serve)`, as before), it
//! could be picked up by a pool thread waiting inside a join of some op, which then never
//! finished: nh_submit hung forever (issue 17, item 1). So the seat is taken only while no op
//! runs in the pool (`CpuBackend::host_seat` holds the op gate for writing and waits for the
//! keep-warm loops to end): every pool thread is then idle in rayon's main loop, and the one
//! that picks the seat job up has nothing underneath it. rayon's `use_current_thread` would
//! also do, but it leaks the pool's registry with every runtime.

use crossbeam_channel::{bounded, Receiver, Sender};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The loop a seat runs: a device worker's receive-and-run loop.
pub type WorkerLoop = Box<dyn FnOnce() + Send>;

/// A pool thread held for a worker loop; `run` hands the loop over.
pub struct Seat {
    give: Sender<WorkerLoop>,
    done: Receiver<()>,
}

impl Seat {
    /// Takes one thread of `pool` and returns once it is held. Nothing else may run in the
    /// pool meanwhile (the caller guarantees it), so the seat is that thread's outermost job.
    pub fn take_idle(pool: &rayon::ThreadPool) -> Seat {
        let (give, take) = bounded::<WorkerLoop>(1);
        let (done_tx, done) = bounded::<()>(0);
        let (seated_tx, seated) = bounded::<()>(1);
        pool.spawn(move || {
            let _ = seated_tx.send(());
            if let Ok(serve) = take.recv() {
                // A panic must not reach rayon, which aborts the process for spawned jobs.
                if catch_unwind(AssertUnwindSafe(serve)).is_err() {
                    log::error!("the CPU device's worker loop panicked");
                }
            }
            drop(done_tx);
        });
        let _ = seated.recv();
        Seat { give, done }
    }

    /// Runs `serve` on the seated pool thread and blocks until it returns.
    pub fn run(self, serve: WorkerLoop) {
        if let Err(e) = self.give.send(serve) {
            // The seat job is gone (cannot happen while the pool lives): run the loop here.
            (e.into_inner())();
            return;
        }
        drop(self.give);
        // Disconnected once the seat job has finished the loop.
        let _ = self.done.recv();
    }
}
