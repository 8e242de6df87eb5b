#pragma once
/// Embeddings of detection boxes in a frame, one batch per frame: what a multi-object tracker
/// (DeepSORT, StrongSORT, BoT-SORT, BoxMOT) asks of its ReID model.
///
///     auto fast = reidnet::optimize_for_inference(model, reidnet::InferenceOptions().device(torch::kCUDA));
///     auto frame = reidnet::read_image("img1/000001.jpg");           // uint8 [H, W, 3]
///     auto boxes = torch::tensor({{10.f, 20.f, 50.f, 120.f}}).view({-1, 4});  // x, y, w, h
///     auto result = reidnet::embed_boxes(fast, model->config(), frame, boxes);
///     // result.embeddings: (N, D), row i for box i; result.valid, result.rejected
///
/// The crops follow data/box_crops.hpp: boxes clamped to the frame, the config's input size and
/// normalisation, and its resize (OpenCV's INTER_LINEAR for "bilinear" configs such as
/// torchreid's OSNets, PIL's bicubic for the baseline's; CropResize picks another), cut and
/// resized on the model's device (on CUDA from one upload of the frame).
///
/// A box that covers no pixel of the frame (NaN, zero size, wholly outside) keeps its row, all
/// zeros, with valid[i] false and an entry in `rejected`: row i stays box i, as a tracker
/// indexes features by detection, and a zero vector has no cosine similarity to anything, so
/// it never wins a match (deep_sort's generate_detections.py embeds random noise instead).

#include <reidnet/data/box_crops.hpp>
#include <reidnet/inference/inference.hpp>
#include <reidnet/models/reid_model.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace reidnet {

struct BoxEmbeddingOptions {
  TORCH_ARG(CropResize, resize) = CropResize::kConfig;
  /// L2-normalise each embedding (what trackers compare by cosine distance).
  TORCH_ARG(bool, normalize) = true;
  /// Crops per forward pass; 0: the whole frame's in one batch.
  TORCH_ARG(int64_t, batch_size) = 0;
};

struct BoxEmbeddings {
  /// (N, D) float32 on the model's device; zeros in the rows of rejected boxes.
  torch::Tensor embeddings;
  /// (N,) bool on the CPU: which boxes were embedded.
  torch::Tensor valid;
  std::vector<RejectedBox> rejected;
};

namespace detail {

template <class Embed>
BoxEmbeddings embed_box_crops(Embed&& embed, int64_t feature_dim, torch::Device device,
                              const ModelConfig& config, const torch::Tensor& frame,
                              const torch::Tensor& boxes, const BoxEmbeddingOptions& options) {
  if (options.batch_size() < 0) throw std::invalid_argument("embed_boxes: batch_size must be >= 0");
  auto crops = crop_boxes(frame, boxes, config, CropOptions().resize(options.resize()).device(device));
  const int64_t count = crops.valid.size(0), kept = crops.images.size(0);
  const int64_t batch = options.batch_size() > 0 ? options.batch_size() : std::max<int64_t>(kept, 1);
  std::vector<torch::Tensor> parts;
  for (int64_t begin = 0; begin < kept; begin += batch) {
    parts.push_back(embed(crops.images.slice(0, begin, std::min(kept, begin + batch))).to(torch::kFloat32));
  }
  auto features = torch::zeros({count, feature_dim}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
  if (kept > 0) {
    auto embedded = torch::cat(parts);
    if (options.normalize()) {
      embedded = torch::nn::functional::normalize(embedded, torch::nn::functional::NormalizeFuncOptions().dim(1));
    }
    features.index_put_({crops.valid.to(device)}, embedded);
  }
  return {features, crops.valid, std::move(crops.rejected)};
}

}  // namespace detail

/// The embeddings of `boxes` ((N, 4) x, y, w, h in pixels) in `frame` (uint8 [H, W, 3] RGB)
/// with an optimised model on its device; `config` is the model's (ReidModel::config(): the
/// InferenceModel does not keep it).
inline BoxEmbeddings embed_boxes(const InferenceModel& model, const ModelConfig& config,
                                 const torch::Tensor& frame, const torch::Tensor& boxes,
                                 const BoxEmbeddingOptions& options = {}) {
  return detail::embed_box_crops([&model](const torch::Tensor& images) { return model.embed(images); },
                                 model.feature_dim(), model.device(), config, frame, boxes, options);
}

/// The same with the module itself (in eval mode), on the device of its parameters.
inline BoxEmbeddings embed_boxes(ReidModelImpl& model, const torch::Tensor& frame,
                                 const torch::Tensor& boxes, const BoxEmbeddingOptions& options = {}) {
  if (model.is_training()) {
    throw std::invalid_argument("embed_boxes: the model is in training mode; call eval() first");
  }
  const auto parameters = model.parameters();
  const auto device = parameters.empty() ? torch::Device(torch::kCPU) : parameters.front().device();
  torch::NoGradGuard no_grad;
  return detail::embed_box_crops([&model](const torch::Tensor& images) { return model.embed(images); },
                                 model.feature_dim(), device, model.config(), frame, boxes, options);
}

template <class Impl, class = std::enable_if_t<std::is_base_of_v<ReidModelImpl, Impl>>>
BoxEmbeddings embed_boxes(torch::nn::ModuleHolder<Impl>& model, const torch::Tensor& frame,
                          const torch::Tensor& boxes, const BoxEmbeddingOptions& options = {}) {
  return embed_boxes(static_cast<ReidModelImpl&>(*model), frame, boxes, options);
}

}  // namespace reidnet
