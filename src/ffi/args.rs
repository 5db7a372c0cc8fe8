//! Checked conversions of C arguments: every pointer is checked here, in one place.

use crate::error::{Error, Result};
use std::ffi::{c_char, CStr};

pub(crate) fn out<'a, T>(p: *mut T, what: &'static str) -> Result<&'a mut T> {
    // SAFETY: non-null was checked; the caller promises a valid, writable T (documented).
    unsafe { p.as_mut() }.ok_or(Error::NullPointer(what))
}

/// An optional out-parameter: NULL means the caller does not want it.
pub(crate) fn opt_out<'a, T>(p: *mut T) -> Option<&'a mut T> {
    // SAFETY: as for `out`; NULL is allowed.
    unsafe { p.as_mut() }
}

pub(crate) fn input<'a, T>(p: *const T, what: &'static str) -> Result<&'a T> {
    // SAFETY: non-null was checked; the caller promises a valid T (documented).
    unsafe { p.as_ref() }.ok_or(Error::NullPointer(what))
}

/// Structs that start with `uint32_t struct_size`.
pub(crate) trait Sized32 {
    const NAME: &'static str;
}

/// Reads a size-prefixed struct: callers compiled against an older, smaller layout are
/// rejected (no such layout exists yet); newer, larger ones are read up to the fields known.
pub(crate) fn sized_input<'a, T: Sized32>(p: *const T, what: &'static str) -> Result<&'a T> {
    let size = unsafe { (p as *const u32).as_ref() }.ok_or(Error::NullPointer(what))?;
    check_size::<T>(*size)?;
    input(p, what)
}

pub(crate) fn sized_out<'a, T: Sized32>(p: *mut T, what: &'static str) -> Result<&'a mut T> {
    let size = unsafe { (p as *const u32).as_ref() }.ok_or(Error::NullPointer(what))?;
    check_size::<T>(*size)?;
    out(p, what)
}

fn check_size<T: Sized32>(size: u32) -> Result<()> {
    let want = std::mem::size_of::<T>();
    if (size as usize) < want {
        return Err(Error::StructSize(format!(
            "{}.struct_size is {size}, this library needs at least {want} (set it to sizeof({}))",
            T::NAME,
            T::NAME
        )));
    }
    Ok(())
}

pub(crate) fn c_str<'a>(p: *const c_char, what: &'static str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::NullPointer(what));
    }
    // SAFETY: the caller promises a NUL-terminated string (documented).
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
}

pub(crate) fn opt_c_str<'a>(p: *const c_char, what: &'static str) -> Result<Option<&'a str>> {
    if p.is_null() {
        Ok(None)
    } else {
        c_str(p, what).map(Some)
    }
}

/// Copies `text` NUL-terminated into `buf` of `capacity` bytes, stores the needed size in
/// `*needed` (if not NULL). Too small a buffer gets as much as fits and an error.
pub(crate) fn write_string(text: &str, buf: *mut c_char, capacity: usize, needed: *mut usize) -> Result<()> {
    let need = text.len() + 1;
    if let Some(n) = unsafe { needed.as_mut() } {
        *n = need;
    }
    if buf.is_null() {
        return if needed.is_null() { Err(Error::NullPointer("buf")) } else { Ok(()) };
    }
    if capacity == 0 {
        return Err(Error::BufferTooSmall(format!("0 bytes given, {need} needed")));
    }
    let n = text.len().min(capacity - 1);
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf as *mut u8, n);
        *buf.add(n) = 0;
    }
    if n < text.len() {
        return Err(Error::BufferTooSmall(format!("{capacity} bytes given, {need} needed")));
    }
    Ok(())
}

/// Copies `text` into a fixed C char array, truncating at a character boundary.
pub(crate) fn fill_fixed(dst: &mut [c_char], text: &str) {
    let mut n = text.len().min(dst.len() - 1);
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    for (d, s) in dst.iter_mut().zip(text.as_bytes()[..n].iter()) {
        *d = *s as c_char;
    }
    dst[n] = 0;
}
