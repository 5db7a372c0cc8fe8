//! Shape and dtype rules of every op. Runs once at the boundary; backends trust its result.

use super::{DType, OpDesc, OpKind, TensorView};
use crate::error::{Error, Result};

/// (m, k, n, batch) of a matmul whose views are already known to be valid.
pub fn matmul_mkn(op: &OpDesc) -> (usize, usize, usize, usize) {
    let c = &op.output;
    let (m, n) = (c.shape[c.rank - 2.min(c.rank)], c.last());
    let k = match op.input(0) {
        Some(a) if op.params.trans_a => a.shape[a.rank - 2],
        Some(a) => a.last(),
        None => 0,
    };
    let batch = if c.rank > 2 { c.dims()[..c.rank - 2].iter().product() } else { 1 };
    (if c.rank >= 2 { m } else { 1 }, k, n, batch)
}

/// Product of the dimensions before the last two.
pub fn batch_of(v: &TensorView) -> usize {
    if v.rank > 2 {
        v.dims()[..v.rank - 2].iter().product()
    } else {
        1
    }
}

fn name(op: &OpDesc) -> &'static str {
    op.kind.name()
}

fn need<'a>(op: &'a OpDesc, i: usize, what: &str) -> Result<&'a TensorView> {
    op.input(i).ok_or_else(|| Error::invalid(format!("{}: input {i} ({what}) is missing", name(op))))
}

fn same_dtype(op: &OpDesc, v: &TensorView, what: &str, want: DType) -> Result<()> {
    if v.dtype != want {
        return Err(Error::invalid(format!(
            "{}: {what} has dtype {} but the op computes in {want}",
            name(op),
            v.dtype
        )));
    }
    Ok(())
}

/// Bit set of `dtypes`.
fn bits(dtypes: impl IntoIterator<Item = DType>) -> u32 {
    dtypes.into_iter().fold(0, |acc, d| acc | d.bit())
}

/// The element types ops of `kind` compute in (their first input's, which validation checks
/// against this): copy converts between any two (quantized ones only to and from floats);
/// every other op computes in f32, f16 or bf16 (no kernel takes integers).
pub fn compute_dtypes(kind: OpKind) -> u32 {
    match kind {
        OpKind::Copy => bits(DType::ALL),
        _ => bits(DType::ALL.into_iter().filter(|d| d.is_float())),
    }
}

/// The types a matmul's b (a weight) may have besides its compute type: the block-quantized
/// ones, dequantized by the kernels.
pub fn weight_dtypes() -> u32 {
    bits(DType::ALL.into_iter().filter(|d| d.is_quantized()))
}

/// An f32-activation matmul whose b (a weight) is f16 or bf16: the weights stay half the
/// bytes of f32 (decode streams them), products are widened to f32 and summed in f32.
pub fn half_weight(a: DType, b: DType) -> bool {
    a == DType::F32 && matches!(b, DType::F16 | DType::BF16)
}

/// The element types that some compute op among `ops` (an `OpKind::bit` set) takes, as its
/// compute type or as a matmul's weight: what a device running every valid op of those
/// kinds reports (`DeviceInfo::dtypes`). Copy is not counted: it moves and converts data, and
/// a device that took i8 only there would claim an i8 capability nothing can compute with.
pub fn computable_dtypes(ops: u32) -> u32 {
    OpKind::ALL
        .into_iter()
        .filter(|k| ops & k.bit() != 0 && *k != OpKind::Copy)
        .fold(0, |acc, k| acc | compute_dtypes(k) | if k == OpKind::Matmul { weight_dtypes() } else { 0 })
}

fn computes_in(op: &OpDesc, dt: DType) -> Result<()> {
    let allowed = compute_dtypes(op.kind);
    if allowed & dt.bit() == 0 {
        let names: Vec<&str> =
            DType::ALL.iter().filter(|d| allowed & d.bit() != 0).map(|d| d.name()).collect();
        return Err(Error::invalid(format!(
            "{}: dtype {dt} is not supported ({}){}",
            name(op),
            names.join(", "),
            if dt.is_quantized() { "" } else { "; copy converts to and from it" }
        )));
    }
    Ok(())
}

