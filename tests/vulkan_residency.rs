//! Device replicas: unchanged inputs are not uploaded again, changed ones are, replicas of
//! dropped buffers are released, and a batch chains ops on the device.

mod vulkan_util;

use npuhybrid::backend::Backend;
use npuhybrid::op::{DType, OpDesc, OpKind};
use std::sync::Mutex;
use vulkan_util::*;

/// The backend is shared; these tests read its counters, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The backend with in-place reads of host buffers off (lavapipe has unified memory): these
/// tests are about replicas, which a discrete GPU always uses (tests/vulkan_zero_copy.rs
/// covers in-place reads).
fn copying_gpu() -> &'static npuhybrid::backend::vulkan::VulkanBackend {
    let g = gpu();
    g.set_host_import(false);
    g
}

#[test]
fn unchanged_inputs_are_uploaded_once() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gpu = copying_gpu();
    let mut r = rng(1);
    let x = Tensor::random(&mut r, DType::F32, &[8, 64]);
    let w = Tensor::random(&mut r, DType::F32, &[64, 32]);
    let out = Tensor::zeros(DType::F32, &[8, 32]);
    let op = OpDesc::new(OpKind::Matmul, &[x.view, w.view], out.view);
    let mem = memory(&[&x, &w, &out]);
    let before = gpu.stats().uploaded_bytes;
    let all_missing = gpu.upload_ns(&op, &mem);
    assert!(all_missing > 0.0, "nothing is resident before the first run");
    gpu.execute(&op, &mem).unwrap();
    assert_eq!(gpu.upload_ns(&op, &mem), 0.0, "the scheduler sees both inputs resident");
    let first = gpu.stats().uploaded_bytes - before;
    assert_eq!(first, (8 * 64 + 64 * 32) * 4);
    gpu.execute(&op, &mem).unwrap();
    assert_eq!(gpu.stats().uploaded_bytes - before, first, "nothing new to upload");
    // A host write changes the version: only x goes again.
    x.buf.write(0, &[0u8; 4]).unwrap();
    let x_missing = gpu.upload_ns(&op, &mem);
    assert!(
        x_missing > 0.0 && x_missing < all_missing,
        "only x is to be uploaded: {x_missing} of {all_missing}"
    );
    gpu.execute(&op, &mem).unwrap();
    assert_eq!(gpu.stats().uploaded_bytes - before, first + 8 * 64 * 4);
    let first_values = out.values();
    assert_eq!(first_values.len(), 8 * 32);
}

#[test]
fn replicas_of_dropped_buffers_are_released() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gpu = copying_gpu();
    let mut r = rng(2);
    // A first op sweeps what earlier tests left; its own buffers stay alive throughout.
    let y = Tensor::random(&mut r, DType::F32, &[10]);
    let yo = y.like();
    let silu = |a: &Tensor, o: &Tensor| {
        gpu.execute(&OpDesc::new(OpKind::Silu, &[a.view], o.view), &memory(&[a, o])).unwrap();
    };
    silu(&y, &yo);
    let base = gpu.stats().replicas;
    {
        let x = Tensor::random(&mut r, DType::F32, &[1000]);
        let o = x.like();
        gpu.execute(&OpDesc::new(OpKind::Silu, &[x.view], o.view), &memory(&[&x, &o])).unwrap();
        assert!(gpu.stats().replicas >= base + 2, "input and output are resident");
    }
    // The next submission sweeps replicas whose buffers are gone.
    let y = Tensor::random(&mut r, DType::F32, &[10]);
    let o = y.like();
    gpu.execute(&OpDesc::new(OpKind::Silu, &[y.view], o.view), &memory(&[&y, &o])).unwrap();
    assert!(gpu.stats().replicas <= base + 2);
}

#[test]
fn the_budget_bounds_resident_bytes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gpu = copying_gpu();
    let mut r = rng(3);
    gpu.set_residency_budget(64 << 10);
    let keep: Vec<Tensor> = (0..8).map(|_| Tensor::random(&mut r, DType::F32, &[8192])).collect();
    for x in &keep {
        let o = x.like();
        gpu.execute(&OpDesc::new(OpKind::Scale, &[x.view], o.view), &memory(&[x, &o])).unwrap();
        assert!(gpu.stats().replica_bytes <= 64 << 10);
    }
    gpu.set_residency_budget(u64::MAX);
}

