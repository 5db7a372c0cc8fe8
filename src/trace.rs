//! Chrome trace-event JSON (Perfetto, chrome://tracing): one lane per device, one slice per
//! op or split part, instant events for fallbacks and thermal transitions.

use parking_lot::Mutex;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Events kept per trace before new ones are dropped (and counted).
const MAX_EVENTS: usize = 1_000_000;

struct Sink {
    path: PathBuf,
    events: Vec<Value>,
    dropped: u64,
}

pub struct Trace {
    epoch: Instant,
    lanes: Vec<String>,
    sink: Mutex<Option<Sink>>,
}

impl Trace {
    /// `lanes`: one name per device, in device order.
    pub fn new(lanes: Vec<String>) -> Trace {
        Trace { epoch: Instant::now(), lanes, sink: Mutex::new(None) }
    }

    pub fn start(&self, path: &Path) -> crate::Result<()> {
        // Fail now rather than at stop if the file cannot be written.
        crate::files::write_regular(path, b"")
            .map_err(|e| crate::Error::Io(format!("{}: {e}", path.display())))?;
        let mut events: Vec<Value> =
            vec![json!({"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "npuhybrid"}})];
        for (i, lane) in self.lanes.iter().enumerate() {
            events
                .push(json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": i, "args": {"name": lane}}));
        }
        events.push(json!({"name": "thread_name", "ph": "M", "pid": 1, "tid": self.lanes.len(), "args": {"name": "scheduler"}}));
        *self.sink.lock() = Some(Sink { path: path.to_path_buf(), events, dropped: 0 });
        Ok(())
    }

    /// Writes the file and stops recording. Returns the number of events written.
    pub fn stop(&self) -> crate::Result<usize> {
        let sink = self.sink.lock().take().ok_or_else(|| crate::Error::invalid("no trace is running"))?;
        if sink.dropped > 0 {
            log::warn!("trace dropped {} events over its limit of {MAX_EVENTS}", sink.dropped);
        }
        let n = sink.events.len();
        let doc = json!({"traceEvents": sink.events, "displayTimeUnit": "ns"});
        let bytes = serde_json::to_vec(&doc).map_err(|e| crate::Error::Io(e.to_string()))?;
        crate::files::write_regular(&sink.path, &bytes)
            .map_err(|e| crate::Error::Io(format!("{}: {e}", sink.path.display())))?;
        Ok(n)
    }

    pub fn active(&self) -> bool {
        self.sink.lock().is_some()
    }

    fn us(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.epoch).as_nanos() as f64 / 1000.0
    }

    fn push(&self, event: impl FnOnce() -> Value) {
        if let Some(sink) = self.sink.lock().as_mut() {
            if sink.events.len() < MAX_EVENTS {
                sink.events.push(event());
            } else {
                sink.dropped += 1;
            }
        }
    }

    /// `args` is only built while a trace is recording.
    pub fn slice(&self, lane: usize, name: &str, start: Instant, end: Instant, args: impl FnOnce() -> Value) {
        if !self.active() {
            return;
        }
        let args = args();
        let (ts, dur) = (self.us(start), self.us(end) - self.us(start));
        self.push(|| json!({"name": name, "cat": "op", "ph": "X", "pid": 1, "tid": lane, "ts": ts, "dur": dur, "args": args}));
    }

    /// An instant event; `lane = None` puts it on the scheduler lane.
    pub fn instant(&self, lane: Option<usize>, name: &str, args: impl FnOnce() -> Value) {
        if !self.active() {
            return;
        }
        let args = args();
        let ts = self.us(Instant::now());
        let tid = lane.unwrap_or(self.lanes.len());
        self.push(|| json!({"name": name, "cat": "sched", "ph": "i", "s": "t", "pid": 1, "tid": tid, "ts": ts, "args": args}));
    }
}
