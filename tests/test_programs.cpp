// End-to-end runs of the example programs on a small toy data set: reidnet-toy-data,
// reidnet-train (outputs, Python loading, resume, bad input) and reidnet-test.
#include "support.hpp"
#include "scratch.hpp"

#include "common/curves.hpp"
#include "common/ranked_list.hpp"

#include <reidnet/io/checkpoint.hpp>
#include <reidnet/solver/optimizer_state.hpp>
#include <reidnet/reidnet.hpp>
#include <reidnet/engine.hpp>
#include <reidnet/engine/run_folder.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <tuple>
#include <type_traits>
#include <vector>

// A namespace per topic: the topics build as one unit (CMake unity build) without their
// helpers meeting.
namespace reidnet_test_programs {

namespace fs = std::filesystem;

namespace {

using reidnet::test::map_of;
using reidnet::test::run_program;
using reidnet::test::scratch;
using reidnet::test::toy_data;

const fs::path& workspace() {
  static const fs::path root = reidnet::test::fresh_workspace("programs_workspace");
  return root;
}

// The family case's own: ctest runs it as programs.families, beside the rest of programs.
const fs::path& families_workspace() {
  static const fs::path root = reidnet::test::fresh_workspace("programs_families_workspace");
  return root;
}


std::string train_flags(const fs::path& out) {
  return "--data " + toy_data().string() + " --out " + out.string() +
         " --height 64 --width 32 --batch-size 8 --workers 2 --seed 3 --threads 2";
}

// The baseline's protocol in Python, on the pytorch_result.mat that reidnet-test wrote beside
// the features (read with scipy.io.loadmat, as evaluate_gpu.py reads it), prints the line that
// reidnet-test printed: Rank@1, Rank@5, Rank@10 and mAP to six digits.
void check_protocol_in_python(const std::string& test_output, const fs::path& mat) {
  const auto line_at = test_output.find("Rank@1:");
  REQUIRE(line_at != std::string::npos);
  const auto line = test_output.substr(line_at, test_output.find('\n', line_at) - line_at);
  const auto python = reidnet::test::run_python_capturing("mat_check.py", mat.string() + " --protocol");
  INFO(python.output);
  CHECK(python.status == 0);
  CHECK(python.output == line + "\n");
}

// A copy of a run folder whose files are hard links to `from`'s (a run holds 200 MB, which a
// real copy writes and reads back from disk): change a file of it only by replacing it, as
// rewrite_file does, never in place.
void copy_run(const fs::path& from, const fs::path& to) {
  fs::remove_all(to);
  fs::copy(from, to, fs::copy_options::recursive | fs::copy_options::create_hard_links);
}

// Replaces `file` (a new file, so that a hard link elsewhere keeps the old bytes).
void rewrite_file(const fs::path& file, const std::string& text) {
  fs::remove(file);
  std::ofstream(file, std::ios::binary) << text;
}

std::string read_file(const fs::path& file) {
  std::string bytes(static_cast<size_t>(fs::file_size(file)), '\0');
  std::ifstream(file, std::ios::binary).read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return bytes;
}

// Every file of a folder, by name, with its bytes.
std::map<std::string, std::string> snapshot(const fs::path& folder) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::directory_iterator(folder)) {
    files[entry.path().filename().string()] = read_file(entry.path());
  }
  return files;
}

void replace_line(const fs::path& file, const std::string& key, const std::string& line) {
  std::ifstream in(file);
  std::string text, current;
  while (std::getline(in, current)) text += (current.rfind(key + ":", 0) == 0 ? line : current) + "\n";
  in.close();
  rewrite_file(file, text);
}

void append_line(const fs::path& file, const std::string& line) { rewrite_file(file, read_file(file) + line + "\n"); }

// A finished one-epoch run, trained once: the cases that damage or refuse a run copy it first.
// (Not a scratch folder: it outlives the case that trains it.)
const fs::path& one_epoch_run() {
  static const fs::path folder = [] {
    const auto out = workspace() / "one_epoch";
    const auto trained = run_program("reidnet-train", train_flags(out) + " --total-epoch 1");
    INFO(trained.output);
    REQUIRE(trained.status == 0);
    return out;
  }();
  return folder;
}

// The message of the InputError a library call refuses with: the programs print it and exit
// with code 2 (run_reporting_errors), so in-process calls check a refusal without starting one.
std::string refusal_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const reidnet::InputError& error) {
    return error.what();
  }
  FAIL("the call was not refused");
  return {};
}

// reidnet-train --resume FOLDER, in-process.
void resume_in_process(const fs::path& folder) {
  reidnet::TrainJob job;
  job.resume = folder.string();
  reidnet::train_run(std::move(job));
}


}  // namespace

