#pragma once
/// The Market-1501 evaluation protocol of the Python baseline: Rank@k (CMC),
/// mAP and mINP from query and gallery features, or from any score matrix (e.g. re-ranked
/// distances). The score matrix is built in blocks of queries and every query is ranked in
/// parallel, in C++; ties in score are broken by gallery order, so results are deterministic.
///
///     auto result = reidnet::evaluate(qf, ql, qc, gf, gl, gc);
///     std::cout << reidnet::format_baseline_line(result) << "\n";
///     // Rank@1:0.888421 Rank@5:0.953682 Rank@10:0.969121 mAP:0.715900

#include <reidnet/evaluation/detail/ranking.hpp>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/irange.h>
#include <torch/arg.h>
#include <torch/types.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

namespace reidnet {

/// The baseline's AP: the trapezoid rule over the precision-recall steps (the default).
/// Good hits at 1-based ranks {1, 3} give 0.7917.
struct TrapezoidAP {};
/// The usual AP of other ReID libraries: mean precision at the good hits ({1, 3} -> 0.8333).
struct PlainAP {};
inline constexpr TrapezoidAP kTrapezoidAP{};
inline constexpr PlainAP kPlainAP{};
using AveragePrecision = std::variant<TrapezoidAP, PlainAP>;

/// Higher score = better match (dot products of features: the default).
struct Similarity {};
/// Lower score = better match (distances, e.g. reidnet::re_ranking's output).
struct Distance {};
inline constexpr Similarity kSimilarity{};
inline constexpr Distance kDistance{};
using ScoreKind = std::variant<Similarity, Distance>;

/// Options of `evaluate` and `evaluate_scores`.
///
///     reidnet::evaluate_scores(distances, ql, qc, gl, gc,
///                              reidnet::EvalOptions().score_kind(reidnet::kDistance));
struct EvalOptions {
  TORCH_ARG(AveragePrecision, average_precision) = TrapezoidAP{};
  /// How to read a score matrix given to `evaluate_scores` (`evaluate` always ranks by
  /// similarity, i.e. the dot product of the features).
  TORCH_ARG(ScoreKind, score_kind) = Similarity{};
  /// Queries whose gallery scores are held in memory at once (bounds memory at any size).
  TORCH_ARG(int64_t, query_block) = 1024;
};

/// What `evaluate` measures. Every average is over all queries, as the baseline does, except
/// mINP, which (as Ye et al. define it) averages over the queries that have a good match.
struct EvalResult {
  /// CMC curve, float64 [num_gallery]: entry k = fraction of queries matched within the top k+1.
  torch::Tensor cmc;
  /// Mean AP over all queries (a query without a good match adds 0).
  double mAP = 0.0;
  /// AP of each query, float64 [num_queries].
  torch::Tensor ap;
  /// Mean inverse negative penalty: ngood / (1-based rank of the last good hit, junk removed).
  double mINP = 0.0;
  /// 0-based rank (junk removed) of each query's first good hit, int64; -1 when it has none.
  torch::Tensor first_hit;
  int64_t num_queries = 0;
  /// Queries with at least one good match in the gallery.
  int64_t num_valid_queries = 0;

