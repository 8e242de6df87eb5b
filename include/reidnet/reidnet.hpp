#pragma once
/// Umbrella header: every reidnet module and tool.
///
///     #include <reidnet/reidnet.hpp>
///     reidnet::FtNet net(751);

#include <reidnet/class_block.hpp>
#include <reidnet/ft_net.hpp>
#include <reidnet/inference.hpp>
#include <reidnet/init.hpp>
#include <reidnet/residual_blocks.hpp>
#include <reidnet/resnet.hpp>
#include <reidnet/state_dict.hpp>
#include <reidnet/version.hpp>
