/* A fake amdxdna device for running real XRT (with its real xdna shim plugin) without an NPU.
 * LD_PRELOADed into a test process inside the chroot that .ci/xrt-real builds, where
 * /sys/bus/pci/drivers/amdxdna/... is a tree of plain files and /dev/accel/accel0 is a sparse
 * regular file. The shim opens and mmaps that file as if it were the device node; this library
 * answers the ioctls it issues on it (the amdxdna DRM ioctls of the driver's uapi header, plus
 * GEM_CLOSE), keeps the buffer objects in the file (so a BO's memory is shared between the
 * process's mappings and this "device"), and on EXEC_CMD decodes XRT's command packet and
 * computes the GEMM the test's design describes:
 *
 *   instruction stream: 0x06030100, m, k, n (u32 words; a real design holds NPU instructions)
 *   kernel arguments:    mlir-aie's (opcode u64, instr, ninstr u32, a, b, c, tmp, trace)
 *   A bf16 m x k, B bf16 k x n (row-major), C f32 m x n
 *
 * Power modes behave as drivers before 2026-03-31 do: SET_STATE refuses LOW and MEDIUM with
 * EOPNOTSUPP, and TURBO with EINVAL while a hardware context exists.
 *
 * It checks what the hardware would need and fails the command (ERT state ERROR) otherwise:
 * opcode 3, ninstr equal to the stream's length, the instruction BO allocated as device
 * memory (XRT's cacheable flag -> AMDXDNA_BO_DEV), operands as shared host memory
 * (host_only -> AMDXDNA_BO_SHARE), operands large enough. What it saw is appended to
 * $FAKE_AMDXDNA_LOG for the test to check (contexts with their QoS, commands, failures). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define NODE "/dev/accel/accel0"
#define NODE_SIZE (2ull << 30)
#define PAGE 4096ull
#define INVALID_ADDR (~0ull)
#define HEAP_XDNA 0x40000000ull
#define SHARE_XDNA 0x100000000ull

/* The uapi structs used here (layouts of include/uapi/drm/amdxdna_accel.h). */
struct qos_info { uint32_t gops, fps, dma_bandwidth, latency, frame_exec_time, priority, start_col, rsvd; };
struct create_hwctx { uint64_t ext, ext_flags, qos_p; uint32_t umq_bo, log_buf_bo, max_opc, num_tiles, mem_size, umq_doorbell, handle, syncobj_handle; };
struct destroy_hwctx { uint32_t handle, pad; };
struct config_hwctx { uint32_t handle, param_type; uint64_t param_val; uint32_t param_val_size, pad; };
struct cu_config { uint32_t cu_bo; uint8_t cu_func, pad[3]; };
struct config_cu { uint16_t num_cus, pad[3]; struct cu_config cus[]; };
struct create_bo { uint64_t flags, vaddr, size; uint32_t type, handle; };
struct get_bo_info { uint64_t ext, ext_flags; uint32_t handle, pad; uint64_t map_offset, vaddr, xdna_addr; };
struct sync_bo { uint32_t handle, direction; uint64_t offset, size; };
struct exec_cmd { uint64_t ext, ext_flags; uint32_t hwctx, type; uint64_t cmd_handles, args; uint32_t cmd_count, arg_count; uint64_t seq; };
struct wait_cmd { uint32_t hwctx, timeout; uint64_t seq; };
struct get_info { uint32_t param, buffer_size; uint64_t buffer; };
struct gem_close { uint32_t handle, pad; };
struct aie_tile { uint16_t row_count, row_start, dma_channel_count, lock_count, event_reg_count, pad[3]; };
struct aie_metadata { uint32_t col_size; uint16_t cols, rows; uint32_t major, minor; struct aie_tile core, mem, shim; };

enum { BO_SHARE = 1, BO_DEV_HEAP = 2, BO_DEV = 3, BO_CMD = 4 };
enum { CMD_COMPLETED = 4, CMD_ERROR = 5 };

typedef struct {
  int used, type;
  uint64_t size, xdna, off; /* off: where its bytes are in the node file */
  long syncs_to, syncs_from;
} bo_t;

#define MAX_BO 4096
static bo_t bos[MAX_BO];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *mem; /* the node file, mapped shared */
static uint64_t next_off = PAGE, heap_used;
static int heap_bo;
static uint32_t next_ctx = 1, contexts;
static uint8_t power_mode;
static uint64_t seq;
static ino_t node_ino;
static dev_t node_dev;
static int (*real_ioctl)(int, unsigned long, ...);

