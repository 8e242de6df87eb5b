// The Market-1501 evaluation protocol: hand-computed cases, parity with the
// NumPy reference (tests/python/evaluate_reference.py), k-reciprocal re-ranking parity, and
// feature extraction (flip sum, multi-scale, normalisation, batching).
#include "support.hpp"

#include <reidnet/reidnet.hpp>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

// A namespace per topic: the topics build as one unit (CMake unity build) without their
// helpers meeting.
namespace reidnet_test_evaluate {

using reidnet::test::fixture;
using reidnet::test::load_tensor_dict;

namespace {

constexpr double kExact = 1e-12;         // float64 bookkeeping on identical scores
constexpr double kFeatureScores = 1e-6;  // mAP/CMC when scores come from a float32 matmul
constexpr double kReRanking = 1e-5;      // bound on re-ranked distances
constexpr double kExtraction = 1e-5;     // features of the same model, same inputs
// The module itself, not the inference fast path (which test_inference.cpp checks).
inline reidnet::FeatureOptions plain() { return reidnet::FeatureOptions().optimize(false); }

const std::map<std::string, torch::Tensor>& reference() {
  static const auto tensors = load_tensor_dict(fixture("evaluate", "evaluate.pt"));
  return tensors;
}

torch::Tensor saved(const std::string& key) {
  const auto found = reference().find(key);
  REQUIRE_MESSAGE(found != reference().end(), "fixture lacks " << key);
  return found->second;
}

torch::Tensor longs(std::vector<int64_t> values) { return torch::tensor(values, torch::kLong); }

double max_abs(const torch::Tensor& a, const torch::Tensor& b) {
  REQUIRE(a.sizes() == b.sizes());
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// The message of the std::runtime_error `call` throws ("" if none).
std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const std::runtime_error& error) {
    return error.what();
  }
  return "";
}

#define CHECK_ERROR_MENTIONS(call, text)                                                      \
  do {                                                                                        \
    const auto message = error_of([&] { (void)(call); });                                     \
    CHECK_MESSAGE(message.find(text) != std::string::npos, "error was: '" << message << "'"); \
  } while (false)

// One query (id 1, camera 1) against a gallery ranked in index order, whose good images
// (id 1, camera 2) sit at the given 1-based ranks; every other image is id 2.
reidnet::EvalResult single_query(const std::vector<int64_t>& good_ranks, int64_t gallery_size,
                                 reidnet::EvalOptions options = {}) {
  auto scores = torch::arange(gallery_size, 0, -1, torch::kFloat).unsqueeze(0);
  std::vector<int64_t> labels(static_cast<size_t>(gallery_size), 2);
  for (const auto rank : good_ranks) labels[static_cast<size_t>(rank - 1)] = 1;
  return reidnet::evaluate_scores(scores, longs({1}), longs({1}), longs(labels),
                                  torch::full({gallery_size}, 2, torch::kLong), options);
}

}  // namespace

TEST_CASE("trapezoid AP of the worked examples: {1,3} 0.7917, {2,4} 0.3333, {1,2,4,7} 0.8110") {
  CHECK(single_query({1, 3}, 10).mAP == doctest::Approx(0.5 + (0.5 + 2.0 / 3) / 4).epsilon(1e-12));
  CHECK(single_query({1, 3}, 10).mAP == doctest::Approx(0.7917).epsilon(1e-4));
  CHECK(single_query({2, 4}, 10).mAP == doctest::Approx(1.0 / 3).epsilon(1e-12));
  const double expected_1247 =
      ((1.0 + 1.0) + (1.0 + 1.0) + (2.0 / 3 + 3.0 / 4) + (3.0 / 6 + 4.0 / 7)) / 2 / 4;
  CHECK(single_query({1, 2, 4, 7}, 10).mAP == doctest::Approx(expected_1247).epsilon(1e-12));
  CHECK(single_query({1, 2, 4, 7}, 10).mAP == doctest::Approx(0.8110).epsilon(1e-4));
}

