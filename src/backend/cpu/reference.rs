//! Straightforward f64 reference implementations of every op, on dense row-major logical
//! tensors, for the tests. Written for clarity, not speed: loops over logical indices.

use crate::op::{Activation, OpParams};

#[derive(Clone, Debug, PartialEq)]
pub struct T {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl T {
    pub fn new(shape: &[usize], data: Vec<f64>) -> T {
        assert_eq!(shape.iter().product::<usize>(), data.len());
        T { shape: shape.to_vec(), data }
    }

    pub fn zeros(shape: &[usize]) -> T {
        T::new(shape, vec![0.0; shape.iter().product()])
    }

    fn last(&self) -> usize {
        *self.shape.last().unwrap()
    }

    fn rows(&self) -> usize {
        self.data.len() / self.last()
    }

    fn batch(&self) -> usize {
        self.shape[..self.shape.len() - 2].iter().product()
    }

    /// Element at a multi-index right-aligned to `full` (broadcast dims read index 0).
    fn at_broadcast(&self, idx: &[usize]) -> f64 {
        let skip = idx.len() - self.shape.len();
        let mut off = 0;
        for (d, &n) in self.shape.iter().enumerate() {
            let i = if n == 1 { 0 } else { idx[skip + d] };
            off = off * n + i;
        }
        self.data[off]
    }
}

/// Multi-index of flat element `i` of `shape`.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

pub fn erf(x: f64) -> f64 {
    if x.abs() > 4.5 {
        return x.signum();
    }
    let (mut term, mut sum, mut n) = (x, x, 0.0);
    while term.abs() > 1e-17 * sum.abs().max(1e-300) {
        n += 1.0;
        term *= -x * x / n;
        sum += term / (2.0 * n + 1.0);
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

pub fn gelu(x: f64, tanh: bool) -> f64 {
    if tanh {
        let c = (2.0 / std::f64::consts::PI).sqrt();
        0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
    } else {
        0.5 * x * (1.0 + erf(x / 2f64.sqrt()))
    }
}

pub fn activate(x: f64, act: Activation) -> f64 {
    match act {
        Activation::None => x,
        Activation::Relu => x.max(0.0),
        Activation::Silu => silu(x),
        Activation::Gelu => gelu(x, false),
    }
}

/// C = act(alpha * op(A) op(B) + beta * C0 + bias); batch-1 operands are shared.
pub fn matmul(a: &T, b: &T, bias: Option<&T>, c0: &T, p: &OpParams) -> T {
    let r = c0.shape.len();
    let (m, n) = (c0.shape[r - 2], c0.shape[r - 1]);
    let k = if p.trans_a { a.shape[a.shape.len() - 2] } else { a.last() };
    let mut c = c0.clone();
    for bi in 0..c0.batch() {
        let (ba, bb) = (if a.batch() == 1 { 0 } else { bi }, if b.batch() == 1 { 0 } else { bi });
        let ael = |i: usize, kk: usize| {
            let (rows, cols) = (a.shape[a.shape.len() - 2], a.last());
            let (ri, ci) = if p.trans_a { (kk, i) } else { (i, kk) };
            a.data[ba * rows * cols + ri * cols + ci]
        };
        let bel = |kk: usize, j: usize| {
            let (rows, cols) = (b.shape[b.shape.len() - 2], b.last());
            let (ri, ci) = if p.trans_b { (j, kk) } else { (kk, j) };
            b.data[bb * rows * cols + ri * cols + ci]
        };
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|kk| ael(i, kk) * bel(kk, j)).sum();
                let at = bi * m * n + i * n + j;
                let mut v = p.alpha as f64 * dot + p.beta as f64 * c0.data[at];
                if let Some(bias) = bias {
                    v += bias.data[j];
                }
                c.data[at] = activate(v, p.activation);
            }
        }
    }
    c
}

pub fn binary(a: &T, b: &T, f: impl Fn(f64, f64) -> f64) -> T {
    let data = (0..a.data.len()).map(|i| f(a.data[i], b.at_broadcast(&unravel(i, &a.shape)))).collect();
    T::new(&a.shape, data)
}

pub fn unary(a: &T, f: impl Fn(f64) -> f64) -> T {
    T::new(&a.shape, a.data.iter().map(|&x| f(x)).collect())
}

