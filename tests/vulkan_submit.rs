//! How a submission is recorded: cut into command buffers (chunks) submitted as they are
//! recorded, which must not change a single bit of the results, and per-op timestamps on
//! sampled submissions only.

mod vulkan_util;

use npuhybrid::backend::vulkan::{Chunking, OpTimestamps, VulkanBackend};
use npuhybrid::backend::{Backend, ExecReport, OpMemory, SegmentReport};
use npuhybrid::op::{DType, OpDesc, OpKind, TensorView};
use std::sync::Mutex;
use vulkan_util::*;

/// The backend is shared and these tests change its settings: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const LAYERS: usize = 30;
const ROWS: usize = 8;
const WIDTH: usize = 64;

/// A long chain shaped like a decode step: per layer a matmul into a scratch buffer every
/// layer rewrites, an activation, a residual add into the layer's own buffer, and a row of a
/// cache written in place, then a column of a transposed one (a strided view) read whole
/// right away (the columns so far patched in by the `patch` shader, in every chunk); at the
/// end the first cache is read whole (its rows patched in as copy regions).
struct Chain {
    /// Inputs, kept alive with the chain.
    _inputs: Vec<Tensor>,
    ops: Vec<(OpDesc, OpMemory)>,
    /// Written by the ops (reset before each run).
    outputs: Vec<Tensor>,
}

fn chain() -> Chain {
    let mut r = rng(7);
    let x = Tensor::random(&mut r, DType::F32, &[1, WIDTH]);
    let weights: Vec<Tensor> =
        (0..LAYERS).map(|_| Tensor::random(&mut r, DType::F32, &[WIDTH, WIDTH])).collect();
    let scratch = Tensor::zeros(DType::F32, &[1, WIDTH]);
    let act = Tensor::zeros(DType::F32, &[1, WIDTH]);
    let hidden: Vec<Tensor> = (0..LAYERS).map(|_| Tensor::zeros(DType::F32, &[1, WIDTH])).collect();
    let cache = Tensor::zeros(DType::F32, &[ROWS, WIDTH]);
    let out = Tensor::zeros(DType::F32, &[ROWS, WIDTH]);
    let cache_t = Tensor::zeros(DType::F32, &[WIDTH, ROWS]);
    let out_t = Tensor::zeros(DType::F32, &[WIDTH, ROWS]);
    let mut ops = Vec::new();
    let mut h = &x;
    for (l, w) in weights.iter().enumerate() {
        let mm = OpDesc::new(OpKind::Matmul, &[h.view, w.view], scratch.view);
        ops.push((mm, memory(&[h, w, &scratch])));
        ops.push((OpDesc::new(OpKind::Silu, &[scratch.view], act.view), memory(&[&scratch, &act])));
        let next = &hidden[l];
        ops.push((OpDesc::new(OpKind::Add, &[act.view, h.view], next.view), memory(&[&act, h, next])));
        let row = (l % ROWS) * WIDTH * 4;
        let mut cache_row = cache.clone();
        cache_row.view = TensorView::contiguous(cache.buf.id(), DType::F32, &[1, WIDTH], row);
        ops.push((OpDesc::new(OpKind::Copy, &[next.view], cache_row.view), memory(&[next, &cache_row])));
        let mut column = cache_t.clone();
        column.view = TensorView::contiguous(cache_t.buf.id(), DType::F32, &[1, WIDTH], (l % ROWS) * 4);
        column.view.strides[1] = ROWS;
        ops.push((OpDesc::new(OpKind::Copy, &[next.view], column.view), memory(&[next, &column])));
        ops.push((OpDesc::new(OpKind::Scale, &[cache_t.view], out_t.view), memory(&[&cache_t, &out_t])));
        h = next;
    }
    ops.push((OpDesc::new(OpKind::Scale, &[cache.view], out.view), memory(&[&cache, &out])));
    let mut outputs = vec![scratch, act, cache, out, cache_t, out_t];
    outputs.extend(hidden);
    let mut inputs = vec![x];
    inputs.extend(weights);
    Chain { _inputs: inputs, ops, outputs }
}

