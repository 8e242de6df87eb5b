// The engine: the run description (fields, bounds, opts.yaml both ways, the resume rule,
// options that compose), the trainer with its hooks and checkpointer, and a model family added
// from outside the library (example_family.hpp) trained and evaluated through the calls the
// programs make, at its own input size and normalisation.
#include "example_family.hpp"
#include "support.hpp"

#include <reidnet/engine/evaluator.hpp>
#include <reidnet/engine/trainer.hpp>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

// A namespace per topic: the topics build as one unit (CMake unity build) without their
// helpers meeting.
namespace reidnet_test_engine {

namespace fs = std::filesystem;
using reidnet::test::toy_data;

namespace {

const fs::path& workspace() {
  static const fs::path root = reidnet::test::fresh_workspace("engine_workspace");
  return root;
}


// What a hook sees of a run.
struct Recorder : reidnet::TrainerHook {
  int before = 0, after = 0, steps = 0;
  int64_t batches_per_epoch = 0;
  std::vector<double> epoch_losses;
  std::optional<reidnet::TrainResult> result;
  void before_train(reidnet::Trainer& trainer) override {
    ++before;
    batches_per_epoch = trainer.batches_per_epoch();
  }
  void after_step(reidnet::Trainer&, const reidnet::StepReport&) override { ++steps; }
  void after_epoch(reidnet::Trainer& trainer, const reidnet::EpochReport& report) override {
    CHECK(trainer.state().next_epoch == report.epoch);
    epoch_losses.push_back(report.train.loss);
  }
  void after_train(reidnet::Trainer&, const reidnet::TrainResult& outcome) override {
    ++after;
    result = outcome;
  }
};

}  // namespace

TEST_CASE("every run field has one name and unique flag spellings; bounds refuse NaN and name the flag") {
  std::set<std::string> names, flags;
  for (const auto& field : reidnet::run_fields()) {
    CAPTURE(field.name);
    CHECK(names.insert(field.name).second);
    std::stringstream spellings(field.flags);
    for (std::string flag; std::getline(spellings, flag, ',');) CHECK(flags.insert(flag).second);
    CHECK((field.flags.empty() || !field.help.empty()));
  }
  reidnet::RunConfig config;
  config.lr = NAN;
  CHECK_THROWS_WITH_AS(reidnet::check_run_config(config), "--lr is nan; expected a positive number",
                       reidnet::ConfigError);
  config.lr = 0.1;
  config.milestones = {40, 40};
  CHECK_THROWS_WITH_AS(reidnet::check_run_config(config),
                       doctest::Contains("--milestones is 40,40; expected up to 100 ascending"),
                       reidnet::ConfigError);
  config.milestones = {};
  config.model = "no_such_family";
  CHECK_THROWS_AS(reidnet::check_run_config(config), reidnet::ConfigError);
}

TEST_CASE("opts.yaml written and read back holds every field; the baseline's own file reads") {
  reidnet::RunConfig config;
  reidnet::find_preset("bot")->apply(config);
  config.preset = "bot";
  config.class_num = 12;
  config.data = "somewhere";
  config.height = 96;
  config.width = 48;
  config.seed = 42;
  const auto [family, args] = reidnet::resolve_model(config);
  reidnet::record_resolved_model(config, family, args);
  const auto path = workspace() / "round_trip.yaml";
  reidnet::write_opts_yaml(config, path.string());
  const auto read = reidnet::read_opts_yaml(path);
  for (const auto& field : reidnet::run_fields()) {
    if (!field.in_opts_yaml) continue;
    CAPTURE(field.name);
    CHECK(reidnet::detail::field_text(read, field) == reidnet::detail::field_text(config, field));
  }
  // The Python baseline's spelling: h and w, and none of reidnet's keys.
  std::ofstream(workspace() / "baseline.yaml")
      << "name: ft_ResNet50\nh: 384\nw: 192\nnclasses: 751\nPCB: true\nstride: 2\n"
         "droprate: 0.5\nlinear_num: 512\nuse_dense: false\nuse_swin: false\n";
  const auto baseline = reidnet::read_opts_yaml(workspace() / "baseline.yaml");
  CHECK(baseline.height == 384);
  CHECK(baseline.width == 192);
  CHECK(baseline.class_num == 751);
  CHECK(reidnet::resolve_model(baseline).first == "pcb");
  // Without a recorded size, the family's own, as the baseline's test.py picks it.
  std::ofstream(workspace() / "swin.yaml") << "use_swin: true\nnclasses: 751\n";
  const auto swin = reidnet::read_opts_yaml(workspace() / "swin.yaml");
  CHECK(reidnet::resolve_model(swin).first == "ft_net_swin");
  CHECK(swin.height == 224);
  CHECK(swin.width == 224);
  std::ofstream(workspace() / "dino.yaml") << "use_dino: true\n";
  const auto dino = reidnet::read_opts_yaml(workspace() / "dino.yaml");
  CHECK(reidnet::resolve_model(dino).first == "ft_net_dino");
  CHECK(dino.height == 256);
  CHECK(dino.width == 128);
}

TEST_CASE("--ibn --usam --stride 1 composes as the baseline's ft_net(ibn=True, usam=True)") {
  reidnet::RunConfig config;
  config.switches["ibn"] = true;
  config.switches["usam"] = true;
  config.last_stride = 1;
  const auto [family, args] = reidnet::resolve_model(config);
  CHECK(family == "ft_net_usam");
  CHECK(args.backbone() == "resnet50_ibn_a");
  CHECK(args.last_stride() == 1);
  const auto state = reidnet::state_dict(*reidnet::create_model(family, args));
  CHECK(state.find("model.layer1.0.bn1.IN.weight") != nullptr);  // IBN-a's split first norm
  CHECK(state.find("usam_1.weight") != nullptr);
  CHECK(state["model.layer4.0.conv2.weight"].size(0) == 512);
  reidnet::record_resolved_model(config, family, args);
  CHECK(config.switches.at("ibn"));
  CHECK(config.switches.at("usam"));
  CHECK(!config.switches.at("bnneck"));
  CHECK(config.model == "ft_net_usam");
  // The baseline's opts.yaml of ft_net(ibn=True): no model key, ibn on.
  reidnet::RunConfig baseline;
  baseline.switches["ibn"] = true;
  const auto [ibn_family, ibn_args] = reidnet::resolve_model(baseline);
  CHECK(ibn_family == "ft_net");
  CHECK(ibn_args.backbone() == "resnet50_ibn_a");
  CHECK(reidnet::state_dict(*reidnet::create_model(ibn_family, ibn_args)).find("model.layer1.0.bn1.IN.weight") != nullptr);
  config.model = "ft_net";
  config.switches["use_dense"] = true;  // two families at once
  CHECK_THROWS_WITH_AS(reidnet::resolve_model(config), doctest::Contains("give at most one"),
                       reidnet::ConfigError);
  config.switches["usam"] = false;  // DenseNet has no IBN variant
  CHECK_THROWS_WITH_AS(reidnet::resolve_model(config),
                       doctest::Contains("--ibn has no variant for ft_net_dense (it works with bnneck, ft_net, ft_net_usam)"),
                       reidnet::ConfigError);
}

TEST_CASE("--head puts a registered head on a backbone named by --model, and only there") {
  reidnet::RunConfig config;
  config.model = "densenet121";
  config.head = "bnneck";
  reidnet::check_run_config(config);
  const auto [family, args] = reidnet::resolve_model(config);
  CHECK(family == "densenet121");
  CHECK(args.head() == "bnneck");
  CHECK(reidnet::model_config(family, args).checkpoint_format() == reidnet::CheckpointFormat::kFastReid);
  config.model = "ft_net";
  CHECK_THROWS_WITH_AS(reidnet::resolve_model(config),
                       doctest::Contains("--head puts a head on a backbone named by --model; ft_net has its own"),
                       reidnet::ConfigError);
  config.head = "median";
  CHECK_THROWS_WITH_AS(reidnet::check_run_config(config),
                       doctest::Contains("--head is median; expected one of bnneck, class_block"),
                       reidnet::ConfigError);
}

TEST_CASE("a model switch no family or backbone registered is refused, naming it") {
  reidnet::RunConfig config;
  config.switches["use_swin"] = false;  // the baseline writes its unbuilt families as false
  reidnet::check_run_config(config);
  config.switches["bneck"] = true;
  CHECK_THROWS_WITH_AS(reidnet::check_run_config(config),
                       doctest::Contains("the model switch 'bneck' is not one that a family or backbone registered"),
                       reidnet::ConfigError);
}

TEST_CASE("a resume takes the run settings from the command line and refuses recipe fields") {
  const auto folder = workspace() / "resume_rule";
  fs::create_directories(folder);
  reidnet::RunConfig started;
  started.switches["PCB"] = true;
  started.data = "old_data";
  started.class_num = 8;
  started.lr = 0.01;
  started.sync_bn = true;
  reidnet::write_opts_yaml(started, (folder / "opts.yaml").string());
  reidnet::RunConfig command_line;
  command_line.lr = 0.5;
  command_line.threads = 7;
  command_line.data = "new_data";
  command_line.sync_bn = false;
  CHECK_THROWS_WITH_AS(reidnet::resumed_run_config(folder, command_line, {"lr"}),
                       doctest::Contains("--lr cannot be combined with --resume"), reidnet::ConfigError);
  auto resumed = reidnet::resumed_run_config(folder, command_line, {"threads"});
  CHECK(resumed.threads == 7);    // not in opts.yaml: this process's own
  CHECK(resumed.lr == 0.01);      // the recipe
  CHECK(resumed.data == "old_data");  // in opts.yaml, and not given
  CHECK(resumed.sync_bn);
  CHECK(resumed.switches.at("PCB"));
  CHECK(resumed.out == folder.string());
  resumed = reidnet::resumed_run_config(folder, command_line, {"data_dir", "sync_bn"});
  CHECK(resumed.data == "new_data");
  CHECK(!resumed.sync_bn);
}

TEST_CASE("a model family from outside the library trains and evaluates through the library's "
          "calls, at its own input size and normalisation") {
  REQUIRE(reidnet::is_model_name("example_max_avg"));
  const auto out = workspace() / "outside_family";
  reidnet::TrainJob job;
  job.config.data = toy_data().string();
  job.config.out = out.string();
  job.config.model = "example_max_avg";
  job.config.batch_size = 8;
  job.config.total_epoch = 3;
  job.config.lr = 0.05;
  job.config.droprate = 0;
  job.config.workers = 2;
  job.config.seed = 5;
  job.given = {"model"};  // no size given: the family's own
  auto recorder = std::make_shared<Recorder>();
  job.hooks.push_back(recorder);
  const auto result = reidnet::train_run(job);
  CHECK(result.outcome == reidnet::TrainOutcome::kFinished);
  CHECK(result.epochs_done == 3);
  CHECK(recorder->before == 1);
  CHECK(recorder->after == 1);
  CHECK(recorder->batches_per_epoch > 0);
  CHECK(recorder->steps == 3 * recorder->batches_per_epoch);
  REQUIRE(recorder->epoch_losses.size() == 3);
  CHECK(recorder->epoch_losses.back() < recorder->epoch_losses.front());  // it learns
  for (const char* file : {"opts.yaml", "net_last.pth", "optimizer.pt", "trainer_state.yaml", "train.log"}) {
    CHECK_MESSAGE(fs::exists(out / file), file);
  }
  CHECK(!fs::exists(out / "train.jpg"));  // no picture without a renderer

  auto run = reidnet::load_trained_run(out.string());
  CHECK(run.config.model == "example_max_avg");
  CHECK(run.config.height == 96);
  CHECK(run.config.width == 48);
  const auto dataset = reidnet::read_dataset(toy_data().string());
  const auto features = reidnet::extract_retrieval_features(run, dataset,
                                                            reidnet::RetrievalExtractionOptions().workers(2));
  CHECK(features.query_f.size(1) == 64);
  // The first query's feature, by hand: 96x48 and mean = std = 0.5, the flip added, normalised.
  const auto image = reidnet::eval_transform(reidnet::read_image(dataset.query.at(0).path), 96, 48,
                                             reidnet::Normalization().mean({0.5f, 0.5f, 0.5f}).std({0.5f, 0.5f, 0.5f}))
                         .unsqueeze(0);
  torch::Tensor expected;
  {
    torch::NoGradGuard no_grad;
    expected = run.model->embed(image) + run.model->embed(image.flip(3));
  }
  expected = torch::nn::functional::normalize(expected, torch::nn::functional::NormalizeFuncOptions().dim(1));
  CHECK(reidnet::test::max_relative_difference(features.query_f.slice(0, 0, 1), expected) < 1e-5);
  const auto evaluation = reidnet::evaluate_retrieval(features);
  CHECK(evaluation.result.mAP == doctest::Approx(reidnet::evaluate(features.query_f, features.query_label,
                                                                   features.query_cam, features.gallery_f,
                                                                   features.gallery_label, features.gallery_cam)
                                                     .mAP));
  // Resuming the finished run trains nothing and says so.
  reidnet::TrainJob again;
  again.resume = out.string();
  again.config.workers = 2;
  again.given = {"workers"};
  CHECK(reidnet::train_run(again).outcome == reidnet::TrainOutcome::kAlreadyDone);
}

TEST_CASE("reidnet-test --model NAME --weights FILE evaluates a torchreid checkpoint without a run "
          "folder; its features equal Python's (torchreid's bilinear input, flip-sum, L2)") {
  const auto folder = workspace() / "torchreid_file";
  fs::create_directories(folder);
  const auto file = (folder / "osnet_x0_25.pth.tar").string();
  REQUIRE(reidnet::test::run_python("torchreid_file.py", "write " + file) == 0);
  // The library call behind it: the model named, the class count read from the file.
  auto run = reidnet::describe_trained_run("", reidnet::TrainedRunOptions().model("osnet_x0_25").weights(file));
  CHECK(run.family == "osnet_x0_25");
  CHECK(run.args.class_num() == 12);
  CHECK(run.config.height == 256);
  reidnet::load_trained_model(run);
  CHECK(run.model->config().interpolation() == "bilinear");

  const auto features = (folder / "features.pth").string();
  const auto test = reidnet::test::run_program(
      "reidnet-test", "--data " + toy_data().string() + " --model osnet_x0_25 --weights " + file +
                          " --features-out " + features + " --threads 2 --workers 2 --batch-size 32");
  INFO(test.output);
  REQUIRE(test.status == 0);
  const auto python = reidnet::test::run_python_capturing(
      "torchreid_file.py", "check " + toy_data().string() + " " + file + " " + features);
  INFO(python.output);
  CHECK(python.status == 0);

  // A file of another model, a model named beside a run folder, and an unknown model.
  auto other = reidnet::describe_trained_run("", reidnet::TrainedRunOptions().model("osnet_ain_x0_25").weights(file));
  CHECK_THROWS_WITH_AS(reidnet::load_trained_model(other), doctest::Contains("strict state_dict load refused"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(reidnet::describe_trained_run(folder.string(), reidnet::TrainedRunOptions().model("osnet_x0_25")),
                       doctest::Contains("--model names the model of --weights given without a run folder"),
                       reidnet::ConfigError);
  CHECK_THROWS_WITH_AS(reidnet::describe_trained_run("", reidnet::TrainedRunOptions().model("osnet_x9").weights(file)),
                       doctest::Contains("--model osnet_x9: no such model; known: "), reidnet::ConfigError);
}

}  // namespace reidnet_test_engine
