//! Each built-in policy makes the decisions its workload needs.

use super::super::builtin::builtin_dump;
use super::*;
use crate::device::PowerMode;

fn policy(name: &str) -> std::sync::Arc<CompiledPolicy> {
    builtin(name).unwrap_or_else(|| panic!("built-in {name} missing"))
}

fn first(p: &CompiledPolicy, q: &OpQuery) -> DeviceClass {
    p.decide(q).candidates[0]
}

/// Every (op kind, float dtype) at several sizes, with and without tags.
fn sweep(mut check: impl FnMut(&OpQuery)) {
    let tag_sets = [tags(""), tags("phase=prefill"), tags("phase=decode")];
    for kind in OpKind::ALL {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for (m, n, k) in [(1, 1, 1), (1, 4096, 4096), (7, 64, 64), (128, 384, 1536), (4096, 4096, 4096)] {
                for t in &tag_sets {
                    check(&query(kind, dtype, m, n, k, t));
                }
            }
        }
    }
}

#[test]
fn all_four_are_built_in() {
    for name in ["default", "llm_inference", "continuous_audio", "battery_saver"] {
        assert!(builtin_names().contains(&name), "{name}");
        assert_eq!(policy(name).name(), name);
        assert!(policy(name).warnings().is_empty(), "{name}: {:?}", policy(name).warnings());
    }
    assert!(builtin("nonexistent").is_none());
}

#[test]
fn build_time_tables_match_run_time_tables() {
    for name in builtin_names() {
        assert_eq!(builtin_dump(name), Some(policy(name).dump().as_str()), "{name}");
    }
}

#[test]
fn default_keeps_the_cpu_as_backstop_and_sends_big_matmuls_to_accelerators() {
    let p = policy("default");
    let none = tags("");
    sweep(|q| {
        let d = p.decide(q);
        assert!(d.candidates.contains(&DeviceClass::Cpu), "{:?} -> {}", q, d.rule_label);
    });
    let big = query(OpKind::Matmul, DType::F16, 512, 1024, 1024, &none);
    assert_eq!(p.decide(&big).candidates, [DeviceClass::Npu, DeviceClass::Gpu, DeviceClass::Cpu]);
    let gemv = query(OpKind::Matmul, DType::F32, 1, 4096, 4096, &none);
    assert_eq!(first(&p, &gemv), DeviceClass::Gpu);
    // Tiny ops: the CPU, or the GPU where the data already is (the model decides).
    let tiny = query(OpKind::Add, DType::F32, 4, 16, 16, &none);
    assert_eq!(p.decide(&tiny).candidates, [DeviceClass::Cpu, DeviceClass::Gpu]);
    assert_eq!(p.decide(&tiny).strategy, Strategy::EarliestCompletion);
    assert_eq!(p.settings(DeviceClass::Npu).max_in_flight, Some(3));
    assert_eq!(p.settings(DeviceClass::Npu).batch_rows, Some(64));
    assert!(p.thermal_rules().iter().any(|t| t.emergency && t.device == DeviceClass::Npu));
}

#[test]
fn llm_inference_prefill_to_npu_decode_to_gpu() {
    let p = policy("llm_inference");
    let prefill = tags("phase=prefill");
    let decode = tags("phase=decode");
    let q = query(OpKind::Matmul, DType::F16, 128, 384, 1536, &prefill);
    assert_eq!(first(&p, &q), DeviceClass::Npu);
    assert!(p.decide(&q).split.is_none());
    // Decode GEMVs: by shape, tagged or not, and by tag whatever the shape.
    for t in [tags(""), prefill.clone(), decode.clone()] {
        let gemv = query(OpKind::Matmul, DType::F16, 1, 4096, 4096, &t);
        assert_eq!(first(&p, &gemv), DeviceClass::Gpu, "{t:?}");
    }
    let batched_decode = query(OpKind::Matmul, DType::F16, 8, 4096, 4096, &decode);
    assert_eq!(first(&p, &batched_decode), DeviceClass::Gpu);
    // Huge prefill matmuls: rows split across npu and gpu by measured throughput.
    let huge = query(OpKind::Matmul, DType::BF16, 4096, 11008, 4096, &prefill);
    let d = p.decide(&huge);
    let split = d.split.expect("huge prefill is split");
    assert_eq!(split.axis, SplitAxis::Rows);
    assert_eq!(split.devices, [DeviceClass::Npu, DeviceClass::Gpu]);
    assert_eq!(split.ratios, None);
    assert_eq!(p.settings(DeviceClass::Npu).power_mode, Some(PowerMode::Performance));
    // Inherited: attention and the CPU backstop.
    let attn = query(OpKind::Attention, DType::F16, 128, 128, 64, &prefill);
    assert_eq!(first(&p, &attn), DeviceClass::Gpu);
}

#[test]
fn continuous_audio_keeps_npu_balanced_and_moves_work_off_when_hot() {
    let p = policy("continuous_audio");
    let none = tags("");
    assert_eq!(p.settings(DeviceClass::Npu).power_mode, Some(PowerMode::Balanced));
    let q = query(OpKind::Matmul, DType::F16, 64, 512, 512, &none);
    assert_eq!(first(&p, &q), DeviceClass::Npu);
    let npu: Vec<&ThermalRule> = p.thermal_rules().iter().filter(|t| t.device == DeviceClass::Npu).collect();
    let warm = npu.iter().find(|t| !t.emergency).expect("a warm level");
    assert_eq!((warm.trigger, warm.clear), (70.0, 65.0));
    assert_eq!(warm.actions, [ThermalAction::ShiftLoad(0.5)]);
    let hot = npu.iter().find(|t| t.emergency).expect("an emergency level");
    assert_eq!((hot.trigger, hot.clear), (85.0, 75.0));
    assert_eq!(hot.actions, [ThermalAction::Exclude]);
    // Never turbo: audio runs for hours.
    assert!(npu.iter().all(|t| !t.actions.contains(&ThermalAction::SetPowerMode(PowerMode::Turbo))));
}

#[test]
fn battery_saver_prefers_npu_in_powersaver_never_turbo_gpu_off() {
    let p = policy("battery_saver");
    let none = tags("");
    assert_eq!(p.settings(DeviceClass::Npu).power_mode, Some(PowerMode::Powersaver));
    assert!(!p.settings(DeviceClass::Gpu).enabled);
    assert_eq!(p.settings(DeviceClass::Cpu).keep_warm, Some(std::time::Duration::ZERO), "idle threads sleep");
    for c in DeviceClass::ALL {
        assert_ne!(p.settings(c).power_mode, Some(PowerMode::Turbo));
    }
    for t in p.thermal_rules() {
        for a in &t.actions {
            assert!(!matches!(a, ThermalAction::SetPowerMode(PowerMode::Turbo | PowerMode::Performance)));
        }
    }
    let q = query(OpKind::Matmul, DType::F16, 1, 2048, 2048, &none);
    assert_eq!(p.decide(&q).candidates, [DeviceClass::Npu, DeviceClass::Cpu]);
    sweep(|q| {
        let d = p.decide(q);
        assert!(!d.candidates.contains(&DeviceClass::Gpu), "{q:?} -> {}", d.rule_label);
        assert!(d.split.is_none());
    });
}
