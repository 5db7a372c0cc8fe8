//! Every function of the C API called from Rust: its main path and its errors.

mod c_api;

use c_api::*;
use npuhybrid::ffi::*;
use std::ffi::{CStr, CString};
use std::mem::{size_of, zeroed};
use std::ptr::{null, null_mut};

use nh_status::*;

fn tensor(b: nh_buffer, shape: &[u64]) -> nh_tensor {
    let mut t = nh_tensor {
        buffer: b,
        dtype: nh_dtype::NH_F32 as u32,
        rank: shape.len() as u32,
        ..Default::default()
    };
    t.shape[..shape.len()].copy_from_slice(shape);
    t
}

fn alloc_f32(rt: nh_runtime, data: &[f32]) -> nh_buffer {
    let mut b = nh_buffer::default();
    assert_eq!(nh_buffer_alloc(rt, data.len() * 4, &mut b), NH_OK);
    assert_eq!(nh_buffer_write(rt, b, 0, data.as_ptr().cast(), data.len() * 4), NH_OK);
    b
}

#[test]
fn version_status_names_and_last_error() {
    let v = unsafe { CStr::from_ptr(nh_version()) }.to_str().unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    assert_eq!(nh_abi_version(), 1);
    let name = unsafe { CStr::from_ptr(nh_status_name(NH_ERR_INVALID_HANDLE as i32)) }.to_str().unwrap();
    assert_eq!(name, "NH_ERR_INVALID_HANDLE");
    assert_eq!(nh_runtime_destroy(nh_runtime { id: 7 }), NH_ERR_INVALID_HANDLE);
    assert!(last_error().contains("runtime"), "{}", last_error());
    assert_eq!(nh_abi_version(), 1);
}

#[test]
fn runtime_devices_stats_and_synchronize() {
    let rt = runtime(NH_ENABLE_SIMULATED_NPU | NH_ENABLE_NPU);
    let mut n = 0u32;
    assert_eq!(nh_device_count(rt, &mut n), NH_OK);
    assert_eq!(n, 3, "cpu, npu (unavailable here), simulated npu");
    let mut info: nh_device_info = unsafe { zeroed() };
    info.struct_size = size_of::<nh_device_info>() as u32;
    assert_eq!(nh_device_get_info(rt, 1, &mut info), NH_OK);
    assert_eq!(info.kind, nh_device_kind::NH_DEVICE_NPU as u32);
    assert_eq!(info.available, 0);
    let reason = unsafe { CStr::from_ptr(info.unavailable_reason.as_ptr()) }.to_str().unwrap();
    assert!(!reason.is_empty());
    let mut needed = 0usize;
    assert_eq!(nh_device_details(rt, 2, null_mut(), 0, &mut needed), NH_OK);
    assert!(needed > 1);
    let mut readings: nh_device_readings = unsafe { zeroed() };
    readings.struct_size = size_of::<nh_device_readings>() as u32;
    assert_eq!(nh_device_get_readings(rt, 2, &mut readings), NH_OK);
    assert!(readings.temperature_c.is_finite());
    assert_eq!(nh_device_set_power_mode(rt, 2, nh_power_mode::NH_POWER_BALANCED as u32), NH_OK);
    assert_eq!(nh_device_set_power_mode(rt, 2, 99), NH_ERR_INVALID_ARGUMENT);
    let mut stats: nh_device_stats = unsafe { zeroed() };
    stats.struct_size = size_of::<nh_device_stats>() as u32;
    assert_eq!(nh_device_get_stats(rt, 0, &mut stats), NH_OK);
    let mut rs: nh_runtime_stats = unsafe { zeroed() };
    rs.struct_size = size_of::<nh_runtime_stats>() as u32;
    assert_eq!(nh_runtime_get_stats(rt, &mut rs), NH_OK);
    let mut ps: nh_pool_stats = unsafe { zeroed() };
    ps.struct_size = 3;
    assert_eq!(nh_pool_get_stats(rt, &mut ps), NH_ERR_STRUCT_SIZE);
    ps.struct_size = size_of::<nh_pool_stats>() as u32;
    assert_eq!(nh_pool_get_stats(rt, &mut ps), NH_OK);
    assert_eq!(nh_runtime_synchronize(rt), NH_OK);
    assert_eq!(nh_runtime_destroy(rt), NH_OK);
    assert_eq!(nh_runtime_synchronize(rt), NH_ERR_INVALID_HANDLE);
}

