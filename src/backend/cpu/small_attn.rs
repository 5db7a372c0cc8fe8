//! f32 attention over short key lengths (skv <= SMALL_KV), head_dim contiguous: each query
//! row's scores are dot products with the keys, its softmax and the weighted sum of the values
//! are computed in registers and a stack-sized scratch row. The general kernel runs two sgemm
//! calls per (batch, head) block, whose packing and set-up dominate at a few dozen tokens
//! (MiniLM at batch 16: 192 heads of ~20 x 20 scores took 29% of the forward pass at
//! ~3.6 GFLOP/s). Same semantics as `kernels::attention`: grouped-query heads, the first
//! `kv_len` keys valid, causal rows aligned to the last keys, an additive broadcast mask.
//! K and V may be f16 / bf16 under f32 queries (a half KV cache): their valid rows are widened
//! to f32 first, once per op.

use super::halfconv;
use super::host::{HostView, SendPtr};
use super::kernels::iter::TASK_ELEMS;
use super::kernels::math::{exp, madd};
use super::scratch::Scratch;
use super::simd::dispatch_avx2;
use crate::op::DType;
use rayon::prelude::*;

/// Longest key sequence this path takes, unless there are few query rows.
pub const SMALL_KV: usize = 128;
/// Up to this many query rows (decode) it takes any key length: two sgemm calls per head
/// would pack the whole K and V to compute one row (a quarter of a 0.5B model's decode step
/// at 512 cached tokens).
const FEW_ROWS: usize = 8;
/// Largest head_dim it takes.
const MAX_D: usize = 256;
/// Softmax weights below this add nothing an f32 sum of weights that total 1 can hold.
const NEGLIGIBLE: f32 = 1e-30;

/// a . b with 8 independent partial sums (inlined into the dispatched loops below).
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut s = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            s[i] = madd::<FMA>(x[i], y[i], s[i]);
        }
    }
    s.iter().sum::<f32>() + tail
}

dispatch_avx2! {
    /// s[j] = scale * q . key_j for the first s.len() keys (key j at k + j * ks, q.len() long).
    fn scores<FMA>(q: &[f32], k: SendPtr, ks: usize, scale: f32, s: &mut [f32]) {
        let d = q.len();
        for (j, sj) in s.iter_mut().enumerate() {
            // SAFETY: the caller passes keys that lie in a validated view.
            let kj = unsafe { std::slice::from_raw_parts(k.f32().add(j * ks), d) };
            *sj = scale * dot::<FMA>(q, kj);
        }
    }
}

dispatch_avx2! {
    /// softmax in place; weights that underflow are exactly 0 (no denormals downstream).
    fn softmax_row<FMA>(x: &mut [f32]) {
        let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut sum = 0.0f32;
        for v in x.iter_mut() {
            let t = *v - m;
            *v = if t < -87.0 { 0.0 } else { exp::<FMA>(t) };
            sum += *v;
        }
        let inv = 1.0 / sum;
        for v in x.iter_mut() {
            *v *= inv;
        }
    }
}

dispatch_avx2! {
    /// o = sum_j p[j] * value_j (value j at v + j * vs, o.len() long).
    fn weighted<FMA>(p: &[f32], v: SendPtr, vs: usize, o: &mut [f32]) {
        let d = o.len();
        o.fill(0.0);
        for (j, &pj) in p.iter().enumerate() {
            // Masked keys (an additive -1e4 or -inf) leave weights of ~1e-38, which exp clamps
            // to: below f32 resolution of the sum, and denormal products are ~100x slower.
            if pj < NEGLIGIBLE {
                continue;
            }
            // SAFETY: as for `scores`.
            let vj = unsafe { std::slice::from_raw_parts(v.f32().add(j * vs), d) };
            for (o, x) in o.iter_mut().zip(vj) {
                *o = madd::<FMA>(pj, *x, *o);
            }
        }
    }
}

