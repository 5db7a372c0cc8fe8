/* C API misuse suite: every call below is wrong on purpose and must return the right status,
 * never crash. Run under valgrind too (see tests/c/CMakeLists.txt). */
#include "../../c_examples/common.h"

#include <pthread.h>

static int passed = 0, failed = 0;

#define EXPECT(call, want)                                                                          \
  do {                                                                                              \
    nh_status got_ = (call);                                                                        \
    if (got_ == (want)) {                                                                           \
      passed++;                                                                                     \
    } else {                                                                                        \
      failed++;                                                                                     \
      fprintf(stderr, "FAIL %s:%d: %s\n  want %s, got %s (%s)\n", __FILE__, __LINE__, #call,       \
              nh_status_name(want), nh_status_name(got_), nh_last_error_message());                 \
    }                                                                                               \
  } while (0)

#define EXPECT_MSG_CONTAINS(text)                                                                   \
  do {                                                                                              \
    if (strstr(nh_last_error_message(), (text))) passed++;                                          \
    else {                                                                                          \
      failed++;                                                                                     \
      fprintf(stderr, "FAIL %s:%d: message '%s' lacks '%s'\n", __FILE__, __LINE__,                 \
              nh_last_error_message(), (text));                                                     \
    }                                                                                               \
  } while (0)

static nh_runtime make_runtime(void) {
  nh_runtime_desc d;
  NH_CHECK(nh_runtime_desc_init(&d));
  d.perf_cache_dir = "";
  nh_runtime rt;
  NH_CHECK(nh_runtime_create(&d, &rt));
  return rt;
}

static nh_op_desc add_op(nh_buffer a, nh_buffer b, nh_buffer out, uint64_t n) {
  nh_op_desc op;
  NH_CHECK(nh_op_desc_init(&op));
  op.kind = NH_OP_ADD;
  op.inputs[0] = nh_t1(a, n);
  op.inputs[1] = nh_t1(b, n);
  op.output = nh_t1(out, n);
  return op;
}

