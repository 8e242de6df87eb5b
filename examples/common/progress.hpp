#pragma once
// Progress of a long loop: a redrawn bar on a terminal, plain periodic lines otherwise
// (so that logs of CI jobs and `tee` stay readable).
#include <fmt/core.h>

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace reidnet::examples {

class Progress {
 public:
  /// `total` steps of `items_per_step` items (images) each, labelled `title`.
  Progress(std::string title, int64_t total, bool interactive = isatty(fileno(stdout)) != 0)
      : title_(std::move(title)), total_(total), interactive_(interactive),
        start_(std::chrono::steady_clock::now()) {}

  /// Reports step `done` (1-based) with `items` processed so far and a status text.
  void update(int64_t done, int64_t items, const std::string& status) {
    const double seconds = elapsed();
    const double rate = seconds > 0 ? static_cast<double>(items) / seconds : 0.0;
    const double eta = done > 0 ? seconds * static_cast<double>(total_ - done) / done : 0.0;
    if (interactive_) {
      constexpr int kWidth = 24;
      const int filled = total_ > 0 ? static_cast<int>(kWidth * done / total_) : kWidth;
      fmt::print("\r{} [{}{}] {}/{} {} {:.1f} img/s ETA {:.0f}s\x1b[K", title_,
                 std::string(filled, '#'), std::string(kWidth - filled, '.'), done, total_,
                 status, rate, eta);
      std::fflush(stdout);
      if (done == total_) fmt::print("\n");
    } else if (done == total_ || seconds - last_line_ >= 10.0) {
      last_line_ = seconds;
      fmt::print("{} {}/{} {} {:.1f} img/s ETA {:.0f}s\n", title_, done, total_, status, rate,
                 eta);
      std::fflush(stdout);
    }
  }

  double elapsed() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::string title_;
  int64_t total_;
  bool interactive_;
  std::chrono::steady_clock::time_point start_;
  double last_line_ = 0.0;
};

}  // namespace reidnet::examples
