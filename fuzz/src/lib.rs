//! Bodies of the fuzz targets. cargo-fuzz runs them under libFuzzer (fuzz_targets/*.rs); the
//! main crate's tests/fuzz_loop.rs runs them on seeded random inputs with stable Rust.
//!
//! - `policy_parse`: arbitrary bytes as a policy.
//! - `policy_mutate`: grammar-aware mutations of the built-in policies; where the result
//!   compiles, the tables must decide like the rules read in order, for arbitrary ops.
//! - `op_descriptor`: arbitrary shapes, strides, dtypes, offsets and buffer sizes through
//!   `op::validate::validate` and `TensorView::validate`, then what the runtime computes from
//!   a validated op.
//!
//! - `gguf_parse`: arbitrary bytes as a GGUF file (seeded with tests/data/gguf); what it
//!   accepts must describe tensors inside the file.
//!
//! Each must never panic; an assertion here is a property the library promises.

use arbitrary::{Arbitrary, Result, Unstructured};
use npuhybrid::op::{
    validate::validate, Activation, DType, OpDesc, OpDims, OpKind, OpParams, Tags, TensorView, MAX_INPUTS,
    MAX_RANK,
};
use npuhybrid::policy::{builtin, builtin_names, builtin_source, compile_str, CompiledPolicy, OpQuery};

pub fn policy_parse(data: &[u8]) {
    check_policy(&String::from_utf8_lossy(data));
}

pub fn policy_mutate(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(text) = mutated_policy(&mut u) else {
        return;
    };
    let Some(policy) = check_policy(&text) else {
        return;
    };
    for _ in 0..8 {
        let Ok((kind, dtype, dims, tags)) = arbitrary_query(&mut u) else {
            return;
        };
        let wtype = *u.choose(&DType::ALL).unwrap_or(&dtype);
        let q = OpQuery { kind, dtype, wtype, dims, tags: &tags };
        let d = policy.decide(&q);
        assert_eq!(d.rule_index, policy.decide_by_rules(&q), "tables disagree:\n{text}");
        assert!(policy.explain(&q).contains(&format!("decision: rule #{} ", d.rule_index)));
    }
}

pub fn op_descriptor(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(input) = OpInput::arbitrary(&mut u) else {
        return;
    };
    let op = input.op();
    let lens = input.buffer_lens;
    let buffer_len = |v: &TensorView| -> npuhybrid::Result<usize> {
        lens.get(v.buffer as usize)
            .copied()
            .ok_or_else(|| npuhybrid::Error::InvalidHandle(format!("buffer {}", v.buffer)))
    };
    for v in op.views() {
        if let Ok(len) = buffer_len(v) {
            let _ = v.validate("fuzz", len);
        }
    }
    if validate(&op, &buffer_len).is_err() {
        return;
    }
    // What the runtime computes from every validated op.
    for v in op.views() {
        let (start, end) = v.byte_range();
        assert!(start <= end && end <= buffer_len(v).unwrap_or(0));
    }
    // An output addresses each element once, so it cannot hold more bytes than its range
    // (an op's work is bounded by its output buffer, whatever the strides).
    let (start, end) = op.output.byte_range();
    assert!(op.output.is_non_overlapping());
    assert!(op.output.bytes() <= end - start, "output {:?} has more elements than bytes", op.output);
    let q = OpQuery::of(&op);
    let _ = op.flops();
    for name in builtin_names() {
        let policy = builtin(name).expect("listed");
        let _ = policy.decide(&q);
    }
}

pub fn gguf_parse(data: &[u8]) {
    match npuhybrid::gguf::parse(data) {
        Ok(g) => {
            assert!(g.data_offset <= data.len());
            for t in &g.tensors {
                assert!(t.offset >= g.data_offset && t.offset + t.bytes <= data.len(), "{t:?}");
                let numel: usize = t.shape.iter().product();
                assert_eq!(t.bytes, t.dtype.bytes_of(numel));
                assert_eq!(t.shape[t.shape.len() - 1] % t.dtype.block_elems(), 0);
            }
        }
        Err(e) => assert!(e.to_string().contains("gguf: byte "), "{e}"),
    }
}