TEST_CASE("plain AP option: {1,3} gives 0.8333; CMC, first hit and INP follow the good ranks") {
  const auto plain = reidnet::EvalOptions().average_precision(reidnet::kPlainAP);
  CHECK(single_query({1, 3}, 10, plain).mAP == doctest::Approx(5.0 / 6).epsilon(1e-12));
  const auto result = single_query({2, 4}, 10);
  CHECK(result.cmc.size(0) == 10);
  CHECK(result.rank1() == 0.0);
  CHECK(result.cmc[1].item<double>() == 1.0);
  CHECK(result.rank5() == 1.0);
  CHECK(result.rank10() == 1.0);
  CHECK(result.first_hit[0].item<int64_t>() == 1);
  CHECK(result.mINP == doctest::Approx(2.0 / 4));
  CHECK(reidnet::format_baseline_line(single_query({1, 3}, 10)) ==
        "Rank@1:1.000000 Rank@5:1.000000 Rank@10:1.000000 mAP:0.791667");
}

TEST_CASE("junk (same id and camera, id -1) is removed; distractors (id 0) are negatives") {
  // Gallery in score order: same id same camera (junk), id -1 (junk), distractor, good,
  // another id, good  ->  after junk removal the good images are at ranks 2 and 4.
  const auto scores = torch::tensor({6.f, 5.f, 4.f, 3.f, 2.f, 1.f}).unsqueeze(0);
  const auto labels = longs({5, -1, 0, 5, 7, 5});
  const auto cameras = longs({1, 1, 2, 2, 3, 3});
  const auto result = reidnet::evaluate_scores(scores, longs({5}), longs({1}), labels, cameras);
  CHECK(result.mAP == doctest::Approx(1.0 / 3).epsilon(1e-12));
  CHECK(result.first_hit[0].item<int64_t>() == 1);
  CHECK(result.rank1() == 0.0);
  CHECK(result.rank5() == 1.0);
  SUBCASE("an id -1 gallery image is junk even for a query labelled -1") {
    const auto minus_one =
        reidnet::evaluate_scores(scores, longs({-1}), longs({2}), labels, cameras);
    CHECK(minus_one.num_valid_queries == 0);
    CHECK(minus_one.mAP == 0.0);
  }
  SUBCASE("top_k_ranks skips junk and marks good images") {
    const auto top = reidnet::top_k_ranks(scores, longs({5}), longs({1}), labels, cameras,
                                          reidnet::RankOptions().k(5));
    CHECK(max_abs(top.indices, longs({2, 3, 4, 5, -1}).unsqueeze(0)) == 0.0);
    CHECK(top.good[0][1].item<bool>());
    CHECK_FALSE(top.good[0][0].item<bool>());
    CHECK(std::isnan(top.scores[0][4].item<double>()));
    const auto with_junk = reidnet::top_k_ranks(scores, longs({5}), longs({1}), labels, cameras,
                                                reidnet::RankOptions().k(3).skip_junk(false));
    CHECK(max_abs(with_junk.indices, longs({0, 1, 2}).unsqueeze(0)) == 0.0);
  }
}

TEST_CASE("a query without a good match adds 0 to CMC and AP and still counts") {
  // Query 0 (id 1) has its match first; query 1 (id 9) has none in the gallery.
  const auto scores = torch::tensor({{3.f, 2.f, 1.f}, {3.f, 2.f, 1.f}});
  const auto result = reidnet::evaluate_scores(scores, longs({1, 9}), longs({1, 1}),
                                               longs({1, 2, 3}), longs({2, 2, 2}));
  CHECK(result.num_queries == 2);
  CHECK(result.num_valid_queries == 1);
  CHECK(result.mAP == doctest::Approx(0.5));
  CHECK(result.rank1() == doctest::Approx(0.5));
  CHECK(result.cmc[2].item<double>() == doctest::Approx(0.5));
  CHECK(result.ap[1].item<double>() == 0.0);
  CHECK(result.first_hit[1].item<int64_t>() == -1);
  CHECK(result.mINP == doctest::Approx(1.0));  // averaged over queries with a match
}

