#pragma once
/// Data-parallel training over several processes, on LibTorch's own c10d engine: a TCPStore
/// rendezvous, Gloo (CPU) or NCCL (CUDA) collectives, and c10d's Reducer, which averages
/// gradients in buckets while backward still runs. It is what torch.nn.parallel.
/// DistributedDataParallel drives from Python, driven the same way, so that a step equals a
/// PyTorch DDP step.
///
///     auto launch = reidnet::LaunchEnvironment::from_environment();   // torchrun's variables
///     auto group = reidnet::ProcessGroup::connect(*launch, torch::kCPU);
///     reidnet::GradientAverager averager(*model, group);   // rank 0's weights everywhere
///     for (auto& batch : loader.epoch(epoch)) {             // a shard per rank
///       averager.before_forward();                          // rank 0's BatchNorm buffers
///       auto loss = criterion(model->forward(batch.images), batch.labels);
///       optimizer.zero_grad();
///       averager.before_backward({loss});
///       loss.backward();                                    // returns with averaged gradients
///       optimizer.step();
///     }
///
/// Every rank must issue the same collectives in the same order: the same number of steps
/// per epoch (LoaderOptions::shard gives that) and every trainable parameter used by every
/// step.
///
/// What a job exposes on the network. The ranks first meet at a key-value store (the
/// rendezvous), then Gloo connects every rank to every other (NCCL bootstraps through its own
/// sockets, chosen by NCCL_SOCKET_IFNAME). Anyone who reaches the store's port can join the job
/// or read and overwrite its keys, so where the store and Gloo listen matters:
///
/// - Under reidnet::run_local_workers (`reidnet-train --nproc-per-node N`), every rank is on this
///   machine, and the launcher hands its workers a c10d FileStore in a fresh private folder
///   (REIDNET_STORE_FILE, mode 0700, removed when the job ends), and Gloo binds to 127.0.0.1
///   (unless GLOO_SOCKET_IFNAME names an interface). Nothing listens beyond loopback (with
///   NCCL, its bootstrap too only where NCCL_SOCKET_IFNAME=lo is set). A file,
///   not a TCPStore on 127.0.0.1: LibTorch 1.13's TCPStore cannot be told where to listen
///   (it binds every interface, IPv4 and IPv6), and even a loopback port can be joined by any
///   local user, whereas the folder is closed to other users on every LibTorch.
/// - Under torchrun's variables, rank 0 serves a TCPStore on MASTER_PORT. On LibTorch 2.4 and
///   later rank 0 makes the listening socket itself, bound to the address MASTER_ADDR resolves
///   to (TCPStoreOptions::masterListenFd), so a loopback MASTER_ADDR keeps the store on
///   loopback and a host's address keeps it on that interface. Two cases still listen on every
///   interface, as LibTorch does: a MASTER_ADDR that is a host name resolving to loopback here
///   while the job may span machines (Debian maps the host name to 127.0.1.1; other machines
///   resolve it to the host's real address), and one whose address is not on this machine (a
///   Kubernetes service address); the second prints a warning. LibTorch 1.13 offers no way to
///   choose the store's address: there the store listens on every interface, IPv4 and IPv6,
///   for the whole run; firewall MASTER_PORT, or use --nproc-per-node on one machine.
///   When every rank is on this machine and meets over loopback (a numeric loopback
///   MASTER_ADDR, or one resolving to loopback with LOCAL_WORLD_SIZE equal to WORLD_SIZE),
///   Gloo binds to loopback too; otherwise to GLOO_SOCKET_IFNAME's interface, else to the
///   address the host name resolves to, as torch.distributed does.
///
/// Timeouts. A job has at most kMaxWorldSize ranks. ProcessGroup::connect bounds the whole
/// rendezvous by one deadline, the timeout: every rank checks in at the store, and rank 0 waits
/// for all of them with the time left before Gloo or NCCL builds its mesh (which would
/// otherwise open a connection per rank, each waiting its own timeout). A rank that never
/// comes fails every other rank within the timeout; a rank lost after the rendezvous, within
/// a second timeout.

#include <reidnet/models/layers/batch_norm.hpp>

#include <torch/torch.h>
#include <torch/version.h>

