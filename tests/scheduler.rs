//! The scheduler under real policies: placement by the built-in policies, splitting,
//! crossover learned from history, faults on the simulated NPU, thermal control in virtual
//! time, and atomic policy swaps.

mod common;

use common::*;
use npuhybrid::backend::sim::{Fault, SimNpu, SimNpuConfig};
use npuhybrid::backend::{Backend, DeviceKind};
use npuhybrid::device::PowerMode;
use npuhybrid::op::{OpDesc, OpKind, Tags};
use npuhybrid::{PolicySource, Runtime, RuntimeConfig};
use std::sync::Arc;
use std::time::Duration;

fn sim(virtual_time: bool) -> Arc<SimNpu> {
    Arc::new(SimNpu::new(SimNpuConfig { virtual_time, ..Default::default() }))
}

fn runtime(policy: PolicySource, backends: Vec<Box<dyn Backend>>) -> Runtime {
    let mut all = vec![cpu()];
    all.extend(backends);
    Runtime::with_backends(RuntimeConfig { policy, ..config() }, all).unwrap()
}

fn source(text: &str) -> PolicySource {
    PolicySource::Source { origin: "test.nhp".into(), text: text.into() }
}

fn tagged(op: OpDesc, tags: &str) -> OpDesc {
    op.with_tags(Tags::parse(tags).unwrap())
}

/// llm_inference picks by earliest completion: with an NPU that computes fast but streams
/// weights slowly and a GPU the other way round (as on a Ryzen AI laptop), prefill goes to the
/// NPU and decode to the GPU.
#[test]
fn llm_inference_sends_prefill_to_the_npu_and_decode_to_the_gpu() {
    let gpu = ScriptedDevice::new(DeviceKind::Gpu, "gpu", 5000.0, Script::Works);
    let rt = runtime(PolicySource::Builtin("llm_inference".into()), vec![Box::new(gpu), Box::new(sim(true))]);
    let measured = |peak_gflops, bandwidth_gbs| npuhybrid::sched::perf_model::Priors {
        launch_ns: 1_000.0,
        op_ns: 100.0,
        peak_gflops,
        bandwidth_gbs,
    };
    rt.scheduler().devices[1].model.calibrate(measured(100.0, 1000.0));
    rt.scheduler().devices[2].model.calibrate(measured(1e5, 10.0));
    let (d, f) = (256, 512);
    let w = upload(&rt, &random(d * f, 1));
    let x = upload(&rt, &random(128 * d, 2));
    let y = rt.alloc(128 * f * 4).unwrap();
    let prefill = rt.submit(tagged(matmul(x, w, y, 128, d, f), "phase=prefill")).unwrap();
    prefill.wait(None).unwrap();
    assert_eq!(prefill.outcome().1.device, Some(2), "prefill matmul must run on the NPU");
    let decode = rt.submit(tagged(matmul(x, w, y, 1, d, f), "phase=decode")).unwrap();
    decode.wait(None).unwrap();
    assert_eq!(decode.outcome().1.device, Some(1), "decode GEMV must run on the GPU");
    let a = random(128 * d, 2);
    let want = reference_matmul(&a, &random(d * f, 1), 128, d, f);
    assert_close(&download(&rt, y, 128 * f)[f..], &want[f..], 1e-4);
}

/// A GPU whose kernel for an op is still being made does not get the op while the CPU can
/// take it (the op would wait for the compiler); once the kernel is made, it does.
#[test]
fn a_device_gets_no_op_while_its_kernel_is_being_made() {
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gpu =
        ScriptedDevice::new(DeviceKind::Gpu, "gpu", 1e6, Script::Works).with_kernels_ready(ready.clone());
    let rt = runtime(PolicySource::Builtin("default".into()), vec![Box::new(gpu)]);
    let n = 256;
    let (a, b) = (upload(&rt, &random(n * n, 1)), upload(&rt, &random(n * n, 2)));
    let c = rt.alloc(n * n * 4).unwrap();
    let run = || {
        let ev = rt.submit(matmul(a, b, c, n, n, n)).unwrap();
        ev.wait(None).unwrap();
        ev.outcome().1.device
    };
    assert_eq!(run(), Some(0), "the kernel is not made: the CPU runs it");
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(run(), Some(1), "a million GFLOP/s, kernel made: the GPU runs it");
}

