#pragma once
// Internals of reidnet/evaluation/re_ranking.hpp: k-reciprocal re-ranking (Zhong et al. 2017) computed the
// way the Python baseline's re_ranking.py does, but without its dense N x N matrices: the
// distance matrix is visited in row blocks (only each row's k1+1 nearest neighbours and the
// query rows are kept), and V is sparse (a handful of neighbours per row).
//
// Notation: N = Nq + Ng images, queries first. M = [[q_q, q_g], [q_g^T, g_g]] is the similarity
// matrix. The baseline's distance is D[i, j] = t(M[j, i]) / max_r t(M[r, i]) with
// t(s) = (2 - 2 s)^2 in float32; i.e. row i of D is column i of t(M) divided by its maximum.
// A "source" provides M's columns as rows:
//   int64_t size() const;                              // N
//   torch::Tensor rows(int64_t begin, int64_t end);    // [end - begin, N]: M[:, i] for each i
//   float distance(int64_t i, int64_t j) const;        // t(M[j, i]) (not yet normalised)

#include <reidnet/evaluation/detail/ranking.hpp>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/irange.h>
#include <torch/types.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace reidnet::detail {

// The baseline's distance of a cosine similarity s: (2 - 2 s)^2, in s's own precision.
template <class Scalar>
float rerank_distance(Scalar similarity) {
  const Scalar euclidean = Scalar(2) - Scalar(2) * similarity;
  return static_cast<float>(euclidean * euclidean);
}

// A sparse row-major matrix (CSR) with float values and int32 column indices.
struct SparseRows {
  std::vector<int64_t> offsets;  // size rows + 1
  std::vector<int32_t> columns;  // ascending within a row
  std::vector<float> values;

  int64_t begin(int64_t row) const { return offsets[static_cast<size_t>(row)]; }
  int64_t end(int64_t row) const { return offsets[static_cast<size_t>(row) + 1]; }

  // Packs per-row (columns, values) lists built in parallel.
  static SparseRows pack(std::vector<std::vector<int32_t>>&& row_columns,
                         std::vector<std::vector<float>>&& row_values) {
    SparseRows out;
    out.offsets.assign(row_columns.size() + 1, 0);
    for (const auto r : c10::irange(row_columns.size())) {
      out.offsets[r + 1] = out.offsets[r] + static_cast<int64_t>(row_columns[r].size());
    }
    out.columns.reserve(static_cast<size_t>(out.offsets.back()));
    out.values.reserve(static_cast<size_t>(out.offsets.back()));
    for (const auto r : c10::irange(row_columns.size())) {
      out.columns.insert(out.columns.end(), row_columns[r].begin(), row_columns[r].end());
      out.values.insert(out.values.end(), row_values[r].begin(), row_values[r].end());
      std::vector<int32_t>().swap(row_columns[r]);
      std::vector<float>().swap(row_values[r]);
    }
    return out;
  }

  // The transpose (CSC view of this matrix): rows ascending within each column.
  SparseRows transpose(int64_t num_columns) const {
    SparseRows out;
    out.offsets.assign(static_cast<size_t>(num_columns) + 1, 0);
    for (const auto c : columns) ++out.offsets[static_cast<size_t>(c) + 1];
    for (const auto c : c10::irange(num_columns)) {
      out.offsets[static_cast<size_t>(c) + 1] += out.offsets[static_cast<size_t>(c)];
    }
    out.columns.resize(columns.size());
    out.values.resize(values.size());
    std::vector<int64_t> fill(out.offsets.begin(), out.offsets.end() - 1);
    const auto rows = static_cast<int64_t>(offsets.size()) - 1;
    for (const auto r : c10::irange(rows)) {
      for (auto e = begin(r); e < end(r); ++e) {
        const auto slot = fill[static_cast<size_t>(columns[static_cast<size_t>(e)])]++;
        out.columns[static_cast<size_t>(slot)] = static_cast<int32_t>(r);
        out.values[static_cast<size_t>(slot)] = values[static_cast<size_t>(e)];
      }
    }
    return out;
  }
};

// Each row's k1+1 nearest neighbours (itself usually first), nearest first.
struct NeighbourLists {
  torch::Tensor table;  // int64 [N, k1 + 1], CPU
  const int64_t* row(int64_t i) const { return table.data_ptr<int64_t>() + i * table.size(1); }
};

