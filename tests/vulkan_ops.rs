//! Every op on the Vulkan backend against the CPU backend on random inputs: odd shapes,
//! strided views, broadcasts, batches, f32 and f16 (lavapipe in CI).

mod vulkan_util;

use npuhybrid::op::{Activation, DType, OpDesc, OpKind, OpParams};
use vulkan_util::*;

const DTYPES: [DType; 2] = [DType::F32, DType::F16];

#[allow(clippy::too_many_arguments)]
fn matmul_case(
    dt: DType,
    out_dt: DType,
    batch: &[usize],
    (m, k, n): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
    bias: bool,
    params: OpParams,
    seed: u64,
) {
    let mut r = rng(seed);
    let shape = |x: usize, y: usize| [batch, &[x, y]].concat();
    let a = if trans_a {
        Tensor::random(&mut r, dt, &shape(k, m))
    } else {
        Tensor::random(&mut r, dt, &shape(m, k))
    };
    // B without batch dims broadcasts over the batch.
    let b = if trans_b { Tensor::random(&mut r, dt, &[n, k]) } else { Tensor::random(&mut r, dt, &[k, n]) };
    let c = Tensor::random(&mut r, out_dt, &shape(m, n));
    let bias_t = Tensor::random(&mut r, out_dt, &[n]);
    let (inputs, ts) = matmul_operands(&a, &b, bias.then_some(&bias_t));
    let op =
        OpDesc::new(OpKind::Matmul, &inputs, c.view).with_params(OpParams { trans_a, trans_b, ..params });
    let tol = if dt == DType::F16 { 2e-2 } else { 1e-4 };
    compare(&op, &ts, &c, tol);
}

#[test]
fn matmul_odd_shapes_transposes_and_dtypes() {
    // 1100 rows: more than one group of 8 tile rows, the last one partial.
    let shapes = [(3, 5, 7), (33, 17, 65), (130, 64, 129), (4, 8, 12), (1100, 16, 300)];
    let mut seed = 0;
    for dt in DTYPES {
        for &s in &shapes {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                seed += 1;
                matmul_case(dt, dt, &[], s, ta, tb, false, OpParams::default(), seed);
            }
        }
    }
}

#[test]
fn matmul_epilogue_batch_and_f32_output_of_f16() {
    let p = |act, alpha, beta, tanh| OpParams {
        activation: act,
        alpha,
        beta,
        gelu_tanh: tanh,
        ..OpParams::default()
    };
    for (i, dt) in DTYPES.into_iter().enumerate() {
        let s = i as u64 * 10;
        matmul_case(
            dt,
            dt,
            &[3],
            (9, 20, 11),
            false,
            false,
            true,
            p(Activation::Gelu, 0.5, 0.0, false),
            s + 1,
        );
        matmul_case(
            dt,
            dt,
            &[2, 2],
            (17, 8, 24),
            false,
            true,
            true,
            p(Activation::Silu, 1.0, 0.7, false),
            s + 2,
        );
        matmul_case(
            dt,
            dt,
            &[],
            (64, 32, 40),
            true,
            false,
            false,
            p(Activation::Relu, 2.0, -1.0, false),
            s + 3,
        );
        matmul_case(dt, dt, &[], (10, 12, 6), false, false, true, p(Activation::Gelu, 1.0, 0.0, true), s + 4);
    }
    matmul_case(DType::F16, DType::F32, &[2], (40, 24, 36), false, false, true, OpParams::default(), 99);
    matmul_case(DType::F16, DType::F32, &[], (1, 64, 36), false, true, false, OpParams::default(), 98);
}

#[test]
fn gemv_for_decode_in_both_weight_layouts() {
    let mut seed = 200;
    for dt in DTYPES {
        for k in [64, 7, 1000] {
            for n in [1, 33, 256] {
                for tb in [false, true] {
                    seed += 1;
                    matmul_case(dt, dt, &[], (1, k, n), false, tb, seed % 2 == 0, OpParams::default(), seed);
                }
            }
        }
        matmul_case(dt, dt, &[4], (1, 48, 20), false, true, true, OpParams::default(), 299);
    }
}

