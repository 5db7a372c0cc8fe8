//! What each placement of one graph measured when it ran. The planner's model predicts, and
//! it can be wrong by an order of magnitude (costs it never saw: a driver's per-submission
//! overhead, an upload rate below the link's, a device whose first runs taught it wrong
//! times). A placement that ran is judged by its measured time instead; candidates the
//! model ranks within `EXPLORE_FACTOR` of the best measured one are tried for a few
//! submissions each, once the graph has run long enough that a trial costs a small share of
//! its time (`EXPLORE_SHARE`). So a wrong prediction cannot keep a graph on a slower
//! placement: with every device on, it settles on the fastest placement it measured, single
//! devices included, and a graph run only a few times is not slowed down by trials.
//! The measured times are kept between runs (`PlanHistory`), so a second run of the same
//! model starts on the placement the first one found fastest.

use super::segment::Candidate;
use crate::event::Event;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::path::Path;

/// Samples kept per placement (the median of these is its time).
const KEPT_SAMPLES: usize = 8;
/// Samples before a measurement replaces the model's prediction.
pub const MIN_SAMPLES: usize = 2;
/// An unmeasured placement is tried when the model expects it within this factor of the
/// best measured one: the model may be that wrong, and a trial costs a few submissions.
const EXPLORE_FACTOR: f64 = 4.0;
/// A trial (a warm-up and `MIN_SAMPLES` runs at the model's estimate) may cost at most this
/// share of the time the graph has run so far: the guarantee's margin (every device on is at
/// most 5% slower than the best single device), so that exploring cannot break it over a run.
/// At a quarter, lavapipe's MiniLM at 256 tokens, 16 a batch, tried the simulated NPU (10%
/// slower by the model) in three of five one-second benchmark processes and lost 20% in each.
const EXPLORE_SHARE: f64 = 0.05;
/// Outside a trial, an unmeasured placement replaces a measured one only when the model
/// expects it this many times faster: a switch costs a warm-up and `MIN_SAMPLES` runs at an
/// unknown speed, and the model errs by more than a few percent (an H100 round sent the tiny
/// Llama's prefill to the simulated NPU for 4% expected gain; it ran 3.5 times slower).
const UNPROVEN_MARGIN: f64 = 2.0;
/// Submissions of the graph after which a measurement is forgotten, so a placement that was
/// slow once (a busy device, a cold cache) is tried again.
const STALE_AFTER: u64 = 512;
/// Submissions whose completion is still awaited; older ones are dropped unmeasured.
const MAX_PENDING: usize = 8;

#[derive(Debug)]
struct Measured {
    name: String,
    samples: VecDeque<f64>,
    /// The graph's submission count when the placement last ran.
    last_run: u64,
}

#[derive(Debug)]
struct Pending {
    name: String,
    event: Event,
    /// The first submission after a change of placement: it pays one-time costs (uploads of
    /// what now runs elsewhere, pipeline compilation) that say nothing about the next ones.
    warm_up: bool,
}

/// Measured times of a graph's placements (one per graph, beside its cached plan).
#[derive(Debug, Default)]
pub struct PlanTimes {
    /// The graph these times are of (`signature`): another graph's times start afresh.
    signature: Option<u64>,
    measured: Vec<Measured>,
    pending: VecDeque<Pending>,
    last_placement: Option<String>,
    submissions: u64,
    /// A placement just got its `MIN_SAMPLES`-th sample: time to choose again.
    fresh: bool,
    /// Time of every completed run (warm-ups included): what trials are weighed against.
    spent_ns: f64,
}

impl PlanTimes {
    /// Makes these the times of the graph with `signature`: unchanged if they already are,
    /// else what `history` kept of it (from this run or an earlier one), as measured now.
    pub fn adopt(&mut self, signature: u64, history: &PlanHistory) {
        if self.signature == Some(signature) {
            return;
        }
        self.signature = Some(signature);
        let kept = history.kept(signature);
        self.last_placement = kept.and_then(|k| k.last_placement.clone());
        self.spent_ns = kept.map_or(0.0, |k| k.spent_ns);
        self.measured = kept
            .map(|k| k.placements.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|(name, samples)| Measured {
                name: name.clone(),
                samples: samples.iter().rev().take(KEPT_SAMPLES).rev().copied().collect(),
                last_run: self.submissions,
            })
            .collect();
    }

