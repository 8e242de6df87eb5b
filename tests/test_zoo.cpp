// Parity of every model family of the registry with its Python reference
// (tests/python/zoo_models.py: torchvision plus the baseline's, IBN-Net's and fast-reid's
// definitions): keys, order, shapes and parameter counts; eval outputs and test features; the
// inference path; three SGD steps; checkpoints both ways; fast-reid files. And a backbone added
// from outside the library (tests/example_backbone.hpp).
#include "example_backbone.hpp"
#include "example_family.hpp"
#include "support.hpp"

#include <reidnet/reidnet.hpp>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <regex>
#include <set>

// A namespace per topic: the topics build as one unit (CMake unity build) without their
// helpers meeting.
namespace reidnet_test_zoo {

using reidnet::test::copy_state;
using reidnet::test::fixture;
using reidnet::test::max_relative_difference;

namespace {

constexpr double kTolerance = 1e-4;  // max relative difference, fp32
constexpr int64_t kClasses = 10;     // forward, training and checkpoint references

// "<family>/stride=S/linear_num=L" or "<family>/stride=S/pool=P", then optionally
// "/patch_stride=N" and "/head=H" -> the registry's model.
struct Config {
  std::string model;
  reidnet::ModelArgs args;
};

Config parse(const std::string& name, int64_t class_num, double droprate) {
  std::smatch match;
  REQUIRE_MESSAGE(
      std::regex_match(name, match, std::regex("([a-z_0-9-]+)/stride=([12])((/[a-z_]+=[a-z_0-9]+)*)")), name);
  Config config{match[1], reidnet::ModelArgs()
                              .class_num(class_num)
                              .droprate(droprate)
                              .last_stride(std::stoi(match[2]))
                              .drop_path_rate(0.0)};  // as the references: repeatable training steps
  const std::string options = match[3];
  const std::regex option("/([a-z_]+)=([a-z_0-9]+)");
  for (auto it = std::sregex_iterator(options.begin(), options.end(), option); it != std::sregex_iterator(); ++it) {
    const std::string key = (*it)[1], value = (*it)[2];
    if (key == "linear_num") {
      config.args.linear_num(std::stoi(value));
    } else if (key == "pool") {
      config.args.pool(reidnet::pool_type_from_name(value));
    } else if (key == "patch_stride") {
      config.args.patch_stride(std::stoi(value));
    } else {
      REQUIRE_MESSAGE(key == "head", name);
      config.args.head(value);
    }
  }
  // The composed options: --bnneck --ibn, and the baseline's ft_net(ibn=True, usam=True).
  for (const char* family : {"bnneck", "ft_net_usam"}) {
    if (config.model == std::string(family) + "_ibn") {
      config.model = family;
      config.args.backbone("resnet50_ibn_a");
    }
  }
  return config;
}

// Reduced configurations of the transformers' code, as tests/python's swin_models.py,
// swinv2_models.py, eva_models.py and vit_models.py define them: registered as the library
// registers its variants (the same factory and file adapter), at 128x64.
template <class Options, class Create>
bool register_reduced(const std::string& name, const std::string& like, Options options, Create create) {
  auto entry = reidnet::backbone_entry(like);
  entry.create = [name, options, create](const reidnet::BackboneArgs& args) { return create(options, name, args); };
  entry.default_input_size = {128, 64};
  entry.description = "a reduced " + like + ", for tests";
  return reidnet::register_backbone(name, entry);
}

const bool kReducedTransformersRegistered = [] {
  register_reduced("swin_reduced", "swin_tiny_patch4_window7_224",
                   reidnet::SwinTransformerOptions().embed_dim(32).depths({2, 2, 2, 2}).num_heads({1, 2, 2, 4})
                       .window_size(4).patch_size(4).mlp_ratio(4.0),
                   reidnet::detail::create_swin_backbone);
  register_reduced("swinv2_reduced", "swinv2_tiny_window8_256",
                   reidnet::SwinV2Options().embed_dim(32).depths({2, 2, 2, 2}).num_heads({1, 2, 2, 4}).window_size(4),
                   reidnet::detail::create_swinv2_backbone);
  register_reduced("dinov3_reduced", "vit_small_patch16_dinov3",
                   reidnet::EvaOptions().embed_dim(64).depth(3).num_heads(4).num_reg_tokens(4),
                   reidnet::detail::create_eva_backbone);
  register_reduced("vit_reduced", "vit_tiny_patch16",
                   reidnet::VisionTransformerOptions().embed_dim(64).depth(3).num_heads(4).patch_size(16).mlp_ratio(4),
                   reidnet::detail::create_vit_backbone);
  return true;
}();

reidnet::ReidModel build(const std::string& name, int64_t class_num = kClasses, double droprate = 0.5) {
  const auto config = parse(name, class_num, droprate);
  return reidnet::create_model(config.model, config.args);
}

const std::map<std::string, torch::Tensor>& forward_references() {
  static const auto tensors = reidnet::test::load_tensor_dict(fixture("zoo", "forward.pt"));
  return tensors;
}

std::vector<std::string> configs() {
  std::ifstream file(fixture("zoo", "keys.json"));
  REQUIRE_MESSAGE(file.good(), "missing keys.json: run ctest so the Python fixture runs first");
  const auto references = nlohmann::json::parse(file);
  std::vector<std::string> names;
  for (const auto& item : references.items()) names.push_back(item.key());
  return names;
}

// The full-size transformers' weights are not stored: both sides draw them from the generator
// they share (LibTorch's, seeded alike), entry by entry in state_dict order, as
// zoo_reference.py's fill_synthetic: N(0, 1 / fan_in) for matrices and kernels, 1 + N(0, 0.1)
// for norm weights, 0.5 + N(0, 0.1) for layer scales, 0.5 + |N(0, 0.5)| for running variances,
// N(0, 0.02) for the rest.
void fill_synthetic(torch::nn::Module& model, int64_t seed) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(static_cast<uint64_t>(seed));
  for (const auto& item : reidnet::state_dict(model)) {
    auto value = item.value();
    if (!value.is_floating_point()) continue;
    const auto draw = torch::empty(value.sizes()).normal_();
    const auto& key = item.key();
    const auto last = key.substr(key.rfind('.') + 1);
    torch::Tensor filled;
    if (last == "running_var") {
      filled = 0.5 + 0.5 * draw.abs();
    } else if (value.dim() >= 2) {
      filled = draw / std::sqrt(static_cast<double>(value[0].numel()));
    } else if (last == "weight") {
      filled = 1 + 0.1 * draw;
    } else if (last.find("gamma") != std::string::npos) {
      filled = 0.5 + 0.1 * draw;
    } else {
      filled = 0.02 * draw;
    }
    value.copy_(filled);
  }
}

reidnet::ReidModel reference_model(const std::string& name, double droprate = 0.5) {
  auto model = build(name, kClasses, droprate);
  const auto& tensors = forward_references();
  const auto seed = tensors.find(name + "/synthetic_seed");
  if (seed != tensors.end()) {
    fill_synthetic(*model, seed->second.item<int64_t>());
  } else {
    copy_state(*model, tensors, name + "/state/");
  }
  return model;
}

// The configuration's input: its own (a full-size network at its size), else the shared one.
const torch::Tensor& reference_input(const std::string& name) {
  const auto& tensors = forward_references();
  const auto own = tensors.find(name + "/input");
  return own != tensors.end() ? own->second : tensors.at("input");
}

torch::Tensor test_features(reidnet::ReidModel& model, const torch::Tensor& images, bool optimize) {
  const std::vector<torch::Tensor> batches{images};
  return reidnet::extract_features(model, batches, reidnet::FeatureOptions().optimize(optimize));
}

}  // namespace

