#pragma once
/// Person re-identification data sets on disk: Market-1501, DukeMTMC-reID, MSMT17 and the
/// Python baseline's folder-per-id layout, read into splits of samples. Only regular files
/// (or symbolic links to them) become samples: folder layouts skip files not named like
/// pictures (.jpg, .jpeg, .png) and refuse, by name, an entry so named that is not a regular
/// file (a folder, FIFO, device or broken link); an MSMT17 list naming a missing file, a FIFO
/// or a device is refused.
///
///     auto data = reidnet::read_dataset("Market-1501-v15.09.15");
///     // data.train_all, data.train, data.val, data.query, data.gallery; data.class_num()

#include <reidnet/core/errors.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace reidnet {

/// One picture of one person.
struct Sample {
  std::string path;
  /// As in the file name: -1 = junk detection, 0 = distractor (Market-1501, DukeMTMC).
  int64_t person_id = 0;
  /// As in the file name (Market-1501 counts from 1).
  int64_t camera = 0;
  /// Class index: the rank of person_id among the sorted training ids; -1 if not a training id.
  int64_t label = -1;
};

/// A person id and camera read from a file name.
struct ParsedName {
  int64_t person_id = 0;
  int64_t camera = 0;
};

/// Market-1501 / DukeMTMC-reID naming: `0002_c1s1_000451_03.jpg`, `-1_c3s2_...`,
/// `0001_c2_f0046182.jpg`: the id before the first `_`, the camera = the digits after the
/// first `c` that follows it. std::nullopt if the name does not have that form.
inline std::optional<ParsedName> parse_market_name(const std::string& filename) {
  const auto underscore = filename.find('_');
  if (underscore == std::string::npos || underscore == 0) return std::nullopt;
  const std::string id = filename.substr(0, underscore);
  const size_t digits_from = id[0] == '-' ? 1 : 0;
  if (digits_from == id.size() || id.size() - digits_from > 9) return std::nullopt;
  for (size_t i = digits_from; i < id.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(id[i]))) return std::nullopt;
  }
  size_t position = underscore + 1;
  if (position >= filename.size() || filename[position] != 'c') return std::nullopt;
  ++position;
  size_t end = position;
  while (end < filename.size() && std::isdigit(static_cast<unsigned char>(filename[end]))) ++end;
  if (end == position || end - position > 9) return std::nullopt;
  ParsedName parsed{std::stoll(id), std::stoll(filename.substr(position, end - position))};
  if (parsed.person_id < -1 || (digits_from == 1 && parsed.person_id != -1)) return std::nullopt;
  return parsed;
}

/// MSMT17 naming: `0000_000_01_0303morning_0015_0.jpg`: id first, two-digit camera third.
inline std::optional<ParsedName> parse_msmt17_name(const std::string& filename) {
  std::vector<std::string> fields;
  std::stringstream stream(filename);
  for (std::string field; std::getline(stream, field, '_');) fields.push_back(field);
  const auto all_digits = [](const std::string& s) {
    return !s.empty() && s.size() <= 9 &&
           std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
  };
  if (fields.size() < 4 || !all_digits(fields[0]) || !all_digits(fields[2])) return std::nullopt;
  return ParsedName{std::stoll(fields[0]), std::stoll(fields[2])};
}

/// How to treat files whose names do not parse.
///
///     reidnet::read_dataset(root, reidnet::DatasetOptions().skip_unparseable(true));
struct DatasetOptions {
  /// false: throw InputError naming the file; true: skip it with a warning on stderr.
  TORCH_ARG(bool, skip_unparseable) = false;
};

/// The splits of a data set; a split the layout does not have stays empty.
struct Dataset {
  std::vector<Sample> train;      ///< train_all minus val
  std::vector<Sample> val;        ///< one picture per training id
  std::vector<Sample> train_all;  ///< every training picture
  std::vector<Sample> query;
  std::vector<Sample> gallery;
  /// class index -> person id: the sorted ids of train_all (or train when train_all is empty).
  std::vector<int64_t> class_ids;
  /// Files skipped because their names did not parse (with skip_unparseable).
  std::vector<std::string> skipped;

  int64_t class_num() const { return static_cast<int64_t>(class_ids.size()); }
};

