#pragma once
/// Mixed precision (autocast) for a scope, on CPU (bf16; fp16 too on new LibTorch) or CUDA.
///
///     {
///       reidnet::AutocastGuard autocast(torch::kCPU, torch::kBFloat16);
///       auto loss = criterion(net(images), labels);  // convs and matmuls run in bf16
///     }

#include <reidnet/core/errors.hpp>

#include <ATen/autocast_mode.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/version.h>

#include <string>

namespace reidnet {

/// The compute precision the programs' --dtype names: fp32, bf16 or fp16; ConfigError
/// otherwise.
inline c10::ScalarType compute_dtype_from_name(const std::string& name) {
  if (name == "fp32") return c10::kFloat;
  if (name == "bf16") return c10::kBFloat16;
  if (name == "fp16") return c10::kHalf;
  throw ConfigError("unknown precision '" + name + "': expected fp32, bf16 or fp16");
}

namespace detail {
// LibTorch 2.4 replaced the per-device autocast setters by device-generic ones.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
inline bool autocast_enabled(c10::DeviceType type) { return at::autocast::is_autocast_enabled(type); }
inline void set_autocast(c10::DeviceType type, bool on) { at::autocast::set_autocast_enabled(type, on); }
inline c10::ScalarType autocast_dtype(c10::DeviceType type) { return at::autocast::get_autocast_dtype(type); }
inline void set_autocast_dtype(c10::DeviceType type, c10::ScalarType dtype) {
  at::autocast::set_autocast_dtype(type, dtype);
}
#else
inline bool autocast_enabled(c10::DeviceType type) {
  return type == c10::DeviceType::CUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
inline void set_autocast(c10::DeviceType type, bool on) {
  type == c10::DeviceType::CUDA ? at::autocast::set_enabled(on) : at::autocast::set_cpu_enabled(on);
}
inline c10::ScalarType autocast_dtype(c10::DeviceType type) {
  return type == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype()
                                       : at::autocast::get_autocast_cpu_dtype();
}
inline void set_autocast_dtype(c10::DeviceType type, c10::ScalarType dtype) {
  type == c10::DeviceType::CUDA ? at::autocast::set_autocast_gpu_dtype(dtype)
                                : at::autocast::set_autocast_cpu_dtype(dtype);
}
#endif
}  // namespace detail

/// Enables autocast to `dtype` on `device`'s type until the guard goes out of scope, then
/// restores the previous state (and frees autocast's weight-cast cache, as Python does).
/// `dtype` = float32 leaves autocast off, so callers can pass the user's choice directly.
class AutocastGuard {
 public:
  AutocastGuard(c10::Device device, c10::ScalarType dtype)
      : type_(device.type()), active_(dtype != c10::kFloat) {
    if (!active_) return;
    TORCH_CHECK(dtype == c10::kBFloat16 || dtype == c10::kHalf,
                "autocast supports bfloat16 and float16, got ", dtype);
    previous_enabled_ = detail::autocast_enabled(type_);
    previous_dtype_ = detail::autocast_dtype(type_);
    detail::set_autocast(type_, true);
    detail::set_autocast_dtype(type_, dtype);
    at::autocast::increment_nesting();
  }

  ~AutocastGuard() {
    if (!active_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    detail::set_autocast(type_, previous_enabled_);
    detail::set_autocast_dtype(type_, previous_dtype_);
  }

  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType type_;
  bool active_;
  bool previous_enabled_ = false;
  c10::ScalarType previous_dtype_ = c10::kBFloat16;
};

}  // namespace reidnet
