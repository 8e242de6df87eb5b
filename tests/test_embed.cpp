// Embeddings of detection boxes for trackers (tests/python/embed_reference.py): OpenCV's
// INTER_LINEAR reproduced pixel for pixel against cv2.resize; crops of clamped boxes identical
// to a Python loop's (PIL crop, then cv2.resize or PIL's resize, ToTensor, Normalize); the
// embeddings within kEmbeddingTolerance of the same OSNet run by Python; boxes without pixels
// reported; .npy files as numpy writes and reads them; MOTChallenge det.txt reading and its
// refusals; reidnet-embed's rows equal to the library call's, and its exit code 2 for a bad line.
#include "support.hpp"

#include <reidnet/data.hpp>
#include <reidnet/data/box_crops.hpp>
#include <reidnet/data/mot_sequence.hpp>
#include <reidnet/data/opencv_resize.hpp>
#include <reidnet/inference/box_embeddings.hpp>
#include <reidnet/io/checkpoint.hpp>
#include <reidnet/io/npy.hpp>
#include <reidnet/models/model_zoo.hpp>
#include <reidnet/models/osnet.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

namespace reidnet_test_embed {

using reidnet::test::fixture;

namespace {

// Largest absolute difference between L2-normalised embeddings of reidnet and Python (the
// issue's bound); measured 2e-7 on this machine, the crops being identical.
constexpr double kEmbeddingTolerance = 1e-4;
// Rows written by reidnet-embed against the library call in this process: the same code, the
// same pictures; only the thread count may differ.
constexpr double kProgramTolerance = 1e-5;
constexpr int64_t kClasses = 8;

const std::map<std::string, torch::Tensor>& references() {
  static const auto tensors = reidnet::test::load_tensor_dict(fixture("embed", "reference.pt"));
  return tensors;
}

const torch::Tensor& reference(const std::string& key) {
  const auto found = references().find(key);
  REQUIRE_MESSAGE(found != references().end(), "reference.pt lacks " << key);
  return found->second;
}

reidnet::ReidModel python_osnet() {
  auto model = reidnet::create_model("osnet_x0_25", reidnet::ModelArgs().class_num(kClasses));
  reidnet::load_state_dict(*model, fixture("embed", "osnet.pth"));
  model->eval();
  return model;
}

const torch::Tensor& frame() {
  static const auto picture = reidnet::read_image(fixture("embed", "frame.png"));
  return picture;
}

// The config and crop resize of each of Python's three loops.
struct Loop {
  const char* name;
  const char* interpolation;
  reidnet::CropResize resize;
};
const Loop kLoops[] = {
    {"opencv", "bilinear", reidnet::CropResize::kConfig},  // a bilinear config: OpenCV's
    {"pil_bilinear", "bilinear", reidnet::CropResize::kPil},
    {"pil_bicubic", "bicubic", reidnet::CropResize::kConfig},  // a bicubic config: PIL's
};

reidnet::ModelConfig config_of(const Loop& loop) {
  return reidnet::osnet_config().interpolation(loop.interpolation);
}

double max_difference(const torch::Tensor& a, const torch::Tensor& b) {
  REQUIRE(a.sizes() == b.sizes());
  return (a.to(torch::kFloat64).cpu() - b.to(torch::kFloat64).cpu()).abs().max().item<double>();
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

// A MOTChallenge folder: frames 1..3 (the fixture frame, mirrored, and again) as JPEG, and
// det.txt with `detections`.
void make_sequence(const std::filesystem::path& folder, const std::string& detections) {
  std::filesystem::create_directories(folder / "img1");
  const auto& picture = frame();
  reidnet::write_jpeg((folder / "img1" / "000001.jpg").string(), picture);
  reidnet::write_jpeg((folder / "img1" / "000002.jpg").string(), picture.flip({1}).contiguous());
  reidnet::write_jpeg((folder / "img1" / "000003.jpg").string(), picture.flip({0}).contiguous());
  write_text(folder / "det" / "det.txt", detections);
}

std::string refusal_of(const std::string& folder) {
  try {
    reidnet::read_mot_sequence(folder);
  } catch (const reidnet::InputError& error) {
    return error.what();
  }
  return "(accepted)";
}

}  // namespace

TEST_CASE("opencv_linear_resize gives cv2.resize's INTER_LINEAR pixels, on the CPU and with tensor ops") {
  const auto& source = reference("opencv_source");
  for (const auto& [key, expected] : references()) {
    if (key.rfind("opencv/", 0) != 0) continue;
    CAPTURE(key);
    const auto resized = reidnet::opencv_linear_resize(source, expected.size(0), expected.size(1));
    CHECK(torch::equal(resized, expected));
    const auto levels = reidnet::detail::resize_region_with_tensor_ops(
        source, expected.size(0), expected.size(1), {true, reidnet::detail::PilFilter::kBilinear});
    CHECK(torch::equal(levels.permute({1, 2, 0}).to(torch::kUInt8), expected));
  }
  // PIL's filters through the tensor-op path equal the data pipeline's resize.
  for (const auto interpolation : {reidnet::Interpolation::kBilinear, reidnet::Interpolation::kBicubic}) {
    const auto filter = interpolation == reidnet::Interpolation::kBilinear ? reidnet::detail::PilFilter::kBilinear
                                                                           : reidnet::detail::PilFilter::kBicubic;
    for (const auto& [height, width] : {std::pair{256, 128}, {64, 32}, {600, 350}, {517, 128}, {3, 2}}) {
      CAPTURE(height);
      CAPTURE(width);
      const auto levels = reidnet::detail::resize_region_with_tensor_ops(source, height, width, {false, filter});
      CHECK(torch::equal(levels.permute({1, 2, 0}).to(torch::kUInt8),
                         reidnet::resize(source, height, width, interpolation)));
    }
  }
}

TEST_CASE("crop_boxes clamps and cuts boxes as a Python loop does, and reports those without pixels") {
  const auto& boxes = reference("boxes");
  const auto& pixels = reference("pixels");
  for (const auto& loop : kLoops) {
    const std::string loop_name = loop.name;
    CAPTURE(loop_name);
    const auto crops = reidnet::crop_boxes(frame(), boxes, config_of(loop), reidnet::CropOptions().resize(loop.resize));
    CHECK(torch::equal(crops.valid, pixels.select(1, 0) >= 0));
    for (int64_t i = 0; i < boxes.size(0); ++i) {
      if (!crops.valid[i].item<bool>()) continue;
      const auto& box = crops.pixels[i];
      CHECK(torch::equal(torch::tensor({box.top, box.left, box.bottom, box.right}), pixels[i]));
    }
    // Identical inputs: the same pixels, the same float32 arithmetic.
    CHECK(max_difference(crops.images, reference(std::string("inputs/") + loop.name)) == 0);
    // The device path's arithmetic, run here on the CPU, gives the same inputs.
    std::vector<reidnet::PixelBox> kept;
    for (const auto& box : crops.pixels) {
      if (box.bottom > box.top) kept.push_back(box);
    }
    const auto through_tensor_ops = reidnet::detail::crop_with_tensor_ops(
        frame(), kept, config_of(loop), reidnet::detail::crop_resampling(config_of(loop), loop.resize));
    CHECK(max_difference(through_tensor_ops, crops.images) == 0);
  }
  const auto crops = reidnet::crop_boxes(frame(), boxes, reidnet::osnet_config());
  using P = reidnet::BoxProblem;
  const std::vector<std::pair<int64_t, P>> expected{{5, P::kEmpty}, {6, P::kNotFinite}, {7, P::kOutsideFrame},
                                                    {8, P::kEmpty}, {9, P::kEmpty}, {11, P::kOutsideFrame}};
  REQUIRE(crops.rejected.size() == expected.size());
  for (size_t k = 0; k < expected.size(); ++k) {
    CHECK(crops.rejected[k].index == expected[k].first);
    CHECK((crops.rejected[k].problem == expected[k].second));
  }
  // No box at all, and only boxes without pixels: empty batches, not errors.
  const auto none = reidnet::crop_boxes(frame(), torch::empty({0, 4}), reidnet::osnet_config());
  CHECK(none.images.size(0) == 0);
  CHECK(none.valid.numel() == 0);
  const auto outside = reidnet::crop_boxes(frame(), torch::tensor({2000.f, 0.f, 5.f, 5.f}).view({1, 4}),
                                           reidnet::osnet_config());
  CHECK(outside.images.size(0) == 0);
  CHECK(outside.rejected.size() == 1);
  CHECK_THROWS_AS(reidnet::crop_boxes(frame().to(torch::kFloat32), boxes, reidnet::osnet_config()),
                  std::invalid_argument);
  CHECK_THROWS_AS(reidnet::crop_boxes(frame(), torch::zeros({3, 5}), reidnet::osnet_config()),
                  std::invalid_argument);
}

TEST_CASE("embed_boxes equals the Python OSNet on the same crops, with zero rows for boxes without pixels") {
  auto model = python_osnet();
  const auto fast = reidnet::optimize_for_inference(model);
  const auto& boxes = reference("boxes");
  for (const auto& loop : kLoops) {
    const std::string loop_name = loop.name;
    CAPTURE(loop_name);
    const auto& expected = reference(std::string("embeddings/") + loop.name);
    const auto options = reidnet::BoxEmbeddingOptions().resize(loop.resize);
    const auto optimised = reidnet::embed_boxes(fast, config_of(loop), frame(), boxes, options);
    const double difference = max_difference(optimised.embeddings, expected);
    MESSAGE(loop_name << ": max |reidnet - Python| " << difference);
    CHECK(difference < kEmbeddingTolerance);
    CHECK(optimised.rejected.size() == 6);
    CHECK(optimised.embeddings.index({~optimised.valid}).abs().max().item<float>() == 0);
    // In batches of 4 crops: the same rows.
    const auto batched = reidnet::embed_boxes(fast, config_of(loop), frame(), boxes,
                                              reidnet::BoxEmbeddingOptions(options).batch_size(4));
    CHECK(max_difference(batched.embeddings, expected) < kEmbeddingTolerance);
  }
  // The module itself, with its own config (bilinear: OpenCV's resize).
  const auto module = reidnet::embed_boxes(model, frame(), boxes);
  CHECK(max_difference(module.embeddings, reference("embeddings/opencv")) < kEmbeddingTolerance);
  model->train();
  CHECK_THROWS_AS(reidnet::embed_boxes(model, frame(), boxes), std::invalid_argument);
}

TEST_CASE("crops and embeddings on CUDA equal the CPU's" * reidnet::test::cuda_suite() *
          reidnet::test::skip_without_cuda()) {
  auto model = python_osnet();
  const torch::Device cuda(torch::kCUDA);
  const auto& boxes = reference("boxes");
  for (const auto& loop : kLoops) {
    const std::string loop_name = loop.name;
    CAPTURE(loop_name);
    const auto crops = reidnet::crop_boxes(frame(), boxes, config_of(loop),
                                           reidnet::CropOptions().resize(loop.resize).device(cuda));
    CHECK(crops.images.is_cuda());
    CHECK(max_difference(crops.images, reference(std::string("inputs/") + loop.name)) == 0);
  }
  const auto fast = reidnet::optimize_for_inference(model, reidnet::InferenceOptions().device(cuda));
  const auto result = reidnet::embed_boxes(fast, model->config(), frame(), boxes);
  CHECK(result.embeddings.is_cuda());
  CHECK(max_difference(result.embeddings, reference("embeddings/opencv")) < kEmbeddingTolerance);
}

TEST_CASE("read_npy reads what numpy.save writes and refuses the rest, naming the file") {
  const auto folder = std::filesystem::path(fixture("embed", "npy"));
  const auto matrix = reidnet::read_npy((folder / "f4_2d.npy").string());
  CHECK((matrix.scalar_type() == torch::kFloat32));
  const auto expected = (torch::arange(12, torch::kFloat32).view({3, 4}) - 5.5) / 3;
  CHECK(torch::equal(matrix, expected));
  CHECK(torch::equal(reidnet::read_npy((folder / "version2.npy").string()), expected));
  const auto vector = reidnet::read_npy((folder / "f8_1d.npy").string());
  CHECK((vector.scalar_type() == torch::kFloat64));
  CHECK(torch::equal(vector, torch::arange(5, torch::kFloat64) / 7));
  CHECK(reidnet::read_npy((folder / "empty.npy").string()).sizes() == torch::IntArrayRef({0, 4}));
  for (const auto& [name, problem] : {std::pair{"fortran.npy", "Fortran order"},
                                      {"big_endian.npy", "'>f4'"},
                                      {"int32.npy", "'<i4'"},
                                      {"three_d.npy", "1-D or 2-D"}}) {
    CAPTURE(name);
    const auto path = (folder / name).string();
    const auto named = path + ": not a .npy file reidnet reads";
    CHECK_THROWS_WITH_AS(reidnet::read_npy(path), doctest::Contains(named.c_str()), reidnet::InputError);
    CHECK_THROWS_WITH_AS(reidnet::read_npy(path), doctest::Contains(problem), reidnet::InputError);
  }
  reidnet::test::TemporaryFolder scratch("reidnet_npy");
  // Truncated data, a header that claims more than the file holds, a file that is no .npy.
  std::ifstream source(folder / "f4_2d.npy", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(source)), std::istreambuf_iterator<char>());
  const auto truncated = (scratch.path / "truncated.npy").string();
  std::ofstream(truncated, std::ios::binary) << bytes.substr(0, bytes.size() - 3);
  CHECK_THROWS_WITH_AS(reidnet::read_npy(truncated), doctest::Contains("needs 48 bytes of data"),
                       reidnet::InputError);
  auto more = bytes;
  more.replace(more.find("(3, 4)"), 6, "(9, 4)");
  const auto claims = (scratch.path / "claims.npy").string();
  std::ofstream(claims, std::ios::binary) << more;
  CHECK_THROWS_WITH_AS(reidnet::read_npy(claims), doctest::Contains("needs 144 bytes of data; the file holds 48"),
                       reidnet::InputError);
  const auto text = (scratch.path / "text.npy").string();
  std::ofstream(text) << "frame,id\n";
  CHECK_THROWS_WITH_AS(reidnet::read_npy(text), doctest::Contains("no NumPy magic"), reidnet::InputError);
  CHECK_THROWS_AS(reidnet::read_npy((scratch.path / "missing.npy").string()), reidnet::InputError);
}

TEST_CASE("write_npy writes what numpy.load reads, atomically") {
  reidnet::test::TemporaryFolder scratch("reidnet_npy");
  const auto path = (scratch.path / "rows.npy").string();
  const auto matrix = torch::arange(7 * 11, torch::kFloat32).view({7, 11}) / 8;
  reidnet::write_npy(path, matrix);
  CHECK(torch::equal(reidnet::read_npy(path), matrix));
  const auto check = reidnet::test::run_python_capturing("embed_npy_check.py", path + " 7 11");
  CHECK_MESSAGE(check.status == 0, check.output);
  // Only the file: no temporary left beside it.
  CHECK(std::distance(std::filesystem::directory_iterator(scratch.path), std::filesystem::directory_iterator()) == 1);
  reidnet::write_npy(path, torch::zeros({0, 3}));
  CHECK(reidnet::read_npy(path).sizes() == torch::IntArrayRef({0, 3}));
  CHECK_THROWS_AS(reidnet::write_npy(path, torch::zeros({2, 2}, torch::kFloat64)), std::invalid_argument);
  CHECK_THROWS_AS(reidnet::write_npy(path, torch::zeros({2})), std::invalid_argument);
  CHECK_THROWS_AS(reidnet::write_npy((scratch.path / "no" / "x.npy").string(), matrix), std::runtime_error);
}

TEST_CASE("read_mot_sequence reads MOT16/17's 10 columns and 7, and names the line of a malformed row") {
  reidnet::test::TemporaryFolder scratch("reidnet_mot");
  const auto folder = scratch.path / "SEQ-01";
  make_sequence(folder, "2,-1,10,20,30,40,0.9,-1,-1,-1\n1,-1,1.5,2.5,3,4,0.5,-1,-1,-1\r\n\n1,-1,5,6,7,8,0.7,-1,-1,-1\n");
  const auto sequence = reidnet::read_mot_sequence(folder.string());
  CHECK(sequence.name == "SEQ-01");
  CHECK(sequence.frame_count == 3);
  REQUIRE(sequence.rows.sizes() == torch::IntArrayRef({3, 10}));
  CHECK((sequence.lines == std::vector<int64_t>{2, 4, 1}));  // by frame, stably
  REQUIRE(sequence.frames.size() == 2);
  CHECK(sequence.frames[0].frame == 1);
  CHECK(sequence.frames[0].end == 2);
  CHECK(torch::equal(sequence.boxes(sequence.frames[0]),
                     torch::tensor({1.5, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0}, torch::kFloat64).view({2, 4})));
  CHECK(sequence.image_path(2) == (folder / "img1" / "000002.jpg").string());
  write_text(folder / "det" / "det.txt", "1,-1,1,2,3,4,0.5\n3,-1,1,2,3,4,0.5\n");
  CHECK(reidnet::read_mot_sequence(folder.string()).rows.size(1) == 7);

  const auto det = (folder / "det" / "det.txt").string();
  for (const auto& [text, problem] : std::vector<std::pair<std::string, std::string>>{
           {"1,-1,1,2,3,4,0.5\n1,-1,1,x,3,4,0.5\n", "line 2: field 4 'x' is not a finite number"},
           {"1,-1,1,2,3,4\n", "line 1: 6 fields; expected at least 7"},
           {"1,-1,1,2,3,4,0.5,1,1,1,1\n", "line 1: more than 10 fields"},
           {"1.5,-1,1,2,3,4,0.5\n", "line 1: frame 1.5 is not a frame of the sequence"},
           {"1,-1,1,2,3,4,0.5\n\n4,-1,1,2,3,4,0.5\n", "line 3: frame 4 is not a frame of the sequence (integers 1 to 3"},
           {"0,-1,1,2,3,4,0.5\n", "line 1: frame 0 is not"},
           {"1,-1,1,2,-3,4,0.5\n", "line 1: negative box size"},
           {"1,-1,1,2,3,1e9,0.5\n", "line 1: box field 6 is 1000000000; beyond"},
           {"1,-1,1,2,3,nan,0.5\n", "line 1: field 6 'nan' is not a finite number"},
           {"1,-1,1,2,3,4,0.5\n1,-1,1,2,3,4,0.5,1,1,1\n", "line 2: 10 fields where the lines before have 7"}}) {
    CAPTURE(text);
    write_text(det, text);
    const auto message = refusal_of(folder.string());
    CHECK_MESSAGE(message.find(det + ", " + problem) != std::string::npos, message);
  }
  // seqinfo.ini: a declared length, and an image folder that would leave the sequence.
  write_text(det, "3,-1,1,2,3,4,0.5\n");
  write_text(folder / "seqinfo.ini", "[Sequence]\nname=SEQ-01\nimDir=img1\nseqLength=2\nimExt=.jpg\n");
  CHECK(refusal_of(folder.string()).find("frame 3 is not a frame of the sequence (integers 1 to 2") != std::string::npos);
  write_text(folder / "seqinfo.ini", "[Sequence]\nimDir=../..\n");
  CHECK(refusal_of(folder.string()).find("imDir '../..' is not a folder name") != std::string::npos);
  std::filesystem::remove(folder / "seqinfo.ini");
  std::filesystem::remove(det);
  CHECK(refusal_of(folder.string()).find("det.txt") != std::string::npos);
  CHECK(refusal_of((scratch.path / "none").string()).find("not a folder") != std::string::npos);
}

TEST_CASE("reidnet-embed writes the det.txt rows followed by the library call's embeddings") {
  reidnet::test::TemporaryFolder scratch("reidnet_embed");
  const auto& boxes = reference("boxes");
  std::string detections;
  for (int64_t frame_number = 1; frame_number <= 3; ++frame_number) {
    for (int64_t i = 0; i < boxes.size(0); ++i) {
      const auto box = boxes[i];
      if (std::isnan(box[0].item<float>())) continue;  // det.txt has no NaN; the reader refuses it
      const float w = std::max(box[2].item<float>(), 0.0f);  // nor negative sizes
      detections += fmt::format("{},-1,{},{},{},{},0.{},-1,-1,-1\n", frame_number, box[0].item<float>(),
                                box[1].item<float>(), w, box[3].item<float>(), i);
    }
  }
  const auto root = scratch.path / "benchmark";
  make_sequence(root / "SEQ-A", detections);
  make_sequence(root / "SEQ-B", "2,-1,10,20,30,40,0.9\n");
  const auto weights = fixture("embed", "osnet.pth");
  const auto out = (scratch.path / "SEQ-A.npy").string();
  const auto run = reidnet::test::run_program(
      "reidnet-embed", "--model osnet_x0_25 --weights " + weights + " --mot " + (root / "SEQ-A").string() +
                           " --out " + out + " --batch-size 5");
  REQUIRE_MESSAGE(run.status == 0, run.output);
  CHECK(run.output.find("crops/s") != std::string::npos);
  CHECK(run.output.find("box has no pixels in the frame") != std::string::npos);
  const auto rows = reidnet::read_npy(out);
  const auto sequence = reidnet::read_mot_sequence((root / "SEQ-A").string());
  REQUIRE(rows.sizes() == torch::IntArrayRef({sequence.rows.size(0), 10 + 512}));
  CHECK(torch::equal(rows.slice(1, 0, 10), sequence.rows.to(torch::kFloat32)));
  auto model = python_osnet();
  const auto fast = reidnet::optimize_for_inference(model);
  for (const auto& frame : sequence.frames) {
    const auto picture = reidnet::read_image(sequence.image_path(frame.frame));
    const auto expected = reidnet::embed_boxes(fast, model->config(), picture, sequence.boxes(frame));
    CHECK(max_difference(rows.slice(0, frame.begin, frame.end).slice(1, 10), expected.embeddings) < kProgramTolerance);
  }

  // A folder of sequences: one .npy each.
  const auto outputs = scratch.path / "features";
  const auto all = reidnet::test::run_program(
      "reidnet-embed", "--model osnet_x0_25 --weights " + weights + " --mot-root " + root.string() +
                           " --out " + outputs.string());
  REQUIRE_MESSAGE(all.status == 0, all.output);
  CHECK(max_difference(reidnet::read_npy((outputs / "SEQ-A.npy").string()), rows) < kProgramTolerance);
  CHECK(reidnet::read_npy((outputs / "SEQ-B.npy").string()).sizes() == torch::IntArrayRef({1, 7 + 512}));

  // A bad line: exit code 2, the file and line named, nothing written.
  write_text(root / "SEQ-B" / "det" / "det.txt", "2,-1,10,20,30,40,0.9\n2,-1,10,20,30,forty,0.9\n");
  const auto bad_out = (scratch.path / "bad.npy").string();
  const auto bad = reidnet::test::run_program(
      "reidnet-embed", "--model osnet_x0_25 --weights " + weights + " --mot " + (root / "SEQ-B").string() +
                           " --out " + bad_out);
  CHECK(bad.status == 2);
  CHECK_MESSAGE(bad.output.find("det.txt, line 2: field 6 'forty' is not a finite number") != std::string::npos,
                bad.output);
  CHECK(!std::filesystem::exists(bad_out));
  const auto bad_folder = scratch.path / "bad_features";
  const auto bad_root = reidnet::test::run_program(
      "reidnet-embed", "--model osnet_x0_25 --weights " + weights + " --mot-root " + root.string() +
                           " --out " + bad_folder.string());
  CHECK(bad_root.status == 2);
  CHECK(!std::filesystem::exists(bad_folder));  // refused before any output
  const auto neither = reidnet::test::run_program("reidnet-embed", "--model osnet_x0_25 --weights " + weights +
                                                                        " --out " + bad_out);
  CHECK(neither.status == 2);
}

}  // namespace reidnet_test_embed
