#pragma once
/// MAT-files (MATLAB level 5, what scipy.io.savemat writes by default) through matio, and the
/// two files the Python baseline's scripts exchange: `pytorch_result.mat` (written by its
/// test.py, read by evaluate_gpu.py, evaluate_rerank.py and demo.py) and `multi_query.mat`.
///
///     reidnet::write_pytorch_result("pytorch_result.mat", features);   // scipy.io.loadmat reads it
///     auto theirs = reidnet::read_pytorch_result("pytorch_result.mat"); // the baseline's file
///
/// Arrays are 2-D, as MATLAB has them: a 1-D tensor is written as a 1 x N row (scipy's
/// `oned_as="row"`), and reading gives 2-D tensors in row-major order.
///
/// Reading treats the file as hostile until its headers are checked:
/// - The file's top-level elements are scanned first (reidnet/io/detail/mat_scan.hpp): of each
///   array only its header is read (inflated from a 4 KiB prefix where compressed), and no
///   array is parsed further; cells, structs and arrays not asked for are skipped whole.
/// - Every array asked for must be a real numeric 2-D array whose stored data (values x the
///   stored type's size, which may be narrower than its class: MATLAB stores whole-number
///   doubles as bytes) is exactly its data tag's byte count, inside its element: the element's
///   bytes when stored plainly, or at most 1032 times its compressed bytes (zlib's largest
///   expansion). A compressed array's stream is then inflated, without keeping its bytes, and
///   must give exactly its array.
/// - So an array takes in memory (values x its class's size, what matio allocates) at most 8
///   times the bytes of data it really holds (and, its tag being 32-bit, under 32 GiB): a
///   B-byte file makes matio allocate at most 8 B for the arrays read when stored plainly,
///   8 x 1032 B when compressed (runs of zeros), to which reidnet adds its row-major copy of
///   each array and a float32 copy of double features.
///   The features files' counts (rows of labels, cameras and features; columns of query and
///   gallery features, at least 1) are compared from the headers first: a file whose arrays
///   disagree is refused before any data is read, whatever sizes it claims.
/// - matio then decodes only the arrays asked for: when the file holds anything else, from an
///   anonymous in-memory copy of the header and their elements (memfd_create), so that matio
///   never parses another variable (a cell of millions of cells, a cell nested 200,000 deep).
/// Errors for bad input are reidnet::InputError, naming the file and the array.
/// Needs matio (Debian's libmatio-dev; target reidnet::mat) and zlib.

#include <reidnet/core/detail/file_io.hpp>
#include <reidnet/io/detail/mat_scan.hpp>
#include <reidnet/core/errors.hpp>
#include <reidnet/io/retrieval_features.hpp>

#include <torch/types.h>
#include <torch/ordered_dict.h>

#include <matio.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace reidnet {

/// A MAT-file's numeric arrays by name, in file order.
using MatArrays = torch::OrderedDict<std::string, torch::Tensor>;

/// multi_query.mat: the features of Market-1501's multi-query pictures (`gt_bbox`).
struct MultiQueryFeatures {
  torch::Tensor mquery_f, mquery_label, mquery_cam;  // (M, D) float32; (M) int64; (M) int64
};

