//! The built-in policies' thermal rules against the simulated NPU's default thermal model
//! (both the permissive model and the XDNA1 profile the C API uses), in the NPU's virtual
//! time: sustained load at the policy's own power mode reaches the rule's threshold, the rule
//! does what it says (moves half the NPU's work away, lowers its power mode), and clears
//! once the NPU has cooled. Nothing here sleeps: a few minutes of device time take a second.

mod common;

use common::*;
use npuhybrid::backend::sim::{SimNpu, SimNpuConfig};
use npuhybrid::backend::Backend;
use npuhybrid::device::PowerMode;
use npuhybrid::memory::BufferId;
use npuhybrid::op::{DType, OpDesc, OpKind, TensorView};
use npuhybrid::{PolicySource, Runtime, RuntimeConfig};
use std::sync::Arc;
use std::time::Duration;

/// The runtime's thermal period (`RuntimeConfig::thermal_period`): one tick per step.
const STEP: Duration = Duration::from_millis(100);
/// The NPU's device index (the CPU is 0).
const NPU: usize = 1;

fn profiles() -> [(&'static str, SimNpuConfig); 2] {
    [("permissive", SimNpuConfig::default()), ("xdna1", SimNpuConfig::xdna1())]
}

struct Bench {
    rt: Runtime,
    npu: Arc<SimNpu>,
    /// bf16 [64, 64] operands (both profiles take bf16 -> f32) and f32 outputs.
    a: BufferId,
    outs: Vec<BufferId>,
    /// A step's worth of work on one unit is made of these (modelled, not computed).
    unit_work: OpDesc,
}

impl Bench {
    fn new(policy: &str, cfg: SimNpuConfig) -> Bench {
        let npu = Arc::new(SimNpu::new(SimNpuConfig { virtual_time: true, ..cfg }));
        let rt = Runtime::with_backends(
            RuntimeConfig { policy: PolicySource::Builtin(policy.into()), ..config() },
            vec![cpu(), Box::new(Arc::clone(&npu))],
        )
        .unwrap();
        let a = rt.alloc(64 * 64 * 2).unwrap();
        rt.write(a, 0, &[0u8; 64 * 64 * 2]).unwrap();
        let outs = (0..2).map(|_| rt.alloc(64 * 64 * 4).unwrap()).collect();
        let big = |id| TensorView::contiguous(id, DType::BF16, &[1024, 1024], 0);
        let unit_work = OpDesc::new(OpKind::Matmul, &[big(1), big(2)], big(3));
        Bench { rt, npu, a, outs, unit_work }
    }

    fn temp(&self) -> f32 {
        self.npu.readings().temperature_c.unwrap()
    }

    /// One thermal period of a workload that puts `share` of its work on the NPU (every unit
    /// busy for that part of the step, idle for the rest), then a thermal tick.
    fn step_with_share(&self, share: f64) {
        let t0 = self.npu.now();
        let busy_until = t0 + STEP.mul_f64(share);
        let units = self.npu.config().units as u64;
        if share > 0.0 {
            for i in 0.. {
                let slot = self.npu.admit_for(1000 + i % units, &self.unit_work).unwrap();
                if slot.start + slot.duration >= busy_until {
                    break;
                }
            }
        }
        let now = self.npu.now();
        if now < t0 + STEP {
            self.npu.advance_idle(t0 + STEP - now);
        }
        self.rt.thermal_tick(self.npu.now());
    }

    /// A step whose work goes through the scheduler first: two matmuls under the policy;
    /// the NPU's share of the step is the share of them it ran. Returns that share.
    fn step_through_policy(&self) -> f64 {
        let v = |id, dt| TensorView::contiguous(id, dt, &[64, 64], 0);
        let events: Vec<_> = self
            .outs
            .iter()
            .map(|&c| {
                let op = OpDesc::new(
                    OpKind::Matmul,
                    &[v(self.a, DType::BF16), v(self.a, DType::BF16)],
                    v(c, DType::F32),
                );
                self.rt.submit(op).unwrap()
            })
            .collect();
        let on_npu = events
            .iter()
            .filter(|ev| {
                ev.wait(None).unwrap();
                ev.outcome().1.device == Some(NPU)
            })
            .count();
        let share = on_npu as f64 / events.len() as f64;
        self.step_with_share(share);
        share
    }
}

/// continuous_audio keeps the NPU in balanced mode and sends it every matmul; its `npu_hot`
/// (above 70 C for 5 s, clear below 65 C) moves half of them away. Under sustained load the
/// NPU warms past 70 C, half the work leaves it, it cools below 65 C under the remaining half,
/// and all of the work comes back. The emergency (85 C) is never reached.
#[test]
fn continuous_audio_moves_half_the_work_off_a_warm_npu_and_back_once_cool() {
    for (profile, cfg) in profiles() {
        let b = Bench::new("continuous_audio", cfg);
        assert_eq!(b.npu.power_mode(), PowerMode::Balanced, "{profile}: the policy's mode");
        let limit = 300 * 10; // steps: 5 minutes of device time
        let mut above_since = None;
        let fired = (0..limit).find(|_| {
            let share = b.step_through_policy();
            let effect = b.rt.thermal_effect(NPU);
            if effect.shift_permille == 0 {
                assert_eq!(share, 1.0, "{profile}: every matmul on the NPU while it is cool");
            }
            let t = b.temp();
            if t >= 70.0 {
                above_since.get_or_insert(b.npu.now());
            } else {
                above_since = None;
            }
            effect.shift_permille > 0
        });
        let fired =
            fired.unwrap_or_else(|| panic!("{profile}: npu_hot never fired; the NPU is at {} C", b.temp()));
        let effect = b.rt.thermal_effect(NPU);
        assert_eq!(effect.active_rules, ["npu_hot"], "{profile}");
        assert_eq!(
            (effect.shift_permille, effect.power_mode, effect.excluded),
            (500, None, false),
            "{profile}"
        );
        let held = b.npu.now() - above_since.expect("above 70 C when it fired");
        assert!(held >= Duration::from_secs(5), "{profile}: fired after {held:?} above 70 C (hold 5 s)");
        assert!(fired > 100, "{profile}: warming takes a while, not {fired} steps");

        // Half the matmuls leave the NPU while the rule holds; it cools under the rest.
        let cleared = (0..limit).find(|_| {
            let active = b.rt.thermal_effect(NPU).shift_permille > 0;
            let share = b.step_through_policy();
            if active {
                assert_eq!(share, 0.5, "{profile}: half of the work moves away");
            }
            let effect = b.rt.thermal_effect(NPU);
            assert!(!effect.excluded && b.temp() < 85.0, "{profile}: the emergency is not reached");
            effect.shift_permille == 0
        });
        assert!(cleared.is_some(), "{profile}: never cooled below 65 C under half the load ({} C)", b.temp());
        assert!(b.temp() < 65.0, "{profile}: cleared at {} C", b.temp());
        assert_eq!(b.rt.thermal_effect(NPU), Default::default(), "{profile}");
        assert_eq!(b.step_through_policy(), 1.0, "{profile}: all of the work is back on the NPU");
        assert_eq!(b.rt.thermal_transitions(), 2, "{profile}: fired once, cleared once");
    }
}

/// llm_inference runs the NPU in performance mode; default's `npu_hot` (above 85 C for 2 s,
/// clear below 78 C) drops it to powersaver and shifts half its work. Under prefill load that
/// keeps the NPU busy whatever the placement, powersaver alone cools it; once below 78 C the
/// policy's performance mode comes back, and the cycle repeats. The emergency (95 C) is never
/// reached.
#[test]
fn llm_inference_drops_a_hot_npu_to_powersaver_and_restores_performance() {
    for (profile, cfg) in profiles() {
        let b = Bench::new("llm_inference", cfg);
        assert_eq!(b.npu.power_mode(), PowerMode::Performance, "{profile}: the policy's mode");
        let limit = 300 * 10;
        let mut peak: f32 = 0.0;
        let mut step = |b: &Bench| {
            b.step_with_share(1.0);
            peak = peak.max(b.temp());
            assert!(!b.rt.thermal_effect(NPU).excluded, "{profile}: the emergency is not reached");
        };
        let fired = (0..limit).find(|_| {
            step(&b);
            !b.rt.thermal_effect(NPU).active_rules.is_empty()
        });
        let fired =
            fired.unwrap_or_else(|| panic!("{profile}: npu_hot never fired; the NPU is at {} C", b.temp()));
        assert!(fired > 100, "{profile}: heating takes a while, not {fired} steps");
        let effect = b.rt.thermal_effect(NPU);
        assert_eq!(effect.active_rules, ["npu_hot"], "{profile}");
        assert_eq!(
            (effect.power_mode, effect.shift_permille),
            (Some(PowerMode::Powersaver), 500),
            "{profile}"
        );
        assert_eq!(b.npu.power_mode(), PowerMode::Powersaver, "{profile}: applied to the device");
        assert!(b.temp() >= 85.0, "{profile}: {} C", b.temp());

        let cleared = (0..limit).find(|_| {
            step(&b);
            b.rt.thermal_effect(NPU).active_rules.is_empty()
        });
        assert!(cleared.is_some(), "{profile}: powersaver never cooled it below 78 C ({} C)", b.temp());
        assert!(b.temp() < 78.0, "{profile}: cleared at {} C", b.temp());
        assert_eq!(b.npu.power_mode(), PowerMode::Performance, "{profile}: the policy's own mode is back");
        assert_eq!(b.rt.thermal_effect(NPU), Default::default(), "{profile}");

        // Still under load: it heats again and the rule fires again.
        let again = (0..limit).find(|_| {
            step(&b);
            !b.rt.thermal_effect(NPU).active_rules.is_empty()
        });
        assert!(again.is_some(), "{profile}: sustained performance heats it again");
        assert_eq!(b.rt.thermal_transitions(), 3, "{profile}");
        assert!(peak < 95.0, "{profile}: peaked at {peak} C");
    }
}
