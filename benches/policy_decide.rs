//! Decision cost of the compiled policies: median ns per `decide` over repeated runs, against
//! the same decision made by testing each rule in order (`decide_by_rules`, the baseline),
//! measured in the same run. A counting global allocator proves that `decide` allocates
//! nothing: the program fails if any allocation happens inside the timed loops.
//!
//! Run: `cargo bench --bench policy_decide` (release build).

use npuhybrid::op::{DType, OpDims, OpKind, Tags};
use npuhybrid::policy::{builtin, builtin_names, builtin_source, compile_str, CompiledPolicy, OpQuery};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Counts every allocation and reallocation made by the process.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const REPEATS: usize = 31;
const DECISIONS_PER_REPEAT: usize = 200_000;

/// A mix of the ops an LLM and an audio model submit, tagged as applications tag them.
fn workload() -> Vec<(OpKind, DType, [usize; 3], Tags)> {
    let tag = |s: &str| Tags::parse(s).expect("well-formed tags");
    vec![
        (OpKind::Matmul, DType::F16, [512, 4096, 4096], tag("phase=prefill")),
        (OpKind::Matmul, DType::BF16, [4096, 11008, 4096], tag("phase=prefill")),
        (OpKind::Matmul, DType::F16, [1, 4096, 4096], tag("phase=decode")),
        (OpKind::Matmul, DType::F16, [8, 4096, 4096], tag("phase=decode")),
        (OpKind::Matmul, DType::F32, [128, 384, 1536], tag("")),
        (OpKind::Attention, DType::F16, [512, 128, 64], tag("phase=prefill")),
        (OpKind::RmsNorm, DType::F16, [1, 4096, 4096], tag("phase=decode")),
        (OpKind::Silu, DType::F32, [16, 16, 16], tag("")),
        (OpKind::Softmax, DType::F32, [128, 128, 128], tag("priority=realtime")),
        (OpKind::Add, DType::BF16, [512, 4096, 4096], tag("phase=prefill")),
    ]
}

fn query<'a>(kind: OpKind, dtype: DType, [m, n, k]: [usize; 3], tags: &'a Tags) -> OpQuery<'a> {
    OpQuery {
        kind,
        dtype,
        wtype: dtype,
        dims: OpDims { m, n, k, batch: 1, elements: m * n, bytes: (m * k + k * n + m * n) * dtype.size() },
        tags,
    }
}

/// Median ns per decision of `decide` over `queries`, and the allocations made while timing.
fn measure(queries: &[OpQuery], decide: impl Fn(&OpQuery) -> usize) -> (f64, u64) {
    let mut per_decision = Vec::with_capacity(REPEATS);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..REPEATS {
        let start = Instant::now();
        let mut sum = 0usize;
        for i in 0..DECISIONS_PER_REPEAT {
            let q = black_box(&queries[i % queries.len()]);
            sum = sum.wrapping_add(decide(q));
        }
        black_box(sum);
        per_decision.push(start.elapsed().as_nanos() as f64 / DECISIONS_PER_REPEAT as f64);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    per_decision.sort_by(f64::total_cmp);
    (per_decision[REPEATS / 2], allocations)
}

fn main() {
    let mix = workload();
    let queries: Vec<OpQuery> =
        mix.iter().map(|(kind, dtype, dims, tags)| query(*kind, *dtype, *dims, tags)).collect();
    println!(
        "policy decision cost: median of {REPEATS} runs x {DECISIONS_PER_REPEAT} decisions over {} ops",
        queries.len()
    );
    println!(
        "{:<18} {:>6} {:>14} {:>16} {:>9} {:>12}",
        "policy", "rules", "tables ns/op", "rule walk ns/op", "speedup", "allocations"
    );
    // The counter must see allocations where there are some, or its zeros prove nothing.
    let default = builtin("default").expect("built in");
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    black_box(default.explain(&queries[0]));
    let seen = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert!(seen > 0, "the counting allocator saw no allocation in explain");
    println!("(allocation counter check: one explain() made {seen} allocations)");
    let mut failed = false;
    for name in builtin_names() {
        let policy: std::sync::Arc<CompiledPolicy> = builtin(name).expect("listed");
        // Agreement first: a fast wrong answer is worth nothing.
        for q in &queries {
            assert_eq!(policy.decide(q).rule_index, policy.decide_by_rules(q));
        }
        let (tables, allocs) = measure(&queries, |q| {
            let d = policy.decide(q);
            d.rule_index + d.candidates.len()
        });
        let (walk, _) = measure(&queries, |q| policy.decide_by_rules(q));
        println!(
            "{:<18} {:>6} {:>14.1} {:>16.1} {:>8.1}x {:>12}",
            name,
            policy.rules().len() - 1,
            tables,
            walk,
            walk / tables,
            allocs
        );
        failed |= allocs != 0;
    }
    // Compiling is what a policy swap costs (parse, check, includes, tables).
    println!("compile time (parse + check + tables), median of {REPEATS} runs:");
    for name in builtin_names() {
        let source = builtin_source(name).expect("listed");
        let mut times: Vec<f64> = (0..REPEATS)
            .map(|_| {
                let start = Instant::now();
                let policy = compile_str(name, source).expect("built-in compiles");
                black_box(policy);
                start.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!("{name:<18} {:>8.0} us", times[REPEATS / 2]);
    }
    if failed {
        eprintln!("FAILED: decide allocated on the hot path");
        std::process::exit(1);
    }
}