// The k smallest entries of a row, nearest first (ties by index): one pass with a bounded
// max-heap, which a full sort or torch::topk would make ~20x slower at Market-1501 size.
inline void smallest(const float* row, int64_t n, int64_t k,
                     std::vector<std::pair<float, int64_t>>& heap, int64_t* out) {
  heap.clear();
  for (const auto j : c10::irange(k)) heap.emplace_back(row[j], j);
  std::make_heap(heap.begin(), heap.end());
  for (auto j = k; j < n; ++j) {
    // An equal value never wins: its index is larger than every index in the heap.
    if (row[j] < heap.front().first) {
      std::pop_heap(heap.begin(), heap.end());
      heap.back() = {row[j], j};
      std::push_heap(heap.begin(), heap.end());
    }
  }
  std::sort_heap(heap.begin(), heap.end());
  for (const auto a : c10::irange(k)) out[a] = heap[static_cast<size_t>(a)].second;
}

// Pass over D in row blocks: each row's maximum and k1+1 nearest neighbours, and the
// normalised query-gallery block D[:Nq, Nq:] written into `query_rows` [Nq, Ng]. The
// distances t(s) (the baseline computes them in the similarities' precision, then rounds to
// float32) and the normalisation are fused into one pass per row.
template <class Source>
NeighbourLists nearest_neighbours(Source& source, int64_t num_queries, int64_t k1,
                                  int64_t block_rows, std::vector<float>& row_max,
                                  torch::Tensor& query_rows) {
  const auto n = source.size();
  const auto width = k1 + 1;
  NeighbourLists lists{torch::empty({n, width}, torch::kLong)};
  row_max.assign(static_cast<size_t>(n), 0.0f);
  auto* table = lists.table.data_ptr<int64_t>();
  auto* out = query_rows.data_ptr<float>();
  const auto num_gallery = n - num_queries;
  int64_t begin = 0;
  while (begin < n) {
    // Blocks never straddle the query/gallery boundary.
    const auto limit = begin < num_queries ? num_queries : n;
    const auto end = std::min(begin + block_rows, limit);
    const torch::Tensor similarity = source.rows(begin, end).to(torch::kCPU).contiguous();
    std::atomic<int64_t> bad_row{-1};
    AT_DISPATCH_FLOATING_TYPES(similarity.scalar_type(), "reidnet::re_ranking", [&] {
      const auto* block = similarity.data_ptr<scalar_t>();
      at::parallel_for(0, end - begin, 8, [&](int64_t first, int64_t last) {
        std::vector<float> row(static_cast<size_t>(n));
        std::vector<std::pair<float, int64_t>> heap;
        for (const auto r : c10::irange(first, last)) {
          const auto* source_row = block + r * n;
          float maximum = 0.0f;
          bool finite = true;
          for (const auto j : c10::irange(n)) {
            const float d = rerank_distance(source_row[j]);
            row[static_cast<size_t>(j)] = d;
            finite &= std::isfinite(d);
            maximum = std::max(maximum, d);
          }
          if (!finite) bad_row = begin + r;
          for (auto& d : row) d = d / maximum;
          row_max[static_cast<size_t>(begin + r)] = maximum;
          smallest(row.data(), n, width, heap, table + (begin + r) * width);
          if (begin < num_queries) {
            std::copy(row.begin() + num_queries, row.end(), out + (begin + r) * num_gallery);
          }
        }
      });
    });
    if (bad_row >= 0) {
      throw std::runtime_error(
          fmt::format("reidnet::re_ranking: the similarities of image {} hold NaN or infinity",
                      bad_row.load()));
    }
    begin = end;
  }
  return lists;
}

// Images among the first k+1 neighbours of i that have i among their own first k+1,
// in i's neighbour order.
inline void k_reciprocal(const NeighbourLists& lists, int64_t i, int64_t k,
                         std::vector<int32_t>& out) {
  out.clear();
  const auto* forward = lists.row(i);
  for (const auto a : c10::irange(k + 1)) {
    const auto* backward = lists.row(forward[a]);
    if (std::find(backward, backward + k + 1, i) != backward + k + 1) {
      out.push_back(static_cast<int32_t>(forward[a]));
    }
  }
}

