// Checkpoint interop with Python (reidnet/io/checkpoint.hpp): real torch.save files written by
// tests/python/checkpoint_reference.py load and reproduce Python's outputs; files reidnet
// writes load in Python bit-identically; malicious, truncated and garbage files are refused
// with std::runtime_error and nothing executed.
#include "support.hpp"

#include <reidnet/reidnet.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>

// A namespace per topic: the topics build as one unit (CMake unity build) without their
// helpers meeting.
namespace reidnet_test_checkpoint {

using reidnet::test::fixture;
using reidnet::test::max_relative_difference;

namespace {

constexpr double kOutputTolerance = 1e-4;  // max relative difference of fp32 outputs

std::string file(const std::string& name) { return fixture("checkpoint", name); }

const std::map<std::string, torch::Tensor>& outputs() {
  static const auto tensors = reidnet::test::load_tensor_dict(file("outputs.pt"));
  return tensors;
}

torch::Tensor logits_of(reidnet::FtNet& net) {
  torch::NoGradGuard no_grad;
  net->eval();
  return net->logits(outputs().at("input"));
}

// The message of the std::runtime_error that `body` throws ("" if it does not throw).
template <typename Body>
std::string error_of(Body body) {
  try {
    body();
  } catch (const std::runtime_error& error) {
    return error.what();
  }
  return "";
}

std::vector<uint8_t> bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A copy of every parameter and buffer, to prove a failed load changed nothing.
std::vector<torch::Tensor> snapshot(const torch::nn::Module& module) {
  std::vector<torch::Tensor> out;
  for (const auto& item : reidnet::state_dict(module)) out.push_back(item.value().clone());
  return out;
}

bool unchanged(const torch::nn::Module& module, const std::vector<torch::Tensor>& before) {
  const auto state = reidnet::state_dict(module);
  for (size_t i = 0; i < before.size(); ++i) {
    if (!torch::equal(state[i].value(), before[i])) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("ft_net checkpoints in every container and structure reproduce Python's logits") {
  for (const char* name : {"ft_net.pth", "ft_net_legacy.pth", "ft_net_nested_dataparallel.pth"}) {
    CAPTURE(name);
    reidnet::FtNet net(751);
    const auto report = reidnet::load_state_dict(*net, file(name));
    CHECK(report.complete());
    CHECK(report.loaded.size() == 329);
    const double error = max_relative_difference(logits_of(net), outputs().at("ft_net/logits"));
    MESSAGE(std::string(name) << ": max relative difference of logits " << error);
    CHECK(error < kOutputTolerance);
  }
}

TEST_CASE("an fp16 checkpoint is cast to the module's fp32 and matches Python's logits") {
  const auto tensors = reidnet::read_state_dict(file("ft_net_fp16.pth"));
  CHECK((tensors["model.conv1.weight"].scalar_type() == torch::kFloat16));
  CHECK((tensors["model.bn1.num_batches_tracked"].scalar_type() == torch::kInt64));
  reidnet::FtNet net(751);
  reidnet::load_state_dict(*net, tensors);
  CHECK((net->model->conv1->weight.scalar_type() == torch::kFloat32));
  const double error = max_relative_difference(logits_of(net), outputs().at("ft_net_fp16/logits"));
  MESSAGE("fp16 file: max relative difference of logits " << error);
  CHECK(error < kOutputTolerance);
}

TEST_CASE("torchvision's resnet50 state_dict loads into resnet50 and into FtNet's backbone") {
  const auto tensors = reidnet::read_state_dict(file("resnet50.pth"));
  REQUIRE(tensors.size() == 320);
  const auto& input = outputs().at("input");
  torch::NoGradGuard no_grad;

  auto backbone = reidnet::resnet50();
  reidnet::load_state_dict(*backbone, tensors);
  backbone->eval();
  const double error = max_relative_difference(backbone(input), outputs().at("resnet50/logits"));
  MESSAGE("resnet50: max relative difference of logits " << error);
  CHECK(error < kOutputTolerance);

  reidnet::FtNet net(751);
  const auto before = snapshot(*net);
  const auto refusal = error_of([&] { reidnet::load_state_dict(*net, tensors); });
  CHECK(refusal.find("missing: model.conv1.weight") != std::string::npos);
  CHECK(refusal.find("classifier.classifier.0.bias") != std::string::npos);
  CHECK(refusal.find("unexpected: conv1.weight") != std::string::npos);
  CHECK(unchanged(*net, before));

  const auto report =
      reidnet::load_state_dict(*net, file("resnet50.pth"), reidnet::LoadOptions().into("model."));
  CHECK(report.complete());
  CHECK(report.loaded.size() == 320);
  net->eval();
  CHECK(max_relative_difference(net->model(input), outputs().at("resnet50/logits")) < kOutputTolerance);
}

TEST_CASE("a 751-class checkpoint fine-tunes a 10-class model: all but the last Linear load") {
  reidnet::FtNet net(10);
  const auto before = snapshot(*net);
  const auto refusal = error_of([&] { reidnet::load_state_dict(*net, file("ft_net.pth")); });
  INFO(refusal);
  CHECK(refusal.find("ft_net.pth") != std::string::npos);
  CHECK(refusal.find("classifier.classifier.0.weight: checkpoint [751, 512] vs module [10, 512]") !=
        std::string::npos);
  CHECK(refusal.find("classifier.classifier.0.bias") != std::string::npos);
  CHECK(unchanged(*net, before));

  const auto new_head = net->classifier->classifier[0]->as<torch::nn::Linear>()->weight.clone();
  const auto kept = reidnet::load_state_dict(
      *net, file("ft_net.pth"), reidnet::LoadOptions().keep({"classifier.classifier."}));
  CHECK(kept.complete());
  CHECK(kept.loaded.size() == 327);
  CHECK(torch::equal(net->classifier->classifier[0]->as<torch::nn::Linear>()->weight, new_head));
  const auto reference = reidnet::read_state_dict(file("ft_net.pth"));
  CHECK(torch::equal(net->model->conv1->weight, reference["model.conv1.weight"]));
  CHECK(torch::equal(reidnet::state_dict(*net)["classifier.add_block.1.running_var"],
                     reference["classifier.add_block.1.running_var"]));

  reidnet::FtNet other(10);
  const auto report = reidnet::load_state_dict(*other, reference, reidnet::LoadOptions().strict(false));
  CHECK(report.loaded.size() == 327);
  CHECK(report.mismatched.size() == 2);
  CHECK(report.missing.empty());
  CHECK(report.unexpected.empty());
}

TEST_CASE("checkpoints from before PyTorch 0.4.1 (no num_batches_tracked) load as in Python") {
  auto tensors = reidnet::read_state_dict(file("resnet50.pth"));
  reidnet::StateDict old_format;
  for (const auto& item : tensors) {
    if (item.key().find("num_batches_tracked") == std::string::npos) {
      old_format.insert(item.key(), item.value());
    }
  }
  REQUIRE(old_format.size() == 320 - 53);
  auto backbone = reidnet::resnet50();
  backbone->bn1->num_batches_tracked.fill_(7);
  const auto report = reidnet::load_state_dict(*backbone, old_format);
  CHECK(report.complete());
  CHECK(report.loaded.size() == 320);
  CHECK(backbone->bn1->num_batches_tracked.item<int64_t>() == 0);  // Python's BatchNorm loads 0
  CHECK(torch::equal(backbone->bn1->running_var, tensors["bn1.running_var"]));
}

TEST_CASE("strides, storage offsets, shared storages and every dtype read exactly") {
  const auto expected = reidnet::test::load_tensor_dict(file("tensors_expected.pt"));
  for (const char* name : {"tensors.pth", "tensors_legacy.pth", "tensors.safetensors"}) {
    CAPTURE(name);
    const auto tensors = reidnet::read_state_dict(file(name));
    for (const auto& item : tensors) {
      CAPTURE(item.key());
      const auto& reference = expected.at(item.key());
      CHECK((item.value().scalar_type() == reference.scalar_type()));
      CHECK((item.value().sizes() == reference.sizes()));
      CHECK(torch::equal(item.value(), reference));
    }
    if (std::string(name) != "tensors.safetensors") {
      CHECK(tensors.size() == expected.size());
      const auto& base = tensors["shared_base"];
      CHECK(tensors["offset_view"].data_ptr<float>() == base.data_ptr<float>() + 8);
      CHECK((tensors["column_view"].strides() == c10::IntArrayRef({4})));
      CHECK((tensors["transposed"].strides() == c10::IntArrayRef({1, 5})));
    }
  }
}

TEST_CASE("tensors saved from CUDA load onto the CPU") {
  const auto tensors = reidnet::read_state_dict(file("cuda_saved.pth"));
  CHECK(tensors["weight"].device() == torch::Device(torch::kCPU));
  CHECK(torch::equal(tensors["weight"], torch::arange(6.0).reshape({2, 3})));
}

TEST_CASE("tensors saved from CUDA load onto a GPU, and into a module there" *
          reidnet::test::cuda_suite() * reidnet::test::skip_without_cuda()) {
  const auto tensors = reidnet::read_state_dict(file("cuda_saved.pth"));
  const auto on_gpu = reidnet::read_state_dict(file("cuda_saved.pth"), torch::kCUDA);
  CHECK(on_gpu["weight"].is_cuda());
  auto linear = torch::nn::Linear(3, 2);
  linear->to(torch::kCUDA);
  reidnet::load_state_dict(*linear, tensors, reidnet::LoadOptions().strict(false));
  CHECK(torch::equal(linear->weight.cpu(), tensors["weight"]));
}

TEST_CASE("malicious pickles are refused by name and nothing runs") {
  for (const char* name : {"malicious.pth", "malicious_protocol4.pth", "malicious_legacy.pth",
                           "malicious_nested.pth"}) {
    CAPTURE(name);
    const auto message = error_of([&] { reidnet::read_state_dict(file(name)); });
    INFO(message);
    CHECK(message.find(name) != std::string::npos);
    CHECK(message.find("refusing the pickle global 'posix.system'") != std::string::npos);
    reidnet::FtNet net(751);
    CHECK(!error_of([&] { reidnet::load_state_dict(*net, file(name)); }).empty());
  }
  CHECK(!std::filesystem::exists(file("executed_marker")));
}

TEST_CASE("missing, truncated, garbage and non-checkpoint files raise runtime_error naming the problem") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"no_such_file.pth", "cannot open"},
      {"empty.pth", "only 0 bytes"},
      {"garbage.bin", "not a checkpoint"},
      {"text.pth", "not a checkpoint"},
      {"tensors_truncated.pth", "truncated"},
      {"tensors_legacy_truncated.pth", "truncated"},
      {"tensors_truncated.safetensors", "corrupt"},
      {"tar_format.pth", "unsupported legacy sub-format"},
      {"list.pth", "not a state dict"},
      {"scalars.pth", "'epoch' (int)"},
      {"", "directory"},
  };
  for (const auto& [name, problem] : cases) {
    CAPTURE(name);
    const auto message = error_of([&] { reidnet::read_state_dict(file(name)); });
    INFO(message);
    CHECK(message.find(file(name)) != std::string::npos);
    CHECK(message.find(problem) != std::string::npos);
  }
}

TEST_CASE("every truncation and byte flip of small checkpoints fails cleanly or parses in bounds") {
  for (const char* name : {"tensors.pth", "tensors_legacy.pth", "tensors.safetensors",
                           "malicious.pth", "cuda_saved.pth"}) {
    CAPTURE(name);
    auto bytes = bytes_of(file(name));
    size_t refused = 0;
    const auto parse = [&](size_t length) {
      const reidnet::detail::MemorySource source(bytes.data(), length);
      try {
        const auto layout = reidnet::detail::read_checkpoint_layout(source);
        for (const auto& storage : layout.storages) {
          const auto size = storage.numel * reidnet::detail::dtype_info(storage.dtype).element_size;
          REQUIRE(storage.byte_offset + size <= length);
        }
      } catch (const reidnet::detail::CheckpointError&) {
        ++refused;
      }
    };
    for (size_t length = 0; length < bytes.size(); ++length) parse(length);
    CHECK(refused == bytes.size());  // no proper prefix is a valid checkpoint
    for (size_t at = 0; at < bytes.size(); ++at) {
      const auto original = bytes[at];
      for (const uint8_t flip : {0x01, 0x80, 0xff}) {
        bytes[at] = static_cast<uint8_t>(original ^ flip);
        parse(bytes.size());
      }
      bytes[at] = original;
    }
  }
}

TEST_CASE("a ZIP64 end of central directory reads like the plain one") {
  // torch.save switches to ZIP64 records past 4 GiB or 65535 records; rewrite a small file's
  // end record into that form (ZIP64 end record, locator, saturated classic record).
  const auto original = bytes_of(file("tensors.pth"));
  REQUIRE(original.size() > 22);
  const size_t end_at = original.size() - 22;
  REQUIRE(reidnet::detail::little_endian<uint32_t>(original.data(), end_at) == 0x06054b50);
  const uint64_t count = reidnet::detail::little_endian<uint16_t>(original.data(), end_at + 10);
  const uint64_t directory_size = reidnet::detail::little_endian<uint32_t>(original.data(), end_at + 12);
  const uint64_t directory_offset = reidnet::detail::little_endian<uint32_t>(original.data(), end_at + 16);
  std::string zip64(original.begin(), original.begin() + static_cast<std::ptrdiff_t>(end_at));
  const uint64_t record_at = zip64.size();
  using reidnet::detail::append_little_endian;
  append_little_endian<uint32_t>(zip64, 0x06064b50);
  append_little_endian<uint64_t>(zip64, 44);
  append_little_endian<uint16_t>(zip64, 45);
  append_little_endian<uint16_t>(zip64, 45);
  append_little_endian<uint32_t>(zip64, 0);
  append_little_endian<uint32_t>(zip64, 0);
  append_little_endian<uint64_t>(zip64, count);
  append_little_endian<uint64_t>(zip64, count);
  append_little_endian<uint64_t>(zip64, directory_size);
  append_little_endian<uint64_t>(zip64, directory_offset);
  append_little_endian<uint32_t>(zip64, 0x07064b50);
  append_little_endian<uint32_t>(zip64, 0);
  append_little_endian<uint64_t>(zip64, record_at);
  append_little_endian<uint32_t>(zip64, 1);
  append_little_endian<uint32_t>(zip64, 0x06054b50);
  append_little_endian<uint16_t>(zip64, 0);
  append_little_endian<uint16_t>(zip64, 0);
  append_little_endian<uint16_t>(zip64, 0xffff);
  append_little_endian<uint16_t>(zip64, 0xffff);
  append_little_endian<uint32_t>(zip64, 0xffffffff);
  append_little_endian<uint32_t>(zip64, 0xffffffff);
  append_little_endian<uint16_t>(zip64, 0);
  const auto* data = reinterpret_cast<const uint8_t*>(zip64.data());
  const auto layout = reidnet::detail::read_checkpoint_layout(
      reidnet::detail::MemorySource(data, zip64.size()));
  const auto plain = reidnet::detail::read_checkpoint_layout(
      reidnet::detail::MemorySource(original.data(), original.size()));
  CHECK(layout.tensors.size() == plain.tensors.size());
  CHECK(layout.storages.size() == plain.storages.size());
  for (size_t i = 0; i < layout.storages.size(); ++i) {
    CHECK(layout.storages[i].byte_offset == plain.storages[i].byte_offset);
  }
}

TEST_CASE("files reidnet writes load in Python bit-identically and strictly into the model") {
  reidnet::FtNet net(751);
  reidnet::load_state_dict(*net, file("ft_net.pth"));
  reidnet::save_state_dict(*net, file("cpp_ft_net.pth"));
  reidnet::save_tensors(reidnet::read_state_dict(file("tensors.pth")), file("cpp_tensors.pth"));

  // Round trip through reidnet's own reader.
  const auto again = reidnet::read_state_dict(file("cpp_ft_net.pth"));
  const auto original = reidnet::state_dict(*net);
  REQUIRE(again.size() == original.size());
  for (size_t i = 0; i < again.size(); ++i) {
    CHECK(again[i].key() == original[i].key());
    CHECK(torch::equal(again[i].value(), original[i].value()));
  }
  CHECK(reidnet::test::run_python("checkpoint_check.py", fixture("checkpoint", "")) == 0);
}

TEST_CASE("writing is atomic: failures leave no file, success replaces the old file whole") {
  const auto folder = std::filesystem::path(file("atomic"));
  std::filesystem::remove_all(folder);
  std::filesystem::create_directories(folder);
  const auto target = (folder / "weights.pth").string();

  reidnet::StateDict tensors;
  tensors.insert("a", torch::arange(4.0));
  reidnet::save_tensors(tensors, target);
  tensors.insert("complex", torch::zeros({2}, torch::kComplexFloat));
  const auto message = error_of([&] { reidnet::save_tensors(tensors, target); });
  CHECK(message.find("'complex'") != std::string::npos);
  CHECK(message.find(target) != std::string::npos);
  CHECK(reidnet::read_state_dict(target).size() == 1);  // the old file, intact
  CHECK(!error_of([&] { reidnet::save_tensors(tensors, (folder / "missing" / "x.pth").string()); }).empty());

  reidnet::StateDict replacement;
  replacement.insert("b", torch::ones({2, 2}, torch::kBFloat16));
  reidnet::save_tensors(replacement, target);
  CHECK(torch::equal(reidnet::read_state_dict(target)["b"], replacement["b"]));
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(folder)) files += entry.is_regular_file();
  CHECK(files == 1);  // no temporary left behind
}

