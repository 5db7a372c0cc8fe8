/* hello: enumerate devices, run one matmul, check the result. */
#include "common.h"

#include <math.h>

int main(void) {
  printf("npuhybrid %s (ABI %u)\n", nh_version(), nh_abi_version());

  nh_runtime_desc desc;
  NH_CHECK(nh_runtime_desc_init(&desc));
  desc.devices = NH_ENABLE_GPU | NH_ENABLE_NPU | NH_ENABLE_SIMULATED_NPU;
  nh_runtime rt;
  NH_CHECK(nh_runtime_create(&desc, &rt));

  uint32_t count = 0;
  NH_CHECK(nh_device_count(rt, &count));
  for (uint32_t i = 0; i < count; i++) {
    nh_device_info info;
    info.struct_size = sizeof info;
    NH_CHECK(nh_device_get_info(rt, i, &info));
    printf("device %u: %-14s %s%s%s%s\n", i, nh_kind_name(info.kind), info.name,
           info.available ? "" : " (unavailable: ", info.available ? "" : info.unavailable_reason,
           info.available ? "" : ")");
  }

  enum { M = 64, K = 96, N = 80 };
  float *a = malloc(sizeof(float) * M * K), *b = malloc(sizeof(float) * K * N), *c = malloc(sizeof(float) * M * N);
  nh_fill_random(a, M * K, 1);
  nh_fill_random(b, K * N, 2);
  nh_buffer ba, bb, bc;
  NH_CHECK(nh_buffer_alloc(rt, sizeof(float) * M * K, &ba));
  NH_CHECK(nh_buffer_import(rt, b, sizeof(float) * K * N, &bb)); /* zero copy */
  NH_CHECK(nh_buffer_alloc(rt, sizeof(float) * M * N, &bc));
  NH_CHECK(nh_buffer_write(rt, ba, 0, a, sizeof(float) * M * K));

  nh_op_desc op;
  NH_CHECK(nh_op_desc_init(&op));
  op.kind = NH_OP_MATMUL;
  op.inputs[0] = nh_t2(ba, M, K);
  op.inputs[1] = nh_t2(bb, K, N);
  op.output = nh_t2(bc, M, N);
  nh_event ev;
  NH_CHECK(nh_submit(rt, &op, &ev));
  NH_CHECK(nh_event_wait(rt, ev, UINT64_MAX));
  nh_event_info info;
  info.struct_size = sizeof info;
  NH_CHECK(nh_event_get_info(rt, ev, &info));
  NH_CHECK(nh_event_release(rt, ev));
  NH_CHECK(nh_buffer_read(rt, bc, 0, c, sizeof(float) * M * N));

  double max_err = 0;
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      double ref = 0;
      for (int k = 0; k < K; k++) ref += (double)a[i * K + k] * b[k * N + j];
      double err = fabs(ref - c[i * N + j]);
      if (err > max_err) max_err = err;
    }
  printf("matmul %dx%dx%d ran on device %d in %.1f us, max error %.2e\n", M, K, N, info.device,
         info.run_ns / 1e3, max_err);

  NH_CHECK(nh_buffer_destroy(rt, ba));
  NH_CHECK(nh_buffer_destroy(rt, bb));
  NH_CHECK(nh_buffer_destroy(rt, bc));
  NH_CHECK(nh_runtime_destroy(rt));
  free(a);
  free(b);
  free(c);
  if (max_err > 1e-3) {
    fprintf(stderr, "FAILED: result differs from the reference\n");
    return 1;
  }
  printf("hello: OK\n");
  return 0;
}
