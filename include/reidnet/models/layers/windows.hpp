#pragma once
/// The window arithmetic of Swin Transformers (Liu et al. 2021), as timm's swin_transformer and
/// swin_transformer_v2 compute it: cutting a channels-last map into windows and back, the
/// relative position of every token pair inside a window, and the mask that keeps a shifted
/// window's tokens from attending across the seams of the cyclic shift.
///
///     auto windows = reidnet::window_partition(map, {7, 7});          // (B*nW, 7, 7, C)
///     auto back = reidnet::window_reverse(windows, {7, 7}, 56, 56);     // (B, 56, 56, C)

#include <torch/types.h>

#include <c10/util/Exception.h>

#include <array>
#include <cstdint>
#include <optional>

namespace reidnet {

/// Height and width of an attention window, in tokens.
using WindowSize = std::array<int64_t, 2>;

/// (B, H, W, C) -> (B * H/wh * W/ww, wh, ww, C), windows in row-major order per image.
inline torch::Tensor window_partition(const torch::Tensor& map, WindowSize window) {
  TORCH_CHECK(map.dim() == 4 && map.size(1) % window[0] == 0 && map.size(2) % window[1] == 0,
              "window_partition: a (B, H, W, C) map with H and W multiples of the window (", window[0], "x",
              window[1], ") is needed, got ", map.sizes());
  const auto b = map.size(0), h = map.size(1), w = map.size(2), c = map.size(3);
  return map.view({b, h / window[0], window[0], w / window[1], window[1], c})
      .permute({0, 1, 3, 2, 4, 5})
      .contiguous()
      .view({-1, window[0], window[1], c});
}

/// The inverse of window_partition for a (height, width) map.
inline torch::Tensor window_reverse(const torch::Tensor& windows, WindowSize window, int64_t height, int64_t width) {
  const auto c = windows.size(-1);
  return windows.view({-1, height / window[0], width / window[1], window[0], window[1], c})
      .permute({0, 1, 3, 2, 4, 5})
      .contiguous()
      .view({-1, height, width, c});
}

/// (N, N) int64, N = wh * ww: the row of the (2wh-1)(2ww-1) relative position table that
/// token pair (i, j) reads, (dy + wh - 1) * (2ww - 1) + (dx + ww - 1).
inline torch::Tensor relative_position_index(WindowSize window) {
  const auto rows = torch::arange(window[0], torch::kLong).view({-1, 1}).expand({window[0], window[1]}).flatten();
  const auto cols = torch::arange(window[1], torch::kLong).view({1, -1}).expand({window[0], window[1]}).flatten();
  const auto dy = rows.view({-1, 1}) - rows.view({1, -1}) + (window[0] - 1);
  const auto dx = cols.view({-1, 1}) - cols.view({1, -1}) + (window[1] - 1);
  return dy * (2 * window[1] - 1) + dx;
}

/// The additive mask (nW, N, N) of shifted-window attention on a (height, width) map (already
/// padded to whole windows): 0 between tokens of the same region of the rolled map, -100
/// between tokens the roll brought together; nullopt when nothing is shifted.
inline std::optional<torch::Tensor> shifted_window_mask(int64_t height, int64_t width, WindowSize window,
                                                        WindowSize shift,
                                                        const torch::TensorOptions& options = torch::kFloat) {
  if (shift[0] == 0 && shift[1] == 0) return std::nullopt;
  // Regions along each axis: [0, -window), [-window, -shift), [-shift, end), as timm slices.
  const auto regions = [](int64_t size, int64_t window_side, int64_t shift_side) {
    auto labels = torch::zeros({size}, torch::kLong);
    if (shift_side == 0) return labels;  // unshifted axis (one window across): one region
    const int64_t first = size - window_side;
    const int64_t second = size - shift_side;
    labels.slice(0, first, second).fill_(1);
    labels.slice(0, second, size).fill_(2);
    return labels;
  };
  const auto labels = (regions(height, window[0], shift[0]).view({-1, 1}) * 3 +
                       regions(width, window[1], shift[1]).view({1, -1}))
                          .view({1, height, width, 1});
  const auto windows = window_partition(labels, window).view({-1, window[0] * window[1]});
  const auto differ = windows.unsqueeze(1) != windows.unsqueeze(2);
  return torch::zeros(differ.sizes(), options).masked_fill(differ, -100.0);
}

}  // namespace reidnet
