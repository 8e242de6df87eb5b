#pragma once
// The ranked-list picture of reidnet-test --show (show_N.png): the query, then its top-k
// gallery pictures, bordered green (a true match: same id, other camera) or red, each with its
// rank, id, camera and score written under it. Drawn with cairo.
#include "cairo_image.hpp"

#include <reidnet/data/datasets.hpp>
#include <reidnet/evaluation/evaluate.hpp>
#include <reidnet/data/image.hpp>
#include <reidnet/data/transforms.hpp>

#include <fmt/core.h>
#include <torch/torch.h>

#include <string>
#include <vector>

namespace reidnet::examples {

namespace ranked_list_detail {

inline constexpr int kImageHeight = 128, kImageWidth = 64, kBorder = 4, kGap = 10;
inline constexpr int kCaptionLine = 13, kCaptionLines = 4, kTitle = 22;

struct Tile {
  const Sample* sample;
  double red, green, blue;  // border
  std::vector<std::string> caption;
};

inline std::string person_text(const Sample& sample) {
  if (sample.person_id < 0) return "junk";
  if (sample.person_id == 0) return "distractor";
  return fmt::format("id {:04d}", sample.person_id);
}

}  // namespace ranked_list_detail

/// The picture of query `row` of `top` (uint8 [H, W, 3]); its gallery indices index `gallery`.
inline torch::Tensor render_ranked_list(const Sample& query, const std::vector<Sample>& gallery,
                                        const RankedLists& top, int64_t row) {
  using namespace ranked_list_detail;
  std::vector<Tile> tiles{{&query, 0.55, 0.55, 0.55,
                           {"query", person_text(query), fmt::format("cam {}", query.camera)}}};
  int64_t matches = 0;
  for (int64_t i = 0; i < top.indices.size(1); ++i) {
    const int64_t index = top.indices[row][i].item<int64_t>();
    if (index < 0) break;
    const bool good = top.good[row][i].item<bool>();
    matches += good;
    const auto& sample = gallery.at(static_cast<size_t>(index));
    tiles.push_back({&sample, good ? 0.17 : 0.84, good ? 0.63 : 0.15, good ? 0.17 : 0.16,
                     {fmt::format("rank {}", i + 1), person_text(sample),
                      fmt::format("cam {}", sample.camera),
                      fmt::format("{:.3f}", top.scores[row][i].item<double>())}});
  }
  const int tile_width = kImageWidth + 2 * kBorder;
  const int width = static_cast<int>(tiles.size()) * (tile_width + kGap) + 2 * kGap;
  const int height = kTitle + kImageHeight + 2 * kBorder + kCaptionLines * kCaptionLine + 2 * kGap;
  SurfacePtr surface(cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height), cairo_surface_destroy);
  CairoPtr cr(cairo_create(surface.get()), cairo_destroy);
  cairo_set_source_rgb(cr.get(), 1, 1, 1);
  cairo_paint(cr.get());
  cairo_select_font_face(cr.get(), "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_source_rgb(cr.get(), 0, 0, 0);
  cairo_set_font_size(cr.get(), 13);
  cairo_move_to(cr.get(), kGap, kGap + 8);
  cairo_show_text(cr.get(), fmt::format("query {}: {} of the top {} are true matches (green)", row,
                                        matches, tiles.size() - 1).c_str());
  cairo_set_font_size(cr.get(), 10.5);
  for (size_t t = 0; t < tiles.size(); ++t) {
    // The query stands apart from its ranked list by one more gap.
    const double left = kGap + static_cast<double>(t) * (tile_width + kGap) + (t > 0 ? kGap : 0);
    const double top_edge = kGap + kTitle;
    const auto& tile = tiles[t];
    cairo_set_source_rgb(cr.get(), tile.red, tile.green, tile.blue);
    cairo_rectangle(cr.get(), left, top_edge, tile_width, kImageHeight + 2 * kBorder);
    cairo_fill(cr.get());
    const auto image = surface_of(reidnet::resize(reidnet::read_image(tile.sample->path), kImageHeight, kImageWidth));
    cairo_set_source_surface(cr.get(), image.get(), left + kBorder, top_edge + kBorder);
    cairo_paint(cr.get());
    cairo_set_source_rgb(cr.get(), 0, 0, 0);
    for (size_t line = 0; line < tile.caption.size(); ++line) {
      cairo_move_to(cr.get(), left + 1, top_edge + kImageHeight + 2 * kBorder + kCaptionLine * (line + 1));
      cairo_show_text(cr.get(), tile.caption[line].c_str());
    }
  }
  return pixels_of(surface.get());
}

}  // namespace reidnet::examples
