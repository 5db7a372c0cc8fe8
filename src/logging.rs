//! Bridges the `log` crate to the callers' callbacks (or stderr at warn by default).
//!
//! `log` allows one logger per process, so every runtime created through the C API registers
//! its own sink here, and unregisters it when it is destroyed: a callback and its user data
//! are never used after `nh_runtime_destroy` returns, and a runtime created with logging off
//! disconnects no one (issue 17, item 6). Messages logged while a thread creates a runtime go
//! to that runtime only; the library's other messages (worker threads, devices) cannot be told
//! apart by runtime and go to every live runtime's sink, each at its own level.

use parking_lot::RwLock;
use std::cell::Cell;
use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

/// `void (*)(uint32_t level, const char *message, void *user_data)`; level 1 = error .. 5 = trace.
pub type LogFn =
    unsafe extern "C" fn(level: u32, message: *const std::os::raw::c_char, user_data: *mut c_void);

#[derive(Clone, Copy)]
struct Sink {
    id: u64,
    callback: Option<LogFn>,
    user_data: usize,
    max_level: log::LevelFilter,
}

/// Live runtimes' sinks, oldest first. Held for reading while a callback runs, so removing a
/// sink waits for its callbacks in progress.
static SINKS: RwLock<Vec<Sink>> = RwLock::new(Vec::new());
static INSTALL: Once = Once::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The sink this thread's messages go to alone (0: every sink).
    static SCOPE: Cell<u64> = const { Cell::new(0) };
}

struct Bridge;

impl log::Log for Bridge {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target().starts_with("npuhybrid")
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = record.level();
        // Recursive: a callback may call back into the library, which may log.
        let sinks = SINKS.read_recursive();
        let scope = SCOPE.with(Cell::get);
        let mut targets =
            sinks.iter().filter(|s| (scope == 0 || s.id == scope) && level <= s.max_level).peekable();
        if sinks.is_empty() {
            if level <= log::Level::Warn {
                eprintln!("npuhybrid {}: {}", level.as_str().to_lowercase(), record.args());
            }
            return;
        }
        if targets.peek().is_none() {
            return;
        }
        let text = format!("{}", record.args());
        let msg = CString::new(text.replace('\0', " ")).unwrap_or_default();
        let mut on_stderr = false;
        for sink in targets {
            match sink.callback {
                // SAFETY: the caller registered this callback and its user data together, and
                // they stay registered until its runtime is destroyed (which waits for us).
                Some(cb) => unsafe { cb(level as u32, msg.as_ptr(), sink.user_data as *mut c_void) },
                // Several runtimes logging to stderr print a message once.
                None if !on_stderr => {
                    on_stderr = true;
                    eprintln!("npuhybrid {}: {text}", level.as_str().to_lowercase());
                }
                None => {}
            }
        }
    }

    fn flush(&self) {}
}

/// One runtime's sink; dropping it unregisters the sink, waiting for callbacks in progress.
pub struct Registration(u64);

impl Registration {
    /// Routes messages up to `max_level` to `callback` (None = stderr) until dropped.
    pub fn new(callback: Option<LogFn>, user_data: *mut c_void, max_level: log::LevelFilter) -> Registration {
        INSTALL.call_once(|| {
            if log::set_logger(&Bridge).is_ok() {
                log::set_max_level(log::LevelFilter::Trace);
            }
        });
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        SINKS.write().push(Sink { id, callback, user_data: user_data as usize, max_level });
        Registration(id)
    }

    /// Sends this thread's messages to this sink alone while the returned scope lives.
    pub fn scope(&self) -> Scope {
        Scope(SCOPE.with(|s| s.replace(self.0)))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        SINKS.write().retain(|s| s.id != self.0);
    }
}

/// Restores the thread's previous scope when dropped.
pub struct Scope(u64);

impl Drop for Scope {
    fn drop(&mut self) {
        SCOPE.with(|s| s.set(self.0));
    }
}

pub fn level_from_raw(raw: u32) -> log::LevelFilter {
    match raw {
        0 => log::LevelFilter::Off,
        1 => log::LevelFilter::Error,
        2 => log::LevelFilter::Warn,
        3 => log::LevelFilter::Info,
        4 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}