// V: for each row, the k-reciprocal set grown by the candidates' (k1/2)-reciprocal sets that
// overlap it by more than 2/3, weighted by exp(-D) and normalised to sum 1.
template <class Source>
SparseRows reciprocal_weights(const Source& source, const NeighbourLists& lists,
                              const std::vector<float>& row_max, int64_t k1) {
  const auto n = source.size();
  // int(np.around(k1 / 2)): rounds half to even, e.g. 7 -> 4, 5 -> 2.
  const auto half = static_cast<int64_t>(std::nearbyint(static_cast<double>(k1) / 2.0));
  std::vector<std::vector<int32_t>> columns(static_cast<size_t>(n));
  std::vector<std::vector<float>> values(static_cast<size_t>(n));
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    std::vector<int32_t> reciprocal;
    std::vector<int32_t> candidate_set;
    for (const auto i : c10::irange(begin, end)) {
      k_reciprocal(lists, i, k1, reciprocal);
      auto& expansion = columns[static_cast<size_t>(i)];
      expansion = reciprocal;
      for (const auto candidate : reciprocal) {
        k_reciprocal(lists, candidate, half, candidate_set);
        const auto shared =
            std::count_if(candidate_set.begin(), candidate_set.end(), [&](int32_t c) {
              return std::find(reciprocal.begin(), reciprocal.end(), c) != reciprocal.end();
            });
        if (static_cast<double>(shared) > 2.0 / 3 * static_cast<double>(candidate_set.size())) {
          expansion.insert(expansion.end(), candidate_set.begin(), candidate_set.end());
        }
      }
      std::sort(expansion.begin(), expansion.end());
      expansion.erase(std::unique(expansion.begin(), expansion.end()), expansion.end());
      auto& weights = values[static_cast<size_t>(i)];
      weights.resize(expansion.size());
      double total = 0.0;
      for (const auto e : c10::irange(expansion.size())) {
        const float d = source.distance(i, expansion[e]) / row_max[static_cast<size_t>(i)];
        weights[e] = std::exp(-d);
        total += weights[e];
      }
      for (auto& w : weights) w = w / static_cast<float>(total);
    }
  });
  return SparseRows::pack(std::move(columns), std::move(values));
}

// Local query expansion: each row becomes the mean of the rows of its k2 nearest neighbours.
inline SparseRows expand_queries(const SparseRows& weights, const NeighbourLists& lists, int64_t n,
                                 int64_t k2) {
  std::vector<std::vector<int32_t>> columns(static_cast<size_t>(n));
  std::vector<std::vector<float>> values(static_cast<size_t>(n));
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    std::vector<float> dense(static_cast<size_t>(n), 0.0f);
    std::vector<char> seen(static_cast<size_t>(n), 0);
    for (const auto i : c10::irange(begin, end)) {
      auto& touched = columns[static_cast<size_t>(i)];
      const auto* neighbours = lists.row(i);
      for (const auto a : c10::irange(k2)) {
        const auto r = neighbours[a];
        for (auto e = weights.begin(r); e < weights.end(r); ++e) {
          const auto c = weights.columns[static_cast<size_t>(e)];
          if (!seen[static_cast<size_t>(c)]) {
            seen[static_cast<size_t>(c)] = 1;
            touched.push_back(c);
          }
          dense[static_cast<size_t>(c)] += weights.values[static_cast<size_t>(e)];
        }
      }
      std::sort(touched.begin(), touched.end());
      auto& row_values = values[static_cast<size_t>(i)];
      row_values.reserve(touched.size());
      for (const auto c : touched) {
        row_values.push_back(dense[static_cast<size_t>(c)] / static_cast<float>(k2));
        dense[static_cast<size_t>(c)] = 0.0f;
        seen[static_cast<size_t>(c)] = 0;
      }
    }
  });
  return SparseRows::pack(std::move(columns), std::move(values));
}

// final[q, g] = jaccard(q, Nq + g) * (1 - lambda) + D[q, Nq + g] * lambda, in place over the
// normalised query rows of D. jaccard = 1 - m / (2 - m), m = sum_k min(V[q, k], V[j, k]).
inline void blend_jaccard(const SparseRows& weights, int64_t n, int64_t num_queries, double lambda,
                          torch::Tensor& query_rows) {
  const auto by_column = weights.transpose(n);
  const auto num_gallery = n - num_queries;
  const auto keep = static_cast<float>(lambda);
  const auto mix = static_cast<float>(1.0 - lambda);
  auto* out = query_rows.data_ptr<float>();
  at::parallel_for(0, num_queries, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> overlap(static_cast<size_t>(n), 0.0f);
    for (const auto q : c10::irange(begin, end)) {
      std::fill(overlap.begin(), overlap.end(), 0.0f);
      for (auto e = weights.begin(q); e < weights.end(q); ++e) {
        const auto k = weights.columns[static_cast<size_t>(e)];
        const auto mine = weights.values[static_cast<size_t>(e)];
        for (auto f = by_column.begin(k); f < by_column.end(k); ++f) {
          const auto j = by_column.columns[static_cast<size_t>(f)];
          overlap[static_cast<size_t>(j)] +=
              std::min(mine, by_column.values[static_cast<size_t>(f)]);
        }
      }
      auto* row = out + q * num_gallery;
      for (const auto g : c10::irange(num_gallery)) {
        const float m = overlap[static_cast<size_t>(num_queries + g)];
        const float jaccard = 1.0f - m / (2.0f - m);
        row[g] = jaccard * mix + row[g] * keep;
      }
    }
  });
}

