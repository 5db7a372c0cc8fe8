/* Stress: T threads submit N mixed ops each (single ops and graphs) while another thread swaps
 * the policy every 100 ms and the simulated NPU fails 10% of its ops and is then lost. Every
 * op must complete with the right result, and memory must return to its baseline.
 *
 * What is asserted must not depend on where the scheduler's cost model happens to put ops: the
 * runtime starts with (and every other swap returns to) a policy that sends every matmul to the
 * simulated NPU first, without retries, so the NPU always gets traffic, always meets the
 * injected faults (its first op fails, then 10% at random, then it is lost), and those ops
 * always fall back to the CPU. The swaps in between go through the four built-ins.
 *
 *   stress [threads=8] [ops_per_thread=10000]
 */
#include "../../c_examples/common.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

enum { N = 64 }; /* x is N x N */

/* Matmuls to the simulated NPU first, whatever the cost model expects; a failure falls back to
 * the CPU at once (no retry on the NPU); everything else runs on the CPU. */
static const char *npu_first_policy =
    "policy \"stress_npu_first\"\n"
    "device cpu { enabled = true }\n"
    "device npu { enabled = true }\n"
    "fallback {\n"
    "    retries = 0\n"
    "    degrade_after = 3\n"
    "    degrade_for = 100 ms\n"
    "}\n"
    "rule npu_matmul {\n"
    "    when op = matmul\n"
    "    use npu, cpu\n"
    "    strategy first_available\n"
    "}\n"
    "rule other_ops {\n"
    "    use cpu\n"
    "}\n";

static nh_runtime rt;
static int ops_per_thread = 10000;
static volatile int done = 0;
static int swaps = 0;

typedef struct {
  int id;
  int errors;
  long submitted;
} worker;

static nh_op_desc binary(uint32_t kind, nh_buffer a, nh_buffer b, nh_buffer out) {
  nh_op_desc op;
  NH_CHECK(nh_op_desc_init(&op));
  op.kind = kind;
  op.inputs[0] = nh_t2(a, N, N);
  op.inputs[1] = nh_t2(b, N, N);
  op.output = nh_t2(out, N, N);
  return op;
}

static int submit(worker *w, const nh_op_desc *op) {
  nh_event ev;
  nh_status s = nh_submit(rt, op, &ev);
  if (s != NH_OK) {
    fprintf(stderr, "thread %d: submit: %s\n", w->id, nh_last_error_message());
    w->errors++;
    return 0;
  }
  w->submitted++;
  return nh_event_release(rt, ev) == NH_OK; /* the op goes on; its result is checked below */
}