#if !defined(USE_C10D_GLOO)
#error "reidnet/distributed/distributed.hpp needs c10d's Gloo backend: build with USE_C10D_GLOO (reidnet's CMake package sets it where LibTorch's Gloo headers are found)"
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#if defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <reidnet/distributed/local_launcher.hpp>

#include <fmt/core.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace reidnet {

/// The most ranks a job may have. The rendezvous and Gloo's mesh cost every rank a socket
/// per other rank, and rank 0's store a connection and a key per rank, so a job of 4096
/// ranks already needs `ulimit -n` raised above the usual 1024; far beyond any re-ID training
/// run, and small enough that a mistyped WORLD_SIZE is refused at once rather than opening
/// thousands of sockets before it times out.
inline constexpr int64_t kMaxWorldSize = 4096;

/// Where this process stands in a job, as torchrun (and SLURM or Kubernetes launchers that
/// mimic it) describes it in the environment.
struct LaunchEnvironment {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
  /// LOCAL_WORLD_SIZE, the ranks on this machine; 0 when the launcher did not say.
  int64_t local_world_size = 0;
  /// The rendezvous file of reidnet::run_local_workers (REIDNET_STORE_FILE); empty for a
  /// TCPStore on MASTER_ADDR:MASTER_PORT.
  std::string store_file;

  /// RANK, WORLD_SIZE (at most kMaxWorldSize), LOCAL_RANK (default: RANK), MASTER_ADDR
  /// (default 127.0.0.1), MASTER_PORT (default 29500), LOCAL_WORLD_SIZE and REIDNET_STORE_FILE
  /// (set by reidnet::run_local_workers only), or nullopt when WORLD_SIZE is unset. A malformed
  /// or inconsistent variable throws std::invalid_argument naming it.
  static std::optional<LaunchEnvironment> from_environment() {
    if (std::getenv("WORLD_SIZE") == nullptr) return std::nullopt;
    LaunchEnvironment launch;
    launch.world_size = integer_variable(
        "WORLD_SIZE", 1, kMaxWorldSize,
        fmt::format(" (reidnet's limit: {} ranks in a job; more is most likely a mistake)", kMaxWorldSize));
    if (std::getenv("RANK") == nullptr) {
      throw std::invalid_argument("WORLD_SIZE is set but RANK is not: set both (torchrun does)");
    }
    launch.rank = integer_variable("RANK", 0, launch.world_size - 1);
    launch.local_rank = std::getenv("LOCAL_RANK") != nullptr
        ? integer_variable("LOCAL_RANK", 0, launch.world_size - 1) : launch.rank;
    if (const char* address = std::getenv("MASTER_ADDR"); address != nullptr && *address != 0) {
      launch.master_addr = address;
    }
    if (std::getenv("MASTER_PORT") != nullptr) launch.master_port = integer_variable("MASTER_PORT", 1, 65535);
    if (std::getenv("LOCAL_WORLD_SIZE") != nullptr) {
      launch.local_world_size = integer_variable("LOCAL_WORLD_SIZE", 1, launch.world_size);
    }
    if (const char* file = std::getenv(kStoreFileVariable); file != nullptr && *file != 0) {
      launch.store_file = file;
      if (launch.store_file.front() != '/') {
        throw std::invalid_argument(fmt::format("environment variable {}='{}': expected an absolute "
                                                "path (reidnet's launcher sets it)", kStoreFileVariable, file));
      }
    }
    return launch;
  }

 private:
  static int64_t integer_variable(const char* name, int64_t low, int64_t high, const std::string& why = "") {
    const std::string text = std::getenv(name);
    size_t used = 0;
    int64_t value = -1;
    try {
      value = std::stoll(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != text.size() || value < low || value > high) {
      throw std::invalid_argument(fmt::format("environment variable {}='{}': expected an integer "
                                              "from {} to {}{}", name, text, low, high, why));
    }
    return value;
  }
};

namespace detail {

/// One address `host` resolves to.
struct ResolvedAddress {
  sockaddr_storage address{};
  socklen_t length = 0;