    /// What `PlanHistory::keep` keeps of these times: every placement's samples (also those
    /// of one still short of `MIN_SAMPLES`: a graph run once per process, such as a prompt's
    /// prefill, gathers them over several runs) and the time run so far.
    pub fn to_keep(&self) -> KeptGraph {
        KeptGraph {
            spent_ns: self.spent_ns,
            last_placement: self.last_placement.clone(),
            placements: self
                .measured
                .iter()
                .map(|m| (m.name.clone(), m.samples.iter().copied().collect()))
                .collect(),
        }
    }

    pub fn signature(&self) -> Option<u64> {
        self.signature
    }

    /// A submission of the graph under placement `name`; `event` completes with the graph.
    /// The caller harvests first (`cached_plan` does, and keeps what it added).
    pub fn submitted(&mut self, name: &str, event: &Event) {
        self.submissions += 1;
        let warm_up = self.last_placement.as_deref() != Some(name);
        self.last_placement = Some(name.to_string());
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(Pending { name: name.to_string(), event: event.clone(), warm_up });
    }

    /// Folds the submissions that completed (in order) into the measurements: the time from
    /// the graph's first op starting to its last op finishing. Failed runs teach nothing.
    /// Returns how many samples it added.
    pub fn harvest(&mut self) -> usize {
        let mut added = 0;
        while self.pending.front().is_some_and(|p| p.event.is_done()) {
            let Some(p) = self.pending.pop_front() else { break };
            let (result, info) = p.event.outcome();
            let ns = info.run_ns() as f64;
            self.spent_ns += ns;
            if p.warm_up || result.is_err() || ns <= 0.0 {
                continue;
            }
            self.record(&p.name, ns);
            added += 1;
        }
        added
    }

    fn record(&mut self, name: &str, ns: f64) {
        let now = self.submissions;
        let i = match self.measured.iter().position(|m| m.name == name) {
            Some(i) => i,
            None => {
                self.measured.push(Measured {
                    name: name.to_string(),
                    samples: VecDeque::new(),
                    last_run: now,
                });
                self.measured.len() - 1
            }
        };
        let m = &mut self.measured[i];
        if now.saturating_sub(m.last_run) > STALE_AFTER {
            m.samples.clear();
        }
        if m.samples.len() == KEPT_SAMPLES {
            m.samples.pop_front();
        }
        m.samples.push_back(ns);
        m.last_run = now;
        self.fresh |= m.samples.len() == MIN_SAMPLES;
    }

    /// Whether a placement's measurement just became usable (and the graph should choose
    /// again); reading it clears it.
    pub fn take_fresh(&mut self) -> bool {
        std::mem::take(&mut self.fresh)
    }

    /// The lower median of a placement's recent samples (noise only adds time; with two
    /// samples, the faster one), once it has enough and they are not stale.
    pub fn measured_ns(&self, name: &str) -> Option<f64> {
        let m = self.measured.iter().find(|m| m.name == name)?;
        if m.samples.len() < MIN_SAMPLES || self.submissions.saturating_sub(m.last_run) > STALE_AFTER {
            return None;
        }
        let mut s: Vec<f64> = m.samples.iter().copied().collect();
        s.sort_by(f64::total_cmp);
        Some(s[(s.len() - 1) / 2])
    }

    /// The candidate to run next: an unmeasured one the model ranks within `EXPLORE_FACTOR`
    /// of the best measured time and whose trial the graph's time so far pays for (the one it
    /// expects soonest), else the fastest, each judged by its measured time where it has one
    /// and by the model's otherwise (`UNPROVEN_MARGIN` times it, once any is measured).
    pub fn choose(&self, candidates: &[Candidate]) -> usize {
        let measured: Vec<Option<f64>> = candidates.iter().map(|c| self.measured_ns(&c.name)).collect();
        let best_measured = measured.iter().flatten().copied().reduce(f64::min);
        let fastest_by = |keep: &dyn Fn(usize) -> bool, cost: &dyn Fn(usize) -> f64| {
            (0..candidates.len()).filter(|&i| keep(i)).min_by(|&a, &b| cost(a).total_cmp(&cost(b)))
        };
        let expected = |i: usize| candidates[i].expected_ns;
        if let Some(best) = best_measured {
            let trial_ns = |i: usize| (MIN_SAMPLES + 1) as f64 * expected(i);
            let worth_trying = |i: usize| {
                measured[i].is_none()
                    && expected(i) <= EXPLORE_FACTOR * best
                    && trial_ns(i) <= EXPLORE_SHARE * self.spent_ns
            };
            if let Some(i) = fastest_by(&worth_trying, &expected) {
                return i;
            }
        }
        let unproven = if best_measured.is_some() { UNPROVEN_MARGIN } else { 1.0 };
        let cost = |i: usize| measured[i].unwrap_or(unproven * candidates[i].expected_ns);
        fastest_by(&|_| true, &cost).unwrap_or(0)
    }
}

