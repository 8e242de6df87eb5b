#pragma once
// Whole-file reads and the library's one atomic writer (write to a temporary sibling, then
// rename), shared by the checkpoint, image, data set and run-folder code.

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <ostream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace reidnet::detail {

/// What read_file_bytes refuses past unless told otherwise: far more than any picture or
/// list file a data set holds, far less than a sparse file or a device can make it allocate.
inline constexpr uint64_t kMaxFileBytes = uint64_t{1} << 30;  // 1 GiB

/// The bound on the small files that describe a run (opts.yaml, trainer_state.yaml, a run
/// folder's commit journal): far more than they ever hold, little to parse.
inline constexpr uint64_t kMaxSettingsFileBytes = uint64_t{1} << 20;  // 1 MiB

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

/// The folder that holds `path` ("." for a bare file name).
inline std::string parent_folder(const std::string& path) {
  const auto parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

/// Opens `path` with `flags` (and O_CLOEXEC), or throws naming it.
inline std::unique_ptr<FileDescriptor> open_file(const std::string& path, int flags) {
  // 0644 where O_CREAT makes the file (before the umask).
  auto file = std::make_unique<FileDescriptor>(::open(path.c_str(), flags | O_CLOEXEC, 0644));
  if (file->fd < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  return file;
}

/// Whether `name` is a temporary name of the library's writers: "<file>.tmp" followed only by
/// digits, '_' and '-' (temporary_sibling's and the older fixed ".tmp" spellings).
inline bool is_temporary_name(const std::string& name) {
  const auto at = name.rfind(".tmp");
  if (at == std::string::npos || at == 0) return false;
  return name.find_first_not_of("0123456789_-", at + 4) == std::string::npos;
}

/// Removes the temporary siblings of `path` (see temporary_sibling) that writers killed
/// mid-write left behind. Only for a caller that holds the lock every writer of `path` takes:
/// a temporary is then no other writer's work in progress.
inline void remove_temporary_siblings(const std::string& path) {
  namespace fs = std::filesystem;
  const auto prefix = fs::path(path).filename().string() + ".tmp";
  std::error_code error;
  for (fs::directory_iterator entry(parent_folder(path), error), end; !error && entry != end;
       entry.increment(error)) {
    const auto name = entry->path().filename().string();
    std::error_code ignored;
    if (name.rfind(prefix, 0) == 0 && is_temporary_name(name) &&
        fs::is_regular_file(entry->symlink_status(ignored))) {
      fs::remove(entry->path(), ignored);
    }
  }
}

/// An exclusive lock (flock) on `path`, opened with `flags`, held until the descriptor is
/// closed; nullptr when another process holds it. Throws naming `path` when it cannot be
/// opened or locked.
inline std::unique_ptr<FileDescriptor> lock_exclusively(const std::string& path, int flags) {
  auto file = open_file(path, flags);
  if (::flock(file->fd, LOCK_EX | LOCK_NB) == 0) return file;
  if (errno == EWOULDBLOCK) return nullptr;
  throw std::runtime_error("cannot lock " + path + ": " + std::strerror(errno));
}

/// Flushes a file or a folder (its entries: the renames) to the disk.
inline void sync_path(const std::string& path, bool directory) {
  const auto file = open_file(path, directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (::fsync(file->fd) != 0) {
    throw std::runtime_error("cannot flush " + path + " to disk: " + std::strerror(errno));
  }
}

/// Whether an atomic write also makes its result durable.
enum class FlushToDisk : bool { kNo = false, kYes = true };

/// The one writer of whole files: `fill(const std::string& temporary)` writes a temporary
/// sibling of `path` (see temporary_sibling), which is then renamed over `path`. Readers never
/// see a half-written file, and a failure, an exception thrown by `fill` included, leaves
/// `path` as it was and no temporary behind. With FlushToDisk::kYes the bytes reach the disk
/// before the rename and the rename after it, so that not even a power cut leaves `path` empty
/// or partial. For writers that take a file name (matio, FAISS); the stream form is below.
template <typename Fill,
          typename = std::enable_if_t<std::is_invocable_v<Fill&, const std::string&>>>
void fill_file_atomically(const std::string& path, Fill&& fill,
                          FlushToDisk flush = FlushToDisk::kNo) {
  const std::string temporary = temporary_sibling(path);
  try {
    fill(temporary);
    if (flush == FlushToDisk::kYes) sync_path(temporary, false);
    std::error_code error;
    std::filesystem::rename(temporary, path, error);
    if (error) throw std::runtime_error("cannot write " + path + ": " + error.message());
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(temporary, ignored);
    throw;
  }
  if (flush == FlushToDisk::kYes) sync_path(parent_folder(path), true);
}

/// The stream form: `write(std::ostream&)` fills the temporary. Exceptions from `write`
/// propagate unchanged; the writer's own failures are std::runtime_error("cannot write
/// <path>...").
template <typename Write,
          typename = std::enable_if_t<std::is_invocable_v<Write&, std::ostream&>>>
void write_file_atomically(const std::string& path, Write&& write,
                           FlushToDisk flush = FlushToDisk::kNo) {
  fill_file_atomically(
      path,
      [&](const std::string& temporary) {
        std::ofstream file(temporary, std::ios::binary | std::ios::trunc);
        if (!file) throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
        write(static_cast<std::ostream&>(file));
        file.close();
        if (!file) throw std::runtime_error("cannot write " + path + " (disk full?)");
      },
      flush);
}

/// Writes `bytes` as the whole file `path`, atomically (the writer above).
inline void write_file_atomically(const std::string& path, const std::vector<unsigned char>& bytes,
                                  FlushToDisk flush = FlushToDisk::kNo) {
  write_file_atomically(
      path,
      [&bytes](std::ostream& file) {
        file.write(reinterpret_cast<const char*>(bytes.data()),
                   static_cast<std::streamsize>(bytes.size()));
      },
      flush);
}

/// The folder counterpart: `fill(const std::filesystem::path& folder)` writes into a fresh
/// temporary sibling folder of `path`, which then takes the place of `path` (a folder or file
/// already there is moved aside first and removed last, or put back if the final rename
/// fails). `path` is thus either absent, the old one or the complete new one, never partly
/// written; a failure, an exception thrown by `fill` included, removes the temporary folder.
/// Returns what `fill` returns. The folder that holds `path` must exist.
template <typename Fill>
auto write_folder_atomically(const std::string& path, Fill&& fill)
    -> decltype(fill(std::filesystem::path())) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path temporary = temporary_sibling(path);
  std::error_code ignored;
  std::error_code error;
  fs::create_directory(temporary, error);
  if (error) throw std::runtime_error("cannot write " + path + ": " + error.message());
  const auto replace = [&] {
    fs::path old;
    if (fs::symlink_status(target, ignored).type() != fs::file_type::not_found) {
      old = temporary_sibling(path);
      fs::rename(target, old, error);
      if (error) throw std::runtime_error("cannot replace " + path + ": " + error.message());
    }
    fs::rename(temporary, target, error);
    if (error) {
      if (!old.empty()) fs::rename(old, target, ignored);
      throw std::runtime_error("cannot write " + path + ": " + error.message());
    }
    if (!old.empty()) fs::remove_all(old, ignored);
  };
  try {
    if constexpr (std::is_void_v<decltype(fill(temporary))>) {
      fill(temporary);
      replace();
    } else {
      auto result = fill(temporary);
      replace();
      return result;
    }
  } catch (...) {
    fs::remove_all(temporary, ignored);
    throw;
  }
}

}  // namespace reidnet::detail
