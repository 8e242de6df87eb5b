#pragma once
// The training-curve picture of reidnet-train (train.jpg, the Python baseline's name): loss and
// top-1 error per epoch, train and val, in two panels drawn by PLplot's memcairo driver into
// memory. The loss axis turns logarithmic when the losses span more than a factor of 10.
#include <plplot/plplot.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace reidnet::examples {

/// One line of a panel: a name for the legend, a colour of the palette, one value per epoch
/// (empty when absent, as val is without a val split).
struct Curve {
  std::string name;
  int colour;  // kTrainColour or kValColour
  std::vector<double> values;
};

namespace curves_detail {

// PLplot's colour map 0, as set by set_palette.
inline constexpr int kBackground = 0, kInk = 1, kGrid = 4;
inline constexpr int kTrain = 2, kVal = 3;

inline void set_palette() {
  plscol0(kBackground, 255, 255, 255);
  plscol0(kInk, 0, 0, 0);
  plscol0(kTrain, 31, 119, 180);
  plscol0(kVal, 214, 39, 40);
  plscol0(kGrid, 200, 200, 200);
}

/// Whether a loss axis from `low` to `high` reads better on a log scale.
inline bool wants_log_scale(double low, double high) { return low > 0 && high / low > 10; }

/// One panel in the viewport [x0, x1] x [y0, y1] (fractions of the picture).
inline void draw_panel(double x0, double x1, double y0, double y1, const std::string& title,
                       const std::string& y_label, const std::vector<Curve>& curves, bool allow_log) {
  double low = std::numeric_limits<double>::infinity(), high = -low;
  size_t epochs = 0;
  for (const auto& curve : curves) {
    for (const double v : curve.values) low = std::min(low, v), high = std::max(high, v);
    epochs = std::max(epochs, curve.values.size());
  }
  if (epochs == 0) return;
  const bool log_axis = allow_log && wants_log_scale(low, high);
  const auto axis_value = [&](double v) { return log_axis ? std::log10(v) : v; };
  double bottom = axis_value(low), top = axis_value(high);
  const double pad = std::max(0.05 * (top - bottom), log_axis ? 0.05 : 0.02 * std::max(1.0, std::abs(top)));
  bottom -= pad, top += pad;
  if (!log_axis && low >= 0) bottom = std::max(bottom, 0.0);
  plvpor(x0, x1, y0, y1);
  plwind(0.5, static_cast<double>(epochs) + 0.5, bottom, top);
  plcol0(kGrid);
  plbox("g", 0, 0, log_axis ? "gl" : "g", 0, 0);
  plcol0(kInk);
  plbox("bcnst", 0, 0, log_axis ? "bcnstlv" : "bcnstv", 0, 0);
  pllab("epoch", y_label.c_str(), title.c_str());
  std::vector<int> opts, colours, styles, symbol_numbers;
  std::vector<double> widths, scales;
  std::vector<const char*> names, symbols;
  for (const auto& curve : curves) {
    if (curve.values.empty()) continue;
    std::vector<double> x, y;
    for (size_t e = 0; e < curve.values.size(); ++e) {
      x.push_back(static_cast<double>(e + 1));
      y.push_back(axis_value(curve.values[e]));
    }
    plcol0(curve.colour);
    plwidth(2);
    plline(static_cast<int>(x.size()), x.data(), y.data());
    plstring(static_cast<int>(x.size()), x.data(), y.data(), "#(728)");  // a filled dot
    plwidth(1);
    opts.push_back(PL_LEGEND_LINE | PL_LEGEND_SYMBOL);
    colours.push_back(curve.colour);
    styles.push_back(1);
    widths.push_back(2);
    scales.push_back(1);
    symbol_numbers.push_back(1);
    names.push_back(curve.name.c_str());
    symbols.push_back("#(728)");
  }
  double legend_width = 0, legend_height = 0;
  const int n = static_cast<int>(names.size());
  plcol0(kInk);
  pllegend(&legend_width, &legend_height, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX,
           PL_POSITION_TOP | PL_POSITION_RIGHT | PL_POSITION_INSIDE, 0.02, 0.02, 0.08, kBackground,
           kInk, 1, n, 1, n, opts.data(), 1.0, 0.9, 1.8, 0, colours.data(), names.data(), nullptr,
           nullptr, nullptr, nullptr, colours.data(), styles.data(), widths.data(), colours.data(),
           scales.data(), symbol_numbers.data(), symbols.data());
}

}  // namespace curves_detail

inline constexpr int kTrainColour = curves_detail::kTrain, kValColour = curves_detail::kVal;

/// The two-panel picture, loss (left) and top-1 error (right): uint8 [height, width, 3].
inline torch::Tensor render_training_curves(const std::vector<double>& train_loss,
                                            const std::vector<double>& val_loss,
                                            const std::vector<double>& train_error,
                                            const std::vector<double>& val_error,
                                            int height = 400, int width = 1000) {
  auto pixels = torch::full({height, width, 3}, 255, torch::kUInt8);
  int previous_stream = 0, stream = 0;
  plgstrm(&previous_stream);
  plmkstrm(&stream);  // a stream of our own: a caller's PLplot state is left alone
  if (stream < 0) throw std::runtime_error("PLplot: no free stream for train.jpg");
  plsdev("memcairo");
  plsmem(width, height, pixels.data_ptr<uint8_t>());
  curves_detail::set_palette();
  plinit();
  pladv(0);
  plschr(0, 0.85);
  curves_detail::draw_panel(0.07, 0.47, 0.13, 0.9, "Loss", "loss",
                            {{"train", kTrainColour, train_loss}, {"val", kValColour, val_loss}}, true);
  curves_detail::draw_panel(0.57, 0.97, 0.13, 0.9, "Top-1 error", "error",
                            {{"train", kTrainColour, train_error}, {"val", kValColour, val_error}},
                            false);
  plend1();
  plsstrm(previous_stream);
  return pixels;
}

}  // namespace reidnet::examples