TEST_CASE("a record that many directory entries name is read once and shared, within bounded "
          "memory") {
  // 400 central directory entries name one 4 MiB record: 1.6 GiB if each got its own buffer.
  const auto path = file("shared_record.pth");
  const auto tensors = reidnet::read_state_dict(path);
  REQUIRE(tensors.size() == 400);
  for (const auto& item : tensors) CHECK(item.value().data_ptr() == tensors[0].value().data_ptr());
  const auto idle = reidnet::test::idle_child_rss_kb();
  const auto child = reidnet::test::run_in_child([&](std::string& message) {
    message = std::to_string(reidnet::read_state_dict(path).size());
    return 0;
  });
  MESSAGE("shared_record.pth (", std::filesystem::file_size(path), " bytes): peak RSS ",
          child.peak_rss_kb - idle, " KiB above an idle child");
  CHECK(child.code == 0);
  CHECK(child.message == "400");
  CHECK(child.peak_rss_kb - idle < 64 * 1024);
}

TEST_CASE("safetensors entries whose data_offsets overlap are refused, as the reference does") {
  for (const std::string name : {"same_bytes.safetensors", "overlapping.safetensors"}) {
    CAPTURE(name);
    const auto idle = reidnet::test::idle_child_rss_kb();
    const auto child = reidnet::test::run_in_child([&](std::string& message) {
      message = error_of([&] { reidnet::read_state_dict(file(name)); });
      return 0;
    });
    INFO(child.message);
    MESSAGE(name, ": refused with a peak RSS ", child.peak_rss_kb - idle, " KiB above an idle child");
    CHECK(child.message.find("overlap") != std::string::npos);
    CHECK(child.message.find("'t0'") != std::string::npos);
    CHECK(child.peak_rss_kb - idle < 64 * 1024);
  }
}

