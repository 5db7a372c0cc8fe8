//! The `#[repr(C)]` types of the C API. Layouts are pinned with static assertions: changing
//! one is an ABI break and needs a new soname major.

#![allow(non_camel_case_types)]

use static_assertions::{assert_eq_size, const_assert_eq};
use std::ffi::{c_char, c_void};
use std::mem::{offset_of, size_of};

/// Opaque runtime handle. Zero is never a valid handle.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct nh_runtime {
    pub id: u64,
}

/// Opaque buffer handle, valid only with the runtime that made it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct nh_buffer {
    pub id: u64,
}

/// Opaque completion-event handle, valid only with the runtime that made it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct nh_event {
    pub id: u64,
}

/// Opaque handle of an opened GGUF file, valid only with the runtime that opened it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct nh_gguf {
    pub id: u64,
}

/// Opaque graph handle, valid only with the runtime that made it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct nh_graph {
    pub id: u64,
}

/// Element types (values of `nh_tensor.dtype`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum nh_dtype {
    NH_F32 = 0,
    NH_F16 = 1,
    NH_BF16 = 2,
    NH_I8 = 3,
    NH_I32 = 4,
    /// Block-quantized weight types (matmul's b, copy to or from f32 / f16 / bf16). Shapes
    /// and strides count weights; the last dimension has stride 1 and holds whole blocks,
    /// every other stride is a whole number of blocks, the byte offset is even. Blocks are
    /// independent, little-endian, packed with no padding between them. In a block of B
    /// weights, nib(j) is the low nibble of qs[j] for j < B/2, else the high nibble of
    /// qs[j - B/2] (GGUF's order).
    ///
    /// q8_0: 32 weights in 34 bytes: bytes 0-1 d (f16), bytes 2-33 qs (int8 x 32);
    /// weight j = d * qs[j]. Same bytes as GGUF's Q8_0.
    NH_Q8_0 = 5,
    /// q4_0: 32 weights in 18 bytes: bytes 0-1 d (f16), bytes 2-17 qs (16 x 2 nibbles);
    /// weight j = d * (nib(j) - 8). Same bytes as GGUF's Q4_0.
    NH_Q4_0 = 6,
    /// q4_1: 32 weights in 20 bytes: bytes 0-1 d (f16), bytes 2-3 m (f16), bytes 4-19 qs;
    /// weight j = d * nib(j) + m. Same bytes as GGUF's Q4_1.
    NH_Q4_1 = 7,
    /// q4_g128 (AWQ-style uint4, group 128 along k): 128 weights in 68 bytes: bytes 0-1 d
    /// (f16), byte 2 zero point z (0..15), byte 3 zero, bytes 4-67 qs (64 x 2 nibbles);
    /// weight j = d * (nib(j) - z).
    NH_Q4_G128 = 8,
}

/// Op kinds (values of `nh_op_desc.kind`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum nh_op_kind {
    /// inputs: a [.., M, K], b [.., K, N], bias [N] (optional); output [.., M, N].
    /// b has a's dtype, except two kinds of weight. A quantized b (NH_Q8_0 ..) is given as
    /// [N, K] with trans_b = 1 (blocks run along K) and batch 1; a is f32, f16 or bf16. With
    /// an f32 a, b may be f16 or bf16, widened to f32 as it is read: the CPU takes any such
    /// matmul, a Vulkan GPU an f16 b given as [N, K] (trans_b) with up to 8 rows of a, other
    /// devices none. The output is a's dtype or f32, the bias the output's; accumulation is
    /// f32.
    NH_OP_MATMUL = 0,
    /// inputs: a, b (b broadcasts to a from the right); output shaped like a.
    NH_OP_ADD = 1,
    NH_OP_MUL = 2,
    /// output = alpha * a.
    NH_OP_SCALE = 3,
    NH_OP_SILU = 4,
    NH_OP_GELU = 5,
    /// Numerically stable softmax along the last dimension.
    NH_OP_SOFTMAX = 6,
    /// inputs: x, weight [D] (optional).
    NH_OP_RMSNORM = 7,
    /// inputs: x, gamma [D] (optional), beta [D] (optional).
    NH_OP_LAYERNORM = 8,
    /// inputs: x [.., seq, heads, head_dim].
    NH_OP_ROPE = 9,
    /// inputs: q [.., H, Sq, D], k [.., Hkv, Skv, D], v like k (f16 or bf16 under f32 q: a half KV cache), additive mask (optional).
    NH_OP_ATTENTION = 10,
    /// Copy with dtype conversion (any strided view to any view of the same shape).
    /// To a quantized type from f32 / f16 / bf16 it quantizes (rounding as GGUF's
    /// reference quantizers do), from one to a float type it dequantizes.
    NH_OP_COPY = 11,
}

