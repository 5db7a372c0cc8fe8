//! `npuhybrid-policy check|explain|dump FILE`: check a policy, show its compiled tables, or
//! show how it decides for one op. FILE is a policy file, or the name of a built-in policy.
//!
//! Exit status: 0 on success, 1 when the policy has errors, 2 on a usage error.

use npuhybrid::op::{DType, OpDims, OpKind, Tags};
use npuhybrid::policy::{self, CompiledPolicy, OpQuery, PolicyLimits};
use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "\
usage: npuhybrid-policy check FILE
       npuhybrid-policy dump FILE
       npuhybrid-policy explain FILE --op KIND [--dtype DTYPE] [--wtype DTYPE] [--m M] [--n N] [--k K]
                                    [--batch B] [--elements E] [--bytes BYTES] [--tag KEY=VALUE]...
FILE is a policy file (.nhp) or the name of a built-in policy (default, llm_inference, ...).
explain fills in elements (m*n*batch) and bytes (of a, b and c) when not given.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(usage) => {
            eprintln!("npuhybrid-policy: {usage}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let (command, file, rest) = match args {
        [c, f, rest @ ..] => (c.as_str(), f.as_str(), rest),
        [c] if c == "--help" || c == "-h" => {
            println!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        _ => return Err("expected a command and a policy".into()),
    };
    if !matches!(command, "check" | "dump" | "explain") {
        return Err(format!("unknown command '{command}'"));
    }
    if command != "explain" && !rest.is_empty() {
        return Err(format!("'{command}' takes no options"));
    }
    let query = if command == "explain" { Some(parse_query(rest)?) } else { None };
    let policy = match load(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            if !Path::new(file).exists() {
                eprintln!(
                    "'{file}' is neither a file nor a built-in policy ({})",
                    policy::builtin_names().join(", ")
                );
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in policy.warnings() {
        eprintln!("{w}");
    }
    match command {
        "check" => println!(
            "{file}: ok: policy {} ({} rules, {} warnings)",
            policy.name(),
            policy.rules().len() - 1,
            policy.warnings().len()
        ),
        "dump" => print!("{}", policy.dump()),
        _ => {
            let (kind, dtype, wtype, dims, tags) = query.expect("parsed above for explain");
            let q = OpQuery { kind, dtype, wtype: wtype.unwrap_or(dtype), dims, tags: &tags };
            print!("{}", policy.explain(&q));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A policy file, or a built-in policy when no such file exists.
fn load(file: &str) -> Result<std::sync::Arc<CompiledPolicy>, policy::PolicyError> {
    let path = Path::new(file);
    if !path.exists() {
        if let Some(p) = policy::builtin(file) {
            return Ok(p);
        }
    }
    policy::compile_file(path, &PolicyLimits::default()).map(std::sync::Arc::new)
}

type Query = (OpKind, DType, Option<DType>, OpDims, Tags);

/// "one of matmul, add, ...", for error messages.
fn op_names() -> String {
    format!("one of {}", OpKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "))
}

fn dtype_names() -> String {
    format!("one of {}", DType::ALL.iter().map(|d| d.name()).collect::<Vec<_>>().join(", "))
}

fn parse_query(args: &[String]) -> Result<Query, String> {
    let mut kind = None;
    let mut dtype = DType::F32;
    let mut wtype = None;
    let mut dims = OpDims { batch: 1, ..OpDims::default() };
    let (mut elements, mut bytes) = (None, None);
    let mut tags = Tags::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?.as_str();
        let number =
            || value.parse::<usize>().map_err(|_| format!("{flag}: '{value}' is not a whole number"));
        match flag.as_str() {
            "--op" => {
                kind = Some(
                    OpKind::from_name(value)
                        .ok_or_else(|| format!("unknown op '{value}' ({})", op_names()))?,
                )
            }
            "--dtype" => {
                dtype = DType::from_name(value)
                    .ok_or_else(|| format!("unknown dtype '{value}' ({})", dtype_names()))?
            }
            "--wtype" => {
                wtype = Some(
                    DType::from_name(value)
                        .ok_or_else(|| format!("unknown dtype '{value}' ({})", dtype_names()))?,
                )
            }
            "--m" => dims.m = number()?,
            "--n" => dims.n = number()?,
            "--k" => dims.k = number()?,
            "--batch" => dims.batch = number()?,
            "--elements" => elements = Some(number()?),
            "--bytes" => bytes = Some(number()?),
            "--tag" => {
                let parsed = Tags::parse(value)?;
                for (k, v) in parsed.iter() {
                    tags.set(k, v);
                }
            }
            other => return Err(format!("unknown option '{other}'")),
        }
    }
    let kind = kind.ok_or("explain needs --op")?;
    // Defaults as `OpDesc::dims` computes them for a dense matmul-shaped op.
    let out = dims.m.saturating_mul(dims.n).saturating_mul(dims.batch);
    dims.elements = elements.unwrap_or(out);
    let ins = dims.m.saturating_mul(dims.k).saturating_add(dims.k.saturating_mul(dims.n));
    let default_bytes = if kind == OpKind::Matmul {
        ins.saturating_mul(dims.batch).saturating_add(out)
    } else {
        out.saturating_mul(2)
    };
    dims.bytes = bytes.unwrap_or(default_bytes.saturating_mul(dtype.size()));
    Ok((kind, dtype, wtype, dims, tags))
}
