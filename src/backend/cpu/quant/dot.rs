//! One quantized weight row against up to 4 activation rows, on the widest kernel the CPU
//! runs (AVX-512, AVX2, or the scalar reference).

use crate::op::DType;

/// Rows of A a kernel call takes at once: the weights are decoded once for all of them.
pub const ROWS: usize = 4;

/// Which kernels run; tests force each one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

impl Isa {
    pub fn detect() -> Isa {
        use super::super::simd;
        if simd::has_avx512() {
            Isa::Avx512
        } else if simd::has_avx2_fma() {
            Isa::Avx2
        } else {
            Isa::Scalar
        }
    }

    /// Kernels this CPU can run, widest last.
    #[cfg(test)]
    pub fn available() -> Vec<Isa> {
        let best = Isa::detect();
        [Isa::Scalar, Isa::Avx2, Isa::Avx512].into_iter().filter(|i| *i as u8 <= best as u8).collect()
    }
}

/// out[r] = w . x[r] for each of `x.len()` (<= ROWS) rows; `w` is one row of `k / block`
/// blocks and each `x[r]` holds `k` floats. `tmp` (k floats) is the scalar path's scratch.
pub fn dot_rows(isa: Isa, dt: DType, w: &[u8], x: &[&[f32]], out: &mut [f32], tmp: &mut Vec<f32>) {
    let k = x[0].len();
    let blocks = k / dt.block_elems();
    assert!(x.len() <= ROWS && w.len() >= dt.bytes_of(k) && x.iter().all(|r| r.len() == k));
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! call {
            ($m:ident) => {{
                // SAFETY: the ISA was detected on this CPU; lengths were checked above.
                let p = |r: usize| x[r].as_ptr();
                unsafe {
                    match x.len() {
                        1 => out[..1].copy_from_slice(&super::$m::dot::<1>(dt, w.as_ptr(), [p(0)], blocks)),
                        2 => out[..2].copy_from_slice(&super::$m::dot::<2>(
                            dt,
                            w.as_ptr(),
                            [p(0), p(1)],
                            blocks,
                        )),
                        3 => out[..3].copy_from_slice(&super::$m::dot::<3>(
                            dt,
                            w.as_ptr(),
                            [p(0), p(1), p(2)],
                            blocks,
                        )),
                        _ => out[..4].copy_from_slice(&super::$m::dot::<4>(
                            dt,
                            w.as_ptr(),
                            [p(0), p(1), p(2), p(3)],
                            blocks,
                        )),
                    }
                }
                return;
            }};
        }
        match isa {
            #[cfg(nh_avx512)]
            Isa::Avx512 => call!(avx512),
            Isa::Avx2 => call!(avx2),
            _ => {}
        }
    }
    scalar(dt, w, x, out, tmp);
}

/// Reference: dequantise the row, then plain f32 dot products.
fn scalar(dt: DType, w: &[u8], x: &[&[f32]], out: &mut [f32], tmp: &mut Vec<f32>) {
    let k = x[0].len();
    tmp.resize(k, 0.0);
    crate::quant::dequantize_row(dt, &w[..dt.bytes_of(k)], tmp);
    for (o, row) in out.iter_mut().zip(x) {
        *o = row.iter().zip(tmp.iter()).map(|(a, b)| a * b).sum();
    }
}