#[test]
fn every_runtime_prepares_its_devices_kernels_measured_or_not() {
    // A new process starts with no pipeline made, whether or not its devices were measured
    // before: each runtime has them made ahead (an H100's prefill otherwise ran a quarter of
    // its matmuls on the CPU while they were remade on demand).
    let gpu = ScriptedDevice::new(DeviceKind::Gpu, "gpu", 100.0, Script::Works);
    let prepared = Arc::clone(&gpu.prepared);
    let gpu: Arc<dyn Backend> = Arc::new(gpu);
    for runtimes in 1..=2 {
        let cfg = RuntimeConfig { calibrate: true, ..config() };
        let rt = Runtime::with_backends(cfg, vec![cpu(), Box::new(Arc::clone(&gpu))]).unwrap();
        rt.scheduler().wait_calibrated();
        assert_eq!(prepared.load(std::sync::atomic::Ordering::SeqCst), runtimes);
    }
}

#[test]
fn earliest_completion_counts_uploads_of_operands_a_device_does_not_hold() {
    // Two GPUs of the same speed; one holds the weights already, the other would have to
    // upload them (5 ms). Device order must not decide: each layout is tried both ways.
    let policy = "policy \"gpus\"\nrule mm {\n  when op = matmul\n  use gpu\n  strategy earliest_completion\n}\nrule rest {\n  use cpu\n}\n";
    for holder in [1usize, 2] {
        let gpu = |name: &str, holds: bool| {
            let d = ScriptedDevice::new(DeviceKind::Gpu, name, 100.0, Script::Works);
            Box::new(if holds { d } else { d.without_copy_of_input(0, 5e6) }) as Box<dyn Backend>
        };
        let rt = runtime(source(policy), vec![gpu("gpu a", holder == 1), gpu("gpu b", holder == 2)]);
        let (w, x, y) =
            (upload(&rt, &random(64 * 64, 1)), upload(&rt, &random(64, 2)), rt.alloc(64 * 4).unwrap());
        let ev = rt.submit(matmul(w, x, y, 64, 64, 1)).unwrap();
        ev.wait(None).unwrap();
        assert_eq!(ev.outcome().1.device, Some(holder), "the GPU that holds the weights runs it");
    }
}

#[test]
fn battery_saver_runs_the_npu_in_powersaver() {
    let npu = sim(true);
    let _rt = runtime(PolicySource::Builtin("battery_saver".into()), vec![Box::new(npu.clone())]);
    assert_eq!(npu.power_mode(), PowerMode::Powersaver);
}

#[test]
fn split_matmuls_are_correct_for_every_ratio_and_odd_size() {
    for (ratio, axis) in [(0.5, "rows"), (0.13, "rows"), (0.9, "cols"), (0.37, "cols")] {
        for (m, k, n) in [(67, 33, 129), (200, 17, 45), (64, 64, 64)] {
            let policy = format!(
                "policy \"split\"\nrule all {{\n  when op = matmul\n  use npu, cpu\n  split {axis} npu {ratio}, cpu {}\n}}\nrule rest {{\n  use cpu\n}}\n",
                1.0 - ratio
            );
            let rt = runtime(source(&policy), vec![Box::new(sim(true))]);
            let (a, b) = (random(m * k, 7), random(k * n, 8));
            let (ba, bb) = (upload(&rt, &a), upload(&rt, &b));
            let bc = rt.alloc(m * n * 4).unwrap();
            let ev = rt.submit(matmul(ba, bb, bc, m, k, n)).unwrap();
            ev.wait(None).unwrap();
            let info = ev.outcome().1;
            assert_eq!(info.parts, 2, "{axis} {ratio} {m}x{k}x{n}");
            assert_eq!(info.devices_mask, 0b11, "both the CPU (0) and the NPU (1) ran a part");
            assert_close(&download(&rt, bc, m * n), &reference_matmul(&a, &b, m, k, n), 1e-4);
            assert_eq!(rt.stats().split_ops, 1);
        }
    }
}

