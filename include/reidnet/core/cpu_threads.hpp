#pragma once
/// How many CPU threads LibTorch runs on, and what the BLAS library under it does meanwhile.
///
/// LibTorch parallelises on OpenMP threads. Debian's default OpenBLAS (openblas-pthread) keeps a
/// pool of its own beside them, whose threads spin for a while after each call; where LibTorch
/// already has a thread on every core they take the cores from its convolutions (on 2 cores,
/// OSNet at batch 1 ran 3.1x slower, ft_net 3.3x under LibTorch 2.6). The OpenMP build of
/// OpenBLAS (Debian's libopenblas0-openmp, chosen with update-alternatives) shares LibTorch's
/// threads instead. set_cpu_threads sets LibTorch's count and, where the process runs the
/// pthread build, caps its pool at one thread: BLAS calls then run on the thread that makes
/// them (a single large matrix product, as in the transformers' Linear layers, loses its second
/// thread: ViT-B/16 ran 15% slower).
///
///     const auto cpu = reidnet::set_cpu_threads(4);
///     std::cout << cpu.describe() << '\n';   // "4 threads; OpenBLAS (pthread build) capped at 1"

#include <c10/util/Exception.h>
#include <torch/utils.h>

#include <dlfcn.h>

#include <string>

namespace reidnet {

/// What set_cpu_threads found and did.
struct CpuThreads {
  int threads = 1;
  /// "OpenBLAS (OpenMP build)", "OpenBLAS (pthread build) capped at 1 thread", ..., or "no
  /// OpenBLAS" where LibTorch uses another BLAS (MKL's follows LibTorch's count itself).
  std::string blas;

  std::string describe() const { return std::to_string(threads) + " threads; " + blas; }
};

/// LibTorch's intra-op threads, and OpenBLAS's pool as above; found at run time (the symbols
/// of the OpenBLAS that LibTorch loaded), so that nothing links against OpenBLAS.
inline CpuThreads set_cpu_threads(int threads) {
  TORCH_CHECK(threads > 0, "set_cpu_threads: threads must be positive, got ", threads);
  torch::set_num_threads(threads);
  CpuThreads out;
  out.threads = threads;
  using GetParallel = int (*)();
  using SetThreads = void (*)(int);
  const auto get_parallel = reinterpret_cast<GetParallel>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"));
  const auto set_blas_threads = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (get_parallel == nullptr || set_blas_threads == nullptr) {
    out.blas = "no OpenBLAS";
    return out;
  }
  switch (get_parallel()) {  // OpenBLAS's USE_OPENMP / USE_THREAD build flavour
    case 0: out.blas = "OpenBLAS (single-threaded build)"; break;
    case 2: out.blas = "OpenBLAS (OpenMP build)"; break;
    default:
      set_blas_threads(1);
      out.blas = "OpenBLAS (pthread build) capped at 1 thread";
  }
  return out;
}

}  // namespace reidnet