fn same_shape(op: &OpDesc, v: &TensorView, what: &str, want: &[usize]) -> Result<()> {
    if v.dims() != want {
        return Err(Error::invalid(format!(
            "{}: {what} has shape {:?}, expected {:?}",
            name(op),
            v.dims(),
            want
        )));
    }
    Ok(())
}

/// `b` broadcasts to `a` when, aligned from the right, each of its dims equals a's or is 1.
pub fn broadcasts_to(b: &[usize], a: &[usize]) -> bool {
    b.len() <= a.len() && b.iter().rev().zip(a.iter().rev()).all(|(&x, &y)| x == y || x == 1)
}

fn expect_unused(op: &OpDesc, from: usize) -> Result<()> {
    for i in from..op.inputs.len() {
        if op.inputs[i].is_some() {
            return Err(Error::invalid(format!("{}: input {i} is not used by this op", name(op))));
        }
    }
    Ok(())
}

/// Checks that the op is well formed. `buffer_len` gives the size of each view's buffer.
pub fn validate(op: &OpDesc, buffer_len: &dyn Fn(&TensorView) -> Result<usize>) -> Result<()> {
    for (i, v) in op.inputs.iter().enumerate() {
        if let Some(v) = v {
            v.validate(&format!("{}: input {i}", name(op)), buffer_len(v)?)?;
        }
    }
    op.output.validate(&format!("{}: output", name(op)), buffer_len(&op.output)?)?;
    if !op.output.is_non_overlapping() {
        return Err(Error::invalid(format!(
            "{}: output shape {:?} with strides {:?} addresses some elements more than once",
            name(op),
            op.output.dims(),
            op.output.strides()
        )));
    }
    for (i, v) in op.inputs.iter().enumerate() {
        if let Some(v) = v {
            if v.buffer == op.output.buffer && overlaps(v, &op.output) && !elementwise_in_place_ok(op, v) {
                return Err(Error::invalid(format!(
                    "{}: input {i} overlaps the output (only same-view elementwise ops may run in place)",
                    name(op)
                )));
            }
        }
    }
    match op.kind {
        OpKind::Matmul => validate_matmul(op),
        OpKind::Add | OpKind::Mul => {
            let a = need(op, 0, "a")?;
            let b = need(op, 1, "b")?;
            computes_in(op, a.dtype)?;
            same_dtype(op, b, "input b", a.dtype)?;
            same_dtype(op, &op.output, "output", a.dtype)?;
            if !broadcasts_to(b.dims(), a.dims()) {
                return Err(Error::invalid(format!(
                    "{}: input b shape {:?} does not broadcast to input a shape {:?}",
                    name(op),
                    b.dims(),
                    a.dims()
                )));
            }
            same_shape(op, &op.output, "output", a.dims())?;
            expect_unused(op, 2)
        }
        OpKind::Scale | OpKind::Silu | OpKind::Gelu | OpKind::Softmax => {
            let a = need(op, 0, "a")?;
            computes_in(op, a.dtype)?;
            same_dtype(op, &op.output, "output", a.dtype)?;
            same_shape(op, &op.output, "output", a.dims())?;
            expect_unused(op, 1)
        }
        OpKind::Copy => {
            let a = need(op, 0, "a")?;
            same_shape(op, &op.output, "output", a.dims())?;
            quantized_copy(a.dtype, op.output.dtype)?;
            expect_unused(op, 1)
        }
        OpKind::RmsNorm | OpKind::LayerNorm => {
            let x = need(op, 0, "x")?;
            computes_in(op, x.dtype)?;
            same_dtype(op, &op.output, "output", x.dtype)?;
            same_shape(op, &op.output, "output", x.dims())?;
            let last = if op.kind == OpKind::RmsNorm { 2 } else { 3 };
            for i in 1..last {
                if let Some(w) = op.input(i) {
                    same_dtype(op, w, "weight", x.dtype)?;
                    same_shape(op, w, "weight", &[x.last()])?;
                }
            }
            if !(op.params.eps >= 0.0 && op.params.eps.is_finite()) {
                return Err(Error::invalid(format!(
                    "{}: eps {} must be finite and >= 0",
                    name(op),
                    op.params.eps
                )));
            }
            expect_unused(op, last)
        }
        OpKind::Rope => {
            let x = need(op, 0, "x")?;
            computes_in(op, x.dtype)?;
            if x.rank < 3 {
                return Err(Error::invalid("rope: x must be [.., seq, heads, head_dim] (rank 3 or 4)"));
            }
            if x.last() % 2 != 0 {
                return Err(Error::invalid(format!("rope: head_dim {} must be even", x.last())));
            }
            same_dtype(op, &op.output, "output", x.dtype)?;
            same_shape(op, &op.output, "output", x.dims())?;
            expect_unused(op, 1)
        }
        OpKind::Attention => validate_attention(op),
    }
}