/// A graph's identity across runs: its ops' kinds and types, and the shapes of its matmuls
/// (rows included: MiniLM at batch 1 and 16 is the same chain of ops with other rows; not
/// every size: a decode step's attention grows with the position).
pub fn signature(ops: &[&crate::op::OpDesc]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for op in ops {
        op.kind.name().hash(&mut h);
        op.dtype().name().hash(&mut h);
        if op.kind == crate::op::OpKind::Matmul {
            let d = op.dims();
            (d.m, d.n, d.k, d.batch).hash(&mut h);
        }
    }
    h.finish()
}

/// Version of the file `PlanHistory` writes; files of another version are ignored.
const HISTORY_FORMAT: u32 = 2;

/// One graph's entry in `PlanHistory`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KeptGraph {
    spent_ns: f64,
    /// The placement the graph last ran under. A new process running it under the same one
    /// counts its first run: a graph run once per process (a prompt's prefill) was otherwise
    /// never measured, every run a warm-up, and the model alone placed it (an H100 prefill
    /// stayed split across CPU and GPU at a fifth of the GPU alone's speed). The once-per-
    /// process costs that run pays, uploads included, are what such a graph pays every time.
    #[serde(default)]
    last_placement: Option<String>,
    /// Placement name and its recent samples (ns), oldest first.
    placements: Vec<(String, Vec<f64>)>,
}

/// Measured placement times of graphs by signature, for this list of devices (placements name
/// devices by index): kept in the performance cache directory between runs, one file per
/// device list (a run with the GPU alone keeps its own beside the hybrid's).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PlanHistory {
    format: u32,
    devices: Vec<String>,
    graphs: HashMap<String, KeptGraph>,
}

