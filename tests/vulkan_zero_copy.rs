//! Unified memory (lavapipe here, an APU's iGPU in the field): dense views of host buffers are
//! read by the GPU where they lie (VK_EXT_external_memory_host), with no upload and no
//! replica; what is not dense, or was written earlier in the same submission, is still copied.

mod vulkan_util;

use npuhybrid::backend::vulkan::VulkanBackend;
use npuhybrid::backend::Backend;
use npuhybrid::memory::Buffer;
use npuhybrid::op::{DType, OpDesc, OpKind, OpParams, TensorView};
use std::sync::{Arc, Mutex};
use vulkan_util::*;

/// The tests read the shared backend's counters: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn in_place_gpu() -> &'static VulkanBackend {
    let g = gpu();
    assert!(
        g.set_host_import(true),
        "lavapipe offers unified memory and VK_EXT_external_memory_host: {:?}",
        g.info().details
    );
    g
}

fn silu_ref(x: &[f32]) -> Vec<f32> {
    x.iter().map(|v| v / (1.0 + (-v).exp())).collect()
}

#[test]
fn dense_inputs_are_read_in_place_and_seen_fresh_after_host_writes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gpu = in_place_gpu();
    let mut r = rng(11);
    let x = Tensor::random(&mut r, DType::F32, &[8, 64]);
    let w = Tensor::random(&mut r, DType::F32, &[64, 48]);
    let out = Tensor::zeros(DType::F32, &[8, 48]);
    let op = OpDesc::new(OpKind::Matmul, &[x.view, w.view], out.view);
    let mem = memory(&[&x, &w, &out]);
    assert_eq!(gpu.upload_ns(&op, &mem), 0.0, "the scheduler counts no upload for in-place inputs");
    let before = gpu.stats();
    compare(&op, &[&x, &w], &out, 1e-4);
    let after = gpu.stats();
    assert_eq!(after.uploaded_bytes, before.uploaded_bytes, "nothing is copied to the device");
    assert_eq!(after.zero_copy_bytes - before.zero_copy_bytes, (8 * 64 + 64 * 48) * 4);
    // A host write between runs is what the next run reads: there is no replica to go stale.
    x.buf.write(0, &vec![0u8; 8 * 64 * 4]).unwrap();
    gpu.execute(&op, &mem).unwrap();
    assert!(out.values().iter().all(|v| *v == 0.0), "x is now zero, so is x w");
    assert_eq!(gpu.stats().uploaded_bytes, before.uploaded_bytes);
}

#[test]
fn a_freed_buffers_pages_taken_by_another_are_read_afresh() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gpu = in_place_gpu();
    let mut r = rng(12);
    // The tests' pool keeps no freed blocks: each buffer goes back to the system allocator,
    // which hands the same pages to the next one of that size.
    for round in 0..6 {
        let x = Tensor::random(&mut r, DType::F32, &[4096 + round]);
        let out = x.like();
        let op = OpDesc::new(OpKind::Silu, &[x.view], out.view);
        gpu.execute(&op, &memory(&[&x, &out])).unwrap();
        assert_close(&out.values(), &silu_ref(&x.values()), 1e-5, &format!("round {round}"));
    }
}

#[test]
fn strided_views_and_views_written_in_the_same_submission_are_copied() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gpu = in_place_gpu();
    let mut r = rng(13);
    // A transposed weight is packed on the host: an upload of its bytes.
    let a = Tensor::random(&mut r, DType::F32, &[5, 32]);
    let bt = Tensor::random_transposed(&mut r, DType::F32, &[32, 16]);
    let out = Tensor::zeros(DType::F32, &[5, 16]);
    let op = OpDesc::new(OpKind::Matmul, &[a.view, bt.view], out.view);
    let before = gpu.stats();
    compare(&op, &[&a, &bt], &out, 1e-4);
    let after = gpu.stats();
    assert_eq!(after.uploaded_bytes - before.uploaded_bytes, 32 * 16 * 4, "only the strided view moves");
    assert_eq!(after.zero_copy_bytes - before.zero_copy_bytes, 5 * 32 * 4);

    // y = 2x, then silu(y) in one submission: the second op reads the first's device output,
    // not the host's (older) y.
    let x = Tensor::random(&mut r, DType::F32, &[300]);
    let y = x.like();
    let z = x.like();
    let scale = OpDesc::new(OpKind::Scale, &[x.view], y.view)
        .with_params(OpParams { alpha: 2.0, ..Default::default() });
    let silu = OpDesc::new(OpKind::Silu, &[y.view], z.view);
    let (m1, m2) = (memory(&[&x, &y]), memory(&[&y, &z]));
    gpu.execute_batch(&[(&scale, &m1), (&silu, &m2)]).unwrap();
    let doubled: Vec<f32> = x.values().iter().map(|v| 2.0 * v).collect();
    assert_close(&y.values(), &doubled, 1e-6, "y");
    assert_close(&z.values(), &silu_ref(&doubled), 1e-5, "z");
}

