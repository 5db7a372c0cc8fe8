//! Build step: parse, check and compile every built-in policy (`policies/*.nhp`) with the
//! crate's own policy front end, so an invalid built-in fails the build with the checker's
//! message; then embed the texts and their compiled dumps (see src/policy/builtin.rs).

// The front end of src/policy, compiled into this build script. Those files reach other
// crate types through `super::`, which here is this module.
#[allow(dead_code)]
#[path = "../src/op/dtype.rs"]
mod dtype;
#[allow(dead_code)]
#[path = "../src/op/kind.rs"]
mod kind;
#[allow(dead_code)]
#[path = "../src/device/power.rs"]
mod power;

#[allow(dead_code)]
#[path = "../src/policy/ast.rs"]
mod ast;
#[allow(dead_code)]
#[path = "../src/policy/check.rs"]
mod check;
#[allow(dead_code)]
#[path = "../src/policy/check_thermal.rs"]
mod check_thermal;
#[allow(dead_code)]
#[path = "../src/policy/check_values.rs"]
mod check_values;
#[allow(dead_code)]
#[path = "../src/policy/compile.rs"]
mod compile;
#[allow(dead_code)]
#[path = "../src/policy/compiled.rs"]
mod compiled;
#[allow(dead_code)]
#[path = "../src/policy/diag.rs"]
mod diag;
#[allow(dead_code)]
#[path = "../src/policy/dump.rs"]
mod dump;
#[allow(dead_code)]
#[path = "../src/policy/limits.rs"]
mod limits;
#[allow(dead_code)]
#[path = "../src/policy/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "../src/policy/program.rs"]
mod program;
#[allow(dead_code)]
#[path = "../src/policy/syntax.rs"]
mod syntax;
#[allow(dead_code)]
#[path = "../src/policy/types.rs"]
mod types;
#[allow(dead_code)]
#[path = "../src/policy/units.rs"]
mod units;

use diag::PolicyError;
use dtype::DType;
use kind::OpKind;
use power::PowerMode;
use std::fmt::Write;
use std::path::{Path, PathBuf};

pub fn run() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let dir = root.join("policies");
    for watched in
        ["policies", "src/policy", "src/files.rs", "src/op/dtype.rs", "src/op/kind.rs", "src/device/power.rs"]
    {
        println!("cargo:rerun-if-changed={watched}");
    }
    let policies = read_policies(&dir);
    let names: Vec<&str> = policies.iter().map(|(n, _, _)| n.as_str()).collect();
    let text_of = |name: &str| policies.iter().find(|(n, _, _)| n == name).map(|(_, _, t)| t.as_str());
    let loader = load::BuiltinLoader {
        builtins: &text_of,
        names: &names,
        max_depth: limits::PolicyLimits::default().max_include_depth,
    };
    let mut out = String::new();
    let _ = writeln!(out, "const BUILTIN_NAMES: &[&str] = &{names:?};");
    let _ = writeln!(out, "const BUILTIN_SOURCES: &[&str] = &[");
    for (_, path, _) in &policies {
        let _ = writeln!(out, "    include_str!({:?}),", path.display().to_string());
    }
    let _ = writeln!(out, "];");
    let _ = writeln!(out, "#[cfg(test)]\nconst BUILTIN_DUMPS: &[&str] = &[");
    for (name, _, text) in &policies {
        let origin = format!("policies/{name}.nhp");
        match compile::compile_source(&origin, text, &loader, &limits::PolicyLimits::default()) {
            Ok(policy) => {
                for w in policy.warnings() {
                    for line in w.lines() {
                        println!("cargo:warning={line}");
                    }
                }
                let _ = writeln!(out, "    {:?},", policy.dump());
            }
            Err(e) => fail(&e),
        }
    }
    let _ = writeln!(out, "];");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets this"));
    std::fs::write(out_dir.join("builtin_policies.rs"), out).expect("OUT_DIR is writable");
}

/// `(name, path, text)` of every `*.nhp` in `dir`, sorted by name.
fn read_policies(dir: &Path) -> Vec<(String, PathBuf, String)> {
    let mut found: Vec<(String, PathBuf, String)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?.strip_suffix(".nhp")?.to_string();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            Some((name, path, text))
        })
        .collect();
    found.sort();
    found
}

/// Stops the build with the checker's message, exactly as `npuhybrid-policy check` prints it.
fn fail(e: &PolicyError) -> ! {
    eprintln!("{e}");
    for line in e.to_string().lines() {
        println!("cargo:warning={line}");
    }
    std::process::exit(1);
}
