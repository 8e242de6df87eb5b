#pragma once
/// A training run's output folder that a crash cannot leave half-written.
///
/// One process at a time holds the folder (an exclusive lock on it for the object's life), and
/// its files change only through commits. A commit stages each new file under a temporary
/// name, then publishes them together: it records them in a journal, renamed into place
/// atomically, and then renames each file. A process killed at any instant leaves either the
/// previous commit or the new one: opening the folder again completes a journalled commit and
/// removes the temporary files that an unpublished one left behind.
///
///     reidnet::RunFolder run("runs/market");               // locks; recovers a crashed commit
///     auto commit = run.begin();
///     reidnet::save_state_dict(*net, commit.stage("net_last.pth"));
///     reidnet::save_optimizer_state(*sgd, commit.stage("optimizer.pt"));
///     commit.publish();                                     // both files, or neither
///
/// POSIX only (flock, fsync, rename).

#include <reidnet/core/detail/file_io.hpp>
#include <reidnet/core/detail/crc32.hpp>
#include <reidnet/core/errors.hpp>

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace reidnet {

/// Another process holds the run folder.
struct RunFolderBusy : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {

/// The journal of the commit being published; its presence means "finish these renames".
inline constexpr const char* kCommitJournal = ".reidnet-commit.json";

/// Size and CRC-32 of a regular file, read in chunks.
inline std::pair<uint64_t, uint32_t> file_checksum(const std::string& path) {
  const auto file = open_file(path, O_RDONLY | O_NONBLOCK);
  struct stat info {};
  if (::fstat(file->fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    throw std::runtime_error(path + " is not a regular file");
  }
  Crc32 crc;
  std::vector<char> chunk(1 << 20);
  uint64_t size = 0;
  for (;;) {
    const auto got = ::read(file->fd, chunk.data(), chunk.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw std::runtime_error("cannot read " + path + ": " + std::strerror(errno));
    if (got == 0) break;
    crc.update(chunk.data(), static_cast<size_t>(got));
    size += static_cast<uint64_t>(got);
  }
  return {size, crc.value()};
}

/// A file name of the folder itself: no separators, not "." or "..".
inline bool is_plain_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

/// JSON text parsed as nlohmann::json does, except that an object naming a key twice is refused
/// (nlohmann keeps the last value, other readers the first).
inline nlohmann::json parse_json_without_duplicate_keys(const std::vector<unsigned char>& text) {
  std::vector<std::vector<std::string>> keys;  // of each object being parsed
  std::string repeated;
  const auto note = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    if (event == Event::object_start) keys.emplace_back();
    if (event == Event::object_end && !keys.empty()) keys.pop_back();
    if (event == Event::key && !keys.empty()) {
      auto& seen = keys.back();
      const auto key = parsed.get<std::string>();
      if (std::find(seen.begin(), seen.end(), key) != seen.end() && repeated.empty()) repeated = key;
      seen.push_back(key);
    }
    return true;
  };
  auto json = nlohmann::json::parse(text.begin(), text.end(), note);
  if (!repeated.empty()) throw std::runtime_error("the key '" + repeated + "' appears twice in an object");
  return json;
}

}  // namespace detail

class RunFolder {
 public:
  /// A set of files published together. Destroying an unpublished commit removes what it staged.
  class Commit {
   public:
    /// Called after each step of `publish` ("staged", "journal", "published:<name>",
    /// "committed"): lets crash tests stop the process at each instant.
    using StepObserver = std::function<void(const std::string& step)>;

    explicit Commit(const RunFolder& folder) : folder_(folder) {}
    Commit(Commit&&) = default;
    Commit(const Commit&) = delete;
    Commit& operator=(const Commit&) = delete;
    Commit& operator=(Commit&&) = delete;
    ~Commit() {
      if (published_) return;
      std::error_code ignored;
      for (const auto& file : files_) std::filesystem::remove(file.staged, ignored);
    }

    /// Where to write the new version of `name` (a file of the run folder): any writer, atomic
    /// or not, may write there; it appears as `name` only when the commit is published.
    std::string stage(const std::string& name) {
      if (!detail::is_plain_name(name)) {
        throw std::invalid_argument("RunFolder::Commit::stage: '" + name + "' is not a file name");
      }
      files_.push_back({name, detail::temporary_sibling((folder_.path() / name).string())});
      return files_.back().staged;
    }

    /// Publishes every staged file at once (see the header comment for the protocol).
    void publish(const StepObserver& after_step = {}) {
      const auto step = [&](const std::string& name) {
        if (after_step) after_step(name);
      };
      nlohmann::json journal = nlohmann::json::array();
      for (const auto& file : files_) {
        if (!std::filesystem::is_regular_file(file.staged)) {
          throw std::runtime_error("cannot publish " + file.name + ": nothing was written to " +
                                   file.staged);
        }
        detail::sync_path(file.staged, false);
        const auto [size, crc] = detail::file_checksum(file.staged);
        journal.push_back({{"name", file.name},
                           {"staged", std::filesystem::path(file.staged).filename().string()},
                           {"size", size},
                           {"crc32", crc}});
      }
      step("staged");
      const auto journal_path = (folder_.path() / detail::kCommitJournal).string();
      const auto text = journal.dump(1);
      // On the disk before its rename, and the rename too: a journal is whole or absent.
      detail::write_file_atomically(journal_path, std::vector<unsigned char>(text.begin(), text.end()),
                                    detail::FlushToDisk::kYes);
      step("journal");
      for (const auto& file : files_) {
        std::filesystem::rename(file.staged, folder_.path() / file.name);
        step("published:" + file.name);
      }
      published_ = true;
      detail::sync_path(folder_.path().string(), true);
      std::filesystem::remove(journal_path);
      detail::sync_path(folder_.path().string(), true);
      step("committed");
    }

   private:
    struct Staged {
      std::string name, staged;
    };
    const RunFolder& folder_;
    std::vector<Staged> files_;
    bool published_ = false;
  };

  /// Creates the folder if needed and locks it (RunFolderBusy if another process holds it).
  /// Then completes the commit a killed process had journalled, and removes temporary files
  /// that an unpublished commit or an interrupted writer left.
  explicit RunFolder(std::filesystem::path path) : path_(std::move(path)), lock_(open_and_lock(path_)) {
    finish_interrupted_commit();
    remove_temporary_files();
  }

  const std::filesystem::path& path() const { return path_; }

  Commit begin() const { return Commit(*this); }

 private:
  static std::unique_ptr<detail::FileDescriptor> open_and_lock(const std::filesystem::path& path) {
    std::filesystem::create_directories(path);
    auto folder = detail::lock_exclusively(path.string(), O_RDONLY | O_DIRECTORY);
    if (!folder) {
      throw RunFolderBusy(path.string() + " is in use by another process (another "
                          "reidnet-train on the same folder?); wait for it to end");
    }
    return folder;
  }

  void finish_interrupted_commit() const {
    const auto journal_path = path_ / detail::kCommitJournal;
    if (!std::filesystem::exists(journal_path)) return;
    const auto where = journal_path.string();
    nlohmann::json journal;
    try {
      const auto bytes = detail::read_file_bytes(where, detail::kMaxSettingsFileBytes);
      journal = detail::parse_json_without_duplicate_keys(bytes);
    } catch (const std::exception& error) {
      throw InputError(where + " is corrupt (" + error.what() + ")");
    }
    if (!journal.is_array()) throw InputError(where + " is corrupt: not a list of files");
    for (const auto& entry : journal) {
      if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
          !entry.contains("staged") || !entry["staged"].is_string() || !entry.contains("size") ||
          !entry["size"].is_number_unsigned() || !entry.contains("crc32") ||
          !entry["crc32"].is_number_unsigned()) {
        throw InputError(where + " is corrupt: an entry lacks name, staged, size or crc32");
      }
      const auto name = entry["name"].get<std::string>();
      const auto staged = entry["staged"].get<std::string>();
      // Only files of this folder, staged under their own temporary names, are ever renamed.
      if (!detail::is_plain_name(name) || !detail::is_plain_name(staged) ||
          staged.rfind(name + ".tmp", 0) != 0 || !detail::is_temporary_name(staged)) {
        throw InputError(where + " is corrupt: it names '" + name + "' and '" + staged + "'");
      }
      const std::pair<uint64_t, uint32_t> expected{entry["size"].get<uint64_t>(),
                                                   entry["crc32"].get<uint32_t>()};
      const auto staged_path = (path_ / staged).string();
      const auto final_path = (path_ / name).string();
      if (std::filesystem::exists(staged_path)) {
        if (detail::file_checksum(staged_path) != expected) {
          throw InputError("cannot finish the interrupted commit of " + path_.string() +
                                   ": " + staged_path + " does not match " + where);
        }
        std::filesystem::rename(staged_path, final_path);
      } else if (!std::filesystem::exists(final_path) || detail::file_checksum(final_path) != expected) {
        throw InputError("cannot finish the interrupted commit of " + path_.string() +
                                 ": " + name + " is neither staged nor published as " + where +
                                 " records");
      }
    }
    detail::sync_path(path_.string(), true);
    std::filesystem::remove(journal_path);
    detail::sync_path(path_.string(), true);
  }

  void remove_temporary_files() const {
    for (const auto& entry : std::filesystem::directory_iterator(path_)) {
      const auto name = entry.path().filename().string();
      if (entry.is_regular_file() && detail::is_temporary_name(name)) {
        std::error_code ignored;
        std::filesystem::remove(entry.path(), ignored);
      }
    }
  }

  std::filesystem::path path_;
  std::unique_ptr<detail::FileDescriptor> lock_;  // closing it releases the lock
};

}  // namespace reidnet