fn validate_matmul(op: &OpDesc) -> Result<()> {
    let a = need(op, 0, "a")?;
    let b = need(op, 1, "b")?;
    let c = &op.output;
    computes_in(op, a.dtype)?;
    if weight_dtypes() & b.dtype.bit() != 0 {
        quantized_b(op, b)?;
    } else if !half_weight(a.dtype, b.dtype) {
        same_dtype(op, b, "input b", a.dtype).map_err(|_| {
            Error::invalid(format!(
                "matmul: input b has dtype {} but a has {}: b must have a's dtype, be quantized, \
                 or be f16 / bf16 under f32 activations",
                b.dtype, a.dtype
            ))
        })?;
    }
    if c.dtype != a.dtype && c.dtype != DType::F32 {
        return Err(Error::invalid(format!("matmul: output dtype {} must be {} or f32", c.dtype, a.dtype)));
    }
    for (v, what) in [(a, "input a"), (b, "input b"), (c, "output")] {
        if v.rank < 2 {
            return Err(Error::invalid(format!("matmul: {what} must have rank >= 2, got {}", v.rank)));
        }
    }
    let (m, ka) =
        if op.params.trans_a { (a.last(), a.shape[a.rank - 2]) } else { (a.shape[a.rank - 2], a.last()) };
    let (kb, n) =
        if op.params.trans_b { (b.last(), b.shape[b.rank - 2]) } else { (b.shape[b.rank - 2], b.last()) };
    if ka != kb {
        return Err(Error::invalid(format!(
            "matmul: inner dimensions differ: a gives k={ka}, b gives k={kb}"
        )));
    }
    if c.shape[c.rank - 2] != m || c.last() != n {
        return Err(Error::invalid(format!("matmul: output shape {:?} must end in [{m}, {n}]", c.dims())));
    }
    let batch = batch_of(c);
    for (v, what) in [(a, "input a"), (b, "input b")] {
        let vb = batch_of(v);
        if vb != batch && vb != 1 {
            return Err(Error::invalid(format!(
                "matmul: {what} has batch {vb}, output has batch {batch} (must match or be 1)"
            )));
        }
    }
    if let Some(bias) = op.input(2) {
        same_dtype(op, bias, "bias", c.dtype)?;
        same_shape(op, bias, "bias", &[n])?;
    }
    if !op.params.alpha.is_finite() || !op.params.beta.is_finite() {
        return Err(Error::invalid("matmul: alpha and beta must be finite"));
    }
    expect_unused(op, 3)
}

/// A quantized B is a weight stored [.., n, k] with its blocks along k (GGUF's and
/// PyTorch's Linear layout), so it must be transposed, and one matrix shared by every batch.
fn quantized_b(op: &OpDesc, b: &TensorView) -> Result<()> {
    if !op.params.trans_b {
        return Err(Error::invalid(format!(
            "matmul: quantized input b ({}) must be given as [.., n, k] with trans_b = 1 (blocks run along k)",
            b.dtype
        )));
    }
    if batch_of(b) != 1 {
        return Err(Error::invalid(format!(
            "matmul: quantized input b ({}) must have batch 1 (one weight shared by every batch), got {}",
            b.dtype,
            batch_of(b)
        )));
    }
    Ok(())
}