#[test]
fn gemv_tile_shapes_for_wide_outputs() {
    // Wide N picks more rows per subgroup ([N, K] weights) and wider row segments ([K, N]);
    // odd K leaves tails after the unrolled steps; a batch offsets both operands.
    let mut seed = 400;
    for dt in DTYPES {
        for (k, n, tb) in [
            (40, 8200, true),
            (16, 4100, true),
            (1000, 2056, true),
            (24, 16392, false),
            (520, 8200, false),
            (9, 4104, false),
        ] {
            seed += 1;
            matmul_case(dt, dt, &[], (1, k, n), false, tb, seed % 2 == 0, OpParams::default(), seed);
        }
        matmul_case(dt, dt, &[3], (1, 72, 4104), false, false, true, OpParams::default(), seed + 50);
        matmul_case(dt, dt, &[2], (1, 72, 4104), false, true, false, OpParams::default(), seed + 51);
    }
}

#[test]
fn elementwise_with_broadcast_and_activations() {
    let mut r = rng(7);
    for dt in DTYPES {
        let a = Tensor::random(&mut r, dt, &[3, 5, 37]);
        for bshape in [&[3, 5, 37][..], &[37], &[5, 1], &[3, 1, 37], &[1]] {
            let b = Tensor::random(&mut r, dt, bshape);
            for kind in [OpKind::Add, OpKind::Mul] {
                let o = a.like();
                compare(&OpDesc::new(kind, &[a.view, b.view], o.view), &[&a, &b], &o, tol(dt));
            }
        }
        let x = Tensor::random(&mut r, dt, &[1000]);
        for (kind, tanh) in
            [(OpKind::Scale, false), (OpKind::Silu, false), (OpKind::Gelu, false), (OpKind::Gelu, true)]
        {
            let o = x.like();
            let op = OpDesc::new(kind, &[x.view], o.view).with_params(OpParams {
                alpha: -1.5,
                gelu_tanh: tanh,
                ..OpParams::default()
            });
            compare(&op, &[&x], &o, tol(dt));
        }
    }
}

#[test]
fn large_elementwise_spans_a_two_dimensional_grid() {
    // More than 65535 workgroups of 256 threads.
    let mut r = rng(8);
    let a = Tensor::random(&mut r, DType::F32, &[65536 * 256 + 100]);
    let o = a.like();
    let op = OpDesc::new(OpKind::Silu, &[a.view], o.view);
    compare(&op, &[&a], &o, tol(DType::F32));
}

#[test]
fn softmax_and_norms_over_rows() {
    let mut r = rng(9);
    for dt in DTYPES {
        for shape in [&[1, 1][..], &[7, 13], &[3, 2, 1000], &[2, 4096]] {
            let x = Tensor::random(&mut r, dt, shape);
            let last = *shape.last().unwrap();
            let o = x.like();
            compare(&OpDesc::new(OpKind::Softmax, &[x.view], o.view), &[&x], &o, tol(dt));
            let w = Tensor::random(&mut r, dt, &[last]);
            let b = Tensor::random(&mut r, dt, &[last]);
            let p = OpParams { eps: 1e-5, ..OpParams::default() };
            let o = x.like();
            compare(&OpDesc::new(OpKind::RmsNorm, &[x.view], o.view).with_params(p), &[&x], &o, tol(dt));
            let o = x.like();
            compare(
                &OpDesc::new(OpKind::RmsNorm, &[x.view, w.view], o.view).with_params(p),
                &[&x, &w],
                &o,
                tol(dt),
            );
            let o = x.like();
            compare(
                &OpDesc::new(OpKind::LayerNorm, &[x.view, w.view, b.view], o.view).with_params(p),
                &[&x, &w, &b],
                &o,
                tol(dt),
            );
            let o = x.like();
            compare(&OpDesc::new(OpKind::LayerNorm, &[x.view], o.view).with_params(p), &[&x], &o, tol(dt));
        }
    }
}

