//! Every op against the f64 reference on random inputs: odd shapes, strided (transposed,
//! padded) views, batches, broadcasts, in-place runs, and f16 / bf16 / integer dtypes.

use super::execute_on_host;
use super::reference::{self as refr, unravel, T};
use crate::backend::OpMemory;
use crate::memory::{Buffer, HostPool};
use crate::op::{dense_strides, validate, Activation, DType, OpDesc, OpKind, OpParams, TensorView};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    Dense,
    /// The last two dims are swapped in memory (column-major matrices).
    Transposed,
    /// Rows padded by 3 elements and the view starts 5 elements into its buffer.
    Padded,
}

use Layout::*;

struct Bench {
    pool: Arc<HostPool>,
    bufs: Vec<Arc<Buffer>>,
    rng: StdRng,
}

unsafe fn write_elem(p: *mut u8, dt: DType, i: usize, v: f64) {
    match dt {
        DType::F32 => *(p as *mut f32).add(i) = v as f32,
        DType::F16 => *(p as *mut f16).add(i) = f16::from_f64(v),
        DType::BF16 => *(p as *mut bf16).add(i) = bf16::from_f64(v),
        DType::I8 => *(p as *mut i8).add(i) = v as i8,
        DType::I32 => *(p as *mut i32).add(i) = v as i32,
        _ => unreachable!("element access to a quantized type"),
    }
}

unsafe fn read_elem(p: *const u8, dt: DType, i: usize) -> f64 {
    match dt {
        DType::F32 => *(p as *const f32).add(i) as f64,
        DType::F16 => (*(p as *const f16).add(i)).to_f64(),
        DType::BF16 => (*(p as *const bf16).add(i)).to_f64(),
        DType::I8 => *(p as *const i8).add(i) as f64,
        DType::I32 => *(p as *const i32).add(i) as f64,
        _ => unreachable!("element access to a quantized type"),
    }
}

/// Element offsets of every element of the view, in row-major logical order.
fn elem_offsets(view: &TensorView) -> Vec<usize> {
    let mut offs = vec![0usize];
    for (&d, &s) in view.dims().iter().zip(view.strides()) {
        offs = offs.iter().flat_map(|&o| (0..d).map(move |i| o + i * s)).collect();
    }
    offs
}

impl Bench {
    fn new(seed: u64) -> Bench {
        Bench { pool: HostPool::new(0), bufs: Vec::new(), rng: StdRng::seed_from_u64(seed) }
    }

    fn buffer(&self, view: &TensorView) -> &Arc<Buffer> {
        self.bufs.iter().find(|b| b.id() == view.buffer).unwrap()
    }

    /// An uninitialised (zeroed) view of `shape` in a fresh buffer laid out as `layout`.
    fn view(&mut self, dt: DType, shape: &[usize], layout: Layout) -> TensorView {
        let r = shape.len();
        let mut phys = shape.to_vec();
        let mut offset = 0;
        match layout {
            Transposed if r >= 2 => phys.swap(r - 1, r - 2),
            Padded => {
                phys[r - 1] += 3;
                offset = 5;
            }
            _ => {}
        }
        let ps = dense_strides(&phys);
        let mut strides = ps;
        if layout == Transposed && r >= 2 {
            strides.swap(r - 1, r - 2);
        }
        let elems = offset + phys.iter().product::<usize>();
        let id = self.bufs.len() as u64 + 1;
        let bytes = elems * dt.size();
        let block = self.pool.alloc(bytes).unwrap();
        self.bufs.push(Arc::new(Buffer::pooled(id, block, bytes)));
        let mut v = TensorView::contiguous(id, dt, shape, offset * dt.size());
        v.strides = strides;
        v
    }

    /// A view filled with random values in [-1, 1] (ints: small integers); returns the values
    /// as stored, so the reference sees exactly what the kernels read.
    fn input(&mut self, dt: DType, shape: &[usize], layout: Layout) -> (TensorView, T) {
        let v = self.view(dt, shape, layout);
        let n: usize = shape.iter().product();
        let vals: Vec<f64> = (0..n)
            .map(|_| match dt {
                DType::I8 => self.rng.random_range(-128..=127) as f64,
                DType::I32 => self.rng.random_range(-100_000_000..=100_000_000) as f64,
                _ => self.rng.random_range(-1.0..1.0),
            })
            .collect();
        let base = unsafe { self.buffer(&v).as_ptr().add(v.offset) };
        for (&off, &x) in elem_offsets(&v).iter().zip(&vals) {
            unsafe { write_elem(base, dt, off, x) };
        }
        let stored = self.read(&v);
        (v, stored)
    }

    fn read(&self, v: &TensorView) -> T {
        let base = unsafe { self.buffer(v).as_ptr().add(v.offset) };
        let data = elem_offsets(v).iter().map(|&off| unsafe { read_elem(base, v.dtype, off) }).collect();
        T::new(v.dims(), data)
    }

    fn run(&self, op: &OpDesc) {
        validate::validate(op, &|v| Ok(self.buffer(v).len())).expect("op is valid");
        execute_on_host(op, &OpMemory::new(self.bufs.clone())).expect("op runs");
    }
}

fn tol(dt: DType) -> f64 {
    match dt {
        DType::F32 => 2e-5,
        DType::F16 => 2e-3,
        DType::BF16 => 1.6e-2,
        _ => 0.0,
    }
}

#[track_caller]
fn assert_close(got: &T, want: &T, tol: f64, what: &str) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    for (i, (g, w)) in got.data.iter().zip(&want.data).enumerate() {
        assert!(
            g == w || (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: element {i} ({:?}) is {g}, want {w}",
            unravel(i, &got.shape)
        );
    }
}

const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

#[allow(clippy::too_many_arguments)]
fn check_matmul(
    bench: &mut Bench,
    dt: DType,
    out_dt: DType,
    batch: (&[usize], &[usize], &[usize]),
    mkn: (usize, usize, usize),
    p: OpParams,
    with_bias: bool,
    layouts: [Layout; 3],
) {
    check_matmul_ab(bench, (dt, dt), out_dt, batch, mkn, p, with_bias, layouts)
}