/// Activation fused after a matmul (`nh_op_desc.activation`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum nh_activation {
    NH_ACT_NONE = 0,
    NH_ACT_RELU = 1,
    NH_ACT_SILU = 2,
    NH_ACT_GELU = 3,
}

/// Device kinds (`nh_device_info.kind`). A simulated NPU is a model, never hardware.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum nh_device_kind {
    NH_DEVICE_CPU = 0,
    NH_DEVICE_GPU = 1,
    NH_DEVICE_NPU = 2,
    NH_DEVICE_SIMULATED_NPU = 3,
}

/// NPU power modes, as `xrt-smi configure --pmode` names them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum nh_power_mode {
    NH_POWER_DEFAULT = 0,
    NH_POWER_POWERSAVER = 1,
    NH_POWER_BALANCED = 2,
    NH_POWER_PERFORMANCE = 3,
    NH_POWER_TURBO = 4,
}

/// Where `nh_runtime_desc.policy` comes from.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum nh_policy_kind {
    /// A built-in policy name: "default", "llm_inference", "continuous_audio", "battery_saver".
    NH_POLICY_BUILTIN = 0,
    /// A path to a policy file.
    NH_POLICY_FILE = 1,
    /// Policy source text.
    NH_POLICY_SOURCE = 2,
}

/// Bits of `nh_runtime_desc.devices`. The CPU is always enabled.
pub const NH_ENABLE_GPU: u32 = 1;
pub const NH_ENABLE_NPU: u32 = 2;
pub const NH_ENABLE_SIMULATED_NPU: u32 = 4;

/// Bits of `nh_runtime_desc.cpu_flags`: CPU backend behaviours that trade memory or power for
/// speed, on by default.
/// Do not keep packed copies of matmul weights (a B operand reused unchanged is packed once
/// into the GEMM's layout and kept, up to 1 GiB; imported memory never is).
pub const NH_CPU_NO_WEIGHT_CACHE: u32 = 1;
/// Let the CPU pool's threads sleep between ops instead of keeping them awake for 300 us
/// after each (saves power when ops are sparse; costs latency in graphs of short ops).
pub const NH_CPU_NO_KEEP_WARM: u32 = 2;

/// Bits of `nh_op_desc.flags`.
pub const NH_FLAG_TRANS_A: u32 = 1;
pub const NH_FLAG_TRANS_B: u32 = 2;
pub const NH_FLAG_CAUSAL: u32 = 4;
pub const NH_FLAG_ROPE_INTERLEAVED: u32 = 8;
pub const NH_FLAG_GELU_TANH: u32 = 16;
/// f32 matmul: a device that computes in bf16 only (an NPU) may take it, rounding A and B to
/// bf16 and summing in f32 (about 3 significant digits per operand). Devices with f32 kernels
/// ignore it; without it such a device never gets f32 matmuls.
pub const NH_FLAG_ALLOW_BF16: u32 = 32;
/// matmul with a block-quantized B (q8_0, q4_0, q4_1): the CPU may round each 32-element
/// block of an A row to int8 with one f32 scale (llama.cpp's q8_0 activations) and take
/// integer dot products, for 2-4x faster decode GEMVs. Results then differ from f32 math on
/// the dequantised weights by the activations' rounding (about 0.4% of a block's largest
/// |value| per element). Without it quantized matmuls are f32 math on the dequantised
/// weights. Other weight types and devices ignore it.
pub const NH_FLAG_ALLOW_Q8_ACTIVATIONS: u32 = 64;

