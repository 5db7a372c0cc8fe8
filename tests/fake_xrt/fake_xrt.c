/* A stand-in for XRT's C API (libxrt_coreutil + xclProbe) that behaves like an NPU running an
 * mlir-aie matmul design: bf16 A (m x k) times bf16 B (k x n, row-major) into f32 C, with the
 * design's argument list (opcode, instr, ninstr, a, b, c, scratch, trace).
 *
 * It keeps a separate "device" copy of every buffer, so data only moves on xrtBOSync, and it
 * checks what a real device would need: the kernel name, the xclbin uuid, memory groups from
 * xrtKernelArgGroupId, opcode 3, the instruction stream and its length. A run that breaks a
 * rule ends in ERT_CMD_STATE_ERROR and logs an "[XRT] ERROR: ..." line to the runtime log set
 * through xrtIniStringSet, as XRT does. Counters are exported for the test.
 *
 * Like XRT 2.25 on an amdxdna device, xrtDeviceLoadXclbinFile fails ("load_axlf: Operation not
 * supported": the xdna shim does not implement load_axlf), so kernels can only be opened
 * through the registration shim's entry points (nhx_*, as src/backend/xrt/shim/nh_xrt_shim.h
 * declares them), which this library also provides. FAKE_XRT_LEGACY_LOAD=1 makes the load
 * succeed, as on a device whose shim implements load_axlf. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GROUP_BASE 100
#define STATE_COMPLETED 4
#define STATE_ERROR 5

typedef struct {
  int m, k, n;
  unsigned char uuid[16];
} device_t;

typedef struct {
  device_t *dev;
  size_t size;
  unsigned group;
  unsigned char *host, *devmem;
} bo_t;

/* A kernel keeps the design it was opened for, as a hardware context does. */
typedef struct {
  device_t *dev;
  int m, k, n;
} kernel_t;

typedef struct {
  kernel_t *kernel;
  uint64_t opcode;
  unsigned ninstr;
  int bad_width; /* a scalar set at the wrong width through the shim */
  bo_t *args[8];
  int state;
} run_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char log_path[4096];
static long runs_started, in_flight, max_in_flight, syncs_to, syncs_from;

static void log_error(const char *msg) {
  if (!log_path[0])
    return;
  FILE *f = fopen(log_path, "a");
  if (f) {
    fprintf(f, "[fake] [XRT] Tid: 1,  ERROR: %s\n", msg);
    fclose(f);
  }
}

int xrtIniStringSet(const char *key, const char *value) {
  if (strcmp(key, "Runtime.runtime_log") == 0)
    snprintf(log_path, sizeof log_path, "%s", value);
  return 0;
}

unsigned xclProbe(void) { return 1; }

void *xrtDeviceOpen(unsigned index) {
  if (index != 0) {
    log_error("Could not open device");
    return NULL;
  }
  return calloc(1, sizeof(device_t));
}

int xrtDeviceClose(void *d) {
  free(d);
  return 0;
}

/* Reads the fake design's m, k, n and derives its uuid (what registering an xclbin yields). */
static int read_design(device_t *dev, const char *path) {
  FILE *f = fopen(path, "r");
  int ok = f && fscanf(f, "FAKE-XCLBIN %d %d %d", &dev->m, &dev->k, &dev->n) == 3;
  if (f)
    fclose(f);
  if (!ok) {
    log_error("not a fake xclbin");
    return 22;
  }
  for (int i = 0; i < 16; i++)
    dev->uuid[i] = (unsigned char)(i * 7 + dev->m);
  return 0;
}

int xrtDeviceLoadXclbinFile(void *d, const char *path) {
  const char *legacy = getenv("FAKE_XRT_LEGACY_LOAD");
  if (!legacy || strcmp(legacy, "1") != 0) {
    log_error("load_axlf: Operation not supported");
    errno = EOPNOTSUPP;
    return -1;
  }
  return read_design(d, path);
}

int xrtDeviceGetXclbinUUID(void *d, unsigned char *out) {
  memcpy(out, ((device_t *)d)->uuid, 16);
  return 0;
}