TEST_CASE("reidnet-train writes net_last.pth, opts.yaml, train.log and train.jpg; Python loads "
          "the checkpoint strictly") {
  const auto out = workspace() / "run_a";
  const auto run = run_program("reidnet-train", train_flags(out) + " --total-epoch 2 --warm-epoch 1");
  INFO(run.output);
  REQUIRE(run.status == 0);
  CHECK(run.output.find("epoch 2/2") != std::string::npos);
  for (const char* file : {"net_last.pth", "opts.yaml", "train.log", "train.jpg", "optimizer.pt"}) {
    CHECK_MESSAGE(fs::exists(out / file), file);
  }
  std::ifstream log(out / "train.log");
  std::string header, line;
  std::getline(log, header);
  int rows = 0;
  while (std::getline(log, line)) ++rows;
  CHECK(header.rfind("epoch,train_loss", 0) == 0);
  CHECK(rows == 2);
  const auto nclasses = reidnet::read_state_dict((out / "net_last.pth").string())
                            ["classifier.classifier.0.bias"].size(0);
  CHECK(reidnet::test::run_python("check_checkpoint.py", "ft_net " + (out / "net_last.pth").string() +
                                  " " + std::to_string(nclasses) + " 2 512") == 0);

  SUBCASE("reidnet-test evaluates it, writes features Python reads, a picture and rank lists") {
    const auto test = run_program(
        "reidnet-test", "--data " + toy_data().string() + " --model-dir " + out.string() +
                            " --batch-size 16 --show 0 --show-out " + (out / "show.png").string() +
                            " --save-ranks");
    INFO(test.output);
    REQUIRE(test.status == 0);
    const double map = map_of(test.output);
    CHECK(fs::exists(out / "show.png"));
    CHECK(fs::exists(out / "features.pth.ranks.csv"));
    CHECK(reidnet::test::run_python("check_checkpoint.py",
                                    "features " + (out / "features.pth").string() + " 512") == 0);
    check_protocol_in_python(test.output, out / "pytorch_result.mat");

    // --index: top-k lists from a FAISS index of the gallery, IVF-PQ on the toy data; an
    // exact index's full lists give the dense evaluation's figures (up to near-ties in score,
    // which FAISS and LibTorch round differently on this barely trained model).
    const auto ivfpq = run_program(
        "reidnet-test", "--data " + toy_data().string() + " --model-dir " + out.string() +
                            " --batch-size 16 --index ivfpq --features-out " +
                            (out / "ivfpq_features.pth").string());
    INFO(ivfpq.output);
    REQUIRE(ivfpq.status == 0);
    CHECK(ivfpq.output.find("from a gallery index: ivfpq (FAISS \"L2norm,IVF") != std::string::npos);
    CHECK(map_of(ivfpq.output) > 0.0);
    CHECK(map_of(ivfpq.output) <= 1.0);
    const auto mat = (out / "pytorch_result.mat").string();
    const auto flat = run_program("reidnet-test", "--from-mat " + mat + " --index flat");
    INFO(flat.output);
    REQUIRE(flat.status == 0);
    CHECK(map_of(flat.output) == doctest::Approx(map).epsilon(2e-3));
    const auto reranked = run_program("reidnet-test", "--from-mat " + mat + " --index flat --rerank");
    const auto dense_reranked = run_program("reidnet-test", "--from-mat " + mat + " --rerank");
    INFO(reranked.output << dense_reranked.output);
    REQUIRE(reranked.status == 0);
    REQUIRE(dense_reranked.status == 0);
    // KNN re-ranking's parity with the dense matrix is test_index's (1e-5, on random sets).
    // Here the model is barely trained: many distances are near-tied, and which of them falls
    // inside a k1-nearest list follows FAISS's or LibTorch's rounding (LibTorch 2.x moves mAP
    // by about 0.01), so this checks the program's wiring: a broken one scores at chance, 0.02.
    CHECK(std::abs(map_of(reranked.output) - map_of(dense_reranked.output)) < 0.03);
    const auto refused = run_program("reidnet-test", "--from-mat " + mat + " --nprobe 4");
    CHECK(refused.status == 2);
    CHECK(refused.output.find("--nprobe needs --index") != std::string::npos);
  }
}

TEST_CASE("reidnet-test --dtype int8 calibrates once, keeps the ranges in the run folder, and "
          "its features are within cosine 0.99 of float32's on the toy data; too few pictures, "
          "--no-optimize and --device cuda are refused") {
  // The initialised model (Kaiming weights, BatchNorm at identity): a 2-epoch toy run of
  // ft_net from scratch at 64x32 diverges (validation loss ~1e9), and its activations' outliers
  // are what per-tensor int8 cannot hold.
  const auto out = workspace() / "int8_run";
  const auto trained = run_program("reidnet-train", train_flags(out) + " --total-epoch 0");
  INFO(trained.output);
  REQUIRE(trained.status == 0);
  const auto float32_run = run_program("reidnet-test", "--data " + toy_data().string() +
                                       " --model-dir " + out.string() + " --batch-size 16");
  INFO(float32_run.output);
  REQUIRE(float32_run.status == 0);
  // Calibrated once on the training pictures, the ranges kept in the run folder and read
  // again; features within cosine 0.99 of float32's per row. Below VNNI (oneDNN capped at
  // AVX2), the program says so and runs float32.
  const auto ranges = out / "int8_calibration.pth";
  if (reidnet::int8_unsupported_reason().empty()) {
    // Too few training pictures to calibrate on: refused, naming the data set; nothing written.
    const auto tiny = workspace() / "toy_data_tiny";
    REQUIRE(run_program("reidnet-toy-data", "--out " + tiny.string() + " --ids 2 --test-ids 2 "
                        "--images-per-id 4 --distractors 2 --junk 1 --seed 5").status == 0);
    const auto refused = run_program("reidnet-test", "--data " + tiny.string() + " --model-dir " +
                                                         out.string() + " --dtype int8");
    CHECK(refused.status == 2);
    CHECK_MESSAGE(refused.output.find("--data " + tiny.string() + ": int8 calibration needs at least 16 "
                                      "training pictures, the data set has 8") != std::string::npos,
                  refused.output);
    CHECK(!fs::exists(ranges));
  }
  const auto calibration_flags = "--data " + toy_data().string() + " --model-dir " + out.string() +
                                 " --batch-size 16 --calibration-images 32 --features-out " +
                                 (out / "int8_features.pth").string() + " --mat-out " +
                                 (out / "int8_result.mat").string();
  const auto int8_flags = calibration_flags + " --dtype int8";
  const auto int8 = run_program("reidnet-test", int8_flags);
  INFO(int8.output);
  REQUIRE(int8.status == 0);
  if (reidnet::int8_unsupported_reason().empty()) {
    CHECK(int8.output.find("calibrating int8 on 32 training pictures") != std::string::npos);
    CHECK(int8.output.find("int8 ranges written to " + ranges.string()) != std::string::npos);
    const auto again = run_program("reidnet-test", int8_flags);
    CHECK(again.output.find("int8 ranges read from " + ranges.string()) != std::string::npos);
    CHECK(map_of(again.output) == map_of(int8.output));
    const auto float32 = reidnet::read_state_dict((out / "features.pth").string());
    const auto quantized = reidnet::read_state_dict((out / "int8_features.pth").string());
    for (const char* key : {"qf", "gf"}) {
      const auto cosine = torch::cosine_similarity(quantized[key], float32[key], 1);
      MESSAGE(std::string(key) << ": min per-row cosine int8 vs float32 " << cosine.min().item<double>()
                                << "; mAP " << map_of(int8.output) << " vs " << map_of(float32_run.output));
      CHECK(cosine.min().item<double>() >= 0.99);
    }
    std::ofstream(ranges) << "not a checkpoint";
    const auto broken = run_program("reidnet-test", int8_flags);
    CHECK(broken.status == 2);
    CHECK(broken.output.find("int8 ranges: cannot read checkpoint '" + ranges.string()) != std::string::npos);
  } else {
    CHECK(int8.output.find("running float32 instead") != std::string::npos);
  }
  const auto capped = run_program("reidnet-test", int8_flags, "DNNL_MAX_CPU_ISA=AVX2 ONEDNN_MAX_CPU_ISA=AVX2");
  CHECK(capped.status == 0);
  CHECK(capped.output.find("--dtype int8: this CPU has no VNNI instructions") != std::string::npos);
  CHECK(capped.output.find("running float32 instead") != std::string::npos);
  for (const auto& [flags, message] :
       {std::pair{int8_flags + " --calibration-images 8", "--calibration-images: Value 8 not in range"},
        {calibration_flags, "--calibration-images needs --dtype int8"},
        {int8_flags + " --no-optimize", "--dtype int8 runs on the inference fast path on the CPU"},
        {int8_flags + " --device cuda", "--dtype int8 runs on the inference fast path on the CPU"}}) {
    const auto refused = run_program("reidnet-test", flags);
    CHECK(refused.status == 2);
    CHECK_MESSAGE(refused.output.find(message) != std::string::npos, refused.output);
  }
}