static void note(const char *fmt, ...) {
  const char *path = getenv("FAKE_AMDXDNA_LOG");
  FILE *f = path ? fopen(path, "a") : NULL;
  if (!f)
    return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fputc('\n', f);
  fclose(f);
}

static int init(void) {
  if (mem)
    return 0;
  struct stat st;
  int fd = open(NODE, O_RDWR);
  if (fd < 0 || fstat(fd, &st) != 0)
    return -1;
  mem = mmap(NULL, NODE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (mem == MAP_FAILED) {
    mem = NULL;
    return -1;
  }
  node_ino = st.st_ino;
  node_dev = st.st_dev;
  return 0;
}

static int is_node(int fd) {
  struct stat st;
  if (init() != 0 || fstat(fd, &st) != 0)
    return 0;
  return S_ISREG(st.st_mode) && st.st_ino == node_ino && st.st_dev == node_dev;
}

static bo_t *bo_of(uint32_t h) { return h > 0 && h < MAX_BO && bos[h].used ? &bos[h] : NULL; }

/* The bytes at device address `addr`, `len` long, inside one BO. */
static uint8_t *at(uint64_t addr, uint64_t len, int *type) {
  for (int h = 1; h < MAX_BO; h++) {
    bo_t *b = &bos[h];
    if (b->used && b->type != BO_DEV_HEAP && addr >= b->xdna && addr + len <= b->xdna + b->size) {
      if (type)
        *type = b->type;
      return mem + b->off + (addr - b->xdna);
    }
  }
  return NULL;
}

static int create_bo(struct create_bo *a) {
  int h = 1;
  while (h < MAX_BO && bos[h].used)
    h++;
  if (h == MAX_BO)
    return -ENOMEM;
  bo_t *b = &bos[h];
  memset(b, 0, sizeof *b);
  b->type = (int)a->type;
  b->size = a->size;
  if (a->type == BO_DEV) {
    /* Carved from the heap, as the driver does: no mmap offset of its own. */
    bo_t *heap = bo_of((uint32_t)heap_bo);
    uint64_t sz = (a->size + PAGE - 1) & ~(PAGE - 1);
    if (!heap || heap_used + sz > heap->size)
      return -EAGAIN; /* the shim then expands the heap */
    b->xdna = heap->xdna + heap_used;
    b->off = heap->off + heap_used;
    heap_used += sz;
  } else if (a->type == BO_SHARE || a->type == BO_CMD || a->type == BO_DEV_HEAP) {
    uint64_t sz = (a->size + PAGE - 1) & ~(PAGE - 1);
    /* The heap must sit on its alignment (64 MiB) in device addresses. */
    if (a->type == BO_DEV_HEAP) {
      if (heap_bo)
        return -EINVAL; /* one heap segment is enough for these tests */
      next_off = (next_off + (64ull << 20) - 1) & ~((64ull << 20) - 1);
      b->xdna = HEAP_XDNA;
      heap_bo = h;
    } else {
      b->xdna = SHARE_XDNA + next_off;
    }
    if (next_off + sz > NODE_SIZE)
      return -ENOMEM;
    b->off = next_off;
    next_off += sz;
  } else {
    return -EINVAL;
  }
  b->used = 1;
  a->handle = (uint32_t)h;
  return 0;
}

static float bf16(uint16_t v) {
  uint32_t bits = (uint32_t)v << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

/* The kernel's register map: mlir-aie's argument offsets in the test's xclbin. */
struct regmap {
  uint64_t opcode, instr;
  uint32_t ninstr;
  uint64_t a, b, c;
} __attribute__((packed));

static int run_gemm(const struct regmap *r, uint32_t ctx) {
  int t_instr = 0, t_a = 0, t_b = 0, t_c = 0;
  if (r->opcode != 3)
    return note("cmd ctx=%u error: opcode %llu, not 3", ctx, (unsigned long long)r->opcode), 0;
  const uint32_t *ins = (const uint32_t *)at(r->instr, 16, &t_instr);
  if (!ins || ins[0] != 0x06030100u)
    return note("cmd ctx=%u error: instruction buffer missing or not synced", ctx), 0;
  if (t_instr != BO_DEV)
    return note("cmd ctx=%u error: instruction BO of type %d, not device memory (cacheable)", ctx, t_instr), 0;
  if (r->ninstr != 4)
    return note("cmd ctx=%u error: ninstr %u, the stream has 4 words", ctx, r->ninstr), 0;
  uint32_t m = ins[1], k = ins[2], n = ins[3];
  const uint16_t *a = (const uint16_t *)at(r->a, (uint64_t)m * k * 2, &t_a);
  const uint16_t *b = (const uint16_t *)at(r->b, (uint64_t)k * n * 2, &t_b);
  float *c = (float *)at(r->c, (uint64_t)m * n * 4, &t_c);
  if (!a || !b || !c)
    return note("cmd ctx=%u error: operand buffers missing or smaller than %ux%ux%u", ctx, m, k, n), 0;
  if (t_a != BO_SHARE || t_b != BO_SHARE || t_c != BO_SHARE)
    return note("cmd ctx=%u error: operands not host-only shared BOs (%d %d %d)", ctx, t_a, t_b, t_c), 0;
  for (uint32_t i = 0; i < m; i++)
    for (uint32_t j = 0; j < n; j++) {
      float s = 0;
      for (uint32_t kk = 0; kk < k; kk++)
        s += bf16(a[i * k + kk]) * bf16(b[kk * n + j]);
      c[i * n + j] = s;
    }
  note("cmd ctx=%u gemm %ux%ux%u ninstr=%u", ctx, m, k, n, r->ninstr);
  return 1;
}

/* XRT's command packet (ert.h, struct ert_start_kernel_cmd): a header word (state: 4 bits,
 * extra_cu_masks: 2 bits at bit 10, count: 11 bits at bit 12, opcode: 5 bits at bit 23), the
 * CU masks, then the kernel's register map. XRT 2.25 sends mlir-aie's "dpu" kernels as
 * ERT_START_CU (opcode 0) with the arguments at the xclbin's offsets. */
static int exec(struct exec_cmd *e) {
  bo_t *cmd = bo_of((uint32_t)e->cmd_handles);
  if (!cmd || e->cmd_count != 1)
    return -EINVAL;
  uint32_t *pkt = (uint32_t *)(mem + cmd->off);
  uint32_t count = (pkt[0] >> 12) & 0x7ff, opcode = (pkt[0] >> 23) & 0x1f;
  uint32_t masks = 1 + ((pkt[0] >> 10) & 3);
  if (getenv("FAKE_AMDXDNA_DUMP")) {
    fprintf(stderr, "fake-amdxdna: exec opcode %u count %u:", opcode, count);
    for (uint32_t i = 0; i <= count && i < 40; i++)
      fprintf(stderr, " %08x", pkt[i]);
    fprintf(stderr, "\n");
  }
  int ok = 0;
  if (opcode != 0) {
    note("cmd ctx=%u error: ERT opcode %u, expected ERT_START_CU (0)", e->hwctx, opcode);
  } else if (count < masks + sizeof(struct regmap) / 4) {
    note("cmd ctx=%u error: %u payload words, too few for the register map", e->hwctx, count);
  } else {
    struct regmap r;
    memcpy(&r, &pkt[1 + masks], sizeof r);
    ok = run_gemm(&r, e->hwctx);
  }
  pkt[0] = (pkt[0] & ~0xfu) | (ok ? CMD_COMPLETED : CMD_ERROR);
  e->seq = ++seq;
  return 0;
}

static int get_info(struct get_info *g) {
  if (g->param == 1 && g->buffer_size >= sizeof(struct aie_metadata)) { /* AIE metadata: Phoenix */
    struct aie_metadata md = {.col_size = 0x2000000, .cols = 4, .rows = 6, .major = 1, .minor = 1};
    md.core = (struct aie_tile){.row_count = 4, .row_start = 2, .dma_channel_count = 2, .lock_count = 16, .event_reg_count = 4};
    md.mem = (struct aie_tile){.row_count = 1, .row_start = 1, .dma_channel_count = 6, .lock_count = 64, .event_reg_count = 4};
    md.shim = (struct aie_tile){.row_count = 1, .row_start = 0, .dma_channel_count = 2, .lock_count = 16, .event_reg_count = 4};
    memcpy((void *)(uintptr_t)g->buffer, &md, sizeof md);
    return 0;
  }
  if (g->param == 9 && g->buffer_size >= 1) { /* GET_POWER_MODE */
    memcpy((void *)(uintptr_t)g->buffer, &power_mode, 1);
    return 0;
  }
  if (g->param == 2 && g->buffer_size >= 8) { /* AIE version */
    uint32_t v[2] = {1, 1};
    memcpy((void *)(uintptr_t)g->buffer, v, 8);
    return 0;
  }
  note("get_info param %u unsupported", g->param);
  return -EOPNOTSUPP;
}

static int fake(unsigned long req, void *arg) {
  unsigned nr = req & 0xff;
  switch (nr) {
  case 0x09: { /* DRM_IOCTL_GEM_CLOSE */
    bo_t *b = bo_of(((struct gem_close *)arg)->handle);
    if (!b)
      return -EINVAL;
    b->used = 0;
    return 0;
  }
  case 0x40: { /* CREATE_HWCTX */
    struct create_hwctx *c = arg;
    struct qos_info q = {0};
    if (c->qos_p)
      memcpy(&q, (void *)(uintptr_t)c->qos_p, sizeof q);
    c->handle = next_ctx++;
    contexts++;
    c->syncobj_handle = 0; /* no syncobj: the shim waits with WAIT_CMD */
    note("ctx %u create gops=%u fps=%u latency=%u priority=0x%x num_tiles=%u", c->handle, q.gops, q.fps,
         q.latency, q.priority, c->num_tiles);
    return 0;
  }
  case 0x41:
    contexts--;
    note("ctx %u destroy", ((struct destroy_hwctx *)arg)->handle);
    return 0;
  case 0x42: { /* CONFIG_HWCTX: the CUs and their PDIs */
    struct config_hwctx *c = arg;
    if (c->param_type != 0)
      return 0;
    struct config_cu *cu = (struct config_cu *)(uintptr_t)c->param_val;
    for (int i = 0; i < cu->num_cus; i++) {
      bo_t *pdi = bo_of(cu->cus[i].cu_bo);
      note("ctx %u cu %d func=%u pdi=%.16s", c->handle, i, cu->cus[i].cu_func,
           pdi ? (const char *)(mem + pdi->off) : "(no BO)");
    }
    return 0;
  }
  case 0x43:
    return create_bo(arg);
  case 0x44: { /* GET_BO_INFO */
    struct get_bo_info *g = arg;
    bo_t *b = bo_of(g->handle);
    if (!b)
      return -EINVAL;
    g->xdna_addr = b->xdna;
    g->map_offset = b->type == BO_DEV ? INVALID_ADDR : b->off;
    g->vaddr = 0;
    return 0;
  }
  case 0x45: { /* SYNC_BO: memory is shared, count only */
    struct sync_bo *s = arg;
    bo_t *b = bo_of(s->handle);
    if (!b || s->offset + s->size > b->size)
      return -EINVAL;
    if (s->direction == 0)
      b->syncs_to++;
    else
      b->syncs_from++;
    return 0;
  }
  case 0x46:
    return exec(arg);
  case 0x47:
    return get_info(arg);
  case 0x48: { /* SET_STATE(SET_POWER_MODE) */
    struct get_info *st = arg; /* same layout: param, buffer_size, buffer */
    uint8_t mode;
    if (st->param != 0 || st->buffer_size < 1)
      return -EINVAL;
    memcpy(&mode, (void *)(uintptr_t)st->buffer, 1);
    if (mode == 1 || mode == 2)
      return note("set_state power_mode=%u refused: EOPNOTSUPP", mode), -EOPNOTSUPP;
    if (mode > 4 || (mode == 4 && contexts))
      return note("set_state power_mode=%u refused: EINVAL", mode), -EINVAL;
    power_mode = mode;
    note("set_state power_mode=%u", mode);
    return 0;
  }
  case 0x49: /* WAIT_CMD: commands complete within EXEC_CMD */
    return 0;
  default:
    note("ioctl 0x%lx unsupported", req);
    return -ENOTTY;
  }
}

int ioctl(int fd, unsigned long req, ...) {
  va_list ap;
  va_start(ap, req);
  void *arg = va_arg(ap, void *);
  va_end(ap);
  if (!real_ioctl)
    real_ioctl = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");
  if (!is_node(fd))
    return real_ioctl(fd, req, arg);
  pthread_mutex_lock(&lock);
  int rc = fake(req, arg);
  pthread_mutex_unlock(&lock);
  if (rc < 0) {
    errno = -rc;
    return -1;
  }
  return 0;
}