fn map_rows(x: &T, f: impl Fn(&[f64]) -> Vec<f64>) -> T {
    let d = x.last();
    let data = (0..x.rows()).flat_map(|r| f(&x.data[r * d..(r + 1) * d])).collect();
    T::new(&x.shape, data)
}

pub fn softmax(x: &T) -> T {
    map_rows(x, |row| {
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    })
}

pub fn rmsnorm(x: &T, w: Option<&T>, eps: f64) -> T {
    map_rows(x, |row| {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / row.len() as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        (0..row.len()).map(|i| row[i] * inv * w.map_or(1.0, |w| w.data[i])).collect()
    })
}

pub fn layernorm(x: &T, g: Option<&T>, b: Option<&T>, eps: f64) -> T {
    map_rows(x, |row| {
        let n = row.len() as f64;
        let mean = row.iter().sum::<f64>() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        (0..row.len())
            .map(|i| (row[i] - mean) * inv * g.map_or(1.0, |g| g.data[i]) + b.map_or(0.0, |b| b.data[i]))
            .collect()
    })
}

/// x [.., seq, heads, dim].
pub fn rope(x: &T, p: &OpParams) -> T {
    let r = x.shape.len();
    let (seq, heads, dim) = (x.shape[r - 3], x.shape[r - 2], x.shape[r - 1]);
    let mut out = x.clone();
    for row in 0..x.rows() {
        let s = (row / heads) % seq;
        let pos = p.rope_position as f64 + s as f64;
        for i in 0..dim / 2 {
            let angle = pos * (p.rope_theta as f64).powf(-2.0 * i as f64 / dim as f64);
            let (j1, j2) = if p.rope_interleaved { (2 * i, 2 * i + 1) } else { (i, i + dim / 2) };
            let (x1, x2) = (x.data[row * dim + j1], x.data[row * dim + j2]);
            out.data[row * dim + j1] = x1 * angle.cos() - x2 * angle.sin();
            out.data[row * dim + j2] = x1 * angle.sin() + x2 * angle.cos();
        }
    }
    out
}

/// q [.., H, Sq, D], k/v [.., Hkv, Skv, D], mask broadcast to [.., H, Sq, Skv].
pub fn attention(q: &T, k: &T, v: &T, mask: Option<&T>, p: &OpParams) -> T {
    let r = q.shape.len();
    let (h, sq, d) = (q.shape[r - 3], q.shape[r - 2], q.shape[r - 1]);
    let (hkv, skv) = (k.shape[r - 3], k.shape[r - 2]);
    let batch = if r == 4 { q.shape[0] } else { 1 };
    let kv_len = if p.kv_len == 0 { skv } else { p.kv_len as usize };
    let scale = if p.attn_scale == 0.0 { 1.0 / (d as f64).sqrt() } else { p.attn_scale as f64 };
    let mut score_shape = q.shape.clone();
    score_shape[r - 1] = skv;
    let mut out = T::zeros(&q.shape);
    for b in 0..batch {
        for hh in 0..h {
            let kh = hh / (h / hkv);
            for i in 0..sq {
                let qrow = &q.data[((b * h + hh) * sq + i) * d..][..d];
                let limit = if p.causal { kv_len - sq + i + 1 } else { kv_len };
                let mut s: Vec<f64> = (0..limit)
                    .map(|j| {
                        let krow = &k.data[((b * hkv + kh) * skv + j) * d..][..d];
                        let dot: f64 = qrow.iter().zip(krow).map(|(a, b)| a * b).sum();
                        let mut idx = vec![b, hh, i, j];
                        if r == 3 {
                            idx.remove(0);
                        }
                        dot * scale + mask.map_or(0.0, |m| m.at_broadcast(&idx))
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                s.iter_mut().for_each(|x| *x = (*x - m).exp());
                let total: f64 = s.iter().sum();
                for (j, w) in s.iter().enumerate() {
                    let vrow = &v.data[((b * hkv + kh) * skv + j) * d..][..d];
                    let orow = &mut out.data[((b * h + hh) * sq + i) * d..][..d];
                    for (o, x) in orow.iter_mut().zip(vrow) {
                        *o += w / total * x;
                    }
                }
            }
        }
    }
    out
}
