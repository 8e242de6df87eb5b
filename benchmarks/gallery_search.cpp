// reidnet-gallery-search: top-10 gallery search at ReID scale with reidnet::GalleryIndex (flat,
// IVF-Flat, IVF-SQ, IVF-PQ and HNSW on FAISS) against exact search by LibTorch (query blocks x gallery
// matmul + top-k): build time (train + add), search time and queries per second for all
// queries, recall@10 against the exact top 10, the index's size (its FAISS file) and what the
// build adds to the process's RSS. Synthetic clustered 512-d features like ReID embeddings.
// The features, the exact top 10 and the indexes it built are written to --out, so that
// benchmarks/gallery_search_reference.py runs Python's FAISS on the same data;
// benchmarks/gallery_search.sh runs both and prints the tables.
//
//   reidnet-gallery-search --gallery 100000 --queries 10000 --out /tmp/gallery --threads 2
//
// Prints one `row key=value ...` line a measurement on stdout and progress on stderr.
#include "../examples/common/cli.hpp"
#include "common/timing.hpp"

#include <reidnet/evaluation/gallery_index.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

constexpr int64_t kTop = 10;
constexpr int64_t kGroups = 1000;
constexpr int64_t kTrainSize = 65536;  // IVF k-means and PQ codebooks train on this sample

const auto kStart = std::chrono::steady_clock::now();

using reidnet::benchmarks::seconds_since;

void progress(const std::string& line) {
  fmt::print(stderr, "[{:8.1f} s] {}\n", seconds_since(kStart), line);
}

void row(const std::string& fields) {
  fmt::print("row {}\n", fields);
  std::fflush(stdout);
}

double rss_mb() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) * 1024 / 1e6;  // kB
  }
  throw std::runtime_error("no VmRSS in /proc/self/status");
}

torch::Tensor normalised(const torch::Tensor& x) { return x / x.norm(2, {1}, true); }

struct SearchData {
  torch::Tensor gallery, queries;  // float32 [N, D], [Nq, D], unit rows
};

// Identities cluster into "looks" (clothing, pose, camera): 1000 random unit group centres; an
// identity's centre is normalise(group + u) and a picture normalise(identity + 0.8 v), with u
// and v random unit directions. Each identity has 5..15 gallery pictures (the last one fewer
// when N runs out); the queries are new pictures of random gallery identities.
SearchData generate(int64_t gallery_size, int64_t query_count, int64_t dim, uint64_t seed) {
  torch::manual_seed(seed);
  const auto groups = normalised(torch::randn({kGroups, dim}));
  auto counts = torch::randint(5, 16, {gallery_size / 5 + 1}, torch::kLong);
  const auto identities = (counts.cumsum(0) < gallery_size).sum().item<int64_t>() + 1;
  counts = counts.slice(0, 0, identities).clone();
  counts[identities - 1] -= counts.sum().item<int64_t>() - gallery_size;
  const auto group_of = torch::randint(kGroups, {identities}, torch::kLong);
  const auto centres = normalised(groups.index_select(0, group_of) + normalised(torch::randn({identities, dim})));
  const auto pictures = [&](const torch::Tensor& labels) {
    auto out = torch::empty({labels.size(0), dim});
    constexpr int64_t kBlock = 65536;  // bounds the temporaries to a block
    for (int64_t begin = 0; begin < labels.size(0); begin += kBlock) {
      const auto end = std::min(begin + kBlock, labels.size(0));
      const auto centre = centres.index_select(0, labels.slice(0, begin, end));
      out.slice(0, begin, end).copy_(normalised(centre + 0.8 * normalised(torch::randn({end - begin, dim}))));
    }
    return out;
  };
  auto gallery = pictures(torch::repeat_interleave(torch::arange(identities), counts));
  auto queries = pictures(torch::randint(identities, {query_count}, torch::kLong));
  return {std::move(gallery), std::move(queries)};
}

void write_raw(const fs::path& path, const torch::Tensor& tensor) {
  std::ofstream file(path, std::ios::binary);
  file.write(static_cast<const char*>(tensor.contiguous().data_ptr()),
             static_cast<std::streamsize>(tensor.nbytes()));
  if (!file.flush()) throw std::runtime_error("cannot write " + path.string());
}

// The exact top 10 by cosine similarity. Blocks of queries keep the score matrix at 1 GB or
// less (1024 queries up to 256k pictures, 256 at 1M).
torch::Tensor exact_top(const torch::Tensor& queries, const torch::Tensor& gallery) {
  const auto block = std::clamp<int64_t>((int64_t{1} << 28) / gallery.size(0), 1, 1024);
  auto indices = torch::empty({queries.size(0), kTop}, torch::kLong);
  const auto gallery_t = gallery.t();
  for (int64_t begin = 0; begin < queries.size(0); begin += block) {
    const auto end = std::min(begin + block, queries.size(0));
    const auto scores = queries.slice(0, begin, end).matmul(gallery_t);
    indices.slice(0, begin, end).copy_(std::get<1>(scores.topk(kTop, 1)));
  }
  return indices;
}

