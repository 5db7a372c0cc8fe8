//! add, mul (b broadcasts to a), scale, silu, gelu: one pass over strided views, in place
//! when the input is the output view.

use super::super::host::{HostView, Run};
use super::iter::{for_each_block, BLOCK};
use super::math;
use super::vmath::{self, Act, Dense};
use std::cell::RefCell;

#[derive(Clone, Copy, Debug)]
pub enum Unary {
    Scale(f32),
    Silu,
    Gelu,
    GeluTanh,
}

#[derive(Clone, Copy, Debug)]
pub enum Binary {
    Add,
    Mul,
}

pub fn apply_unary(op: Unary, x: &mut [f32]) {
    match op {
        Unary::Scale(alpha) => math::scale_slice(x, alpha),
        Unary::Silu => math::silu_slice(x),
        Unary::Gelu => math::gelu_slice(x),
        Unary::GeluTanh => math::gelu_tanh_slice(x),
    }
}

fn apply_binary(op: Binary, x: &mut [f32], b: &[f32]) {
    match op {
        Binary::Add => math::add_slice(x, b),
        Binary::Mul => math::mul_slice(x, b),
    }
}

thread_local! {
    /// Per-thread f32 blocks for operands that are not dense f32 (kept, not zeroed per block).
    static SCRATCH_A: RefCell<[f32; BLOCK]> = const { RefCell::new([0.0; BLOCK]) };
    static SCRATCH_B: RefCell<[f32; BLOCK]> = const { RefCell::new([0.0; BLOCK]) };
}

/// Where a block's result is computed: the output itself when it is dense f32, else scratch.
/// `a` is loaded into it first unless it already is there (in place).
///
/// # Safety
/// `out` and `a` are runs of validated views; `a` either does not overlap `out` or is it.
unsafe fn with_slot(out: Run, a: Run, a_is_out: bool, n: usize, f: impl FnOnce(&mut [f32])) {
    match out.as_f32_mut(n) {
        Some(slot) => {
            if !a_is_out {
                a.load(slot);
            }
            f(slot);
        }
        None => SCRATCH_A.with(|s| {
            let mut scratch = s.borrow_mut();
            let slot = &mut scratch[..n];
            a.load(slot);
            f(slot);
            out.store(slot);
        }),
    }
}

/// The run as a stream's dense operand, when its elements are contiguous.
fn dense(r: Run, n: usize) -> Option<Dense> {
    // SAFETY (of later use): the run lies inside its validated view.
    (r.stride == 1 || n == 1)
        .then(|| Dense { ptr: r.ptr.0.wrapping_add(r.off * r.dtype.size()), dtype: r.dtype })
}

fn act(op: Unary) -> Act {
    match op {
        Unary::Scale(a) => Act::Scale(a),
        Unary::Silu => Act::Silu,
        Unary::Gelu => Act::Gelu,
        Unary::GeluTanh => Act::GeluTanh,
    }
}

pub fn unary(op: Unary, out: &HostView, a: &HostView, in_place: bool) {
    for_each_block(out, a, None, |o, a, _, n| {
        // Contiguous float runs: one fused pass (load, widen, compute, round, store).
        if let (Some(od), Some(ad)) = (dense(o, n), dense(a, n)) {
            // SAFETY: runs of validated views, n elements each; `a` is `out` or disjoint.
            if unsafe { vmath::unary(act(op), od, ad, n) } {
                return;
            }
        }
        // SAFETY: runs come from validated views; blocks of different tasks are disjoint.
        unsafe { with_slot(o, a, in_place, n, |x| apply_unary(op, x)) };
    });
}

/// `a_is_out` / `b_is_out`: that input is the output view itself.
pub fn binary(op: Binary, out: &HostView, a: &HostView, b: &HostView, a_is_out: bool, b_is_out: bool) {
    for_each_block(out, a, Some(b), |o, a, b, n| {
        let b = b.expect("binary op has b");
        if let (Some(od), Some(ad), Some(bd)) = (dense(o, n), dense(a, n), dense(b, n)) {
            // SAFETY: as in `unary`; an input that is the output is read before each store.
            if unsafe { vmath::binary(matches!(op, Binary::Mul), od, ad, bd, n) } {
                return;
            }
        }
        // SAFETY: as in `unary`; b is copied out first when it is the output, so writing the
        // output cannot change it.
        unsafe {
            // Dense f32 operands that are not the output: one pass, out = a op b.
            if !a_is_out && !b_is_out {
                if let (Some(ov), Some(av), Some(bv)) = (o.as_f32_mut(n), a.as_f32(n), b.as_f32(n)) {
                    match op {
                        Binary::Add => math::add3_slice(ov, av, bv),
                        Binary::Mul => math::mul3_slice(ov, av, bv),
                    }
                    return;
                }
            }
            match b.as_f32(n) {
                Some(direct) if !b_is_out => with_slot(o, a, a_is_out, n, |x| apply_binary(op, x, direct)),
                _ => SCRATCH_B.with(|s| {
                    let mut b_scratch = s.borrow_mut();
                    b.load(&mut b_scratch[..n]);
                    with_slot(o, a, a_is_out, n, |x| apply_binary(op, x, &b_scratch[..n]));
                }),
            }
        }
    });
}
