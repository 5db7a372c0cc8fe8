//! The XRT backend end to end against `fake_xrt.c`, a stand-in for XRT's C API and for our
//! registration shim that behaves like an NPU running an mlir-aie matmul design (no NPU exists
//! on CI). Like XRT on amdxdna, it refuses `xrtDeviceLoadXclbinFile`, so kernels load through
//! the shim's entry points. This drives the real loaders, the symbol tables, argument widths,
//! buffer allocation by memory group, instruction upload, syncs in both directions, the tiling
//! pipeline and the in-flight limit. Runs against real XRT 2.25: `.ci/xrt-real`.

use half::bf16;
use npuhybrid::backend::xrt::manifest::file_sha256;
use npuhybrid::backend::xrt::XrtBackend;
use npuhybrid::backend::{Backend, OpMemory};
use npuhybrid::memory::{Buffer, HostPool};
use npuhybrid::op::{DType, OpDesc, OpKind, OpParams, TensorView};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

/// Builds the fake library with the system C compiler (the one Rust links with).
fn fake_library(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_xrt/fake_xrt.c");
    let out = dir.join("libfake_xrt.so");
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-lpthread")
        .status()
        .expect("a C compiler (cc) is needed to build the fake XRT");
    assert!(status.success(), "building {} failed", src.display());
    out
}

/// Tile m x k x n = 32 x 64 x 16, bf16 in, f32 out.
fn kernel_dir(dir: &Path) -> PathBuf {
    kernel_dir_with(dir, "kernels", "")
}

/// `extra` is spliced into the kernel's manifest entry.
fn kernel_dir_with(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let k = dir.join(name);
    std::fs::create_dir_all(&k).unwrap();
    std::fs::write(k.join("mm.xclbin"), "FAKE-XCLBIN 32 64 16\n").unwrap();
    std::fs::write(k.join("mm.insts.txt"), "06030100\n00000105\n00000001\n").unwrap();
    let sum = |f: &str| file_sha256(&k.join(f)).unwrap();
    std::fs::write(
        k.join("manifest.json"),
        r#"{ "format": 2, "device": "1022:1502", "kernels": [ {
            "op": "matmul", "dtype_in": "bf16", "dtype_out": "f32",
            "xclbin": "mm.xclbin", "xclbin_sha256": "XS",
            "instructions": [ { "tile": { "m": 32, "k": 64, "n": 16 }, "file": "mm.insts.txt", "sha256": "IS" } ],
            "gflops": 900 EXTRA } ] }"#
            .replace("EXTRA", extra)
            .replace("XS", &sum("mm.xclbin"))
            .replace("IS", &sum("mm.insts.txt")),
    )
    .unwrap();
    k
}

struct Fixture {
    _dir: tempfile::TempDir,
    backend: XrtBackend,
    counters: libloading::Library,
}

/// One backend for the whole test binary: XRT is loaded once per process.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let lib = fake_library(dir.path());
        std::env::set_var("NPUHYBRID_XRT_LIB", &lib);
        std::env::set_var("NPUHYBRID_XRT_SHIM", &lib);
        let backend = XrtBackend::probe(Some(&kernel_dir(dir.path()))).expect("fake NPU opens");
        let counters = unsafe { libloading::Library::new(&lib) }.unwrap();
        Fixture { _dir: dir, backend, counters }
    })
}

/// Tests share one backend and its counters: they take turns.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static M: std::sync::Mutex<()> = std::sync::Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fixture {
    fn reset(&self) {
        unsafe { self.counters.get::<unsafe extern "C" fn()>(b"fake_xrt_reset_counters").unwrap()() }
    }

    fn counter(&self, name: &[u8]) -> i64 {
        unsafe { self.counters.get::<unsafe extern "C" fn() -> i64>(name).unwrap()() }
    }
}

fn values(count: usize, seed: usize) -> Vec<f32> {
    (0..count).map(|i| ((i * 5 + seed * 11) % 7) as f32 - 3.0).collect()
}

fn buffer(pool: &Arc<HostPool>, id: u64, bytes: &[u8]) -> Arc<Buffer> {
    let b = Buffer::pooled(id, pool.alloc(bytes.len()).unwrap(), bytes.len());
    b.write(0, bytes).unwrap();
    Arc::new(b)
}

