// libFuzzer target for the checkpoint reader: container detection, zip directory, legacy
// stream, safetensors header, the whitelist unpickler and state-dict extraction. Any input
// must either parse into ranges that lie inside it or raise CheckpointError; a crash, a
// sanitizer report, a leak or another exception type is a bug.
#include <reidnet/detail/checkpoint_layout.hpp>

#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace reidnet::detail;
  const MemorySource source(data, size);
  try {
    const auto layout = read_checkpoint_layout(source);
    for (const auto& storage : layout.storages) {
      const auto bytes = storage.numel * dtype_info(storage.dtype).element_size;
      if (storage.byte_offset > size || bytes > size - storage.byte_offset) std::abort();
    }
    for (const auto& tensor : layout.tensors) {
      if (tensor.storage >= layout.storages.size()) std::abort();
      if (tensor.sizes.size() != tensor.strides.size()) std::abort();
    }
  } catch (const CheckpointError&) {
  }
  return 0;
}
