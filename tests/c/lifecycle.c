/* Runtime lifecycle under load: create a runtime, submit one 64x64x64 matmul at once, wait,
 * destroy; many times, with `threads` 0 (one per core), 2 and 4. nh_submit used to hang
 * forever within a few thousand rounds (issue 17, item 1): a CPU pool thread waiting inside
 * the caller's inline matmul stole the device worker's loop, which never returns. A watchdog
 * fails the test when a round makes no progress for 20 s, instead of hanging ctest.
 *
 * Two callers run the loop at once (each with its own runtimes), which makes the race far
 * more likely on a small machine.
 *
 *   lifecycle [rounds_per_thread_count=300] [callers=2]
 */
#include "../../c_examples/common.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

enum { N = 64 };

static long progress = 0;
static volatile const char *where = "start";

static void *watchdog(void *arg) {
  (void)arg;
  long seen = -1;
  for (;;) {
    sleep(20);
    long now = __sync_fetch_and_add(&progress, 0);
    if (now == seen) {
      fprintf(stderr, "FAIL: no progress for 20 s after %ld rounds (in %s): hung\n", seen, where);
      _exit(1);
    }
    seen = now;
  }
  return NULL;
}

static void round_trip(uint32_t threads, float *a, float *b, float *c) {
  nh_runtime_desc desc;
  NH_CHECK(nh_runtime_desc_init(&desc));
  desc.threads = threads;
  desc.perf_cache_dir = ""; /* nothing learned between rounds */
  nh_runtime rt;
  where = "nh_runtime_create";
  NH_CHECK(nh_runtime_create(&desc, &rt));
  nh_buffer ba, bb, bc;
  NH_CHECK(nh_buffer_import(rt, a, sizeof(float) * N * N, &ba));
  NH_CHECK(nh_buffer_import(rt, b, sizeof(float) * N * N, &bb));
  NH_CHECK(nh_buffer_import(rt, c, sizeof(float) * N * N, &bc));
  nh_op_desc op;
  NH_CHECK(nh_op_desc_init(&op));
  op.kind = NH_OP_MATMUL;
  op.inputs[0] = nh_t2(ba, N, N);
  op.inputs[1] = nh_t2(bb, N, N);
  op.output = nh_t2(bc, N, N);
  nh_event ev;
  where = "nh_submit";
  NH_CHECK(nh_submit(rt, &op, &ev));
  where = "nh_event_wait";
  NH_CHECK(nh_event_wait(rt, ev, UINT64_MAX));
  NH_CHECK(nh_event_release(rt, ev));
  where = "nh_runtime_destroy";
  NH_CHECK(nh_runtime_destroy(rt));
}

typedef struct {
  int rounds;
  int seed;
  int failed;
} caller;

static void *run_caller(void *arg) {
  caller *me = arg;
  float *a = calloc(N * N, sizeof(float)), *b = calloc(N * N, sizeof(float)), *c = calloc(N * N, sizeof(float));
  nh_fill_random(a, N * N, (uint32_t)me->seed);
  /* b is the identity: c must equal a. */
  for (int i = 0; i < N; i++) b[i * N + i] = 1.0f;
  const uint32_t thread_counts[] = {0, 2, 4};
  for (size_t t = 0; t < sizeof thread_counts / sizeof thread_counts[0] && !me->failed; t++) {
    for (int r = 0; r < me->rounds; r++) {
      memset(c, 0, sizeof(float) * N * N);
      round_trip(thread_counts[t], a, b, c);
      if (memcmp(a, c, sizeof(float) * N * N) != 0) {
        fprintf(stderr, "FAIL: threads=%u round %d: wrong result\n", thread_counts[t], r);
        me->failed = 1;
        break;
      }
      __sync_fetch_and_add(&progress, 1);
    }
  }
  free(a);
  free(b);
  free(c);
  return NULL;
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 300;
  int callers = argc > 2 ? atoi(argv[2]) : 2;
  if (callers < 1 || callers > 16) callers = 2;
  pthread_t dog;
  pthread_create(&dog, NULL, watchdog, NULL);
  pthread_detach(dog);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pthread_t th[16];
  caller cs[16];
  for (int i = 0; i < callers; i++) {
    cs[i] = (caller){rounds, i + 1, 0};
    pthread_create(&th[i], NULL, run_caller, &cs[i]);
  }
  int failed = 0;
  for (int i = 0; i < callers; i++) {
    pthread_join(th[i], NULL);
    failed |= cs[i].failed;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  printf("%d callers x %d rounds x threads 0/2/4 of create/submit/wait/destroy in %.2f s\n", callers, rounds, s);
  if (failed) return 1;
  printf("lifecycle: PASS\n");
  return 0;
}
