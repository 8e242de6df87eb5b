// Hostile input: pictures whose headers claim a huge size (decompression bombs), files that
// are not regular (FIFOs, /dev/zero) as pictures or data set entries, oversized files, flags
// of reidnet-test that size the work, and CSV fields that need quoting. Whatever could hang
// or exhaust memory runs in a forked child with a watchdog alarm, whose peak memory
// (wait4's ru_maxrss) is compared with that of an idle child.
#include "support.hpp"


#include <reidnet/io/checkpoint.hpp>
#include <reidnet/io/csv.hpp>
#include <reidnet/data.hpp>
#include "toy/toy_data.hpp"
#include <reidnet/models/ft_net.hpp>
#include <reidnet/engine/run_folder.hpp>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

// A namespace per topic: the topics build as one unit (CMake unity build) without their
// helpers meeting.
namespace reidnet_test_input_limits {

namespace fs = std::filesystem;
using reidnet::test::TemporaryFolder;
using reidnet::test::ChildRun;
using reidnet::test::idle_child_rss_kb;
using reidnet::test::run_in_child;

namespace {


/// Restores the process-wide pixel limit when a test ends, passed or failed.
struct PixelLimitGuard {
  int64_t saved = reidnet::max_image_pixels();
  ~PixelLimitGuard() { reidnet::set_max_image_pixels(saved); }
};

/// read_image(path) in a child: exit 0 and the message if it refused, 1 if it decoded.
ChildRun read_image_in_child(const std::string& path) {
  return run_in_child([&](std::string& message) {
    try {
      const auto image = reidnet::read_image(path);
      message = "decoded " + c10::str(image.sizes());
      return 1;
    } catch (const std::runtime_error& error) {
      message = error.what();
      return 0;
    }
  });
}

std::vector<unsigned char> bytes_of(const fs::path& path) {
  return reidnet::detail::read_file_bytes(path.string());
}

void write_bytes(const fs::path& path, const std::vector<unsigned char>& bytes) {
  std::ofstream file(path, std::ios::binary);
  file.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(file.good());
}

void put_big_endian(std::vector<unsigned char>& bytes, size_t at, uint32_t value, int size) {
  for (int i = 0; i < size; ++i) {
    bytes[at + i] = static_cast<unsigned char>(value >> (8 * (size - 1 - i)));
  }
}

/// PNG's chunk checksum (the CRC-32 of zlib).
uint32_t png_crc(const unsigned char* data, size_t size) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) {
    crc ^= data[i];
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return crc ^ 0xFFFFFFFFu;
}

torch::Tensor small_picture(int64_t height, int64_t width) {
  return torch::randint(0, 256, {height, width, 3}, torch::TensorOptions().dtype(torch::kUInt8));
}

/// A real 16x16 JPEG whose SOF0 header then claims `width` x `height`.
fs::path lying_jpeg(const fs::path& folder, uint32_t width, uint32_t height) {
  const auto path = folder / ("claims_" + std::to_string(width) + "x" + std::to_string(height) + ".jpg");
  reidnet::write_jpeg(path.string(), small_picture(16, 16));
  auto bytes = bytes_of(path);
  for (size_t i = 2; i + 9 < bytes.size(); ++i) {
    if (bytes[i] == 0xFF && bytes[i + 1] == 0xC0) {  // SOF0: length, precision, height, width
      put_big_endian(bytes, i + 5, height, 2);
      put_big_endian(bytes, i + 7, width, 2);
      write_bytes(path, bytes);
      return path;
    }
  }
  FAIL("no SOF0 marker in the JPEG libjpeg-turbo wrote");
  return path;
}

/// A real 4x4 PNG whose IHDR then claims `width` x `height`, with a correct checksum.
fs::path lying_png(const fs::path& folder, uint32_t width, uint32_t height) {
  const auto path = folder / ("claims_" + std::to_string(width) + "x" + std::to_string(height) + ".png");
  reidnet::write_png(path.string(), small_picture(4, 4));
  auto bytes = bytes_of(path);
  // signature (8), IHDR length (4), "IHDR" (4), width (4), height (4), 5 more bytes, CRC (4)
  REQUIRE(std::string(bytes.begin() + 12, bytes.begin() + 16) == "IHDR");
  put_big_endian(bytes, 16, width, 4);
  put_big_endian(bytes, 20, height, 4);
  put_big_endian(bytes, 29, png_crc(bytes.data() + 12, 17), 4);
  write_bytes(path, bytes);
  return path;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

struct Run {
  int status;
  std::string output;
};

// Runs examples/<program> with `arguments` under a 60 s timeout; its exit status and output.
Run run_program(const std::string& program, const std::string& arguments) {
  const std::string binary = std::string(REIDNET_TEST_EXAMPLES_DIR) + "/" + program;
  REQUIRE_MESSAGE(fs::exists(binary), binary << " is missing: build with REIDNET_BUILD_EXAMPLES=ON");
  const std::string log = std::string(REIDNET_TEST_BINARY_DIR) + "/input_limits_last_run.log";
  const int raw =
      std::system(("timeout 60 " + binary + " " + arguments + " > " + log + " 2>&1").c_str());
  std::ifstream file(log);
  std::stringstream text;
  text << file.rdbuf();
  return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, text.str()};
}

/// `text` single-quoted for the shell.
std::string shell_quoted(const std::string& text) {
  std::string out = "'";
  for (const char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

/// A tiny Market-1501 toy data set: 3 queries, 14 gallery pictures.
void make_toy(const fs::path& root) {
  reidnet::toy::ToyDataOptions options;
  options.style = "blocks";
  options.ids = 2;
  options.test_ids = 3;
  options.images_per_id = 4;
  options.distractors = 1;
  options.junk = 1;
  options.height = 32;
  options.width = 16;
  reidnet::toy::create_toy_dataset(options, root.string());
}

/// An MSMT17 tree whose query list names `entry` (a path relative to test/).
void make_msmt17(const fs::path& root, const std::string& entry) {
  for (const char* name : {"train/0000/0000_000_01_0303morning_0015_0.jpg",
                           "test/0001/0001_000_02_0303noon_0015_0.jpg"}) {
    fs::create_directories((root / name).parent_path());
    reidnet::write_jpeg((root / name).string(), small_picture(16, 8));
  }
  std::ofstream(root / "list_train.txt") << "0000/0000_000_01_0303morning_0015_0.jpg 0\n";
  std::ofstream(root / "list_val.txt") << "";
  std::ofstream(root / "list_query.txt") << "0001/0001_000_02_0303noon_0015_0.jpg 1\n"
                                         << entry << " 1\n";
  std::ofstream(root / "list_gallery.txt") << "0001/0001_000_02_0303noon_0015_0.jpg 1\n";
}

}  // namespace

TEST_CASE("pictures whose headers claim more than max_image_pixels() are refused before any "
          "pixel memory is allocated") {
  TemporaryFolder folder("reidnet_test_limits_bombs");
  CHECK(reidnet::max_image_pixels() == 89'478'485);  // PIL's Image.MAX_IMAGE_PIXELS
  const auto idle = idle_child_rss_kb();
  for (const auto& bomb : {lying_jpeg(folder.path, 30000, 30000), lying_png(folder.path, 30000, 20000)}) {
    CAPTURE(bomb);
    CHECK(fs::file_size(bomb) < 3000);
    const auto run = read_image_in_child(bomb.string());
    INFO(run.message);
    CHECK(run.code == 0);
    CHECK(contains(run.message, bomb.string()));
    CHECK(contains(run.message, "30000x"));
    CHECK(contains(run.message, "limit of 89478485"));
    CHECK(contains(run.message, "set_max_image_pixels"));
    MESSAGE(bomb.filename().string() << ": child peak RSS " << run.peak_rss_kb / 1024
            << " MiB, idle child " << idle / 1024 << " MiB");
    CHECK(run.peak_rss_kb - idle < 64 * 1024);  // a 30000x30000 RGB picture is 2.7 GB
    CHECK(run.seconds < 10);
  }
}

TEST_CASE("set_max_image_pixels lowers, raises and lifts the limit; zero sizes are refused") {
  TemporaryFolder folder("reidnet_test_limits_pixel_limit");
  PixelLimitGuard guard;
  const auto path = (folder.path / "40x30.png").string();
  reidnet::write_png(path, small_picture(30, 40));
  reidnet::set_max_image_pixels(1199);
  CHECK(reidnet::max_image_pixels() == 1199);
  CHECK_THROWS_WITH_AS(reidnet::read_image(path), doctest::Contains("40x30 = 1200 pixels"),
                       std::runtime_error);
  reidnet::set_max_image_pixels(1200);
  CHECK(reidnet::read_image(path).sizes() == torch::IntArrayRef({30, 40, 3}));
  const auto jpeg = (folder.path / "40x30.jpg").string();
  reidnet::write_jpeg(jpeg, small_picture(30, 40));
  reidnet::set_max_image_pixels(100);
  CHECK_THROWS_WITH_AS(reidnet::read_image(jpeg), doctest::Contains("limit of 100"),
                       std::runtime_error);
  for (const int64_t unlimited : {int64_t{0}, int64_t{-1}}) {
    reidnet::set_max_image_pixels(unlimited);
    CHECK(reidnet::read_image(jpeg).sizes() == torch::IntArrayRef({30, 40, 3}));
  }
  // Just past the default (9500 x 9500 = 90,250,000 pixels): refused, then decoded once the
  // limit is raised (libjpeg, like PIL, fills what the data lacks).
  const auto large = lying_jpeg(folder.path, 9500, 9500).string();
  reidnet::set_max_image_pixels(reidnet::kDefaultMaxImagePixels);
  CHECK_THROWS_WITH_AS(reidnet::read_image(large), doctest::Contains("limit of 89478485"),
                       std::runtime_error);
  reidnet::set_max_image_pixels(100'000'000);
  CHECK(reidnet::read_image(large).sizes() == torch::IntArrayRef({9500, 9500, 3}));

  for (const auto& empty : {lying_jpeg(folder.path, 0, 16), lying_jpeg(folder.path, 16, 0),
                            lying_png(folder.path, 0, 4), lying_png(folder.path, 4, 0)}) {
    CAPTURE(empty);
    CHECK_THROWS_WITH_AS(reidnet::read_image(empty.string()),
                         doctest::Contains(empty.string().c_str()), std::runtime_error);
  }
}

TEST_CASE("read_file_bytes and read_image refuse FIFOs, devices and oversized files, naming "
          "them, without blocking") {
  TemporaryFolder folder("reidnet_test_limits_not_regular");
  const auto fifo = folder.path / "fifo.jpg";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const auto zero = folder.path / "zero.jpg";
  fs::create_symlink("/dev/zero", zero);
  for (const auto& path : {fifo, zero, fs::path("/dev/zero")}) {
    CAPTURE(path);
    const auto run = read_image_in_child(path.string());
    INFO(run.message);
    CHECK(run.code == 0);
    CHECK(contains(run.message, path.string()));
    CHECK(contains(run.message, "not a regular file"));
    CHECK(run.seconds < 10);
  }
  CHECK_THROWS_WITH_AS(reidnet::read_image(folder.path.string()),
                       doctest::Contains("is a directory"), std::runtime_error);

  const auto small = folder.path / "hundred_bytes";
  write_bytes(small, std::vector<unsigned char>(100, 7));
  CHECK(reidnet::detail::read_file_bytes(small.string(), 100).size() == 100);
  CHECK_THROWS_WITH_AS(reidnet::detail::read_file_bytes(small.string(), 99),
                       doctest::Contains("holds 100 bytes, more than the 99 allowed"),
                       std::runtime_error);

  // A sparse file of 2 GiB costs no disk and would cost 2 GiB of memory to read.
  const auto sparse = folder.path / "sparse.jpg";
  write_bytes(sparse, {0xFF, 0xD8, 0xFF});
  fs::resize_file(sparse, uint64_t{2} << 30);
  const auto idle = idle_child_rss_kb();
  const auto run = read_image_in_child(sparse.string());
  INFO(run.message);
  CHECK(run.code == 0);
  CHECK(contains(run.message, sparse.string()));
  CHECK(contains(run.message, "2147483648 bytes"));
  CHECK(run.peak_rss_kb - idle < 64 * 1024);
}

TEST_CASE("temporary_sibling names are unique and start with the path and .tmp") {
  const auto a = reidnet::detail::temporary_sibling("/x/ranks.csv");
  const auto b = reidnet::detail::temporary_sibling("/x/ranks.csv");
  CHECK(a != b);
  CHECK(a.rfind("/x/ranks.csv.tmp" + std::to_string(::getpid()) + "_", 0) == 0);
}

TEST_CASE("MSMT17 list entries must be regular files; folder layouts refuse others named like pictures") {
  TemporaryFolder folder("reidnet_test_limits_entries");
  const auto picture = folder.path / "picture.jpg";
  reidnet::write_jpeg(picture.string(), small_picture(16, 8));
  const auto fifo = folder.path / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const std::string entry = "0001/0001_001_03_0303noon_0016_0.jpg";

  SUBCASE("an MSMT17 entry that is a FIFO, /dev/zero or missing is refused, naming the line") {
    for (const auto& target : {fifo, fs::path("/dev/zero"), folder.path / "missing"}) {
      CAPTURE(target);
      const auto root = folder.path / ("msmt17_" + target.filename().string());
      make_msmt17(root, entry);
      fs::create_symlink(target, root / "test" / entry);
      const auto list = (root / "list_query.txt").string();
      const auto start = std::chrono::steady_clock::now();
      try {
        reidnet::read_dataset(root.string());
        FAIL("read_dataset accepted " << target);
      } catch (const std::runtime_error& error) {
        const std::string message = error.what();
        CHECK(contains(message, "line 2 of " + list));
        CHECK(contains(message, (root / "test" / entry).string()));
        CHECK(contains(message, target == folder.path / "missing" ? "does not exist"
                                                                  : "not a regular file"));
      }
      CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
    }
  }
  SUBCASE("an MSMT17 entry that links to a picture is read") {
    const auto root = folder.path / "msmt17_link";
    make_msmt17(root, entry);
    fs::create_symlink(picture, root / "test" / entry);
    const auto data = reidnet::read_dataset(root.string());
    REQUIRE(data.query.size() == 2);
    CHECK(data.query[1].camera == 3);
  }
  SUBCASE("an MSMT17 list file that is a FIFO is refused without blocking") {
    const auto root = folder.path / "msmt17_fifo_list";
    make_msmt17(root, "0001/0001_000_02_0303noon_0015_0.jpg");
    fs::remove(root / "list_query.txt");
    REQUIRE(::mkfifo((root / "list_query.txt").c_str(), 0600) == 0);
    const auto run = run_in_child([&](std::string& message) {
      try {
        reidnet::read_dataset(root.string());
        return 1;
      } catch (const std::runtime_error& error) {
        message = error.what();
        return 0;
      }
    });
    INFO(run.message);
    CHECK(run.code == 0);
    CHECK(contains(run.message, (root / "list_query.txt").string() + ": not a regular file"));
  }
  SUBCASE("Market-1501 folders refuse, by name, entries named like pictures that are not files") {
    const auto root = folder.path / "market";
    make_toy(root);
    const auto before = reidnet::read_dataset(root.string());
    const auto query = root / "query";
    const auto entry = query / "0003_c1s1_000901_01.jpg";
    const std::vector<std::pair<std::string, std::function<void()>>> entries{
        {"a FIFO", [&] { REQUIRE(::mkfifo(entry.c_str(), 0600) == 0); }},
        {"a link to a device", [&] { fs::create_symlink("/dev/zero", entry); }},
        {"a looping link", [&] { fs::create_symlink(entry, entry); }},
        {"a dangling link", [&] { fs::create_symlink(folder.path / "missing.jpg", entry); }},
        {"a folder", [&] { fs::create_directory(entry); }}};
    for (const auto& [kind, make] : entries) {
      CAPTURE(kind);
      make();
      const auto start = std::chrono::steady_clock::now();
      CHECK_THROWS_WITH_AS(reidnet::read_dataset(root.string()),
                           doctest::Contains((entry.string() + " is named like a picture but is not a "
                                              "regular file").c_str()),
                           reidnet::InputError);
      CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
      fs::remove(entry);
    }
    fs::create_symlink(picture, entry);  // a link to a picture is a picture
    const auto after = reidnet::read_dataset(root.string());
    CHECK(after.query.size() == before.query.size() + 1);
    std::ofstream(query / "notes.txt") << "not named like a picture: skipped";
    CHECK(reidnet::read_dataset(root.string()).query.size() == after.query.size());
  }
}

TEST_CASE("a run folder's commit journal is read under 1 MiB and refused with a key written twice") {
  TemporaryFolder folder("reidnet_test_limits_journal");
  const auto run = folder.path / "run";
  fs::create_directories(run);
  const auto journal = run / ".reidnet-commit.json";
  {  // 40 MB of valid JSON: parsed whole, it would take over a GB
    std::ofstream file(journal);
    file << "[";
    for (int i = 0; i < 400000; ++i) file << (i ? "," : "") << "{\"name\":\"net_last.pth\",\"pad\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14]}";
    file << "]";
  }
  const auto idle = idle_child_rss_kb();
  const auto big = run_in_child([&](std::string& message) {
    try {
      reidnet::RunFolder opened(run);
      return 1;
    } catch (const reidnet::InputError& error) {
      message = error.what();
      return 0;
    }
  });
  INFO(big.message);
  CHECK(big.code == 0);
  CHECK(contains(big.message, journal.string() + " is corrupt"));
  CHECK(contains(big.message, "more than the 1048576 allowed"));
  CHECK(big.peak_rss_kb - idle < 16 * 1024);
  std::ofstream(journal, std::ios::trunc)
      << R"([{"name": "net_last.pth", "staged": "net_last.pth.tmp1_2_3_4", "size": 1, "crc32": 0,)"
      << R"( "name": "opts.yaml"}])";
  CHECK_THROWS_WITH_AS(reidnet::RunFolder(run.string()),
                       doctest::Contains("the key 'name' appears twice"), reidnet::InputError);
}

TEST_CASE("csv_field quotes as RFC 4180 does") {
  using reidnet::csv_field;
  CHECK(csv_field("query/0001_c1s1_000151_01.jpg") == "query/0001_c1s1_000151_01.jpg");
  CHECK(csv_field("") == "");
  CHECK(csv_field("a,b") == "\"a,b\"");
  CHECK(csv_field("say \"hi\"") == "\"say \"\"hi\"\"\"");
  CHECK(csv_field("line\nbreak") == "\"line\nbreak\"");
  CHECK(csv_field("cr\r") == "\"cr\r\"");
  CHECK(csv_field("semi;colon and space") == "semi;colon and space");
}

TEST_CASE("reidnet-test refuses flags that size the work before reading weights, and bad "
          "data set entries within seconds") {
  TemporaryFolder folder("reidnet_test_limits_program_flags");
  const auto toy = folder.path / "toy";
  make_toy(toy);
  // Weights that cannot be read: a flag refused only after loading them gives exit code 1.
  const auto model = folder.path / "model";
  fs::create_directories(model);
  std::ofstream(model / "opts.yaml") << "nclasses: 2\nheight: 64\nwidth: 32\n";
  std::ofstream(model / "net_last.pth") << "not a checkpoint";
  const std::string base = "--data " + toy.string() + " --model-dir " + model.string();

  const auto control = run_program("reidnet-test", base);
  INFO(control.output);
  CHECK(control.status == 1);
  CHECK(contains(control.output, "net_last.pth"));

  for (const auto& [flags, named] : std::vector<std::pair<std::string, std::string>>{
           // Each run costs a second of LibTorch start-up: one case per kind of check.
           {"--ms 10000", "--ms 10000"},
           {"--ms nan", "--ms nan"},
           {"--top-k 1000000000000", "--top-k 1000000000000: the gallery has only 14"},
           {"--show 99", "--show 99: there are only 3 query images"},
           {"--batch-size 5000", "--batch-size"},
           {"--save-ranks --ranks-out " + (folder.path / "nowhere" / "r.csv").string(),
            "--ranks-out"}}) {
    CAPTURE(flags);
    const auto run = run_program("reidnet-test", base + " " + flags);
    INFO(run.output);
    CHECK(run.status == 2);
    CHECK(contains(run.output, named));
  }
  std::ofstream(model / "opts.yaml") << "nclasses: 2\nheight: 100000\nwidth: 32\n";
  const auto from_yaml = run_program("reidnet-test", base);
  INFO(from_yaml.output);
  CHECK(from_yaml.status == 2);
  CHECK(contains(from_yaml.output, (model / "opts.yaml").string()));
  CHECK(contains(from_yaml.output, "height"));
  std::ofstream(model / "opts.yaml") << "nclasses: 2\nheight: 64\nwidth: 32\n";

  const auto fifo = folder.path / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const std::string entry = "0001/0001_001_03_0303noon_0016_0.jpg";
  // A FIFO among the queries used to hang the run (read_dataset covers /dev/zero too).
  const auto root = folder.path / "msmt17_fifo";
  make_msmt17(root, entry);
  fs::create_symlink(fifo, root / "test" / entry);
  const auto start = std::chrono::steady_clock::now();
  const auto run = run_program("reidnet-test", "--data " + root.string() + " --model-dir " +
                                                   model.string());
  INFO(run.output);
  CHECK(run.status == 2);
  CHECK(contains(run.output, (root / "test" / entry).string()));
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));
}

