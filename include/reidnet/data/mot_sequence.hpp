#pragma once
/// MOTChallenge sequences (MOT16, MOT17, MOT20 and trackers' own detections in that layout):
///
///     SEQ/seqinfo.ini          optional: imDir, imExt, seqLength
///     SEQ/img1/000001.jpg ...  the frames, numbered from 1 with six digits
///     SEQ/det/det.txt          one detection a line: frame,id,x,y,w,h,conf[,x,y,z]
///
///     const auto sequence = reidnet::read_mot_sequence("MOT17/train/MOT17-02-FRCNN");
///     for (const auto& frame : sequence.frames) {
///       auto picture = reidnet::read_image(sequence.image_path(frame.frame));
///       auto boxes = sequence.boxes(frame);   // (n, 4) float64 x, y, w, h in pixels
///     }
///
/// det.txt has 10 columns in MOT16/17 and 7 in some files; both are read (the same count on
/// every line). A malformed line is an InputError naming the file and the line: a field that is
/// not a finite number, fewer than 7 or more than 10 fields, a frame that is not an integer
/// from 1 to the sequence's last frame, a negative width or height, or a coordinate beyond
/// kMaxMotCoordinate. The file is read whole and refused above kMaxDetectionFileBytes, so that
/// memory stays bounded; rows keep every column as float64.

#include <reidnet/core/detail/file_io.hpp>
#include <reidnet/core/errors.hpp>

#include <torch/torch.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace reidnet {

/// The largest det.txt reidnet reads: MOT20's largest is about 60 MB.
inline constexpr uint64_t kMaxDetectionFileBytes = uint64_t{512} << 20;
/// Box coordinates and sizes beyond this many pixels are refused as malformed.
inline constexpr double kMaxMotCoordinate = 1 << 20;
/// The most frames a sequence may have (MOT20's longest has 3315).
inline constexpr int64_t kMaxMotFrames = 10000000;

/// The detections of one frame: rows [begin, end) of MotSequence::rows.
struct MotFrame {
  int64_t frame = 0;
  int64_t begin = 0, end = 0;
};

struct MotSequence {
  std::string folder;       // SEQ
  std::string name;         // SEQ's folder name
  std::string detections;   // SEQ/det/det.txt
  std::string image_folder; // SEQ/img1 (seqinfo.ini's imDir)
  std::string image_extension = ".jpg";
  int64_t frame_count = 0;  // the last frame with a picture (or seqinfo.ini's seqLength)
  /// (R, C) float64: det.txt's rows, sorted by frame (stably: a frame's rows keep their order,
  /// as deep_sort's generate_detections.py writes them), C = 7..10.
  torch::Tensor rows;
  /// The line of det.txt each row came from (1-based).
  std::vector<int64_t> lines;
  /// The frames that have detections, in order.
  std::vector<MotFrame> frames;

  /// The picture of frame `frame`: SEQ/img1/000042.jpg.
  std::string image_path(int64_t frame) const {
    return (std::filesystem::path(image_folder) / fmt::format("{:06d}{}", frame, image_extension))
        .string();
  }
  /// The boxes (x, y, w, h: columns 2..5) of `frame`'s rows, as (n, 4) float64.
  torch::Tensor boxes(const MotFrame& frame) const {
    return rows.slice(0, frame.begin, frame.end).slice(1, 2, 6);
  }
};

