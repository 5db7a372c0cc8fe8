//! Policy files and device configuration as untrusted input (SECURITY.md): the limits on a
//! policy's size, rules, thermal rules and include depth give clear errors; includes stay in
//! the policy directory; device configuration writes only the known sysfs attributes of the
//! devices it found, whatever the caller or a policy says.

use npuhybrid::device::{ConfigPlan, SysRoot};
use npuhybrid::policy::{
    builtin_names, compile_file, compile_str, CompiledPolicy, PolicyError, PolicyLimits,
};
use npuhybrid::{PolicySource, Runtime, RuntimeConfig};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().expect("has a parent")).expect("temp dir is writable");
    fs::write(&path, text).expect("temp dir is writable");
    path
}

fn headline(r: Result<CompiledPolicy, PolicyError>) -> String {
    match r {
        Ok(p) => panic!("accepted: {}", p.dump()),
        Err(e) => e.headline(),
    }
}

/// `n` rules that are all reachable: each matches one value of m.
fn rules(n: usize) -> String {
    (0..n).map(|i| format!("rule r{i} {{\n  when m = {i}\n  use cpu\n}}\n")).collect()
}

#[test]
fn rule_count_limit_names_the_first_rule_over_it() {
    assert!(compile_str("t.nhp", &rules(512)).is_ok());
    // The 513th rule starts on line 512 * 4 + 1.
    assert_eq!(
        headline(compile_str("t.nhp", &rules(513))),
        "t.nhp:2049:6: error: too many rules: the limit is 512"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(dir.path(), "many.nhp", &rules(4));
    let three = PolicyLimits { max_rules: 3, ..PolicyLimits::default() };
    assert_eq!(
        headline(compile_file(&path, &three)),
        format!("{}:13:6: error: too many rules: the limit is 3", path.display())
    );
    assert!(compile_file(&path, &PolicyLimits::default()).is_ok());
}

#[test]
fn rule_count_limit_counts_included_rules() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "base.nhp", &rules(3));
    let top =
        write(dir.path(), "top.nhp", "include \"base.nhp\"\nrule mine {\n  when m = 99\n  use cpu\n}\n");
    let three = PolicyLimits { max_rules: 3, ..PolicyLimits::default() };
    let e = headline(compile_file(&top, &three));
    assert!(e.ends_with("error: too many rules: the limit is 3"), "{e}");
}

#[test]
fn thermal_rule_count_limit() {
    let thermal = |n: usize| -> String {
        (0..n)
            .map(|i| format!("thermal t{i} {{\n  when npu temperature above 70 C\n  clear below 60 C\n  do shift 0.5\n}}\n"))
            .collect()
    };
    let ok = format!("rule all {{\n  use cpu\n}}\n{}", thermal(64));
    assert!(
        compile_str("t.nhp", &ok).is_ok(),
        "{:?}",
        compile_str("t.nhp", &ok).err().map(|e| e.to_string())
    );
    let over = format!("rule all {{\n  use cpu\n}}\n{}", thermal(65));
    // The 65th thermal rule starts after the 3-line rule and 64 five-line thermal rules.
    assert_eq!(
        headline(compile_str("t.nhp", &over)),
        "t.nhp:324:9: error: too many thermal rules: the limit is 64"
    );
}

