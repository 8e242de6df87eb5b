#pragma once
/// How well embeddings alone follow people from frame to frame: each frame's detections are
/// linked to the previous frame's by the Hungarian method on cosine similarity, and the links
/// are scored against ground-truth identities. This is the appearance half of a tracker such
/// as DeepSORT, with no motion model, so the figure says what the ReID model contributes.
///
///     // features (N, D), frames (N) int64, boxes (N, 4) x, y, w, h, from a tracker's rows;
///     // gt_frames, gt_boxes, gt_ids from the sequence's gt.txt
///     auto identities = reidnet::match_ground_truth(frames, boxes, gt_frames, gt_boxes, gt_ids);
///     auto links = reidnet::link_consecutive_frames(features, frames);
///     auto score = reidnet::score_frame_links(links, frames, identities);
///     fmt::print("links: {}/{} correct\n", score.correct, score.expected);
///
/// The assignments are solved by dlib's max_cost_assignment (the Hungarian method, O(n^3)),
/// which needs integer costs: scores are rounded to multiples of 1e-9 (kAssignmentScale),
/// finer than float32 resolves near 1, so only exact ties can be decided differently than on
/// the unrounded scores. This header needs dlib (target reidnet::dlib; Debian: libdlib-dev).

#include <torch/torch.h>

#include <dlib/optimization/max_cost_assignment.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <vector>

namespace reidnet {

/// Scores become integers as round(score * kAssignmentScale) for dlib's Hungarian method.
inline constexpr double kAssignmentScale = 1e9;

/// The assignment of rows to columns of an (N, M) score matrix that maximises the sum of the
/// assigned scores (the Hungarian method): entry i is the column given to row i, or -1 for a
/// row left without one (when N > M, N - M rows are). min(N, M) pairs are always made, however
/// low their scores. Scores must be finite and at most 1e6 in magnitude (cosines, IoUs).
inline std::vector<int64_t> max_score_assignment(const torch::Tensor& scores) {
  TORCH_CHECK(scores.dim() == 2, "max_score_assignment: scores must be (N, M), got ",
              scores.sizes());
  const auto values = scores.to(torch::kCPU, torch::kFloat64).contiguous();
  TORCH_CHECK(torch::isfinite(values).all().item<bool>() &&
                  (values.numel() == 0 || values.abs().max().item<double>() <= 1e6),
              "max_score_assignment: scores must be finite and at most 1e6 in magnitude");
  const int64_t rows = values.size(0), columns = values.size(1);
  std::vector<int64_t> assigned(static_cast<size_t>(rows), -1);
  if (rows == 0 || columns == 0) return assigned;
  // dlib solves square problems: the smaller side is padded with zero scores, so each real
  // row (or column) of the smaller side still gets a real partner.
  const long side = static_cast<long>(std::max(rows, columns));
  dlib::matrix<long> cost = dlib::zeros_matrix<long>(side, side);
  const double* in = values.data_ptr<double>();
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < columns; ++j) {
      cost(static_cast<long>(i), static_cast<long>(j)) =
          std::lround(in[i * columns + j] * kAssignmentScale);
    }
  }
  const std::vector<long> solution = dlib::max_cost_assignment(cost);
  for (int64_t i = 0; i < rows; ++i) {
    if (solution[static_cast<size_t>(i)] < columns) assigned[static_cast<size_t>(i)] = solution[static_cast<size_t>(i)];
  }
  return assigned;
}

/// Intersection over union of boxes given as (x, y, w, h): (N, 4) and (M, 4) -> (N, M) float64.
inline torch::Tensor box_iou(const torch::Tensor& a, const torch::Tensor& b) {
  TORCH_CHECK(a.dim() == 2 && a.size(1) == 4 && b.dim() == 2 && b.size(1) == 4,
              "box_iou: boxes must be (N, 4) and (M, 4) x, y, w, h; got ", a.sizes(), " and ",
              b.sizes());
  const auto first = a.to(torch::kFloat64).unsqueeze(1), second = b.to(torch::kFloat64).unsqueeze(0);
  const auto left = torch::maximum(first.select(2, 0), second.select(2, 0));
  const auto top = torch::maximum(first.select(2, 1), second.select(2, 1));
  const auto right = torch::minimum(first.select(2, 0) + first.select(2, 2),
                                    second.select(2, 0) + second.select(2, 2));
  const auto bottom = torch::minimum(first.select(2, 1) + first.select(2, 3),
                                     second.select(2, 1) + second.select(2, 3));
  const auto intersection = (right - left).clamp_min(0) * (bottom - top).clamp_min(0);
  const auto area_a = first.select(2, 2) * first.select(2, 3);
  const auto area_b = second.select(2, 2) * second.select(2, 3);
  const auto union_area = area_a + area_b - intersection;
  return torch::where(union_area > 0, intersection / union_area, torch::zeros_like(union_area));
}

