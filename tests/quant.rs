//! Quantized weights through the C API: quantize and dequantize with copy, matmuls with a
//! quantized b on every device set (the CPU runs them), and the errors bad views get.

mod c_api;

use c_api::*;
use npuhybrid::ffi::*;
use npuhybrid::op::DType;
use std::ffi::CString;
use std::mem::zeroed;

use nh_status::*;

const QUANT: [(nh_dtype, DType); 4] = [
    (nh_dtype::NH_Q8_0, DType::Q8_0),
    (nh_dtype::NH_Q4_0, DType::Q4_0),
    (nh_dtype::NH_Q4_1, DType::Q4_1),
    (nh_dtype::NH_Q4_G128, DType::Q4G128),
];

fn tensor(b: nh_buffer, dt: nh_dtype, shape: &[u64]) -> nh_tensor {
    let mut t = nh_tensor { buffer: b, dtype: dt as u32, rank: shape.len() as u32, ..Default::default() };
    t.shape[..shape.len()].copy_from_slice(shape);
    t
}

fn alloc(rt: nh_runtime, bytes: &[u8]) -> nh_buffer {
    let mut b = nh_buffer::default();
    assert_eq!(nh_buffer_alloc(rt, bytes.len().max(1), &mut b), NH_OK);
    assert_eq!(nh_buffer_write(rt, b, 0, bytes.as_ptr().cast(), bytes.len()), NH_OK);
    b
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn read(rt: nh_runtime, b: nh_buffer, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    assert_eq!(nh_buffer_read(rt, b, 0, out.as_mut_ptr().cast(), len), NH_OK);
    out
}

fn run(rt: nh_runtime, d: &nh_op_desc) -> nh_status {
    let mut ev = nh_event::default();
    let st = nh_submit(rt, d, &mut ev);
    if st != NH_OK {
        return st;
    }
    let st = nh_event_wait(rt, ev, u64::MAX);
    assert_eq!(nh_event_release(rt, ev), NH_OK);
    st
}

#[test]
fn copy_quantizes_and_dequantizes_like_the_reference() {
    let rt = runtime(0);
    let (n, k) = (5usize, 256usize);
    let w = values(n * k, 1);
    let src = alloc(rt, &f32_bytes(&w));
    for (cdt, dt) in QUANT {
        let qb = alloc(rt, &vec![0u8; dt.bytes_of(n * k)]);
        let mut d = op(nh_op_kind::NH_OP_COPY);
        d.inputs[0] = tensor(src, nh_dtype::NH_F32, &[n as u64, k as u64]);
        d.output = tensor(qb, cdt, &[n as u64, k as u64]);
        assert_eq!(run(rt, &d), NH_OK, "{dt}: {}", last_error());
        let mut want = vec![0u8; dt.bytes_of(n * k)];
        npuhybrid::quant::quantize_row(dt, &w, &mut want);
        assert_eq!(read(rt, qb, want.len()), want, "{dt}: quantized bytes");

        let back = alloc(rt, &vec![0u8; n * k * 4]);
        let mut d = op(nh_op_kind::NH_OP_COPY);
        d.inputs[0] = tensor(qb, cdt, &[n as u64, k as u64]);
        d.output = tensor(back, nh_dtype::NH_F32, &[n as u64, k as u64]);
        assert_eq!(run(rt, &d), NH_OK, "{dt}: {}", last_error());
        let mut deq = vec![0f32; n * k];
        npuhybrid::quant::dequantize_row(dt, &want, &mut deq);
        assert_eq!(read(rt, back, n * k * 4), f32_bytes(&deq), "{dt}: dequantized values");
    }
    assert_eq!(nh_runtime_destroy(rt), NH_OK);
}

/// One matmul x[m, k] W[n, k]^T with W quantized to `dt`, checked against f64 math on the
/// dequantised weights (1e-5 of the sum of |terms|); returns the device index that ran it.
fn quantized_matmul(rt: nh_runtime, cdt: nh_dtype, dt: DType, m: usize, n: usize, k: usize) -> i32 {
    let x = values(m * k, 2);
    let w = values(n * k, 3);
    let mut q = vec![0u8; dt.bytes_of(n * k)];
    npuhybrid::quant::quantize_row(dt, &w, &mut q);
    let mut deq = vec![0f32; n * k];
    npuhybrid::quant::dequantize_row(dt, &q, &mut deq);
    let (xb, wb, yb) = (alloc(rt, &f32_bytes(&x)), alloc(rt, &q), alloc(rt, &vec![0u8; m * n * 4]));
    let mut d = op(nh_op_kind::NH_OP_MATMUL);
    d.flags = NH_FLAG_TRANS_B;
    d.inputs[0] = tensor(xb, nh_dtype::NH_F32, &[m as u64, k as u64]);
    d.inputs[1] = tensor(wb, cdt, &[n as u64, k as u64]);
    d.output = tensor(yb, nh_dtype::NH_F32, &[m as u64, n as u64]);
    let mut ev = nh_event::default();
    assert_eq!(nh_submit(rt, &d, &mut ev), NH_OK, "{dt} m={m}: {}", last_error());
    assert_eq!(nh_event_wait(rt, ev, u64::MAX), NH_OK, "{dt} m={m}: {}", last_error());
    let mut info: nh_event_info = unsafe { zeroed() };
    info.struct_size = size_of::<nh_event_info>() as u32;
    assert_eq!(nh_event_get_info(rt, ev, &mut info), NH_OK);
    assert_eq!(nh_event_release(rt, ev), NH_OK);
    let y: Vec<f32> =
        read(rt, yb, m * n * 4).chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    for i in 0..m {
        for j in 0..n {
            let terms = (0..k).map(|kk| x[i * k + kk] as f64 * deq[j * k + kk] as f64);
            let (want, mag) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
            let err = (y[i * n + j] as f64 - want).abs() / mag;
            assert!(err <= 1e-5, "{dt} m={m} ({i},{j}): {} vs {want} ({err:e})", y[i * n + j]);
        }
    }
    for b in [xb, wb, yb] {
        assert_eq!(nh_buffer_destroy(rt, b), NH_OK);
    }
    info.device
}

#[test]
fn matmul_with_a_quantized_weight_on_every_device_set() {
    for devices in [0, NH_ENABLE_GPU | NH_ENABLE_SIMULATED_NPU] {
        let rt = runtime(devices);
        for (cdt, dt) in QUANT {
            for m in [1usize, 3, 17] {
                quantized_matmul(rt, cdt, dt, m, 19, 2 * dt.block_elems());
            }
        }
        assert_eq!(nh_runtime_destroy(rt), NH_OK);
    }
}

/// With a policy that sends matmuls to the GPU (lavapipe in CI), every quantized type runs
/// there: the GEMV (m <= 8) and the tiled shader (m = 17), to the same accuracy.
#[test]
fn quantized_matmuls_run_on_the_gpu_when_the_policy_sends_them_there() {
    let rt = runtime(NH_ENABLE_GPU);
    let mut count = 0u32;
    assert_eq!(nh_device_count(rt, &mut count), NH_OK);
    let gpu = (0..count).find(|&i| {
        let mut info: nh_device_info = unsafe { zeroed() };
        info.struct_size = size_of::<nh_device_info>() as u32;
        nh_device_get_info(rt, i, &mut info) == NH_OK
            && info.kind == nh_device_kind::NH_DEVICE_GPU as u32
            && info.available != 0
            && QUANT.iter().all(|(_, dt)| info.dtypes & dt.bit() != 0)
    });
    let gpu = gpu.expect("a GPU that lists the quantized types (lavapipe in CI)") as i32;
    let policy = CString::new(
        "policy \"gpu\"\nrule mm {\n when op = matmul\n use gpu\n strategy first_available\n}\n",
    )
    .unwrap();
    assert_eq!(
        nh_policy_load(rt, nh_policy_kind::NH_POLICY_SOURCE as u32, policy.as_ptr()),
        NH_OK,
        "{}",
        last_error()
    );
    for (cdt, dt) in QUANT {
        for m in [1usize, 8, 17] {
            let ran = quantized_matmul(rt, cdt, dt, m, 45, 3 * dt.block_elems());
            assert_eq!(ran, gpu, "{dt} m={m} ran on device {ran}");
        }
    }
    assert_eq!(nh_runtime_destroy(rt), NH_OK);
}

#[test]
fn bad_quantized_views_are_refused_with_the_reason() {
    let rt = runtime(0);
    let buf = alloc(rt, &vec![0u8; 1 << 16]);
    let matmul = |b: nh_tensor, flags: u32| {
        let mut d = op(nh_op_kind::NH_OP_MATMUL);
        d.flags = flags;
        d.inputs[0] = tensor(buf, nh_dtype::NH_F32, &[2, 64]);
        d.inputs[1] = b;
        d.output = tensor(buf, nh_dtype::NH_F32, &[2, 8]);
        d.output.offset = 1 << 15;
        let st = run(rt, &d);
        (st, last_error())
    };
    let q = |shape: &[u64]| tensor(buf, nh_dtype::NH_Q4_0, shape);
    let (st, msg) = matmul(q(&[8, 64]), 0);
    assert_eq!(st, NH_ERR_INVALID_ARGUMENT);
    assert!(msg.contains("trans_b = 1"), "{msg}");
    let (st, msg) = matmul(q(&[8, 48]), NH_FLAG_TRANS_B);
    assert_eq!(st, NH_ERR_INVALID_ARGUMENT);
    assert!(msg.contains("not a multiple of its block (32)"), "{msg}");
    let mut inside = q(&[8, 64]);
    inside.strides[..2].copy_from_slice(&[80, 1]);
    let (st, msg) = matmul(inside, NH_FLAG_TRANS_B);
    assert_eq!(st, NH_ERR_INVALID_ARGUMENT);
    assert!(msg.contains("splits a q4_0 block"), "{msg}");
    let mut odd = q(&[8, 64]);
    odd.offset = 3;
    let (st, msg) = matmul(odd, NH_FLAG_TRANS_B);
    assert_eq!(st, NH_ERR_INVALID_ARGUMENT);
    assert!(msg.contains("not aligned"), "{msg}");
    let batched = q(&[2, 8, 64]);
    let (st, msg) = matmul(batched, NH_FLAG_TRANS_B);
    assert_eq!(st, NH_ERR_INVALID_ARGUMENT);
    assert!(msg.contains("must have batch 1"), "{msg}");
    // A quantized a, or a copy to an integer type.
    let mut d = op(nh_op_kind::NH_OP_MATMUL);
    d.flags = NH_FLAG_TRANS_B;
    d.inputs[0] = q(&[2, 64]);
    d.inputs[1] = q(&[8, 64]);
    d.output = tensor(buf, nh_dtype::NH_F32, &[2, 8]);
    d.output.offset = 1 << 15;
    assert_eq!(run(rt, &d), NH_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("dtype q4_0 is not supported"), "{}", last_error());
    let mut d = op(nh_op_kind::NH_OP_COPY);
    d.inputs[0] = q(&[64]);
    d.output = tensor(buf, nh_dtype::NH_I8, &[64]);
    d.output.offset = 1 << 15;
    assert_eq!(run(rt, &d), NH_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("q4_0 -> i8"), "{}", last_error());
    // A view past the end of its buffer counts bytes of blocks, not elements.
    let mut d = op(nh_op_kind::NH_OP_COPY);
    d.inputs[0] = tensor(buf, nh_dtype::NH_Q8_0, &[1 << 16]);
    d.output = tensor(buf, nh_dtype::NH_F32, &[1 << 16]);
    assert_eq!(run(rt, &d), NH_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("holds 65536 bytes"), "{}", last_error());
    assert_eq!(nh_runtime_destroy(rt), NH_OK);
}

/// `NH_FLAG_ALLOW_Q8_ACTIVATIONS` through the C API: without it a decode matmul is f32 math
/// on the dequantised weights (1e-5); with it the CPU (AVX2 or better) rounds A to int8 blocks:
/// close (1%) but measurably different. q4_g128 ignores it.
#[test]
fn q8_activations_flag_is_opt_in() {
    let rt = runtime(0);
    let (m, n, k) = (2usize, 48usize, 256usize);
    let x = values(m * k, 7);
    let w = values(n * k, 8);
    for (cdt, dt) in QUANT {
        let mut q = vec![0u8; dt.bytes_of(n * k)];
        npuhybrid::quant::quantize_row(dt, &w, &mut q);
        let mut deq = vec![0f32; n * k];
        npuhybrid::quant::dequantize_row(dt, &q, &mut deq);
        let (xb, wb, yb) = (alloc(rt, &f32_bytes(&x)), alloc(rt, &q), alloc(rt, &vec![0u8; m * n * 4]));
        let worst = |flags: u32| -> f64 {
            let mut d = op(nh_op_kind::NH_OP_MATMUL);
            d.flags = NH_FLAG_TRANS_B | flags;
            d.inputs[0] = tensor(xb, nh_dtype::NH_F32, &[m as u64, k as u64]);
            d.inputs[1] = tensor(wb, cdt, &[n as u64, k as u64]);
            d.output = tensor(yb, nh_dtype::NH_F32, &[m as u64, n as u64]);
            assert_eq!(run(rt, &d), NH_OK, "{dt}: {}", last_error());
            let y = read(rt, yb, m * n * 4);
            let mut worst = 0.0f64;
            for i in 0..m {
                for j in 0..n {
                    let terms = (0..k).map(|kk| x[i * k + kk] as f64 * deq[j * k + kk] as f64);
                    let (want, mag) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
                    let at = (i * n + j) * 4;
                    let got = f32::from_le_bytes([y[at], y[at + 1], y[at + 2], y[at + 3]]) as f64;
                    worst = worst.max((got - want).abs() / mag);
                }
            }
            worst
        };
        assert!(worst(0) <= 1e-5, "{dt} without the flag: {:e}", worst(0));
        let with = worst(NH_FLAG_ALLOW_Q8_ACTIVATIONS);
        assert!(with <= 1e-2, "{dt} with the flag: {with:e}");
        let integer_path = dt != DType::Q4G128 && cfg!(target_arch = "x86_64") && avx2();
        assert_eq!(with > 1e-5, integer_path, "{dt} with the flag: {with:e}");
        for b in [xb, wb, yb] {
            assert_eq!(nh_buffer_destroy(rt, b), NH_OK);
        }
    }
    assert_eq!(nh_runtime_destroy(rt), NH_OK);
}

fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
            && std::env::var("NPUHYBRID_CPU_ISA").map_or(true, |v| v != "scalar" && v != "portable")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}