TEST_CASE("a run stopped after epoch 1 and resumed ends with the same weights as an "
          "uninterrupted run: SGD with the loss warm-up, and the strong baseline (Adam, BNNeck, "
          "linear lr warm-up, MultiStepLR)") {
  // bot: its lr warm-up spans both epochs and its lr drops after the first, so that both
  // schedules cross the resume. AdamW takes Adam's path, bit-tested in the training topic.
  const std::pair<std::string, std::string> recipes[] = {
      {"sgd", " --warm-epoch 1 --triplet --instances-per-id 4"},
      {"bot", " --preset bot --lr-warmup-epochs 2 --milestones 1"}};
  for (const auto& [recipe, recipe_flags] : recipes) {
    CAPTURE(recipe);
    const std::string optimizer = recipe == "sgd" ? "sgd" : "adam";
    const auto whole = scratch(workspace() / ("whole_" + recipe));
    const auto split = scratch(workspace() / ("split_" + recipe));
    const std::string flags = " --total-epoch 2" + recipe_flags;
    REQUIRE(run_program("reidnet-train", train_flags(whole) + flags).status == 0);
    const auto first = run_program("reidnet-train", train_flags(split) + flags + " --epochs-this-run 1");
    INFO(first.output);
    REQUIRE(first.status == 0);
    CHECK(first.output.find("--resume") != std::string::npos);
    // --resume alone continues with the run's opts.yaml (data folder included).
    const auto second = run_program("reidnet-train", "--resume " + split.string() + " --threads 2");
    INFO(second.output);
    REQUIRE(second.status == 0);
    const auto a = reidnet::read_state_dict((whole / "net_last.pth").string());
    const auto b = reidnet::read_state_dict((split / "net_last.pth").string());
    REQUIRE(a.size() == b.size());
    for (const auto& item : a) {
      CAPTURE(item.key());
      CHECK(torch::equal(item.value(), b[item.key()]));
    }
    std::ifstream yaml(split / "opts.yaml");
    std::stringstream text;
    text << yaml.rdbuf();
    CHECK(text.str().find("optimizer: " + optimizer) != std::string::npos);
    if (optimizer != "sgd") {  // Python's Adam loads optimizer.pt into the BNNeck model's groups
      CHECK(text.str().find("milestones: [1]") != std::string::npos);
      CHECK(reidnet::test::run_python("check_checkpoint.py",
                                      "adam_optimizer " + (split / "optimizer.pt").string() + " " +
                                          (split / "net_last.pth").string() + " " + optimizer) == 0);
    }
  }
}

TEST_CASE("--total-epoch 0 writes the initialised model") {
  const auto out = workspace() / "initial";
  const auto run = run_program("reidnet-train", train_flags(out) + " --total-epoch 0 --linear-num 0");
  INFO(run.output);
  REQUIRE(run.status == 0);
  CHECK(reidnet::test::run_python("check_checkpoint.py",
                                  "ft_net " + (out / "net_last.pth").string() + " 8 2 0") == 0);
}

TEST_CASE("bad flags and bad data give a clear usage error and exit code 2") {
  const auto out = workspace() / "bad";
  SUBCASE("missing data folder") {
    const auto run = run_program("reidnet-train", "--data /nonexistent/market --out " + out.string());
    CHECK(run.status == 2);
    CHECK(run.output.find("/nonexistent/market") != std::string::npos);
  }
  SUBCASE("invalid flag values") {
    CHECK(run_program("reidnet-train", train_flags(out) + " --lr -1").status == 2);
    CHECK(run_program("reidnet-train", train_flags(out) + " --stride 3").status == 2);
    CHECK(run_program("reidnet-train", train_flags(out) + " --fp16 --bf16").status == 2);
    CHECK(run_program("reidnet-train", train_flags(out) + " --no-such-flag").status == 2);
    const auto optimizer = run_program("reidnet-train", train_flags(out) + " --optimizer rmsprop");
    CHECK(optimizer.status == 2);
    CHECK(optimizer.output.find("--optimizer is rmsprop; expected sgd, adam or adamw") != std::string::npos);
  }
  SUBCASE("a recipe flag together with --resume") {
    const auto folder = out / "looks_like_a_run";
    fs::create_directories(folder);
    for (const char* file : {"trainer_state.yaml", "optimizer.pt", "net_last.pth", "opts.yaml"}) {
      std::ofstream(folder / file) << "\n";
    }
    const auto run = run_program("reidnet-train", "--resume " + folder.string() + " --lr 0.5");
    CHECK(run.status == 2);
    CHECK(run.output.find("--lr cannot be combined with --resume") != std::string::npos);
  }
  SUBCASE("no --data and no --resume") {
    const auto run = run_program("reidnet-train", "--out " + out.string());
    CHECK(run.status == 2);
    CHECK(run.output.find("--data is required") != std::string::npos);
  }
  SUBCASE("resume from a folder that is not a run") {
    fs::create_directories(out / "empty");
    const auto run = run_program("reidnet-train", train_flags(out) + " --resume " + (out / "empty").string());
    CHECK(run.status == 2);
    CHECK(run.output.find("trainer_state.yaml") != std::string::npos);
  }
  SUBCASE("reidnet-test without a query folder, or with weights of another shape") {
    fs::create_directories(out / "no_query" / "bounding_box_test");
    auto run = run_program("reidnet-test", "--data " + (out / "no_query").string() +
                                               " --model-dir " + (workspace() / "run_a").string());
    CHECK(run.status == 2);
    CHECK(run.output.find("query") != std::string::npos);
    fs::create_directories(out / "no_images" / "query");
    fs::create_directories(out / "no_images" / "bounding_box_test");
    run = run_program("reidnet-test", "--data " + (out / "no_images").string() + " --model-dir " +
                                          (workspace() / "run_a").string());
    CHECK(run.status == 2);
    CHECK(run.output.find("no pictures") != std::string::npos);
    run = run_program("reidnet-test", "--data " + toy_data().string() + " --model-dir " +
                                          (workspace() / "initial").string() + " --linear-num 512");
    CHECK(run.status != 0);
    CHECK(run.output.find("classifier.classifier.0.weight") != std::string::npos);
  }
}