/// `check_matmul` with B of its own type (an f16 / bf16 weight under f32 activations).
#[allow(clippy::too_many_arguments)]
fn check_matmul_ab(
    bench: &mut Bench,
    (dt, b_dt): (DType, DType),
    out_dt: DType,
    batch: (&[usize], &[usize], &[usize]),
    (m, k, n): (usize, usize, usize),
    p: OpParams,
    with_bias: bool,
    layouts: [Layout; 3],
) {
    let shape = |b: &[usize], r: usize, c: usize| [b, &[r, c]].concat();
    let a_shape = if p.trans_a { shape(batch.0, k, m) } else { shape(batch.0, m, k) };
    let b_shape = if p.trans_b { shape(batch.1, n, k) } else { shape(batch.1, k, n) };
    let (a, ta) = bench.input(dt, &a_shape, layouts[0]);
    let (b, tb) = bench.input(b_dt, &b_shape, layouts[1]);
    let (c, tc) = bench.input(out_dt, &shape(batch.2, m, n), layouts[2]);
    let bias = with_bias.then(|| bench.input(out_dt, &[n], Dense));
    let mut inputs = vec![a, b];
    inputs.extend(bias.as_ref().map(|b| b.0));
    let op = OpDesc::new(OpKind::Matmul, &inputs, c).with_params(p);
    bench.run(&op);
    let want = refr::matmul(&ta, &tb, bias.as_ref().map(|b| &b.1), &tc, &p);
    // f32 accumulation error grows with k; the output dtype adds its rounding.
    let t = tol(out_dt).max(tol(dt) * 0.5) + 2e-6 * k as f64;
    let what =
        format!("matmul {dt}x{b_dt}->{out_dt} {batch:?} m{m} k{k} n{n} {p:?} bias {with_bias} {layouts:?}");
    assert_close(&bench.read(&c), &want, t, &what);
}

#[test]
fn matmul_matches_reference_over_shapes_and_layouts() {
    let mut bench = Bench::new(1);
    let shapes =
        [(1, 1, 1), (3, 17, 5), (17, 3, 1000), (64, 100, 33), (130, 70, 90), (1, 300, 65), (1, 1000, 17)];
    for &(m, k, n) in &shapes {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let p = OpParams { trans_a: ta, trans_b: tb, ..Default::default() };
            for layouts in [[Dense; 3], [Transposed, Padded, Padded], [Padded, Transposed, Transposed]] {
                check_matmul(
                    &mut bench,
                    DType::F32,
                    DType::F32,
                    (&[], &[], &[]),
                    (m, k, n),
                    p,
                    false,
                    layouts,
                );
            }
        }
    }
}

#[test]
fn matmul_alpha_beta_bias_and_activations() {
    let mut bench = Bench::new(2);
    for act in [Activation::None, Activation::Relu, Activation::Silu, Activation::Gelu] {
        for &(m, k, n) in &[(1, 40, 70), (33, 20, 40), (70, 64, 130)] {
            let p = OpParams { alpha: 0.5, beta: -1.5, activation: act, ..Default::default() };
            check_matmul(&mut bench, DType::F32, DType::F32, (&[], &[], &[]), (m, k, n), p, true, [Dense; 3]);
            let p = OpParams { alpha: 2.0, activation: act, trans_b: true, ..Default::default() };
            check_matmul(
                &mut bench,
                DType::F32,
                DType::F32,
                (&[], &[], &[]),
                (m, k, n),
                p,
                act != Activation::Relu,
                [Dense, Dense, Transposed],
            );
        }
    }
}

#[test]
fn matmul_batches_and_broadcasts() {
    let mut bench = Bench::new(3);
    let p = OpParams::default();
    check_matmul(&mut bench, DType::F32, DType::F32, (&[3], &[3], &[3]), (5, 7, 9), p, false, [Dense; 3]);
    check_matmul(
        &mut bench,
        DType::F32,
        DType::F32,
        (&[3], &[1], &[3]),
        (40, 30, 20),
        p,
        true,
        [Padded, Dense, Dense],
    );
    check_matmul(
        &mut bench,
        DType::F32,
        DType::F32,
        (&[1], &[4], &[4]),
        (1, 64, 100),
        p,
        false,
        [Dense, Transposed, Dense],
    );
    check_matmul(
        &mut bench,
        DType::F32,
        DType::F32,
        (&[2, 3], &[6], &[2, 3]),
        (9, 17, 3),
        p,
        false,
        [Dense; 3],
    );
    let p = OpParams { trans_a: true, beta: 1.0, ..Default::default() };
    check_matmul(
        &mut bench,
        DType::F32,
        DType::F32,
        (&[2, 2], &[1, 1], &[2, 2]),
        (65, 9, 66),
        p,
        false,
        [Transposed, Padded, Padded],
    );
}

/// Shapes past the packed GEMM's blocks: k over one depth slice (256), m over one row block,
/// n over one column block (3072), ragged edges everywhere; f32 and half inputs.
#[test]
fn matmul_spans_several_blocks() {
    let mut bench = Bench::new(7);
    for &(m, k, n, dt) in &[
        (401, 300, 45, DType::F32),
        (20, 300, 3100, DType::F32),
        (130, 513, 70, DType::F16),
        (61, 270, 99, DType::BF16),
    ] {
        for (ta, tb) in [(false, false), (true, true), (false, true)] {
            let p = OpParams { trans_a: ta, trans_b: tb, alpha: 0.75, beta: 0.5, ..Default::default() };
            check_matmul(&mut bench, dt, dt, (&[], &[], &[]), (m, k, n), p, true, [Dense; 3]);
        }
    }
}

#[test]
fn matmul_half_precision_inputs_and_outputs() {
    let mut bench = Bench::new(4);
    for dt in [DType::F16, DType::BF16] {
        for out_dt in [dt, DType::F32] {
            for &(m, k, n) in &[(1, 100, 50), (1, 37, 53), (1, 301, 203), (17, 33, 65), (96, 64, 80)] {
                for (ta, tb) in [(false, false), (true, true)] {
                    let p = OpParams {
                        trans_a: ta,
                        trans_b: tb,
                        beta: 0.5,
                        activation: Activation::Silu,
                        ..Default::default()
                    };
                    check_matmul(
                        &mut bench,
                        dt,
                        out_dt,
                        (&[2], &[1], &[2]),
                        (m, k, n),
                        p,
                        true,
                        [Padded, Dense, Padded],
                    );
                }
            }
        }
    }
}