// The whole algorithm over any source; returns the re-ranked distance [Nq, Ng].
template <class Source>
torch::Tensor k_reciprocal_rerank(Source& source, int64_t num_queries, int64_t k1, int64_t k2,
                                  double lambda, int64_t block_rows) {
  const auto n = source.size();
  auto query_rows = torch::empty({num_queries, n - num_queries}, torch::kFloat);
  std::vector<float> row_max;
  const auto lists = nearest_neighbours(source, num_queries, k1, block_rows, row_max, query_rows);
  auto weights = reciprocal_weights(source, lists, row_max, k1);
  if (k2 != 1) weights = expand_queries(weights, lists, n, k2);
  blend_jaccard(weights, n, num_queries, lambda, query_rows);
  return query_rows;
}

// Each image's `width` nearest among candidate images (int64 [N, c], -1 = none), by the
// source's exact distance, ties by index: what `smallest` gives over a full row, provided
// the candidates hold the true nearest.
template <class Source>
NeighbourLists exact_neighbour_lists(const Source& source, const torch::Tensor& candidates,
                                     int64_t width) {
  const auto n = source.size();
  NeighbourLists lists{torch::empty({n, width}, torch::kLong)};
  auto* table = lists.table.data_ptr<int64_t>();
  const auto* all = candidates.data_ptr<int64_t>();
  const auto c = candidates.size(1);
  std::atomic<int64_t> short_row{-1};
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    std::vector<std::pair<float, int64_t>> scored;
    for (const auto i : c10::irange(begin, end)) {
      scored.clear();
      for (const auto a : c10::irange(c)) {
        const auto j = all[i * c + a];
        if (j >= 0) scored.emplace_back(source.distance(i, j), j);
      }
      std::sort(scored.begin(), scored.end());
      scored.erase(std::unique(scored.begin(), scored.end()), scored.end());
      if (static_cast<int64_t>(scored.size()) < width) {
        short_row = i;
        continue;
      }
      for (const auto a : c10::irange(width)) table[i * width + a] = scored[static_cast<size_t>(a)].second;
    }
  });
  if (short_row >= 0) {
    throw std::runtime_error(fmt::format("reidnet::re_ranking_neighbours: image {} has fewer than "
                                         "k1 + 1 = {} distinct neighbours",
                                         short_row.load(), width));
  }
  return lists;
}

// The top `k` of the re-ranked distance of each query, from neighbour lists instead of the
// distance matrix: memory O(N (k1 + k)) instead of O(Nq Ng). A gallery picture whose V row
// shares no image with the query's has Jaccard distance 1, so among those the original
// distance alone orders them; the top k thus lies among the pictures that share an image and
// the query's k nearest by original distance (`candidates`, int64 [Nq, k] gallery rows).
// Returns (distances float32 [Nq, k], indices int64 [Nq, k]), best first, ties by gallery
// row, padded with (inf, -1) where fewer than k candidates exist.
template <class Source>
std::pair<torch::Tensor, torch::Tensor> k_reciprocal_top_k(
    const Source& source, const NeighbourLists& lists, const std::vector<float>& row_max,
    const torch::Tensor& candidates, int64_t num_queries, int64_t k1, int64_t k2, double lambda,
    int64_t k) {
  const auto n = source.size();
  auto weights = reciprocal_weights(source, lists, row_max, k1);
  if (k2 != 1) weights = expand_queries(weights, lists, n, k2);
  const auto by_column = weights.transpose(n);
  const auto keep = static_cast<float>(lambda);
  const auto mix = static_cast<float>(1.0 - lambda);
  auto distances = torch::full({num_queries, k}, std::numeric_limits<float>::infinity(), torch::kFloat);
  auto indices = torch::full({num_queries, k}, -1, torch::kLong);
  auto* out_distance = distances.data_ptr<float>();
  auto* out_index = indices.data_ptr<int64_t>();
  const auto* nearest = candidates.data_ptr<int64_t>();
  const auto width = candidates.size(1);
  at::parallel_for(0, num_queries, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> overlap(static_cast<size_t>(n), 0.0f);
    std::vector<int64_t> touched;
    std::vector<std::pair<float, int64_t>> scored;
    for (const auto q : c10::irange(begin, end)) {
      touched.clear();
      for (auto e = weights.begin(q); e < weights.end(q); ++e) {
        const auto c = weights.columns[static_cast<size_t>(e)];
        const auto mine = weights.values[static_cast<size_t>(e)];
        for (auto f = by_column.begin(c); f < by_column.end(c); ++f) {
          const auto j = by_column.columns[static_cast<size_t>(f)];
          if (j >= num_queries && overlap[static_cast<size_t>(j)] == 0.0f) touched.push_back(j - num_queries);
          overlap[static_cast<size_t>(j)] += std::min(mine, by_column.values[static_cast<size_t>(f)]);
        }
      }
      for (const auto a : c10::irange(width)) {
        if (nearest[q * width + a] >= 0) touched.push_back(nearest[q * width + a]);
      }
      std::sort(touched.begin(), touched.end());
      touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
      scored.clear();
      for (const auto g : touched) {
        const float m = overlap[static_cast<size_t>(num_queries + g)];
        const float jaccard = 1.0f - m / (2.0f - m);
        const float original = source.distance(q, num_queries + g) / row_max[static_cast<size_t>(q)];
        scored.emplace_back(jaccard * mix + original * keep, g);
      }
      // Clear the sums (query images' included) for the next query.
      for (auto e = weights.begin(q); e < weights.end(q); ++e) {
        const auto c = weights.columns[static_cast<size_t>(e)];
        for (auto f = by_column.begin(c); f < by_column.end(c); ++f) {
          overlap[static_cast<size_t>(by_column.columns[static_cast<size_t>(f)])] = 0.0f;
        }
      }
      const auto kept = std::min<int64_t>(k, static_cast<int64_t>(scored.size()));
      std::partial_sort(scored.begin(), scored.begin() + kept, scored.end());
      for (const auto r : c10::irange(kept)) {
        out_distance[q * k + r] = scored[static_cast<size_t>(r)].first;
        out_index[q * k + r] = scored[static_cast<size_t>(r)].second;
      }
    }
  });
  return {distances, indices};
}

