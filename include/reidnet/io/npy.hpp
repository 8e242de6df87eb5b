#pragma once
/// NumPy's .npy files (format version 1.0, the one numpy.save writes for small headers): a
/// float32 matrix written as numpy.save writes it, and 1-D or 2-D float32/float64 arrays read.
/// Trackers exchange detections and their features this way (deep_sort's
/// generate_detections.py writes one row per detection, StrongSORT's offline mode reads it).
///
///     reidnet::write_npy("MOT17-02.npy", rows);         // (N, C) float32, atomically
///     torch::Tensor back = reidnet::read_npy("MOT17-02.npy");  // numpy.load's array, as float
///
/// The format is a magic string, a version, a header (a Python dict literal: 'descr',
/// 'fortran_order', 'shape') and the raw array. The reader parses only the literal that numpy
/// writes and never evaluates anything; it refuses big-endian, Fortran-order, other dtypes
/// and more than two dimensions, and a header whose shape disagrees with the file's size, so
/// that memory stays bounded by the file (itself bounded by detail::kMaxFileBytes). Errors are
/// reidnet::InputError naming the file.

#include <reidnet/core/detail/file_io.hpp>
#include <reidnet/core/errors.hpp>

#include <torch/torch.h>

#include <fmt/format.h>

#include <cctype>
#include <cstdint>
#include <cstring>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace reidnet {

