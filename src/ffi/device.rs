//! Devices: enumeration, info, statistics, readings and power modes.

use super::args::{fill_fixed, opt_c_str, out, sized_input, sized_out, write_string};
use super::entry;
use super::nh_status;
use super::status::guard;
use super::types::*;
use crate::backend::sim::Fault;
use crate::device::{ConfigPlan, PowerMode};
use crate::error::Error;
use std::ffi::c_char;

#[no_mangle]
pub extern "C" fn nh_device_count(runtime: nh_runtime, out_count: *mut u32) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        *out(out_count, "out_count")? = e.rt.device_count() as u32;
        Ok(())
    })
}

/// Fills `info` (set `info->struct_size` first) for device `index` (0 = the CPU).
#[no_mangle]
pub extern "C" fn nh_device_get_info(
    runtime: nh_runtime,
    index: u32,
    info: *mut nh_device_info,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let o = sized_out(info, "info")?;
        let i = e.rt.device_info(index as usize)?;
        o.kind = i.kind as u32;
        o.available = i.available as u32;
        o.dtypes = i.dtypes;
        o.ops = i.ops;
        o.max_in_flight = i.max_in_flight as u32;
        o.unified_memory = i.unified_memory as u32;
        o.memory_bytes = i.memory_bytes;
        o.peak_gflops = i.peak_gflops;
        o.bandwidth_gbs = i.bandwidth_gbs;
        fill_fixed(&mut o.name, &i.name);
        fill_fixed(&mut o.driver, &i.driver);
        fill_fixed(&mut o.unavailable_reason, &i.unavailable_reason);
        Ok(())
    })
}

/// The device's capability lines ("key: value\n" each), e.g. subgroup size, fp16, what is
/// configurable.
#[no_mangle]
pub extern "C" fn nh_device_details(
    runtime: nh_runtime,
    index: u32,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let i = e.rt.device_info(index as usize)?;
        let text: String = i.details.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        write_string(&text, buf, capacity, needed)
    })
}

/// Brings a device that was lost (it is left out until then) or degraded back into service,
/// after the caller restored it.
#[no_mangle]
pub extern "C" fn nh_device_reset(runtime: nh_runtime, index: u32) -> nh_status {
    guard(|| entry(runtime)?.rt.reset_device(index as usize))
}

#[no_mangle]
pub extern "C" fn nh_device_get_stats(
    runtime: nh_runtime,
    index: u32,
    stats: *mut nh_device_stats,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let o = sized_out(stats, "stats")?;
        let s = e.rt.device_stats(index as usize)?;
        o.degraded = s.degraded as u32;
        o.thermally_excluded = s.thermally_excluded as u32;
        o.ops_run = s.ops_run;
        o.busy_ns = s.busy_ns;
        o.bytes_moved = s.bytes_moved;
        o.failures = s.failures;
        o.fallbacks = s.fallbacks;
        o.queue_depth = s.queue_depth;
        Ok(())
    })
}

/// Current temperature, power and clock of a device (NaN where it has no such sensor).
#[no_mangle]
pub extern "C" fn nh_device_get_readings(
    runtime: nh_runtime,
    index: u32,
    readings: *mut nh_device_readings,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let o = sized_out(readings, "readings")?;
        let r = e.rt.device_readings(index as usize)?;
        o.temperature_c = r.temperature_c.unwrap_or(f32::NAN);
        o.power_w = r.power_w.unwrap_or(f32::NAN);
        o.clock_mhz = r.clock_mhz.unwrap_or(f32::NAN);
        Ok(())
    })
}

/// Sets a device's power mode (an `nh_power_mode`). NH_ERR_UNSUPPORTED where the device has
/// none; NH_ERR_PERMISSION (message names the refused call) without the privilege.
#[no_mangle]
pub extern "C" fn nh_device_set_power_mode(runtime: nh_runtime, index: u32, mode: u32) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let mode = PowerMode::from_raw(mode)
            .ok_or_else(|| Error::invalid(format!("mode {mode} is not an nh_power_mode")))?;
        e.rt.set_power_mode(index as usize, mode)
    })
}

/// Fills `plan` so that it changes nothing.
#[no_mangle]
pub extern "C" fn nh_config_plan_init(plan: *mut nh_config_plan) -> nh_status {
    guard(|| {
        *out(plan, "plan")? = nh_config_plan {
            struct_size: std::mem::size_of::<nh_config_plan>() as u32,
            npu_power_mode: -1,
            gpu_performance_level: std::ptr::null(),
            cpu_energy_preference: std::ptr::null(),
        };
        Ok(())
    })
}

/// Applies a configuration plan: all of it or, on any failure, none of it (earlier changes
/// are rolled back; NH_ERR_PERMISSION names the refused path or call). With `dry_run` != 0
/// nothing changes. The actions (taken, or that would be taken) are written one per line to
/// `buf` (may be NULL with `capacity` 0 when not wanted).
#[no_mangle]
pub extern "C" fn nh_configure(
    runtime: nh_runtime,
    plan: *const nh_config_plan,
    dry_run: u32,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let p = sized_input(plan, "plan")?;
        let npu_power_mode = match p.npu_power_mode {
            -1 => None,
            m => Some(u32::try_from(m).ok().and_then(PowerMode::from_raw).ok_or_else(|| {
                Error::invalid(format!("npu_power_mode {m} is not an nh_power_mode or -1"))
            })?),
        };
        let plan = ConfigPlan {
            npu_power_mode,
            gpu_performance_level: opt_c_str(p.gpu_performance_level, "gpu_performance_level")?
                .map(String::from),
            cpu_energy_preference: opt_c_str(p.cpu_energy_preference, "cpu_energy_preference")?
                .map(String::from),
        };
        let actions = e.rt.configure(&plan, dry_run != 0)?;
        let text: String = actions.iter().map(|a| format!("{a}\n")).collect();
        if buf.is_null() && needed.is_null() {
            return Ok(());
        }
        write_string(&text, buf, capacity, needed)
    })
}

/// What this machine lets be configured ("key: value" lines): NPU power modes, iGPU
/// performance levels, CPU energy preferences, with the current values.
#[no_mangle]
pub extern "C" fn nh_configurable(
    runtime: nh_runtime,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let text: String = e.rt.configurable().iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        write_string(&text, buf, capacity, needed)
    })
}

/// Tells a simulated device to fail (`kind` is an `nh_fault_kind`). NH_ERR_UNSUPPORTED for
/// real devices.
#[no_mangle]
pub extern "C" fn nh_device_inject_fault(
    runtime: nh_runtime,
    index: u32,
    kind: u32,
    param: f64,
    seed: u64,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let count = |what: &str| -> crate::Result<u64> {
            if param >= 1.0 && param.fract() == 0.0 && param < 1e15 {
                Ok(param as u64)
            } else {
                Err(Error::invalid(format!("{what}: param {param} must be a whole number >= 1")))
            }
        };
        let fault = match kind {
            0 => Fault::FailNth(count("NH_FAULT_FAIL_NTH")?),
            1 if (0.0..=1.0).contains(&param) => Fault::FailFraction { fraction: param, seed },
            1 => return Err(Error::invalid(format!("NH_FAULT_FAIL_FRACTION: param {param} is not in 0..1"))),
            2 => Fault::DeviceLost,
            3 => Fault::LoseAfter(count("NH_FAULT_LOSE_AFTER")?),
            k => return Err(Error::invalid(format!("kind {k} is not an nh_fault_kind"))),
        };
        e.rt.inject_fault(index as usize, fault)
    })
}
