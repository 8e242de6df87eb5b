// reidnet-link-accuracy: how well a model's embeddings alone follow people from one frame to
// the next in a MOTChallenge sequence with ground truth. Each frame's detections are linked to
// the previous frame's (--gap K: the frame K before) by the Hungarian method on cosine
// similarity, and a link is correct when both detections are boxes of the same person
// (reidnet/evaluation/frame_links.hpp).
//
//   reidnet-embed --model-dir runs/toy --mot TOY-01 --out TOY-01.npy
//   reidnet-link-accuracy --mot TOY-01 --features TOY-01.npy
//   links: 412/450 correct (91.6%)
//   reidnet-link-accuracy --mot TOY-01 --features TOY-01.npy --gap 10
//
// The features file is reidnet-embed's: one row per det.txt row, the row followed by the
// feature. Ground truth is SEQ/gt/gt.txt (frame,id,x,y,w,h[,consider,class,visibility]; rows
// that MOT17 marks as not to be considered, or not pedestrians, are left out).
#include "common/cli.hpp"

#include <reidnet/core/detail/file_io.hpp>
#include <reidnet/data/mot_sequence.hpp>
#include <reidnet/evaluation/frame_links.hpp>
#include <reidnet/io/npy.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <filesystem>
#include <string>
#include <vector>