#[test]
fn buffers_ops_events_and_graphs() {
    let rt = runtime(0);
    let a = alloc_f32(rt, &[1.0, 2.0, 3.0, 4.0]);
    let mut host = [0f32; 4];
    let mut b = nh_buffer::default();
    assert_eq!(nh_buffer_import(rt, host.as_mut_ptr().cast(), 16, &mut b), NH_OK);
    let mut size = 0usize;
    assert_eq!(nh_buffer_size(rt, a, &mut size), NH_OK);
    assert_eq!(size, 16);

    let mut d = op(nh_op_kind::NH_OP_SCALE);
    d.alpha = 3.0;
    d.inputs[0] = tensor(a, &[4]);
    d.output = tensor(b, &[4]);
    let mut ev = nh_event::default();
    assert_eq!(nh_submit(rt, &d, &mut ev), NH_OK);
    assert_eq!(nh_event_wait(rt, ev, u64::MAX), NH_OK);
    assert_eq!(nh_event_query(rt, ev), NH_OK);
    let mut info: nh_event_info = unsafe { zeroed() };
    info.struct_size = size_of::<nh_event_info>() as u32;
    assert_eq!(nh_event_get_info(rt, ev, &mut info), NH_OK);
    assert_eq!((info.status, info.device, info.parts), (NH_OK, 0, 1));
    assert_eq!(nh_event_release(rt, ev), NH_OK);
    assert_eq!(nh_event_release(rt, ev), NH_ERR_INVALID_HANDLE);
    let mut out = [0f32; 4];
    assert_eq!(nh_buffer_read(rt, b, 0, out.as_mut_ptr().cast(), 16), NH_OK);
    assert_eq!(out, [3.0, 6.0, 9.0, 12.0]);

    let mut p: *mut std::ffi::c_void = null_mut();
    assert_eq!(nh_buffer_map(rt, a, &mut p, null_mut()), NH_OK);
    unsafe { *(p as *mut f32) = 10.0 };
    assert_eq!(nh_buffer_unmap(rt, a, 1), NH_OK);

    let mut g = nh_graph::default();
    assert_eq!(nh_graph_create(rt, &mut g), NH_OK);
    let mut add = op(nh_op_kind::NH_OP_ADD);
    add.inputs[0] = tensor(a, &[4]);
    add.inputs[1] = tensor(a, &[4]);
    add.output = tensor(b, &[4]);
    assert_eq!(nh_graph_add(rt, g, &add), NH_OK);
    let mut bad = add;
    bad.inputs[1].shape[0] = 3;
    assert_eq!(nh_graph_add(rt, g, &bad), NH_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("broadcast"), "{}", last_error());
    let mut count = 0usize;
    assert_eq!(nh_graph_op_count(rt, g, &mut count), NH_OK);
    assert_eq!(count, 1);
    assert_eq!(nh_graph_submit(rt, g, &mut ev), NH_OK);
    assert_eq!(nh_event_wait(rt, ev, u64::MAX), NH_OK);
    assert_eq!(nh_buffer_read(rt, b, 0, out.as_mut_ptr().cast(), 16), NH_OK);
    assert_eq!(out[0], 20.0);
    // Replacing a recorded op: a bad op or index leaves the graph as it was.
    assert_eq!(nh_graph_set_op(rt, g, 0, &bad), NH_ERR_INVALID_ARGUMENT);
    assert_eq!(nh_graph_set_op(rt, g, 1, &add), NH_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("out of range"), "{}", last_error());
    assert_eq!(nh_graph_set_op(rt, g, 0, null()), NH_ERR_NULL_POINTER);
    let mut scale = op(nh_op_kind::NH_OP_SCALE);
    scale.inputs[0] = tensor(a, &[4]);
    scale.output = tensor(b, &[4]);
    scale.alpha = 3.0;
    assert_eq!(nh_graph_set_op(rt, g, 0, &scale), NH_OK);
    assert_eq!(nh_graph_op_count(rt, g, &mut count), NH_OK);
    assert_eq!(count, 1);
    assert_eq!(nh_event_release(rt, ev), NH_OK);
    assert_eq!(nh_graph_submit(rt, g, &mut ev), NH_OK);
    assert_eq!(nh_event_wait(rt, ev, u64::MAX), NH_OK);
    assert_eq!(nh_buffer_read(rt, b, 0, out.as_mut_ptr().cast(), 16), NH_OK);
    assert_eq!(out[0], 30.0, "the replaced op ran: 3 * 10");
    assert_eq!(nh_graph_destroy(rt, g), NH_OK);
    assert_eq!(nh_graph_set_op(rt, g, 0, &scale), NH_ERR_INVALID_HANDLE);

    let path = std::env::temp_dir().join(format!("nh_ffi_{}.bin", std::process::id()));
    std::fs::write(&path, [0u8; 64]).unwrap();
    let cpath = CString::new(path.to_str().unwrap()).unwrap();
    let mut m = nh_buffer::default();
    assert_eq!(nh_buffer_map_file(rt, cpath.as_ptr(), &mut m), NH_OK);
    assert_eq!(nh_buffer_write(rt, m, 0, out.as_ptr().cast(), 4), NH_ERR_INVALID_ARGUMENT);
    assert_eq!(nh_buffer_unmap(rt, m, 1), NH_ERR_INVALID_ARGUMENT);
    for buf in [a, b, m] {
        assert_eq!(nh_buffer_destroy(rt, buf), NH_OK);
    }
    std::fs::remove_file(path).unwrap();
    assert_eq!(nh_runtime_destroy(rt), NH_OK);
    let _ = host;
}

