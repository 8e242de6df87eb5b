#pragma once
/// A gallery index on FAISS: top-k search by cosine similarity over galleries too large for
/// the dense query x gallery matrix (a million crops and more).
///
///     auto index = reidnet::GalleryIndex::build(gallery_features,
///         reidnet::GalleryIndexOptions().type(reidnet::IndexType::kIvfPq));
///     index.save("gallery.faiss");
///     auto top = index.search(query_features, 100);       // top.scores, top.indices [Nq, 100]
///     auto result = reidnet::evaluate_top_k(top.indices, top.scores, ql, qc, gl, gc);
///
/// Every index is FAISS's "L2norm,<type>" with the inner-product metric: features are
/// L2-normalised on the way in (adding and searching), so a score is the cosine similarity,
/// and the file says so. Files are FAISS's own: Python's `faiss.read_index` reads them, and
/// an index that Python built with `faiss.index_factory(d, "L2norm,IVF1024,PQ64",
/// faiss.METRIC_INNER_PRODUCT)` loads here (reidnet's IVF-PQ strings end in "np": no
/// polysemous training). Loading walks the whole file before FAISS reads it and accepts
/// only these structures, with every size, id, link and stored parameter in bounds (see
/// reidnet/evaluation/detail/index_file.hpp). Writers take the file's lock (IndexFileLock): one at a time.
/// Needs FAISS (Debian's libfaiss-dev; target reidnet::faiss).

#include <reidnet/core/detail/file_io.hpp>
#include <reidnet/evaluation/detail/index_file.hpp>
#include <reidnet/core/errors.hpp>
#include <reidnet/evaluation/detail/ranking.hpp>
#include <reidnet/evaluation/re_ranking.hpp>

#include <c10/util/irange.h>
#include <torch/arg.h>
#include <torch/types.h>

#include <faiss/AutoTune.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/VectorTransform.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/invlists/InvertedLists.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace reidnet {

/// The kinds of gallery index. Exact search compares every gallery feature; the others
/// trade recall for speed (IVF-Flat, HNSW) or for speed and memory (IVF-SQ, IVF-PQ).
enum class IndexType {
  kFlat,     ///< exact: every gallery feature, float32 (4 D bytes a picture)
  kIvfFlat,  ///< `nlist` k-means cells, `nprobe` of them searched; float32 features
  kIvfSq,    ///< IVF with each feature component quantised to `sq_bits` bits (D sq_bits / 8 bytes)
  kIvfPq,    ///< IVF with product-quantised codes of `pq_m` x `pq_bits` bits a picture
  kHnsw,     ///< a graph of `hnsw_m` links a picture, searched with `ef_search` candidates
};

inline constexpr IndexType kIndexTypes[] = {IndexType::kFlat, IndexType::kIvfFlat, IndexType::kIvfSq,
                                            IndexType::kIvfPq, IndexType::kHnsw};

/// The names the programs take: flat, ivfflat, ivfsq, ivfpq, hnsw.
inline const char* index_type_name(IndexType type) {
  switch (type) {
    case IndexType::kFlat: return "flat";
    case IndexType::kIvfFlat: return "ivfflat";
    case IndexType::kIvfSq: return "ivfsq";
    case IndexType::kIvfPq: return "ivfpq";
    case IndexType::kHnsw: return "hnsw";
  }
  return "unknown";
}

inline std::vector<std::string> index_type_names() {
  std::vector<std::string> names;
  for (const auto type : kIndexTypes) names.emplace_back(index_type_name(type));
  return names;
}

inline IndexType index_type_from_name(const std::string& name) {
  for (const auto type : kIndexTypes) {
    if (name == index_type_name(type)) return type;
  }
  throw std::invalid_argument(
      fmt::format("unknown index type '{}': expected flat, ivfflat, ivfsq, ivfpq or hnsw", name));
}

/// The most HNSW candidates a search or a build may keep (index files storing more are refused).
inline constexpr int64_t kMaxEfSearch = detail::kMaxEfSearch;

/// Whether the type searches k-means cells (and so needs training, nlist and nprobe).
inline bool is_ivf(IndexType type) {
  return type == IndexType::kIvfFlat || type == IndexType::kIvfSq || type == IndexType::kIvfPq;
}

/// Where a long index operation stands: `stage` is "train", "add" or "search".
struct IndexProgress {
  std::string stage;
  int64_t done = 0;
  int64_t total = 0;
};

