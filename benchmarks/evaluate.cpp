// reidnet-evaluate: times reidnet::evaluate and reidnet::re_ranking on Market-1501-sized
// features (3,368 queries x 19,732 gallery, 512-d), read from a file written by
// benchmarks/evaluate_reference.py (so the Python baseline sees the same data) or generated.
//
//   reidnet-evaluate protocol --data market.pt --repeat 3
//   reidnet-evaluate re-ranking --data market.pt --from matrices
//   reidnet-evaluate re-ranking --queries 500 --gallery 3000      # generated features
//   reidnet-evaluate re-ranking --from index --list 100 --compare  # KNN re-ranking on FAISS
//
// Each run prints one `key=value` line that benchmarks/evaluate_compare.py parses.
#include "../examples/common/cli.hpp"
#include "common/timing.hpp"

#include <reidnet/evaluation/gallery_index.hpp>
#include <reidnet/reidnet.hpp>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Data {
  torch::Tensor qf, ql, qc, gf, gl, gc;
};

struct Synthetic {
  int64_t queries = 3368;
  int64_t gallery = 19732;
  int64_t dim = 512;
  int64_t ids = 751;
  int64_t cameras = 6;
  double noise = 2.5;
  uint64_t seed = 1;
};

// Identity clusters on the unit sphere plus distractors (id 0, 14%) and junk (id -1, 19%),
// the distribution of benchmarks/evaluate_reference.py.
Data generate(const Synthetic& s) {
  torch::manual_seed(s.seed);
  const auto centers = torch::randn({s.ids + 1, s.dim});
  const auto ql = torch::randint(1, s.ids + 1, {s.queries}, torch::kLong);
  const auto qc = torch::randint(1, s.cameras + 1, {s.queries}, torch::kLong);
  auto gl = torch::randint(1, s.ids + 1, {s.gallery}, torch::kLong);
  const auto kind = torch::rand({s.gallery});
  gl.masked_fill_(kind < 0.14, 0);
  gl.masked_fill_((kind >= 0.14) & (kind < 0.33), -1);
  const auto gc = torch::randint(1, s.cameras + 1, {s.gallery}, torch::kLong);
  auto features = [&](const torch::Tensor& labels) {
    auto f = centers.index_select(0, labels.clamp_min(0)) * (labels > 0).unsqueeze(1);
    f = f + s.noise * torch::randn(f.sizes());
    return f / f.norm(2, {1}, true);
  };
  return {features(ql), ql, qc, features(gl), gl, gc};
}

// A dict of tensors saved by torch.save (what evaluate_reference.py writes), or the features
// file reidnet-test writes.
Data load(const std::string& path) {
  const auto tensors = reidnet::read_state_dict(path);
  auto get = [&](const std::string& key) {
    if (!tensors.contains(key)) {
      throw std::runtime_error(fmt::format("--data file {} lacks the tensor '{}'", path, key));
    }
    return tensors[key];
  };
  return {get("qf"), get("ql"), get("qc"), get("gf"), get("gl"), get("gc")};
}

