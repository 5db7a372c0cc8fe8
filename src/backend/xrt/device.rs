//! An opened XRT device with its NPU kernels loaded. Every XRT handle (kernels, buffers, runs)
//! is created here at probe time, so running an op only looks handles up and never changes
//! XRT's handle tables (which older XRT versions do not lock).
//!
//! SAFETY of the FFI calls: every handle passed to XRT was returned non-null by XRT in this
//! module and stays open until the owner's `Drop` (runs and buffers before their kernel, kernels
//! before the device); pointer arguments point at live values for the duration of the call;
//! mapped buffer memory stays valid while its buffer is open, and a run's buffers are touched
//! only by the thread that took the run from the pool.

use super::api::{self, Handle, RunCalls, XrtApi, XrtLog};
use super::manifest::{self, KernelSpec};
use super::shim::{self, Qos, ShimApi};
use super::tiling::TileSlot;
use crate::device::{amdxdna, SysRoot};
use crate::error::{Error, Result};
use parking_lot::{Condvar, Mutex};
use std::ffi::{c_int, c_uint, CString};
use std::sync::Arc;
use std::time::Duration;

/// Runs prepared per kernel: the most the policy's in-flight limit may use at once.
pub const SLOTS_PER_KERNEL: usize = 8;
/// A launch that takes longer than this is reported as a device failure.
const RUN_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Session {
    pub api: &'static XrtApi,
    pub log: Option<&'static XrtLog>,
    device: Handle,
    /// The registration shim, or why it could not be loaded.
    pub shim: Result<&'static ShimApi, String>,
    /// The kernel driver binds an NPU to amdxdna (where only the shim can load xclbins).
    pub amdxdna: bool,
}

// The device handle is used through XRT's thread-safe C API.
unsafe impl Send for Session {}
unsafe impl Sync for Session {}

impl Session {
    /// XRT's own error messages since the last failure, or `fallback`.
    pub fn reason(&self, fallback: &str) -> String {
        let mut errors = self.log.map(|l| l.take_errors()).unwrap_or_default();
        if let Ok(shim) = &self.shim {
            errors.extend(Some(shim.last_error()).filter(|e| !e.is_empty()));
        }
        if errors.is_empty() {
            fallback.to_string()
        } else {
            format!("{fallback}: {}", errors.join("; "))
        }
    }

    /// Opens device 0. The error carries XRT's own reason.
    pub fn open(
        api: &'static XrtApi,
        log: Option<&'static XrtLog>,
        shim: Result<&'static ShimApi, String>,
    ) -> Result<Session, String> {
        let version = api.version.as_deref().unwrap_or("unknown version");
        let devices = api.probe.map(|p| unsafe { p() });
        // Without a shim already in the process, Debian's XRT 2.13 aborts the process on a
        // device call. NPU installations (XRT 2.17+ with the amdxdna plugin) find their shim
        // themselves, so the call is made when the kernel has an amdxdna device.
        let npu_present = !amdxdna::find_npus(&SysRoot::real()).is_empty();
        if api.probe.is_none() && !npu_present {
            return Err(format!(
                "XRT {version} ({}): neither libxrt_core (XRT's device shim) nor an amdxdna device is present",
                api.library
            ));
        }
        let device = unsafe { (api.device_open)(0) };
        if device.is_null() {
            let mut reason = format!("XRT {version} ({}) found no usable device", api.library);
            if let Some(n) = devices {
                reason += &format!(" (xclProbe: {n})");
            }
            let errors = log.map(|l| l.take_errors()).unwrap_or_default();
            reason += &if errors.is_empty() {
                ": xrtDeviceOpen(0) failed".to_string()
            } else {
                format!(": {}", errors.join("; "))
            };
            return Err(reason);
        }
        Ok(Session { api, log, device, shim, amdxdna: npu_present })
    }

    /// Which path loads kernels, for the device's details.
    pub fn path(&self) -> String {
        match &self.shim {
            Ok(s) => format!("xclbin registration + hardware context through {}", s.library),
            Err(_) => "XRT's C API (xrtDeviceLoadXclbinFile)".into(),
        }
    }

    /// Through the shim: register the xclbin, create a hardware context with `qos`, open the
    /// kernel in it. Returns the kernel and the table that drives it.
    fn open_with_shim(
        &self,
        shim: &'static ShimApi,
        spec: &KernelSpec,
        qos: Qos,
    ) -> Result<(Handle, &'static RunCalls, Handle), String> {
        let path = cstring(&spec.xclbin.to_string_lossy(), "xclbin path")?;
        let name = cstring(&spec.kernel_name, "kernel name")?;
        let mut uuid = [0u8; 16];
        let kernel =
            unsafe { (shim.kernel_open)(self.device, path.as_ptr(), name.as_ptr(), &qos, uuid.as_mut_ptr()) };
        if kernel.is_null() {
            let what = format!("{}: {}", spec.xclbin.display(), shim.last_error());
            return Err(self.reason(&what));
        }
        Ok((kernel, &shim.calls, kernel))
    }

