// ONNX export: every registered family written as ONNX (the transformer families as the reduced
// configurations test_zoo.cpp registers, the others at 128x64), held to ONNX's full check
// (python3-onnx) and, where ONNX Runtime is installed (the Debian 13 leg), run by it at batch 1
// and 7 within 1e-4 of reidnet's module (six also as float16 files: rows' cosine >= 0.999);
// ops without a rule refused by name; the options; and reidnet-export.
#include "support.hpp"

#include <reidnet/export/onnx_export.hpp>
#include <reidnet/io/state_dict.hpp>
#include <reidnet/models/backbones/backbone.hpp>
#include <reidnet/models/model_zoo.hpp>

#include <doctest/doctest.h>
#include <onnx/onnx_pb.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using reidnet::test::run_program;

const reidnet::ImageSize kExportSize{128, 64};

// Also exported with float16 weights (a family of each kind of network: a ResNet trunk, a
// dense CNN, a depthwise one, OSNet, a windowed and a plain transformer).
const std::set<std::string> kHalfExported = {"ft_net", "ft_net_dense", "ft_net_efficient", "osnet_x0_25",
                                             "ft_net_swin", "ft_net_dino"};

// Written by the first case, read by the ONNX Runtime case (ctest: fixture onnx_models).
fs::path exported_models() { return fs::path(REIDNET_TEST_BINARY_DIR) / "exported_onnx"; }

std::map<std::string, std::string> metadata_of(const onnx::ModelProto& model) {
  std::map<std::string, std::string> values;
  for (const auto& entry : model.metadata_props()) values[entry.key()] = entry.value();
  return values;
}

// A backbone with an op the exporter has no rule for (a cumulative sum).
class CumsumNetImpl : public torch::nn::Cloneable<CumsumNetImpl>, public reidnet::Backbone {
 public:
  explicit CumsumNetImpl(const reidnet::BackboneArgs& = {}) { reset(); }
  void reset() override {
    stem = register_module("stem", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)));
    head_conv = register_module("head_conv", torch::nn::Conv2d(8, 16, 1));
  }
  torch::Tensor forward_features(const torch::Tensor& images) override {
    return head_conv(stem(images).cumsum(3));
  }
  int64_t num_features() const override { return 16; }
  std::vector<int64_t> feature_strides() const override { return {1}; }
  torch::nn::Conv2d stem{nullptr}, head_conv{nullptr};
};

const bool kCumsumNetRegistered = reidnet::register_backbone(
    "cumsum_net", {[](const reidnet::BackboneArgs& args) {
                     return reidnet::AnyBackbone(std::make_shared<CumsumNetImpl>(args));
                   },
                   {},
                   "a conv, a cumulative sum and a conv (a test)"});

// A backbone whose forward writes into a view of another tensor, which a trace cannot follow.
class ViewWriteNetImpl : public torch::nn::Cloneable<ViewWriteNetImpl>, public reidnet::Backbone {
 public:
  explicit ViewWriteNetImpl(const reidnet::BackboneArgs& = {}) { reset(); }
  void reset() override {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)));
  }
  torch::Tensor forward_features(const torch::Tensor& images) override {
    auto mask = torch::zeros({1, 1, images.size(2), images.size(3)});
    mask.narrow(2, 1, 4).fill_(1);
    return conv(images) * mask;
  }
  int64_t num_features() const override { return 8; }
  std::vector<int64_t> feature_strides() const override { return {1}; }
  torch::nn::Conv2d conv{nullptr};
};

const bool kViewWriteNetRegistered = reidnet::register_backbone(
    "view_write_net", {[](const reidnet::BackboneArgs& args) {
                         return reidnet::AnyBackbone(std::make_shared<ViewWriteNetImpl>(args));
                       },
                       {},
                       "a conv masked by a write into a view (a test)"});

}  // namespace

