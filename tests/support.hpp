#pragma once
// Helpers shared by the test topics: Python references and fixture files.
#include "reidnet_test_config.hpp"

#include <doctest/doctest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <reidnet/core/detail/file_io.hpp>
#include <reidnet/io/state_dict.hpp>
#include <reidnet/models/model_zoo.hpp>
#include <torch/torch.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace reidnet::test {

/// A test case that needs a GPU is decorated `* cuda_suite() * skip_without_cuda()`: it joins
/// the "cuda" suite, which the topic runs leave out and ctest's `cuda` test (label cuda) runs,
/// and it is skipped where no CUDA device is present, so that ctest reports that test as
/// skipped rather than passed.
inline doctest::test_suite cuda_suite() { return doctest::test_suite("cuda"); }
inline doctest::skip skip_without_cuda() { return doctest::skip(!torch::cuda::is_available()); }

/// fixtures/<topic>/<name>: files written by tests/python/<topic>_reference.py.
inline std::string fixture(const std::string& topic, const std::string& name) {
  return std::string(REIDNET_TEST_FIXTURES_DIR) + "/" + topic + "/" + name;
}

/// The shell command that runs tests/python/<script> with Debian's python3.
inline std::string python_command(const std::string& script, const std::string& arguments) {
  return std::string(REIDNET_TEST_PYTHON) + " " + REIDNET_TEST_SOURCE_DIR + "/python/" + script +
         " " + arguments;
}

/// Runs tests/python/<script> with Debian's python3; returns its exit status.
inline int run_python(const std::string& script, const std::string& arguments) {
  return std::system(python_command(script, arguments).c_str());
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

/// Copies `tensors[prefix + key]` into every state_dict entry of `module` (a Python
/// reference's weights into the C++ model).
inline void copy_state(torch::nn::Module& module, const std::map<std::string, torch::Tensor>& tensors,
                const std::string& prefix) {
  torch::NoGradGuard no_grad;
  for (auto& item : reidnet::state_dict(module)) {
    const auto found = tensors.find(prefix + item.key());
    REQUIRE_MESSAGE(found != tensors.end(), "reference lacks " << prefix + item.key());
    REQUIRE(item.value().sizes() == found->second.sizes());
    item.value().copy_(found->second);
  }
}

/// A fresh folder name under the system's temporary directory, unique per process and call
/// (the library's own unique sibling names).
inline std::filesystem::path unique_temporary_path(const std::string& stem) {
  return reidnet::detail::temporary_sibling((std::filesystem::temp_directory_path() / stem).string());
}

/// A fresh folder under the system's temporary directory, removed when the test ends.
struct TemporaryFolder {
  std::filesystem::path path;
  explicit TemporaryFolder(const std::string& stem) : path(unique_temporary_path(stem)) {
    std::filesystem::create_directories(path);
  }
  ~TemporaryFolder() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  TemporaryFolder(const TemporaryFolder&) = delete;
  TemporaryFolder& operator=(const TemporaryFolder&) = delete;
};

/// A one-element tensor as a double (usable in templates without `.template item<>`).
inline double scalar(const torch::Tensor& value) { return value.item().toDouble(); }

/// max |a - b| / max(|b|) over the tensor: the relative error the parity tests bound.
inline double max_relative_difference(const torch::Tensor& actual, const torch::Tensor& expected) {
  REQUIRE(actual.sizes() == expected.sizes());
  const auto scale = expected.abs().max().item<double>();
  return (actual - expected).abs().max().item<double>() / std::max(scale, 1e-12);
}

struct ChildRun {
  int code = -1;          // exit status; -1 if killed (by the watchdog or the OOM killer)
  std::string message;    // what the child reported
  int64_t peak_rss_kb = 0;
  double seconds = 0;
};

/// Runs `body` in a forked child killed after `watchdog_seconds`; the child exits with what
/// `body` returns (3 if it throws), and sends `message` back through a pipe. No doctest
/// assertions in `body`: it runs in another process.
inline ChildRun run_in_child(const std::function<int(std::string& message)>& body,
                      unsigned watchdog_seconds = 30) {
  int channel[2];
  REQUIRE(::pipe(channel) == 0);
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(channel[0]);
    ::alarm(watchdog_seconds);
    std::string message;
    int code = 3;
    try {
      code = body(message);
    } catch (const std::exception& error) {
      message = std::string("unexpected exception: ") + error.what();
    }
    for (size_t done = 0; done < message.size();) {
      const ssize_t count = ::write(channel[1], message.data() + done, message.size() - done);
      if (count <= 0) break;
      done += static_cast<size_t>(count);
    }
    ::_exit(code);
  }
  ::close(channel[1]);
  ChildRun run;
  char buffer[4096];
  for (ssize_t count; (count = ::read(channel[0], buffer, sizeof buffer)) != 0;) {
    if (count < 0 && errno == EINTR) continue;
    if (count < 0) break;
    run.message.append(buffer, static_cast<size_t>(count));
  }
  ::close(channel[0]);
  int status = 0;
  struct rusage usage {};
  while (::wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {
  }
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  run.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  run.peak_rss_kb = usage.ru_maxrss;  // kilobytes on Linux
  return run;
}

/// The peak memory of a child that does nothing: what fork alone costs in this process.
inline int64_t idle_child_rss_kb() {
  return run_in_child([](std::string&) { return 0; }).peak_rss_kb;
}

struct ProgramRun {
  int status;
  std::string output;
};

/// Runs examples/<program> with `arguments` (after `environment`, "NAME=value ..." for env);
/// returns its exit status (-1 when killed by a signal) and combined output.
/// Runs the shell command `command`; returns its exit status (-1 when killed by a signal) and
/// combined output, which goes through a log file named after `name`.
inline ProgramRun run_shell_command(const std::string& command, const std::string& name) {
  const auto log = unique_temporary_path(name + ".log");
  const int raw = std::system((command + " > " + log.string() + " 2>&1").c_str());
  std::ifstream file(log);
  const std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  std::filesystem::remove(log);
  return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, text};
}

