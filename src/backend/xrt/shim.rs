//! The registration shim (`shim/nh_xrt_shim.cpp`), loaded at run time like XRT itself. On
//! amdxdna devices XRT's C API cannot load an xclbin (`xrtDeviceLoadXclbinFile` reaches the
//! xdna shim's `load_axlf`, which throws "not supported") and has no hardware contexts, so the
//! backend registers xclbins, creates contexts (with QoS) and opens kernels through this small
//! C++ library built against XRT >= 2.17. It is never linked into libnpuhybrid.so.

use super::api::{open_first, Handle, RunCalls, SetArg};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::PathBuf;

/// Overrides where the shim is loaded from (a path or soname).
pub const ENV_SHIM: &str = "NPUHYBRID_XRT_SHIM";
pub const SONAME: &str = "libnpuhybrid_xrt_shim.so";
/// `NHX_ABI_VERSION` of `nh_xrt_shim.h`.
const ABI_VERSION: u32 = 1;

/// `struct nhx_qos`: amdxdna's per-context QoS; 0 leaves a field to the driver.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Qos {
    pub gops: u32,
    pub fps: u32,
    pub latency_ms: u32,
    pub priority: u32,
}

/// amdxdna's `AMDXDNA_QOS_*_PRIORITY`. In the driver (`aie2_ctx.c`, `aie2_calc_ctx_dpm`) a
/// context of low priority asks for DPM level 0, the lowest clock; every other context without
/// gops and fps or latency asks for the highest level.
pub const PRIORITY_REALTIME: u32 = 0x100;
pub const PRIORITY_HIGH: u32 = 0x180;
pub const PRIORITY_NORMAL: u32 = 0x200;
pub const PRIORITY_LOW: u32 = 0x280;

pub struct ShimApi {
    pub library: String,
    pub kernel_open:
        unsafe extern "C" fn(Handle, *const c_char, *const c_char, *const Qos, *mut u8) -> Handle,
    last_error: unsafe extern "C" fn() -> *const c_char,
    pub calls: RunCalls,
}

// A table of function pointers into a library that stays loaded.
unsafe impl Send for ShimApi {}
unsafe impl Sync for ShimApi {}

impl ShimApi {
    /// The message of the shim's last failure on this thread.
    pub fn last_error(&self) -> String {
        let p = unsafe { (self.last_error)() };
        if p.is_null() {
            return String::new();
        }
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Where the shim is looked for: `$NPUHYBRID_XRT_SHIM` alone if set, else next to the library
/// holding this code (where `cmake --install` puts both), else the loader path.
pub fn candidates() -> Vec<String> {
    if let Ok(name) = std::env::var(ENV_SHIM) {
        return vec![name];
    }
    let mut out = Vec::new();
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let here = candidates as *const c_void;
    if unsafe { libc::dladdr(here, &mut info) } != 0 && !info.dli_fname.is_null() {
        let file = PathBuf::from(unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().as_ref());
        if let Some(dir) = file.parent() {
            out.push(dir.join(SONAME).display().to_string());
        }
    }
    out.push(SONAME.to_string());
    out
}

/// Loads the shim (after XRT: it links against libxrt_coreutil, which the loader then finds
/// already in the process).
pub fn load(names: &[String]) -> Result<ShimApi, String> {
    let (lib, name) = open_first(names)?;
    let mut missing = Vec::new();
    macro_rules! sym {
        ($name:literal) => {
            match unsafe { lib.get(concat!($name, "\0").as_bytes()) } {
                Ok(s) => Some(*s),
                Err(_) => {
                    missing.push($name);
                    None
                }
            }
        };
    }
    let abi: Option<unsafe extern "C" fn() -> u32> = sym!("nhx_abi_version");
    let last_error = sym!("nhx_last_error");
    let kernel_open = sym!("nhx_kernel_open");
    let kernel_close = sym!("nhx_kernel_close");
    let group_id = sym!("nhx_kernel_arg_group_id");
    let bo_alloc = sym!("nhx_bo_alloc");
    let bo_free = sym!("nhx_bo_free");
    let bo_map = sym!("nhx_bo_map");
    let bo_sync = sym!("nhx_bo_sync");
    let run_open = sym!("nhx_run_open");
    let run_close = sym!("nhx_run_close");
    let set_bo: Option<unsafe extern "C" fn(Handle, c_int, Handle) -> c_int> = sym!("nhx_run_set_arg_bo");
    let set_scalar = sym!("nhx_run_set_arg_scalar");
    let run_start = sym!("nhx_run_start");
    let run_wait_for = sym!("nhx_run_wait_for");
    if !missing.is_empty() {
        return Err(format!("{name} lacks {}", missing.join(", ")));
    }
    let abi = unsafe { abi.unwrap()() };
    if abi != ABI_VERSION {
        return Err(format!("{name} has shim ABI {abi}, this library needs {ABI_VERSION}"));
    }
    std::mem::forget(lib);
    Ok(ShimApi {
        library: name,
        kernel_open: kernel_open.unwrap(),
        last_error: last_error.unwrap(),
        calls: RunCalls {
            kernel_close: kernel_close.unwrap(),
            kernel_arg_group_id: group_id.unwrap(),
            bo_alloc: bo_alloc.unwrap(),
            bo_free: bo_free.unwrap(),
            bo_map: bo_map.unwrap(),
            bo_sync: bo_sync.unwrap(),
            run_open: run_open.unwrap(),
            run_close: run_close.unwrap(),
            set_arg: SetArg::Typed { bo: set_bo.unwrap(), scalar: set_scalar.unwrap() },
            run_start: run_start.unwrap(),
            run_wait_for: run_wait_for.unwrap(),
        },
    })
}

/// The process-wide shim, loaded once (call after XRT is loaded), or why it is not there.
pub fn system() -> Result<&'static ShimApi, String> {
    static SHIM: std::sync::OnceLock<Result<ShimApi, String>> = std::sync::OnceLock::new();
    SHIM.get_or_init(|| load(&candidates())).as_ref().map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_shim_names_what_was_tried() {
        let err = load(&["libnpuhybrid-no-such-shim.so".into()]).err().unwrap();
        assert!(err.starts_with("libnpuhybrid-no-such-shim.so ("), "{err}");
        let err = load(&["libc.so.6".into()]).err().unwrap();
        assert!(err.contains("lacks nhx_abi_version, nhx_last_error"), "{err}");
    }

    #[test]
    fn qos_matches_the_c_struct() {
        assert_eq!(std::mem::size_of::<Qos>(), 16);
    }
}
