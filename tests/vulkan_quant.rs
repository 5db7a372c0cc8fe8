//! Matmuls whose weight is block-quantized (q8_0, q4_0, q4_1, q4_g128) on the Vulkan backend
//! against the CPU's quantized kernels (lavapipe in CI): the GEMV for up to 8 rows of A and
//! the tiled shader past that, odd shapes, several blocks along k, batches, the epilogue.

mod vulkan_util;

use npuhybrid::backend::Backend;
use npuhybrid::op::{Activation, DType, OpDesc, OpKind, OpParams, TensorView};
use rand::rngs::StdRng;
use rand::Rng;
use vulkan_util::*;

const QUANT: [DType; 4] = [DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4G128];

/// A [n, k] weight of random values quantized to `dt`, its rows `row_stride` elements apart
/// (k: dense).
fn weight(r: &mut StdRng, dt: DType, n: usize, k: usize, row_stride: usize) -> Tensor {
    let w: Vec<f32> = (0..n * row_stride).map(|_| r.random_range(-1.0..1.0)).collect();
    let mut q = vec![0u8; dt.bytes_of(w.len())];
    npuhybrid::quant::quantize_row(dt, &w, &mut q);
    let buf = buffer(q.len());
    buf.write(0, &q).unwrap();
    let mut view = TensorView::contiguous(buf.id(), dt, &[n, k], 0);
    view.strides[0] = row_stride;
    Tensor { buf, view }
}

struct Case {
    q: DType,
    /// Activations (and C's dtype unless `out_f32`).
    dt: DType,
    out_f32: bool,
    m: usize,
    n: usize,
    /// Blocks along k.
    blocks: usize,
    /// Batch of C; A has it too unless `shared_a`.
    batch: usize,
    shared_a: bool,
    trans_a: bool,
    bias: bool,
    params: OpParams,
}

impl Case {
    fn new(q: DType, m: usize, n: usize, blocks: usize) -> Case {
        Case {
            q,
            dt: DType::F32,
            out_f32: false,
            m,
            n,
            blocks,
            batch: 1,
            shared_a: false,
            trans_a: false,
            bias: false,
            params: OpParams::default(),
        }
    }

    fn run(&self, seed: u64) {
        let mut r = rng(seed);
        let (m, n, k) = (self.m, self.n, self.blocks * self.q.block_elems());
        let batch: &[usize] = if self.batch > 1 { &[self.batch] } else { &[] };
        let a_batch: &[usize] = if self.shared_a { &[] } else { batch };
        let a = if self.trans_a {
            Tensor::random(&mut r, self.dt, &[a_batch, &[k, m]].concat())
        } else {
            Tensor::random(&mut r, self.dt, &[a_batch, &[m, k]].concat())
        };
        let b = weight(&mut r, self.q, n, k, k);
        let out_dt = if self.out_f32 { DType::F32 } else { self.dt };
        let c = Tensor::random(&mut r, out_dt, &[batch, &[m, n]].concat());
        let bias = Tensor::random(&mut r, out_dt, &[n]);
        let mut inputs = vec![a.view, b.view];
        let mut ts = vec![&a, &b];
        if self.bias {
            inputs.push(bias.view);
            ts.push(&bias);
        }
        let params = OpParams { trans_a: self.trans_a, trans_b: true, ..self.params };
        let op = OpDesc::new(OpKind::Matmul, &inputs, c.view).with_params(params);
        // f16 outputs round to 11 bits; f32 ones differ from the CPU by summation order only.
        let tol = if out_dt == DType::F16 { 1e-2 } else { 1e-4 };
        compare(&op, &ts, &c, tol);
    }
}

fn dtypes() -> Vec<(DType, bool)> {
    let mut v = vec![(DType::F32, false)];
    if gpu().info().dtypes & DType::F16.bit() != 0 {
        v.extend([(DType::F16, false), (DType::F16, true)]);
    }
    v
}

#[test]
fn the_device_takes_every_quantized_weight_type() {
    let dtypes = gpu().info().dtypes;
    for q in QUANT {
        assert!(dtypes & q.bit() != 0, "{q} missing from the GPU's dtypes");
    }
    assert!(dtypes & DType::I8.bit() == 0);
}

#[test]
fn gemv_and_tiled_rows_for_every_type_and_activation_dtype() {
    // n = 19: one row of B a workgroup, the last ones idle; m = 8 is the largest GEMV, 17
    // takes the tiled shader.
    let mut seed = 0;
    for q in QUANT {
        for (dt, out_f32) in dtypes() {
            for m in [1, 3, 8, 17] {
                for blocks in [1, 3] {
                    seed += 1;
                    Case { dt, out_f32, ..Case::new(q, m, 19, blocks) }.run(seed);
                }
            }
        }
    }
}