#[test]
fn dynamic_split_follows_predicted_throughput() {
    let policy = "policy \"dyn\"\nrule all {\n  when op = matmul\n  use npu, cpu\n  split rows dynamic npu, cpu\n}\nrule rest {\n  use cpu\n}\n";
    let rt = runtime(source(policy), vec![Box::new(sim(true))]);
    let (m, k, n) = (512, 64, 64);
    let (a, b) = (random(m * k, 1), random(k * n, 2));
    let (ba, bb) = (upload(&rt, &a), upload(&rt, &b));
    let bc = rt.alloc(m * n * 4).unwrap();
    let ev = rt.submit(matmul(ba, bb, bc, m, k, n)).unwrap();
    ev.wait(None).unwrap();
    assert_eq!(ev.outcome().1.parts, 2);
    assert_close(&download(&rt, bc, m * n), &reference_matmul(&a, &b, m, k, n), 1e-4);
}

#[test]
fn history_corrects_a_device_that_is_slower_than_it_claims() {
    // The GPU claims to be fast but takes 20 ms per op; after a few ops the measured history
    // makes earliest-completion prefer the CPU.
    let gpu = ScriptedDevice::new(DeviceKind::Gpu, "slow gpu", 1e6, Script::Works)
        .with_delay(Duration::from_millis(20));
    let calls = gpu.calls.clone();
    let policy = "policy \"p\"\nrule mm {\n  when op = matmul\n  use gpu, cpu\n  strategy earliest_completion\n}\nrule rest {\n  use cpu\n}\n";
    let rt = runtime(source(policy), vec![Box::new(gpu)]);
    let a = upload(&rt, &random(128 * 128, 3));
    let c = rt.alloc(128 * 128 * 4).unwrap();
    let mut last = None;
    for _ in 0..20 {
        let ev = rt.submit(matmul(a, a, c, 128, 128, 128)).unwrap();
        ev.wait(None).unwrap();
        last = ev.outcome().1.device;
    }
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) <= 3, "the slow device must be learned quickly");
    assert_eq!(last, Some(0));
}

#[test]
fn faults_on_the_simulated_npu_lose_no_op() {
    let npu = sim(true);
    npu.inject(Fault::FailFraction { fraction: 0.1, seed: 42 });
    npu.inject(Fault::LoseAfter(150));
    let policy = "policy \"npu_first\"\nrule mm {\n  when op = matmul\n  use npu, cpu\n  strategy first_available\n}\nrule rest {\n  use cpu\n}\nfallback {\n  retries = 0\n  degrade_after = 1000\n  degrade_for = 1 ms\n}\n";
    let rt = runtime(source(policy), vec![Box::new(npu.clone())]);
    let (m, k, n) = (16, 16, 16);
    let (a, b) = (random(m * k, 1), random(k * n, 2));
    let want = reference_matmul(&a, &b, m, k, n);
    let (ba, bb) = (upload(&rt, &a), upload(&rt, &b));
    let outs: Vec<_> = (0..300).map(|_| rt.alloc(m * n * 4).unwrap()).collect();
    let events: Vec<_> = outs.iter().map(|&c| rt.submit(matmul(ba, bb, c, m, k, n)).unwrap()).collect();
    for (ev, &c) in events.iter().zip(&outs) {
        ev.wait(None).unwrap();
        assert_close(&download(&rt, c, m * n), &want, 1e-4);
    }
    let stats = rt.stats();
    assert_eq!(stats.ops_completed, 300);
    assert_eq!(stats.ops_failed, 0);
    let injected = npu.stats().failed;
    assert!(injected >= 10, "faults were injected ({injected})");
    assert_eq!(stats.fallbacks, injected, "every injected failure was one fallback");
    assert!(npu.is_lost());
}

fn hot_npu() -> Arc<SimNpu> {
    Arc::new(SimNpu::new(SimNpuConfig {
        virtual_time: true,
        initial_mode: PowerMode::Turbo,
        // Fast thermal constants so that a few thousand small ops heat it up, and a high
        // thermal resistance so that one busy unit is enough: how many of the three units
        // overlap depends on how fast the host computes the results, which tests must not.
        thermal_time_constant: Duration::from_millis(20),
        thermal_resistance_k_per_w: 25.0,
        ..Default::default()
    }))
}