void *xrtPLKernelOpen(void *d, const unsigned char *uuid, const char *name) {
  device_t *dev = d;
  if (strcmp(name, "MLIR_AIE") != 0 || memcmp(uuid, dev->uuid, 16) != 0) {
    log_error("No such compute unit");
    return NULL;
  }
  kernel_t *k = calloc(1, sizeof *k);
  k->dev = dev;
  k->m = dev->m;
  k->k = dev->k;
  k->n = dev->n;
  return k;
}

int xrtKernelClose(void *k) {
  free(k);
  return 0;
}

int xrtKernelArgGroupId(void *k, int argno) {
  (void)k;
  return GROUP_BASE + argno;
}

void *xrtBOAlloc(void *d, size_t size, uint64_t flags, unsigned group) {
  (void)flags;
  bo_t *bo = calloc(1, sizeof *bo);
  bo->dev = d;
  bo->size = size;
  bo->group = group;
  bo->host = calloc(1, size);
  bo->devmem = calloc(1, size);
  return bo;
}

int xrtBOFree(void *b) {
  bo_t *bo = b;
  free(bo->host);
  free(bo->devmem);
  free(bo);
  return 0;
}

void *xrtBOMap(void *b) { return ((bo_t *)b)->host; }

int xrtBOSync(void *b, int dir, size_t size, size_t offset) {
  bo_t *bo = b;
  if (offset + size > bo->size)
    return 22;
  pthread_mutex_lock(&lock);
  if (dir == 0) {
    memcpy(bo->devmem + offset, bo->host + offset, size);
    syncs_to++;
  } else {
    memcpy(bo->host + offset, bo->devmem + offset, size);
    syncs_from++;
  }
  pthread_mutex_unlock(&lock);
  return 0;
}

void *xrtRunOpen(void *k) {
  run_t *r = calloc(1, sizeof *r);
  r->kernel = k;
  return r;
}

int xrtRunClose(void *r) {
  free(r);
  return 0;
}

int xrtRunSetArg(void *rh, int index, ...) {
  run_t *r = rh;
  va_list ap;
  va_start(ap, index);
  /* Read each argument at the width the design declares, as XRT does from the xclbin. */
  if (index == 0)
    r->opcode = va_arg(ap, uint64_t);
  else if (index == 2)
    r->ninstr = va_arg(ap, unsigned);
  else if (index >= 1 && index < 8)
    r->args[index] = va_arg(ap, bo_t *);
  va_end(ap);
  return index >= 0 && index < 8 ? 0 : 22;
}