namespace detail {

/// seqinfo.ini's [Sequence] keys (key=value lines; comments and other sections ignored).
inline std::map<std::string, std::string> read_seqinfo(const std::string& path) {
  std::map<std::string, std::string> values;
  std::vector<unsigned char> bytes;
  try {
    bytes = read_file_bytes(path, kMaxSettingsFileBytes);
  } catch (const std::runtime_error& error) {
    throw InputError(error.what());
  }
  const std::string text(bytes.begin(), bytes.end());
  size_t at = 0;
  while (at < text.size()) {
    auto end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    auto line = text.substr(at, end - at);
    at = end + 1;
    const auto equals = line.find('=');
    if (equals == std::string::npos || line.empty() || line[0] == ';' || line[0] == '#') continue;
    const auto trim = [](std::string s) {
      const auto first = s.find_first_not_of(" \t\r");
      const auto last = s.find_last_not_of(" \t\r");
      return first == std::string::npos ? std::string() : s.substr(first, last - first + 1);
    };
    values[trim(line.substr(0, equals))] = trim(line.substr(equals + 1));
  }
  return values;
}

/// The frame number of a picture named like "000042.jpg" with `extension`; 0 otherwise.
inline int64_t mot_frame_of(const std::string& file_name, const std::string& extension) {
  if (file_name.size() <= extension.size() ||
      file_name.compare(file_name.size() - extension.size(), extension.size(), extension) != 0) {
    return 0;
  }
  const auto stem = file_name.substr(0, file_name.size() - extension.size());
  if (stem.empty() || stem.size() > 9 ||
      stem.find_first_not_of("0123456789") != std::string::npos) {
    return 0;
  }
  return std::stoll(stem);
}

/// Parses one det.txt field as a finite number; false when it is not one.
inline bool parse_mot_field(const char* begin, const char* end, double& value) {
  while (begin < end && (*begin == ' ' || *begin == '\t')) ++begin;
  while (end > begin && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) --end;
  if (begin == end || end - begin > 64) return false;
  const std::string text(begin, end);
  char* used = nullptr;
  errno = 0;
  value = std::strtod(text.c_str(), &used);
  return used == text.c_str() + text.size() && errno == 0 && std::isfinite(value);
}

}  // namespace detail

