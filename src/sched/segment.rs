//! Placement of a whole graph and its cut into segments: maximal runs of consecutive ops on
//! one device, which that device runs as one unit (one command buffer on a GPU), so
//! intermediates inside a segment never cross to the host.
//!
//! Placement minimises the graph's expected time, counted as a sequence: each op's predicted
//! run time on its device, the transfer of every input that another device produced, and a
//! fixed cost for every segment a device starts. It compares the plan that keeps every op it
//! can on one device, for each device, with the plan that picks per op, and keeps the
//! cheapest: the hybrid plan is taken only where the model says it beats every single device.

use super::task::{Access, Task};
use crate::op::OpDesc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// What the planner needs to know about devices (the scheduler's model; tests use tables).
pub trait Costs {
    /// Predicted time of op `op` on `device`, inside a segment (transfers excluded).
    fn run_ns(&self, op: usize, device: usize) -> f64;
    /// Moving `bytes` that `from` produced to `to` (never called with from == to;
    /// `usize::MAX` is an op left to per-op dispatch).
    fn transfer_ns(&self, bytes: usize, from: usize, to: usize) -> f64;
    /// Bringing input `input` of op `op`, which no op of the graph produces (weights, the
    /// graph's inputs), to `device`: 0 where it is already there.
    fn input_ns(&self, _op: usize, _input: usize, _device: usize) -> f64 {
        0.0
    }
    /// Starting a segment on `device` (a submission and its wait).
    fn segment_start_ns(&self, device: usize) -> f64;
}

/// A placement: the device of each op, None for ops left to per-op dispatch. `chosen` names
/// the candidate that won: "one device: N" keeps every op it can on device N.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub devices: Vec<Option<usize>>,
    pub expected_ns: f64,
    /// Which candidate won ("one device: 1", "per op").
    pub chosen: String,
    /// Every candidate considered, with its expected time (what `nh_graph_explain` shows).
    pub candidates: Vec<(String, f64)>,
}

/// Where an op's input comes from: the earlier op of the graph that last wrote bytes it
/// reads (None: from outside the graph), and how many bytes it reads.
#[derive(Clone, Copy, Debug)]
struct Producer {
    input: usize,
    op: Option<usize>,
    bytes: usize,
}

/// For each op, the producers of its inputs among the earlier ops (latest overlapping write).
/// Writes are indexed by buffer and searched newest first, so a chain costs O(1) per input.
fn producers(ops: &[&OpDesc]) -> Vec<Vec<Producer>> {
    let mut writes: std::collections::HashMap<u64, Vec<(usize, Access)>> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let mut list = Vec::new();
        for (input, v) in op.inputs.iter().enumerate() {
            let Some(v) = v else { continue };
            let (start, end) = v.byte_range();
            let read = Access { buffer: v.buffer, start, end, write: false };
            let found = writes
                .get(&v.buffer)
                .and_then(|w| w.iter().rev().find(|(_, a)| read.conflicts(a)).map(|(j, _)| *j));
            list.push(Producer { input, op: found, bytes: v.bytes() });
        }
        let (start, end) = op.output.byte_range();
        writes
            .entry(op.output.buffer)
            .or_default()
            .push((i, Access { buffer: op.output.buffer, start, end, write: true }));
        out.push(list);
    }
    out
}

/// Time to run op `i` on `d` after the ops before it were placed as in `devices`: its run,
/// a segment start unless the previous op is on `d`, and moving its inputs to `d`. Ops left
/// unplanned count as run elsewhere: what they produce is moved to whoever reads it.
fn op_ns(
    i: usize,
    d: usize,
    devices: &[Option<usize>],
    producers: &[Vec<Producer>],
    costs: &impl Costs,
) -> f64 {
    let mut total = costs.run_ns(i, d);
    if i == 0 || devices[i - 1] != Some(d) {
        total += costs.segment_start_ns(d);
    }
    for p in &producers[i] {
        total += match p.op.map(|j| devices[j]) {
            None => costs.input_ns(i, p.input, d),
            Some(Some(from)) if from == d => 0.0,
            Some(from) => costs.transfer_ns(p.bytes, from.unwrap_or(usize::MAX), d),
        };
    }
    total
}

