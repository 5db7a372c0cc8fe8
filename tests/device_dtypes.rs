//! `nh_device_info.dtypes` says what runs, through the C API: for every device and every
//! element type it reports, a compute op (not a copy) with that type runs on that device and
//! gives the right result; for every type it does not report, an op with it is refused at
//! submission with an error that names the type, or runs on another device while
//! `nh_policy_explain` says why this one does not take it. (The CPU used to report i8 and i32,
//! and the simulated NPU an i8 peak, while every compute op refused i8.)

mod c_api;

use c_api::*;
use npuhybrid::ffi::*;
use npuhybrid::op::DType;
use std::ffi::{CStr, CString};
use std::mem::{size_of, zeroed};
use std::ptr::null_mut;

use nh_status::*;

const M: usize = 4;
const K: usize = 128; // a whole number of blocks of every quantized type
const N: usize = 8;

fn device_info(rt: nh_runtime, index: u32) -> nh_device_info {
    let mut info: nh_device_info = unsafe { zeroed() };
    info.struct_size = size_of::<nh_device_info>() as u32;
    assert_eq!(nh_device_get_info(rt, index, &mut info), NH_OK);
    info
}

fn name_of(info: &nh_device_info) -> String {
    unsafe { CStr::from_ptr(info.name.as_ptr()) }.to_string_lossy().into_owned()
}

fn tensor(b: nh_buffer, dt: DType, shape: &[usize]) -> nh_tensor {
    let mut t = nh_tensor { buffer: b, dtype: dt as u32, rank: shape.len() as u32, ..Default::default() };
    for (s, &d) in t.shape.iter_mut().zip(shape) {
        *s = d as u64;
    }
    t
}

fn alloc(rt: nh_runtime, bytes: usize) -> nh_buffer {
    let mut b = nh_buffer::default();
    assert_eq!(nh_buffer_alloc(rt, bytes.max(1), &mut b), NH_OK);
    b
}

/// Submits and waits: the status and the device that ran it.
fn run(rt: nh_runtime, d: &nh_op_desc) -> (nh_status, i32) {
    let mut ev = nh_event::default();
    let st = nh_submit(rt, d, &mut ev);
    if st != NH_OK {
        return (st, -1);
    }
    let st = nh_event_wait(rt, ev, u64::MAX);
    let mut info: nh_event_info = unsafe { zeroed() };
    info.struct_size = size_of::<nh_event_info>() as u32;
    assert_eq!(nh_event_get_info(rt, ev, &mut info), NH_OK);
    assert_eq!(nh_event_release(rt, ev), NH_OK);
    (st, info.device)
}

fn copy(rt: nh_runtime, from: nh_tensor, to: nh_tensor) {
    let mut d = op(nh_op_kind::NH_OP_COPY);
    d.inputs[0] = from;
    d.output = to;
    assert_eq!(run(rt, &d).0, NH_OK, "copy: {}", last_error());
}

/// A [rows, cols] tensor of type `dt` holding `values` converted (by a copy op), and the
/// values it holds, read back as f32.
fn operand(rt: nh_runtime, dt: DType, rows: usize, cols: usize, seed: u32) -> (nh_tensor, Vec<f32>) {
    let v = values(rows * cols, seed);
    let src = alloc(rt, v.len() * 4);
    assert_eq!(nh_buffer_write(rt, src, 0, v.as_ptr().cast(), v.len() * 4), NH_OK);
    let t = tensor(alloc(rt, dt.bytes_of(rows * cols)), dt, &[rows, cols]);
    copy(rt, tensor(src, DType::F32, &[rows, cols]), t);
    (t, read_f32(rt, t, rows, cols))
}

/// A tensor's values as f32 (through a copy op).
fn read_f32(rt: nh_runtime, t: nh_tensor, rows: usize, cols: usize) -> Vec<f32> {
    let out = tensor(alloc(rt, rows * cols * 4), DType::F32, &[rows, cols]);
    copy(rt, t, out);
    let mut v = vec![0f32; rows * cols];
    assert_eq!(nh_buffer_read(rt, out.buffer, 0, v.as_mut_ptr().cast(), v.len() * 4), NH_OK);
    v
}

/// A compute op with `dt` somewhere in it, and the f32 result it must give.
struct Case {
    what: String,
    desc: nh_op_desc,
    out: DType,
    want: Vec<f32>,
}