/// Runs C = A B on the fake NPU and compares with a host reference.
fn run_matmul(m: usize, k: usize, n: usize, trans_b: bool) {
    run_on(fixture(), m, k, n, trans_b)
}

fn run_on(f: &Fixture, m: usize, k: usize, n: usize, trans_b: bool) {
    let pool = HostPool::new(0);
    let a: Vec<f32> = values(m * k, 1);
    let b: Vec<f32> = values(k * n, 2);
    let to_bf16 =
        |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes()).collect() };
    let a_buf = buffer(&pool, 1, &to_bf16(&a));
    let b_buf = buffer(&pool, 2, &to_bf16(&b));
    let c_buf = buffer(&pool, 3, &vec![0u8; m * n * 4]);
    let b_shape = if trans_b { [n, k] } else { [k, n] };
    let op = OpDesc::new(
        OpKind::Matmul,
        &[
            TensorView::contiguous(1, DType::BF16, &[m, k], 0),
            TensorView::contiguous(2, DType::BF16, &b_shape, 0),
        ],
        TensorView::contiguous(3, DType::F32, &[m, n], 0),
    )
    .with_params(OpParams { trans_b, ..Default::default() });
    assert!(f.backend.supports(&op));
    let mem = OpMemory::new(vec![a_buf, b_buf, c_buf.clone()]);
    f.backend.execute(&op, &mem).unwrap();
    let mut out = vec![0u8; m * n * 4];
    c_buf.read(0, &mut out).unwrap();
    for i in 0..m {
        for j in 0..n {
            let want: f32 = (0..k)
                .map(|kk| {
                    let bv = if trans_b { b[j * k + kk] } else { b[kk * n + j] };
                    a[i * k + kk] * bv
                })
                .sum();
            let at = (i * n + j) * 4;
            let got = f32::from_le_bytes(out[at..at + 4].try_into().unwrap());
            assert_eq!(got, want, "C[{i},{j}] of {m}x{k}x{n}");
        }
    }
}

#[test]
fn matmuls_of_any_shape_run_on_the_fake_npu() {
    let _turn = serial();
    let f = fixture();
    let info = f.backend.info();
    assert!(info.available);
    assert_eq!(info.peak_gflops, 900.0);
    assert_eq!(info.dtypes, DType::BF16.bit());
    let path = info.details.iter().find(|(k, _)| k == "kernel loading").map(|(_, v)| v.as_str());
    assert!(path.unwrap_or_default().starts_with("xclbin registration + hardware context"), "{path:?}");
    f.reset();
    // 70 x 130 x 40 on 32 x 64 x 16 tiles: 3 * 3 * 3 launches, padded on every edge.
    run_matmul(70, 130, 40, false);
    assert_eq!(f.counter(b"fake_xrt_runs_started"), 27);
    assert_eq!(f.counter(b"fake_xrt_max_in_flight"), 3, "the default limit, pipelined");
    run_matmul(1, 1, 1, true);
    assert_eq!(f.counter(b"fake_xrt_runs_started"), 28);
}