/// f32 activations times f16 / bf16 weights, against f64 math on the stored (widened)
/// weights, at every instruction-set level: decode rows (m = 1, 2..8: `half_weights.rs` when
/// B is [n, k]), prefill rows (m = 64: the packed GEMM widens while packing), k with and
/// without vector tails, both trans_b, padded and transposed views, batches (within and past
/// the streamed path's 8 rows), beta, bias, activation; then through the backend three times,
/// where the weight cache must leave the half weight alone.
#[test]
fn f32_activations_with_half_weights_at_every_level() {
    use super::simd::{test_cap, test_levels};
    use crate::backend::Backend;
    for level in test_levels() {
        let _cap = test_cap(level);
        let mut bench = Bench::new(50 + level as u64);
        for b_dt in [DType::F16, DType::BF16] {
            let ab = (DType::F32, b_dt);
            for &(m, k, n) in
                &[(1, 1, 1), (1, 300, 37), (2, 33, 5), (3, 64, 70), (5, 7, 9), (8, 100, 43), (64, 97, 35)]
            {
                for tb in [true, false] {
                    let p = OpParams {
                        trans_b: tb,
                        beta: 0.5,
                        activation: Activation::Silu,
                        ..Default::default()
                    };
                    let plain = (&[][..], &[][..], &[][..]);
                    check_matmul_ab(&mut bench, ab, DType::F32, plain, (m, k, n), p, true, [Dense; 3]);
                    let p = OpParams { trans_a: true, trans_b: tb, alpha: 0.75, ..Default::default() };
                    for layouts in [[Transposed, Padded, Padded], [Padded, Transposed, Dense]] {
                        check_matmul_ab(&mut bench, ab, DType::F32, plain, (m, k, n), p, false, layouts);
                    }
                }
            }
            let p = OpParams { trans_b: true, ..Default::default() };
            for (batch, m) in [
                ((&[2][..], &[1][..], &[2][..]), 3),
                ((&[1], &[1], &[3]), 2),
                ((&[3], &[1], &[3]), 4),
                ((&[2], &[2], &[2]), 1),
            ] {
                check_matmul_ab(
                    &mut bench,
                    ab,
                    DType::F32,
                    batch,
                    (m, 40, 21),
                    p,
                    true,
                    [Padded, Dense, Dense],
                );
            }
        }
        let cpu = super::CpuBackend::new(2).unwrap();
        for &(m, tb) in &[(1, true), (6, true), (40, true), (40, false)] {
            let (k, n) = (70, 33);
            let p = OpParams { trans_b: tb, ..Default::default() };
            let (a, ta) = bench.input(DType::F32, &[m, k], Dense);
            let (b, tbv) = bench.input(DType::F16, &if tb { [n, k] } else { [k, n] }, Dense);
            let c = bench.view(DType::F32, &[m, n], Dense);
            let op = OpDesc::new(OpKind::Matmul, &[a, b], c).with_params(p);
            for run in 0..3 {
                cpu.execute(&op, &OpMemory::new(bench.bufs.clone())).unwrap();
                let want = refr::matmul(&ta, &tbv, None, &bench.read(&c), &OpParams { beta: 0.0, ..p });
                assert_close(
                    &bench.read(&c),
                    &want,
                    2e-5 + 2e-6 * k as f64,
                    &format!("{level:?} m{m} run {run}"),
                );
            }
        }
        // Half weights are widened while packing on every call, never kept as f32 panels:
        // a cached copy would be twice the size of a mapped f16 model's weights.
        let packed = cpu.weights.as_ref().unwrap().bytes();
        assert_eq!(packed, 0, "{level:?}: half weights packed ({packed} bytes)");
        // An f32 weight of the same shape is cached (the cache itself is on).
        let (m, k, n) = (40, 70, 33);
        let (a, _) = bench.input(DType::F32, &[m, k], Dense);
        let (b, _) = bench.input(DType::F32, &[n, k], Dense);
        let c = bench.view(DType::F32, &[m, n], Dense);
        let op = OpDesc::new(OpKind::Matmul, &[a, b], c)
            .with_params(OpParams { trans_b: true, ..Default::default() });
        for _ in 0..2 {
            cpu.execute(&op, &OpMemory::new(bench.bufs.clone())).unwrap();
        }
        let packed = cpu.weights.as_ref().unwrap().bytes();
        assert_eq!(
            packed > 0,
            level >= super::simd::Isa::Avx2,
            "{level:?}: f32 weight packed ({packed} bytes)"
        );
    }
}

fn unary_op(kind: OpKind, p: &OpParams) -> impl Fn(f64) -> f64 {
    let (kind, alpha, tanh) = (kind, p.alpha as f64, p.gelu_tanh);
    move |x| match kind {
        OpKind::Scale => alpha * x,
        OpKind::Silu => refr::silu(x),
        OpKind::Gelu => refr::gelu(x, tanh),
        _ => unreachable!(),
    }
}

#[test]
fn unary_ops_match_reference() {
    let mut bench = Bench::new(5);
    let cases = [
        (OpKind::Scale, OpParams { alpha: -2.5, ..Default::default() }),
        (OpKind::Silu, OpParams::default()),
        (OpKind::Gelu, OpParams::default()),
        (OpKind::Gelu, OpParams { gelu_tanh: true, ..Default::default() }),
    ];
    for (kind, p) in cases {
        for dt in FLOATS {
            for (shape, layout) in [
                (&[1][..], Dense),
                (&[1000][..], Dense),
                (&[17, 3][..], Transposed),
                (&[3, 5, 17][..], Padded),
                (&[300, 200][..], Dense),
            ] {
                let (a, ta) = bench.input(dt, shape, layout);
                let out = bench.view(dt, shape, Padded);
                bench.run(&OpDesc::new(kind, &[a], out).with_params(p));
                let want = refr::unary(&ta, unary_op(kind, &p));
                assert_close(&bench.read(&out), &want, tol(dt), &format!("{kind} {dt} {shape:?} {layout:?}"));
                // In place: the input view is the output view.
                bench.run(&OpDesc::new(kind, &[a], a).with_params(p));
                assert_close(&bench.read(&a), &want, tol(dt), &format!("{kind} in place {dt} {shape:?}"));
            }
        }
    }
}

