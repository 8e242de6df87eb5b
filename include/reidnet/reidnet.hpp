#pragma once
/// Umbrella header: every reidnet module and tool that needs only LibTorch and fmt.
/// Image decoding and data loading (libjpeg-turbo, libpng) are in <reidnet/data.hpp>.
///
///     #include <reidnet/reidnet.hpp>
///     reidnet::FtNet net(751);

#include <reidnet/autocast.hpp>
#include <reidnet/checkpoint.hpp>
#include <reidnet/class_block.hpp>
#include <reidnet/evaluate.hpp>
#include <reidnet/features.hpp>
#include <reidnet/ft_net.hpp>
#include <reidnet/grad_scaler.hpp>
#include <reidnet/host_memory.hpp>
#include <reidnet/inference.hpp>
#include <reidnet/init.hpp>
#include <reidnet/losses.hpp>
#include <reidnet/memory_format.hpp>
#include <reidnet/optim.hpp>
#include <reidnet/optimizer_state.hpp>
#include <reidnet/re_ranking.hpp>
#include <reidnet/residual_blocks.hpp>
#include <reidnet/resnet.hpp>
#include <reidnet/run_folder.hpp>
#include <reidnet/schedules.hpp>
#include <reidnet/state_dict.hpp>
#include <reidnet/version.hpp>
