//! Every kernel (scalar, AVX2, AVX-512 where the CPU has it) against f64 math on the
//! dequantised weights, on odd shapes, batches, transposed and half-precision operands.

use super::super::host::{HostView, SendPtr};
use super::super::kernels::matmul::MatmulParams;
use super::super::test_data::fill;
use super::dot::Isa;
use super::matmul_with;
use crate::op::{dense_strides, Activation, DType, MAX_RANK};
use half::f16;

const QUANT: [DType; 4] = [DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4G128];

fn view(ptr: *mut u8, dt: DType, shape: &[usize]) -> HostView {
    let mut s = [1; MAX_RANK];
    s[..shape.len()].copy_from_slice(shape);
    HostView { ptr: SendPtr(ptr), dtype: dt, rank: shape.len(), shape: s, strides: dense_strides(shape) }
}

/// A quantized [n, k] weight and its dequantised values.
fn weight(dt: DType, n: usize, k: usize, seed: u32) -> (Vec<u8>, Vec<f32>) {
    let x: Vec<f32> = fill(n * k, seed).iter().map(|v| v * 2.0 + 0.1).collect();
    let mut q = vec![0u8; dt.bytes_of(n * k)];
    crate::quant::quantize_row(dt, &x, &mut q);
    let mut w = vec![0f32; n * k];
    crate::quant::dequantize_row(dt, &q, &mut w);
    (q, w)
}

struct Case {
    m: usize,
    n: usize,
    k: usize,
    batch: usize,
    trans_a: bool,
    beta: f32,
    bias: bool,
    act: Activation,
}

fn case(m: usize, n: usize, k: usize, batch: usize) -> Case {
    Case { m, n, k, batch, trans_a: false, beta: 0.0, bias: false, act: Activation::None }
}

/// Runs one case on `isa`; returns the worst error relative to sum |a * w| per element.
fn run(isa: Isa, dt: DType, cs: &Case, f16_io: bool) -> f64 {
    let (m, n, k, batch) = (cs.m, cs.n, cs.k, cs.batch);
    let (mut q, w) = weight(dt, n, k, 3 + m as u32);
    let a: Vec<f32> = fill(batch * m * k, 5 + n as u32);
    let c0: Vec<f32> = fill(batch * m * n, 9);
    let bias: Vec<f32> = fill(n, 11);
    let round = |v: &[f32]| -> Vec<f32> {
        if f16_io {
            v.iter().map(|x| f16::from_f32(*x).to_f32()).collect()
        } else {
            v.to_vec()
        }
    };
    let (a, c0, bias) = (round(&a), round(&c0), round(&bias));
    // Stored A: [batch, m, k], or [batch, k, m] when transposed.
    let mut stored: Vec<f32> = a.clone();
    if cs.trans_a {
        for b in 0..batch {
            for i in 0..m {
                for kk in 0..k {
                    stored[b * m * k + kk * m + i] = a[b * m * k + i * k + kk];
                }
            }
        }
    }
    let dt_io = if f16_io { DType::F16 } else { DType::F32 };
    let bytes = |v: &[f32]| -> Vec<u8> {
        if f16_io {
            v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect()
        } else {
            v.iter().flat_map(|x| x.to_le_bytes()).collect()
        }
    };
    let (mut ab, mut cb, mut biasb) = (bytes(&stored), bytes(&c0), bytes(&bias));
    let ashape = if cs.trans_a { [batch, k, m] } else { [batch, m, k] };
    let av = view(ab.as_mut_ptr(), dt_io, &ashape);
    let bv = view(q.as_mut_ptr(), dt, &[n, k]);
    let cv = view(cb.as_mut_ptr(), dt_io, &[batch, m, n]);
    let biasv = view(biasb.as_mut_ptr(), dt_io, &[n]);
    let p =
        MatmulParams { trans_a: cs.trans_a, trans_b: true, alpha: 0.75, beta: cs.beta, activation: cs.act };
    matmul_with(isa, None, &cv, &av, &bv, cs.bias.then_some(&biasv), &p);
    let got: Vec<f32> = if f16_io {
        cb.chunks(2).map(|h| f16::from_le_bytes([h[0], h[1]]).to_f32()).collect()
    } else {
        cb.chunks(4).map(|h| f32::from_le_bytes([h[0], h[1], h[2], h[3]])).collect()
    };
    let mut worst = 0.0f64;
    for b in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut mag) = (0.0f64, 0.0f64);
                for kk in 0..k {
                    let t = a[b * m * k + i * k + kk] as f64 * w[j * k + kk] as f64;
                    s += t;
                    mag += t.abs();
                }
                let at = (b * m + i) * n + j;
                let mut want = 0.75 * s + cs.beta as f64 * c0[at] as f64;
                mag = 0.75 * mag + (cs.beta as f64 * c0[at] as f64).abs();
                if cs.bias {
                    want += bias[j] as f64;
                    mag += bias[j].abs() as f64;
                }
                if cs.act == Activation::Silu {
                    want /= 1.0 + (-want).exp();
                }
                let err = (got[at] as f64 - want).abs() / mag.max(1e-30);
                worst = worst.max(err);
            }
        }
    }
    worst
}

