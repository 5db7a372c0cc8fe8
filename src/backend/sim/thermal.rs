//! First-order thermal model over a timeline of busy units: the die heats in proportion to
//! power and cools towards ambient with one time constant. Between two events the power is
//! constant, so each step uses the exact solution T(t) = Tss + (T0 - Tss) * exp(-t / tau).

use std::time::Duration;

/// One unit's current (or last) op: busy over [from, until) drawing `power_w` above idle.
#[derive(Clone, Copy, Debug, Default)]
pub struct Busy {
    pub from: Duration,
    pub until: Duration,
    pub power_w: f32,
}

#[derive(Clone, Debug)]
pub struct Thermal {
    pub ambient_c: f32,
    pub resistance_k_per_w: f32,
    pub tau: Duration,
    pub idle_power_w: f32,
    /// Temperature at `t`.
    pub temp_c: f32,
    pub t: Duration,
    /// Energy drawn since the start, in joules.
    pub energy_j: f64,
}

impl Thermal {
    pub fn power_at(&self, units: &[Busy], t: Duration) -> f32 {
        self.idle_power_w
            + units.iter().filter(|b| b.from <= t && t < b.until).map(|b| b.power_w).sum::<f32>()
    }

    /// Advances the model to `target` (no-op if it already is past it).
    pub fn advance(&mut self, units: &[Busy], target: Duration) {
        while self.t < target {
            // Next point where the number of busy units may change.
            let next = units
                .iter()
                .flat_map(|b| [b.from, b.until])
                .filter(|&x| x > self.t && x < target)
                .min()
                .unwrap_or(target);
            let p = self.power_at(units, self.t);
            let dt = (next - self.t).as_secs_f64();
            let steady = self.ambient_c + p * self.resistance_k_per_w;
            let decay = (-dt / self.tau.as_secs_f64().max(1e-9)).exp() as f32;
            self.temp_c = steady + (self.temp_c - steady) * decay;
            self.energy_j += p as f64 * dt;
            self.t = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Thermal {
        Thermal {
            ambient_c: 30.0,
            resistance_k_per_w: 10.0,
            tau: Duration::from_secs(10),
            idle_power_w: 0.0,
            temp_c: 30.0,
            t: Duration::ZERO,
            energy_j: 0.0,
        }
    }

    #[test]
    fn heats_towards_steady_state_and_cools_back() {
        let mut m = model();
        let s = Duration::from_secs;
        let busy = [Busy { from: s(0), until: s(10), power_w: 4.0 }];
        m.advance(&busy, s(10));
        // One time constant at 4 W: 30 + 40 * (1 - 1/e).
        assert!((m.temp_c - (30.0 + 40.0 * (1.0 - (-1f32).exp()))).abs() < 1e-3);
        assert!((m.energy_j - 40.0).abs() < 1e-9);
        let hot = m.temp_c;
        m.advance(&busy, s(60));
        assert!(m.temp_c < hot && m.temp_c > 30.0 && m.temp_c < 30.5);
    }

    #[test]
    fn overlapping_units_add_their_power() {
        let s = Duration::from_secs;
        let one = [Busy { from: s(0), until: s(5), power_w: 2.0 }];
        let two = [one[0], one[0]];
        let (mut a, mut b) = (model(), model());
        a.advance(&one, s(5));
        b.advance(&two, s(5));
        assert!(b.temp_c - 30.0 > 1.99 * (a.temp_c - 30.0));
        assert_eq!(b.power_at(&two, s(1)), 4.0);
        assert_eq!(b.power_at(&two, s(5)), 0.0, "intervals are half-open");
    }
}
