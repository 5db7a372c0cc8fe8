//! The simulated NPU's configuration and performance model: a roofline (compute per dtype,
//! memory bandwidth) per power mode, split over parallel units, plus launch latency.

use crate::device::PowerMode;
use crate::op::{DType, OpDesc, OpKind};
use std::time::Duration;

/// Clock and active power of one power mode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModeProfile {
    pub clock_mhz: f32,
    /// Power of the whole array with every unit busy, in watts.
    pub active_power_w: f32,
}

/// Everything the simulated NPU models. `Default` is Phoenix-like (Ryzen 7040, XDNA1, 4x5
/// AIE-ML tiles); the numbers are a plausible model, not measurements of hardware.
#[derive(Clone, Debug)]
pub struct SimNpuConfig {
    pub name: String,
    /// Sustained throughput of the whole array in GFLOP/s (GOP/s for i8) per dtype at
    /// `reference_clock_mhz`. A dtype not listed is not supported.
    pub peak_gflops: Vec<(DType, f64)>,
    /// Quantized weight types a matmul's b may have (the activations set the compute dtype);
    /// their fewer bytes shorten memory-bound ops in the roofline.
    pub weight_types: Vec<DType>,
    pub reference_clock_mhz: f32,
    /// Indexed by `PowerMode as usize`.
    pub modes: [ModeProfile; 5],
    pub initial_mode: PowerMode,
    /// Host memory bandwidth the NPU reaches, for memory-bound ops.
    pub bandwidth_gbs: f64,
    /// How fast the host rounds f32 operands to bf16 for a device without f32 compute
    /// (`OpParams::allow_bf16`), in GB/s of f32 read: one core's conversion loop.
    pub convert_gbs: f64,
    /// Fixed cost of one launch (command submission, instruction stream, sync).
    pub launch_latency: Duration,
    /// Column partitions that run ops at once; each has `1/units` of the array's throughput,
    /// so the device reaches its peak with `units` ops in flight.
    pub units: usize,
    pub idle_power_w: f32,
    pub ambient_c: f32,
    /// Steady-state temperature rise per watt.
    pub thermal_resistance_k_per_w: f32,
    /// Time constant of the first-order thermal model (heat capacity x resistance).
    pub thermal_time_constant: Duration,
    /// Firmware protection: above this the clock (and active power) halves until the die has
    /// cooled `throttle_hysteresis_c` below it.
    pub throttle_c: f32,
    pub throttle_hysteresis_c: f32,
    /// `OpKind::bit` set of ops it accepts (results are computed on the host).
    pub ops: u32,
    /// (input, output) dtype pairs it produces; empty: any dtype in `peak_gflops`, in and out.
    pub outputs: Vec<(DType, DType)>,
    pub memory_bytes: u64,
    /// Time runs on a virtual clock (tests: minutes in milliseconds) instead of the wall clock
    /// (ops then take their modelled time for real).
    pub virtual_time: bool,
    /// Faults in force from the start (more can be injected with `SimNpu::inject`).
    pub faults: Vec<super::Fault>,
}

impl Default for SimNpuConfig {
    fn default() -> Self {
        let mode = |clock_mhz, active_power_w| ModeProfile { clock_mhz, active_power_w };
        SimNpuConfig {
            name: "Simulated NPU (model, not hardware)".into(),
            // bf16 is native on AIE-ML; f16 is converted to bf16 on the way in; f32 is
            // emulated with several bf16 passes.
            // No i8 entry: matmul takes no i8 operands, so listing it would claim an i8
            // capability nothing can use.
            peak_gflops: vec![(DType::BF16, 4000.0), (DType::F16, 3600.0), (DType::F32, 1000.0)],
            // AWQ uint4 group 128 with bf16 activations (W4ABF16), what Ryzen AI's NPU LLMs run.
            weight_types: vec![DType::Q4G128],
            reference_clock_mhz: 1810.0,
            modes: [
                mode(1300.0, 3.5), // default: the driver's own DPM choice
                mode(400.0, 1.2),  // powersaver: lowest DPM level
                mode(1000.0, 2.6), // balanced
                mode(1810.0, 5.5), // performance: highest DPM level, clock gating on
                mode(1900.0, 7.0), // turbo: clock gating off: a little faster, much hotter
            ],
            initial_mode: PowerMode::Default,
            bandwidth_gbs: 60.0,
            convert_gbs: 10.0,
            launch_latency: Duration::from_micros(80),
            units: 3,
            idle_power_w: 0.3,
            // The NPU shares its die with the CPU and GPU, which in a laptop running the rest
            // of a model hold it near 50 C; the NPU's own watts add 8.5 K each. Sustained load
            // then reaches what the built-in policies watch for (balanced ~72 C: 70 C in
            // continuous_audio; default ~80 C; performance ~97 C: 85 C and 95 C in default and
            // llm_inference), so their thermal rules fire in tests. (35 C and 9 K/W topped out
            // at 58 C balanced and 84.5 C performance: no built-in rule could ever fire.)
            ambient_c: 50.0,
            thermal_resistance_k_per_w: 8.5,
            thermal_time_constant: Duration::from_secs(30),
            // Tjmax of Ryzen 7040 / AI 300 mobile parts: the firmware steps in only after the
            // policies' own limits (95 C and below) had their chance. Sustained turbo passes it.
            throttle_c: 100.0,
            throttle_hysteresis_c: 5.0,
            ops: OpKind::ALL.iter().fold(0, |acc, k| acc | k.bit()),
            outputs: Vec::new(),
            memory_bytes: 4 << 30,
            virtual_time: false,
            faults: Vec::new(),
        }
    }
}

