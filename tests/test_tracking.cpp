// Following people from frame to frame by embedding: the toy MOTChallenge sequence
// (reidnet-toy-data --style sequence), the Hungarian assignment against scipy's, the link
// accuracy of known features, and reidnet-link-accuracy's refusals.
#include "support.hpp"

#include "toy/sequence.hpp"

#include <reidnet/data/mot_sequence.hpp>
#include <reidnet/evaluation/frame_links.hpp>
#include <reidnet/io/npy.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

// A namespace per topic: the topics build as one unit (CMake unity build) without their
// helpers meeting.
namespace reidnet_test_tracking {

namespace fs = std::filesystem;

namespace {

using reidnet::test::TemporaryFolder;

std::string text_of(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
}

std::vector<std::vector<double>> csv_rows(const fs::path& path) {
  std::vector<std::vector<double>> rows;
  std::istringstream lines(text_of(path));
  for (std::string line; std::getline(lines, line);) {
    std::vector<double> row;
    std::istringstream fields(line);
    for (std::string field; std::getline(fields, field, ',');) row.push_back(std::stod(field));
    rows.push_back(row);
  }
  return rows;
}

std::map<std::string, std::string> seqinfo_of(const fs::path& sequence) {
  std::map<std::string, std::string> values;
  std::istringstream lines(text_of(sequence / "seqinfo.ini"));
  for (std::string line; std::getline(lines, line);) {
    const auto equals = line.find('=');
    if (equals != std::string::npos) values[line.substr(0, equals)] = line.substr(equals + 1);
  }
  return values;
}

// The ground-truth identity of each of `sequence`'s detections (IoU >= 0.5), in the order of
// reidnet::read_mot_sequence's rows.
torch::Tensor identities_of(const reidnet::MotSequence& sequence, const fs::path& folder) {
  const auto gt = csv_rows(folder / "gt" / "gt.txt");
  auto gt_frames = torch::empty({static_cast<int64_t>(gt.size())}, torch::kInt64);
  auto gt_ids = torch::empty_like(gt_frames);
  auto gt_boxes = torch::empty({static_cast<int64_t>(gt.size()), 4}, torch::kFloat32);
  for (size_t i = 0; i < gt.size(); ++i) {
    gt_frames[i] = static_cast<int64_t>(gt[i][0]);
    gt_ids[i] = static_cast<int64_t>(gt[i][1]);
    for (int k = 0; k < 4; ++k) gt_boxes[i][k] = gt[i][2 + k];
  }
  return reidnet::match_ground_truth(sequence.rows.select(1, 0).to(torch::kInt64),
                                     sequence.rows.slice(1, 2, 6), gt_frames, gt_boxes, gt_ids);
}

// One-hot features of `identities` (a zero row for -1): the perfect appearance model.
torch::Tensor one_hot_features(const torch::Tensor& identities, int64_t dimensions) {
  auto features = torch::zeros({identities.size(0), dimensions});
  for (int64_t i = 0; i < identities.size(0); ++i) {
    const auto id = identities[i].item<int64_t>();
    if (id >= 0) features[i][id] = 1;
  }
  return features;
}

reidnet::toy::sequence::SequenceOptions small_sequence() {
  reidnet::toy::sequence::SequenceOptions options;
  options.frames = 16;
  options.people = 6;
  options.width = 320;
  options.height = 180;
  options.seed = 5;
  return options;
}

}  // namespace

TEST_CASE("the toy sequence keeps MOTChallenge's layout: seqinfo.ini, img1, gt.txt and det.txt "
          "agree, boxes lie in the frame, people hide one another, and a seed gives the same "
          "files") {
  TemporaryFolder folder("reidnet_test_tracking_sequence");
  const auto options = small_sequence();
  const auto root = folder.path / "TOY-01";
  const auto counts = reidnet::toy::sequence::create_toy_sequence(options, root.string());
  CHECK(counts.frames == 16);
  CHECK(counts.people == 6);

  const auto info = seqinfo_of(root);
  CHECK(text_of(root / "seqinfo.ini").rfind("[Sequence]\n", 0) == 0);
  CHECK(info.at("name") == "TOY-01");
  CHECK(info.at("imDir") == "img1");
  CHECK(info.at("frameRate") == "30");
  CHECK(info.at("seqLength") == "16");
  CHECK(info.at("imWidth") == "320");
  CHECK(info.at("imHeight") == "180");
  CHECK(info.at("imExt") == ".jpg");
  for (int frame = 1; frame <= 16; ++frame) {
    const auto picture = reidnet::read_image((root / "img1" / fmt::format("{:06d}.jpg", frame)).string());
    CHECK(picture.sizes() == torch::IntArrayRef({180, 320, 3}));
  }
  CHECK(std::distance(fs::directory_iterator(root / "img1"), fs::directory_iterator()) == 16);

  // gt.txt: frame,id,x,y,w,h,1,1,visibility; whole, 1-based pixels inside the frame.
  const auto gt = csv_rows(root / "gt" / "gt.txt");
  REQUIRE(static_cast<int>(gt.size()) == counts.boxes);
  std::set<int> ids;
  int hidden = 0;
  std::set<std::pair<int, int>> frame_ids;
  for (const auto& row : gt) {
    REQUIRE(row.size() == 9);
    CHECK(row[0] >= 1);
    CHECK(row[0] <= 16);
    CHECK(row[1] >= 1);
    CHECK(row[1] <= 6);
    for (int k = 2; k < 6; ++k) CHECK(row[k] == std::floor(row[k]));
    CHECK(row[2] >= 1);
    CHECK(row[3] >= 1);
    CHECK(row[2] + row[4] - 1 <= 320);
    CHECK(row[3] + row[5] - 1 <= 180);
    CHECK(row[4] >= 2);
    CHECK(row[5] >= 2);
    CHECK(row[6] == 1);
    CHECK(row[7] == 1);
    CHECK(row[8] >= 0);
    CHECK(row[8] <= 1);
    CHECK(frame_ids.insert({static_cast<int>(row[0]), static_cast<int>(row[1])}).second);
    ids.insert(static_cast<int>(row[1]));
    hidden += row[8] < 0.9 ? 1 : 0;
  }
  CHECK(ids.size() == 6);
  CHECK(hidden > 0);  // people cross and hide one another

  // det.txt: frame,-1,x,y,w,h,conf,-1,-1,-1, read by the library's MOTChallenge reader; the
  // heavily occluded are missed, the rest are near a ground-truth box.
  const auto det = csv_rows(root / "det" / "det.txt");
  REQUIRE(static_cast<int>(det.size()) == counts.detections);
  CHECK(counts.detections < counts.boxes);
  CHECK(counts.detections > counts.boxes / 2);
  for (const auto& row : det) {
    REQUIRE(row.size() == 10);
    CHECK(row[1] == -1);
    CHECK(row[6] > 0);
    CHECK(row[6] < 1);
    CHECK(row[2] >= 1);
    CHECK(row[2] + row[4] - 1 <= 320.01);
    CHECK(row[7] == -1);
  }
  const auto sequence = reidnet::read_mot_sequence(root.string());
  CHECK(sequence.frame_count == 16);
  CHECK(sequence.rows.size(0) == counts.detections);
  const auto identities = identities_of(sequence, root);
  CHECK((identities >= 0).sum().item<int64_t>() >= counts.detections * 9 / 10);

  // Deterministic: the same seed writes the same bytes; another seed, other people.
  const auto again = folder.path / "again" / "TOY-01";
  reidnet::toy::sequence::create_toy_sequence(options, again.string());
  for (const auto& file : fs::recursive_directory_iterator(root)) {
    if (!file.is_regular_file()) continue;
    const auto twin = again / fs::relative(file.path(), root);
    REQUIRE(fs::exists(twin));
    CHECK_MESSAGE(text_of(twin) == text_of(file.path()), twin);
  }
  auto other_options = options;
  other_options.seed = 6;
  const auto other = folder.path / "other";
  reidnet::toy::sequence::create_toy_sequence(other_options, other.string());
  CHECK(text_of(other / "gt" / "gt.txt") != text_of(root / "gt" / "gt.txt"));
  CHECK(text_of(other / "img1" / "000001.jpg") != text_of(root / "img1" / "000001.jpg"));
}

TEST_CASE("the Hungarian assignment finds the largest total where greedy matching does not, "
          "and equals scipy's linear_sum_assignment") {
  // Greedy takes 0.9 first and is left with 0.1 (total 1.0); the best is 0.8 + 0.85.
  const auto greedy_trap = torch::tensor({0.9, 0.8, 0.85, 0.1}, torch::kFloat64).view({2, 2});
  CHECK(reidnet::max_score_assignment(greedy_trap) == std::vector<int64_t>{1, 0});
  // More rows than columns: the row whose best column is taken by a better claim goes without.
  const auto tall = torch::tensor({0.9, 0.1, 0.8, 0.2, 0.1, 0.7}, torch::kFloat64).view({3, 2});
  CHECK(reidnet::max_score_assignment(tall) == std::vector<int64_t>{0, -1, 1});
  // More columns than rows, negative scores: every row still gets a column.
  const auto wide = torch::tensor({-0.5, -0.9, -0.1, -0.2, -0.3, -0.8}, torch::kFloat64).view({2, 3});
  CHECK(reidnet::max_score_assignment(wide) == std::vector<int64_t>{2, 0});
  CHECK(reidnet::max_score_assignment(torch::zeros({0, 3})).empty());
  CHECK(reidnet::max_score_assignment(torch::zeros({2, 0})) == std::vector<int64_t>{-1, -1});
  CHECK_THROWS(reidnet::max_score_assignment(torch::tensor({NAN, 1.0}).view({1, 2})));

  const auto reference = reidnet::test::load_tensor_dict(reidnet::test::fixture("tracking", "assignments.pt"));
  for (const char* name : {"square", "wide", "tall", "negative", "cosine"}) {
    CAPTURE(name);
    const auto& scores = reference.at(std::string(name) + "_scores");
    const auto assigned = reidnet::max_score_assignment(scores);
    const auto expected = reference.at(std::string(name) + "_assigned");
    REQUIRE(static_cast<int64_t>(assigned.size()) == expected.size(0));
    double total = 0;
    for (size_t i = 0; i < assigned.size(); ++i) {
      CHECK(assigned[i] == expected[static_cast<int64_t>(i)].item<int64_t>());
      if (assigned[i] >= 0) total += scores[static_cast<int64_t>(i)][assigned[i]].item<double>();
    }
    CHECK(total == doctest::Approx(reference.at(std::string(name) + "_total").item<double>()).epsilon(1e-9));
  }
}

TEST_CASE("link accuracy: one-hot features link every person, a swap of two identities costs "
          "exactly its two links, newcomers and detections without ground truth are not counted") {
  // Frames 1-5; people 1, 2, 3 in every frame, person 4 from frame 4 on; one false detection
  // in frame 2 far from every ground-truth box.
  std::vector<int64_t> gt_frame, gt_id, det_frame;
  std::vector<float> gt_box, det_box;
  for (int64_t frame = 1; frame <= 5; ++frame) {
    for (int64_t person = 1; person <= 4; ++person) {
      if (person == 4 && frame < 4) continue;
      const float x = 10.f + 60.f * static_cast<float>(person) + 3.f * static_cast<float>(frame);
      gt_frame.push_back(frame);
      gt_id.push_back(person);
      gt_box.insert(gt_box.end(), {x, 20.f, 40.f, 100.f});
      det_frame.push_back(frame);
      det_box.insert(det_box.end(), {x + 2.f, 22.f, 40.f, 96.f});  // IoU about 0.87
    }
    if (frame == 2) {
      det_frame.push_back(frame);
      det_box.insert(det_box.end(), {500.f, 300.f, 30.f, 60.f});
    }
  }
  const auto n = static_cast<int64_t>(det_frame.size());
  const auto frames = torch::tensor(det_frame, torch::kInt64);
  const auto boxes = torch::tensor(det_box).view({n, 4});
  const auto identities = reidnet::match_ground_truth(
      frames, boxes, torch::tensor(gt_frame, torch::kInt64),
      torch::tensor(gt_box).view({static_cast<int64_t>(gt_frame.size()), 4}),
      torch::tensor(gt_id, torch::kInt64));
  REQUIRE((identities < 0).sum().item<int64_t>() == 1);
  // Every detection but the false one has its person's id, in the order drawn.
  int64_t row = 0;
  for (int64_t frame = 1; frame <= 5; ++frame) {
    for (int64_t person = 1; person <= (frame < 4 ? 3 : 4); ++person) CHECK(identities[row++].item<int64_t>() == person);
    if (frame == 2) CHECK(identities[row++].item<int64_t>() == -1);
  }

  // Expected links: 3 people x 4 frame pairs, and person 4 once (frame 4 to 5).
  const auto perfect = reidnet::score_frame_links(
      reidnet::link_consecutive_frames(one_hot_features(identities, 8), frames), frames, identities);
  CHECK(perfect.expected == 13);
  CHECK(perfect.correct == 13);
  CHECK(perfect.unmatched == 1);
  CHECK(perfect.accuracy() == 1.0);

  // Persons 1 and 2 swap features from frame 3 on: an identity switch at frames 2 -> 3, two
  // links wrong there, the rest right again.
  auto swapped_ids = identities.clone();
  for (int64_t r = 0; r < n; ++r) {
    const auto id = identities[r].item<int64_t>();
    if (det_frame[static_cast<size_t>(r)] >= 3 && (id == 1 || id == 2)) swapped_ids[r] = 3 - id;
  }
  const auto swapped = reidnet::score_frame_links(
      reidnet::link_consecutive_frames(one_hot_features(swapped_ids, 8), frames), frames, identities);
  CHECK(swapped.expected == 13);
  CHECK(swapped.correct == 11);
  CHECK(swapped.accuracy() == doctest::Approx(11.0 / 13.0));
  // Two frames apart: people 1-3 at 1->3, 2->4 and 3->5 (person 4 is not in frame 3); the
  // swap makes 1->3 and 2->4 wrong for persons 1 and 2.
  const auto two_apart = reidnet::score_frame_links(
      reidnet::link_consecutive_frames(one_hot_features(swapped_ids, 8), frames, 2), frames, identities, 2);
  CHECK(two_apart.expected == 9);
  CHECK(two_apart.correct == 5);

  // The links themselves: every current detection of frame 3 linked to frame 2's, with the
  // cosine similarity of its pair.
  const auto links = reidnet::link_consecutive_frames(one_hot_features(identities, 8), frames);
  for (const auto& link : links) {
    CHECK(det_frame[static_cast<size_t>(link.current)] == det_frame[static_cast<size_t>(link.previous)] + 1);
    if (identities[link.current].item<int64_t>() >= 0 &&
        identities[link.current].item<int64_t>() == identities[link.previous].item<int64_t>()) {
      CHECK(link.similarity == doctest::Approx(1.0));
    }
  }
}

TEST_CASE("reidnet-toy-data --style sequence and reidnet-link-accuracy: perfect features link "
          "every person; bad input exits 2 naming the file and line") {
  TemporaryFolder folder("reidnet_test_tracking_programs");
  const auto root = folder.path / "TOY-02";
  const auto made = reidnet::test::run_program(
      "reidnet-toy-data", "--style sequence --out " + root.string() +
                              " --frames 12 --people 5 --width 320 --height 180 --seed 2");
  INFO(made.output);
  REQUIRE(made.status == 0);
  CHECK(seqinfo_of(root).at("seqLength") == "12");
  CHECK(reidnet::test::run_program("reidnet-toy-data", "--style sequence --out " +
                                   (folder.path / "refused").string() + " --ids 4").status == 2);
  CHECK(reidnet::test::run_program("reidnet-toy-data", "--out " + (folder.path / "refused").string() +
                                   " --frames 4").status == 2);
  CHECK(!fs::exists(folder.path / "refused"));

  // reidnet-embed's layout, with one-hot features of the ground truth.
  const auto sequence = reidnet::read_mot_sequence(root.string());
  const auto identities = identities_of(sequence, root);
  const auto rows = torch::cat({sequence.rows.to(torch::kFloat32), one_hot_features(identities, 8)}, 1);
  const auto features = (folder.path / "TOY-02.npy").string();
  reidnet::write_npy(features, rows);
  const auto flags = "--mot " + root.string() + " --features ";
  const auto run = reidnet::test::run_program("reidnet-link-accuracy", flags + features);
  INFO(run.output);
  CHECK(run.status == 0);
  const auto expected = reidnet::score_frame_links(
      reidnet::link_consecutive_frames(rows.slice(1, 10), sequence.rows.select(1, 0).to(torch::kInt64)),
      sequence.rows.select(1, 0).to(torch::kInt64), identities);
  CHECK(expected.expected > 20);
  CHECK(run.output.find(fmt::format("links: {}/{} correct (100.0%)", expected.expected, expected.expected)) !=
        std::string::npos);
  CHECK(std::distance(fs::directory_iterator(folder.path), fs::directory_iterator()) == 2);  // wrote nothing

  const auto refused = [&](const std::string& arguments, const std::string& named) {
    const auto bad = reidnet::test::run_program("reidnet-link-accuracy", arguments);
    INFO(arguments, "\n", bad.output);
    CHECK(bad.status == 2);
    CHECK(bad.output.find(named) != std::string::npos);
  };
  // A features file one row short, and one of another sequence.
  const auto short_file = (folder.path / "short.npy").string();
  reidnet::write_npy(short_file, rows.slice(0, 0, rows.size(0) - 1));
  refused(flags + short_file, short_file);
  auto shifted = rows.clone();
  shifted.select(1, 2) += 7;
  const auto other_file = (folder.path / "other.npy").string();
  reidnet::write_npy(other_file, shifted);
  refused(flags + other_file, "line 1");
  // A malformed gt.txt line, then no gt.txt at all.
  const auto gt = root / "gt" / "gt.txt";
  const auto good_gt = text_of(gt);
  std::ofstream(gt, std::ios::binary | std::ios::app) << "3,2,10,x,40,90,1,1,1\n";
  const auto gt_lines = std::count(good_gt.begin(), good_gt.end(), '\n');
  refused(flags + features, fmt::format("gt.txt, line {}", gt_lines + 1));
  fs::remove(gt);
  refused(flags + features, "gt.txt");
  std::ofstream(gt, std::ios::binary) << good_gt;
  // A malformed det.txt line, named by the MOTChallenge reader.
  std::ofstream(root / "det" / "det.txt", std::ios::binary | std::ios::app) << "2,-1,5,5,nan,9,0.5,-1,-1,-1\n";
  refused(flags + features, "det.txt, line");
  refused("--mot " + root.string() + " --features " + features + " --min-iou nan", "--min-iou");
}

}  // namespace reidnet_test_tracking
