#pragma once
/// Umbrella header of the data pipeline: images, transforms, data sets and the loader, and
/// MOTChallenge sequences with the embeddings of their detection boxes.
/// Needs the CMake target reidnet::data (libjpeg-turbo, libpng); the models need only
/// reidnet::reidnet and <reidnet/reidnet.hpp>.
///
///     #include <reidnet/data.hpp>
///     auto data = reidnet::read_dataset("Market-1501-v15.09.15");

#include <reidnet/data/box_crops.hpp>
#include <reidnet/data/data_loader.hpp>
#include <reidnet/data/datasets.hpp>
#include <reidnet/data/image.hpp>
#include <reidnet/data/model_input.hpp>
#include <reidnet/data/mot_sequence.hpp>
#include <reidnet/data/opencv_resize.hpp>
#include <reidnet/data/transforms.hpp>
#include <reidnet/inference/box_embeddings.hpp>  // the crops of detection boxes, embedded
