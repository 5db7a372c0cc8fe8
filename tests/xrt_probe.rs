//! The XRT backend's probe in a process of its own, so its stderr can be checked: without an
//! NPU it must print nothing (XRT writes a build banner and errors to stderr by default).

use npuhybrid::backend::xrt::XrtBackend;
use std::process::Command;

const CHILD: &str = "NPUHYBRID_TEST_PROBE_CHILD";

/// Runs `probe` in a child process (this test binary, filtered to `child_probe`).
fn probe_in_child(envs: &[(&str, &str)]) -> (String, String) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--exact", "child_probe", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "child failed: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let reason = stdout
        .lines()
        .find_map(|l| l.split_once("REASON: ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("child printed no reason: {stdout}"))
        .to_string();
    (reason, String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn child_probe() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    match XrtBackend::probe(None) {
        Ok(b) => println!("REASON: available {}", b.info_name()),
        Err(reason) => println!("REASON: {reason}"),
    }
}

#[test]
fn xrt_absent_is_a_clean_unavailable_device() {
    let (reason, stderr) = probe_in_child(&[("NPUHYBRID_XRT_LIB", "libnpuhybrid-no-such-xrt.so.2")]);
    assert!(reason.starts_with("XRT is not installed: libnpuhybrid-no-such-xrt.so.2 ("), "{reason}");
    assert_eq!(stderr, "", "nothing may reach stderr");
}

#[test]
fn xrt_without_a_device_is_a_clean_unavailable_device() {
    let (reason, stderr) = probe_in_child(&[]);
    eprintln!("reason given: {reason}");
    if reason.starts_with("XRT is not installed") {
        return; // this machine has no XRT at all; the test above covers that case
    }
    assert!(!reason.starts_with("available"), "{reason}");
    assert!(reason.contains("Could not open device with index '0'"), "{reason}");
    assert_eq!(stderr, "", "XRT's banner and errors must not reach stderr");
}