/// Expected time of a placement (see the module comment).
fn expected_ns(devices: &[Option<usize>], producers: &[Vec<Producer>], costs: &impl Costs) -> f64 {
    (0..devices.len()).filter_map(|i| devices[i].map(|d| op_ns(i, d, devices, producers, costs))).sum()
}

/// Per op the device that finishes it soonest given where its inputs are, op after op.
/// `prefer`: a device kept wherever the op may run there.
fn greedy(
    choices: &[Vec<usize>],
    producers: &[Vec<Producer>],
    costs: &impl Costs,
    prefer: Option<usize>,
) -> Vec<Option<usize>> {
    let mut devices: Vec<Option<usize>> = Vec::with_capacity(choices.len());
    for (i, options) in choices.iter().enumerate() {
        if let Some(p) = prefer.filter(|p| options.contains(p)) {
            devices.push(Some(p));
            continue;
        }
        let cost = |d: usize| op_ns(i, d, &devices, producers, costs);
        let best = options.iter().copied().min_by(|a, b| cost(*a).total_cmp(&cost(*b)));
        devices.push(best);
    }
    devices
}

/// One way to place a graph: "one device: N" keeps every op it can on device N, "per op"
/// picks each op's device greedily. `expected_ns` is the model's time for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub expected_ns: f64,
    pub devices: Vec<Option<usize>>,
}

/// Every candidate placement: one per device any op may run on, then per op; a candidate
/// that places every op as an earlier one does is left out (trying it again would teach
/// nothing). `choices[i]`: the devices op i may run on; empty leaves it to per-op dispatch.
pub fn candidates(ops: &[&OpDesc], choices: &[Vec<usize>], costs: &impl Costs) -> Vec<Candidate> {
    let producers = producers(ops);
    let mut everyone: Vec<usize> = choices.iter().flatten().copied().collect();
    everyone.sort_unstable();
    everyone.dedup();
    let mut out: Vec<Candidate> = Vec::new();
    let named = everyone
        .iter()
        .map(|&d| (Some(d), format!("one device: {d}")))
        .chain(std::iter::once((None, "per op".to_string())));
    for (prefer, name) in named {
        let devices = greedy(choices, &producers, costs, prefer);
        if out.iter().any(|c| c.devices == devices) {
            continue;
        }
        let expected_ns = expected_ns(&devices, &producers, costs);
        out.push(Candidate { name, expected_ns, devices });
    }
    out
}

/// `candidates[chosen]` as the plan, the others listed beside it (`candidates` always holds
/// "per op", so it is never empty).
pub fn plan_from(mut candidates: Vec<Candidate>, chosen: usize) -> Plan {
    let considered = candidates.iter().map(|c| (c.name.clone(), c.expected_ns)).collect();
    let c = candidates.swap_remove(chosen);
    Plan { devices: c.devices, expected_ns: c.expected_ns, chosen: c.name, candidates: considered }
}

/// The index of the candidate the model expects to finish soonest (the first on ties).
pub fn cheapest(candidates: &[Candidate]) -> usize {
    (0..candidates.len())
        .reduce(|best, i| if candidates[i].expected_ns < candidates[best].expected_ns { i } else { best })
        .unwrap_or(0)
}

/// The cheapest of: every op it can on one device (for each device), and per op.
#[cfg(test)]
pub fn plan(ops: &[&OpDesc], choices: &[Vec<usize>], costs: &impl Costs) -> Plan {
    let all = candidates(ops, choices, costs);
    let best = cheapest(&all);
    plan_from(all, best)
}

/// Runs of consecutive ops on one device: (device, first op, end), in order.
pub fn runs(devices: &[Option<usize>]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < devices.len() {
        let Some(d) = devices[i] else {
            i += 1;
            continue;
        };
        let start = i;
        while i < devices.len() && devices[i] == Some(d) {
            i += 1;
        }
        out.push((d, start, i));
    }
    out
}

/// Ops that one device runs as one unit once every one of them is ready (its dependencies
/// outside the segment are done; those inside are kept by running in order).
pub struct SegmentRun {
    pub device: usize,
    /// Taken when the segment runs (tasks hold the segment: this breaks the cycle).
    pub tasks: parking_lot::Mutex<Vec<Arc<Task>>>,
    /// Members not yet ready.
    pub waiting: AtomicUsize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{DType, OpKind, TensorView};

    /// Device 0 is a CPU: every op 10 units. Device 1 is a GPU: ops 1 unit, segments 20,
    /// moving data 1 unit per 100 bytes.
    struct Table {
        gpu_op: f64,
    }