impl Chain {
    fn run(&self, gpu: &VulkanBackend) -> SegmentReport {
        for t in &self.outputs {
            t.buf.write(0, &vec![0u8; t.buf.len()]).unwrap();
        }
        let pairs: Vec<(&OpDesc, &OpMemory)> = self.ops.iter().map(|(op, m)| (op, m)).collect();
        let report = gpu.execute_segment(&pairs);
        assert!(report.error.is_none(), "{:?}", report.error);
        assert_eq!(report.reports.len(), self.ops.len());
        report
    }

    /// Every byte the chain wrote.
    fn written(&self) -> Vec<Vec<u8>> {
        self.outputs
            .iter()
            .map(|t| {
                let mut bytes = vec![0u8; t.buf.len()];
                t.buf.read(0, &mut bytes).unwrap();
                bytes
            })
            .collect()
    }
}

fn with_settings(chunking: Chunking, timestamps: OpTimestamps) -> &'static VulkanBackend {
    let g = gpu();
    g.set_chunking(chunking);
    g.set_op_timestamps(timestamps);
    g
}

#[test]
fn chunked_submissions_give_the_same_bits_as_one_command_buffer() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = chain();
    let gpu = with_settings(Chunking::WHOLE, OpTimestamps::Always);
    let before = gpu.stats();
    c.run(gpu);
    let after = gpu.stats();
    assert_eq!(after.submissions - before.submissions, 1, "the chain fits one submission");
    assert_eq!(after.command_buffers - before.command_buffers, 1);
    let whole = c.written();
    assert!(whole[3].iter().any(|&b| b != 0), "the cache was read back with its rows");
    let (read, read_t) = (c.outputs[3].values(), c.outputs[5].values());
    let transposed: Vec<f32> = (0..WIDTH * ROWS).map(|i| read[(i % ROWS) * WIDTH + i / ROWS]).collect();
    assert_eq!(read_t, transposed, "the columns were patched in as the rows were");

    for chunking in
        [Chunking { first: 1, every: 3 }, Chunking { first: 16, every: 64 }, Chunking { first: 2, every: 1 }]
    {
        for host_import in [false, true] {
            gpu.set_host_import(host_import);
            let gpu = with_settings(chunking, OpTimestamps::Always);
            let before = gpu.stats();
            c.run(gpu);
            let after = gpu.stats();
            assert_eq!(after.submissions - before.submissions, 1);
            let chunks = chunking.ends(c.ops.len()).len() as u64;
            assert!(chunks > 1);
            assert_eq!(after.command_buffers - before.command_buffers, chunks, "{chunking:?}");
            assert!(c.written() == whole, "{chunking:?}, host import {host_import}: results differ");
        }
    }
}

fn timed(reports: &[ExecReport]) -> bool {
    let all = reports.iter().all(|r| r.device_ns.is_some());
    assert!(all || reports.iter().all(|r| r.device_ns.is_none()), "a submission times every op or none");
    all
}

#[test]
fn sampled_submissions_time_each_op_and_every_one_knows_its_busy_time() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = chain();
    let gpu = with_settings(Chunking::DEFAULT, OpTimestamps::Always);
    let report = c.run(gpu);
    assert!(timed(&report.reports));
    assert!(gpu.times_kernels());
    let busy = report.phases.and_then(|p| p.device_ns).expect("busy time from the chunks' timestamps");
    assert!(busy > 0);

    let gpu = with_settings(Chunking::DEFAULT, OpTimestamps::Never);
    assert!(!gpu.times_kernels());
    let report = c.run(gpu);
    assert!(!timed(&report.reports));
    assert!(report.phases.and_then(|p| p.device_ns).is_some(), "the busy time is measured all the same");

    let gpu = with_settings(Chunking::DEFAULT, OpTimestamps::Sampled);
    assert!(gpu.times_kernels(), "sampled kernel times are kernel times");
    let runs: Vec<bool> = (0..34)
        .map(|_| {
            let report = c.run(gpu);
            assert!(report.phases.and_then(|p| p.device_ns).is_some());
            timed(&report.reports)
        })
        .collect();
    let sampled = runs.iter().filter(|&&t| t).count();
    // Whatever ran before: 2 or 3 in 34 once past the first 8, more before.
    assert!(sampled >= 2 && sampled < runs.len() - 16, "{runs:?}");
    // Short submissions (lone ops, calibration) are always timed.
    let (op, mem) = &c.ops[1];
    assert!(gpu.execute(op, mem).unwrap().device_ns.is_some());
}