static void *run(void *arg) {
  worker *w = arg;
  float *ones = malloc(sizeof(float) * N * N), *eye = calloc(N * N, sizeof(float));
  for (int i = 0; i < N * N; i++) ones[i] = 1.0f;
  for (int i = 0; i < N; i++) eye[i * N + i] = 1.0f;
  nh_buffer x, y, one, id;
  NH_CHECK(nh_buffer_alloc(rt, sizeof(float) * N * N, &x));
  NH_CHECK(nh_buffer_alloc(rt, sizeof(float) * N * N, &y));
  NH_CHECK(nh_buffer_alloc(rt, sizeof(float) * N * N, &one));
  NH_CHECK(nh_buffer_alloc(rt, sizeof(float) * N * N, &id));
  NH_CHECK(nh_buffer_write(rt, one, 0, ones, sizeof(float) * N * N));
  NH_CHECK(nh_buffer_write(rt, id, 0, eye, sizeof(float) * N * N));
  /* bf16 I and ones for the matmul: the simulated NPU (an XDNA1 profile) runs bf16 matmuls
   * only; I x ones is exact in any precision. */
  uint16_t *b16 = malloc(2 * N * N);
  nh_buffer idb, oneb;
  NH_CHECK(nh_buffer_alloc(rt, 2 * N * N, &idb));
  NH_CHECK(nh_buffer_alloc(rt, 2 * N * N, &oneb));
  for (int i = 0; i < N * N; i++) b16[i] = eye[i] ? 0x3F80 : 0; /* bf16 1.0 */
  NH_CHECK(nh_buffer_write(rt, idb, 0, b16, 2 * N * N));
  for (int i = 0; i < N * N; i++) b16[i] = 0x3F80;
  NH_CHECK(nh_buffer_write(rt, oneb, 0, b16, 2 * N * N));
  free(b16);
  uint64_t sq[2] = {N, N};

  /* A graph adding one three times. */
  nh_graph g;
  NH_CHECK(nh_graph_create(rt, &g));
  nh_op_desc add = binary(NH_OP_ADD, x, one, x);
  for (int i = 0; i < 3; i++) NH_CHECK(nh_graph_add(rt, g, &add));

  float expected = 0;
  for (int i = 0; i < ops_per_thread; i++) {
    nh_op_desc op;
    switch (i % 5) {
      case 0: /* x += 1 */
        submit(w, &add);
        expected += 1;
        break;
      case 1: /* x *= 1 */
        op = binary(NH_OP_MUL, x, one, x);
        submit(w, &op);
        break;
      case 2: /* y = I ones (a bf16 matmul into f32), then x = x + y */
        op = binary(NH_OP_MATMUL, idb, oneb, y);
        op.inputs[0] = nh_dense(idb, NH_BF16, 2, sq, 0);
        op.inputs[1] = nh_dense(oneb, NH_BF16, 2, sq, 0);
        submit(w, &op);
        op = binary(NH_OP_ADD, x, y, x);
        submit(w, &op);
        expected += 1;
        i++;
        break;
      case 3: { /* x = 1 * x, as a scale */
        NH_CHECK(nh_op_desc_init(&op));
        op.kind = NH_OP_SCALE;
        op.alpha = 1.0f;
        op.inputs[0] = nh_t2(x, N, N);
        op.output = nh_t2(x, N, N);
        submit(w, &op);
        break;
      }
      case 4: { /* the graph: x += 3 */
        nh_event ev;
        if (nh_graph_submit(rt, g, &ev) == NH_OK) {
          NH_CHECK(nh_event_release(rt, ev));
          w->submitted += 3;
          expected += 3;
        } else {
          w->errors++;
        }
        break;
      }
    }
  }
  float *out = malloc(sizeof(float) * N * N);
  NH_CHECK(nh_buffer_read(rt, x, 0, out, sizeof(float) * N * N)); /* waits for this thread's ops */
  for (int i = 0; i < N * N; i++) {
    if (out[i] != expected) {
      fprintf(stderr, "thread %d: x[%d] = %g, expected %g\n", w->id, i, out[i], expected);
      w->errors++;
      break;
    }
  }
  NH_CHECK(nh_graph_destroy(rt, g));
  NH_CHECK(nh_buffer_destroy(rt, x));
  NH_CHECK(nh_buffer_destroy(rt, y));
  NH_CHECK(nh_buffer_destroy(rt, one));
  NH_CHECK(nh_buffer_destroy(rt, id));
  NH_CHECK(nh_buffer_destroy(rt, idb));
  NH_CHECK(nh_buffer_destroy(rt, oneb));
  free(out);
  free(ones);
  free(eye);
  return NULL;
}

static void *swap_policies(void *arg) {
  (void)arg;
  /* The runtime starts with npu_first_policy; odd swaps load a built-in, even ones return. */
  const char *names[] = {"default", "llm_inference", "continuous_audio", "battery_saver"};
  while (!done) {
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    if (swaps % 2 == 0)
      NH_CHECK(nh_policy_load(rt, NH_POLICY_BUILTIN, names[(swaps / 2) % 4]));
    else
      NH_CHECK(nh_policy_load(rt, NH_POLICY_SOURCE, npu_first_policy));
    swaps++;
  }
  return NULL;
}