#[test]
fn add_and_mul_broadcast_and_run_in_place() {
    let mut bench = Bench::new(6);
    let shapes: [(&[usize], &[usize]); 6] = [
        (&[1], &[1]),
        (&[1000], &[1000]),
        (&[17, 3], &[3]),
        (&[2, 3, 17], &[3, 1]),
        (&[4, 3, 5, 7], &[3, 1, 7]),
        (&[300, 250], &[250]),
    ];
    for kind in [OpKind::Add, OpKind::Mul] {
        let f = move |x: f64, y: f64| if kind == OpKind::Add { x + y } else { x * y };
        for dt in FLOATS {
            for (sa, sb) in shapes {
                for layout in [Dense, Transposed, Padded] {
                    let (a, ta) = bench.input(dt, sa, layout);
                    let (b, tb) = bench.input(dt, sb, layout);
                    let out = bench.view(dt, sa, Dense);
                    bench.run(&OpDesc::new(kind, &[a, b], out));
                    let want = refr::binary(&ta, &tb, f);
                    let what = format!("{kind} {dt} {sa:?} {sb:?} {layout:?}");
                    assert_close(&bench.read(&out), &want, tol(dt), &what);
                    bench.run(&OpDesc::new(kind, &[a, b], a));
                    assert_close(&bench.read(&a), &want, tol(dt), &format!("{what} in place"));
                }
            }
            // b is the output: out = a op out.
            let (a, ta) = bench.input(dt, &[50, 70], Padded);
            let (b, tb) = bench.input(dt, &[50, 70], Transposed);
            bench.run(&OpDesc::new(kind, &[a, b], b));
            assert_close(&bench.read(&b), &refr::binary(&ta, &tb, f), tol(dt), "b in place");
            // Both inputs are the output.
            bench.run(&OpDesc::new(kind, &[a, a], a));
            assert_close(&bench.read(&a), &refr::binary(&ta, &ta, f), tol(dt), "a op a in place");
        }
    }
}

#[test]
fn softmax_and_norms_match_reference() {
    let mut bench = Bench::new(7);
    for dt in FLOATS {
        for (shape, layout) in [
            (&[1, 1][..], Dense),
            (&[3, 17][..], Transposed),
            (&[5, 1000][..], Padded),
            (&[2, 3, 64][..], Dense),
            (&[400, 300][..], Dense),
        ] {
            let (x, tx) = bench.input(dt, shape, layout);
            let last = *shape.last().unwrap();
            let (w, tw) = bench.input(dt, &[last], Dense);
            let (bt, tbt) = bench.input(dt, &[last], Padded);
            let what = format!("{dt} {shape:?} {layout:?}");

            let out = bench.view(dt, shape, Padded);
            bench.run(&OpDesc::new(OpKind::Softmax, &[x], out));
            assert_close(&bench.read(&out), &refr::softmax(&tx), tol(dt), &format!("softmax {what}"));

            let p = OpParams { eps: 1e-3, ..Default::default() };
            bench.run(&OpDesc::new(OpKind::RmsNorm, &[x, w], out).with_params(p));
            assert_close(
                &bench.read(&out),
                &refr::rmsnorm(&tx, Some(&tw), 1e-3),
                tol(dt),
                &format!("rmsnorm {what}"),
            );
            bench.run(&OpDesc::new(OpKind::RmsNorm, &[x], out).with_params(p));
            assert_close(
                &bench.read(&out),
                &refr::rmsnorm(&tx, None, 1e-3),
                tol(dt),
                &format!("rmsnorm no weight {what}"),
            );

            bench.run(&OpDesc::new(OpKind::LayerNorm, &[x, w, bt], out).with_params(p));
            let want = refr::layernorm(&tx, Some(&tw), Some(&tbt), 1e-3);
            assert_close(&bench.read(&out), &want, tol(dt), &format!("layernorm {what}"));

            // In place, without affine parameters.
            bench.run(&OpDesc::new(OpKind::LayerNorm, &[x], x).with_params(p));
            assert_close(
                &bench.read(&x),
                &refr::layernorm(&tx, None, None, 1e-3),
                tol(dt),
                &format!("layernorm in place {what}"),
            );
            let tx = bench.read(&x);
            bench.run(&OpDesc::new(OpKind::Softmax, &[x], x));
            assert_close(&bench.read(&x), &refr::softmax(&tx), tol(dt), &format!("softmax in place {what}"));
        }
    }
}

#[test]
fn softmax_is_stable_for_large_inputs() {
    let mut bench = Bench::new(8);
    let x = bench.view(DType::F32, &[2, 3], Dense);
    let vals = [1000.0f32, 1001.0, 999.0, -1000.0, -1e30, -999.0];
    bench.buffer(&x).write(0, &vals.iter().flat_map(|v| v.to_ne_bytes()).collect::<Vec<_>>()).unwrap();
    let want = refr::softmax(&bench.read(&x));
    bench.run(&OpDesc::new(OpKind::Softmax, &[x], x));
    assert_close(&bench.read(&x), &want, 1e-6, "softmax of large values");
}

#[test]
fn rope_matches_reference_in_both_pairings() {
    use super::simd::{test_cap, test_levels};
    let mut bench = Bench::new(9);
    // Every kernel level: dense tensors take the AVX2 / AVX-512 grouped-heads stream, padded
    // ones the per-row stream, interleaved pairs the dispatched scalar loop.
    for (level, dt) in test_levels().into_iter().flat_map(|l| FLOATS.map(|d| (l, d))) {
        let _cap = test_cap(level);
        for interleaved in [false, true] {
            for (shape, layout) in [
                (&[1, 1, 2][..], Dense),
                (&[5, 3, 8][..], Padded),
                (&[2, 7, 4, 64][..], Dense),
                (&[70, 2, 8][..], Dense),
                (&[600, 1, 128][..], Dense),
            ] {
                let p = OpParams {
                    rope_theta: 500.0,
                    rope_position: 37,
                    rope_interleaved: interleaved,
                    ..Default::default()
                };
                let (x, tx) = bench.input(dt, shape, layout);
                let out = bench.view(dt, shape, Dense);
                bench.run(&OpDesc::new(OpKind::Rope, &[x], out).with_params(p));
                let want = refr::rope(&tx, &p);
                let what = format!("{level:?} rope {dt} {shape:?} interleaved {interleaved}");
                assert_close(&bench.read(&out), &want, tol(dt) * 2.0, &what);
                bench.run(&OpDesc::new(OpKind::Rope, &[x], x).with_params(p));
                assert_close(&bench.read(&x), &want, tol(dt) * 2.0, &format!("{what} in place"));
            }
        }
    }
}

/// The angle table is reused while positions, theta and shape stay the same, and rebuilt
/// when any of them changes (decode steps move the position by one).
#[test]
fn rope_table_follows_position_and_theta() {
    let mut bench = Bench::new(10);
    let (x, tx) = bench.input(DType::F32, &[6, 2, 16], Dense);
    let out = bench.view(DType::F32, &[6, 2, 16], Dense);
    for (position, theta) in [(5, 10000.0), (5, 10000.0), (6, 10000.0), (6, 500.0), (5, 10000.0)] {
        let p = OpParams { rope_theta: theta, rope_position: position, ..Default::default() };
        bench.run(&OpDesc::new(OpKind::Rope, &[x], out).with_params(p));
        assert_close(&bench.read(&out), &refr::rope(&tx, &p), tol(DType::F32) * 2.0, &format!("{p:?}"));
    }
}