static float bf16_to_f32(uint16_t v) {
  uint32_t bits = (uint32_t)v << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static int check(run_t *r) {
  kernel_t *d = r->kernel;
  if (r->bad_width)
    return log_error("scalar argument of the wrong width (opcode uint64_t, ninstr uint32_t)"), 0;
  if (r->opcode != 3)
    return log_error("opcode is not 3"), 0;
  for (int i = 1; i < 8; i++)
    if (i != 2 && (!r->args[i] || r->args[i]->group != (unsigned)(GROUP_BASE + i)))
      return log_error("argument buffer missing or in the wrong memory group"), 0;
  bo_t *instr = r->args[1];
  if (r->ninstr == 0 || r->ninstr * 4u > instr->size)
    return log_error("instruction count does not fit the buffer"), 0;
  uint32_t first;
  memcpy(&first, instr->devmem, 4);
  if (first != 0x06030100u)
    return log_error("instruction stream not synced to the device"), 0;
  if (r->args[3]->size < (size_t)d->m * d->k * 2 || r->args[4]->size < (size_t)d->k * d->n * 2 ||
      r->args[5]->size < (size_t)d->m * d->n * 4)
    return log_error("operand buffers smaller than the design"), 0;
  return 1;
}

int xrtRunStart(void *rh) {
  run_t *r = rh;
  pthread_mutex_lock(&lock);
  runs_started++;
  if (++in_flight > max_in_flight)
    max_in_flight = in_flight;
  pthread_mutex_unlock(&lock);
  if (!check(r)) {
    r->state = STATE_ERROR;
    return 0;
  }
  kernel_t *d = r->kernel;
  const uint16_t *a = (const uint16_t *)r->args[3]->devmem;
  const uint16_t *b = (const uint16_t *)r->args[4]->devmem;
  float *c = (float *)r->args[5]->devmem;
  for (int i = 0; i < d->m; i++)
    for (int j = 0; j < d->n; j++) {
      float s = 0;
      for (int kk = 0; kk < d->k; kk++)
        s += bf16_to_f32(a[i * d->k + kk]) * bf16_to_f32(b[kk * d->n + j]);
      c[i * d->n + j] = s;
    }
  r->state = STATE_COMPLETED;
  return 0;
}

int xrtRunWaitFor(void *rh, unsigned timeout_ms) {
  (void)timeout_ms;
  pthread_mutex_lock(&lock);
  in_flight--;
  pthread_mutex_unlock(&lock);
  return ((run_t *)rh)->state;
}

/* The registration shim's entry points (nh_xrt_shim.h): register + hardware context + kernel;
 * buffers and runs are the C API's own, which have the same signatures here. */
static __thread char shim_error[256];
static unsigned last_qos_priority, contexts_open;

unsigned nhx_abi_version(void) { return 1; }
const char *nhx_last_error(void) { return shim_error; }

struct nhx_qos {
  uint32_t gops, fps, latency_ms, priority;
};

void *nhx_kernel_open(void *d, const char *path, const char *name, const struct nhx_qos *qos,
                      unsigned char *uuid_out) {
  device_t *dev = d;
  shim_error[0] = 0;
  if (read_design(dev, path) != 0) {
    snprintf(shim_error, sizeof shim_error, "register_xclbin: not a fake xclbin");
    return NULL;
  }
  if (strcmp(name, "MLIR_AIE") != 0) {
    snprintf(shim_error, sizeof shim_error, "No such compute unit: %s", name);
    return NULL;
  }
  memcpy(uuid_out, dev->uuid, 16);
  pthread_mutex_lock(&lock);
  last_qos_priority = qos ? qos->priority : 0;
  contexts_open++;
  pthread_mutex_unlock(&lock);
  return xrtPLKernelOpen(d, dev->uuid, name);
}

int nhx_kernel_close(void *k) {
  pthread_mutex_lock(&lock);
  contexts_open--;
  pthread_mutex_unlock(&lock);
  return xrtKernelClose(k);
}

int nhx_kernel_arg_group_id(void *k, int argno) { return xrtKernelArgGroupId(k, argno); }
void *nhx_bo_alloc(void *k, size_t size, uint64_t flags, unsigned group) {
  return xrtBOAlloc(((kernel_t *)k)->dev, size, flags, group);
}
int nhx_bo_free(void *b) { return xrtBOFree(b); }
void *nhx_bo_map(void *b) { return xrtBOMap(b); }
int nhx_bo_sync(void *b, int dir, size_t size, size_t offset) { return xrtBOSync(b, dir, size, offset); }
void *nhx_run_open(void *k) { return xrtRunOpen(k); }
int nhx_run_close(void *r) { return xrtRunClose(r); }
int nhx_run_start(void *r) { return xrtRunStart(r); }
int nhx_run_wait_for(void *r, unsigned ms) { return xrtRunWaitFor(r, ms); }

int nhx_run_set_arg_bo(void *rh, int index, void *bo) {
  run_t *r = rh;
  if (index < 1 || index >= 8 || index == 2)
    return 22;
  r->args[index] = bo;
  return 0;
}

int nhx_run_set_arg_scalar(void *rh, int index, const void *value, size_t size) {
  run_t *r = rh;
  if (index == 0) {
    r->bad_width |= size != 8;
    memcpy(&r->opcode, value, size < 8 ? size : 8);
  } else if (index == 2) {
    r->bad_width |= size != 4;
    memcpy(&r->ninstr, value, size < 4 ? size : 4);
  } else {
    return 22;
  }
  return 0;
}

/* Counters for the test. */
long fake_xrt_last_qos_priority(void) { return (long)last_qos_priority; }
long fake_xrt_contexts_open(void) { return contexts_open; }
long fake_xrt_runs_started(void) { return runs_started; }
long fake_xrt_max_in_flight(void) { return max_in_flight; }
long fake_xrt_syncs(int dir) { return dir == 0 ? syncs_to : syncs_from; }
void fake_xrt_reset_counters(void) {
  pthread_mutex_lock(&lock);
  runs_started = max_in_flight = syncs_to = syncs_from = 0;
  pthread_mutex_unlock(&lock);
}
