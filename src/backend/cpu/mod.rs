//! CPU backend: every op on the host, parallel on a rayon pool of its own.

mod half_weights;
mod halfconv;
mod host;
mod info;
mod kernels;
mod quant;
#[cfg(test)]
mod reference;
mod scratch;
mod seat;
pub(crate) mod simd;
mod small_attn;
mod small_m;
#[cfg(test)]
mod test_data;
#[cfg(test)]
mod tests;
mod warm;
mod weight_cache;

use super::{Backend, DeviceInfo, ExecReport, OpMemory};
use crate::error::{Error, Result};
use crate::op::{OpDesc, OpKind};
use host::HostView;
use kernels::attention::AttentionParams;
use kernels::elementwise::{Binary, Unary};
use kernels::matmul::MatmulParams;
use kernels::rope::RopeParams;
use kernels::{attention, convert, elementwise, matmul, norm, rope, softmax};
pub use seat::Seat;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use weight_cache::WeightCache;

/// Runs any op on the host on the current rayon pool (callers use `pool.install`). Writes only
/// the output view. The op must have passed `op::validate::validate`. Every other backend may
/// use it as its reference or for the math of a simulated device.
pub fn execute_on_host(op: &OpDesc, mem: &OpMemory) -> Result<()> {
    execute_with_weights(op, mem, None)
}

/// An f32 matmul as a bf16-only device computes it (`OpDesc::may_round_to_bf16`): A and B
/// rounded to bf16, products summed in f32, f32 output. Simulated NPUs use it, so results
/// carry the hardware's rounding, not better.
pub fn execute_with_bf16_operands(op: &OpDesc, mem: &OpMemory) -> Result<()> {
    if !op.may_round_to_bf16() {
        return Err(Error::Internal(format!("{}: not an f32 matmul allowed bf16", op.kind)));
    }
    // A dense f32 copy of input `i`, every element rounded to bf16.
    let rounded = |i: usize| -> Result<(Vec<f32>, HostView)> {
        let src = HostView::new(&op.inputs[i].expect("validated matmul operand"), mem)?;
        let mut values = vec![0f32; src.dims().iter().product()];
        let dense = HostView {
            ptr: host::SendPtr(values.as_mut_ptr() as *mut u8),
            strides: crate::op::dense_strides(src.dims()),
            ..src
        };
        convert::copy(&dense, &src);
        values.iter_mut().for_each(|v| *v = half::bf16::from_f32(*v).to_f32());
        Ok((values, dense))
    };
    let (_a_values, a) = rounded(0)?;
    let (_b_values, b) = rounded(1)?;
    let bias = op.input(2).map(|v| HostView::new(v, mem)).transpose()?;
    let p = &op.params;
    let params = MatmulParams {
        trans_a: p.trans_a,
        trans_b: p.trans_b,
        alpha: p.alpha,
        beta: p.beta,
        activation: p.activation,
    };
    matmul::matmul(&HostView::new(&op.output, mem)?, &a, &b, bias.as_ref(), params, None);
    Ok(())
}