    impl Costs for Table {
        fn run_ns(&self, _op: usize, device: usize) -> f64 {
            if device == 0 {
                10.0
            } else {
                self.gpu_op
            }
        }
        fn transfer_ns(&self, bytes: usize, _from: usize, _to: usize) -> f64 {
            bytes as f64 / 100.0
        }
        fn segment_start_ns(&self, device: usize) -> f64 {
            if device == 0 {
                0.0
            } else {
                20.0
            }
        }
    }

    /// A chain: op i reads buffer i and writes buffer i + 1 (64 f32 each).
    fn chain(n: usize) -> Vec<OpDesc> {
        (0..n)
            .map(|i| {
                let v = |b: u64| TensorView::contiguous(b, DType::F32, &[8, 8], 0);
                OpDesc::new(OpKind::Silu, &[v(i as u64 + 1)], v(i as u64 + 2))
            })
            .collect()
    }

    #[test]
    fn a_chain_stays_on_the_fast_device_when_segments_pay_for_themselves() {
        let ops = chain(8);
        let refs: Vec<&OpDesc> = ops.iter().collect();
        let both = vec![vec![0, 1]; 8];
        let p = plan(&refs, &both, &Table { gpu_op: 1.0 });
        assert_eq!(p.devices, vec![Some(1); 8], "{p:?}");
        assert_eq!(runs(&p.devices), vec![(1, 0, 8)]);
        // 8 ops at 1 + one segment start.
        assert_eq!(p.expected_ns, 28.0);
    }

    #[test]
    fn a_candidate_that_places_every_op_as_an_earlier_one_is_left_out() {
        let ops = chain(8);
        let refs: Vec<&OpDesc> = ops.iter().collect();
        let names = |c: Vec<Candidate>| c.into_iter().map(|c| c.name).collect::<Vec<_>>();
        // Per op picks the GPU for every op: the same placement as "one device: 1".
        let all = candidates(&refs, &vec![vec![0, 1]; 8], &Table { gpu_op: 1.0 });
        assert_eq!(names(all), ["one device: 0", "one device: 1"]);
    }

    #[test]
    fn a_short_chain_stays_on_the_cpu_when_a_segment_costs_more_than_it_saves() {
        let ops = chain(2);
        let refs: Vec<&OpDesc> = ops.iter().collect();
        let p = plan(&refs, &[vec![0, 1], vec![0, 1]], &Table { gpu_op: 1.0 });
        assert_eq!(p.devices, vec![Some(0); 2], "{p:?}");
    }

    #[test]
    fn an_op_only_one_device_runs_breaks_the_segment_and_the_plan_counts_its_transfers() {
        let ops = chain(9);
        let refs: Vec<&OpDesc> = ops.iter().collect();
        let mut choices = vec![vec![0, 1]; 9];
        choices[4] = vec![0];
        let p = plan(&refs, &choices, &Table { gpu_op: 1.0 });
        assert_eq!(p.devices[4], Some(0));
        // Both halves are long enough to pay for a GPU segment each.
        assert_eq!(runs(&p.devices), vec![(1, 0, 4), (0, 4, 5), (1, 5, 9)]);
        // 8 GPU ops, 2 segment starts, one CPU op, 2 transfers of 256 bytes.
        assert!((p.expected_ns - (8.0 + 40.0 + 10.0 + 2.0 * 2.56)).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn no_plan_is_worse_than_the_best_single_device() {
        // A slow GPU: everything stays on the CPU.
        let ops = chain(6);
        let refs: Vec<&OpDesc> = ops.iter().collect();
        let p = plan(&refs, &vec![vec![0, 1]; 6], &Table { gpu_op: 50.0 });
        assert_eq!(p.devices, vec![Some(0); 6]);
        assert_eq!(p.expected_ns, 60.0);
    }

    #[test]
    fn unplanned_ops_are_left_alone() {
        let ops = chain(3);
        let refs: Vec<&OpDesc> = ops.iter().collect();
        let p = plan(&refs, &[vec![1], vec![], vec![1]], &Table { gpu_op: 1.0 });
        assert_eq!(p.devices, vec![Some(1), None, Some(1)]);
        assert_eq!(runs(&p.devices), vec![(1, 0, 1), (1, 2, 3)]);
    }
}
