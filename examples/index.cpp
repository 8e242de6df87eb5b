// reidnet-index: FAISS gallery indexes over the features files that reidnet-test writes
// (features.pth, or the baseline's pytorch_result.mat).
//
//   reidnet-index build --features runs/toy/features.pth --type ivfpq --out gallery.faiss
//   reidnet-index add --index gallery.faiss --features more.pth
//   reidnet-index search --index gallery.faiss --features runs/toy/features.pth --k 10 \
//       --out ranks.csv --evaluate
//   reidnet-index info --index gallery.faiss
#include "common/cli.hpp"
#include "common/gallery_search.hpp"
#include <reidnet/engine/run_config.hpp>

#include <reidnet/core/cpu_threads.hpp>
#include <reidnet/core/files.hpp>
#include <reidnet/evaluation/evaluate.hpp>
#include <reidnet/evaluation/gallery_index.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <filesystem>
#include <string>

namespace fs = std::filesystem;

using reidnet::examples::UsageError;

namespace {

constexpr int64_t kMaxK = 1 << 16;

struct IndexConfig {
  std::string features, split, index, out;
  int64_t k = 10, threads = 2;
  bool evaluate = false;
  reidnet::examples::IndexFlags flags;
};

// The rows of the features file that a command works on.
torch::Tensor split_features(const reidnet::RetrievalFeatures& f, const IndexConfig& c) {
  return c.split == "query" ? f.query_f : f.gallery_f;
}

// Bad index files and a file another writer holds are the user's to fix: exit code 2.
template <class Open>
reidnet::GalleryIndex open_index(Open&& open) {
  try {
    return open();
  } catch (const std::exception& error) {
    throw UsageError(error.what());
  }
}

reidnet::GalleryIndex load_index(const std::string& path) {
  return open_index([&] { return reidnet::GalleryIndex::load(path); });
}

void save_index(const reidnet::GalleryIndex& index, const std::string& path) {
  try {
    index.save(path);
  } catch (const reidnet::IndexFileBusy& error) {
    throw UsageError(error.what());
  }
}

void require_folder_of(const std::string& path, const std::string& flag) {
  const auto folder = fs::path(path).parent_path();
  std::error_code error;
  if (!folder.empty() && !fs::is_directory(folder, error)) {
    throw UsageError(flag + " " + path + ": the folder " + folder.string() + " does not exist");
  }
}

void print_info(const reidnet::GalleryIndex& index, const std::string& path) {
  const auto info = index.describe();
  fmt::print("{}: {} index (FAISS \"{}\"), {} pictures of dimension {}, {}\n", path,
             reidnet::index_type_name(info.type), info.factory, info.size, info.dim,
             info.trained ? "trained" : "not trained");
  if (info.nlist > 0) fmt::print("  IVF: {} cells, {} searched a query\n", info.nlist, info.nprobe);
  if (info.pq_m > 0) fmt::print("  PQ: {} sub-quantizers of {} bits\n", info.pq_m, info.pq_bits);
  if (info.sq_bits > 0) fmt::print("  SQ: {} bits a feature component\n", info.sq_bits);
  if (info.hnsw_m > 0) {
    fmt::print("  HNSW: {} links a picture, efConstruction {}, efSearch {}\n", info.hnsw_m,
               info.ef_construction, info.ef_search);
  }
  fmt::print("  {} bytes a picture ({} as float32 features)\n", info.code_bytes, 4 * info.dim);
}

int build(const IndexConfig& c) {
  require_folder_of(c.out, "--out");
  const auto features = split_features(reidnet::examples::read_retrieval_features(c.features), c);
  auto options = c.flags.build_options().progress(reidnet::examples::index_progress("index"));
  if (features.size(0) == 0) {
    throw UsageError(fmt::format("--features {}: no {} features to index", c.features, c.split));
  }
  auto index = open_index(
      [&] { return reidnet::GalleryIndex::create(features.size(1), features.size(0), options); });
  index.train(features);
  index.add(features);
  save_index(index, c.out);
  print_info(index, c.out);
  return 0;
}

int add(const IndexConfig& c) {
  // Held from reading to writing: a concurrent add is refused instead of lost.
  auto index = open_index([&] { return reidnet::GalleryIndex::open_for_update(c.index); });
  const auto features = split_features(reidnet::examples::read_retrieval_features(c.features), c);
  if (features.size(1) != index.dim()) {
    throw UsageError(fmt::format("--features {}: {} features are {}-d, but {} holds {}-d ones",
                                 c.features, c.split, features.size(1), c.index, index.dim()));
  }
  index.set_progress(reidnet::examples::index_progress("index"));
  const auto before = index.size();
  index.add(features);
  save_index(index, c.index);  // atomically: a failed add leaves the file as it was
  fmt::print("added {} pictures (rows {}..{}) to {}\n", features.size(0), before,
             index.size() - 1, c.index);
  return 0;
}

int search(const IndexConfig& c) {
  if (c.out.empty() && !c.evaluate) throw UsageError("search: give --out, --evaluate or both");
  if (!c.out.empty()) require_folder_of(c.out, "--out");
  auto index = load_index(c.index);
  if (index.size() == 0) throw UsageError(c.index + ": the index holds no pictures to search");
  const auto f = reidnet::examples::read_retrieval_features(c.features);
  const auto queries = split_features(f, c);
  if (queries.size(1) != index.dim()) {
    throw UsageError(fmt::format("--features {}: {} features are {}-d, but {} holds {}-d ones",
                                 c.features, c.split, queries.size(1), c.index, index.dim()));
  }
  if (c.evaluate && f.gallery_label.numel() != index.size()) {
    throw UsageError(fmt::format("--evaluate: {} holds {} pictures, but {} has {} gallery labels; "
                                 "evaluate with the features file the index was built from",
                                 c.index, index.size(), c.features, f.gallery_label.numel()));
  }
  const auto k = std::min(c.k, index.size());
  const auto top = index.search(
      queries, k, c.flags.search_options().progress(reidnet::examples::index_progress("index")));
  if (!c.out.empty()) {
    std::string csv = "query_index,rank,gallery_index,score\n";
    const auto* indices = top.indices.data_ptr<int64_t>();
    const auto* scores = top.scores.data_ptr<float>();
    for (int64_t q = 0; q < top.indices.size(0); ++q) {
      for (int64_t r = 0; r < k && indices[q * k + r] >= 0; ++r) {
        csv += fmt::format("{},{},{},{:.6f}\n", q, r + 1, indices[q * k + r], scores[q * k + r]);
      }
    }
    reidnet::write_text_file(c.out, csv);
    fmt::print("top-{} lists of {} queries written to {}\n", k, queries.size(0), c.out);
  }
  if (c.evaluate) {
    const auto result = reidnet::evaluate_top_k(top.indices, top.scores, f.query_label,
                                                f.query_cam, f.gallery_label, f.gallery_cam);
    fmt::print("{}\n", reidnet::format_baseline_line(result));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"FAISS gallery indexes over reidnet-test's features files"};
  app.require_subcommand(1);
  IndexConfig c;
  app.add_option("--threads", c.threads, "CPU threads")
      ->check(CLI::Range(int64_t{1}, reidnet::kMaxThreads));
  const auto features_flag = [&](CLI::App* command, const char* default_split) {
    command->add_option("--features", c.features, "features.pth (reidnet-test) or pytorch_result.mat")
        ->required()
        ->check(CLI::ExistingFile);
    command->add_option("--split", c.split, fmt::format("gallery or query rows (default {})", default_split))
        ->check(CLI::IsMember({"gallery", "query"}));
  };
  auto* build_command = app.add_subcommand("build", "train an index on features and add them");
  features_flag(build_command, "gallery");
  build_command->add_option("--out", c.out, "index file to write")->required();
  reidnet::examples::add_index_build_flags(*build_command, c.flags, "--type");
  reidnet::examples::add_index_search_flags(*build_command, c.flags);

  auto* add_command = app.add_subcommand("add", "append features to an index file");
  add_command->add_option("--index", c.index, "index file (rewritten atomically)")->required();
  features_flag(add_command, "gallery");

  auto* search_command = app.add_subcommand("search", "top-k lists of queries");
  search_command->add_option("--index", c.index, "index file")->required();
  features_flag(search_command, "query");
  search_command->add_option("--k", c.k, "list length (at most the index's size)")
      ->check(CLI::Range(int64_t{1}, kMaxK));
  search_command->add_option("--out", c.out, "CSV of query_index,rank,gallery_index,score");
  search_command->add_flag("--evaluate", c.evaluate,
                           "Rank@k and mAP from the lists (see evaluate_top_k)");
  reidnet::examples::add_index_search_flags(*search_command, c.flags);

  auto* info_command = app.add_subcommand("info", "what an index file holds");
  info_command->add_option("--index", c.index, "index file")->required();

  if (const auto exit_code = reidnet::examples::parse_flags(app, argc, argv)) return *exit_code;
  if (c.split.empty()) c.split = search_command->parsed() ? "query" : "gallery";
  reidnet::set_cpu_threads(static_cast<int>(c.threads));
  return reidnet::examples::run_reporting_errors("reidnet-index", [&] {
    if (build_command->parsed()) return build(c);
    if (add_command->parsed()) return add(c);
    if (search_command->parsed()) return search(c);
    print_info(load_index(c.index), c.index);
    return 0;
  });
}
