//! The `npuhybrid-policy` tool: exit codes and what it prints.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_npuhybrid-policy")).args(args).output().expect("the tool runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_accepts_builtins_and_files() {
    let o = run(&["check", "llm_inference"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "llm_inference: ok: policy llm_inference (9 rules, 0 warnings)\n");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/battery_saver.nhp");
    let o = run(&["check", path]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn check_rejects_with_the_checker_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.nhp");
    std::fs::write(&path, "rule r {\n  use cpu, tpu\n}\n").expect("writable");
    let o = run(&["check", path.to_str().expect("utf-8 path")]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        format!(
            "{}:2:12: error: unknown device 'tpu' (expected cpu, gpu or npu)\n2 |   use cpu, tpu\n  |            ^^^\n",
            path.display()
        )
    );
}

#[test]
fn explain_shows_the_decision() {
    let o = run(&[
        "explain",
        "llm_inference",
        "--op",
        "matmul",
        "--dtype",
        "f16",
        "--m",
        "1",
        "--n",
        "4096",
        "--k",
        "4096",
        "--tag",
        "phase=decode",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("#0 gemv [policies/llm_inference.nhp:15]: MATCHES (op = matmul and m = 1)"),
        "{text}"
    );
    assert!(text.contains("decision: rule #0 gemv"), "{text}");
    assert!(text.contains("  gpu: candidate 1"), "{text}");
    assert!(text.contains("  npu: not considered: the rule does not list it"), "{text}");
}

#[test]
fn dump_prints_the_tables_and_usage_errors_exit_2() {
    let o = run(&["dump", "default"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("dispatch table"));
    assert_eq!(run(&["explain", "default"]).status.code(), Some(2));
    assert_eq!(run(&["frobnicate", "default"]).status.code(), Some(2));
    assert_eq!(run(&["explain", "default", "--op", "conv"]).status.code(), Some(2));
}

/// What a new user mistypes: the errors list what would have been accepted.
#[test]
fn errors_list_the_valid_choices() {
    let o = run(&["explain", "default", "--op", "matmull"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown op 'matmull' (one of matmul, add,"), "{}", stderr(&o));
    let o = run(&["explain", "default", "--op", "matmul", "--dtype", "fp32"]);
    assert!(stderr(&o).contains("unknown dtype 'fp32' (one of f32, f16, bf16"), "{}", stderr(&o));
    let o = run(&["check", "llm-inference"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("'llm-inference' is neither a file nor a built-in policy (battery_saver, continuous_audio, default, llm_inference)"),
        "{}",
        stderr(&o)
    );
}
