// End-to-end runs of the example programs on a small toy data set: reidnet-toy-data,
// reidnet-train (outputs, Python loading, resume, bad input) and reidnet-test.
#include "support.hpp"

#include <reidnet/checkpoint.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace {

struct Run {
  int status;
  std::string output;
};

// Runs examples/<program> with `arguments`; returns its exit status and combined output.
Run run_program(const std::string& program, const std::string& arguments) {
  const std::string binary = std::string(REIDNET_TEST_EXAMPLES_DIR) + "/" + program;
  REQUIRE_MESSAGE(fs::exists(binary), binary << " is missing: build with REIDNET_BUILD_EXAMPLES=ON");
  const std::string log = std::string(REIDNET_TEST_BINARY_DIR) + "/programs_last_run.log";
  const int raw = std::system((binary + " " + arguments + " > " + log + " 2>&1").c_str());
  std::ifstream file(log);
  std::stringstream text;
  text << file.rdbuf();
  return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, text.str()};
}

const fs::path& workspace() {
  static const fs::path root = [] {
    const fs::path dir = fs::path(REIDNET_TEST_BINARY_DIR) / "programs_workspace";
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir;
  }();
  return root;
}

// A small toy data set, made once per test process.
const fs::path& toy_data() {
  static const fs::path dir = [] {
    const fs::path out = workspace() / "toy";
    const auto run = run_program("reidnet-toy-data", "--out " + out.string() + " --ids 8 --seed 11");
    REQUIRE_MESSAGE(run.status == 0, run.output);
    return out;
  }();
  return dir;
}

std::string train_flags(const fs::path& out) {
  return "--data " + toy_data().string() + " --out " + out.string() +
         " --height 64 --width 32 --batch-size 8 --workers 2 --seed 3 --threads 2";
}

double map_of(const std::string& output) {
  const auto at = output.find("mAP:");
  REQUIRE_MESSAGE(at != std::string::npos, output);
  return std::stod(output.substr(at + 4));
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
    CHECK(test.output.find("Rank@1:") != std::string::npos);
    const double map = map_of(test.output);
    CHECK(map > 0.0);
    CHECK(map <= 1.0);
    CHECK(fs::exists(out / "show.png"));
    CHECK(fs::exists(out / "features.pth.ranks.csv"));
    CHECK(reidnet::test::run_python("check_checkpoint.py",
                                    "features " + (out / "features.pth").string() + " 512") == 0);
  }
}

TEST_CASE("a run stopped after epoch 1 and resumed ends with the same weights as an "
          "uninterrupted run") {
  const auto whole = workspace() / "whole";
  const auto split = workspace() / "split";
  const std::string flags = " --total-epoch 2 --warm-epoch 1 --triplet --instances-per-id 4";
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
  const auto out = workspace() / "diverge";
  const auto run = run_program("reidnet-train", train_flags(out) + " --total-epoch 2 --lr 1e12");
  INFO(run.output);
  CHECK(run.status == 1);
  CHECK(run.output.find("the loss became") != std::string::npos);
  for (const auto& entry : fs::directory_iterator(out)) {
    CHECK_MESSAGE(entry.path().extension() != ".tmp", entry.path());
  }
}
