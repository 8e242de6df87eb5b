#pragma once
/// MAT-files (MATLAB level 5, what scipy.io.savemat writes by default) through matio, and the
/// two files the Python baseline's scripts exchange: `pytorch_result.mat` (written by its
/// test.py, read by evaluate_gpu.py, evaluate_rerank.py and demo.py) and `multi_query.mat`.
///
///     reidnet::write_pytorch_result("pytorch_result.mat", features);   // scipy.io.loadmat reads it
///     auto theirs = reidnet::read_pytorch_result("pytorch_result.mat"); // the baseline's file
///
/// Arrays are 2-D, as MATLAB has them: a 1-D tensor is written as a 1 x N row (scipy's
/// `oned_as="row"`), and reading gives 2-D tensors in row-major order. Reading checks every
/// variable's class and size against the file's size before its data is read, so that a
/// damaged or hostile file gets an error naming it and the variable, never a huge allocation.
/// Needs matio (Debian's libmatio-dev; target reidnet::mat).

#include <reidnet/detail/file_io.hpp>

#include <torch/types.h>
#include <torch/ordered_dict.h>

#include <matio.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace reidnet {

/// A MAT-file's numeric arrays by name, in file order.
using MatArrays = torch::OrderedDict<std::string, torch::Tensor>;

/// What the baseline's test.py saves in pytorch_result.mat: L2-normalised features, one row per
/// picture, and each picture's person id and camera.
struct RetrievalFeatures {
  torch::Tensor query_f, query_label, query_cam;        // (Q, D) float32; (Q) int64; (Q) int64
  torch::Tensor gallery_f, gallery_label, gallery_cam;  // (G, D) float32; (G) int64; (G) int64
};

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

/// The names of the variables whose headers read, in file order.
inline std::vector<std::string> mat_variable_names(mat_t* file) {
  std::vector<std::string> names;
  Mat_Rewind(file);
  while (MatVariable info = MatVariable(Mat_VarReadNextInfo(file))) {
    if (info->name != nullptr) names.emplace_back(info->name);
  }
  Mat_Rewind(file);
  return names;
}

inline torch::Tensor read_mat_variable(mat_t* file, const std::string& path,
                                       const std::string& name, uint64_t file_bytes) {
  const auto fail = [&](const std::string& problem) {
    return std::runtime_error(fmt::format("{}: array '{}': {}", path, name, problem));
  };
  MatVariable info(Mat_VarReadInfo(file, name.c_str()));
  if (!info) {
    const auto names = mat_variable_names(file);
    if (std::find(names.begin(), names.end(), name) != names.end()) {
      throw fail(mat_reason("its header cannot be read"));
    }
    throw fail(fmt::format("not in the file, which holds {}",
                           names.empty() ? std::string("no readable array")
                                         : "'" + fmt::format("{}", fmt::join(names, "', '")) + "'"));
  }
  const auto* type = find_mat_type(
      [&](const MatNumericType& candidate) { return candidate.mat_class == info->class_type; });
  if (type == nullptr || info->isComplex != 0 || info->isLogical != 0) {
    throw fail("not a real numeric array (a cell, struct, sparse, logical, char or complex one)");
  }
  if (info->rank != 2) throw fail(fmt::format("has {} dimensions; expected a 2-D array", info->rank));
  const uint64_t rows = info->dims[0], columns = info->dims[1];
  // Checked before reading: stored uncompressed, every value takes at least a byte of the
  // file (MATLAB may store doubles as bytes), and zlib expands by at most about 1032 times.
  const uint64_t limit = (info->compression == MAT_COMPRESSION_NONE ? 1 : 1032) * file_bytes;
  const uint64_t element_bytes = c10::elementSize(type->dtype);
  if (columns != 0 && rows > limit / columns) {
    throw fail(fmt::format("{} x {} values do not fit in a {}-byte file", rows, columns, file_bytes));
  }
  MatVariable variable(Mat_VarRead(file, name.c_str()));
  if (!variable || (rows * columns > 0 && variable->data == nullptr)) {
    throw fail(mat_reason("its data cannot be read"));
  }
  if (variable->class_type != info->class_type || variable->dims[0] != rows ||
      variable->dims[1] != columns || variable->nbytes != rows * columns * element_bytes) {
    throw fail("its data does not match its header");
  }
  const auto shape = std::vector<int64_t>{static_cast<int64_t>(columns), static_cast<int64_t>(rows)};
  // clone, not contiguous(): a 1 x N transpose is already contiguous, and matio frees the data.
  return torch::from_blob(variable->data, shape, torch::TensorOptions().dtype(type->dtype))
      .t()
      .clone(torch::MemoryFormat::Contiguous);
}