/// Log callback: level 1 = error, 2 = warn, 3 = info, 4 = debug, 5 = trace.
/// May be called from any thread; must not call back into the library.
pub type nh_log_fn = Option<unsafe extern "C" fn(level: u32, message: *const c_char, user_data: *mut c_void)>;

/// How to create a runtime. Fill with `nh_runtime_desc_init`, then change fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nh_runtime_desc {
    /// sizeof(nh_runtime_desc): lets new fields be appended without breaking old callers.
    pub struct_size: u32,
    /// NH_ENABLE_* bits.
    pub devices: u32,
    /// CPU worker threads; 0 = one per core; at most 1024.
    pub threads: u32,
    /// An `nh_policy_kind` value.
    pub policy_kind: u32,
    /// Built-in name, file path or source text (per policy_kind); NULL = built-in "default".
    pub policy: *const c_char,
    /// Log callback; NULL = messages at `log_level` and above go to stderr. Each runtime has
    /// its own: the callback gets the messages logged while this runtime is created and the
    /// library's other messages (which runtime they concern is not known), never after
    /// `nh_runtime_destroy` of this runtime returns. Another runtime's settings do not
    /// change it. It must not call `nh_runtime_destroy`.
    pub log_callback: nh_log_fn,
    pub log_user_data: *mut c_void,
    /// 0 = off, 1 = error, 2 = warn (default), 3 = info, 4 = debug, 5 = trace.
    pub log_level: u32,
    /// NH_CPU_* bits; 0 = the defaults.
    pub cpu_flags: u32,
    /// Directory for performance history kept between runs; NULL = the user cache directory
    /// (~/.cache/npuhybrid), "" = keep none.
    pub perf_cache_dir: *const c_char,
    /// Bytes of freed host blocks kept for reuse; 0 = 256 MiB.
    pub pool_cache_bytes: u64,
    /// Root of sysfs, procfs and /dev for sensors and configuration; NULL = "/" (tests use a
    /// fake tree).
    pub sys_root: *const c_char,
}

/// A device configuration change (see `nh_configure`). Fill with `nh_config_plan_init`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nh_config_plan {
    pub struct_size: u32,
    /// An `nh_power_mode` for the NPU, or -1 to leave it.
    pub npu_power_mode: i32,
    /// amdgpu `power_dpm_force_performance_level` value ("auto", "low", "high",
    /// "profile_peak", ...), or NULL to leave it.
    pub gpu_performance_level: *const c_char,
    /// cpufreq `energy_performance_preference` value ("performance", "balance_performance",
    /// "balance_power", "power", ...), or NULL to leave it.
    pub cpu_energy_preference: *const c_char,
}

/// Faults a simulated device can be told to have (`nh_device_inject_fault`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum nh_fault_kind {
    /// The Nth op from now (param = N >= 1) fails.
    NH_FAULT_FAIL_NTH = 0,
    /// Each op fails with probability param (0..1), from a generator seeded with seed.
    NH_FAULT_FAIL_FRACTION = 1,
    /// The device is lost now: every later op fails.
    NH_FAULT_DEVICE_LOST = 2,
    /// The device is lost after param more ops.
    NH_FAULT_LOSE_AFTER = 3,
}

/// A view into a buffer. Shape and strides in elements, offset in bytes; all-zero strides
/// mean dense row-major. A zero `buffer` marks an absent optional input.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct nh_tensor {
    pub buffer: nh_buffer,
    /// An `nh_dtype` value.
    pub dtype: u32,
    /// 1..=4.
    pub rank: u32,
    pub shape: [u64; 4],
    pub strides: [u64; 4],
    pub offset: u64,
}

