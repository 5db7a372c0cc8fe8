/* workload: one transformer block (RMSNorm, QKV projection, RoPE, causal attention, output
 * projection, residual, SwiGLU FFN) submitted op by op and then as a graph, under a policy.
 * Prints where each op ran and how long it took, then per-device totals.
 *
 *   workload [--policy NAME|--policy-file PATH] [--cpu-only | --devices gpu,npu,sim] [--seq S]
 *            [--iters N] [--trace FILE]
 */
#include "common.h"

#include <math.h>
#include <time.h>

enum { D = 384, H = 6, DH = 64, F = 1536 };

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

typedef struct {
  const char *name;
  nh_op_desc op;
} named_op;

static nh_buffer alloc_random(nh_runtime rt, size_t n, uint32_t seed, float scale) {
  float *tmp = malloc(n * sizeof(float));
  nh_fill_random(tmp, n, seed);
  for (size_t i = 0; i < n; i++) tmp[i] *= scale;
  nh_buffer b;
  NH_CHECK(nh_buffer_alloc(rt, n * sizeof(float), &b));
  NH_CHECK(nh_buffer_write(rt, b, 0, tmp, n * sizeof(float)));
  free(tmp);
  return b;
}

static nh_buffer alloc_zero(nh_runtime rt, size_t n) {
  nh_buffer b;
  NH_CHECK(nh_buffer_alloc(rt, n * sizeof(float), &b));
  return b;
}

/* A [heads, seq, DH] view of one of q/k/v inside a [seq, 3*D] (or [seq, D]) row-major buffer. */
static nh_tensor heads_view(nh_buffer b, uint64_t seq, uint64_t row_width, uint64_t col_offset) {
  uint64_t shape[3] = {H, seq, DH};
  nh_tensor t = nh_dense(b, NH_F32, 3, shape, col_offset * sizeof(float));
  t.strides[0] = DH;
  t.strides[1] = row_width;
  t.strides[2] = 1;
  return t;
}

/* The same memory seen as [seq, heads, DH], the layout RoPE takes. */
static nh_tensor rope_view(nh_buffer b, uint64_t seq, uint64_t row_width, uint64_t col_offset) {
  uint64_t shape[3] = {seq, H, DH};
  nh_tensor t = nh_dense(b, NH_F32, 3, shape, col_offset * sizeof(float));
  t.strides[0] = row_width;
  t.strides[1] = DH;
  t.strides[2] = 1;
  return t;
}

static nh_op_desc op_init(uint32_t kind, const char *tags) {
  nh_op_desc op;
  NH_CHECK(nh_op_desc_init(&op));
  op.kind = kind;
  op.tags = tags;
  return op;
}

/* Library messages: warnings and errors, and at info level what makes a first run cost more
 * than later ones (devices measured, performance history read or started). */
static void on_log(uint32_t level, const char *message, void *user_data) {
  (void)user_data;
  if (level <= 2 || strstr(message, "calibrated") || strstr(message, "performance history"))
    fprintf(stderr, "npuhybrid: %s\n", message);
}