using reidnet::benchmarks::seconds_since;

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // kilobytes on Linux
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Time reidnet::evaluate and reidnet::re_ranking on Market-1501-sized features"};
  app.require_subcommand(1);
  std::string data_path;
  Synthetic synthetic;
  int threads = 0;
  for (auto* command : {app.add_subcommand("protocol", "Rank@k/mAP of the features"),
                        app.add_subcommand("re-ranking", "k-reciprocal re-ranking, then mAP")}) {
    command->add_option("--data", data_path, "features file from evaluate_reference.py");
    command->add_option("--queries", synthetic.queries, "generated queries")
        ->check(CLI::PositiveNumber);
    command->add_option("--gallery", synthetic.gallery, "generated gallery images")
        ->check(CLI::PositiveNumber);
    command->add_option("--dim", synthetic.dim, "feature width")->check(CLI::PositiveNumber);
    command->add_option("--ids", synthetic.ids, "identities")->check(CLI::PositiveNumber);
    command->add_option("--seed", synthetic.seed, "seed of the generated features");
    command->add_option("--noise", synthetic.noise, "noise of the generated features");
    command->add_option("--threads", threads, "intra-op threads (0 = LibTorch's default)")
        ->check(CLI::NonNegativeNumber);
  }
  int repeat = 3;
  app.get_subcommand("protocol")
      ->add_option("--repeat", repeat, "timed runs")
      ->check(CLI::PositiveNumber);
  std::string from = "matrices";
  int64_t block_rows = 512;
  app.get_subcommand("re-ranking")
      ->add_option("--from", from,
                   "matrices: the baseline's q_g/q_q/g_g API; features: no matrices")
      ->check(CLI::IsMember({"matrices", "features", "index"}));
  int64_t list_length = 100;
  std::string index_type = "flat";
  bool compare = false;
  app.get_subcommand("re-ranking")
      ->add_option("--list", list_length, "--from index: each query's re-ranked list length")
      ->check(CLI::PositiveNumber);
  app.get_subcommand("re-ranking")
      ->add_option("--index", index_type, "--from index: the gallery index's type")
      ->check(CLI::IsMember(reidnet::index_type_names()));
  app.get_subcommand("re-ranking")
      ->add_flag("--compare", compare,
                 "--from index: also run re_ranking_features and print the largest difference "
                 "of the lists' distances from its matrix");
  app.get_subcommand("re-ranking")
      ->add_option("--block-rows", block_rows, "distance rows per block")
      ->check(CLI::PositiveNumber);
  if (const auto exit_code = reidnet::examples::parse_flags(app, argc, argv)) return *exit_code;

  try {
    if (threads > 0) at::set_num_threads(threads);
    const auto data = data_path.empty() ? generate(synthetic) : load(data_path);
    const auto shape = fmt::format("queries={} gallery={} dim={} threads={}", data.qf.size(0),
                                   data.gf.size(0), data.qf.size(1), at::get_num_threads());
    if (app.got_subcommand("protocol")) {
      std::vector<double> times;
      reidnet::EvalResult result;
      for (int run = 0; run < repeat; ++run) {
        const auto start = std::chrono::steady_clock::now();
        result = reidnet::evaluate(data.qf, data.ql, data.qc, data.gf, data.gl, data.gc);
        times.push_back(seconds_since(start));
      }
      fmt::print(
          "benchmark=evaluate {} seconds={:.4f} best={:.4f} peak_rss_mb={:.0f} mINP={:.6f} {}\n",
          shape, median(times), *std::min_element(times.begin(), times.end()), peak_rss_mb(),
          result.mINP, reidnet::format_baseline_line(result));
      return 0;
    }
    const auto options = reidnet::ReRankingOptions().block_rows(block_rows);
    const auto distances = reidnet::EvalOptions().score_kind(reidnet::kDistance);
    if (from == "index") {
      // KNN re-ranking: memory O(N k) and no N x N pass; the index build is timed with it.
      const auto start = std::chrono::steady_clock::now();
      auto index = reidnet::GalleryIndex::build(
          data.gf, reidnet::GalleryIndexOptions().type(reidnet::index_type_from_name(index_type)));
      const auto lists = reidnet::knn_re_ranking(data.qf, data.gf, index, list_length, options);
      const auto elapsed = seconds_since(start);
      const auto peak = peak_rss_mb();
      const auto result = reidnet::evaluate_top_k(lists.indices, lists.distances, data.ql,
                                                  data.qc, data.gl, data.gc, distances);
      fmt::print("benchmark=re_ranking from=index index={} list={} {} seconds={:.3f} "
                 "peak_rss_mb={:.0f} {}\n",
                 index_type, list_length, shape, elapsed, peak, reidnet::format_baseline_line(result));
      if (compare) {
        const auto dense = reidnet::re_ranking_features(data.qf, data.gf, options);
        const auto k = lists.indices.size(1);
        const auto gaps = (lists.distances - dense.gather(1, lists.indices.clamp_min(0))).abs();
        const auto entries = gaps.max();
        // Near-ties at a neighbour list's end may fall the other way in the two summation
        // orders; those queries' distances then differ beyond rounding.
        const auto off_rows = (gaps > 1e-5).any(1).sum();
        const auto order = (lists.distances - std::get<0>(dense.sort(1)).slice(1, 0, k)).abs().max();
        const auto top = dense.topk(k, 1, /*largest=*/false);
        const auto truncated = reidnet::evaluate_top_k(std::get<1>(top), std::get<0>(top), data.ql,
                                                       data.qc, data.gl, data.gc, distances);
        fmt::print("compare=re_ranking_features max_entry_difference={:.3g} "
                   "queries_beyond_1e-5={} max_order_difference={:.3g} its_top_{}: {} its_full: {}\n",
                   entries.item<double>(), off_rows.item<int64_t>(), order.item<double>(), k,
                   reidnet::format_baseline_line(truncated),
                   reidnet::format_baseline_line(
                       reidnet::evaluate_scores(dense, data.ql, data.qc, data.gl, data.gc, distances)));
      }
      return 0;
    }
    // As the baseline's evaluate_rerank.py: the similarity matrices exist before the timer.
    torch::Tensor q_g, q_q, g_g;
    if (from == "matrices") {
      q_g = data.qf.mm(data.gf.t());
      q_q = data.qf.mm(data.qf.t());
      g_g = data.gf.mm(data.gf.t());
    }
    const auto before = peak_rss_mb();
    const auto start = std::chrono::steady_clock::now();
    const auto distance = from == "features"
                              ? reidnet::re_ranking_features(data.qf, data.gf, options)
                              : reidnet::re_ranking(q_g, q_q, g_g, options);
    const auto elapsed = seconds_since(start);
    const auto peak = peak_rss_mb();
    const auto result =
        reidnet::evaluate_scores(distance, data.ql, data.qc, data.gl, data.gc, distances);
    fmt::print(
        "benchmark=re_ranking from={} {} seconds={:.3f} peak_rss_mb={:.0f} "
        "rss_before_mb={:.0f} {}\n",
        from, shape, elapsed, peak, before, reidnet::format_baseline_line(result));
    return 0;
  } catch (const std::exception& error) {
    fmt::print(stderr, "reidnet-evaluate: {}\n", error.what());
    return 1;
  }
}