TEST_CASE("ties in score are broken by gallery order, for similarities and distances") {
  const auto equal = torch::ones({1, 4});
  const auto cameras = torch::full({4}, 2, torch::kLong);
  // Good images at gallery indices 1 and 3 -> ranks {2, 4}; at 0 and 2 -> ranks {1, 3}.
  const auto late =
      reidnet::evaluate_scores(equal, longs({1}), longs({1}), longs({2, 1, 2, 1}), cameras);
  CHECK(late.mAP == doctest::Approx(1.0 / 3).epsilon(1e-12));
  const auto early =
      reidnet::evaluate_scores(equal, longs({1}), longs({1}), longs({1, 2, 1, 2}), cameras);
  CHECK(early.mAP == doctest::Approx(0.5 + (0.5 + 2.0 / 3) / 4).epsilon(1e-12));
  // Distances rank ascending: the smallest distance first.
  const auto distance = torch::tensor({{0.5f, 0.1f, 0.5f, 0.9f}});
  const auto ascending =
      reidnet::evaluate_scores(distance, longs({1}), longs({1}), longs({2, 1, 1, 2}), cameras,
                               reidnet::EvalOptions().score_kind(reidnet::kDistance));
  CHECK(ascending.mAP == doctest::Approx((1.0 + 1.0) / 2 / 2 + (1.0 / 2 + 2.0 / 3) / 2 / 2));
}

TEST_CASE("bad inputs are rejected with messages naming the shapes") {
  const auto qf = torch::randn({3, 8});
  const auto gf = torch::randn({5, 8});
  const auto ql = longs({1, 2, 3});
  const auto gl = longs({1, 2, 3, 4, 5});
  CHECK_ERROR_MENTIONS(reidnet::evaluate(qf, ql, ql, torch::randn({5, 4}), gl, gl),
                       "query features [3, 8] and gallery features [5, 4] differ");
  CHECK_ERROR_MENTIONS(reidnet::evaluate(qf, ql, ql, torch::randn({0, 8}), longs({}), longs({})),
                       "the gallery is empty");
  CHECK_ERROR_MENTIONS(reidnet::evaluate(torch::randn({0, 8}), longs({}), longs({}), gf, gl, gl),
                       "no queries");
  CHECK_ERROR_MENTIONS(reidnet::evaluate(qf, longs({1, 2}), ql, gf, gl, gl),
                       "query labels have 2 entries but query features [3, 8] have 3 rows");
  CHECK_ERROR_MENTIONS(reidnet::evaluate(qf, ql, ql, gf, gl, longs({1})),
                       "gallery cameras have 1 entries");
  CHECK_ERROR_MENTIONS(reidnet::evaluate(qf, ql.to(torch::kFloat), ql, gf, gl, gl),
                       "must hold integers");
  CHECK_ERROR_MENTIONS(reidnet::evaluate(qf.flatten(), ql, ql, gf, gl, gl), "must be a 2-D");
  CHECK_ERROR_MENTIONS(reidnet::evaluate_scores(torch::full({3, 5}, NAN), ql, ql, gl, gl),
                       "NaN or infinity");
  CHECK_ERROR_MENTIONS(reidnet::evaluate(qf, ql, ql, gf, gl, gl,
                                         reidnet::EvalOptions().score_kind(reidnet::kDistance)),
                       "evaluate_scores only");
  CHECK_ERROR_MENTIONS(
      reidnet::evaluate(qf, ql, ql, gf, gl, gl, reidnet::EvalOptions().query_block(0)),
      "query_block");
}