#[test]
fn a_batch_chains_ops_on_the_device_and_matches_the_cpu() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gpu = copying_gpu();
    let mut r = rng(4);
    let x = Tensor::random(&mut r, DType::F32, &[16, 48]);
    let w = Tensor::random(&mut r, DType::F32, &[48, 24]);
    let h = Tensor::zeros(DType::F32, &[16, 24]);
    let s = Tensor::zeros(DType::F32, &[16, 24]);
    let y = Tensor::zeros(DType::F32, &[16, 24]);
    let mm = OpDesc::new(OpKind::Matmul, &[x.view, w.view], h.view);
    let act = OpDesc::new(OpKind::Silu, &[h.view], s.view);
    let add = OpDesc::new(OpKind::Add, &[s.view, h.view], y.view);
    let (m1, m2, m3) = (memory(&[&x, &w, &h]), memory(&[&h, &s]), memory(&[&s, &h, &y]));
    let before = gpu.stats();
    let reports = gpu.execute_batch(&[(&mm, &m1), (&act, &m2), (&add, &m3)]).unwrap();
    let after = gpu.stats();
    assert_eq!(reports.len(), 3);
    assert!(reports.iter().all(|r| r.device_ns.is_some()));
    assert_eq!(after.submissions - before.submissions, 1, "one command buffer");
    assert_eq!(
        after.uploaded_bytes - before.uploaded_bytes,
        (16 * 48 + 48 * 24) * 4,
        "intermediates stay on the device"
    );
    // Same chain on the CPU.
    let hv = h.values();
    let want: Vec<f32> = hv.iter().map(|&v| v / (1.0 + (-v).exp()) + v).collect();
    assert_close(&y.values(), &want, 1e-5, "chain");
    let mut cpu_h = vec![0f32; 16 * 24];
    let (xv, wv) = (x.values(), w.values());
    for i in 0..16 {
        for j in 0..24 {
            cpu_h[i * 24 + j] = (0..48).map(|k| xv[i * 48 + k] * wv[k * 24 + j]).sum();
        }
    }
    assert_close(&hv, &cpu_h, 1e-4, "matmul in the chain");
}

/// An op that reads a larger view of what an earlier op of the batch wrote (a KV-cache row,
/// then the whole cache) gets the written part copied into its input on the device: still one
/// submission. A reader the written part cannot be mapped into (a broadcast) splits the batch.
#[test]
fn a_partial_overlap_is_patched_on_the_device_or_splits_the_batch() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gpu = copying_gpu();
    // op 1 writes rows 0..4 of a [8, 4] buffer; op 2 reads all 8 rows.
    let whole = Tensor::new(DType::F32, &[8, 4], &[1.0; 32]);
    let mut top = whole.clone();
    top.view = npuhybrid::op::TensorView::contiguous(whole.buf.id(), DType::F32, &[4, 4], 0);
    let src = Tensor::new(DType::F32, &[4, 4], &[3.0; 16]);
    let out = Tensor::zeros(DType::F32, &[8, 4]);
    let write_top = OpDesc::new(OpKind::Copy, &[src.view], top.view);
    let read_all = OpDesc::new(OpKind::Scale, &[whole.view], out.view);
    let before = gpu.stats().submissions;
    gpu.execute_batch(&[(&write_top, &memory(&[&src, &top])), (&read_all, &memory(&[&whole, &out]))])
        .unwrap();
    assert_eq!(gpu.stats().submissions - before, 1);
    let mut want = vec![3.0; 16];
    want.extend([1.0; 16]);
    assert_eq!(out.values(), want);

    // Row 0 read broadcast over 8 rows (stride 0): no element-to-element map, two submissions.
    let src2 = Tensor::new(DType::F32, &[4, 4], &[5.0; 16]);
    let write_top = OpDesc::new(OpKind::Copy, &[src2.view], top.view);
    let mut bcast = whole.clone();
    bcast.view.strides[0] = 0;
    let read_bcast = OpDesc::new(OpKind::Scale, &[bcast.view], out.view);
    let before = gpu.stats().submissions;
    gpu.execute_batch(&[(&write_top, &memory(&[&src2, &top])), (&read_bcast, &memory(&[&bcast, &out]))])
        .unwrap();
    assert_eq!(gpu.stats().submissions - before, 2);
    assert_eq!(out.values(), vec![5.0; 32]);
}

