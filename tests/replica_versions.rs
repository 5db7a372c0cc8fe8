//! An op's output gets a new buffer version whichever device ran it, so a device replica of
//! those bytes (the Vulkan backend keeps them, keyed by version) is never used stale.
//! Found by c_examples/generate.c: the LM head's [rows, dim] input kept its GPU copy from the
//! prefill after CPU ops had rewritten the buffer, and every decode step read it.

mod common;

use common::*;
use npuhybrid::backend::vulkan::VulkanBackend;
use npuhybrid::backend::Backend;
use npuhybrid::op::{OpDesc, OpKind};
use npuhybrid::{PolicySource, Runtime, RuntimeConfig};

#[test]
fn an_op_on_the_cpu_gives_its_output_a_new_version() {
    let rt = runtime_with(vec![]);
    let a = upload(&rt, &random(64, 1));
    let out = rt.alloc(64 * 4).unwrap();
    let before = rt.buffer(out).unwrap().version();
    rt.submit(add(a, a, out, 64)).unwrap().wait(None).unwrap();
    assert_ne!(
        rt.buffer(out).unwrap().version(),
        before,
        "the CPU wrote the buffer: its version must change"
    );
    // Inputs are not written: their version stays.
    let va = rt.buffer(a).unwrap().version();
    rt.submit(add(a, a, out, 64)).unwrap().wait(None).unwrap();
    assert_eq!(rt.buffer(a).unwrap().version(), va);
}

/// Matmuls on the GPU, everything else on the CPU: the GPU must see what the CPU wrote into
/// a buffer it already holds a copy of (same view, different view).
#[test]
fn the_gpu_reads_what_a_cpu_op_wrote_into_a_buffer_it_holds() {
    let gpu = VulkanBackend::probe()
        .unwrap_or_else(|e| panic!("no Vulkan device for the tests (install mesa-vulkan-drivers): {e}"))
        .remove(0);
    let policy =
        "policy \"split\"\nrule mm {\n when op = matmul\n use gpu, cpu\n}\nrule rest {\n use cpu\n}\n";
    let rt = Runtime::with_backends(
        RuntimeConfig {
            policy: PolicySource::Source { origin: "test".into(), text: policy.into() },
            ..config()
        },
        vec![cpu(), Box::new(gpu) as Box<dyn Backend>],
    )
    .unwrap();
    let (m, k, n) = (16, 32, 24);
    let mut h = random(m * k, 2);
    let w = random(k * n, 3);
    let (hb, wb, out) = (upload(&rt, &h), upload(&rt, &w), rt.alloc(m * n * 4).unwrap());
    let run = |rows: usize, h: &[f32]| {
        let ev = rt.submit(matmul(hb, wb, out, rows, k, n)).unwrap();
        ev.wait(None).unwrap();
        assert_eq!(ev.outcome().1.device, Some(1), "the matmul must run on the GPU");
        let got = download(&rt, out, rows * n);
        assert_close(&got, &reference_matmul(&h[..rows * k], &w, rows, k, n), 1e-4);
    };
    run(m, &h);
    // A CPU op rewrites row 0 of h (scale by 2 of a fresh row).
    let row = random(k, 4);
    let src = upload(&rt, &row);
    let scale = OpDesc::new(OpKind::Scale, &[t(src, &[1, k])], t(hb, &[1, k]))
        .with_params(npuhybrid::op::OpParams { alpha: 2.0, ..Default::default() });
    let ev = rt.submit(scale).unwrap();
    ev.wait(None).unwrap();
    assert_eq!(ev.outcome().1.device, Some(0), "the scale must run on the CPU");
    for (dst, v) in h[..k].iter_mut().zip(&row) {
        *dst = 2.0 * v;
    }
    run(1, &h); // a view the GPU has not seen
    run(m, &h); // the view the GPU holds a copy of
}