static long rss_kib(void) {
  long pages = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
  }
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 8;
  ops_per_thread = argc > 2 ? atoi(argv[2]) : 10000;
  if (threads < 1 || threads > 64 || ops_per_thread < 5) {
    fprintf(stderr, "usage: stress [threads 1..64] [ops_per_thread >= 5]\n");
    return 2;
  }
  nh_runtime_desc d;
  NH_CHECK(nh_runtime_desc_init(&d));
  d.devices = NH_ENABLE_SIMULATED_NPU;
  d.perf_cache_dir = "";
  d.log_level = 1;
  NH_CHECK(nh_runtime_create(&d, &rt));
  NH_CHECK(nh_policy_load(rt, NH_POLICY_SOURCE, npu_first_policy));
  /* The simulated NPU fails its first op, then 10% of its ops at random, and is lost after
   * as many ops as a fifteenth of the run's. */
  NH_CHECK(nh_device_inject_fault(rt, 1, NH_FAULT_FAIL_NTH, 1, 0));
  NH_CHECK(nh_device_inject_fault(rt, 1, NH_FAULT_FAIL_FRACTION, 0.1, 1234));
  NH_CHECK(nh_device_inject_fault(rt, 1, NH_FAULT_LOSE_AFTER, (double)(threads * ops_per_thread / 15), 0));

  nh_pool_stats before;
  before.struct_size = sizeof before;
  NH_CHECK(nh_pool_get_stats(rt, &before));
  long rss_before = rss_kib();

  pthread_t swapper, tids[64];
  worker workers[64];
  pthread_create(&swapper, NULL, swap_policies, NULL);
  for (int t = 0; t < threads; t++) {
    workers[t] = (worker){t, 0, 0};
    pthread_create(&tids[t], NULL, run, &workers[t]);
  }
  int errors = 0;
  long submitted = 0;
  for (int t = 0; t < threads; t++) {
    pthread_join(tids[t], NULL);
    errors += workers[t].errors;
    submitted += workers[t].submitted;
  }
  done = 1;
  pthread_join(swapper, NULL);
  NH_CHECK(nh_runtime_synchronize(rt));

  nh_runtime_stats rs;
  rs.struct_size = sizeof rs;
  NH_CHECK(nh_runtime_get_stats(rt, &rs));
  nh_device_stats npu;
  npu.struct_size = sizeof npu;
  NH_CHECK(nh_device_get_stats(rt, 1, &npu));
  nh_pool_stats after;
  after.struct_size = sizeof after;
  NH_CHECK(nh_pool_get_stats(rt, &after));
  long rss_after = rss_kib();

  int passed = 0, failed = 0;
#define VERIFY(cond, ...)                  \
  do {                                     \
    if (cond) passed++;                    \
    else {                                 \
      failed++;                            \
      fprintf(stderr, "FAIL: " __VA_ARGS__); \
      fprintf(stderr, "\n");               \
    }                                      \
  } while (0)
  VERIFY(errors == 0, "%d thread errors", errors);
  VERIFY(rs.ops_submitted == (uint64_t)submitted, "submitted %llu vs %ld", (unsigned long long)rs.ops_submitted, submitted);
  VERIFY(rs.ops_completed == rs.ops_submitted, "completed %llu of %llu", (unsigned long long)rs.ops_completed,
         (unsigned long long)rs.ops_submitted);
  VERIFY(rs.ops_failed == 0, "%llu ops failed", (unsigned long long)rs.ops_failed);
  VERIFY(npu.ops_run > 0, "the simulated NPU ran no op");
  VERIFY(npu.failures > 0, "no injected fault was met (%llu NPU failures)", (unsigned long long)npu.failures);
  /* Under npu_first_policy a failure falls back at once; the built-ins may retry on the NPU. */
  VERIFY(npu.fallbacks > 0 && npu.fallbacks <= npu.failures,
         "NPU failures fell back: %llu failures, %llu fallbacks",
         (unsigned long long)npu.failures, (unsigned long long)npu.fallbacks);
  VERIFY(rs.fallbacks >= npu.fallbacks, "runtime fallbacks %llu < NPU fallbacks %llu",
         (unsigned long long)rs.fallbacks, (unsigned long long)npu.fallbacks);
  VERIFY(after.bytes_in_use == before.bytes_in_use, "pool in use %llu, baseline %llu",
         (unsigned long long)after.bytes_in_use, (unsigned long long)before.bytes_in_use);
  VERIFY(rss_after - rss_before < 64 * 1024, "RSS grew by %ld KiB", rss_after - rss_before);
  printf("stress: %d threads x %d ops: %llu ops completed, %llu lost, %llu NPU ops, %llu NPU failures, %llu fallbacks, "
         "%d policy swaps, pool in use %llu -> %llu bytes, RSS %ld -> %ld KiB\n",
         threads, ops_per_thread, (unsigned long long)rs.ops_completed,
         (unsigned long long)(rs.ops_submitted - rs.ops_completed), (unsigned long long)npu.ops_run,
         (unsigned long long)npu.failures,
         (unsigned long long)rs.fallbacks, swaps, (unsigned long long)before.bytes_in_use,
         (unsigned long long)after.bytes_in_use, rss_before, rss_after);
  NH_CHECK(nh_runtime_destroy(rt));
  printf("stress: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