#[test]
fn policies_explain_and_trace() {
    let rt = runtime(NH_ENABLE_SIMULATED_NPU);
    let name = CString::new("continuous_audio").unwrap();
    assert_eq!(nh_policy_load(rt, nh_policy_kind::NH_POLICY_BUILTIN as u32, name.as_ptr()), NH_OK);
    let bad = CString::new("policy \"p\"\nrule r {\n  use cpu\n  strategy fastest\n}\n").unwrap();
    assert_eq!(nh_policy_load(rt, nh_policy_kind::NH_POLICY_SOURCE as u32, bad.as_ptr()), NH_ERR_POLICY);
    assert!(last_error().contains(":4:"), "{}", last_error());
    let mut buf = [0 as std::ffi::c_char; 64];
    assert_eq!(nh_policy_name(rt, buf.as_mut_ptr(), buf.len(), null_mut()), NH_OK);
    assert_eq!(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap(), "continuous_audio");
    let mut needed = 0;
    assert_eq!(nh_policy_dump(rt, null_mut(), 0, &mut needed), NH_OK);
    assert!(needed > 10);
    let a = alloc_f32(rt, &[0.0; 64]);
    let mut d = op(nh_op_kind::NH_OP_MATMUL);
    d.inputs[0] = tensor(a, &[8, 8]);
    d.inputs[1] = tensor(a, &[8, 8]);
    d.output = tensor(a, &[8, 8]);
    assert_eq!(
        nh_policy_explain(rt, &d, null_mut(), 0, &mut needed),
        NH_ERR_INVALID_ARGUMENT,
        "output overlaps an input"
    );
    let c = alloc_f32(rt, &[0.0; 64]);
    d.output = tensor(c, &[8, 8]);
    let mut text = vec![0 as std::ffi::c_char; 8192];
    assert_eq!(nh_policy_explain(rt, &d, text.as_mut_ptr(), text.len(), null_mut()), NH_OK);
    let text = unsafe { CStr::from_ptr(text.as_ptr()) }.to_str().unwrap().to_string();
    assert!(text.contains("Simulated NPU"), "{text}");
    let path = std::env::temp_dir().join(format!("nh_ffi_trace_{}.json", std::process::id()));
    let cpath = CString::new(path.to_str().unwrap()).unwrap();
    assert_eq!(nh_trace_start(rt, cpath.as_ptr()), NH_OK);
    let mut ev = nh_event::default();
    assert_eq!(nh_submit(rt, &d, &mut ev), NH_OK);
    assert_eq!(nh_event_wait(rt, ev, u64::MAX), NH_OK);
    assert_eq!(nh_trace_stop(rt), NH_OK);
    assert_eq!(nh_trace_stop(rt), NH_ERR_INVALID_ARGUMENT);
    assert!(std::fs::read_to_string(&path).unwrap().contains("traceEvents"));
    std::fs::remove_file(path).unwrap();
    assert_eq!(nh_trace_start(rt, null()), NH_ERR_NULL_POINTER);
    assert_eq!(nh_runtime_destroy(rt), NH_OK);
}