/// How an index is built. Zero means "chosen from the training set" where a field says so.
struct GalleryIndexOptions {
  TORCH_ARG(IndexType, type) = IndexType::kFlat;
  /// IVF cells; 0: 4 sqrt(N) for N training features, at most N / 39 (FAISS's k-means wants
  /// 39 points a cell) and at least 1.
  TORCH_ARG(int64_t, nlist) = 0;
  /// PQ sub-quantizers, which must divide the feature dimension; 0: D / 4 (128 bytes a
  /// 512-d feature, 1/16 of its float32 size).
  TORCH_ARG(int64_t, pq_m) = 0;
  /// Bits a PQ sub-quantizer code; 0: 8, or fewer when under 256 features train it.
  TORCH_ARG(int64_t, pq_bits) = 0;
  /// Bits an IVF-SQ feature component: 8, 6 or 4 (each component's range is learnt in
  /// training and split evenly).
  TORCH_ARG(int64_t, sq_bits) = 8;
  /// HNSW links a picture (twice as many on the bottom layer).
  TORCH_ARG(int64_t, hnsw_m) = 32;
  /// HNSW candidates kept while linking a new picture.
  TORCH_ARG(int64_t, ef_construction) = 40;
  /// IVF cells searched a query unless a search says otherwise (saved in the file; FAISS's
  /// own default, 1, misses most neighbours). At most nlist.
  TORCH_ARG(int64_t, nprobe) = 16;
  /// HNSW candidates kept a query unless a search says otherwise (saved in the file).
  TORCH_ARG(int64_t, ef_search) = 64;
  /// Features handed to FAISS at once when adding; progress is reported after each batch.
  TORCH_ARG(int64_t, batch) = 65536;
  TORCH_ARG(std::function<void(const IndexProgress&)>, progress) = nullptr;
};

/// How a search runs; 0 keeps what the index holds (FAISS saves nprobe and efSearch).
struct IndexSearchOptions {
  /// IVF cells searched a query.
  TORCH_ARG(int64_t, nprobe) = 0;
  /// HNSW candidates kept a query (at least k).
  TORCH_ARG(int64_t, ef_search) = 0;
  /// Queries handed to FAISS at once; progress is reported after each batch.
  TORCH_ARG(int64_t, batch) = 16384;
  TORCH_ARG(std::function<void(const IndexProgress&)>, progress) = nullptr;
};

/// The top k of each query, best first. A list shorter than k (an IVF search that reaches
/// fewer than k pictures) is padded with index -1 and score -infinity.
struct IndexSearchResult {
  torch::Tensor scores;   ///< float32 [Nq, k]: cosine similarities (approximate for IVF-PQ)
  torch::Tensor indices;  ///< int64 [Nq, k]: gallery rows, in the order they were added
};

/// What an index file or a built index holds (what `reidnet-index info` prints).
struct GalleryIndexInfo {
  IndexType type = IndexType::kFlat;
  int64_t dim = 0;
  int64_t size = 0;       ///< pictures added
  bool trained = false;
  int64_t nlist = 0;      ///< IVF only
  int64_t nprobe = 0;     ///< IVF only
  int64_t pq_m = 0;       ///< IVF-PQ only
  int64_t pq_bits = 0;    ///< IVF-PQ only
  int64_t sq_bits = 0;    ///< IVF-SQ only
  int64_t hnsw_m = 0;     ///< HNSW only
  int64_t ef_search = 0;  ///< HNSW only
  int64_t ef_construction = 0;  ///< HNSW only
  int64_t code_bytes = 0;       ///< bytes that store one picture (its features or its code)
  std::string factory;          ///< FAISS's index_factory string
};