/// Copies into a quantized type quantize (from f32, f16 or bf16), copies out of one
/// dequantize (to a float type); a quantized type copies to itself as bytes.
fn quantized_copy(from: DType, to: DType) -> Result<()> {
    let ok = |q: DType, other: DType| other.is_float() || other == q;
    if (from.is_quantized() && !ok(from, to)) || (to.is_quantized() && !ok(to, from)) {
        return Err(Error::invalid(format!(
            "copy: {from} -> {to} is not supported (quantized types convert only to and from f32, f16, bf16)"
        )));
    }
    Ok(())
}

fn validate_attention(op: &OpDesc) -> Result<()> {
    let q = need(op, 0, "q")?;
    let k = need(op, 1, "k")?;
    let v = need(op, 2, "v")?;
    computes_in(op, q.dtype)?;
    // An f16 / bf16 KV cache under f32 queries: half the cache's memory, widened as read.
    let kv_dtype = if half_weight(q.dtype, k.dtype) { k.dtype } else { q.dtype };
    for (t, what) in [(k, "k"), (v, "v")] {
        same_dtype(op, t, what, kv_dtype)?;
        if t.rank != q.rank {
            return Err(Error::invalid(format!("attention: {what} has rank {}, q has {}", t.rank, q.rank)));
        }
    }
    same_dtype(op, &op.output, "output", q.dtype)?;
    same_shape(op, &op.output, "output", q.dims())?;
    if q.rank < 3 {
        return Err(Error::invalid("attention: q must be [.., heads, seq, head_dim] (rank 3 or 4)"));
    }
    let r = q.rank;
    let (h, sq, d) = (q.shape[r - 3], q.shape[r - 2], q.shape[r - 1]);
    let (hkv, skv, dk) = (k.shape[r - 3], k.shape[r - 2], k.shape[r - 1]);
    if v.dims() != k.dims() {
        return Err(Error::invalid(format!(
            "attention: v shape {:?} differs from k shape {:?}",
            v.dims(),
            k.dims()
        )));
    }
    if dk != d {
        return Err(Error::invalid(format!("attention: k head_dim {dk} differs from q head_dim {d}")));
    }
    if r == 4 && (k.shape[0] != q.shape[0]) {
        return Err(Error::invalid(format!(
            "attention: k batch {} differs from q batch {}",
            k.shape[0], q.shape[0]
        )));
    }
    if h % hkv != 0 {
        return Err(Error::invalid(format!("attention: q heads {h} are not a multiple of kv heads {hkv}")));
    }
    let kv_len = op.params.kv_len as usize;
    if kv_len > skv {
        return Err(Error::invalid(format!("attention: kv_len {kv_len} exceeds k length {skv}")));
    }
    let kv_len = if kv_len == 0 { skv } else { kv_len };
    if op.params.causal && sq > kv_len {
        return Err(Error::invalid(format!(
            "attention: causal with {sq} queries needs kv_len >= {sq}, got {kv_len}"
        )));
    }
    if let Some(mask) = op.input(3) {
        same_dtype(op, mask, "mask", q.dtype)?;
        let full = [q.dims()[..r - 3].to_vec(), vec![h, sq, skv]].concat();
        if !broadcasts_to(mask.dims(), &full) {
            return Err(Error::invalid(format!(
                "attention: mask shape {:?} does not broadcast to scores {:?}",
                mask.dims(),
                full
            )));
        }
    }
    if !op.params.attn_scale.is_finite() {
        return Err(Error::invalid("attention: scale must be finite"));
    }
    Ok(())
}

fn overlaps(a: &TensorView, b: &TensorView) -> bool {
    let (a0, a1) = a.byte_range();
    let (b0, b1) = b.byte_range();
    a0 < b1 && b0 < a1
}