/// One op. Fill with `nh_op_desc_init`, then set the fields the op uses.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nh_op_desc {
    /// sizeof(nh_op_desc).
    pub struct_size: u32,
    /// An `nh_op_kind` value.
    pub kind: u32,
    /// Positional inputs (see `nh_op_kind`); unused ones have a zero buffer.
    pub inputs: [nh_tensor; 4],
    pub output: nh_tensor,
    /// NH_FLAG_* bits.
    pub flags: u32,
    /// An `nh_activation` value (matmul).
    pub activation: u32,
    /// matmul: C = alpha*op(A)op(B) + beta*C; scale: out = alpha*a. Default 1 and 0.
    pub alpha: f32,
    pub beta: f32,
    /// rmsnorm/layernorm epsilon. Default 1e-5.
    pub eps: f32,
    /// rope frequency base. Default 10000.
    pub rope_theta: f32,
    /// rope: absolute position of the first row.
    pub rope_position: u32,
    /// attention: valid keys (0 = all); the causal mask aligns queries to the last ones.
    pub kv_len: u32,
    /// attention score scale; 0 = 1/sqrt(head_dim).
    pub attn_scale: f32,
    pub reserved0: u32,
    /// Workload tags "key=value,key=value" for the policy (e.g. "phase=decode"); may be NULL.
    /// At most 64 tags in 4096 bytes.
    pub tags: *const c_char,
}

/// What a device is. Strings are NUL-terminated and truncated to fit.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nh_device_info {
    pub struct_size: u32,
    /// An `nh_device_kind` value.
    pub kind: u32,
    /// 1 if usable; otherwise `unavailable_reason` says why.
    pub available: u32,
    /// Bit (1 << nh_dtype) per element type the device computes with: at least one op
    /// other than copy takes it there (as its type, or as a matmul's quantized weight).
    /// Copy is not counted: the CPU converts between all types, NH_I8 and NH_I32 included,
    /// which no other op takes.
    pub dtypes: u32,
    /// Bit (1 << nh_op_kind) per supported op.
    pub ops: u32,
    pub max_in_flight: u32,
    /// 1 if host and device share memory (no copies).
    pub unified_memory: u32,
    pub reserved0: u32,
    pub memory_bytes: u64,
    pub peak_gflops: f64,
    pub bandwidth_gbs: f64,
    pub name: [c_char; 128],
    pub driver: [c_char; 128],
    pub unavailable_reason: [c_char; 256],
}

/// What happened to an op, once its event completed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nh_event_info {
    pub struct_size: u32,
    /// Status of the op: NH_OK, an error, or NH_ERR_TIMEOUT while it still runs.
    pub status: crate::ffi::nh_status,
    /// Device index that ran it (the last part's for a split op); -1 if none.
    pub device: i32,
    pub fallbacks: u32,
    pub parts: u32,
    pub reserved0: u32,
    /// Bit (1 << device index) per device that ran a part.
    pub device_mask: u64,
    /// Submission to start, start to end, and the device's own measured time: for a GPU
    /// op its kernel's timestamps, or, on a graph submission not timed op by op (GPU
    /// timestamps per op are sampled), its share of the GPU's busy time for the submission
    /// in proportion to the scheduler's estimates, so a graph's sum is the GPU's time.
    pub queue_ns: u64,
    pub run_ns: u64,
    pub device_ns: u64,
}

/// Counters of one device.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nh_device_stats {
    pub struct_size: u32,
    pub degraded: u32,
    pub thermally_excluded: u32,
    pub reserved0: u32,
    pub ops_run: u64,
    pub busy_ns: u64,
    pub bytes_moved: u64,
    pub failures: u64,
    /// Ops that failed on this device and ran on another.
    pub fallbacks: u64,
    pub queue_depth: u64,
}

/// Runtime-wide counters.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nh_runtime_stats {
    pub struct_size: u32,
    pub reserved0: u32,
    pub ops_submitted: u64,
    pub ops_completed: u64,
    pub ops_failed: u64,
    pub fallbacks: u64,
    pub split_ops: u64,
    pub inline_ops: u64,
    pub buffers_live: u64,
}