/// The first `kv_len` rows of each head of a half K or V widened into dense f32 (the same
/// rank, `kv_len` rows a head). The query heads of a group share a kv head, so widening as
/// they read would repeat the work for each of them.
fn widen(t: &HostView, kv_len: usize) -> (Scratch, HostView) {
    let r = t.rank;
    let d = t.shape[r - 1];
    let heads: usize = t.shape[..r - 2].iter().product();
    let mut data = Scratch::new(heads * kv_len * d);
    let mut view = *t;
    view.dtype = DType::F32;
    view.shape[r - 2] = kv_len;
    let mut acc = 1;
    for i in (0..r).rev() {
        view.strides[i] = acc;
        acc *= view.shape[i];
    }
    let hkv = t.shape[r - 3];
    for (row, dst) in data.chunks_exact_mut(d).enumerate() {
        let (head, j) = (row / kv_len, row % kv_len);
        let (b, kh) = (head / hkv, head % hkv);
        let off = if r == 4 { b * t.strides[0] } else { 0 } + kh * t.strides[r - 3] + j * t.strides[r - 2];
        // SAFETY: row j < kv_len of a validated view whose rows have d contiguous elements.
        unsafe {
            let src = t.ptr.0.add(off * 2);
            match t.dtype {
                DType::F16 => {
                    halfconv::f16_to_f32(std::slice::from_raw_parts(src as *const half::f16, d), dst)
                }
                _ => halfconv::bf16_to_f32(std::slice::from_raw_parts(src as *const half::bf16, d), dst),
            }
        }
    }
    view.ptr = SendPtr(data.as_mut_ptr() as *mut u8);
    (data, view)
}