#[test]
fn every_kernel_equals_f32_math_on_the_dequantised_weights() {
    let shapes = [(1, 37, 3, 1), (2, 5, 1, 1), (3, 19, 2, 2), (4, 8, 4, 1), (5, 33, 2, 1), (8, 7, 1, 3)];
    let gemm_shapes = [(9, 29, 3, 1), (33, 50, 2, 2), (70, 130, 5, 1)];
    for isa in Isa::available() {
        for dt in QUANT {
            for &(m, n, blocks, batch) in shapes.iter().chain(&gemm_shapes) {
                let k = blocks * dt.block_elems();
                let err = run(isa, dt, &case(m, n, k, batch), false);
                assert!(err <= 1e-5, "{isa:?} {dt} m={m} n={n} k={k} batch={batch}: relative error {err:e}");
            }
        }
    }
}

#[test]
fn transposed_and_half_operands_bias_beta_and_activation() {
    for isa in Isa::available() {
        for dt in QUANT {
            for m in [1, 3, 12] {
                let k = 2 * dt.block_elems();
                let cs =
                    Case { trans_a: true, beta: 0.5, bias: true, act: Activation::Silu, ..case(m, 23, k, 2) };
                let err = run(isa, dt, &cs, false);
                assert!(err <= 1e-5, "{isa:?} {dt} m={m} f32: {err:e}");
                // f16 output rounds once at the end: half an f16 ulp.
                let err = run(isa, dt, &cs, true);
                assert!(err <= 1e-3, "{isa:?} {dt} m={m} f16: {err:e}");
            }
        }
    }
}

/// The integer path (`NH_FLAG_ALLOW_Q8_ACTIVATIONS`) against `q8act::reference` on the same
/// int8 rows: equal up to f32 rounding of the block sums (1e-5 of the sum of |terms|).
#[test]
fn integer_kernels_equal_the_int8_reference() {
    use super::q8act::{reference, IntIsa, Q8Rows, QK};
    for int in IntIsa::available() {
        for dt in [DType::Q8_0, DType::Q4_0, DType::Q4_1] {
            for &(m, n, blocks, batch) in
                &[(1, 37, 1, 1), (1, 19, 7, 1), (2, 5, 3, 2), (3, 33, 28, 1), (8, 7, 2, 3)]
            {
                let k = blocks * QK;
                let (mut q, w) = weight(dt, n, k, 3 + m as u32);
                // Some exact zeros and an extreme block in A.
                let mut a: Vec<f32> = fill(batch * m * k, 5 + n as u32);
                let len = a.len();
                a[..QK.min(len)].iter_mut().for_each(|v| *v = 0.0);
                a[len - 1] = 40.0;
                let c0: Vec<f32> = fill(batch * m * n, 9);
                let mut c = c0.clone();
                let av = view(a.as_mut_ptr() as *mut u8, DType::F32, &[batch, m, k]);
                let bv = view(q.as_mut_ptr(), dt, &[n, k]);
                let cv = view(c.as_mut_ptr() as *mut u8, DType::F32, &[batch, m, n]);
                let p = MatmulParams {
                    trans_a: false,
                    trans_b: true,
                    alpha: 0.75,
                    beta: 0.5,
                    activation: Activation::None,
                };
                matmul_with(Isa::detect(), Some(int), &cv, &av, &bv, None, &p);
                let rows = Q8Rows::quantize(k, a.chunks(k));
                for r in 0..batch * m {
                    for j in 0..n {
                        let wrow = &q[dt.bytes_of(j * k)..][..dt.bytes_of(k)];
                        let want =
                            0.75 * reference(dt, wrow, blocks, &rows.row(r)) + 0.5 * c0[r * n + j] as f64;
                        let mag: f64 =
                            (0..k).map(|kk| (a[r * k + kk] * w[j * k + kk]).abs() as f64).sum::<f64>()
                                + (0.5 * c0[r * n + j]).abs() as f64;
                        let err = (c[r * n + j] as f64 - want).abs() / mag.max(1e-30);
                        assert!(
                            err <= 1e-5,
                            "{int:?} {dt} m={m} n={n} k={k} ({r},{j}): {} vs {want} ({err:e})",
                            c[r * n + j]
                        );
                    }
                }
            }
        }
    }
}

/// The int8 rounding is real but small: the integer path stays within 1% of f32 math on the
/// dequantised weights (relative to the sum of |terms|), and is not f32 math itself.
#[test]
fn q8_activations_round_a_but_stay_close() {
    use super::q8act::IntIsa;
    let (m, n, k) = (1, 64, 256);
    for dt in [DType::Q8_0, DType::Q4_0, DType::Q4_1] {
        let (mut q, w) = weight(dt, n, k, 21);
        let mut a: Vec<f32> = fill(m * k, 22);
        let mut c = vec![0f32; m * n];
        let av = view(a.as_mut_ptr() as *mut u8, DType::F32, &[m, k]);
        let bv = view(q.as_mut_ptr(), dt, &[n, k]);
        let cv = view(c.as_mut_ptr() as *mut u8, DType::F32, &[m, n]);
        let p = MatmulParams {
            trans_a: false,
            trans_b: true,
            alpha: 1.0,
            beta: 0.0,
            activation: Activation::None,
        };
        matmul_with(Isa::detect(), Some(IntIsa::detect()), &cv, &av, &bv, None, &p);
        let mut worst = 0.0f64;
        for j in 0..n {
            let terms = (0..k).map(|kk| a[kk] as f64 * w[j * k + kk] as f64);
            let (want, mag) = terms.fold((0.0, 0.0), |(s, t0), t| (s + t, t0 + t.abs()));
            worst = worst.max((c[j] as f64 - want).abs() / mag);
        }
        assert!(worst < 1e-2 && worst > 1e-6, "{dt}: worst relative difference {worst:e}");
    }
}
