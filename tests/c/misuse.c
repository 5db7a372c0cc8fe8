/* C API misuse suite: every call below is wrong on purpose and must return the right status,
 * never crash. Run under valgrind too (see tests/c/CMakeLists.txt). */
#include "../../c_examples/common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <unistd.h>

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
  /* Untrusted sizes are capped, and fail fast (issue 17, item 9): UINT32_MAX threads used to
   * spend 36 s spawning threads, 40,000 tags 3-9 s of parsing. */
  nh_runtime_desc_init(&d);
  d.threads = UINT32_MAX;
  EXPECT(nh_runtime_create(&d, &r2), NH_ERR_INVALID_ARGUMENT);
  EXPECT_MSG_CONTAINS("the limit is 1024");
  {
    size_t ntags = 40000, len = 0;
    char *tags = malloc(ntags * 12 + 1);
    for (size_t i = 0; i < ntags; i++) len += (size_t)sprintf(tags + len, "k%zu=v,", i);
    op = add_op(a, b, c, 16);
    op.tags = tags;
    EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
    EXPECT_MSG_CONTAINS("the limit is 4096");
    /* 64 distinct tags are fine; a 65th is not. */
    len = 0;
    for (int i = 0; i < 65; i++) len += (size_t)sprintf(tags + len, "k%d=v ", i);
    EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
    EXPECT_MSG_CONTAINS("more than 64 tags");
    tags[strlen(tags) - strlen("k64=v ")] = '\0';
    EXPECT(nh_submit(rt, &op, &ev), NH_OK);
    NH_CHECK(nh_event_wait(rt, ev, UINT64_MAX));
    NH_CHECK(nh_event_release(rt, ev));
    free(tags);
  }
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