TEST_CASE("every registered family exports to ONNX that passes ONNX's full check") {
  const auto folder = exported_models();
  fs::remove_all(folder);
  fs::create_directories(folder);
  const auto families = reidnet::test::table_model_names();
  for (const auto& family : families) {
    CAPTURE(family);
    auto model = reidnet::test::table_model(family);
    const auto path = (folder / (family + ".onnx")).string();
    const auto report = reidnet::export_onnx(*model, path, reidnet::OnnxExportOptions().model_name(family));
    MESSAGE(family << ": " << report.summary().substr(0, 300));
    CHECK(report.nodes > 0);
    const auto& config = model->config();
    torch::manual_seed(7);
    const auto images = torch::randn({7, 3, config.height(), config.width()});
    torch::NoGradGuard no_grad;
    reidnet::StateDict reference;
    reference.insert("images", images);
    reference.insert("features_7", model->embed(images));
    reference.insert("features_1", model->embed(images.slice(0, 0, 1)));
    reidnet::save_tensors(reference, (folder / (family + ".pt")).string());
    if (kHalfExported.count(family)) {
      reidnet::export_onnx(*model, (folder / (family + ".fp16.onnx")).string(),
                           reidnet::OnnxExportOptions().model_name(family).dtype(torch::kFloat16));
    }
  }
  const auto check = reidnet::test::run_python_capturing("onnx_check.py", folder.string());
  MESSAGE(check.output);
  CHECK(check.status == 0);
  const auto count = std::to_string(families.size() + kHalfExported.size());
  CHECK(check.output.find(count + " of " + count + " files passed") != std::string::npos);
}

TEST_CASE("ONNX Runtime runs every exported family within 1e-4 of reidnet, and the float16 files with "
          "rows' cosine of at least 0.999" *
          doctest::test_suite("onnxruntime") * doctest::skip(!REIDNET_TEST_HAVE_ONNXRUNTIME)) {
  const auto folder = exported_models();
  REQUIRE_MESSAGE(fs::is_directory(folder), folder << " is missing: the export topic writes it");
  const auto check = reidnet::test::run_python_capturing("onnx_check.py", folder.string() + " --runtime");
  MESSAGE(check.output);
  CHECK(check.status == 0);
}

