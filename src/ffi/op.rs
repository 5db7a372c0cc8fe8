//! Ops, events and graphs.

use super::args::{out, sized_input, sized_out, write_string};
use super::entry;
use super::nh_status;
use super::status::guard;
use super::types::*;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::op::{dense_strides, Activation, DType, OpDesc, OpKind, OpParams, Tags, TensorView, MAX_INPUTS};
use parking_lot::Mutex;
use std::ffi::c_char;
use std::sync::Arc;

/// Fills `desc` with defaults (no inputs, alpha 1, beta 0, eps 1e-5, rope_theta 10000).
#[no_mangle]
pub extern "C" fn nh_op_desc_init(desc: *mut nh_op_desc) -> nh_status {
    guard(|| {
        let d = out(desc, "desc")?;
        let p = OpParams::default();
        *d = nh_op_desc {
            struct_size: std::mem::size_of::<nh_op_desc>() as u32,
            kind: 0,
            inputs: [nh_tensor::default(); 4],
            output: nh_tensor::default(),
            flags: 0,
            activation: 0,
            alpha: p.alpha,
            beta: p.beta,
            eps: p.eps,
            rope_theta: p.rope_theta,
            rope_position: 0,
            kv_len: 0,
            attn_scale: 0.0,
            reserved0: 0,
            tags: std::ptr::null(),
        };
        Ok(())
    })
}

fn to_usize(v: u64, what: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::invalid(format!("{what} {v} does not fit in memory")))
}

fn tensor(t: &nh_tensor, what: &str) -> Result<TensorView> {
    let dtype = DType::from_raw(t.dtype)
        .ok_or_else(|| Error::invalid(format!("{what}: dtype {} is not an nh_dtype", t.dtype)))?;
    let rank = t.rank as usize;
    if !(1..=4).contains(&rank) {
        return Err(Error::invalid(format!("{what}: rank {} is not in 1..=4", t.rank)));
    }
    let mut shape = [1usize; 4];
    let mut strides = [0usize; 4];
    for i in 0..rank {
        shape[i] = to_usize(t.shape[i], what)?;
        strides[i] = to_usize(t.strides[i], what)?;
    }
    if strides[..rank].iter().all(|&s| s == 0) {
        strides = dense_strides(&shape[..rank]);
    }
    Ok(TensorView { buffer: t.buffer.id, dtype, rank, shape, strides, offset: to_usize(t.offset, what)? })
}

/// Converts and checks the C descriptor (shapes are checked against buffers on submit).
pub(crate) fn op_from_c(d: &nh_op_desc) -> Result<OpDesc> {
    let kind = OpKind::from_raw(d.kind)
        .ok_or_else(|| Error::invalid(format!("kind {} is not an nh_op_kind", d.kind)))?;
    let known = NH_FLAG_TRANS_A
        | NH_FLAG_TRANS_B
        | NH_FLAG_CAUSAL
        | NH_FLAG_ROPE_INTERLEAVED
        | NH_FLAG_GELU_TANH
        | NH_FLAG_ALLOW_BF16
        | NH_FLAG_ALLOW_Q8_ACTIVATIONS;
    if d.flags & !known != 0 {
        return Err(Error::invalid(format!("{kind}: flags has unknown bits {:#x}", d.flags & !known)));
    }
    let mut inputs = [None; MAX_INPUTS];
    for (i, t) in d.inputs.iter().enumerate() {
        if t.buffer.id != 0 {
            inputs[i] = Some(tensor(t, &format!("{kind}: input {i}"))?);
        }
    }
    if d.output.buffer.id == 0 {
        return Err(Error::invalid(format!("{kind}: output buffer is missing")));
    }
    let output = tensor(&d.output, &format!("{kind}: output"))?;
    let activation = Activation::from_raw(d.activation).ok_or_else(|| {
        Error::invalid(format!("{kind}: activation {} is not an nh_activation", d.activation))
    })?;
    let params = OpParams {
        trans_a: d.flags & NH_FLAG_TRANS_A != 0,
        trans_b: d.flags & NH_FLAG_TRANS_B != 0,
        alpha: d.alpha,
        beta: d.beta,
        activation,
        eps: d.eps,
        gelu_tanh: d.flags & NH_FLAG_GELU_TANH != 0,
        rope_theta: d.rope_theta,
        rope_position: d.rope_position,
        rope_interleaved: d.flags & NH_FLAG_ROPE_INTERLEAVED != 0,
        causal: d.flags & NH_FLAG_CAUSAL != 0,
        attn_scale: d.attn_scale,
        kv_len: d.kv_len,
        allow_bf16: d.flags & NH_FLAG_ALLOW_BF16 != 0,
        allow_q8_activations: d.flags & NH_FLAG_ALLOW_Q8_ACTIVATIONS != 0,
    };
    let tags = match super::args::opt_c_str(d.tags, "tags")? {
        Some(text) => Tags::parse(text).map_err(|e| Error::invalid(format!("{kind}: {e}")))?,
        None => Tags::new(),
    };
    Ok(OpDesc { kind, params, inputs, output, tags })
}

/// Validates and submits an op. On success `*out_event` completes when the op has run
/// (release it with `nh_event_release`). Ops that touch overlapping bytes run in
/// submission order; others may run at once on different devices.
#[no_mangle]
pub extern "C" fn nh_submit(
    runtime: nh_runtime,
    desc: *const nh_op_desc,
    out_event: *mut nh_event,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let d = sized_input(desc, "desc")?;
        let slot = out(out_event, "out_event")?;
        let op = op_from_c(d)?;
        let event = e.rt.submit(op)?;
        slot.id = e.events.lock().insert(event);
        Ok(())
    })
}