namespace {

/// The rows of an RFC 4180 CSV text.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows(1);
  std::string field;
  bool quoted = false, was_quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c == '"' && field.empty() && !was_quoted) {
      quoted = was_quoted = true;
    } else if (c == ',' || c == '\n') {
      rows.back().push_back(field);
      field.clear();
      was_quoted = false;
      if (c == '\n') rows.emplace_back();
    } else {
      field += c;
    }
  }
  if (rows.back().empty()) rows.pop_back();
  return rows;
}

}  // namespace

TEST_CASE("reidnet-test quotes paths in --save-ranks and leaves no temporary file when a "
          "write fails") {
  TemporaryFolder folder("reidnet_test_limits_program_csv");
  const auto toy = folder.path / "toy, \"quoted\"";
  make_toy(toy);
  const auto weights = folder.path / "weights.pth";
  {
    torch::NoGradGuard no_grad;
    reidnet::save_state_dict(*reidnet::FtNet(reidnet::FtNetOptions(2)), weights.string());
  }
  // --no-optimize: the CSV is the point, and on a run this small the plain module is far
  // quicker than the inference fast path.
  const std::string base = "--data " + shell_quoted(toy.string()) + " --weights " +
                           weights.string() + " --nclasses 2 --height 64 --width 32 " +
                           "--batch-size 8 --workers 1 --top-k 3 --no-optimize --save-ranks "
                           "--features-out " +
                           (folder.path / "features.pth").string();
  const auto ranks = folder.path / "ranks.csv";
  const auto run = run_program("reidnet-test", base + " --ranks-out " + ranks.string());
  INFO(run.output);
  REQUIRE(run.status == 0);
  std::ifstream file(ranks);
  std::stringstream text;
  text << file.rdbuf();
  const auto rows = parse_csv(text.str());
  const auto data = reidnet::read_dataset(toy.string());
  REQUIRE(rows.size() == 1 + 3 * data.query.size());
  for (size_t r = 1; r < rows.size(); ++r) {
    REQUIRE(rows[r].size() == 7);
    const auto q = std::stoul(rows[r][0]);
    CHECK(rows[r][1] == data.query.at(q).path);
    CHECK(rows[r][4] == data.gallery.at(std::stoul(rows[r][3])).path);
  }

  // ranks.csv a folder: writing the list fails at the rename, after the temporary file.
  const auto blocked = folder.path / "blocked";
  fs::create_directories(blocked / "ranks.csv" / "inside");
  const auto failed = run_program("reidnet-test", base + " --ranks-out " + (blocked / "ranks.csv").string());
  INFO(failed.output);
  CHECK(failed.status == 1);
  CHECK(contains(failed.output, (blocked / "ranks.csv").string()));
  for (const auto& entry : fs::directory_iterator(blocked)) {
    CHECK_MESSAGE(!contains(entry.path().filename().string(), ".tmp"), entry.path());
  }
}

}  // namespace reidnet_test_input_limits