  int family() const { return address.ss_family; }
  bool is_loopback() const {
    if (family() == AF_INET) {
      const auto& ip = reinterpret_cast<const sockaddr_in&>(address);
      return (ntohl(ip.sin_addr.s_addr) >> 24) == 127;
    }
    if (family() == AF_INET6) {
      const auto& ip = reinterpret_cast<const sockaddr_in6&>(address).sin6_addr;
      if (IN6_IS_ADDR_LOOPBACK(&ip)) return true;
      return IN6_IS_ADDR_V4MAPPED(&ip) && ip.s6_addr[12] == 127;
    }
    return false;
  }
  std::string text() const {
    char buffer[INET6_ADDRSTRLEN] = "?";
    const void* raw = family() == AF_INET6
        ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in6&>(address).sin6_addr)
        : static_cast<const void*>(&reinterpret_cast<const sockaddr_in&>(address).sin_addr);
    ::inet_ntop(family(), raw, buffer, sizeof buffer);
    return buffer;
  }
};

/// The TCP addresses `host` resolves to, with `port`, in getaddrinfo's order; empty when it
/// does not resolve.
inline std::vector<ResolvedAddress> resolve_tcp(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  std::vector<ResolvedAddress> addresses;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return addresses;
  for (const addrinfo* entry = found; entry != nullptr; entry = entry->ai_next) {
    if (entry->ai_family != AF_INET && entry->ai_family != AF_INET6) continue;
    ResolvedAddress address;
    std::memcpy(&address.address, entry->ai_addr, entry->ai_addrlen);
    address.length = static_cast<socklen_t>(entry->ai_addrlen);
    addresses.push_back(address);
  }
  ::freeaddrinfo(found);
  return addresses;
}

inline bool is_numeric_address(const std::string& host) {
  unsigned char buffer[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, host.c_str(), buffer) == 1 || ::inet_pton(AF_INET6, host.c_str(), buffer) == 1;
}

/// The loopback address ("127.0.0.1" or "::1") on which every rank of `launch` meets, or
/// nullopt when the job may span machines: with the launcher's file store, or a MASTER_ADDR
/// that resolves to loopback addresses only and is either numeric or the address of a job
/// whose ranks are all on this machine (LOCAL_WORLD_SIZE == WORLD_SIZE). A host name that
/// resolves to loopback here (Debian's 127.0.1.1) may be another address on the other machines.
inline std::optional<std::string> loopback_job_address(const LaunchEnvironment& launch) {
  if (!launch.store_file.empty()) return std::string("127.0.0.1");
  const auto addresses = resolve_tcp(launch.master_addr, static_cast<uint16_t>(launch.master_port));
  if (addresses.empty()) return std::nullopt;
  for (const auto& address : addresses) {
    if (!address.is_loopback()) return std::nullopt;
  }
  if (!is_numeric_address(launch.master_addr) && launch.local_world_size != launch.world_size) {
    return std::nullopt;
  }
  const bool ipv6_only = std::all_of(addresses.begin(), addresses.end(), [](const ResolvedAddress& address) {
    return address.family() == AF_INET6 && !IN6_IS_ADDR_V4MAPPED(
        &reinterpret_cast<const sockaddr_in6&>(address.address).sin6_addr);
  });
  return std::string(ipv6_only ? "::1" : "127.0.0.1");
}

/// A TCP socket bound to `address` and listening, or -1 with errno set.
inline int listen_on(const ResolvedAddress& address) {
  const int fd = ::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);  // as c10d: restart at once
  if (address.family() == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&address.address), address.length) != 0 ||
      ::listen(fd, SOMAXCONN) != 0) {
    const int error = errno;
    ::close(fd);
    errno = error;
    return -1;
  }
  return fd;
}

