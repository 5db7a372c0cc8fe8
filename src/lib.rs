//! npuhybrid: a hybrid NPU + GPU + CPU execution runtime with a stable C ABI.
//!
//! The path of one op: `ffi` checks arguments and handles -> `op` validates the descriptor ->
//! `policy` tables give candidate devices -> `sched` picks one by live state -> a
//! `backend::Backend` runs it -> the op's `event::Event` completes.

pub mod backend;
pub mod device;
pub mod error;
pub mod handle;
pub mod memory;
pub mod op;
pub mod policy;
pub mod quant;

pub use error::{Error, Result};
pub mod event;
pub mod gguf;
pub mod graph;
pub mod runtime;
pub mod sched;
pub mod trace;

pub use event::{Event, EventInfo};
pub use runtime::{PolicySource, Runtime, RuntimeConfig};
pub mod ffi;
mod files;
mod logging;
