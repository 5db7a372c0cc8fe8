//! Devices: enumeration, info, statistics, readings and power modes.

use super::args::{fill_fixed, out, sized_out, write_string};
use super::entry;
use super::nh_status;
use super::status::guard;
use super::types::*;
use crate::device::PowerMode;
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
