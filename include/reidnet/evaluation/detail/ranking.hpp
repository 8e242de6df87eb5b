#pragma once
// Internals of reidnet/evaluation/evaluate.hpp: input checks and the per-query Market-1501 protocol
// on one row of scores, without sorting the whole gallery.

#include <ATen/Parallel.h>
#include <c10/util/irange.h>
#include <torch/types.h>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (moved here from format.h in fmt 11)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace reidnet::detail {

inline std::string shape_of(const torch::Tensor& tensor) {
  return fmt::format("[{}]", fmt::join(tensor.sizes().vec(), ", "));
}

// A 1-D integer tensor of `expected` entries, as contiguous CPU int64.
inline torch::Tensor checked_ids(const torch::Tensor& ids, int64_t expected,
                                 const std::string& what, const std::string& rows_of,
                                 const std::string& caller) {
  if (!ids.defined() || ids.dim() != 1) {
    throw std::runtime_error(fmt::format("{}: {} must be a 1-D integer tensor, got shape {}",
                                         caller, what, ids.defined() ? shape_of(ids) : "none"));
  }
  if (c10::isFloatingType(ids.scalar_type()) || ids.scalar_type() == torch::kBool) {
    throw std::runtime_error(fmt::format("{}: {} must hold integers (int64), got {}", caller, what,
                                         c10::toString(ids.scalar_type())));
  }
  if (ids.size(0) != expected) {
    throw std::runtime_error(fmt::format("{}: {} have {} entries but {} have {} rows", caller, what,
                                         ids.size(0), rows_of, expected));
  }
  return ids.to(torch::kCPU, torch::kLong).contiguous();
}

inline void check_matrix(const torch::Tensor& matrix, const std::string& what,
                         const std::string& caller) {
  if (!matrix.defined() || matrix.dim() != 2) {
    throw std::runtime_error(fmt::format("{}: {} must be a 2-D tensor, got shape {}", caller, what,
                                         matrix.defined() ? shape_of(matrix) : "none"));
  }
  if (!c10::isFloatingType(matrix.scalar_type())) {
    throw std::runtime_error(fmt::format("{}: {} must be floating point, got {}", caller, what,
                                         c10::toString(matrix.scalar_type())));
  }
}

// Query [Nq, D] and gallery [Ng, D] features of the same width.
inline void check_feature_pair(const torch::Tensor& query_features,
                               const torch::Tensor& gallery_features, const std::string& caller) {
  check_matrix(query_features, "query features", caller);
  check_matrix(gallery_features, "gallery features", caller);
  if (query_features.size(1) != gallery_features.size(1)) {
    throw std::runtime_error(
        fmt::format("{}: query features {} and gallery features {} differ in feature dimension",
                    caller, shape_of(query_features), shape_of(gallery_features)));
  }
}

// Whether gallery item a comes before b: better score first, ties by gallery order.
// Branch-free, since the evaluation calls it ~10^8 times on unpredictable data.
template <class Scalar, bool HigherIsBetter>
struct RankOrder {
  const Scalar* scores;
  bool operator()(int64_t a, int64_t b) const {
    const Scalar sa = scores[a];
    const Scalar sb = scores[b];
    const bool better = HigherIsBetter ? sa > sb : sa < sb;
    return better | ((sa == sb) & (a < b));
  }
};

// The gallery labels of one evaluation, and the good/junk rules of the Market-1501 protocol
// (docs/reference.md, "Evaluation protocol").
struct GalleryIds {
  const int64_t* labels;
  const int64_t* cameras;
  int64_t size;

  // good = same id, different camera (and not an id -1 junk detection).
  bool good(int64_t j, int64_t query_label, int64_t query_camera) const {
    return labels[j] == query_label && cameras[j] != query_camera && labels[j] != -1;
  }
  // junk = same id and same camera, or id -1.
  bool junk(int64_t j, int64_t query_label, int64_t query_camera) const {
    return labels[j] == -1 || (labels[j] == query_label && cameras[j] == query_camera);
  }
};

// Working memory of one thread, reused across queries.
template <class Scalar>
struct QueryScratch {
  std::vector<int64_t> good;         // good gallery indices, in rank order
  std::vector<int64_t> before_good;  // [i]: non-good, non-junk items ranked before good[i]
  std::vector<Scalar> good_scores;   // padded scores of `good`
};

// 0-based ranks (junk removed) of the good items of one query, ascending, in `ranks`;
// false if a score is NaN or infinite.
// O(Ng log ngood) instead of sorting the gallery: each ordinary item ranked above the worst
// good item is binary-searched among the good ones, and the ranks follow from the counts.
template <class Scalar, bool HigherIsBetter>
bool good_ranks(const Scalar* scores, const GalleryIds& gallery, int64_t query_label,
                int64_t query_camera, QueryScratch<Scalar>& scratch, std::vector<int64_t>& ranks) {
  const RankOrder<Scalar, HigherIsBetter> before{scores};
  auto& good = scratch.good;
  good.clear();
  bool finite = true;
  for (const auto j : c10::irange(gallery.size)) {
    finite &= std::isfinite(scores[j]);
    if (gallery.good(j, query_label, query_camera)) good.push_back(j);
  }
  ranks.clear();
  if (!finite) return false;
  if (good.empty()) return true;
  std::sort(good.begin(), good.end(), before);
  auto& counts = scratch.before_good;
  counts.assign(good.size() + 1, 0);
  // Good scores, best first, padded to a multiple of 8 with the worst possible score so the
  // count below runs in fixed-width, vectorisable chunks.
  auto& good_scores = scratch.good_scores;
  const auto num_good = good.size();
  const auto padded = (num_good + 7) / 8 * 8;
  const Scalar worst_possible = HigherIsBetter ? -std::numeric_limits<Scalar>::infinity()
                                               : std::numeric_limits<Scalar>::infinity();
  good_scores.assign(padded, worst_possible);
  for (const auto i : c10::irange(num_good)) good_scores[i] = scores[good[i]];
  const Scalar worst = good_scores[num_good - 1];
  const auto* sorted_good = good.data();
  for (const auto j : c10::irange(gallery.size)) {
    const Scalar score = scores[j];
    // Most items rank below every good one and do not move any rank.
    if (HigherIsBetter ? score < worst : score > worst) continue;
    if (gallery.junk(j, query_label, query_camera) || gallery.good(j, query_label, query_camera)) {
      continue;
    }
    // Number of good items ranked before j: those with a better score, then equal scores at
    // smaller gallery indices (rare, so counted separately).
    size_t better = 0;
    size_t equal = 0;
    for (size_t chunk = 0; chunk < padded; chunk += 8) {
      for (size_t i = chunk; i < chunk + 8; ++i) {
        better += HigherIsBetter ? good_scores[i] > score : good_scores[i] < score;
        equal += good_scores[i] == score;
      }
    }
    size_t slot = better;
    for (size_t i = better; i < better + equal; ++i) slot += sorted_good[i] < j;
    ++counts[slot];
  }
  int64_t others = 0;
  for (const auto i : c10::irange(num_good)) {
    others += counts[i];
    ranks.push_back(static_cast<int64_t>(i) + others);
  }
  return true;
}

}  // namespace reidnet::detail