#[test]
fn configuration_and_faults() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sys/devices/system/cpu/cpufreq/policy0");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("energy_performance_preference"), "performance\n").unwrap();
    std::fs::write(dir.join("energy_performance_available_preferences"), "performance power\n").unwrap();
    let mut d: nh_runtime_desc = unsafe { zeroed() };
    assert_eq!(nh_runtime_desc_init(&mut d), NH_OK);
    d.devices = NH_ENABLE_SIMULATED_NPU;
    let croot = CString::new(root.path().to_str().unwrap()).unwrap();
    d.sys_root = croot.as_ptr();
    let empty = CString::new("").unwrap();
    d.perf_cache_dir = empty.as_ptr();
    let mut rt = nh_runtime::default();
    assert_eq!(nh_runtime_create(&d, &mut rt), NH_OK);

    let mut needed = 0;
    assert_eq!(nh_configurable(rt, null_mut(), 0, &mut needed), NH_OK);
    let mut plan: nh_config_plan = unsafe { zeroed() };
    assert_eq!(nh_config_plan_init(&mut plan), NH_OK);
    let power = CString::new("power").unwrap();
    plan.cpu_energy_preference = power.as_ptr();
    let mut text = vec![0 as std::ffi::c_char; 1024];
    assert_eq!(nh_configure(rt, &plan, 1, text.as_mut_ptr(), text.len(), null_mut()), NH_OK);
    assert!(unsafe { CStr::from_ptr(text.as_ptr()) }.to_str().unwrap().contains("write 'power'"));
    assert_eq!(std::fs::read_to_string(dir.join("energy_performance_preference")).unwrap(), "performance\n");
    assert_eq!(nh_configure(rt, &plan, 0, null_mut(), 0, null_mut()), NH_OK);
    assert_eq!(std::fs::read_to_string(dir.join("energy_performance_preference")).unwrap().trim(), "power");
    plan.npu_power_mode = 9;
    assert_eq!(nh_configure(rt, &plan, 1, null_mut(), 0, null_mut()), NH_ERR_INVALID_ARGUMENT);

    assert_eq!(nh_device_inject_fault(rt, 1, nh_fault_kind::NH_FAULT_DEVICE_LOST as u32, 0.0, 0), NH_OK);
    assert_eq!(
        nh_device_inject_fault(rt, 1, nh_fault_kind::NH_FAULT_FAIL_NTH as u32, 0.5, 0),
        NH_ERR_INVALID_ARGUMENT
    );
    assert_eq!(nh_device_inject_fault(rt, 1, 42, 1.0, 0), NH_ERR_INVALID_ARGUMENT);
    assert_eq!(
        nh_device_inject_fault(rt, 0, nh_fault_kind::NH_FAULT_DEVICE_LOST as u32, 0.0, 0),
        NH_ERR_UNSUPPORTED
    );
    assert_eq!(nh_runtime_destroy(rt), NH_OK);
}