/// Imported memory may be rewritten by its owner without a word to the library (it is the
/// caller's memory), so the GPU never trusts a copy of it: each run reads what is there now.
#[test]
fn imported_memory_is_uploaded_for_every_run() {
    use npuhybrid::memory::Buffer;
    use npuhybrid::op::TensorView;
    use std::sync::Arc;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gpu = copying_gpu();
    let mut host = vec![1.0f32; 256];
    let id = vulkan_util::fresh_id();
    let buf = Arc::new(unsafe { Buffer::imported(id, host.as_mut_ptr() as *mut u8, 256 * 4) });
    let x = Tensor { view: TensorView::contiguous(id, DType::F32, &[256], 0), buf };
    let out = Tensor::zeros(DType::F32, &[256]);
    let op = OpDesc::new(OpKind::Scale, &[x.view], out.view)
        .with_params(npuhybrid::op::OpParams { alpha: 2.0, ..Default::default() });
    let mem = memory(&[&x, &out]);
    for round in 1..4 {
        host.iter_mut().for_each(|v| *v = round as f32);
        gpu.execute(&op, &mem).unwrap();
        assert!(
            out.values().iter().all(|&v| v == 2.0 * round as f32),
            "round {round}: {:?}",
            &out.values()[..4]
        );
        assert!(gpu.upload_ns(&op, &mem) > 0.0, "the estimate counts the upload too");
    }
}

/// Quantized decode: a q4_0 weight is uploaded by the first GEMV and read from its replica by
/// every later one (its bytes, not a dequantised copy); only the activation row goes up again
/// once the host rewrites it.
#[test]
fn a_quantized_weight_is_uploaded_once_across_gemvs() {
    use npuhybrid::op::{OpParams, TensorView};
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gpu = copying_gpu();
    let mut r = rng(5);
    let (n, k) = (96, 256);
    let values = Tensor::random(&mut r, DType::F32, &[n, k]).values();
    let mut q = vec![0u8; DType::Q4_0.bytes_of(n * k)];
    npuhybrid::quant::quantize_row(DType::Q4_0, &values, &mut q);
    let wbuf = buffer(q.len());
    wbuf.write(0, &q).unwrap();
    let w = Tensor { view: TensorView::contiguous(wbuf.id(), DType::Q4_0, &[n, k], 0), buf: wbuf };
    let x = Tensor::random(&mut r, DType::F32, &[1, k]);
    let y = Tensor::zeros(DType::F32, &[1, n]);
    let op = OpDesc::new(OpKind::Matmul, &[x.view, w.view], y.view)
        .with_params(OpParams { trans_b: true, ..OpParams::default() });
    let mem = memory(&[&x, &w, &y]);
    assert!(gpu.supports(&op));
    let before = gpu.stats().uploaded_bytes;
    gpu.execute(&op, &mem).unwrap();
    assert_eq!(gpu.stats().uploaded_bytes - before, (q.len() + k * 4) as u64);
    for step in 1..4 {
        x.buf.write(0, &(step as f32).to_le_bytes()).unwrap();
        assert!(gpu.upload_ns(&op, &mem) > 0.0, "x changed");
        gpu.execute(&op, &mem).unwrap();
        assert_eq!(
            gpu.stats().uploaded_bytes - before,
            (q.len() + (step + 1) * k * 4) as u64,
            "step {step}: only x goes up"
        );
    }
    // The result is the CPU's.
    let mut deq = vec![0f32; n * k];
    npuhybrid::quant::dequantize_row(DType::Q4_0, &q, &mut deq);
    let xv = x.values();
    let want: Vec<f32> = (0..n).map(|j| (0..k).map(|i| xv[i] * deq[j * k + i]).sum()).collect();
    assert_close(&y.values(), &want, 1e-4, "q4_0 gemv");
}