TEST_CASE("parity with the NumPy reference: exact on tied integer features and score matrices") {
  auto compare = [](const reidnet::EvalResult& result, const std::string& prefix,
                    const reidnet::EvalResult& plain, double tolerance) {
    const auto summary = saved(prefix + "/summary");
    CHECK(max_abs(result.cmc, saved(prefix + "/cmc")) <= tolerance);
    CHECK(max_abs(result.ap, saved(prefix + "/ap")) <= tolerance);
    CHECK(max_abs(plain.ap, saved(prefix + "/plain_ap")) <= tolerance);
    CHECK(result.mAP == doctest::Approx(summary[0].item<double>()).epsilon(tolerance));
    CHECK(plain.mAP == doctest::Approx(summary[1].item<double>()).epsilon(tolerance));
    CHECK(result.mINP == doctest::Approx(summary[2].item<double>()).epsilon(tolerance));
    CHECK(max_abs(result.first_hit, saved(prefix + "/first_hit")) == 0.0);
  };
  const auto plain = reidnet::EvalOptions().average_precision(reidnet::kPlainAP);
  SUBCASE("integer features: exact scores, many ties, stable order; small query blocks") {
    const auto args = std::make_tuple(saved("ties/qf"), saved("ties/ql"), saved("ties/qc"),
                                      saved("ties/gf"), saved("ties/gl"), saved("ties/gc"));
    auto run = [&](reidnet::EvalOptions options) {
      return std::apply([&](auto&&... a) { return reidnet::evaluate(a..., options); }, args);
    };
    compare(run(reidnet::EvalOptions().query_block(7)), "ties", run(plain), kExact);
  }
  SUBCASE("random Market-like data: evaluate_scores exact, evaluate within 1e-6") {
    const auto scores = saved("random/scores");
    const auto ql = saved("random/ql"), qc = saved("random/qc"), gl = saved("random/gl"),
               gc = saved("random/gc");
    compare(reidnet::evaluate_scores(scores, ql, qc, gl, gc), "random",
            reidnet::evaluate_scores(scores, ql, qc, gl, gc, plain), kExact);
    compare(reidnet::evaluate(saved("random/qf"), ql, qc, saved("random/gf"), gl, gc), "random",
            reidnet::evaluate(saved("random/qf"), ql, qc, saved("random/gf"), gl, gc, plain),
            kFeatureScores);
  }
}

TEST_CASE("re_ranking equals the NumPy k-reciprocal reference within 1e-5 (3 parameter sets)") {
  const auto q_g = saved("rerank/q_g"), q_q = saved("rerank/q_q"), g_g = saved("rerank/g_g");
  const auto ql = saved("rerank/ql"), qc = saved("rerank/qc"), gl = saved("rerank/gl"),
             gc = saved("rerank/gc");
  struct Setting {
    int64_t k1, k2;
    double lambda;
    const char* tag;
  };
  for (const auto& s : {Setting{20, 6, 0.3, "rerank/k1=20/k2=6/lambda=0.3"},
                        Setting{7, 1, 0.5, "rerank/k1=7/k2=1/lambda=0.5"},
                        Setting{5, 3, 0.0, "rerank/k1=5/k2=3/lambda=0.0"}}) {
    CAPTURE(s.tag);
    const auto expected = saved(std::string(s.tag) + "/final");
    const auto options = reidnet::ReRankingOptions().k1(s.k1).k2(s.k2).lambda(s.lambda);
    const auto blocks = reidnet::re_ranking(q_g, q_q, g_g, options);
    CHECK((blocks.scalar_type() == torch::kFloat));
    CHECK(max_abs(blocks, expected) <= kReRanking);
    MESSAGE(std::string(s.tag) << ": max |reidnet - NumPy| = " << max_abs(blocks, expected));
    // Block size changes nothing.
    auto small_blocks = options;
    CHECK(max_abs(reidnet::re_ranking(q_g, q_q, g_g, small_blocks.block_rows(7)), blocks) == 0.0);
    CHECK(max_abs(reidnet::re_ranking_features(saved("rerank/qf"), saved("rerank/gf"), options),
                  expected) <= kReRanking);
    // Evaluating re-ranked distances (ascending) equals the reference's evaluation.
    const auto result = reidnet::evaluate_scores(
        expected, ql, qc, gl, gc, reidnet::EvalOptions().score_kind(reidnet::kDistance));
    CHECK(max_abs(result.cmc, saved(std::string(s.tag) + "/cmc")) <= kExact);
    CHECK(max_abs(result.ap, saved(std::string(s.tag) + "/ap")) <= kExact);
  }
  CHECK(max_abs(reidnet::re_ranking(q_g, q_q, g_g, 20, 6, 0.3),
                saved("rerank/k1=20/k2=6/lambda=0.3/final")) <= kReRanking);
}