    /// Through XRT's C API: load the xclbin onto the device, open the kernel from its uuid
    /// (XRT then makes a hardware context of its own, without QoS). Works where the device
    /// shim implements `load_axlf`, which the amdxdna shim does not.
    fn open_with_c_api(&self, spec: &KernelSpec) -> Result<(Handle, &'static RunCalls, Handle), String> {
        let api = self.api;
        let path = cstring(&spec.xclbin.to_string_lossy(), "xclbin path")?;
        let no_shim = || match &self.shim {
            Err(e) => format!(
                "; on amdxdna devices XRT's C API cannot load an xclbin: it must be registered \
                 through npuhybrid's XRT shim ({}), which could not be loaded: {e}",
                shim::SONAME
            ),
            Ok(_) => String::new(),
        };
        if self.amdxdna {
            return Err(format!("{}: NPU unavailable{}", spec.xclbin.display(), no_shim()));
        }
        if unsafe { (api.device_load_xclbin_file)(self.device, path.as_ptr()) } != 0 {
            let reason = self.reason(&format!("xrtDeviceLoadXclbinFile({})", spec.xclbin.display()));
            return Err(format!("{reason}{}", no_shim()));
        }
        let mut uuid = [0u8; 16];
        if unsafe { (api.device_get_xclbin_uuid)(self.device, uuid.as_mut_ptr()) } != 0 {
            return Err(self.reason("xrtDeviceGetXclbinUUID"));
        }
        let name = cstring(&spec.kernel_name, "kernel name")?;
        let kernel = unsafe { (api.kernel_open)(self.device, uuid.as_ptr(), name.as_ptr()) };
        if kernel.is_null() {
            return Err(self.reason(&format!("xrtPLKernelOpen({})", spec.kernel_name)));
        }
        Ok((kernel, &api.calls, self.device))
    }

    /// Loads the xclbin and opens its kernel (through the shim when it is there): one
    /// hardware context.
    fn open_kernel(&self, spec: &KernelSpec, qos: Qos) -> Result<Arc<OpenKernel>, String> {
        let (handle, calls, bo_owner) = match &self.shim {
            Ok(shim) => self.open_with_shim(shim, spec, qos)?,
            Err(_) => self.open_with_c_api(spec)?,
        };
        Ok(Arc::new(OpenKernel { calls, handle, bo_owner }))
    }

    /// Every stream of the manifest, each xclbin opened once (its streams share its context).
    pub fn load_all(&self, specs: &[KernelSpec], qos: Qos) -> Result<Vec<LoadedKernel>, String> {
        let mut open: Vec<(&KernelSpec, Arc<OpenKernel>)> = Vec::new();
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            let same = |(o, _): &&(&KernelSpec, Arc<OpenKernel>)| {
                o.xclbin == spec.xclbin && o.kernel_name == spec.kernel_name
            };
            let kernel = match open.iter().find(same) {
                Some((_, k)) => Arc::clone(k),
                None => {
                    let k = self.open_kernel(spec, qos)?;
                    open.push((spec, Arc::clone(&k)));
                    k
                }
            };
            out.push(self.load_stream(spec, kernel)?);
        }
        Ok(out)
    }

    /// Writes the instruction stream of `spec` and prepares its runs on `kernel`.
    fn load_stream(&self, spec: &KernelSpec, kernel: Arc<OpenKernel>) -> Result<LoadedKernel, String> {
        let calls = kernel.calls;
        let mut k = LoadedKernel {
            spec: spec.clone(),
            api: calls,
            bo_owner: kernel.bo_owner,
            kernel: kernel.handle,
            _open: kernel,
            owned: Vec::new(),
            instr: std::ptr::null_mut(),
            instr_words: 0,
            pool: Mutex::new(Vec::new()),
            returned: Condvar::new(),
        };
        let words = manifest::read_instructions(&spec.instructions)?;
        k.instr_words = u32::try_from(words.len()).map_err(|_| "instruction stream too long".to_string())?;
        k.instr = k.alloc(self, 4 * words.len(), api::BO_FLAGS_CACHEABLE, spec.args.instr)?;
        let api = calls;
        unsafe {
            let dst = (api.bo_map)(k.instr) as *mut u32;
            if dst.is_null() {
                return Err(self.reason("xrtBOMap(instructions)"));
            }
            std::ptr::copy_nonoverlapping(words.as_ptr(), dst, words.len());
            if (api.bo_sync)(k.instr, api::SYNC_TO_DEVICE, 4 * words.len(), 0) != 0 {
                return Err(self.reason("xrtBOSync(instructions)"));
            }
        }
        let mut slots = Vec::with_capacity(SLOTS_PER_KERNEL);
        for _ in 0..SLOTS_PER_KERNEL {
            slots.push(k.prepare_slot(self)?);
        }
        *k.pool.lock() = slots;
        Ok(k)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        unsafe { (self.api.device_close)(self.device) };
    }
}

