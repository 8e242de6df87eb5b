#pragma once
// Helpers shared by the test topics: Python references and fixture files.
#include "reidnet_test_config.hpp"

#include <doctest/doctest.h>
#include <reidnet/detail/file_io.hpp>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>

namespace reidnet::test {

/// fixtures/<topic>/<name>: files written by tests/python/<topic>_reference.py.
inline std::string fixture(const std::string& topic, const std::string& name) {
  return std::string(REIDNET_TEST_FIXTURES_DIR) + "/" + topic + "/" + name;
}

/// Runs tests/python/<script> with Debian's python3; returns its exit status.
inline int run_python(const std::string& script, const std::string& arguments) {
  const std::string command = std::string(REIDNET_TEST_PYTHON) + " " + REIDNET_TEST_SOURCE_DIR +
                              "/python/" + script + " " + arguments;
  return std::system(command.c_str());
}

/// A plain dict of tensors saved by `torch.save(dict(...))`, read with torch::pickle_load.
inline std::map<std::string, torch::Tensor> load_tensor_dict(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("cannot open test fixture " + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const auto value = torch::pickle_load(bytes);
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : value.toGenericDict()) {
    out.emplace(item.key().toStringRef(), item.value().toTensor());
  }
  return out;
}

/// A fresh folder name under the system's temporary directory, unique per process and call
/// (the library's own unique sibling names).
inline std::filesystem::path unique_temporary_path(const std::string& stem) {
  return reidnet::detail::temporary_sibling((std::filesystem::temp_directory_path() / stem).string());
}

/// A one-element tensor as a double (usable in templates without `.template item<>`).
inline double scalar(const torch::Tensor& value) { return value.item().toDouble(); }

/// max |a - b| / max(|b|) over the tensor: the relative error the parity tests bound.
inline double max_relative_difference(const torch::Tensor& actual, const torch::Tensor& expected) {
  REQUIRE(actual.sizes() == expected.sizes());
  const auto scale = expected.abs().max().item<double>();
  return (actual - expected).abs().max().item<double>() / std::max(scale, 1e-12);
}

}  // namespace reidnet::test
