//! XRT's C API, loaded at run time. The libraries are looked for under `$XILINX_XRT/lib`, then
//! `/opt/xilinx/xrt/lib` (AMD's packages), then by soname on the loader path (Debian's
//! `libxrt1`); sonames `.so.2` cover XRT 2.13 to current. Every symbol is checked, and a missing
//! one is reported by name. Loaded libraries are never unloaded: XRT starts threads and
//! registers static destructors that must outlive every handle.

use libloading::Library;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub type Handle = *mut c_void;

/// `enum xclBOSyncDirection`.
pub const SYNC_TO_DEVICE: c_int = 0;
pub const SYNC_FROM_DEVICE: c_int = 1;
/// `XCL_BO_FLAGS_CACHEABLE` (instruction buffers) and `XRT_BO_FLAGS_HOST_ONLY` (operands), as
/// mlir-aie's hosts allocate them.
pub const BO_FLAGS_CACHEABLE: u64 = 1 << 24;
pub const BO_FLAGS_HOST_ONLY: u64 = 1 << 29;
/// `ERT_CMD_STATE_COMPLETED`.
pub const CMD_STATE_COMPLETED: c_int = 4;

/// The calls that run a kernel: XRT's C API, or the registration shim's calls of the same
/// signatures (`shim::ShimApi`). `owner` of `bo_alloc` is the device for the C API and the
/// kernel for the shim.
pub struct RunCalls {
    pub kernel_close: unsafe extern "C" fn(Handle) -> c_int,
    pub kernel_arg_group_id: unsafe extern "C" fn(Handle, c_int) -> c_int,
    pub bo_alloc: unsafe extern "C" fn(Handle, usize, u64, u32) -> Handle,
    pub bo_free: unsafe extern "C" fn(Handle) -> c_int,
    pub bo_map: unsafe extern "C" fn(Handle) -> *mut c_void,
    pub bo_sync: unsafe extern "C" fn(Handle, c_int, usize, usize) -> c_int,
    pub run_open: unsafe extern "C" fn(Handle) -> Handle,
    pub run_close: unsafe extern "C" fn(Handle) -> c_int,
    pub set_arg: SetArg,
    pub run_start: unsafe extern "C" fn(Handle) -> c_int,
    pub run_wait_for: unsafe extern "C" fn(Handle, c_uint) -> c_int,
}

/// How a run's arguments are set.
pub enum SetArg {
    /// `xrtRunSetArg(run, index, ...)`: C variadic, read by XRT at the width the xclbin
    /// declares for the argument, so each value must be passed at exactly that width.
    Variadic(unsafe extern "C" fn(Handle, c_int, ...) -> c_int),
    /// The shim's typed calls.
    Typed {
        bo: unsafe extern "C" fn(Handle, c_int, Handle) -> c_int,
        scalar: unsafe extern "C" fn(Handle, c_int, *const c_void, usize) -> c_int,
    },
}

impl RunCalls {
    /// # Safety
    /// `run` and `bo` are live handles of this table's library.
    pub unsafe fn set_bo(&self, run: Handle, index: c_int, bo: Handle) -> c_int {
        match self.set_arg {
            SetArg::Variadic(f) => f(run, index, bo),
            SetArg::Typed { bo: f, .. } => f(run, index, bo),
        }
    }

    /// mlir-aie designs declare the opcode as `uint64_t`.
    ///
    /// # Safety
    /// `run` is a live run handle of this table's library.
    pub unsafe fn set_u64(&self, run: Handle, index: c_int, v: u64) -> c_int {
        match self.set_arg {
            SetArg::Variadic(f) => f(run, index, v),
            SetArg::Typed { scalar, .. } => scalar(run, index, &v as *const u64 as *const c_void, 8),
        }
    }

    /// The instruction count is `uint32_t` in mlir-aie designs (and so in XRT's view of them).
    ///
    /// # Safety
    /// `run` is a live run handle of this table's library.
    pub unsafe fn set_u32(&self, run: Handle, index: c_int, v: u32) -> c_int {
        match self.set_arg {
            SetArg::Variadic(f) => f(run, index, v as c_uint),
            SetArg::Typed { scalar, .. } => scalar(run, index, &v as *const u32 as *const c_void, 4),
        }
    }
}

