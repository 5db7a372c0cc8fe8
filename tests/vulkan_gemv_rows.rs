//! The f16 GEMV through gemv_quant.comp over plain f16 weights (shaders/dense_f16.glsl),
//! the default f16 GEMV (`NPUHYBRID_VULKAN_GEMV=tiled` turns it off): against the
//! CPU backend on lavapipe, over the cases its indexing has to get right (rows past a
//! workgroup's share, units past a row's end, several rows of A, folded batches, bias, f16
//! and f32 outputs). Which ops take it is checked by the planner's own unit test.

mod vulkan_util;

use npuhybrid::backend::vulkan::VulkanBackend;
use npuhybrid::op::{Activation, DType, OpDesc, OpKind, OpParams};
use std::sync::OnceLock;
use vulkan_util::*;

/// A backend opened with the rows GEMV on (the setting is read when a backend opens).
fn rows_gpu() -> &'static VulkanBackend {
    static GPU: OnceLock<VulkanBackend> = OnceLock::new();
    GPU.get_or_init(|| {
        std::env::set_var("NPUHYBRID_VULKAN_GEMV", "rows");
        let gpu = VulkanBackend::probe().expect("a Vulkan device").remove(0);
        std::env::remove_var("NPUHYBRID_VULKAN_GEMV");
        gpu
    })
}

/// y = act(x W^T + bias) for `batch` x m rows of x and W [n, k], on the rows GEMV and the CPU.
fn case(out_dt: DType, batch: &[usize], mkn: (usize, usize, usize), bias: bool, act: Activation, seed: u64) {
    case_ab(DType::F16, out_dt, batch, mkn, bias, act, seed)
}

/// `case` with activations of `a_dt` (f32: an f16 weight under f32 activations).
fn case_ab(
    a_dt: DType,
    out_dt: DType,
    batch: &[usize],
    (m, k, n): (usize, usize, usize),
    bias: bool,
    act: Activation,
    seed: u64,
) {
    let dt = DType::F16;
    let mut r = rng(seed);
    let a = Tensor::random(&mut r, a_dt, &[batch, &[m, k]].concat());
    let b = Tensor::random(&mut r, dt, &[n, k]);
    let c = Tensor::random(&mut r, out_dt, &[batch, &[m, n]].concat());
    let bias_t = Tensor::random(&mut r, out_dt, &[n]);
    let (inputs, ts) = matmul_operands(&a, &b, bias.then_some(&bias_t));
    let params = OpParams { trans_b: true, activation: act, ..OpParams::default() };
    let op = OpDesc::new(OpKind::Matmul, &inputs, c.view).with_params(params);
    compare_on(rows_gpu(), &op, &ts, &c, 2e-2);
}

#[test]
fn rows_gemv_matches_the_cpu_for_one_row_of_a() {
    let mut seed = 10;
    for k in [8, 64, 1000, 2056] {
        for n in [1, 33, 600, 4100] {
            seed += 1;
            let out = if seed % 2 == 0 { DType::F16 } else { DType::F32 };
            case(out, &[], (1, k, n), seed % 3 == 0, Activation::None, seed);
        }
    }
}

#[test]
fn rows_gemv_matches_the_cpu_for_several_rows_batches_and_epilogues() {
    case(DType::F16, &[], (3, 256, 70), true, Activation::Silu, 1);
    case(DType::F32, &[], (8, 520, 129), false, Activation::Gelu, 2);
    // Batches of A fold into rows while they fit (2 x 3 = 6 rows), else run as batches.
    case(DType::F16, &[2], (3, 64, 40), true, Activation::None, 3);
    case(DType::F32, &[3], (4, 64, 40), false, Activation::Relu, 4);
    // K not a whole number of 16-byte units is left to gemv.comp / the tiled shader.
    case(DType::F16, &[], (1, 12, 50), false, Activation::None, 5);
}

/// f32 activations with f16 weights: the same GEMV with f32 loads of A (the only shader
/// that takes such a matmul; the GPU refuses the rest, see the planner's test).
#[test]
fn f16_weights_under_f32_activations_match_the_cpu() {
    case_ab(DType::F32, DType::F32, &[], (1, 2056, 600), true, Activation::None, 20);
    case_ab(DType::F32, DType::F32, &[], (1, 64, 33), false, Activation::None, 21);
    case_ab(DType::F32, DType::F32, &[], (5, 520, 129), false, Activation::Silu, 22);
    case_ab(DType::F32, DType::F32, &[2], (3, 64, 40), true, Activation::None, 23);
    case_ab(DType::F32, DType::F32, &[3], (4, 64, 40), false, Activation::Relu, 24);
}