/* Pointer arguments the first pass does not reach: every other function that takes one. */
static void more_null_pointers(nh_runtime rt) {
  nh_buffer a, b, c;
  NH_CHECK(nh_buffer_alloc(rt, 64, &a));
  NH_CHECK(nh_buffer_alloc(rt, 64, &b));
  NH_CHECK(nh_buffer_alloc(rt, 64, &c));
  nh_op_desc op = add_op(a, b, c, 16);
  nh_event ev;
  char buf[64];
  size_t needed = 0;
  EXPECT(nh_op_desc_init(NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_config_plan_init(NULL), NH_ERR_NULL_POINTER);
  float host[16];
  EXPECT(nh_buffer_import(rt, host, sizeof host, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_buffer_map_file(rt, "/proc/self/exe", NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_submit(rt, &op, NULL), NH_ERR_NULL_POINTER); /* nothing is submitted */
  EXPECT(nh_submit(rt, NULL, NULL), NH_ERR_NULL_POINTER);
  NH_CHECK(nh_submit(rt, &op, &ev));
  EXPECT(nh_event_get_info(rt, ev, NULL), NH_ERR_NULL_POINTER);
  NH_CHECK(nh_event_wait(rt, ev, UINT64_MAX));
  NH_CHECK(nh_event_release(rt, ev));
  nh_graph g;
  NH_CHECK(nh_graph_create(rt, &g));
  EXPECT(nh_graph_op_count(rt, g, NULL), NH_ERR_NULL_POINTER);
  NH_CHECK(nh_graph_destroy(rt, g));
  EXPECT(nh_policy_explain(rt, NULL, buf, sizeof buf, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_policy_explain(rt, &op, NULL, 0, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_policy_dump(rt, NULL, 0, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_device_details(rt, 0, NULL, 0, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_configurable(rt, NULL, 0, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_configure(rt, NULL, 1, buf, sizeof buf, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_policy_load(rt, NH_POLICY_BUILTIN, NULL), NH_ERR_NULL_POINTER);
  EXPECT(nh_policy_load(rt, NH_POLICY_FILE, NULL), NH_ERR_NULL_POINTER);
  /* NULL for an optional out-parameter is fine; a NULL buffer with `needed` is a size query. */
  void *p = NULL;
  EXPECT(nh_buffer_map(rt, a, &p, NULL), NH_OK);
  EXPECT(nh_buffer_unmap(rt, a, 0), NH_OK);
  EXPECT(nh_policy_dump(rt, NULL, 0, &needed), NH_OK);
  if (needed > 1) passed++;
  else failed++;
  /* Strings the library returns are never NULL, whatever the status. */
  if (nh_status_name((nh_status)12345) && nh_last_error_message() && nh_version()) passed++;
  else failed++;
  /* A value that is no status gets a fixed name, not a wild pointer (issue 17, item 5). */
  const int not_statuses[] = {18, 100, -1, 12345};
  for (size_t i = 0; i < sizeof not_statuses / sizeof not_statuses[0]; i++) {
    if (strcmp(nh_status_name(not_statuses[i]), "unknown status") == 0) passed++;
    else {
      fprintf(stderr, "FAIL: nh_status_name(%d) is not \"unknown status\"\n", not_statuses[i]);
      failed++;
    }
  }
  if (strcmp(nh_status_name(NH_ERR_INTERNAL), "NH_ERR_INTERNAL") == 0) passed++;
  else failed++;
  NH_CHECK(nh_buffer_destroy(rt, a));
  NH_CHECK(nh_buffer_destroy(rt, b));
  NH_CHECK(nh_buffer_destroy(rt, c));
}

/* Freed, released and foreign handles on every function that takes them. */
static void more_bad_handles(nh_runtime rt) {
  nh_buffer a, b, c, dead;
  NH_CHECK(nh_buffer_alloc(rt, 64, &a));
  NH_CHECK(nh_buffer_alloc(rt, 64, &b));
  NH_CHECK(nh_buffer_alloc(rt, 64, &c));
  NH_CHECK(nh_buffer_alloc(rt, 64, &dead));
  NH_CHECK(nh_buffer_destroy(rt, dead));
  size_t size;
  void *p;
  char tmp[4];
  EXPECT(nh_buffer_size(rt, dead, &size), NH_ERR_INVALID_HANDLE);
  EXPECT(nh_buffer_read(rt, dead, 0, tmp, 4), NH_ERR_INVALID_HANDLE);
  EXPECT(nh_buffer_map(rt, dead, &p, NULL), NH_ERR_INVALID_HANDLE);
  EXPECT(nh_buffer_unmap(rt, dead, 1), NH_ERR_INVALID_HANDLE);

  /* A graph that recorded a buffer destroyed since is rejected whole; an empty one too. */
  nh_graph g;
  nh_event ev;
  NH_CHECK(nh_graph_create(rt, &g));
  EXPECT(nh_graph_submit(rt, g, &ev), NH_ERR_INVALID_ARGUMENT);
  nh_op_desc op = add_op(a, b, c, 16);
  NH_CHECK(nh_graph_add(rt, g, &op));
  nh_buffer gone;
  NH_CHECK(nh_buffer_alloc(rt, 64, &gone));
  op = add_op(a, gone, c, 16);
  NH_CHECK(nh_graph_add(rt, g, &op));
  NH_CHECK(nh_buffer_destroy(rt, gone));
  EXPECT(nh_graph_submit(rt, g, &ev), NH_ERR_INVALID_HANDLE);
  nh_runtime_stats rs;
  rs.struct_size = sizeof rs;
  NH_CHECK(nh_runtime_get_stats(rt, &rs));
  uint64_t submitted = rs.ops_submitted;
  EXPECT(nh_graph_submit(rt, g, &ev), NH_ERR_INVALID_HANDLE);
  NH_CHECK(nh_runtime_get_stats(rt, &rs));
  if (rs.ops_submitted == submitted) passed++; /* not half of it either */
  else failed++;
  op = add_op(a, dead, c, 16);
  EXPECT(nh_graph_add(rt, g, &op), NH_ERR_INVALID_HANDLE);

  /* Another runtime's graph and event; a destroyed graph's other entry points. */
  nh_runtime other = make_runtime();
  nh_graph og;
  NH_CHECK(nh_graph_create(other, &og));
  EXPECT(nh_graph_submit(rt, og, &ev), NH_ERR_INVALID_HANDLE);
  EXPECT(nh_graph_destroy(rt, og), NH_ERR_INVALID_HANDLE);
  op = add_op(a, b, c, 16);
  NH_CHECK(nh_submit(rt, &op, &ev));
  EXPECT(nh_event_release(other, ev), NH_ERR_INVALID_HANDLE);
  EXPECT(nh_event_query(other, ev), NH_ERR_INVALID_HANDLE);
  NH_CHECK(nh_event_wait(rt, ev, UINT64_MAX)); /* still ours, still valid */
  nh_event_info info;
  info.struct_size = sizeof info;
  NH_CHECK(nh_event_release(rt, ev));
  EXPECT(nh_event_get_info(rt, ev, &info), NH_ERR_INVALID_HANDLE);
  NH_CHECK(nh_graph_destroy(rt, g));
  size_t count;
  EXPECT(nh_graph_op_count(rt, g, &count), NH_ERR_INVALID_HANDLE);
  EXPECT(nh_graph_add(rt, g, &op), NH_ERR_INVALID_HANDLE);
  NH_CHECK(nh_runtime_destroy(other));
  /* Everything of a destroyed runtime is invalid, including its graph and runtime calls. */
  EXPECT(nh_graph_destroy(other, og), NH_ERR_INVALID_HANDLE);
  EXPECT(nh_runtime_synchronize(other), NH_ERR_INVALID_HANDLE);
  EXPECT(nh_policy_load(other, NH_POLICY_BUILTIN, "default"), NH_ERR_INVALID_HANDLE);
  nh_runtime zero = {0};
  EXPECT(nh_runtime_synchronize(zero), NH_ERR_INVALID_HANDLE);

  /* Faults can only be injected into a simulated device. */
  EXPECT(nh_device_inject_fault(rt, 0, NH_FAULT_DEVICE_LOST, 0, 0), NH_ERR_UNSUPPORTED);
  EXPECT(nh_device_inject_fault(rt, 999, NH_FAULT_DEVICE_LOST, 0, 0), NH_ERR_INVALID_ARGUMENT);

  NH_CHECK(nh_buffer_destroy(rt, a));
  NH_CHECK(nh_buffer_destroy(rt, b));
  NH_CHECK(nh_buffer_destroy(rt, c));
}

/* Every size-prefixed out-struct and in-struct rejects a struct_size smaller than its own. */
static void more_struct_sizes(nh_runtime rt) {
  nh_device_stats ds;
  ds.struct_size = sizeof ds - 8;
  EXPECT(nh_device_get_stats(rt, 0, &ds), NH_ERR_STRUCT_SIZE);
  nh_device_readings rd;
  rd.struct_size = 4;
  EXPECT(nh_device_get_readings(rt, 0, &rd), NH_ERR_STRUCT_SIZE);
  nh_runtime_stats rs;
  rs.struct_size = 0;
  EXPECT(nh_runtime_get_stats(rt, &rs), NH_ERR_STRUCT_SIZE);
  nh_pool_stats ps;
  ps.struct_size = sizeof ps - 1;
  EXPECT(nh_pool_get_stats(rt, &ps), NH_ERR_STRUCT_SIZE);
  nh_config_plan plan;
  NH_CHECK(nh_config_plan_init(&plan));
  plan.struct_size = 3;
  EXPECT(nh_configure(rt, &plan, 1, NULL, 0, NULL), NH_ERR_STRUCT_SIZE);
  nh_op_desc op;
  NH_CHECK(nh_op_desc_init(&op));
  op.struct_size = 0;
  char buf[16];
  EXPECT(nh_policy_explain(rt, &op, buf, sizeof buf, NULL), NH_ERR_STRUCT_SIZE);
  nh_graph g;
  NH_CHECK(nh_graph_create(rt, &g));
  EXPECT(nh_graph_add(rt, g, &op), NH_ERR_STRUCT_SIZE);
  NH_CHECK(nh_graph_destroy(rt, g));
  /* A larger struct (a newer caller) is read up to the fields this library knows. */
  struct {
    nh_runtime_stats s;
    char newer_fields[32];
  } bigger;
  bigger.s.struct_size = sizeof bigger;
  EXPECT(nh_runtime_get_stats(rt, &bigger.s), NH_OK);
}

/* Views whose shape and strides describe more than their buffer, or write an element twice. */
static void more_views(nh_runtime rt) {
  nh_buffer a, b, c;
  NH_CHECK(nh_buffer_alloc(rt, 64, &a));
  NH_CHECK(nh_buffer_alloc(rt, 64, &b));
  NH_CHECK(nh_buffer_alloc(rt, 64, &c));
  nh_event ev;
  /* The output beyond its buffer; a strided input whose last row is beyond; an offset view. */
  nh_op_desc op = add_op(a, b, c, 16);
  op.output.offset = 4;
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  EXPECT_MSG_CONTAINS("output");
  op = add_op(a, b, c, 16);
  op.inputs[0] = nh_t2(a, 4, 4);
  op.inputs[1] = nh_t2(b, 4, 4);
  op.output = nh_t2(c, 4, 4);
  op.inputs[0].strides[0] = 5;
  op.inputs[0].strides[1] = 1;
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  EXPECT_MSG_CONTAINS("holds 64 bytes");
  /* An output with a zero stride addresses one element 2^40 times on 64 bytes. */
  NH_CHECK(nh_op_desc_init(&op));
  op.kind = NH_OP_SCALE;
  op.alpha = 1.0f;
  op.inputs[0] = nh_t2(a, 1, 1ull << 40);
  op.inputs[0].strides[0] = 1;
  op.inputs[0].strides[1] = 0;
  op.output = op.inputs[0];
  op.output.buffer = c;
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  EXPECT_MSG_CONTAINS("more than once");
  /* Rows that overlap by half. */
  op = add_op(a, b, c, 16);
  op.inputs[0] = nh_t2(a, 2, 8);
  op.inputs[1] = nh_t2(b, 2, 8);
  op.output = nh_t2(c, 2, 8);
  op.output.strides[0] = 4;
  op.output.strides[1] = 1;
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  /* An output partly over an input (in place is only allowed for the very same view). */
  op = add_op(a, b, a, 8);
  op.output.offset = 4;
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  EXPECT_MSG_CONTAINS("overlaps");
  /* Shape products that overflow: 2^32 x 2^32 elements, and one dimension of UINT64_MAX. */
  op = add_op(a, b, c, 8);
  op.inputs[0] = nh_t2(a, 1ull << 32, 1ull << 32);
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  EXPECT_MSG_CONTAINS("overflow");
  op = add_op(a, b, c, 8);
  op.output.shape[0] = UINT64_MAX;
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  /* 2^62 f32 elements: the element count fits 64 bits, the byte count does not. */
  op = add_op(a, b, c, 8);
  op.inputs[0] = nh_t2(a, 1ull << 31, 1ull << 31);
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  EXPECT_MSG_CONTAINS("overflow");
  /* A zero dimension. */
  op = add_op(a, b, c, 8);
  op.output.shape[0] = 0;
  EXPECT(nh_submit(rt, &op, &ev), NH_ERR_INVALID_ARGUMENT);
  /* The same checks when an op is recorded into a graph. */
  nh_graph g;
  NH_CHECK(nh_graph_create(rt, &g));
  op = add_op(a, b, c, 17);
  EXPECT(nh_graph_add(rt, g, &op), NH_ERR_INVALID_ARGUMENT);
  size_t count = 1;
  NH_CHECK(nh_graph_op_count(rt, g, &count));
  if (count == 0) passed++;
  else failed++;
  NH_CHECK(nh_graph_destroy(rt, g));
  NH_CHECK(nh_buffer_destroy(rt, a));
  NH_CHECK(nh_buffer_destroy(rt, b));
  NH_CHECK(nh_buffer_destroy(rt, c));
}

/* Waiting on events: a pending one with a zero timeout, one released while another thread
 * waits on it, and waiting while the runtime is destroyed from another thread. */
enum { BIG = 256 };
typedef struct {
  nh_runtime rt;
  nh_event ev;
  nh_status got;
} waiter;

static void *wait_forever(void *arg) {
  waiter *w = arg;
  w->got = nh_event_wait(w->rt, w->ev, UINT64_MAX);
  return NULL;
}

static nh_event slow_matmuls(nh_runtime rt, nh_buffer a, nh_buffer b, int n) {
  nh_event ev = {0};
  for (int i = 0; i < n; i++) {
    nh_op_desc op;
    NH_CHECK(nh_op_desc_init(&op));
    op.kind = NH_OP_MATMUL;
    op.inputs[0] = nh_t2(a, BIG, BIG);
    op.inputs[1] = nh_t2(a, BIG, BIG);
    op.output = nh_t2(b, BIG, BIG);
    if (i) NH_CHECK(nh_event_release(rt, ev));
    NH_CHECK(nh_submit(rt, &op, &ev));
  }
  return ev; /* the last op, which waits for the others (same output) */
}

static void waiting(void) {
  nh_runtime rt = make_runtime();
  nh_buffer a, b;
  NH_CHECK(nh_buffer_alloc(rt, BIG * BIG * 4, &a));
  NH_CHECK(nh_buffer_alloc(rt, BIG * BIG * 4, &b));
  nh_event ev = slow_matmuls(rt, a, b, 20);
  nh_status q = nh_event_wait(rt, ev, 0);
  if (q == NH_ERR_TIMEOUT || q == NH_OK) passed++; /* never blocks, never fails */
  else failed++;
  /* Released by this thread while another waits: the waiter still gets the op's outcome. */
  waiter w = {rt, ev, NH_ERR_INTERNAL};
  pthread_t t;
  pthread_create(&t, NULL, wait_forever, &w);
  NH_CHECK(nh_event_release(rt, ev));
  pthread_join(t, NULL);
  if (w.got == NH_OK || w.got == NH_ERR_INVALID_HANDLE) passed++;
  else {
    failed++;
    fprintf(stderr, "FAIL: wait on an event released meanwhile gave %s\n", nh_status_name(w.got));
  }
  EXPECT(nh_event_wait(rt, ev, 0), NH_ERR_INVALID_HANDLE);
  /* Destroying the runtime while another thread waits on one of its events. */
  ev = slow_matmuls(rt, a, b, 20);
  w = (waiter){rt, ev, NH_ERR_INTERNAL};
  pthread_create(&t, NULL, wait_forever, &w);
  EXPECT(nh_runtime_destroy(rt), NH_OK);
  pthread_join(t, NULL);
  if (w.got == NH_OK || w.got == NH_ERR_INVALID_HANDLE) passed++;
  else {
    failed++;
    fprintf(stderr, "FAIL: wait across runtime destroy gave %s\n", nh_status_name(w.got));
  }
  EXPECT(nh_event_wait(rt, ev, 0), NH_ERR_INVALID_HANDLE);
  EXPECT(nh_event_release(rt, ev), NH_ERR_INVALID_HANDLE);
}

/* A buffer destroyed right after an op using it was submitted: destroy waits for the op. */
static void destroy_buffer_in_use(void) {
  nh_runtime rt = make_runtime();
  nh_buffer a, b;
  NH_CHECK(nh_buffer_alloc(rt, BIG * BIG * 4, &a));
  NH_CHECK(nh_buffer_alloc(rt, BIG * BIG * 4, &b));
  float *ones = malloc(BIG * BIG * 4);
  for (int i = 0; i < BIG * BIG; i++) ones[i] = 1.0f;
  NH_CHECK(nh_buffer_write(rt, a, 0, ones, BIG * BIG * 4));
  nh_event ev = slow_matmuls(rt, a, b, 5);
  EXPECT(nh_buffer_destroy(rt, a), NH_OK);
  EXPECT(nh_event_wait(rt, ev, UINT64_MAX), NH_OK);
  NH_CHECK(nh_buffer_read(rt, b, 0, ones, BIG * BIG * 4));
  if (ones[0] == (float)BIG && ones[BIG * BIG - 1] == (float)BIG) passed++;
  else {
    failed++;
    fprintf(stderr, "FAIL: matmul over a buffer destroyed meanwhile gave %g\n", ones[0]);
  }
  NH_CHECK(nh_event_release(rt, ev));
  free(ones);
  /* Events and graphs left behind are freed by nh_runtime_destroy (valgrind checks it). */
  nh_graph g;
  NH_CHECK(nh_graph_create(rt, &g));
  NH_CHECK(nh_runtime_destroy(rt));
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

/* Issue 17, items 2 and 3: destroying an imported buffer (or the whole runtime) while another
 * thread keeps submitting matmuls that read it. After destroy returns, the memory is unmapped:
 * an op still reading it would crash the process, and a submit that started after destroy
 * returned must fail with NH_ERR_INVALID_HANDLE. */
enum { RN = 96 };

typedef struct {
  nh_runtime rt;
  nh_buffer in, out;
  atomic_int destroyed; /* set once destroy has returned */
  int late_ok;          /* submits begun after that which still returned NH_OK */
  int other;            /* statuses that are neither NH_OK nor NH_ERR_INVALID_HANDLE */
} race;

/* At most RQ ops outstanding: a destroy waits for every op holding the buffer, so an
 * unbounded queue (thousands of matmuls) would make each round slow, under valgrind minutes. */
enum { RQ = 16 };

static void *submit_until_invalid(void *arg) {
  race *r = arg;
  nh_event queue[RQ];
  int queued = 0;
  for (;;) {
    int after = atomic_load(&r->destroyed);
    nh_op_desc op;
    NH_CHECK(nh_op_desc_init(&op));
    op.kind = NH_OP_MATMUL;
    op.inputs[0] = nh_t2(r->in, RN, RN);
    op.inputs[1] = nh_t2(r->in, RN, RN);
    op.output = nh_t2(r->out, RN, RN);
    nh_event ev;
    nh_status s = nh_submit(r->rt, &op, &ev);
    if (s == NH_OK) {
      if (after) r->late_ok++;
      if (queued == RQ) {
        /* NH_ERR_INVALID_HANDLE once the runtime is gone: fine. */
        nh_event_wait(r->rt, queue[0], UINT64_MAX);
        nh_event_release(r->rt, queue[0]);
        memmove(queue, queue + 1, sizeof queue[0] * (RQ - 1));
        queued--;
      }
      queue[queued++] = ev;
    } else if (s == NH_ERR_INVALID_HANDLE && after) {
      break;
    } else if (s != NH_ERR_INVALID_HANDLE) {
      fprintf(stderr, "FAIL: submit racing a destroy gave %s: %s\n", nh_status_name(s), nh_last_error_message());
      r->other++;
      break;
    }
  }
  for (int i = 0; i < queued; i++) nh_event_release(r->rt, queue[i]);
  return NULL;
}

static float *mapped_input(void) {
  float *p = mmap(NULL, RN * RN * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("mmap");
    exit(1);
  }
  for (int i = 0; i < RN * RN; i++) p[i] = 1.0f / RN;
  return p;
}

static void race_verdict(const char *what, int rounds, int late_ok, int other) {
  if (late_ok == 0 && other == 0) passed++;
  else {
    failed++;
    fprintf(stderr, "FAIL: %s: in %d rounds, %d submits begun after destroy returned were accepted, %d failed oddly\n",
            what, rounds, late_ok, other);
  }
}

static int race_rounds(void) {
  const char *env = getenv("NH_MISUSE_RACE_ROUNDS");
  int n = env ? atoi(env) : 100;
  return n > 0 ? n : 100;
}

static void destroy_imported_while_submitting(void) {
  nh_runtime rt = make_runtime();
  int rounds = race_rounds(), late_ok = 0, other = 0;
  for (int i = 0; i < rounds; i++) {
    float *mem = mapped_input();
    race r = {.rt = rt};
    NH_CHECK(nh_buffer_import(rt, mem, RN * RN * 4, &r.in));
    NH_CHECK(nh_buffer_alloc(rt, RN * RN * 4, &r.out));
    pthread_t t;
    pthread_create(&t, NULL, submit_until_invalid, &r);
    usleep((useconds_t)(i * 37 % 1000));
    EXPECT(nh_buffer_destroy(rt, r.in), NH_OK);
    atomic_store(&r.destroyed, 1);
    munmap(mem, RN * RN * 4); /* an op still reading it would crash here */
    pthread_join(t, NULL);
    NH_CHECK(nh_buffer_destroy(rt, r.out));
    late_ok += r.late_ok;
    other += r.other;
  }
  NH_CHECK(nh_runtime_destroy(rt));
  race_verdict("nh_buffer_destroy of an imported buffer under concurrent submits", rounds, late_ok, other);
}

static void destroy_runtime_while_submitting(void) {
  int rounds = race_rounds(), late_ok = 0, other = 0;
  for (int i = 0; i < rounds; i++) {
    float *mem = mapped_input();
    race r = {.rt = make_runtime()};
    NH_CHECK(nh_buffer_import(r.rt, mem, RN * RN * 4, &r.in));
    NH_CHECK(nh_buffer_alloc(r.rt, RN * RN * 4, &r.out));
    pthread_t t;
    pthread_create(&t, NULL, submit_until_invalid, &r);
    usleep((useconds_t)(i * 37 % 1000));
    EXPECT(nh_runtime_destroy(r.rt), NH_OK);
    atomic_store(&r.destroyed, 1);
    munmap(mem, RN * RN * 4);
    pthread_join(t, NULL);
    late_ok += r.late_ok;
    other += r.other;
  }
  race_verdict("nh_runtime_destroy under concurrent submits on imported memory", rounds, late_ok, other);
}

int main(void) {
  nh_runtime rt = make_runtime();
  null_pointers(rt);
  bad_handles(rt);
  wrong_sizes_and_shapes(rt);
  more_null_pointers(rt);
  more_bad_handles(rt);
  more_struct_sizes(rt);
  more_views(rt);
  NH_CHECK(nh_runtime_destroy(rt));
  destroy_with_ops_in_flight();
  waiting();
  destroy_buffer_in_use();
  destroy_imported_while_submitting();
  destroy_runtime_while_submitting();
  printf("misuse: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