fn cstring(s: &str, what: &str) -> Result<CString, String> {
    CString::new(s.as_bytes()).map_err(|_| format!("{what} has a NUL byte"))
}

/// An opened kernel (with its hardware context), closed when its last stream is dropped.
struct OpenKernel {
    calls: &'static RunCalls,
    handle: Handle,
    /// What buffers are allocated on: the device (C API) or the kernel (shim).
    bo_owner: Handle,
}

unsafe impl Send for OpenKernel {}
unsafe impl Sync for OpenKernel {}

impl Drop for OpenKernel {
    fn drop(&mut self) {
        unsafe { (self.calls.kernel_close)(self.handle) };
    }
}

/// One instruction stream on an opened kernel, with its instruction buffer and a pool of
/// prepared runs.
pub struct LoadedKernel {
    pub spec: KernelSpec,
    api: &'static RunCalls,
    bo_owner: Handle,
    kernel: Handle,
    /// Keeps the kernel open; dropped after this stream's runs and buffers (`Drop`).
    _open: Arc<OpenKernel>,
    /// Buffers and runs to release, in creation order.
    owned: Vec<Owned>,
    instr: Handle,
    instr_words: u32,
    pool: Mutex<Vec<XrtSlot>>,
    returned: Condvar,
}

enum Owned {
    Buffer(Handle),
    Run(Handle),
}

unsafe impl Send for LoadedKernel {}
unsafe impl Sync for LoadedKernel {}

impl LoadedKernel {
    fn alloc(&mut self, s: &Session, bytes: usize, flags: u64, arg: c_int) -> Result<Handle, String> {
        let group = unsafe { (self.api.kernel_arg_group_id)(self.kernel, arg) };
        if group < 0 {
            return Err(s.reason(&format!("xrtKernelArgGroupId({arg})")));
        }
        let bo = unsafe { (self.api.bo_alloc)(self.bo_owner, bytes, flags, group as u32) };
        if bo.is_null() {
            return Err(s.reason(&format!("xrtBOAlloc({bytes} bytes, group {group})")));
        }
        self.owned.push(Owned::Buffer(bo));
        Ok(bo)
    }

    fn prepare_slot(&mut self, s: &Session) -> Result<XrtSlot, String> {
        let spec = self.spec.clone();
        let host = api::BO_FLAGS_HOST_ONLY;
        let a = self.alloc(s, spec.a_bytes(), host, spec.args.a)?;
        let b = self.alloc(s, spec.b_bytes(), host, spec.args.b)?;
        let c = self.alloc(s, spec.c_bytes(), host, spec.args.c)?;
        let mut scratch = Vec::new();
        for &arg in &spec.args.scratch {
            scratch.push((arg, self.alloc(s, 4096, host, arg)?));
        }
        let api = self.api;
        let run = unsafe { (api.run_open)(self.kernel) };
        if run.is_null() {
            return Err(s.reason("xrtRunOpen"));
        }
        self.owned.push(Owned::Run(run));
        let args = &spec.args;
        // mlir-aie's argument list: opcode, instructions, their count, A, B, C, extra buffers.
        // Each at the width the design declares: opcode uint64_t, the count uint32_t.
        let rc = unsafe {
            [
                api.set_u64(run, args.opcode, spec.opcode),
                api.set_bo(run, args.instr, self.instr),
                api.set_u32(run, args.ninstr, self.instr_words),
                api.set_bo(run, args.a, a),
                api.set_bo(run, args.b, b),
                api.set_bo(run, args.c, c),
            ]
        };
        if rc.iter().any(|&r| r != 0) {
            return Err(s.reason("xrtRunSetArg"));
        }
        for (arg, bo) in scratch {
            if unsafe { api.set_bo(run, arg, bo) } != 0 {
                return Err(s.reason(&format!("xrtRunSetArg({arg})")));
            }
        }
        let map = |bo: Handle, what: &str| -> Result<*mut u8, String> {
            let p = unsafe { (api.bo_map)(bo) } as *mut u8;
            if p.is_null() {
                Err(s.reason(&format!("xrtBOMap({what})")))
            } else {
                Ok(p)
            }
        };
        Ok(XrtSlot {
            api,
            log: s.log,
            shim: s.shim.as_ref().ok().copied(),
            run,
            bos: [a, b, c],
            ptrs: [map(a, "A")?, map(b, "B")?, map(c, "C")?],
            lens: [spec.a_bytes(), spec.b_bytes(), spec.c_bytes()],
        })
    }

