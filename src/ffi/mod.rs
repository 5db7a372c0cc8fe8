//! The C boundary, and nothing else: argument checks, handle lookups, the panic guard and
//! conversions to the Rust API. Every exported function returns an `nh_status`.
//!
//! Thread safety: every function may be called from any thread at once; a runtime and all of
//! its handles are shared. A handle is checked on every use: a stale, freed, forged or other
//! runtime's handle returns NH_ERR_INVALID_HANDLE.

mod args;
mod buffer;
mod device;
mod gguf;
mod op;
mod runtime;
mod status;
pub mod types;

pub use buffer::*;
pub use device::*;
pub use gguf::*;
pub use op::*;
pub use runtime::*;
pub use status::{nh_last_error_message, nh_status, nh_status_name};
pub use types::*;

use crate::error::Result;
use crate::event::Event;
use crate::graph::Graph;
use crate::handle::HandleTable;
use crate::Runtime;
use parking_lot::{Mutex, RwLock};
use std::sync::{Arc, OnceLock};

/// A runtime and the handles that only the C API needs.
pub(crate) struct RuntimeEntry {
    pub rt: Runtime,
    pub events: Mutex<HandleTable<Event>>,
    pub graphs: Mutex<HandleTable<Arc<Mutex<Graph>>>>,
    pub ggufs: Mutex<HandleTable<Arc<gguf::GgufEntry>>>,
    /// Last, so it is dropped after the runtime: its threads may log until they are joined.
    pub _log: crate::logging::Registration,
}

fn runtimes() -> &'static RwLock<HandleTable<Arc<RuntimeEntry>>> {
    static TABLE: OnceLock<RwLock<HandleTable<Arc<RuntimeEntry>>>> = OnceLock::new();
    TABLE.get_or_init(|| RwLock::new(HandleTable::new("runtime")))
}

/// Looks a runtime up. The returned Arc keeps it alive for the call even if another thread
/// destroys the handle meanwhile.
pub(crate) fn entry(rt: nh_runtime) -> Result<Arc<RuntimeEntry>> {
    runtimes().read().get(rt.id)
}

/// The library version as "MAJOR.MINOR.PATCH". Never NULL.
#[no_mangle]
pub extern "C" fn nh_version() -> *const std::ffi::c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const std::ffi::c_char
}

/// ABI major version; it is also the soname's (libnpuhybrid.so.N).
#[no_mangle]
pub extern "C" fn nh_abi_version() -> u32 {
    NH_ABI_VERSION
}

pub const NH_ABI_VERSION: u32 = 1;
