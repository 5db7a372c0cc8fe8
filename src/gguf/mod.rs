//! GGUF model files (llama.cpp's format): header, metadata and tensor directory, read as
//! untrusted input. `parse` checks every length, count and offset against the bytes it was
//! given and names the byte offset of whatever it rejects; the tensor data stays where it
//! is (the caller maps the file and makes views into it).

mod parse;
mod value;

pub use parse::{parse, Gguf, TensorInfo};
pub use value::Value;

/// Limits on what a file may declare, so a hostile header cannot make the reader allocate
/// or loop far beyond the file's own size.
pub const MAX_DIMS: usize = 4;
pub const MAX_NAME_BYTES: usize = 65535;
/// Arrays inside arrays, at most this deep.
pub const MAX_ARRAY_DEPTH: usize = 2;
/// Metadata values in all (a value takes up to 32x its bytes in memory; a 256k-token
/// vocabulary with scores and types is under 1M).
pub const MAX_VALUES: usize = 1 << 22;