/// Rank 0's listening socket for the TCPStore of `launch`: bound to the address MASTER_ADDR
/// resolves to (a loopback one where every rank meets over loopback, else the first
/// non-loopback one), or -1 where the store must listen on every interface, as LibTorch's
/// own does: a host name resolving to loopback in a job that may span machines, or an address
/// that is not this machine's (then with a warning). Throws std::runtime_error when the port
/// is taken.
inline int listen_on_master_address(const LaunchEnvironment& launch) {
  const auto port = static_cast<uint16_t>(launch.master_port);
  const bool loopback = loopback_job_address(launch).has_value();
  int error = 0;
  for (const auto& address : resolve_tcp(launch.master_addr, port)) {
    if (address.is_loopback() != loopback) continue;
    const int fd = listen_on(address);
    if (fd >= 0) return fd;
    error = errno;
    if (error != EADDRNOTAVAIL) {
      throw std::runtime_error(fmt::format("cannot listen on {} port {}: {}", address.text(), port,
                                           std::strerror(error)));
    }
  }
  if (error == EADDRNOTAVAIL) {
    fmt::print(stderr, "reidnet: MASTER_ADDR {} is not an address of this machine, so rank 0's "
               "store listens on port {} of every interface\n", launch.master_addr, port);
  }
  return -1;
}

/// Whether something at `host`:`port` accepted a TCP connection before `deadline`, trying
/// every address it resolves to every 100 ms. A rank other than 0 waits for rank 0's store so
/// before it connects: LibTorch 2.x's TCPStore client, refused, retries after its own timeout
/// and a growing back-off sleep, which would let a job with no rank 0 run well past the
/// timeout.
inline bool wait_until_accepting(const std::string& host, uint16_t port,
                                 std::chrono::steady_clock::time_point deadline) {
  using namespace std::chrono;
  for (;;) {
    for (const auto& address : resolve_tcp(host, port)) {
      const int fd = ::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      if (fd < 0) continue;
      bool accepted = ::connect(fd, reinterpret_cast<const sockaddr*>(&address.address), address.length) == 0;
      if (!accepted && errno == EINPROGRESS) {
        const auto left = duration_cast<milliseconds>(deadline - steady_clock::now()).count();
        pollfd wait{fd, POLLOUT, 0};
        int error = 0;
        socklen_t size = sizeof error;
        accepted = ::poll(&wait, 1, static_cast<int>(std::clamp<int64_t>(left, 1, 1000))) == 1 &&
                   ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) == 0 && error == 0;
      }
      ::close(fd);
      if (accepted) return true;
    }
    const auto now = steady_clock::now();
    if (now >= deadline) return false;
    std::this_thread::sleep_for(std::min<steady_clock::duration>(milliseconds(100), deadline - now));
  }
}

}  // namespace detail

/// How ProcessGroup::connect reaches the other ranks.
struct ProcessGroupOptions {
  /// "gloo", "nccl", or "" for NCCL on CUDA and Gloo on CPU.
  TORCH_ARG(std::string, backend) = "";
  /// How long the rendezvous and every collective may wait for the other ranks (PyTorch's
  /// default: 30 minutes). A rank that never joins fails the others after this long.
  TORCH_ARG(std::chrono::milliseconds, timeout) = std::chrono::minutes(30);
};

