// Data sets, random transforms and the loader: name parsing on fixture trees (including names
// that do not parse), seeded determinism, augmentation statistics, every sample once per epoch,
// well-formed P x K batches, and errors that name the file at fault.
#include "support.hpp"

#include <reidnet/data.hpp>
#include "toy/toy_data.hpp"

#include <filesystem>
#include <fstream>
#include <random>
#include <set>

// A namespace per topic: the topics build as one unit (CMake unity build) without their
// helpers meeting.
namespace reidnet_test_data {

namespace fs = std::filesystem;
using reidnet::test::TemporaryFolder;

namespace {


/// A small picture whose colour encodes `seed`, so that loaded batches can be told apart.
void write_picture(const fs::path& path, int seed) {
  fs::create_directories(path.parent_path());
  auto image = torch::full({16, 8, 3}, seed * 7 % 256, torch::kUInt8);
  image.select(2, 1).fill_(seed * 13 % 256);
  image.narrow(1, 0, 4).select(2, 2).fill_(200);  // left and right halves differ
  if (path.extension() == ".png") {
    reidnet::write_png(path.string(), image);
  } else {
    reidnet::write_jpeg(path.string(), image, 95);
  }
}

void touch(const fs::path& path) {
  fs::create_directories(path.parent_path());
  std::ofstream(path.string()) << "x";
}

std::vector<std::string> names(const std::vector<reidnet::Sample>& samples) {
  std::vector<std::string> out;
  for (const auto& s : samples) out.push_back(fs::path(s.path).filename().string());
  return out;
}

/// A Market-1501 tree: ids 2 (3 pictures), 7 (2), 10 (1) for training; ids 3 and 5 for test.
void make_market_tree(const fs::path& root) {
  int seed = 0;
  for (const char* name : {"0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg",
                           "0002_c3s1_000551_02.jpg", "0007_c1s1_000151_01.jpg",
                           "0007_c4s2_000101_01.jpg", "0010_c6s3_009001_01.jpg"}) {
    write_picture(root / "bounding_box_train" / name, ++seed);
  }
  touch(root / "bounding_box_train" / "Thumbs.db");  // Market ships these; not a picture
  for (const char* name : {"0003_c1s1_000001_00.jpg", "0005_c2s1_000002_00.jpg"}) {
    write_picture(root / "query" / name, ++seed);
  }
  for (const char* name : {"0003_c2s1_000011_00.jpg", "0005_c3s1_000012_00.jpg",
                           "0000_c1s1_000013_00.jpg", "-1_c1s1_000014_00.jpg"}) {
    write_picture(root / "bounding_box_test" / name, ++seed);
  }
}

}  // namespace

TEST_CASE("parse_market_name reads Market-1501 and DukeMTMC names, and refuses others") {
  const auto check = [](const std::string& name, int64_t id, int64_t camera) {
    CAPTURE(name);
    const auto parsed = reidnet::parse_market_name(name);
    REQUIRE(parsed.has_value());
    CHECK(parsed->person_id == id);
    CHECK(parsed->camera == camera);
  };
  check("0002_c1s1_000451_03.jpg", 2, 1);
  check("-1_c3s2_000000_00.jpg", -1, 3);
  check("0000_c6s1_000100_02.jpg", 0, 6);
  check("1501_c5s3_065162_04.jpg", 1501, 5);
  check("0001_c2_f0046182.jpg", 1, 2);    // DukeMTMC-reID
  check("0042_c12_f0000001.jpg", 42, 12); // two-digit cameras
  for (const char* bad : {"abc.jpg", "0002c1s1.jpg", "0002_x1s1.jpg", "-2_c1s1_0.jpg", "_c1.jpg",
                          "0002_c.jpg", "0002_cs1.jpg", "--1_c1.jpg", "Thumbs.db", "12a4_c1.jpg"}) {
    CAPTURE(bad);
    CHECK_FALSE(reidnet::parse_market_name(bad).has_value());
  }
  const auto msmt = reidnet::parse_msmt17_name("0123_004_15_0303morning_0015_0.jpg");
  REQUIRE(msmt.has_value());
  CHECK(msmt->person_id == 123);
  CHECK(msmt->camera == 15);
  CHECK_FALSE(reidnet::parse_msmt17_name("0123_c1s1.jpg").has_value());
}

TEST_CASE("read_market1501 splits, labels, junk and distractors") {
  TemporaryFolder folder("reidnet_test_data_market");
  make_market_tree(folder.path);
  const auto data = reidnet::read_dataset(folder.path.string());
  CHECK(data.class_ids == std::vector<int64_t>{2, 7, 10});
  CHECK(data.class_num() == 3);
  CHECK(data.train_all.size() == 6);
  // val: the first picture of each id; train: the rest (id 10 has one picture only).
  CHECK(names(data.val) == std::vector<std::string>{"0002_c1s1_000451_03.jpg",
                                                    "0007_c1s1_000151_01.jpg",
                                                    "0010_c6s3_009001_01.jpg"});
  CHECK(data.train.size() == 3);
  for (const auto& s : data.train_all) {
    CHECK(data.class_ids[s.label] == s.person_id);
  }
  CHECK(data.query.size() == 2);
  REQUIRE(data.gallery.size() == 4);
  std::map<std::string, reidnet::Sample> gallery;
  for (const auto& s : data.gallery) gallery[fs::path(s.path).filename().string()] = s;
  CHECK(gallery["-1_c1s1_000014_00.jpg"].person_id == -1);
  CHECK(gallery["0000_c1s1_000013_00.jpg"].person_id == 0);
  CHECK(gallery["0005_c3s1_000012_00.jpg"].camera == 3);
  for (const auto& s : data.gallery) CHECK(s.label == -1);  // not training ids
  CHECK(data.skipped.empty());
}

TEST_CASE("names that do not parse raise errors naming the file, or are skipped on request") {
  TemporaryFolder folder("reidnet_test_data_bad_names");
  make_market_tree(folder.path);
  const auto bad = folder.path / "query" / "person_cam1.jpg";
  write_picture(bad, 99);
  CHECK_THROWS_WITH_AS(reidnet::read_market1501(folder.path.string()),
                       doctest::Contains(bad.string().c_str()), std::runtime_error);
  const auto data = reidnet::read_market1501(folder.path.string(),
                                             reidnet::DatasetOptions().skip_unparseable(true));
  CHECK(data.skipped == std::vector<std::string>{bad.string()});
  CHECK(data.query.size() == 2);

  CHECK_THROWS_WITH_AS(reidnet::read_dataset((folder.path / "nowhere").string()),
                       doctest::Contains("nowhere"), std::runtime_error);
  TemporaryFolder empty("reidnet_test_data_unknown_layout");
  CHECK_THROWS_WITH_AS(reidnet::read_dataset(empty.path.string()),
                       doctest::Contains("bounding_box_train"), std::runtime_error);
  fs::remove(bad);
  fs::remove_all(folder.path / "bounding_box_test");
  CHECK_THROWS_WITH_AS(reidnet::read_market1501(folder.path.string()),
                       doctest::Contains("bounding_box_test"), std::runtime_error);
}

TEST_CASE("read_folder_per_id reads the baseline's prepared layout") {
  TemporaryFolder folder("reidnet_test_data_folders");
  const auto root = folder.path / "pytorch";
  touch(root / "train" / "0002" / "0002_c2s1_000301_01.jpg");
  touch(root / "train" / "0007" / "0007_c4s2_000101_01.jpg");
  touch(root / "val" / "0002" / "0002_c1s1_000451_03.jpg");
  touch(root / "val" / "0007" / "0007_c1s1_000151_01.jpg");
  for (const char* name : {"0002/0002_c2s1_000301_01.jpg", "0002/0002_c1s1_000451_03.jpg",
                           "0007/0007_c4s2_000101_01.jpg", "0007/0007_c1s1_000151_01.jpg"}) {
    touch(root / "train_all" / name);
  }
  touch(root / "query" / "0003" / "0003_c1s1_000001_00.jpg");
  touch(root / "gallery" / "-1" / "-1_c1s1_000014_00.jpg");
  touch(root / "gallery" / "0000" / "0000_c5s1_000013_00.jpg");
  touch(root / "gallery" / "0003" / "0003_c2s1_000011_00.jpg");
  const auto data = reidnet::read_dataset(folder.path.string());  // finds pytorch/
  CHECK(data.class_ids == std::vector<int64_t>{2, 7});
  CHECK(data.train.size() == 2);
  CHECK(data.val.size() == 2);
  CHECK(data.train_all.size() == 4);
  CHECK(data.val[1].label == 1);
  CHECK(data.val[1].camera == 1);
  REQUIRE(data.gallery.size() == 3);
  CHECK(data.gallery[0].person_id == -1);
  CHECK(data.gallery[1].person_id == 0);
  CHECK(data.gallery[1].camera == 5);

  touch(root / "query" / "abc" / "0003_c1s1_000002_00.jpg");
  CHECK_THROWS_WITH_AS(reidnet::read_folder_per_id(root.string()),
                       doctest::Contains((root / "query" / "abc").string().c_str()), std::runtime_error);
  touch(root / "gallery" / "0003" / "img001.jpg");
  const auto skipping =
      reidnet::read_folder_per_id(root.string(), reidnet::DatasetOptions().skip_unparseable(true));
  CHECK(skipping.skipped.size() == 2);
}

TEST_CASE("read_msmt17 reads list files and two-digit cameras") {
  TemporaryFolder folder("reidnet_test_data_msmt17");
  const auto& root = folder.path;
  touch(root / "train" / "0000" / "0000_000_01_0303morning_0015_0.jpg");
  touch(root / "train" / "0001" / "0001_001_14_0303morning_0020_1.jpg");
  touch(root / "test" / "0000" / "0000_000_12_0303noon_0015_0.jpg");
  touch(root / "test" / "0000" / "0000_001_03_0303noon_0016_0.jpg");
  std::ofstream(root / "list_train.txt") << "0000/0000_000_01_0303morning_0015_0.jpg 0\n";
  std::ofstream(root / "list_val.txt") << "0001/0001_001_14_0303morning_0020_1.jpg 1\r\n";
  std::ofstream(root / "list_query.txt") << "0000/0000_000_12_0303noon_0015_0.jpg 0\n";
  std::ofstream(root / "list_gallery.txt") << "0000/0000_001_03_0303noon_0016_0.jpg 0\n\n";
  const auto data = reidnet::read_dataset(root.string());
  CHECK(data.class_ids == std::vector<int64_t>{0, 1});
  CHECK(data.train_all.size() == 2);
  CHECK(data.val[0].camera == 14);
  CHECK(data.query[0].camera == 12);
  CHECK(data.query[0].label == 0);  // MSMT17's id 0 is a person, not a distractor
  CHECK(data.gallery.size() == 1);
  std::ofstream(root / "list_query.txt") << "0000/0000_000_12_0303noon_0015_0.jpg\n";
  CHECK_THROWS_WITH_AS(reidnet::read_msmt17(root.string()),
                       doctest::Contains(("line 1 of " + (root / "list_query.txt").string()).c_str()),
                       std::runtime_error);
}

TEST_CASE("random transforms: the same seed gives the same output") {
  auto image = torch::randint(0, 256, {64, 32, 3}, torch::kUInt8);
  const auto options = reidnet::TrainTransformOptions()
                           .height(32)
                           .width(16)
                           .padding(2)
                           .color_jitter(0.1)
                           .erasing_probability(0.5);
  for (int seed = 0; seed < 5; ++seed) {
    auto first = reidnet::sample_rng(seed, 3, 17);
    auto second = reidnet::sample_rng(seed, 3, 17);
    CHECK(torch::equal(reidnet::train_transform(image, options, first),
                       reidnet::train_transform(image, options, second)));
  }
  auto a = reidnet::sample_rng(1, 0, 0), b = reidnet::sample_rng(1, 0, 1);
  CHECK_FALSE(torch::equal(reidnet::train_transform(image, options, a),
                           reidnet::train_transform(image, options, b)));

}

TEST_CASE("RandomHorizontalFlip flips half of the pictures") {
  // A picture whose columns differ, no padding, so only the flip changes it.
  const auto columns = torch::arange(16, torch::kUInt8).view({1, 16, 1}).expand({32, 16, 3}).contiguous();
  const auto flip_only = reidnet::TrainTransformOptions().height(32).width(16).padding(0);
  const auto plain = reidnet::eval_transform(columns, 32, 16);
  int flips = 0;
  constexpr int kDraws = 4000;
  for (int i = 0; i < kDraws; ++i) {
    auto rng = reidnet::sample_rng(7, 0, i);
    flips += !torch::equal(reidnet::train_transform(columns, flip_only, rng), plain);
  }
  CHECK(std::abs(flips / double(kDraws) - 0.5) < 0.03);  // 4 sigma
  auto rng = reidnet::sample_rng(7, 0, 0);
  const auto once = reidnet::train_transform(columns, flip_only, rng);
  CHECK((torch::equal(once, plain) ||
         torch::equal(once, reidnet::eval_transform(reidnet::horizontal_flip(columns), 32, 16))));
}

TEST_CASE("train_transform equals Resize, Pad, RandomCrop, flip, ToTensor, Normalize step by step") {
  const auto image = torch::randint(0, 256, {100, 41, 3}, torch::kUInt8);
  const auto options = reidnet::TrainTransformOptions().height(64).width(32).padding(10);
  for (int i = 0; i < 20; ++i) {
    auto rng = reidnet::sample_rng(2, 0, i);
    auto draws = rng;  // the same draws, in the recipe's order
    const auto top = reidnet::detail::random_integer(draws, 0, 21);
    const auto left = reidnet::detail::random_integer(draws, 0, 21);
    const bool flip = reidnet::detail::uniform01(draws) < 0.5;
    auto expected = reidnet::crop(reidnet::pad(reidnet::resize(image, 64, 32), 10), top, left, 64, 32);
    if (flip) expected = reidnet::horizontal_flip(expected);
    CHECK(torch::equal(reidnet::train_transform(image, options, rng),
                       reidnet::to_normalized_tensor(expected)));
  }

}

TEST_CASE("Pad + RandomCrop shift the picture by -padding..padding, filling with zeros") {
  // Pad + RandomCrop: shifts of -padding..padding, zeros where the window leaves the picture.
  std::set<int64_t> shifts;
  const auto ones = torch::full({32, 16, 3}, 255, torch::kUInt8);
  const auto crop_only =
      reidnet::TrainTransformOptions().height(32).width(16).padding(3).horizontal_flip(false);
  for (int i = 0; i < 400; ++i) {
    auto rng = reidnet::sample_rng(11, 0, i);
    const auto out = reidnet::train_transform(ones, crop_only, rng)[0];
    const auto zero_rows = (out.select(1, 8) < 0).sum().item<int64_t>();
    shifts.insert(zero_rows);
  }
  CHECK(*shifts.rbegin() == 3);
  CHECK(shifts.count(0) == 1);

}

TEST_CASE("RandomErasing erases with probability p an area of 0.02-0.4 with aspect 0.3-3.3") {
  // RandomErasing: area fraction in [0.02, 0.4] (up to rounding), probability p.
  double total = 0;
  int erased = 0;
  double smallest = 1, largest = 0, narrowest = 10, widest = 0;
  auto tensor = torch::ones({1, 256, 128});  // small enough to stay single-threaded
  for (int i = 0; i < 4000; ++i) {
    auto rng = reidnet::sample_rng(5, 0, i);
    const auto box = reidnet::random_erasing_(tensor, 0.5, rng);
    if (box.height == 0) continue;
    ++erased;
    const double fraction = double(box.height * box.width) / (256 * 128);
    total += fraction;
    smallest = std::min(smallest, fraction);
    largest = std::max(largest, fraction);
    narrowest = std::min(narrowest, double(box.height) / box.width);
    widest = std::max(widest, double(box.height) / box.width);
    if (i < 50) {  // the box, and only the box, is zero
      CHECK((tensor == 0).sum().item<int64_t>() == box.height * box.width);
      CHECK(tensor.narrow(1, box.top, box.height).narrow(2, box.left, box.width).abs().sum().item<double>() == 0);
    }
    tensor.fill_(1);
  }
  CHECK(smallest >= 0.019);  // the bounds up to rounding of h and w
  CHECK(smallest < 0.025);
  CHECK(largest <= 0.41);
  CHECK(largest > 0.38);
  CHECK(narrowest >= 0.28);
  CHECK(widest <= 1 / 0.28);
  CHECK(std::abs(erased / 4000.0 - 0.5) < 0.04);
  CHECK(total / erased == doctest::Approx(0.21).epsilon(0.1));
}

TEST_CASE("the loader yields every sample exactly once per epoch, the same for any worker count") {
  TemporaryFolder folder("reidnet_test_data_loader");
  std::vector<reidnet::Sample> samples;
  for (int i = 0; i < 23; ++i) {
    const auto path = folder.path / ("p" + std::to_string(i) + (i % 2 ? ".png" : ".jpg"));
    write_picture(path, i);
    samples.push_back({path.string(), 100 + i % 5, 1 + i % 3, i % 5});
  }
  const auto transform = reidnet::make_train_transform(
      reidnet::TrainTransformOptions().height(16).width(8).padding(2).erasing_probability(0.5));
  std::vector<torch::Tensor> reference_images;
  for (int64_t workers : {0, 1, 3}) {
    CAPTURE(workers);
    const auto options = reidnet::LoaderOptions().batch_size(5).workers(workers).shuffle(true).seed(42);
    reidnet::DataLoader loader(samples, transform, options);
    std::vector<torch::Tensor> images;
    for (int64_t epoch : {0, 1}) {
      std::multiset<int64_t> seen;
      std::vector<int64_t> order;
      int batches = 0;
      for (const auto& batch : loader.epoch(epoch)) {
        ++batches;
        CHECK(batch.images.size(1) == 3);
        CHECK(batch.images.size(2) == 16);
        CHECK(batch.images.size(3) == 8);
        CHECK((batch.images.scalar_type() == torch::kFloat32));
        CHECK((batch.labels.scalar_type() == torch::kInt64));
        for (int64_t j = 0; j < batch.indices.size(0); ++j) {
          const int64_t index = batch.indices[j].item<int64_t>();
          seen.insert(index);
          order.push_back(index);
          CHECK(batch.labels[j].item<int64_t>() == samples[index].label);
          CHECK(batch.cameras[j].item<int64_t>() == samples[index].camera);
        }
        images.push_back(batch.images);
      }
      CHECK(batches == 5);  // 23 = 4 x 5 + 3
      CHECK(seen.size() == samples.size());
      CHECK(std::set<int64_t>(seen.begin(), seen.end()).size() == samples.size());
      std::vector<int64_t> sorted_order(order);
      std::sort(sorted_order.begin(), sorted_order.end());
      CHECK(order != sorted_order);  // shuffled
    }
    if (reference_images.empty()) {
      reference_images = images;
    } else {
      REQUIRE(images.size() == reference_images.size());
      for (size_t i = 0; i < images.size(); ++i) CHECK(torch::equal(images[i], reference_images[i]));
    }
  }
  // Epochs differ; drop_last drops the incomplete batch; the unshuffled order is the sample order.
  const auto base = reidnet::LoaderOptions().batch_size(5).seed(42);
  reidnet::DataLoader shuffled(samples, transform, reidnet::LoaderOptions(base).shuffle(true));
  CHECK(shuffled.plan(0) != shuffled.plan(1));
  reidnet::DataLoader dropping(samples, transform, reidnet::LoaderOptions(base).drop_last(true));
  CHECK(dropping.plan(0).size() == 4);
  reidnet::DataLoader ordered(samples, reidnet::make_eval_transform(16, 8), base);
  int64_t next = 0;
  for (const auto& batch : ordered.epoch(0)) {
    for (int64_t j = 0; j < batch.indices.size(0); ++j) CHECK(batch.indices[j].item<int64_t>() == next++);
  }
  CHECK(next == 23);
  // Leaving an epoch early stops its workers cleanly.
  {
    auto run = shuffled.epoch(3);
    CHECK(run.next().has_value());
  }
}

TEST_CASE("P x K batches hold P distinct identities with K pictures each") {
  std::vector<reidnet::Sample> samples;
  // 10 ids with 1..10 pictures each.
  for (int id = 0; id < 10; ++id) {
    for (int j = 0; j <= id; ++j) samples.push_back({"unused.jpg", 1000 + id, 1, id});
  }
  const auto options = reidnet::LoaderOptions().batch_size(12).instances_per_identity(4).seed(3);
  reidnet::DataLoader loader(samples, reidnet::make_eval_transform(8, 4), options);
  for (int64_t epoch : {0, 1}) {
    const auto plan = loader.plan(epoch);
    CHECK(plan.size() >= 3);
    std::set<int64_t> used_ids;
    for (const auto& batch : plan) {
      REQUIRE(batch.size() == 12);
      std::map<int64_t, int> per_id;
      for (int64_t index : batch) ++per_id[samples[index].person_id];
      CHECK(per_id.size() == 3);
      for (const auto& [id, count] : per_id) {
        CHECK(count == 4);
        used_ids.insert(id);
      }
      // A group of K never repeats a picture unless the id has fewer than K.
      for (size_t g = 0; g < 12; g += 4) {
        const std::set<int64_t> group(batch.begin() + g, batch.begin() + g + 4);
        const int64_t id = samples[batch[g]].person_id;
        const size_t pictures = static_cast<size_t>(id - 1000 + 1);
        if (pictures >= 4) CHECK(group.size() == 4);
        else CHECK(group.size() <= pictures);
      }
    }
    CHECK(used_ids.size() >= 8);
  }
  CHECK(loader.plan(0) == loader.plan(0));
  CHECK_THROWS_WITH_AS(reidnet::DataLoader(samples, reidnet::make_eval_transform(8, 4),
                                           reidnet::LoaderOptions().batch_size(10).instances_per_identity(4)),
                       doctest::Contains("instances_per_identity"), std::runtime_error);
  reidnet::DataLoader too_few(samples, reidnet::make_eval_transform(8, 4),
                              reidnet::LoaderOptions().batch_size(44).instances_per_identity(4));
  CHECK_THROWS_WITH_AS(too_few.plan(0), doctest::Contains("identities"), std::runtime_error);
}

TEST_CASE("loading a missing or broken picture raises an error naming the file") {
  TemporaryFolder folder("reidnet_test_data_loader_errors");
  std::vector<reidnet::Sample> samples;
  for (int i = 0; i < 6; ++i) {
    const auto path = folder.path / ("p" + std::to_string(i) + ".jpg");
    write_picture(path, i);
    samples.push_back({path.string(), 1, 1, 0});
  }
  const auto missing = (folder.path / "missing.jpg").string();
  const auto broken = (folder.path / "broken.jpg").string();
  std::ofstream(broken) << "not a jpeg";
  for (const auto& bad : {missing, broken}) {
    for (int64_t workers : {0, 2}) {
      auto with_bad = samples;
      with_bad[4].path = bad;
      reidnet::DataLoader loader(with_bad, reidnet::make_eval_transform(16, 8),
                                 reidnet::LoaderOptions().batch_size(2).workers(workers));
      auto run = loader.epoch(0);
      CHECK(run.next().has_value());
      CHECK(run.next().has_value());
      CHECK_THROWS_WITH_AS(run.next(), doctest::Contains(bad.c_str()), std::runtime_error);
    }
  }
  CHECK_THROWS_AS(reidnet::DataLoader(samples, reidnet::Transform{}), std::runtime_error);
  CHECK_THROWS_AS(reidnet::DataLoader(samples, reidnet::make_eval_transform(8, 4),
                                      reidnet::LoaderOptions().batch_size(0)),
                  std::runtime_error);
}

TEST_CASE("the toy data set keeps Market-1501's layout and the promises of reidnet-toy-data, "
          "in both styles") {
  for (const char* style : reidnet::toy::kStyles) {
    CAPTURE(style);
    TemporaryFolder folder(std::string("reidnet_test_data_toy_") + style);
    reidnet::toy::ToyDataOptions options;
    options.style = style;
    options.ids = 6;
    options.test_ids = 5;
    options.images_per_id = 4;
    options.cameras = 4;
    options.distractors = 3;
    options.junk = 2;
    options.seed = 9;
    const auto root = (folder.path / "toy").string();
    const auto counts = reidnet::toy::create_toy_dataset(options, root);
    const auto entries = [&] {
      return std::distance(fs::directory_iterator(folder.path), fs::directory_iterator());
    };
    CHECK(entries() == 1);  // the data set, no temporary folder beside it
    const auto data = reidnet::read_dataset(root);
    CHECK(data.class_num() == 6);
    CHECK(data.train_all.size() == 24);
    CHECK(static_cast<int>(data.query.size()) == counts.query);
    CHECK(data.gallery.size() == 5 * 4 + 3 + 2);
    std::set<int64_t> train_ids(data.class_ids.begin(), data.class_ids.end());
    std::set<int64_t> query_ids;
    for (const auto& q : data.query) {
      query_ids.insert(q.person_id);
      CHECK(train_ids.count(q.person_id) == 0);
      const bool matched = std::any_of(data.gallery.begin(), data.gallery.end(), [&](const auto& g) {
        return g.person_id == q.person_id && g.camera != q.camera;
      });
      CHECK_MESSAGE(matched, q.path << " has no match on another camera");
    }
    CHECK(query_ids.size() == 5);
    const auto count_id = [&](int64_t id) {
      return std::count_if(data.gallery.begin(), data.gallery.end(),
                           [&](const auto& g) { return g.person_id == id; });
    };
    CHECK(count_id(0) == 3);
    CHECK(count_id(-1) == 2);
    const auto picture = reidnet::read_image(data.query.front().path);
    CHECK(picture.sizes() == torch::IntArrayRef({128, 64, 3}));

    // Deterministic: the same seed writes the same bytes; another seed, other pictures.
    const auto again = (folder.path / "again").string();
    reidnet::toy::create_toy_dataset(options, again);
    const auto bytes = [](const std::string& path) { return reidnet::detail::read_file_bytes(path); };
    for (const auto& sample : data.gallery) {
      const auto twin = again + "/bounding_box_test/" + fs::path(sample.path).filename().string();
      REQUIRE(fs::exists(twin));
      CHECK(bytes(twin) == bytes(sample.path));
    }
    options.seed = 10;
    const auto other = (folder.path / "other").string();
    reidnet::toy::create_toy_dataset(options, other);
    CHECK(reidnet::read_dataset(other).class_ids != data.class_ids);

    // A failure leaves nothing behind.
    touch(folder.path / "a_file");
    const auto impossible = (folder.path / "a_file" / "toy").string();
    CHECK_THROWS_WITH_AS(reidnet::toy::create_toy_dataset(options, impossible),
                         doctest::Contains(impossible.c_str()), std::runtime_error);
    CHECK(entries() == 4);  // toy, again, other and a_file: nothing else left behind

    // Writing over an existing data set replaces it whole.
    reidnet::toy::create_toy_dataset(options, root);
    CHECK(reidnet::read_dataset(root).class_ids == reidnet::read_dataset(other).class_ids);
    CHECK(entries() == 4);
  }
}

}  // namespace reidnet_test_data