TEST_CASE("a diverging loss stops the run with a clear message and leaves no partial file") {
  const auto out = scratch(workspace() / "diverge");
  const auto run = run_program("reidnet-train", train_flags(out) + " --total-epoch 2 --lr 1e12");
  INFO(run.output);
  CHECK(run.status == 1);
  CHECK(run.output.find("the loss became") != std::string::npos);
  for (const auto& entry : fs::directory_iterator(out)) {
    CHECK_MESSAGE(entry.path().extension() != ".tmp", entry.path());
  }
}

TEST_CASE("optimizer.pt is Python's optimizer.state_dict(): Python loads it and steps, and "
          "reidnet loads what Python saved") {
  const auto out = scratch(workspace() / "optimizer_interop");
  REQUIRE(run_program("reidnet-train", train_flags(out) + " --total-epoch 1").status == 0);
  const auto net_path = (out / "net_last.pth").string();
  const auto nclasses = reidnet::read_state_dict(net_path)["classifier.classifier.0.bias"].size(0);
  const auto python_state = (out / "python_optimizer.pt").string();
  REQUIRE(reidnet::test::run_python("check_checkpoint.py",
                                    "optimizer " + (out / "optimizer.pt").string() + " " + net_path +
                                        " " + std::to_string(nclasses) + " 2 512 " + python_state) == 0);
  reidnet::FtNet net{reidnet::FtNetOptions(nclasses)};
  reidnet::load_state_dict(*net, net_path);
  auto sgd = reidnet::make_sgd(*net, reidnet::SgdRecipe().lr(0.5));
  reidnet::load_optimizer_state(*sgd, python_state);
  CHECK(reidnet::learning_rates(*sgd) == std::vector<double>{0.05, 0.05});
  const auto expected = reidnet::read_state_dict(python_state + ".expected");
  std::vector<torch::Tensor> parameters;
  for (const auto& group : sgd->param_groups()) {
    for (const auto& parameter : group.params()) parameters.push_back(parameter);
  }
  size_t buffers = 0;
  for (size_t i = 0; i < parameters.size(); ++i) {
    const auto buffer = reidnet::detail::momentum_buffer(*sgd, parameters[i]);
    const auto* want = expected.find(std::to_string(i));
    CHECK_MESSAGE(buffer.defined() == (want != nullptr), "parameter ", i);
    if (want) CHECK(torch::equal(buffer, *want));
    buffers += want != nullptr;
  }
  CHECK(buffers > 100);
}

TEST_CASE("a rejected command leaves an existing run byte-identical") {
  const auto run = scratch(workspace() / "kept");
  copy_run(one_epoch_run(), run);
  const auto before = snapshot(run);
  const auto other_ids = scratch(workspace() / "toy_other_ids");
  REQUIRE(run_program("reidnet-toy-data", "--out " + other_ids.string() + " --ids 6 --seed 12").status == 0);
  for (const std::string flags :
       {train_flags(run) + " --batch-size 100000", train_flags(run) + " --lr nan",
        train_flags(run) + " --height 100000", train_flags(run) + " --stride 7",
        train_flags(run) + " --weights " + (run / "opts.yaml").string(),
        "--resume " + run.string() + " --data " + other_ids.string(),
        "--resume " + run.string() + " --lr 0.1"}) {
    CAPTURE(flags);
    const auto rejected = run_program("reidnet-train", flags);
    INFO(rejected.output);
    CHECK(rejected.status == 2);
    CHECK(snapshot(run) == before);
  }
}

TEST_CASE("a second trainer on a run folder in use is refused, and the folder is unchanged") {
  const auto out = scratch(workspace() / "locked");
  REQUIRE(run_program("reidnet-train", train_flags(out) + " --total-epoch 0").status == 0);
  const auto before = snapshot(out);
  const reidnet::RunFolder held(out);  // as a trainer running on it holds it
  for (const std::string flags : {train_flags(out) + " --total-epoch 1", "--resume " + out.string()}) {
    const auto second = run_program("reidnet-train", flags);
    INFO(second.output);
    CHECK(second.status == 2);
    CHECK(second.output.find("in use by another process") != std::string::npos);
    CHECK(snapshot(out) == before);
  }
}

TEST_CASE("a RunFolder commit killed after any step leaves every file old or every file new") {
  // In-process: a forked child commits new versions of three files and kills itself (SIGKILL)
  // after one step of publish; reopening the folder must give the old set or the new set whole,
  // with no journal and no temporary file left.
  const std::vector<std::string> names = {"net_last.pth", "optimizer.pt", "trainer_state.yaml"};
  const auto write = [](const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
  };
  const auto versions = [&](const std::string& version) {
    std::map<std::string, std::string> files;
    for (const auto& name : names) files[name] = name + " " + version;
    return files;
  };
  const std::vector<std::pair<std::string, std::string>> steps = {
      {"staged", "old"},           {"journal", "new"},
      {"published:net_last.pth", "new"}, {"published:optimizer.pt", "new"},
      {"published:trainer_state.yaml", "new"}, {"committed", "new"}};
  for (size_t index = 0; index < steps.size(); ++index) {
    const std::string& step = steps[index].first;  // a lambda below captures it
    const std::string& outcome = steps[index].second;
    CAPTURE(step);
    const auto out = scratch(workspace() / ("commit_killed_" + std::to_string(index)));
    fs::remove_all(out);
    {
      const reidnet::RunFolder folder(out);
      auto commit = folder.begin();
      for (const auto& [name, text] : versions("old")) write(commit.stage(name), text);
      commit.publish();
    }
    const auto child = reidnet::test::run_in_child([&](std::string& message) {
      const reidnet::RunFolder folder(out);
      auto commit = folder.begin();
      for (const auto& [name, text] : versions("new")) write(commit.stage(name), text);
      commit.publish([&](const std::string& done) {
        if (done == step) std::raise(SIGKILL);
      });
      message = "publish returned without reaching " + step;
      return 0;
    });
    INFO(child.message);
    REQUIRE(child.code == -1);  // killed
    const reidnet::RunFolder reopened(out);
    CHECK(snapshot(out) == versions(outcome));
  }
}