TEST_CASE("every family's state_dict keys, order, shapes and parameter count equal Python's") {
  std::ifstream file(fixture("zoo", "keys.json"));
  const auto references = nlohmann::json::parse(file);
  REQUIRE(references.size() >= 25);
  for (const auto& [name, reference] : references.items()) {
    CAPTURE(name);
    auto model = build(name, 751);
    const auto state = reidnet::state_dict(*model);
    const auto& keys = reference["keys"];
    REQUIRE(state.size() == keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      CHECK_MESSAGE(state[i].key() == keys[i][0].get<std::string>(), "entry ", i);
      CHECK(state[i].value().sizes().vec() == keys[i][1].get<std::vector<int64_t>>());
    }
    CHECK(reidnet::count_parameters(*model) == reference["parameters"].get<int64_t>());
  }
}

TEST_CASE("every family's eval logits, embedding, metric feature and test feature equal "
          "Python's within 1e-4; so does the inference path") {
  const auto& tensors = forward_references();
  for (const auto& name : configs()) {
    CAPTURE(name);
    const auto& input = reference_input(name);
    auto model = reference_model(name);
    model->eval();
    {
      torch::NoGradGuard no_grad;
      const auto out = model->forward(input);
      for (size_t i = 0; i < out.logits.size(); ++i) {
        CAPTURE(i);
        CHECK(max_relative_difference(out.logits[i], tensors.at(name + "/logits/" + std::to_string(i))) <
              kTolerance);
      }
      CHECK(tensors.count(name + "/logits/" + std::to_string(out.logits.size())) == 0);
      CHECK(max_relative_difference(out.embedding, tensors.at(name + "/embedding")) < kTolerance);
      CHECK(max_relative_difference(out.metric_feature, tensors.at(name + "/metric_feature")) < kTolerance);
      CHECK(max_relative_difference(model->embed(input), tensors.at(name + "/embedding")) < kTolerance);
    }
    const auto& expected = tensors.at(name + "/test_feature");
    const double module_error = max_relative_difference(test_features(model, input, false), expected);
    const double fast_error = max_relative_difference(test_features(model, input, true), expected);
    MESSAGE(name << ": test feature " << module_error << ", inference path " << fast_error);
    CHECK(module_error < kTolerance);
    CHECK(fast_error < kTolerance);
  }
}