namespace detail {

/// The rows of each frame number, in row order: frame -> row indices.
inline std::map<int64_t, std::vector<int64_t>> rows_by_frame(const torch::Tensor& frames) {
  TORCH_CHECK(frames.dim() == 1, "frames must be (N), got ", frames.sizes());
  const auto numbers = frames.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t* frame = numbers.data_ptr<int64_t>();
  std::map<int64_t, std::vector<int64_t>> rows;
  for (int64_t r = 0; r < numbers.numel(); ++r) rows[frame[r]].push_back(r);
  return rows;
}

inline torch::Tensor index_tensor(const std::vector<int64_t>& rows) {
  return torch::tensor(rows, torch::kInt64);
}

}  // namespace detail

/// The ground-truth identity of each detection, or -1: in each frame the detections and the
/// ground-truth boxes are paired one to one by the Hungarian method on IoU (as the CLEAR MOT
/// metrics pair them), and a pair counts when its IoU is at least `min_iou`.
/// frames (N) and gt_frames (G) are frame numbers, boxes (N, 4) and gt_boxes (G, 4) x, y, w, h,
/// gt_ids (G) the identities. Returns (N) int64.
inline torch::Tensor match_ground_truth(const torch::Tensor& frames, const torch::Tensor& boxes,
                                        const torch::Tensor& gt_frames, const torch::Tensor& gt_boxes,
                                        const torch::Tensor& gt_ids, double min_iou = 0.5) {
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(0) == frames.size(0) && gt_boxes.dim() == 2 &&
                  gt_boxes.size(0) == gt_frames.size(0) && gt_ids.dim() == 1 &&
                  gt_ids.size(0) == gt_frames.size(0),
              "match_ground_truth: frames, boxes, gt_frames, gt_boxes and gt_ids disagree in "
              "length: ", frames.sizes(), ", ", boxes.sizes(), ", ", gt_frames.sizes(), ", ",
              gt_boxes.sizes(), ", ", gt_ids.sizes());
  auto identities = torch::full({frames.size(0)}, -1, torch::kInt64);
  int64_t* identity = identities.data_ptr<int64_t>();
  const auto truth = detail::rows_by_frame(gt_frames);
  const auto ids = gt_ids.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t* id = ids.data_ptr<int64_t>();
  for (const auto& [frame, rows] : detail::rows_by_frame(frames)) {
    const auto found = truth.find(frame);
    if (found == truth.end()) continue;
    const auto iou = box_iou(boxes.index_select(0, detail::index_tensor(rows)),
                             gt_boxes.index_select(0, detail::index_tensor(found->second)));
    const auto pairs = max_score_assignment(iou);
    const auto* overlap = iou.contiguous().data_ptr<double>();
    for (size_t i = 0; i < rows.size(); ++i) {
      const int64_t j = pairs[i];
      if (j >= 0 && overlap[i * found->second.size() + j] >= min_iou) {
        identity[rows[i]] = id[found->second[static_cast<size_t>(j)]];
      }
    }
  }
  return identities;
}

/// A link from a detection of the previous frame to one of the current frame: row indices
/// into the sequence's detections, and their cosine similarity.
struct FrameLink {
  int64_t previous = 0, current = 0;
  double similarity = 0;
};

