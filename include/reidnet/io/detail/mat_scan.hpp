#pragma once
/// A top-level scan of a MATLAB level-5 MAT-file, done before matio sees the file.
///
/// The file is a 128-byte header and a sequence of data elements, each an 8-byte tag (type,
/// byte count) and its bytes: miMATRIX arrays, or miCOMPRESSED ones (a zlib stream holding a
/// miMATRIX). The scan walks that sequence and never into an element: of each array it reads
/// only the header (array flags, dimensions, name and the tag of the real part's data), from
/// the first kMatPrefixBytes of the element, inflated with zlib's streaming API where the
/// element is compressed. Its memory is that prefix and a few records, whatever the file
/// holds: no recursion, no allocation sized by the file. Cells, structs and any variable not
/// asked for are skipped by their byte count, their contents never parsed.
///
/// The records are what reidnet checks before any array's data is read (reidnet/io/mat_file.hpp).

#include <reidnet/core/errors.hpp>

#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <unistd.h>

namespace reidnet::detail {

/// MAT v5 data types (the tags' type field).
enum MatDataType : uint32_t {
  kMiInt8 = 1, kMiUInt8 = 2, kMiInt16 = 3, kMiUInt16 = 4, kMiInt32 = 5, kMiUInt32 = 6,
  kMiSingle = 7, kMiDouble = 9, kMiInt64 = 12, kMiUInt64 = 13, kMiMatrix = 14, kMiCompressed = 15,
};

inline constexpr uint64_t kMatHeaderBytes = 128;
/// How much of each array the scan reads (inflates) for its header: room for any name that
/// MATLAB writes (at most 63 characters) many times over.
inline constexpr uint64_t kMatPrefixBytes = 4096;
/// zlib's largest expansion: a deflate stream never inflates to more than 1032 times its size.
inline constexpr uint64_t kZlibMaxRatio = 1032;

/// Bytes of one value stored as `type`, 0 for a type that is not a number.
inline uint64_t mat_stored_value_bytes(uint32_t type) {
  switch (type) {
    case kMiInt8: case kMiUInt8: return 1;
    case kMiInt16: case kMiUInt16: return 2;
    case kMiInt32: case kMiUInt32: case kMiSingle: return 4;
    case kMiDouble: case kMiInt64: case kMiUInt64: return 8;
    default: return 0;
  }
}

inline std::string mat_stored_type_name(uint32_t type) {
  switch (type) {
    case kMiInt8: return "int8";
    case kMiUInt8: return "uint8";
    case kMiInt16: return "int16";
    case kMiUInt16: return "uint16";
    case kMiInt32: return "int32";
    case kMiUInt32: return "uint32";
    case kMiSingle: return "single";
    case kMiDouble: return "double";
    case kMiInt64: return "int64";
    case kMiUInt64: return "uint64";
    case kMiMatrix: return "an array";
    case kMiCompressed: return "compressed data";
    default: return fmt::format("data type {}", type);
  }
}

/// MATLAB's array classes (the array flags' low byte; matio's matio_classes has the same values).
inline std::string mat_class_name(uint32_t mat_class) {
  static const char* const names[] = {"an unknown class", "a cell array", "a struct", "an object",
                                      "a char array", "a sparse array", "double", "single",
                                      "int8", "uint8", "int16", "uint16", "int32", "uint32",
                                      "int64", "uint64", "a function handle", "an opaque object"};
  return mat_class < sizeof(names) / sizeof(names[0]) ? names[mat_class]
                                                      : fmt::format("class {}", mat_class);
}

/// One top-level data element that holds an array, as its header describes it.
struct MatElement {
  uint64_t offset = 0;       // of its tag in the file
  uint64_t file_bytes = 0;   // its tag and bytes in the file (compressed where compressed)
  bool compressed = false;
  std::string problem;       // why its header could not be read; empty when it could
  std::string name;
  uint32_t mat_class = 0;
  bool complex = false, logical = false;
  uint64_t rank = 0;
  std::vector<uint64_t> dims;  // when rank <= 32
  uint64_t matrix_bytes = 0;   // the miMATRIX tag's byte count (once inflated, if compressed)
  uint32_t data_type = 0;      // the real part's stored type; 0 when it was not read
  uint64_t data_bytes = 0;     // the real part's byte count
  bool no_data = false;        // the array ends before a data element (an empty array)
};

/// What the scan found: the elements of the arrays asked for, and the other arrays' names
/// (the first kListedNames of them), for the errors.
struct MatScan {
  static constexpr size_t kListedNames = 64;
  std::string header;                  // the file's first 128 bytes
  bool swapped = false;                // written on a machine of the other byte order
  uint64_t file_bytes = 0;
  uint64_t elements = 0;               // top-level data elements, of any kind
  std::vector<MatElement> wanted;      // in file order
  std::vector<std::string> names;      // every array's name, in file order (the first ones)
  uint64_t unnamed = 0;                // arrays whose header could not be read
};

/// Positioned, buffered reads of an open file (a 64 KiB window: tags are 8 bytes apart).
class MatFileReader {
 public:
  MatFileReader(int fd, uint64_t size) : fd_(fd), size_(size) {}
  uint64_t size() const { return size_; }

