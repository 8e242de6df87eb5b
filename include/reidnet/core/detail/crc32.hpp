#pragma once
/// CRC-32 as zip files (and so PyTorch checkpoints) and the run folder's commit journal use it.

#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace reidnet::detail {

/// CRC-32 (IEEE, as zip uses), computed by zlib.
class Crc32 {
 public:
  void update(const void* data, size_t size) {
    const auto* bytes = static_cast<const Bytef*>(data);
    constexpr size_t kChunk = size_t{1} << 30;  // zlib takes a uInt length
    while (size > 0) {
      const size_t chunk = std::min(size, kChunk);
      value_ = ::crc32(value_, bytes, static_cast<uInt>(chunk));
      bytes += chunk;
      size -= chunk;
    }
  }
  uint32_t value() const { return static_cast<uint32_t>(value_); }

 private:
  uLong value_ = ::crc32(0L, Z_NULL, 0);
};

}  // namespace reidnet::detail
