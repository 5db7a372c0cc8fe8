//! The XRT backend through real XRT 2.25 (Debian's libxrt2 + the xdna shim plugin
//! libxrt_driver_xdna) and our registration shim, into a fake amdxdna device
//! (`tests/xrt_real/fake_amdxdna.c`, LD_PRELOADed) that computes the GEMM. It runs only inside
//! the trixie root that `.ci/xrt-real` builds (which sets NPUHYBRID_XRT_REAL=1 and the paths);
//! elsewhere it says so and passes. What it proves: registration + hardware context creation
//! through real XRT, buffer types from the flags we pass, the argument order and widths real
//! XRT encodes into the command, instruction upload, syncs, results exact.

use half::bf16;
use npuhybrid::backend::xrt::XrtBackend;
use npuhybrid::backend::{Backend, OpMemory};
use npuhybrid::device::{amdxdna, PowerMode, SysRoot};
use npuhybrid::memory::{Buffer, HostPool};
use npuhybrid::op::{DType, OpDesc, OpKind, TensorView};
use std::path::Path;
use std::sync::Arc;

fn buffer(pool: &Arc<HostPool>, id: u64, bytes: &[u8]) -> Arc<Buffer> {
    let b = Buffer::pooled(id, pool.alloc(bytes.len()).unwrap(), bytes.len());
    b.write(0, bytes).unwrap();
    Arc::new(b)
}

fn matmul(backend: &XrtBackend, m: usize, k: usize, n: usize) {
    let pool = HostPool::new(0);
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 5) % 7) as f32 - 3.0).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i * 3) % 5) as f32 - 2.0).collect();
    let bf = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes()).collect() };
    let c_buf = buffer(&pool, 3, &vec![0u8; m * n * 4]);
    let op = OpDesc::new(
        OpKind::Matmul,
        &[
            TensorView::contiguous(1, DType::BF16, &[m, k], 0),
            TensorView::contiguous(2, DType::BF16, &[k, n], 0),
        ],
        TensorView::contiguous(3, DType::F32, &[m, n], 0),
    );
    let mem = OpMemory::new(vec![buffer(&pool, 1, &bf(&a)), buffer(&pool, 2, &bf(&b)), c_buf.clone()]);
    backend.execute(&op, &mem).expect("the matmul runs through real XRT");
    let mut out = vec![0u8; m * n * 4];
    c_buf.read(0, &mut out).unwrap();
    for i in 0..m {
        for j in 0..n {
            let want: f32 = (0..k).map(|kk| a[i * k + kk] * b[kk * n + j]).sum();
            let got = f32::from_le_bytes(out[(i * n + j) * 4..][..4].try_into().unwrap());
            assert_eq!(got, want, "C[{i},{j}] of {m}x{k}x{n}");
        }
    }
}

#[test]
fn real_xrt_and_the_xdna_shim_run_matmuls_on_the_fake_device() {
    if std::env::var("NPUHYBRID_XRT_REAL").as_deref() != Ok("1") {
        eprintln!("skipped: runs inside the XRT 2.25 root of .ci/xrt-real (NPUHYBRID_XRT_REAL=1)");
        return;
    }
    let kernels = std::env::var("NPUHYBRID_XRT_KERNELS").expect("the kernel directory");
    let log_path = std::env::var("FAKE_AMDXDNA_LOG").expect("the fake device's log");
    let backend = XrtBackend::probe(Some(Path::new(&kernels))).unwrap_or_else(|e| panic!("probe: {e}"));
    let info = backend.info();
    let detail = |key: &str| info.details.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    assert!(info.driver.starts_with("XRT 2.25"), "{}", info.driver);
    let path = detail("kernel loading").unwrap();
    assert!(path.contains("libnpuhybrid_xrt_shim.so"), "{path}");
    let built_for = detail("kernels built for").unwrap();
    assert!(built_for.starts_with("1022:1502 (XDNA1") && built_for.ends_with("(checked)"), "{built_for}");

    // One xclbin with two instruction streams. 70 x 130 x 40 with the default 64 rows per
    // launch: the 64 x 64 x 16 stream, 2 * 3 * 3 launches with padding; 1 x 1 x 1: the 32-row one.
    matmul(&backend, 70, 130, 40);
    matmul(&backend, 1, 1, 1);

    let log = std::fs::read_to_string(&log_path).unwrap();
    eprintln!("fake device log:\n{log}");
    assert!(!log.contains("error") && !log.contains("unsupported"), "{log}");
    assert_eq!(
        log.lines().filter(|l| l.contains(" create ")).count(),
        1,
        "one context for both streams: {log}"
    );
    assert!(log.contains("cu 0 func=0 pdi=npuhybrid-fake-p"), "the xclbin's PDI reached the device: {log}");
    let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    assert_eq!(count("gemm 64x64x16 ninstr=4"), 18, "{log}");
    assert_eq!(count("gemm 32x64x16 ninstr=4"), 1, "{log}");

    // Telemetry from the hwmon, and no GET_INFO while the NPU is runtime-suspended.
    let r = backend.readings();
    assert_eq!(r.power_w, Some(1.5), "NPU_power from the amdxdna hwmon");
    assert_eq!(r.clock_mhz, None, "suspended: no clock query");
    assert!(
        !std::fs::read_to_string(&log_path).unwrap().contains("get_info param 3"),
        "GET_INFO woke the NPU"
    );

    // Power. The script runs this test twice: as root (SET_STATE, system-wide) and without
    // CAP_SYS_ADMIN (the mode becomes QoS of re-created hardware contexts).
    let lines_before = log.lines().count();
    let wait_for = |what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(&log_path).unwrap();
            if log.lines().skip(lines_before).any(|l| l.contains(what)) {
                return log;
            }
            assert!(std::time::Instant::now() < deadline, "no '{what}' in the device log:\n{log}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    if amdxdna::may_set_power_mode(&SysRoot::real()) {
        eprintln!("power: SET_STATE path (CAP_SYS_ADMIN)");
        let err = backend.set_power_mode(PowerMode::Powersaver).unwrap_err();
        assert!(
            matches!(&err, npuhybrid::Error::Unsupported(m) if m.contains("does not offer that power mode")),
            "{err:?}"
        );
        let err = backend.set_power_mode(PowerMode::Turbo).unwrap_err();
        assert!(matches!(&err, npuhybrid::Error::Unsupported(m) if m.contains("refuse turbo")), "{err:?}");
        backend.set_power_mode(PowerMode::Performance).unwrap();
        wait_for("set_state power_mode=3");
        let node = SysRoot::real().path("/dev/accel/accel0");
        assert_eq!(amdxdna::get_power_mode(&node).unwrap(), PowerMode::Performance);
    } else {
        eprintln!("power: QoS path (no CAP_SYS_ADMIN)");
        backend.set_power_mode(PowerMode::Powersaver).unwrap();
        let log = wait_for("create gops=0 fps=0 latency=0 priority=0x280");
        assert!(!log.contains("set_state"), "SET_STATE must not be tried without CAP_SYS_ADMIN: {log}");
        assert!(log.lines().skip(lines_before).any(|l| l == "ctx 1 destroy"), "old context closed: {log}");
    }
    matmul(&backend, 5, 7, 3);
}
