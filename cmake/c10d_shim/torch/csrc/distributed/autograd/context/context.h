#pragma once
// Stands in for LibTorch's distributed-autograd context header where a LibTorch package
// ships c10d's reducer.hpp but not this header (Debian's libtorch-dev 1.13). reducer.hpp
// needs only two names from it: the gradient-callback type, for a static_assert, and the
// context pointer type of a member that libtorch itself constructs and destroys. reidnet's
// CMake package adds this folder to the include path only where the real header is missing.
#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>

namespace torch {
namespace distributed {
namespace autograd {

class DistAutogradContext {
 public:
  using GradCallback = std::function<bool(at::Tensor&)>;
};
using ContextPtr = std::shared_ptr<DistAutogradContext>;

}  // namespace autograd
}  // namespace distributed
}  // namespace torch
