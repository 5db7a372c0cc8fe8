//! Read/write hazard tracking over byte ranges of buffers. An op waits for every unfinished
//! op whose ranges conflict with its own (read after write, write after read, write after
//! write); ops on disjoint ranges (split parts, KV-cache slots) run concurrently.

use super::task::{Access, Task};
use crate::event::Event;
use crate::memory::BufferId;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Default)]
pub struct HazardTracker {
    live: HashMap<BufferId, Vec<(Access, Arc<Task>)>>,
}

impl HazardTracker {
    /// Records the task's accesses and links it behind every conflicting unfinished task.
    /// Returns how many tasks it waits for (also stored in `task.pending`).
    pub fn register(&mut self, task: &Arc<Task>) -> usize {
        let mut waits_for: Vec<Arc<Task>> = Vec::new();
        for access in &task.accesses {
            if let Some(list) = self.live.get(&access.buffer) {
                for (other_access, other) in list {
                    if access.conflicts(other_access) && !waits_for.iter().any(|t| t.id == other.id) {
                        waits_for.push(Arc::clone(other));
                    }
                }
            }
        }
        task.pending.store(waits_for.len(), Ordering::Release);
        for other in &waits_for {
            other.dependents.lock().push(Arc::clone(task));
        }
        for access in &task.accesses {
            self.live.entry(access.buffer).or_default().push((*access, Arc::clone(task)));
        }
        waits_for.len()
    }

    /// Removes a finished task and returns the tasks that waited for it.
    pub fn retire(&mut self, task: &Task) -> Vec<Arc<Task>> {
        for access in &task.accesses {
            if let Some(list) = self.live.get_mut(&access.buffer) {
                list.retain(|(_, t)| t.id != task.id);
                if list.is_empty() {
                    self.live.remove(&access.buffer);
                }
            }
        }
        std::mem::take(&mut *task.dependents.lock())
    }

    /// Events of unfinished tasks touching `buffer` (host access waits for them).
    pub fn pending_on(&self, buffer: BufferId) -> Vec<Event> {
        let mut events: Vec<Event> = Vec::new();
        if let Some(list) = self.live.get(&buffer) {
            for (_, t) in list {
                events.push(t.event.clone());
            }
        }
        events
    }
}