const THERMAL_RULES: &str = "device npu {\n  power = turbo\n}\nrule mm {\n  when op = matmul\n  use npu, cpu\n  strategy first_available\n}\nrule rest {\n  use cpu\n}\n";

/// Runs batches of independent matmuls (so the NPU's three units work at once and heat it),
/// ticking thermal control in the NPU's virtual time after each, until `stop` says so.
/// Returns the device that ran the last op.
fn heat_until(rt: &Runtime, npu: &SimNpu, stop: impl Fn(&Runtime) -> bool) -> Option<usize> {
    let a = upload(rt, &random(64 * 64, 1));
    let outs: Vec<_> = (0..6).map(|_| rt.alloc(64 * 64 * 4).unwrap()).collect();
    for _ in 0..500 {
        let batch: Vec<_> = outs.iter().map(|&o| rt.submit(matmul(a, a, o, 64, 64, 64)).unwrap()).collect();
        for ev in &batch {
            ev.wait(None).unwrap();
        }
        rt.thermal_tick(npu.now());
        if stop(rt) {
            let next = rt.submit(matmul(a, a, outs[0], 64, 64, 64)).unwrap();
            next.wait(None).unwrap();
            return next.outcome().1.device;
        }
    }
    panic!("the NPU never got hot: {:?}", npu.readings());
}

#[test]
fn a_thermal_warning_lowers_the_power_mode_until_it_cools() {
    let npu = hot_npu();
    let policy = format!("policy \"warm\"\n{THERMAL_RULES}thermal warm {{\n  when npu temperature above 70 C for 5 ms\n  clear below 60 C\n  do power powersaver\n}}\n");
    let rt = runtime(source(&policy), vec![Box::new(npu.clone())]);
    heat_until(&rt, &npu, |rt| rt.thermal_effect(1).power_mode.is_some());
    assert_eq!(npu.power_mode(), PowerMode::Powersaver);
    npu.advance_idle(Duration::from_secs(2));
    rt.thermal_tick(npu.now());
    assert_eq!(rt.thermal_effect(1), Default::default());
    assert_eq!(npu.power_mode(), PowerMode::Turbo, "the policy's own mode comes back");
    assert_eq!(rt.thermal_transitions(), 2);
}

#[test]
fn an_emergency_excludes_the_npu_until_it_is_below_the_clear_level() {
    let npu = hot_npu();
    let policy = format!("policy \"hot\"\n{THERMAL_RULES}emergency thermal hot {{\n  when npu temperature above 80 C\n  clear below 65 C\n  do exclude\n}}\n");
    let rt = runtime(source(&policy), vec![Box::new(npu.clone())]);
    let device = heat_until(&rt, &npu, |rt| rt.thermal_effect(1).excluded);
    assert_eq!(device, Some(0), "an excluded NPU gets no ops; the CPU takes them");
    assert!(rt.device_stats(1).unwrap().thermally_excluded);
    // Still inside the hysteresis band: stays excluded.
    let t = npu.readings().temperature_c.unwrap();
    assert!(t >= 65.0, "{t}");
    npu.advance_idle(Duration::from_secs(2));
    rt.thermal_tick(npu.now());
    assert!(npu.readings().temperature_c.unwrap() < 65.0);
    assert!(!rt.thermal_effect(1).excluded);
    let a = upload(&rt, &random(64 * 64, 2));
    let c = rt.alloc(64 * 64 * 4).unwrap();
    let ev = rt.submit(matmul(a, a, c, 64, 64, 64)).unwrap();
    ev.wait(None).unwrap();
    assert_eq!(ev.outcome().1.device, Some(1), "back on the NPU after cooling");
}

#[test]
fn an_invalid_policy_is_rejected_with_its_position_and_the_old_one_stays() {
    let rt = runtime(PolicySource::Builtin("default".into()), vec![]);
    let bad = "policy \"bad\"\nrule r {\n  use tpu\n}\n";
    let err = rt.load_policy(&source(bad)).unwrap_err().to_string();
    assert!(err.contains("test.nhp:3:"), "{err}");
    assert!(err.contains("tpu"), "{err}");
    assert_eq!(rt.policy().name(), "default");
    rt.load_policy(&PolicySource::Builtin("battery_saver".into())).unwrap();
    assert_eq!(rt.policy().name(), "battery_saver");
}

