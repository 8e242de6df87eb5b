#pragma once
// Whole-file reads and atomic writes, shared by the image and data set code.

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace reidnet::detail {

/// The bytes of `path`; throws std::runtime_error naming the file when it cannot be read.
inline std::vector<unsigned char> read_file_bytes(const std::string& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    throw std::runtime_error("cannot read " + path + ": it is a directory");
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(file)),
                                   std::istreambuf_iterator<char>());
  if (file.bad()) throw std::runtime_error("cannot read " + path);
  return bytes;
}

/// A sibling temporary name, unique across threads (thread id, counter) and processes (clock);
/// no std::random_device, which can throw or misbehave where the OS gives no entropy source.
inline std::string temporary_sibling(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  const auto thread = std::hash<std::thread::id>{}(std::this_thread::get_id()) % 1000000ULL;
  const auto ticks = std::chrono::steady_clock::now().time_since_epoch().count() % 1000000000LL;
  return path + ".tmp" + std::to_string(ticks) + "_" + std::to_string(thread) + "_" +
         std::to_string(counter++);
}

/// Writes `bytes` to a temporary sibling, then renames it over `path`: readers never see a
/// half-written file, and a failure leaves nothing behind.
inline void write_file_atomically(const std::string& path, const std::vector<unsigned char>& bytes) {
  const std::string temporary = temporary_sibling(path);
  {
    std::ofstream file(temporary, std::ios::binary | std::ios::trunc);
    if (!file) {
      throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
    }
    file.write(reinterpret_cast<const char*>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
    file.close();
    if (!file) {
      std::remove(temporary.c_str());
      throw std::runtime_error("cannot write " + path + " (disk full?)");
    }
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) {
    std::remove(temporary.c_str());
    throw std::runtime_error("cannot write " + path + ": " + error.message());
  }
}

}  // namespace reidnet::detail