static void null_pointers(nh_runtime rt) {
  nh_buffer b;
  nh_event ev;
  nh_graph g;
  EXPECT(nh_runtime_desc_init(NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_runtime_create(NULL, NULL), NH_ERR_NULL_POINTER);
  nh_runtime_desc d;
  nh_runtime_desc_init(&d);
  EXPECT(nh_runtime_create(&d, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_buffer_alloc(rt, 16, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_buffer_import(rt, NULL, 16, &b), NH_ERR_NULL_POINTER);
  EXPECT(nh_buffer_map_file(rt, NULL, &b), NH_ERR_NULL_POINTER);
  EXPECT(nh_submit(rt, NULL, &ev), NH_ERR_NULL_POINTER);
  EXPECT(nh_graph_create(rt, NULL), NH_ERR_NULL_POINTER);
  NH_CHECK(nh_graph_create(rt, &g));
  EXPECT(nh_graph_add(rt, g, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_graph_submit(rt, g, NULL), NH_ERR_NULL_POINTER);
  NH_CHECK(nh_graph_destroy(rt, g));
  EXPECT(nh_device_count(rt, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_device_get_info(rt, 0, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_device_get_stats(rt, 0, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_device_get_readings(rt, 0, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_runtime_get_stats(rt, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_pool_get_stats(rt, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_trace_start(rt, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_policy_load(rt, NH_POLICY_SOURCE, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_policy_name(rt, NULL, 0, NULL), NH_ERR_NULL_POINTER);
  NH_CHECK(nh_buffer_alloc(rt, 16, &b));
  EXPECT(nh_buffer_write(rt, b, 0, NULL, 4), NH_ERR_NULL_POINTER);
  EXPECT(nh_buffer_read(rt, b, 0, NULL, 4), NH_ERR_NULL_POINTER);
  EXPECT(nh_buffer_map(rt, b, NULL, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_buffer_size(rt, b, NULL), NH_ERR_NULL_POINTER);
  NH_CHECK(nh_buffer_destroy(rt, b));
}

static void bad_handles(nh_runtime rt) {
  nh_buffer a, b, c;
  NH_CHECK(nh_buffer_alloc(rt, 64, &a));
  NH_CHECK(nh_buffer_alloc(rt, 64, &b));
  NH_CHECK(nh_buffer_alloc(rt, 64, &c));
  nh_op_desc op = add_op(a, b, c, 16);
  nh_event ev;

  /* Freed and double-freed buffers. */
  NH_CHECK(nh_buffer_destroy(rt, b));
  EXPECT(nh_buffer_destroy(rt, b), NH_ERR_INVALID_HANDLE);
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_HANDLE);
  EXPECT(nh_buffer_write(rt, b, 0, "x", 1), NH_ERR_INVALID_HANDLE);
  /* A reused slot gets a new generation: the old handle stays invalid. */
  nh_buffer b2;
  NH_CHECK(nh_buffer_alloc(rt, 64, &b2));
  EXPECT(nh_buffer_destroy(rt, b), NH_ERR_INVALID_HANDLE);
  /* Forged handles. */
  nh_buffer forged = {0x1234567890ull};
  EXPECT(nh_buffer_destroy(rt, forged), NH_ERR_INVALID_HANDLE);
  nh_buffer zero = {0};
  EXPECT(nh_buffer_destroy(rt, zero), NH_ERR_INVALID_HANDLE);
  nh_runtime bogus = {42};
  EXPECT(nh_buffer_alloc(bogus, 16, &b), NH_ERR_INVALID_HANDLE);
  EXPECT(nh_runtime_destroy(bogus), NH_ERR_INVALID_HANDLE);

  /* Handles from another runtime. */
  nh_runtime other = make_runtime();
  nh_buffer foreign;
  NH_CHECK(nh_buffer_alloc(other, 64, &foreign));
  EXPECT(nh_buffer_destroy(rt, foreign), NH_ERR_INVALID_HANDLE);
  op = add_op(a, foreign, c, 16);
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_HANDLE);
  EXPECT_MSG_CONTAINS("another runtime");
  op = add_op(a, b2, c, 16);
  NH_CHECK(nh_submit(rt, &op, &ev));
  EXPECT(nh_event_wait(other, ev, UINT64_MAX), NH_ERR_INVALID_HANDLE);

  /* Released and double-released events. */
  NH_CHECK(nh_event_wait(rt, ev, UINT64_MAX));
  NH_CHECK(nh_event_release(rt, ev));
  EXPECT(nh_event_wait(rt, ev, UINT64_MAX), NH_ERR_INVALID_HANDLE);
  EXPECT(nh_event_release(rt, ev), NH_ERR_INVALID_HANDLE);
  EXPECT(nh_event_query(rt, ev), NH_ERR_INVALID_HANDLE);

  /* Destroyed graph. */
  nh_graph g;
  NH_CHECK(nh_graph_create(rt, &g));
  NH_CHECK(nh_graph_destroy(rt, g));
  EXPECT(nh_graph_destroy(rt, g), NH_ERR_INVALID_HANDLE);
  EXPECT(nh_graph_submit(rt, g, &ev), NH_ERR_INVALID_HANDLE);

  /* A destroyed runtime. */
  NH_CHECK(nh_runtime_destroy(other));
  EXPECT(nh_runtime_destroy(other), NH_ERR_INVALID_HANDLE);
  EXPECT(nh_buffer_destroy(other, foreign), NH_ERR_INVALID_HANDLE);

  NH_CHECK(nh_buffer_destroy(rt, a));
  NH_CHECK(nh_buffer_destroy(rt, b2));
  NH_CHECK(nh_buffer_destroy(rt, c));
}

static void wrong_sizes_and_shapes(nh_runtime rt) {
  nh_buffer a, b, c;
  NH_CHECK(nh_buffer_alloc(rt, 64, &a));
  NH_CHECK(nh_buffer_alloc(rt, 64, &b));
  NH_CHECK(nh_buffer_alloc(rt, 64, &c));
  nh_event ev;

  /* Struct sizes. */
  nh_runtime_desc d;
  nh_runtime_desc_init(&d);
  d.struct_size = 8;
  nh_runtime r2;
  EXPECT(nh_runtime_create(&d, &r2), NH_ERR_STRUCT_SIZE);
  nh_op_desc op = add_op(a, b, c, 16);
  op.struct_size = 4;
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_STRUCT_SIZE);
  nh_device_info info;
  info.struct_size = 12;
  EXPECT(nh_device_get_info(rt, 0, &info), NH_ERR_STRUCT_SIZE);
  nh_event_info einfo;
  einfo.struct_size = 0;
  op = add_op(a, b, c, 16);
  NH_CHECK(nh_submit(rt, &op, &ev));
  EXPECT(nh_event_get_info(rt, ev, &einfo), NH_ERR_STRUCT_SIZE);
  NH_CHECK(nh_event_wait(rt, ev, UINT64_MAX));
  NH_CHECK(nh_event_release(rt, ev));

  /* Views beyond the buffer, misaligned offsets, bad ranks, dtypes and kinds. */
  op = add_op(a, b, c, 17);
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  EXPECT_MSG_CONTAINS("holds 64 bytes");
  op = add_op(a, b, c, 8);
  op.inputs[0].offset = 2;
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  EXPECT_MSG_CONTAINS("not aligned");
  op = add_op(a, b, c, 8);
  op.inputs[0].rank = 5;
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  op = add_op(a, b, c, 8);
  op.inputs[1].dtype = 99;
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  op = add_op(a, b, c, 8);
  op.inputs[1].dtype = NH_F16;
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  EXPECT_MSG_CONTAINS("dtype");
  op = add_op(a, b, c, 8);
  op.kind = 1000;
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  op = add_op(a, b, c, 8);
  op.flags = 1u << 30;
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  op = add_op(a, b, c, 8);
  op.output.buffer.id = 0;
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  op = add_op(a, b, c, 8);
  op.tags = "phase";
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);

  /* Integer overflow in shape products and strides. */
  op = add_op(a, b, c, 8);
  op.inputs[0].rank = 4;
  op.inputs[0].shape[0] = op.inputs[0].shape[1] = op.inputs[0].shape[2] = op.inputs[0].shape[3] = 1ull << 20;
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  EXPECT_MSG_CONTAINS("overflow");
  op = add_op(a, b, c, 2);
  op.inputs[0].strides[0] = UINT64_MAX / 2;
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  op = add_op(a, b, c, 8);
  op.inputs[0].offset = UINT64_MAX - 3;
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);

  /* Bad shapes for the op. */
  nh_op_desc mm;
  NH_CHECK(nh_op_desc_init(&mm));
  mm.kind = NH_OP_MATMUL;
  mm.inputs[0] = nh_t2(a, 2, 3);
  mm.inputs[1] = nh_t2(b, 4, 2);
  mm.output = nh_t2(c, 2, 2);
  EXPECT(nh_submit(rt, &mm, &ev), NH_ERR_INVALID_ARGUMENT);
  EXPECT_MSG_CONTAINS("inner dimensions");

  /* Buffer ranges. */
  EXPECT(nh_buffer_write(rt, a, 60, "12345678", 8), NH_ERR_INVALID_ARGUMENT);
  char tmp[8];
  EXPECT(nh_buffer_read(rt, a, SIZE_MAX - 2, tmp, 8), NH_ERR_INVALID_ARGUMENT);
  nh_buffer z;
  EXPECT(nh_buffer_alloc(rt, 0, &z), NH_ERR_INVALID_ARGUMENT);
  EXPECT(nh_buffer_alloc(rt, SIZE_MAX, &z), NH_ERR_OUT_OF_MEMORY);
  EXPECT(nh_buffer_map_file(rt, "/nonexistent/weights.bin", &z), NH_ERR_IO);
  info.struct_size = sizeof info;
  EXPECT(nh_device_get_info(rt, 999, &info), NH_ERR_INVALID_ARGUMENT);

  /* Too-small string buffers report the size needed. */
  char small[2];
  size_t needed = 0;
  EXPECT(nh_policy_name(rt, small, sizeof small, &needed), NH_ERR_BUFFER_TOO_SMALL);
  if (needed > 2) passed++;
  else failed++;

  /* A bad policy is rejected and the old one stays. */
  EXPECT(nh_policy_load(rt, NH_POLICY_BUILTIN, "no_such_policy"), NH_ERR_POLICY);
  EXPECT(nh_policy_load(rt, 77, "x"), NH_ERR_INVALID_ARGUMENT);
  char name[64];
  NH_CHECK(nh_policy_name(rt, name, sizeof name, NULL));
  if (!strcmp(name, "default")) passed++;
  else failed++;

  NH_CHECK(nh_buffer_destroy(rt, a));
  NH_CHECK(nh_buffer_destroy(rt, b));
  NH_CHECK(nh_buffer_destroy(rt, c));
}

/* Destroying a runtime while ops are in flight waits for them. */
static void destroy_with_ops_in_flight(void) {
  nh_runtime rt = make_runtime();
  enum { N = 256 };
  nh_buffer a, b;
  NH_CHECK(nh_buffer_alloc(rt, N * N * 4, &a));
  NH_CHECK(nh_buffer_alloc(rt, N * N * 4, &b));
  for (int i = 0; i < 50; i++) {
    nh_op_desc op;
    NH_CHECK(nh_op_desc_init(&op));
    op.kind = NH_OP_MATMUL;
    op.inputs[0] = nh_t2(a, N, N);
    op.inputs[1] = nh_t2(a, N, N);
    op.output = nh_t2(b, N, N);
    nh_event ev;
    NH_CHECK(nh_submit(rt, &op, &ev)); /* events deliberately not released: destroy frees them */
  }
  EXPECT(nh_runtime_destroy(rt), NH_OK);
  EXPECT(nh_buffer_destroy(rt, a), NH_ERR_INVALID_HANDLE);
}

int main(void) {
  nh_runtime rt = make_runtime();
  null_pointers(rt);
  bad_handles(rt);
  wrong_sizes_and_shapes(rt);
  NH_CHECK(nh_runtime_destroy(rt));
  destroy_with_ops_in_flight();
  printf("misuse: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
