//! Which pipelines exist, for the planner, and a thread that makes missing ones ahead of use.
//! A graph placed on the GPU before its pipelines exist waits inside its first submission
//! while the driver compiles them (862 ms of an H100's first graph); instead the planner keeps
//! ops off the device until their pipelines are made here (`Backend::kernels_ready`), and they
//! run elsewhere meanwhile. Variants that earlier runs made come out of the pipeline cache in
//! moments: ops that need them do not wait (every new process starts with no pipeline made,
//! and a once-per-process graph, such as a 1B model's prefill on an H100, otherwise sent its
//! ops elsewhere while this thread remade what the cache held).

use parking_lot::{Mutex, RwLock};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

#[derive(Default)]
pub struct KernelWarmer {
    /// Made here, or by an earlier run (listed beside the pipeline cache, which makes them in
    /// moments).
    ready: RwLock<HashSet<&'static str>>,
    wanted: Mutex<Wanted>,
    /// The thread making pipelines, joined at `stop`: a process must not exit while it is
    /// inside the driver (an H100 run of `generate` crashed at exit that way).
    thread: Mutex<Option<JoinHandle<()>>>,
    stopped: AtomicBool,
}

#[derive(Default)]
struct Wanted {
    /// Shaders asked for, oldest first.
    queue: Vec<&'static str>,
    /// A thread is making them.
    running: bool,
}

impl KernelWarmer {
    /// Whether ops needing `shader` may go to the device now: its pipeline is made, or an
    /// earlier run made it and the cache has it.
    pub fn is_ready(&self, shader: &str) -> bool {
        self.ready.read().contains(shader)
    }

    pub fn mark_ready(&self, shader: &'static str) {
        self.ready.write().insert(shader);
    }

    /// Asks for `shader`'s pipeline. The first request starts a thread that makes the ones
    /// asked for, in order, with `make`, and ends when none is left. A shader whose pipeline
    /// cannot be made is marked ready too: its op then fails where it runs, and falls back.
    pub fn request(self: &Arc<Self>, shader: &'static str, make: impl Fn(&'static str) + Send + 'static) {
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        let mut thread = self.thread.lock();
        {
            let mut wanted = self.wanted.lock();
            if !wanted.queue.contains(&shader) {
                wanted.queue.push(shader);
            }
            if wanted.running {
                return;
            }
            wanted.running = true;
        }
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("nh-pipelines".into()).spawn(move || loop {
            let next = {
                let mut wanted = me.wanted.lock();
                if wanted.queue.is_empty() || me.stopped.load(Ordering::Acquire) {
                    wanted.running = false;
                    return;
                }
                wanted.queue.remove(0)
            };
            make(next);
            me.mark_ready(next);
        });
        match spawned {
            // The thread this one replaces found its queue empty and is returning.
            Ok(handle) => {
                if let Some(ended) = thread.replace(handle) {
                    let _ = ended.join();
                }
            }
            Err(_) => {
                // No thread: let the ops compile their pipelines where they run, as without this.
                let mut wanted = self.wanted.lock();
                wanted.running = false;
                for shader in std::mem::take(&mut wanted.queue) {
                    self.mark_ready(shader);
                }
            }
        }
    }

    /// Makes no more pipelines: the thread ends after the one it is making, and this waits
    /// for it.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let handle = self.thread.lock().take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn requested_pipelines_are_made_once_in_order_then_ready() {
        let warmer = Arc::new(KernelWarmer::default());
        let made = Arc::new(Mutex::new(Vec::new()));
        for shader in ["gemv", "rope", "gemv"] {
            let made = Arc::clone(&made);
            warmer.request(shader, move |s| {
                std::thread::sleep(Duration::from_millis(5));
                made.lock().push(s);
            });
        }
        let started = Instant::now();
        while !(warmer.is_ready("gemv") && warmer.is_ready("rope")) {
            assert!(started.elapsed() < Duration::from_secs(10), "never made");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(*made.lock(), ["gemv", "rope"]);
        assert!(!warmer.is_ready("softmax"));
    }

    #[test]
    fn stop_waits_for_the_pipeline_being_made_and_makes_no_more() {
        let warmer = Arc::new(KernelWarmer::default());
        let made = Arc::new(Mutex::new(Vec::new()));
        for shader in ["gemv", "rope", "softmax"] {
            let made = Arc::clone(&made);
            warmer.request(shader, move |s| {
                std::thread::sleep(Duration::from_millis(50));
                made.lock().push(s);
            });
        }
        std::thread::sleep(Duration::from_millis(10));
        warmer.stop();
        let at_stop = made.lock().len();
        assert_eq!(at_stop, 1, "the one being made is finished, the rest are not started");
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(made.lock().len(), at_stop, "no thread is left making pipelines");
        warmer.request("add", |_| panic!("a stopped warmer makes nothing"));
        assert!(!warmer.is_ready("add"));
    }
}