/// Elementwise ops may write over an input that is exactly the output view.
fn elementwise_in_place_ok(op: &OpDesc, input: &TensorView) -> bool {
    matches!(
        op.kind,
        OpKind::Add
            | OpKind::Mul
            | OpKind::Scale
            | OpKind::Silu
            | OpKind::Gelu
            | OpKind::Softmax
            | OpKind::Rope
            | OpKind::RmsNorm
            | OpKind::LayerNorm
    ) && input == &op.output
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::OpParams;

    /// x[2, 64] (a_dt) times w (b_dt, [8, 64] with trans_b) into c[2, 8] (c_dt), each in its
    /// own buffer, optionally with a bias of `bias_dt`.
    fn matmul(a_dt: DType, b_dt: DType, c_dt: DType, bias_dt: Option<DType>) -> Result<()> {
        let a = TensorView::contiguous(1, a_dt, &[2, 64], 0);
        let b = TensorView::contiguous(2, b_dt, &[8, 64], 0);
        let c = TensorView::contiguous(3, c_dt, &[2, 8], 0);
        let mut inputs = vec![a, b];
        inputs.extend(bias_dt.map(|d| TensorView::contiguous(4, d, &[8], 0)));
        let op = OpDesc::new(OpKind::Matmul, &inputs, c)
            .with_params(OpParams { trans_b: true, ..OpParams::default() });
        validate(&op, &|_| Ok(1 << 20))
    }

    #[test]
    fn f16_and_bf16_weights_take_f32_activations_only() {
        use DType::*;
        for w in [F16, BF16] {
            matmul(F32, w, F32, None).unwrap();
            matmul(F32, w, F32, Some(F32)).unwrap();
            assert!(OpDesc::new(
                OpKind::Matmul,
                &[TensorView::contiguous(1, F32, &[2, 64], 0), TensorView::contiguous(2, w, &[8, 64], 0)],
                TensorView::contiguous(3, F32, &[2, 8], 0),
            )
            .has_half_weight());
            // The output and bias are f32 (a's type); half activations need half weights.
            let e = matmul(F32, w, w, None).unwrap_err().to_string();
            assert!(e.contains(&format!("output dtype {w} must be f32")), "{e}");
            let e = matmul(F32, w, F32, Some(w)).unwrap_err().to_string();
            assert!(e.contains(&format!("bias has dtype {w}")), "{e}");
        }
        let refused = [(F16, F32), (BF16, F32), (F16, BF16), (BF16, F16), (F32, I8), (F32, I32)];
        for (a, b) in refused {
            let e = matmul(a, b, F32, None).unwrap_err().to_string();
            assert!(e.contains(&format!("input b has dtype {b} but a has {a}")), "{a} x {b}: {e}");
        }
        // Same-type and quantized weights are as before; none of them is a "half weight".
        for (a, b) in [(F32, F32), (F16, F16), (BF16, BF16), (F32, Q4_0), (F16, Q8_0)] {
            matmul(a, b, F32, None).unwrap();
            assert!(!half_weight(a, b), "{a} x {b}");
        }
    }

    /// q [4, 3, 16] (q_dt) over k and v [2, 10, 16] (k_dt, v_dt), output like q.
    fn attention(q_dt: DType, k_dt: DType, v_dt: DType) -> Result<()> {
        let q = TensorView::contiguous(1, q_dt, &[4, 3, 16], 0);
        let k = TensorView::contiguous(2, k_dt, &[2, 10, 16], 0);
        let v = TensorView::contiguous(3, v_dt, &[2, 10, 16], 0);
        let o = TensorView::contiguous(4, q_dt, &[4, 3, 16], 0);
        validate(&OpDesc::new(OpKind::Attention, &[q, k, v], o), &|_| Ok(1 << 20))
    }

    #[test]
    fn half_kv_cache_takes_f32_queries_only() {
        use DType::*;
        for half in [F16, BF16] {
            attention(F32, half, half).unwrap();
            attention(half, half, half).unwrap();
            // K and V share one type; half queries take no f32 cache.
            let e = attention(F32, half, F32).unwrap_err().to_string();
            assert!(e.contains(&format!("v has dtype f32 but the op computes in {half}")), "{e}");
            let e = attention(F32, F32, half).unwrap_err().to_string();
            assert!(e.contains(&format!("v has dtype {half}")), "{e}");
            let e = attention(half, F32, F32).unwrap_err().to_string();
            assert!(e.contains(&format!("k has dtype f32 but the op computes in {half}")), "{e}");
        }
        let e = attention(F16, BF16, BF16).unwrap_err().to_string();
        assert!(e.contains("k has dtype bf16 but the op computes in f16"), "{e}");
    }
}
