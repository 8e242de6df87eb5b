#pragma once
// Wall-clock helpers shared by the benchmark programs.

#include <chrono>

namespace reidnet::benchmarks {

/// Seconds elapsed on the steady clock since `start`.
inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace reidnet::benchmarks
