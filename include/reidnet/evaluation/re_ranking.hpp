#pragma once
/// k-reciprocal re-ranking (Zhong et al. 2017) with the Python baseline's
/// exact conventions, in bounded memory.
///
/// Convention (the baseline's re_ranking.py, called by its evaluate_rerank.py): the inputs are
/// dot-product **similarities** of L2-normalised features (q_g = qf gf^T, q_q = qf qf^T,
/// g_g = gf gf^T), not distances. Inside, a similarity s becomes the distance (2 - 2 s)^2 in
/// float32 - the baseline squares the squared Euclidean distance 2 - 2 s of unit vectors once
/// more - and each image's row is divided by its maximum. The result is the re-ranked
/// **distance** [Nq, Ng], lower = better: (1 - lambda) * Jaccard + lambda * that distance.
/// It matches the baseline within 1e-5 (tests/python/evaluate_reference.py).
///
/// Memory: the baseline holds several dense (Nq+Ng)^2 float matrices (over 10 GB at
/// Market-1501 size). Here the distance matrix is visited in row blocks, keeping only each
/// image's k1+1 nearest neighbours and the query rows, and V is sparse. Besides the inputs,
/// the result [Nq, Ng] and one block, memory is O((Nq+Ng) * neighbours). `re_ranking_features`
/// never stores the similarity matrices at all.
///
///     auto distance = reidnet::re_ranking(qf.mm(gf.t()), qf.mm(qf.t()), gf.mm(gf.t()));
///     auto result = reidnet::evaluate_scores(distance, ql, qc, gl, gc,
///                                            reidnet::EvalOptions().score_kind(reidnet::kDistance));

#include <reidnet/evaluation/detail/k_reciprocal.hpp>
#include <reidnet/evaluation/detail/ranking.hpp>

