#pragma once
/// reidnet's version, for programs that report what they were built with.

#define REIDNET_VERSION_MAJOR 0
#define REIDNET_VERSION_MINOR 1
#define REIDNET_VERSION_PATCH 0

namespace reidnet {
inline constexpr const char* version = "0.1.0";
}  // namespace reidnet
