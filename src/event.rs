//! Completion events. An event completes once its op succeeded somewhere or every candidate
//! failed; a joined event (split op, graph) completes when all of its parts have.

use crate::error::{Error, Result};
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What happened to an op, readable once its event completed.
#[derive(Clone, Debug, Default)]
pub struct EventInfo {
    /// Index of the device that ran the op (the last part's device for a split op).
    pub device: Option<usize>,
    /// Bit set of every device that ran a part.
    pub devices_mask: u64,
    pub submitted: Option<Instant>,
    pub started: Option<Instant>,
    pub finished: Option<Instant>,
    /// Time the device measured itself, summed over parts.
    pub device_ns: u64,
    pub fallbacks: u32,
    pub parts: u32,
}

impl EventInfo {
    /// Wall time from the start of the first part to the end of the last.
    pub fn run_ns(&self) -> u64 {
        match (self.started, self.finished) {
            (Some(s), Some(f)) => f.saturating_duration_since(s).as_nanos() as u64,
            _ => 0,
        }
    }

    pub fn queue_ns(&self) -> u64 {
        match (self.submitted, self.started) {
            (Some(q), Some(s)) => s.saturating_duration_since(q).as_nanos() as u64,
            _ => 0,
        }
    }
}

struct State {
    remaining: u32,
    error: Option<Error>,
    info: EventInfo,
}

struct Inner {
    state: Mutex<State>,
    done: Condvar,
    parent: Option<Event>,
}

/// A shareable completion event.
#[derive(Clone)]
pub struct Event(Arc<Inner>);

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.0.state.lock();
        f.debug_struct("Event").field("remaining", &st.remaining).field("error", &st.error).finish()
    }
}

impl Event {
    /// An event that completes after `parts` completions (1 for a plain op).
    pub fn new(parts: u32) -> Event {
        Event::with_parent(parts, None)
    }

    /// An event whose completion also counts as one part of `parent`.
    pub fn with_parent(parts: u32, parent: Option<Event>) -> Event {
        let info = EventInfo { submitted: Some(Instant::now()), parts, ..Default::default() };
        Event(Arc::new(Inner {
            state: Mutex::new(State { remaining: parts, error: None, info }),
            done: Condvar::new(),
            parent,
        }))
    }

    /// Makes the event wait for `extra` more completions: the parts of a split op beyond the
    /// one it was counted as (an op's own event, or a graph's shared one), before that op
    /// completed anything.
    pub fn add_parts(&self, extra: u32) {
        let mut st = self.0.state.lock();
        st.remaining += extra;
        st.info.parts += extra;
    }

    /// Whether a part already failed.
    pub fn has_error(&self) -> bool {
        self.0.state.lock().error.is_some()
    }

    /// The first error a part reported, if any (cheaper than `outcome`: no info copy).
    pub fn error(&self) -> Option<Error> {
        self.0.state.lock().error.clone()
    }

    pub fn is_done(&self) -> bool {
        self.0.state.lock().remaining == 0
    }

    /// Records one finished part. `result` is its outcome; the first error wins.
    pub fn complete_part(&self, result: Result<()>, part: &EventInfo) {
        let finished_now = {
            let mut st = self.0.state.lock();
            if st.remaining == 0 {
                return;
            }
            if let Err(e) = result {
                st.error.get_or_insert(e);
            }
            let info = &mut st.info;
            if part.device.is_some() {
                info.device = part.device;
            }
            info.devices_mask |= part.devices_mask;
            info.started = min_time(info.started, part.started);
            info.finished = max_time(info.finished, part.finished);
            info.device_ns += part.device_ns;
            info.fallbacks += part.fallbacks;
            st.remaining -= 1;
            st.remaining == 0
        };
        if finished_now {
            self.0.done.notify_all();
            if let Some(parent) = &self.0.parent {
                let (result, info) = self.outcome();
                parent.complete_part(result, &info);
            }
        }
    }

    /// Completes every remaining part with `error` (nothing will run).
    pub fn fail(&self, error: Error) {
        let remaining = self.0.state.lock().remaining;
        for _ in 0..remaining {
            self.complete_part(Err(error.clone()), &EventInfo::default());
        }
    }

    /// Waits until done or until `timeout` passes (None = forever). Returns the op's result,
    /// or `Error::Timeout` if it is still running.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.0.state.lock();
        while st.remaining > 0 {
            match deadline {
                None => self.0.done.wait(&mut st),
                Some(d) => {
                    if self.0.done.wait_until(&mut st, d).timed_out() && st.remaining > 0 {
                        return Err(Error::Timeout("the op has not completed yet".into()));
                    }
                }
            }
        }
        st.error.clone().map_or(Ok(()), Err)
    }

    /// The result and info; `Error::Timeout` as result while still running.
    pub fn outcome(&self) -> (Result<()>, EventInfo) {
        let st = self.0.state.lock();
        let result = if st.remaining > 0 {
            Err(Error::Timeout("the op has not completed yet".into()))
        } else {
            st.error.clone().map_or(Ok(()), Err)
        };
        (result, st.info.clone())
    }
}

fn min_time(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn max_time(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_event_completes_after_all_parts_and_keeps_first_error() {
        let parent = Event::new(2);
        let a = Event::with_parent(1, Some(parent.clone()));
        let b = Event::with_parent(1, Some(parent.clone()));
        a.complete_part(Ok(()), &EventInfo { device: Some(0), devices_mask: 1, ..Default::default() });
        assert!(!parent.is_done());
        assert!(matches!(parent.wait(Some(Duration::from_millis(1))), Err(Error::Timeout(_))));
        b.complete_part(
            Err(Error::DeviceFailed("x".into())),
            &EventInfo { devices_mask: 2, ..Default::default() },
        );
        assert!(parent.is_done());
        assert_eq!(parent.wait(None), Err(Error::DeviceFailed("x".into())));
        assert_eq!(parent.outcome().1.devices_mask, 3);
    }

    #[test]
    fn wait_wakes_from_another_thread() {
        let e = Event::new(1);
        let e2 = e.clone();
        let t = std::thread::spawn(move || e2.complete_part(Ok(()), &EventInfo::default()));
        assert!(e.wait(Some(Duration::from_secs(5))).is_ok());
        t.join().unwrap();
    }
}
