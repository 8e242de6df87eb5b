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
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace reidnet::detail {

/// What read_file_bytes refuses past unless told otherwise: far more than any picture or
/// list file a data set holds, far less than a sparse file or a device can make it allocate.
inline constexpr uint64_t kMaxFileBytes = uint64_t{1} << 30;  // 1 GiB

/// Closes a POSIX file descriptor.
struct FileDescriptor {
  int fd;
  explicit FileDescriptor(int descriptor) : fd(descriptor) {}
  ~FileDescriptor() {
    if (fd >= 0) ::close(fd);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
};

/// The bytes of the regular file `path` (symbolic links followed), at most `max_bytes` of
/// them; throws std::runtime_error naming the file when it cannot be read, is not a regular
/// file (a directory, a FIFO, a device such as /dev/zero) or is larger than `max_bytes`.
inline std::vector<unsigned char> read_file_bytes(const std::string& path,
                                                  uint64_t max_bytes = kMaxFileBytes) {
  // O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever; fstat then
  // refuses it. Regular files ignore the flag.
  const FileDescriptor file(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (file.fd < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  struct stat info {};
  if (::fstat(file.fd, &info) != 0) {
    throw std::runtime_error("cannot read " + path + ": " + std::strerror(errno));
  }
  if (S_ISDIR(info.st_mode)) throw std::runtime_error("cannot read " + path + ": it is a directory");
  if (!S_ISREG(info.st_mode)) {
    throw std::runtime_error("cannot read " + path +
                             ": not a regular file (a FIFO, socket or device)");
  }
  const auto size = static_cast<uint64_t>(info.st_size);
  if (size > max_bytes) {
    throw std::runtime_error("cannot read " + path + ": it holds " + std::to_string(size) +
                             " bytes, more than the " + std::to_string(max_bytes) + " allowed");
  }
  // One byte more than fstat says: another process may truncate or extend the file while it
  // is read, and a torn copy is refused rather than decoded.
  std::vector<unsigned char> bytes(static_cast<size_t>(size) + 1);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t count = ::read(file.fd, bytes.data() + done, bytes.size() - done);
    if (count < 0 && errno == EINTR) continue;
    if (count < 0) throw std::runtime_error("cannot read " + path + ": " + std::strerror(errno));
    if (count == 0) break;
    done += static_cast<size_t>(count);
  }
  if (done != size) throw std::runtime_error("cannot read " + path + ": it changed while being read");
  bytes.resize(done);
  return bytes;
}

/// A sibling temporary name `<path>.tmp<...>`, unique across processes (process id, clock) and
/// threads (thread id, counter); no std::random_device, which can throw or misbehave where the
/// OS gives no entropy source.
inline std::string temporary_sibling(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  const auto thread = std::hash<std::thread::id>{}(std::this_thread::get_id()) % 1000000ULL;
  const auto ticks = std::chrono::steady_clock::now().time_since_epoch().count() % 1000000000LL;
  return path + ".tmp" + std::to_string(::getpid()) + "_" + std::to_string(ticks) + "_" +
         std::to_string(thread) + "_" + std::to_string(counter++);
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