/// Runs the attention here and returns true, or returns false (nothing written) when this
/// path does not apply.
#[allow(clippy::too_many_arguments)]
pub fn try_attention(
    out: &HostView,
    q: &HostView,
    k: &HostView,
    v: &HostView,
    mask: Option<&HostView>,
    causal: bool,
    scale: f32,
    kv_len: usize,
) -> bool {
    let r = q.rank;
    // f32, or f32 queries over a half K and V (validation gives K and V one type).
    let kv_ok = matches!(k.dtype, DType::F32 | DType::F16 | DType::BF16) && v.dtype == k.dtype;
    let all_f32 =
        [out, q].iter().all(|t| t.dtype == DType::F32) && kv_ok && mask.is_none_or(|m| m.dtype == DType::F32);
    let contiguous = [out, q, k, v].iter().all(|t| t.strides[r - 1] == 1 || t.shape[r - 1] == 1);
    let (h, sq, d) = (q.shape[r - 3], q.shape[r - 2], q.shape[r - 1]);
    let (hkv, skv) = (k.shape[r - 3], k.shape[r - 2]);
    let short = skv <= SMALL_KV || sq <= FEW_ROWS;
    if !all_f32 || !contiguous || skv == 0 || !short || d > MAX_D || d == 0 || hkv == 0 {
        return false;
    }
    let batch = if r == 4 { q.shape[0] } else { 1 };
    let group = h / hkv;
    let kv_len = if kv_len == 0 { skv } else { kv_len };
    let widened = (k.dtype != DType::F32).then(|| (widen(k, kv_len), widen(v, kv_len)));
    let (k, v) = match &widened {
        Some(((_, k), (_, v))) => (k, v),
        None => (k, v),
    };
    let scale = if scale == 0.0 { 1.0 / (d as f32).sqrt() } else { scale };
    let score_dims: Vec<usize> = [&q.dims()[..r - 1], &[skv]].concat();
    let mask_strides = mask.map(|m| m.broadcast_strides(&score_dims));
    // Element offset of (batch b, head hd) in a [.., heads, seq, dim] view.
    let head_off = |t: &HostView, b: usize, hd: usize| {
        (if r == 4 { b * t.strides[0] } else { 0 }) + hd * t.strides[r - 3]
    };
    let (qp, kp, vp, op) = (q.ptr, k.ptr, v.ptr, out.ptr);
    let task = |bh: usize| {
        let (b, hd) = (bh / h, bh % h);
        let (qo, ko, vo, oo) = (
            head_off(q, b, hd),
            head_off(k, b, hd / group),
            head_off(v, b, hd / group),
            head_off(out, b, hd),
        );
        let mut stack = [0.0f32; SMALL_KV];
        let mut heap = Vec::new();
        let s: &mut [f32] = if skv <= SMALL_KV {
            &mut stack
        } else {
            heap.resize(skv, 0.0);
            &mut heap
        };
        for i in 0..sq {
            let n = if causal { kv_len - sq + i + 1 } else { kv_len };
            // SAFETY: validated views; rows of q, k, v and out have d contiguous elements.
            unsafe {
                let qi =
                    std::slice::from_raw_parts((qp.f32() as *const f32).add(qo + i * q.strides[r - 2]), d);
                let kb = SendPtr(kp.f32().add(ko) as *mut u8);
                scores(qi, kb, k.strides[r - 2], scale, &mut s[..n]);
                if let (Some(mv), Some(st)) = (mask, mask_strides.as_ref()) {
                    let idx = if r == 4 { [b, hd, i, 0] } else { [hd, i, 0, 0] };
                    let off: usize = idx.iter().zip(st).map(|(x, s)| x * s).sum();
                    let mp = (mv.ptr.f32() as *const f32).add(off);
                    for (j, sj) in s.iter_mut().enumerate().take(n) {
                        *sj += *mp.add(j * st[r - 1]);
                    }
                }
                softmax_row(&mut s[..n]);
                let vb = SendPtr(vp.f32().add(vo) as *mut u8);
                let dst = std::slice::from_raw_parts_mut(op.f32().add(oo + i * out.strides[r - 2]), d);
                weighted(&s[..n], vb, v.strides[r - 2], dst);
            }
        }
    };
    if batch * h * sq * kv_len * d <= TASK_ELEMS {
        (0..batch * h).for_each(task);
    } else {
        (0..batch * h).into_par_iter().for_each(task);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::test_data::fill;
    use crate::op::MAX_RANK;

    /// One query row's attention over the first `n` of the dense key and value rows (width
    /// `d`, scale 1/sqrt(d)), in f64.
    fn reference_row(q: &[f32], k: &[f32], v: &[f32], n: usize, d: usize) -> Vec<f64> {
        let scores: Vec<f64> = (0..n)
            .map(|j| (0..d).map(|c| q[c] as f64 * k[j * d + c] as f64).sum::<f64>() / (d as f64).sqrt())
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
        let z: f64 = e.iter().sum();
        (0..d).map(|c| (0..n).map(|j| e[j] / z * v[j * d + c] as f64).sum()).collect()
    }

    fn view(data: &mut [f32], shape: &[usize]) -> HostView {
        let mut s = [1; MAX_RANK];
        let mut st = [0; MAX_RANK];
        s[..shape.len()].copy_from_slice(shape);
        let mut acc = 1;
        for i in (0..shape.len()).rev() {
            st[i] = acc;
            acc *= shape[i];
        }
        HostView {
            ptr: SendPtr(data.as_mut_ptr() as *mut u8),
            dtype: DType::F32,
            rank: shape.len(),
            shape: s,
            strides: st,
        }
    }

    /// Padding masked with -30000 or -inf gives what leaving the padded keys out gives (and
    /// exactly-zero weights for them), per batch row; against an f64 reference too.
    #[test]
    #[allow(clippy::needless_range_loop)]
    fn padding_mask_equals_shorter_keys() {
        let (b, h, s, d) = (3usize, 2usize, 9usize, 16usize);
        let lens = [9usize, 5, 2];
        let mut q = fill(b * h * s * d, 1);
        let mut k = fill(b * h * s * d, 2);
        let mut v = fill(b * h * s * d, 3);
        for neg in [-30000.0f32, f32::NEG_INFINITY] {
            let mut mask: Vec<f32> =
                (0..b * s).map(|i| if i % s < lens[i / s] { 0.0 } else { neg }).collect();
            let mut out = vec![0.0f32; b * h * s * d];
            let (vq, vk, vv) =
                (view(&mut q, &[b, h, s, d]), view(&mut k, &[b, h, s, d]), view(&mut v, &[b, h, s, d]));
            let vm = view(&mut mask, &[b, 1, 1, s]);
            let vo = view(&mut out, &[b, h, s, d]);
            assert!(try_attention(&vo, &vq, &vk, &vv, Some(&vm), false, 0.0, 0));
            for bi in 0..b {
                for hd in 0..h {
                    for i in 0..s {
                        let base = ((bi * h + hd) * s) * d;
                        let want = reference_row(&q[base + i * d..], &k[base..], &v[base..], lens[bi], d);
                        for (t, want) in want.into_iter().enumerate() {
                            let got = out[base + i * d + t] as f64;
                            assert!(
                                (got - want).abs() < 1e-5,
                                "mask {neg} b{bi} h{hd} row {i} col {t}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Decode rows (few queries) over a long KV cache: taken, and equal to f64 math, causal
    /// with only the first kv_len keys valid, grouped-query heads.
    #[test]
    fn few_rows_take_long_keys() {
        let (h, hkv, sq, skv, d, kv_len) = (4usize, 2usize, 3usize, 300usize, 16usize, 290usize);
        let mut q = fill(h * sq * d, 5);
        let mut k = fill(hkv * skv * d, 6);
        let mut v = fill(hkv * skv * d, 7);
        let mut o = vec![0.0f32; h * sq * d];
        let (vq, vk, vv, vo) = (
            view(&mut q, &[h, sq, d]),
            view(&mut k, &[hkv, skv, d]),
            view(&mut v, &[hkv, skv, d]),
            view(&mut o, &[h, sq, d]),
        );
        assert!(try_attention(&vo, &vq, &vk, &vv, None, true, 0.0, kv_len));
        for hd in 0..h {
            let kh = hd / (h / hkv);
            for i in 0..sq {
                let n = kv_len - sq + i + 1;
                let (qi, kv) = ((hd * sq + i) * d, kh * skv * d);
                let want = reference_row(&q[qi..], &k[kv..], &v[kv..], n, d);
                for (c, want) in want.into_iter().enumerate() {
                    let got = o[(hd * sq + i) * d + c] as f64;
                    assert!((got - want).abs() < 1e-5, "head {hd} row {i} col {c}: {got} vs {want}");
                }
            }
        }
    }

    /// A half KV cache (f16, bf16) under f32 queries is taken too, and gives f32 math on the
    /// half values (widened once, then the f32 path).
    #[test]
    fn few_rows_read_a_half_kv_cache() {
        let (h, hkv, sq, skv, d, kv_len) = (4usize, 2usize, 2usize, 200usize, 40usize, 190usize);
        let mut q = fill(h * sq * d, 8);
        for (dt, half_bits) in [
            (DType::F16, (|x: f32| half::f16::from_f32(x).to_bits()) as fn(f32) -> u16),
            (DType::BF16, |x: f32| half::bf16::from_f32(x).to_bits()),
        ] {
            let widen = |b: u16| match dt {
                DType::F16 => half::f16::from_bits(b).to_f32(),
                _ => half::bf16::from_bits(b).to_f32(),
            };
            let mut k: Vec<u16> = fill(hkv * skv * d, 9).into_iter().map(half_bits).collect();
            let mut v: Vec<u16> = fill(hkv * skv * d, 10).into_iter().map(half_bits).collect();
            let (kw, vw): (Vec<f32>, Vec<f32>) =
                (k.iter().map(|&b| widen(b)).collect(), v.iter().map(|&b| widen(b)).collect());
            let mut o = vec![0.0f32; h * sq * d];
            let half_view = |data: &mut [u16]| HostView {
                ptr: SendPtr(data.as_mut_ptr() as *mut u8),
                dtype: dt,
                ..view(&mut [], &[hkv, skv, d])
            };
            let (vk, vv) = (half_view(&mut k), half_view(&mut v));
            let (vq, vo) = (view(&mut q, &[h, sq, d]), view(&mut o, &[h, sq, d]));
            assert!(try_attention(&vo, &vq, &vk, &vv, None, true, 0.0, kv_len), "{dt}");
            for hd in 0..h {
                let kh = hd / (h / hkv);
                for i in 0..sq {
                    let n = kv_len - sq + i + 1;
                    let (qi, kv) = ((hd * sq + i) * d, kh * skv * d);
                    let want = reference_row(&q[qi..], &kw[kv..], &vw[kv..], n, d);
                    for (c, want) in want.into_iter().enumerate() {
                        let got = o[(hd * sq + i) * d + c] as f64;
                        assert!((got - want).abs() < 1e-5, "{dt} head {hd} row {i} col {c}: {got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn declines_long_or_non_f32() {
        let (h, s, d) = (1usize, SMALL_KV + 1, 4usize);
        let mut x = fill(h * s * d, 4);
        let mut o = vec![0.0f32; h * s * d];
        let vx = view(&mut x, &[h, s, d]);
        let vo = view(&mut o, &[h, s, d]);
        assert!(!try_attention(&vo, &vx, &vx, &vx, None, false, 0.0, 0));
        assert!(o.iter().all(|&v| v == 0.0));
    }
}
