//! GGUF model files: mapped read-only through the same path as `nh_buffer_map_file`, their
//! header read and checked once (`crate::gguf`), then tensors looked up as views into the
//! mapped buffer and metadata read by key.

use super::args::{c_str, out, write_string};
use super::entry;
use super::nh_status;
use super::status::guard;
use super::types::*;
use crate::error::{Error, Result};
use crate::gguf::{Gguf, Value};
use crate::memory::BufferId;
use std::ffi::c_char;
use std::sync::Arc;

/// A parsed GGUF file and the mapped buffer its tensors live in.
pub(crate) struct GgufEntry {
    buffer: BufferId,
    info: Gguf,
}

fn lookup(runtime: nh_runtime, gguf: nh_gguf) -> Result<Arc<GgufEntry>> {
    entry(runtime)?.ggufs.lock().get(gguf.id)
}

/// Maps the GGUF file at `path` into a new read-only buffer (`*out_buffer`, the caller's to
/// destroy after `nh_gguf_close`) and reads its header, metadata and tensor directory. A
/// damaged or unsupported file is refused (NH_ERR_INVALID_ARGUMENT) with the byte offset of
/// the fault in the message, and nothing stays mapped.
#[no_mangle]
pub extern "C" fn nh_gguf_open(
    runtime: nh_runtime,
    path: *const c_char,
    out_gguf: *mut nh_gguf,
    out_buffer: *mut nh_buffer,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let path = c_str(path, "path")?;
        let slot = out(out_gguf, "out_gguf")?;
        let buf_slot = out(out_buffer, "out_buffer")?;
        let id = e.rt.map_file(std::path::Path::new(path))?;
        let parsed = {
            let buf = e.rt.buffer(id)?;
            // SAFETY: a read-only mapping of `len` bytes that lives while `buf` does.
            let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const u8, buf.len()) };
            crate::gguf::parse(bytes)
        };
        let info = match parsed {
            Ok(info) => info,
            Err(err) => {
                let _ = e.rt.destroy_buffer(id);
                return Err(match err {
                    Error::InvalidArgument(why) => Error::invalid(format!("{path}: {why}")),
                    other => other,
                });
            }
        };
        slot.id = e.ggufs.lock().insert(Arc::new(GgufEntry { buffer: id, info }));
        buf_slot.id = id;
        Ok(())
    })
}

/// Forgets a GGUF file's header. Its buffer stays until `nh_buffer_destroy`.
#[no_mangle]
pub extern "C" fn nh_gguf_close(runtime: nh_runtime, gguf: nh_gguf) -> nh_status {
    guard(|| entry(runtime)?.ggufs.lock().remove(gguf.id).map(|_| ()))
}

/// The tensor `name` as a dense view into the file's buffer: its dtype (f32, f16, bf16,
/// q8_0, q4_0, q4_1), shape outermost first (GGUF lists the innermost dimension first) and
/// byte offset. NH_ERR_INVALID_ARGUMENT when the file has no such tensor.
#[no_mangle]
pub extern "C" fn nh_gguf_tensor(
    runtime: nh_runtime,
    gguf: nh_gguf,
    name: *const c_char,
    out_tensor: *mut nh_tensor,
) -> nh_status {
    guard(|| {
        let g = lookup(runtime, gguf)?;
        let name = c_str(name, "name")?;
        let slot = out(out_tensor, "out_tensor")?;
        let t =
            g.info.tensor(name).ok_or_else(|| Error::invalid(format!("gguf: no tensor named '{name}'")))?;
        *slot = nh_tensor { buffer: nh_buffer { id: g.buffer }, ..Default::default() };
        slot.dtype = t.dtype as u32;
        slot.rank = t.shape.len() as u32;
        for (d, s) in slot.shape.iter_mut().zip(&t.shape) {
            *d = *s as u64;
        }
        slot.offset = t.offset as u64;
        Ok(())
    })
}

/// `nh_gguf_meta_*` index of a value that is not an array.
pub const NH_GGUF_SCALAR: u64 = u64::MAX;

fn value(g: &GgufEntry, key: *const c_char, index: u64) -> Result<&Value> {
    let key = c_str(key, "key")?;
    let v = g.info.get(key).ok_or_else(|| Error::invalid(format!("gguf: no metadata key '{key}'")))?;
    if index == NH_GGUF_SCALAR {
        return Ok(v);
    }
    let items = v.as_array().ok_or_else(|| Error::invalid(format!("gguf: '{key}' is not an array")))?;
    let i = usize::try_from(index).ok().filter(|&i| i < items.len());
    i.map(|i| &items[i]).ok_or_else(|| {
        Error::invalid(format!("gguf: index {index} is past the {} items of '{key}'", items.len()))
    })
}

/// Elements of the array `key` (1 for a value that is not an array).
#[no_mangle]
pub extern "C" fn nh_gguf_meta_length(
    runtime: nh_runtime,
    gguf: nh_gguf,
    key: *const c_char,
    out_length: *mut u64,
) -> nh_status {
    guard(|| {
        let g = lookup(runtime, gguf)?;
        let slot = out(out_length, "out_length")?;
        *slot = value(&g, key, NH_GGUF_SCALAR)?.as_array().map_or(1, |a| a.len() as u64);
        Ok(())
    })
}

/// The number `key` holds (index NH_GGUF_SCALAR), or element `index` of the array `key`,
/// as a double (integers above 2^53 round). NH_ERR_INVALID_ARGUMENT when it is no number.
#[no_mangle]
pub extern "C" fn nh_gguf_meta_number(
    runtime: nh_runtime,
    gguf: nh_gguf,
    key: *const c_char,
    index: u64,
    out_value: *mut f64,
) -> nh_status {
    guard(|| {
        let g = lookup(runtime, gguf)?;
        let slot = out(out_value, "out_value")?;
        let v = value(&g, key, index)?;
        *slot = v.as_f64().ok_or_else(|| Error::invalid("gguf: the value is not a number"))?;
        Ok(())
    })
}

/// The string `key` holds (index NH_GGUF_SCALAR), or element `index` of the array `key`,
/// NUL-terminated into `buf` of `capacity` bytes; `*needed` (if not NULL) gets the size it
/// needs. A string may hold NUL bytes of its own: `*needed - 1` is its true length.
#[no_mangle]
pub extern "C" fn nh_gguf_meta_string(
    runtime: nh_runtime,
    gguf: nh_gguf,
    key: *const c_char,
    index: u64,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> nh_status {
    guard(|| {
        let g = lookup(runtime, gguf)?;
        let v = value(&g, key, index)?;
        let s = v.as_str().ok_or_else(|| Error::invalid("gguf: the value is not a string"))?;
        write_string(s, buf, capacity, needed)
    })
}