namespace detail {

inline bool is_image_file(const std::filesystem::path& path) {
  std::string extension = path.extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return extension == ".jpg" || extension == ".jpeg" || extension == ".png";
}

/// Throws, or records and warns, for an unparseable file.
inline void reject_name(const std::string& path, const std::string& why,
                        const DatasetOptions& options, Dataset& dataset) {
  if (!options.skip_unparseable()) {
    throw InputError("cannot parse the person id and camera of " + path + ": " + why +
                             " (rename it, or skip such files with skip_unparseable)");
  }
  std::cerr << "warning: skipping " << path << ": " << why << "\n";
  dataset.skipped.push_back(path);
}

inline std::vector<std::filesystem::path> sorted_entries(const std::filesystem::path& directory) {
  std::vector<std::filesystem::path> entries;
  for (const auto& entry : std::filesystem::directory_iterator(directory)) {
    entries.push_back(entry.path());
  }
  std::sort(entries.begin(), entries.end());
  return entries;
}

inline void require_directory(const std::filesystem::path& directory, const std::string& what) {
  if (!std::filesystem::is_directory(directory)) {
    throw InputError("missing " + what + " folder " + directory.string());
  }
}

/// The pictures in `directory` with Market-style names, sorted by name; the person id is
/// `folder_id` when given (folder-per-id layouts), else the one in the name.
inline std::vector<Sample> read_named_pictures(const std::filesystem::path& directory,
                                               std::optional<int64_t> folder_id,
                                               const DatasetOptions& options, Dataset& dataset) {
  std::vector<Sample> samples;
  for (const auto& path : sorted_entries(directory)) {
    if (!is_image_file(path)) continue;
    // Symbolic links to pictures count; anything else named like a picture (a folder, a FIFO,
    // a device, a broken or looping link) is refused by name rather than silently left out.
    std::error_code error;
    if (!std::filesystem::is_regular_file(path, error)) {
      throw InputError(path.string() + " is named like a picture but is not a regular file (a "
                       "folder, FIFO, device, or broken link): remove or rename it");
    }
    const auto parsed = parse_market_name(path.filename().string());
    if (!parsed) {
      reject_name(path.string(), "expected <id>_c<camera>..., like 0002_c1s1_000451_03.jpg",
                  options, dataset);
      continue;
    }
    samples.push_back({path.string(), folder_id.value_or(parsed->person_id), parsed->camera, -1});
  }
  return samples;
}

/// The pictures of one Market-style folder (names carry id and camera), sorted by name.
inline std::vector<Sample> read_market_folder(const std::filesystem::path& directory,
                                              const DatasetOptions& options, Dataset& dataset) {
  require_directory(directory, "image");
  return read_named_pictures(directory, std::nullopt, options, dataset);
}

/// Junk detections (-1) are not an identity to learn.
inline std::vector<Sample> without_junk(std::vector<Sample> samples) {
  samples.erase(std::remove_if(samples.begin(), samples.end(),
                               [](const Sample& s) { return s.person_id == -1; }),
                samples.end());
  return samples;
}

/// Sets class_ids from the training split and every sample's label from class_ids.
inline void assign_labels(Dataset& dataset) {
  const auto& source = dataset.train_all.empty() ? dataset.train : dataset.train_all;
  std::vector<int64_t> ids;
  for (const auto& sample : source) ids.push_back(sample.person_id);
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  dataset.class_ids = ids;
  std::map<int64_t, int64_t> index;
  for (size_t i = 0; i < ids.size(); ++i) index[ids[i]] = static_cast<int64_t>(i);
  for (auto* split : {&dataset.train, &dataset.val, &dataset.train_all, &dataset.query,
                      &dataset.gallery}) {
    for (auto& sample : *split) {
      const auto found = index.find(sample.person_id);
      sample.label = found == index.end() ? -1 : found->second;
    }
  }
}

}  // namespace detail

