// The scratch recipe generalises: on a synthetic data set unlike the main job's (the "blocks"
// style: other drawing, other cameras, other people), `reidnet-train --preset scratch` at
// 128x64 for about two minutes of CPU raises the gallery's mAP well above the untrained
// model's. Minutes long, so ctest labels it `learning` (ctest -L learning runs it alone).
#include "support.hpp"

#include <filesystem>
#include <string>

// A namespace per topic: the topics build as one unit (CMake unity build) without their
// helpers meeting.
namespace reidnet_test_learning {

namespace fs = std::filesystem;

TEST_CASE("--preset scratch learns a data set it was not designed on: mAP rises by at least 0.15") {
  const reidnet::test::TemporaryFolder work("reidnet_learning");
  const auto data = work.path / "blocks";
  const auto made = reidnet::test::run_program(
      "reidnet-toy-data", "--out " + data.string() + " --style blocks --ids 24 --images-per-id 8 "
                          "--distractors 24 --junk 8 --seed 7");
  REQUIRE_MESSAGE(made.status == 0, made.output);
  const auto map_after = [&](const std::string& name, const std::string& flags) {
    const auto run = work.path / name;
    const auto train = reidnet::test::run_program(
        "reidnet-train", "--data " + data.string() + " --out " + run.string() +
                             " --preset scratch --threads 2 --workers 1 --seed 1 " + flags);
    REQUIRE_MESSAGE(train.status == 0, train.output);
    const auto test = reidnet::test::run_program(
        "reidnet-test", "--data " + data.string() + " --model-dir " + run.string() + " --threads 2");
    REQUIRE_MESSAGE(test.status == 0, test.output);
    MESSAGE(name << ": " << test.output.substr(test.output.find("Rank@1")));
    return reidnet::test::map_of(test.output);
  };
  const double untrained = map_after("untrained", "--total-epoch 0");
  const double trained = map_after("trained", "--total-epoch 30");
  CHECK(trained - untrained >= 0.15);
}

}  // namespace reidnet_test_learning