#[test]
fn ops_in_flight_finish_under_the_policy_they_started_with() {
    // Under "npu_only" a matmul goes to the (slow) NPU; after swapping to "cpu_only" the op
    // already queued must still run on the NPU.
    let npu = ScriptedDevice::new(DeviceKind::SimulatedNpu, "npu", 1.0, Script::Works)
        .with_delay(Duration::from_millis(50));
    let rt = runtime(
        source("policy \"npu_only\"\nrule mm {\n  when op = matmul\n  use npu, cpu\n  strategy first_available\n}\nrule rest {\n  use cpu\n}\n"),
        vec![Box::new(npu)],
    );
    let a = upload(&rt, &random(64, 1));
    let c1 = rt.alloc(256).unwrap();
    let c2 = rt.alloc(256).unwrap();
    let first = rt.submit(matmul(a, a, c1, 8, 8, 8)).unwrap();
    let queued = rt.submit(matmul(c1, a, c2, 8, 8, 8)).unwrap(); // waits for `first`
    rt.load_policy(&source("policy \"cpu_only\"\nrule all {\n  use cpu\n}\n")).unwrap();
    queued.wait(None).unwrap();
    assert_eq!(first.outcome().1.device, Some(1));
    assert_eq!(queued.outcome().1.device, Some(1), "submitted under npu_only, so it runs there");
    let later = rt.submit(matmul(a, a, c1, 8, 8, 8)).unwrap();
    later.wait(None).unwrap();
    assert_eq!(later.outcome().1.device, Some(0));
}

#[test]
fn explain_names_the_rule_and_every_device() {
    let rt = runtime(PolicySource::Builtin("llm_inference".into()), vec![Box::new(sim(true))]);
    let w = rt.alloc(384 * 1536 * 4).unwrap();
    let x = rt.alloc(128 * 384 * 4).unwrap();
    let y = rt.alloc(128 * 1536 * 4).unwrap();
    let text = rt.explain(&tagged(matmul(x, w, y, 128, 384, 1536), "phase=prefill")).unwrap();
    assert!(text.contains("prefill"), "{text}");
    assert!(text.contains("Simulated NPU"), "{text}");
    assert!(text.contains("candidate #1"), "{text}");
}

#[test]
fn power_modes_change_the_simulated_npu_through_the_runtime() {
    let npu = sim(true);
    let rt = runtime(PolicySource::Builtin("default".into()), vec![Box::new(npu.clone())]);
    rt.set_power_mode(1, PowerMode::Turbo).unwrap();
    assert_eq!(npu.power_mode(), PowerMode::Turbo);
    assert!(matches!(rt.set_power_mode(0, PowerMode::Turbo), Err(npuhybrid::Error::Unsupported(_))));
    let _ = OpKind::Matmul;
}

#[test]
fn a_degraded_device_is_tried_again_after_its_period() {
    let dev = ScriptedDevice::new(DeviceKind::Gpu, "recovering gpu", 1e6, Script::FailsFirst(2));
    let calls = dev.calls.clone();
    let policy = "policy \"p\"\nrule mm {\n  when op = matmul\n  use gpu, cpu\n  strategy first_available\n}\nrule rest {\n  use cpu\n}\nfallback {\n  retries = 0\n  degrade_after = 2\n  degrade_for = 200 ms\n}\n";
    let rt = runtime(source(policy), vec![Box::new(dev)]);
    let a = upload(&rt, &random(64 * 64, 1));
    let c = rt.alloc(64 * 64 * 4).unwrap();
    let run = || {
        let ev = rt.submit(matmul(a, a, c, 64, 64, 64)).unwrap();
        ev.wait(None).unwrap();
        ev.outcome().1.device
    };
    assert_eq!(run(), Some(0), "first failure falls back");
    assert_eq!(run(), Some(0), "second failure degrades the GPU");
    assert!(rt.device_stats(1).unwrap().degraded);
    assert_eq!(run(), Some(0), "degraded: not tried");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(run(), Some(1), "after the period the GPU is tried again, and now works");
    assert!(!rt.device_stats(1).unwrap().degraded);
}