  /// Copies [offset, offset + length) into `out`; false if the file ends first.
  bool read(uint64_t offset, void* out, uint64_t length) {
    if (offset > size_ || length > size_ - offset) return false;
    auto* bytes = static_cast<unsigned char*>(out);
    if (length > kWindow) return read_direct(offset, bytes, length);
    if (offset < start_ || offset + length > start_ + window_.size()) {
      window_.resize(static_cast<size_t>(std::min<uint64_t>(kWindow, size_ - offset)));
      start_ = offset;
      if (!read_direct(offset, window_.data(), window_.size())) {
        window_.clear();
        return false;
      }
    }
    std::memcpy(bytes, window_.data() + (offset - start_), static_cast<size_t>(length));
    return true;
  }

  bool read_direct(uint64_t offset, unsigned char* out, uint64_t length) const {
    for (uint64_t done = 0; done < length;) {
      const ssize_t count = ::pread(fd_, out + done, static_cast<size_t>(length - done),
                                    static_cast<off_t>(offset + done));
      if (count < 0 && errno == EINTR) continue;
      if (count <= 0) return false;
      done += static_cast<uint64_t>(count);
    }
    return true;
  }

 private:
  static constexpr uint64_t kWindow = 1 << 16;
  int fd_;
  uint64_t size_;
  uint64_t start_ = 0;
  std::vector<unsigned char> window_;
};

/// Inflates the zlib stream in the file's bytes [offset, offset + length): into `out` until it
/// holds `capacity` bytes (or the stream ends), or, with `out` null, only counting what the
/// whole stream inflates to, stopping past `limit`. Returns the bytes produced; `problem` says
/// why the stream is bad, empty if it is not (a stream cut short by `capacity` is not bad).
inline uint64_t inflate_mat_stream(MatFileReader& file, uint64_t offset, uint64_t length,
                                   unsigned char* out, uint64_t capacity, uint64_t limit,
                                   std::string& problem) {
  z_stream stream{};
  if (inflateInit(&stream) != Z_OK) {
    problem = "zlib cannot start";
    return 0;
  }
  struct End {
    z_stream* stream;
    ~End() { inflateEnd(stream); }
  } end{&stream};
  unsigned char input[4096];
  unsigned char discard[1 << 16];
  uint64_t consumed = 0, produced = 0;
  for (;;) {
    if (stream.avail_in == 0 && consumed < length) {
      const auto chunk = std::min<uint64_t>(sizeof input, length - consumed);
      if (!file.read(offset + consumed, input, chunk)) {
        problem = "the file ends inside its compressed data";
        return produced;
      }
      consumed += chunk;
      stream.next_in = input;
      stream.avail_in = static_cast<uInt>(chunk);
    }
    if (out != nullptr) {
      stream.next_out = out + produced;
      stream.avail_out = static_cast<uInt>(capacity - produced);
    } else {
      stream.next_out = discard;
      stream.avail_out = sizeof discard;
    }
    const auto before = stream.avail_out;
    const int status = inflate(&stream, Z_NO_FLUSH);
    produced += before - stream.avail_out;
    if (status == Z_STREAM_END) return produced;
    if (status != Z_OK && status != Z_BUF_ERROR) {
      problem = fmt::format("its compressed data is not a valid zlib stream ({})",
                            stream.msg != nullptr ? stream.msg : "inflate failed");
      return produced;
    }
    if (out != nullptr && produced == capacity) return produced;
    if (out == nullptr && produced > limit) return produced;
    if (status == Z_BUF_ERROR && stream.avail_in == 0 && consumed == length) {
      problem = "its compressed data ends before the zlib stream does";
      return produced;
    }
  }
}

namespace mat_scan_detail {

inline uint32_t load_u32(const unsigned char* at, bool swapped) {
  uint32_t value;
  std::memcpy(&value, at, 4);
  return swapped ? __builtin_bswap32(value) : value;
}

inline uint64_t round_up_8(uint64_t bytes) { return (bytes + 7) / 8 * 8; }

/// Fills `element` from the first `have` bytes of a miMATRIX (its tag first); `problem` is
/// set where the header is damaged or does not fit in those bytes.
inline void parse_matrix_header(const unsigned char* bytes, uint64_t have, bool swapped,
                                MatElement& element) {
  if (have < 8) {
    element.problem = "its array header is cut short";
    return;
  }
  if (load_u32(bytes, swapped) != kMiMatrix) {
    element.problem = fmt::format("it holds {}, not an array",
                                  mat_stored_type_name(load_u32(bytes, swapped)));
    return;
  }
  element.matrix_bytes = load_u32(bytes + 4, swapped);
  const uint64_t end = 8 + element.matrix_bytes;  // where the array's bytes end
  struct Sub {
    uint32_t type;
    uint64_t bytes, data, next;  // its byte count; where its bytes start, where the next tag is
  };
  // The sub-element whose tag is at `at`, if its tag lies in what was read and its bytes in the
  // array. A tag whose upper 16 bits are not 0 is a small data element: up to 4 bytes in it.
  const auto sub = [&](uint64_t at, Sub& out, const char* what) {
    if (at + 8 > have || at + 8 > end) {
      element.problem = fmt::format("its {} lies past {}", what,
                                    at + 8 > end ? "the array's end" : "the header's first bytes");
      return false;
    }
    const uint32_t word = load_u32(bytes + at, swapped);
    if ((word >> 16) != 0) {
      out = {word & 0xffffu, word >> 16, at + 4, at + 8};
      if (out.bytes > 4) {
        element.problem = fmt::format("its {} is a small data element of {} bytes", what, out.bytes);
        return false;
      }
    } else {
      out = {word, load_u32(bytes + at + 4, swapped), at + 8, 0};
      out.next = at + 8 + round_up_8(out.bytes);
    }
    if (out.data + out.bytes > end) {
      element.problem = fmt::format("its {} ({} bytes) runs past the array's end", what, out.bytes);
      return false;
    }
    return true;
  };
  Sub flags{}, dims{}, name{}, data{};
  if (!sub(8, flags, "array flags")) return;
  if (flags.type != kMiUInt32 || flags.bytes != 8 || flags.data + 4 > have) {
    element.problem = "its array flags are malformed";
    return;
  }
  const uint32_t word = load_u32(bytes + flags.data, swapped);
  element.mat_class = word & 0xffu;
  element.logical = (word & 0x200u) != 0;
  element.complex = (word & 0x800u) != 0;
  if (!sub(flags.next, dims, "dimensions")) return;
  if (dims.type != kMiInt32 || dims.bytes % 4 != 0) {
    element.problem = "its dimensions are malformed";
    return;
  }
  element.rank = dims.bytes / 4;
  if (element.rank <= 32 && dims.data + dims.bytes <= have) {
    for (uint64_t d = 0; d < element.rank; ++d) {
      const auto size = static_cast<int32_t>(load_u32(bytes + dims.data + 4 * d, swapped));
      if (size < 0) {
        element.problem = fmt::format("dimension {} is negative ({})", d + 1, size);
        return;
      }
      element.dims.push_back(static_cast<uint64_t>(size));
    }
  }
  if (!sub(dims.next, name, "name")) return;
  if (name.type != kMiInt8 && name.type != kMiUInt8) {
    element.problem = "its name is malformed";
    return;
  }
  if (name.data + name.bytes > have) {
    element.problem = fmt::format("its name of {} bytes is longer than reidnet reads", name.bytes);
    return;
  }
  element.name.assign(reinterpret_cast<const char*>(bytes + name.data), static_cast<size_t>(name.bytes));
  element.name.erase(std::find(element.name.begin(), element.name.end(), '\0'), element.name.end());
  // The real part of a numeric array; other classes (cells, structs, sparse, char) are not read.
  if (element.mat_class >= 6 && element.mat_class <= 15) {
    const uint64_t data_at = name.next;
    if (data_at == end) {  // no data element: writers leave it out of empty arrays
      element.data_type = 0;
      element.data_bytes = 0;
      element.no_data = true;
      return;
    }
    if (!sub(data_at, data, "data")) return;
    element.data_type = data.type;
    element.data_bytes = data.bytes;
  }
}

}  // namespace mat_scan_detail

/// Scans the level-5 MAT-file open as `fd` (`size` bytes), keeping the records of the arrays
/// named in `wanted`. Throws InputError naming `path` when it is not a level-5 MAT-file or a
/// data element runs past its end.
inline MatScan scan_mat_file(int fd, uint64_t size, const std::string& path,
                             const std::vector<std::string>& wanted) {
  using namespace mat_scan_detail;
  MatFileReader file(fd, size);
  MatScan scan;
  scan.file_bytes = size;
  scan.header.resize(kMatHeaderBytes);
  if (size < kMatHeaderBytes || !file.read(0, scan.header.data(), kMatHeaderBytes)) {
    throw InputError(fmt::format("{}: not a MAT-file: {} bytes, fewer than the 128-byte header of "
                                 "a level-5 MAT-file", path, size));
  }
  uint16_t version, endian;
  std::memcpy(&version, scan.header.data() + 124, 2);
  std::memcpy(&endian, scan.header.data() + 126, 2);
  if (endian == 0x494d) {
    scan.swapped = true;
    version = static_cast<uint16_t>((version >> 8) | (version << 8));
  } else if (endian != 0x4d49) {
    throw InputError(fmt::format("{}: not a level-5 MAT-file (MATLAB's -v7 or -v6, "
                                 "scipy.io.savemat's default): no MAT-file header", path));
  }
  if (version != 0x0100) {
    throw InputError(fmt::format("{}: not a level-5 MAT-file (MATLAB's -v7 or -v6, "
                                 "scipy.io.savemat's default): header version 0x{:04x}{}", path,
                                 version, version == 0x0200 ? ", a -v7.3 (HDF5) file" : ""));
  }
  std::vector<unsigned char> prefix(kMatPrefixBytes);
  for (uint64_t at = kMatHeaderBytes; size - at >= 8;) {
    unsigned char tag[8];
    if (!file.read(at, tag, 8)) throw InputError(fmt::format("{}: cannot read byte {}", path, at));
    ++scan.elements;
    const uint32_t word = load_u32(tag, scan.swapped);
    if ((word >> 16) != 0) {  // a small data element: no array
      at += 8;
      continue;
    }
    const uint64_t count = load_u32(tag + 4, scan.swapped);
    if (count > size - at - 8) {
      throw InputError(fmt::format("{}: the data element at byte {} claims {} bytes, past the end of "
                                   "the {}-byte file (truncated or damaged)", path, at, count, size));
    }
    MatElement element;
    element.offset = at;
    element.file_bytes = 8 + count;
    if (word == kMiCompressed) {
      element.compressed = true;
      std::string problem;
      const auto have = inflate_mat_stream(file, at + 8, count, prefix.data(), prefix.size(), 0, problem);
      parse_matrix_header(prefix.data(), have, scan.swapped, element);
      if (!problem.empty() && element.problem.empty() && have < prefix.size()) {
        element.problem = problem;
      }
      at += 8 + count;
    } else if (word == kMiMatrix) {
      const auto have = std::min<uint64_t>(prefix.size(), 8 + count);
      if (!file.read(at, prefix.data(), have)) {
        throw InputError(fmt::format("{}: cannot read byte {}", path, at));
      }
      parse_matrix_header(prefix.data(), have, scan.swapped, element);
      if (element.problem.empty() && count % 8 != 0) {
        element.problem = fmt::format("its byte count {} is not a multiple of 8", count);
      }
      at += 8 + round_up_8(count);
      if (at > size) at = size;
    } else {  // not an array: skipped
      at += 8 + round_up_8(count);
      if (at > size) at = size;
      continue;
    }
    if (element.name.empty()) {
      ++scan.unnamed;
    } else if (scan.names.size() < MatScan::kListedNames) {
      scan.names.push_back(element.name);
    }
    if (std::find(wanted.begin(), wanted.end(), element.name) != wanted.end()) {
      for (const auto& earlier : scan.wanted) {
        if (earlier.name == element.name) {
          throw InputError(fmt::format("{}: array '{}': the file holds two arrays of that name",
                                       path, element.name));
        }
      }
      scan.wanted.push_back(std::move(element));
    }
  }
  return scan;
}

}  // namespace reidnet::detail
