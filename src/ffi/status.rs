//! Status codes, the per-thread last error message, and the panic boundary every exported
//! function goes through.

use crate::error::Error;
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Result of every `nh_` call. `NH_OK` is 0; `nh_last_error_message` explains the others.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum nh_status {
    NH_OK = 0,
    NH_ERR_INVALID_ARGUMENT = 1,
    NH_ERR_NULL_POINTER = 2,
    NH_ERR_INVALID_HANDLE = 3,
    NH_ERR_STRUCT_SIZE = 4,
    NH_ERR_OUT_OF_MEMORY = 5,
    NH_ERR_UNSUPPORTED = 6,
    NH_ERR_DEVICE_UNAVAILABLE = 7,
    NH_ERR_DEVICE_FAILED = 8,
    NH_ERR_DEVICE_LOST = 9,
    /// The op (or wait) has not completed yet: not a failure.
    NH_ERR_TIMEOUT = 10,
    NH_ERR_POLICY = 11,
    NH_ERR_IO = 12,
    NH_ERR_PERMISSION = 13,
    NH_ERR_BUSY = 14,
    NH_ERR_BUFFER_TOO_SMALL = 15,
    /// A bug inside the library was caught at the boundary; the runtime stays usable.
    NH_ERR_PANIC = 16,
    NH_ERR_INTERNAL = 17,
}

use nh_status::*;

impl From<&Error> for nh_status {
    fn from(e: &Error) -> nh_status {
        match e {
            Error::InvalidArgument(_) => NH_ERR_INVALID_ARGUMENT,
            Error::NullPointer(_) => NH_ERR_NULL_POINTER,
            Error::InvalidHandle(_) => NH_ERR_INVALID_HANDLE,
            Error::StructSize(_) => NH_ERR_STRUCT_SIZE,
            Error::OutOfMemory(_) => NH_ERR_OUT_OF_MEMORY,
            Error::Unsupported(_) => NH_ERR_UNSUPPORTED,
            Error::DeviceUnavailable(_) => NH_ERR_DEVICE_UNAVAILABLE,
            Error::DeviceFailed(_) => NH_ERR_DEVICE_FAILED,
            Error::DeviceLost(_) => NH_ERR_DEVICE_LOST,
            Error::Timeout(_) => NH_ERR_TIMEOUT,
            Error::Policy(_) => NH_ERR_POLICY,
            Error::Io(_) => NH_ERR_IO,
            Error::Permission(_) => NH_ERR_PERMISSION,
            Error::Busy(_) => NH_ERR_BUSY,
            Error::BufferTooSmall(_) => NH_ERR_BUFFER_TOO_SMALL,
            Error::Internal(_) => NH_ERR_INTERNAL,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(crate) fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|slot| *slot.borrow_mut() = c);
}

/// Runs `f` behind the panic boundary: errors and panics become a status and a message.
pub(crate) fn guard(f: impl FnOnce() -> crate::Result<()>) -> nh_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            set_last_error("");
            NH_OK
        }
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            nh_status::from(&e)
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal panic caught at the C boundary: {what}"));
            NH_ERR_PANIC
        }
    }
}

/// The message of the last failed call on this thread ("" after a success). The pointer
/// stays valid until the next `nh_` call on the same thread. Never NULL.
#[no_mangle]
pub extern "C" fn nh_last_error_message() -> *const c_char {
    LAST_ERROR.with(|slot| slot.borrow().as_ptr())
}

/// A static name for a status, e.g. "NH_ERR_INVALID_HANDLE"; "unknown status" for a value
/// that is not an `nh_status` (the parameter is an int so that any value a caller passes is
/// defined behaviour). Never NULL.
#[no_mangle]
pub extern "C" fn nh_status_name(status: std::ffi::c_int) -> *const c_char {
    status_name(status).as_ptr() as *const c_char
}

fn status_name(status: std::ffi::c_int) -> &'static [u8] {
    const NAMES: [&[u8]; 18] = [
        b"NH_OK\0",
        b"NH_ERR_INVALID_ARGUMENT\0",
        b"NH_ERR_NULL_POINTER\0",
        b"NH_ERR_INVALID_HANDLE\0",
        b"NH_ERR_STRUCT_SIZE\0",
        b"NH_ERR_OUT_OF_MEMORY\0",
        b"NH_ERR_UNSUPPORTED\0",
        b"NH_ERR_DEVICE_UNAVAILABLE\0",
        b"NH_ERR_DEVICE_FAILED\0",
        b"NH_ERR_DEVICE_LOST\0",
        b"NH_ERR_TIMEOUT\0",
        b"NH_ERR_POLICY\0",
        b"NH_ERR_IO\0",
        b"NH_ERR_PERMISSION\0",
        b"NH_ERR_BUSY\0",
        b"NH_ERR_BUFFER_TOO_SMALL\0",
        b"NH_ERR_PANIC\0",
        b"NH_ERR_INTERNAL\0",
    ];
    usize::try_from(status).ok().and_then(|i| NAMES.get(i).copied()).unwrap_or(b"unknown status\0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_its_name_and_others_are_unknown() {
        let all = [
            NH_OK,
            NH_ERR_INVALID_ARGUMENT,
            NH_ERR_NULL_POINTER,
            NH_ERR_INVALID_HANDLE,
            NH_ERR_STRUCT_SIZE,
            NH_ERR_OUT_OF_MEMORY,
            NH_ERR_UNSUPPORTED,
            NH_ERR_DEVICE_UNAVAILABLE,
            NH_ERR_DEVICE_FAILED,
            NH_ERR_DEVICE_LOST,
            NH_ERR_TIMEOUT,
            NH_ERR_POLICY,
            NH_ERR_IO,
            NH_ERR_PERMISSION,
            NH_ERR_BUSY,
            NH_ERR_BUFFER_TOO_SMALL,
            NH_ERR_PANIC,
            NH_ERR_INTERNAL,
        ];
        for s in all {
            let name = std::str::from_utf8(status_name(s as i32)).unwrap();
            assert_eq!(name.trim_end_matches('\0'), format!("{s:?}"));
        }
        for raw in [18, 100, -1, i32::MIN, i32::MAX] {
            assert_eq!(status_name(raw), b"unknown status\0");
        }
    }
}