// The fraction of each query's exact top 10 found in `found`, averaged over the queries.
double recall(const torch::Tensor& found, const torch::Tensor& truth) {
  return (truth.unsqueeze(2) == found.unsqueeze(1)).any(2).to(torch::kDouble).mean().item<double>();
}

struct Method {
  std::string name;
  reidnet::GalleryIndexOptions options;
  std::string parameter;  // the search parameter swept over `values`: nprobe, ef_search or none
  std::vector<int64_t> values;  // one search a value ({0}: one search, without a parameter)
};

std::string joined(const std::vector<int64_t>& values) {
  std::string text;
  for (const auto value : values) text += (text.empty() ? "" : ",") + std::to_string(value);
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Gallery search: reidnet's FAISS indexes against exact LibTorch search"};
  int64_t gallery_size = 100000, query_count = 10000, dim = 512, threads = 2, hnsw_max = 200000,
          nlist = 0;
  uint64_t seed = 1;
  std::string out;
  std::vector<std::string> only;
  app.add_option("--gallery", gallery_size, "gallery pictures")->check(CLI::Range(int64_t{1000}, int64_t{1} << 34));
  app.add_option("--queries", query_count, "query pictures")->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  app.add_option("--dim", dim, "feature dimension (a multiple of 128, for both PQ sizes)")
      ->check(CLI::Range(128, 65536));
  app.add_option("--seed", seed, "seed of the synthetic features");
  app.add_option("--out", out, "folder for the features, the exact top 10 and the plan")->required();
  app.add_option("--threads", threads, "CPU threads (LibTorch's, which FAISS shares)")->check(CLI::Range(1, 1024));
  app.add_option("--hnsw-max", hnsw_max, "largest gallery that builds HNSW (slow to build)");
  app.add_option("--methods", only, "only these indexes (flat, ivfflat, ivfsq8, ivfsq6, ivfpq64, "
                                    "ivfpq128, hnsw; default all); brute force always runs")
      ->delimiter(',');
  app.add_option("--nlist", nlist, "IVF cells (default: the power of two nearest 4 sqrt(N))")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  if (const auto code = reidnet::examples::parse_flags(app, argc, argv)) return *code;
  return reidnet::examples::run_reporting_errors("reidnet-gallery-search", [&] {
    if (dim % 128 != 0) throw reidnet::examples::UsageError(fmt::format("--dim {} is not a multiple of 128", dim));
    torch::set_num_threads(static_cast<int>(threads));
    if (nlist == 0) {  // FAISS's rule of thumb is 4 to 16 sqrt(N) cells: 1024 at 100k, 4096 at 1M
      nlist = int64_t{1} << std::lround(std::log2(4 * std::sqrt(static_cast<double>(gallery_size))));
    }
    using reidnet::IndexType;
    const std::vector<int64_t> nprobes{4, 8, 16};
    const auto ivfpq = [&](int64_t m) {
      return reidnet::GalleryIndexOptions().type(IndexType::kIvfPq).nlist(nlist).pq_m(m).pq_bits(8);
    };
    const auto ivfsq = [&](int64_t bits) {
      return reidnet::GalleryIndexOptions().type(IndexType::kIvfSq).nlist(nlist).sq_bits(bits);
    };
    const std::vector<Method> methods{
        {"flat", reidnet::GalleryIndexOptions().type(IndexType::kFlat), "", {0}},
        {"ivfflat", reidnet::GalleryIndexOptions().type(IndexType::kIvfFlat).nlist(nlist), "nprobe", nprobes},
        {"ivfsq8", ivfsq(8), "nprobe", nprobes},
        {"ivfsq6", ivfsq(6), "nprobe", nprobes},
        {"ivfpq64", ivfpq(64), "nprobe", nprobes},
        {"ivfpq128", ivfpq(128), "nprobe", nprobes},
        {"hnsw", reidnet::GalleryIndexOptions().type(IndexType::kHnsw).hnsw_m(32).ef_construction(40), "ef_search",
         {64, 128}},
    };
    for (const auto& name : only) {
      if (std::none_of(methods.begin(), methods.end(), [&](const Method& m) { return m.name == name; })) {
        throw reidnet::examples::UsageError("--methods: no index method '" + name + "'");
      }
    }
    fs::create_directories(out);
    progress(fmt::format("generating {} gallery and {} query features ({}-d)", gallery_size, query_count, dim));
    const auto data = generate(gallery_size, query_count, dim, seed);
    const auto train_rows = torch::randperm(gallery_size, torch::kLong).slice(0, 0, std::min(gallery_size, kTrainSize));
    const auto train = data.gallery.index_select(0, train_rows);
    write_raw(fs::path(out) / "gallery.f32", data.gallery);
    write_raw(fs::path(out) / "queries.f32", data.queries);
    write_raw(fs::path(out) / "train.i64", train_rows);
    std::ofstream(fs::path(out) / "data.txt") << fmt::format("gallery={} queries={} dim={} train={} k={} seed={}\n",
                                                             gallery_size, query_count, dim, train_rows.size(0),
                                                             kTop, seed);
    progress("written to " + out);

    progress("brute force: start");
    auto start = std::chrono::steady_clock::now();
    const auto truth = exact_top(data.queries, data.gallery);
    const double brute_seconds = seconds_since(start);
    progress(fmt::format("brute force: done in {:.1f} s", brute_seconds));
    write_raw(fs::path(out) / "truth.i64", truth);
    row(fmt::format("impl=libtorch method=brute factory=exact build_s=0 search_s={:.3f} qps={:.1f} recall10=1.0000 "
                    "index_mb={:.2f} rss_mb=0",
                    brute_seconds, query_count / brute_seconds, data.gallery.nbytes() / 1e6));

    // What Python's side builds: the same factory strings and search parameters.
    std::ofstream plan(fs::path(out) / "plan.txt");
    for (const auto& method : methods) {
      if (!only.empty() && std::find(only.begin(), only.end(), method.name) == only.end()) continue;
      const auto options = reidnet::GalleryIndexOptions(method.options).progress([&](const reidnet::IndexProgress& p) {
        progress(fmt::format("reidnet {}: {} {}/{}", method.name, p.stage, p.done, p.total));
      });
      const bool ivf = reidnet::is_ivf(options.type());
      const double rss_before = rss_mb();
      auto index = reidnet::GalleryIndex::create(dim, ivf ? train.size(0) : gallery_size, options);
      const auto info = index.describe();
      const auto head = fmt::format("method={} factory={}", method.name, info.factory);
      if (options.type() == IndexType::kHnsw && gallery_size > hnsw_max) {
        const auto skipped = fmt::format("{} skipped=1 hnsw_max={}", head, hnsw_max);
        plan << skipped << "\n" << std::flush;
        row("impl=reidnet " + skipped);
        continue;
      }
      plan << head << " train=" << ivf;
      if (options.type() == IndexType::kHnsw) plan << " ef_construction=" << info.ef_construction;
      // FAISS's factory turns on polysemous training for "PQ<m>x<b>" (not for "...np"); what the
      // library leaves it at is what Python's index gets.
      const auto* below_norm = dynamic_cast<faiss::IndexPreTransform&>(index.faiss_index()).index;
      if (const auto* pq = dynamic_cast<const faiss::IndexIVFPQ*>(below_norm)) {
        plan << " polysemous_training=" << pq->do_polysemous_training;
      }
      if (!method.parameter.empty()) plan << " " << method.parameter << "=" << joined(method.values);
      plan << "\n" << std::flush;

      start = std::chrono::steady_clock::now();
      if (ivf) index.train(train);
      index.add(data.gallery);
      const double build_seconds = seconds_since(start);
      const double rss_growth = rss_mb() - rss_before;
      progress(fmt::format("reidnet {}: built in {:.1f} s", method.name, build_seconds));
      const auto file = fs::path(out) / "index.faiss";
      index.save(file.string());
      const double index_mb = fs::file_size(file) / 1e6;
      fs::remove(file);

      for (const auto value : method.values) {
        auto search = reidnet::IndexSearchOptions();
        auto parameter = std::string();
        if (method.parameter == "nprobe") search.nprobe(value);
        if (method.parameter == "ef_search") search.ef_search(value);
        if (!method.parameter.empty()) parameter = fmt::format(" {}={}", method.parameter, value);
        progress(fmt::format("reidnet {}{}: search start", method.name, parameter));
        start = std::chrono::steady_clock::now();
        const auto found = index.search(data.queries, kTop, search).indices;
        const double search_seconds = seconds_since(start);
        progress(fmt::format("reidnet {}{}: search done in {:.1f} s", method.name, parameter, search_seconds));
        row(fmt::format("impl=reidnet {}{} build_s={:.3f} search_s={:.3f} qps={:.1f} recall10={:.4f} "
                        "index_mb={:.2f} rss_mb={:.2f}",
                        head, parameter, build_seconds, search_seconds, query_count / search_seconds,
                        recall(found, truth), index_mb, rss_growth));
      }
    }
    return 0;
  });
}