#[test]
fn without_cap_sys_admin_or_amdxdna_power_modes_become_context_qos() {
    use npuhybrid::device::{amdxdna, PowerMode, SysRoot};
    if !amdxdna::find_npus(&SysRoot::real()).is_empty() {
        return; // a real NPU: this test is about the fake device
    }
    let _turn = serial();
    let f = fixture();
    let priority = || f.counter(b"fake_xrt_last_qos_priority");
    assert_eq!(priority(), 0, "contexts start without QoS");
    for (mode, want) in [(PowerMode::Powersaver, 0x280), (PowerMode::Turbo, 0x100), (PowerMode::Default, 0)] {
        f.backend.set_power_mode(mode).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while priority() != want {
            assert!(std::time::Instant::now() < deadline, "{mode}: QoS priority {:#x}", priority());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(f.counter(b"fake_xrt_contexts_open"), 1, "old contexts closed, one per kernel");
        run_matmul(9, 70, 17, false);
    }
    assert_eq!(f.backend.readings().power_w, None);
}

#[test]
fn unsupported_ops_are_refused_not_run() {
    let f = fixture();
    let a = TensorView::contiguous(1, DType::F32, &[4, 4], 0);
    let op = OpDesc::new(OpKind::Matmul, &[a, a], a);
    assert!(!f.backend.supports(&op), "no f32 kernel in the directory");
    let add = OpDesc::new(OpKind::Add, &[a, a], a);
    assert!(!f.backend.supports(&add));
    // bf16 activations with a quantized weight: the bf16 kernel's tiler reads float
    // elements only (it took this op, and would have panicked on the blocks).
    let x = TensorView::contiguous(1, DType::BF16, &[4, 128], 0);
    let w = TensorView::contiguous(2, DType::Q4G128, &[4, 128], 0);
    let c = TensorView::contiguous(3, DType::F32, &[4, 4], 0);
    let q =
        OpDesc::new(OpKind::Matmul, &[x, w], c).with_params(OpParams { trans_b: true, ..Default::default() });
    assert!(!f.backend.supports(&q), "quantized weights are refused");
    let bf = OpDesc::new(OpKind::Matmul, &[x, TensorView::contiguous(2, DType::BF16, &[4, 128], 0)], c)
        .with_params(OpParams { trans_b: true, ..Default::default() });
    assert!(f.backend.supports(&bf), "the same shapes in bf16 run");
}

#[test]
fn concurrent_ops_stay_within_the_in_flight_limit() {
    let _turn = serial();
    let f = fixture();
    f.reset();
    f.backend.set_limits(Some(2), Some(64));
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| run_matmul(96, 128, 48, false));
        }
    });
    f.backend.set_limits(None, None);
    assert_eq!(f.counter(b"fake_xrt_runs_started"), 4 * 3 * 2 * 3);
    assert_eq!(f.counter(b"fake_xrt_max_in_flight"), 2, "the policy's limit holds across ops");
}

#[test]
fn device_failures_carry_xrts_reason() {
    let _turn = serial();
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let wrong = kernel_dir_with(dir.path(), "wrong", r#", "opcode": 7"#);
    let backend = XrtBackend::probe(Some(&wrong)).expect("loads; the opcode is checked at run time");
    let a = TensorView::contiguous(1, DType::BF16, &[8, 8], 0);
    let c = TensorView::contiguous(3, DType::F32, &[8, 8], 0);
    let pool = HostPool::new(0);
    let mem = OpMemory::new(vec![buffer(&pool, 1, &[0u8; 128]), buffer(&pool, 3, &[0u8; 256])]);
    let op = OpDesc::new(OpKind::Matmul, &[a, a], c);
    let err = backend.execute(&op, &mem).unwrap_err();
    assert!(err.is_device_fault(), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("ERT_CMD_STATE_ERROR (5)") && msg.contains("opcode is not 3"), "{msg}");
    // The slots went back clean: the good backend still runs.
    drop(backend);
    let _ = f;
    run_matmul(5, 7, 3, false);

    let missing = tempfile::tempdir().unwrap();
    let err = XrtBackend::probe(Some(missing.path())).err().unwrap();
    assert!(err.contains("manifest.json"), "{err}");
    let bad = kernel_dir_with(dir.path(), "bad", r#", "kernel": "OTHER""#);
    let err = XrtBackend::probe(Some(&bad)).err().unwrap();
    assert!(err.contains("No such compute unit: OTHER"), "{err}");
}

#[test]
fn the_launch_height_follows_the_policys_batch_rows() {
    let _turn = serial();
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("two");
    std::fs::create_dir_all(&k).unwrap();
    std::fs::write(k.join("short.xclbin"), "FAKE-XCLBIN 32 64 16\n").unwrap();
    std::fs::write(k.join("tall.xclbin"), "FAKE-XCLBIN 128 64 16\n").unwrap();
    std::fs::write(k.join("i.txt"), "06030100\n").unwrap();
    let sum = |f: &str| file_sha256(&k.join(f)).unwrap();
    let entry = |x: &str, m: usize| {
        format!(
            r#"{{ "op": "matmul", "dtype_in": "bf16", "dtype_out": "f32", "xclbin": "{x}", "xclbin_sha256": "{}",
                "instructions": [ {{ "tile": {{ "m": {m}, "k": 64, "n": 16 }}, "file": "i.txt", "sha256": "{}" }} ] }}"#,
            sum(x),
            sum("i.txt")
        )
    };
    std::fs::write(
        k.join("manifest.json"),
        format!(
            r#"{{ "format": 2, "device": "1022:1502", "kernels": [ {}, {} ] }}"#,
            entry("short.xclbin", 32),
            entry("tall.xclbin", 128)
        ),
    )
    .unwrap();
    let backend = XrtBackend::probe(Some(&k)).expect("two kernels load");
    let pool = HostPool::new(0);
    let (m, kk, n) = (100, 64, 16);
    let a = TensorView::contiguous(1, DType::BF16, &[m, kk], 0);
    let b = TensorView::contiguous(2, DType::BF16, &[kk, n], 0);
    let c = TensorView::contiguous(3, DType::F32, &[m, n], 0);
    let mem = OpMemory::new(vec![
        buffer(&pool, 1, &vec![0u8; m * kk * 2]),
        buffer(&pool, 2, &vec![0u8; kk * n * 2]),
        buffer(&pool, 3, &vec![0u8; m * n * 4]),
    ]);
    let op = OpDesc::new(OpKind::Matmul, &[a, b], c);
    for (rows, launches) in [(64, 1), (16, 4), (500, 1)] {
        backend.set_limits(None, Some(rows));
        f.reset();
        backend.execute(&op, &mem).unwrap();
        assert_eq!(f.counter(b"fake_xrt_runs_started"), launches, "batch rows {rows}");
    }
}