TEST_CASE("killed in the middle of an epoch's commit, --resume ends exactly as an uninterrupted run") {
  // End to end, through the trainer's own crash point (REIDNET_KILL_AT): killed after two of
  // its files were renamed into place. The commit protocol at every other step is the case above.
  const std::string flags = " --total-epoch 2 --train-all";
  const auto whole = scratch(workspace() / "uninterrupted");
  REQUIRE(run_program("reidnet-train", train_flags(whole) + flags).status == 0);
  const auto expected = snapshot(whole);
  const auto out = scratch(workspace() / "killed");
  const auto killed = run_program("reidnet-train", train_flags(out) + flags,
                                  "REIDNET_KILL_AT=1:published:optimizer.pt");
  INFO(killed.output);
  REQUIRE(killed.status == 128 + SIGKILL);
  const auto resumed = run_program("reidnet-train", "--resume " + out.string() + " --threads 2");
  INFO(resumed.output);
  REQUIRE(resumed.status == 0);
  auto files = snapshot(out);
  for (const char* name : {"net_last.pth", "optimizer.pt", "trainer_state.yaml", "train.log"}) {
    CAPTURE(name);
    CHECK(files[name] == expected.at(name));
  }
  files.erase("opts.yaml");  // names its own folder
  files.erase("train.jpg");
  CHECK(files.size() == 4);  // no journal, no temporary file
}

TEST_CASE("NaN and infinite flag values are refused with exit code 2, naming the flag") {
  const auto out = scratch(workspace() / "nan_flags");
  const std::vector<std::string> flags = {"--lr", "--droprate", "--weight-decay", "--erasing-p",
                                          "--label-smoothing", "--backbone-lr-ratio"};
  const std::vector<std::string> values = {"nan", "inf", "-inf"};
  // Every flag and value in-process, on the check reidnet-train makes of what it parsed,
  for (const auto& flag : flags) {
    for (const auto& value : values) {
      CAPTURE(flag);
      CAPTURE(value);
      reidnet::RunConfig config;
      const auto& fields = reidnet::run_fields();
      const auto field = std::find_if(fields.begin(), fields.end(),
                                      [&](const reidnet::RunField& f) { return f.flag() == flag; });
      REQUIRE(field != fields.end());
      reidnet::visit_field_value(config, *field, [&](auto& member) {
        using Member = std::decay_t<decltype(member)>;
        if constexpr (std::is_floating_point_v<Member>) member = static_cast<Member>(std::stod(value));
      });
      CHECK(refusal_of([&] { reidnet::check_run_config(config); }).find(flag) != std::string::npos);
    }
  }
  // and each flag once through the program, the three values in turn.
  for (size_t i = 0; i < flags.size(); ++i) {
    CAPTURE(flags[i]);
    const auto run = run_program("reidnet-train", train_flags(out) + " " + flags[i] + " " +
                                                      values[i % values.size()]);
    CHECK(run.status == 2);
    CHECK(run.output.find(flags[i]) != std::string::npos);
    CHECK(run.output.find("terminate") == std::string::npos);
  }
  CHECK(!fs::exists(out));
}

TEST_CASE("bad values in opts.yaml and trainer_state.yaml are refused naming the file, key and "
          "value") {
  const auto folder = scratch(workspace() / "bad_yaml");
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {"opts.yaml", "nclasses", "nclasses: 0"},     {"opts.yaml", "stride", "stride: 7"},
      {"opts.yaml", "lr", "lr: .nan"},              {"opts.yaml", "batchsize", "batchsize: many"},
      {"opts.yaml", "height", "height: -5"},        {"opts.yaml", "milestones", "milestones: [5, 2]"},
      {"opts.yaml", "milestones", "milestones: 40"},  {"trainer_state.yaml", "next_epoch", "next_epoch: -1"},
      {"trainer_state.yaml", "next_epoch", "next_epoch: 99"},
      {"trainer_state.yaml", "train_loss", "train_loss: [.nan]"},
      {"trainer_state.yaml", "loss_scale", "loss_scale: 0"}};
  // In-process, through the calls reidnet-train --resume and reidnet-test make.
  for (const auto& [file, key, line] : cases) {
    CAPTURE(line);
    copy_run(one_epoch_run(), folder);
    replace_line(folder / file, key, line);
    const auto before = snapshot(folder);
    const auto resumed = refusal_of([&] { resume_in_process(folder); });
    CHECK(resumed.find((folder / file).string()) != std::string::npos);
    CHECK(resumed.find("'" + key + "'") != std::string::npos);
    CHECK(snapshot(folder) == before);
    if (file == "opts.yaml") {
      const auto tested = refusal_of([&] { reidnet::describe_trained_run(folder.string()); });
      CHECK(tested.find("'" + key + "'") != std::string::npos);
    }
  }
  // And through the programs, one case per file: exit code 2 with the same message.
  for (const auto& [file, key, line] : {cases[1], cases[7]}) {
    CAPTURE(line);
    copy_run(one_epoch_run(), folder);
    replace_line(folder / file, key, line);
    const auto before = snapshot(folder);
    const auto resumed = run_program("reidnet-train", "--resume " + folder.string());
    INFO(resumed.output);
    CHECK(resumed.status == 2);
    CHECK(resumed.output.find((folder / file).string()) != std::string::npos);
    CHECK(resumed.output.find("'" + key + "'") != std::string::npos);
    CHECK(snapshot(folder) == before);
    if (file == "opts.yaml") {
      const auto test = run_program("reidnet-test", "--data " + toy_data().string() +
                                                        " --model-dir " + folder.string());
      CHECK(test.status == 2);
      CHECK(test.output.find("'" + key + "'") != std::string::npos);
    }
  }
}

TEST_CASE("a key written twice in opts.yaml or trainer_state.yaml is refused, naming the file and "
          "key") {
  // yaml-cpp would read the first value and PyYAML (the Python baseline) the last.
  const auto folder = scratch(workspace() / "duplicate_yaml");
  for (const auto& [file, line] : {std::pair<std::string, std::string>{"opts.yaml", "lr: 0.5"},
                                   {"trainer_state.yaml", "next_epoch: 0"}}) {
    CAPTURE(file);
    copy_run(one_epoch_run(), folder);
    append_line(folder / file, line);
    const auto before = snapshot(folder);
    const auto key = line.substr(0, line.find(':'));
    CHECK(refusal_of([&] { resume_in_process(folder); })
              .find((folder / file).string() + ": the key '" + key + "' appears twice") !=
          std::string::npos);
    CHECK(snapshot(folder) == before);
  }
  const auto test = run_program("reidnet-test", "--data " + toy_data().string() + " --model-dir " +
                                                    folder.string());
  CHECK(test.status == 0);  // the last case broke trainer_state.yaml, which testing does not read
  append_line(folder / "opts.yaml", "stride: 1");
  const auto refused = run_program("reidnet-test", "--data " + toy_data().string() + " --model-dir " +
                                                       folder.string());
  CHECK(refused.status == 2);
  CHECK(refused.output.find("the key 'stride' appears twice") != std::string::npos);
}

