//! Runtime lifetime, statistics, tracing and policy calls.

use super::args::{c_str, opt_c_str, out, sized_input, sized_out, write_string};
use super::status::guard;
use super::types::*;
use super::{entry, runtimes, RuntimeEntry};
use crate::backend::cpu::CpuOptions;
use crate::error::Error;
use crate::handle::HandleTable;
use crate::runtime::{PolicySource, Runtime, RuntimeConfig};
use parking_lot::Mutex;
use std::ffi::c_char;
use std::path::PathBuf;
use std::sync::Arc;

use super::nh_status;

/// Fills `desc` with defaults: CPU only, built-in "default" policy, all cores, stderr logging
/// at warn. `desc` must not be NULL.
#[no_mangle]
pub extern "C" fn nh_runtime_desc_init(desc: *mut nh_runtime_desc) -> nh_status {
    guard(|| {
        let d = out(desc, "desc")?;
        *d = nh_runtime_desc {
            struct_size: std::mem::size_of::<nh_runtime_desc>() as u32,
            devices: 0,
            threads: 0,
            policy_kind: nh_policy_kind::NH_POLICY_BUILTIN as u32,
            policy: std::ptr::null(),
            log_callback: None,
            log_user_data: std::ptr::null_mut(),
            log_level: 2,
            cpu_flags: 0,
            perf_cache_dir: std::ptr::null(),
            pool_cache_bytes: 0,
            sys_root: std::ptr::null(),
        };
        Ok(())
    })
}

pub(crate) fn policy_source(kind: u32, text: Option<&str>) -> crate::Result<PolicySource> {
    Ok(match (kind, text) {
        (0, None) => PolicySource::Builtin("default".into()),
        (0, Some(name)) => PolicySource::Builtin(name.into()),
        (1, Some(path)) => PolicySource::File(PathBuf::from(path)),
        (2, Some(src)) => PolicySource::Source { origin: "<source>".into(), text: src.into() },
        (1 | 2, None) => return Err(Error::NullPointer("policy")),
        (k, _) => return Err(Error::invalid(format!("policy_kind {k} is not an nh_policy_kind"))),
    })
}

/// Creates a runtime. On success `*out_runtime` holds its handle; destroy it with
/// `nh_runtime_destroy`. Fails with NH_ERR_POLICY (and the checker's message) if the policy
/// does not compile.
#[no_mangle]
pub extern "C" fn nh_runtime_create(desc: *const nh_runtime_desc, out_runtime: *mut nh_runtime) -> nh_status {
    guard(|| {
        let d = sized_input(desc, "desc")?;
        let slot = out(out_runtime, "out_runtime")?;
        if d.devices & !(NH_ENABLE_GPU | NH_ENABLE_NPU | NH_ENABLE_SIMULATED_NPU) != 0 {
            return Err(Error::invalid(format!("devices has unknown bits {:#x}", d.devices)));
        }
        if d.cpu_flags & !(NH_CPU_NO_WEIGHT_CACHE | NH_CPU_NO_KEEP_WARM) != 0 {
            return Err(Error::invalid(format!("cpu_flags has unknown bits {:#x}", d.cpu_flags)));
        }
        if d.log_level > 5 {
            return Err(Error::invalid(format!("log_level {} is not in 0..=5", d.log_level)));
        }
        // This runtime's own sink, until it is destroyed; creation's messages go to it alone.
        let log = crate::logging::Registration::new(
            d.log_callback,
            d.log_user_data,
            crate::logging::level_from_raw(d.log_level),
        );
        let _scope = log.scope();
        let mut config = RuntimeConfig { threads: d.threads as usize, ..Default::default() };
        config.cpu = CpuOptions {
            weight_cache: d.cpu_flags & NH_CPU_NO_WEIGHT_CACHE == 0,
            keep_warm: d.cpu_flags & NH_CPU_NO_KEEP_WARM == 0,
        };
        config.devices.gpu = d.devices & NH_ENABLE_GPU != 0;
        config.devices.npu = d.devices & NH_ENABLE_NPU != 0;
        if d.devices & NH_ENABLE_SIMULATED_NPU != 0 {
            // The simulated NPU runs what an XDNA1 NPU runs (bf16/i8 matmuls only): see docs/SIMULATED_NPU.md.
            config.devices.simulated_npu = Some(crate::backend::sim::SimNpuConfig::xdna1());
        }
        config.policy = policy_source(d.policy_kind, opt_c_str(d.policy, "policy")?)?;
        match opt_c_str(d.perf_cache_dir, "perf_cache_dir")? {
            Some("") => config.perf_cache_dir = None,
            Some(dir) => config.perf_cache_dir = Some(PathBuf::from(dir)),
            None => {}
        }
        if let Some(root) = opt_c_str(d.sys_root, "sys_root")? {
            config.sys_root = crate::device::SysRoot::new(root);
        }
        if d.pool_cache_bytes != 0 {
            config.pool_cache_bytes = d.pool_cache_bytes;
        }
        let rt = Runtime::new(config)?;
        let entry = Arc::new(RuntimeEntry {
            rt,
            events: Mutex::new(HandleTable::new("event")),
            graphs: Mutex::new(HandleTable::new("graph")),
            ggufs: Mutex::new(HandleTable::new("gguf")),
            _log: log,
        });
        slot.id = runtimes().write().insert(entry);
        Ok(())
    })
}

