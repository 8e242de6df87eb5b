#pragma once
// Scratch folders that a test case removes once it passes. The program and distributed topics
// write a ResNet-50 run folder (100-400 MB) per case; kept, they add up to gigabytes per build.
// A failing case keeps its folders, so that they can be looked at.
#include <filesystem>
#include <vector>

namespace reidnet::test {

/// The folders that the running test case asked to have removed if it passes.
inline std::vector<std::filesystem::path>& scratch_of_running_case() {
  static std::vector<std::filesystem::path> folders;
  return folders;
}

/// `folder`, unchanged, marked to be removed when the running test case ends without a failure.
inline std::filesystem::path scratch(std::filesystem::path folder) {
  scratch_of_running_case().push_back(folder);
  return folder;
}

}  // namespace reidnet::test