namespace detail {

inline constexpr char kNpyMagic[] = "\x93NUMPY";
inline constexpr size_t kNpyMagicLength = 6;

/// The version 1.0 header numpy.save writes for a C-order little-endian float32 array of
/// `shape`: the dict literal padded with spaces to a multiple of 64 bytes, ending in '\n'.
inline std::string npy_header(const std::vector<int64_t>& shape) {
  std::string dims;  // "3," for one dimension, "3, 4" for two, as Python writes tuples
  for (size_t i = 0; i < shape.size(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) dims += ",";
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t preamble = kNpyMagicLength + 2 + 2;
  const size_t total = (preamble + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - preamble - dict.size() - 1, ' ');
  dict += '\n';
  return dict;
}

/// The value of `key` in a header dict literal (the text after "'key':" up to the next
/// top-level ','), trimmed; empty when absent.
inline std::string npy_header_value(const std::string& dict, const std::string& key) {
  const auto at = dict.find("'" + key + "'");
  if (at == std::string::npos) return {};
  auto colon = dict.find(':', at + key.size() + 2);
  if (colon == std::string::npos) return {};
  size_t end = colon + 1;
  int depth = 0;
  for (; end < dict.size(); ++end) {
    const char c = dict[end];
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if ((c == ',' && depth == 0) || c == '}') break;
  }
  auto value = dict.substr(colon + 1, end - colon - 1);
  const auto first = value.find_first_not_of(' ');
  const auto last = value.find_last_not_of(' ');
  return first == std::string::npos ? std::string() : value.substr(first, last - first + 1);
}

}  // namespace detail

/// Writes `matrix` (float32, 2-D, any device) as a C-order little-endian .npy file that
/// numpy.load reads, atomically (a temporary sibling renamed over `path`). Throws
/// std::invalid_argument for another dtype or rank, std::runtime_error naming `path` when it
/// cannot be written.
inline void write_npy(const std::string& path, const torch::Tensor& matrix) {
  if (!matrix.defined() || matrix.dim() != 2 || matrix.scalar_type() != torch::kFloat32) {
    throw std::invalid_argument(fmt::format(
        "write_npy {}: expected a 2-D float32 matrix, got {}", path,
        matrix.defined() ? c10::str(matrix.scalar_type(), " ", matrix.sizes()) : "none"));
  }
  static_assert(sizeof(float) == 4, "float32 is 4 bytes");
  const uint16_t probe = 1;
  if (*reinterpret_cast<const uint8_t*>(&probe) != 1) {
    throw std::runtime_error("write_npy: only little-endian hosts are supported");
  }
  const auto data = matrix.to(torch::kCPU).contiguous();
  const auto header = detail::npy_header({data.size(0), data.size(1)});
  detail::write_file_atomically(path, [&](std::ostream& file) {
    file.write(detail::kNpyMagic, detail::kNpyMagicLength);
    const char version[2] = {1, 0};
    file.write(version, 2);
    const char length[2] = {static_cast<char>(header.size() & 0xff),
                            static_cast<char>((header.size() >> 8) & 0xff)};
    file.write(length, 2);
    file.write(header.data(), static_cast<std::streamsize>(header.size()));
    file.write(static_cast<const char*>(data.data_ptr()), static_cast<std::streamsize>(data.nbytes()));
  });
}

/// Reads a .npy file holding a 1-D or 2-D C-order little-endian float32 ('<f4') or float64
/// ('<f8') array (format version 1.0, 2.0 or 3.0), as a CPU tensor of that dtype and shape.
/// Anything else, and a file whose size disagrees with its header, is refused with an
/// InputError naming the file; memory is bounded by the file's size.
inline torch::Tensor read_npy(const std::string& path) {
  std::vector<unsigned char> bytes;
  try {
    bytes = detail::read_file_bytes(path);
  } catch (const std::runtime_error& error) {
    throw InputError(error.what());
  }
  const auto refuse = [&path](const std::string& why) {
    return InputError(fmt::format("{}: not a .npy file reidnet reads: {}", path, why));
  };
  if (bytes.size() < detail::kNpyMagicLength + 4 ||
      std::memcmp(bytes.data(), detail::kNpyMagic, detail::kNpyMagicLength) != 0) {
    throw refuse("no NumPy magic string at the start");
  }
  const int major = bytes[6];
  size_t header_length = 0, offset = 0;
  if (major == 1) {
    header_length = bytes[8] | (size_t{bytes[9]} << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw refuse("truncated header");
    header_length = bytes[8] | (size_t{bytes[9]} << 8) | (size_t{bytes[10]} << 16) |
                    (size_t{bytes[11]} << 24);
    offset = 12;
  } else {
    throw refuse(fmt::format("format version {}.{}; expected 1.0, 2.0 or 3.0", major, int{bytes[7]}));
  }
  if (header_length > bytes.size() - offset) throw refuse("the header runs past the end of the file");
  const std::string dict(reinterpret_cast<const char*>(bytes.data() + offset), header_length);
  offset += header_length;
  const auto descr = detail::npy_header_value(dict, "descr");
  torch::Dtype dtype;
  if (descr == "'<f4'") {
    dtype = torch::kFloat32;
  } else if (descr == "'<f8'") {
    dtype = torch::kFloat64;
  } else {
    throw refuse(fmt::format("dtype {}; expected little-endian float32 '<f4' or float64 '<f8'",
                             descr.empty() ? "(none)" : descr));
  }
  const auto order = detail::npy_header_value(dict, "fortran_order");
  if (order != "False") {
    throw refuse(order == "True" ? "Fortran order; expected C order" : "no fortran_order");
  }
  const auto shape_text = detail::npy_header_value(dict, "shape");
  if (shape_text.size() < 2 || shape_text.front() != '(' || shape_text.back() != ')') {
    throw refuse("no shape tuple");
  }
  std::vector<int64_t> shape;
  const auto inner = shape_text.substr(1, shape_text.size() - 2);
  size_t at = 0;
  while (at < inner.size()) {
    while (at < inner.size() && inner[at] == ' ') ++at;
    if (at == inner.size()) break;
    size_t end = at;
    while (end < inner.size() && std::isdigit(static_cast<unsigned char>(inner[end]))) ++end;
    if (end == at || end - at > 12) throw refuse("shape " + shape_text + " is not a tuple of sizes");
    shape.push_back(std::stoll(inner.substr(at, end - at)));
    while (end < inner.size() && inner[end] == ' ') ++end;
    if (end < inner.size() && inner[end] != ',') throw refuse("shape " + shape_text + " is not a tuple of sizes");
    at = end + 1;
  }
  if (shape.empty() || shape.size() > 2) {
    throw refuse(fmt::format("shape {}; expected a 1-D or 2-D array", shape_text));
  }
  const uint64_t element = dtype == torch::kFloat32 ? 4 : 8;
  uint64_t count = 1;
  for (const auto extent : shape) count *= static_cast<uint64_t>(extent);  // each < 10^12
  if (shape.size() == 2 && shape[0] != 0 && count / static_cast<uint64_t>(shape[0]) !=
                                                static_cast<uint64_t>(shape[1])) {
    throw refuse("shape " + shape_text + " overflows");
  }
  const uint64_t data_bytes = bytes.size() - offset;
  if (count > data_bytes / element || count * element != data_bytes) {
    throw refuse(fmt::format("shape {} of {} needs {} bytes of data; the file holds {}", shape_text,
                             descr, count > data_bytes ? std::string("more") :
                             std::to_string(count * element), data_bytes));
  }
  auto tensor = torch::empty(shape, dtype);
  std::memcpy(tensor.data_ptr(), bytes.data() + offset, static_cast<size_t>(data_bytes));
  return tensor;
}

}  // namespace reidnet