/// The ranks of one job and their communication: a handle on a c10d process group.
class ProcessGroup {
 public:
  /// Joins the job `launch` describes: rank 0 serves a TCPStore on MASTER_ADDR:MASTER_PORT
  /// (or every rank opens the launcher's file store), every rank checks in there, and once all
  /// have, the backend connects every rank to every other. Throws std::invalid_argument for a
  /// world size above kMaxWorldSize, and std::runtime_error naming the address and the timeout
  /// when the others are not reached: within the timeout when a rank never comes.
  static ProcessGroup connect(const LaunchEnvironment& launch, torch::Device device,
                              const ProcessGroupOptions& options = {}) {
    const std::string backend = !options.backend().empty() ? options.backend()
                                : device.is_cuda()         ? "nccl" : "gloo";
    if (backend != "gloo" && backend != "nccl") {
      throw std::invalid_argument("process group backend '" + backend + "': expected gloo or nccl");
    }
    if (launch.world_size < 1 || launch.world_size > kMaxWorldSize || launch.rank < 0 ||
        launch.rank >= launch.world_size) {
      throw std::invalid_argument(fmt::format("rank {} of WORLD_SIZE {}: expected a world size from 1 "
                                              "to {} and a rank below it", launch.rank,
                                              launch.world_size, kMaxWorldSize));
    }
    if (options.timeout() <= std::chrono::milliseconds(0)) {  // c10d reads 0 as "wait forever"
      throw std::invalid_argument("process group timeout: expected a positive duration");
    }
    const auto deadline = std::chrono::steady_clock::now() + options.timeout();
    const bool file = !launch.store_file.empty();
    const auto failure = [&](const char* stage, const std::string& detail) {
      const std::string where = file
          ? fmt::format("the launcher's file store {}", launch.store_file)
          : fmt::format("MASTER_ADDR:MASTER_PORT {}:{}", launch.master_addr, launch.master_port);
      const char* check = file ? "check the other workers' messages"
                               : "check that every rank was started, with the same MASTER_ADDR, "
                                 "MASTER_PORT and WORLD_SIZE";
      return std::runtime_error(fmt::format(
          "rank {} of {} did not reach the other ranks through {} at {} within the {} s timeout "
          "({}); {}", launch.rank, launch.world_size, stage, where,
          options.timeout().count() / 1000.0, detail, check));
    };
    if (!file && launch.rank != 0 &&
        !detail::wait_until_accepting(launch.master_addr, static_cast<uint16_t>(launch.master_port), deadline)) {
      throw failure("the TCPStore", "nothing accepted a connection there");
    }
    c10::intrusive_ptr<c10d::Store> store;
    try {
      store = open_store(launch, options);
    } catch (const std::exception& error) {
      throw failure(file ? "the FileStore" : "the TCPStore", message_of(error));
    }
    try {
      rendezvous(*store, launch, deadline);
    } catch (const std::exception& error) {
      throw failure("the rendezvous", message_of(error));
    }
    store->setTimeout(options.timeout());
    try {  // LibTorch 1.13's TCPStore keeps the last wait's timeout on its connection: re-arm it
      store->wait({kRendezvousPrefix + std::to_string(launch.rank)}, options.timeout());
    } catch (const std::exception& error) {
      throw failure("the rendezvous", message_of(error));
    }
    ProcessGroup group;
    group.rank_ = launch.rank;
    group.size_ = launch.world_size;
    group.local_rank_ = launch.local_rank;
    group.backend_name_ = backend;
    try {
      group.group_ = backend == "gloo" ? make_gloo(store, launch, options)
                                       : make_nccl(store, launch, options);
    } catch (const std::exception& error) {
      throw failure(backend == "gloo" ? "Gloo" : "NCCL", message_of(error));
    }
    return group;
  }

  int64_t rank() const { return rank_; }
  int64_t size() const { return size_; }
  /// The rank among this machine's processes (which GPU it takes).
  int64_t local_rank() const { return local_rank_; }
  /// Rank 0, the one that writes files and whose state the others take.
  bool is_main() const { return rank_ == 0; }
  const std::string& backend_name() const { return backend_name_; }
  /// The c10d process group, for collectives reidnet does not wrap.
  const c10::intrusive_ptr<c10d::ProcessGroup>& c10d_group() const { return group_; }

  /// Sums `tensor` over the ranks, in place.
  void all_reduce_sum(torch::Tensor& tensor) const {
    std::vector<torch::Tensor> tensors{tensor};
    group_->allreduce(tensors)->wait();
  }

  /// Gives every rank `main`'s values of `tensors`, in place, in coalesced buckets.
  void broadcast(const std::vector<torch::Tensor>& tensors, int64_t main = 0) const {
    if (tensors.empty()) return;
    c10d::broadcast_coalesced(group_, tensors, kBroadcastBucketBytes, static_cast<int>(main));
  }

  /// Returns once every rank has called it.
  void barrier() const { group_->barrier()->wait(); }

 private:
  static constexpr size_t kBroadcastBucketBytes = 250u << 20;  // as DistributedDataParallel

  static constexpr const char* kRendezvousPrefix = "reidnet/rendezvous/";

  /// The first line of an error's message, at most 300 characters (c10d's timeouts list every
  /// key waited for), without LibTorch's backtrace.
  static std::string message_of(const std::exception& error) {
    const auto* c10_error = dynamic_cast<const c10::Error*>(&error);
    std::string text = c10_error != nullptr ? c10_error->what_without_backtrace() : error.what();
    text = text.substr(0, text.find('\n'));
    return text.size() > 300 ? text.substr(0, 300) + "..." : text;
  }