fn event(e: &super::RuntimeEntry, ev: nh_event) -> Result<crate::Event> {
    e.events.lock().get(ev.id)
}

/// Waits up to `timeout_ns` (UINT64_MAX = forever) for the op. Returns the op's status,
/// or NH_ERR_TIMEOUT if it has not completed yet. The event stays valid until released.
#[no_mangle]
pub extern "C" fn nh_event_wait(runtime: nh_runtime, ev: nh_event, timeout_ns: u64) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let event = event(&e, ev)?;
        drop(e);
        let timeout = (timeout_ns != u64::MAX).then(|| std::time::Duration::from_nanos(timeout_ns));
        event.wait(timeout)
    })
}

/// Like `nh_event_wait` with a zero timeout: NH_OK, the op's error, or NH_ERR_TIMEOUT.
#[no_mangle]
pub extern "C" fn nh_event_query(runtime: nh_runtime, ev: nh_event) -> nh_status {
    guard(|| event(&*entry(runtime)?, ev)?.outcome().0)
}

/// Where and how long the op ran. `info->status` is NH_ERR_TIMEOUT while it runs.
#[no_mangle]
pub extern "C" fn nh_event_get_info(
    runtime: nh_runtime,
    ev: nh_event,
    info: *mut nh_event_info,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let o = sized_out(info, "info")?;
        let (result, i) = event(&e, ev)?.outcome();
        o.status = match &result {
            Ok(()) => nh_status::NH_OK,
            Err(err) => nh_status::from(err),
        };
        o.device = i.device.map(|d| d as i32).unwrap_or(-1);
        o.fallbacks = i.fallbacks;
        o.parts = i.parts;
        o.device_mask = i.devices_mask;
        o.queue_ns = i.queue_ns();
        o.run_ns = i.run_ns();
        o.device_ns = i.device_ns;
        Ok(())
    })
}

/// Releases an event handle (the op itself is not affected). Releasing twice is an error.
#[no_mangle]
pub extern "C" fn nh_event_release(runtime: nh_runtime, ev: nh_event) -> nh_status {
    guard(|| entry(runtime)?.events.lock().remove(ev.id).map(|_| ()))
}

/// Creates an empty graph: record ops with `nh_graph_add`, run them with `nh_graph_submit`
/// (as often as wanted).
#[no_mangle]
pub extern "C" fn nh_graph_create(runtime: nh_runtime, out_graph: *mut nh_graph) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let slot = out(out_graph, "out_graph")?;
        slot.id = e.graphs.lock().insert(Arc::new(Mutex::new(Graph::new())));
        Ok(())
    })
}

/// Validates an op and appends it to the graph. Read/write hazards between the graph's ops
/// are tracked on submission.
#[no_mangle]
pub extern "C" fn nh_graph_add(runtime: nh_runtime, graph: nh_graph, desc: *const nh_op_desc) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let g = e.graphs.lock().get(graph.id)?;
        let op = op_from_c(sized_input(desc, "desc")?)?;
        let mut g = g.lock();
        e.rt.graph_add(&mut g, op)
    })
}

/// Validates an op and puts it in place of op `index` (0-based, in the order added) of the
/// graph, so a recorded graph can be replayed with offsets or parameters that change between
/// submissions (a KV-cache position: `rope_position`, `kv_len`, views). Submissions already
/// made are not affected. On error the graph is unchanged.
#[no_mangle]
pub extern "C" fn nh_graph_set_op(
    runtime: nh_runtime,
    graph: nh_graph,
    index: usize,
    desc: *const nh_op_desc,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let g = e.graphs.lock().get(graph.id)?;
        let op = op_from_c(sized_input(desc, "desc")?)?;
        let mut g = g.lock();
        e.rt.graph_set(&mut g, index, op)
    })
}

/// Submits every op of the graph; `*out_event` completes when all have.
#[no_mangle]
pub extern "C" fn nh_graph_submit(
    runtime: nh_runtime,
    graph: nh_graph,
    out_event: *mut nh_event,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let slot = out(out_event, "out_event")?;
        let g = e.graphs.lock().get(graph.id)?;
        let event = e.rt.submit_graph(&g.lock())?;
        slot.id = e.events.lock().insert(event);
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn nh_graph_op_count(
    runtime: nh_runtime,
    graph: nh_graph,
    out_count: *mut usize,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let slot = out(out_count, "out_count")?;
        *slot = e.graphs.lock().get(graph.id)?.lock().len();
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn nh_graph_destroy(runtime: nh_runtime, graph: nh_graph) -> nh_status {
    guard(|| entry(runtime)?.graphs.lock().remove(graph.id).map(|_| ()))
}

/// Explains where the active policy would run `desc`: the rule that matched, the rules
/// tried before it, and each device with why it was or was not a candidate.
/// Explains where the active policy and the performance model would run the graph's ops if
/// it were submitted now: the placement plan, each segment (a run of ops one device runs as
/// one submission) and why each ends where it does. Output as for `nh_policy_explain`.
#[no_mangle]
pub extern "C" fn nh_graph_explain(
    runtime: nh_runtime,
    graph: nh_graph,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let g = e.graphs.lock().get(graph.id)?;
        let text = e.rt.explain_graph(&g.lock())?;
        write_string(&text, buf, capacity, needed)
    })
}

#[no_mangle]
pub extern "C" fn nh_policy_explain(
    runtime: nh_runtime,
    desc: *const nh_op_desc,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> nh_status {
    guard(|| {
        let e = entry(runtime)?;
        let op = op_from_c(sized_input(desc, "desc")?)?;
        write_string(&e.rt.explain(&op)?, buf, capacity, needed)
    })
}
