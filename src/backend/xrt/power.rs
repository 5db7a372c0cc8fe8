//! Power changes off the caller's thread. The thermal thread asks for power modes, and a
//! power change can take long: AMD's 2026 staging driver sleeps about 3.5 s in SET_STATE when
//! it raises the level, and applying a mode as QoS re-creates the hardware contexts. A worker
//! thread applies the latest request (newer requests replace a pending one); the caller waits
//! at most `WAIT` for the outcome, so quick refusals are still returned, and a later failure is
//! logged.

use crate::device::PowerMode;
use crate::error::Result;
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long `request` waits for the outcome before returning `Ok` and leaving the change to
/// finish in the background.
pub const WAIT: Duration = Duration::from_millis(100);

type Apply = Box<dyn Fn(PowerMode) -> Result<()> + Send + Sync>;

#[derive(Default)]
struct State {
    pending: Option<(u64, PowerMode)>,
    next_id: u64,
    /// The last finished request and its outcome (taken by the requester that waited for it).
    done: Option<(u64, Result<()>)>,
    /// The request whose caller is still waiting, if any.
    waiting: Option<u64>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    finished: Condvar,
}

pub struct PowerWorker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl PowerWorker {
    pub fn start(name: &str, apply: Apply) -> PowerWorker {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            finished: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let label = name.to_string();
        let thread = std::thread::Builder::new()
            .name("nh-npu-power".into())
            .spawn(move || loop {
                let (id, mode) = {
                    let mut s = worker.state.lock();
                    loop {
                        if s.stop {
                            return;
                        }
                        if let Some(p) = s.pending.take() {
                            break p;
                        }
                        worker.wake.wait(&mut s);
                    }
                };
                let result = apply(mode);
                let mut s = worker.state.lock();
                // A failure whose caller stopped waiting can only be logged.
                if let (Err(e), false) = (&result, s.waiting == Some(id)) {
                    log::warn!("{label}: power mode {mode} not applied: {e}");
                }
                s.done = Some((id, result));
                worker.finished.notify_all();
            })
            .ok();
        PowerWorker { shared, thread }
    }

    /// Asks for `mode`; returns its outcome if it is known within `WAIT`, else `Ok`.
    pub fn request(&self, mode: PowerMode) -> Result<()> {
        let mut s = self.shared.state.lock();
        s.next_id += 1;
        let id = s.next_id;
        s.pending = Some((id, mode));
        self.shared.wake.notify_all();
        s.waiting = Some(id);
        let deadline = std::time::Instant::now() + WAIT;
        let outcome = loop {
            if s.done.as_ref().is_some_and(|(done_id, _)| *done_id == id) {
                break s.done.take().map(|(_, r)| r).unwrap_or(Ok(()));
            }
            if self.shared.finished.wait_until(&mut s, deadline).timed_out() {
                break Ok(());
            }
        };
        s.waiting = None;
        outcome
    }
}

impl Drop for PowerWorker {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::time::Instant;

    #[test]
    fn quick_outcomes_are_returned_and_slow_ones_do_not_block() {
        let w = PowerWorker::start(
            "test",
            Box::new(|mode| match mode {
                PowerMode::Turbo => Err(Error::Unsupported("no turbo".into())),
                PowerMode::Powersaver => {
                    std::thread::sleep(Duration::from_millis(600));
                    Ok(())
                }
                _ => Ok(()),
            }),
        );
        assert!(w.request(PowerMode::Default).is_ok());
        assert!(matches!(w.request(PowerMode::Turbo), Err(Error::Unsupported(_))));
        let t = Instant::now();
        assert!(w.request(PowerMode::Powersaver).is_ok(), "still applying: not an error");
        assert!(t.elapsed() < Duration::from_millis(400), "the caller is not held for the change");
        drop(w); // joins after the slow change
    }
}
