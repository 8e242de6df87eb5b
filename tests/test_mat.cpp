// MAT-files through matio: files that scipy.io writes as the Python baseline's test.py does
// (tests/python/mat_reference.py) read with the same arrays and evaluate to the line the
// baseline prints; files written here read in scipy (tests/python/mat_check.py) with the same
// arrays; damaged files and arrays get errors naming the file and the array.
#include "support.hpp"

#include <reidnet/checkpoint.hpp>
#include <reidnet/evaluate.hpp>
#include <reidnet/mat_file.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

using reidnet::test::fixture;

const fs::path& workspace() {
  static const fs::path root = reidnet::test::fresh_workspace("mat_workspace");
  return root;
}

reidnet::StateDict reference_arrays() { return reidnet::read_state_dict(fixture("mat", "arrays.pt")); }

std::string read_text(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string baseline_line() {
  auto line = read_text(fixture("mat", "baseline_line.txt"));
  REQUIRE(!line.empty());
  line.pop_back();  // the newline
  return line;
}

reidnet::RetrievalFeatures reference_features() {
  const auto arrays = reference_arrays();
  return {arrays["query_f"],   arrays["query_label"],   arrays["query_cam"],
          arrays["gallery_f"], arrays["gallery_label"], arrays["gallery_cam"]};
}

void check_equal(const reidnet::RetrievalFeatures& actual, const reidnet::RetrievalFeatures& expected) {
  CHECK(actual.query_f.dtype() == torch::kFloat32);
  CHECK(actual.query_label.dtype() == torch::kInt64);
  CHECK(torch::equal(actual.query_f, expected.query_f));
  CHECK(torch::equal(actual.query_label, expected.query_label));
  CHECK(torch::equal(actual.query_cam, expected.query_cam));
  CHECK(torch::equal(actual.gallery_f, expected.gallery_f));
  CHECK(torch::equal(actual.gallery_label, expected.gallery_label));
  CHECK(torch::equal(actual.gallery_cam, expected.gallery_cam));
}

}  // namespace

TEST_CASE("a pytorch_result.mat from scipy (the baseline's layout) reads with its arrays and "
          "evaluates to the baseline's line") {
  const auto expected = reference_features();
  // compressed.mat: zlib-compressed variables, labels and cameras as float64 columns.
  for (const char* name : {"pytorch_result.mat", "compressed.mat"}) {
    CAPTURE(name);
    const auto features = reidnet::read_pytorch_result(fixture("mat", name));
    check_equal(features, expected);
    const auto result = reidnet::evaluate(features.query_f, features.query_label, features.query_cam,
                                          features.gallery_f, features.gallery_label,
                                          features.gallery_cam);
    CHECK(reidnet::format_baseline_line(result) == baseline_line());
  }
  const auto arrays = reference_arrays();
  const auto multi = reidnet::read_multi_query(fixture("mat", "multi_query.mat"));
  CHECK(torch::equal(multi.mquery_f, arrays["mquery_f"]));
  CHECK(torch::equal(multi.mquery_label, arrays["mquery_label"]));
  CHECK(torch::equal(multi.mquery_cam, arrays["mquery_cam"]));

  SUBCASE("reidnet-test --from-mat prints the same line") {
    const auto run = reidnet::test::run_program(
        "reidnet-test", "--from-mat " + fixture("mat", "pytorch_result.mat") + " --threads 1");
    INFO(run.output);
    REQUIRE(run.status == 0);
    CHECK(run.output.find(baseline_line()) != std::string::npos);
    const auto mixed = reidnet::test::run_program(
        "reidnet-test", "--from-mat " + fixture("mat", "pytorch_result.mat") + " --model-dir .");
    CHECK(mixed.status == 2);
    CHECK(mixed.output.find("--model-dir cannot be combined with --from-mat") != std::string::npos);
  }
}

TEST_CASE("MAT-files written here read in scipy with the same arrays") {
  const auto arrays = reference_arrays();
  const auto features = reference_features();
  const auto mat = workspace() / "pytorch_result.mat";
  reidnet::write_pytorch_result(mat.string(), features);
  check_equal(reidnet::read_pytorch_result(mat.string()), features);
  reidnet::StateDict six;
  for (const char* name : {"gallery_f", "gallery_label", "gallery_cam", "query_f", "query_label", "query_cam"}) {
    six.insert(name, arrays[name]);
  }
  reidnet::save_tensors(six, (workspace() / "six.pt").string());
  const auto check = reidnet::test::run_python_capturing(
      "mat_check.py", mat.string() + " --arrays " + (workspace() / "six.pt").string() + " --protocol");
  INFO(check.output);
  CHECK(check.status == 0);
  CHECK(check.output.find(baseline_line()) != std::string::npos);

  const auto multi_path = workspace() / "multi_query.mat";
  reidnet::write_multi_query(multi_path.string(),
                             {arrays["mquery_f"], arrays["mquery_label"], arrays["mquery_cam"]});
  reidnet::StateDict three;
  for (const char* name : {"mquery_f", "mquery_label", "mquery_cam"}) three.insert(name, arrays[name]);
  reidnet::save_tensors(three, (workspace() / "three.pt").string());
  CHECK(reidnet::test::run_python(
            "mat_check.py", multi_path.string() + " --arrays " + (workspace() / "three.pt").string()) == 0);

  SUBCASE("other dtypes and shapes round-trip, 1-D tensors as rows") {
    torch::manual_seed(5);
    reidnet::MatArrays various;
    various.insert("doubles", torch::randn({3, 5}, torch::kFloat64));
    various.insert("ints", torch::arange(7, torch::kInt32) - 3);
    various.insert("bytes", torch::tensor({{1, 2}, {250, 4}}, torch::kUInt8));
    various.insert("none", torch::zeros({0, 4}));
    const auto path = workspace() / "various.mat";
    reidnet::write_mat(path.string(), various);
    const auto back = reidnet::read_mat(path.string(), {"doubles", "ints", "bytes", "none"});
    CHECK(torch::equal(back["doubles"], various["doubles"]));
    CHECK(torch::equal(back["ints"], various["ints"].unsqueeze(0)));
    CHECK(torch::equal(back["bytes"], various["bytes"]));
    CHECK(back["none"].sizes() == torch::IntArrayRef{0, 4});
    reidnet::save_tensors(various, (workspace() / "various.pt").string());
    CHECK(reidnet::test::run_python(
              "mat_check.py", path.string() + " --arrays " + (workspace() / "various.pt").string()) == 0);
  }
  // Written through a temporary sibling: nothing else is left in the folder.
  for (const auto& entry : fs::directory_iterator(workspace())) {
    CHECK(entry.path().string().find(".tmp") == std::string::npos);
  }
}