namespace reidnet_link_accuracy {

using reidnet::InputError;

/// SEQ/gt/gt.txt's rows: frame numbers, boxes (x, y, w, h) and identities.
struct GroundTruth {
  torch::Tensor frames, boxes, ids;
};

// Reads gt.txt with det.txt's field rules (reidnet::detail::parse_mot_field); InputError names
// the file and line of a malformed row.
GroundTruth read_ground_truth(const std::string& path, int64_t frame_count) {
  std::vector<unsigned char> bytes;
  try {
    bytes = reidnet::detail::read_file_bytes(path, reidnet::kMaxDetectionFileBytes);
  } catch (const std::runtime_error& error) {
    throw InputError(std::string(error.what()) + " (the sequence's ground truth)");
  }
  const std::string text(bytes.begin(), bytes.end());
  std::vector<int64_t> frames, ids;
  std::vector<float> boxes;
  int64_t line = 0;
  for (size_t at = 0; at < text.size();) {
    ++line;
    const size_t end = std::min(text.find('\n', at), text.size());
    const std::string row = text.substr(at, end - at);
    at = end + 1;
    if (row.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::vector<double> fields;
    for (size_t begin = 0;;) {
      const size_t comma = std::min(row.find(',', begin), row.size());
      double value = 0;
      if (fields.size() == 10 ||
          !reidnet::detail::parse_mot_field(row.data() + begin, row.data() + comma, value)) {
        throw InputError(fmt::format("{}, line {}: field {} is not a finite number (expected "
                                     "frame,id,x,y,w,h[,consider,class,visibility])",
                                     path, line, fields.size() + 1));
      }
      fields.push_back(value);
      if (comma == row.size()) break;
      begin = comma + 1;
    }
    if (fields.size() < 6) {
      throw InputError(fmt::format("{}, line {}: {} fields; expected at least 6 (frame,id,x,y,w,h)",
                                   path, line, fields.size()));
    }
    const double frame = fields[0], id = fields[1];
    if (frame != std::floor(frame) || frame < 1 || frame > static_cast<double>(frame_count) ||
        id != std::floor(id) || id < 0 || fields[4] < 0 || fields[5] < 0) {
      throw InputError(fmt::format("{}, line {}: frame {} (1 to {}), id {} (a whole number, 0 or "
                                   "more) or box size {} x {} is not possible",
                                   path, line, frame, frame_count, id, fields[4], fields[5]));
    }
    const bool considered = fields.size() < 7 || fields[6] != 0;
    const bool pedestrian = fields.size() < 8 || fields[7] == 1;
    if (!considered || !pedestrian) continue;
    frames.push_back(static_cast<int64_t>(frame));
    ids.push_back(static_cast<int64_t>(id));
    boxes.insert(boxes.end(), fields.begin() + 2, fields.begin() + 6);
  }
  const auto count = static_cast<int64_t>(frames.size());
  return {torch::tensor(frames, torch::kInt64), torch::tensor(boxes, torch::kFloat32).view({count, 4}),
          torch::tensor(ids, torch::kInt64)};
}

int run(int argc, char** argv) {
  CLI::App app{"Link each frame's detections to the previous frame's by embedding alone "
               "(Hungarian on cosine) and count the links that join boxes of the same person"};
  std::string mot, features_path;
  double min_iou = 0.5;
  int64_t gap = 1;
  app.add_option("--mot", mot, "MOTChallenge sequence folder with det/det.txt and gt/gt.txt")->required();
  app.add_option("--features", features_path, "reidnet-embed's .npy for that sequence: det.txt's "
                 "rows followed by their features")->required();
  app.add_option("--min-iou", min_iou, "a detection is a ground-truth person's when their boxes "
                 "overlap this much (intersection over union)")
      ->check(reidnet::examples::kFiniteNumber)
      ->check(CLI::Range(0.01, 1.0));
  app.add_option("--gap", gap, "link each frame to the one this many frames before it (1: the "
                 "previous frame; more asks more of the model)")
      ->check(CLI::Range(int64_t{1}, reidnet::kMaxMotFrames));
  if (const auto exit_code = reidnet::examples::parse_flags(app, argc, argv)) return *exit_code;
  return reidnet::examples::run_reporting_errors("reidnet-link-accuracy", [&] {
    const auto sequence = reidnet::read_mot_sequence(mot);
    const auto gt_path = (std::filesystem::path(mot) / "gt" / "gt.txt").string();
    if (!std::filesystem::is_regular_file(gt_path)) {
      throw InputError(gt_path + ": no such file (the sequence's ground truth, which link "
                       "accuracy needs)");
    }
    const auto truth = read_ground_truth(gt_path, sequence.frame_count);
    const auto rows = reidnet::read_npy(features_path);
    const int64_t columns = sequence.rows.size(1);
    if (rows.dim() != 2 || rows.size(0) != sequence.rows.size(0) || rows.size(1) <= columns) {
      throw InputError(fmt::format("{}: {} rows of shape {}; expected {} rows ({}'s detections) of "
                                   "its {} columns followed by a feature",
                                   features_path, rows.dim() == 2 ? rows.size(0) : 0, rows.sizes(),
                                   sequence.rows.size(0), sequence.detections, columns));
    }
    // The features must be this det.txt's rows, in reidnet-embed's order (sorted by frame).
    const auto written = rows.slice(1, 0, columns).to(torch::kFloat64);
    const auto expected = sequence.rows.to(torch::kFloat32).to(torch::kFloat64);
    const auto differs = ((written - expected).abs() > 1e-3 * (1 + expected.abs())).any(1).nonzero();
    if (differs.numel() > 0) {
      const auto row = differs[0].item<int64_t>();
      throw InputError(fmt::format("{}: row {} is not {}'s line {} (another sequence's features?)",
                                   features_path, row + 1, sequence.detections, sequence.lines[row]));
    }
    const auto frames = sequence.rows.select(1, 0).to(torch::kInt64);
    const auto identities = reidnet::match_ground_truth(frames, sequence.rows.slice(1, 2, 6), truth.frames,
                                                        truth.boxes, truth.ids, min_iou);
    const auto links = reidnet::link_consecutive_frames(rows.slice(1, columns), frames, gap);
    const auto score = reidnet::score_frame_links(links, frames, identities, gap);
    fmt::print("links: {}/{} correct ({:.1f}%)\n", score.correct, score.expected, 100 * score.accuracy());
    fmt::print("({} detections, {} of them without a ground-truth box at IoU >= {} and left out; "
               "{} links made)\n",
               sequence.rows.size(0), score.unmatched, min_iou, score.links);
    return 0;
  });
}

}  // namespace reidnet_link_accuracy

int main(int argc, char** argv) { return reidnet_link_accuracy::run(argc, argv); }
