#pragma once
/// The zip container of PyTorch checkpoints (torch.save since 1.6): a bounds-checked reader
/// of stored (uncompressed) entries and a writer laid out as PyTorch's own writer does.
///
/// PyTorch stores every record uncompressed and aligns record data to 64 bytes, so a reader
/// needs only the central directory and the local headers. ZIP64 is read; the writer refuses
/// archives past 4 GiB rather than writing a file that readers would misread.

#include <reidnet/core/detail/byte_source.hpp>
#include <reidnet/core/detail/crc32.hpp>

#include <algorithm>
#include <cstdint>
#include <ostream>
#include <string>
#include <unordered_map>
#include <vector>

namespace reidnet::detail {

/// Throws, naming the record, unless its bytes have the CRC-32 the archive declares. PyTorch's
/// reader skips this check, so a flipped bit in a weight would load silently.
inline void check_zip_crc(const std::string& record, uint32_t actual, uint32_t expected) {
  if (actual == expected) return;
  const auto hex = [](uint32_t value) {
    const char* digits = "0123456789abcdef";
    std::string text = "0x";
    for (int shift = 28; shift >= 0; shift -= 4) text += digits[(value >> shift) & 15];
    return text;
  };
  throw CheckpointError("corrupt zip record " + record + ": its CRC-32 is " + hex(actual) +
                        ", the archive declares " + hex(expected));
}

struct ZipEntry {
  std::string name;
  uint64_t local_header_offset = 0;
  uint64_t size = 0;
  uint16_t method = 0;
  uint16_t flags = 0;
  uint32_t crc = 0;  // of the uncompressed data, from the central directory
};

/// The entries of a zip archive, with the byte range of a stored entry's data on request.
class ZipReader {
 public:
  explicit ZipReader(const ByteSource& source) : source_(source) { read_central_directory(); }

  const std::vector<ZipEntry>& entries() const { return entries_; }

  const ZipEntry* find(const std::string& name) const {
    const auto found = index_.find(name);
    return found == index_.end() ? nullptr : &entries_[found->second];
  }

  /// Offset in the source of the entry's data, after checking it is stored and in bounds.
  uint64_t data_offset(const ZipEntry& entry) const {
    if (entry.flags & 1u) throw CheckpointError("zip entry " + entry.name + " is encrypted");
    if (entry.method != 0) {
      throw CheckpointError("zip entry " + entry.name + " is compressed (method " +
                            std::to_string(entry.method) +
                            "); torch.save stores records uncompressed, re-save the file with it");
    }
    uint8_t header[30];
    source_.require(entry.local_header_offset, 30, "local header of zip entry " + entry.name);
    source_.read(entry.local_header_offset, header, 30);
    if (little_endian<uint32_t>(header) != 0x04034b50) {
      throw CheckpointError("zip entry " + entry.name + " has no local header signature");
    }
    const uint64_t name_length = little_endian<uint16_t>(header, 26);
    const uint64_t extra_length = little_endian<uint16_t>(header, 28);
    const uint64_t offset = entry.local_header_offset + 30 + name_length + extra_length;
    source_.require(offset, entry.size, "data of zip entry " + entry.name);
    return offset;
  }

  /// The entry's bytes, after checking them against its CRC-32.
  std::vector<uint8_t> read_entry(const ZipEntry& entry) const {
    auto bytes = source_.read_vector(data_offset(entry), entry.size, "zip entry " + entry.name);
    Crc32 crc;
    crc.update(bytes.data(), bytes.size());
    check_zip_crc(entry.name, crc.value(), entry.crc);
    return bytes;
  }