impl PlanHistory {
    /// `plans-<hash of the device list>.json`.
    fn file_name(devices: &[String]) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        devices.hash(&mut h);
        format!("plans-{:016x}.json", h.finish())
    }

    /// The history for these devices (their identities, in order): the saved one in `dir` if
    /// it was written for the same devices, else an empty one.
    pub fn load(dir: Option<&Path>, devices: Vec<String>) -> PlanHistory {
        let saved = dir
            .and_then(|d| crate::files::read(&d.join(Self::file_name(&devices))).ok())
            .and_then(|bytes| serde_json::from_slice::<PlanHistory>(&bytes).ok())
            .filter(|h| h.format == HISTORY_FORMAT && h.devices == devices);
        saved.unwrap_or(PlanHistory { format: HISTORY_FORMAT, devices, graphs: HashMap::new() })
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(Self::file_name(&self.devices));
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, &path)
    }

    pub fn is_empty(&self) -> bool {
        self.graphs.is_empty()
    }

    fn kept(&self, signature: u64) -> Option<&KeptGraph> {
        self.graphs.get(&format!("{signature:016x}"))
    }

    /// Keeps a graph's times (`PlanTimes::to_keep`), which started from what was kept.
    pub fn keep(&mut self, signature: u64, graph: KeptGraph) {
        self.graphs.insert(format!("{signature:016x}"), graph);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventInfo;
    use std::time::{Duration, Instant};

    fn candidate(name: &str, expected_us: f64) -> Candidate {
        Candidate { name: name.into(), expected_ns: expected_us * 1e3, devices: Vec::new() }
    }

    /// One submission of `name` that ran for `us` microseconds.
    fn run(times: &mut PlanTimes, name: &str, us: u64) {
        let event = Event::new(1);
        times.submitted(name, &event);
        let started = Instant::now();
        let info = EventInfo {
            started: Some(started),
            finished: Some(started + Duration::from_micros(us)),
            ..Default::default()
        };
        event.complete_part(Ok(()), &info);
        times.harvest();
    }

    /// The planner's view in round 3 of the H100 run of 2026-12-07: the model expected the
    /// per-op plan at 17.8 ms, the CPU at 32.2 and the GPU at 54.9; they ran in 22, 32 and 9.5.
    fn round3() -> Vec<Candidate> {
        vec![
            candidate("one device: 0", 32_200.0),
            candidate("one device: 1", 54_900.0),
            candidate("per op", 17_800.0),
        ]
    }

    #[test]
    fn without_measurements_the_model_decides() {
        assert_eq!(PlanTimes::default().choose(&round3()), 2);
    }

    #[test]
    fn the_first_run_of_a_placement_is_a_warm_up_and_teaches_nothing() {
        let mut t = PlanTimes::default();
        run(&mut t, "per op", 500_000);
        assert_eq!(t.measured_ns("per op"), None);
        run(&mut t, "per op", 22_000);
        run(&mut t, "per op", 22_000);
        assert_eq!(t.measured_ns("per op"), Some(22e6));
        assert!(t.take_fresh());
        assert!(!t.take_fresh());
    }

    #[test]
    fn a_wrong_model_is_overruled_by_what_ran() {
        let c = round3();
        let mut t = PlanTimes::default();
        for (name, us) in [("per op", 22_000), ("one device: 0", 32_000), ("one device: 1", 9_500)] {
            for _ in 0..=MIN_SAMPLES {
                run(&mut t, name, us);
            }
        }
        assert_eq!(c[t.choose(&c)].name, "one device: 1");
    }

    #[test]
    fn candidates_within_the_factor_are_tried_cheapest_first_and_far_ones_never() {
        let mut c = round3();
        c.push(candidate("one device: 2", 845_000.0));
        let mut t = PlanTimes::default();
        for _ in 0..=MIN_SAMPLES {
            run(&mut t, "per op", 22_000);
        }
        // 66 ms run so far: a trial of the CPU (3 x 32.2 ms) would cost more than 5% of it.
        assert_eq!(c[t.choose(&c)].name, "per op", "too early to try anything");
        for _ in 0..84 {
            run(&mut t, "per op", 22_000);
        }
        assert_eq!(c[t.choose(&c)].name, "per op", "1914 ms run: the CPU's trial needs 1932");
        run(&mut t, "per op", 22_000);
        assert_eq!(c[t.choose(&c)].name, "one device: 0", "1936 ms run: the CPU's trial is paid for");
        for _ in 0..=MIN_SAMPLES {
            run(&mut t, "one device: 0", 32_000);
        }
        // 2032 ms so far: the GPU's trial (3 x 54.9 ms) waits until the graph has run 3294 ms.
        for _ in 0..57 {
            run(&mut t, "per op", 22_000);
        }
        assert_eq!(c[t.choose(&c)].name, "per op", "3286 ms run");
        run(&mut t, "per op", 22_000);
        assert_eq!(c[t.choose(&c)].name, "one device: 1");
        for _ in 0..=MIN_SAMPLES {
            run(&mut t, "one device: 1", 60_000);
        }
        // Every plausible one measured: the fastest measured wins; the NPU's 845 ms is never tried.
        assert_eq!(c[t.choose(&c)].name, "per op");
    }

    #[test]
    fn failed_and_unfinished_runs_teach_nothing() {
        let mut t = PlanTimes::default();
        run(&mut t, "per op", 1_000);
        let failed = Event::new(1);
        t.submitted("per op", &failed);
        failed.fail(crate::error::Error::DeviceFailed("gone".into()));
        let unfinished = Event::new(1);
        t.submitted("per op", &unfinished);
        t.harvest();
        assert!(t.measured.iter().all(|m| m.samples.is_empty()));
    }

    #[test]
    fn a_second_run_starts_from_the_first_runs_measurements() {
        let c = round3();
        let mut first = PlanTimes::default();
        first.adopt(7, &PlanHistory::default());
        for (name, us) in [("per op", 22_000), ("one device: 0", 32_000), ("one device: 1", 9_500)] {
            for _ in 0..=MIN_SAMPLES {
                run(&mut first, name, us);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let devices = vec!["cpu".to_string(), "gpu".to_string()];
        let mut history = PlanHistory::load(Some(dir.path()), devices.clone());
        history.keep(7, first.to_keep());
        history.save(dir.path()).unwrap();

        let mut second = PlanTimes::default();
        second.adopt(7, &PlanHistory::load(Some(dir.path()), devices.clone()));
        assert_eq!(second.measured_ns("one device: 1"), Some(9.5e6));
        assert_eq!(
            c[second.choose(&c)].name,
            "one device: 1",
            "the GPU first, though the model says 54.9 ms"
        );
        // Another list of devices keeps its own file and does not overwrite this one's; another
        // graph starts afresh.
        let cpu_only = vec!["cpu".to_string()];
        let mut other = PlanTimes::default();
        other.adopt(7, &PlanHistory::load(Some(dir.path()), cpu_only.clone()));
        assert_eq!(other.measured_ns("one device: 1"), None);
        let mut theirs = PlanHistory::load(Some(dir.path()), cpu_only);
        theirs.keep(
            7,
            KeptGraph {
                spent_ns: 1.0,
                placements: vec![("one device: 0".into(), vec![1.0, 1.0])],
                last_placement: None,
            },
        );
        theirs.save(dir.path()).unwrap();
        let mut again = PlanTimes::default();
        again.adopt(7, &PlanHistory::load(Some(dir.path()), devices));
        assert_eq!(again.measured_ns("one device: 1"), Some(9.5e6));
        other.adopt(8, &PlanHistory::load(Some(dir.path()), vec!["cpu".to_string(), "gpu".to_string()]));
        assert_eq!(other.measured_ns("one device: 1"), None);
    }

    #[test]
    fn a_graph_run_once_per_process_is_measured_over_several_processes() {
        let mut history = PlanHistory::default();
        for process in 0..3 {
            let mut t = PlanTimes::default();
            t.adopt(9, &history);
            run(&mut t, "per op", 1_000); // the warm-up of this process
            run(&mut t, "per op", 1_000);
            let expected = (process >= 1).then_some(1e6);
            assert_eq!(t.measured_ns("per op"), expected, "process {process}");
            history.keep(9, t.to_keep());
        }
        let mut t = PlanTimes::default();
        t.adopt(9, &history);
        assert_eq!(t.spent_ns, 6e6, "the time run so far adds up over processes");
    }

    #[test]
    fn one_slow_sample_of_two_does_not_condemn_a_placement() {
        let mut t = PlanTimes::default();
        run(&mut t, "one device: 0", 500); // warm-up
        run(&mut t, "one device: 0", 86_800);
        run(&mut t, "one device: 0", 21_200);
        assert_eq!(t.measured_ns("one device: 0"), Some(21.2e6));
    }

    #[test]
    fn measurements_go_stale() {
        let mut t = PlanTimes::default();
        for _ in 0..=MIN_SAMPLES {
            run(&mut t, "one device: 1", 9_500);
        }
        assert!(t.measured_ns("one device: 1").is_some());
        for _ in 0..=STALE_AFTER {
            run(&mut t, "per op", 22_000);
        }
        assert_eq!(t.measured_ns("one device: 1"), None);
    }

    #[test]
    fn an_unmeasured_placement_needs_a_clear_expected_gain_to_replace_a_measured_one() {
        // The H100 round: the CPU measured 1307 us, the simulated NPU unmeasured at 1258.
        let c = vec![candidate("one device: 0", 1_036.7), candidate("one device: 2", 1_258.3)];
        let mut t = PlanTimes::default();
        for _ in 0..=MIN_SAMPLES {
            run(&mut t, "one device: 0", 1_307);
        }
        assert_eq!(c[t.choose(&c)].name, "one device: 0", "4% expected gain: not worth a switch");
        // A 1B model's decode: the CPU measured 42 ms a step, the GPU expected at 15 (too
        // early for a trial: three runs at 15 ms would be more than 5% of the 126 run).
        let c = vec![candidate("one device: 0", 40_000.0), candidate("one device: 1", 15_000.0)];
        let mut t = PlanTimes::default();
        for _ in 0..=MIN_SAMPLES {
            run(&mut t, "one device: 0", 42_000);
        }
        assert_eq!(c[t.choose(&c)].name, "one device: 1", "2.8 times faster by the model: switch");
    }

    #[test]
    fn a_graph_run_once_per_process_under_the_same_placement_is_measured() {
        // A prompt's prefill: one run per process. The first process's run is a warm-up (the
        // placement is new); later processes count theirs.
        let mut history = PlanHistory::default();
        for process in 0..3 {
            let mut t = PlanTimes::default();
            t.adopt(9, &history);
            run(&mut t, "per op", 1_000);
            let expected = (process >= 2).then_some(1e6);
            assert_eq!(t.measured_ns("per op"), expected, "process {process}");
            history.keep(9, t.to_keep());
        }
        // Under another placement, the first run is a warm-up again.
        let mut t = PlanTimes::default();
        t.adopt(9, &history);
        run(&mut t, "one device: 1", 500);
        run(&mut t, "one device: 1", 500);
        assert_eq!(t.measured_ns("one device: 1"), None);
    }
}