#[test]
fn attention_matches_reference() {
    let mut bench = Bench::new(10);
    struct Case {
        q: &'static [usize],
        kv: &'static [usize],
        mask: Option<&'static [usize]>,
        causal: bool,
        kv_len: u32,
        scale: f32,
    }
    let cases = [
        Case { q: &[1, 1, 1], kv: &[1, 1, 1], mask: None, causal: false, kv_len: 0, scale: 0.0 },
        Case { q: &[4, 3, 16], kv: &[2, 10, 16], mask: None, causal: true, kv_len: 7, scale: 0.0 },
        Case { q: &[2, 4, 5, 8], kv: &[2, 1, 5, 8], mask: None, causal: true, kv_len: 0, scale: 0.3 },
        Case {
            q: &[2, 4, 3, 17],
            kv: &[2, 4, 9, 17],
            mask: Some(&[3, 9]),
            causal: false,
            kv_len: 8,
            scale: 0.0,
        },
        Case {
            q: &[1, 2, 6, 32],
            kv: &[1, 2, 6, 32],
            mask: Some(&[1, 2, 6, 6]),
            causal: true,
            kv_len: 0,
            scale: 0.0,
        },
        Case { q: &[2, 8, 64, 64], kv: &[2, 2, 80, 64], mask: None, causal: true, kv_len: 70, scale: 0.0 },
        // Two query blocks, a broadcast mask, keys stored transposed in the Padded round.
        Case {
            q: &[1, 2, 100, 16],
            kv: &[1, 1, 130, 16],
            mask: Some(&[100, 130]),
            causal: true,
            kv_len: 120,
            scale: 0.0,
        },
    ];
    for dt in FLOATS {
        for (ci, c) in cases.iter().enumerate() {
            for layout in [Dense, Padded] {
                let (q, tq) = bench.input(dt, c.q, layout);
                let k_layout = if layout == Padded { Transposed } else { Dense };
                let (k, tk) = bench.input(dt, c.kv, k_layout);
                let (v, tv) = bench.input(dt, c.kv, layout);
                let mask = c.mask.map(|s| bench.input(dt, s, Dense));
                let out = bench.view(dt, c.q, Padded);
                let p = OpParams {
                    causal: c.causal,
                    kv_len: c.kv_len,
                    attn_scale: c.scale,
                    ..Default::default()
                };
                let mut inputs = vec![q, k, v];
                inputs.extend(mask.as_ref().map(|m| m.0));
                bench.run(&OpDesc::new(OpKind::Attention, &inputs, out).with_params(p));
                let want = refr::attention(&tq, &tk, &tv, mask.as_ref().map(|m| &m.1), &p);
                assert_close(
                    &bench.read(&out),
                    &want,
                    tol(dt) * 2.0,
                    &format!("attention case {ci} {dt} {layout:?}"),
                );
            }
        }
    }
}

/// f32 queries over an f16 / bf16 K and V (a half KV cache) give f32 math on the half values:
/// decode rows over a long cache (the row-by-row kernel) and prefill blocks (the sgemm one),
/// grouped-query, causal over the first kv_len keys, keys transposed in the Padded round.
#[test]
fn attention_reads_a_half_kv_cache_under_f32_queries() {
    let mut bench = Bench::new(12);
    // (q shape, kv shape, kv_len): decode (1 and 3 rows) over 300 keys; 100 prefill rows.
    let cases: [(&[usize], &[usize], u32); 3] = [
        (&[14, 1, 64], &[2, 300, 64], 290),
        (&[4, 3, 24], &[2, 300, 24], 0),
        (&[2, 100, 16], &[1, 130, 16], 120),
    ];
    for half in [DType::F16, DType::BF16] {
        for (ci, &(qs, kvs, kv_len)) in cases.iter().enumerate() {
            for layout in [Dense, Padded] {
                let (q, tq) = bench.input(DType::F32, qs, layout);
                let k_layout = if layout == Padded { Transposed } else { Dense };
                let (k, tk) = bench.input(half, kvs, k_layout);
                let (v, tv) = bench.input(half, kvs, layout);
                let out = bench.view(DType::F32, qs, Padded);
                let p = OpParams { causal: true, kv_len, ..Default::default() };
                bench.run(&OpDesc::new(OpKind::Attention, &[q, k, v], out).with_params(p));
                let want = refr::attention(&tq, &tk, &tv, None, &p);
                let what = format!("half kv case {ci} {half} {layout:?}");
                assert_close(&bench.read(&out), &want, tol(DType::F32) * 2.0, &what);
            }
        }
    }
}

#[test]
fn copy_converts_between_all_dtypes() {
    let mut bench = Bench::new(11);
    // Quantized types have their own tests (quant/tests.rs): they hold whole blocks only.
    let plain = || DType::ALL.into_iter().filter(|d| !d.is_quantized());
    for from in plain() {
        for to in plain() {
            for (shape, layout) in [(&[1][..], Dense), (&[17, 3][..], Transposed), (&[300, 130][..], Padded)]
            {
                let (a, ta) = bench.input(from, shape, layout);
                let out = bench.view(to, shape, Dense);
                bench.run(&OpDesc::new(OpKind::Copy, &[a], out));
                // By value: round to the target type, integers saturating toward zero.
                let want = refr::unary(&ta, |x| unsafe {
                    let mut cell = [0u8; 8];
                    write_elem(cell.as_mut_ptr(), to, 0, x);
                    read_elem(cell.as_ptr(), to, 0)
                });
                let exact = from == to || !to.is_float();
                let t = if exact { 0.0 } else { tol(to) };
                assert_close(&bench.read(&out), &want, t, &format!("copy {from}->{to} {shape:?}"));
            }
        }
    }
}

#[test]
fn float_to_int_copies_saturate() {
    let mut bench = Bench::new(12);
    let a = bench.view(DType::F32, &[4], Dense);
    let vals = [300.0f32, -300.0, 2.9, f32::NAN];
    bench.buffer(&a).write(0, &vals.iter().flat_map(|v| v.to_ne_bytes()).collect::<Vec<_>>()).unwrap();
    let out = bench.view(DType::I8, &[4], Dense);
    bench.run(&OpDesc::new(OpKind::Copy, &[a], out));
    assert_eq!(bench.read(&out).data, vec![127.0, -128.0, 2.0, 0.0]);
}