// M from the baseline's three similarity blocks (CPU, contiguous, one floating dtype).
struct SimilarityBlocks {
  torch::Tensor q_g, q_q, g_g;
  int64_t num_queries() const { return q_g.size(0); }
  int64_t size() const { return q_g.size(0) + q_g.size(1); }

  // Columns begin..end of M, as rows; a block lies within the queries or within the gallery.
  // Columns are gathered as contiguous [N, block] pieces first, then transposed by LibTorch's
  // blocked 2-D transpose (a strided gather straight from the big matrices is ~3x slower).
  torch::Tensor rows(int64_t begin, int64_t end) const {
    const auto nq = num_queries();
    if (begin < nq) {
      const auto columns = q_q.narrow(1, begin, end - begin).contiguous();
      return torch::cat({columns.t().contiguous(), q_g.slice(0, begin, end)}, 1);
    }
    const auto columns = torch::cat(
        {q_g.narrow(1, begin - nq, end - begin), g_g.narrow(1, begin - nq, end - begin)});
    return columns.t().contiguous();
  }

  float distance(int64_t i, int64_t j) const {
    const auto nq = num_queries();
    const auto ng = q_g.size(1);
    return AT_DISPATCH_FLOATING_TYPES(q_g.scalar_type(), "reidnet::re_ranking", [&] {
      // M[j, i]
      scalar_t s;
      if (j < nq) {
        s = i < nq ? q_q.data_ptr<scalar_t>()[j * nq + i]
                   : q_g.data_ptr<scalar_t>()[j * ng + (i - nq)];
      } else {
        s = i < nq ? q_g.data_ptr<scalar_t>()[i * ng + (j - nq)]
                   : g_g.data_ptr<scalar_t>()[(j - nq) * ng + (i - nq)];
      }
      return rerank_distance(s);
    });
  }
};

// M = F F^T from the stacked features F = [qf; gf] (the similarity blocks are never stored).
struct SimilarityFromFeatures {
  torch::Tensor features;      // [N, D] on the compute device
  torch::Tensor features_cpu;  // the same, CPU float32 contiguous, for single entries
  int64_t size() const { return features.size(0); }

  torch::Tensor rows(int64_t begin, int64_t end) const {
    return features.slice(0, begin, end).matmul(features.t());
  }

  float distance(int64_t i, int64_t j) const {
    const auto dim = features_cpu.size(1);
    const auto* a = features_cpu.data_ptr<float>() + i * dim;
    const auto* b = features_cpu.data_ptr<float>() + j * dim;
    float dot = 0.0f;
    for (const auto d : c10::irange(dim)) dot += a[d] * b[d];
    return rerank_distance(dot);
  }
};

}  // namespace reidnet::detail
