#pragma once
// Portable random numbers for the data pipeline: std::mt19937_64 is specified bit for bit by
// the standard, the <random> distributions are not, so the draws are made here.

#include <cmath>
#include <cstdint>
#include <random>

namespace reidnet {

/// The generator every random transform draws from.
using Rng = std::mt19937_64;

namespace detail {

/// SplitMix64's finaliser: decorrelates nearby seeds.
inline uint64_t mix64(uint64_t value) {
  value += 0x9E3779B97F4A7C15ULL;
  value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ULL;
  value = (value ^ (value >> 27)) * 0x94D049BB133111EBULL;
  return value ^ (value >> 31);
}

/// Uniform in [0, 1).
inline double uniform01(Rng& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

/// Uniform in [low, high).
inline double uniform(Rng& rng, double low, double high) {
  return low + (high - low) * uniform01(rng);
}

/// Uniform integer in [low, high); requires low < high.
inline int64_t random_integer(Rng& rng, int64_t low, int64_t high) {
  const auto span = static_cast<uint64_t>(high - low);
  // Rejection sampling keeps it unbiased.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % span;
  uint64_t draw = rng();
  while (draw >= limit) draw = rng();
  return low + static_cast<int64_t>(draw % span);
}

/// Fisher-Yates shuffle with the portable draws above.
template <typename Container>
void shuffle(Container& values, Rng& rng) {
  for (int64_t i = static_cast<int64_t>(values.size()) - 1; i > 0; --i) {
    std::swap(values[i], values[random_integer(rng, 0, i + 1)]);
  }
}

}  // namespace detail

/// The generator of one sample in one epoch: the same (seed, epoch, index) gives the same
/// augmentation however many threads load the data.
inline Rng sample_rng(uint64_t seed, int64_t epoch, int64_t index) {
  const uint64_t key = detail::mix64(detail::mix64(detail::mix64(seed) ^ static_cast<uint64_t>(epoch)) ^
                                     static_cast<uint64_t>(index));
  return Rng(key);
}

}  // namespace reidnet