#[test]
fn size_limit_for_text_and_files() {
    let big = "# padding\n".repeat(256 * 1024 / 10 + 1);
    assert_eq!(
        headline(compile_str("t.nhp", &big)),
        format!("t.nhp: error: the policy is {} bytes, larger than the limit of 262144 bytes", big.len())
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(dir.path(), "big.nhp", &big);
    assert_eq!(
        headline(compile_file(&path, &PolicyLimits::default())),
        format!("{0}: error: {0} is larger than the limit of 262144 bytes for a policy file", path.display())
    );
    // An endless device is not read at all: policies are regular files (issue 17, item 7).
    let started = std::time::Instant::now();
    let zero = Path::new("/dev/zero");
    assert_eq!(
        headline(compile_file(zero, &PolicyLimits::default())),
        "/dev/zero: error: cannot read /dev/zero: is a character device, not a regular file"
    );
    assert!(started.elapsed().as_secs() < 5);
    // An included file is limited the same way.
    write(dir.path(), "big_base.nhp", &big);
    let top = write(dir.path(), "top.nhp", "include \"big_base.nhp\"\n");
    let e = compile_file(&top, &PolicyLimits::default()).unwrap_err().to_string();
    assert!(e.contains("is larger than the limit of 262144 bytes for a policy file"), "{e}");
}

#[test]
fn binary_and_non_utf8_files_are_rejected_with_a_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bin.nhp");
    fs::write(&path, [0x72, 0x75, 0xff, 0xfe, 0x00, 0x0a]).expect("writable");
    assert_eq!(
        headline(compile_file(&path, &PolicyLimits::default())),
        format!("{0}: error: {0} is not UTF-8 text", path.display())
    );
    // NUL bytes and control characters in valid UTF-8 are syntax errors with a position.
    let e = headline(compile_str("t.nhp", "rule r {\n  use cpu\u{0}\n}\n"));
    assert!(e.starts_with("t.nhp:2:"), "{e}");
}

#[test]
fn includes_stay_inside_the_policy_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let outside = write(dir.path(), "outside.nhp", "rule r {\n  use cpu\n}\n");
    let policies = dir.path().join("policies");
    fs::create_dir_all(&policies).expect("writable");
    let root = policies.canonicalize().expect("exists");
    let leaves = |name: &str| format!("include \"{name}\" leaves the policy directory {}", root.display());

    // `..`, an absolute path, and a symlink inside the directory that points outside it.
    let up = write(&policies, "up.nhp", "include \"../outside.nhp\"\n");
    assert!(headline(compile_file(&up, &PolicyLimits::default())).ends_with(&leaves("../outside.nhp")));
    let abs_name = outside.display().to_string();
    let abs = write(&policies, "abs.nhp", &format!("include \"{abs_name}\"\n"));
    assert!(headline(compile_file(&abs, &PolicyLimits::default())).ends_with(&leaves(&abs_name)));
    std::os::unix::fs::symlink(&outside, policies.join("link.nhp")).expect("symlink");
    let via_link = write(&policies, "via_link.nhp", "include \"link.nhp\"\n");
    assert!(headline(compile_file(&via_link, &PolicyLimits::default())).ends_with(&leaves("link.nhp")));
    // A subdirectory's include may come back up to the root, not above it.
    write(&policies, "base.nhp", "rule r {\n  use cpu\n}\n");
    let sub = write(&policies, "sub/top.nhp", "include \"../base.nhp\"\n");
    let at_root = PolicyLimits { include_root: Some(policies.clone()), ..PolicyLimits::default() };
    assert!(compile_file(&sub, &at_root).is_ok());
    let e = headline(compile_file(&sub, &PolicyLimits::default()));
    assert!(e.contains("leaves the policy directory"), "{e}");
    // Only an explicit opt-in lets includes out.
    let allowed = PolicyLimits { allow_include_escape: true, ..PolicyLimits::default() };
    assert!(compile_file(&up, &allowed).is_ok());
    assert!(compile_file(&via_link, &allowed).is_ok());
    // A name without `.nhp` is a built-in name, never a path.
    let passwd = write(&policies, "passwd.nhp", "include \"../../../../etc/passwd\"\n");
    let e = headline(compile_file(&passwd, &PolicyLimits::default()));
    assert!(e.contains("unknown built-in policy \"../../../../etc/passwd\""), "{e}");
    // A policy given as text cannot include files at all.
    let e = headline(compile_str("t.nhp", &format!("include \"{abs_name}\"\n")));
    assert!(e.contains("only a policy loaded from a file may include files"), "{e}");
}