TEST_CASE("three SGD steps of every family (dropout 0) give Python's losses and weights") {
  const auto references = reidnet::test::load_tensor_dict(fixture("zoo", "training.pt"));
  const auto& images = references.at("train_input");
  const auto& labels = references.at("train_labels");
  int64_t trained = 0;
  for (const auto& name : configs()) {
    CAPTURE(name);
    // The full-size wrapped networks have no training reference: their smaller variants train.
    if (references.count(name + "/losses") == 0) continue;
    ++trained;
    auto model = reference_model(name, /*droprate=*/0.0);
    model->train();
    // The OSNets, NASNet and the reduced transformers train in float64, as their reference
    // does (float32 rounding moves their later losses by percents, in PyTorch alike, or, with
    // LibTorch 2.x's fused attention, some small sums to the tolerance).
    const bool float64 = name.rfind("osnet", 0) == 0 || name.rfind("nasnet_a_tiny", 0) == 0 ||
                         name.find("_reduced/") != std::string::npos;
    if (float64) model->to(torch::kDouble);
    const auto input = float64 ? images.to(torch::kDouble) : images;
    // Python's groups: the backbone at 0.001, everything else at 0.01.
    auto sgd = reidnet::make_sgd(*model, reidnet::SgdRecipe().lr(0.01).backbone_lr_ratio(0.1));
    reidnet::set_learning_rates(*sgd, {0.001, 0.01});
    torch::nn::CrossEntropyLoss cross_entropy;
    reidnet::TripletLoss triplet;
    const bool bnneck = name.rfind("bnneck", 0) == 0 || name.find("/head=bnneck") != std::string::npos;
    std::vector<double> losses;
    for (int step = 0; step < 3; ++step) {
      sgd->zero_grad();
      const auto out = model->forward(input);
      torch::Tensor loss;
      for (const auto& logits : out.logits) {
        loss = loss.defined() ? loss + cross_entropy(logits, labels) : cross_entropy(logits, labels);
      }
      if (bnneck) loss = loss + triplet(out.metric_feature, labels);
      losses.push_back(loss.item<double>());
      loss.backward();
      sgd->step();
    }
    const auto& expected_losses = references.at(name + "/losses");
    for (int step = 0; step < 3; ++step) {
      CHECK(losses[step] == doctest::Approx(expected_losses[step].item<double>()).epsilon(kTolerance));
    }
    const auto state = reidnet::state_dict(*model);
    const auto& fingerprint = references.at(name + "/fingerprint");
    REQUIRE(fingerprint.size(0) == static_cast<int64_t>(state.size()));
    double worst = 0;
    for (size_t i = 0; i < state.size(); ++i) {
      const auto value = state[i].value().to(torch::kDouble);
      for (int column = 0; column < 2; ++column) {
        const double actual = (column == 0 ? value.sum() : value.pow(2).sum()).item<double>();
        const double wanted = fingerprint[static_cast<int64_t>(i)][column].item<double>();
        const double error = std::abs(actual - wanted) / std::max(std::abs(wanted), 1e-3);
        worst = std::max(worst, error);
        CHECK_MESSAGE(error < kTolerance, state[i].key(), " column ", column);
      }
    }
    int64_t compared = 0;
    for (const auto& item : state) {
      const auto found = references.find(name + "/trained/" + item.key());
      if (found == references.end()) continue;
      ++compared;
      // Relative to the entry's largest value, floored at 1e-3 as the fingerprints are: a bias
      // before a BatchNorm (OSNet's fc.0) gets no gradient and holds only rounding noise.
      const auto actual = item.value().to(torch::kDouble), wanted = found->second.to(torch::kDouble);
      const double scale = std::max(wanted.abs().max().item<double>(), 1e-3);
      CHECK_MESSAGE((actual - wanted).abs().max().item<double>() / scale < kTolerance, item.key());
    }
    CHECK(compared >= 3);
    MESSAGE(name << ": worst fingerprint difference " << worst << " over " << state.size() << " entries");
  }
  CHECK(trained >= 35);
}

TEST_CASE("checkpoints cross both ways: C++ files load strictly in Python, Python's in C++") {
  const auto outputs = reidnet::test::load_tensor_dict(fixture("zoo", "python_outputs.pt"));
  const auto& input = forward_references().at("input");
  const std::vector<std::pair<std::string, std::string>> families{
      {"dense", "ft_net_dense/stride=2/linear_num=512"},
      {"ibn", "ft_net_ibn/stride=2/linear_num=512"},
      {"usam", "ft_net_usam/stride=2/linear_num=512"},
      {"pcb", "pcb/stride=1/linear_num=256"},
      {"bnneck", "bnneck/stride=1/pool=gem"},
      // torchreid's save_checkpoint layout: {'state_dict' with 'module.' keys, 'epoch', 'rank1',
      // 'optimizer' (Adam's state)}.
      {"osnet_ain", "osnet_ain_x0_25/stride=2/linear_num=512"},
      // BoxMOT's {'model_state_dict': ..., 'epoch'}.
      {"osnet_boxmot", "osnet_x0_25/stride=2/linear_num=512"},
      {"convnext", "convnext_tiny/stride=2/linear_num=512"},
      {"hrnet", "hrnet_w18_small/stride=2/linear_num=512"},
      {"efficientnet", "efficientnet-b0/stride=2/linear_num=512"},
      {"nasnet", "nasnet_a_tiny/stride=2/linear_num=512"},
      {"swin", "swin_reduced/stride=2/linear_num=512"},
      {"swinv2", "swinv2_reduced/stride=2/linear_num=512"},
      {"dinov3", "dinov3_reduced/stride=2/linear_num=512"},
      {"vit", "vit_reduced/stride=2/linear_num=512/patch_stride=12"}};
  reidnet::test::TemporaryFolder folder("reidnet-zoo");
  for (const auto& [family, name] : families) {
    CAPTURE(name);
    auto model = build(name);
    reidnet::load_state_dict(*model, fixture("zoo", "python_" + family + ".pth"));
    model->eval();
    torch::NoGradGuard no_grad;
    CHECK(max_relative_difference(model->embed(input), outputs.at(family + "/embedding")) < kTolerance);
    const auto path = (folder.path / (family + ".pth")).string();
    reidnet::save_state_dict(*model, path);
    CHECK(reidnet::test::run_python("zoo_check.py", "'" + name + "' " + path) == 0);
  }
  // The class count of a file from another project comes from its classifier; a file without
  // one is refused, naming the entry it lacks.
  const auto boxmot = fixture("zoo", "python_osnet_boxmot.pth");
  CHECK(reidnet::class_num_of_weights("osnet_x0_25", reidnet::ModelArgs(), boxmot) == kClasses);
  reidnet::StateDict trunk;
  for (const auto& item : reidnet::read_state_dict(boxmot)) {
    if (item.key().rfind("classifier.", 0) != 0) trunk.insert(item.key(), item.value());
  }
  const auto trunk_path = (folder.path / "trunk.pth").string();
  reidnet::save_tensors(trunk, trunk_path);
  CHECK_THROWS_WITH_AS(reidnet::class_num_of_weights("osnet_x0_25", reidnet::ModelArgs(), trunk_path),
                       doctest::Contains("needs classifier.weight [1, 512], and it has no such entry"),
                       std::runtime_error);
}