  static c10::intrusive_ptr<c10d::Store> open_store(const LaunchEnvironment& launch,
                                                    const ProcessGroupOptions& options) {
    if (!launch.store_file.empty()) {
      auto store = c10::make_intrusive<c10d::FileStore>(launch.store_file, static_cast<int>(launch.world_size));
      store->setTimeout(options.timeout());
      return store;
    }
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(launch.master_port);
    store_options.isServer = launch.rank == 0;
    store_options.numWorkers = static_cast<size_t>(launch.world_size);
    // Not c10d's own wait (in LibTorch 1.13 it gives up silently at the timeout): the
    // rendezvous below waits for every rank, within the same deadline.
    store_options.waitWorkers = false;
    store_options.timeout = options.timeout();
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    store_options.useLibUV = false;  // the default since 2.4, but optional in LibTorch builds
    // masterListenFd (older than useLibUV): the store takes over a socket rank 0 bound to
    // MASTER_ADDR's address, instead of listening on every interface.
    if (store_options.isServer) {
      if (const int fd = detail::listen_on_master_address(launch); fd >= 0) store_options.masterListenFd = fd;
    }
#endif
    return c10::make_intrusive<c10d::TCPStore>(launch.master_addr, store_options);
  }

  /// Every rank checks in at the store; rank 0 waits for all of them, then tells the others.
  /// All within `deadline`: a rank that never comes fails the others by then, before the
  /// backend opens a connection to each rank and waits for each in turn.
  static void rendezvous(c10d::Store& store, const LaunchEnvironment& launch,
                         std::chrono::steady_clock::time_point deadline) {
    const auto left = [deadline] {  // never 0, which c10d reads as "no timeout"
      return std::max(std::chrono::milliseconds(1), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                        deadline - std::chrono::steady_clock::now()));
    };
    const std::string prefix = kRendezvousPrefix;
    const std::vector<uint8_t> present{'1'};
    store.set(prefix + std::to_string(launch.rank), present);
    store.add(prefix + "joined", 1);
    if (launch.rank != 0) {
      try {
        store.wait({prefix + "complete"}, left());
      } catch (const std::exception& error) {
        throw std::runtime_error("rank 0 did not report that every rank had joined: " + message_of(error));
      }
      return;
    }
    std::vector<std::string> keys;
    keys.reserve(static_cast<size_t>(launch.world_size));
    for (int64_t rank = 0; rank < launch.world_size; ++rank) keys.push_back(prefix + std::to_string(rank));
    try {
      store.wait(keys, left());
    } catch (const std::exception& error) {
      throw std::runtime_error(missing_ranks(store, launch) + message_of(error));
    }
    store.set(prefix + "complete", present);
  }

  /// "k of n ranks joined (missing: rank 1, ...); " for rank 0's timeout message.
  static std::string missing_ranks(c10d::Store& store, const LaunchEnvironment& launch) {
    const std::string prefix = kRendezvousPrefix;
    try {
      std::string text = fmt::format("{} of {} ranks joined", store.add(prefix + "joined", 0), launch.world_size);
      if (launch.world_size <= 64) {  // one request per rank: only for small jobs
        std::vector<std::string> missing;
        for (int64_t rank = 1; rank < launch.world_size && missing.size() < 8; ++rank) {
          if (!store.check({prefix + std::to_string(rank)})) missing.push_back(std::to_string(rank));
        }
        if (!missing.empty()) {
          text += " (missing: rank " + missing.front();
          for (size_t i = 1; i < missing.size(); ++i) text += ", " + missing[i];
          text += missing.size() == 8 ? ", ...)" : ")";
        }
      }
      return text + "; ";
    } catch (const std::exception&) {
      return "";  // only the count was asked for: the timeout speaks for itself
    }
  }

  static c10::intrusive_ptr<c10d::ProcessGroup> make_gloo(
      const c10::intrusive_ptr<c10d::Store>& store, const LaunchEnvironment& launch,
      const ProcessGroupOptions& options) {
    auto gloo_options = c10d::ProcessGroupGloo::Options::create(options.timeout());
    // GLOO_SOCKET_IFNAME picks the network interface, as in torch.distributed; else loopback
    // where every rank meets over loopback; else the address this machine's host name
    // resolves to, as torch.distributed.
    if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME"); interface != nullptr && *interface != 0) {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
    } else if (const auto loopback = detail::loopback_job_address(launch)) {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(*loopback));
    } else {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    gloo_options->threads = 2;
    auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        store, static_cast<int>(launch.rank), static_cast<int>(launch.world_size), gloo_options);
    return wrap(store, launch, gloo, c10::DeviceType::CPU, "gloo");
  }

  static c10::intrusive_ptr<c10d::ProcessGroup> make_nccl(
      const c10::intrusive_ptr<c10d::Store>& store, const LaunchEnvironment& launch,
      const ProcessGroupOptions& options) {
#if defined(USE_C10D_NCCL)
    auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
    nccl_options->timeout = options.timeout();
    auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
        store, static_cast<int>(launch.rank), static_cast<int>(launch.world_size), nccl_options);
    return wrap(store, launch, nccl, c10::DeviceType::CUDA, "nccl");