int main(int argc, char **argv) {
  const char *policy = "default", *policy_file = NULL, *trace = NULL;
  int cpu_only = 0, iters = 20;
  uint32_t devices = NH_ENABLE_GPU | NH_ENABLE_NPU | NH_ENABLE_SIMULATED_NPU;
  uint64_t S = 128;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--policy") && i + 1 < argc) policy = argv[++i];
    else if (!strcmp(argv[i], "--policy-file") && i + 1 < argc) policy_file = argv[++i];
    else if (!strcmp(argv[i], "--trace") && i + 1 < argc) trace = argv[++i];
    else if (!strcmp(argv[i], "--seq") && i + 1 < argc) S = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--cpu-only")) cpu_only = 1;
    else if (!strcmp(argv[i], "--devices") && i + 1 < argc) {
      const char *list = argv[++i];
      devices = (strstr(list, "gpu") ? NH_ENABLE_GPU : 0) | (strstr(list, "npu") ? NH_ENABLE_NPU : 0) |
                (strstr(list, "sim") ? NH_ENABLE_SIMULATED_NPU : 0);
    }
    else {
      fprintf(stderr,
              "usage: %s [--policy NAME|--policy-file PATH] [--cpu-only | --devices gpu,npu,sim] [--seq S] "
              "[--iters N] [--trace FILE]\n",
              argv[0]);
      return 2;
    }
  }
  if (S == 0 || S > 4096) {
    fprintf(stderr, "--seq must be in 1..4096\n");
    return 2;
  }

  nh_runtime_desc desc;
  NH_CHECK(nh_runtime_desc_init(&desc));
  desc.devices = cpu_only ? 0 : devices;
  desc.policy_kind = policy_file ? NH_POLICY_FILE : NH_POLICY_BUILTIN;
  desc.policy = policy_file ? policy_file : policy;
  desc.log_callback = on_log;
  desc.log_level = 3;
  nh_runtime rt;
  NH_CHECK(nh_runtime_create(&desc, &rt));

  uint32_t ndev = 0;
  NH_CHECK(nh_device_count(rt, &ndev));
  nh_device_info infos[16];
  printf("devices:\n");
  for (uint32_t i = 0; i < ndev && i < 16; i++) {
    infos[i].struct_size = sizeof infos[i];
    NH_CHECK(nh_device_get_info(rt, i, &infos[i]));
    printf("  [%u] %-14s %s%s%s%s\n", i, nh_kind_name(infos[i].kind), infos[i].name,
           infos[i].available ? "" : "  (unavailable: ", infos[i].available ? "" : infos[i].unavailable_reason,
           infos[i].available ? "" : ")");
  }
  char pname[64];
  NH_CHECK(nh_policy_name(rt, pname, sizeof pname, NULL));
  printf("policy: %s\nblock: seq %llu, hidden %d, heads %d, ffn %d (f32)\n\n", pname, (unsigned long long)S, D, H, F);

  /* Weights and activations. */
  nh_buffer x = alloc_random(rt, S * D, 1, 1.0f);
  nh_buffer w_norm1 = alloc_random(rt, D, 2, 1.0f), w_norm2 = alloc_random(rt, D, 3, 1.0f);
  float ws = 1.0f / sqrtf((float)D);
  nh_buffer w_qkv = alloc_random(rt, D * 3 * D, 4, ws), w_o = alloc_random(rt, D * D, 5, ws);
  nh_buffer w_gate = alloc_random(rt, D * F, 6, ws), w_up = alloc_random(rt, D * F, 7, ws);
  nh_buffer w_down = alloc_random(rt, F * D, 8, 1.0f / sqrtf((float)F));
  nh_buffer h = alloc_zero(rt, S * D), qkv = alloc_zero(rt, S * 3 * D), attn = alloc_zero(rt, S * D);
  nh_buffer o = alloc_zero(rt, S * D), x2 = alloc_zero(rt, S * D), h2 = alloc_zero(rt, S * D);
  nh_buffer g = alloc_zero(rt, S * F), u = alloc_zero(rt, S * F), dn = alloc_zero(rt, S * D);
  nh_buffer y = alloc_zero(rt, S * D);
  const char *tags = S > 1 ? "phase=prefill" : "phase=decode";

  named_op ops[16];
  int n = 0;
  nh_op_desc op;

  op = op_init(NH_OP_RMSNORM, tags);
  op.inputs[0] = nh_t2(x, S, D);
  op.inputs[1] = nh_t1(w_norm1, D);
  op.output = nh_t2(h, S, D);
  ops[n++] = (named_op){"rmsnorm", op};

  op = op_init(NH_OP_MATMUL, tags);
  op.inputs[0] = nh_t2(h, S, D);
  op.inputs[1] = nh_t2(w_qkv, D, 3 * D);
  op.output = nh_t2(qkv, S, 3 * D);
  ops[n++] = (named_op){"qkv_proj", op};

  for (int which = 0; which < 2; which++) {
    op = op_init(NH_OP_ROPE, tags);
    op.inputs[0] = rope_view(qkv, S, 3 * D, which * D);
    op.output = op.inputs[0];
    ops[n++] = (named_op){which == 0 ? "rope_q" : "rope_k", op};
  }

  op = op_init(NH_OP_ATTENTION, tags);
  op.flags = NH_FLAG_CAUSAL;
  op.inputs[0] = heads_view(qkv, S, 3 * D, 0);
  op.inputs[1] = heads_view(qkv, S, 3 * D, D);
  op.inputs[2] = heads_view(qkv, S, 3 * D, 2 * D);
  op.output = heads_view(attn, S, D, 0);
  ops[n++] = (named_op){"attention", op};

  op = op_init(NH_OP_MATMUL, tags);
  op.inputs[0] = nh_t2(attn, S, D);
  op.inputs[1] = nh_t2(w_o, D, D);
  op.output = nh_t2(o, S, D);
  ops[n++] = (named_op){"out_proj", op};

  op = op_init(NH_OP_ADD, tags);
  op.inputs[0] = nh_t2(x, S, D);
  op.inputs[1] = nh_t2(o, S, D);
  op.output = nh_t2(x2, S, D);
  ops[n++] = (named_op){"residual1", op};

  op = op_init(NH_OP_RMSNORM, tags);
  op.inputs[0] = nh_t2(x2, S, D);
  op.inputs[1] = nh_t1(w_norm2, D);
  op.output = nh_t2(h2, S, D);
  ops[n++] = (named_op){"rmsnorm2", op};

  op = op_init(NH_OP_MATMUL, tags);
  op.inputs[0] = nh_t2(h2, S, D);
  op.inputs[1] = nh_t2(w_gate, D, F);
  op.output = nh_t2(g, S, F);
  ops[n++] = (named_op){"ffn_gate", op};

  op = op_init(NH_OP_MATMUL, tags);
  op.inputs[0] = nh_t2(h2, S, D);
  op.inputs[1] = nh_t2(w_up, D, F);
  op.output = nh_t2(u, S, F);
  ops[n++] = (named_op){"ffn_up", op};

  op = op_init(NH_OP_SILU, tags);
  op.inputs[0] = nh_t2(g, S, F);
  op.output = nh_t2(g, S, F);
  ops[n++] = (named_op){"silu", op};

  op = op_init(NH_OP_MUL, tags);
  op.inputs[0] = nh_t2(g, S, F);
  op.inputs[1] = nh_t2(u, S, F);
  op.output = nh_t2(g, S, F);
  ops[n++] = (named_op){"swiglu_mul", op};

  op = op_init(NH_OP_MATMUL, tags);
  op.inputs[0] = nh_t2(g, S, F);
  op.inputs[1] = nh_t2(w_down, F, D);
  op.output = nh_t2(dn, S, D);
  ops[n++] = (named_op){"ffn_down", op};

  op = op_init(NH_OP_ADD, tags);
  op.inputs[0] = nh_t2(x2, S, D);
  op.inputs[1] = nh_t2(dn, S, D);
  op.output = nh_t2(y, S, D);
  ops[n++] = (named_op){"residual2", op};

  if (trace) NH_CHECK(nh_trace_start(rt, trace));

  /* 1. Op by op, waiting on each, so each line shows one op's device and time. */
  /* Columns as wide as the longest device name: names are never cut. */
  int w = 6;
  for (uint32_t i = 0; i < ndev && i < 16; i++)
    if ((int)strlen(infos[i].name) > w) w = (int)strlen(infos[i].name);
  printf("%-12s %-*s %10s %9s\n", "op", w + 4, "device", "time (us)", "fallbacks");
  double t0 = now_ms();
  for (int i = 0; i < n; i++) {
    nh_event ev;
    NH_CHECK(nh_submit(rt, &ops[i].op, &ev));
    NH_CHECK(nh_event_wait(rt, ev, UINT64_MAX));
    nh_event_info info;
    info.struct_size = sizeof info;
    NH_CHECK(nh_event_get_info(rt, ev, &info));
    NH_CHECK(nh_event_release(rt, ev));
    const char *dev = info.device >= 0 && (uint32_t)info.device < ndev ? infos[info.device].name : "?";
    printf("%-12s [%d] %-*s %10.1f %9u\n", ops[i].name, info.device, w, dev, info.run_ns / 1e3, info.fallbacks);
  }
  printf("block, op by op: %.2f ms\n\n", now_ms() - t0);

  /* 2. The same block as a graph, repeated: independent ops may overlap across devices. */
  nh_graph graph;
  NH_CHECK(nh_graph_create(rt, &graph));
  for (int i = 0; i < n; i++) NH_CHECK(nh_graph_add(rt, graph, &ops[i].op));
  double best = 1e30, total = 0;
  for (int it = 0; it < iters; it++) {
    double t = now_ms();
    nh_event ev;
    NH_CHECK(nh_graph_submit(rt, graph, &ev));
    NH_CHECK(nh_event_wait(rt, ev, UINT64_MAX));
    NH_CHECK(nh_event_release(rt, ev));
    t = now_ms() - t;
    total += t;
    if (t < best) best = t;
  }
  printf("block as a graph: %d runs, mean %.2f ms, best %.2f ms (%.0f tokens/s)\n", iters, total / iters, best,
         S / (best / 1e3));
  /* Where the scheduler puts the graph now (its segments, and why each ends where it does). */
  size_t need = 0;
  NH_CHECK(nh_graph_explain(rt, graph, NULL, 0, &need));
  char *plan = malloc(need);
  NH_CHECK(nh_graph_explain(rt, graph, plan, need, NULL));
  printf("graph placement: %s\n", plan);
  free(plan);
  NH_CHECK(nh_graph_destroy(rt, graph));

  if (trace) {
    NH_CHECK(nh_trace_stop(rt));
    printf("trace written to %s (open in https://ui.perfetto.dev or chrome://tracing)\n\n", trace);
  }

  printf("%-4s %-*s %8s %12s %9s %9s\n", "dev", w, "name", "ops", "busy (ms)", "failures", "fallbacks");
  for (uint32_t i = 0; i < ndev && i < 16; i++) {
    nh_device_stats st;
    st.struct_size = sizeof st;
    NH_CHECK(nh_device_get_stats(rt, i, &st));
    printf("[%u]  %-*s %8llu %12.2f %9llu %9llu\n", i, w, infos[i].name, (unsigned long long)st.ops_run,
           st.busy_ns / 1e6, (unsigned long long)st.failures, (unsigned long long)st.fallbacks);
  }

  /* A sanity check on the output so a broken kernel cannot pass silently. */
  float *out = malloc(S * D * sizeof(float));
  NH_CHECK(nh_buffer_read(rt, y, 0, out, S * D * sizeof(float)));
  double sum = 0;
  int finite = 1;
  for (uint64_t i = 0; i < S * D; i++) {
    if (!isfinite(out[i])) finite = 0;
    sum += fabs(out[i]);
  }
  free(out);
  printf("\noutput mean |y| = %.4f\n", sum / (S * D));
  NH_CHECK(nh_runtime_destroy(rt));
  if (!finite || sum == 0) {
    fprintf(stderr, "FAILED: output is not finite or all zero\n");
    return 1;
  }
  return 0;
}
