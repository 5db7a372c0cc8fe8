// npuhybrid's XRT registration shim (see nh_xrt_shim.h): AMD's own NPU host programs take the
// same path (mlir-aie programming_examples/basic/matrix_multiplication/test.cpp): register the
// xclbin, create a hardware context, open the kernel in it, then buffers and runs.
// Exceptions never cross the C boundary: each becomes a failed return and a message.
#include "nh_xrt_shim.h"

#include <xrt/xrt_bo.h>
#include <xrt/xrt_device.h>
#include <xrt/xrt_hw_context.h>
#include <xrt/xrt_kernel.h>
#include <xrt/experimental/xrt_xclbin.h>

#include <cstring>
#include <exception>
#include <memory>
#include <string>

namespace {

thread_local std::string last_error;

struct kernel_t {
  xrt::device device;
  xrt::hw_context context;
  xrt::kernel kernel;
};

struct bo_t {
  xrt::bo bo;
};

struct run_t {
  xrt::run run;
};

// Runs `f`, turning an exception into `fail` and a message for nhx_last_error().
template <typename F, typename R>
R guard(const char *what, R fail, F &&f) {
  try {
    last_error.clear();
    return f();
  } catch (const std::exception &e) {
    last_error = std::string(what) + ": " + e.what();
  } catch (...) {
    last_error = std::string(what) + ": unknown C++ exception";
  }
  return fail;
}

} // namespace

extern "C" {

uint32_t nhx_abi_version(void) { return NHX_ABI_VERSION; }

const char *nhx_last_error(void) { return last_error.c_str(); }

void *nhx_kernel_open(void *xrt_device, const char *xclbin_path, const char *name,
                      const struct nhx_qos *qos, unsigned char *uuid_out) {
  return guard("nhx_kernel_open", static_cast<void *>(nullptr), [&]() -> void * {
    // The same core device as the C API's handle: one open device, not two.
    xrt::device device(xrtDeviceToXclDevice(static_cast<xrtDeviceHandle>(xrt_device)));
    xrt::xclbin xclbin(std::string{xclbin_path});
    auto uuid = device.register_xclbin(xclbin);
    xrt::hw_context::cfg_param_type cfg;
    if (qos) {
      if (qos->gops) cfg["gops"] = qos->gops;
      if (qos->fps) cfg["fps"] = qos->fps;
      if (qos->latency_ms) cfg["latency"] = qos->latency_ms;
      if (qos->priority) cfg["priority"] = qos->priority;
    }
    xrt::hw_context context(device, uuid, cfg);
    xrt::kernel kernel(context, std::string{name});
    std::memcpy(uuid_out, uuid.get(), 16);
    return new kernel_t{device, context, kernel};
  });
}

int nhx_kernel_close(void *kernel) {
  return guard("nhx_kernel_close", 1, [&] {
    delete static_cast<kernel_t *>(kernel);
    return 0;
  });
}

int nhx_kernel_arg_group_id(void *kernel, int argno) {
  return guard("nhx_kernel_arg_group_id", -1,
               [&] { return static_cast<kernel_t *>(kernel)->kernel.group_id(argno); });
}

void *nhx_bo_alloc(void *kernel, size_t size, uint64_t flags, uint32_t group) {
  return guard("nhx_bo_alloc", static_cast<void *>(nullptr), [&]() -> void * {
    auto k = static_cast<kernel_t *>(kernel);
    auto f = static_cast<xrt::bo::flags>(static_cast<uint32_t>(flags));
    return new bo_t{xrt::bo(k->device, size, f, group)};
  });
}

int nhx_bo_free(void *bo) {
  return guard("nhx_bo_free", 1, [&] {
    delete static_cast<bo_t *>(bo);
    return 0;
  });
}

void *nhx_bo_map(void *bo) {
  return guard("nhx_bo_map", static_cast<void *>(nullptr),
               [&] { return static_cast<bo_t *>(bo)->bo.map(); });
}

int nhx_bo_sync(void *bo, int direction, size_t size, size_t offset) {
  return guard("nhx_bo_sync", 1, [&] {
    static_cast<bo_t *>(bo)->bo.sync(static_cast<xclBOSyncDirection>(direction), size, offset);
    return 0;
  });
}

void *nhx_run_open(void *kernel) {
  return guard("nhx_run_open", static_cast<void *>(nullptr), [&]() -> void * {
    return new run_t{xrt::run(static_cast<kernel_t *>(kernel)->kernel)};
  });
}

int nhx_run_close(void *run) {
  return guard("nhx_run_close", 1, [&] {
    delete static_cast<run_t *>(run);
    return 0;
  });
}

int nhx_run_set_arg_bo(void *run, int index, void *bo) {
  return guard("nhx_run_set_arg_bo", 1, [&] {
    static_cast<run_t *>(run)->run.set_arg(index, static_cast<bo_t *>(bo)->bo);
    return 0;
  });
}

int nhx_run_set_arg_scalar(void *run, int index, const void *value, size_t size) {
  return guard("nhx_run_set_arg_scalar", 1, [&] {
    auto &r = static_cast<run_t *>(run)->run;
    if (size == 4) {
      uint32_t v;
      std::memcpy(&v, value, 4);
      r.set_arg(index, v);
    } else if (size == 8) {
      uint64_t v;
      std::memcpy(&v, value, 8);
      r.set_arg(index, v);
    } else {
      throw std::invalid_argument("scalar arguments are 4 or 8 bytes, not " + std::to_string(size));
    }
    return 0;
  });
}

int nhx_run_start(void *run) {
  return guard("nhx_run_start", 1, [&] {
    static_cast<run_t *>(run)->run.start();
    return 0;
  });
}

int nhx_run_wait_for(void *run, unsigned timeout_ms) {
  return guard("nhx_run_wait_for", 0,
               [&] { return static_cast<int>(static_cast<run_t *>(run)->run.wait(timeout_ms)); });
}

} // extern "C"