TEST_CASE("bad MAT-files and arrays get errors naming the file and the array") {
  const auto good = read_text(fixture("mat", "pytorch_result.mat"));
  const auto path = [](const char* name) { return (workspace() / name).string(); };
  CHECK_THROWS_WITH(reidnet::read_pytorch_result(workspace().string()),
                    doctest::Contains("not a readable file"));
  CHECK_THROWS_WITH(reidnet::read_pytorch_result(path("absent.mat")), doctest::Contains("absent.mat"));
  write_bytes(path("text.mat"), "query_f = [1 2 3]\n");
  CHECK_THROWS_WITH(reidnet::read_pytorch_result(path("text.mat")), doctest::Contains("text.mat"));
  write_bytes(path("truncated.mat"), good.substr(0, good.size() / 2));
  CHECK_THROWS_WITH(reidnet::read_pytorch_result(path("truncated.mat")), doctest::Contains("truncated.mat"));

  SUBCASE("a size past what the file holds is refused before its data is read") {
    // gallery_f is 300 x 32: its dimensions, as two little-endian int32, follow a miINT32 tag.
    auto huge = good;
    const std::string dims("\x2c\x01\x00\x00\x20\x00\x00\x00", 8);
    const auto at = huge.find(dims);
    REQUIRE(at != std::string::npos);
    huge.replace(at, 8, std::string("\xff\xff\xff\x3f\xff\xff\xff\x3f", 8));
    write_bytes(path("huge.mat"), huge);
    CHECK_THROWS_WITH(reidnet::read_pytorch_result(path("huge.mat")),
                      doctest::Contains("huge.mat: array 'gallery_f'"));
  }
  SUBCASE("arrays of the wrong kind") {
    auto arrays = reference_features();
    const auto write = [&](const char* name, const torch::Tensor& label, bool gallery_cameras = true) {
      reidnet::MatArrays mat;
      mat.insert("query_f", arrays.query_f);
      mat.insert("query_label", label);
      mat.insert("query_cam", arrays.query_cam);
      mat.insert("gallery_f", arrays.gallery_f);
      mat.insert("gallery_label", arrays.gallery_label);
      if (gallery_cameras) mat.insert("gallery_cam", arrays.gallery_cam);
      reidnet::write_mat(path(name), mat);
    };
    write("no_camera.mat", arrays.query_label, /*gallery_cameras=*/false);
    CHECK_THROWS_WITH(reidnet::read_pytorch_result(path("no_camera.mat")),
                      doctest::Contains("no_camera.mat: array 'gallery_cam': not in the file, which "
                                        "holds 'query_f', 'query_label', 'query_cam', 'gallery_f', "
                                        "'gallery_label'"));
    write("matrix.mat", arrays.query_label.reshape({2, -1}));
    CHECK_THROWS_WITH(reidnet::read_pytorch_result(path("matrix.mat")),
                      doctest::Contains("array 'query_label' is 2 x 20; expected one row or column"));
    write("fraction.mat", arrays.query_label.to(torch::kFloat64) + 0.5);
    CHECK_THROWS_WITH(reidnet::read_pytorch_result(path("fraction.mat")),
                      doctest::Contains("array 'query_label' holds values that are not whole numbers"));
    write("short.mat", arrays.query_label.slice(0, 0, 39));
    CHECK_THROWS_WITH(reidnet::read_pytorch_result(path("short.mat")),
                      doctest::Contains("query_f is 40 x 32 of Float and query_cam has 40 values for 39 labels"));
  }
  SUBCASE("what cannot be written is refused, and nothing is left behind") {
    reidnet::MatArrays cube;
    cube.insert("cube", torch::zeros({2, 2, 2}));
    CHECK_THROWS_WITH(reidnet::write_mat(path("cube.mat"), cube),
                      doctest::Contains("array 'cube' must be 1-D or 2-D"));
    reidnet::MatArrays flags;
    flags.insert("flags", torch::zeros({3}, torch::kBool));
    CHECK_THROWS_WITH(reidnet::write_mat(path("flags.mat"), flags), doctest::Contains("dtype Bool"));
    CHECK_FALSE(fs::exists(path("cube.mat")));
    CHECK_FALSE(fs::exists(path("flags.mat")));
    CHECK_THROWS_WITH(reidnet::write_mat(path("missing/x.mat"), cube), doctest::Contains("missing/x.mat"));
  }
}
