#pragma once
// A scope with autocast on for one device type and dtype, restoring the previous state
// (LibTorch's C++ autocast switches are global, unlike Python's context manager). The API was
// renamed in LibTorch 2.4: set_autocast_enabled(device_type, on) replaced set_enabled /
// set_cpu_enabled.

#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <torch/version.h>

namespace reidnet::detail {

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define REIDNET_AUTOCAST_BY_DEVICE_TYPE 1
#else
#define REIDNET_AUTOCAST_BY_DEVICE_TYPE 0
#endif

class AutocastScope {
 public:
  AutocastScope(c10::DeviceType device_type, c10::ScalarType dtype)
      : device_type_(device_type == c10::DeviceType::CUDA ? c10::DeviceType::CUDA
                                                          : c10::DeviceType::CPU) {
    was_enabled_ = enabled();
    previous_dtype_ = get_dtype();
    set(true, dtype);
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    set(was_enabled_, previous_dtype_);
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool enabled() const {
#if REIDNET_AUTOCAST_BY_DEVICE_TYPE
    return at::autocast::is_autocast_enabled(device_type_);
#else
    return device_type_ == c10::DeviceType::CUDA ? at::autocast::is_enabled()
                                                 : at::autocast::is_cpu_enabled();
#endif
  }
  c10::ScalarType get_dtype() const {
#if REIDNET_AUTOCAST_BY_DEVICE_TYPE
    return at::autocast::get_autocast_dtype(device_type_);
#else
    return device_type_ == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype()
                                                 : at::autocast::get_autocast_cpu_dtype();
#endif
  }
  void set(bool on, c10::ScalarType dtype) const {
#if REIDNET_AUTOCAST_BY_DEVICE_TYPE
    at::autocast::set_autocast_dtype(device_type_, dtype);
    at::autocast::set_autocast_enabled(device_type_, on);
#else
    if (device_type_ == c10::DeviceType::CUDA) {
      at::autocast::set_autocast_gpu_dtype(dtype);
      at::autocast::set_enabled(on);
    } else {
      at::autocast::set_autocast_cpu_dtype(dtype);
      at::autocast::set_cpu_enabled(on);
    }
#endif
  }

  c10::DeviceType device_type_;
  bool was_enabled_ = false;
  c10::ScalarType previous_dtype_ = c10::ScalarType::Float;
};

#undef REIDNET_AUTOCAST_BY_DEVICE_TYPE

}  // namespace reidnet::detail
