#pragma once
/// The engine, for the reidnet::engine target (reidnet::data and yaml-cpp): the description of
/// a run and its opts.yaml, the training step, the trainer with its hooks and checkpointer,
/// and the evaluator.
///
///     #include <reidnet/engine.hpp>
///     target_link_libraries(my_app PRIVATE reidnet::engine)

#include <reidnet/data.hpp>
#include <reidnet/engine/evaluator.hpp>
#include <reidnet/engine/run_config.hpp>
#include <reidnet/engine/run_folder.hpp>
#include <reidnet/engine/trainer.hpp>
#include <reidnet/engine/training_step.hpp>
#include <reidnet/reidnet.hpp>