namespace detail {

inline std::runtime_error index_error(const std::string& caller, const std::string& what) {
  return std::runtime_error(fmt::format("{}: {}", caller, what));
}

// FAISS's factory string for the options; nlist and the PQ sizes are already resolved.
inline std::string index_factory_string(IndexType type, int64_t nlist, int64_t pq_m,
                                        int64_t pq_bits, int64_t sq_bits, int64_t hnsw_m) {
  switch (type) {
    case IndexType::kFlat: return "L2norm,Flat";
    case IndexType::kIvfFlat: return fmt::format("L2norm,IVF{},Flat", nlist);
    case IndexType::kIvfSq: return fmt::format("L2norm,IVF{},SQ{}", nlist, sq_bits);
    // "np": no polysemous training, which only reorders codes for Hamming filtering (unused
    // here) and makes training ~15x slower.
    case IndexType::kIvfPq: return fmt::format("L2norm,IVF{},PQ{}x{}np", nlist, pq_m, pq_bits);
    case IndexType::kHnsw: return fmt::format("L2norm,HNSW{}", hnsw_m);
  }
  throw std::logic_error("reidnet: unknown IndexType");
}

// Features as FAISS takes them: CPU float32, contiguous, [N, dim], finite.
inline torch::Tensor faiss_features(const torch::Tensor& features, int64_t dim,
                                    const std::string& what, const std::string& caller) {
  check_matrix(features, what, caller);
  if (dim > 0 && features.size(1) != dim) {
    throw index_error(caller, fmt::format("{} {} have dimension {}, but the index holds {}-d "
                                          "features",
                                          what, shape_of(features), features.size(1), dim));
  }
  auto cpu = features.detach().to(torch::kCPU, torch::kFloat).contiguous();
  if (!torch::isfinite(cpu).all().item<bool>()) {
    throw index_error(caller, fmt::format("{} {} hold NaN or infinity", what, shape_of(features)));
  }
  return cpu;
}

// Runs `call`, turning FAISS's exceptions into reidnet's, which name the caller.
template <typename Call>
auto faiss_call(const std::string& caller, Call&& call) -> decltype(call()) {
  try {
    return call();
  } catch (const faiss::FaissException& error) {
    throw index_error(caller, fmt::format("FAISS: {}", error.msg));
  }
}

// The bits a component of FAISS's uniform-per-component scalar quantizers; 0 for the others.
inline int64_t scalar_quantizer_bits(faiss::ScalarQuantizer::QuantizerType type) {
  switch (type) {
    case faiss::ScalarQuantizer::QT_8bit: return 8;
    case faiss::ScalarQuantizer::QT_6bit: return 6;
    case faiss::ScalarQuantizer::QT_4bit: return 4;
    default: return 0;
  }
}

// The part of an index below its L2 normalisation.
inline faiss::Index* inner_index(faiss::Index* index) {
  return dynamic_cast<faiss::IndexPreTransform&>(*index).index;
}

}  // namespace detail

/// Another process is writing the index file.
struct IndexFileBusy : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The write lock of an index file: an exclusive lock (flock) on the sibling `<path>.lock`,
/// which every writer of `path` takes (GalleryIndex::save, GalleryIndex::open_for_update), so
/// that writers never overlap: a second one is refused with IndexFileBusy rather than losing
/// the first one's update. Taking it removes the temporary files a writer killed mid-write
/// left beside `path`. Readers take no lock: a write replaces the file in one rename.
class IndexFileLock {
 public:
  explicit IndexFileLock(const std::string& path)
      : path_(std::filesystem::absolute(path).lexically_normal()),
        lock_(detail::lock_exclusively(path + ".lock", O_RDWR | O_CREAT)) {
    if (!lock_) {
      throw IndexFileBusy(fmt::format("{} is being written by another process (another "
                                      "reidnet-index add or build?); try again when it ends",
                                      path));
    }
    detail::remove_temporary_siblings(path);
  }

  /// Whether this is the lock of `path`.
  bool guards(const std::string& path) const {
    return std::filesystem::absolute(path).lexically_normal() == path_;
  }

 private:
  std::filesystem::path path_;
  std::unique_ptr<detail::FileDescriptor> lock_;  // closing it releases the lock
};