TEST_CASE("fast-reid checkpoints ({'model': ...}, with or without pixel_mean/pixel_std) give the "
          "embedding fast-reid's inference returns") {
  const auto reference = reidnet::test::load_tensor_dict(fixture("zoo", "fastreid.pt"));
  const auto& images = reference.at("images255");
  for (const char* file : {"fastreid_new.pth", "fastreid_old.pth"}) {
    CAPTURE(file);
    auto model = build("bnneck/stride=1/pool=gem");
    const auto report = reidnet::load_fastreid_checkpoint(*model, fixture("zoo", file));
    CHECK(report.complete());
    model->eval();
    const auto& config = model->config();
    // The data pipeline's normalisation, on 0..1 images.
    const auto mean = torch::tensor(config.mean(), torch::kFloat).view({1, 3, 1, 1});
    const auto std = torch::tensor(config.std(), torch::kFloat).view({1, 3, 1, 1});
    torch::NoGradGuard no_grad;
    const auto embedding = model->embed((images / 255.0 - mean) / std);
    CHECK(max_relative_difference(embedding, reference.at("embedding")) < kTolerance);
  }
}

TEST_CASE("a backbone from outside the library: one header, one registry line") {
  const auto names = reidnet::model_names();
  REQUIRE(std::find(names.begin(), names.end(), "tiny_net") != names.end());
  auto model = reidnet::create_model("tiny_net", reidnet::ModelArgs().class_num(4).linear_num(8));
  const auto state = reidnet::state_dict(*model);
  CHECK(state[0].key() == "model.conv1.weight");
  CHECK(state[state.size() - 1].key() == "classifier.classifier.0.bias");
  CHECK(model->feature_dim() == 8);
  // It trains, with its parameters in the backbone group, and runs through the inference path.
  const auto groups = model->parameter_groups();
  CHECK(groups.backbone.size() == model->backbone().module()->parameters().size());
  auto sgd = reidnet::make_sgd(*model);
  const auto images = torch::randn({4, 3, 32, 16});
  const auto labels = torch::tensor({0, 1, 2, 3}, torch::kLong);
  const auto before = model->backbone().module()->parameters().front().detach().clone();
  model->train();
  torch::nn::functional::cross_entropy(model->forward(images).logits[0], labels).backward();
  sgd->step();
  CHECK(!torch::equal(before, model->backbone().module()->parameters().front()));
  model->eval();
  torch::NoGradGuard no_grad;
  const auto fast = reidnet::optimize_for_inference(model);
  CHECK(max_relative_difference(fast.embed(images), model->embed(images)) < kTolerance);
  auto copy = std::dynamic_pointer_cast<reidnet::ReidModelImpl>(model->clone());
  REQUIRE(copy);
  CHECK(torch::equal(copy->embed(images), model->embed(images)));
}

TEST_CASE("model_config gives every model's config without building it, as its models carry it") {
  // Every family; of the other backbones, which all take the same path (their entry's config
  // and the registered head), the smallest of each network, since building the largest
  // (ConvNeXt-XL, HRNet-W64) is most of a minute.
  std::vector<std::string> names;
  for (const auto& item : reidnet::model_entries()) names.push_back(item.first);
  for (const char* name : {"resnet18", "densenet121", "efficientnet-b0", "hrnet_w18_small", "nasnet_a_tiny",
                           "convnext_tiny", "swin_reduced", "swinv2_reduced", "dinov3_reduced", "vit_reduced"}) {
    names.push_back(name);
  }
  for (const auto& name : names) {
    for (const auto& backbone : {std::string(), std::string("resnet50_ibn_a")}) {
      const auto* entry = reidnet::find_model_entry(name);
      if (!backbone.empty() && (entry == nullptr || !entry->takes_backbone)) continue;
      CAPTURE(name);
      CAPTURE(backbone);
      const auto args = reidnet::ModelArgs().class_num(4).backbone(backbone);
      // Every family of the library registers its config: nothing is built to read it.
      CHECK((entry == nullptr || entry->config));
      const auto expected = reidnet::create_model(name, args)->config();
      const auto config = reidnet::model_config(name, args);
      CHECK(config.height() == expected.height());
      CHECK(config.width() == expected.width());
      CHECK(config.mean() == expected.mean());
      CHECK(config.std() == expected.std());
      CHECK(config.max_pixel_value() == expected.max_pixel_value());
      CHECK(config.interpolation() == expected.interpolation());
      CHECK(config.imagenet_prefix() == expected.imagenet_prefix());
      REQUIRE(static_cast<bool>(config.imagenet_key()) == static_cast<bool>(expected.imagenet_key()));
      if (expected.imagenet_key()) {
        CHECK(config.imagenet_key()("layer1.0.bn1.weight") == expected.imagenet_key()("layer1.0.bn1.weight"));
      }
      CHECK(config.checkpoint_format() == expected.checkpoint_format());
    }
  }
  CHECK(reidnet::model_config("pcb").height() == 384);
}

