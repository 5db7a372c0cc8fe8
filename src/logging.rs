//! Bridges the `log` crate to a caller's callback (or stderr at warn by default). One logger
//! per process, as `log` allows; the most recently created runtime's sink receives messages.

use parking_lot::RwLock;
use std::ffi::{c_void, CString};
use std::sync::Once;

/// `void (*)(uint32_t level, const char *message, void *user_data)`; level 1 = error .. 5 = trace.
pub type LogFn =
    unsafe extern "C" fn(level: u32, message: *const std::os::raw::c_char, user_data: *mut c_void);

#[derive(Clone, Copy)]
struct Sink {
    callback: Option<LogFn>,
    user_data: usize,
    max_level: log::LevelFilter,
}

static SINK: RwLock<Sink> =
    RwLock::new(Sink { callback: None, user_data: 0, max_level: log::LevelFilter::Warn });
static INSTALL: Once = Once::new();

struct Bridge;

impl log::Log for Bridge {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= SINK.read().max_level && metadata.target().starts_with("npuhybrid")
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let sink = *SINK.read();
        let text = format!("{}", record.args());
        match sink.callback {
            Some(cb) => {
                let msg = CString::new(text.replace('\0', " ")).unwrap_or_default();
                // SAFETY: the caller registered this callback and its user data together.
                unsafe { cb(record.level() as u32, msg.as_ptr(), sink.user_data as *mut c_void) };
            }
            None => eprintln!("npuhybrid {}: {text}", record.level().as_str().to_lowercase()),
        }
    }

    fn flush(&self) {}
}

/// Routes messages up to `max_level` to `callback` (None = stderr).
pub fn set_sink(callback: Option<LogFn>, user_data: *mut c_void, max_level: log::LevelFilter) {
    INSTALL.call_once(|| {
        if log::set_logger(&Bridge).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
    });
    *SINK.write() = Sink { callback, user_data: user_data as usize, max_level };
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
