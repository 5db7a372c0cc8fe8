//! Read/write hazard tracking over byte ranges of buffers. An op waits for every unfinished
//! op whose ranges conflict with its own (read after write, write after read, write after
//! write); ops on disjoint ranges (split parts, KV-cache slots) run concurrently.
//!
//! Cost stays proportional to what can conflict: reads only look at unfinished writes, and a
//! write that covers an older access hides it from later lookups (anything that would
//! conflict with the older one conflicts with the write, which already waits for it).

use super::fasthash::FastMap;
use super::task::{Access, Task};
use crate::event::Event;
use crate::memory::BufferId;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Default)]
struct Live {
    writes: Vec<(Access, Arc<Task>)>,
    reads: Vec<(Access, Arc<Task>)>,
}

#[derive(Default)]
pub struct HazardTracker {
    live: FastMap<BufferId, Live>,
}

fn covers(outer: &Access, inner: &Access) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

impl HazardTracker {
    /// Records the task's accesses and links it behind every conflicting unfinished task,
    /// except members of its own segment (a segment runs its ops in order). Returns how many
    /// tasks it waits for (also stored in `task.pending`).
    pub fn register(&mut self, task: &Arc<Task>) -> usize {
        let mut waits_for: Vec<Arc<Task>> = Vec::new();
        let mut wait = |other: &Arc<Task>| {
            if other.id != task.id && !task.same_segment(other) && !waits_for.iter().any(|t| t.id == other.id)
            {
                waits_for.push(Arc::clone(other));
            }
        };
        for access in &task.accesses {
            if let Some(live) = self.live.get(&access.buffer) {
                let lists: &[&Vec<(Access, Arc<Task>)>] =
                    if access.write { &[&live.writes, &live.reads] } else { &[&live.writes] };
                for list in lists {
                    for (other_access, other) in list.iter() {
                        if access.conflicts(other_access) {
                            wait(other);
                        }
                    }
                }
            }
        }
        task.pending.store(waits_for.len(), Ordering::Release);
        for other in &waits_for {
            other.dependents.lock().push(Arc::clone(task));
        }
        for access in &task.accesses {
            let live = self.live.entry(access.buffer).or_default();
            if access.write {
                live.writes.retain(|(a, _)| !covers(access, a));
                live.reads.retain(|(a, _)| !covers(access, a));
                live.writes.push((*access, Arc::clone(task)));
            } else {
                live.reads.push((*access, Arc::clone(task)));
            }
        }
        waits_for.len()
    }

    /// Removes a finished task and returns the tasks that waited for it.
    pub fn retire(&mut self, task: &Task) -> Vec<Arc<Task>> {
        for access in &task.accesses {
            if let Some(live) = self.live.get_mut(&access.buffer) {
                live.writes.retain(|(_, t)| t.id != task.id);
                live.reads.retain(|(_, t)| t.id != task.id);
                if live.writes.is_empty() && live.reads.is_empty() {
                    self.live.remove(&access.buffer);
                }
            }
        }
        std::mem::take(&mut *task.dependents.lock())
    }

    /// Events of unfinished tasks touching `buffer` (host access waits for them). Waiting for
    /// the visible ones is enough: a hidden access is older than a visible write that waits
    /// for it.
    pub fn pending_on(&self, buffer: BufferId) -> Vec<Event> {
        self.live
            .get(&buffer)
            .map(|l| l.writes.iter().chain(&l.reads).map(|(_, t)| t.event.clone()).collect())
            .unwrap_or_default()
    }
}