/// Destroys a runtime: calls on it that other threads are inside of return first (a
/// waiting `nh_event_wait` returns when its op completes), ops in flight complete, then its
/// buffers, events and graphs are released. The handle (and every handle it issued) is
/// invalid as soon as the call starts: calls made meanwhile fail with NH_ERR_INVALID_HANDLE.
/// After it returns, no op touches imported memory. Do not call it from a log callback.
#[no_mangle]
pub extern "C" fn nh_runtime_destroy(runtime: nh_runtime) -> nh_status {
    guard(|| {
        let entry = runtimes().write().remove(runtime.id)?;
        // Another thread inside a call holds the entry (an op being submitted, say): once it
        // is the last owner, dropping it shuts the runtime down (ops in flight finish first).
        drop(sole_owner(entry));
        Ok(())
    })
}

/// Waits until no other thread holds `entry` (they hold it only for the length of a call).
fn sole_owner(mut entry: Arc<RuntimeEntry>) -> RuntimeEntry {
    let mut pause = std::time::Duration::from_micros(20);
    loop {
        match Arc::try_unwrap(entry) {
            Ok(owned) => return owned,
            Err(shared) => entry = shared,
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(2));
    }
}

/// Blocks until every op submitted to the runtime has completed.
#[no_mangle]
pub extern "C" fn nh_runtime_synchronize(runtime: nh_runtime) -> nh_status {
    guard(|| {
        entry(runtime)?.rt.synchronize();
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn nh_runtime_get_stats(runtime: nh_runtime, stats: *mut nh_runtime_stats) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let o = sized_out(stats, "stats")?;
        let s = e.rt.stats();
        o.ops_submitted = s.ops_submitted;
        o.ops_completed = s.ops_completed;
        o.ops_failed = s.ops_failed;
        o.fallbacks = s.fallbacks;
        o.split_ops = s.split_ops;
        o.inline_ops = s.inline_ops;
        o.buffers_live = s.buffers_live;
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn nh_pool_get_stats(runtime: nh_runtime, stats: *mut nh_pool_stats) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let o = sized_out(stats, "stats")?;
        let s = e.rt.pool_stats();
        o.bytes_in_use = s.bytes_in_use;
        o.bytes_cached = s.bytes_cached;
        o.allocations = s.allocations;
        o.reuses = s.reuses;
        o.peak_bytes = s.peak_bytes;
        Ok(())
    })
}

/// Starts recording a Chrome trace-event JSON file (open it in Perfetto or chrome://tracing):
/// one lane per device, one slice per op or split part, instants for fallbacks and thermal
/// transitions. The file is written by `nh_trace_stop`.
#[no_mangle]
pub extern "C" fn nh_trace_start(runtime: nh_runtime, path: *const c_char) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        e.rt.trace_start(std::path::Path::new(c_str(path, "path")?))
    })
}

#[no_mangle]
pub extern "C" fn nh_trace_stop(runtime: nh_runtime) -> nh_status {
    guard(|| entry(runtime)?.rt.trace_stop().map(|_| ()))
}

/// Compiles a policy and swaps it in atomically. Ops already submitted finish under the old
/// policy. On error (NH_ERR_POLICY, message with file:line:column) the old policy stays.
/// `kind` is an `nh_policy_kind`; `text` is a built-in name, a file path or source text.
#[no_mangle]
pub extern "C" fn nh_policy_load(runtime: nh_runtime, kind: u32, text: *const c_char) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let source = policy_source(kind, Some(c_str(text, "text")?))?;
        e.rt.load_policy(&source)
    })
}

/// Name of the active policy, NUL-terminated, into `buf` (see `nh_last_error_message` on
/// NH_ERR_BUFFER_TOO_SMALL; `*needed`, if not NULL, gets the size needed).
#[no_mangle]
pub extern "C" fn nh_policy_name(
    runtime: nh_runtime,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        write_string(e.rt.policy().name(), buf, capacity, needed)
    })
}

/// The active policy's compiled tables, readable.
#[no_mangle]
pub extern "C" fn nh_policy_dump(
    runtime: nh_runtime,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        write_string(&e.rt.policy().dump(), buf, capacity, needed)
    })
}