/// Every compute op the test tries for `dt`: matmuls in it (output in it or f32) and an add
/// for plain types; matmuls with it as the weight (f32, bf16 or f16 activations) for
/// quantized ones.
fn cases(rt: nh_runtime, dt: DType) -> Vec<Case> {
    let matmul = |a: (nh_tensor, Vec<f32>), b: (nh_tensor, Vec<f32>), trans_b: bool, out: DType| {
        let c = tensor(alloc(rt, out.bytes_of(M * N).max(M * N * 4)), out, &[M, N]);
        let mut d = op(nh_op_kind::NH_OP_MATMUL);
        d.inputs[0] = a.0;
        d.inputs[1] = b.0;
        d.output = c;
        if trans_b {
            d.flags = NH_FLAG_TRANS_B;
        }
        let want = (0..M * N)
            .map(|i| {
                let (r, col) = (i / N, i % N);
                let w = |p: usize| if trans_b { b.1[col * K + p] } else { b.1[p * N + col] };
                (0..K).map(|p| a.1[r * K + p] as f64 * w(p) as f64).sum::<f64>() as f32
            })
            .collect();
        (d, want)
    };
    let mut out = Vec::new();
    if dt.is_quantized() {
        for act in [DType::F32, DType::BF16, DType::F16] {
            let (desc, want) = matmul(operand(rt, act, M, K, 1), operand(rt, dt, N, K, 2), true, DType::F32);
            out.push(Case {
                what: format!("matmul {act} x {dt} weight -> f32"),
                desc,
                out: DType::F32,
                want,
            });
        }
        return out;
    }
    if matches!(dt, DType::F16 | DType::BF16) {
        // A half weight under f32 activations: only a device whose kernels widen it takes it.
        for trans_b in [true, false] {
            let b = if trans_b { operand(rt, dt, N, K, 7) } else { operand(rt, dt, K, N, 8) };
            let (desc, want) = matmul(operand(rt, DType::F32, M, K, 9), b, trans_b, DType::F32);
            out.push(Case {
                what: format!("matmul f32 x {dt} weight -> f32 (trans_b {trans_b})"),
                desc,
                out: DType::F32,
                want,
            });
        }
    }
    let outs = if dt == DType::F32 { vec![dt] } else { vec![dt, DType::F32] };
    for o in outs {
        let (desc, want) = matmul(operand(rt, dt, M, K, 3), operand(rt, dt, K, N, 4), false, o);
        out.push(Case { what: format!("matmul {dt} -> {o}"), desc, out: o, want });
    }
    let (a, b) = (operand(rt, dt, M, K, 5), operand(rt, dt, M, K, 6));
    let mut desc = op(nh_op_kind::NH_OP_ADD);
    desc.inputs[0] = a.0;
    desc.inputs[1] = b.0;
    desc.output = tensor(alloc(rt, dt.bytes_of(M * K)), dt, &[M, K]);
    out.push(Case {
        what: format!("add {dt}"),
        desc,
        out: dt,
        want: a.1.iter().zip(&b.1).map(|(x, y)| x + y).collect(),
    });
    out
}

/// Relative tolerance of a result stored as `out` (inputs are already rounded to their type).
fn tolerance(out: DType) -> f32 {
    match out {
        DType::F32 => 1e-4,
        DType::F16 => 1e-2,
        _ => 2e-2,
    }
}