/// `execute_on_host`, reusing constant matmul operands packed in `weights`.
fn execute_with_weights(op: &OpDesc, mem: &OpMemory, weights: Option<&WeightCache>) -> Result<()> {
    let view =
        |i: usize| -> Result<Option<HostView>> { op.input(i).map(|v| HostView::new(v, mem)).transpose() };
    let need = |i: usize| -> Result<HostView> {
        view(i)?.ok_or_else(|| Error::invalid(format!("{}: input {i} is missing", op.kind)))
    };
    let out = HostView::new(&op.output, mem)?;
    // Elementwise ops may run in place only when an input is exactly the output view.
    let is_out = |i: usize| op.input(i) == Some(&op.output);
    let p = &op.params;
    match op.kind {
        OpKind::Matmul => {
            let (a, b, bias) = (need(0)?, need(1)?, view(2)?);
            let params = MatmulParams {
                trans_a: p.trans_a,
                trans_b: p.trans_b,
                alpha: p.alpha,
                beta: p.beta,
                activation: p.activation,
            };
            if b.dtype.is_quantized() {
                quant::matmul(&out, &a, &b, bias.as_ref(), &params, p.allow_q8_activations);
                return Ok(());
            }
            // A few rows times an f16 / bf16 weight [n, k]: streamed at half the bytes of its
            // f32 form, ahead of the weight cache (whose packed panels are f32).
            if half_weights::try_matmul(&out, &a, &b, bias.as_ref(), &params) {
                return Ok(());
            }
            let packed = weights.and_then(|w| w.packed_b(&op.inputs[1]?, mem, &out, &a, &b, &params));
            // A few rows times a [out, in] weight not packed yet: dot products (small_m.rs).
            let small = packed.is_none()
                && small_m::try_matmul(
                    &out,
                    &a,
                    &b,
                    bias.as_ref(),
                    p.trans_a,
                    p.trans_b,
                    p.alpha,
                    p.beta,
                    p.activation,
                );
            if !small {
                matmul::matmul(&out, &a, &b, bias.as_ref(), params, packed.as_deref());
            }
        }
        OpKind::Add | OpKind::Mul => {
            let kind = if op.kind == OpKind::Add { Binary::Add } else { Binary::Mul };
            elementwise::binary(kind, &out, &need(0)?, &need(1)?, is_out(0), is_out(1));
        }
        OpKind::Scale | OpKind::Silu | OpKind::Gelu => {
            let kind = match op.kind {
                OpKind::Scale => Unary::Scale(p.alpha),
                OpKind::Silu => Unary::Silu,
                _ if p.gelu_tanh => Unary::GeluTanh,
                _ => Unary::Gelu,
            };
            elementwise::unary(kind, &out, &need(0)?, is_out(0));
        }
        OpKind::Softmax => softmax::softmax(&out, &need(0)?, is_out(0)),
        OpKind::RmsNorm => norm::rmsnorm(&out, &need(0)?, view(1)?.as_ref(), p.eps, is_out(0)),
        OpKind::LayerNorm => {
            norm::layernorm(&out, &need(0)?, view(1)?.as_ref(), view(2)?.as_ref(), p.eps, is_out(0))
        }
        OpKind::Rope => rope::rope(
            &out,
            &need(0)?,
            &RopeParams { theta: p.rope_theta, position: p.rope_position, interleaved: p.rope_interleaved },
            is_out(0),
        ),
        OpKind::Attention => {
            let (q, k, v, mask) = (need(0)?, need(1)?, need(2)?, view(3)?);
            // Short key sequences: row by row, no sgemm set-up (small_attn.rs).
            if !small_attn::try_attention(
                &out,
                &q,
                &k,
                &v,
                mask.as_ref(),
                p.causal,
                p.attn_scale,
                p.kv_len as usize,
            ) {
                attention::attention(
                    &out,
                    &q,
                    &k,
                    &v,
                    mask.as_ref(),
                    &AttentionParams { causal: p.causal, scale: p.attn_scale, kv_len: p.kv_len as usize },
                );
            }
        }
        OpKind::Copy => convert::copy(&out, &need(0)?),
    }
    Ok(())
}

/// Ops small enough that every kernel runs them on the calling thread (below the kernels'
/// parallel thresholds), so they need no trip through the pool.
fn runs_serially(op: &OpDesc) -> bool {
    let work = match op.kind {
        OpKind::Matmul => op.flops() as usize / 2,
        OpKind::Attention => op.flops() as usize / 4,
        _ => op.output.numel(),
    };
    work <= kernels::iter::TASK_ELEMS
}

/// Most CPU threads a runtime may ask for (a caller's `threads` is untrusted: UINT32_MAX used
/// to spend 36 s spawning threads).
pub const MAX_THREADS: usize = 1024;

/// CPU backend behaviours that trade memory or power for speed (`nh_runtime_desc.cpu_flags`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuOptions {
    /// Keep packed copies of reused matmul weights (`weight_cache.rs`).
    pub weight_cache: bool,
    /// Keep the pool's threads awake between ops (`warm.rs`).
    pub keep_warm: bool,
}

