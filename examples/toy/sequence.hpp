#pragma once
// The "sequence" style of reidnet-toy-data: a short video from one fixed camera in
// MOTChallenge's layout, in which people of the street style walk across the scene, cross and
// hide one another (drawn far to near), leave and come back:
//
//   SEQ/seqinfo.ini          [Sequence] name, imDir, frameRate, seqLength, imWidth, imHeight, imExt
//   SEQ/img1/000001.jpg ...  the frames
//   SEQ/gt/gt.txt            frame,id,x,y,w,h,1,1,visibility (MOT17's ground truth: every box,
//                            consider it, class pedestrian, the fraction of the box in view)
//   SEQ/det/det.txt          frame,-1,x,y,w,h,conf,-1,-1,-1 (a detector's output)
//
// A ground-truth box is the tight box of a person's pixels in the frame (whole pixels, 1-based
// as MOTChallenge counts them); a person has a row while at least kMinInFrame of their pixels
// are in the frame. Visibility is the part of their pixels that is in the frame and not behind
// someone nearer, each person drawn alone to know which pixels are theirs. The detections are
// the ground-truth boxes, shifted and resized a little, with the heavily occluded ones
// (visibility below kMinDetectedVisibility) and a few others missed, in no particular order
// within a frame. The same seed writes the same files.
#include "street.hpp"

#include <reidnet/core/detail/file_io.hpp>
#include <reidnet/data/image.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace reidnet::toy::sequence {

namespace fs = std::filesystem;

/// The knobs of `reidnet-toy-data --style sequence`.
struct SequenceOptions {
  int frames = 60, people = 8, width = 640, height = 360, frame_rate = 30, quality = 90;
  uint64_t seed = 0;
};

/// A person has a ground-truth row while this much of their pixels is inside the frame.
inline constexpr double kMinInFrame = 0.3;
/// The detector misses every person less visible than this, and kMissRate of the others.
inline constexpr double kMinDetectedVisibility = 0.35;
inline constexpr double kMissRate = 0.05;

/// A box in pixels, 0-based, top-left corner and size.
struct Box {
  double x = 0, y = 0, w = 0, h = 0;
  double right() const { return x + w; }
  double bottom() const { return y + h; }
};

/// One person's walk: a straight line at constant speed through the middle of the sequence,
/// turning back at the edges of the walking area (off screen at the sides), so that people
/// who leave may come back.
struct Walker {
  street::Identity identity;
  double middle_x = 0, middle_feet = 0;  // where they are at the middle frame
  double speed_x = 0, speed_feet = 0;    // pixels per frame (speed_feet > 0: towards the camera)
  double phase = 0;                      // walking cycle at frame 1
};

/// Where a walker is in a frame: feet position, height in pixels, view and walking phase.
struct Pose {
  double x = 0, feet = 0, size = 0, phase = 0;
  int view = 0;
};

/// The scene's geometry: where the ground is and how tall people are on it.
struct Stage {
  int width = 0, height = 0;
  double horizon = 0;              // y of the horizon line
  double near_feet = 0, far_feet = 0;  // the walking area's nearest and farthest feet y
  double min_x = 0, max_x = 0;     // where walkers turn back (off screen)

  /// People are drawn in perspective from a camera above their heads: their height grows
  /// linearly with the distance of their feet below the horizon.
  double size_at(double feet) const { return (feet - horizon) * 0.8; }
};

namespace detail {

/// `value` moving back and forth between `low` and `high` (a triangle wave); `direction`
/// becomes -1 where it is on its way back.
inline double bounce(double value, double low, double high, double& direction) {
  const double span = high - low, period = 2 * span;
  double offset = std::fmod(value - low, period);
  if (offset < 0) offset += period;
  direction = offset <= span ? 1 : -1;
  return offset <= span ? low + offset : high - (offset - span);
}

inline Box clip(const Box& box, int width, int height) {
  const double left = std::clamp(box.x, 0.0, double(width)), top = std::clamp(box.y, 0.0, double(height));
  const double right = std::clamp(box.right(), 0.0, double(width));
  const double bottom = std::clamp(box.bottom(), 0.0, double(height));
  return {left, top, right - left, bottom - top};
}

/// The pixels a person covers, drawn alone: coverage (0 to 255) over the frame pixels
/// [x0, x0 + w) x [y0, y0 + h), which hold the whole figure.
struct Silhouette {
  int x0 = 0, y0 = 0, w = 0, h = 0;
  std::vector<uint8_t> coverage;
  bool covers(int x, int y) const {
    return x >= x0 && x < x0 + w && y >= y0 && y < y0 + h && coverage[(y - y0) * w + (x - x0)] >= 128;
  }
};

}  // namespace detail