TEST_CASE("a registered head goes on any backbone named as the model, in its project's layout") {
  const auto args = reidnet::ModelArgs().class_num(4).head("bnneck");
  auto model = reidnet::create_model("densenet121", args);
  const auto state = reidnet::state_dict(*model);
  CHECK(state[0].key().rfind("backbone.", 0) == 0);
  CHECK(state.find("heads.bottleneck.0.weight") != nullptr);
  CHECK(state.find("backbone.classifier.weight") == nullptr);  // fast-reid drops it
  CHECK(model->config().checkpoint_format() == reidnet::CheckpointFormat::kFastReid);
  // The bnneck family is this head on resnet50: the same keys and shapes.
  const auto family = reidnet::state_dict(*reidnet::create_model("bnneck", reidnet::ModelArgs().class_num(4)));
  const auto composed = reidnet::state_dict(*reidnet::create_model("resnet50", args));
  REQUIRE(family.size() == composed.size());
  for (size_t i = 0; i < family.size(); ++i) {
    CHECK(family[i].key() == composed[i].key());
    CHECK(family[i].value().sizes() == composed[i].value().sizes());
  }
  // A head from outside: registered once, on any backbone.
  reidnet::register_head("example_max_avg", {[](int64_t input_dim, const reidnet::ModelArgs& a) {
                                               return reidnet::AnyHead(example::MaxAvgHead(input_dim, a.class_num()).ptr());
                                             },
                                             "max-and-average pooling, BatchNorm neck, classifier",
                                             reidnet::ReidModelLayout("trunk", "head")});
  auto outside = reidnet::create_model("resnet50", reidnet::ModelArgs().class_num(4).head("example_max_avg"));
  CHECK(outside->feature_dim() == 4096);
  CHECK(reidnet::state_dict(*outside).find("head.neck.weight") != nullptr);
  CHECK_THROWS_WITH_AS(reidnet::create_model("resnet50", reidnet::ModelArgs().head("median")),
                       doctest::Contains("no head named \"median\"; known: bnneck, class_block, example_max_avg"),
                       c10::Error);
  CHECK_THROWS_WITH_AS(reidnet::create_model("ft_net", reidnet::ModelArgs().head("bnneck")),
                       doctest::Contains("ft_net has its own head"), c10::Error);
}

TEST_CASE("torchreid's OSNets: its input, ImageNet files into the trunk and fc, registered heads on "
          "its trunk, and the options that do not apply refused") {
  const auto config = reidnet::model_config("osnet_x0_25");
  CHECK(config.interpolation() == "bilinear");  // torchvision's Resize default, as torchreid
  CHECK(config.height() == 256);
  CHECK(config.width() == 128);
  // An ImageNet file is a whole 1000-class OSNet (here with DataParallel's prefix): all but
  // its classifier loads, and the ReID classifier keeps its initialisation.
  auto imagenet = reidnet::create_model("osnet_x0_25", reidnet::ModelArgs().class_num(1000));
  reidnet::StateDict wrapped;
  for (const auto& item : reidnet::state_dict(*imagenet)) wrapped.insert("module." + item.key(), item.value());
  reidnet::test::TemporaryFolder folder("reidnet-osnet");
  const auto path = (folder.path / "osnet_x0_25_imagenet.pth").string();
  reidnet::save_tensors(wrapped, path);
  auto model = reidnet::create_model("osnet_x0_25", reidnet::ModelArgs().class_num(10));
  const auto classifier = model->named_parameters()["classifier.weight"].clone();
  const auto report = reidnet::load_imagenet_weights(*model, path);
  const auto state = reidnet::state_dict(*model);
  CHECK(report.loaded.size() == state.size() - 2);
  CHECK(torch::equal(state.find("fc.0.weight")->clone(), imagenet->named_parameters()["fc.0.weight"]));
  CHECK(torch::equal(model->named_parameters()["classifier.weight"], classifier));
  // A file without the trunk is refused, naming what it lacks.
  reidnet::StateDict partial;
  for (const auto& item : wrapped) {
    if (item.key() != "module.conv5.conv.weight") partial.insert(item.key(), item.value());
  }
  reidnet::save_tensors(partial, path);
  CHECK_THROWS_WITH_AS(reidnet::load_imagenet_weights(*model, path),
                       doctest::Contains("missing: conv5.conv.weight)"), std::runtime_error);
  // The trunk is a backbone too: a registered head goes on it, in the head's layout.
  auto bot = reidnet::create_model("osnet_x0_25", reidnet::ModelArgs().class_num(4).head("bnneck"));
  const auto bot_state = reidnet::state_dict(*bot);
  CHECK(bot_state[0].key() == "backbone.conv1.conv.weight");
  CHECK(bot_state.find("heads.bottleneck.0.weight") != nullptr);
  CHECK(bot_state.find("backbone.fc.0.weight") == nullptr);
  CHECK(bot->feature_dim() == 128);
  CHECK(reidnet::model_config("osnet_x0_25", reidnet::ModelArgs().head("bnneck")).checkpoint_format() ==
        reidnet::CheckpointFormat::kFastReid);
  auto baseline = reidnet::create_model("osnet_ain_x1_0", reidnet::ModelArgs().class_num(4).head("class_block"));
  CHECK(reidnet::state_dict(*baseline).find("model.pool2.0.conv.weight") != nullptr);
  CHECK(reidnet::state_dict(*baseline).find("classifier.classifier.0.weight") != nullptr);
  CHECK_THROWS_WITH_AS(reidnet::create_model("osnet_x1_0", reidnet::ModelArgs().last_stride(1)),
                       doctest::Contains("ModelArgs::last_stride (1) does not apply to osnet_x1_0"), c10::Error);
  CHECK_THROWS_WITH_AS(reidnet::create_model("osnet_ain_x1_0", reidnet::ModelArgs().pool(reidnet::PoolType::kGem)),
                       doctest::Contains("ModelArgs::pool (gem) does not apply"), c10::Error);
  CHECK_THROWS_WITH_AS(reidnet::create_model("osnet_x1_0", reidnet::ModelArgs().backbone("resnet50")),
                       doctest::Contains("ModelArgs::backbone (\"resnet50\") does not apply"), c10::Error);
}