/// A scratch buffer reused under another shape, as every layer of a model does: op 1 writes
/// it as [4, 8] (exact output of the view op 3 reads as [4, 2, 4]), op 2 rewrites part of it
/// as [2, 8], op 3 reads the [4, 2, 4] view. One submission, and op 3 sees op 2's rows over
/// op 1's: the exact output with the later writes patched in.
#[test]
fn a_view_rewritten_under_another_shape_is_read_in_the_same_submission() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gpu = copying_gpu();
    let scratch = Tensor::zeros(DType::F32, &[4, 8]);
    let mut heads = scratch.clone();
    heads.view = npuhybrid::op::TensorView::contiguous(scratch.buf.id(), DType::F32, &[4, 2, 4], 0);
    let mut top = scratch.clone();
    top.view = npuhybrid::op::TensorView::contiguous(scratch.buf.id(), DType::F32, &[2, 8], 0);
    let first = Tensor::new(DType::F32, &[4, 2, 4], &(0..32).map(|i| i as f32).collect::<Vec<_>>());
    let second = Tensor::new(DType::F32, &[2, 8], &[-1.0; 16]);
    let out = Tensor::zeros(DType::F32, &[4, 2, 4]);
    let write_heads = OpDesc::new(OpKind::Copy, &[first.view], heads.view);
    let write_top = OpDesc::new(OpKind::Copy, &[second.view], top.view);
    let read_heads = OpDesc::new(OpKind::Scale, &[heads.view], out.view);
    let before = gpu.stats().submissions;
    gpu.execute_batch(&[
        (&write_heads, &memory(&[&first, &heads])),
        (&write_top, &memory(&[&second, &top])),
        (&read_heads, &memory(&[&heads, &out])),
    ])
    .unwrap();
    assert_eq!(gpu.stats().submissions - before, 1, "one submission");
    let mut want = vec![-1.0; 16];
    want.extend((16..32).map(|i| i as f32));
    assert_eq!(out.values(), want, "the later rows over the earlier output");
    assert_eq!(scratch.values(), want, "the host sees the last write of each byte");
}

/// What a later op of the submission rewrites whole (the next layer filling a scratch buffer
/// under another shape) is not copied back to the host: only the last write travels.
#[test]
fn a_scratch_rewritten_whole_is_written_back_once() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gpu = copying_gpu();
    let scratch = Tensor::zeros(DType::F32, &[4, 8]);
    let mut heads = scratch.clone();
    heads.view = npuhybrid::op::TensorView::contiguous(scratch.buf.id(), DType::F32, &[4, 2, 4], 0);
    let first = Tensor::new(DType::F32, &[4, 8], &[1.0; 32]);
    let second = Tensor::new(DType::F32, &[4, 2, 4], &(0..32).map(|i| i as f32).collect::<Vec<_>>());
    let seen = Tensor::zeros(DType::F32, &[4, 8]);
    let layer1 = OpDesc::new(OpKind::Copy, &[first.view], scratch.view);
    let read1 = OpDesc::new(OpKind::Scale, &[scratch.view], seen.view);
    let layer2 = OpDesc::new(OpKind::Copy, &[second.view], heads.view);
    let before = gpu.stats().written_back_bytes;
    gpu.execute_batch(&[
        (&layer1, &memory(&[&first, &scratch])),
        (&read1, &memory(&[&scratch, &seen])),
        (&layer2, &memory(&[&second, &heads])),
    ])
    .unwrap();
    assert_eq!(gpu.stats().written_back_bytes - before, 2 * 32 * 4, "seen and the last scratch write");
    assert_eq!(seen.values(), vec![1.0; 32], "the reader saw the first write");
    assert_eq!(scratch.values(), (0..32).map(|i| i as f32).collect::<Vec<_>>());
}

/// The same for a matmul that accumulates into such a view (beta = 1: C is read): it starts
/// from the exact output with the later partial write patched in, in one submission.
#[test]
fn a_matmul_accumulates_into_a_view_rewritten_in_part() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gpu = copying_gpu();
    let c = Tensor::zeros(DType::F32, &[2, 4]);
    let mut top = c.clone();
    top.view = npuhybrid::op::TensorView::contiguous(c.buf.id(), DType::F32, &[4], 0);
    let first = Tensor::new(DType::F32, &[2, 4], &[1.0; 8]);
    let second = Tensor::new(DType::F32, &[4], &[10.0; 4]);
    let a = Tensor::new(DType::F32, &[2, 3], &[1.0; 6]);
    let b = Tensor::new(DType::F32, &[3, 4], &[2.0; 12]);
    let write_c = OpDesc::new(OpKind::Copy, &[first.view], c.view);
    let write_top = OpDesc::new(OpKind::Copy, &[second.view], top.view);
    let accumulate = OpDesc::new(OpKind::Matmul, &[a.view, b.view], c.view)
        .with_params(npuhybrid::op::OpParams { beta: 1.0, ..Default::default() });
    let before = gpu.stats().submissions;
    gpu.execute_batch(&[
        (&write_c, &memory(&[&first, &c])),
        (&write_top, &memory(&[&second, &top])),
        (&accumulate, &memory(&[&a, &b, &c])),
    ])
    .unwrap();
    assert_eq!(gpu.stats().submissions - before, 1, "one submission");
    // A·B is 6 everywhere; C held 10 in its first row and 1 in its second.
    assert_eq!(c.values(), [vec![16.0; 4], vec![7.0; 4]].concat());
}