 private:
  void read_central_directory() {
    const uint64_t size = source_.size();
    if (size < 22) throw CheckpointError("truncated zip archive: no end of central directory");
    const uint64_t tail_length = std::min<uint64_t>(size, 22 + 0xffff);
    const auto tail = source_.read_vector(size - tail_length, tail_length, "zip trailer");
    int64_t found = -1;
    for (int64_t at = static_cast<int64_t>(tail_length) - 22; at >= 0; --at) {
      if (little_endian<uint32_t>(tail.data(), static_cast<size_t>(at)) == 0x06054b50) {
        found = at;
        break;
      }
    }
    if (found < 0) {
      throw CheckpointError("truncated or corrupt zip archive: no end of central directory record");
    }
    const auto* end_record = tail.data() + found;
    const uint64_t end_offset = size - tail_length + static_cast<uint64_t>(found);
    uint64_t count = little_endian<uint16_t>(end_record, 10);
    uint64_t directory_size = little_endian<uint32_t>(end_record, 12);
    uint64_t directory_offset = little_endian<uint32_t>(end_record, 16);
    if (count == 0xffff || directory_size == 0xffffffff || directory_offset == 0xffffffff) {
      // ZIP64: a locator just before the end record points at the ZIP64 end record.
      if (end_offset < 20) throw CheckpointError("corrupt ZIP64 archive: no locator");
      const auto locator = source_.read_vector(end_offset - 20, 20, "ZIP64 locator");
      if (little_endian<uint32_t>(locator.data()) != 0x07064b50) {
        throw CheckpointError("corrupt ZIP64 archive: bad locator signature");
      }
      const auto record =
          source_.read_vector(little_endian<uint64_t>(locator.data(), 8), 56, "ZIP64 end record");
      if (little_endian<uint32_t>(record.data()) != 0x06064b50) {
        throw CheckpointError("corrupt ZIP64 archive: bad end record signature");
      }
      count = little_endian<uint64_t>(record.data(), 32);
      directory_size = little_endian<uint64_t>(record.data(), 40);
      directory_offset = little_endian<uint64_t>(record.data(), 48);
    }
    const auto directory = source_.read_vector(directory_offset, directory_size, "zip central directory");
    if (count > directory.size() / 46) {
      throw CheckpointError("corrupt zip archive: " + std::to_string(count) +
                            " entries cannot fit a central directory of " +
                            std::to_string(directory.size()) + " bytes");
    }
    entries_.reserve(static_cast<size_t>(count));
    size_t at = 0;
    for (uint64_t i = 0; i < count; ++i) {
      if (directory.size() - at < 46 || little_endian<uint32_t>(directory.data(), at) != 0x02014b50) {
        throw CheckpointError("corrupt zip central directory at entry " + std::to_string(i));
      }
      ZipEntry entry;
      entry.flags = little_endian<uint16_t>(directory.data(), at + 8);
      entry.method = little_endian<uint16_t>(directory.data(), at + 10);
      entry.crc = little_endian<uint32_t>(directory.data(), at + 16);
      uint64_t compressed = little_endian<uint32_t>(directory.data(), at + 20);
      uint64_t uncompressed = little_endian<uint32_t>(directory.data(), at + 24);
      const size_t name_length = little_endian<uint16_t>(directory.data(), at + 28);
      const size_t extra_length = little_endian<uint16_t>(directory.data(), at + 30);
      const size_t comment_length = little_endian<uint16_t>(directory.data(), at + 32);
      entry.local_header_offset = little_endian<uint32_t>(directory.data(), at + 42);
      const size_t variable = name_length + extra_length + comment_length;
      if (directory.size() - at - 46 < variable) {
        throw CheckpointError("corrupt zip central directory: entry " + std::to_string(i) +
                              " runs past its end");
      }
      const auto* name = reinterpret_cast<const char*>(directory.data() + at + 46);
      entry.name.assign(name, name_length);
      read_zip64_extra(directory.data() + at + 46 + name_length, extra_length, compressed,
                       uncompressed, entry.local_header_offset);
      if (entry.method == 0 && compressed != uncompressed) {
        throw CheckpointError("corrupt zip entry " + entry.name + ": stored sizes differ");
      }
      entry.size = uncompressed;
      at += 46 + variable;
      if (!index_.emplace(entry.name, entries_.size()).second) {
        throw CheckpointError("corrupt zip archive: entry " + entry.name + " appears twice");
      }
      entries_.push_back(std::move(entry));
    }
  }

  // The ZIP64 extra field holds, in order, whichever 32-bit fields were saturated.
  static void read_zip64_extra(const uint8_t* extra, size_t length, uint64_t& compressed,
                               uint64_t& uncompressed, uint64_t& offset) {
    size_t at = 0;
    while (length - at >= 4) {
      const uint16_t id = little_endian<uint16_t>(extra, at);
      const size_t field_length = little_endian<uint16_t>(extra, at + 2);
      if (length - at - 4 < field_length) break;
      if (id == 0x0001) {
        size_t field = at + 4;
        const size_t field_end = field + field_length;
        for (uint64_t* value : {&uncompressed, &compressed, &offset}) {
          if (*value != 0xffffffff) continue;
          if (field_end - field < 8) throw CheckpointError("corrupt ZIP64 extra field");
          *value = little_endian<uint64_t>(extra, field);
          field += 8;
        }
      }
      at += 4 + field_length;
    }
  }

  const ByteSource& source_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
};

/// Writes stored entries with 64-byte aligned data (as PyTorchStreamWriter does), then the
/// central directory. The caller streams each entry's data and passes its CRC.
class ZipWriter {
 public:
  explicit ZipWriter(std::ostream& out) : out_(out) {}