TEST_CASE("a corrupt picture in the data stops reidnet-test and reidnet-train with exit code 2, "
          "naming it") {
  const auto data = scratch(workspace() / "corrupt_picture_data");
  fs::remove_all(data);
  fs::copy(toy_data(), data, fs::copy_options::recursive);
  fs::path victim;
  for (const auto& entry : fs::directory_iterator(data / "query")) {
    if (victim.empty() || entry.path() < victim) victim = entry.path();
  }
  REQUIRE(!victim.empty());
  std::ofstream(victim, std::ios::binary | std::ios::trunc) << "\xff\xd8\xff\xe0 not the rest of a JPEG";
  const auto test = run_program("reidnet-test", "--data " + data.string() + " --model-dir " +
                                                    (workspace() / "run_a").string());
  INFO(test.output);
  CHECK(test.status == 2);
  CHECK(test.output.find(victim.string()) != std::string::npos);
  const auto train_victim = data / "bounding_box_train" / victim.filename();
  fs::copy_file(victim, train_victim, fs::copy_options::overwrite_existing);
  const auto train = run_program("reidnet-train", "--data " + data.string() + " --out " +
                                                      scratch(workspace() / "corrupt_run").string() +
                                                      " --height 64 --width 32 --batch-size 8 "
                                                      "--workers 2 --seed 3 --threads 2 --total-epoch 1");
  INFO(train.output);
  CHECK(train.status == 2);
  CHECK(train.output.find(train_victim.string()) != std::string::npos);
}

TEST_CASE("a TorchScript optimizer.pt in a run folder is refused without running any of it") {
  for (const char* payload : {"torchscript_prints.pt", "torchscript_loops.pt"}) {
    CAPTURE(payload);
    const auto folder = scratch(workspace() / "torchscript_run");
    copy_run(one_epoch_run(), folder);
    rewrite_file(folder / "optimizer.pt", read_file(reidnet::test::fixture("checkpoint", payload)));
    const auto started = std::chrono::steady_clock::now();
    const auto resumed = run_program("reidnet-train", "--resume " + folder.string());
    const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    INFO(resumed.output);
    CHECK(resumed.status == 2);
    CHECK(resumed.output.find("REIDNET_PAYLOAD_RAN") == std::string::npos);
    CHECK(resumed.output.find("refusing the pickle global '__torch__.") != std::string::npos);
    CHECK(seconds < 60);  // a generous bound: the looping payload would never end
  }
}

TEST_CASE("no code path hands a file to LibTorch's TorchScript loaders") {
  // torch::load and torch::jit::load run TorchScript (code) from the file they read.
  const auto source_root = fs::path(REIDNET_TEST_SOURCE_DIR).parent_path();
  std::vector<std::string> offenders;
  for (const char* folder : {"include", "examples", "benchmarks"}) {
    for (const auto& entry : fs::recursive_directory_iterator(source_root / folder)) {
      if (!entry.is_regular_file()) continue;
      std::ifstream file(entry.path());
      std::string line;
      for (int number = 1; std::getline(file, line); ++number) {
        for (const char* call : {"torch::load(", "torch::jit::load(", "jit::load(", "pickle_load("}) {
          if (line.find(call) != std::string::npos) {
            offenders.push_back(entry.path().string() + ":" + std::to_string(number) + ": " + line);
          }
        }
      }
    }
  }
  INFO(reidnet::detail::join(offenders));
  CHECK(offenders.empty());
}

TEST_CASE("reidnet-train trains every family on the toy data (--use_dense, --PCB, --ibn, "
          "--usam, --bnneck --pool gem, --model osnet_x0_25, --use_convnext, --use_hr, "
          "--use_efficient, --use_NAS, --use_swin, --use_swinv2, --use_dino, --model "
          "vit_base_patch16) and reidnet-test evaluates each from its opts.yaml") {
  const std::vector<std::tuple<std::string, std::string, std::string>> families{
      {"dense", "--use_dense", "use_dense: true"},
      {"pcb", "--PCB --height 96 --width 48", "PCB: true"},
      {"ibn", "--ibn", "ibn: true"},
      {"usam", "--usam", "usam: true"},
      // From scratch at the baseline's lr 0.05, a BNNeck's eval-mode outputs (running statistics
      // of five steps) overflow and the run stops as a NaN run should; fast-reid trains it at
      // a far lower rate.
      {"bnneck", "--bnneck --pool gem --triplet --instances-per-id 2 --lr 0.01", "bnneck: true"},
      // torchreid's OSNet, picked by name; reidnet-test feeds it bilinear-resized pictures.
      {"osnet", "--model osnet_x0_25", "model: osnet_x0_25"},
      // The baseline's wrappers of timm's, efficientnet_pytorch's and pretrainedmodels'
      // networks, at full size, by the baseline's switches.
      {"convnext", "--use_convnext", "use_convnext: true"},
      {"hrnet", "--use_hr", "use_hr: true"},
      {"efficient", "--use_efficient", "use_efficient: true"},
      {"nas", "--use_NAS", "use_NAS: true"},
      // The baseline's transformers, built for the run's input size (SwinV2's last stage needs
      // a window at least 2 tokens across: 128x64), and ViT-B/16 with TransReID's overlapping
      // patches and class token.
      {"swin", "--use_swin", "use_swin: true"},
      {"swinv2", "--use_swinv2 --height 128 --width 64", "use_swinv2: true"},
      {"dino", "--use_dino", "use_dino: true"},
      {"vit", "--model vit_base_patch16 --patch-stride 12 --pool token", "patch_stride: 12"}};
  // Two batches of 8 and a gallery of 22 pictures: what is checked here is that each family goes
  // through both programs, which the shared toy data's 8 batches would only repeat.
  const auto data = families_workspace() / "toy_data_small";
  const auto written = run_program("reidnet-toy-data", "--out " + data.string() +
                                   " --ids 4 --test-ids 4 --images-per-id 4 --distractors 4 --junk 2 --seed 11");
  REQUIRE_MESSAGE(written.status == 0, written.output);
  for (const auto& [name, flags, opts_line] : families) {
    CAPTURE(name);
    const auto out = scratch(families_workspace() / ("family_" + name));
    auto arguments = "--data " + data.string() + " --out " + out.string() +
                     " --batch-size 8 --workers 2 --seed 3 --threads 2 --total-epoch 1 " + flags;
    if (flags.find("--height") == std::string::npos) arguments += " --height 64 --width 32";
    const auto train = run_program("reidnet-train", arguments);
    INFO(train.output);
    REQUIRE(train.status == 0);
    std::ifstream yaml(out / "opts.yaml");
    std::stringstream text;
    text << yaml.rdbuf();
    CHECK(text.str().find(opts_line) != std::string::npos);
    const auto test = run_program("reidnet-test", "--data " + data.string() + " --model-dir " +
                                                      out.string() + " --threads 2 --workers 2");
    INFO(test.output);
    REQUIRE(test.status == 0);
    check_protocol_in_python(test.output, out / "pytorch_result.mat");
  }
  // Contradicting switches are refused before anything is written.
  const auto out = scratch(families_workspace() / "family_conflict");
  const auto run = run_program("reidnet-train", train_flags(out) + " --PCB --use_dense");
  CHECK(run.status == 2);
  CHECK(run.output.find("at most one") != std::string::npos);
  CHECK(!fs::exists(out));
}

