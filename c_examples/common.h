/* Small helpers shared by the C examples and tests. */
#ifndef NH_EXAMPLES_COMMON_H
#define NH_EXAMPLES_COMMON_H

#include <npuhybrid.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Aborts with the library's message when a call fails. */
#define NH_CHECK(call)                                                                      \
  do {                                                                                      \
    nh_status s_ = (call);                                                                  \
    if (s_ != NH_OK) {                                                                      \
      fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #call,              \
              nh_status_name(s_), nh_last_error_message());                                 \
      exit(1);                                                                              \
    }                                                                                       \
  } while (0)

/* A dense view of `rank` dims over `buf` starting at byte `offset`. */
static inline nh_tensor nh_dense(nh_buffer buf, nh_dtype dtype, uint32_t rank, const uint64_t *shape,
                                 uint64_t offset) {
  nh_tensor t;
  memset(&t, 0, sizeof t);
  t.buffer = buf;
  t.dtype = (uint32_t)dtype;
  t.rank = rank;
  for (uint32_t i = 0; i < rank; i++) t.shape[i] = shape[i];
  t.offset = offset;
  return t;
}

static inline nh_tensor nh_t2(nh_buffer buf, uint64_t a, uint64_t b) {
  uint64_t s[2] = {a, b};
  return nh_dense(buf, NH_F32, 2, s, 0);
}

static inline nh_tensor nh_t1(nh_buffer buf, uint64_t a) {
  uint64_t s[1] = {a};
  return nh_dense(buf, NH_F32, 1, s, 0);
}

static inline const char *nh_kind_name(uint32_t kind) {
  switch (kind) {
    case NH_DEVICE_CPU: return "cpu";
    case NH_DEVICE_GPU: return "gpu";
    case NH_DEVICE_NPU: return "npu";
    case NH_DEVICE_SIMULATED_NPU: return "simulated-npu";
    default: return "?";
  }
}

/* Fills `n` floats with a deterministic pseudo-random sequence in [-1, 1). */
static inline void nh_fill_random(float *x, size_t n, uint32_t seed) {
  uint32_t s = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    x[i] = (float)((s >> 8) & 0xFFFF) / 32768.0f - 1.0f;
  }
}

#endif
