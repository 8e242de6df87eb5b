// libFuzzer target for the checkpoint reader: container detection, zip directory, legacy
// stream, safetensors header, the whitelist unpickler, state-dict extraction, and the
// archives of any object (optimizer states). Any input must either parse into storage ranges
// that lie inside it and do not overlap, or raise CheckpointError; a crash, a sanitizer
// report, a leak or another exception type is a bug.
#include <reidnet/io/detail/checkpoint_layout.hpp>

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
  try {
    const auto archive = read_pickled_archive(source);
    uint64_t total = 0;
    for (const auto& storage : archive.storages) {
      if (storage.byte_offset > size || storage.nbytes() > size - storage.byte_offset) std::abort();
      total += storage.nbytes();
    }
    if (total > size) std::abort();  // distinct storages never overlap
    for (const auto& [ref, index] : archive.storage_of) {
      if (index >= archive.storages.size()) std::abort();
    }
  } catch (const CheckpointError&) {
  }
  return 0;
}