namespace detail {

struct MatFileCloser {
  void operator()(mat_t* file) const { Mat_Close(file); }
};
struct MatVariableFreer {
  void operator()(matvar_t* variable) const { Mat_VarFree(variable); }
};
using MatFile = std::unique_ptr<mat_t, MatFileCloser>;
using MatVariable = std::unique_ptr<matvar_t, MatVariableFreer>;

/// A MAT class with its element type, and the tensor dtype it maps to.
struct MatNumericType {
  matio_classes mat_class;
  matio_types mat_type;
  c10::ScalarType dtype;
};

inline const std::vector<MatNumericType>& mat_numeric_types() {
  static const std::vector<MatNumericType> types{
      {MAT_C_DOUBLE, MAT_T_DOUBLE, torch::kFloat64}, {MAT_C_SINGLE, MAT_T_SINGLE, torch::kFloat32},
      {MAT_C_INT64, MAT_T_INT64, torch::kInt64},     {MAT_C_INT32, MAT_T_INT32, torch::kInt32},
      {MAT_C_INT16, MAT_T_INT16, torch::kInt16},     {MAT_C_INT8, MAT_T_INT8, torch::kInt8},
      {MAT_C_UINT8, MAT_T_UINT8, torch::kUInt8}};
  return types;
}

// The entry of mat_numeric_types() that `matches`, or nullptr.
template <typename Match>
const MatNumericType* find_mat_type(Match&& matches) {
  const auto& types = mat_numeric_types();
  const auto found = std::find_if(types.begin(), types.end(), matches);
  return found == types.end() ? nullptr : &*found;
}

// matio reports through a log function; its messages become part of reidnet's errors.
inline std::string& mat_last_message() {
  thread_local std::string message;
  return message;
}

inline void quiet_mat_log() {
  static const bool installed = [] {
    // matio 1.5.23 passes `char*`, later releases `const char*`.
    Mat_LogInitFunc("reidnet", [](int, auto* message) {
      mat_last_message() = message != nullptr ? message : "";
    });
    return true;
  }();
  (void)installed;
  mat_last_message().clear();
}

inline std::string mat_reason(const char* fallback) {
  const auto& message = mat_last_message();
  return message.empty() ? fallback : message;
}

inline void write_mat_variable(mat_t* file, const std::string& path, const std::string& name,
                               const torch::Tensor& tensor) {
  const auto fail = [&](const std::string& problem) {
    return std::runtime_error(fmt::format("cannot write {}: array '{}' {}", path, name, problem));
  };
  if (!tensor.defined() || (tensor.dim() != 1 && tensor.dim() != 2)) {
    throw fail("must be 1-D or 2-D, got " +
               (tensor.defined() ? c10::str(tensor.sizes()) : std::string("an undefined tensor")));
  }
  const auto* type = find_mat_type(
      [&](const MatNumericType& candidate) { return candidate.dtype == tensor.scalar_type(); });
  if (type == nullptr) {
    throw fail(fmt::format("has dtype {}; MAT-files here hold float64, float32 and integer arrays",
                           c10::toString(tensor.scalar_type())));
  }
  const auto matrix = tensor.dim() == 1 ? tensor.unsqueeze(0) : tensor;
  // MATLAB is column-major: the transpose's row-major bytes are the matrix's column-major ones.
  auto column_major = matrix.detach().to(torch::kCPU).t().contiguous();
  size_t dims[2] = {static_cast<size_t>(matrix.size(0)), static_cast<size_t>(matrix.size(1))};
  MatVariable variable(Mat_VarCreate(name.c_str(), type->mat_class, type->mat_type, 2, dims,
                                     column_major.data_ptr(), MAT_F_DONT_COPY_DATA));
  if (!variable || Mat_VarWrite(file, variable.get(), MAT_COMPRESSION_NONE) != 0) {
    throw fail(mat_reason("failed in matio"));
  }
}

/// A MAT-file open for reading, scanned, with the arrays asked for checked from their headers.
struct MatSelection {
  std::string path;
  std::unique_ptr<FileDescriptor> file;
  MatScan scan;
  std::vector<std::string> names;  // asked for, in the caller's order

