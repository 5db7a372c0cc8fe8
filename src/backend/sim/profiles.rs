//! Simulated-NPU profiles per NPU generation, holding only what that hardware can run, so
//! policies are tested against it: matmul only, bf16 or i8 inputs (bf16 -> f32 or bf16,
//! i8 -> i32 or i8, as mlir-aie's GEMM designs produce), one run at a time (a hardware context
//! runs its commands in order; our kernels use the whole array). Peaks are the measured GEMM
//! peaks of arXiv 2512.13282 at the top clock; clocks span the driver's DPM range. Power and
//! thermal numbers remain a model. `SimNpuConfig::default()` stays the permissive model the
//! scheduler tests use (every op, every float dtype).

use super::model::{ModeProfile, SimNpuConfig};
use crate::device::PowerMode;
use crate::op::{DType, OpKind};

/// (input, output) dtype pairs of the GEMM designs.
fn gemm_outputs() -> Vec<(DType, DType)> {
    vec![
        (DType::BF16, DType::F32),
        (DType::BF16, DType::BF16),
        (DType::I8, DType::I32),
        (DType::I8, DType::I8),
    ]
}

fn mode(clock_mhz: f32, active_power_w: f32) -> ModeProfile {
    ModeProfile { clock_mhz, active_power_w }
}

impl SimNpuConfig {
    /// XDNA1 (Phoenix, Hawk Point; PCI 1022:1502; 4 columns): ~3.1 TOPS bf16, ~6.8 TOPS i8
    /// measured at 1600 MHz; 400-1600 MHz.
    pub fn xdna1() -> SimNpuConfig {
        SimNpuConfig {
            name: "Simulated NPU XDNA1 (model, not hardware)".into(),
            peak_gflops: vec![(DType::I8, 6760.0), (DType::BF16, 3140.0)],
            outputs: gemm_outputs(),
            reference_clock_mhz: 1600.0,
            modes: [
                mode(1300.0, 3.5), // default: the driver's own DPM choice
                mode(400.0, 1.2),  // powersaver: DPM level 0
                mode(1000.0, 2.6), // balanced
                mode(1600.0, 5.0), // performance: top DPM level, clock gating on
                mode(1600.0, 6.0), // turbo: top level with clock gating off: hotter, not faster
            ],
            units: 1,
            ops: OpKind::Matmul.bit(),
            ..SimNpuConfig::default()
        }
    }

    /// XDNA2 (Strix, Krackan; PCI 1022:17f0; 8 columns): ~14.7 TOPS bf16, ~38 TOPS i8
    /// measured; H clock up to 1800 MHz under load, about 400 MHz idle.
    pub fn xdna2() -> SimNpuConfig {
        SimNpuConfig {
            name: "Simulated NPU XDNA2 (model, not hardware)".into(),
            peak_gflops: vec![(DType::I8, 38050.0), (DType::BF16, 14710.0)],
            reference_clock_mhz: 1800.0,
            modes: [
                mode(1267.0, 4.5),
                mode(400.0, 1.5),
                mode(1000.0, 3.2),
                mode(1800.0, 6.5),
                mode(1800.0, 8.0),
            ],
            bandwidth_gbs: 90.0,
            ..SimNpuConfig::xdna1()
        }
    }

    /// A profile by name: `xdna1`, `xdna2` or `permissive` (the default model).
    pub fn profile(name: &str) -> Option<SimNpuConfig> {
        match name {
            "xdna1" => Some(SimNpuConfig::xdna1()),
            "xdna2" => Some(SimNpuConfig::xdna2()),
            "permissive" => Some(SimNpuConfig::default()),
            _ => None,
        }
    }

    /// Whether the modelled hardware can run an op of this kind with these dtypes.
    pub fn accepts(&self, kind: OpKind, input: DType, output: DType) -> bool {
        if self.ops & kind.bit() == 0 || self.peak(input).is_none() || self.dtype_bits() & input.bit() == 0 {
            return false;
        }
        if self.outputs.is_empty() {
            return self.peak(output).is_some();
        }
        self.outputs.contains(&(input, output))
    }
}

