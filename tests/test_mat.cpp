// MAT-files through matio: files that scipy.io writes as the Python baseline's test.py does
// (tests/python/mat_reference.py) read with the same arrays and evaluate to the line the
// baseline prints; files written here read in scipy (tests/python/mat_check.py) with the same
// arrays; damaged files and arrays get errors naming the file and the array.
#include "support.hpp"

#include <reidnet/io/checkpoint.hpp>
#include <reidnet/evaluation/evaluate.hpp>
#include <reidnet/io/mat_file.hpp>

#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

// A namespace per topic: the topics build as one unit (CMake unity build) without their
// helpers meeting.
namespace reidnet_test_mat {

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


// Crafted MAT-files, built byte by byte: a level-5 header, then data elements (an 8-byte tag,
// type and byte count, and the bytes padded to 8).
std::string u32(uint32_t value) { return std::string(reinterpret_cast<const char*>(&value), 4); }

std::string sub_element(uint32_t type, const std::string& bytes) {
  auto padded = bytes;
  padded.resize((bytes.size() + 7) / 8 * 8, '\0');
  return u32(type) + u32(static_cast<uint32_t>(bytes.size())) + padded;
}

/// An array's flags, dimensions and name: the start of a miMATRIX's bytes.
std::string array_header(uint32_t mat_class, const std::vector<int32_t>& dims, const std::string& name) {
  std::string sizes;
  for (const auto size : dims) sizes += u32(static_cast<uint32_t>(size));
  return sub_element(6, u32(mat_class) + u32(0)) + sub_element(5, sizes) + sub_element(1, name);
}

constexpr uint32_t kCell = 1, kDouble = 6;

/// A miCOMPRESSED element whose zlib stream inflates to the bytes that `produce` hands to its
/// sink, piece by piece (so that hundreds of megabytes never sit in memory at once).
std::string compressed_element(const std::function<void(const std::function<void(const std::string&)>&)>& produce) {
  z_stream stream{};
  REQUIRE(deflateInit(&stream, 6) == Z_OK);
  std::string out;
  std::vector<unsigned char> buffer(1 << 16);
  const auto pump = [&](const std::string& bytes, int flush) {
    stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
    stream.avail_in = static_cast<uInt>(bytes.size());
    int status;
    do {
      stream.next_out = buffer.data();
      stream.avail_out = static_cast<uInt>(buffer.size());
      status = deflate(&stream, flush);
      out.append(reinterpret_cast<const char*>(buffer.data()), buffer.size() - stream.avail_out);
    } while (stream.avail_out == 0 || (flush == Z_FINISH && status != Z_STREAM_END));
  };
  produce([&](const std::string& bytes) { pump(bytes, Z_NO_FLUSH); });
  pump("", Z_FINISH);
  deflateEnd(&stream);
  return u32(15) + u32(static_cast<uint32_t>(out.size())) + out;
}

/// `count` zero bytes, handed to `sink` a mebibyte at a time.
void zeros(const std::function<void(const std::string&)>& sink, uint64_t count) {
  const std::string chunk(1 << 20, '\0');
  for (; count >= chunk.size(); count -= chunk.size()) sink(chunk);
  sink(std::string(static_cast<size_t>(count), '\0'));
}

/// A compressed cell array named `name` of `count` empty cells (each a 0 x 0 double).
std::string cells_element(const std::string& name, uint32_t count) {
  const std::string empty = u32(14) + u32(40) + array_header(kDouble, {0, 0}, "");
  const auto header = array_header(kCell, {1, static_cast<int32_t>(count)}, name);
  return compressed_element([&](const auto& sink) {
    sink(u32(14) + u32(static_cast<uint32_t>(header.size() + empty.size() * count)) + header);
    std::string batch;
    for (int i = 0; i < 4096; ++i) batch += empty;
    uint32_t left = count;
    for (; left >= 4096; left -= 4096) sink(batch);
    for (; left > 0; --left) sink(empty);
  });
}

/// A compressed cell named `name` holding a cell holding a cell ... `depth` levels deep.
std::string nested_cell_element(const std::string& name, int depth) {
  const auto outer = array_header(kCell, {1, 1}, name);
  const auto inner = array_header(kCell, {1, 1}, "");
  const auto innermost = array_header(kCell, {0, 0}, "");
  return compressed_element([&](const auto& sink) {
    // Level k's byte count: its own header and the tags and bytes of the levels inside it.
    const uint64_t inner_level = 8 + inner.size();
    uint64_t below = 8 + innermost.size() + inner_level * static_cast<uint64_t>(depth - 2);
    sink(u32(14) + u32(static_cast<uint32_t>(outer.size() + below)) + outer);
    std::string batch;
    for (int level = 1; level < depth - 1; ++level) {
      below -= inner_level;
      batch += u32(14) + u32(static_cast<uint32_t>(inner.size() + below)) + inner;
      if (batch.size() >= (1 << 20)) {
        sink(batch);
        batch.clear();
      }
    }
    sink(batch + u32(14) + u32(static_cast<uint32_t>(innermost.size())) + innermost);
  });
}

/// read_pytorch_result(path) in a forked child: exit 0 with the error's message if it threw
/// InputError, 1 if it read the file (message: the query count), 2 on another exception.
reidnet::test::ChildRun read_in_child(const std::string& path) {
  return reidnet::test::run_in_child([&](std::string& message) {
    try {
      message = std::to_string(reidnet::read_pytorch_result(path).query_label.numel());
      return 1;
    } catch (const reidnet::InputError& error) {
      message = error.what();
      return 0;
    } catch (const std::exception& error) {
      message = error.what();
      return 2;
    }
  });
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

namespace {

/// The reference arrays as a MAT-file, without those named in `left_out`.
std::string reference_file_without(const std::vector<std::string>& left_out, const std::string& name) {
  const auto arrays = reference_arrays();
  reidnet::MatArrays kept;
  for (const char* array : {"query_f", "query_label", "query_cam", "gallery_f", "gallery_label", "gallery_cam"}) {
    if (std::find(left_out.begin(), left_out.end(), array) == left_out.end()) kept.insert(array, arrays[array]);
  }
  const auto path = (workspace() / name).string();
  reidnet::write_mat(path, kept);
  return read_text(path);
}

/// `file` with `element` inserted after its 128-byte header, written as `name`; its path.
std::string with_element(const std::string& file, const std::string& element, const std::string& name) {
  const auto path = (workspace() / name).string();
  write_bytes(path, file.substr(0, 128) + element + file.substr(128));
  return path;
}

}  // namespace

TEST_CASE("crafted MAT-files are refused from their headers, naming the file and the array, "
          "within bounded memory and time") {
  const auto idle = reidnet::test::idle_child_rss_kb();
  const auto no_query_f = reference_file_without({"query_f"}, "no_query_f.mat");
  // Each case: the file, the array the error must name, and words it must contain.
  const auto refused = [&](const std::string& path, const std::string& array, const std::string& words) {
    const auto run = read_in_child(path);
    INFO(run.message);
    MESSAGE(fs::path(path).filename().string(), " (", fs::file_size(path), " bytes): refused in ",
            run.seconds, " s with a peak RSS ", run.peak_rss_kb - idle, " KiB above an idle child");
    CHECK(run.code == 0);  // InputError: no other exception, no signal
    CHECK(run.message.find(path) != std::string::npos);
    CHECK(run.message.find(array) != std::string::npos);
    CHECK(run.message.find(words) != std::string::npos);
    CHECK(run.peak_rss_kb - idle < 64 * 1024);
  };

  SUBCASE("a double array stored as compressed bytes, whose rows disagree with its labels") {
    // 2^18 x 800 zero bytes: 200 MiB inflated from about 200 KB, 1.6 GB as doubles.
    const int32_t rows = 1 << 18, columns = 800;
    const uint64_t values = uint64_t{rows} * columns;
    const auto header = array_header(kDouble, {rows, columns}, "query_f");
    const auto bomb = compressed_element([&](const auto& sink) {
      sink(u32(14) + u32(static_cast<uint32_t>(header.size() + 8 + values)) + header + u32(2) +
           u32(static_cast<uint32_t>(values)));
      zeros(sink, values);
    });
    refused(with_element(no_query_f, bomb, "bytes_as_doubles.mat"), "query_f is 262144 x 800 of Double",
            "has 40 values for 40 labels");
  }
  SUBCASE("a compressed array whose dimensions claim more than its data holds") {
    const auto header = array_header(kDouble, {40, 1 << 24}, "query_f");
    const auto element = compressed_element([&](const auto& sink) {
      sink(u32(14) + u32(static_cast<uint32_t>(header.size() + 8 + 5120)) + header + u32(9) + u32(5120));
      zeros(sink, 5120);
    });
    refused(with_element(no_query_f, element, "claims_more.mat"), "array 'query_f'",
            "its header says 40 x 16777216 values but its data holds 5120 bytes");
  }
  SUBCASE("a compressed array whose stream holds less than its header says") {
    const auto header = array_header(7, {40, 32}, "query_f");  // single
    const auto element = compressed_element([&](const auto& sink) {
      sink(u32(14) + u32(static_cast<uint32_t>(header.size() + 8 + 5120)) + header + u32(7) + u32(5120));
      zeros(sink, 100);
    });
    refused(with_element(no_query_f, element, "short_stream.mat"), "array 'query_f'",
            "its compressed data inflates to");
  }
  SUBCASE("a feature array that is a cell nested 200,000 deep") {
    const auto deep = nested_cell_element("gallery_f", 200000);
    refused(with_element(reference_file_without({"gallery_f"}, "no_gallery_f.mat"), deep, "deep_gallery_f.mat"),
            "array 'gallery_f'", "is a cell array");
  }
  SUBCASE("features with no columns") {
    const auto arrays = reference_arrays();
    reidnet::MatArrays mat;
    mat.insert("query_f", torch::zeros({40, 0}));
    mat.insert("query_label", arrays["query_label"]);
    mat.insert("query_cam", arrays["query_cam"]);
    mat.insert("gallery_f", torch::zeros({300, 0}));
    mat.insert("gallery_label", arrays["gallery_label"]);
    mat.insert("gallery_cam", arrays["gallery_cam"]);
    const auto path = (workspace() / "no_columns.mat").string();
    reidnet::write_mat(path, mat);
    refused(path, "array 'query_f'", "is 40 x 0; features need at least one column");
  }
}

TEST_CASE("variables that are not needed are skipped unparsed: a cell of 2 million cells and a "
          "cell nested 200,000 deep before the arrays read in seconds and bounded memory") {
  const auto good = read_text(fixture("mat", "pytorch_result.mat"));
  const auto idle = reidnet::test::idle_child_rss_kb();
  const auto expected = reference_features();
  for (const auto& [name, element] : std::vector<std::pair<std::string, std::string>>{
           {"many_cells.mat", cells_element("junk", 2000000)},
           {"deep_cell.mat", nested_cell_element("deep", 200000)}}) {
    CAPTURE(name);
    const auto path = with_element(good, element, name);
    const auto run = read_in_child(path);
    INFO(run.message);
    MESSAGE(name, " (", fs::file_size(path), " bytes): read in ", run.seconds,
            " s with a peak RSS ", run.peak_rss_kb - idle, " KiB above an idle child");
    CHECK(run.code == 1);
    CHECK(run.message == "40");
    CHECK(run.seconds < 10);
    CHECK(run.peak_rss_kb - idle < 64 * 1024);
    check_equal(reidnet::read_pytorch_result(path), expected);
  }
}

TEST_CASE("reidnet-index refuses bad features files with exit code 2, naming the file and the "
          "tensor") {
  const auto features = reference_features();
  const auto base = [&] {
    reidnet::StateDict tensors;
    tensors.insert("qf", features.query_f);
    tensors.insert("ql", features.query_label);
    tensors.insert("qc", features.query_cam);
    tensors.insert("gf", features.gallery_f);
    tensors.insert("gl", features.gallery_label);
    tensors.insert("gc", features.gallery_cam);
    return tensors;
  };
  auto nan = features.query_f.clone();
  nan.index_put_({3, 4}, std::numeric_limits<float>::quiet_NaN());
  struct Case {
    std::string name, key;
    torch::Tensor value;  // undefined: the key is left out
  };
  const std::vector<Case> cases{
      {"qf_1d.pth", "qf", features.query_f.reshape({-1})},
      {"qf_int.pth", "qf", features.query_f.to(torch::kInt32)},
      {"qf_nan.pth", "qf", nan},
      {"gf_columns.pth", "gf", features.gallery_f.slice(1, 0, 16).contiguous()},
      {"gf_no_columns.pth", "gf", torch::zeros({300, 0})},
      {"gl_short.pth", "gl", features.gallery_label.slice(0, 0, 299).contiguous()},
      {"gc_fraction.pth", "gc", features.gallery_cam.to(torch::kFloat64) + 0.5},
      {"ql_matrix.pth", "ql", features.query_label.reshape({2, -1}).contiguous()},
      {"qc_missing.pth", "qc", torch::Tensor()},
  };
  reidnet::test::TemporaryFolder folder("bad_features");
  for (const auto& bad : cases) {
    CAPTURE(bad.name);
    auto tensors = base();
    reidnet::StateDict changed;
    for (const auto& item : tensors) {
      if (item.key() != bad.key) changed.insert(item.key(), item.value());
      else if (bad.value.defined()) changed.insert(item.key(), bad.value);
    }
    const auto path = (folder.path / bad.name).string();
    reidnet::save_tensors(changed, path);
    const auto out = (folder.path / "x.faiss").string();
    const auto run = reidnet::test::run_program("reidnet-index", "build --features " + path + " --out " + out);
    INFO(run.output);
    CHECK(run.status == 2);
    CHECK(run.output.find(path) != std::string::npos);
    CHECK(run.output.find("'" + bad.key + "'") != std::string::npos);
    CHECK(run.output.find("Traceback") == std::string::npos);
    CHECK_FALSE(fs::exists(out));
  }
  // A pytorch_result.mat whose query_f has no columns, and one whose cell hides in gallery_f.
  const auto arrays = reference_arrays();
  reidnet::MatArrays mat;
  mat.insert("query_f", torch::zeros({40, 0}));
  for (const char* name : {"query_label", "query_cam", "gallery_f", "gallery_label", "gallery_cam"}) {
    mat.insert(name, arrays[name]);
  }
  const auto no_columns = (folder.path / "no_columns.mat").string();
  reidnet::write_mat(no_columns, mat);
  const auto deep = with_element(reference_file_without({"gallery_f"}, "no_gallery_f.mat"),
                                 nested_cell_element("gallery_f", 1000), "cell_gallery_f.mat");
  for (const auto& [path, array] : std::vector<std::pair<std::string, std::string>>{
           {no_columns, "query_f"}, {deep, "gallery_f"}}) {
    CAPTURE(path);
    const auto run = reidnet::test::run_program(
        "reidnet-index", "build --features " + path + " --out " + (folder.path / "y.faiss").string());
    INFO(run.output);
    CHECK(run.status == 2);
    CHECK(run.output.find(path) != std::string::npos);
    CHECK(run.output.find(array) != std::string::npos);
  }
}

}  // namespace reidnet_test_mat