#[test]
fn rope_in_both_pairings_with_a_position_offset() {
    let mut r = rng(10);
    for dt in DTYPES {
        for shape in [&[5, 3, 8][..], &[2, 7, 4, 64]] {
            for interleaved in [false, true] {
                let x = Tensor::random(&mut r, dt, shape);
                let o = x.like();
                let op = OpDesc::new(OpKind::Rope, &[x.view], o.view).with_params(OpParams {
                    rope_position: 11,
                    rope_interleaved: interleaved,
                    rope_theta: 10000.0,
                    ..OpParams::default()
                });
                compare(&op, &[&x], &o, if dt == DType::F16 { 1e-2 } else { 1e-4 });
            }
        }
    }
}

/// One attention case: batch 0 means q is rank 3; `mask` is the mask's shape.
struct Attn {
    batch: usize,
    h: usize,
    hkv: usize,
    sq: usize,
    skv: usize,
    d: usize,
    causal: bool,
    kv_len: u32,
    mask: Option<&'static [usize]>,
}

#[test]
fn attention_causal_gqa_kv_len_and_mask() {
    let mut r = rng(11);
    for dt in DTYPES {
        let cases = [
            Attn { batch: 0, h: 2, hkv: 2, sq: 5, skv: 5, d: 16, causal: false, kv_len: 0, mask: None },
            Attn { batch: 0, h: 4, hkv: 2, sq: 7, skv: 7, d: 32, causal: true, kv_len: 0, mask: None },
            Attn { batch: 1, h: 8, hkv: 2, sq: 1, skv: 40, d: 64, causal: true, kv_len: 30, mask: None },
            Attn { batch: 2, h: 2, hkv: 1, sq: 3, skv: 130, d: 8, causal: false, kv_len: 100, mask: None },
            Attn {
                batch: 2,
                h: 3,
                hkv: 3,
                sq: 4,
                skv: 6,
                d: 24,
                causal: false,
                kv_len: 0,
                mask: Some(&[4, 6]),
            },
            // Several blocks of 64 query rows and several tiles of 64 keys (attention_tiled).
            Attn {
                batch: 1,
                h: 3,
                hkv: 1,
                sq: 130,
                skv: 200,
                d: 32,
                causal: true,
                kv_len: 180,
                mask: Some(&[1, 1, 1, 200]),
            },
            Attn {
                batch: 0,
                h: 2,
                hkv: 2,
                sq: 100,
                skv: 150,
                d: 64,
                causal: false,
                kv_len: 0,
                mask: Some(&[100, 150]),
            },
            Attn {
                batch: 0,
                h: 2,
                hkv: 1,
                sq: 66,
                skv: 70,
                d: 128,
                causal: true,
                kv_len: 0,
                mask: Some(&[2, 1, 70]),
            },
            // head_dim 128 (two threads per row): several row blocks and key tiles of 32,
            // GQA, kv_len; a padded head_dim; decode rows (one workgroup per row).
            Attn {
                batch: 1,
                h: 4,
                hkv: 2,
                sq: 130,
                skv: 200,
                d: 128,
                causal: true,
                kv_len: 180,
                mask: Some(&[1, 1, 1, 200]),
            },
            Attn { batch: 0, h: 2, hkv: 2, sq: 40, skv: 75, d: 80, causal: false, kv_len: 0, mask: None },
            Attn { batch: 2, h: 4, hkv: 1, sq: 1, skv: 300, d: 128, causal: true, kv_len: 257, mask: None },
            Attn { batch: 0, h: 2, hkv: 2, sq: 20, skv: 33, d: 256, causal: true, kv_len: 0, mask: None },
            // Decode over a long KV: several steps of 256 keys, the last one partly empty.
            Attn {
                batch: 0,
                h: 8,
                hkv: 2,
                sq: 2,
                skv: 1100,
                d: 64,
                causal: true,
                kv_len: 1030,
                mask: Some(&[2, 1100]),
            },
        ];
        for Attn { batch: bt, h, hkv, sq, skv, d, causal, kv_len, mask } in cases {
            let pre: Vec<usize> = if bt > 0 { vec![bt] } else { vec![] };
            let q = Tensor::random(&mut r, dt, &[pre.clone(), vec![h, sq, d]].concat());
            let k = Tensor::random(&mut r, dt, &[pre.clone(), vec![hkv, skv, d]].concat());
            let v = Tensor::random(&mut r, dt, &[pre.clone(), vec![hkv, skv, d]].concat());
            let o = q.like();
            let m = mask.map(|s| Tensor::random(&mut r, dt, s));
            let mut inputs = vec![q.view, k.view, v.view];
            let mut ts = vec![&q, &k, &v];
            if let Some(m) = &m {
                inputs.push(m.view);
                ts.push(m);
            }
            let op = OpDesc::new(OpKind::Attention, &inputs, o.view).with_params(OpParams {
                causal,
                kv_len,
                ..OpParams::default()
            });
            compare(&op, &ts, &o, if dt == DType::F16 { 1e-2 } else { 1e-4 });
        }
    }
}

