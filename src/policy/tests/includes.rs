//! Includes, inheritance and the limits on untrusted policy files.

use super::*;
use std::path::Path;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("temp dir is writable");
    }
    std::fs::write(&path, text).expect("temp dir is writable");
    path
}

fn headline(r: Result<CompiledPolicy, PolicyError>) -> String {
    match r {
        Ok(p) => panic!("accepted: {}", p.dump()),
        Err(e) => e.headline(),
    }
}

#[test]
fn own_rules_come_before_inherited_ones_and_replace_same_names() {
    let src = "include \"default\"\nrule matmul {\n  when op = matmul\n  use cpu\n}\n";
    let p = compile_str("t.nhp", src).unwrap_or_else(|e| panic!("{e}"));
    let labels: Vec<&str> = p.rules().iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels[0], "matmul");
    assert_eq!(labels.iter().filter(|l| **l == "matmul").count(), 1);
    assert!(!p.rules()[0].def.inherited);
    assert!(p.rules()[1].def.inherited);
    // Inherited settings and thermal rules stay.
    assert_eq!(p.settings(DeviceClass::Npu).max_in_flight, Some(3));
    assert_eq!(p.thermal_rules().len(), builtin("default").expect("built in").thermal_rules().len());
    assert_eq!(p.name(), "t");
}

#[test]
fn unknown_builtin_and_file_includes_from_strings() {
    assert_eq!(
        headline(compile_str("t.nhp", "include \"defualt\"\n")),
        "t.nhp:1:9: error: unknown built-in policy \"defualt\" (expected battery_saver, continuous_audio, default or llm_inference)"
    );
    assert_eq!(
        headline(compile_str("t.nhp", "include \"base.nhp\"\n")),
        "t.nhp:1:9: error: cannot include the file \"base.nhp\" here: only a policy loaded from a file may include files"
    );
}

#[test]
fn file_includes_resolve_next_to_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "base.nhp", "include \"default\"\ndevice npu {\n  power = powersaver\n}\n");
    let top = write(dir.path(), "top.nhp", "include \"base.nhp\"\ndevice npu {\n  max_in_flight = 1\n}\n");
    let p = compile_file(&top, &PolicyLimits::default()).unwrap_or_else(|e| panic!("{e}"));
    let npu = p.settings(DeviceClass::Npu);
    assert_eq!(npu.power_mode, Some(crate::device::PowerMode::Powersaver));
    assert_eq!(npu.max_in_flight, Some(1));
    assert_eq!(npu.batch_rows, Some(64));
}

#[test]
fn errors_in_included_files_name_that_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "base.nhp", "device tpu {\n}\n");
    let top = write(dir.path(), "top.nhp", "include \"base.nhp\"\n");
    let e = compile_file(&top, &PolicyLimits::default()).unwrap_err();
    let base = dir.path().join("base.nhp").display().to_string();
    assert_eq!(
        e.diagnostics[0].headline(),
        format!("{base}:1:8: error: unknown device 'tpu' (expected cpu, gpu or npu)")
    );
    assert_eq!(
        e.diagnostics[1].headline(),
        format!("{}:1:9: error: included policy \"base.nhp\" has errors", top.display())
    );
}

#[test]
fn includes_cannot_leave_the_policy_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "outside.nhp", "rule r {\n  use cpu\n}\n");
    let top = write(dir.path(), "policies/top.nhp", "include \"../outside.nhp\"\n");
    let root = dir.path().join("policies").canonicalize().expect("exists");
    assert_eq!(
        headline(compile_file(&top, &PolicyLimits::default())),
        format!(
            "{}:1:9: error: include \"../outside.nhp\" leaves the policy directory {}",
            top.display(),
            root.display()
        )
    );
    let allowed = PolicyLimits { allow_include_escape: true, ..PolicyLimits::default() };
    assert!(compile_file(&top, &allowed).is_ok());
}

#[test]
fn include_cycles_and_depth() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = write(dir.path(), "a.nhp", "include \"b.nhp\"\n");
    write(dir.path(), "b.nhp", "include \"a.nhp\"\n");
    let e = compile_file(&a, &PolicyLimits::default()).unwrap_err();
    let b = dir.path().join("b.nhp").display().to_string();
    assert_eq!(
        e.diagnostics[0].headline(),
        format!("{b}:1:9: error: include cycle: \"a.nhp\" includes itself")
    );
    let shallow = PolicyLimits { max_include_depth: 1, ..PolicyLimits::default() };
    write(dir.path(), "c.nhp", "include \"default\"\n");
    let d = write(dir.path(), "d.nhp", "include \"c.nhp\"\n");
    let e = compile_file(&d, &shallow).unwrap_err();
    assert_eq!(
        e.diagnostics[0].headline(),
        format!("{}:1:9: error: includes nest deeper than 1", dir.path().join("c.nhp").display())
    );
}

#[test]
fn file_size_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let big = write(dir.path(), "big.nhp", &"# padding\n".repeat(100));
    let small = PolicyLimits { max_file_bytes: 500, ..PolicyLimits::default() };
    assert_eq!(
        headline(compile_file(&big, &small)),
        format!("{0}: error: {0} is larger than the limit of 500 bytes for a policy file", big.display())
    );
}
