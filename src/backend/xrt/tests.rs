//! These run against whatever XRT the machine has. On CI that is Debian's libxrt1 (XRT 2.13)
//! with no device: the real library is called and must give a clean unavailable reason.

use super::*;

fn xrt_installed() -> bool {
    api::candidates("libxrt_coreutil")
        .iter()
        .any(|n| unsafe { libloading::Library::new(n) }.map(std::mem::forget).is_ok())
}

#[test]
fn without_an_npu_probe_reports_xrts_own_reason() {
    if !xrt_installed() {
        let err = XrtBackend::probe(None).err().unwrap();
        assert!(err.starts_with("XRT is not installed"), "{err}");
        return;
    }
    let err = XrtBackend::probe(None).err().expect("no NPU on this machine");
    // XRT's message, read back from its log, not our guess.
    assert!(
        err.contains("Could not open device with index '0'") || err.contains("found no usable device"),
        "{err}"
    );
    let info = XrtBackend::unavailable(&err);
    assert!(!info.available && info.kind == DeviceKind::Npu);
    assert_eq!(info.unavailable_reason, err);
    // A second probe gives the same answer (XRT stays loaded, nothing is re-initialised).
    assert_eq!(XrtBackend::probe(None).err().unwrap(), err);
}

#[test]
fn xrts_log_is_redirected_when_xrt_allows_it() {
    // Debian's XRT 2.13 has xrtIniStringSet: its log must then be ours, not stderr.
    if let Ok((api, log)) = api::system() {
        assert_eq!(log.is_some(), api.ini_string_set.is_some());
    }
}

#[test]
fn in_flight_permits_respect_the_limit() {
    let f = InFlight { used: Mutex::new(0), freed: Condvar::new(), limit: AtomicUsize::new(3) };
    assert_eq!(f.acquire(2), 2);
    assert_eq!(f.acquire(5), 1, "only one left");
    std::thread::scope(|s| {
        let waiter = s.spawn(|| f.acquire(1));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!waiter.is_finished(), "must wait while the limit is reached");
        f.release(2);
        assert_eq!(waiter.join().unwrap(), 1);
    });
    assert_eq!(*f.used.lock(), 2);
}

#[test]
fn open_gives_an_unavailable_device_that_refuses_work() {
    let dev = XrtBackend::open(None);
    let info = dev.info();
    assert_eq!((info.kind, info.name.as_str(), info.available), (DeviceKind::Npu, NAME, false));
    assert!(!info.unavailable_reason.is_empty());
    let v = crate::op::TensorView::contiguous(1, DType::BF16, &[2, 2], 0);
    let op = OpDesc::new(OpKind::Matmul, &[v, v], v);
    assert!(!dev.supports(&op));
    let err = dev.execute(&op, &OpMemory::new(Vec::new())).unwrap_err();
    assert!(matches!(err, Error::DeviceUnavailable(_)), "{err:?}");
}