/// The baseline's train/val split: the first picture (by path) of every id goes to val, the
/// others to train. An id with one picture only is then absent from train.
inline std::pair<std::vector<Sample>, std::vector<Sample>> split_train_val(
    std::vector<Sample> train_all) {
  std::stable_sort(train_all.begin(), train_all.end(),
                   [](const Sample& a, const Sample& b) { return a.path < b.path; });
  std::vector<Sample> train, val;
  std::map<int64_t, bool> seen;
  for (auto& sample : train_all) {
    auto& was_seen = seen[sample.person_id];
    (was_seen ? train : val).push_back(std::move(sample));
    was_seen = true;
  }
  return {std::move(train), std::move(val)};
}

/// Market-1501's raw layout (also DukeMTMC-reID's): bounding_box_train, query,
/// bounding_box_test under `root`. train_all = bounding_box_train without junk; train and val
/// as split_train_val makes them.
inline Dataset read_market1501(const std::string& root, const DatasetOptions& options = {}) {
  const std::filesystem::path base(root);
  Dataset dataset;
  dataset.train_all = detail::without_junk(
      detail::read_market_folder(base / "bounding_box_train", options, dataset));
  std::tie(dataset.train, dataset.val) = split_train_val(dataset.train_all);
  dataset.query = detail::read_market_folder(base / "query", options, dataset);
  dataset.gallery = detail::read_market_folder(base / "bounding_box_test", options, dataset);
  detail::assign_labels(dataset);
  return dataset;
}

/// DukeMTMC-reID has Market-1501's layout, with names like 0001_c2_f0046182.jpg.
inline Dataset read_dukemtmc(const std::string& root, const DatasetOptions& options = {}) {
  return read_market1501(root, options);
}

namespace detail {

/// One MSMT17 list file: lines `<relative path> <person id>`.
inline std::vector<Sample> read_msmt17_list(const std::filesystem::path& list,
                                            const std::filesystem::path& image_root,
                                            const DatasetOptions& options, Dataset& dataset) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(list, error)) {
    throw InputError("cannot open MSMT17 list file " + list.string() +
                             (std::filesystem::exists(list, error) ? ": not a regular file"
                                                                   : ": it does not exist"));
  }
  std::ifstream file(list);
  if (!file) throw InputError("cannot open MSMT17 list file " + list.string());
  std::vector<Sample> samples;
  std::string line;
  for (int number = 1; std::getline(file, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    std::istringstream fields(line);
    std::string relative;
    int64_t person_id = 0;
    if (!(fields >> relative >> person_id)) {
      throw InputError("malformed line " + std::to_string(number) + " of " +
                               list.string() + ": expected '<path> <person id>', got '" + line +
                               "'");
    }
    const auto path = image_root / relative;
    const auto parsed = parse_msmt17_name(path.filename().string());
    if (!parsed) {
      reject_name(path.string(),
                  "expected <id>_<index>_<camera>_..., like 0000_000_01_0303morning_0015_0.jpg",
                  options, dataset);
      continue;
    }
    // Checked now rather than when the picture is loaded, so that a bad entry stops a run
    // before any work instead of midway through an epoch.
    const auto kind = std::filesystem::status(path, error).type();
    if (kind != std::filesystem::file_type::regular) {
      const std::string why = kind == std::filesystem::file_type::not_found ? "does not exist"
                              : kind == std::filesystem::file_type::none
                                  ? "cannot be examined: " + error.message()
                                  : "is not a regular file (a FIFO, socket, device or folder)";
      throw InputError("line " + std::to_string(number) + " of " + list.string() +
                               " names " + path.string() + ", which " + why);
    }
    samples.push_back({path.string(), person_id, parsed->camera, -1});
  }
  return samples;
}

inline std::filesystem::path first_existing(const std::filesystem::path& base,
                                            std::initializer_list<const char*> names) {
  for (const char* name : names) {
    if (std::filesystem::is_directory(base / name)) return base / name;
  }
  throw InputError("missing folder " + (base / *names.begin()).string());
}

}  // namespace detail

