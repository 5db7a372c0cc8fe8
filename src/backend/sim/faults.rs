//! Fault injection for the simulated NPU: fail the Nth op, fail a seeded random fraction of
//! ops, lose the device (now or after N more ops).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// The Nth op from now (1 = the next one) fails with `Error::DeviceFailed`.
    FailNth(u64),
    /// Each op fails with this probability, drawn from a generator seeded with `seed`.
    FailFraction { fraction: f64, seed: u64 },
    /// The device is lost: this and every later op fails with `Error::DeviceLost`.
    DeviceLost,
    /// The device is lost after N more ops have been accepted.
    LoseAfter(u64),
}

/// Why an op was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Run,
    Fail,
    Lost,
}

#[derive(Debug, Default)]
pub struct Faults {
    fail_at: Vec<u64>,
    fraction: Option<(f64, SmallRng)>,
    lost: bool,
    lose_at: Option<u64>,
}

impl Faults {
    /// `ops_seen` is the number of ops admitted so far.
    pub fn inject(&mut self, fault: Fault, ops_seen: u64) {
        match fault {
            Fault::FailNth(n) => self.fail_at.push(ops_seen + n.max(1)),
            Fault::FailFraction { fraction, seed } => {
                self.fraction = Some((fraction.clamp(0.0, 1.0), SmallRng::seed_from_u64(seed)))
            }
            Fault::DeviceLost => self.lost = true,
            Fault::LoseAfter(n) => self.lose_at = Some(ops_seen + n),
        }
    }

    pub fn clear(&mut self) {
        *self = Faults::default();
    }

    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// Decides the fate of op number `index` (1-based).
    pub fn judge(&mut self, index: u64) -> Verdict {
        if self.lose_at.is_some_and(|at| index > at) {
            self.lost = true;
        }
        if self.lost {
            return Verdict::Lost;
        }
        if let Some(pos) = self.fail_at.iter().position(|&at| at == index) {
            self.fail_at.swap_remove(pos);
            return Verdict::Fail;
        }
        if let Some((fraction, rng)) = &mut self.fraction {
            if rng.random_bool(*fraction) {
                return Verdict::Fail;
            }
        }
        Verdict::Run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_op_fails_once() {
        let mut f = Faults::default();
        f.inject(Fault::FailNth(3), 10);
        let v: Vec<Verdict> = (11..=15).map(|i| f.judge(i)).collect();
        assert_eq!(v, [Verdict::Run, Verdict::Run, Verdict::Fail, Verdict::Run, Verdict::Run]);
    }

    #[test]
    fn fraction_is_seeded_and_roughly_right() {
        let run = || {
            let mut f = Faults::default();
            f.inject(Fault::FailFraction { fraction: 0.1, seed: 7 }, 0);
            (1..=10_000).map(|i| f.judge(i)).filter(|v| *v == Verdict::Fail).count()
        };
        let n = run();
        assert_eq!(n, run(), "same seed, same failures");
        assert!((800..1200).contains(&n), "{n} failures of 10000 at 10%");
    }

    #[test]
    fn lost_is_permanent_until_cleared() {
        let mut f = Faults::default();
        f.inject(Fault::LoseAfter(2), 0);
        assert_eq!(f.judge(1), Verdict::Run);
        assert_eq!(f.judge(2), Verdict::Run);
        assert_eq!(f.judge(3), Verdict::Lost);
        assert_eq!(f.judge(4), Verdict::Lost);
        f.clear();
        assert_eq!(f.judge(5), Verdict::Run);
        f.inject(Fault::DeviceLost, 5);
        assert!(f.is_lost());
    }
}