  /// CMC at 1-based rank k (k beyond the gallery size reads the last entry).
  double rank(int64_t k) const {
    if (k < 1) throw std::runtime_error(fmt::format("EvalResult::rank: k must be >= 1, got {}", k));
    return cmc[std::min(k, cmc.size(0)) - 1].item<double>();
  }
  double rank1() const { return rank(1); }
  double rank5() const { return rank(5); }
  double rank10() const { return rank(10); }
};

/// The baseline's result line: `Rank@1:0.888421 Rank@5:0.953682 Rank@10:0.969121 mAP:0.715900`.
inline std::string format_baseline_line(const EvalResult& result) {
  return fmt::format("Rank@1:{:f} Rank@5:{:f} Rank@10:{:f} mAP:{:f}", result.rank1(),
                     result.rank5(), result.rank10(), result.mAP);
}

namespace detail {

// Per-query results, filled in parallel (each query writes only its own entries).
struct QueryOutcomes {
  explicit QueryOutcomes(int64_t num_queries)
      : ap(static_cast<size_t>(num_queries), 0.0),
        inp(static_cast<size_t>(num_queries), std::numeric_limits<double>::quiet_NaN()),
        first_hit(static_cast<size_t>(num_queries), -1),
        has_good(static_cast<size_t>(num_queries), 0) {}
  std::vector<double> ap;
  std::vector<double> inp;  // NaN for a query without a good match
  std::vector<int64_t> first_hit;  // -1 when no good match was ranked
  std::vector<char> has_good;       // the gallery holds a good match
};

// AP of the good hits at 0-based ranks `ranks` (ascending). Plain AP averages the precision
// (i+1)/(r+1) at each hit; the baseline's trapezoid AP averages it with the precision i/r just
// before the hit (1 at rank 0). See docs/reference.md, "Evaluation protocol". `total_good`
// counts good matches that a truncated list left out (they add nothing).
inline double average_precision(const std::vector<int64_t>& ranks, const AveragePrecision& kind,
                                size_t total_good) {
  const auto ngood = static_cast<double>(total_good);
  double ap = 0.0;
  for (const auto i : c10::irange(ranks.size())) {
    const double hits = static_cast<double>(i) + 1.0;
    const double precision = hits / (static_cast<double>(ranks[i]) + 1.0);
    if (std::holds_alternative<PlainAP>(kind)) {
      ap += precision / ngood;
    } else {
      const double old_precision =
          ranks[i] == 0 ? 1.0 : static_cast<double>(i) / static_cast<double>(ranks[i]);
      ap += (old_precision + precision) / 2.0 / ngood;
    }
  }
  return ap;
}

// Evaluates queries [first_query, first_query + rows) from a CPU score block [rows, Ng].
inline void evaluate_block(const torch::Tensor& block, int64_t first_query, const int64_t* labels,
                           const int64_t* cameras, const GalleryIds& gallery,
                           const EvalOptions& options, const std::string& caller,
                           QueryOutcomes& out) {
  const bool higher_is_better = std::holds_alternative<Similarity>(options.score_kind());
  AT_DISPATCH_FLOATING_TYPES(block.scalar_type(), "reidnet::evaluate", [&] {
    const auto* scores = block.data_ptr<scalar_t>();
    at::parallel_for(0, block.size(0), 4, [&](int64_t begin, int64_t end) {
      QueryScratch<scalar_t> scratch;
      std::vector<int64_t> ranks;
      for (const auto row : c10::irange(begin, end)) {
        const auto q = first_query + row;
        const auto* row_scores = scores + row * gallery.size;
        const bool finite = higher_is_better
                                ? good_ranks<scalar_t, true>(row_scores, gallery, labels[q],
                                                             cameras[q], scratch, ranks)
                                : good_ranks<scalar_t, false>(row_scores, gallery, labels[q],
                                                              cameras[q], scratch, ranks);
        if (!finite) {
          throw std::runtime_error(fmt::format(
              "{}: the scores of query {} hold NaN or infinity; check the features", caller, q));
        }
        if (ranks.empty()) continue;
        out.has_good[q] = 1;
        out.first_hit[q] = ranks.front();
        out.ap[q] = average_precision(ranks, options.average_precision(), ranks.size());
        out.inp[q] = static_cast<double>(ranks.size()) / (static_cast<double>(ranks.back()) + 1.0);
      }
    });
  });
}

inline EvalResult summarize(QueryOutcomes&& out, int64_t gallery_size) {
  EvalResult result;
  result.num_queries = static_cast<int64_t>(out.ap.size());
  std::vector<double> cmc(static_cast<size_t>(gallery_size), 0.0);
  double ap_sum = 0.0;
  double inp_sum = 0.0;
  for (const auto q : c10::irange(out.ap.size())) {
    ap_sum += out.ap[q];
    if (!out.has_good[q]) continue;
    ++result.num_valid_queries;
    inp_sum += out.inp[q];
    if (out.first_hit[q] >= 0) cmc[static_cast<size_t>(out.first_hit[q])] += 1.0;
  }
  double matched = 0.0;
  for (auto& entry : cmc) {
    matched += entry;
    entry = matched / static_cast<double>(result.num_queries);
  }
  result.cmc = torch::tensor(cmc, torch::kDouble);
  result.ap = torch::tensor(out.ap, torch::kDouble);
  result.first_hit = torch::tensor(out.first_hit, torch::kLong);
  result.mAP = ap_sum / static_cast<double>(result.num_queries);
  result.mINP =
      result.num_valid_queries > 0 ? inp_sum / static_cast<double>(result.num_valid_queries) : 0.0;
  return result;
}

// Checks and converts the label/camera tensors of one evaluation.
struct CheckedIds {
  torch::Tensor query_labels, query_cameras, gallery_labels, gallery_cameras;
  GalleryIds gallery() const {
    return {gallery_labels.data_ptr<int64_t>(), gallery_cameras.data_ptr<int64_t>(),
            gallery_labels.size(0)};
  }
};

inline CheckedIds check_ids(const torch::Tensor& ql, const torch::Tensor& qc,
                            const torch::Tensor& gl, const torch::Tensor& gc, int64_t num_queries,
                            int64_t num_gallery, const std::string& query_rows,
                            const std::string& gallery_rows, const std::string& caller) {
  if (num_queries == 0) {
    throw std::runtime_error(fmt::format(
        "{}: there are no queries ({}); evaluation needs at least one", caller, query_rows));
  }
  if (num_gallery == 0) {
    throw std::runtime_error(
        fmt::format("{}: the gallery is empty ({}); evaluation needs at least one gallery image",
                    caller, gallery_rows));
  }
  return {checked_ids(ql, num_queries, "query labels", query_rows, caller),
          checked_ids(qc, num_queries, "query cameras", query_rows, caller),
          checked_ids(gl, num_gallery, "gallery labels", gallery_rows, caller),
          checked_ids(gc, num_gallery, "gallery cameras", gallery_rows, caller)};
}

inline int64_t checked_block(const EvalOptions& options, const std::string& caller) {
  if (options.query_block() < 1) {
    throw std::runtime_error(fmt::format("{}: EvalOptions::query_block must be >= 1, got {}",
                                         caller, options.query_block()));
  }
  return options.query_block();
}

}  // namespace detail

/// Evaluates a score matrix [num_queries, num_gallery] (any device, float/double): similarities
/// by default, or distances with `EvalOptions().score_kind(kDistance)`. Labels and cameras are
/// 1-D integer tensors; label -1 marks junk detections, 0 distractors.
inline EvalResult evaluate_scores(const torch::Tensor& scores, const torch::Tensor& query_labels,
                                  const torch::Tensor& query_cameras,
                                  const torch::Tensor& gallery_labels,
                                  const torch::Tensor& gallery_cameras,
                                  const EvalOptions& options = {}) {
  const std::string caller = "reidnet::evaluate_scores";
  detail::check_matrix(scores, "scores", caller);
  const auto rows = fmt::format("scores {}", detail::shape_of(scores));
  const auto ids = detail::check_ids(query_labels, query_cameras, gallery_labels, gallery_cameras,
                                     scores.size(0), scores.size(1), rows, rows, caller);
  const auto block_rows = detail::checked_block(options, caller);
  const auto dtype = scores.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  detail::QueryOutcomes out(scores.size(0));
  const auto gallery = ids.gallery();
  for (int64_t begin = 0; begin < scores.size(0); begin += block_rows) {
    const auto end = std::min(begin + block_rows, scores.size(0));
    const auto block = scores.slice(0, begin, end).to(torch::kCPU, dtype).contiguous();
    detail::evaluate_block(block, begin, ids.query_labels.data_ptr<int64_t>(),
                           ids.query_cameras.data_ptr<int64_t>(), gallery, options, caller, out);
  }
  return detail::summarize(std::move(out), scores.size(1));
}

/// Evaluates query features [Nq, D] against gallery features [Ng, D] by dot product (cosine for
/// L2-normalised features), on the query features' device. See `evaluate_scores` for the ids.
inline EvalResult evaluate(const torch::Tensor& query_features, const torch::Tensor& query_labels,
                           const torch::Tensor& query_cameras,
                           const torch::Tensor& gallery_features,
                           const torch::Tensor& gallery_labels,
                           const torch::Tensor& gallery_cameras, const EvalOptions& options = {}) {
  const std::string caller = "reidnet::evaluate";
  detail::check_feature_pair(query_features, gallery_features, caller);
  const auto ids = detail::check_ids(
      query_labels, query_cameras, gallery_labels, gallery_cameras, query_features.size(0),
      gallery_features.size(0), fmt::format("query features {}", detail::shape_of(query_features)),
      fmt::format("gallery features {}", detail::shape_of(gallery_features)), caller);
  const auto block_rows = detail::checked_block(options, caller);
  if (!std::holds_alternative<Similarity>(options.score_kind())) {
    throw std::runtime_error(
        fmt::format("{}: features are ranked by similarity; EvalOptions::score_kind(kDistance) "
                    "applies to evaluate_scores only",
                    caller));
  }
  const auto dtype =
      query_features.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  const auto queries = query_features.to(dtype);
  const auto gallery_t = gallery_features.to(query_features.device(), dtype).t();
  detail::QueryOutcomes out(query_features.size(0));
  const auto gallery = ids.gallery();
  for (int64_t begin = 0; begin < queries.size(0); begin += block_rows) {
    const auto end = std::min(begin + block_rows, queries.size(0));
    const auto block = queries.slice(0, begin, end).matmul(gallery_t).to(torch::kCPU).contiguous();
    detail::evaluate_block(block, begin, ids.query_labels.data_ptr<int64_t>(),
                           ids.query_cameras.data_ptr<int64_t>(), gallery, options, caller, out);
  }
  return detail::summarize(std::move(out), gallery_features.size(0));
}

namespace detail {

// Good matches of each query in the whole gallery (same id, other camera), counted once per
// id and per (id, camera) instead of once per query and gallery picture.
inline std::vector<int64_t> good_counts(const CheckedIds& ids) {
  std::unordered_map<int64_t, int64_t> per_label;
  std::map<std::pair<int64_t, int64_t>, int64_t> per_label_camera;
  const auto gallery = ids.gallery();
  for (const auto j : c10::irange(gallery.size)) {
    if (gallery.labels[j] == -1) continue;
    ++per_label[gallery.labels[j]];
    ++per_label_camera[{gallery.labels[j], gallery.cameras[j]}];
  }
  const auto num_queries = ids.query_labels.size(0);
  const auto* labels = ids.query_labels.data_ptr<int64_t>();
  const auto* cameras = ids.query_cameras.data_ptr<int64_t>();
  std::vector<int64_t> counts(static_cast<size_t>(num_queries), 0);
  for (const auto q : c10::irange(num_queries)) {
    if (labels[q] == -1) continue;
    const auto label = per_label.find(labels[q]);
    if (label == per_label.end()) continue;
    const auto same_camera = per_label_camera.find({labels[q], cameras[q]});
    counts[static_cast<size_t>(q)] =
        label->second - (same_camera == per_label_camera.end() ? 0 : same_camera->second);
  }
  return counts;
}

}  // namespace detail

/// Evaluates each query's top-k list (`indices` int64 [Nq, k] of gallery rows, best first, -1
/// after the end of a short list; `scores` [Nq, k], similarities unless options say
/// distances), as a gallery index's search returns them, without the dense score matrix.
///
/// Each list is put in the order `evaluate` ranks (better score first, ties by gallery row),
/// junk is removed, and every good match the list leaves out counts as never retrieved:
/// - Rank@r is exact for every r up to the list's length (a first hit within the top r is in
///   the list);
/// - AP divides by all of the query's good matches in the gallery, so truncated AP, and mAP,
///   are lower bounds, missing only the good matches ranked below k;
/// - a query whose good matches are not all in its list has INP 0 (also a lower bound).
/// A list of the whole gallery gives exactly what `evaluate_scores` gives on the same scores.
inline EvalResult evaluate_top_k(const torch::Tensor& indices, const torch::Tensor& scores,
                                 const torch::Tensor& query_labels,
                                 const torch::Tensor& query_cameras,
                                 const torch::Tensor& gallery_labels,
                                 const torch::Tensor& gallery_cameras,
                                 const EvalOptions& options = {}) {
  const std::string caller = "reidnet::evaluate_top_k";
  detail::check_matrix(scores, "scores", caller);
  if (!indices.defined() || indices.dim() != 2 || indices.sizes() != scores.sizes() ||
      c10::isFloatingType(indices.scalar_type()) || indices.scalar_type() == torch::kBool) {
    throw std::runtime_error(
        fmt::format("{}: indices must be an integer tensor of the scores' shape {}, got {}", caller,
                    detail::shape_of(scores), indices.defined() ? detail::shape_of(indices) : "none"));
  }
  const auto rows = fmt::format("lists {}", detail::shape_of(indices));
  const auto gallery_size = gallery_labels.defined() && gallery_labels.dim() == 1
                                ? gallery_labels.size(0) : int64_t{-1};
  const auto ids = detail::check_ids(query_labels, query_cameras, gallery_labels, gallery_cameras,
                                     indices.size(0), gallery_size, rows,
                                     fmt::format("gallery labels [{}]", gallery_size), caller);
  const auto list_indices = indices.to(torch::kCPU, torch::kLong).contiguous();
  const auto list_scores = scores.to(torch::kCPU, torch::kDouble).contiguous();
  const auto total_good = detail::good_counts(ids);
  const auto gallery = ids.gallery();
  const auto* labels = ids.query_labels.data_ptr<int64_t>();
  const auto* cameras = ids.query_cameras.data_ptr<int64_t>();
  const auto* all_indices = list_indices.data_ptr<int64_t>();
  const auto* all_scores = list_scores.data_ptr<double>();
  const auto k = indices.size(1);
  const bool higher_is_better = std::holds_alternative<Similarity>(options.score_kind());
  detail::QueryOutcomes out(indices.size(0));
  at::parallel_for(0, indices.size(0), 16, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> order;
    std::vector<int64_t> ranks;
    for (const auto q : c10::irange(begin, end)) {
      const auto* row = all_indices + q * k;
      const auto* row_scores = all_scores + q * k;
      order.clear();
      for (const auto e : c10::irange(k)) {
        if (row[e] < 0) continue;
        if (row[e] >= gallery.size || !std::isfinite(row_scores[e])) {
          throw std::runtime_error(fmt::format(
              "{}: the list of query {} holds gallery row {} with score {} (the gallery has {} "
              "rows; scores must be finite)",
              caller, q, row[e], row_scores[e], gallery.size));
        }
        order.push_back(e);
      }
      std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        const double sa = row_scores[a];
        const double sb = row_scores[b];
        const bool better = higher_is_better ? sa > sb : sa < sb;
        return better || (sa == sb && row[a] < row[b]);
      });
      for (size_t e = 1; e < order.size(); ++e) {
        if (row[order[e]] == row[order[e - 1]]) {
          throw std::runtime_error(fmt::format("{}: the list of query {} holds gallery row {} "
                                               "twice", caller, q, row[order[e]]));
        }
      }
      ranks.clear();
      int64_t rank = 0;
      for (const auto e : order) {
        const auto j = row[e];
        if (gallery.junk(j, labels[q], cameras[q])) continue;
        if (gallery.good(j, labels[q], cameras[q])) ranks.push_back(rank);
        ++rank;
      }
      const auto good = static_cast<size_t>(total_good[static_cast<size_t>(q)]);
      if (good == 0) continue;
      out.has_good[q] = 1;
      out.inp[q] = 0.0;
      if (ranks.empty()) continue;
      out.first_hit[q] = ranks.front();
      out.ap[q] = detail::average_precision(ranks, options.average_precision(), good);
      if (ranks.size() == good) {
        out.inp[q] = static_cast<double>(good) / (static_cast<double>(ranks.back()) + 1.0);
      }
    }
  });
  return detail::summarize(std::move(out), gallery.size);
}