/// MSMT17: list_train.txt, list_val.txt, list_query.txt, list_gallery.txt with pictures under
/// train/ and test/ (or mask_train_v2/, mask_test_v2/). Person ids come from the lists, the
/// two-digit camera from the names. train_all = train + val.
inline Dataset read_msmt17(const std::string& root, const DatasetOptions& options = {}) {
  const std::filesystem::path base(root);
  const auto train_root = detail::first_existing(base, {"train", "mask_train_v2"});
  const auto test_root = detail::first_existing(base, {"test", "mask_test_v2"});
  Dataset dataset;
  dataset.train = detail::read_msmt17_list(base / "list_train.txt", train_root, options, dataset);
  dataset.val = detail::read_msmt17_list(base / "list_val.txt", train_root, options, dataset);
  dataset.train_all = dataset.train;
  dataset.train_all.insert(dataset.train_all.end(), dataset.val.begin(), dataset.val.end());
  dataset.query = detail::read_msmt17_list(base / "list_query.txt", test_root, options, dataset);
  dataset.gallery =
      detail::read_msmt17_list(base / "list_gallery.txt", test_root, options, dataset);
  detail::assign_labels(dataset);
  return dataset;
}

namespace detail {

/// <split>/<person id>/<Market-style name>: the id from the folder, the camera from the name.
inline std::vector<Sample> read_id_folders(const std::filesystem::path& directory,
                                           const DatasetOptions& options, Dataset& dataset) {
  std::vector<Sample> samples;
  if (!std::filesystem::is_directory(directory)) return samples;
  for (const auto& folder : sorted_entries(directory)) {
    if (!std::filesystem::is_directory(folder)) continue;
    const std::string name = folder.filename().string();
    int64_t person_id = 0;
    try {
      size_t used = 0;
      person_id = std::stoll(name, &used);
      if (used != name.size()) throw std::invalid_argument(name);
    } catch (const std::exception&) {
      reject_name(folder.string(), "the folder name is not a person id like 0002", options,
                  dataset);
      continue;
    }
    const auto pictures = read_named_pictures(folder, person_id, options, dataset);
    samples.insert(samples.end(), pictures.begin(), pictures.end());
  }
  return samples;
}

}  // namespace detail

/// The Python baseline's prepared layout: train/, val/, train_all/, query/, gallery/ under
/// `root`, each holding one folder per person id. Missing splits stay empty.
inline Dataset read_folder_per_id(const std::string& root, const DatasetOptions& options = {}) {
  const std::filesystem::path base(root);
  detail::require_directory(base, "data set");
  Dataset dataset;
  dataset.train = detail::without_junk(detail::read_id_folders(base / "train", options, dataset));
  dataset.val = detail::without_junk(detail::read_id_folders(base / "val", options, dataset));
  dataset.train_all =
      detail::without_junk(detail::read_id_folders(base / "train_all", options, dataset));
  dataset.query = detail::read_id_folders(base / "query", options, dataset);
  dataset.gallery = detail::read_id_folders(base / "gallery", options, dataset);
  if (dataset.train.empty() && dataset.train_all.empty() && dataset.query.empty() &&
      dataset.gallery.empty()) {
    throw InputError("no pictures under " + root +
                             ": expected train/, train_all/, query/ or gallery/ with one folder "
                             "per person id");
  }
  detail::assign_labels(dataset);
  return dataset;
}

/// Reads `root` in whichever layout it has: Market-1501/DukeMTMC (bounding_box_train/),
/// MSMT17 (list_train.txt), or folder-per-id (train/, train_all/, query/, gallery/; also
/// under root/pytorch/, where the baseline's prepare.py writes them).
inline Dataset read_dataset(const std::string& root, const DatasetOptions& options = {}) {
  const std::filesystem::path base(root);
  if (!std::filesystem::is_directory(base)) {
    throw InputError("data set folder " + root + " does not exist");
  }
  if (std::filesystem::is_directory(base / "bounding_box_train")) return read_market1501(root, options);
  if (std::filesystem::exists(base / "list_train.txt")) return read_msmt17(root, options);
  for (const auto& candidate : {base, base / "pytorch"}) {
    for (const char* split : {"train", "train_all", "query", "gallery"}) {
      if (std::filesystem::is_directory(candidate / split)) {
        return read_folder_per_id(candidate.string(), options);
      }
    }
  }
  throw InputError("cannot tell the layout of " + root +
                           ": expected bounding_box_train/ (Market-1501, DukeMTMC-reID), "
                           "list_train.txt (MSMT17) or train/ and query/ folders per person id");
}

}  // namespace reidnet
