// reidnet-toy-data: writes a synthetic person re-identification data set in Market-1501's
// layout (bounding_box_train/, query/, bounding_box_test/, Market file names, JPEG), small
// enough to train and test on a laptop CPU in minutes.
//
//   reidnet-toy-data --out toy --ids 32 --seed 0
//
// Identities differ in clothes (colours, patterns, sleeves, shorts), build (width, height),
// hair and accessories (hat, backpack, shoulder bag); cameras differ in background, light,
// colour cast, blur, scale and viewpoint (mirrored, shifted). The gallery holds distractors
// (0000) and junk detections (-1). Test ids are disjoint from training ids and every query has
// a same-id gallery picture on another camera. The same seed gives the same files.
#include "common/cli.hpp"
#include "toy/toy_data.hpp"

#include <reidnet/data.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <filesystem>

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  CLI::App app{"Write a synthetic person re-identification data set (Market-1501 layout)"};
  reidnet::toy::ToyDataOptions s;
  std::string out_folder;
  bool overwrite = false;
  app.add_option("--out", out_folder, "folder to create (must not exist, or be empty)")->required();
  app.add_option("--style", s.style, "drawing: street (walking, occluded people in street scenes) "
                 "or blocks (box figures before fixed backdrops)")
      ->check(CLI::IsMember(std::vector<std::string>(std::begin(reidnet::toy::kStyles), std::end(reidnet::toy::kStyles))));
  app.add_option("--ids", s.ids, "training identities")->check(CLI::Range(1, 4000));
  app.add_option("--test-ids", s.test_ids, "test identities")->check(CLI::Range(1, 4000));
  app.add_option("--images-per-id", s.images_per_id, "pictures per identity in train and gallery")
      ->check(CLI::Range(4, 1000));
  app.add_option("--cameras", s.cameras, "cameras (Market-1501 has 6)")->check(CLI::Range(2, 9));
  app.add_option("--distractors", s.distractors, "0000 pictures in the gallery")->check(CLI::Range(0, 100000));
  app.add_option("--junk", s.junk, "-1 pictures in the gallery")->check(CLI::Range(0, 100000));
  app.add_option("--height", s.height, "picture height")->check(CLI::Range(16, 2048));
  app.add_option("--width", s.width, "picture width")->check(CLI::Range(8, 2048));
  app.add_option("--quality", s.quality, "JPEG quality")->check(CLI::Range(1, 100));
  app.add_option("--seed", s.seed, "random seed; the same seed writes the same files");
  app.add_flag("--overwrite", overwrite, "replace --out if it exists");
  if (const auto exit_code = reidnet::examples::parse_flags(app, argc, argv)) return *exit_code;
  if (s.ids + (s.test_ids < 0 ? s.ids : s.test_ids) > 9999) {
    fmt::print(stderr, "error: --ids plus --test-ids must be at most 9999 (4-digit Market ids)\n");
    return 2;
  }
  const fs::path out(out_folder);
  std::error_code error;
  if (fs::exists(out, error) && !(fs::is_directory(out) && fs::is_empty(out)) && !overwrite) {
    fmt::print(stderr, "error: --out {} already exists and is not empty; pass --overwrite to replace it\n", out_folder);
    return 2;
  }
  try {
    const auto counts = reidnet::toy::create_toy_dataset(s, out_folder);
    fmt::print("wrote {}: {} training pictures of {} ids, {} queries, {} gallery pictures "
               "({} distractors, {} junk)\n",
               out_folder, counts.train, s.ids, counts.query, counts.gallery, s.distractors, s.junk);
  } catch (const std::exception& failure) {
    fmt::print(stderr, "error: {}\n", failure.what());
    return 1;
  }
  return 0;
}
