#pragma once
/// Umbrella header: every reidnet module and tool that needs only LibTorch and fmt.
/// Image decoding and data loading (libjpeg-turbo, libpng) are in <reidnet/data.hpp>.
///
///     #include <reidnet/reidnet.hpp>
///     reidnet::FtNet net(751);

#include <reidnet/core/autocast.hpp>
#include <reidnet/core/cpu_threads.hpp>
#include <reidnet/core/errors.hpp>
#include <reidnet/core/host_memory.hpp>
#include <reidnet/core/memory_format.hpp>
#include <reidnet/core/version.hpp>

#include <reidnet/io/checkpoint.hpp>
#include <reidnet/io/npy.hpp>
#include <reidnet/io/retrieval_features.hpp>
#include <reidnet/io/state_dict.hpp>

#include <reidnet/models/layers/attention.hpp>
#include <reidnet/models/layers/batch_norm.hpp>
#include <reidnet/models/layers/convnext.hpp>
#include <reidnet/models/layers/drop_path.hpp>
#include <reidnet/models/layers/eva.hpp>
#include <reidnet/models/layers/hrnet.hpp>
#include <reidnet/models/layers/ibn.hpp>
#include <reidnet/models/layers/init.hpp>
#include <reidnet/models/layers/mbconv.hpp>
#include <reidnet/models/layers/mlp.hpp>
#include <reidnet/models/layers/nasnet_cells.hpp>
#include <reidnet/models/layers/omni_scale.hpp>
#include <reidnet/models/layers/pooling.hpp>
#include <reidnet/models/layers/residual_blocks.hpp>
#include <reidnet/models/layers/swin.hpp>
#include <reidnet/models/layers/swinv2.hpp>
#include <reidnet/models/layers/usam.hpp>
#include <reidnet/models/layers/vision_transformer.hpp>
#include <reidnet/models/layers/windows.hpp>

#include <reidnet/models/backbones/backbone.hpp>
#include <reidnet/models/backbones/convnext.hpp>
#include <reidnet/models/backbones/densenet.hpp>
#include <reidnet/models/backbones/efficientnet.hpp>
#include <reidnet/models/backbones/eva.hpp>
#include <reidnet/models/backbones/hrnet.hpp>
#include <reidnet/models/backbones/nasnet.hpp>
#include <reidnet/models/backbones/osnet.hpp>
#include <reidnet/models/backbones/resnet.hpp>
#include <reidnet/models/backbones/swin.hpp>
#include <reidnet/models/backbones/swinv2.hpp>
#include <reidnet/models/backbones/usam_resnet.hpp>
#include <reidnet/models/backbones/vit.hpp>

#include <reidnet/models/heads/bnneck.hpp>
#include <reidnet/models/heads/class_block.hpp>
#include <reidnet/models/heads/osnet_head.hpp>
#include <reidnet/models/heads/part_head.hpp>

#include <reidnet/models/baseline_wrappers.hpp>
#include <reidnet/models/ft_net.hpp>
#include <reidnet/models/model_zoo.hpp>
#include <reidnet/models/osnet.hpp>
#include <reidnet/models/reid_model.hpp>

#include <reidnet/solver/grad_scaler.hpp>
#include <reidnet/solver/losses.hpp>
#include <reidnet/solver/optim.hpp>
#include <reidnet/solver/optimizer_state.hpp>
#include <reidnet/solver/schedules.hpp>

#include <reidnet/inference/inference.hpp>

#include <reidnet/evaluation/evaluate.hpp>
#include <reidnet/evaluation/features.hpp>
#include <reidnet/evaluation/re_ranking.hpp>

#include <reidnet/engine/run_folder.hpp>
