// The single doctest main of reidnet's test suite.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <torch/torch.h>

#include "scratch.hpp"

#include <string>
#include <system_error>

namespace {

// Removes the scratch folders of each test case that passed (see scratch.hpp).
struct ScratchRemover : doctest::IReporter {
  explicit ScratchRemover(const doctest::ContextOptions&) {}

  void test_case_start(const doctest::TestCaseData&) override {
    reidnet::test::scratch_of_running_case().clear();
  }
  void test_case_end(const doctest::CurrentTestCaseStats& stats) override {
    auto& folders = reidnet::test::scratch_of_running_case();
    if (stats.testCaseSuccess) {
      for (const auto& folder : folders) {
        std::error_code ignored;  // a folder the case never made is not an error
        std::filesystem::remove_all(folder, ignored);
      }
    }
    folders.clear();
  }

  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

REGISTER_LISTENER("scratch_remover", 1, ScratchRemover);

}  // namespace

namespace reidnet::test::ddp_worker {
int main(int argc, char** argv);  // ddp_worker.cpp
}  // namespace reidnet::test::ddp_worker

int main(int argc, char** argv) {
  // A rank of the distributed topic's jobs, which start this binary as their worker.
  if (argc > 1 && std::string(argv[1]) == "--ddp-worker") {
    return reidnet::test::ddp_worker::main(argc - 1, argv + 1);
  }
  // Debian's LibTorch defaults to one thread; the test machines have two cores.
  torch::set_num_threads(2);
  doctest::Context context(argc, argv);
  return context.run();
}