impl Default for CpuOptions {
    fn default() -> Self {
        CpuOptions { weight_cache: true, keep_warm: true }
    }
}

/// The host CPU as a device, with its own rayon pool.
pub struct CpuBackend {
    info: DeviceInfo,
    pool: Arc<rayon::ThreadPool>,
    /// None with `CpuOptions::weight_cache` off.
    weights: Option<WeightCache>,
    warm: Arc<warm::KeepWarm>,
    /// False with one thread or `NH_CPU_NO_KEEP_WARM`: the window stays 0 whatever the
    /// policy says.
    keep_warm_allowed: bool,
    /// Held for reading while an op runs in the pool, for writing while a seat is taken
    /// (`seat.rs`: the seat must not land on a thread inside an op) and while another device's
    /// calibration times its runs (`pause_host_work`).
    gate: parking_lot::RwLock<()>,
    /// One seat per pool: a second would leave no thread for ops sent from outside.
    seated: AtomicBool,
}

impl CpuBackend {
    pub fn new(threads: usize) -> Result<CpuBackend> {
        CpuBackend::with_options(threads, CpuOptions::default())
    }

    pub fn with_options(threads: usize, options: CpuOptions) -> Result<CpuBackend> {
        if threads > MAX_THREADS {
            return Err(Error::invalid(format!("threads = {threads}: the limit is {MAX_THREADS}")));
        }
        let threads =
            if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("nh-cpu-{i}"))
            .build()
            .map_err(|e| Error::DeviceUnavailable(format!("cpu thread pool: {e}")))?;
        let allowed = threads > 1 && options.keep_warm;
        Ok(CpuBackend {
            info: info::cpu_info(threads),
            pool: Arc::new(pool),
            weights: options.weight_cache.then(|| WeightCache::new(weight_cache::BUDGET_BYTES)),
            warm: warm::KeepWarm::new(if allowed { warm::WINDOW } else { std::time::Duration::ZERO }),
            keep_warm_allowed: allowed,
            gate: parking_lot::RwLock::new(()),
            seated: AtomicBool::new(false),
        })
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// How long the pool's threads stay awake after an op now.
    pub fn keep_warm(&self) -> std::time::Duration {
        self.warm.window()
    }
}

impl Backend for CpuBackend {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Every op validation accepts: the dtype report leaves out the integer types, which only
    /// copy takes (it converts between every pair of types validation allows).
    fn supports(&self, op: &OpDesc) -> bool {
        let info = &self.info;
        op.kind == OpKind::Copy
            || (info.supports_kind(op.kind) && op.views().all(|v| info.dtypes & v.dtype.bit() != 0))
    }

    fn execute(&self, op: &OpDesc, mem: &OpMemory) -> Result<ExecReport> {
        if runs_serially(op) {
            // Waking a pool thread costs more than the op itself.
            execute_with_weights(op, mem, self.weights.as_ref())?;
        } else {
            let _gate = self.gate.read();
            // Runs in place when called on the worker seated in the pool (`host_seat`).
            self.pool.install(|| {
                self.warm.touch(&self.pool);
                let done = execute_with_weights(op, mem, self.weights.as_ref());
                self.warm.touch(&self.pool);
                done
            })?;
        }
        Ok(ExecReport::default())
    }

    fn set_keep_warm(&self, window: Option<std::time::Duration>) {
        if self.keep_warm_allowed {
            self.warm.set_window(window.unwrap_or(warm::WINDOW));
        }
    }

    fn pause_host_work(&self) -> Option<super::HostWorkPaused<'_>> {
        Some(self.gate.write())
    }

    fn host_seat(&self) -> Option<Seat> {
        // A worker inside a one-thread pool would leave no pool thread for ops that other
        // threads (the submitter's inline path) send to it: they would wait forever.
        if self.threads() < 2 || self.seated.swap(true, Ordering::AcqRel) {
            return None;
        }
        // No op may run in the pool while the seat is taken, and the keep-warm loops (which
        // run whatever they find) must have ended: then every pool thread is idle.
        let _no_ops = self.gate.write();
        self.warm.wait_asleep();
        Some(Seat::take_idle(&self.pool))
    }
}