  const MatElement& element(const std::string& name) const {
    for (const auto& candidate : scan.wanted) {
      if (candidate.name == name) return candidate;
    }
    throw std::logic_error("reidnet: array '" + name + "' was not selected");
  }
  uint64_t rows(const std::string& name) const { return element(name).dims[0]; }
  uint64_t columns(const std::string& name) const { return element(name).dims[1]; }
};

inline InputError array_error(const std::string& path, const std::string& name,
                              const std::string& problem) {
  return InputError(fmt::format("{}: array '{}': {}", path, name, problem));
}

inline const MatNumericType* mat_type_of_class(uint32_t mat_class) {
  return find_mat_type([&](const MatNumericType& candidate) {
    return static_cast<uint32_t>(candidate.mat_class) == mat_class;
  });
}

/// "'a', 'b'" for the errors: the arrays that the scan found.
inline std::string held_arrays(const MatScan& scan) {
  std::string held = scan.names.empty() ? std::string("no readable array")
                                        : "'" + fmt::format("{}", fmt::join(scan.names, "', '")) + "'";
  if (scan.names.size() == MatScan::kListedNames) held += " and more";
  if (scan.unnamed > 0) held += fmt::format(" ({} more whose header cannot be read)", scan.unnamed);
  return held;
}

/// Checks an array's header before any of its data is read: a real numeric 2-D array whose
/// stored data holds exactly its values, inside what its element can hold (see read_mat).
inline void check_mat_header(const MatElement& element, const std::string& path) {
  const auto& name = element.name;
  if (!element.problem.empty()) throw array_error(path, name, "its header cannot be read: " + element.problem);
  const auto* type = mat_type_of_class(element.mat_class);
  if (type == nullptr || element.complex || element.logical) {
    throw array_error(path, name, fmt::format(
        "is {}{}; expected a real numeric array (double, single, int64, int32, int16, int8 or uint8)",
        mat_class_name(element.mat_class),
        element.complex ? " (complex)" : element.logical ? " (logical)" : ""));
  }
  if (element.rank != 2) {
    throw array_error(path, name, fmt::format("has {} dimensions; expected a 2-D array", element.rank));
  }
  const uint64_t rows = element.dims[0], columns = element.dims[1];
  if (element.no_data) {
    if (rows * columns != 0) {
      throw array_error(path, name, fmt::format("is {} x {} but holds no data", rows, columns));
    }
    return;
  }
  const uint64_t stored = mat_stored_value_bytes(element.data_type);
  if (stored == 0) {
    throw array_error(path, name, fmt::format("its data is stored as {}, not as numbers",
                                              mat_stored_type_name(element.data_type)));
  }
  // Dimensions are below 2^31, so rows x columns does not overflow; the data's byte count,
  // below 2^32, is divided rather than the values multiplied.
  if (element.data_bytes % stored != 0 || rows * columns != element.data_bytes / stored) {
    throw array_error(path, name, fmt::format(
        "its header says {} x {} values but its data holds {} bytes of {} ({} values)", rows,
        columns, element.data_bytes, mat_stored_type_name(element.data_type),
        element.data_bytes / stored));
  }
  if (element.compressed &&
      element.matrix_bytes + 8 > kZlibMaxRatio * (element.file_bytes - 8)) {
    throw array_error(path, name, fmt::format(
        "its {}-byte array cannot come from {} compressed bytes (zlib expands at most {} times)",
        element.matrix_bytes + 8, element.file_bytes - 8, kZlibMaxRatio));
  }
}

/// Opens and scans `path`, and checks the headers of the arrays `names`; no data is read.
inline MatSelection select_mat_arrays(const std::string& path, const std::vector<std::string>& names) {
  MatSelection selection;
  selection.path = path;
  selection.names = names;
  // O_NONBLOCK: opening a FIFO with no writer would wait forever; fstat then refuses it.
  selection.file = std::make_unique<FileDescriptor>(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  struct stat info {};
  if (selection.file->fd < 0 || ::fstat(selection.file->fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    throw InputError(fmt::format("{}: not a readable file", path));
  }
  selection.scan = scan_mat_file(selection.file->fd, static_cast<uint64_t>(info.st_size), path, names);
  for (const auto& name : names) {
    const auto& wanted = selection.scan.wanted;
    const auto found = std::find_if(wanted.begin(), wanted.end(),
                                    [&](const MatElement& element) { return element.name == name; });
    if (found == wanted.end()) {
      throw array_error(path, name, "not in the file, which holds " + held_arrays(selection.scan));
    }
    check_mat_header(*found, path);
  }
  return selection;
}

/// Writes all of `bytes` to `fd`, or throws.
inline void write_all(int fd, const unsigned char* bytes, size_t size, const std::string& path) {
  for (size_t done = 0; done < size;) {
    const ssize_t count = ::write(fd, bytes + done, size - done);
    if (count < 0 && errno == EINTR) continue;
    if (count <= 0) {
      throw std::runtime_error(fmt::format("{}: cannot copy its arrays for reading: {}", path,
                                           std::strerror(errno)));
    }
    done += static_cast<size_t>(count);
  }
}

/// An anonymous in-memory file holding the header and the selected arrays' elements of the
/// scanned file: what matio reads when the file holds anything else, which it then never sees.
inline std::unique_ptr<FileDescriptor> copy_selected_elements(const MatSelection& selection) {
  const auto& path = selection.path;
  auto copy = std::make_unique<FileDescriptor>(::memfd_create("reidnet-mat", MFD_CLOEXEC));
  if (copy->fd < 0) {
    throw std::runtime_error(fmt::format("{}: cannot make an in-memory file for its arrays: {}", path,
                                         std::strerror(errno)));
  }
  write_all(copy->fd, reinterpret_cast<const unsigned char*>(selection.scan.header.data()),
            selection.scan.header.size(), path);
  MatFileReader reader(selection.file->fd, selection.scan.file_bytes);
  std::vector<unsigned char> chunk(1 << 20);
  for (const auto& element : selection.scan.wanted) {
    for (uint64_t done = 0; done < element.file_bytes;) {
      const auto size = std::min<uint64_t>(chunk.size(), element.file_bytes - done);
      if (!reader.read_direct(element.offset + done, chunk.data(), size)) {
        throw array_error(path, element.name, "the file changed or ended while it was read");
      }
      write_all(copy->fd, chunk.data(), static_cast<size_t>(size), path);
      done += size;
    }
  }
  return copy;
}

/// The array `element` through matio, checked against its header.
inline torch::Tensor read_mat_variable(mat_t* file, const std::string& path, const MatElement& element) {
  const auto& name = element.name;
  const auto* type = mat_type_of_class(element.mat_class);
  const uint64_t rows = element.dims[0], columns = element.dims[1];
  MatVariable variable(Mat_VarRead(file, name.c_str()));
  if (!variable || (rows * columns > 0 && variable->data == nullptr)) {
    throw array_error(path, name, mat_reason("its data cannot be read"));
  }
  if (static_cast<uint32_t>(variable->class_type) != element.mat_class || variable->rank != 2 ||
      variable->dims[0] != rows || variable->dims[1] != columns ||
      variable->nbytes != rows * columns * c10::elementSize(type->dtype)) {
    throw array_error(path, name, "its data does not match its header");
  }
  const auto shape = std::vector<int64_t>{static_cast<int64_t>(columns), static_cast<int64_t>(rows)};
  // clone, not contiguous(): a 1 x N transpose is already contiguous, and matio frees the data.
  return torch::from_blob(variable->data, shape, torch::TensorOptions().dtype(type->dtype))
      .t()
      .clone(torch::MemoryFormat::Contiguous);
}

/// Reads the selected arrays: each compressed one is first inflated without keeping its bytes,
/// to check that its stream holds exactly its array; then matio decodes them from a file that
/// holds only them.
inline MatArrays read_selected_arrays(const MatSelection& selection) {
  const auto& path = selection.path;
  MatFileReader reader(selection.file->fd, selection.scan.file_bytes);
  for (const auto& element : selection.scan.wanted) {
    if (!element.compressed) continue;
    std::string problem;
    const uint64_t expected = element.matrix_bytes + 8;
    const auto inflated = inflate_mat_stream(reader, element.offset + 8, element.file_bytes - 8,
                                             nullptr, 0, expected, problem);
    if (!problem.empty()) throw array_error(path, element.name, problem);
    if (inflated != expected) {
      throw array_error(path, element.name, fmt::format(
          "its compressed data inflates to {}{} bytes, where its header says {}",
          inflated > expected ? "more than " : "", inflated > expected ? expected : inflated, expected));
    }
  }
  std::unique_ptr<FileDescriptor> copy;
  int source = selection.file->fd;
  if (selection.scan.elements != selection.scan.wanted.size()) {
    copy = copy_selected_elements(selection);
    source = copy->fd;
  }
  quiet_mat_log();
  MatFile file(Mat_Open(fmt::format("/proc/self/fd/{}", source).c_str(), MAT_ACC_RDONLY));
  if (!file || Mat_GetVersion(file.get()) != MAT_FT_MAT5) {
    throw std::runtime_error(fmt::format("{}: matio cannot open it ({})", path,
                                         mat_reason("through /proc/self/fd")));
  }
  MatArrays arrays;
  for (const auto& name : selection.names) {
    arrays.insert(name, read_mat_variable(file.get(), path, selection.element(name)));
  }
  return arrays;
}

/// The number of labels in the header of `name`: a row or a column.
inline uint64_t header_label_count(const MatSelection& selection, const std::string& name) {
  const auto rows = selection.rows(name), columns = selection.columns(name);
  if (rows != 1 && columns != 1) {
    throw InputError(fmt::format("{}: array '{}' is {} x {}; expected one row or column",
                                 selection.path, name, rows, columns));
  }
  return rows * columns;
}

/// <prefix>_f, <prefix>_label and <prefix>_cam from their headers: one row of floating-point
/// features (at least one column) per label and as many cameras as labels.
inline void check_labelled_headers(const MatSelection& selection, const std::string& prefix) {
  const auto labels = header_label_count(selection, prefix + "_label");
  const auto cameras = header_label_count(selection, prefix + "_cam");
  const auto& features = selection.element(prefix + "_f");
  const auto dtype = mat_type_of_class(features.mat_class)->dtype;
  const auto rows = features.dims[0], columns = features.dims[1];
  if (!c10::isFloatingType(dtype) || rows != labels || cameras != labels) {
    throw InputError(fmt::format(
        "{}: {}_f is {} x {} of {} and {}_cam has {} values for {} labels; expected one row of "
        "floating-point features and one camera per label", selection.path, prefix, rows,
        columns, c10::toString(dtype), prefix, cameras, labels));
  }
  if (columns == 0) {
    throw InputError(fmt::format("{}: array '{}_f' is {} x 0; features need at least one column",
                                 selection.path, prefix, rows));
  }
}

/// (1, N) or (N, 1) as N labels, in int64; `name` and `path` for the errors.
inline torch::Tensor label_vector(const torch::Tensor& array, const std::string& path,
                                  const std::string& name) {
  if (array.dim() != 2 || (array.size(0) != 1 && array.size(1) != 1)) {
    throw InputError(fmt::format("{}: array '{}' is {} x {}; expected one row or column", path,
                                 name, array.size(0), array.size(1)));
  }
  const auto flat = array.reshape({-1});
  if (flat.is_floating_point() &&
      (!torch::isfinite(flat).all().item<bool>() || !torch::equal(flat.round(), flat))) {
    throw InputError(fmt::format("{}: array '{}' holds values that are not whole numbers", path, name));
  }
  return flat.to(torch::kInt64);
}

/// <prefix>_f, <prefix>_label and <prefix>_cam of `arrays` (checked from their headers by
/// check_labelled_headers): features in float32, labels and cameras as int64 vectors.
inline std::array<torch::Tensor, 3> labelled_features(const MatArrays& arrays, const std::string& path,
                                                      const std::string& prefix) {
  const auto labels = label_vector(arrays[prefix + "_label"], path, prefix + "_label");
  const auto cameras = label_vector(arrays[prefix + "_cam"], path, prefix + "_cam");
  return {arrays[prefix + "_f"].to(torch::kFloat32), labels, cameras};
}

}  // namespace detail

/// Writes `arrays` as the MAT-file `path` (level 5, uncompressed), atomically: a temporary
/// sibling is renamed over `path`, so that a failure leaves `path` as it was. Tensors must be
/// 1-D (written as rows) or 2-D, of dtype float64, float32 or an integer type.
inline void write_mat(const std::string& path, const MatArrays& arrays) {
  detail::fill_file_atomically(path, [&](const std::string& temporary) {
    detail::quiet_mat_log();
    detail::MatFile file(Mat_CreateVer(temporary.c_str(), nullptr, MAT_FT_MAT5));
    if (!file) {
      throw std::runtime_error(fmt::format("cannot write {}: {}", path,
                                           detail::mat_reason("matio cannot create the file")));
    }
    for (const auto& item : arrays) detail::write_mat_variable(file.get(), path, item.key(), item.value());
    if (Mat_Close(file.release()) != 0) throw std::runtime_error("cannot write " + path + ": closing failed");
  });
}

/// The arrays `names` of the MAT-file `path`, each as a 2-D tensor (rows x columns, row-major).
/// Throws reidnet::InputError naming the file and the array when one is missing, is not a real
/// numeric matrix, or does not fit in what the file holds for it (see the file comment); no
/// array's data is read before every array's header has been checked.
inline MatArrays read_mat(const std::string& path, const std::vector<std::string>& names) {
  return detail::read_selected_arrays(detail::select_mat_arrays(path, names));
}

/// pytorch_result.mat as the baseline's test.py writes it: features as (N, D) float32, labels
/// and cameras as 1 x N int64 rows.
inline void write_pytorch_result(const std::string& path, const RetrievalFeatures& features) {
  MatArrays arrays;
  arrays.insert("gallery_f", features.gallery_f.to(torch::kFloat32));
  arrays.insert("gallery_label", features.gallery_label.to(torch::kInt64));
  arrays.insert("gallery_cam", features.gallery_cam.to(torch::kInt64));
  arrays.insert("query_f", features.query_f.to(torch::kFloat32));
  arrays.insert("query_label", features.query_label.to(torch::kInt64));
  arrays.insert("query_cam", features.query_cam.to(torch::kInt64));
  write_mat(path, arrays);
}

/// A pytorch_result.mat from the baseline (or write_pytorch_result): features in float32 (from
/// single or double), labels and cameras as int64 vectors (from any integer class, or from
/// doubles that are whole numbers). The row counts (one label and one camera per feature row)
/// and the column counts (the same, at least 1, for query and gallery) are compared from the
/// headers before any data is read; the values are then checked by check_retrieval_features.
inline RetrievalFeatures read_pytorch_result(const std::string& path) {
  const auto selection = detail::select_mat_arrays(
      path, {"query_f", "query_label", "query_cam", "gallery_f", "gallery_label", "gallery_cam"});
  detail::check_labelled_headers(selection, "query");
  detail::check_labelled_headers(selection, "gallery");
  if (selection.columns("query_f") != selection.columns("gallery_f")) {
    throw InputError(fmt::format("{}: query_f has {} columns and gallery_f {}; expected features "
                                 "of one dimension", path, selection.columns("query_f"),
                                 selection.columns("gallery_f")));
  }
  const auto arrays = detail::read_selected_arrays(selection);
  const auto [query_f, query_label, query_cam] = detail::labelled_features(arrays, path, "query");
  const auto [gallery_f, gallery_label, gallery_cam] = detail::labelled_features(arrays, path, "gallery");
  return check_retrieval_features({query_f, query_label, query_cam, gallery_f, gallery_label, gallery_cam},
                                  path, kPytorchResultNames);
}

/// multi_query.mat as the baseline's test.py writes it (mquery_f, mquery_label, mquery_cam).
inline void write_multi_query(const std::string& path, const MultiQueryFeatures& features) {
  MatArrays arrays;
  arrays.insert("mquery_f", features.mquery_f.to(torch::kFloat32));
  arrays.insert("mquery_label", features.mquery_label.to(torch::kInt64));
  arrays.insert("mquery_cam", features.mquery_cam.to(torch::kInt64));
  write_mat(path, arrays);
}

/// multi_query.mat's arrays, their counts compared from the headers before any data is read.
inline MultiQueryFeatures read_multi_query(const std::string& path) {
  const auto selection = detail::select_mat_arrays(path, {"mquery_f", "mquery_label", "mquery_cam"});
  detail::check_labelled_headers(selection, "mquery");
  const auto arrays = detail::read_selected_arrays(selection);
  const auto [mquery_f, mquery_label, mquery_cam] = detail::labelled_features(arrays, path, "mquery");
  return {mquery_f, mquery_label, mquery_cam};
}

}  // namespace reidnet