#else
    (void)store, (void)launch, (void)options;
    throw std::invalid_argument("this LibTorch has no NCCL backend (CPU build): use gloo");
#endif
  }

  /// LibTorch 1.x backends are process groups; 2.x puts a backend inside a ProcessGroup.
  template <class Backend>
  static c10::intrusive_ptr<c10d::ProcessGroup> wrap(const c10::intrusive_ptr<c10d::Store>& store,
                                                     const LaunchEnvironment& launch,
                                                     const c10::intrusive_ptr<Backend>& backend,
                                                     c10::DeviceType device, const char* name) {
#if TORCH_VERSION_MAJOR >= 2
    auto group = c10::make_intrusive<c10d::ProcessGroup>(
        store, static_cast<int>(launch.rank), static_cast<int>(launch.world_size));
    const auto type = std::string(name) == "nccl" ? c10d::ProcessGroup::BackendType::NCCL
                                                  : c10d::ProcessGroup::BackendType::GLOO;
    group->setDefaultBackend(type);
    group->setBackend(device, type, backend);
    return group;
#else
    (void)store, (void)launch, (void)device, (void)name;
    return backend;
#endif
  }

  int64_t rank_ = 0;
  int64_t size_ = 1;
  int64_t local_rank_ = 0;
  std::string backend_name_;
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
};

/// SyncBatchNorm: from now on every reidnet::BatchNorm1d/2d in `module` normalises training
/// batches with the statistics of all ranks' batches together (see reidnet/models/layers/batch_norm.hpp), so
/// that P ranks at batch B train as one process at batch P x B. Nothing changes with one rank,
/// or in eval mode. Returns how many layers now share statistics; throws naming the first
/// torch::nn::BatchNorm in `module`, whose statistics cannot be shared.
inline int64_t synchronize_batch_norm(torch::nn::Module& module, const ProcessGroup& group) {
  // Checked first, so that a rejected module is left as it was.
  for (const auto& item : module.named_modules("", /*include_self=*/false)) {
    const auto& child = *item.value();
    if (child.as<torch::nn::BatchNorm1d>() || child.as<torch::nn::BatchNorm2d>() ||
        child.as<torch::nn::BatchNorm3d>()) {
      throw std::invalid_argument("synchronize_batch_norm: '" + item.key() + "' is a " + child.name() +
                                  ", whose batch statistics cannot be shared; build it as a "
                                  "reidnet::BatchNorm1d or BatchNorm2d");
    }
  }
  const ProcessSum sum = [group](torch::Tensor& tensor) { group.all_reduce_sum(tensor); };
  int64_t count = 0;
  const auto share = [&](torch::nn::Module& candidate) {
    auto* norm1d = candidate.as<BatchNorm1d>();
    auto* norm2d = candidate.as<BatchNorm2d>();
    if (norm1d == nullptr && norm2d == nullptr) return;
    if (group.size() > 1) norm1d != nullptr ? norm1d->share_statistics(sum) : norm2d->share_statistics(sum);
    ++count;
  };
  share(module);
  for (const auto& child : module.modules(/*include_self=*/false)) share(*child);
  return count;
}

