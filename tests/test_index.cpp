// The FAISS gallery index: exact search with the whole gallery evaluates exactly as `evaluate`;
// KNN re-ranking gives `re_ranking`'s lists; index files round-trip, load in Python's FAISS
// (tests/python/index_check.py) and Python's load here (tests/python/index_reference.py);
// bad files and mismatched dimensions get errors naming them; reidnet-index's commands.
#include "support.hpp"

#include <reidnet/io/checkpoint.hpp>
#include <reidnet/evaluation/evaluate.hpp>
#include <reidnet/evaluation/gallery_index.hpp>
#include <reidnet/evaluation/re_ranking.hpp>

#include <sys/inotify.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

// A namespace per topic: the topics build as one unit (CMake unity build) without their
// helpers meeting.
namespace reidnet_test_index {

namespace fs = std::filesystem;

namespace {

using reidnet::test::fixture;
using reidnet::test::run_program;

const fs::path& workspace() {
  static const fs::path root = reidnet::test::fresh_workspace("index_workspace");
  return root;
}

struct Retrieval {
  torch::Tensor qf, ql, qc, gf, gl, gc;
};

// Features whose dot products, L2 normalisation included, are exact in float32 whatever the
// summation order: 16 entries of +-1/4 (norm exactly 1), the rest 0. Then FAISS's scores are
// bit for bit LibTorch's, and rankings can be compared exactly. Ids have 2..6 pictures on
// 3 cameras, with junk (-1) and distractors (0).
Retrieval exact_valued_set(int64_t seed, int64_t num_queries, int64_t num_gallery, int64_t dim) {
  torch::manual_seed(seed);
  const auto place = [&](int64_t rows) {
    auto f = torch::zeros({rows, dim});
    for (int64_t r = 0; r < rows; ++r) {
      const auto where = torch::randperm(dim).slice(0, 0, 16);
      const auto signs = torch::randint(0, 2, {16}).to(torch::kFloat) * 0.5f - 0.25f;
      f[r].index_put_({where}, signs);
    }
    return f;
  };
  const auto ids = [&](int64_t rows) { return torch::randint(-1, 30, {rows}, torch::kLong); };
  const auto cams = [&](int64_t rows) { return torch::randint(1, 4, {rows}, torch::kLong); };
  return {place(num_queries), ids(num_queries), cams(num_queries),
          place(num_gallery), ids(num_gallery), cams(num_gallery)};
}

// `s` as reidnet-test's features file (qf, ql, qc, gf, gl, gc) at `path`; returns its tensors.
reidnet::StateDict write_features_file(const Retrieval& s, const fs::path& path) {
  reidnet::StateDict tensors;
  for (const auto& [key, value] : {std::pair<const char*, torch::Tensor>{"qf", s.qf}, {"ql", s.ql},
                                   {"qc", s.qc}, {"gf", s.gf}, {"gl", s.gl}, {"gc", s.gc}}) {
    tensors.insert(key, value);
  }
  reidnet::save_tensors(tensors, path.string());
  return tensors;
}

// Clustered Gaussian features (ids as clusters), L2-normalised, as ReID embeddings are.
Retrieval clustered_set(int64_t seed, int64_t num_queries, int64_t num_gallery, int64_t dim,
                        int64_t num_ids = 25) {
  torch::manual_seed(seed);
  const auto centres = torch::randn({num_ids, dim});
  const auto make = [&](int64_t rows, torch::Tensor& labels, torch::Tensor& cameras) {
    labels = torch::randint(1, num_ids, {rows}, torch::kLong);
    cameras = torch::randint(1, 7, {rows}, torch::kLong);
    auto f = centres.index_select(0, labels) + 0.8 * torch::randn({rows, dim});
    return f / f.norm(2, 1, true);
  };
  Retrieval set;
  set.qf = make(num_queries, set.ql, set.qc);
  set.gf = make(num_gallery, set.gl, set.gc);
  return set;
}

void check_same_result(const reidnet::EvalResult& actual, const reidnet::EvalResult& expected) {
  CHECK(torch::equal(actual.cmc, expected.cmc));
  CHECK(torch::equal(actual.ap, expected.ap));
  CHECK(actual.mAP == expected.mAP);
  CHECK(actual.mINP == expected.mINP);
  CHECK(actual.num_valid_queries == expected.num_valid_queries);
  CHECK(torch::equal(actual.first_hit, expected.first_hit));
}

std::string read_bytes(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string load_error(const fs::path& path, std::optional<int64_t> dim = std::nullopt) {
  try {
    reidnet::GalleryIndex::load(path.string(), dim);
  } catch (const std::runtime_error& error) {
    return error.what();
  }
  return "(loaded)";
}

}  // namespace

TEST_CASE("an exact index searched for the whole gallery evaluates exactly as evaluate") {
  for (const int64_t seed : {1, 2, 3}) {
    const auto s = exact_valued_set(seed, 60, 300, 64);
    auto index = reidnet::GalleryIndex::build(s.gf);
    const auto top = index.search(s.qf, 300);
    for (const auto& options : {reidnet::EvalOptions(),
                                reidnet::EvalOptions().average_precision(reidnet::kPlainAP)}) {
      const auto expected = reidnet::evaluate(s.qf, s.ql, s.qc, s.gf, s.gl, s.gc, options);
      CHECK(torch::equal(top.scores, std::get<0>(s.qf.matmul(s.gf.t()).topk(300, 1))));
      check_same_result(reidnet::evaluate_top_k(top.indices, top.scores, s.ql, s.qc, s.gl, s.gc, options),
                        expected);
      // Lists in any order, ties included, are ranked as evaluate ranks them.
      const auto shuffled = torch::randperm(300);
      check_same_result(reidnet::evaluate_top_k(top.indices.index_select(1, shuffled),
                                                top.scores.index_select(1, shuffled), s.ql, s.qc,
                                                s.gl, s.gc, options),
                        expected);
    }
  }
}

TEST_CASE("truncated lists keep Rank@k exact up to their length and bound mAP from below") {
  const auto s = clustered_set(4, 80, 500, 48);
  const auto expected = reidnet::evaluate(s.qf, s.ql, s.qc, s.gf, s.gl, s.gc);
  auto index = reidnet::GalleryIndex::build(s.gf);
  const auto top = index.search(s.qf, 20);
  const auto truncated = reidnet::evaluate_top_k(top.indices, top.scores, s.ql, s.qc, s.gl, s.gc);
  for (const int64_t k : {1, 5, 10, 20}) CHECK(truncated.rank(k) == doctest::Approx(expected.rank(k)).epsilon(1e-12));
  CHECK(truncated.mAP <= expected.mAP);
  CHECK(truncated.mAP > 0.5 * expected.mAP);
  CHECK(truncated.num_valid_queries == expected.num_valid_queries);
  // Distances rank lowest first.
  const auto distances = reidnet::evaluate_top_k(top.indices, 1.0 - top.scores, s.ql, s.qc, s.gl,
                                                 s.gc, reidnet::EvalOptions().score_kind(reidnet::kDistance));
  CHECK(distances.mAP == truncated.mAP);
  SUBCASE("bad lists are refused, naming what is wrong") {
    auto bad = top.indices.clone();
    bad[3][2] = 500;
    CHECK_THROWS_WITH(reidnet::evaluate_top_k(bad, top.scores, s.ql, s.qc, s.gl, s.gc),
                      doctest::Contains("query 3 holds gallery row 500"));
    bad[3][2] = bad[3][1];
    CHECK_THROWS_WITH(reidnet::evaluate_top_k(bad, top.scores, s.ql, s.qc, s.gl, s.gc),
                      doctest::Contains("twice"));
    CHECK_THROWS_WITH(reidnet::evaluate_top_k(top.indices.slice(1, 0, 5), top.scores, s.ql, s.qc,
                                              s.gl, s.gc),
                      doctest::Contains("shape"));
  }
}

TEST_CASE("KNN re-ranking with an exact index gives re_ranking's lists on three random sets") {
  for (const int64_t seed : {5, 6, 7}) {
    const auto s = clustered_set(seed, 50, 400, 32, 20);
    const auto dense = reidnet::re_ranking_features(s.qf, s.gf);  // [Nq, Ng] distances
    auto index = reidnet::GalleryIndex::build(s.gf);
    for (const int64_t k : {int64_t{400}, int64_t{15}}) {
      const auto lists = reidnet::knn_re_ranking(s.qf, s.gf, index, k);
      REQUIRE(lists.indices.size(1) == k);
      const auto expected = std::get<0>(dense.sort(1)).slice(1, 0, k);
      const auto at_lists = dense.gather(1, lists.indices);
      const double same_entries = (lists.distances - at_lists).abs().max().item<double>();
      const double same_order = (lists.distances - expected).abs().max().item<double>();
      INFO("seed " << seed << " k " << k << ": " << same_entries << " " << same_order);
      CHECK(same_entries <= 1e-5);
      CHECK(same_order <= 1e-5);
      const auto options = reidnet::EvalOptions().score_kind(reidnet::kDistance);
      const auto from_lists = reidnet::evaluate_top_k(lists.indices, lists.distances, s.ql, s.qc,
                                                      s.gl, s.gc, options);
      const auto from_dense = reidnet::evaluate_scores(dense, s.ql, s.qc, s.gl, s.gc, options);
      CHECK(from_lists.rank1() == doctest::Approx(from_dense.rank1()).epsilon(1e-4));
      if (k == 400) CHECK(from_lists.mAP == doctest::Approx(from_dense.mAP).epsilon(1e-4));
    }
  }
  SUBCASE("bad neighbour lists are refused") {
    const auto s = clustered_set(8, 10, 40, 16);
    reidnet::NeighbourGraph graph{torch::zeros({50, 21}, torch::kLong), torch::zeros({50}),
                                  torch::zeros({10, 5}, torch::kLong)};
    CHECK_THROWS_WITH(reidnet::re_ranking_neighbours(s.qf, s.gf, graph),
                      doctest::Contains("distinct neighbours"));
    graph.neighbours = torch::zeros({49, 21}, torch::kLong);
    CHECK_THROWS_WITH(reidnet::re_ranking_neighbours(s.qf, s.gf, graph),
                      doctest::Contains("graph.neighbours must be int64 [50, >= 21]"));
    graph.neighbours = torch::full({50, 21}, 50, torch::kLong);
    CHECK_THROWS_WITH(reidnet::re_ranking_neighbours(s.qf, s.gf, graph),
                      doctest::Contains("outside -1..49"));
  }
}

TEST_CASE("every index type round-trips through a file, and Python's FAISS reads it") {
  const auto s = clustered_set(9, 30, 2000, 64, 60);
  const auto queries_pt = workspace() / "queries.pt";
  reidnet::StateDict queries;
  queries.insert("queries", s.qf);
  reidnet::save_tensors(queries, queries_pt.string());
  for (const auto type : reidnet::kIndexTypes) {
    const std::string name = reidnet::index_type_name(type);
    INFO(name);
    std::vector<int64_t> progress;
    auto index = reidnet::GalleryIndex::build(
        s.gf, reidnet::GalleryIndexOptions().type(type).batch(700).progress(
                  [&](const reidnet::IndexProgress& p) {
                    if (p.stage == "add") progress.push_back(p.done);
                  }));
    CHECK(progress == std::vector<int64_t>{700, 1400, 2000});
    const auto before = index.search(s.qf, 10, reidnet::IndexSearchOptions().nprobe(4));
    const auto path = workspace() / (name + ".faiss");
    index.save(path.string());
    auto loaded = reidnet::GalleryIndex::load(path.string(), 64);
    CHECK(loaded.type() == type);
    CHECK(loaded.size() == 2000);
    CHECK(loaded.describe().factory == index.describe().factory);
    const auto after = loaded.search(s.qf, 10, reidnet::IndexSearchOptions().nprobe(4));
    CHECK(torch::equal(before.indices, after.indices));
    CHECK(torch::equal(before.scores, after.scores));
    // Exact search finds each query's true top 10; the others nearly all of it here.
    const auto exact = std::get<1>(s.qf.matmul(s.gf.t()).topk(10, 1));
    int64_t found = 0;
    for (int64_t q = 0; q < 30; ++q) {
      for (int64_t r = 0; r < 10; ++r) found += (after.indices[q] == exact[q][r]).any().item<bool>();
    }
    const double recall = static_cast<double>(found) / 300.0;
    if (type == reidnet::IndexType::kFlat) CHECK(recall == 1.0);
    CHECK(recall >= 0.8);
    const auto python_out = workspace() / (name + ".python.pt");
    REQUIRE(reidnet::test::run_python("index_check.py", path.string() + " " + queries_pt.string() +
                                      " 10 " + python_out.string()) == 0);
    auto python = reidnet::test::load_tensor_dict(python_out.string());
    CHECK(python["ntotal"].item<int64_t>() == 2000);
    CHECK(python["d"].item<int64_t>() == 64);
    // Python searches with the nprobe and efSearch saved in the file.
    const auto saved = loaded.search(s.qf, 10);
    CHECK(torch::equal(python["indices"], saved.indices));
    CHECK(torch::allclose(python["scores"], saved.scores, 0, 1e-6));
  }
}

TEST_CASE("indexes that Python's FAISS wrote load here and search alike; others are refused") {
  const auto features = reidnet::test::load_tensor_dict(fixture("index", "features.pt"));
  const auto expected = reidnet::test::load_tensor_dict(fixture("index", "expected.pt"));
  for (const std::string name : {"ivfsq", "ivfpq", "hnsw"}) {
    INFO(name);
    auto index = reidnet::GalleryIndex::load(fixture("index", "python_" + name + ".faiss"), 32);
    CHECK(index.size() == 600);
    const auto top = index.search(features.at("queries"), 7);
    CHECK(torch::equal(top.indices, expected.at(name + "_indices")));
    CHECK(torch::allclose(top.scores, expected.at(name + "_scores"), 0, 1e-6));
  }
  CHECK(reidnet::GalleryIndex::load(fixture("index", "python_ivfpq.faiss")).describe().nprobe == 3);
  const auto sq = reidnet::GalleryIndex::load(fixture("index", "python_ivfsq.faiss")).describe();
  CHECK(sq.type == reidnet::IndexType::kIvfSq);
  CHECK(sq.sq_bits == 6);
  CHECK(sq.factory == "L2norm,IVF8,SQ6");
  CHECK(sq.code_bytes == 32 * 6 / 8 + 8);
  CHECK(load_error(fixture("index", "sq_fp16.faiss")).find("not SQ8, SQ6 or SQ4") != std::string::npos);
  CHECK(load_error(fixture("index", "plain_flat.faiss")).find("L2 normalisation") != std::string::npos);
  CHECK(load_error(fixture("index", "l2_metric.faiss")).find("inner product") != std::string::npos);
}

TEST_CASE("bad index files and mismatched dimensions get errors naming them") {
  const auto s = clustered_set(10, 5, 300, 32);
  auto flat = reidnet::GalleryIndex::build(s.gf);
  const auto flat_path = workspace() / "bad_source_flat.faiss";
  flat.save(flat_path.string());
  auto ivf = reidnet::GalleryIndex::build(s.gf, reidnet::GalleryIndexOptions().type(reidnet::IndexType::kIvfFlat));
  const auto ivf_path = workspace() / "bad_source_ivf.faiss";
  ivf.save(ivf_path.string());
  const auto bytes = read_bytes(flat_path);

  CHECK(load_error(workspace() / "missing.faiss").find("cannot open the index file") != std::string::npos);
  CHECK(load_error(workspace()).find("not a regular file") != std::string::npos);
  const auto empty = workspace() / "empty.faiss";
  write_bytes(empty, "");
  CHECK(load_error(empty).find("the file ends inside the file's first tag") != std::string::npos);
  const auto text = workspace() / "text.faiss";
  write_bytes(text, "this is not an index\n");
  CHECK(load_error(text).find("does not start with FAISS's L2 normalisation") != std::string::npos);
  const auto truncated = workspace() / "truncated.faiss";
  write_bytes(truncated, bytes.substr(0, bytes.size() / 2));
  CHECK(load_error(truncated).find(truncated.string() + ": not a valid gallery index") != std::string::npos);

  // The flat codes' size field, patched to claim 2^39 floats: refused without allocating them.
  const auto flat_tag = bytes.find("IxFI");
  REQUIRE(flat_tag != std::string::npos);
  auto huge = bytes;
  const uint64_t claim = uint64_t{1} << 39;
  std::memcpy(&huge[flat_tag + 4 + 33], &claim, sizeof claim);
  const auto huge_path = workspace() / "huge.faiss";
  write_bytes(huge_path, huge);
  const auto idle_kb = reidnet::test::idle_child_rss_kb();
  const auto child = reidnet::test::run_in_child([&](std::string& message) {
    message = load_error(huge_path);
    return 0;
  });
  INFO(child.message);
  CHECK(child.message.find(huge_path.string() + ": not a valid gallery index: the index claims "
                           "549755813888 entries") != std::string::npos);
  CHECK(child.peak_rss_kb - idle_kb < 256 * 1024);  // the 2 TB were never allocated here

  // The last id of the last IVF cell, patched out of range: FAISS would return it from search.
  auto bad_id = read_bytes(ivf_path);
  const int64_t outside = 1000000;
  std::memcpy(&bad_id[bad_id.size() - 8], &outside, sizeof outside);
  const auto bad_id_path = workspace() / "bad_id.faiss";
  write_bytes(bad_id_path, bad_id);
  CHECK(load_error(bad_id_path).find("lists picture 1000000 of 300") != std::string::npos);

  CHECK(load_error(flat_path, 128).find("holds 32-d features, expected 128-d") != std::string::npos);
  CHECK_THROWS_WITH(flat.search(torch::randn({3, 16}), 5),
                    doctest::Contains("queries [3, 16] have dimension 16, but the index holds 32-d"));
  CHECK_THROWS_WITH(flat.add(torch::randn({3, 31})), doctest::Contains("dimension 31"));
  CHECK_THROWS_WITH(flat.search(torch::full({1, 32}, NAN), 5), doctest::Contains("NaN"));
  CHECK_THROWS_WITH(reidnet::GalleryIndex::create(
                        32, 300, reidnet::GalleryIndexOptions().type(reidnet::IndexType::kIvfPq).pq_m(5)),
                    doctest::Contains("pq_m 5 must divide the feature dimension 32"));
  CHECK_THROWS_WITH(reidnet::GalleryIndex::create(
                        32, 10, reidnet::GalleryIndexOptions().type(reidnet::IndexType::kIvfFlat).nlist(64)),
                    doctest::Contains("nlist 64 needs at least 64 training features, got 10"));
  CHECK_THROWS_WITH(reidnet::GalleryIndex::create(
                        32, 300, reidnet::GalleryIndexOptions().type(reidnet::IndexType::kIvfSq).sq_bits(5)),
                    doctest::Contains("sq_bits must be 8, 6 or 4, got 5"));
  CHECK_THROWS_WITH(reidnet::index_type_from_name("lsh"), doctest::Contains("unknown index type 'lsh'"));
}

TEST_CASE("index files that FAISS reads but search or add would misuse are refused at load") {
  // Each file is one structure away from what reidnet writes; see index_reference.py.
  const std::vector<std::pair<std::string, std::string>> cases{
      {"idmap_quantizer", "its coarse quantizer is not a flat inner-product index"},
      {"narrow_quantizer", "the coarse quantizer holds 8 features of dimension 16, expected 8 of dimension 32"},
      {"ivf_nprobe", "it searches 1000000000 cells a query (nprobe), expected 1 to its 8 cells"},
      {"ondisk", "its inverted lists are not stored in the file (FAISS type 'ilod'"},
      {"narrow_storage", "the HNSW storage holds 600 features of dimension 16, expected 600 of dimension 32"},
      {"hnsw_storage", "its storage is not a flat inner-product index"},
      {"cum_levels", "do not match its level"},
      {"assign_probas", "its levels' link counts and probabilities do not match"},
      {"upper_beam_negative", "it stores an upper beam of -1"},
      {"upper_beam_huge", "it stores an upper beam of 1073741824"},
      {"ef_search_huge", "it stores efSearch 100000000 and efConstruction 40; expected 1 to 65536"},
      {"ef_search_max", "it stores efSearch 2147483647"},
      {"link_level", ", which is not on that level"},
  };
  // The data file that the on-disk lists name: watched, it must never be opened, even to read.
  const auto named = fixture("index", "hostile_ondisk.ivfdata");
  const int watch = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  REQUIRE(watch >= 0);
  REQUIRE(::inotify_add_watch(watch, named.c_str(), IN_OPEN | IN_ACCESS | IN_MODIFY) >= 0);
  const auto idle_kb = reidnet::test::idle_child_rss_kb();
  for (const auto& [name, expected] : cases) {
    const auto path = fixture("index", "hostile_" + name + ".faiss");
    INFO(name);
    const auto child = reidnet::test::run_in_child([&](std::string& message) {
      message = load_error(path);
      return 0;
    });
    INFO(child.message);
    CHECK(child.code == 0);  // no signal, no unexpected exception
    CHECK(child.message.find(path + ": not a valid gallery index: ") != std::string::npos);
    CHECK(child.message.find(expected) != std::string::npos);
    CHECK(child.peak_rss_kb - idle_kb < 32 * 1024);
    const auto search = run_program("reidnet-index", "search --index " + path + " --features " +
                                                         fixture("index", "features.pt") + " --evaluate");
    CHECK(search.status == 2);
    CHECK(search.output.find(path + ": not a valid gallery index: ") != std::string::npos);
    CHECK(search.output.find(expected) != std::string::npos);
  }
  char events[4096];
  CHECK(::read(watch, events, sizeof events) < 0);  // nothing opened the data file
  ::close(watch);
}

TEST_CASE("reidnet-index: one writer at a time, no lost update, no stale temporaries, no empty index") {
  const auto s = clustered_set(12, 10, 20000, 32, 30);
  const auto features = workspace() / "writers.pth";
  const auto tensors = write_features_file(s, features);
  const auto index = workspace() / "writers.faiss";
  const auto add = "add --index " + index.string() + " --features " + features.string();
  REQUIRE(run_program("reidnet-index", "build --features " + features.string() + " --out " +
                                           index.string()).status == 0);

  // A writer that holds the file (here this process) refuses a second one, naming the file.
  {
    auto held = reidnet::GalleryIndex::open_for_update(index.string());
    const auto refused = run_program("reidnet-index", add);
    CHECK(refused.status == 2);
    CHECK(refused.output.find(index.string() + " is being written by another process") != std::string::npos);
    CHECK_THROWS_AS(reidnet::GalleryIndex::open_for_update(index.string()), reidnet::IndexFileBusy);
  }
  CHECK(reidnet::GalleryIndex::load(index.string()).size() == 20000);

  // Two adds at once: each either adds its 20,000 pictures or is refused; none is lost.
  const auto both = reidnet::test::run_shell_command(
      "binary=" + std::string(REIDNET_TEST_EXAMPLES_DIR) + "/reidnet-index; $binary " + add +
          " > /dev/null 2>&1 & first=$!; $binary " + add + " > /dev/null 2>&1; second=$?; "
          "wait $first; echo statuses $? $second",
      "two_adds");
  INFO(both.output);
  int first = -1, second = -1;
  REQUIRE(std::sscanf(both.output.c_str() + both.output.find("statuses"), "statuses %d %d", &first, &second) == 2);
  CHECK((first == 0 || first == 2));
  CHECK((second == 0 || second == 2));
  CHECK(first + second <= 2);  // at least one succeeded
  CHECK(reidnet::GalleryIndex::load(index.string()).size() == 20000 * (1 + (first == 0) + (second == 0)));

  // A writer killed mid-write left a temporary: the next writer removes it, not another file.
  const auto stale = workspace() / "writers.faiss.tmp4242_17_3_0";
  const auto neighbour = workspace() / "writers.faiss.tmpnotes";
  write_bytes(stale, "half an index");
  write_bytes(neighbour, "a user's file");
  CHECK(run_program("reidnet-index", add).status == 0);
  CHECK(!fs::exists(stale));
  CHECK(fs::exists(neighbour));

  // An index with no pictures is neither built nor searched.
  reidnet::StateDict none = tensors;
  none["gf"] = torch::zeros({0, 32});
  none["gl"] = torch::zeros({0}, torch::kLong);
  none["gc"] = torch::zeros({0}, torch::kLong);
  const auto none_path = workspace() / "no_gallery.pth";
  reidnet::save_tensors(none, none_path.string());
  const auto empty_build = run_program("reidnet-index", "build --features " + none_path.string() +
                                                            " --out " + (workspace() / "none.faiss").string());
  CHECK(empty_build.status == 2);
  CHECK(empty_build.output.find("no gallery features to index") != std::string::npos);
  CHECK(!fs::exists(workspace() / "none.faiss"));
  const auto empty_index = workspace() / "empty_index.faiss";
  reidnet::GalleryIndex::create(32, 0).save(empty_index.string());
  const auto empty_search = run_program("reidnet-index", "search --index " + empty_index.string() +
                                                             " --features " + features.string() + " --evaluate");
  CHECK(empty_search.status == 2);
  CHECK(empty_search.output.find(empty_index.string() + ": the index holds no pictures") != std::string::npos);
}

TEST_CASE("reidnet-index builds, adds, searches and describes over reidnet-test's features files") {
  const auto s = clustered_set(11, 40, 600, 32, 30);
  const auto features = workspace() / "features.pth";
  const auto tensors = write_features_file(s, features);
  const auto index = workspace() / "cli.faiss";
  const auto build = run_program("reidnet-index", "build --features " + features.string() +
                                                      " --type ivfpq --pq-m 8 --out " + index.string());
  INFO(build.output);
  REQUIRE(build.status == 0);
  CHECK(build.output.find("ivfpq index (FAISS \"L2norm,IVF15,PQ8x8np\"), 600 pictures") != std::string::npos);

  const auto info = run_program("reidnet-index", "info --index " + index.string());
  CHECK(info.status == 0);
  CHECK(info.output.find("PQ: 8 sub-quantizers of 8 bits") != std::string::npos);
  CHECK(info.output.find("16 bytes a picture (128 as float32 features)") != std::string::npos);

  const auto ranks = workspace() / "cli_ranks.csv";
  const auto search = run_program("reidnet-index", "search --index " + index.string() + " --features " +
                                                       features.string() + " --k 600 --nprobe 15 --out " +
                                                       ranks.string() + " --evaluate");
  INFO(search.output);
  REQUIRE(search.status == 0);
  CHECK(search.output.find("Rank@1:") != std::string::npos);
  std::ifstream csv(ranks);
  std::string header, line;
  std::getline(csv, header);
  CHECK(header == "query_index,rank,gallery_index,score");
  int64_t rows = 0;
  while (std::getline(csv, line)) ++rows;
  CHECK(rows == 40 * 600);

  // A rejected add (wrong dimension) leaves the file byte-identical; a good one appends.
  const auto original = read_bytes(index);
  const auto narrow = workspace() / "narrow.pth";
  // A consistent features file (its query and gallery features both 16-d) whose dimension
  // differs from the index's.
  reidnet::StateDict narrow_tensors = tensors;
  narrow_tensors["qf"] = torch::randn({tensors["qf"].size(0), 16});
  narrow_tensors["gf"] = torch::randn({5, 16});
  narrow_tensors["gl"] = tensors["gl"].slice(0, 0, 5).contiguous();
  narrow_tensors["gc"] = tensors["gc"].slice(0, 0, 5).contiguous();
  reidnet::save_tensors(narrow_tensors, narrow.string());
  const auto rejected = run_program("reidnet-index", "add --index " + index.string() + " --features " + narrow.string());
  CHECK(rejected.status == 2);
  CHECK(rejected.output.find("16-d, but " + index.string() + " holds 32-d") != std::string::npos);
  CHECK(read_bytes(index) == original);
  const auto added = run_program("reidnet-index", "add --index " + index.string() + " --features " +
                                                      features.string() + " --split query");
  CHECK(added.status == 0);
  CHECK(added.output.find("added 40 pictures (rows 600..639)") != std::string::npos);
  CHECK(reidnet::GalleryIndex::load(index.string()).size() == 640);

  const auto bad = run_program("reidnet-index", "info --index " + features.string());
  CHECK(bad.status == 2);
  CHECK(bad.output.find(features.string() + ": not a gallery index") != std::string::npos);
  const auto unknown = run_program("reidnet-index", "build --features " + features.string() +
                                                        " --type lsh --out x.faiss");
  CHECK(unknown.status == 2);
  CHECK(unknown.output.find("--type") != std::string::npos);
}

}  // namespace reidnet_test_index