TEST_CASE("re_ranking rejects bad shapes and parameters") {
  const auto q_g = torch::rand({4, 30}), q_q = torch::rand({4, 4}), g_g = torch::rand({30, 30});
  CHECK_ERROR_MENTIONS(reidnet::re_ranking(q_g, torch::rand({3, 3}), g_g),
                       "q_g [4, 30], q_q [3, 3], g_g [30, 30]");
  CHECK_ERROR_MENTIONS(reidnet::re_ranking(q_g, q_q, g_g, 20, 22),
                       "k2 must be in [1, k1 + 1 = 21]");
  CHECK_ERROR_MENTIONS(reidnet::re_ranking(q_g, q_q, g_g, 40), "needs more than k1 images");
  CHECK_ERROR_MENTIONS(reidnet::re_ranking(q_g, q_q, g_g, 20, 6, 1.5), "lambda");
  CHECK_ERROR_MENTIONS(reidnet::re_ranking(torch::rand({0, 30}), torch::rand({0, 0}), g_g),
                       "at least one query");
  CHECK_ERROR_MENTIONS(reidnet::re_ranking_features(torch::rand({4, 8}), torch::rand({30, 6})),
                       "differ in feature dimension");
}

namespace {

struct LabelledBatch {
  torch::Tensor images;
  torch::Tensor labels;
};

reidnet::FtNet tiny_net() {
  torch::manual_seed(3);
  reidnet::FtNet net(reidnet::FtNetOptions(5).linear_num(16));
  // Non-trivial BatchNorm statistics, so eval mode matters.
  torch::NoGradGuard no_grad;
  for (auto& buffer : net->named_buffers()) {
    if (buffer.key().find("running_var") != std::string::npos) buffer.value().uniform_(0.5, 1.5);
    if (buffer.key().find("running_mean") != std::string::npos) buffer.value().normal_(0, 0.1);
  }
  return net;
}

torch::Tensor unit_rows(const torch::Tensor& x) { return x / x.norm(2, {1}, true); }

}  // namespace

// Runs a scope on one intra-op thread: the tiny ResNet-50 passes below gain nothing from more,
// and on a busy machine OpenMP's spinning threads make them several times slower.
class OneThread {
 public:
  OneThread() : previous_(at::get_num_threads()) { at::set_num_threads(1); }
  ~OneThread() { at::set_num_threads(previous_); }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;

 private:
  int previous_;
};

// One tiny FtNet, its inputs and the features of one whole batch, shared by the test cases
// below (ResNet-50 passes dominate this topic's run time).
struct ExtractionCase {
  reidnet::FtNet net = tiny_net();
  torch::Tensor images = torch::randn({4, 3, 64, 32});  // seeded by tiny_net()
  torch::Tensor features;
  ExtractionCase() {
    net->train();
    features = reidnet::extract_features(net, std::vector<torch::Tensor>{images}, plain());
  }
  static ExtractionCase& get() {
    static ExtractionCase instance;
    return instance;
  }
};

TEST_CASE("extract_features runs FtNet through optimize_for_inference by default, within 1e-4") {
  const OneThread one_thread;
  auto& c = ExtractionCase::get();
  const auto fast = reidnet::extract_features(c.net, std::vector<torch::Tensor>{c.images});
  CHECK(c.net->is_training());
  // Unit rows: the max absolute difference is the relative one.
  CHECK(max_abs(fast, c.features) <= 1e-4);
}

