// The single doctest main of reidnet's test suite.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <torch/torch.h>

int main(int argc, char** argv) {
  // Debian's LibTorch defaults to one thread; the test machines have two cores.
  torch::set_num_threads(2);
  doctest::Context context(argc, argv);
  return context.run();
}
