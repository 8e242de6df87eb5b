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
//
// --style sequence draws a short MOTChallenge sequence instead (toy/sequence.hpp): people of the
// street style walking across one fixed camera, with gt/gt.txt and det/det.txt.
//
//   reidnet-toy-data --style sequence --out TOY-01 --frames 60 --people 8 --seed 0
#include "common/cli.hpp"
#include "toy/sequence.hpp"
#include "toy/toy_data.hpp"

#include <reidnet/data.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <filesystem>

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  CLI::App app{"Write a synthetic person re-identification data set (Market-1501 layout), or a "
               "MOTChallenge sequence (--style sequence)"};
  reidnet::toy::ToyDataOptions s;
  reidnet::toy::sequence::SequenceOptions video;
  std::string out_folder;
  bool overwrite = false;
  std::vector<std::string> styles(std::begin(reidnet::toy::kStyles), std::end(reidnet::toy::kStyles));
  styles.push_back("sequence");
  app.add_option("--out", out_folder, "folder to create (must not exist, or be empty)")->required();
  app.add_option("--style", s.style, "drawing: street (walking, occluded people in street scenes), "
                 "blocks (box figures before fixed backdrops), or sequence (a MOTChallenge "
                 "sequence of street people walking before one camera)")
      ->check(CLI::IsMember(styles));
  app.add_option("--ids", s.ids, "training identities")->check(CLI::Range(1, 4000));
  app.add_option("--test-ids", s.test_ids, "test identities")->check(CLI::Range(1, 4000));
  app.add_option("--images-per-id", s.images_per_id, "pictures per identity in train and gallery")
      ->check(CLI::Range(4, 1000));
  app.add_option("--cameras", s.cameras, "cameras (Market-1501 has 6)")->check(CLI::Range(2, 9));
  app.add_option("--distractors", s.distractors, "0000 pictures in the gallery")->check(CLI::Range(0, 100000));
  app.add_option("--junk", s.junk, "-1 pictures in the gallery")->check(CLI::Range(0, 100000));
  app.add_option("--height", s.height, "picture height (sequence: frame height, default 360)")
      ->check(CLI::Range(16, 2048));
  app.add_option("--width", s.width, "picture width (sequence: frame width, default 640)")
      ->check(CLI::Range(8, 2048));
  app.add_option("--frames", video.frames, "sequence: frames")->check(CLI::Range(2, 10000));
  app.add_option("--people", video.people, "sequence: people walking")->check(CLI::Range(1, 200));
  app.add_option("--frame-rate", video.frame_rate, "sequence: frames per second in seqinfo.ini")
      ->check(CLI::Range(1, 1000));
  app.add_option("--quality", s.quality, "JPEG quality")->check(CLI::Range(1, 100));
  app.add_option("--seed", s.seed, "random seed; the same seed writes the same files");
  app.add_flag("--overwrite", overwrite, "replace --out if it exists");
  if (const auto exit_code = reidnet::examples::parse_flags(app, argc, argv)) return *exit_code;
  return reidnet::examples::run_reporting_errors("reidnet-toy-data", [&] {
    const bool is_sequence = s.style == "sequence";
    if (is_sequence) {
      reidnet::examples::refuse_flags(app, {"--ids", "--test-ids", "--images-per-id", "--cameras",
                                            "--distractors", "--junk"},
                                      "is not a flag of --style sequence");
      if (app.count("--height") > 0) video.height = s.height;
      if (app.count("--width") > 0) video.width = s.width;
      if (video.height < 64 || video.width < 64) {
        throw reidnet::examples::UsageError("--height and --width must be at least 64 for --style sequence");
      }
      video.quality = s.quality;
      video.seed = s.seed;
    } else {
      reidnet::examples::refuse_flags(app, {"--frames", "--people", "--frame-rate"},
                                      "is a flag of --style sequence only");
      if (s.ids + (s.test_ids < 0 ? s.ids : s.test_ids) > 9999) {
        throw reidnet::examples::UsageError("--ids plus --test-ids must be at most 9999 (4-digit Market ids)");
      }
    }
    const fs::path out(out_folder);
    std::error_code error;
    if (fs::exists(out, error) && !(fs::is_directory(out) && fs::is_empty(out)) && !overwrite) {
      throw reidnet::examples::UsageError("--out " + out_folder +
                                          " already exists and is not empty; pass --overwrite to replace it");
    }
    if (is_sequence) {
      const auto counts = reidnet::toy::sequence::create_toy_sequence(video, out_folder);
      fmt::print("wrote {}: {} frames of {} x {}, {} people, {} ground-truth boxes, {} detections\n",
                 out_folder, counts.frames, video.width, video.height, counts.people, counts.boxes,
                 counts.detections);
      return 0;
    }
    const auto counts = reidnet::toy::create_toy_dataset(s, out_folder);
    fmt::print("wrote {}: {} training pictures of {} ids, {} queries, {} gallery pictures "
               "({} distractors, {} junk)\n",
               out_folder, counts.train, s.ids, counts.query, counts.gallery, s.distractors, s.junk);
    return 0;
  });
}
