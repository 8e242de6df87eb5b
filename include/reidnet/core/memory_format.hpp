#pragma once
/// Memory layout of a module's weights.
///
///     reidnet::to_channels_last(*net);  // then feed x.contiguous(torch::MemoryFormat::ChannelsLast)

#include <torch/nn/module.h>
#include <torch/types.h>

namespace reidnet {

/// Converts every 4-D parameter (conv weights) to channels_last in place, as Python's
/// `model.to(memory_format=torch.channels_last)` does; convs then run (and their gradients
/// are computed) in that layout, which oneDNN and cuDNN prefer.
inline void to_channels_last(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& parameter : module.parameters()) {
    if (parameter.dim() == 4) {
      parameter.set_data(parameter.data().contiguous(torch::MemoryFormat::ChannelsLast));
    }
  }
}

}  // namespace reidnet