/// How GradientAverager buckets and synchronises, with DistributedDataParallel's defaults.
struct GradientAveragerOptions {
  /// Gradients are all-reduced in buckets of about this size, the first bucket 1 MiB.
  TORCH_ARG(int64_t, bucket_bytes) = 25 << 20;
  /// Give every rank rank 0's buffers (BatchNorm's running statistics) before each forward.
  TORCH_ARG(bool, broadcast_buffers) = true;
  /// Some trainable parameters take no part in a step (ft_net keeps torchvision's unused
  /// `fc`, for its keys): each backward then first walks the graph back from the outputs given
  /// to before_backward, and parameters no rank used keep no gradient, as in one process.
  TORCH_ARG(bool, find_unused_parameters) = false;
};

/// Keeps a module's replicas equal across ranks: rank 0's parameters and buffers at the start,
/// then gradients averaged over the ranks at every backward, bucket by bucket as backward
/// produces them (c10d's Reducer). The module's parameters must stay the same tensors.
class GradientAverager {
 public:
  GradientAverager(torch::nn::Module& module, ProcessGroup group, GradientAveragerOptions options = {})
      : group_(std::move(group)), options_(options), buffers_(module.buffers()) {
    for (const auto& parameter : module.parameters()) {
      if (parameter.requires_grad()) parameters_.push_back(parameter);
    }
    if (parameters_.empty()) throw std::invalid_argument("GradientAverager: the module has no trainable parameters");
    // A clear error when the ranks built different models, before any collective on them.
    c10d::verify_params_across_processes(group_.c10d_group(), parameters_, c10::nullopt);
    std::vector<torch::Tensor> state = parameters_;
    state.insert(state.end(), buffers_.begin(), buffers_.end());
    {
      torch::NoGradGuard no_grad;
      group_.broadcast(state);
    }
    const std::vector<bool> dense(parameters_.size(), false);
    auto [buckets, limits] = c10d::compute_bucket_assignment_by_size(
        parameters_, {kFirstBucketBytes, static_cast<size_t>(options_.bucket_bytes())}, dense);
    // Backward produces gradients last layer first: reduce the last parameters' bucket first.
    std::reverse(buckets.begin(), buckets.end());
    std::reverse(limits.begin(), limits.end());
    reducer_ = std::make_unique<c10d::Reducer>(
        parameters_, std::move(buckets), std::move(limits), group_.c10d_group(), dense,
        options_.bucket_bytes(), options_.find_unused_parameters(),
        /*gradient_as_bucket_view=*/false, std::unordered_map<size_t, std::string>{},
        static_cast<int64_t>(kFirstBucketBytes));
  }

  /// Call before each training forward: after the first step the buckets are rebuilt in the
  /// order backward produced gradients, and rank 0's buffers are broadcast.
  void before_forward() {
    reducer_->prepare_for_forward();
    reducer_->rebuild_buckets();
    if (options_.broadcast_buffers() && !buffers_.empty()) {
      torch::NoGradGuard no_grad;
      group_.broadcast(buffers_);
    }
  }

  /// Call after the forward and before backward: the backward that follows averages the
  /// gradients (and returns only once they are). With find_unused_parameters, `outputs` are
  /// what the loss was computed from (or the loss itself).
  void before_backward(const std::vector<torch::Tensor>& outputs = {}) {
    if (options_.find_unused_parameters() && outputs.empty()) {
      throw std::invalid_argument("GradientAverager::before_backward: find_unused_parameters needs "
                                  "the outputs that backward starts from");
    }
    reducer_->prepare_for_backward(options_.find_unused_parameters() ? outputs : std::vector<torch::Tensor>{});
  }

  const ProcessGroup& group() const { return group_; }

 private:
  static constexpr size_t kFirstBucketBytes = 1u << 20;

  ProcessGroup group_;
  GradientAveragerOptions options_;
  std::vector<torch::Tensor> parameters_;
  std::vector<torch::Tensor> buffers_;
  std::unique_ptr<c10d::Reducer> reducer_;
};

}  // namespace reidnet