TEST_CASE("the baseline's wrappers of other networks: their switches, ImageNet files into `model`, "
          "the stride they ignore") {
  for (const auto& family : reidnet::baseline_wrapper_families()) {
    CAPTURE(family.name);
    const auto* entry = reidnet::find_model_entry(family.name);
    REQUIRE(entry != nullptr);
    CHECK(entry->switch_key == family.switch_key);
    const auto config = reidnet::model_config(family.name);
    // The baseline's sizes: Swin at 224x224, the others at 256x128.
    CHECK(config.height() == (family.name == "ft_net_swin" ? 224 : 256));
    CHECK(config.width() == (family.name == "ft_net_swin" ? 224 : 128));
    CHECK(config.interpolation() == "bicubic");
    CHECK(config.imagenet_prefix() == "model.");
  }
  // Each file is the upstream network with its ImageNet classifier, in its publisher's keys;
  // every backbone entry of the ReID model comes from it.
  int64_t files = 0;
  for (const auto& item : std::filesystem::directory_iterator(fixture("zoo", ""))) {
    const auto file_name = item.path().filename().string();
    std::smatch match;
    if (!std::regex_match(file_name, match, std::regex("imagenet_([a-z_0-9-]+?)(_original)?\\.pth"))) continue;
    CAPTURE(file_name);
    ++files;
    auto model = reidnet::create_model(match[1], reidnet::ModelArgs().class_num(10));
    const auto report = reidnet::load_imagenet_weights(*model, item.path().string());
    const auto published = reidnet::read_state_dict(item.path().string());
    const auto mine = reidnet::state_dict(*model);
    int64_t backbone_entries = 0;
    for (const auto& entry : mine) {
      if (entry.key().rfind("model.", 0) != 0) continue;
      ++backbone_entries;
      // The same tensor under its own key (timm's layout) or the original one.
      bool found = false;
      for (const auto& candidate : published) {
        found = found || (candidate.value().sizes() == entry.value().sizes() && torch::equal(candidate.value(), entry.value()));
      }
      CHECK_MESSAGE(found, entry.key());
    }
    CHECK(static_cast<int64_t>(report.loaded.size()) == backbone_entries);
  }
  CHECK(files >= 2);
  // The baseline's wrappers take no stride; the run's is ignored, as the baseline ignores it.
  auto strided = reidnet::create_model("ft_net_convnext", reidnet::ModelArgs().class_num(2).last_stride(1));
  CHECK(strided->forward_features(torch::zeros({1, 3, 64, 32})).size(2) == 2);
  CHECK_THROWS_WITH_AS(reidnet::create_model("convnext_tiny", reidnet::ModelArgs().last_stride(1)),
                       doctest::Contains("does not apply to convnext_tiny"), c10::Error);
}

TEST_CASE("the transformers: a ViT file for 224x224 loads into TransReID's overlapping 21x10 grid "
          "with its positions resampled as timm does; the model builds for the run's input size") {
  // The reduced ViT at 128x64 with patch stride 12 (a 10x5 grid) from a 224x224 file (14x14).
  auto model = build("vit_reduced/stride=2/linear_num=512/patch_stride=12");
  const auto report = reidnet::load_imagenet_weights(*model, fixture("zoo", "imagenet224_vit_reduced.pth"));
  CHECK(report.mismatched.empty());
  const auto reference = reidnet::test::load_tensor_dict(fixture("zoo", "imagenet224.pt"));
  CHECK(torch::equal(model->named_parameters()["model.pos_embed"], reference.at("pos_embed")));
  model->eval();
  torch::NoGradGuard no_grad;
  CHECK(max_relative_difference(model->forward_features(forward_references().at("input")), reference.at("features")) <
        kTolerance);
  // Files that do not fit are refused, naming the entry: an older Swin file whose stored
  // window buffer differs from the one the network computes, a ViT file of another patch size.
  reidnet::test::TemporaryFolder folder("reidnet-transformer-files");
  reidnet::StateDict tampered;
  for (const auto& item : reidnet::read_state_dict(fixture("zoo", "imagenet_swin_reduced_original.pth"))) {
    auto value = item.value().clone();
    if (item.key() == "layers.0.blocks.1.attn.relative_position_index") value = value.flip({0});
    tampered.insert(item.key(), value);
  }
  const auto tampered_path = (folder.path / "swin_tampered.pth").string();
  reidnet::save_tensors(tampered, tampered_path);
  auto swin_model = build("swin_reduced/stride=2/linear_num=512");
  CHECK_THROWS_WITH_AS(reidnet::load_imagenet_weights(*swin_model, tampered_path),
                       doctest::Contains("'layers.0.blocks.1.attn.relative_position_index' differs"),
                       std::runtime_error);
  reidnet::StateDict other_kernel;
  for (const auto& item : reidnet::read_state_dict(fixture("zoo", "imagenet224_vit_reduced.pth"))) {
    other_kernel.insert(item.key(), item.key() == "patch_embed.proj.weight" ? torch::zeros({64, 3, 8, 8})
                                                                             : item.value());
  }
  const auto other_kernel_path = (folder.path / "vit_patch8.pth").string();
  reidnet::save_tensors(other_kernel, other_kernel_path);
  CHECK_THROWS_WITH_AS(reidnet::load_imagenet_weights(*model, other_kernel_path),
                       doctest::Contains("patch_embed.proj.weight"), std::runtime_error);
  // The full-size ViT-B/16 at 256x128 with stride 12 has TransReID's 21 x 10 grid (plus the
  // class token); at stride 16, 16 x 8.
  for (const auto& [stride, positions] : {std::pair<int64_t, int64_t>{12, 211}, {16, 129}}) {
    auto vit = reidnet::create_model("vit_base_patch16", reidnet::ModelArgs().class_num(4).patch_stride(stride));
    CHECK(vit->named_parameters()["model.pos_embed"].size(1) == positions);
  }
  // Swin's own size is 224x224; built for another, it refuses pictures of its former size.
  auto swin =
      reidnet::create_model("swin_reduced", reidnet::ModelArgs().class_num(4).input_size(reidnet::ImageSize{64, 64}));
  CHECK_NOTHROW(swin->forward_features(torch::zeros({1, 3, 64, 64})));
  CHECK_THROWS_WITH_AS(swin->forward_features(torch::zeros({1, 3, 128, 64})), doctest::Contains("built for 64x64"),
                       c10::Error);
}