/// Compiles `text`; a rejected policy must come with at least one rendered error.
fn check_policy(text: &str) -> Option<CompiledPolicy> {
    match compile_str("fuzz.nhp", text) {
        Ok(p) => {
            let _ = p.dump();
            Some(p)
        }
        Err(e) => {
            assert!(!e.diagnostics.is_empty(), "rejected without a message");
            assert!(e.to_string().contains(": error: "));
            None
        }
    }
}

/// Words and symbols of the language, and values near its edges.
const DICTIONARY: &[&str] = &[
    "policy",
    "include",
    "device",
    "fallback",
    "rule",
    "thermal",
    "emergency",
    "when",
    "and",
    "use",
    "strategy",
    "split",
    "dynamic",
    "tag",
    "in",
    "clear",
    "below",
    "above",
    "for",
    "do",
    "cpu",
    "gpu",
    "npu",
    "tpu",
    "matmul",
    "softmax",
    "attention",
    "add",
    "copy",
    "f32",
    "f16",
    "bf16",
    "i8",
    "i32",
    "wtype",
    "q8_0",
    "q4_0",
    "q4_1",
    "q4_g128",
    "m",
    "n",
    "k",
    "batch",
    "elements",
    "bytes",
    "op",
    "dtype",
    "phase",
    "prefill",
    "decode",
    "enabled",
    "power",
    "precision",
    "max_in_flight",
    "batch_rows",
    "pool",
    "retries",
    "degrade_after",
    "degrade_for",
    "true",
    "false",
    "turbo",
    "balanced",
    "powersaver",
    "rows",
    "cols",
    "first_available",
    "least_loaded",
    "earliest_completion",
    "shift",
    "exclude",
    "temperature",
    "C",
    "W",
    "s",
    "ms",
    "MiB",
    "KiB",
    "GiB",
    "Mb",
    "{",
    "}",
    "[",
    "]",
    ",",
    "=",
    "<",
    "<=",
    ">",
    ">=",
    ";",
    "\n",
    "\"",
    "#",
    "\"default\"",
    "\"llm_inference\"",
    "\"x.nhp\"",
    "0",
    "1",
    "-1",
    "0.5",
    "1.5",
    "64",
    "4096",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999",
    "1e9",
    "0.000001",
];

/// A built-in policy with a few token- and line-level edits.
fn mutated_policy(u: &mut Unstructured) -> Result<String> {
    let name = *u.choose(builtin_names())?;
    let source = builtin_source(name).expect("listed");
    let mut tokens: Vec<String> = tokenize(source);
    let lines: Vec<&str> = source.lines().collect();
    for _ in 0..u.int_in_range(1..=8)? {
        if tokens.is_empty() {
            break;
        }
        let at = u.choose_index(tokens.len())?;
        match u.int_in_range(0..=6)? {
            0 => tokens[at] = u.choose(DICTIONARY)?.to_string(),
            1 => {
                tokens.remove(at);
            }
            2 => {
                let t = tokens[at].clone();
                tokens.insert(at, t);
            }
            3 => tokens.insert(at, format!(" {} ", u.choose(DICTIONARY)?)),
            4 => tokens.insert(at, format!("\n{}\n", u.choose(&lines)?)),
            5 => {
                let other = u.choose_index(tokens.len())?;
                tokens.swap(at, other);
            }
            _ => tokens[at] = format!("{}", u.arbitrary::<u64>()?),
        }
    }
    Ok(tokens.concat())
}

/// Splits text into words, numbers, blanks and single symbols, keeping every character, so
/// unmutated parts of a policy stay exactly as written.
fn tokenize(text: &str) -> Vec<String> {
    let mut tokens: Vec<String> = Vec::new();
    let class = |c: char| {
        if c.is_alphanumeric() || c == '_' || c == '.' {
            0
        } else if c == ' ' || c == '\t' {
            1
        } else {
            2
        }
    };
    for c in text.chars() {
        match tokens.last_mut() {
            Some(last) if class(c) != 2 && last.chars().last().map(class) == Some(class(c)) => last.push(c),
            _ => tokens.push(c.to_string()),
        }
    }
    tokens
}