inline MatFile open_mat(const std::string& path, uint64_t& file_bytes) {
  std::error_code error;
  const auto status = std::filesystem::status(path, error);
  if (error || !std::filesystem::is_regular_file(status)) {
    throw std::runtime_error(fmt::format("{}: not a readable file", path));
  }
  file_bytes = std::filesystem::file_size(path);
  quiet_mat_log();
  MatFile file(Mat_Open(path.c_str(), MAT_ACC_RDONLY));
  if (!file) throw std::runtime_error(fmt::format("{}: not a MAT-file ({})", path, mat_reason("matio cannot open it")));
  if (Mat_GetVersion(file.get()) != MAT_FT_MAT5) {
    throw std::runtime_error(fmt::format("{}: not a level-5 MAT-file (MATLAB's -v7 or -v6, "
                                         "scipy.io.savemat's default)", path));
  }
  return file;
}

/// (1, N) or (N, 1) as N labels, in int64; `name` and `path` for the errors.
inline torch::Tensor label_vector(const torch::Tensor& array, const std::string& path,
                                  const std::string& name) {
  if (array.dim() != 2 || (array.size(0) != 1 && array.size(1) != 1)) {
    throw std::runtime_error(fmt::format("{}: array '{}' is {} x {}; expected one row or column",
                                         path, name, array.size(0), array.size(1)));
  }
  const auto flat = array.reshape({-1});
  const auto labels = flat.to(torch::kInt64);
  if (flat.is_floating_point() && !torch::equal(labels.to(flat.scalar_type()), flat)) {
    throw std::runtime_error(fmt::format("{}: array '{}' holds values that are not whole numbers",
                                         path, name));
  }
  return labels;
}

/// <prefix>_f, <prefix>_label and <prefix>_cam of `arrays`: features in float32, one row per
/// label, and as many cameras as labels.
inline std::array<torch::Tensor, 3> labelled_features(const MatArrays& arrays, const std::string& path,
                                                      const std::string& prefix) {
  const auto labels = label_vector(arrays[prefix + "_label"], path, prefix + "_label");
  const auto cameras = label_vector(arrays[prefix + "_cam"], path, prefix + "_cam");
  const auto& features = arrays[prefix + "_f"];
  if (!features.is_floating_point() || features.size(0) != labels.numel() ||
      cameras.numel() != labels.numel()) {
    throw std::runtime_error(fmt::format(
        "{}: {}_f is {} x {} of {} and {}_cam has {} values for {} labels; expected one row of "
        "floating-point features and one camera per label", path, prefix, features.size(0),
        features.size(1), c10::toString(features.scalar_type()), prefix, cameras.numel(),
        labels.numel()));
  }
  return {features.to(torch::kFloat32), labels, cameras};
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
/// Throws std::runtime_error naming the file and the array when one is missing, is not a real
/// numeric matrix, or is larger than the file can hold.
inline MatArrays read_mat(const std::string& path, const std::vector<std::string>& names) {
  uint64_t file_bytes = 0;
  const auto file = detail::open_mat(path, file_bytes);
  MatArrays arrays;
  for (const auto& name : names) {
    arrays.insert(name, detail::read_mat_variable(file.get(), path, name, file_bytes));
  }
  return arrays;
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
/// doubles that are whole numbers), their counts checked against the features' rows.
inline RetrievalFeatures read_pytorch_result(const std::string& path) {
  const auto arrays = read_mat(path, {"query_f", "query_label", "query_cam", "gallery_f",
                                      "gallery_label", "gallery_cam"});
  const auto [query_f, query_label, query_cam] = detail::labelled_features(arrays, path, "query");
  const auto [gallery_f, gallery_label, gallery_cam] = detail::labelled_features(arrays, path, "gallery");
  if (query_f.size(1) != gallery_f.size(1)) {
    throw std::runtime_error(fmt::format("{}: query_f has {} columns and gallery_f {}; expected "
                                         "features of one dimension", path, query_f.size(1),
                                         gallery_f.size(1)));
  }
  return {query_f, query_label, query_cam, gallery_f, gallery_label, gallery_cam};
}

/// multi_query.mat as the baseline's test.py writes it (mquery_f, mquery_label, mquery_cam).
inline void write_multi_query(const std::string& path, const MultiQueryFeatures& features) {
  MatArrays arrays;
  arrays.insert("mquery_f", features.mquery_f.to(torch::kFloat32));
  arrays.insert("mquery_label", features.mquery_label.to(torch::kInt64));
  arrays.insert("mquery_cam", features.mquery_cam.to(torch::kInt64));
  write_mat(path, arrays);
}

inline MultiQueryFeatures read_multi_query(const std::string& path) {
  const auto arrays = read_mat(path, {"mquery_f", "mquery_label", "mquery_cam"});
  const auto [mquery_f, mquery_label, mquery_cam] = detail::labelled_features(arrays, path, "mquery");
  return {mquery_f, mquery_label, mquery_cam};
}

}  // namespace reidnet