#[test]
fn copy_converts_and_packs_strided_views() {
    let mut r = rng(12);
    for (src, dst) in [
        (DType::F32, DType::F16),
        (DType::F16, DType::F32),
        (DType::F32, DType::F32),
        (DType::F16, DType::F16),
    ] {
        let a = Tensor::random_transposed(&mut r, src, &[2, 19, 33]);
        let o = Tensor::zeros(dst, &[2, 19, 33]);
        compare(&OpDesc::new(OpKind::Copy, &[a.view], o.view), &[&a], &o, tol(DType::F16));
    }
}

#[test]
fn strided_inputs_and_outputs_are_packed_on_the_host() {
    let mut r = rng(13);
    let a = Tensor::random_transposed(&mut r, DType::F32, &[17, 9]);
    let b = Tensor::random(&mut r, DType::F32, &[9]);
    // Output into a transposed view too.
    let mut o = Tensor::zeros(DType::F32, &[9, 17]);
    o.view.shape.swap(0, 1);
    o.view.strides.swap(0, 1);
    compare(&OpDesc::new(OpKind::Add, &[a.view, b.view], o.view), &[&a, &b], &o, tol(DType::F32));
    // A view that starts inside its buffer.
    let big = Tensor::random(&mut r, DType::F32, &[100]);
    let mut x = big.clone();
    x.view = npuhybrid::op::TensorView::contiguous(big.buf.id(), DType::F32, &[8, 10], 20 * 4);
    let o = Tensor::zeros(DType::F32, &[8, 10]);
    compare(&OpDesc::new(OpKind::Softmax, &[x.view], o.view), &[&x], &o, tol(DType::F32));
}

#[test]
fn device_info_reports_capabilities() {
    let info = npuhybrid::backend::Backend::info(gpu());
    assert!(info.available);
    assert_eq!(info.kind, npuhybrid::backend::DeviceKind::Gpu);
    for key in [
        "device_type",
        "api_version",
        "subgroup_size",
        "shared_memory_bytes",
        "fp16_arithmetic",
        "storage_16bit",
        "cooperative_matrix_khr",
        "memory_heaps",
        "unified_memory",
    ] {
        assert!(info.details.iter().any(|(k, _)| k == key), "missing {key}");
    }
    assert!(info.memory_bytes > 0);
    assert!(info.dtypes & DType::F32.bit() != 0);
    assert!(info.dtypes & DType::BF16.bit() == 0);
}