TEST_CASE("the module path folds the BatchNorms that modules declare after a conv or Linear, in its copy "
          "only, and says what it left and why") {
  torch::NoGradGuard no_grad;
  const auto count_batch_norms = [](torch::nn::Module& module, bool folded) {
    int64_t count = 0;
    for (const auto& child : module.modules()) {
      const auto* norm_2d = dynamic_cast<const reidnet::BatchNorm2dImpl*>(child.get());
      const auto* norm_1d = dynamic_cast<const reidnet::BatchNorm1dImpl*>(child.get());
      count += (norm_2d != nullptr && norm_2d->folded() == folded) || (norm_1d != nullptr && norm_1d->folded() == folded);
    }
    return count;
  };
  auto osnet = reidnet::create_model("osnet_x0_25", reidnet::ModelArgs().class_num(4));
  osnet->eval();
  const auto images = torch::randn({2, 3, 64, 32});
  const auto expected = osnet->embed(images);
  const auto fast = reidnet::optimize_for_inference(osnet);
  const auto& report = fast.fold_report();
  CHECK(static_cast<int64_t>(report.folded.size()) == count_batch_norms(*osnet, false));
  CHECK(report.folded.size() > 50);
  CHECK(report.skipped.empty());
  CHECK(fast.describe().find("folded_bn=" + std::to_string(report.folded.size())) != std::string::npos);
  CHECK(count_batch_norms(*osnet, true) == 0);  // the caller's model is untouched
  CHECK(max_relative_difference(fast.embed(images), expected) < kTolerance);
  // IBN-a's BatchNorm halves stay, named with the reason; so does a BatchNorm before its conv.
  auto ibn = reidnet::create_model("ft_net_ibn", reidnet::ModelArgs().class_num(4));
  const auto ibn_report = reidnet::optimize_for_inference(ibn).fold_report();
  CHECK(ibn_report.skipped.size() == 13);  // the bn1 of layer1..layer3's blocks
  CHECK(ibn_report.summary().find("model.layer1.0.bn1.BN (an IBN half") != std::string::npos);
  auto dense = reidnet::create_model("densenet121", reidnet::ModelArgs().class_num(4));
  const auto dense_report = reidnet::optimize_for_inference(dense).fold_report();
  CHECK(dense_report.folded.size() == 2);  // the stem's norm0 and the head's BatchNorm1d
  CHECK(dense_report.summary().find("model.features.denseblock1.denselayer1.norm1 (no conv declared before "
                                    "it)") != std::string::npos);
  // A conv of a module's own kind folds too (EfficientNet's "same"-padded ones).
  auto efficient = reidnet::create_model("efficientnet-b0", reidnet::ModelArgs().class_num(4));
  const auto efficient_report = reidnet::optimize_for_inference(efficient).fold_report();
  CHECK(efficient_report.skipped.empty());
  CHECK(static_cast<int64_t>(efficient_report.folded.size()) == count_batch_norms(*efficient, false));
  // A folded copy cannot train.
  auto copy = std::dynamic_pointer_cast<reidnet::ReidModelImpl>(osnet->clone());
  copy->eval();
  reidnet::fold_batch_norms(*copy);
  copy->train();
  CHECK_THROWS_WITH_AS(copy->forward(images), doctest::Contains("was folded into the layer before it"), c10::Error);
}

// Every BatchNorm of a module tree: reidnet's (1d, 2d) and torch::nn's.
int64_t batch_norm_count(torch::nn::Module& module) {
  int64_t count = 0;
  for (const auto& child : module.modules()) {
    const auto* layer = child.get();
    count += dynamic_cast<const reidnet::BatchNorm2dImpl*>(layer) != nullptr ||
             dynamic_cast<const reidnet::BatchNorm1dImpl*>(layer) != nullptr ||
             dynamic_cast<const torch::nn::BatchNorm2dImpl*>(layer) != nullptr ||
             dynamic_cast<const torch::nn::BatchNorm1dImpl*>(layer) != nullptr;
  }
  return count;
}