/// `cpu_flags` turns the CPU's weight cache and keep-warm threads off; results stay the same,
/// and unknown bits are refused.
#[test]
fn cpu_flags_switch_behaviours_off_and_reject_unknown_bits() {
    for flags in
        [0, NH_CPU_NO_WEIGHT_CACHE, NH_CPU_NO_KEEP_WARM, NH_CPU_NO_WEIGHT_CACHE | NH_CPU_NO_KEEP_WARM]
    {
        let mut d: nh_runtime_desc = unsafe { zeroed() };
        assert_eq!(nh_runtime_desc_init(&mut d), NH_OK);
        assert_eq!(d.cpu_flags, 0, "the defaults are on");
        d.cpu_flags = flags;
        d.threads = 2;
        let dir = CString::new("").unwrap();
        d.perf_cache_dir = dir.as_ptr();
        let mut rt = nh_runtime::default();
        assert_eq!(nh_runtime_create(&d, &mut rt), NH_OK, "{}", last_error());
        // x [4, 64] times a weight [64, 32] that stays the same, run often enough to be cached.
        let x: Vec<f32> = (0..4 * 64).map(|i| ((i * 37) % 17) as f32 / 17.0 - 0.5).collect();
        let w: Vec<f32> = (0..64 * 32).map(|i| ((i * 11) % 13) as f32 / 13.0 - 0.5).collect();
        let (xb, wb) = (alloc_f32(rt, &x), alloc_f32(rt, &w));
        let yb = alloc_f32(rt, &[0.0; 4 * 32]);
        let mut m = op(nh_op_kind::NH_OP_MATMUL);
        m.inputs[0] = tensor(xb, &[4, 64]);
        m.inputs[1] = tensor(wb, &[64, 32]);
        m.output = tensor(yb, &[4, 32]);
        for _ in 0..4 {
            let mut ev = nh_event::default();
            assert_eq!(nh_submit(rt, &m, &mut ev), NH_OK, "{}", last_error());
            assert_eq!(nh_event_wait(rt, ev, u64::MAX), NH_OK);
            assert_eq!(nh_event_release(rt, ev), NH_OK);
            let mut y = vec![0.0f32; 4 * 32];
            assert_eq!(nh_buffer_read(rt, yb, 0, y.as_mut_ptr().cast(), y.len() * 4), NH_OK);
            for (i, got) in y.iter().enumerate() {
                let (r, c) = (i / 32, i % 32);
                let want: f32 = (0..64).map(|k| x[r * 64 + k] * w[k * 32 + c]).sum();
                assert!((got - want).abs() <= 1e-4, "flags {flags}: y[{i}] = {got}, want {want}");
            }
        }
        assert_eq!(nh_runtime_destroy(rt), NH_OK);
    }
    let mut d: nh_runtime_desc = unsafe { zeroed() };
    assert_eq!(nh_runtime_desc_init(&mut d), NH_OK);
    d.cpu_flags = 4;
    let mut rt = nh_runtime::default();
    assert_eq!(nh_runtime_create(&d, &mut rt), NH_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("cpu_flags"), "{}", last_error());
}

static LOG_A: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static LOG_B: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

unsafe extern "C" fn count_log(_level: u32, _msg: *const std::ffi::c_char, user: *mut std::ffi::c_void) {
    (*(user as *const std::sync::atomic::AtomicUsize)).fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

fn logged_runtime(counter: Option<&'static std::sync::atomic::AtomicUsize>, level: u32) -> nh_runtime {
    let mut d: nh_runtime_desc = unsafe { zeroed() };
    assert_eq!(nh_runtime_desc_init(&mut d), NH_OK);
    let dir = CString::new("").unwrap();
    d.perf_cache_dir = dir.as_ptr();
    if let Some(c) = counter {
        d.log_callback = Some(count_log);
        d.log_user_data = c as *const _ as *mut std::ffi::c_void;
    }
    d.log_level = level;
    let mut rt = nh_runtime::default();
    assert_eq!(nh_runtime_create(&d, &mut rt), NH_OK, "{}", last_error());
    rt
}

/// Issue 17, item 6: a runtime's log callback is never called after its runtime is destroyed,
/// and a runtime created with logging off does not disconnect another's callback.
#[test]
fn log_callbacks_live_and_die_with_their_runtime() {
    use std::sync::atomic::Ordering::SeqCst;
    let load = |rt: nh_runtime| {
        // Loading a policy logs "policy '...' is active" at info.
        let name = CString::new("battery_saver").unwrap();
        assert_eq!(nh_policy_load(rt, nh_policy_kind::NH_POLICY_BUILTIN as u32, name.as_ptr()), NH_OK);
    };
    let a = logged_runtime(Some(&LOG_A), 3);
    let b = logged_runtime(Some(&LOG_B), 3);
    let quiet = logged_runtime(None, 0);
    let (a0, b0) = (LOG_A.load(SeqCst), LOG_B.load(SeqCst));
    load(b);
    assert!(LOG_B.load(SeqCst) > b0, "b's callback still gets messages after a quiet runtime was created");
    assert_eq!(nh_runtime_destroy(a), NH_OK);
    let a1 = LOG_A.load(SeqCst);
    assert!(a1 >= a0);
    load(b);
    load(quiet);
    assert_eq!(LOG_A.load(SeqCst), a1, "a destroyed runtime's callback was called");
    assert_eq!(nh_runtime_destroy(b), NH_OK);
    assert_eq!(nh_runtime_destroy(quiet), NH_OK);
}