#[test]
fn include_depth_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    // f0 includes f1 ... f{n-1} includes the built-in default: depth n.
    let chain = |n: usize| -> PathBuf {
        for i in 0..n {
            let next = if i + 1 == n { "default".to_string() } else { format!("f{}_{n}.nhp", i + 1) };
            write(dir.path(), &format!("f{i}_{n}.nhp"), &format!("include \"{next}\"\n"));
        }
        dir.path().join(format!("f0_{n}.nhp"))
    };
    let limits = PolicyLimits::default();
    assert_eq!(limits.max_include_depth, 8);
    assert!(compile_file(&chain(8), &limits).is_ok(), "{}", headline(compile_file(&chain(8), &limits)));
    let e = compile_file(&chain(9), &limits).unwrap_err().to_string();
    assert!(e.contains("error: includes nest deeper than 8"), "{e}");
}

#[test]
fn a_rejected_policy_file_leaves_the_running_policy_in_place() {
    let rt = Runtime::new(RuntimeConfig {
        perf_cache_dir: None,
        telemetry_period: None,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    rt.load_policy(&PolicySource::Builtin("battery_saver".into())).expect("built in");
    let dir = tempfile::tempdir().expect("temp dir");
    let many = write(dir.path(), "many.nhp", &rules(600));
    let e = rt.load_policy(&PolicySource::File(many)).unwrap_err().to_string();
    assert!(e.contains("too many rules: the limit is 512"), "{e}");
    let up = write(dir.path(), "p/up.nhp", "include \"../many.nhp\"\n");
    let e = rt.load_policy(&PolicySource::File(up)).unwrap_err().to_string();
    assert!(e.contains("leaves the policy directory"), "{e}");
    assert_eq!(rt.policy().name(), "battery_saver");
}

/// Every file under `dir` with its contents (symlinks not followed).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("readable") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("stat");
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                out.insert(
                    path.strip_prefix(dir).expect("under dir").to_path_buf(),
                    fs::read(&path).expect("read"),
                );
            }
        }
    }
    out
}

/// A laptop-like tree: an amdgpu card, two cpufreq policies, plus decoys a bad path could hit.
fn fake_sys() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let link = |at: &str, target: &str| {
        let p = root.join(at);
        fs::create_dir_all(p.parent().expect("parent")).expect("writable");
        std::os::unix::fs::symlink(target, p).expect("symlink");
    };
    link("sys/class/drm/card1/device/driver", "../../../bus/pci/drivers/amdgpu");
    write(root, "sys/class/drm/card1/device/power_dpm_force_performance_level", "auto\n");
    // A card not driven by amdgpu, and a connector: neither may be touched.
    link("sys/class/drm/card0/device/driver", "../../../bus/pci/drivers/i915");
    write(root, "sys/class/drm/card0/device/power_dpm_force_performance_level", "auto\n");
    write(root, "sys/class/drm/card1-eDP-1/status", "connected\n");
    for p in ["policy0", "policy1"] {
        let d = format!("sys/devices/system/cpu/cpufreq/{p}");
        write(root, &format!("{d}/energy_performance_preference"), "balance_performance\n");
        write(
            root,
            &format!("{d}/energy_performance_available_preferences"),
            "default performance balance_power power\n",
        );
        write(root, &format!("{d}/scaling_governor"), "powersave\n");
    }
    write(root, "etc/passwd", "root:x:0:0::/root:/bin/sh\n");
    write(root, "sys/class/thermal/thermal_zone0/temp", "45000\n");
    dir
}