#[test]
fn a_memory_mapped_file_is_read_in_place() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gpu = in_place_gpu();
    let values: Vec<f32> = (0..5000).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
    let path = std::env::temp_dir().join(format!("npuhybrid-zero-copy-{}.bin", std::process::id()));
    std::fs::write(&path, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let map = Buffer::map_file(&file).unwrap();
    let id = fresh_id();
    let weights = Tensor {
        buf: Arc::new(Buffer::mapped(id, map, file)),
        view: TensorView::contiguous(id, DType::F32, &[5000], 0),
    };
    let out = Tensor::zeros(DType::F32, &[5000]);
    let op = OpDesc::new(OpKind::Silu, &[weights.view], out.view);
    let before = gpu.stats();
    gpu.execute(&op, &memory(&[&weights, &out])).unwrap();
    std::fs::remove_file(&path).ok();
    let after = gpu.stats();
    assert_close(&out.values(), &silu_ref(&values), 1e-5, "silu of the mapped file");
    assert_eq!(after.uploaded_bytes, before.uploaded_bytes, "the mapped pages are not copied");
    assert_eq!(after.zero_copy_bytes - before.zero_copy_bytes, 5000 * 4);
}

#[test]
fn turning_in_place_reads_off_copies_again() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gpu = in_place_gpu();
    let mut r = rng(14);
    let x = Tensor::random(&mut r, DType::F32, &[1000]);
    let out = x.like();
    let op = OpDesc::new(OpKind::Silu, &[x.view], out.view);
    assert!(!gpu.set_host_import(false));
    let before = gpu.stats();
    assert!(gpu.upload_ns(&op, &memory(&[&x, &out])) > 0.0);
    gpu.execute(&op, &memory(&[&x, &out])).unwrap();
    assert_eq!(gpu.stats().uploaded_bytes - before.uploaded_bytes, 4000);
    assert_eq!(gpu.stats().zero_copy_bytes, before.zero_copy_bytes);
    assert!(gpu.set_host_import(true));
    assert_close(&out.values(), &silu_ref(&x.values()), 1e-5, "silu");
}

/// A discrete GPU's path, forced over lavapipe: replicas, whose uploads the GPU copies straight
/// from the imported host pages (no staging copy on the host); a host write is seen by the
/// next upload (the replica is of the old version).
#[test]
fn uploads_copied_from_imported_host_memory_are_exact_and_fresh() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gpu = in_place_gpu();
    assert!(!gpu.set_host_import(false));
    assert!(gpu.set_import_uploads(true), "lavapipe can import host memory");
    let mut r = rng(15);
    let x = Tensor::random(&mut r, DType::F32, &[16, 256]);
    let w = Tensor::random(&mut r, DType::F32, &[256, 64]);
    let out = Tensor::zeros(DType::F32, &[16, 64]);
    let op = OpDesc::new(OpKind::Matmul, &[x.view, w.view], out.view);
    let before = gpu.stats();
    compare(&op, &[&x, &w], &out, 1e-4);
    let after = gpu.stats();
    let bytes = ((16 * 256 + 256 * 64) * 4) as u64;
    assert_eq!(after.uploaded_bytes - before.uploaded_bytes, bytes);
    assert_eq!(after.imported_upload_bytes - before.imported_upload_bytes, bytes, "no staging copy");
    assert_eq!(after.zero_copy_bytes, before.zero_copy_bytes, "nothing is read in place");
    x.buf.write(0, &vec![0u8; 16 * 256 * 4]).unwrap();
    gpu.execute(&op, &memory(&[&x, &w, &out])).unwrap();
    assert!(out.values().iter().all(|v| *v == 0.0), "the new x was uploaded");
    let last = gpu.stats();
    assert_eq!(last.imported_upload_bytes - after.imported_upload_bytes, 16 * 256 * 4, "w stayed");
    assert!(!gpu.set_import_uploads(false));
    assert!(gpu.set_host_import(true));
}
