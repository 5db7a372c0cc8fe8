//! The fuzz targets' bodies (fuzz/src/lib.rs) on seeded random inputs, so stable-Rust CI
//! runs them on every change. `cargo fuzz` (docs/POLICY.md) explores far more; this loop
//! keeps what it found fixed. NPUHYBRID_FUZZ_ITERS sets the inputs per target (default 2000).

#[path = "../fuzz/src/lib.rs"]
mod bodies;

use rand::{Rng, RngCore, SeedableRng};

fn iterations() -> usize {
    std::env::var("NPUHYBRID_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(2000)
}

fn random_inputs(seed: u64, mut run: impl FnMut(&[u8])) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; 4096];
    for _ in 0..iterations() {
        let len = rng.random_range(0..buf.len());
        rng.fill_bytes(&mut buf[..len]);
        run(&buf[..len]);
    }
}

#[test]
fn policy_parse_on_random_bytes_and_damaged_builtins() {
    random_inputs(1, bodies::policy_parse);
    // Random bytes rarely get past the first token: also damage real policies byte by byte.
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    for _ in 0..iterations() {
        let names = npuhybrid::policy::builtin_names();
        let src = npuhybrid::policy::builtin_source(names[rng.random_range(0..names.len())]);
        let mut bytes = src.expect("listed").as_bytes().to_vec();
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(0..bytes.len());
            match rng.random_range(0..3) {
                0 => bytes[at] = rng.random(),
                1 => {
                    bytes.remove(at);
                }
                _ => {
                    let symbols = b"{}[],=;\n\"#<>0.5 ";
                    bytes.insert(at, symbols[rng.random_range(0..symbols.len())])
                }
            }
        }
        bodies::policy_parse(&bytes);
    }
}

#[test]
fn policy_mutate_on_random_inputs() {
    random_inputs(3, bodies::policy_mutate);
}

#[test]
fn op_descriptor_on_random_inputs() {
    random_inputs(4, bodies::op_descriptor);
}

#[test]
fn gguf_parse_on_random_and_damaged_files() {
    random_inputs(5, bodies::gguf_parse);
    // Random bytes stop at the magic: damage a real file byte by byte instead.
    let good =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/gguf/layouts.gguf")).expect("seed");
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    for _ in 0..iterations() {
        let mut bytes = good.clone();
        for _ in 0..rng.random_range(1..4) {
            // Most edits in the header and directory, where the reader makes decisions.
            let at = rng.random_range(0..1200.min(bytes.len()));
            bytes[at] = rng.random();
        }
        if rng.random_range(0..4) == 0 {
            bytes.truncate(rng.random_range(0..bytes.len()));
        }
        bodies::gguf_parse(&bytes);
    }
}

/// Inputs that once crashed a target (fuzz/regressions/TARGET/*), replayed on every run.
#[test]
fn fuzz_regressions() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    type Target = (&'static str, fn(&[u8]));
    let targets: [Target; 4] = [
        ("policy_parse", bodies::policy_parse),
        ("policy_mutate", bodies::policy_mutate),
        ("op_descriptor", bodies::op_descriptor),
        ("gguf_parse", bodies::gguf_parse),
    ];
    let mut replayed = 0;
    for (name, run) in targets {
        let Ok(entries) = std::fs::read_dir(dir.join(name)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable directory").path();
            run(&std::fs::read(&path).expect("readable file"));
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no regression inputs found in {}", dir.display());
}