/// A gallery index (see the top of this file). Movable, not copyable; `search` changes the
/// index's search parameters when asked to, so one index is searched by one thread at a time.
class GalleryIndex {
 public:
  /// An empty index for `dim`-d features. `train_size` resolves the automatic sizes (nlist,
  /// PQ bits) for the number of features that will train it.
  static GalleryIndex create(int64_t dim, int64_t train_size, const GalleryIndexOptions& options = {}) {
    const std::string caller = "reidnet::GalleryIndex::create";
    if (dim < 1) throw detail::index_error(caller, fmt::format("dim must be >= 1, got {}", dim));
    const auto type = options.type();
    const bool ivf = is_ivf(type);
    int64_t nlist = options.nlist();
    int64_t pq_m = options.pq_m();
    int64_t pq_bits = options.pq_bits();
    if (ivf) {
      if (nlist < 0) throw detail::index_error(caller, fmt::format("nlist must be >= 0, got {}", nlist));
      if (nlist == 0) {
        const auto wanted = static_cast<int64_t>(std::lround(4.0 * std::sqrt(static_cast<double>(train_size))));
        nlist = std::max<int64_t>(1, std::min<int64_t>(wanted, train_size / 39));
      }
      if (train_size < nlist) {
        throw detail::index_error(caller, fmt::format("nlist {} needs at least {} training "
                                                      "features, got {}",
                                                      nlist, nlist, train_size));
      }
    }
    if (type == IndexType::kIvfPq) {
      if (pq_m == 0) pq_m = std::max<int64_t>(1, dim / 4);
      if (pq_m < 1 || dim % pq_m != 0) {
        throw detail::index_error(caller, fmt::format("pq_m {} must divide the feature dimension {}",
                                                      pq_m, dim));
      }
      if (pq_bits == 0) {
        pq_bits = 8;
        while (pq_bits > 1 && (int64_t{1} << pq_bits) > train_size) --pq_bits;
      }
      if (pq_bits < 1 || pq_bits > 16) {
        throw detail::index_error(caller, fmt::format("pq_bits must be in 1..16, got {}", pq_bits));
      }
      if ((int64_t{1} << pq_bits) > train_size) {
        throw detail::index_error(caller, fmt::format("pq_bits {} needs at least {} training "
                                                      "features, got {}",
                                                      pq_bits, int64_t{1} << pq_bits, train_size));
      }
    }
    if (type == IndexType::kIvfSq && options.sq_bits() != 8 && options.sq_bits() != 6 &&
        options.sq_bits() != 4) {
      throw detail::index_error(caller, fmt::format("sq_bits must be 8, 6 or 4, got {}", options.sq_bits()));
    }
    if (type == IndexType::kHnsw && (options.hnsw_m() < 2 || options.ef_construction() < 1)) {
      throw detail::index_error(caller, fmt::format("hnsw_m must be >= 2 and ef_construction >= 1, "
                                                    "got {} and {}",
                                                    options.hnsw_m(), options.ef_construction()));
    }
    if (options.batch() < 1) {
      throw detail::index_error(caller, fmt::format("batch must be >= 1, got {}", options.batch()));
    }
    const auto factory = detail::index_factory_string(type, nlist, pq_m, pq_bits, options.sq_bits(),
                                                      options.hnsw_m());
    GalleryIndex index(detail::faiss_call(caller, [&] {
      return std::unique_ptr<faiss::Index>(faiss::index_factory(
          static_cast<int>(dim), factory.c_str(), faiss::METRIC_INNER_PRODUCT));
    }));
    if (options.ef_search() > kMaxEfSearch || options.ef_construction() > kMaxEfSearch) {
      throw detail::index_error(caller, fmt::format("ef_search and ef_construction must be at most "
                                                    "{}, got {} and {}", kMaxEfSearch,
                                                    options.ef_search(), options.ef_construction()));
    }
    if (options.nprobe() < 1 || options.ef_search() < 1) {
      throw detail::index_error(caller, fmt::format("nprobe and ef_search must be >= 1, got {} and {}",
                                                    options.nprobe(), options.ef_search()));
    }
    auto* inner = detail::inner_index(index.index_.get());
    if (auto* graph = dynamic_cast<faiss::IndexHNSW*>(inner)) {
      graph->hnsw.efConstruction = static_cast<int>(options.ef_construction());
      graph->hnsw.efSearch = static_cast<int>(options.ef_search());
    }
    if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(inner)) {
      ivf->nprobe = static_cast<size_t>(std::min(options.nprobe(), nlist));
    }
    index.build_options_ = options;
    return index;
  }

  /// Trains on `gallery_features` [N, D] (where the type needs training) and adds them.
  static GalleryIndex build(const torch::Tensor& gallery_features,
                            const GalleryIndexOptions& options = {}) {
    detail::check_matrix(gallery_features, "gallery features", "reidnet::GalleryIndex::build");
    if (gallery_features.size(0) == 0) {
      throw InputError("reidnet::GalleryIndex::build: no gallery features to index");
    }
    auto index = create(gallery_features.size(1), gallery_features.size(0), options);
    index.train(gallery_features);
    index.add(gallery_features);
    return index;
  }

  /// Trains the IVF cells and the PQ codebooks or SQ ranges (a no-op for flat and HNSW).
  void train(const torch::Tensor& features) {
    const std::string caller = "reidnet::GalleryIndex::train";
    const auto x = detail::faiss_features(features, dim(), "training features", caller);
    report("train", 0, x.size(0));
    detail::faiss_call(caller, [&] { index_->train(x.size(0), x.data_ptr<float>()); });
    report("train", x.size(0), x.size(0));
  }

  /// Appends `features` [N, D]; their rows become gallery indices size() .. size() + N - 1.
  void add(const torch::Tensor& features) {
    const std::string caller = "reidnet::GalleryIndex::add";
    if (!index_->is_trained) {
      throw detail::index_error(caller, "the index is not trained yet (call train first)");
    }
    const auto x = detail::faiss_features(features, dim(), "features", caller);
    const auto rows = x.size(0);
    const auto batch = build_options_.batch();
    for (int64_t begin = 0; begin < rows; begin += batch) {
      const auto count = std::min(batch, rows - begin);
      detail::faiss_call(caller, [&] {
        index_->add(count, x.data_ptr<float>() + begin * x.size(1));
      });
      report("add", begin + count, rows);
    }
  }

  /// The `k` best gallery rows of each query [Nq, D], best first.
  IndexSearchResult search(const torch::Tensor& queries, int64_t k,
                           const IndexSearchOptions& options = {}) {
    const std::string caller = "reidnet::GalleryIndex::search";
    if (k < 1) throw detail::index_error(caller, fmt::format("k must be >= 1, got {}", k));
    if (options.batch() < 1) {
      throw detail::index_error(caller, fmt::format("batch must be >= 1, got {}", options.batch()));
    }
    if (options.nprobe() < 0 || options.ef_search() < 0 || options.ef_search() > kMaxEfSearch) {
      throw detail::index_error(caller, fmt::format("nprobe must be >= 0 and ef_search 0 to {}",
                                                    kMaxEfSearch));
    }
    if (size() == 0) throw InputError(caller + ": the index holds no pictures to search");
    const auto x = detail::faiss_features(queries, dim(), "queries", caller);
    const auto info = describe();
    faiss::ParameterSpace parameters;
    if (options.nprobe() > 0 && info.nlist > 0) {
      parameters.set_index_parameter(index_.get(), "nprobe",
                                     static_cast<double>(std::min(options.nprobe(), info.nlist)));
    }
    if (info.type == IndexType::kHnsw) {
      const auto ef = std::max(options.ef_search() > 0 ? options.ef_search() : info.ef_search, k);
      parameters.set_index_parameter(index_.get(), "efSearch", static_cast<double>(ef));
    }
    const auto rows = x.size(0);
    IndexSearchResult result{torch::empty({rows, k}, torch::kFloat),
                             torch::empty({rows, k}, torch::kLong)};
    auto* scores = result.scores.data_ptr<float>();
    auto* labels = result.indices.data_ptr<int64_t>();
    for (int64_t begin = 0; begin < rows; begin += options.batch()) {
      const auto count = std::min(options.batch(), rows - begin);
      detail::faiss_call(caller, [&] {
        index_->search(count, x.data_ptr<float>() + begin * x.size(1), k, scores + begin * k,
                       labels + begin * k);
      });
      if (options.progress()) options.progress()({"search", begin + count, rows});
    }
    // FAISS pads short lists with -1 and the worst score of its metric.
    result.scores.masked_fill_(result.indices < 0, -std::numeric_limits<float>::infinity());
    return result;
  }

  /// Writes the index as a FAISS index file, atomically (a temporary sibling is renamed).
  /// Takes `path`'s write lock for the time of the write (see IndexFileLock), unless this index
  /// already holds it (open_for_update).
  void save(const std::string& path) const {
    const std::string caller = "reidnet::GalleryIndex::save";
    std::optional<IndexFileLock> lock;
    if (lock_ == nullptr || !lock_->guards(path)) lock.emplace(path);
    detail::fill_file_atomically(path, [&](const std::string& temporary) {
      detail::faiss_call(caller, [&] { faiss::write_index(index_.get(), temporary.c_str()); });
    });
  }

  /// Reads a FAISS index file and checks it: an L2 normalisation followed by a flat, IVF-Flat,
  /// IVF-SQ, IVF-PQ or HNSW index with the inner-product metric, of `expected_dim`-d features when
  /// given, whose stored sizes, list entries, graph links and search parameters are in bounds,
  /// checked before FAISS reads it. Throws InputError naming the file and what is wrong.
  static GalleryIndex load(const std::string& path, std::optional<int64_t> expected_dim = std::nullopt) {
    const std::string caller = "reidnet::GalleryIndex::load";
    // O_NONBLOCK: a FIFO named like an index must not block the open; the walk refuses it.
    const detail::FileDescriptor file(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (file.fd < 0) {
      throw InputError(fmt::format("{}: cannot open the index file: {}", path, std::strerror(errno)));
    }
    detail::check_index_file(file.fd, path);
    // FAISS reads the very bytes that were checked: the same open file, from its start.
    std::unique_ptr<FILE, int (*)(FILE*)> stream(::fdopen(::dup(file.fd), "rb"), &std::fclose);
    if (!stream) throw InputError(fmt::format("{}: cannot read the index file: {}", path, std::strerror(errno)));
    GalleryIndex index(detail::faiss_call(caller, [&] {
      return std::unique_ptr<faiss::Index>(faiss::read_index(stream.get()));
    }));
    if (expected_dim && *expected_dim != index.dim()) {
      throw InputError(fmt::format("{} holds {}-d features, expected {}-d", path, index.dim(),
                                   *expected_dim));
    }
    return index;
  }

  /// `load`, for changing the file: the index holds `path`'s write lock (see IndexFileLock)
  /// until it is destroyed, so that its `save(path)` replaces the very version it read; no
  /// other writer's update can come between and be lost. Throws IndexFileBusy while another
  /// process writes `path`.
  static GalleryIndex open_for_update(const std::string& path,
                                      std::optional<int64_t> expected_dim = std::nullopt) {
    auto lock = std::make_unique<IndexFileLock>(path);
    auto index = load(path, expected_dim);
    index.lock_ = std::move(lock);
    return index;
  }

  int64_t dim() const { return index_->d; }
  int64_t size() const { return index_->ntotal; }
  bool is_trained() const { return index_->is_trained; }
  IndexType type() const { return describe().type; }

  /// The type and parameters (what `reidnet-index info` prints).
  GalleryIndexInfo describe() const {
    GalleryIndexInfo info;
    auto* inner = detail::inner_index(index_.get());
    info.dim = dim();
    info.size = size();
    info.trained = is_trained();
    if (auto* flat = dynamic_cast<faiss::IndexFlat*>(inner)) {
      info.type = IndexType::kFlat;
      info.code_bytes = static_cast<int64_t>(flat->code_size);
      info.factory = "L2norm,Flat";
    } else if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(inner)) {
      info.nlist = static_cast<int64_t>(ivf->nlist);
      info.nprobe = static_cast<int64_t>(ivf->nprobe);
      info.code_bytes = static_cast<int64_t>(ivf->code_size) + 8;  // the code and its id
      if (auto* pq = dynamic_cast<faiss::IndexIVFPQ*>(inner)) {
        info.type = IndexType::kIvfPq;
        info.pq_m = static_cast<int64_t>(pq->pq.M);
        info.pq_bits = static_cast<int64_t>(pq->pq.nbits);
      } else if (auto* sq = dynamic_cast<faiss::IndexIVFScalarQuantizer*>(inner)) {
        info.type = IndexType::kIvfSq;
        info.sq_bits = detail::scalar_quantizer_bits(sq->sq.qtype);
      } else {
        info.type = IndexType::kIvfFlat;
      }
    } else if (auto* graph = dynamic_cast<faiss::IndexHNSW*>(inner)) {
      info.type = IndexType::kHnsw;
      info.hnsw_m = static_cast<int64_t>(graph->hnsw.nb_neighbors(1));
      info.ef_search = graph->hnsw.efSearch;
      info.ef_construction = graph->hnsw.efConstruction;
      info.code_bytes = 4 * dim() + 4 * static_cast<int64_t>(graph->hnsw.nb_neighbors(0));
    }
    if (info.factory.empty()) {
      info.factory = detail::index_factory_string(info.type, info.nlist, info.pq_m, info.pq_bits,
                                                  info.sq_bits, info.hnsw_m);
    }
    return info;
  }

  /// The FAISS index, for what this class does not wrap.
  faiss::Index& faiss_index() { return *index_; }

  /// Progress of train and add goes here (options().progress() of create, or none).
  void set_progress(std::function<void(const IndexProgress&)> progress) {
    build_options_.progress(std::move(progress));
  }

 private:
  explicit GalleryIndex(std::unique_ptr<faiss::Index> index) : index_(std::move(index)) {}

  void report(const char* stage, int64_t done, int64_t total) const {
    if (build_options_.progress()) build_options_.progress()({stage, done, total});
  }

  std::unique_ptr<faiss::Index> index_;
  GalleryIndexOptions build_options_;
  std::unique_ptr<IndexFileLock> lock_;  // open_for_update's
};

