#pragma once
/// How the process's C heap treats the large buffers of CPU tensors.
///
///     reidnet::reuse_freed_host_memory();  // once, at the start of a training or inference program

// First: any C or C++ library header defines __GLIBC__ (through <features.h>), which the
// test below needs.
#include <climits>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace reidnet {

/// Makes glibc keep freed memory for reuse instead of handing every large tensor buffer back
/// to the OS. By default glibc maps each buffer over 32 MiB afresh and unmaps it when freed, so
/// every training step of FtNet at batch 16 faults in and zero-fills ~600 MB of new pages
/// (~10% of the step on a 2-core machine); with this, the buffers of one step are reused by
/// the next. The price: the process keeps its peak heap until it exits. Returns false where
/// it does not apply (not glibc), and changes nothing there.
inline bool reuse_freed_host_memory() {
#if defined(__GLIBC__)
  return mallopt(M_MMAP_MAX, 0) == 1 &&           // large blocks from the heap, not mmap
         mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1 &&  // do not give the heap's top back
         mallopt(M_TOP_PAD, 256 << 20) == 1;          // grow it in large steps
#else
  return false;
#endif
}

}  // namespace reidnet
