#pragma once
// What reidnet-index and reidnet-test share about gallery indexes: the features files they
// read, the index flags, and progress lines for building and searching.
#include "common/cli.hpp"
#include "common/progress.hpp"

#include <reidnet/io/checkpoint.hpp>
#include <reidnet/evaluation/evaluate.hpp>
#include <reidnet/evaluation/gallery_index.hpp>
#include <reidnet/evaluation/re_ranking.hpp>
#include <reidnet/io/mat_file.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>

namespace reidnet::examples {

/// The features of a retrieval run: reidnet-test's features.pth (qf, ql, qc, gf, gl, gc) or
/// the baseline's pytorch_result.mat (by the .mat extension), checked by
/// check_retrieval_features right after reading. A file that cannot be read or holds bad
/// features is reidnet::InputError (exit code 2), naming the file and the tensor.
inline RetrievalFeatures read_retrieval_features(const std::string& path) {
  if (std::filesystem::path(path).extension() == ".mat") {
    try {
      return read_pytorch_result(path);  // checked there, naming the arrays
    } catch (const InputError&) {
      throw;
    } catch (const std::runtime_error& error) {
      throw InputError(error.what());
    }
  }
  StateDict tensors;
  try {
    tensors = read_state_dict(path);
  } catch (const std::runtime_error& error) {
    const std::string message = error.what();
    throw InputError(message.find(path) == std::string::npos ? path + ": " + message : message);
  }
  const auto get = [&](const char* key) {
    if (!tensors.contains(key)) {
      throw InputError(fmt::format("{}: no '{}' tensor; expected the features file that "
                                   "reidnet-test writes (qf, ql, qc, gf, gl, gc)", path, key));
    }
    return tensors[key];
  };
  return check_retrieval_features({get("qf"), get("ql"), get("qc"), get("gf"), get("gl"), get("gc")},
                                  path, kFeaturesFileNames);
}

/// The build flags of an index: --type and the sizes of its type.
struct IndexFlags {
  std::string type = "flat";
  int64_t nlist = 0, pq_m = 0, pq_bits = 0, sq_bits = 8, hnsw_m = 32, ef_construction = 40;
  int64_t nprobe = 0, ef_search = 0;

  GalleryIndexOptions build_options() const {
    auto options = GalleryIndexOptions()
                       .type(index_type_from_name(type))
                       .nlist(nlist)
                       .pq_m(pq_m)
                       .pq_bits(pq_bits)
                       .sq_bits(sq_bits)
                       .hnsw_m(hnsw_m)
                       .ef_construction(ef_construction);
    if (nprobe > 0) options.nprobe(nprobe);  // saved in the file as the default
    if (ef_search > 0) options.ef_search(ef_search);
    return options;
  }
  IndexSearchOptions search_options() const {
    return IndexSearchOptions().nprobe(nprobe).ef_search(ef_search);
  }
};

inline void add_index_build_flags(CLI::App& app, IndexFlags& flags, const std::string& type_flag) {
  app.add_option(type_flag, flags.type, "index type: flat (exact), ivfflat, ivfsq, ivfpq or hnsw")
      ->check(CLI::IsMember(index_type_names()));
  app.add_option("--nlist", flags.nlist, "IVF cells (default: 4 sqrt(N), at most N / 39)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  app.add_option("--pq-m", flags.pq_m, "PQ sub-quantizers, dividing the dimension (default D / 4)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 16));
  app.add_option("--pq-bits", flags.pq_bits, "bits a PQ code (default 8, fewer under 256 features)")
      ->check(CLI::Range(int64_t{1}, int64_t{16}));
  app.add_option("--sq-bits", flags.sq_bits, "bits an IVF-SQ feature component: 8, 6 or 4 (default 8)")
      ->check(CLI::IsMember({8, 6, 4}));
  app.add_option("--hnsw-m", flags.hnsw_m, "HNSW links a picture (default 32)")
      ->check(CLI::Range(int64_t{2}, int64_t{512}));
  app.add_option("--ef-construction", flags.ef_construction, "HNSW build candidates (default 40)")
      ->check(CLI::Range(int64_t{1}, kMaxEfSearch));
}

inline void add_index_search_flags(CLI::App& app, IndexFlags& flags) {
  app.add_option("--nprobe", flags.nprobe, "IVF cells searched a query (default: the index's; "
                 "16 when building)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  app.add_option("--ef-search", flags.ef_search, "HNSW search candidates (default: the index's; "
                 "64 when building)")
      ->check(CLI::Range(int64_t{1}, kMaxEfSearch));
}

/// A progress callback printing `title stage done/total` lines (see Progress).
inline std::function<void(const IndexProgress&)> index_progress(const std::string& title) {
  auto bars = std::make_shared<std::map<std::string, Progress>>();
  return [bars, title](const IndexProgress& progress) {
    auto bar = bars->find(progress.stage);
    if (bar == bars->end()) {
      bar = bars->emplace(progress.stage, Progress(title + " " + progress.stage, progress.total)).first;
    }
    bar->second.update(progress.done, progress.done, "");
  };
}

/// Rank@k and mAP from the top `k` of a gallery index built on the gallery features (KNN
/// re-ranking with `re_rank`); see evaluate_top_k for what a list shorter than the gallery
/// changes.
inline EvalResult evaluate_with_index(const RetrievalFeatures& f, const IndexFlags& flags,
                                      int64_t k, bool re_rank, EvalOptions options) {
  GalleryIndex index = [&] {
    try {
      return GalleryIndex::create(f.gallery_f.size(1), f.gallery_f.size(0),
                                  flags.build_options().progress(index_progress("index")));
    } catch (const std::exception& error) {
      throw UsageError(std::string("--index ") + flags.type + ": " + error.what());
    }
  }();
  index.train(f.gallery_f);
  index.add(f.gallery_f);
  k = std::min(k, index.size());
  const auto search = flags.search_options();
  fmt::print("evaluating each query's top {} from a gallery index: {} (FAISS \"{}\")\n", k,
             flags.type, index.describe().factory);
  if (re_rank) {
    const auto lists = knn_re_ranking(f.query_f, f.gallery_f, index, k, {}, search);
    options.score_kind(kDistance);
    return evaluate_top_k(lists.indices, lists.distances, f.query_label, f.query_cam,
                          f.gallery_label, f.gallery_cam, options);
  }
  const auto top = index.search(f.query_f, k, search);
  return evaluate_top_k(top.indices, top.scores, f.query_label, f.query_cam, f.gallery_label,
                        f.gallery_cam, options);
}

}  // namespace reidnet::examples