namespace {

// The value of `key` in a flat YAML file (opts.yaml), as written.
std::string yaml_value(const fs::path& file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ": ", 0) == 0) return line.substr(key.size() + 2);
  }
  FAIL("no key '" << key << "' in " << file);
  return {};
}

}  // namespace

TEST_CASE("--preset: a flag overrides the preset, the preset overrides the default, and opts.yaml "
          "records the result") {
  const std::string data = "--data " + toy_data().string() + " --total-epoch 0 --threads 1 --out ";
  // Wherever the flag stands, it wins over the preset.
  int run_number = 0;
  for (const std::string& order : {"--preset scratch --lr 0.07", "--lr 0.07 --preset scratch"}) {
    CAPTURE(order);
    const auto out = scratch(workspace() / ("preset_" + std::to_string(++run_number)));
    const auto run = run_program("reidnet-train", data + out.string() + " " + order);
    INFO(run.output);
    REQUIRE(run.status == 0);
    const auto opts = out / "opts.yaml";
    CHECK(yaml_value(opts, "preset") == "scratch");
    CHECK(std::stod(yaml_value(opts, "lr")) == doctest::Approx(0.07));  // the flag
    CHECK(yaml_value(opts, "h") == "128");                 // the preset
    CHECK(yaml_value(opts, "w") == "64");
    CHECK(yaml_value(opts, "droprate") == "0");
    CHECK(std::stod(yaml_value(opts, "weight_decay")) == doctest::Approx(5e-4));  // the default
    CHECK(yaml_value(opts, "linear_num") == "512");
    CHECK(yaml_value(opts, "model") == "resnet18");
    CHECK(yaml_value(opts, "color_jitter") == "true");
    CHECK(yaml_value(opts, "cosine") == "true");
  }
  // A family switch overrides the preset's model too.
  const auto dense = scratch(workspace() / "preset_dense");
  const auto switched = run_program("reidnet-train", data + dense.string() + " --preset scratch --use_dense");
  INFO(switched.output);
  REQUIRE(switched.status == 0);
  CHECK(yaml_value(dense / "opts.yaml", "model") == "ft_net_dense");
  CHECK(yaml_value(dense / "opts.yaml", "stride") == "1");
  const auto tricks = scratch(workspace() / "preset_tricks");
  const auto run = run_program("reidnet-train", data + tricks.string() + " --preset all-tricks --batch-size 4");
  INFO(run.output);
  REQUIRE(run.status == 0);
  const auto opts = tricks / "opts.yaml";
  CHECK(yaml_value(opts, "preset") == "all-tricks");
  CHECK(yaml_value(opts, "warm_epoch") == "5");
  CHECK(yaml_value(opts, "stride") == "1");
  CHECK(yaml_value(opts, "erasing_p") == "0.5");
  CHECK(std::stod(yaml_value(opts, "lr")) == doctest::Approx(0.02));
  CHECK(yaml_value(opts, "batchsize") == "4");
  CHECK(yaml_value(opts, "h") == "256");
  // bot's 16 ids x 4 pictures are more ids than the toy data has; with 8 x 4 it runs.
  const auto bot = scratch(workspace() / "preset_bot");
  const auto too_few_ids = run_program("reidnet-train", data + bot.string() + " --preset bot");
  CHECK(too_few_ids.status == 2);
  CHECK(too_few_ids.output.find("--batch-size 64 / --instances-per-id 4: P x K sampling needs at least "
                                "P = 16 identities, --data " + toy_data().string() + " has 8") != std::string::npos);
  const auto bot_run = run_program("reidnet-train", data + bot.string() + " --preset bot --batch-size 32");
  INFO(bot_run.output);
  REQUIRE(bot_run.status == 0);
  const auto bot_opts = bot / "opts.yaml";
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"preset", "bot"}, {"model", "bnneck"}, {"bnneck", "true"}, {"stride", "1"},
           {"optimizer", "adam"}, {"backbone_lr_ratio", "1"}, {"batchsize", "32"},
           {"instances_per_id", "4"}, {"use_triplet", "true"}, {"erasing_p", "0.5"},
           {"total_epoch", "0"}, {"milestones", "[40, 70]"}, {"lr_warmup_epochs", "10"},
           {"h", "256"}, {"w", "128"}}) {
    CAPTURE(key);
    CHECK(yaml_value(bot_opts, key) == value);
  }
  for (const auto& [key, value] : std::vector<std::pair<std::string, double>>{
           {"lr", 3.5e-4}, {"weight_decay", 5e-4}, {"label_smoothing", 0.1}, {"lr_warmup_factor", 0.1}}) {
    CAPTURE(key);
    CHECK(std::stod(yaml_value(bot_opts, key)) == doctest::Approx(value));
  }
  // The schedule's flags are checked like every other.
  for (const auto& [flags, message] : std::vector<std::pair<std::string, std::string>>{
           {"--milestones 70,40", "--milestones is 70,40; expected up to 100 ascending epochs"},
           {"--milestones 40,40", "--milestones is 40,40"},
           {"--milestones 0", "--milestones is 0"},
           {"--cosine --milestones 40", "--cosine is true together with milestones; expected one schedule"},
           {"--lr-warmup-factor 0", "--lr-warmup-factor is 0; expected above 0, up to 1"},
           {"--lr-warmup-factor nan", "--lr-warmup-factor"},
           {"--lr-warmup-epochs -1", "--lr-warmup-epochs is -1"}}) {
    CAPTURE(flags);
    const auto refused_out = workspace() / "preset_refused";
    const auto refused = run_program("reidnet-train", data + refused_out.string() + " " + flags);
    CHECK(refused.status == 2);
    CHECK(refused.output.find(message) != std::string::npos);
    CHECK(!fs::exists(refused_out));
  }
  // A preset is part of the recipe: unknown names and a change on --resume are refused.
  const auto unknown = run_program("reidnet-train", data + (workspace() / "preset_bad").string() + " --preset fast");
  CHECK(unknown.status == 2);
  CHECK(unknown.output.find("--preset") != std::string::npos);
  CHECK(!fs::exists(workspace() / "preset_bad"));
  const auto resumed = run_program("reidnet-train", "--resume " + tricks.string() + " --preset scratch");
  CHECK(resumed.status == 2);
  CHECK(resumed.output.find("--preset cannot be combined with --resume") != std::string::npos);
}