/// The XRT functions the backend calls.
pub struct XrtApi {
    pub library: String,
    pub version: Option<String>,
    pub device_open: unsafe extern "C" fn(c_uint) -> Handle,
    pub device_close: unsafe extern "C" fn(Handle) -> c_int,
    pub device_load_xclbin_file: unsafe extern "C" fn(Handle, *const c_char) -> c_int,
    pub device_get_xclbin_uuid: unsafe extern "C" fn(Handle, *mut u8) -> c_int,
    pub kernel_open: unsafe extern "C" fn(Handle, *const u8, *const c_char) -> Handle,
    pub calls: RunCalls,
    /// `xrtIniStringSet` (XRT 2.11+): used to send XRT's log to a file instead of stderr.
    pub ini_string_set: Option<unsafe extern "C" fn(*const c_char, *const c_char) -> c_int>,
    /// `xclProbe` from libxrt_core: counts devices without opening one.
    pub probe: Option<unsafe extern "C" fn() -> c_uint>,
}

// The API is a table of function pointers into libraries that stay loaded.
unsafe impl Send for XrtApi {}
unsafe impl Sync for XrtApi {}

/// Where to look for a library, in order.
pub fn candidates(stem: &str) -> Vec<String> {
    let mut out = Vec::new();
    for dir in std::env::var_os("XILINX_XRT")
        .map(|d| PathBuf::from(d).join("lib"))
        .into_iter()
        .chain([PathBuf::from("/opt/xilinx/xrt/lib")])
    {
        out.push(dir.join(format!("{stem}.so.2")).display().to_string());
    }
    out.push(format!("{stem}.so.2"));
    out.push(format!("{stem}.so"));
    out
}

pub(super) fn open_first(names: &[String]) -> Result<(Library, String), String> {
    let mut tried = Vec::new();
    for name in names {
        // Absolute candidates that do not exist are skipped quietly; sonames go to the loader.
        if name.starts_with('/') && !Path::new(name).exists() {
            continue;
        }
        match unsafe { Library::new(name) } {
            Ok(lib) => return Ok((lib, name.clone())),
            Err(e) => tried.push(format!("{name} ({e})")),
        }
    }
    if tried.is_empty() {
        tried.push(names.join(", "));
    }
    Err(tried.join("; "))
}