fn explain(rt: nh_runtime, d: &nh_op_desc) -> String {
    let mut buf = vec![0 as std::ffi::c_char; 1 << 16];
    let mut needed = 0usize;
    assert_eq!(nh_policy_explain(rt, d, buf.as_mut_ptr(), buf.len(), &mut needed), NH_OK, "{}", last_error());
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

/// Sends every op the device class runs to it first (the CPU backstops the rest).
fn pin(rt: nh_runtime, class: &str) {
    // The NPU runs only matmuls: a rule sending it other ops is rejected.
    let rest = if class == "gpu" { "gpu, cpu" } else { "cpu" };
    let first = if class == "cpu" { "cpu".to_string() } else { format!("{class}, cpu") };
    let text = format!(
        "policy \"pin_{class}\"\nrule mm {{\n  when op = matmul\n  use {first}\n}}\nrule rest {{\n  use {rest}\n}}\n"
    );
    let text = CString::new(text).unwrap();
    assert_eq!(
        nh_policy_load(rt, nh_policy_kind::NH_POLICY_SOURCE as u32, text.as_ptr()),
        NH_OK,
        "{}",
        last_error()
    );
}

#[test]
fn every_reported_dtype_runs_and_every_other_is_refused() {
    let rt = runtime(NH_ENABLE_GPU | NH_ENABLE_SIMULATED_NPU);
    let mut count = 0u32;
    assert_eq!(nh_device_count(rt, &mut count), NH_OK);
    for index in 0..count {
        let info = device_info(rt, index);
        let name = name_of(&info);
        if info.available == 0 {
            assert_eq!(info.dtypes, 0, "{name}: unavailable, reports nothing");
            continue;
        }
        let class = match info.kind {
            k if k == nh_device_kind::NH_DEVICE_CPU as u32 => "cpu",
            k if k == nh_device_kind::NH_DEVICE_GPU as u32 => "gpu",
            _ => "npu",
        };
        pin(rt, class);
        for dt in DType::ALL {
            let reported = info.dtypes & (1 << dt as u32) != 0;
            let mut ran_here = Vec::new();
            for case in cases(rt, dt) {
                let (status, device) = run(rt, &case.desc);
                if status != NH_OK {
                    // Refused at the boundary: the message names the type.
                    let err = last_error();
                    assert!(
                        err.contains(&format!("dtype {dt} is not supported")),
                        "{name}: {}: {err}",
                        case.what
                    );
                    continue;
                }
                let got = read_f32(rt, case.desc.output, M, case.want.len() / M);
                let tol = tolerance(case.out);
                for (i, (g, w)) in got.iter().zip(&case.want).enumerate() {
                    assert!(
                        (g - w).abs() <= tol * (1.0 + w.abs()),
                        "{name}: {}: [{i}] {g} vs {w}",
                        case.what
                    );
                }
                if device == index as i32 {
                    ran_here.push(case.what);
                } else {
                    // It ran elsewhere; explain says why this device did not take it.
                    let text = explain(rt, &case.desc);
                    let line = text.lines().find(|l| l.trim_start().starts_with(&format!("[{index}]")));
                    let line =
                        line.unwrap_or_else(|| panic!("{name}: no line for device {index} in:\n{text}"));
                    if !reported {
                        let refused = ["does not take", "does not run", "cannot run"];
                        assert!(
                            refused.iter().any(|r| line.contains(r)),
                            "{name}: {} ran on device {device}; explain says: {line}",
                            case.what
                        );
                    }
                }
            }
            if reported {
                assert!(!ran_here.is_empty(), "{name} reports {dt}, but no compute op with it ran there");
            } else {
                assert!(ran_here.is_empty(), "{name} does not report {dt}, but ran {ran_here:?}");
            }
        }
    }
    let cpu = device_info(rt, 0);
    let bit = |dt: DType| 1u32 << dt as u32;
    assert_eq!(cpu.dtypes & (bit(DType::I8) | bit(DType::I32)), 0, "no compute op takes integers");
    let wanted = bit(DType::F32) | bit(DType::Q8_0);
    assert_eq!(cpu.dtypes & wanted, wanted, "floats and quantized weights run on the CPU");
    let sim = (0..count)
        .map(|i| device_info(rt, i))
        .find(|i| i.kind == nh_device_kind::NH_DEVICE_SIMULATED_NPU as u32);
    let sim = sim.expect("the simulated NPU");
    assert_eq!(sim.dtypes & bit(DType::I8), 0, "no i8 on the simulated NPU either");
    assert_ne!(sim.dtypes & bit(DType::BF16), 0);
    let mut details = vec![0 as std::ffi::c_char; 4096];
    let index = (0..count).find(|&i| device_info(rt, i).kind == sim.kind).unwrap();
    assert_eq!(nh_device_details(rt, index, details.as_mut_ptr(), details.len(), null_mut()), NH_OK);
    let details = unsafe { CStr::from_ptr(details.as_ptr()) }.to_string_lossy().into_owned();
    assert!(details.contains("peak bf16") && !details.contains("peak i8"), "{details}");
    assert_eq!(nh_runtime_destroy(rt), NH_OK);
}

/// An f16 / bf16 weight under f32 activations runs where a kernel widens it: the CPU always,
/// the GPU for f16 [N, K] weights and few rows (its f16w GEMV), nowhere else even where the
/// policy sends matmuls first: those devices say they do not take it, so the scheduler never
/// places it there.
#[test]
fn half_weights_under_f32_activations_run_only_where_a_kernel_widens_them() {
    let rt = runtime(NH_ENABLE_GPU | NH_ENABLE_SIMULATED_NPU);
    let mut count = 0u32;
    assert_eq!(nh_device_count(rt, &mut count), NH_OK);
    let cpu = (0..count).find(|&i| device_info(rt, i).kind == nh_device_kind::NH_DEVICE_CPU as u32).unwrap();
    let others: Vec<u32> = (0..count).filter(|&i| i != cpu && device_info(rt, i).available != 0).collect();
    assert!(!others.is_empty(), "a GPU (lavapipe) or the simulated NPU to refuse it");
    for &index in &others {
        let info = device_info(rt, index);
        let gpu = info.kind == nh_device_kind::NH_DEVICE_GPU as u32;
        pin(rt, if gpu { "gpu" } else { "npu" });
        for dt in [DType::F16, DType::BF16] {
            let cases = cases(rt, dt);
            for case in cases.iter().filter(|c| c.what.starts_with("matmul f32 x")) {
                let (status, device) = run(rt, &case.desc);
                assert_eq!(status, NH_OK, "{}: {}", case.what, last_error());
                let takes = gpu && dt == DType::F16 && case.what.contains("trans_b true");
                let want = if takes { index } else { cpu };
                assert_eq!(
                    device,
                    want as i32,
                    "{}: pinned to {}, ran on {device}",
                    case.what,
                    name_of(&info)
                );
                if takes {
                    continue;
                }
                let text = explain(rt, &case.desc);
                let line = text.lines().find(|l| l.trim_start().starts_with(&format!("[{index}]"))).unwrap();
                assert!(
                    // A type it lacks, or (f16 weights the GPU takes only as [N, K]) this weight.
                    line.contains("does not take"),
                    "{}: {}: {line}",
                    name_of(&info),
                    case.what
                );
            }
        }
    }
    assert_eq!(nh_runtime_destroy(rt), NH_OK);
}
