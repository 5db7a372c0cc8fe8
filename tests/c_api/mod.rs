//! Helpers shared by the tests that drive the library through its C functions.
#![allow(dead_code)]

use npuhybrid::ffi::*;
use std::ffi::{CStr, CString};
use std::mem::zeroed;

use nh_status::*;

pub fn last_error() -> String {
    unsafe { CStr::from_ptr(nh_last_error_message()) }.to_string_lossy().into_owned()
}

/// A runtime over `devices` (NH_ENABLE_* bits) with no performance history on disk.
pub fn runtime(devices: u32) -> nh_runtime {
    let mut d: nh_runtime_desc = unsafe { zeroed() };
    assert_eq!(nh_runtime_desc_init(&mut d), NH_OK);
    d.devices = devices;
    let dir = CString::new("").unwrap();
    d.perf_cache_dir = dir.as_ptr();
    let mut rt = nh_runtime::default();
    assert_eq!(nh_runtime_create(&d, &mut rt), NH_OK, "{}", last_error());
    rt
}

/// A descriptor of `kind` with the defaults of `nh_op_desc_init`.
pub fn op(kind: nh_op_kind) -> nh_op_desc {
    let mut d: nh_op_desc = unsafe { zeroed() };
    assert_eq!(nh_op_desc_init(&mut d), NH_OK);
    d.kind = kind as u32;
    d
}

/// `n` pseudo-random values in [-1, 1), the same for the same seed.
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}