#[test]
fn wide_outputs_share_activations_over_several_weight_rows() {
    // Several hundred rows, k = 5 blocks of 32 or 2 of 128.
    let mut seed = 100;
    for q in QUANT {
        let blocks = if q == DType::Q4G128 { 2 } else { 5 };
        for (m, n) in [(1, 515), (2, 1030), (5, 1030)] {
            seed += 1;
            Case::new(q, m, n, blocks).run(seed);
        }
    }
}

#[test]
fn long_rows_take_several_steps_of_a_workgroup() {
    // k of 67 blocks of 32 (268 units of 8 weights) or 17 of 128 (272): a workgroup of 128
    // threads with 2 units each takes two steps, the second one partial; odd n; m up to 8.
    let mut seed = 500;
    for q in QUANT {
        let blocks = if q == DType::Q4G128 { 17 } else { 67 };
        for (dt, out_f32) in dtypes() {
            for (m, n) in [(1, 37), (3, 5), (8, 11)] {
                seed += 1;
                Case { dt, out_f32, ..Case::new(q, m, n, blocks) }.run(seed);
            }
        }
    }
}

#[test]
fn many_rows_share_workgroups_with_a_partial_last_one() {
    // Rows enough for 4 rows of B a workgroup (33001 = 4 * 8250 + 1) and for 2 with 3 rows
    // of A (16411 odd): the last workgroup repeats its last row and drops those sums.
    let mut seed = 600;
    for q in QUANT {
        for (m, n) in [(1, 33001), (3, 16411)] {
            seed += 1;
            Case::new(q, m, n, 1).run(seed);
        }
    }
}

#[test]
fn epilogue_batches_and_transposed_activations() {
    let p = |activation, alpha, beta| OpParams { activation, alpha, beta, ..OpParams::default() };
    let mut seed = 200;
    for q in QUANT {
        let cases = [
            // Bias, beta * C and each activation, in the GEMV and in the tiled shader.
            Case { bias: true, params: p(Activation::Silu, 1.0, 0.5), ..Case::new(q, 1, 37, 2) },
            Case { bias: true, params: p(Activation::Gelu, 0.5, 0.0), ..Case::new(q, 3, 37, 2) },
            Case { bias: true, params: p(Activation::Relu, 2.0, -1.0), ..Case::new(q, 17, 37, 2) },
            // Batch 2 of A: 2 x 3 rows fold into one GEMV of 6; 3 x 3 rows run as 3 GEMVs;
            // 2 x 17 as one tiled product of 34 rows.
            Case { batch: 2, bias: true, ..Case::new(q, 3, 21, 2) },
            Case { batch: 3, params: p(Activation::None, 1.0, 1.0), ..Case::new(q, 3, 21, 2) },
            Case { batch: 2, ..Case::new(q, 17, 21, 2) },
            // One A shared by two batches of C.
            Case { batch: 2, shared_a: true, ..Case::new(q, 1, 21, 2) },
            Case { batch: 2, shared_a: true, ..Case::new(q, 9, 21, 2) },
            // A stored transposed: the tiled shader's strided loader.
            Case { trans_a: true, ..Case::new(q, 3, 21, 2) },
            Case { trans_a: true, batch: 2, ..Case::new(q, 4, 21, 2) },
        ];
        for c in cases {
            seed += 1;
            c.run(seed);
        }
    }
}

#[test]
fn a_weight_view_with_padded_rows_is_packed_whole_blocks() {
    // Rows of 2 blocks taken from a matrix whose rows hold 3: not contiguous.
    let mut r = rng(300);
    for q in QUANT {
        let k = 2 * q.block_elems();
        let b = weight(&mut r, q, 13, k, k + q.block_elems());
        for m in [1, 12] {
            let a = Tensor::random(&mut r, DType::F32, &[m, k]);
            let c = Tensor::zeros(DType::F32, &[m, 13]);
            let op = OpDesc::new(OpKind::Matmul, &[a.view, b.view], c.view)
                .with_params(OpParams { trans_b: true, ..OpParams::default() });
            compare(&op, &[&a, &b], &c, 1e-4);
        }
    }
}

#[test]
fn quantized_copies_stay_off_the_device() {
    let mut r = rng(400);
    let x = Tensor::random(&mut r, DType::F32, &[2, 64]);
    let q = weight(&mut r, DType::Q8_0, 2, 64, 64);
    assert!(!gpu().supports(&OpDesc::new(OpKind::Copy, &[x.view], q.view)));
    assert!(!gpu().supports(&OpDesc::new(OpKind::Copy, &[q.view], x.view)));
}