TEST_CASE("every registered model on the inference path: each BatchNorm folded or said why not, the "
          "embedding within 1e-5 of the module, the model untouched, a folded copy refusing training") {
  constexpr double kFoldTolerance = 1e-5;  // max difference relative to the largest, fp32
  torch::NoGradGuard no_grad;
  std::string table = "model | path | BatchNorms folded | skipped | max relative difference\n";
  for (const auto& name : reidnet::test::table_model_names()) {
    CAPTURE(name);
    auto model = reidnet::test::table_model(name);
    const auto& config = model->config();
    torch::manual_seed(3);
    const auto images = torch::randn({3, 3, config.height(), config.width()});
    const auto expected = model->embed(images);
    const auto tensors_of = [](torch::nn::Module& module) {
      auto tensors = module.parameters();
      for (const auto& buffer : module.buffers()) tensors.push_back(buffer);
      return tensors;
    };
    std::vector<torch::Tensor> before;
    for (const auto& tensor : tensors_of(*model)) before.push_back(tensor.clone());
    model->train();
    const auto fast = reidnet::optimize_for_inference(model);
    CHECK(model->is_training());  // its mode, too, is the caller's
    const auto after = tensors_of(*model);
    REQUIRE(after.size() == before.size());
    for (size_t i = 0; i < after.size(); ++i) CHECK(torch::equal(after[i], before[i]));
    model->eval();
    const auto& report = fast.fold_report();
    // Each BatchNorm is accounted for once: folded, or skipped with the reason.
    CHECK(static_cast<int64_t>(report.folded.size() + report.skipped.size()) == batch_norm_count(*model));
    for (const auto& skipped : report.skipped) CHECK(skipped.find(" (") != std::string::npos);
    const double difference = max_relative_difference(fast.embed(images), expected);
    CHECK(difference < kFoldTolerance);
    const bool fused = fast.describe().find("path=fused_trunk") != std::string::npos;
    std::set<std::string> reasons;
    for (const auto& skipped : report.skipped) reasons.insert(skipped.substr(skipped.find(" (") + 1));
    std::string why;
    for (const auto& reason : reasons) why += (why.empty() ? " " : ", ") + reason;
    table += name + " | " + (fused ? "fused trunk + head module" : "module") + " | " +
             std::to_string(report.folded.size()) + " | " + std::to_string(report.skipped.size()) + why +
             " | " + fmt::format("{:.1e}", difference) + "\n";
    if (report.folded.empty()) continue;
    auto copy = std::dynamic_pointer_cast<reidnet::ReidModelImpl>(model->clone());
    copy->eval();
    reidnet::fold_batch_norms(*copy);
    copy->train();
    CHECK_THROWS_WITH_AS(copy->forward(images), doctest::Contains("was folded into the layer before it"),
                         c10::Error);
  }
  MESSAGE(table);
  // The ResNet trunks run fused whatever their head; USAM's runs as a module. IBN-a's trunk and
  // a plain OSNet's run fused on the direct oneDNN backend only; OSNet's InstanceNorm variants
  // never.
  const std::string direct_path = reidnet::direct_onednn_built() && torch::hasMKLDNN() ? "path=fused_trunk" : "path=module";
  for (const auto& [name, path] : std::vector<std::pair<std::string, std::string>>{
           {"ft_net", "path=fused_trunk"}, {"bnneck", "path=fused_trunk"}, {"pcb", "path=fused_trunk"},
           {"resnet50", "path=fused_trunk"}, {"ft_net_ibn", direct_path}, {"ft_net_usam", "path=module"},
           {"osnet_x1_0", direct_path}, {"osnet_ibn_x1_0", "path=module"}, {"osnet_ain_x1_0", "path=module"}}) {
    CAPTURE(name);
    auto model = reidnet::create_model(name, reidnet::ModelArgs().class_num(4));
    CHECK(reidnet::optimize_for_inference(model).describe().find(path) != std::string::npos);
  }
}

TEST_CASE("families refuse what they cannot build, naming it") {
  CHECK_THROWS_WITH_AS(reidnet::create_model("ft_net_mamba"), doctest::Contains("known: "), c10::Error);
  CHECK_THROWS_WITH_AS(reidnet::create_model("convnext_tiny", reidnet::ModelArgs().drop_path_rate(1.0)),
                       doctest::Contains("ModelArgs::drop_path_rate must be in [0, 1), got 1"), c10::Error);
  // A class token is a transformer's; a SwinV2 stage one token across has no window to span.
  CHECK_THROWS_WITH_AS(reidnet::create_model("resnet50", reidnet::ModelArgs().pool(reidnet::PoolType::kToken)),
                       doctest::Contains("ModelArgs::pool token takes a transformer's class token; resnet50 has none"),
                       c10::Error);
  CHECK_THROWS_WITH_AS(reidnet::create_model("ft_net", reidnet::ModelArgs().pool(reidnet::PoolType::kToken)),
                       doctest::Contains("ft_net has none"), c10::Error);
  CHECK_THROWS_WITH_AS(
      reidnet::create_model("ft_net_swinv2", reidnet::ModelArgs().input_size(reidnet::ImageSize{64, 32})),
      doctest::Contains("a stage map 1 token across"), c10::Error);
  CHECK_THROWS_WITH_AS(reidnet::create_model("vit_base_patch16", reidnet::ModelArgs().patch_stride(20)),
                       doctest::Contains("patch_stride must be in [1, 16]"), c10::Error);
  CHECK_THROWS_WITH_AS(reidnet::create_model("pcb", reidnet::ModelArgs().class_num(0)),
                       doctest::Contains("class_num"), c10::Error);
  CHECK_THROWS_WITH_AS(reidnet::pool_type_from_name("median"), doctest::Contains("avg, max, gem"), c10::Error);
  // IBN-a's InstanceNorm halves run between convs on the direct oneDNN backend only.
  auto ibn = reidnet::create_model("ft_net_ibn");
  CHECK(reidnet::optimize_for_inference(ibn, reidnet::InferenceOptions().call_onednn_directly(false))
            .describe()
            .find("path=module") != std::string::npos);
}

}  // namespace reidnet_test_zoo