/// k-reciprocal re-ranking (reidnet::re_ranking's algorithm) of each query's top `k`, with
/// the neighbour lists taken from a gallery index over `gallery_features` instead of the
/// (Nq + Ng)^2 distance matrix: memory O((Nq + Ng) (k1 + k)). With a flat index the lists,
/// and so the result, are exact; with an approximate one, so are the neighbours it finds.
///
/// Cost: one index search of k1 + 1 for each of the Nq + Ng pictures, one of 1 with the
/// negated feature (the farthest picture, which scales the baseline's distances), one of k a
/// query, and the (Nq + Ng) x Nq similarities to the queries (exact, by matmul in blocks).
inline ReRankedLists knn_re_ranking(const torch::Tensor& query_features,
                                    const torch::Tensor& gallery_features, GalleryIndex& index,
                                    int64_t k, const ReRankingOptions& options = {},
                                    const IndexSearchOptions& search = {}) {
  const std::string caller = "reidnet::knn_re_ranking";
  detail::check_feature_pair(query_features, gallery_features, caller);
  if (gallery_features.size(0) != index.size() || gallery_features.size(1) != index.dim()) {
    throw detail::index_error(caller, fmt::format("gallery features {} are not what the index "
                                                  "holds ({} features of dimension {})",
                                                  detail::shape_of(gallery_features),
                                                  index.size(), index.dim()));
  }
  if (k < 1) throw detail::index_error(caller, fmt::format("k must be >= 1, got {}", k));
  const auto nq = query_features.size(0);
  const auto n = nq + gallery_features.size(0);
  detail::check_rerank_options(options, n, caller);
  const auto queries = query_features.to(torch::kCPU, torch::kFloat).contiguous();
  const auto gallery = gallery_features.to(torch::kCPU, torch::kFloat).contiguous();
  const auto all = torch::cat({queries, gallery});
  const auto width = options.k1() + 1;
  // Nearest gallery pictures from the index, nearest queries (and the farthest) exactly.
  auto from_gallery = index.search(all, std::min(width, index.size()), search).indices;
  from_gallery = torch::where(from_gallery >= 0, from_gallery + nq, from_gallery);
  const auto query_width = std::min(width, nq);
  auto from_queries = torch::empty({n, query_width}, torch::kLong);
  auto farthest = torch::empty({n}, torch::kFloat);
  constexpr int64_t kBlock = 4096;
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const auto end = std::min(begin + kBlock, n);
    const auto similarity = all.slice(0, begin, end).matmul(queries.t());
    from_queries.slice(0, begin, end).copy_(std::get<1>(similarity.topk(query_width, 1)));
    farthest.slice(0, begin, end).copy_(std::get<0>(similarity.min(1)));
  }
  const auto opposite = index.search(all.neg(), 1, search).indices.squeeze(1).clamp_min(0);
  const auto to_opposite = (all * gallery.index_select(0, opposite)).sum(1);
  NeighbourGraph graph{torch::cat({from_gallery, from_queries}, 1), torch::minimum(farthest, to_opposite),
                       index.search(queries, std::min(k, index.size()), search).indices};
  auto lists = re_ranking_neighbours(queries, gallery, graph, options);
  if (lists.indices.size(1) < k) {  // a gallery smaller than k
    const auto pad = k - lists.indices.size(1);
    lists.indices = torch::cat({lists.indices, torch::full({nq, pad}, -1, torch::kLong)}, 1);
    lists.distances = torch::cat(
        {lists.distances, torch::full({nq, pad}, std::numeric_limits<float>::infinity())}, 1);
  }
  return lists;
}

}  // namespace reidnet