#[test]
fn cpu_backend_reports_itself_and_runs_on_its_pool() {
    use crate::backend::{Backend, DeviceKind};
    let cpu = super::CpuBackend::new(2).unwrap();
    let info = cpu.info();
    assert_eq!(info.kind, DeviceKind::Cpu);
    assert!(info.available && !info.name.is_empty());
    assert!(OpKind::ALL.iter().all(|k| info.supports_kind(*k)));
    // What its compute ops take: floats and quantized weights, not the integers only copy
    // takes (it still converts them: `copy_converts_between_all_dtypes`).
    for d in DType::ALL {
        let integer = matches!(d, DType::I8 | DType::I32);
        assert_eq!(info.dtypes & d.bit() != 0, !integer, "{d}");
    }
    assert!(info.peak_gflops > 0.0 && info.bandwidth_gbs > 0.0);
    assert_eq!(cpu.threads(), 2);

    let mut bench = Bench::new(13);
    let (a, ta) = bench.input(DType::F32, &[64, 64], Dense);
    let (b, tb) = bench.input(DType::F32, &[64, 64], Dense);
    let out = bench.view(DType::F32, &[64, 64], Dense);
    let op = OpDesc::new(OpKind::Matmul, &[a, b], out);
    cpu.execute(&op, &OpMemory::new(bench.bufs.clone())).unwrap();
    let want = refr::matmul(&ta, &tb, None, &T::zeros(&[64, 64]), &OpParams::default());
    assert_close(&bench.read(&out), &want, 1e-4, "matmul on the backend");

    // Tiny ops run on the calling thread instead of the pool; same results.
    let (x, tx) = bench.input(DType::F32, &[16], Dense);
    let (y, ty) = bench.input(DType::F32, &[16], Dense);
    let z = bench.view(DType::F32, &[16], Dense);
    let op = OpDesc::new(OpKind::Add, &[x, y], z);
    assert!(super::runs_serially(&op));
    cpu.execute(&op, &OpMemory::new(bench.bufs.clone())).unwrap();
    let want = refr::binary(&tx, &ty, |a, b| a + b);
    assert_close(&bench.read(&z), &want, 1e-6, "tiny add on the backend");
}

/// Every instruction-set level this machine has (portable, AVX2, AVX-512) gives the same
/// results: matmul, the fused activation / softmax / rope / add streams (in place and not,
/// padded rows, a length with tails) and rmsnorm. Other tests running meanwhile may take the
/// lower paths too, which is harmless: all are correct.
#[test]
fn every_level_matches_reference() {
    use super::simd::{test_cap, test_levels, Isa};
    for level in test_levels() {
        let _cap = test_cap(level);
        assert_eq!(super::simd::has_avx2_fma(), level >= Isa::Avx2);
        let mut bench = Bench::new(14);
        for dt in FLOATS {
            for &(m, k, n) in &[(1, 37, 53), (1, 301, 203), (40, 33, 65)] {
                for tb in [false, true] {
                    let p = OpParams { trans_b: tb, activation: Activation::Gelu, ..Default::default() };
                    check_matmul(&mut bench, dt, dt, (&[], &[], &[]), (m, k, n), p, true, [Dense; 3]);
                }
            }
            let (x, tx) = bench.input(dt, &[37, 130], Padded);
            let out = bench.view(dt, &[37, 130], Dense);
            let what = |op: &str| format!("{level:?} {op} {dt}");
            for (kind, p) in [
                (OpKind::Silu, OpParams::default()),
                (OpKind::Gelu, OpParams::default()),
                (OpKind::Gelu, OpParams { gelu_tanh: true, ..Default::default() }),
            ] {
                let want = refr::unary(&tx, unary_op(kind, &p));
                bench.run(&OpDesc::new(kind, &[x], out).with_params(p));
                assert_close(&bench.read(&out), &want, tol(dt), &what(&kind.to_string()));
                bench.run(&OpDesc::new(kind, &[out], out).with_params(p));
                let twice = refr::unary(&want, unary_op(kind, &p));
                assert_close(&bench.read(&out), &twice, tol(dt) * 2.0, &what("in place"));
            }
            let (y, ty) = bench.input(dt, &[37, 130], Dense);
            bench.run(&OpDesc::new(OpKind::Add, &[x, y], out));
            let sum = T::new(&tx.shape, tx.data.iter().zip(&ty.data).map(|(a, b)| a + b).collect());
            assert_close(&bench.read(&out), &sum, tol(dt), &what("add"));
            bench.run(&OpDesc::new(OpKind::Softmax, &[x], out));
            assert_close(&bench.read(&out), &refr::softmax(&tx), tol(dt), &what("softmax"));
            bench.run(&OpDesc::new(OpKind::RmsNorm, &[x], out));
            assert_close(&bench.read(&out), &refr::rmsnorm(&tx, None, 1e-5), tol(dt), &what("rmsnorm"));
            let p = OpParams { rope_theta: 500.0, rope_position: 3, ..Default::default() };
            let (r, tr) = bench.input(dt, &[9, 3, 42], Padded);
            let rout = bench.view(dt, &[9, 3, 42], Dense);
            bench.run(&OpDesc::new(OpKind::Rope, &[r], rout).with_params(p));
            assert_close(&bench.read(&rout), &refr::rope(&tr, &p), tol(dt) * 2.0, &what("rope"));
        }
    }
}

/// Rewrites a view with fresh random values and marks its buffer written (as `nh_buffer_write`
/// and op outputs do); returns the new values.
fn refill(bench: &mut Bench, v: &TensorView) -> T {
    let base = unsafe { bench.buffer(v).as_ptr().add(v.offset) };
    for off in elem_offsets(v) {
        let x = bench.rng.random_range(-1.0..1.0);
        unsafe { write_elem(base, v.dtype, off, x) };
    }
    bench.buffer(v).touch();
    bench.read(v)
}

