// Pixel parity of reidnet's image reading and transforms with PIL and torchvision on real
// photographs (tests/python/image_reference.py): decoding identical, Resize within one grey
// level (in practice identical), the eval transform within 1/255 before normalisation,
// ColorJitter's adjustments identical; and clear errors for broken files.
#include "support.hpp"

#include <reidnet/data.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <random>

// A namespace per topic: the topics build as one unit (CMake unity build) without their
// helpers meeting.
namespace reidnet_test_image {

using reidnet::test::fixture;

namespace {

// Kept for the whole run: loops like `for (x : manifest()["files"])` need it to outlive them.
const nlohmann::json& manifest() {
  static const nlohmann::json parsed = [] {
    std::ifstream file(fixture("image", "manifest.json"));
    REQUIRE_MESSAGE(file.good(), "missing manifest.json: run ctest so the Python fixture runs first");
    return nlohmann::json::parse(file);
  }();
  return parsed;
}

const std::map<std::string, torch::Tensor>& references() {
  static const auto tensors = reidnet::test::load_tensor_dict(fixture("image", "reference.pt"));
  return tensors;
}

const torch::Tensor& reference(const std::string& key) {
  const auto found = references().find(key);
  REQUIRE_MESSAGE(found != references().end(), "reference.pt lacks " << key);
  return found->second;
}

std::string picture(const std::string& file) { return fixture("image", "pictures/" + file); }

int64_t max_level_difference(const torch::Tensor& a, const torch::Tensor& b) {
  REQUIRE(a.sizes() == b.sizes());
  if (torch::equal(a, b)) return 0;
  return (a.to(torch::kInt32) - b.to(torch::kInt32)).abs().max().item<int64_t>();
}

}  // namespace

TEST_CASE("read_image decodes JPEG and PNG (RGB, grey, alpha, palette, 16-bit) exactly as PIL") {
  for (const auto& file : manifest()["files"]) {
    CAPTURE(file.get<std::string>());
    const auto image = reidnet::read_image(picture(file));
    const auto& expected = reference("decoded/" + file.get<std::string>());
    CHECK(image.sizes() == expected.sizes());
    CHECK((image.scalar_type() == torch::kUInt8));
    CHECK(max_level_difference(image, expected) == 0);
  }
}

TEST_CASE("resize equals torchvision's bicubic and bilinear Resize on PIL, up and down") {
  const auto& m = manifest();
  for (const auto* name : {"bicubic", "bilinear"}) {
    CAPTURE(name);
    const auto interpolation = reidnet::interpolation_from_name(name);
    int64_t worst = 0, differing = 0;
    for (const auto& file : m["resize_files"]) {
      const auto image = reidnet::read_image(picture(file));
      for (const auto& size : m["resize_sizes"]) {
        const int64_t h = size[0], w = size[1];
        CAPTURE(file.get<std::string>());
        CAPTURE(h);
        CAPTURE(w);
        const auto& expected = reference(std::string("resized/") + name + "/" + file.get<std::string>() +
                                         "/" + std::to_string(h) + "x" + std::to_string(w));
        const auto resized = reidnet::resize(image, h, w, interpolation);
        const auto difference = max_level_difference(resized, expected);
        CHECK(difference <= 1);  // at most one level; PIL's integer arithmetic gives 0
        worst = std::max(worst, difference);
        if (difference != 0) differing += (resized != expected).sum().item<int64_t>();
      }
    }
    MESSAGE(name << ": worst difference from PIL: " << worst << " grey levels, " << differing
                 << " values differ");
    CHECK(worst == 0);
  }
  CHECK_THROWS_WITH_AS(reidnet::interpolation_from_name("nearest"),
                       "unknown interpolation 'nearest'; the data pipeline resizes as PIL's bicubic or "
                       "bilinear", std::invalid_argument);
}

TEST_CASE("eval_transform equals torchvision's Resize+ToTensor+Normalize within 1/255") {
  const std::array<float, 3> stds = reidnet::kImageNetStd;
  const auto std_tensor = torch::tensor({stds[0], stds[1], stds[2]}).view({3, 1, 1});
  for (const auto& file : manifest()["resize_files"]) {
    CAPTURE(file.get<std::string>());
    const auto output = reidnet::eval_transform(reidnet::read_image(picture(file)), 256, 128);
    const auto& expected = reference("eval/" + file.get<std::string>());
    REQUIRE(output.sizes() == expected.sizes());
    // Undo the normalisation's scale: the difference in [0, 1] pixel units.
    const double difference = ((output - expected) * std_tensor).abs().max().item<double>();
    CHECK(difference <= 1.0 / 255 + 1e-6);
    CHECK(difference <= 1e-6);  // identical pixels, identical float arithmetic
  }
}

TEST_CASE("a model config's normalisation drives eval_transform: 0.5/0.5 as torchvision's, "
          "fast-reid's 0..255 pixels as fast-reid's") {
  // TransReID's and CLIP-ReID's mean = std = 0.5 on 0..1, and fast-reid's ModelConfig: mean
  // and std on 0..255 (max_pixel_value 1), as its checkpoints' pixel_mean and pixel_std.
  const auto half = reidnet::normalization_of(
      reidnet::ModelConfig().mean({0.5, 0.5, 0.5}).std({0.5, 0.5, 0.5}));
  const auto fastreid = reidnet::normalization_of(reidnet::ModelConfig()
                                                      .mean({123.675, 116.28, 103.53})
                                                      .std({58.395, 57.12, 57.375})
                                                      .max_pixel_value(1));
  for (const auto& file : manifest()["resize_files"]) {
    const auto name = file.get<std::string>();
    CAPTURE(name);
    const auto image = reidnet::read_image(picture(file));
    const auto with_half = reidnet::eval_transform(image, 256, 128, half);
    const auto with_fastreid = reidnet::eval_transform(image, 256, 128, fastreid);
    // Identical pixels and identical float32 arithmetic: identical values.
    CHECK(torch::equal(with_half, reference("eval_half/" + name)));
    CHECK(torch::equal(with_fastreid, reference("eval_fastreid/" + name)));
    // The three normalisations really differ: the checks above can fail.
    CHECK_FALSE(torch::allclose(with_half, reference("eval/" + name)));
  }
  // The loader's transform applies the same.
  reidnet::Rng rng(0);
  const auto first = picture(manifest()["resize_files"][0]);
  CHECK(torch::equal(reidnet::make_eval_transform(256, 128, half)(reidnet::read_image(first), rng),
                     reidnet::eval_transform(reidnet::read_image(first), 256, 128, half)));
  // What the pipeline cannot give is refused, naming it.
  CHECK(reidnet::interpolation_of(reidnet::ModelConfig().interpolation("bilinear")) ==
        reidnet::Interpolation::kBilinear);
  CHECK_THROWS_WITH_AS(reidnet::interpolation_of(reidnet::ModelConfig().interpolation("area")),
                       doctest::Contains("the model's config asks for unknown interpolation 'area'"),
                       std::invalid_argument);
  // The loader's transform resizes with the filter it is given.
  CHECK(torch::equal(
      reidnet::make_eval_transform(256, 128, half, reidnet::Interpolation::kBilinear)(reidnet::read_image(first), rng),
      reidnet::to_normalized_tensor(reidnet::resize(reidnet::read_image(first), 256, 128,
                                                    reidnet::Interpolation::kBilinear), half)));
  CHECK_THROWS_WITH_AS(reidnet::normalization_of(reidnet::ModelConfig().mean({0.5})),
                       doctest::Contains("1 mean values"), std::invalid_argument);
  CHECK_THROWS_AS(reidnet::make_eval_transform(8, 8, reidnet::Normalization().std({1, 0, 1})),
                  std::invalid_argument);
}

TEST_CASE("pad, crop and horizontal_flip equal torchvision's Pad, crop and hflip on PIL") {
  for (const auto& file : manifest()["resize_files"]) {
    CAPTURE(file.get<std::string>());
    const auto resized = reidnet::resize(reidnet::read_image(picture(file)), 256, 128);
    const auto shifted =
        reidnet::horizontal_flip(reidnet::crop(reidnet::pad(resized, 10), 3, 17, 256, 128));
    CHECK(max_level_difference(shifted, reference("pad_crop_flip/" + file.get<std::string>())) == 0);
  }
}

TEST_CASE("brightness, contrast and saturation equal torchvision's PIL adjustments") {
  const auto& m = manifest();
  for (const auto& file : m["colour_files"]) {
    const auto image = reidnet::read_image(picture(file));
    for (const auto& factor_json : m["factors"]) {
      const double factor = factor_json;
      std::ostringstream factor_text;
      factor_text << factor;  // Python's str() of these factors
      const std::string suffix = file.get<std::string>() + "/" + factor_text.str();
      CAPTURE(suffix);
      CHECK(max_level_difference(reidnet::adjust_brightness(image, factor),
                                 reference("brightness/" + suffix)) == 0);
      CHECK(max_level_difference(reidnet::adjust_contrast(image, factor),
                                 reference("contrast/" + suffix)) == 0);
      CHECK(max_level_difference(reidnet::adjust_saturation(image, factor),
                                 reference("saturation/" + suffix)) == 0);
    }
  }
}

TEST_CASE("broken, missing and non-image files raise errors naming the file") {
  std::vector<std::string> files = manifest()["broken"];
  files.push_back("does_not_exist.jpg");
  files.push_back("");  // the pictures folder itself
  for (const auto& file : files) {
    CAPTURE(file);
    const auto path = picture(file);
    try {
      reidnet::read_image(path);
      FAIL("read_image accepted " << path);
    } catch (const std::runtime_error& error) {
      CHECK(std::string(error.what()).find(path) != std::string::npos);
    }
  }
}

TEST_CASE("write_jpeg and write_png round-trip through read_image") {
  const auto directory = reidnet::test::unique_temporary_path("reidnet_test_image_write");
  std::filesystem::create_directories(directory);
  const auto image = reidnet::read_image(picture("chelsea_rgb.png"));
  const auto png = (directory / "copy.png").string();
  reidnet::write_png(png, image);
  CHECK(max_level_difference(reidnet::read_image(png), image) == 0);
  const auto jpeg = (directory / "copy.jpg").string();
  reidnet::write_jpeg(jpeg, image, 95);
  const auto decoded = reidnet::read_image(jpeg);
  CHECK(decoded.sizes() == image.sizes());
  CHECK((decoded.to(torch::kFloat) - image.to(torch::kFloat)).abs().mean().item<double>() < 4.0);
  CHECK_THROWS_WITH_AS(reidnet::write_png((directory / "no_such_dir" / "x.png").string(), image),
                       doctest::Contains("no_such_dir"), std::runtime_error);
  CHECK_THROWS_AS(reidnet::write_jpeg(jpeg, torch::zeros({4, 4}, torch::kUInt8)), std::runtime_error);
  std::filesystem::remove_all(directory);
}

TEST_CASE("transforms reject malformed tensors and sizes with clear errors") {
  CHECK_THROWS_WITH_AS(reidnet::resize(torch::zeros({4, 4, 3}, torch::kFloat), 8, 8),
                       doctest::Contains("uint8"), std::runtime_error);
  CHECK_THROWS_WITH_AS(reidnet::resize(torch::zeros({4, 4, 3}, torch::kUInt8), 0, 8),
                       doctest::Contains("positive"), std::runtime_error);
  CHECK_THROWS_AS(reidnet::eval_transform(torch::zeros({4, 4}, torch::kUInt8), 8, 8),
                  std::runtime_error);
}

// Run twice by ctest: within the image topic, where the real libraries answer, and as
// image_libraries.interposed, with a library preloaded that defines their entry points
// (REIDNET_TEST_INTERPOSER names it); then every image call must refuse, naming it.
TEST_CASE("image libraries: reidnet's image calls reach libjpeg-turbo and libpng, or refuse") {
  reidnet::test::TemporaryFolder folder("reidnet_test_image_libraries");
  const auto jpeg = (folder.path / "grey.jpg").string();
  const auto png = (folder.path / "grey.png").string();
  const auto image = torch::full({8, 8, 3}, 128, torch::kUInt8);
  const char* interposer = std::getenv("REIDNET_TEST_INTERPOSER");
  if (interposer == nullptr) {
    CHECK_NOTHROW(reidnet::detail::check_image_libraries());
    reidnet::write_jpeg(jpeg, image);
    reidnet::write_png(png, image);
    CHECK(reidnet::read_image(jpeg).sizes() == image.sizes());
    CHECK(reidnet::read_image(png).sizes() == image.sizes());
    return;
  }
  for (const auto& call : std::vector<std::function<void()>>{
           [&] { reidnet::write_jpeg(jpeg, image); }, [&] { reidnet::write_png(png, image); }}) {
    for (const char* named : {interposer, "tjInitDecompress", "png_create_read_struct"}) {
      CHECK_THROWS_WITH_AS(call(), doctest::Contains(named), std::runtime_error);
    }
  }
  CHECK_FALSE(std::filesystem::exists(jpeg));
  CHECK_FALSE(std::filesystem::exists(png));
}

}  // namespace reidnet_test_image
