//! The dispatch tables decide exactly as the rules read in order would, and `explain` agrees.

use super::*;
use rand::{Rng, SeedableRng};

/// A policy whose rules overlap in every way the tables handle: size classes on several
/// features, tags with one or more values, dtype sets and a catch-all.
const MIXED: &str = r#"
rule gemv {
    when op = matmul and m = 1
    use gpu, cpu
}
rule decode_bf16 {
    when op = matmul and tag phase in [decode, generate] and dtype = bf16
    use gpu, npu, cpu
}
rule big_k {
    when op = matmul and k >= 4096 and n < 512
    use npu, cpu
}
rule prefill_mid {
    when op = matmul and tag phase = prefill and m >= 64 and m <= 1024 and tag priority = realtime
    use npu, gpu, cpu
    strategy earliest_completion
}
rule small_any {
    when elements <= 4096 and batch = 1
    use cpu
}
rule bytes_big {
    when bytes > 8 MiB and dtype in [f16, bf16]
    use gpu, cpu
    strategy least_loaded
}
rule norm {
    when op in [rmsnorm, layernorm] and n >= 1024
    use gpu, cpu
}
"#;

fn random_tags(rng: &mut impl Rng) -> Tags {
    let mut t = Tags::new();
    let phases = ["prefill", "decode", "generate", "other"];
    if rng.random_bool(0.7) {
        t.set("phase", phases[rng.random_range(0..phases.len())]);
    }
    if rng.random_bool(0.5) {
        t.set("priority", ["realtime", "batch"][rng.random_range(0..2)]);
    }
    t
}

fn random_size(rng: &mut impl Rng) -> usize {
    // Mostly near the thresholds the policies use, sometimes anything.
    let near = [0, 1, 2, 31, 32, 63, 64, 511, 512, 1023, 1024, 1025, 2047, 2048, 4095, 4096, 4097];
    if rng.random_bool(0.8) {
        near[rng.random_range(0..near.len())]
    } else {
        rng.random_range(0..1 << 24)
    }
}

fn check_agrees(p: &CompiledPolicy, seed: u64, count: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..count {
        let tags = random_tags(&mut rng);
        let q = OpQuery {
            kind: OpKind::ALL[rng.random_range(0..OpKind::COUNT)],
            dtype: DType::ALL[rng.random_range(0..DType::ALL.len())],
            wtype: DType::ALL[rng.random_range(0..DType::ALL.len())],
            dims: OpDims {
                m: random_size(&mut rng),
                n: random_size(&mut rng),
                k: random_size(&mut rng),
                batch: [1, 1, 2, 8][rng.random_range(0..4)],
                elements: random_size(&mut rng),
                bytes: random_size(&mut rng) * [1, 2, 1024][rng.random_range(0..3)],
            },
            tags: &tags,
        };
        let by_tables = p.decide(&q).rule_index;
        let by_rules = p.decide_by_rules(&q);
        assert_eq!(by_tables, by_rules, "{}: {q:?}\n{}", p.name(), p.dump());
        let explained = p.explain(&q);
        let line = format!("decision: rule #{by_rules} ");
        assert!(explained.contains(&line), "{explained}");
    }
}

#[test]
fn tables_agree_with_rules_on_builtins() {
    for name in builtin_names() {
        let p = builtin(name).expect("listed");
        check_agrees(&p, 7, 3000);
    }
}

#[test]
fn tables_agree_with_rules_on_overlapping_rules() {
    let p = compile_str("mixed.nhp", MIXED).unwrap_or_else(|e| panic!("{e}"));
    check_agrees(&p, 11, 20000);
}

#[test]
fn tables_cut_size_classes() {
    let p = compile_str("mixed.nhp", MIXED).expect("valid");
    let dump = p.dump();
    // matmul cells are cut on m (the feature with most thresholds there).
    assert!(dump.contains("    m = 1: #0 gemv\n"), "{dump}");
    assert!(dump.contains("    64 <= m <= 1024: "), "{dump}");
}

#[test]
fn unmatched_ops_take_the_implicit_rule() {
    let p = compile_str("t.nhp", "rule r {\n  when op = matmul\n  use npu, cpu\n}\n").expect("valid");
    let none = tags("");
    let d = p.decide(&query(OpKind::Softmax, DType::F32, 8, 8, 8, &none));
    assert_eq!(d.rule_label, IMPLICIT_RULE);
    assert_eq!(d.rule_index, 1);
    assert_eq!(d.strategy, Strategy::EarliestCompletion);
    assert_eq!(d.candidates, [DeviceClass::Npu, DeviceClass::Gpu, DeviceClass::Cpu]);
}

#[test]
fn explain_says_why_each_rule_did_not_match() {
    let p = builtin("llm_inference").expect("built in");
    let t = tags("phase=prefill");
    let text = p.explain(&query(OpKind::Matmul, DType::F16, 128, 384, 1536, &t));
    assert!(text.contains("#0 gemv [policies/llm_inference.nhp:15]: no, m is 128, not m = 1"), "{text}");
    assert!(
        text.contains(
            "#1 decode [policies/llm_inference.nhp:21]: no, tag phase is prefill, not tag phase = decode"
        ),
        "{text}"
    );
    assert!(
        text.contains("#2 prefill_huge [policies/llm_inference.nhp:27]: no, m is 128, not m >= 1024"),
        "{text}"
    );
    assert!(text.contains("#3 prefill [policies/llm_inference.nhp:34]: MATCHES"), "{text}");
    assert!(text.contains("decision: rule #3 prefill"), "{text}");
    assert!(text.contains("  npu: candidate 1"), "{text}");
    let none = tags("");
    let text = p.explain(&query(OpKind::Matmul, DType::F16, 128, 384, 1536, &none));
    assert!(text.contains("no, the op has no tag phase, needed by tag phase = prefill"), "{text}");
}