/// Matmuls whose B is a weight (the same view, unchanged) run through the backend's weight
/// cache from their second run on: every run matches the reference, and after B is written
/// the next runs use the new values, never the packed copy of the old ones.
#[test]
fn cached_weights_match_reference_and_follow_writes() {
    use crate::backend::Backend;
    // No other test may lower the level meanwhile: the packing is asserted below.
    let _cap = super::simd::test_cap(super::simd::Isa::Avx512);
    let cpu = super::CpuBackend::new(2).unwrap();
    let mut bench = Bench::new(21);
    let cases = [(2, 40, 70), (12, 384, 100), (13, 300, 65), (30, 257, 33), (100, 70, 90), (5, 1000, 40)];
    for dt in FLOATS {
        for &(m, k, n) in &cases {
            for tb in [false, true] {
                let act = if tb { Activation::Gelu } else { Activation::None };
                let p =
                    OpParams { trans_b: tb, alpha: 0.75, beta: 0.5, activation: act, ..Default::default() };
                let (a, mut ta) = bench.input(dt, &[3, m, k], Dense);
                let b_shape = if tb { [n, k] } else { [k, n] };
                let (b, mut tb_vals) = bench.input(dt, &b_shape, if tb { Dense } else { Padded });
                let (bias, tbias) = bench.input(DType::F32, &[n], Dense);
                let c = bench.view(DType::F32, &[3, m, n], Dense);
                let op = OpDesc::new(OpKind::Matmul, &[a, b, bias], c).with_params(p);
                validate::validate(&op, &|v| Ok(bench.buffer(v).len())).expect("op is valid");
                for run in 0..5 {
                    if run == 3 {
                        tb_vals = refill(&mut bench, &b);
                        ta = refill(&mut bench, &a);
                    }
                    let before = bench.read(&c);
                    cpu.execute(&op, &OpMemory::new(bench.bufs.clone())).unwrap();
                    let want = refr::matmul(&ta, &tb_vals, Some(&tbias), &before, &p);
                    let t = tol(dt) * 0.5 + 2e-5 + 2e-6 * k as f64;
                    let what = format!("{dt} m{m} k{k} n{n} trans_b {tb}, run {run}");
                    assert_close(&bench.read(&c), &want, t, &what);
                }
            }
        }
    }
    if super::simd::has_avx2_fma() {
        assert!(cpu.weights.as_ref().unwrap().bytes() > 0, "weights seen twice are packed");
    }
}

/// The packed GEMM and the weight cache at every instruction-set level this machine has
/// (on an AVX-512 CPU the AVX2 kernels run too, as they do on AVX2-only machines): odd shapes
/// that leave ragged micro-tiles for both tile sizes (6 x 16 and 12 x 32), several depth
/// slices, transposed and strided operands, half-precision packing, beta, bias, activation.
#[test]
fn packed_gemm_matches_reference_at_every_level() {
    use super::simd::{test_cap, test_levels, Isa};
    use crate::backend::Backend;
    for level in test_levels().into_iter().filter(|&l| l >= Isa::Avx2) {
        let _cap = test_cap(level);
        assert_eq!(super::simd::isa(), level);
        let mut bench = Bench::new(30 + level as u64);
        for &(m, k, n, dt) in &[
            (7, 5, 17, DType::F32),
            (13, 257, 33, DType::F32),
            (25, 300, 47, DType::F16),
            (31, 70, 65, DType::BF16),
            (200, 260, 20, DType::F32),
            (8, 20, 3090, DType::F32),
            // Threaded splits with fewer rows than a row block per thread (column groups, 11
            // or 22 panels), f16 / bf16 B, ragged last panels.
            (264, 40, 70, DType::F32),
            (130, 33, 200, DType::F16),
            (131, 29, 190, DType::BF16),
        ] {
            for (ta, tb) in [(false, false), (true, true), (false, true)] {
                let p = OpParams {
                    trans_a: ta,
                    trans_b: tb,
                    alpha: 0.75,
                    beta: 0.5,
                    activation: Activation::Silu,
                    ..Default::default()
                };
                check_matmul(&mut bench, dt, dt, (&[], &[], &[]), (m, k, n), p, true, [Dense; 3]);
                let layouts = [Padded, Transposed, Padded];
                check_matmul(&mut bench, dt, DType::F32, (&[2], &[1], &[2]), (m, k, n), p, false, layouts);
            }
        }
        // Through the weight cache: packed once for this level, reused, right every time.
        let cpu = super::CpuBackend::new(2).unwrap();
        for &(m, k, n, tb) in &[(9, 300, 70, true), (40, 37, 33, false)] {
            let p = OpParams { trans_b: tb, ..Default::default() };
            let (a, ta) = bench.input(DType::F32, &[m, k], Dense);
            let (b, tbv) = bench.input(DType::F32, &if tb { [n, k] } else { [k, n] }, Dense);
            let c = bench.view(DType::F32, &[m, n], Dense);
            let op = OpDesc::new(OpKind::Matmul, &[a, b], c).with_params(p);
            for run in 0..3 {
                let before = bench.read(&c);
                cpu.execute(&op, &OpMemory::new(bench.bufs.clone())).unwrap();
                let want = refr::matmul(&ta, &tbv, None, &before, &p);
                assert_close(
                    &bench.read(&c),
                    &want,
                    2e-5 + 2e-6 * k as f64,
                    &format!("{level:?} cached run {run}"),
                );
            }
        }
        assert!(cpu.weights.as_ref().unwrap().bytes() > 0, "{level:?}: weights seen twice are packed");
    }
}

/// A deep GEMM (12 KC slices of 256 at k = 2900, n just under one 3072-column block) at
/// every level, A transposed and not: beta applies on the first slice only.
#[test]
fn packed_gemm_runs_a_deep_k_in_slices() {
    use super::simd::{test_cap, test_levels, Isa};
    for level in test_levels().into_iter().filter(|&l| l >= Isa::Avx2) {
        let _cap = test_cap(level);
        let mut bench = Bench::new(50 + level as u64);
        for ta in [false, true] {
            let p = OpParams { trans_a: ta, beta: 0.5, ..Default::default() };
            check_matmul(
                &mut bench,
                DType::F32,
                DType::F32,
                (&[], &[], &[]),
                (7, 2900, 2900),
                p,
                false,
                [Dense; 3],
            );
        }
    }
}