/// Version from the file the loader actually mapped (`libxrt_coreutil.so.2.13.0` -> 2.13.0).
fn version_of(lib: &Library, symbol: &[u8]) -> Option<String> {
    let addr = unsafe { lib.get::<*const c_void>(symbol).ok().map(|s| *s)? };
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    if unsafe { libc::dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    let file = unsafe { CStr::from_ptr(info.dli_fname) }.to_str().ok()?;
    let real = std::fs::canonicalize(file).ok()?;
    let name = real.file_name()?.to_str()?;
    let v = name.split(".so.").nth(1)?;
    Some(v.to_string())
}

/// Loads libxrt_coreutil (the C API) and, if present, libxrt_core (the device shim).
pub fn load(coreutil: &[String], core: &[String]) -> Result<XrtApi, String> {
    let (lib, name) = open_first(coreutil).map_err(|e| format!("XRT is not installed: {e}"))?;
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
    let device_open = sym!("xrtDeviceOpen");
    let device_close = sym!("xrtDeviceClose");
    let device_load_xclbin_file = sym!("xrtDeviceLoadXclbinFile");
    let device_get_xclbin_uuid = sym!("xrtDeviceGetXclbinUUID");
    let kernel_open = sym!("xrtPLKernelOpen");
    let kernel_close = sym!("xrtKernelClose");
    let kernel_arg_group_id = sym!("xrtKernelArgGroupId");
    let bo_alloc = sym!("xrtBOAlloc");
    let bo_free = sym!("xrtBOFree");
    let bo_map = sym!("xrtBOMap");
    let bo_sync = sym!("xrtBOSync");
    let run_open = sym!("xrtRunOpen");
    let run_close = sym!("xrtRunClose");
    let run_set_arg = sym!("xrtRunSetArg");
    let run_start = sym!("xrtRunStart");
    let run_wait_for = sym!("xrtRunWaitFor");
    let ini_string_set = unsafe { lib.get(b"xrtIniStringSet\0").ok().map(|s| *s) };
    let version = version_of(&lib, b"xrtDeviceOpen\0");
    if !missing.is_empty() {
        return Err(format!(
            "{name} (XRT {}) lacks {}: the NPU backend needs XRT 2.13 or later",
            version.as_deref().unwrap_or("of unknown version"),
            missing.join(", ")
        ));
    }
    // The shim must be in the process before the first device call: without it Debian's
    // XRT 2.13 looks for it under a wrong path and aborts the process.
    let probe = open_first(core).ok().and_then(|(core_lib, _)| {
        let f = unsafe { core_lib.get(b"xclProbe\0").ok().map(|s| *s) };
        std::mem::forget(core_lib);
        f
    });
    std::mem::forget(lib);
    Ok(XrtApi {
        library: name,
        version,
        device_open: device_open.unwrap(),
        device_close: device_close.unwrap(),
        device_load_xclbin_file: device_load_xclbin_file.unwrap(),
        device_get_xclbin_uuid: device_get_xclbin_uuid.unwrap(),
        kernel_open: kernel_open.unwrap(),
        calls: RunCalls {
            kernel_close: kernel_close.unwrap(),
            kernel_arg_group_id: kernel_arg_group_id.unwrap(),
            bo_alloc: bo_alloc.unwrap(),
            bo_free: bo_free.unwrap(),
            bo_map: bo_map.unwrap(),
            bo_sync: bo_sync.unwrap(),
            run_open: run_open.unwrap(),
            run_close: run_close.unwrap(),
            set_arg: SetArg::Variadic(run_set_arg.unwrap()),
            run_start: run_start.unwrap(),
            run_wait_for: run_wait_for.unwrap(),
        },
        ini_string_set,
        probe,
    })
}

/// XRT's own log, sent to a file of ours so nothing reaches the host application's stderr
/// (XRT prints a build banner and its errors there by default). Errors are read back from it
/// and become the reasons we report. The file is an anonymous memory file that XRT opens
/// through `/proc/self/fd/N`, so nothing is left on disk.
pub struct XrtLog {
    file: File,
    read: parking_lot::Mutex<u64>,
}

impl XrtLog {
    /// Must run before any other XRT call in the process (XRT reads its settings once).
    pub fn redirect(api: &XrtApi) -> Option<XrtLog> {
        let set = api.ini_string_set?;
        // SAFETY: memfd_create takes a NUL-terminated name; a valid descriptor is owned once.
        let fd = unsafe { libc::memfd_create(c"npuhybrid-xrt-log".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        let file = unsafe { File::from_raw_fd(fd) };
        let key = CString::new("Runtime.runtime_log").ok()?;
        let value = CString::new(format!("/proc/self/fd/{fd}")).ok()?;
        (unsafe { set(key.as_ptr(), value.as_ptr()) } == 0)
            .then(|| XrtLog { file, read: parking_lot::Mutex::new(0) })
    }

    /// The error messages XRT logged since the last call, without timestamps.
    pub fn take_errors(&self) -> Vec<String> {
        let mut read = self.read.lock();
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = self.file.read_at(&mut chunk, *read + bytes.len() as u64) {
            bytes.extend_from_slice(&chunk[..n]);
        }
        *read += bytes.len() as u64;
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| l.split_once("ERROR: ").map(|(_, msg)| msg.trim().to_string()))
            .collect()
    }
}

/// Overrides where libxrt_coreutil is loaded from (a path or soname): for tests and for
/// installations in unusual places.
pub const ENV_LIBRARY: &str = "NPUHYBRID_XRT_LIB";

/// The process-wide XRT, loaded once from the standard places (or `$NPUHYBRID_XRT_LIB`).
pub fn system() -> &'static Result<(XrtApi, Option<XrtLog>), String> {
    static XRT: OnceLock<Result<(XrtApi, Option<XrtLog>), String>> = OnceLock::new();
    XRT.get_or_init(|| {
        let coreutil = match std::env::var(ENV_LIBRARY) {
            Ok(name) => vec![name],
            Err(_) => candidates("libxrt_coreutil"),
        };
        let api = load(&coreutil, &candidates("libxrt_core"))?;
        let log = XrtLog::redirect(&api);
        Ok((api, log))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_xrt_is_reported_with_every_name_tried() {
        let err =
            load(&["libnpuhybrid-no-such-xrt.so.2".into(), "/nonexistent/libxrt_coreutil.so.2".into()], &[])
                .err()
                .unwrap();
        assert!(err.starts_with("XRT is not installed: libnpuhybrid-no-such-xrt.so.2 ("), "{err}");
    }

    #[test]
    fn a_library_without_the_api_names_the_missing_symbols() {
        let err = load(&["libc.so.6".into()], &[]).err().unwrap();
        assert!(err.contains("lacks xrtDeviceOpen, xrtDeviceClose"), "{err}");
        assert!(err.contains("xrtRunWaitFor"), "{err}");
    }

    #[test]
    fn candidate_order_prefers_xilinx_xrt_then_opt_then_sonames() {
        let c = candidates("libxrt_coreutil");
        let n = c.len();
        assert_eq!(c[n - 3], "/opt/xilinx/xrt/lib/libxrt_coreutil.so.2");
        assert_eq!(&c[n - 2..], ["libxrt_coreutil.so.2", "libxrt_coreutil.so"]);
    }
}
