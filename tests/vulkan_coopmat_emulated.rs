//! The cooperative-matrix matmul shader (shaders/matmul_coopmat.comp) on a device without
//! cooperative matrices: NPUHYBRID_VULKAN_EMULATE_COOPMAT runs it with its fragments emulated
//! in plain code, so its staging, double buffering, tile indexing, edges and epilogue are
//! checked against the CPU backend here (lavapipe in CI) before a GPU with tensor cores runs
//! it. Both fragment shapes NVIDIA offers are covered. The emulation runs the shader on a
//! 64 x 64 block with K steps of 16 (lavapipe's limits, see the shader); the GPU's 128 x 128
//! block with steps of 32 is the same code with other constants.

mod vulkan_util;

use npuhybrid::backend::vulkan::VulkanBackend;
use npuhybrid::op::{Activation, DType, OpDesc, OpKind, OpParams};
use vulkan_util::*;

/// A backend whose f16 matmuls run the emulated shader with fragment shape `shape`.
fn emulated(shape: &str) -> VulkanBackend {
    // Read once when the backend opens; the tests of this binary run one at a time below.
    std::env::set_var("NPUHYBRID_VULKAN_EMULATE_COOPMAT", shape);
    let gpu = VulkanBackend::probe().expect("a Vulkan device").remove(0);
    std::env::remove_var("NPUHYBRID_VULKAN_EMULATE_COOPMAT");
    assert!(gpu.uses_coopmat(), "f16 matmuls take the cooperative-matrix shader");
    gpu
}

#[allow(clippy::too_many_arguments)]
fn case(
    gpu: &VulkanBackend,
    out_dt: DType,
    batch: &[usize],
    (m, k, n): (usize, usize, usize),
    trans_b: bool,
    bias: bool,
    params: OpParams,
    seed: u64,
) {
    let dt = DType::F16;
    let mut r = rng(seed);
    let shape = |x: usize, y: usize| [batch, &[x, y]].concat();
    let a = Tensor::random(&mut r, dt, &shape(m, k));
    let b = if trans_b {
        Tensor::random(&mut r, dt, &shape(n, k))
    } else {
        Tensor::random(&mut r, dt, &shape(k, n))
    };
    let c = Tensor::random(&mut r, out_dt, &shape(m, n));
    let bias_t = Tensor::random(&mut r, out_dt, &[n]);
    let (inputs, ts) = matmul_operands(&a, &b, bias.then_some(&bias_t));
    let op = OpDesc::new(OpKind::Matmul, &inputs, c.view).with_params(OpParams { trans_b, ..params });
    compare_on(gpu, &op, &ts, &c, 2e-2);
}

#[test]
fn emulated_coopmat_matmul_matches_the_cpu() {
    for shape in ["16x16x16", "16x8x16"] {
        let gpu = emulated(shape);
        let mut seed = 500;
        // One partial block; several blocks in M and N with edges; K not a multiple of the
        // K step (a partial last stage) and many stages (13 at K = 200).
        for dims in [(33, 40, 24), (130, 200, 72), (64, 264, 136)] {
            for tb in [false, true] {
                seed += 1;
                case(&gpu, DType::F16, &[], dims, tb, false, OpParams::default(), seed);
            }
        }
        // f32 output, a batch, the epilogue (bias, activation, alpha, beta).
        let p = OpParams { activation: Activation::Silu, alpha: 0.5, beta: 0.7, ..OpParams::default() };
        case(&gpu, DType::F32, &[2], (40, 48, 136), true, true, p, seed + 10);
        case(&gpu, DType::F16, &[3], (70, 16, 24), false, true, p, seed + 11);
    }
}
