//! Op descriptors: what to compute, on which tensor views, with which parameters.

use super::{DType, OpKind, TensorView};

/// Activation fused after a matmul (C ABI values).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Activation {
    #[default]
    None = 0,
    Relu = 1,
    Silu = 2,
    Gelu = 3,
}

impl Activation {
    pub fn from_raw(raw: u32) -> Option<Activation> {
        [Activation::None, Activation::Relu, Activation::Silu, Activation::Gelu].get(raw as usize).copied()
    }
}

/// Scalar parameters of an op; each op reads only the fields it documents.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpParams {
    /// matmul: use A^T / B^T.
    pub trans_a: bool,
    pub trans_b: bool,
    /// matmul: C = alpha*op(A)op(B) + beta*C (+bias, then activation). scale: out = alpha*a.
    pub alpha: f32,
    pub beta: f32,
    pub activation: Activation,
    /// rmsnorm, layernorm.
    pub eps: f32,
    /// gelu: tanh approximation instead of erf.
    pub gelu_tanh: bool,
    /// rope: frequency base, absolute position of the first row, interleaved pairs
    /// (GPT-J style) instead of rotated halves (GPT-NeoX/Llama style).
    pub rope_theta: f32,
    pub rope_position: u32,
    pub rope_interleaved: bool,
    /// attention: causal mask, score scale (0 = 1/sqrt(head_dim)), valid keys (0 = all).
    pub causal: bool,
    pub attn_scale: f32,
    pub kv_len: u32,
    /// f32 matmul: a device that computes in bf16 only (an NPU) may round A and B to bf16
    /// (sums stay f32), as cuBLAS's `allow_tf32` or OpenVINO's precision hint allow. Devices
    /// with f32 kernels ignore it.
    pub allow_bf16: bool,
    /// matmul with a quantized B: the CPU may round A to int8 per 32-element block and take
    /// integer dot products (llama.cpp's q8_0 activations). Off: f32 math on the
    /// dequantised weights.
    pub allow_q8_activations: bool,
}

impl Default for OpParams {
    fn default() -> Self {
        OpParams {
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
            activation: Activation::None,
            eps: 1e-5,
            gelu_tanh: false,
            rope_theta: 10000.0,
            rope_position: 0,
            rope_interleaved: false,
            causal: false,
            attn_scale: 0.0,
            kv_len: 0,
            allow_bf16: false,
            allow_q8_activations: false,
        }
    }
}

/// Workload tags the application attaches to an op (`phase=prefill`, `priority=realtime`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tags(Vec<(String, String)>);

/// Limits of an op's tag text (`nh_op_desc.tags`).
pub const MAX_TAGS: usize = 64;
pub const MAX_TAG_BYTES: usize = 4096;

impl Tags {
    pub fn new() -> Tags {
        Tags(Vec::new())
    }

    /// Parses `key=value` pairs separated by commas or spaces: at most `MAX_TAGS` pairs in
    /// `MAX_TAG_BYTES` (callers' text is untrusted; lookups are linear in the tag count).
    pub fn parse(text: &str) -> Result<Tags, String> {
        if text.len() > MAX_TAG_BYTES {
            return Err(format!("tags are {} bytes long: the limit is {MAX_TAG_BYTES}", text.len()));
        }
        let mut tags = Tags::new();
        for item in text.split([',', ' ']).filter(|s| !s.is_empty()) {
            if tags.0.len() == MAX_TAGS {
                return Err(format!("more than {MAX_TAGS} tags"));
            }
            let (k, v) =
                item.split_once('=').ok_or_else(|| format!("tag '{item}' is not of the form key=value"))?;
            let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok(k) || !ok(v) {
                return Err(format!("tag '{item}': keys and values are letters, digits and '_'"));
            }
            tags.set(k, v);
        }
        Ok(tags)
    }