  /// Writes the local header of an entry of `size` bytes whose CRC-32 is `crc`; the caller
  /// then writes exactly `size` bytes with `write_data`.
  void begin_entry(const std::string& name, uint64_t size, uint32_t crc) {
    constexpr uint64_t kAlignment = 64;
    const uint64_t header_end = offset_ + 30 + name.size() + 4;
    const uint64_t padding = (kAlignment - header_end % kAlignment) % kAlignment;
    const uint64_t extra_length = 4 + padding;
    if (offset_ > 0xfffffffe || size > 0xfffffffe || name.size() > 0xffff) {
      throw CheckpointError("the checkpoint would exceed 4 GiB, which this writer does not support");
    }
    std::string header;
    append_little_endian<uint32_t>(header, 0x04034b50);
    append_common(header, size, crc, name.size(), extra_length);
    header += name;
    append_little_endian<uint16_t>(header, 0x4246);  // "FB": PyTorch's padding field
    append_little_endian<uint16_t>(header, static_cast<uint16_t>(padding));
    header.append(static_cast<size_t>(padding), 'Z');
    entries_.push_back({name, offset_, size, crc});
    write(header.data(), header.size());
    pending_ = size;
  }

  void write_data(const void* data, uint64_t size) {
    if (size > pending_) throw CheckpointError("zip entry written past its declared size");
    pending_ -= size;
    write(data, size);
  }

  void add_entry(const std::string& name, const std::string& data) {
    Crc32 crc;
    crc.update(data.data(), data.size());
    begin_entry(name, data.size(), crc.value());
    write_data(data.data(), data.size());
  }

  /// Writes the central directory and the end record.
  void finish() {
    if (pending_ != 0) throw CheckpointError("zip entry shorter than its declared size");
    const uint64_t directory_offset = offset_;
    std::string directory;
    for (const auto& entry : entries_) {
      append_little_endian<uint32_t>(directory, 0x02014b50);
      append_little_endian<uint16_t>(directory, 20);  // made by
      append_common(directory, entry.size, entry.crc, entry.name.size(), 0);
      append_little_endian<uint16_t>(directory, 0);  // comment length
      append_little_endian<uint16_t>(directory, 0);  // disk
      append_little_endian<uint16_t>(directory, 0);  // internal attributes
      append_little_endian<uint32_t>(directory, 0);  // external attributes
      append_little_endian<uint32_t>(directory, static_cast<uint32_t>(entry.offset));
      directory += entry.name;
    }
    if (entries_.size() > 0xfffe || directory_offset + directory.size() > 0xfffffffe) {
      throw CheckpointError("the checkpoint would exceed 4 GiB or 65535 records, which this "
                            "writer does not support");
    }
    write(directory.data(), directory.size());
    std::string end;
    append_little_endian<uint32_t>(end, 0x06054b50);
    append_little_endian<uint16_t>(end, 0);
    append_little_endian<uint16_t>(end, 0);
    append_little_endian<uint16_t>(end, static_cast<uint16_t>(entries_.size()));
    append_little_endian<uint16_t>(end, static_cast<uint16_t>(entries_.size()));
    append_little_endian<uint32_t>(end, static_cast<uint32_t>(directory.size()));
    append_little_endian<uint32_t>(end, static_cast<uint32_t>(directory_offset));
    append_little_endian<uint16_t>(end, 0);
    write(end.data(), end.size());
  }

 private:
  struct Written {
    std::string name;
    uint64_t offset;
    uint64_t size;
    uint32_t crc;
  };

  // Fields shared by local headers and central directory records, from "version needed".
  static void append_common(std::string& out, uint64_t size, uint32_t crc, size_t name_length,
                            uint64_t extra_length) {
    append_little_endian<uint16_t>(out, 20);      // version needed
    append_little_endian<uint16_t>(out, 0);       // flags
    append_little_endian<uint16_t>(out, 0);       // stored
    append_little_endian<uint16_t>(out, 0);       // time
    append_little_endian<uint16_t>(out, 0x21);    // date: 1980-01-01
    append_little_endian<uint32_t>(out, crc);
    append_little_endian<uint32_t>(out, static_cast<uint32_t>(size));
    append_little_endian<uint32_t>(out, static_cast<uint32_t>(size));
    append_little_endian<uint16_t>(out, static_cast<uint16_t>(name_length));
    append_little_endian<uint16_t>(out, static_cast<uint16_t>(extra_length));
  }

  void write(const void* data, uint64_t size) {
    out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out_) throw CheckpointError("write failed (disk full?)");
    offset_ += size;
  }

  std::ostream& out_;
  uint64_t offset_ = 0;
  uint64_t pending_ = 0;
  std::vector<Written> entries_;
};

}  // namespace reidnet::detail
