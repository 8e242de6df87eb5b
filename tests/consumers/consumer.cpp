// A program outside reidnet that uses it as a dependency: what a user's project does. It
// includes what it uses (every header on its own is the header checks' job, not this one's).
#include <reidnet/core/version.hpp>
#include <reidnet/models/ft_net.hpp>

#include <iostream>

int main() {
  reidnet::FtNet net(reidnet::FtNetOptions(10).linear_num(64));
  net->eval();
  torch::NoGradGuard no_grad;
  const auto feature = net->embed(torch::randn({2, 3, 64, 32}));
  std::cout << "reidnet " << reidnet::version << " feature " << feature.sizes() << "\n";
  return feature.sizes() == torch::IntArrayRef({2, 64}) ? 0 : 1;
}