TEST_CASE("reidnet-toy-data refuses an unknown --style, naming the flag and the styles") {
  const auto out = scratch(workspace() / "toy_unknown_style");
  const auto run = run_program("reidnet-toy-data", "--out " + out.string() + " --style cartoon");
  INFO(run.output);
  CHECK(run.status == 2);
  CHECK(run.output.find("--style") != std::string::npos);
  CHECK(run.output.find("street") != std::string::npos);
  CHECK(!fs::exists(out));
}

namespace {

// Pixels of `picture` within `tolerance` of `colour` in every channel.
int64_t pixels_near(const torch::Tensor& picture, std::array<int, 3> colour, int tolerance = 40) {
  const auto difference = (picture.to(torch::kInt) - torch::tensor({colour[0], colour[1], colour[2]}, torch::kInt))
                              .abs()
                              .amax(2);
  return difference.le(tolerance).sum().item<int64_t>();
}

}  // namespace

TEST_CASE("train.jpg is a PLplot chart: two panels with axes, labels, a legend, both curves, and "
          "a log loss axis when the losses span more than a factor of 10") {
  using reidnet::examples::curves_detail::wants_log_scale;
  CHECK(wants_log_scale(0.4, 90));
  CHECK_FALSE(wants_log_scale(1.2, 3.9));
  CHECK_FALSE(wants_log_scale(0, 3.9));
  for (const bool wide : {false, true}) {
    CAPTURE(wide);
    const std::vector<double> train_loss = wide ? std::vector<double>{85, 30, 4, 1.5, 0.6, 0.3}
                                                : std::vector<double>{3.9, 3.5, 3.0, 2.2, 1.6, 1.1};
    const auto picture = reidnet::examples::render_training_curves(
        train_loss, {4.0, 3.8, 3.1, 2.5, 2.0, 1.8}, {0.98, 0.9, 0.7, 0.5, 0.3, 0.2},
        {0.99, 0.95, 0.8, 0.6, 0.5, 0.45});
    REQUIRE(picture.sizes() == torch::IntArrayRef({400, 1000, 3}));
    const auto total = picture.size(0) * picture.size(1);
    const auto white = pixels_near(picture, {255, 255, 255}, 10);
    CHECK(white > total / 2);                 // a chart on a white page,
    CHECK(white < total - total / 50);        // not a blank one:
    CHECK(pixels_near(picture, {0, 0, 0}, 60) > 1000);  // axes, ticks, labels and text (1772 measured)
    CHECK(pixels_near(picture, {31, 119, 180}) > 500);  // the train curves
    CHECK(pixels_near(picture, {214, 39, 40}) > 500);   // the val curves
  }
  // Through reidnet-train too: a JPEG of the same size.
  const auto out = scratch(workspace() / "curves_run");
  const auto run = run_program("reidnet-train", train_flags(out) + " --total-epoch 2");
  REQUIRE_MESSAGE(run.status == 0, run.output);
  const auto written = reidnet::read_image((out / "train.jpg").string());
  CHECK(written.sizes() == torch::IntArrayRef({400, 1000, 3}));
  CHECK(pixels_near(written, {31, 119, 180}) > 300);
}

TEST_CASE("show_N.png is the query and its ranked gallery with green and red borders and a "
          "caption of rank, id, camera and score under each picture") {
  const auto data = reidnet::read_dataset(toy_data().string());
  REQUIRE(data.gallery.size() >= 3);
  reidnet::RankedLists top;
  top.indices = torch::tensor({{2, 0, 1}}, torch::kLong);
  top.scores = torch::tensor({{0.91, 0.52, 0.17}}, torch::kDouble);
  top.good = torch::tensor({{true, false, false}}, torch::kBool);
  const auto picture = reidnet::examples::render_ranked_list(data.query.at(0), data.gallery, top, 0);
  using namespace reidnet::examples::ranked_list_detail;
  const int64_t tile = kImageWidth + 2 * kBorder;
  CHECK(picture.size(0) == kTitle + kImageHeight + 2 * kBorder + kCaptionLines * kCaptionLine + 2 * kGap);
  CHECK(picture.size(1) == 4 * (tile + kGap) + 2 * kGap);
  const int64_t border = 2 * kBorder * (kImageHeight + tile);  // the border's pixels, at least
  CHECK(pixels_near(picture, {43, 161, 43}, 12) >= border);      // one true match, green
  CHECK(pixels_near(picture, {214, 38, 41}, 12) >= 2 * border);  // two wrong ones, red
  // Captions: dark text in the band under the pictures of every tile.
  const auto captions = picture.slice(0, kGap + kTitle + kImageHeight + 2 * kBorder);
  for (int t = 0; t < 4; ++t) {
    const int64_t left = kGap + t * (tile + kGap) + (t > 0 ? kGap : 0);
    CHECK_MESSAGE(pixels_near(captions.slice(1, left, left + tile), {0, 0, 0}, 90) > 40, "tile " << t);
  }
  // The pictures themselves: the pasted gallery image is there, not a flat fill.
  const auto first = picture.slice(0, kGap + kTitle + kBorder, kGap + kTitle + kBorder + kImageHeight)
                         .slice(1, kGap + kBorder, kGap + kBorder + kImageWidth);
  CHECK(first.to(torch::kFloat).std().item<double>() > 10);
}

}  // namespace reidnet_test_programs