    pub fn set(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.0.push((key.to_string(), value.to_string())),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Positional inputs of each op kind:
/// - matmul: a, b, bias?       - add/mul: a, b (b broadcasts to a)
/// - scale/silu/gelu/softmax/copy: a
/// - rmsnorm: x, weight?       - layernorm: x, gamma?, beta?
/// - rope: x [.., seq, heads, head_dim]
/// - attention: q [.., H, Sq, D], k [.., Hkv, Skv, D], v [.., Hkv, Skv, D], mask? (additive)
pub const MAX_INPUTS: usize = 4;

#[derive(Clone, Debug, PartialEq)]
pub struct OpDesc {
    pub kind: OpKind,
    pub params: OpParams,
    pub inputs: [Option<TensorView>; MAX_INPUTS],
    pub output: TensorView,
    pub tags: Tags,
}

/// Size features of an op, as the policy language sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OpDims {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub elements: usize,
    pub bytes: usize,
}

impl OpDesc {
    pub fn new(kind: OpKind, inputs: &[TensorView], output: TensorView) -> OpDesc {
        let mut slots = [None; MAX_INPUTS];
        for (slot, v) in slots.iter_mut().zip(inputs) {
            *slot = Some(*v);
        }
        OpDesc { kind, params: OpParams::default(), inputs: slots, output, tags: Tags::new() }
    }

    pub fn with_params(mut self, params: OpParams) -> OpDesc {
        self.params = params;
        self
    }

    pub fn with_tags(mut self, tags: Tags) -> OpDesc {
        self.tags = tags;
        self
    }

    pub fn input(&self, i: usize) -> Option<&TensorView> {
        self.inputs.get(i).and_then(|v| v.as_ref())
    }

    /// The dtype the op computes in (that of its first input).
    pub fn dtype(&self) -> DType {
        self.input(0).map(|v| v.dtype).unwrap_or(self.output.dtype)
    }

    /// An f32 matmul the caller lets run with bf16 operands (`OpParams::allow_bf16`).
    pub fn may_round_to_bf16(&self) -> bool {
        self.kind == OpKind::Matmul
            && self.params.allow_bf16
            && self.inputs[..2].iter().flatten().all(|v| v.dtype == DType::F32)
    }

    /// A matmul with f32 activations and an f16 / bf16 weight (`validate::half_weight`): only
    /// devices with kernels that widen B themselves take it (the CPU; a Vulkan GPU's GEMV).
    pub fn has_half_weight(&self) -> bool {
        self.kind == OpKind::Matmul
            && matches!((self.input(0), self.input(1)), (Some(a), Some(b)) if super::validate::half_weight(a.dtype, b.dtype))
    }

    /// Attention with f32 queries over an f16 / bf16 K and V (a half KV cache): only devices
    /// whose kernels widen K and V as they read them take it (the CPU).
    pub fn has_half_kv(&self) -> bool {
        self.kind == OpKind::Attention
            && matches!((self.input(0), self.input(1)), (Some(q), Some(k)) if super::validate::half_weight(q.dtype, k.dtype))
    }

    /// The op with its A and B operands relabelled `dtype`, for cost models of a device that
    /// converts them (the views no longer describe the caller's buffers).
    pub fn with_operands_as(&self, dtype: DType) -> OpDesc {
        let mut op = self.clone();
        for v in op.inputs[..2].iter_mut().flatten() {
            v.dtype = dtype;
        }
        op
    }

    /// Views this op reads, then the one it writes.
    pub fn views(&self) -> impl Iterator<Item = &TensorView> {
        self.inputs.iter().flatten().chain(std::iter::once(&self.output))
    }

    /// m, n, k, batch for matmuls (m x k times k x n); rows, columns for the rest.
    pub fn dims(&self) -> OpDims {
        // Broadcast views (stride 0) can each be near usize::MAX bytes: saturate the sum.
        let bytes = self.views().map(|v| v.bytes()).fold(0, usize::saturating_add);
        let elements = self.output.numel();
        match self.kind {
            OpKind::Matmul => {
                let (m, k, n, batch) = super::validate::matmul_mkn(self);
                OpDims { m, n, k, batch, elements, bytes }
            }
            _ => OpDims {
                m: self.output.rows(),
                n: self.output.last(),
                k: self.input(0).map(|v| v.last()).unwrap_or(0),
                batch: 1,
                elements,
                bytes,
            },
        }
    }

    /// Floating-point operations (2 per multiply-add), for throughput figures.
    pub fn flops(&self) -> f64 {
        let d = self.dims();
        match self.kind {
            OpKind::Matmul => 2.0 * d.m as f64 * d.n as f64 * d.k as f64 * d.batch as f64,
            OpKind::Attention => {
                let q = self.input(0).map(|v| v.numel()).unwrap_or(0) as f64;
                let skv = self.input(1).map(|v| v.shape[v.rank - 2]).unwrap_or(0) as f64;
                4.0 * q * skv
            }
            _ => d.elements as f64,
        }
    }
}