TEST_CASE("extract_features: eval mode, image + flipped image, L2-normalised, caller's mode kept") {
  const OneThread one_thread;
  auto& c = ExtractionCase::get();
  CHECK(c.net->is_training());  // the caller's mode is restored
  c.net->eval();
  torch::NoGradGuard no_grad;
  const auto expected = unit_rows(c.net->embed(c.images) + c.net->embed(c.images.flip({3})));
  CHECK((c.features.sizes() == torch::IntArrayRef{4, 16}));
  CHECK(c.features.device().is_cpu());
  CHECK(max_abs(c.features, expected) <= kExtraction);
  CHECK(max_abs(c.features.norm(2, {1}), torch::ones({4})) <= 1e-6);
  const auto raw =
      reidnet::extract_features(c.net, std::vector<torch::Tensor>{c.images},
                                plain().flip(false).normalize(false));
  CHECK(max_abs(raw, c.net->embed(c.images)) <= kExtraction);
}

TEST_CASE("extract_features is batch-size independent and reads batches' .images") {
  const OneThread one_thread;
  auto& c = ExtractionCase::get();
  const std::vector<LabelledBatch> batches{{c.images.slice(0, 0, 1), longs({0})},
                                           {c.images.slice(0, 1, 4), longs({1, 2, 3})}};
  CHECK(max_abs(reidnet::extract_features(c.net, batches, plain()), c.features) <= kExtraction);
}

TEST_CASE("extract_features multi-scale: each scale s adds the batch resized by sqrt(s), bicubic") {
  const OneThread one_thread;
  namespace F = torch::nn::functional;
  auto& c = ExtractionCase::get();
  const auto scaled = reidnet::extract_features(c.net, std::vector<torch::Tensor>{c.images},
                                                plain().scales({1.0, 1.21}));
  c.net->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor sum = torch::zeros({4, 16});
  for (const auto& view : {c.images, c.images.flip({3})}) {
    const auto resized = F::interpolate(view, F::InterpolateFuncOptions()
                                                  .scale_factor(std::vector<double>{1.1, 1.1})
                                                  .mode(torch::kBicubic)
                                                  .align_corners(false));
    CHECK(resized.size(2) == 70);
    sum = sum + c.net->embed(view) + c.net->embed(resized);
  }
  CHECK((scaled.sizes() == torch::IntArrayRef{4, 16}));
  CHECK(max_abs(scaled, unit_rows(sum)) <= kExtraction);
  CHECK(max_abs(scaled, c.features) > 1e-3);
}

TEST_CASE("extract_features with bf16 autocast on the CPU stays close to float32") {
  const OneThread one_thread;
  auto& c = ExtractionCase::get();
  const auto low = reidnet::extract_features(c.net, std::vector<torch::Tensor>{c.images},
                                             plain().dtype(torch::kBFloat16));
  CHECK((low.scalar_type() == torch::kFloat));
  CHECK((low * c.features).sum(1).min().item<double>() > 0.99);  // cosine similarity
}

TEST_CASE("extract_features rejects bad batches and precision settings") {
  const OneThread one_thread;
  auto& net = ExtractionCase::get().net;
  CHECK_ERROR_MENTIONS(
      reidnet::extract_features(net, std::vector<torch::Tensor>{torch::randn({2, 64, 32})}, plain()),
      "must be a floating tensor [B, 3, H, W], got Float [2, 64, 32]");
  CHECK_ERROR_MENTIONS(reidnet::extract_features(net, std::vector<torch::Tensor>{}, plain()),
                       "yielded no batches");
  CHECK_ERROR_MENTIONS(
      reidnet::extract_features(net, std::vector<torch::Tensor>{torch::randn({1, 3, 64, 32})},
                                plain().dtype(torch::kHalf).autocast(false)),
      "convert it with model->to(dtype)");
  CHECK_ERROR_MENTIONS(
      reidnet::extract_features(net, std::vector<torch::Tensor>{torch::randn({1, 3, 64, 32})},
                                reidnet::FeatureOptions().scales({})),
      "scales is empty");
  CHECK_ERROR_MENTIONS(
      reidnet::extract_features(net, std::vector<torch::Tensor>{torch::randn({1, 3, 64, 32})},
                                reidnet::FeatureOptions().dtype(torch::kInt)),
      "dtype must be Float, BFloat16 or Half");
}

}  // namespace reidnet_test_evaluate