#include <c10/util/irange.h>
#include <torch/arg.h>
#include <torch/types.h>

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace reidnet {

/// Parameters of k-reciprocal re-ranking; the defaults are the paper's and the baseline's.
struct ReRankingOptions {
  /// Size of the k-reciprocal neighbourhood.
  TORCH_ARG(int64_t, k1) = 20;
  /// Neighbours averaged by local query expansion (1 = none); at most k1 + 1.
  TORCH_ARG(int64_t, k2) = 6;
  /// Weight of the original distance against the Jaccard distance, in [0, 1].
  TORCH_ARG(double, lambda) = 0.3;
  /// Rows of the (Nq+Ng)^2 distance matrix computed at once: bounds the working memory.
  TORCH_ARG(int64_t, block_rows) = 512;
};

namespace detail {

inline void check_rerank_options(const ReRankingOptions& options, int64_t total,
                                 const std::string& caller) {
  if (options.k1() < 1) {
    throw std::runtime_error(fmt::format("{}: k1 must be >= 1, got {}", caller, options.k1()));
  }
  if (options.k2() < 1 || options.k2() > options.k1() + 1) {
    throw std::runtime_error(fmt::format("{}: k2 must be in [1, k1 + 1 = {}], got {}", caller,
                                         options.k1() + 1, options.k2()));
  }
  if (!(options.lambda() >= 0.0 && options.lambda() <= 1.0)) {
    throw std::runtime_error(
        fmt::format("{}: lambda must be in [0, 1], got {}", caller, options.lambda()));
  }
  if (options.block_rows() < 1) {
    throw std::runtime_error(
        fmt::format("{}: block_rows must be >= 1, got {}", caller, options.block_rows()));
  }
  if (total <= options.k1()) {
    throw std::runtime_error(
        fmt::format("{}: k1 = {} needs more than k1 images in total (queries + gallery), got {}; "
                    "lower k1",
                    caller, options.k1(), total));
  }
}

inline void check_not_empty(int64_t queries, int64_t gallery, const std::string& shapes,
                            const std::string& caller) {
  if (queries == 0 || gallery == 0) {
    throw std::runtime_error(
        fmt::format("{}: needs at least one query and one gallery image, got {}", caller, shapes));
  }
}

}  // namespace detail

/// Re-ranks from the baseline's three similarity matrices (any device; computed on the CPU).
/// q_g [Nq, Ng], q_q [Nq, Nq], g_g [Ng, Ng]; returns the re-ranked distance [Nq, Ng], float32 CPU.
inline torch::Tensor re_ranking(const torch::Tensor& q_g, const torch::Tensor& q_q,
                                const torch::Tensor& g_g, const ReRankingOptions& options = {}) {
  const std::string caller = "reidnet::re_ranking";
  detail::check_matrix(q_g, "q_g", caller);
  detail::check_matrix(q_q, "q_q", caller);
  detail::check_matrix(g_g, "g_g", caller);
  const auto nq = q_g.size(0);
  const auto ng = q_g.size(1);
  const auto shapes = fmt::format("q_g {}, q_q {}, g_g {}", detail::shape_of(q_g),
                                  detail::shape_of(q_q), detail::shape_of(g_g));
  if (q_q.size(0) != nq || q_q.size(1) != nq || g_g.size(0) != ng || g_g.size(1) != ng) {
    throw std::runtime_error(fmt::format(
        "{}: shapes must be q_g [Nq, Ng], q_q [Nq, Nq], g_g [Ng, Ng]; got {}", caller, shapes));
  }
  detail::check_not_empty(nq, ng, shapes, caller);
  detail::check_rerank_options(options, nq + ng, caller);
  const bool wide = q_g.scalar_type() == torch::kDouble || q_q.scalar_type() == torch::kDouble ||
                    g_g.scalar_type() == torch::kDouble;
  const auto dtype = wide ? torch::kDouble : torch::kFloat;
  auto cpu = [&](const torch::Tensor& m) { return m.to(torch::kCPU, dtype).contiguous(); };
  detail::SimilarityBlocks source{cpu(q_g), cpu(q_q), cpu(g_g)};
  return detail::k_reciprocal_rerank(source, nq, options.k1(), options.k2(), options.lambda(),
                                     options.block_rows());
}

/// The positional form: `re_ranking(q_g, q_q, g_g, 20, 6, 0.3)`.
inline torch::Tensor re_ranking(const torch::Tensor& q_g, const torch::Tensor& q_q,
                                const torch::Tensor& g_g, int64_t k1, int64_t k2 = 6,
                                double lambda = 0.3) {
  return re_ranking(q_g, q_q, g_g, ReRankingOptions().k1(k1).k2(k2).lambda(lambda));
}

/// Re-ranks straight from query [Nq, D] and gallery [Ng, D] features (the same result as
/// `re_ranking` on their dot products, up to float rounding): the similarity blocks are
/// computed row block by row block on the features' device and never stored, so Market-1501
/// needs well under 1 GB.
inline torch::Tensor re_ranking_features(const torch::Tensor& query_features,
                                         const torch::Tensor& gallery_features,
                                         const ReRankingOptions& options = {}) {
  const std::string caller = "reidnet::re_ranking_features";
  detail::check_feature_pair(query_features, gallery_features, caller);
  const auto nq = query_features.size(0);
  const auto ng = gallery_features.size(0);
  detail::check_not_empty(
      nq, ng,
      fmt::format("query features {}, gallery features {}", detail::shape_of(query_features),
                  detail::shape_of(gallery_features)),
      caller);
  detail::check_rerank_options(options, nq + ng, caller);
  const auto features = torch::cat({query_features.to(torch::kFloat),
                                    gallery_features.to(query_features.device(), torch::kFloat)})
                            .contiguous();
  detail::SimilarityFromFeatures source{features, features.to(torch::kCPU).contiguous()};
  return detail::k_reciprocal_rerank(source, nq, options.k1(), options.k2(), options.lambda(),
                                     options.block_rows());
}

/// Neighbour lists of all N = Nq + Ng images (queries first, then the gallery), as a
/// nearest-neighbour search over the features gives them (reidnet::knn_re_ranking makes them
/// with a gallery index).
struct NeighbourGraph {
  /// int64 [N, c], c >= k1 + 1: each image's candidate nearest images among all N (itself
  /// included), in any order, -1 for none; re-scored here from the features.
  torch::Tensor neighbours;
  /// float [N]: each image's lowest similarity to any of the N images (its farthest one).
  torch::Tensor farthest;
  /// int64 [Nq, k]: each query's k nearest gallery rows (-1 for none); k is the length of
  /// the lists returned.
  torch::Tensor candidates;
};

/// Each query's top k after re-ranking, best (lowest distance) first; a shorter list is
/// padded with index -1 and distance infinity.
struct ReRankedLists {
  torch::Tensor distances;  ///< float32 [Nq, k]: re-ranked distances, lower = better
  torch::Tensor indices;    ///< int64 [Nq, k]: gallery rows
};

/// k-reciprocal re-ranking from neighbour lists, in memory O(N (k1 + k)) instead of the
/// O(N^2) of the dense matrices: the same algorithm and float32 arithmetic as `re_ranking`
/// (each image's distances are divided by its farthest one's, as the baseline's are), so with
/// exact neighbour lists the k best of each query, and their distances, are those of
/// `re_ranking_features`'s row. Features [Nq, D] and [Ng, D] as `re_ranking_features` takes
/// them (L2-normalised); distances between listed images are computed from them exactly.
inline ReRankedLists re_ranking_neighbours(const torch::Tensor& query_features,
                                           const torch::Tensor& gallery_features,
                                           const NeighbourGraph& graph,
                                           const ReRankingOptions& options = {}) {
  const std::string caller = "reidnet::re_ranking_neighbours";
  detail::check_feature_pair(query_features, gallery_features, caller);
  const auto nq = query_features.size(0);
  const auto ng = gallery_features.size(0);
  const auto n = nq + ng;
  detail::check_not_empty(nq, ng,
                          fmt::format("query features {}, gallery features {}",
                                      detail::shape_of(query_features),
                                      detail::shape_of(gallery_features)),
                          caller);
  detail::check_rerank_options(options, n, caller);
  const auto width = options.k1() + 1;
  const auto check_table = [&](const torch::Tensor& table, const char* what, int64_t rows,
                               int64_t min_columns, int64_t bound) {
    if (!table.defined() || table.dim() != 2 || table.size(0) != rows ||
        table.size(1) < min_columns || table.scalar_type() != torch::kLong) {
      throw std::runtime_error(fmt::format("{}: {} must be int64 [{}, >= {}], got {}", caller,
                                           what, rows, min_columns,
                                           table.defined() ? detail::shape_of(table) : "none"));
    }
    auto cpu = table.to(torch::kCPU).contiguous();
    if ((cpu < -1).any().item<bool>() || (cpu >= bound).any().item<bool>()) {
      throw std::runtime_error(
          fmt::format("{}: {} hold entries outside -1..{}", caller, what, bound - 1));
    }
    return cpu;
  };
  const auto neighbours = check_table(graph.neighbours, "graph.neighbours", n, width, n);
  const auto candidates = check_table(graph.candidates, "graph.candidates", nq, 1, ng);
  if (!graph.farthest.defined() || graph.farthest.dim() != 1 || graph.farthest.size(0) != n) {
    throw std::runtime_error(fmt::format("{}: graph.farthest must be [{}], got {}", caller, n,
                                         graph.farthest.defined() ? detail::shape_of(graph.farthest)
                                                                  : "none"));
  }
  const auto features = torch::cat({query_features.to(torch::kCPU, torch::kFloat),
                                    gallery_features.to(torch::kCPU, torch::kFloat)})
                            .contiguous();
  const detail::SimilarityFromFeatures source{features, features};
  const auto farthest = graph.farthest.to(torch::kCPU, torch::kFloat).contiguous();
  std::vector<float> row_max(static_cast<size_t>(n));
  for (const auto i : c10::irange(n)) {
    row_max[static_cast<size_t>(i)] = detail::rerank_distance(farthest.data_ptr<float>()[i]);
    if (!(row_max[static_cast<size_t>(i)] > 0.0f) || !std::isfinite(row_max[static_cast<size_t>(i)])) {
      throw std::runtime_error(fmt::format("{}: image {} has farthest similarity {}; expected a "
                                           "finite similarity below 1",
                                           caller, i, farthest.data_ptr<float>()[i]));
    }
  }
  const auto lists = detail::exact_neighbour_lists(source, neighbours, width);
  auto [distances, indices] =
      detail::k_reciprocal_top_k(source, lists, row_max, candidates, nq, options.k1(),
                                 options.k2(), options.lambda(), candidates.size(1));
  return {distances, indices};
}

}  // namespace reidnet