TEST_CASE("a zip record whose bytes do not match its CRC-32 is refused, naming the record") {
  const auto message = error_of([&] { reidnet::read_state_dict(file("crc_mismatch.pth")); });
  INFO(message);
  CHECK(message.find(file("crc_mismatch.pth")) != std::string::npos);
  CHECK(message.find("CRC-32") != std::string::npos);
  CHECK(message.find("/data/0") != std::string::npos);
}

TEST_CASE("optimizer state round-trips through its file, and a mismatched optimizer is refused "
          "unchanged") {
  torch::manual_seed(0);
  auto net = torch::nn::Sequential(torch::nn::Linear(4, 3), torch::nn::BatchNorm1d(3));
  auto sgd = torch::optim::SGD(
      std::vector<torch::optim::OptimizerParamGroup>{
          torch::optim::OptimizerParamGroup(net[0]->parameters()),
          torch::optim::OptimizerParamGroup(net[1]->parameters())},
      torch::optim::SGDOptions(0.1).momentum(0.9).nesterov(true).weight_decay(1e-3));
  net->forward(torch::randn({5, 4})).sum().backward();
  sgd.step();
  const auto path = file("optimizer_roundtrip.pt");
  reidnet::save_optimizer_state(sgd, path);

  auto copy = torch::optim::SGD(
      std::vector<torch::optim::OptimizerParamGroup>{
          torch::optim::OptimizerParamGroup(net[0]->parameters()),
          torch::optim::OptimizerParamGroup(net[1]->parameters())},
      torch::optim::SGDOptions(0.5));
  reidnet::load_optimizer_state(copy, path);
  for (const auto& parameter : net->parameters()) {
    CHECK(torch::equal(reidnet::detail::momentum_buffer(copy, parameter),
                       reidnet::detail::momentum_buffer(sgd, parameter)));
  }
  const auto& options = static_cast<const torch::optim::SGDOptions&>(copy.param_groups()[1].options());
  CHECK(options.lr() == 0.1);
  CHECK(options.nesterov());
  CHECK(options.weight_decay() == 1e-3);

  auto one_group = torch::optim::SGD(net->parameters(), torch::optim::SGDOptions(0.5));
  const auto message = error_of([&] { reidnet::load_optimizer_state(one_group, path); });
  CHECK(message.find("2 param groups") != std::string::npos);
  CHECK(one_group.state().empty());
  CHECK(error_of([&] { reidnet::load_optimizer_state(copy, file("ft_net.pth")); })
            .find("no 'param_groups'") != std::string::npos);
  CHECK(error_of([&] { reidnet::load_optimizer_state(copy, file("torchscript_prints.pt")); })
            .find("refusing the pickle global") != std::string::npos);
}