inline Walker random_walker(const Stage& stage, Rng& rng) {
  Walker walker;
  walker.identity = street::random_identity(rng);
  walker.middle_x = uniform(rng, 0.1, 0.9) * stage.width;
  walker.middle_feet = uniform(rng, stage.far_feet, stage.near_feet);
  const double side = uniform(rng, 0, 1) < 0.5 ? -1 : 1;
  if (uniform(rng, 0, 1) < 0.25) {  // towards or away from the camera, slowly
    walker.speed_x = side * uniform(rng, 0, 0.002) * stage.width;
    walker.speed_feet = (uniform(rng, 0, 1) < 0.5 ? -1 : 1) * uniform(rng, 0.002, 0.004) * stage.height;
  } else {  // across the scene
    walker.speed_x = side * uniform(rng, 0.006, 0.016) * stage.width;
    walker.speed_feet = uniform(rng, -0.0008, 0.0008) * stage.height;
  }
  walker.phase = uniform(rng, 0, 6.3);
  return walker;
}

/// Where `walker` is in frame `frame` (1-based) of a sequence of `frames`.
inline Pose pose_of(const Walker& walker, const Stage& stage, int frame, int frames) {
  const double t = frame - (frames + 1) / 2.0;
  Pose pose;
  double direction_x = 1, direction_feet = 1;
  pose.x = detail::bounce(walker.middle_x + walker.speed_x * t, stage.min_x, stage.max_x, direction_x);
  pose.feet = detail::bounce(walker.middle_feet + walker.speed_feet * t, stage.far_feet,
                             stage.near_feet, direction_feet);
  pose.size = stage.size_at(pose.feet) * walker.identity.stature;
  const double moving_x = walker.speed_x * direction_x, moving_feet = walker.speed_feet * direction_feet;
  if (std::abs(moving_x) >= std::abs(moving_feet)) {
    pose.view = moving_x < 0 ? 2 : 3;  // facing left or right
  } else {
    pose.view = moving_feet > 0 ? 0 : 1;  // coming closer: front; going away: back
  }
  // A stride every ~0.6 of their height: the phase turns by pi per stride.
  const double step = std::hypot(walker.speed_x, walker.speed_feet);
  pose.phase = walker.phase + std::abs(t) * step * M_PI / (0.6 * std::max(1.0, pose.size));
  return pose;
}

/// `walker` at `pose`, drawn alone into a coverage mask.
inline detail::Silhouette silhouette_of(const Walker& walker, const Pose& pose) {
  detail::Silhouette silhouette;
  silhouette.x0 = static_cast<int>(std::floor(pose.x - 0.45 * pose.size)) - 1;
  silhouette.y0 = static_cast<int>(std::floor(pose.feet - 1.05 * pose.size)) - 1;
  silhouette.w = static_cast<int>(std::ceil(0.9 * pose.size)) + 3;
  silhouette.h = static_cast<int>(std::ceil(1.1 * pose.size)) + 3;
  examples::SurfacePtr mask(cairo_image_surface_create(CAIRO_FORMAT_A8, silhouette.w, silhouette.h),
                            cairo_surface_destroy);
  {
    examples::CairoPtr cr(cairo_create(mask.get()), cairo_destroy);
    cairo_translate(cr.get(), -silhouette.x0, -silhouette.y0);
    street::draw_person_at(cr.get(), walker.identity, pose.x, pose.feet, pose.size, pose.view, pose.phase);
  }
  cairo_surface_flush(mask.get());
  const unsigned char* data = cairo_image_surface_get_data(mask.get());
  const int stride = cairo_image_surface_get_stride(mask.get());
  silhouette.coverage.resize(static_cast<size_t>(silhouette.w) * silhouette.h);
  for (int y = 0; y < silhouette.h; ++y) {
    std::copy_n(data + y * stride, silhouette.w, silhouette.coverage.begin() + y * silhouette.w);
  }
  return silhouette;
}

