//! One test per kind of checker error, each asserting the exact message and position.

use super::super::compile_str;

/// The first error's headline (`t.nhp:line:col: error: message`).
fn error(src: &str) -> String {
    match compile_str("t.nhp", src) {
        Ok(_) => panic!("policy was accepted:\n{src}"),
        Err(e) => e.headline(),
    }
}

fn warnings(src: &str) -> Vec<String> {
    let p = compile_str("t.nhp", src).unwrap_or_else(|e| panic!("rejected:\n{e}"));
    p.warnings().iter().map(|w| w.lines().next().unwrap_or_default().to_string()).collect()
}

const BACKSTOP: &str = "rule rest {\n  use cpu\n}\n";

#[test]
fn renders_line_column_and_caret() {
    let e = compile_str("t.nhp", "device tpu {\n  enabled = true\n}\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "t.nhp:1:8: error: unknown device 'tpu' (expected cpu, gpu or npu)\n\
         1 | device tpu {\n  |        ^^^"
    );
}

#[test]
fn reports_every_error_not_just_the_first() {
    let e = compile_str("t.nhp", "device tpu {}\ndevice npu { power = fast }\n").unwrap_err();
    assert_eq!(e.diagnostics.len(), 2);
    assert_eq!(
        e.diagnostics[1].headline(),
        "t.nhp:2:22: error: unknown power 'fast' (expected default, powersaver, balanced, performance or turbo)"
    );
}

#[test]
fn syntax_error() {
    assert_eq!(
        error("rule r {\n  use cpu gpu\n}\n"),
        "t.nhp:2:11: error: syntax error: expected ',', ';', '}' or a line break, found 'gpu'"
    );
}

#[test]
fn unknown_device() {
    assert_eq!(
        error("rule r {\n  use cpu, tpu\n}\n"),
        "t.nhp:2:12: error: unknown device 'tpu' (expected cpu, gpu or npu)"
    );
}

#[test]
fn unknown_op() {
    assert_eq!(
        error("rule r {\n  when op = matmull\n  use cpu\n}\n"),
        "t.nhp:2:13: error: unknown op 'matmull' (expected matmul, add, mul, scale, silu, gelu, softmax, rmsnorm, layernorm, rope, attention or copy)"
    );
}

#[test]
fn unknown_dtype() {
    assert_eq!(
        error("rule r {\n  when dtype in [f16, fp8]\n  use cpu\n}\n"),
        "t.nhp:2:23: error: unknown dtype 'fp8' (expected f32, f16, bf16, i8 or i32)"
    );
}

#[test]
fn unknown_field() {
    assert_eq!(
        error("device npu {\n  powr = balanced\n}\n"),
        "t.nhp:2:3: error: unknown field 'powr' in a device block (expected enabled, power, precision, max_in_flight, batch_rows, pool or keep_warm)"
    );
    assert_eq!(
        error("rule r {\n  when rows > 4\n  use cpu\n}\n"),
        "t.nhp:2:8: error: unknown field 'rows' in a condition (expected op, dtype, wtype, m, n, k, batch, elements, bytes or tag <key>)"
    );
    assert_eq!(
        error("fallback {\n  retry = 2\n}\n"),
        "t.nhp:2:3: error: unknown field 'retry' in a fallback block (expected retries, degrade_after or degrade_for)"
    );
}

#[test]
fn unknown_unit() {
    assert_eq!(
        error("device npu {\n  pool = 64 Mb\n}\n"),
        "t.nhp:2:13: error: unknown unit 'Mb' (expected B, KiB, MiB, GiB, TiB, KB, MB or GB)"
    );
}

#[test]
fn unknown_strategy_axis_action_metric() {
    assert_eq!(
        error("rule r {\n  use cpu\n  strategy fastest\n}\n"),
        "t.nhp:3:12: error: unknown strategy 'fastest' (expected first_available, least_loaded or earliest_completion)"
    );
    assert_eq!(
        error("thermal t {\n  when npu heat above 70 C\n  clear below 60 C\n  do exclude\n}\n"),
        "t.nhp:2:12: error: unknown metric 'heat' (expected temperature or power)"
    );
    assert_eq!(
        error("thermal t {\n  when npu temperature above 70 C\n  clear below 60 C\n  do cool\n}\n"),
        "t.nhp:4:6: error: unknown action 'cool' (expected power, shift or exclude)"
    );
}

#[test]
fn type_mismatch() {
    assert_eq!(
        error("device gpu {\n  enabled = 3\n}\n"),
        "t.nhp:2:13: error: type mismatch: 'enabled' takes true or false, found the number 3"
    );
    assert_eq!(
        error("rule r {\n  when op < matmul\n  use cpu\n}\n"),
        "t.nhp:2:11: error: type mismatch: op takes '= name' or 'in [names]'"
    );
    assert_eq!(
        error("rule r {\n  when m >= 4 MiB\n  use cpu\n}\n"),
        "t.nhp:2:15: error: type mismatch: 'm' is a plain number and takes no unit, found 'MiB'"
    );
    assert_eq!(
        error("fallback {\n  degrade_for = 5 MiB\n}\n"),
        "t.nhp:2:19: error: type mismatch: 'degrade_for' is a duration, but 'MiB' is a unit of a size in bytes"
    );
    assert_eq!(
        error("device npu {\n  max_in_flight = fast\n}\n"),
        "t.nhp:2:19: error: type mismatch: 'max_in_flight' takes a number, found the name 'fast'"
    );
}

#[test]
fn missing_unit_and_out_of_range() {
    assert_eq!(
        error("fallback {\n  degrade_for = 5\n}\n"),
        "t.nhp:2:17: error: missing unit: 'degrade_for' is a duration (us, ms, s or min)"
    );
    assert_eq!(
        error("device npu {\n  max_in_flight = 0\n}\n"),
        "t.nhp:2:19: error: 'max_in_flight' must be a whole number from 1 to 1024, found 0"
    );
    // Found by the policy_mutate fuzz loop: a huge duration used to panic in Duration.
    assert_eq!(
        error("fallback {\n  degrade_for = 99999999999999999999 min\n}\n"),
        "t.nhp:2:17: error: 'degrade_for' must be from 0 s to 1 day, found 99999999999999999999 min"
    );
    assert_eq!(
        error("device npu {\n  pool = 2 TiB\n}\n"),
        "t.nhp:2:10: error: 'pool' must be from 0 B to 1 TiB, found 2 TiB"
    );
}

#[test]
fn ratios_must_sum_to_one() {
    let src = "rule r {\n  when op = matmul\n  use npu, gpu, cpu\n  split rows npu 0.6, gpu 0.3\n}\n";
    assert_eq!(error(src), "t.nhp:4:14: error: split ratios sum to 0.9, not 1");
}

#[test]
fn split_needs_matmul_only() {
    let src = "rule r {\n  use npu, gpu, cpu\n  split rows dynamic npu, gpu\n}\n";
    assert_eq!(
        error(src),
        "t.nhp:3:3: error: split applies to matmul only, but rule 'r' also matches add, mul, scale, silu, gelu, softmax, rmsnorm, layernorm, rope, attention, copy: add 'when op = matmul'"
    );
}

#[test]
fn thermal_without_hysteresis() {
    assert_eq!(
        error("thermal hot {\n  when npu temperature above 80 C\n  do exclude\n}\n"),
        "t.nhp:1:9: error: thermal rule 'hot' has no hysteresis: add 'clear below <level>' under its trigger of 80 C"
    );
    assert_eq!(
        error("thermal hot {\n  when npu temperature above 80 C\n  clear below 85 C\n  do exclude\n}\n"),
        "t.nhp:3:15: error: thermal rule 'hot' has no hysteresis: it clears below 85 C, which is not under its trigger of 80 C"
    );
}

#[test]
fn thermal_thresholds_out_of_order() {
    let src = "thermal warm {\n  when npu temperature above 90 C\n  clear below 80 C\n  do shift 0.5\n}\n\
               emergency thermal hot {\n  when npu temperature above 85 C\n  clear below 75 C\n  do exclude\n}\n";
    assert_eq!(
        error(src),
        "t.nhp:6:19: error: thermal thresholds out of order: emergency 'hot' triggers at 85 C, not above 'warm' at 90 C"
    );
}

#[test]
fn thermal_metric_unit_mismatch() {
    assert_eq!(
        error("thermal hot {\n  when npu temperature above 80 W\n  clear below 70 C\n  do exclude\n}\n"),
        "t.nhp:2:33: error: type mismatch: 'temperature' is a temperature, but 'W' is a unit of a power"
    );
}

#[test]
fn shadowed_rule_is_unreachable() {
    let src = "rule big {\n  when op = matmul and m >= 64\n  use gpu, cpu\n}\n\
               rule bigger {\n  when op = matmul and m >= 128 and dtype = f16\n  use npu, cpu\n}\n";
    assert_eq!(
        error(src),
        "t.nhp:5:6: error: rule 'bigger' is unreachable: rule 'big' (line 1) matches every op it matches first"
    );
}

#[test]
fn rule_reachable_through_one_cell_is_kept() {
    // `f16` is shadowed by `a`, `bf16` is not: `b` is reachable.
    let src = "rule a {\n  when dtype = f16\n  use cpu\n}\nrule b {\n  when dtype in [f16, bf16]\n  use gpu, cpu\n}\n";
    assert!(compile_str("t.nhp", src).is_ok());
}

#[test]
fn contradictory_conditions() {
    assert_eq!(
        error("rule r {\n  when m > 8 and m < 4\n  use cpu\n}\n"),
        "t.nhp:1:6: error: rule 'r' can never match: its conditions on m exclude each other"
    );
}

#[test]
fn op_without_a_device_that_can_run_it() {
    assert_eq!(
        error("rule npu_only {\n  when op in [matmul, softmax]\n  use npu\n}\n"),
        "t.nhp:3:3: error: no enabled device can run softmax in f32 under rule 'npu_only': npu runs matmul only (and 2 more op/dtype pairs)"
    );
    assert_eq!(
        error("device cpu {\n  enabled = false\n}\ndevice gpu {\n  enabled = false\n}\n"),
        "t.nhp:2:13: error: no enabled device can run add in f32: keep cpu enabled as the backstop for every op"
    );
}

#[test]
fn limits_rule_count() {
    let rules: String = (0..600).map(|i| format!("rule r{i} {{\n  when m = {i}\n  use cpu\n}}\n")).collect();
    assert_eq!(error(&rules), "t.nhp:2049:6: error: too many rules: the limit is 512");
}

#[test]
fn duplicates() {
    assert_eq!(
        error("rule r {\n  use cpu\n}\nrule r {\n  when m = 1\n  use cpu\n}\n"),
        "t.nhp:4:6: error: rule 'r' is defined twice (first at line 1)"
    );
    assert_eq!(error("rule r {\n  use cpu, cpu\n}\n"), "t.nhp:2:12: error: device cpu is listed twice");
    assert_eq!(
        error("rule r {\n  when m = 1\n}\n"),
        "t.nhp:1:6: error: rule 'r' has no 'use' list: say which devices run its ops"
    );
}

#[test]
fn warnings_for_suspicious_but_legal_policies() {
    let src = format!(
        "device gpu {{\n  enabled = false\n  power = turbo\n}}\n\
         rule r {{\n  when op = softmax\n  use npu, gpu, cpu\n}}\n\
         rule m {{\n  when op = matmul\n  use npu\n}}\n\
         thermal warm {{\n  when npu temperature above 80 C\n  clear below 70 C\n  do shift 0.5\n}}\n{BACKSTOP}"
    );
    assert_eq!(
        warnings(&src),
        [
            "t.nhp:3:3: warning: gpu has no power modes: 'power' only configures the npu",
            "t.nhp:7:3: warning: rule 'r' uses npu, which runs matmul only: it is never chosen for this rule's ops",
            "t.nhp:7:3: warning: rule 'r' uses gpu, which this policy disables",
            "t.nhp:11:3: warning: rule 'm' uses only npu: when npu is unavailable or fails, its ops run on the backstop \
             (any device that can, the CPU first), not where this rule says (list cpu to say so)",
            "t.nhp:13:9: warning: npu has thermal rules but no emergency level (add 'emergency thermal ...')",
        ]
    );
}

#[test]
fn keep_warm_takes_a_short_duration_and_only_configures_the_cpu() {
    assert_eq!(
        error("device cpu {\n  keep_warm = 2 s\n}\n"),
        "t.nhp:2:15: error: 'keep_warm' must be from 0 s to 100 ms, found 2 s"
    );
    assert_eq!(
        error("device cpu {\n  keep_warm = 5\n}\n"),
        "t.nhp:2:15: error: missing unit: 'keep_warm' is a duration (us, ms, s or min)"
    );
    let src = format!("device gpu {{\n  keep_warm = 1 ms\n}}\n{BACKSTOP}");
    assert_eq!(warnings(&src), ["t.nhp:2:3: warning: 'keep_warm' only configures the cpu, not the gpu"]);
    let p = compile_str("t.nhp", &format!("device cpu {{\n  keep_warm = 50 us\n}}\n{BACKSTOP}")).unwrap();
    let cpu = p.settings(crate::policy::DeviceClass::Cpu);
    assert_eq!(cpu.keep_warm, Some(std::time::Duration::from_micros(50)));
}

/// Issue 17, item 4: a policy of one 250 KB line with an error every few bytes. Each
/// diagnostic used to repeat the whole line (8 KB of source gave a 10.8 MB message, 250 KB ran
/// out of memory) and positions rescanned the text from its start.
#[test]
#[cfg_attr(
    miri,
    ignore = "24,000 errors take over 10 minutes under Miri and it times itself; safe Rust, run natively and under ASan"
)]
fn errors_on_one_huge_line_stay_bounded() {
    use crate::policy::diag::{EXCERPT_SIDE, MAX_SHOWN};
    let body: String = (0..24_000).map(|i| format!("x{i} = 1;")).collect();
    let src = format!("device cpu {{\n{body}\n}}\n");
    assert!(src.len() > 200_000 && src.len() < 256 * 1024);
    let started = std::time::Instant::now();
    let e = compile_str("t.nhp", &src).unwrap_err();
    let msg = e.to_string();
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", started.elapsed());
    assert!(msg.len() < 128 * 1024, "message of {} bytes", msg.len());
    assert_eq!(e.diagnostics.len(), MAX_SHOWN);
    assert!(e.not_shown > 1000, "{} not shown", e.not_shown);
    assert!(msg.ends_with(&format!("more errors (only the first {MAX_SHOWN} are shown)")), "{msg}");
    for d in &e.diagnostics {
        let line = d.excerpt.lines().next().unwrap();
        assert!(line.chars().count() < 2 * EXCERPT_SIDE + 20, "{line}");
    }
}

/// The window keeps the caret under the offending text, with ellipses where the line was cut,
/// and columns count characters, not bytes.
#[test]
fn long_lines_show_a_window_around_the_column() {
    let before = format!("policy \"{}\"; device cpu {{ ", "é".repeat(100));
    let src = format!("# é\n{before}bogus = 1 }} # {}\n{BACKSTOP}", "b".repeat(100));
    let e = compile_str("t.nhp", &src).unwrap_err();
    let d = &e.diagnostics[0];
    assert_eq!(d.location, format!("t.nhp:2:{}", before.chars().count() + 1));
    let mut lines = d.excerpt.lines();
    let (text, caret) = (lines.next().unwrap(), lines.next().unwrap());
    assert!(text.starts_with("2 | …") && text.ends_with('…'), "{text}");
    let col = caret.find('^').unwrap();
    assert_eq!(&text[text.char_indices().nth(col).unwrap().0..][..5], "bogus", "{text}\n{caret}");
}