/// Set in a child process (this binary run again) with the case to run.
const CHILD: &str = "NPUHYBRID_TEST_FAKE_XRT_CHILD";

/// Runs `child_case` in a process of its own (XRT and the shim are loaded once per process).
fn in_child(case: &str, envs: &[(&str, &str)]) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_case", "--nocapture", "--test-threads=1"])
        .env(CHILD, case)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "child {case} failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    stdout
        .lines()
        .find_map(|l| l.split_once("RESULT: ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_string()
}

#[test]
fn child_case() {
    let Ok(case) = std::env::var(CHILD) else { return };
    let dir = tempfile::tempdir().unwrap();
    let lib = fake_library(dir.path());
    std::env::set_var("NPUHYBRID_XRT_LIB", &lib);
    match XrtBackend::probe(Some(&kernel_dir(dir.path()))) {
        Err(reason) => println!("RESULT: unavailable: {reason}"),
        Ok(b) => {
            let path = b.info().details.iter().find(|(k, _)| k == "kernel loading").unwrap().1.clone();
            if case == "run" {
                let err = b.set_power_mode(npuhybrid::device::PowerMode::Turbo).unwrap_err();
                assert!(matches!(err, npuhybrid::Error::Unsupported(_)), "{err:?}");
                // The fixture's backend, through the C API this time.
                let f = Fixture {
                    _dir: dir,
                    backend: b,
                    counters: unsafe { libloading::Library::new(&lib) }.unwrap(),
                };
                run_on(&f, 37, 70, 20, false);
            }
            println!("RESULT: available: {path}");
        }
    }
}

#[test]
fn without_the_shim_an_amdxdna_like_xrt_leaves_the_npu_unavailable_and_says_why() {
    let r = in_child("probe", &[("NPUHYBRID_XRT_SHIM", "/nonexistent/libnpuhybrid_xrt_shim.so")]);
    assert!(r.starts_with("unavailable: "), "{r}");
    assert!(
        r.contains("xrtDeviceLoadXclbinFile(") && r.contains("load_axlf: Operation not supported"),
        "{r}"
    );
    assert!(r.contains("must be registered through npuhybrid's XRT shim (libnpuhybrid_xrt_shim.so)"), "{r}");
    assert!(r.ends_with("could not be loaded: /nonexistent/libnpuhybrid_xrt_shim.so"), "{r}");
}

#[test]
fn where_xrt_can_load_xclbins_the_c_api_path_still_runs() {
    let r = in_child(
        "run",
        &[("NPUHYBRID_XRT_SHIM", "/nonexistent/libnpuhybrid_xrt_shim.so"), ("FAKE_XRT_LEGACY_LOAD", "1")],
    );
    assert_eq!(r, "available: XRT's C API (xrtDeviceLoadXclbinFile)");
}
