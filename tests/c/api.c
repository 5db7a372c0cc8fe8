/* The main paths of the C API, from C: devices, buffers, ops, graphs, events, policies,
 * explain, tracing, statistics, configuration (against a fake sysfs tree) and faults. */
#include "../../c_examples/common.h"

#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

static int passed = 0, failed = 0;
#define CHECK(cond)                                                                            \
  do {                                                                                         \
    if (cond) passed++;                                                                        \
    else {                                                                                     \
      failed++;                                                                                \
      fprintf(stderr, "FAIL %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, #cond,         \
              nh_last_error_message());                                                        \
    }                                                                                          \
  } while (0)

static int log_lines = 0;
static void on_log(uint32_t level, const char *msg, void *user) {
  (void)level;
  (void)msg;
  (*(int *)user)++;
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!f) {
    perror(path);
    exit(1);
  }
  fputs(text, f);
  fclose(f);
}

static void read_file(const char *path, char *out, size_t cap) {
  FILE *f = fopen(path, "r");
  size_t n = f ? fread(out, 1, cap - 1, f) : 0;
  out[n] = 0;
  if (f) fclose(f);
}

static nh_event submit_wait(nh_runtime rt, const nh_op_desc *op, nh_event_info *info) {
  nh_event ev;
  NH_CHECK(nh_submit(rt, op, &ev));
  NH_CHECK(nh_event_wait(rt, ev, UINT64_MAX));
  info->struct_size = sizeof *info;
  NH_CHECK(nh_event_get_info(rt, ev, info));
  return ev;
}

int main(void) {
  /* A fake sysfs tree with one CPU frequency policy. */
  char root[] = "/tmp/nh_api_sysXXXXXX";
  if (!mkdtemp(root)) return 1;
  char path[512];
  const char *dirs[] = {"/sys", "/sys/devices", "/sys/devices/system", "/sys/devices/system/cpu",
                        "/sys/devices/system/cpu/cpufreq", "/sys/devices/system/cpu/cpufreq/policy0"};
  for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
    snprintf(path, sizeof path, "%s%s", root, dirs[i]);
    mkdir(path, 0755);
  }
  snprintf(path, sizeof path, "%s/sys/devices/system/cpu/cpufreq/policy0/energy_performance_preference", root);
  write_file(path, "balance_performance\n");
  char avail[512];
  snprintf(avail, sizeof avail, "%s/sys/devices/system/cpu/cpufreq/policy0/energy_performance_available_preferences", root);
  write_file(avail, "default performance balance_performance balance_power power\n");

  nh_runtime_desc d;
  NH_CHECK(nh_runtime_desc_init(&d));
  d.devices = NH_ENABLE_SIMULATED_NPU;
  d.log_callback = on_log;
  d.log_user_data = &log_lines;
  d.log_level = 3;
  d.perf_cache_dir = "";
  d.sys_root = root;
  nh_runtime rt;
  NH_CHECK(nh_runtime_create(&d, &rt));
  CHECK(log_lines > 0); /* device discovery is logged at info */

  /* Devices. */
  uint32_t n = 0;
  NH_CHECK(nh_device_count(rt, &n));
  CHECK(n == 2);
  nh_device_info info;
  info.struct_size = sizeof info;
  NH_CHECK(nh_device_get_info(rt, 1, &info));
  CHECK(info.kind == NH_DEVICE_SIMULATED_NPU && info.available);
  CHECK(strstr(info.name, "Simulated") != NULL);
  char text[8192];
  NH_CHECK(nh_device_details(rt, 1, text, sizeof text, NULL));
  CHECK(strstr(text, "simulated") != NULL);
  nh_device_readings r;
  r.struct_size = sizeof r;
  NH_CHECK(nh_device_get_readings(rt, 1, &r));
  CHECK(r.temperature_c > 20 && r.temperature_c < 120);

  /* Buffers: write, read, map, import, size, file mapping. */
  float x[6] = {1, 2, 3, 4, 5, 6}, y[6];
  nh_buffer bx, by, bz;
  NH_CHECK(nh_buffer_alloc(rt, sizeof x, &bx));
  NH_CHECK(nh_buffer_write(rt, bx, 0, x, sizeof x));
  NH_CHECK(nh_buffer_import(rt, y, sizeof y, &by));
  size_t size = 0;
  NH_CHECK(nh_buffer_size(rt, bx, &size));
  CHECK(size == sizeof x);
  void *p = NULL;
  NH_CHECK(nh_buffer_map(rt, bx, &p, &size));
  CHECK(p != NULL && ((float *)p)[5] == 6.0f);
  ((float *)p)[0] = 0.5f;
  NH_CHECK(nh_buffer_unmap(rt, bx, 1));
  char wpath[] = "/tmp/nh_api_wXXXXXX";
  int fd = mkstemp(wpath);
  float w[3] = {10, 20, 30};
  CHECK(write(fd, w, sizeof w) == (ssize_t)sizeof w);
  close(fd);
  NH_CHECK(nh_buffer_map_file(rt, wpath, &bz));

  /* add with broadcast of a mapped row: y[2,3] = x[2,3] + w[3]. */
  nh_op_desc op;
  NH_CHECK(nh_op_desc_init(&op));
  op.kind = NH_OP_ADD;
  op.inputs[0] = nh_t2(bx, 2, 3);
  op.inputs[1] = nh_t1(bz, 3);
  op.output = nh_t2(by, 2, 3);
  nh_event_info ei;
  nh_event ev = submit_wait(rt, &op, &ei);
  CHECK(ei.status == NH_OK && ei.device == 0 && ei.parts == 1);
  NH_CHECK(nh_event_release(rt, ev));
  CHECK(y[0] == 10.5f && y[5] == 36.0f);

  /* softmax of a row, then a graph of two dependent ops. */
  nh_buffer bs;
  NH_CHECK(nh_buffer_alloc(rt, sizeof x, &bs));
  NH_CHECK(nh_op_desc_init(&op));
  op.kind = NH_OP_SOFTMAX;
  op.inputs[0] = nh_t2(by, 2, 3);
  op.output = nh_t2(bs, 2, 3);
  nh_graph g;
  NH_CHECK(nh_graph_create(rt, &g));
  NH_CHECK(nh_graph_add(rt, g, &op));
  nh_op_desc sc;
  NH_CHECK(nh_op_desc_init(&sc));
  sc.kind = NH_OP_SCALE;
  sc.alpha = 2.0f;
  sc.inputs[0] = nh_t2(bs, 2, 3);
  sc.output = nh_t2(bs, 2, 3);
  NH_CHECK(nh_graph_add(rt, g, &sc));
  size_t count = 0;
  NH_CHECK(nh_graph_op_count(rt, g, &count));
  CHECK(count == 2);
  NH_CHECK(nh_graph_submit(rt, g, &ev));
  NH_CHECK(nh_event_wait(rt, ev, UINT64_MAX));
  NH_CHECK(nh_event_release(rt, ev));
  float s[6];
  NH_CHECK(nh_buffer_read(rt, bs, 0, s, sizeof s));
  CHECK(fabsf(s[0] + s[1] + s[2] - 2.0f) < 1e-5f && s[2] > s[1]);
  NH_CHECK(nh_graph_destroy(rt, g));

  /* Policies: built-in, source with a positioned error (old one stays), explain, dump. */
  NH_CHECK(nh_policy_load(rt, NH_POLICY_BUILTIN, "llm_inference"));
  CHECK(nh_policy_load(rt, NH_POLICY_SOURCE, "policy \"x\"\nrule r {\n  use gpu, tpu\n}\n") == NH_ERR_POLICY);
  CHECK(strstr(nh_last_error_message(), ":3:") != NULL);
  char name[64];
  NH_CHECK(nh_policy_name(rt, name, sizeof name, NULL));
  CHECK(!strcmp(name, "llm_inference"));
  size_t needed = 0;
  NH_CHECK(nh_policy_dump(rt, NULL, 0, &needed));
  CHECK(needed > 100);
  nh_buffer ba, bc;
  NH_CHECK(nh_buffer_alloc(rt, 128 * 256 * 4, &ba));
  NH_CHECK(nh_buffer_alloc(rt, 128 * 128 * 4, &bc));
  NH_CHECK(nh_op_desc_init(&op));
  op.kind = NH_OP_MATMUL;
  /* bf16 inputs: the simulated NPU runs what an XDNA1 NPU runs (no f32 matmul). */
  uint64_t sa[2] = {128, 256}, sb[2] = {256, 128};
  op.inputs[0] = nh_dense(ba, NH_BF16, 2, sa, 0);
  op.inputs[1] = nh_dense(ba, NH_BF16, 2, sb, 0);
  op.output = nh_t2(bc, 128, 128);
  op.tags = "phase=prefill";
  NH_CHECK(nh_policy_explain(rt, &op, text, sizeof text, NULL));
  CHECK(strstr(text, "prefill") != NULL && strstr(text, "Simulated NPU") != NULL);

  /* llm_inference picks by expected completion (here the CPU may win: the simulated NPU
   * computes on it); pin prefill to the NPU to test fallback. The prefill matmul runs on the
   * (simulated) NPU; an injected fault falls back to the CPU. */
  NH_CHECK(nh_policy_load(rt, NH_POLICY_SOURCE,
                          "policy \"prefill_on_npu\"\ninclude \"llm_inference\"\n"
                          "rule prefill {\n  when op = matmul and tag phase = prefill\n  use npu, gpu, cpu\n"
                          "  fallback {\n    retries = 2\n  }\n}\n"));
  NH_CHECK(nh_trace_start(rt, "/tmp/nh_api_trace.json"));
  ev = submit_wait(rt, &op, &ei);
  CHECK(ei.device == 1 && ei.fallbacks == 0);
  NH_CHECK(nh_event_release(rt, ev));
  /* One failure: the prefill rule retries twice on the same device, so it still runs there. */
  NH_CHECK(nh_device_inject_fault(rt, 1, NH_FAULT_FAIL_NTH, 1, 0));
  ev = submit_wait(rt, &op, &ei);
  CHECK(ei.status == NH_OK && ei.device == 1 && ei.fallbacks == 0);
  NH_CHECK(nh_event_release(rt, ev));
  /* Every op fails: after the retries it falls back to the CPU, with the right result. */
  NH_CHECK(nh_device_inject_fault(rt, 1, NH_FAULT_FAIL_FRACTION, 1.0, 7));
  CHECK(nh_device_inject_fault(rt, 0, NH_FAULT_DEVICE_LOST, 0, 0) == NH_ERR_UNSUPPORTED);
  CHECK(nh_device_inject_fault(rt, 1, NH_FAULT_FAIL_FRACTION, 2.0, 0) == NH_ERR_INVALID_ARGUMENT);
  ev = submit_wait(rt, &op, &ei);
  CHECK(ei.status == NH_OK && ei.fallbacks == 1 && ei.device == 0);
  NH_CHECK(nh_event_release(rt, ev));
  NH_CHECK(nh_trace_stop(rt));
  read_file("/tmp/nh_api_trace.json", text, sizeof text);
  CHECK(strstr(text, "traceEvents") && strstr(text, "matmul") && strstr(text, "fault"));

  /* Statistics. */
  nh_runtime_stats rs;
  rs.struct_size = sizeof rs;
  NH_CHECK(nh_runtime_get_stats(rt, &rs));
  CHECK(rs.ops_completed >= 5 && rs.fallbacks >= 1 && rs.ops_failed == 0);
  nh_device_stats ds;
  ds.struct_size = sizeof ds;
  NH_CHECK(nh_device_get_stats(rt, 1, &ds));
  CHECK(ds.failures == 4 && ds.ops_run >= 2 && ds.fallbacks == 1);
  nh_pool_stats ps;
  ps.struct_size = sizeof ps;
  NH_CHECK(nh_pool_get_stats(rt, &ps));
  CHECK(ps.bytes_in_use > 0);

  /* Power modes and configuration against the fake tree: dry run, apply, errors. */
  NH_CHECK(nh_device_set_power_mode(rt, 1, NH_POWER_TURBO));
  CHECK(nh_device_set_power_mode(rt, 0, NH_POWER_TURBO) == NH_ERR_UNSUPPORTED);
  NH_CHECK(nh_configurable(rt, text, sizeof text, NULL));
  CHECK(strstr(text, "energy preference") != NULL);
  nh_config_plan plan;
  NH_CHECK(nh_config_plan_init(&plan));
  plan.cpu_energy_preference = "power";
  NH_CHECK(nh_configure(rt, &plan, 1, text, sizeof text, NULL));
  CHECK(strstr(text, "write 'power' to /sys/devices/system/cpu/cpufreq/policy0/energy_performance_preference") != NULL);
  char now[64];
  read_file(path, now, sizeof now);
  CHECK(!strcmp(now, "balance_performance\n")); /* a dry run changes nothing */
  NH_CHECK(nh_configure(rt, &plan, 0, NULL, 0, NULL));
  read_file(path, now, sizeof now);
  CHECK(!strncmp(now, "power", 5));
  plan.cpu_energy_preference = "warp_speed";
  CHECK(nh_configure(rt, &plan, 0, NULL, 0, NULL) == NH_ERR_INVALID_ARGUMENT);
  NH_CHECK(nh_config_plan_init(&plan));
  plan.npu_power_mode = NH_POWER_TURBO;
  CHECK(nh_configure(rt, &plan, 1, NULL, 0, NULL) == NH_ERR_UNSUPPORTED); /* no NPU in the tree */

  NH_CHECK(nh_buffer_destroy(rt, bx));
  NH_CHECK(nh_buffer_destroy(rt, by));
  NH_CHECK(nh_buffer_destroy(rt, bz));
  NH_CHECK(nh_buffer_destroy(rt, bs));
  NH_CHECK(nh_buffer_destroy(rt, ba));
  NH_CHECK(nh_buffer_destroy(rt, bc));
  NH_CHECK(nh_runtime_destroy(rt));
  unlink(wpath);
  unlink("/tmp/nh_api_trace.json");
  printf("api: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