/// Reads the MOTChallenge sequence in `folder` (see the top of this header). InputError names
/// the file, and for det.txt the line, at fault.
inline MotSequence read_mot_sequence(const std::string& folder) {
  namespace fs = std::filesystem;
  MotSequence sequence;
  sequence.folder = folder;
  sequence.name = fs::path(folder).lexically_normal().filename().string();
  if (sequence.name.empty()) sequence.name = fs::path(folder).parent_path().filename().string();
  if (!fs::is_directory(folder)) throw InputError(folder + ": not a folder (a MOTChallenge sequence)");
  std::string image_dir = "img1";
  int64_t declared_length = 0;
  const auto seqinfo = (fs::path(folder) / "seqinfo.ini").string();
  if (fs::exists(seqinfo)) {
    const auto values = detail::read_seqinfo(seqinfo);
    if (const auto found = values.find("imDir"); found != values.end()) {
      // A plain folder name: a path would read pictures outside the sequence.
      if (found->second.empty() || found->second == "." || found->second == ".." ||
          found->second.find_first_of("/\\") != std::string::npos) {
        throw InputError(fmt::format("{}: imDir '{}' is not a folder name inside the sequence",
                                     seqinfo, found->second));
      }
      image_dir = found->second;
    }
    if (const auto found = values.find("imExt"); found != values.end()) {
      if (found->second != ".jpg" && found->second != ".jpeg" && found->second != ".png") {
        throw InputError(fmt::format("{}: imExt '{}'; expected .jpg, .jpeg or .png", seqinfo,
                                     found->second));
      }
      sequence.image_extension = found->second;
    }
    if (const auto found = values.find("seqLength"); found != values.end()) {
      double length = 0;
      const auto& text = found->second;
      if (!detail::parse_mot_field(text.data(), text.data() + text.size(), length) ||
          length != std::floor(length) || length < 1 || length > kMaxMotFrames) {
        throw InputError(fmt::format("{}: seqLength '{}' is not a frame count from 1 to {}", seqinfo,
                                     text, kMaxMotFrames));
      }
      declared_length = static_cast<int64_t>(length);
    }
  }
  sequence.image_folder = (fs::path(folder) / image_dir).string();
  if (!fs::is_directory(sequence.image_folder)) {
    throw InputError(sequence.image_folder + ": no such folder (the sequence's frames)");
  }
  if (declared_length > 0) {
    sequence.frame_count = declared_length;
  } else {
    std::error_code error;
    for (fs::directory_iterator entry(sequence.image_folder, error), end; !error && entry != end;
         entry.increment(error)) {
      sequence.frame_count = std::max(
          sequence.frame_count,
          detail::mot_frame_of(entry->path().filename().string(), sequence.image_extension));
    }
    if (error) throw InputError(sequence.image_folder + ": cannot list it: " + error.message());
    if (sequence.frame_count == 0) {
      throw InputError(fmt::format("{}: no frames named like 000001{}", sequence.image_folder,
                                   sequence.image_extension));
    }
  }

  sequence.detections = (fs::path(folder) / "det" / "det.txt").string();
  std::vector<unsigned char> bytes;
  try {
    bytes = detail::read_file_bytes(sequence.detections, kMaxDetectionFileBytes);
  } catch (const std::runtime_error& error) {
    throw InputError(error.what());
  }
  const char* text = reinterpret_cast<const char*>(bytes.data());
  const size_t size = bytes.size();
  std::vector<double> values;
  std::vector<int64_t> lines;
  int64_t columns = 0;
  int64_t line = 0;
  for (size_t at = 0; at < size;) {
    ++line;
    size_t end = at;
    while (end < size && text[end] != '\n') ++end;
    const char* begin = text + at;
    const char* stop = text + end;
    at = end + 1;
    if (std::all_of(begin, stop, [](char c) { return c == ' ' || c == '\t' || c == '\r'; })) continue;
    const auto refuse = [&](const std::string& why) {
      return InputError(fmt::format("{}, line {}: {}", sequence.detections, line, why));
    };
    double row[10];
    int64_t count = 0;
    for (const char* field = begin;; ++count) {
      const char* comma = std::find(field, stop, ',');
      if (count == 10) throw refuse("more than 10 fields; expected frame,id,x,y,w,h,conf[,x,y,z]");
      if (!detail::parse_mot_field(field, comma, row[count])) {
        throw refuse(fmt::format("field {} '{}' is not a finite number", count + 1,
                                 std::string(field, std::min<size_t>(comma - field, 32))));
      }
      if (comma == stop) {
        ++count;
        break;
      }
      field = comma + 1;
    }
    if (count < 7) {
      throw refuse(fmt::format("{} fields; expected at least 7 (frame,id,x,y,w,h,conf)", count));
    }
    if (columns == 0) columns = count;
    if (count != columns) {
      throw refuse(fmt::format("{} fields where the lines before have {}", count, columns));
    }
    const double frame = row[0];
    if (frame != std::floor(frame) || frame < 1 || frame > static_cast<double>(sequence.frame_count)) {
      throw refuse(fmt::format("frame {} is not a frame of the sequence (integers 1 to {}, the "
                               "pictures in {})", row[0], sequence.frame_count, sequence.image_folder));
    }
    for (int k = 2; k < 6; ++k) {
      if (std::abs(row[k]) > kMaxMotCoordinate) {
        throw refuse(fmt::format("box field {} is {}; beyond the {} pixels reidnet reads", k + 1,
                                 row[k], kMaxMotCoordinate));
      }
    }
    if (row[4] < 0 || row[5] < 0) {
      throw refuse(fmt::format("negative box size {} x {}", row[4], row[5]));
    }
    values.insert(values.end(), row, row + count);
    lines.push_back(line);
  }
  const auto count = static_cast<int64_t>(lines.size());
  std::vector<int64_t> order(lines.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return values[a * columns] < values[b * columns];
  });
  sequence.rows = torch::empty({count, std::max<int64_t>(columns, 7)}, torch::kFloat64);
  auto* out = sequence.rows.data_ptr<double>();
  sequence.lines.reserve(lines.size());
  for (int64_t r = 0; r < count; ++r) {
    std::copy_n(values.data() + order[r] * columns, columns, out + r * columns);
    sequence.lines.push_back(lines[order[r]]);
    const auto frame = static_cast<int64_t>(out[r * columns]);
    if (sequence.frames.empty() || sequence.frames.back().frame != frame) {
      sequence.frames.push_back({frame, r, r});
    }
    sequence.frames.back().end = r + 1;
  }
  return sequence;
}

/// The sequences of a benchmark folder (MOT17/train): its subfolders with det/det.txt, sorted
/// by name. InputError when there are none.
inline std::vector<std::string> mot_sequence_folders(const std::string& root) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(root)) throw InputError(root + ": not a folder of MOTChallenge sequences");
  std::vector<std::string> folders;
  std::error_code error;
  for (fs::directory_iterator entry(root, error), end; !error && entry != end; entry.increment(error)) {
    std::error_code ignored;
    if (entry->is_directory(ignored) && fs::is_regular_file(entry->path() / "det" / "det.txt", ignored)) {
      folders.push_back(entry->path().string());
    }
  }
  if (error) throw InputError(root + ": cannot list it: " + error.message());
  std::sort(folders.begin(), folders.end());
  if (folders.empty()) throw InputError(root + ": no sequence folders with det/det.txt");
  return folders;
}

}  // namespace reidnet