/// Host memory pool counters.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nh_pool_stats {
    pub struct_size: u32,
    pub reserved0: u32,
    pub bytes_in_use: u64,
    pub bytes_cached: u64,
    pub allocations: u64,
    pub reuses: u64,
    pub peak_bytes: u64,
}

/// Live readings of a device; NaN where the device has no such sensor.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nh_device_readings {
    pub struct_size: u32,
    pub temperature_c: f32,
    pub power_w: f32,
    pub clock_mhz: f32,
}

impl super::args::Sized32 for nh_runtime_desc {
    const NAME: &'static str = "nh_runtime_desc";
}
impl super::args::Sized32 for nh_config_plan {
    const NAME: &'static str = "nh_config_plan";
}
impl super::args::Sized32 for nh_op_desc {
    const NAME: &'static str = "nh_op_desc";
}
impl super::args::Sized32 for nh_device_info {
    const NAME: &'static str = "nh_device_info";
}
impl super::args::Sized32 for nh_event_info {
    const NAME: &'static str = "nh_event_info";
}
impl super::args::Sized32 for nh_device_stats {
    const NAME: &'static str = "nh_device_stats";
}
impl super::args::Sized32 for nh_runtime_stats {
    const NAME: &'static str = "nh_runtime_stats";
}
impl super::args::Sized32 for nh_pool_stats {
    const NAME: &'static str = "nh_pool_stats";
}
impl super::args::Sized32 for nh_device_readings {
    const NAME: &'static str = "nh_device_readings";
}

// Layouts on 64-bit targets, pinned.
#[cfg(target_pointer_width = "64")]
mod layout {
    use super::*;
    assert_eq_size!(nh_runtime, u64);
    assert_eq_size!(nh_buffer, u64);
    assert_eq_size!(nh_event, u64);
    assert_eq_size!(nh_graph, u64);
    assert_eq_size!(nh_gguf, u64);
    const_assert_eq!(size_of::<nh_runtime_desc>(), 72);
    const_assert_eq!(offset_of!(nh_runtime_desc, sys_root), 64);
    const_assert_eq!(size_of::<nh_config_plan>(), 24);
    const_assert_eq!(offset_of!(nh_runtime_desc, policy), 16);
    const_assert_eq!(offset_of!(nh_runtime_desc, perf_cache_dir), 48);
    const_assert_eq!(size_of::<nh_tensor>(), 88);
    const_assert_eq!(offset_of!(nh_tensor, shape), 16);
    const_assert_eq!(offset_of!(nh_tensor, offset), 80);
    const_assert_eq!(size_of::<nh_op_desc>(), 496);
    const_assert_eq!(offset_of!(nh_op_desc, output), 360);
    const_assert_eq!(offset_of!(nh_op_desc, tags), 488);
    const_assert_eq!(size_of::<nh_device_info>(), 568);
    const_assert_eq!(offset_of!(nh_device_info, name), 56);
    const_assert_eq!(size_of::<nh_event_info>(), 56);
    const_assert_eq!(size_of::<nh_device_stats>(), 64);
    const_assert_eq!(size_of::<nh_runtime_stats>(), 64);
    const_assert_eq!(size_of::<nh_pool_stats>(), 48);
    const_assert_eq!(size_of::<nh_device_readings>(), 16);
    // The C dtype values are DType's discriminants.
    const_assert_eq!(nh_dtype::NH_Q8_0 as u32, crate::op::DType::Q8_0 as u32);
    const_assert_eq!(nh_dtype::NH_Q4_0 as u32, crate::op::DType::Q4_0 as u32);
    const_assert_eq!(nh_dtype::NH_Q4_1 as u32, crate::op::DType::Q4_1 as u32);
    const_assert_eq!(nh_dtype::NH_Q4_G128 as u32, crate::op::DType::Q4G128 as u32);
}