fn arbitrary_query(u: &mut Unstructured) -> Result<(OpKind, DType, OpDims, Tags)> {
    let kind = *u.choose(&OpKind::ALL)?;
    let dtype = *u.choose(&DType::ALL)?;
    let mut size = || -> Result<usize> {
        // Half the time a value near the thresholds policies use, else anything.
        Ok(if u.arbitrary::<bool>()? {
            let base = *u.choose(&[0usize, 1, 32, 64, 1024, 2048, 4096, 65536])?;
            base.wrapping_add(u.int_in_range(0..=2)?).wrapping_sub(1)
        } else {
            u.arbitrary()?
        })
    };
    let dims =
        OpDims { m: size()?, n: size()?, k: size()?, batch: size()?, elements: size()?, bytes: size()? };
    let mut tags = Tags::new();
    if u.arbitrary::<bool>()? {
        tags.set("phase", u.choose(&["prefill", "decode", "other"])?);
    }
    if u.arbitrary::<bool>()? {
        tags.set("priority", u.choose(&["realtime", "batch"])?);
    }
    Ok((kind, dtype, dims, tags))
}

/// A tensor view as a caller could describe it: every field arbitrary.
#[derive(Arbitrary, Debug)]
struct ViewInput {
    buffer: u8,
    dtype: u32,
    rank: u8,
    shape: [u16; MAX_RANK],
    wide: bool,
    wide_shape: [usize; MAX_RANK],
    strides: [usize; MAX_RANK],
    small_strides: [u8; MAX_RANK],
    offset: usize,
}

impl ViewInput {
    fn view(&self) -> TensorView {
        let mut shape = [0usize; MAX_RANK];
        let mut strides = [0usize; MAX_RANK];
        for i in 0..MAX_RANK {
            // Small shapes and strides reach the shape checks; wide ones the overflow checks.
            shape[i] = if self.wide { self.wide_shape[i] } else { self.shape[i] as usize };
            strides[i] = if self.wide { self.strides[i] } else { self.small_strides[i] as usize };
        }
        TensorView {
            buffer: (self.buffer % 6) as u64,
            dtype: DType::from_raw(self.dtype % 6).unwrap_or(DType::F32),
            rank: (self.rank % 7) as usize,
            shape,
            strides,
            offset: if self.wide { self.offset } else { self.offset % 4096 },
        }
    }
}

#[derive(Arbitrary, Debug)]
struct OpInput {
    kind: u8,
    inputs: [Option<ViewInput>; MAX_INPUTS],
    output: ViewInput,
    /// Sizes of buffers 0..4; views naming buffers 4 and 5 name unknown buffers.
    buffer_lens: [usize; 4],
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    beta: f32,
    activation: u8,
    eps: f32,
    gelu_tanh: bool,
    rope_theta: f32,
    rope_position: u32,
    rope_interleaved: bool,
    causal: bool,
    attn_scale: f32,
    kv_len: u32,
}

impl OpInput {
    fn op(&self) -> OpDesc {
        let kind = OpKind::from_raw(self.kind as u32 % OpKind::COUNT as u32).expect("in range");
        let params = OpParams {
            trans_a: self.trans_a,
            trans_b: self.trans_b,
            alpha: self.alpha,
            beta: self.beta,
            activation: Activation::from_raw(self.activation as u32 % 4).unwrap_or_default(),
            eps: self.eps,
            gelu_tanh: self.gelu_tanh,
            rope_theta: self.rope_theta,
            rope_position: self.rope_position,
            rope_interleaved: self.rope_interleaved,
            causal: self.causal,
            attn_scale: self.attn_scale,
            kv_len: self.kv_len,
            ..OpParams::default()
        };
        let mut op = OpDesc::new(kind, &[], self.output.view()).with_params(params);
        for (slot, input) in op.inputs.iter_mut().zip(&self.inputs) {
            *slot = input.as_ref().map(ViewInput::view);
        }
        op
    }
}