TEST_CASE("a tensor viewing more elements than its storage holds (zero or overlapping strides) is "
          "refused by name, within bounded memory") {
  // expanded_view.pth: 'gf' is one float seen as 2^19 x 512 through stride 0 (1 GiB once
  // materialised) in a file of about a kilobyte; overlapping_view.pth: 20 elements over 8.
  for (const auto& [name, key] : std::vector<std::pair<std::string, std::string>>{
           {"expanded_view.pth", "'gf'"}, {"overlapping_view.pth", "'overlap'"}}) {
    CAPTURE(name);
    const auto idle = reidnet::test::idle_child_rss_kb();
    const auto child = reidnet::test::run_in_child([&](std::string& message) {
      message = error_of([&] { reidnet::read_state_dict(file(name)); });
      return 0;
    });
    INFO(child.message);
    MESSAGE(name, " (", std::filesystem::file_size(file(name)), " bytes): refused with a peak RSS ",
            child.peak_rss_kb - idle, " KiB above an idle child");
    CHECK(child.code == 0);
    CHECK(child.message.find(file(name)) != std::string::npos);
    CHECK(child.message.find("tensor " + key) != std::string::npos);
    CHECK(child.message.find("strides") != std::string::npos);
    CHECK(child.peak_rss_kb - idle < 64 * 1024);
  }
  // reidnet-index reads it as a features file: refused as bad input (exit code 2), no index.
  reidnet::test::TemporaryFolder folder("expanded_view_index");
  const auto out = (folder.path / "x.faiss").string();
  const auto run = reidnet::test::run_program(
      "reidnet-index", "build --features " + file("expanded_view.pth") + " --out " + out);
  INFO(run.output);
  CHECK(run.status == 2);
  CHECK(run.output.find(file("expanded_view.pth")) != std::string::npos);
  CHECK(run.output.find("'gf'") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(out));
}

}  // namespace reidnet_test_checkpoint
