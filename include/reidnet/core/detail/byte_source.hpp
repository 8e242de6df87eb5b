#pragma once
/// Random-access byte sources for the checkpoint readers, bounds-checked on every read.
///
/// The readers never trust a length or offset found in a file: every read goes through
/// `ByteSource::read`, which refuses ranges beyond the end instead of reading garbage.
/// No LibTorch here, so the libFuzzer target builds without it.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace reidnet::detail {

/// A checkpoint format problem (truncation, bad field, refused global). The public API adds
/// the file name to the message.
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Sizes (in bytes) that can never be meaningful in a checkpoint; refused before allocating.
inline constexpr uint64_t kMaxMetadataBytes = uint64_t{1} << 28;  // pickles, zip directory, JSON

/// a + b, refusing unsigned overflow.
inline uint64_t checked_add(uint64_t a, uint64_t b, const char* what) {
  if (a > std::numeric_limits<uint64_t>::max() - b) {
    throw CheckpointError(std::string(what) + " overflows 64 bits");
  }
  return a + b;
}

/// a * b, refusing unsigned overflow.
inline uint64_t checked_multiply(uint64_t a, uint64_t b, const char* what) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) {
    throw CheckpointError(std::string(what) + " overflows 64 bits");
  }
  return a * b;
}

class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual uint64_t size() const = 0;

  /// Copies bytes [offset, offset + length) to `out`; throws if the range passes the end.
  void read(uint64_t offset, void* out, uint64_t length) const {
    require(offset, length, "data");
    if (length > 0) read_unchecked(offset, out, length);
  }

  /// Throws a "truncated" error unless [offset, offset + length) lies inside the source.
  void require(uint64_t offset, uint64_t length, const std::string& what) const {
    if (offset > size() || length > size() - offset) {
      throw CheckpointError("truncated or corrupt: " + what + " needs " + std::to_string(length) +
                            " bytes at offset " + std::to_string(offset) + " but the file has " +
                            std::to_string(size()) + " bytes");
    }
  }

  std::vector<uint8_t> read_vector(uint64_t offset, uint64_t length, const std::string& what) const {
    require(offset, length, what);
    if (length > kMaxMetadataBytes) {
      throw CheckpointError(what + " of " + std::to_string(length) + " bytes is implausibly large");
    }
    std::vector<uint8_t> bytes(static_cast<size_t>(length));
    if (length > 0) read_unchecked(offset, bytes.data(), length);
    return bytes;
  }

 protected:
  virtual void read_unchecked(uint64_t offset, void* out, uint64_t length) const = 0;
};

/// Bytes held in memory (the fuzzer's input, tests).
class MemorySource : public ByteSource {
 public:
  MemorySource(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint64_t size() const override { return size_; }

 protected:
  void read_unchecked(uint64_t offset, void* out, uint64_t length) const override {
    std::memcpy(out, data_ + offset, static_cast<size_t>(length));
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

/// A file read with positioned reads straight into the caller's buffer (no whole-file copy).
class FileSource : public ByteSource {
 public:
  explicit FileSource(const std::string& path) {
    // Opening a FIFO or device could block or never end: accept regular files only.
    std::error_code ignored;
    if (std::filesystem::exists(path, ignored) && !std::filesystem::is_regular_file(path, ignored)) {
      throw CheckpointError("it is a directory or another non-regular file");
    }
    file_.open(path, std::ios::binary);
    if (!file_) throw CheckpointError("cannot open the file (missing or unreadable)");
    file_.seekg(0, std::ios::end);
    const auto end = file_.tellg();
    if (end < 0) throw CheckpointError("cannot determine the file size");
    size_ = static_cast<uint64_t>(end);
  }
  uint64_t size() const override { return size_; }

 protected:
  void read_unchecked(uint64_t offset, void* out, uint64_t length) const override {
    // Pickles are read a few bytes at a time: serve small reads from a cached window.
    constexpr uint64_t kSmallRead = 4096;
    constexpr uint64_t kWindow = 1 << 16;
    if (length <= kSmallRead) {
      if (offset < window_start_ || offset + length > window_start_ + window_.size()) {
        window_.resize(static_cast<size_t>(std::min(kWindow, size_ - offset)));
        read_direct(offset, window_.data(), window_.size());
        window_start_ = offset;
      }
      std::memcpy(out, window_.data() + (offset - window_start_), static_cast<size_t>(length));
      return;
    }
    read_direct(offset, out, length);
  }

 private:
  void read_direct(uint64_t offset, void* out, uint64_t length) const {
    file_.clear();
    file_.seekg(static_cast<std::streamoff>(offset));
    auto* cursor = static_cast<char*>(out);
    constexpr uint64_t kChunk = uint64_t{1} << 30;
    while (length > 0) {
      const auto chunk = std::min(length, kChunk);
      file_.read(cursor, static_cast<std::streamsize>(chunk));
      if (static_cast<uint64_t>(file_.gcount()) != chunk) {
        throw CheckpointError("read error at byte " + std::to_string(offset));
      }
      cursor += chunk;
      offset += chunk;
      length -= chunk;
    }
  }

  mutable std::ifstream file_;
  mutable std::vector<char> window_;
  mutable uint64_t window_start_ = 0;
  uint64_t size_ = 0;
};

/// Little-endian integer of N bytes at `bytes + at` (the caller has bounds-checked).
template <typename T>
T little_endian(const uint8_t* bytes, size_t at = 0) {
  uint64_t value = 0;
  for (size_t i = 0; i < sizeof(T); ++i) value |= uint64_t{bytes[at + i]} << (8 * i);
  return static_cast<T>(value);
}

/// Appends `value` as `sizeof(T)` little-endian bytes.
template <typename T>
void append_little_endian(std::string& out, T value) {
  const auto bits = static_cast<uint64_t>(value);
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
}

}  // namespace reidnet::detail