inline ProgramRun run_program(const std::string& program, const std::string& arguments,
                              const std::string& environment = "") {
  const std::string binary = std::string(REIDNET_TEST_EXAMPLES_DIR) + "/" + program;
  REQUIRE_MESSAGE(std::filesystem::exists(binary), binary << " is missing: build with REIDNET_BUILD_EXAMPLES=ON");
  const std::string prefix = environment.empty() ? "" : "env " + environment + " ";
  return run_shell_command(prefix + binary + " " + arguments, program);
}

/// run_python, with the script's output.
inline ProgramRun run_python_capturing(const std::string& script, const std::string& arguments) {
  return run_shell_command(python_command(script, arguments), script);
}

/// REIDNET_TEST_BINARY_DIR/<name>, empty: a topic's scratch folder, made once per process by
/// the topic.
inline std::filesystem::path fresh_workspace(const std::string& name) {
  const auto dir = std::filesystem::path(REIDNET_TEST_BINARY_DIR) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

/// The small toy data set the program, distributed and engine topics train on (8 training ids
/// x 8 pictures, 8 test ids): the ctest fixture `toy_data` writes it once for them all
/// (tests/CMakeLists.txt); a topic run outside ctest writes it where it is missing.
/// Read-only: a test that changes pictures copies it first.
inline const std::filesystem::path& toy_data() {
  static const std::filesystem::path dir = [] {
    const auto out = std::filesystem::path(REIDNET_TEST_FIXTURES_DIR) / "toy_data";
    if (!std::filesystem::is_directory(out)) {  // written whole or not at all
      const auto run = run_program("reidnet-toy-data",
                                   "--out " + out.string() + " " + REIDNET_TEST_TOY_DATA_FLAGS);
      REQUIRE_MESSAGE(run.status == 0, run.output);
    }
    return out;
  }();
  return dir;
}

/// The mAP that reidnet-test printed.
inline double map_of(const std::string& output) {
  const auto at = output.find("mAP:");
  REQUIRE_MESSAGE(at != std::string::npos, output);
  return std::stod(output.substr(at + 4));
}

/// The models of the per-model tables (export, inference): every registered family, and
/// TransReID's ViT and the plain ResNet-50 trunk with the registered head.
inline std::vector<std::string> table_model_names() {
  std::vector<std::string> names = {"vit_base_patch16", "resnet50"};
  for (const auto& item : reidnet::model_entries()) names.push_back(item.first);
  return names;
}

/// A model of the tables in eval mode: the transformers too large for a test at full size as
/// the reduced configurations of the same code that test_zoo.cpp registers, the others at
/// 128x64; running statistics away from 0 and 1, so that a BatchNorm folded wrongly shows.
inline reidnet::ReidModel table_model(const std::string& name) {
  static const std::map<std::string, std::string> reduced_models = {
      {"ft_net_swin", "swin_reduced"},
      {"ft_net_swinv2", "swinv2_reduced"},
      {"ft_net_dino", "dinov3_reduced"},
      {"vit_base_patch16", "vit_reduced"},
  };
  const auto reduced = reduced_models.find(name);
  auto args = reidnet::ModelArgs().class_num(8);
  if (reduced == reduced_models.end()) args.input_size(reidnet::ImageSize{128, 64});
  auto model = reidnet::create_model(reduced == reduced_models.end() ? name : reduced->second, args);
  torch::NoGradGuard no_grad;
  for (auto& buffer : model->named_buffers()) {
    if (buffer.key().find("running_var") != std::string::npos) buffer.value().uniform_(0.5, 2.0);
    if (buffer.key().find("running_mean") != std::string::npos) buffer.value().uniform_(-0.2, 0.2);
  }
  model->eval();
  return model;
}

}  // namespace reidnet::test