/// The clock range of a profile, for checks and messages.
pub fn clock_range(cfg: &SimNpuConfig) -> (f32, f32) {
    let clocks = PowerMode::ALL.map(|m| cfg.mode(m).clock_mhz);
    (clocks.iter().copied().fold(f32::MAX, f32::min), clocks.iter().copied().fold(0.0, f32::max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::sim::SimNpu;
    use crate::backend::Backend;
    use crate::op::{OpDesc, TensorView};

    fn op(kind: OpKind, input: DType, output: DType) -> OpDesc {
        let a = TensorView::contiguous(1, input, &[256, 256], 0);
        let c = TensorView::contiguous(3, output, &[256, 256], 0);
        OpDesc::new(kind, &[a, a], c)
    }

    #[test]
    fn xdna1_takes_only_what_the_hardware_runs() {
        let npu = SimNpu::new(SimNpuConfig::xdna1());
        assert!(npu.supports(&op(OpKind::Matmul, DType::BF16, DType::F32)));
        assert!(npu.supports(&op(OpKind::Matmul, DType::BF16, DType::BF16)));
        assert!(!npu.supports(&op(OpKind::Matmul, DType::F32, DType::F32)), "no f32 GEMM on the NPU");
        assert!(!npu.supports(&op(OpKind::Matmul, DType::F16, DType::F32)), "f16 is not bf16");
        assert!(!npu.supports(&op(OpKind::Add, DType::BF16, DType::BF16)), "matmul only");
        assert!(!npu.supports(&op(OpKind::Softmax, DType::BF16, DType::BF16)));
        let info = npu.info();
        assert_eq!(info.max_in_flight, 1, "one run at a time");
        assert!(info.name.contains("model, not hardware"));
        assert_eq!(clock_range(&SimNpuConfig::xdna1()), (400.0, 1600.0));
    }

    #[test]
    fn published_peaks_at_the_top_clock() {
        let x1 = SimNpuConfig::xdna1();
        let x2 = SimNpuConfig::xdna2();
        assert_eq!(x1.throughput(DType::BF16, PowerMode::Performance), Some(3140.0));
        assert_eq!(x2.throughput(DType::BF16, PowerMode::Performance), Some(14710.0));
        assert!(x1.throughput(DType::BF16, PowerMode::Powersaver).unwrap() < 800.0);
        // A 2048^3 bf16 GEMM at ~3.1 TOPS: about 5.5 ms on XDNA1, about 1.2 ms on XDNA2.
        let gemm = super::super::model::tests::matmul(2048, DType::BF16);
        let t1 = x1.op_duration(&gemm, PowerMode::Performance, 1.0);
        let t2 = x2.op_duration(&gemm, PowerMode::Performance, 1.0);
        assert!((t1.as_secs_f64() * 1e3 - 5.5).abs() < 0.2, "{t1:?}");
        assert!(t2 < t1 / 4, "{t2:?}");
        assert!(SimNpuConfig::profile("xdna3").is_none());
    }

    /// An f32 matmul whose caller allows bf16 runs on XDNA1 with its operands rounded: the
    /// result is that of the rounded operands, and the modelled time adds the conversion.
    #[test]
    fn f32_matmuls_allowed_bf16_run_rounded() {
        use crate::memory::{Buffer, HostPool};
        use std::sync::Arc;
        let npu = SimNpu::new(SimNpuConfig { virtual_time: true, ..SimNpuConfig::xdna1() });
        let (m, k, n) = (3, 5, 4);
        let views = [
            TensorView::contiguous(1, DType::F32, &[m, k], 0),
            TensorView::contiguous(2, DType::F32, &[k, n], 0),
        ];
        let c = TensorView::contiguous(3, DType::F32, &[m, n], 0);
        let strict = OpDesc::new(OpKind::Matmul, &views, c);
        assert!(!npu.supports(&strict), "f32 only when the caller allows rounding");
        let op = strict.clone().with_params(crate::op::OpParams { allow_bf16: true, ..Default::default() });
        assert!(npu.supports(&op));
        let cfg = npu.config();
        let bf16_time = cfg.op_duration(&op.with_operands_as(DType::BF16), PowerMode::Performance, 1.0);
        assert!(cfg.op_duration(&op, PowerMode::Performance, 1.0) > bf16_time, "conversion is modelled");

        let pool = HostPool::new(0);
        let buffer = |id: u64, values: &[f32]| {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let b = Buffer::pooled(id, pool.alloc(bytes.len()).unwrap(), bytes.len());
            b.write(0, &bytes).unwrap();
            Arc::new(b)
        };
        let a: Vec<f32> = (0..m * k).map(|i| 1.0 + i as f32 / 512.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| 1.0 - i as f32 / 1024.0).collect();
        let out = buffer(3, &[0.0; 12]);
        let mem = crate::backend::OpMemory::new(vec![buffer(1, &a), buffer(2, &b), out.clone()]);
        npu.execute(&op, &mem).unwrap();
        let mut bytes = vec![0u8; m * n * 4];
        out.read(0, &mut bytes).unwrap();
        let got: Vec<f32> =
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let round = |x: f32| half::bf16::from_f32(x).to_f32();
        let mut rounding_showed = false;
        for i in 0..m {
            for j in 0..n {
                let dot =
                    |r: &dyn Fn(f32) -> f32| (0..k).map(|p| r(a[i * k + p]) * r(b[p * n + j])).sum::<f32>();
                let (want, exact) = (dot(&round), dot(&|x| x));
                let g = got[i * n + j];
                assert!((g - want).abs() <= 1e-5 * want.abs(), "({i}, {j}): got {g}, want {want}");
                rounding_showed |= (want - exact).abs() > 1e-3;
            }
        }
        assert!(rounding_showed, "the test's values must differ once rounded");
    }

    #[test]
    fn an_unsupported_op_is_refused_when_submitted_anyway() {
        let npu = SimNpu::new(SimNpuConfig { virtual_time: true, ..SimNpuConfig::xdna1() });
        let o = op(OpKind::Matmul, DType::F32, DType::F32);
        let err = npu.execute(&o, &crate::backend::OpMemory::new(Vec::new())).unwrap_err();
        assert!(matches!(err, crate::error::Error::Unsupported(_)), "{err:?}");
    }
}