    /// Takes `want` runs (at least one; waits while none is free).
    pub fn take(&self, want: usize) -> Vec<XrtSlot> {
        let mut pool = self.pool.lock();
        while pool.is_empty() {
            self.returned.wait(&mut pool);
        }
        let n = want.clamp(1, pool.len());
        let at = pool.len() - n;
        pool.split_off(at)
    }

    pub fn give_back(&self, slots: Vec<XrtSlot>) {
        self.pool.lock().extend(slots);
        self.returned.notify_all();
    }
}

impl Drop for LoadedKernel {
    fn drop(&mut self) {
        for o in self.owned.drain(..).rev() {
            unsafe {
                match o {
                    Owned::Run(r) => (self.api.run_close)(r),
                    Owned::Buffer(b) => (self.api.bo_free)(b),
                };
            }
        }
    }
}

/// `enum ert_cmd_state` names, for messages.
fn state_name(state: c_int) -> String {
    let name = match state {
        0 | 4 | 12.. | ..0 => return format!("ert_cmd_state {state}"),
        1 => "NEW",
        2 => "QUEUED",
        3 => "RUNNING",
        5 => "ERROR",
        6 => "ABORT",
        7 => "SUBMITTED",
        8 => "TIMEOUT",
        9 => "NORESPONSE",
        10 => "SKERROR",
        _ => "SKCRASHED",
    };
    format!("ERT_CMD_STATE_{name} ({state})")
}

/// One prepared run with its mapped A, B and C buffers.
pub struct XrtSlot {
    api: &'static RunCalls,
    log: Option<&'static XrtLog>,
    shim: Option<&'static ShimApi>,
    run: Handle,
    bos: [Handle; 3],
    ptrs: [*mut u8; 3],
    lens: [usize; 3],
}

// A slot is used by one thread at a time (it is taken out of the pool).
unsafe impl Send for XrtSlot {}

impl XrtSlot {
    /// A device failure described as `what`, with what XRT logged about it.
    fn fail(&self, what: &str) -> Error {
        let mut errors = self.log.map(|l| l.take_errors()).unwrap_or_default();
        if let Some(shim) = self.shim {
            errors.extend(Some(shim.last_error()).filter(|e| !e.is_empty()));
        }
        Error::DeviceFailed(if errors.is_empty() {
            format!("XRT: {what}")
        } else {
            format!("XRT: {what}: {}", errors.join("; "))
        })
    }
}

impl TileSlot for XrtSlot {
    fn inputs(&mut self) -> (&mut [u8], &mut [u8]) {
        unsafe {
            (
                std::slice::from_raw_parts_mut(self.ptrs[0], self.lens[0]),
                std::slice::from_raw_parts_mut(self.ptrs[1], self.lens[1]),
            )
        }
    }

    fn start(&mut self) -> Result<()> {
        let api = self.api;
        for i in 0..2 {
            if unsafe { (api.bo_sync)(self.bos[i], api::SYNC_TO_DEVICE, self.lens[i], 0) } != 0 {
                return Err(self.fail("xrtBOSync(to device) failed"));
            }
        }
        if unsafe { (api.run_start)(self.run) } != 0 {
            return Err(self.fail("xrtRunStart failed"));
        }
        Ok(())
    }

    fn wait(&mut self) -> Result<&[u8]> {
        let api = self.api;
        let state = unsafe { (api.run_wait_for)(self.run, RUN_TIMEOUT.as_millis() as c_uint) };
        if state != api::CMD_STATE_COMPLETED {
            return Err(self.fail(&format!("run ended in {}", state_name(state))));
        }
        if unsafe { (api.bo_sync)(self.bos[2], api::SYNC_FROM_DEVICE, self.lens[2], 0) } != 0 {
            return Err(self.fail("xrtBOSync(from device) failed"));
        }
        Ok(unsafe { std::slice::from_raw_parts(self.ptrs[2], self.lens[2]) })
    }
}