/// Options of `top_k_ranks`.
struct RankOptions {
  /// Length of each ranked list.
  TORCH_ARG(int64_t, k) = 10;
  /// Leave junk (same id and camera, id -1) out of the lists, as the baseline's demo does.
  TORCH_ARG(bool, skip_junk) = true;
  TORCH_ARG(ScoreKind, score_kind) = Similarity{};
};

/// The top of each query's ranked gallery list; entries past the end of a short list are
/// index -1, score NaN, good false.
struct RankedLists {
  torch::Tensor indices;  // int64 [Nq, k]: gallery indices, best first
  torch::Tensor scores;   // float64 [Nq, k]
  torch::Tensor good;     // bool [Nq, k]: a true match (same id, other camera)
};

/// Ranked gallery lists for pictures and rank files (ties in gallery order, as `evaluate`).
///
///     auto top = reidnet::top_k_ranks(qf.matmul(gf.t()), ql, qc, gl, gc);
inline RankedLists top_k_ranks(const torch::Tensor& scores, const torch::Tensor& query_labels,
                               const torch::Tensor& query_cameras,
                               const torch::Tensor& gallery_labels,
                               const torch::Tensor& gallery_cameras,
                               const RankOptions& options = {}) {
  const std::string caller = "reidnet::top_k_ranks";
  detail::check_matrix(scores, "scores", caller);
  if (options.k() < 1) {
    throw std::runtime_error(
        fmt::format("{}: RankOptions::k must be >= 1, got {}", caller, options.k()));
  }
  const auto rows = fmt::format("scores {}", detail::shape_of(scores));
  const auto ids = detail::check_ids(query_labels, query_cameras, gallery_labels, gallery_cameras,
                                     scores.size(0), scores.size(1), rows, rows, caller);
  const auto values = scores.to(torch::kCPU, torch::kDouble).contiguous();
  const auto num_queries = scores.size(0);
  const auto k = options.k();
  RankedLists lists{
      torch::full({num_queries, k}, -1, torch::kLong),
      torch::full({num_queries, k}, std::numeric_limits<double>::quiet_NaN(), torch::kDouble),
      torch::zeros({num_queries, k}, torch::kBool)};
  const auto gallery = ids.gallery();
  const auto* labels = ids.query_labels.data_ptr<int64_t>();
  const auto* cameras = ids.query_cameras.data_ptr<int64_t>();
  const auto* all_scores = values.data_ptr<double>();
  auto* out_index = lists.indices.data_ptr<int64_t>();
  auto* out_score = lists.scores.data_ptr<double>();
  auto* out_good = lists.good.data_ptr<bool>();
  const bool higher_is_better = std::holds_alternative<Similarity>(options.score_kind());
  at::parallel_for(0, num_queries, 4, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> candidates;
    for (const auto q : c10::irange(begin, end)) {
      const auto* row = all_scores + q * gallery.size;
      candidates.clear();
      for (const auto j : c10::irange(gallery.size)) {
        if (!options.skip_junk() || !gallery.junk(j, labels[q], cameras[q])) {
          candidates.push_back(j);
        }
      }
      const auto kept = std::min<int64_t>(k, static_cast<int64_t>(candidates.size()));
      const auto middle = candidates.begin() + kept;
      if (higher_is_better) {
        std::partial_sort(candidates.begin(), middle, candidates.end(),
                          detail::RankOrder<double, true>{row});
      } else {
        std::partial_sort(candidates.begin(), middle, candidates.end(),
                          detail::RankOrder<double, false>{row});
      }
      for (const auto r : c10::irange(kept)) {
        const auto j = candidates[static_cast<size_t>(r)];
        out_index[q * k + r] = j;
        out_score[q * k + r] = row[j];
        out_good[q * k + r] = gallery.good(j, labels[q], cameras[q]);
      }
    }
  });
  return lists;
}

}  // namespace reidnet
