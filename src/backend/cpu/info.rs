//! What the CPU device reports: name and memory from /proc, throughput estimates from the
//! SIMD width, clock and thread count (the scheduler's starting point, refined by measurement).

use super::simd::{isa, Isa};
use crate::backend::{DeviceInfo, DeviceKind};
use crate::op::validate::computable_dtypes;
use crate::op::OpKind;

/// First value of `key` in a /proc file of `key : value` lines.
fn proc_field(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

pub fn cpu_info(threads: usize) -> DeviceInfo {
    let name = proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "cpu".to_string());
    let mhz: f64 = proc_field("/proc/cpuinfo", "cpu MHz").and_then(|v| v.parse().ok()).unwrap_or(2000.0);
    let memory_bytes = proc_field("/proc/meminfo", "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    // f32 flops per cycle per core: two 8-wide FMA pipes with AVX2 (AVX-512 kept at that
    // starting point: the perf model measures), else two 4-wide SSE. The level is the one
    // the kernels use (`NPUHYBRID_CPU_ISA` may lower it).
    let (flops_per_cycle, simd) = match isa() {
        Isa::Avx512 => (32.0, "avx512+avx2+fma+f16c"),
        Isa::Avx2 => (32.0, "avx2+fma+f16c"),
        Isa::Portable => (8.0, "sse2"),
    };
    let ops = OpKind::ALL.iter().fold(0, |s, k| s | k.bit());
    DeviceInfo {
        kind: DeviceKind::Cpu,
        name,
        driver: format!("npuhybrid cpu ({simd}, {threads} threads)"),
        memory_bytes,
        // What its compute ops take (floats, quantized weights), not i8 / i32: only copy
        // takes those.
        dtypes: computable_dtypes(ops),
        ops,
        available: true,
        unavailable_reason: String::new(),
        peak_gflops: threads as f64 * mhz * 1e-3 * flops_per_cycle,
        // A typical per-core streaming rate; the perf model replaces it with measurements.
        bandwidth_gbs: (threads as f64 * 12.0).min(60.0),
        unified_memory: true,
        max_in_flight: 1,
        details: vec![
            ("threads".to_string(), threads.to_string()),
            ("simd".to_string(), simd.to_string()),
            // The level the kernels run at (`NPUHYBRID_CPU_ISA` caps it).
            ("isa".to_string(), isa().name().to_string()),
        ],
    }
}
