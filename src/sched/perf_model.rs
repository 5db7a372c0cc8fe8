//! Predicted run time per (device, op kind, dtype, size bucket). Starts from each device's
//! declared peak and launch latency, then follows measured history (exponentially weighted),
//! and is saved between runs so a second run starts calibrated.

use super::fasthash::FastMap;
use crate::backend::{DeviceInfo, DeviceKind};
use crate::op::{DType, OpDesc, OpKind};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Weight of a new measurement.
const EWMA_ALPHA: f64 = 0.3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Key {
    kind: u32,
    dtype: u32,
    /// log2 of the op's work (flops for matmul/attention, bytes for the rest).
    bucket: u32,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Entry {
    /// Measured nanoseconds per unit of work.
    ns_per_unit: f64,
    samples: u64,
}

/// The model of one device.
pub struct DeviceModel {
    name: String,
    launch_ns: f64,
    peak_gflops: f64,
    bandwidth_gbs: f64,
    entries: RwLock<FastMap<Key, Entry>>,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    device: String,
    entries: Vec<(Key, Entry)>,
}

/// Work of an op in the unit its cost scales with.
fn work_units(op: &OpDesc) -> f64 {
    match op.kind {
        OpKind::Matmul | OpKind::Attention => op.flops().max(1.0),
        _ => op.views().map(|v| v.bytes()).sum::<usize>().max(1) as f64,
    }
}

fn key(op: &OpDesc) -> Key {
    let units = work_units(op);
    // floor(log2) of the integer part: the same bucket as f64::log2, without a libm call.
    let bucket = (units as u64).max(1).ilog2();
    Key { kind: op.kind as u32, dtype: op.dtype() as u32, bucket }
}

fn default_launch_ns(kind: DeviceKind) -> f64 {
    match kind {
        DeviceKind::Cpu => 2_000.0,
        DeviceKind::Gpu => 30_000.0,
        DeviceKind::Npu | DeviceKind::SimulatedNpu => 60_000.0,
    }
}

impl DeviceModel {
    pub fn new(info: &DeviceInfo) -> DeviceModel {
        DeviceModel {
            name: info.name.clone(),
            launch_ns: default_launch_ns(info.kind),
            peak_gflops: info.peak_gflops.max(0.1),
            bandwidth_gbs: info.bandwidth_gbs.max(0.1),
            entries: RwLock::new(FastMap::default()),
        }
    }

    /// Predicted nanoseconds to run `op` on this device (transfers excluded): its size
    /// bucket's history, else that of the nearest bucket within a factor of 4 of work (a split
    /// asks about the whole op when only its parts have run), else the declared peak.
    pub fn predict_ns(&self, op: &OpDesc) -> f64 {
        let units = work_units(op);
        let at = key(op);
        let entries = self.entries.read();
        let near = [0i64, -1, 1, -2, 2].into_iter().find_map(|d| {
            let bucket = u32::try_from(at.bucket as i64 + d).ok()?;
            entries.get(&Key { bucket, ..at })
        });
        match near {
            Some(e) => e.ns_per_unit * units,
            None => self.prior_ns(op),
        }
    }

    fn prior_ns(&self, op: &OpDesc) -> f64 {
        let bytes = op.views().map(|v| v.bytes()).sum::<usize>() as f64;
        let peak = match op.dtype() {
            DType::F16 | DType::BF16 => self.peak_gflops * 2.0,
            _ => self.peak_gflops,
        };
        let compute_ns = op.flops() / peak;
        let memory_ns = bytes / self.bandwidth_gbs;
        self.launch_ns + compute_ns.max(memory_ns)
    }

    /// Folds a measured run time into the model.
    pub fn record(&self, op: &OpDesc, measured_ns: f64) {
        let units = work_units(op);
        let observed = measured_ns.max(1.0) / units;
        let mut entries = self.entries.write();
        let e = entries.entry(key(op)).or_insert(Entry { ns_per_unit: observed, samples: 0 });
        if e.samples > 0 {
            e.ns_per_unit = (1.0 - EWMA_ALPHA) * e.ns_per_unit + EWMA_ALPHA * observed;
        }
        e.samples += 1;
    }

    pub fn samples(&self) -> u64 {
        self.entries.read().values().map(|e| e.samples).sum()
    }

    fn file_name(&self) -> String {
        let safe: String =
            self.name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        format!("perf-{safe}.json")
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let saved = Saved {
            device: self.name.clone(),
            entries: self.entries.read().iter().map(|(k, v)| (*k, *v)).collect(),
        };
        let path = dir.join(self.file_name());
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&saved).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Loads saved history for this device if a file exists; a corrupt file is ignored.
    pub fn load(&self, dir: &Path) -> bool {
        let Ok(bytes) = crate::files::read(&dir.join(self.file_name())) else { return false };
        match serde_json::from_slice::<Saved>(&bytes) {
            Ok(saved) if saved.device == self.name => {
                let mut entries = self.entries.write();
                for (k, v) in saved.entries {
                    if v.ns_per_unit.is_finite() && v.ns_per_unit > 0.0 {
                        entries.insert(k, v);
                    }
                }
                true
            }
            _ => {
                log::warn!("ignoring unreadable performance history for {}", self.name);
                false
            }
        }
    }
}

/// Default directory for saved history: `$XDG_CACHE_HOME/npuhybrid` or `~/.cache/npuhybrid`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|p| p.join("npuhybrid"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::op::TensorView;

    fn matmul(m: usize) -> OpDesc {
        let t = |id, r, c| TensorView::contiguous(id, DType::F32, &[r, c], 0);
        OpDesc::new(OpKind::Matmul, &[t(1, m, 256), t(2, 256, 256)], t(3, m, 256))
    }

    #[test]
    fn history_of_a_nearby_size_is_used_before_the_declared_peak() {
        let cpu = crate::backend::cpu::CpuBackend::new(1).unwrap();
        let model = DeviceModel::new(cpu.info());
        let prior_64 = model.predict_ns(&matmul(64));
        // Measured: 1 ns per flop at m = 128, far from the declared peak.
        let flops_128 = matmul(128).flops();
        model.record(&matmul(128), flops_128);
        assert_eq!(model.predict_ns(&matmul(128)), flops_128);
        // m = 256 and m = 32 are one and two buckets away: same cost per flop.
        assert_eq!(model.predict_ns(&matmul(256)), matmul(256).flops());
        assert_eq!(model.predict_ns(&matmul(32)), matmul(32).flops());
        // m = 8 is four buckets away: the declared peak still decides.
        assert_ne!(model.predict_ns(&matmul(8)), matmul(8).flops());
        assert!(model.predict_ns(&matmul(64)) > prior_64, "the measured cost replaced the prior");
    }
}
