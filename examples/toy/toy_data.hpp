#pragma once
// The data sets of reidnet-toy-data (examples/toy_data.cpp), here so that the tests can check
// their promises: Market-1501 layout and names, test ids disjoint from training ids, a same-id
// match on another camera for every query, determinism per seed. Two drawing styles: "street"
// (the default; street.hpp) and "blocks" (blocks.hpp).
#include "blocks.hpp"
#include "street.hpp"

#include <reidnet/core/detail/file_io.hpp>
#include <reidnet/data/image.hpp>

#include <fmt/core.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace reidnet::toy {

namespace fs = std::filesystem;

/// The knobs of reidnet-toy-data.
struct ToyDataOptions {
  std::string style = "street";  // kStyles
  // The main job's data set: many identities, few pictures each, as in real ReID data (from
  // random weights, the number of training identities is what most lifts the test ids' Rank@1).
  int ids = 192, test_ids = 48, images_per_id = 6, cameras = 6, distractors = 48, junk = 16;
  int height = 128, width = 64, quality = 90;
  uint64_t seed = 0;
};

inline constexpr const char* kStyles[] = {"street", "blocks"};

/// Market-1501's naming: 0002_c1s1_000451_01.jpg; junk is -1_c...
inline std::string market_name(int64_t person_id, int camera, int frame) {
  const std::string id = person_id < 0 ? "-1" : fmt::format("{:04d}", person_id);
  return fmt::format("{}_c{}s1_{:06d}_01.jpg", id, camera, frame);
}

struct Counts {
  int train = 0, query = 0, gallery = 0;
};

/// A style's drawing: who people are, what cameras do, and one picture.
template <class Identity, class Camera>
struct Style {
  Identity (*random_identity)(Rng&);
  Camera (*random_camera)(Rng&);
  torch::Tensor (*take_picture)(const Identity&, const Camera&, int height, int width, bool junk, Rng&);
};

template <class Identity, class Camera>
Counts write_toy_dataset(const ToyDataOptions& s, const fs::path& root, const Style<Identity, Camera>& style) {
  const int test_ids = s.test_ids < 0 ? s.ids : s.test_ids;
  if (s.ids < 1 || test_ids < 1 || s.ids + test_ids > 9999 || s.images_per_id < 4 || s.cameras < 2) {
    throw std::runtime_error("the toy data set needs 1 <= ids, test ids with ids + test ids <= 9999 "
                             "(4-digit Market ids), at least 4 pictures per id and 2 cameras");
  }
  for (const char* split : {"bounding_box_train", "query", "bounding_box_test"}) {
    fs::create_directories(root / split);
  }
  Rng rng = reidnet::sample_rng(s.seed, 0, 0);
  std::vector<Camera> cameras;
  for (int c = 0; c < s.cameras; ++c) cameras.push_back(style.random_camera(rng));
  // Person ids: distinct numbers in 1..9999, the first ones for training, the rest for test.
  std::vector<int64_t> numbers;
  for (int64_t n = 1; n <= 9999; ++n) numbers.push_back(n);
  reidnet::detail::shuffle(numbers, rng);
  std::vector<int64_t> train_ids(numbers.begin(), numbers.begin() + s.ids);
  std::vector<int64_t> test_id_numbers(numbers.begin() + s.ids, numbers.begin() + s.ids + test_ids);
  std::sort(train_ids.begin(), train_ids.end());
  std::sort(test_id_numbers.begin(), test_id_numbers.end());

  int frame = 0;
  Counts counts;
  const auto save = [&](const char* split, int64_t person_id, const Identity& id, int camera,
                        bool junk) {
    Rng picture_rng = reidnet::sample_rng(s.seed, 1, ++frame);
    const auto image = style.take_picture(id, cameras[camera - 1], s.height, s.width, junk, picture_rng);
    reidnet::write_jpeg((root / split / market_name(person_id, camera, frame)).string(), image,
                        s.quality);
  };
  // Each person is seen by 2 to 4 cameras.
  const auto cameras_of = [&](Rng& r) {
    std::vector<int> all;
    for (int c = 1; c <= s.cameras; ++c) all.push_back(c);
    reidnet::detail::shuffle(all, r);
    all.resize(std::min<size_t>(all.size(), static_cast<size_t>(random_integer(r, 2, 5))));
    return all;
  };
  for (int64_t person : train_ids) {
    const auto id = style.random_identity(rng);
    const auto seen_by = cameras_of(rng);
    for (int i = 0; i < s.images_per_id; ++i) {
      save("bounding_box_train", person, id, seen_by[i % seen_by.size()], false);
      ++counts.train;
    }
  }
  for (int64_t person : test_id_numbers) {
    const auto id = style.random_identity(rng);
    const auto seen_by = cameras_of(rng);
    // One or two queries on distinct cameras; the gallery cycles over every camera that saw
    // the person, so each query has a match on another camera.
    const int queries = uniform(rng, 0, 1) < 0.5 ? 1 : 2;
    for (int q = 0; q < queries; ++q) {
      save("query", person, id, seen_by[q], false);
      ++counts.query;
    }
    for (int i = 0; i < s.images_per_id; ++i) {
      save("bounding_box_test", person, id, seen_by[i % seen_by.size()], false);
      ++counts.gallery;
    }
  }
  for (int i = 0; i < s.distractors; ++i) {  // people who are in no query
    save("bounding_box_test", 0, style.random_identity(rng), static_cast<int>(random_integer(rng, 1, s.cameras + 1)), false);
    ++counts.gallery;
  }
  for (int i = 0; i < s.junk; ++i) {
    save("bounding_box_test", -1, style.random_identity(rng), static_cast<int>(random_integer(rng, 1, s.cameras + 1)), true);
    ++counts.gallery;
  }
  return counts;
}


/// Writes the data set into `out` through write_folder_atomically (a temporary sibling folder
/// renamed at the end), so that `out` is either complete or absent. Throws std::runtime_error
/// on failure.
inline Counts create_toy_dataset(const ToyDataOptions& options, const std::string& out) {
  const fs::path target(out);
  try {
    if (!target.parent_path().empty()) fs::create_directories(target.parent_path());
    return reidnet::detail::write_folder_atomically(out, [&](const fs::path& folder) {
      if (options.style == "blocks") {
        return write_toy_dataset(options, folder, Style<blocks::Identity, blocks::Camera>{
            blocks::random_identity, blocks::random_camera, blocks::take_picture});
      }
      if (options.style == "street") {
        return write_toy_dataset(options, folder, Style<street::Identity, street::Camera>{
            street::random_identity, street::random_camera, street::take_picture});
      }
      throw std::runtime_error("unknown style '" + options.style + "' (street or blocks)");
    });
  } catch (const std::exception& failure) {
    throw std::runtime_error("cannot write the toy data set to " + out + ": " + failure.what());
  }
}

}  // namespace reidnet::toy
