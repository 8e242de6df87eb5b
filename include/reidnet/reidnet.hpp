#pragma once
/// Umbrella header: every reidnet module and tool that needs only LibTorch and fmt.
/// Image decoding and data loading (libjpeg-turbo, libpng) are in <reidnet/data.hpp>.
///
///     #include <reidnet/reidnet.hpp>
///     reidnet::FtNet net(751);

#include <reidnet/autocast.hpp>
#include <reidnet/backbone.hpp>
#include <reidnet/bnneck.hpp>
#include <reidnet/checkpoint.hpp>
#include <reidnet/class_block.hpp>
#include <reidnet/densenet.hpp>
#include <reidnet/errors.hpp>
#include <reidnet/evaluate.hpp>
#include <reidnet/features.hpp>
#include <reidnet/ft_net.hpp>
#include <reidnet/grad_scaler.hpp>
#include <reidnet/host_memory.hpp>
#include <reidnet/ibn.hpp>
#include <reidnet/inference.hpp>
#include <reidnet/init.hpp>
#include <reidnet/losses.hpp>
#include <reidnet/memory_format.hpp>
#include <reidnet/model_zoo.hpp>
#include <reidnet/optim.hpp>
#include <reidnet/optimizer_state.hpp>
#include <reidnet/part_head.hpp>
#include <reidnet/pooling.hpp>
#include <reidnet/re_ranking.hpp>
#include <reidnet/reid_model.hpp>
#include <reidnet/residual_blocks.hpp>
#include <reidnet/resnet.hpp>
#include <reidnet/run_folder.hpp>
#include <reidnet/schedules.hpp>
#include <reidnet/state_dict.hpp>
#include <reidnet/usam.hpp>
#include <reidnet/usam_resnet.hpp>
#include <reidnet/version.hpp>
