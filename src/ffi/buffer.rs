//! Buffers: allocate, import host memory, map files, read, write, map, destroy.

use super::args::{c_str, opt_out, out};
use super::entry;
use super::nh_status;
use super::status::guard;
use super::types::*;
use crate::error::Error;
use std::ffi::{c_char, c_void};

/// Allocates `size` bytes of zeroed, page-aligned memory that every device can use, from
/// the runtime's pool (freed blocks are reused).
#[no_mangle]
pub extern "C" fn nh_buffer_alloc(runtime: nh_runtime, size: usize, out_buffer: *mut nh_buffer) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let slot = out(out_buffer, "out_buffer")?;
        slot.id = e.rt.alloc(size)?;
        Ok(())
    })
}

/// Wraps caller memory without copying. The caller keeps `ptr` valid for `size` bytes until
/// `nh_buffer_destroy` returns, and does not touch it while ops using it run. The caller may
/// write it between ops without telling the library, so devices never keep copies of it: a
/// GPU uploads it for every op that reads it, and the CPU does not cache it as a packed
/// weight. Keep weights in `nh_buffer_alloc` or file-mapped buffers.
#[no_mangle]
pub extern "C" fn nh_buffer_import(
    runtime: nh_runtime,
    ptr: *mut c_void,
    size: usize,
    out_buffer: *mut nh_buffer,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let slot = out(out_buffer, "out_buffer")?;
        // SAFETY: the documented contract above.
        slot.id = unsafe { e.rt.import(ptr as *mut u8, size)? };
        Ok(())
    })
}

/// Maps a file read-only (model weights). Ops may read it; writing it is rejected. `path`
/// must name a regular file. The file must not be truncated or rewritten while it is mapped:
/// reading past its new end would kill the process with SIGBUS, as with any memory-mapped
/// loader. Reads, maps and submits check its size first and fail with NH_ERR_IO once it
/// shrank, but a truncation racing an op in progress cannot be caught.
#[no_mangle]
pub extern "C" fn nh_buffer_map_file(
    runtime: nh_runtime,
    path: *const c_char,
    out_buffer: *mut nh_buffer,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let path = c_str(path, "path")?;
        let slot = out(out_buffer, "out_buffer")?;
        slot.id = e.rt.map_file(std::path::Path::new(path))?;
        Ok(())
    })
}

/// Destroys a buffer. Its handle is invalid as soon as the call starts (a submit made
/// meanwhile fails with NH_ERR_INVALID_HANDLE); the call returns once every op holding the
/// buffer has completed, including ops other threads were submitting at that moment, so
/// imported memory may be freed as soon as it returns.
#[no_mangle]
pub extern "C" fn nh_buffer_destroy(runtime: nh_runtime, buffer: nh_buffer) -> nh_status {
    guard(|| entry(runtime)?.rt.destroy_buffer(buffer.id))
}

#[no_mangle]
pub extern "C" fn nh_buffer_size(runtime: nh_runtime, buffer: nh_buffer, out_size: *mut usize) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let slot = out(out_size, "out_size")?;
        *slot = e.rt.buffer(buffer.id)?.len();
        Ok(())
    })
}

/// Copies `size` bytes from `data` into the buffer at `offset`, after pending ops on it.
#[no_mangle]
pub extern "C" fn nh_buffer_write(
    runtime: nh_runtime,
    buffer: nh_buffer,
    offset: usize,
    data: *const c_void,
    size: usize,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        if data.is_null() {
            return Err(Error::NullPointer("data"));
        }
        // SAFETY: the caller promises `size` readable bytes at `data`.
        let bytes = unsafe { std::slice::from_raw_parts(data as *const u8, size) };
        e.rt.write(buffer.id, offset, bytes)
    })
}

/// Copies `size` bytes at `offset` out of the buffer into `data`, after pending ops on it.
#[no_mangle]
pub extern "C" fn nh_buffer_read(
    runtime: nh_runtime,
    buffer: nh_buffer,
    offset: usize,
    data: *mut c_void,
    size: usize,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        if data.is_null() {
            return Err(Error::NullPointer("data"));
        }
        // SAFETY: the caller promises `size` writable bytes at `data`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(data as *mut u8, size) };
        e.rt.read(buffer.id, offset, bytes)
    })
}

/// Host pointer to the whole buffer, after pending ops on it completed. Valid until the
/// buffer is destroyed. After writing through it, call `nh_buffer_unmap` with `written` = 1
/// so devices holding copies refresh them. Do not access it while ops using it run.
#[no_mangle]
pub extern "C" fn nh_buffer_map(
    runtime: nh_runtime,
    buffer: nh_buffer,
    out_ptr: *mut *mut c_void,
    out_size: *mut usize,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let p = out(out_ptr, "out_ptr")?;
        let (ptr, len) = e.rt.map(buffer.id)?;
        *p = ptr as *mut c_void;
        if let Some(s) = opt_out(out_size) {
            *s = len;
        }
        Ok(())
    })
}

/// Ends host access through `nh_buffer_map`; `written` != 0 marks the contents changed.
#[no_mangle]
pub extern "C" fn nh_buffer_unmap(runtime: nh_runtime, buffer: nh_buffer, written: u32) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let buf = e.rt.buffer(buffer.id)?;
        if written != 0 {
            if buf.read_only() {
                return Err(Error::invalid("buffer is a read-only file mapping"));
            }
            buf.touch();
        }
        Ok(())
    })
}