/// Imported memory is never cached (the caller may write it without telling the library);
/// a B used once is not packed either.
#[test]
fn imported_and_one_off_operands_are_not_cached() {
    use crate::backend::Backend;
    let cpu = super::CpuBackend::new(2).unwrap();
    let mut bench = Bench::new(22);
    let (m, k, n) = (12, 64, 96);
    let (a, ta) = bench.input(DType::F32, &[m, k], Dense);
    let mut host = vec![0.0f32; k * n];
    for (i, x) in host.iter_mut().enumerate() {
        *x = ((i * 7919) % 13) as f32 / 13.0 - 0.5;
    }
    let id = bench.bufs.len() as u64 + 1;
    let imported = unsafe { Buffer::imported(id, host.as_mut_ptr() as *mut u8, k * n * 4) };
    bench.bufs.push(Arc::new(imported));
    let b = TensorView::contiguous(id, DType::F32, &[k, n], 0);
    let c = bench.view(DType::F32, &[m, n], Dense);
    let op = OpDesc::new(OpKind::Matmul, &[a, b], c);
    for round in 0..4 {
        // The caller rewrites its memory between runs and tells nobody.
        host.iter_mut().for_each(|x| *x = -*x + round as f32 * 0.25);
        let tb = bench.read(&b);
        cpu.execute(&op, &OpMemory::new(bench.bufs.clone())).unwrap();
        let want = refr::matmul(&ta, &tb, None, &T::zeros(&[m, n]), &OpParams::default());
        assert_close(&bench.read(&c), &want, 1e-4, &format!("imported B, round {round}"));
    }
    let (b2, tb2) = bench.input(DType::F32, &[k, n], Dense);
    let op = OpDesc::new(OpKind::Matmul, &[a, b2], c);
    cpu.execute(&op, &OpMemory::new(bench.bufs.clone())).unwrap();
    let want = refr::matmul(&ta, &tb2, None, &T::zeros(&[m, n]), &OpParams::default());
    assert_close(&bench.read(&c), &want, 1e-4, "B used once");
    assert_eq!(cpu.weights.as_ref().unwrap().bytes(), 0);
}

/// The cache keeps within its budget, dropping the least recently used weights.
#[test]
fn weight_cache_keeps_within_its_budget() {
    use super::host::HostView;
    use super::kernels::matmul::MatmulParams;
    use super::weight_cache::WeightCache;
    let mut bench = Bench::new(23);
    let (m, k, n) = (4, 64, 64);
    let (a, _) = bench.input(DType::F32, &[m, k], Dense);
    let c = bench.view(DType::F32, &[m, n], Dense);
    let weights: Vec<TensorView> = (0..3).map(|_| bench.input(DType::F32, &[k, n], Dense).0).collect();
    let packed_bytes = k * n * 4;
    let cache = WeightCache::new(2 * packed_bytes + 100);
    let mem = OpMemory::new(bench.bufs.clone());
    let p =
        MatmulParams { trans_a: false, trans_b: false, alpha: 1.0, beta: 0.0, activation: Activation::None };
    let hv = |v: &TensorView| HostView::new(v, &mem).unwrap();
    let (out, av) = (hv(&c), hv(&a));
    let usable = super::kernels::matmul::prepacked_usable(&out, &av, &hv(&weights[0]), &p);
    for round in 0..3 {
        for w in &weights {
            let got = cache.packed_b(w, &mem, &out, &av, &hv(w), &p);
            // First sighting: not packed. From the second on: packed (where the GEMM can use it).
            assert_eq!(got.is_some(), usable && round > 0, "round {round}");
            assert!(cache.bytes() <= 2 * packed_bytes + 100);
        }
    }
    if usable {
        assert_eq!(cache.bytes(), 2 * packed_bytes);
    }
}

/// The policy's `keep_warm` sets the window; None restores the default; with one thread or
/// `NH_CPU_NO_KEEP_WARM` it stays off whatever the policy says.
#[test]
fn keep_warm_follows_the_policy_within_the_options() {
    use crate::backend::Backend;
    use std::time::Duration;
    let cpu = super::CpuBackend::new(2).unwrap();
    assert_eq!(cpu.keep_warm(), super::warm::WINDOW);
    cpu.set_keep_warm(Some(Duration::ZERO));
    assert_eq!(cpu.keep_warm(), Duration::ZERO);
    cpu.set_keep_warm(Some(Duration::from_micros(40)));
    assert_eq!(cpu.keep_warm(), Duration::from_micros(40));
    cpu.set_keep_warm(None);
    assert_eq!(cpu.keep_warm(), super::warm::WINDOW);
    let off = super::CpuOptions { keep_warm: false, ..Default::default() };
    for cpu in [super::CpuBackend::new(1).unwrap(), super::CpuBackend::with_options(2, off).unwrap()] {
        cpu.set_keep_warm(Some(Duration::from_millis(1)));
        assert_eq!(cpu.keep_warm(), Duration::ZERO);
    }
}

/// Issue 17, item 1: the device worker's seat is never taken while an op runs in the pool
/// (a pool thread waiting inside that op's join would take it and the op would never finish);
/// a second seat is refused (it would leave no thread for ops sent from outside), and the
/// seated loop runs ops in place.
#[test]
fn the_worker_seat_waits_for_ops_in_the_pool() {
    use crate::backend::Backend;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    let cpu = Arc::new(super::CpuBackend::new(2).unwrap());
    let mut bench = Bench::new(17);
    let (a, _) = bench.input(DType::F32, &[384, 384], Dense);
    let (b, _) = bench.input(DType::F32, &[384, 384], Dense);
    let out = bench.view(DType::F32, &[384, 384], Dense);
    let op = Arc::new(OpDesc::new(OpKind::Matmul, &[a, b], out));
    let bufs = bench.bufs.clone();
    let busy = Arc::new(AtomicBool::new(true));
    let runner = {
        let (cpu, op, busy) = (Arc::clone(&cpu), Arc::clone(&op), Arc::clone(&busy));
        let mem = OpMemory::new(bufs.clone());
        std::thread::spawn(move || {
            for _ in 0..20 {
                cpu.execute(&op, &mem).unwrap();
            }
            busy.store(false, Ordering::SeqCst);
        })
    };
    std::thread::sleep(Duration::from_millis(5));
    let seat = cpu.host_seat().expect("a two-thread pool has a seat");
    assert!(cpu.host_seat().is_none(), "one seat per pool");
    let start = Instant::now();
    let (cpu2, op2, mem2) = (Arc::clone(&cpu), Arc::clone(&op), OpMemory::new(bufs));
    let worker = std::thread::spawn(move || {
        seat.run(Box::new(move || {
            assert!(rayon::current_thread_index().is_some(), "the loop runs in the pool");
            cpu2.execute(&op2, &mem2).unwrap();
        }))
    });
    worker.join().unwrap();
    runner.join().unwrap();
    assert!(!busy.load(Ordering::SeqCst));
    assert!(start.elapsed() < Duration::from_secs(60));
}
