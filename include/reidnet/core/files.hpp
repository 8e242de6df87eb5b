#pragma once
/// Writing a whole file atomically: readers (and a crash) see the old file or the new one,
/// never a part of it. The text goes to a temporary sibling that is then renamed over `path`.
/// And checking, before a run, that its output files have a folder to go to.
///
///     reidnet::write_text_file("runs/a/ranks.csv", "query_index,rank\n0,1\n");

#include <reidnet/core/detail/file_io.hpp>
#include <reidnet/core/errors.hpp>

#include <filesystem>
#include <string>
#include <system_error>

namespace reidnet {

inline void write_text_file(const std::string& path, const std::string& text) {
  detail::write_file_atomically(path, [&text](std::ostream& file) { file << text; });
}

/// Checks that the folder an output file goes to exists, so that a run fails at its start
/// rather than after its work; ConfigError "<what> <path>: the folder ... does not exist".
inline void check_output_folder(const std::string& path, const std::string& what) {
  const auto folder = std::filesystem::path(path).parent_path();
  std::error_code error;
  if (!folder.empty() && !std::filesystem::is_directory(folder, error)) {
    throw ConfigError(what + " " + path + ": the folder " + folder.string() + " does not exist");
  }
}

}  // namespace reidnet