TEST_CASE("ONNX export: BatchNorms folded, metadata, options, and what it refuses") {
  auto model = reidnet::test::table_model("bnneck");
  const auto before = reidnet::state_dict(*model);
  std::map<std::string, torch::Tensor> original;
  for (const auto& item : before) original[item.key()] = item.value().clone();

  reidnet::OnnxExportReport report;
  const auto proto = reidnet::to_onnx_model(*model, reidnet::OnnxExportOptions().model_name("bnneck"), &report);
  CHECK(report.folding.folded.size() == 53);  // every conv's BatchNorm in ResNet-50
  CHECK(report.operators.count("BatchNormalization") == 1);  // the neck's BatchNorm1d
  CHECK(proto.opset_import(0).version() == reidnet::kDefaultOnnxOpset);
  // The model exported is a copy: the caller's keeps its BatchNorms and its mode.
  for (const auto& item : reidnet::state_dict(*model)) {
    CAPTURE(item.key());
    CHECK(torch::equal(item.value(), original.at(item.key())));
  }
  CHECK_FALSE(model->is_training());
  const auto metadata = metadata_of(proto);
  CHECK(metadata.at("model") == "bnneck");
  CHECK(metadata.at("input_height") == "128");
  CHECK(metadata.at("input_width") == "64");
  CHECK(metadata.at("normalized_in_graph") == "false");
  CHECK(metadata.at("mean") == "0.485,0.456,0.406");
  CHECK(metadata.at("feature_dim") == "2048");
  // Initializers keep the state_dict's names.
  bool named = false;
  for (const auto& initializer : proto.graph().initializer()) named = named || initializer.name() == "backbone.conv1.weight";
  CHECK(named);

  SUBCASE("the graph normalises the pixels itself when asked, and says so") {
    const auto inside = reidnet::to_onnx_model(*model, reidnet::OnnxExportOptions().normalize_in_graph(true));
    CHECK(metadata_of(inside).at("normalized_in_graph") == "true");
    CHECK(inside.graph().node_size() > proto.graph().node_size());
  }
  SUBCASE("fp16 stores float16 weights and keeps float32 input and output") {
    const auto half = reidnet::to_onnx_model(*model, reidnet::OnnxExportOptions().dtype(torch::kFloat16));
    CHECK(half.graph().input(0).type().tensor_type().elem_type() == onnx::TensorProto_DataType_FLOAT);
    CHECK(half.graph().output(0).type().tensor_type().elem_type() == onnx::TensorProto_DataType_FLOAT);
    for (const auto& initializer : half.graph().initializer()) {
      CAPTURE(initializer.name());
      CHECK(initializer.data_type() != onnx::TensorProto_DataType_FLOAT);
    }
    CHECK(metadata_of(half).at("dtype") == "fp16");
  }
  SUBCASE("the newest opset this ONNX library knows") {
    const auto newest = reidnet::to_onnx_model(*model, reidnet::OnnxExportOptions().opset(reidnet::newest_onnx_opset()));
    CHECK(newest.opset_import(0).version() == reidnet::newest_onnx_opset());
  }
  SUBCASE("opsets outside the rules' range and other dtypes are refused, naming them") {
    CHECK_THROWS_WITH_AS(reidnet::to_onnx_model(*model, reidnet::OnnxExportOptions().opset(13)),
                         doctest::Contains("--opset 13 is outside 17 to"), reidnet::ConfigError);
    CHECK_THROWS_WITH_AS(reidnet::to_onnx_model(*model, reidnet::OnnxExportOptions().dtype(torch::kBFloat16)),
                         doctest::Contains("--dtype must be fp32 or fp16"), reidnet::ConfigError);
  }
  SUBCASE("an op without a rule is refused with its name and where it is, and nothing is written") {
    auto odd = reidnet::create_model("cumsum_net", reidnet::ModelArgs().class_num(4).input_size(kExportSize));
    odd->eval();
    reidnet::test::TemporaryFolder folder("reidnet-export-refused");
    const auto path = (folder.path / "odd.onnx").string();
    CHECK_THROWS_WITH_AS(reidnet::export_onnx(*odd, path),
                         doctest::Contains("no rule for aten::cumsum, called in the model after "
                                           "model.stem.bias and before model.head_conv.weight"),
                         reidnet::InputError);
    CHECK_FALSE(fs::exists(path));
    CHECK(fs::is_empty(folder.path));
  }
  SUBCASE("a forward that a trace cannot record is refused, not exported wrongly") {
    auto odd = reidnet::create_model("view_write_net", reidnet::ModelArgs().class_num(4).input_size(kExportSize));
    odd->eval();
    CHECK_THROWS_WITH_AS(reidnet::to_onnx_model(*odd),
                         doctest::Contains("the traced graph differs from the model at batch 4"),
                         reidnet::InputError);
  }
}

TEST_CASE("reidnet-export writes a file from a run folder or a weights file, and refuses bad flags") {
  reidnet::test::TemporaryFolder folder("reidnet-export");
  auto model = reidnet::create_model("osnet_x0_25", reidnet::ModelArgs().class_num(6));
  const auto weights = (folder.path / "osnet.pth").string();
  reidnet::save_state_dict(*model, weights);
  const auto out = (folder.path / "osnet.onnx").string();
  const auto run = run_program("reidnet-export", "--model osnet_x0_25 --weights " + weights + " --out " + out);
  REQUIRE_MESSAGE(run.status == 0, run.output);
  CHECK(run.output.find("input images (N x 3 x 256 x 128), output features (N x 512)") != std::string::npos);
  CHECK(fs::exists(out));

  const auto bad_opset = run_program("reidnet-export", "--model osnet_x0_25 --weights " + weights +
                                                           " --out " + out + ".2 --opset 9");
  CHECK(bad_opset.status == 2);
  CHECK(bad_opset.output.find("--opset 9 is outside") != std::string::npos);
  CHECK_FALSE(fs::exists(out + ".2"));
  const auto no_folder = run_program("reidnet-export", "--model osnet_x0_25 --weights " + weights +
                                                           " --out " + (folder.path / "no" / "x.onnx").string());
  CHECK(no_folder.status == 2);
  CHECK(no_folder.output.find("does not exist") != std::string::npos);
  const auto no_model = run_program("reidnet-export", "--out " + out + ".3");
  CHECK(no_model.status == 2);
}