/// Links each frame's detections to those of the frame `gap` frames before it (frame number
/// f - gap; 1: the previous frame) by embedding alone: the Hungarian method on the cosine
/// similarity of their features, so that min(n_previous, n_current) links are made per pair of
/// frames. features (N, D), frames (N). A frame whose earlier frame has no detections gets no
/// links. A larger gap asks more of the appearance model: people turn, move and are hidden.
inline std::vector<FrameLink> link_consecutive_frames(const torch::Tensor& features,
                                                      const torch::Tensor& frames, int64_t gap = 1) {
  TORCH_CHECK(gap >= 1, "link_consecutive_frames: gap must be at least 1, got ", gap);
  TORCH_CHECK(features.dim() == 2 && features.size(0) == frames.size(0),
              "link_consecutive_frames: features must be (N, D) with one row per frame number, "
              "got ", features.sizes(), " and ", frames.sizes());
  const auto unit = torch::nn::functional::normalize(
      features.to(torch::kCPU, torch::kFloat32), torch::nn::functional::NormalizeFuncOptions().dim(1));
  const auto by_frame = detail::rows_by_frame(frames);
  std::vector<FrameLink> links;
  for (const auto& [frame, current] : by_frame) {
    const auto found = by_frame.find(frame - gap);
    if (found == by_frame.end()) continue;
    const auto& previous = found->second;
    const auto similarity = unit.index_select(0, detail::index_tensor(previous))
                                .matmul(unit.index_select(0, detail::index_tensor(current)).t())
                                .to(torch::kFloat64)
                                .contiguous();
    const auto pairs = max_score_assignment(similarity);
    const double* score = similarity.data_ptr<double>();
    for (size_t i = 0; i < previous.size(); ++i) {
      if (pairs[i] < 0) continue;
      links.push_back({previous[i], current[static_cast<size_t>(pairs[i])],
                       score[i * current.size() + static_cast<size_t>(pairs[i])]});
    }
  }
  return links;
}

/// The links scored against ground-truth identities.
/// - expected: the detections (with an identity) whose identity also has a detection in the
///   earlier frame (`gap` frames before, as the links were made): the links a perfect
///   appearance model makes;
/// - correct: links between two detections of the same identity;
/// - unmatched: detections with no ground-truth identity (-1), left out of both counts, as are
///   the links that touch them.
/// A person who enters (or reappears) has no expected link, so the link the assignment forces
/// on them is not counted against the model; one who should have been linked and was not, or
/// was linked to someone else, is.
struct LinkScore {
  int64_t correct = 0, expected = 0, unmatched = 0, links = 0;
  double accuracy() const { return expected > 0 ? static_cast<double>(correct) / expected : 0.0; }
};

/// Scores `links` (from link_consecutive_frames with the same `gap`) given each detection's
/// frame number and ground-truth identity (-1 for none; match_ground_truth).
inline LinkScore score_frame_links(const std::vector<FrameLink>& links, const torch::Tensor& frames,
                                   const torch::Tensor& identities, int64_t gap = 1) {
  TORCH_CHECK(identities.dim() == 1 && identities.size(0) == frames.size(0),
              "score_frame_links: identities must be (N), one per detection, got ",
              identities.sizes(), " for ", frames.sizes(), " frames");
  const auto ids = identities.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t* id = ids.data_ptr<int64_t>();
  LinkScore score;
  score.links = static_cast<int64_t>(links.size());
  std::map<int64_t, std::vector<int64_t>> ids_by_frame;
  for (const auto& [frame, rows] : detail::rows_by_frame(frames)) {
    auto& present = ids_by_frame[frame];
    for (const int64_t row : rows) {
      if (id[row] < 0) {
        ++score.unmatched;
      } else {
        present.push_back(id[row]);
      }
    }
    std::sort(present.begin(), present.end());
  }
  for (const auto& [frame, present] : ids_by_frame) {
    const auto previous = ids_by_frame.find(frame - gap);
    if (previous == ids_by_frame.end()) continue;
    for (const int64_t person : present) {
      if (std::binary_search(previous->second.begin(), previous->second.end(), person)) ++score.expected;
    }
  }
  for (const auto& link : links) {
    TORCH_CHECK(link.previous >= 0 && link.previous < ids.numel() && link.current >= 0 &&
                    link.current < ids.numel(),
                "score_frame_links: a link names row ", link.previous, " or ", link.current,
                " of ", ids.numel());
    if (id[link.previous] >= 0 && id[link.previous] == id[link.current]) ++score.correct;
  }
  return score;
}

}  // namespace reidnet