#[test]
fn configuration_writes_only_the_known_attributes() {
    let dir = fake_sys();
    let rt = Runtime::new(RuntimeConfig {
        perf_cache_dir: None,
        telemetry_period: None,
        sys_root: SysRoot::new(dir.path()),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let before = snapshot(dir.path());

    // Values that look like paths or shell are refused before anything is written.
    for (gpu, cpu) in [
        (Some("../../../../etc/passwd"), None),
        (None, Some("../../../../etc/passwd")),
        (None, Some("performance\nroot")),
        (Some("high; rm -rf /"), None),
    ] {
        let plan = ConfigPlan {
            npu_power_mode: None,
            gpu_performance_level: gpu.map(String::from),
            cpu_energy_preference: cpu.map(String::from),
        };
        assert!(rt.configure(&plan, false).is_err(), "{plan:?} accepted");
        assert_eq!(snapshot(dir.path()), before, "{plan:?} changed files");
    }
    // Policies never touch the tree: loading each built-in changes nothing.
    for name in builtin_names() {
        rt.load_policy(&PolicySource::Builtin(name.to_string())).expect("built in");
    }
    assert_eq!(snapshot(dir.path()), before);

    // A real change writes exactly the three known attributes of the devices found.
    let plan = ConfigPlan {
        npu_power_mode: None,
        gpu_performance_level: Some("high".into()),
        cpu_energy_preference: Some("power".into()),
    };
    let dry = rt.configure(&plan, true).expect("dry run");
    assert_eq!(dry.len(), 3, "{dry:?}");
    assert_eq!(snapshot(dir.path()), before, "a dry run changed files");
    rt.configure(&plan, false).expect("applies");
    let after = snapshot(dir.path());
    let changed: Vec<String> = after
        .iter()
        .filter(|(path, text)| before.get(*path) != Some(*text))
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert_eq!(
        changed,
        [
            "sys/class/drm/card1/device/power_dpm_force_performance_level",
            "sys/devices/system/cpu/cpufreq/policy0/energy_performance_preference",
            "sys/devices/system/cpu/cpufreq/policy1/energy_performance_preference",
        ]
    );
    assert_eq!(after.len(), before.len(), "files were created or removed");
}

#[test]
fn policy_text_cannot_name_a_path_for_device_settings() {
    // Device settings take enumerated values; a path or string where one is expected is a
    // checker error, not something the runtime would write anywhere.
    for text in [
        "device npu {\n  power = \"/sys/class/accel/accel0/x\"\n}\n",
        "device gpu {\n  power = /etc/passwd\n}\n",
        "device cpu {\n  path = \"/sys/devices/system/cpu/cpufreq/policy0/scaling_governor\"\n}\n",
    ] {
        let e = compile_str("t.nhp", text).err().map(|e| e.to_string());
        assert!(e.as_deref().is_some_and(|e| e.starts_with("t.nhp:2:")), "{text}: {e:?}");
    }
}

/// Descriptors from C go through dense-stride filling before validation: shapes whose product
/// overflows must be rejected as invalid, not panic (overflow checks are on in debug builds,
/// where this once came back as NH_ERR_PANIC).
#[test]
fn overflowing_shapes_from_c_are_invalid_arguments_not_panics() {
    use npuhybrid::ffi::*;
    let mut d: nh_runtime_desc = unsafe { std::mem::zeroed() };
    assert_eq!(nh_runtime_desc_init(&mut d), nh_status::NH_OK);
    let empty = std::ffi::CString::new("").unwrap();
    d.perf_cache_dir = empty.as_ptr();
    let mut rt = nh_runtime::default();
    assert_eq!(nh_runtime_create(&d, &mut rt), nh_status::NH_OK);
    let mut b = nh_buffer::default();
    assert_eq!(nh_buffer_alloc(rt, 64, &mut b), nh_status::NH_OK);
    let tensor = |shape: &[u64]| {
        let mut t = nh_tensor {
            buffer: b,
            dtype: nh_dtype::NH_F32 as u32,
            rank: shape.len() as u32,
            ..Default::default()
        };
        t.shape[..shape.len()].copy_from_slice(shape);
        t
    };
    for shape in [&[1u64 << 20; 4][..], &[1 << 32, 1 << 32], &[u64::MAX, u64::MAX, 2], &[1 << 31, 1 << 31]] {
        let mut op: nh_op_desc = unsafe { std::mem::zeroed() };
        assert_eq!(nh_op_desc_init(&mut op), nh_status::NH_OK);
        op.kind = nh_op_kind::NH_OP_SCALE as u32;
        op.alpha = 1.0;
        op.inputs[0] = tensor(shape);
        op.output = tensor(&[16]);
        let mut ev = nh_event::default();
        assert_eq!(nh_submit(rt, &op, &mut ev), nh_status::NH_ERR_INVALID_ARGUMENT, "{shape:?}");
        op.inputs[0] = tensor(&[16]);
        op.output = tensor(shape);
        assert_eq!(nh_submit(rt, &op, &mut ev), nh_status::NH_ERR_INVALID_ARGUMENT, "{shape:?}");
    }
    assert_eq!(nh_runtime_destroy(rt), nh_status::NH_OK);
}

fn mkfifo(path: &Path) {
    fs::create_dir_all(path.parent().expect("parent")).expect("writable");
    let c = std::ffi::CString::new(path.to_str().expect("utf-8")).expect("no NUL");
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

/// Issue 17, item 7: FIFOs (and other special files) named by a caller, a policy or a fake
/// sysfs tree are refused at once with an error naming them; each used to block for ever.
#[test]
fn fifos_are_refused_instead_of_blocking() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("pipe.nhp");
    mkfifo(&fifo);
    let started = std::time::Instant::now();
    let rt = Runtime::new(RuntimeConfig {
        perf_cache_dir: None,
        telemetry_period: None,
        thermal_period: None,
        threads: 2,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let err = rt.map_file(&fifo).expect_err("a FIFO is no weight file").to_string();
    assert!(err.contains("pipe") && err.contains("FIFO"), "{err}");
    let err = rt.map_file(dir.path()).expect_err("a directory is no weight file").to_string();
    assert!(err.contains(&dir.path().display().to_string()) && err.contains("directory"), "{err}");
    let err = rt.load_policy(&PolicySource::File(fifo.clone())).expect_err("FIFO policy").to_string();
    assert!(err.contains("FIFO"), "{err}");
    let main = write(dir.path(), "main.nhp", "include \"pipe.nhp\"\nrule rest {\n  use cpu\n}\n");
    let err = rt.load_policy(&PolicySource::File(main)).expect_err("FIFO include").to_string();
    assert!(err.contains("FIFO"), "{err}");
    let err = rt.trace_start(&fifo).expect_err("a FIFO is no trace file").to_string();
    assert!(err.contains("FIFO"), "{err}");
    drop(rt);

    // Every sensor and configuration file of a caller's tree is a FIFO.
    let sys = fake_sys();
    for f in [
        "sys/class/thermal/thermal_zone0/temp",
        "sys/class/drm/card1/device/power_dpm_force_performance_level",
        "sys/devices/system/cpu/cpufreq/policy0/energy_performance_preference",
        "sys/devices/system/cpu/cpufreq/policy0/energy_performance_available_preferences",
    ] {
        fs::remove_file(sys.path().join(f)).expect("exists");
        mkfifo(&sys.path().join(f));
    }
    let rt = Runtime::new(RuntimeConfig {
        perf_cache_dir: None,
        telemetry_period: Some(std::time::Duration::from_millis(50)),
        sys_root: SysRoot::new(sys.path()),
        threads: 2,
        ..RuntimeConfig::default()
    })
    .expect("runtime over a tree of FIFOs");
    let _ = rt.configurable();
    let plan = ConfigPlan {
        npu_power_mode: None,
        gpu_performance_level: Some("high".into()),
        cpu_energy_preference: None,
    };
    assert!(rt.configure(&plan, false).is_err());
    drop(rt);
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
}

/// A machine with nothing configurable says so instead of answering an empty list.
#[test]
fn configurable_says_when_nothing_is() {
    let empty = tempfile::tempdir().expect("temp dir");
    let rt = Runtime::new(RuntimeConfig {
        perf_cache_dir: None,
        telemetry_period: None,
        thermal_period: None,
        sys_root: SysRoot::new(empty.path()),
        threads: 2,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let lines = rt.configurable();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, "nothing");
    assert!(
        lines[0].1.contains("no amdxdna NPU") && lines[0].1.contains(&empty.path().display().to_string())
    );
}
