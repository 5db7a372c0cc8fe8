/* npuhybrid's XRT registration shim: the C entry points of a small C++ library over XRT's C++
 * API (XRT >= 2.17). The NPU backend dlopens it on amdxdna devices, where XRT's C API cannot
 * load an xclbin (xrtDeviceLoadXclbinFile goes to the shim's load_axlf, which the xdna shim
 * does not implement) and has no hardware contexts. It is never a link dependency of
 * libnpuhybrid.so.
 *
 * Handles are opaque. Every call that can fail returns NULL or a nonzero value and leaves a
 * message for nhx_last_error() on the calling thread. Except for nhx_kernel_open and the two
 * nhx_run_set_arg_* calls, the signatures are those of XRT's C API (xrtBOAlloc and friends), so
 * the backend drives both through one table. */
#ifndef NH_XRT_SHIM_H
#define NH_XRT_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any change of these declarations; the backend refuses another version. */
#define NHX_ABI_VERSION 1u

/* QoS of the hardware context (amdxdna's struct amdxdna_qos_info); 0 leaves a field unset.
 * priority: 0x100 realtime, 0x180 high, 0x200 normal, 0x280 low (low: lowest clock level). */
struct nhx_qos {
  uint32_t gops;
  uint32_t fps;
  uint32_t latency_ms;
  uint32_t priority;
};

uint32_t nhx_abi_version(void);
/* The message of the last failed call on this thread ("" if none). */
const char *nhx_last_error(void);

/* Registers the xclbin with the device opened by xrtDeviceOpen (`xrt_device` is its
 * xrtDeviceHandle), creates a hardware context for it with `qos` (may be NULL) and opens kernel
 * `name` in that context. The uuid of the xclbin is written to uuid_out (16 bytes). */
void *nhx_kernel_open(void *xrt_device, const char *xclbin_path, const char *name,
                      const struct nhx_qos *qos, unsigned char *uuid_out);
int nhx_kernel_close(void *kernel);
int nhx_kernel_arg_group_id(void *kernel, int argno);

/* Buffers on the kernel's device, as xrtBOAlloc (flags: XRT_BO_FLAGS_*). */
void *nhx_bo_alloc(void *kernel, size_t size, uint64_t flags, uint32_t group);
int nhx_bo_free(void *bo);
void *nhx_bo_map(void *bo);
int nhx_bo_sync(void *bo, int direction, size_t size, size_t offset);

void *nhx_run_open(void *kernel);
int nhx_run_close(void *run);
int nhx_run_set_arg_bo(void *run, int index, void *bo);
/* A scalar argument of `size` bytes (4 for uint32_t, 8 for uint64_t). */
int nhx_run_set_arg_scalar(void *run, int index, const void *value, size_t size);
int nhx_run_start(void *run);
/* Returns the run's ert_cmd_state (4: completed) or 0 on a failed call. */
int nhx_run_wait_for(void *run, unsigned timeout_ms);

#ifdef __cplusplus
}
#endif
#endif