impl SimNpuConfig {
    pub fn mode(&self, m: PowerMode) -> ModeProfile {
        self.modes[m as usize]
    }

    pub fn peak(&self, dtype: DType) -> Option<f64> {
        self.peak_gflops.iter().find(|(d, _)| *d == dtype).map(|(_, g)| *g)
    }

    /// The dtypes it reports and takes: those of its peaks and weight types that some op it
    /// runs accepts. A profile may list what the hardware does (XDNA's i8 peak) before any op
    /// takes that type; the report says only what runs.
    pub fn dtype_bits(&self) -> u32 {
        let compute = self.peak_gflops.iter().fold(0, |acc, (d, _)| acc | d.bit());
        let modelled = self.weight_types.iter().fold(compute, |acc, d| acc | d.bit());
        modelled & crate::op::validate::computable_dtypes(self.ops)
    }

    /// Whether `op` is an f32 matmul this device takes by rounding its operands to bf16: it
    /// has no f32 compute, has bf16, and the caller allowed it.
    pub fn rounds_to_bf16(&self, op: &OpDesc) -> bool {
        op.may_round_to_bf16() && self.peak(DType::F32).is_none() && self.peak(DType::BF16).is_some()
    }

    /// Array throughput in GFLOP/s for `dtype` at `mode`, before throttling.
    pub fn throughput(&self, dtype: DType, mode: PowerMode) -> Option<f64> {
        let scale = self.mode(mode).clock_mhz as f64 / self.reference_clock_mhz as f64;
        self.peak(dtype).map(|g| g * scale)
    }

    /// Time one unit takes for `op`: launch latency plus the roofline of its compute and its
    /// memory traffic, at `speed` (1 = full clock, 0.5 = throttled).
    pub fn op_duration(&self, op: &OpDesc, mode: PowerMode, speed: f64) -> Duration {
        if self.rounds_to_bf16(op) {
            // The host converts A and B, then the array runs the bf16 matmul.
            let f32_bytes: usize = op.inputs[..2].iter().flatten().map(|v| v.numel() * 4).sum();
            let convert = Duration::from_secs_f64(f32_bytes as f64 / (self.convert_gbs * 1e9));
            return convert + self.op_duration(&op.with_operands_as(DType::BF16), mode, speed);
        }
        let units = self.units.max(1) as f64;
        let gflops = self.throughput(op.dtype(), mode).unwrap_or(1.0) * speed / units;
        let bandwidth = self.bandwidth_gbs * speed / units;
        let compute_s = op.flops() / (gflops * 1e9);
        let memory_s = op.dims().bytes as f64 / (bandwidth * 1e9);
        self.launch_latency + Duration::from_secs_f64(compute_s.max(memory_s))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::op::TensorView;

    pub(crate) fn matmul(n: usize, dtype: DType) -> OpDesc {
        let a = TensorView::contiguous(1, dtype, &[n, n], 0);
        let b = TensorView::contiguous(2, dtype, &[n, n], 0);
        let c = TensorView::contiguous(3, dtype, &[n, n], 0);
        OpDesc::new(OpKind::Matmul, &[a, b], c)
    }

    #[test]
    fn power_modes_order_speed_and_power() {
        let cfg = SimNpuConfig::default();
        let order = [PowerMode::Powersaver, PowerMode::Balanced, PowerMode::Performance, PowerMode::Turbo];
        let op = matmul(1024, DType::BF16);
        let times: Vec<Duration> = order.iter().map(|&m| cfg.op_duration(&op, m, 1.0)).collect();
        assert!(times.windows(2).all(|w| w[0] > w[1]), "{times:?}");
        let power: Vec<f32> = order.iter().map(|&m| cfg.mode(m).active_power_w).collect();
        assert!(power.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn matmul_time_follows_the_dtype_roofline() {
        let cfg = SimNpuConfig::default();
        let op = matmul(2048, DType::BF16);
        let t = cfg.op_duration(&op, PowerMode::Performance, 1.0) - cfg.launch_latency;
        // 2*2048^3 flops on one of 3 units at 4000 GFLOP/s: 12.9 ms.
        let expect = 2.0 * 2048f64.powi(3) / (4000e9 / 3.0);
        assert!((t.as_secs_f64() / expect - 1.0).abs() < 1e-6, "{t:?}");
        let f32_t = cfg.op_duration(&matmul(2048, DType::F32), PowerMode::Performance, 1.0);
        assert!(f32_t > t * 3, "f32 is emulated and slower");
        let throttled = cfg.op_duration(&op, PowerMode::Performance, 0.5) - cfg.launch_latency;
        assert!((throttled.as_secs_f64() / (2.0 * expect) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn tiny_ops_cost_the_launch_latency() {
        let cfg = SimNpuConfig::default();
        let t = cfg.op_duration(&matmul(4, DType::BF16), PowerMode::Performance, 1.0);
        assert!(t >= cfg.launch_latency && t < cfg.launch_latency + Duration::from_micros(1));
    }
}
