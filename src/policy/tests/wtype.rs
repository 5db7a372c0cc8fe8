//! `wtype`: rules that match the weight's type (a matmul's b), as tables and as rules.

use super::super::compile_str;
use super::*;

fn with_wtype(q: OpQuery<'_>, wtype: DType) -> OpQuery<'_> {
    OpQuery { wtype, ..q }
}

const SRC: &str = "rule q4 {\n  when op = matmul and wtype in [q4_0, q4_g128]\n  use cpu\n}\n\
                   rule q8 {\n  when wtype = q8_0 and m = 1\n  use gpu, cpu\n}\n\
                   rule rest {\n  use npu, cpu\n}\n";

#[test]
fn rules_match_the_weight_type_not_the_op_dtype() {
    let p = compile_str("t.nhp", SRC).unwrap_or_else(|e| panic!("{e}"));
    let t = tags("");
    let label = |q: &OpQuery| p.decide(q).rule_label.to_string();
    let q = query(OpKind::Matmul, DType::F32, 1, 4096, 4096, &t);
    assert!(label(&q).starts_with("rest"), "{}", label(&q));
    assert!(label(&with_wtype(q, DType::Q4_0)).starts_with("q4"));
    assert!(label(&with_wtype(q, DType::Q4G128)).starts_with("q4"));
    assert!(label(&with_wtype(q, DType::Q8_0)).starts_with("q8"));
    let prefill = query(OpKind::Matmul, DType::F16, 64, 4096, 4096, &t);
    assert!(label(&with_wtype(prefill, DType::Q8_0)).starts_with("rest"), "m = 64 fails q8's m = 1");
    for wtype in DType::ALL {
        for q in [q, prefill] {
            let q = with_wtype(q, wtype);
            assert_eq!(p.decide(&q).rule_index, p.decide_by_rules(&q), "{wtype}");
        }
    }
    let why = p.explain(&with_wtype(prefill, DType::Q4_1));
    assert!(why.contains("wtype is q4_1, not wtype in [q4_0, q4_g128]"), "{why}");
    assert!(p.dump().contains("wtype = q8_0"), "{}", p.dump());
}

#[test]
fn a_query_of_a_quantized_matmul_carries_its_weight_type() {
    use crate::op::{OpDesc, OpParams, TensorView};
    let a = TensorView::contiguous(1, DType::F32, &[1, 64], 0);
    let b = TensorView::contiguous(2, DType::Q4_0, &[8, 64], 0);
    let c = TensorView::contiguous(3, DType::F32, &[1, 8], 0);
    let op =
        OpDesc::new(OpKind::Matmul, &[a, b], c).with_params(OpParams { trans_b: true, ..Default::default() });
    let q = OpQuery::of(&op);
    assert_eq!((q.dtype, q.wtype), (DType::F32, DType::Q4_0));
    let p = compile_str("t.nhp", SRC).expect("valid");
    assert!(p.decide(&q).rule_label.starts_with("q4"));
}

#[test]
fn wtype_errors_and_shadowing() {
    let e = compile_str("t.nhp", "rule r {\n  when wtype = q5_0\n  use cpu\n}\n").unwrap_err();
    assert!(e.headline().starts_with("t.nhp:2:16: error: unknown wtype 'q5_0'"), "{}", e.headline());
    // A rule for one weight type does not hide a later rule for every weight type ...
    let ok = "rule a {\n  when wtype = q4_0\n  use cpu\n}\nrule b {\n  when op = matmul\n  use gpu\n}\n";
    assert!(compile_str("t.nhp", ok).is_ok());
    // ... but a rule for all of them hides a later one for one.
    let bad = "rule a {\n  when op = matmul\n  use cpu\n}\nrule b {\n  when op = matmul and wtype = q4_0\n  use gpu\n}\n";
    let e = compile_str("t.nhp", bad).unwrap_err();
    assert!(e.headline().contains("rule 'b' is unreachable"), "{}", e.headline());
}