struct SequenceCounts {
  int frames = 0, people = 0, boxes = 0, detections = 0;
};

/// One ground-truth row: frame, id, box, visibility.
struct TruthRow {
  int frame = 0, id = 0;
  Box box;  // clipped, 0-based, whole pixels
  double visibility = 0;
};

/// Draws the sequence into `root` (which must exist), named `name` in seqinfo.ini: see the top
/// of this header.
inline SequenceCounts write_toy_sequence(const SequenceOptions& s, const fs::path& root,
                                         const std::string& name) {
  if (s.frames < 2 || s.people < 1 || s.width < 64 || s.height < 64 || s.frame_rate < 1) {
    throw std::runtime_error("the toy sequence needs at least 2 frames, 1 person, a frame of at "
                             "least 64 x 64 pixels and a frame rate of at least 1");
  }
  for (const char* folder : {"img1", "gt", "det"}) fs::create_directories(root / folder);
  Rng rng = reidnet::sample_rng(s.seed, 0, 0);
  auto camera = street::random_camera(rng);
  camera.horizon = uniform(rng, 0.36, 0.44);
  Stage stage;
  stage.width = s.width;
  stage.height = s.height;
  stage.horizon = camera.horizon * s.height;
  stage.far_feet = stage.horizon + 0.45 * (s.height - stage.horizon);
  stage.near_feet = s.height * 0.98;
  stage.min_x = -0.3 * s.width;
  stage.max_x = 1.3 * s.width;
  std::vector<Walker> walkers;
  for (int p = 0; p < s.people; ++p) walkers.push_back(random_walker(stage, rng));

  // The camera does not move: its scene is drawn once.
  using examples::CairoPtr;
  using examples::SurfacePtr;
  SurfacePtr background(cairo_image_surface_create(CAIRO_FORMAT_RGB24, s.width, s.height),
                        cairo_surface_destroy);
  {
    CairoPtr cr(cairo_create(background.get()), cairo_destroy);
    street::draw_background(cr.get(), camera, s.width, s.height, rng);
  }

  SequenceCounts counts;
  counts.frames = s.frames;
  counts.people = s.people;
  std::string truth_text, detection_text;
  for (int frame = 1; frame <= s.frames; ++frame) {
    std::vector<Pose> poses;
    for (const auto& walker : walkers) poses.push_back(pose_of(walker, stage, frame, s.frames));
    std::vector<size_t> far_to_near(walkers.size());
    for (size_t i = 0; i < far_to_near.size(); ++i) far_to_near[i] = i;
    std::stable_sort(far_to_near.begin(), far_to_near.end(),
                     [&](size_t a, size_t b) { return poses[a].feet < poses[b].feet; });

    SurfacePtr picture(cairo_image_surface_create(CAIRO_FORMAT_RGB24, s.width, s.height),
                       cairo_surface_destroy);
    {
      CairoPtr cr(cairo_create(picture.get()), cairo_destroy);
      cairo_set_source_surface(cr.get(), background.get(), 0, 0);
      cairo_paint(cr.get());
      for (const size_t i : far_to_near) {
        const auto& pose = poses[i];
        street::draw_person_at(cr.get(), walkers[i].identity, pose.x, pose.feet, pose.size,
                               pose.view, pose.phase);
      }
    }
    Rng frame_rng = reidnet::sample_rng(s.seed, 1, frame);
    const auto image = develop(examples::pixels_of(picture.get()).to(torch::kFloat),
                               camera.gain, camera.cast, frame_rng);
    reidnet::write_jpeg((root / "img1" / fmt::format("{:06d}.jpg", frame)).string(), image, s.quality);

    // Ground truth, in id order, from the silhouettes: the tight box of a person's pixels in
    // the frame, and the part of their pixels that is in the frame and not behind someone nearer.
    std::vector<detail::Silhouette> silhouettes;
    for (size_t i = 0; i < walkers.size(); ++i) silhouettes.push_back(silhouette_of(walkers[i], poses[i]));
    std::vector<TruthRow> truth;
    for (size_t i = 0; i < walkers.size(); ++i) {
      const auto& own = silhouettes[i];
      int64_t pixels = 0, in_frame = 0, visible = 0;
      int left = s.width, top = s.height, right = -1, bottom = -1;
      for (int y = own.y0; y < own.y0 + own.h; ++y) {
        for (int x = own.x0; x < own.x0 + own.w; ++x) {
          if (!own.covers(x, y)) continue;
          ++pixels;
          if (x < 0 || x >= s.width || y < 0 || y >= s.height) continue;
          ++in_frame;
          left = std::min(left, x), right = std::max(right, x);
          top = std::min(top, y), bottom = std::max(bottom, y);
          bool hidden = false;
          for (size_t j = 0; j < walkers.size() && !hidden; ++j) {
            hidden = j != i && poses[j].feet > poses[i].feet && silhouettes[j].covers(x, y);
          }
          visible += hidden ? 0 : 1;
        }
      }
      if (pixels == 0 || in_frame < kMinInFrame * pixels || right - left < 2 || bottom - top < 2) continue;
      TruthRow row;
      row.frame = frame;
      row.id = static_cast<int>(i) + 1;
      row.box = {double(left), double(top), double(right - left + 1), double(bottom - top + 1)};
      row.visibility = static_cast<double>(visible) / pixels;
      truth.push_back(row);
    }
    Rng detector_rng = reidnet::sample_rng(s.seed, 2, frame);
    std::vector<std::string> detections;
    for (const auto& row : truth) {
      truth_text += fmt::format("{},{},{},{},{},{},1,1,{:.5f}\n", row.frame, row.id, row.box.x + 1,
                                row.box.y + 1, row.box.w, row.box.h, row.visibility);
      ++counts.boxes;
      const bool missed = uniform(detector_rng, 0, 1) < kMissRate;
      Box jittered{row.box.x + row.box.w * uniform(detector_rng, -0.05, 0.05),
                   row.box.y + row.box.h * uniform(detector_rng, -0.03, 0.03),
                   row.box.w * uniform(detector_rng, 0.94, 1.06),
                   row.box.h * uniform(detector_rng, 0.96, 1.04)};
      const double confidence = std::clamp(0.3 + 0.6 * row.visibility + uniform(detector_rng, -0.1, 0.1), 0.05, 0.99);
      if (missed || row.visibility < kMinDetectedVisibility) continue;
      jittered = detail::clip(jittered, s.width, s.height);
      detections.push_back(fmt::format("{},-1,{:.2f},{:.2f},{:.2f},{:.2f},{:.3f},-1,-1,-1\n", frame,
                                       jittered.x + 1, jittered.y + 1, jittered.w, jittered.h,
                                       confidence));
    }
    reidnet::detail::shuffle(detections, detector_rng);
    for (const auto& line : detections) detection_text += line;
    counts.detections += static_cast<int>(detections.size());
  }

  const auto write_text = [](const fs::path& path, const std::string& text) {
    std::ofstream file(path, std::ios::binary);
    file << text;
    if (!file.flush()) throw std::runtime_error("cannot write " + path.string());
  };
  write_text(root / "gt" / "gt.txt", truth_text);
  write_text(root / "det" / "det.txt", detection_text);
  write_text(root / "seqinfo.ini",
             fmt::format("[Sequence]\nname={}\nimDir=img1\nframeRate={}\nseqLength={}\nimWidth={}\n"
                         "imHeight={}\nimExt=.jpg\n",
                         name, s.frame_rate, s.frames, s.width, s.height));
  return counts;
}

/// Writes the sequence into `out` through write_folder_atomically, so that `out` is either
/// complete or absent; seqinfo.ini's name is `out`'s folder name. Throws std::runtime_error.
inline SequenceCounts create_toy_sequence(const SequenceOptions& options, const std::string& out) {
  const fs::path target(out);
  try {
    if (!target.parent_path().empty()) fs::create_directories(target.parent_path());
    auto name = target.lexically_normal().filename().string();
    if (name.empty()) name = target.lexically_normal().parent_path().filename().string();  // "SEQ/"
    return reidnet::detail::write_folder_atomically(out, [&](const fs::path& folder) {
      return write_toy_sequence(options, folder, name);
    });
  } catch (const std::exception& failure) {
    throw std::runtime_error("cannot write the toy sequence to " + out + ": " + failure.what());
  }
}

}  // namespace reidnet::toy::sequence
