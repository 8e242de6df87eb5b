#pragma once
// The training-curve picture of reidnet-train: loss and top-1 error per epoch, train (blue)
// and val (red), in two panels like the Python baseline's train.jpg.
#include "canvas.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

namespace reidnet::examples {

struct Curve {
  std::string name;
  Color color;
  std::vector<double> values;  // one per epoch; empty when absent (no val split)
};

// One panel: axes, y range labels, epoch ticks and every curve as a polyline with dots.
inline void draw_panel(Canvas& canvas, int64_t left, int64_t top, int64_t width, int64_t height,
                       const std::string& title, const std::vector<Curve>& curves) {
  const int64_t margin = 44;
  const int64_t x0 = left + margin, y0 = top + 24, plot_w = width - margin - 12,
                plot_h = height - 24 - 28;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  size_t epochs = 0;
  for (const auto& curve : curves) {
    for (const double v : curve.values) lo = std::min(lo, v), hi = std::max(hi, v);
    epochs = std::max(epochs, curve.values.size());
  }
  if (epochs == 0) return;
  if (hi - lo < 1e-9) hi = lo + 1;
  canvas.text(top + 4, x0, title, kBlack);
  canvas.border(y0, x0, plot_h, plot_w, 1, kBlack);
  canvas.text(y0, left + 2, fmt::format("{:.2f}", hi), kBlack, 1);
  canvas.text(y0 + plot_h - 5, left + 2, fmt::format("{:.2f}", lo), kBlack, 1);
  auto x_of = [&](size_t epoch) {
    return x0 + 4 + static_cast<int64_t>(epochs > 1 ? epoch * (plot_w - 8) / (epochs - 1) : 0);
  };
  auto y_of = [&](double v) {
    return y0 + 4 + static_cast<int64_t>((hi - v) / (hi - lo) * static_cast<double>(plot_h - 8));
  };
  canvas.text(y0 + plot_h + 6, x0, "EPOCH 1", kBlack, 1);
  const auto last = fmt::format("{}", epochs);
  canvas.text(y0 + plot_h + 6, x0 + plot_w - Canvas::text_width(last, 1), last, kBlack, 1);
  int64_t legend_x = x0 + plot_w - 4;
  for (auto it = curves.rbegin(); it != curves.rend(); ++it) {
    if (it->values.empty()) continue;
    legend_x -= Canvas::text_width(it->name) + 16;
    canvas.fill_rect(top + 6, legend_x, 8, 8, it->color);
    canvas.text(top + 4, legend_x + 12, it->name, it->color);
    for (size_t e = 0; e < it->values.size(); ++e) {
      const int64_t x = x_of(e), y = y_of(it->values[e]);
      canvas.fill_rect(y - 2, x - 2, 5, 5, it->color);
      if (e > 0) canvas.line(y_of(it->values[e - 1]), x_of(e - 1), y, x, it->color, 2);
    }
  }
}

/// The two-panel picture: loss (left) and top-1 error (right), train and val.
inline Canvas render_training_curves(const std::vector<double>& train_loss,
                                     const std::vector<double>& val_loss,
                                     const std::vector<double>& train_error,
                                     const std::vector<double>& val_error) {
  Canvas canvas(320, 800);
  draw_panel(canvas, 0, 0, 400, 320, "LOSS",
             {{"TRAIN", kBlue, train_loss}, {"VAL", kRed, val_loss}});
  draw_panel(canvas, 400, 0, 400, 320, "TOP1ERR",
             {{"TRAIN", kBlue, train_error}, {"VAL", kRed, val_error}});
  return canvas;
}

}  // namespace reidnet::examples
