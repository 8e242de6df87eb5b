#pragma once
/// Starts and supervises the worker processes of a single-machine job, as
/// `torchrun --nproc-per-node N --no-python` does, for machines without Python: each worker is
/// the given program, run with torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE,
/// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). A worker that fails takes the others down.
///
///     // in main(), when --nproc-per-node 2 was given:
///     return reidnet::run_local_workers("/proc/self/exe", worker_arguments, 2);
///
/// The workers meet through a file, not a port: the launcher makes a fresh folder that only
/// its user can enter (mode 0700) under the temporary directory ($TMPDIR, else /tmp), names a
/// file in it in REIDNET_STORE_FILE, and removes the folder when the job ends, whether the
/// workers succeed, fail or are stopped by SIGINT, SIGTERM or SIGHUP (only a SIGKILL of the
/// launcher itself leaves it behind). reidnet::ProcessGroup::connect then rendezvouses on a
/// c10d FileStore in that file and binds Gloo to 127.0.0.1, so the job listens on no network
/// interface beyond loopback (see reidnet/distributed/distributed.hpp).

#include <fmt/core.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace reidnet {

/// The environment variable through which run_local_workers gives its workers the path of the
/// job's rendezvous file; reidnet::LaunchEnvironment reads it. Only the launcher sets it.
inline constexpr const char* kStoreFileVariable = "REIDNET_STORE_FILE";

namespace detail {

/// A fresh folder under the temporary directory that only this user can enter (mkdtemp makes
/// it with mode 0700), removed with its contents when this object goes.
class PrivateFolder {
 public:
  explicit PrivateFolder(const std::string& stem) {
    std::string name = (std::filesystem::temp_directory_path() / (stem + "-XXXXXX")).string();
    if (::mkdtemp(name.data()) == nullptr) {
      throw std::runtime_error(fmt::format("cannot make a private folder {}: {}", name, std::strerror(errno)));
    }
    path_ = name;
  }
  ~PrivateFolder() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  PrivateFolder(const PrivateFolder&) = delete;
  PrivateFolder& operator=(const PrivateFolder&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/// A TCP port on 127.0.0.1 that nothing listens on now (the kernel's choice).
inline int free_loopback_port() {
  const int socket_fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (socket_fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  const bool ok = ::bind(socket_fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
                  ::getsockname(socket_fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  ::close(socket_fd);
  if (!ok) throw std::runtime_error(std::string("cannot find a free port: ") + std::strerror(errno));
  return ntohs(address.sin_port);
}

inline std::string describe_status(int status) {
  if (WIFSIGNALED(status)) {
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status), ::strsignal(WTERMSIG(status)));
  }
  return fmt::format("exited with code {}", WEXITSTATUS(status));
}

/// Where the supervisor forwards SIGINT and SIGTERM.
inline std::vector<pid_t>& supervised_workers() {
  static std::vector<pid_t> workers;
  return workers;
}

inline void forward_signal(int signal_number) {
  for (const pid_t pid : supervised_workers()) {
    if (pid > 0) ::kill(pid, signal_number);
  }
}

}  // namespace detail

/// Runs `program` with `arguments` as `nproc` workers, ranks 0 to nproc - 1, and waits for
/// them. They rendezvous through REIDNET_STORE_FILE, a file in a private folder that is removed
/// when they have all ended. MASTER_ADDR and MASTER_PORT (taken from the environment where set,
/// else 127.0.0.1 and a free port) are still given, for programs that read only torchrun's
/// variables; reidnet's programs do not use them here. When a worker fails (non-zero exit or a
/// signal), the others get SIGTERM, then SIGKILL after `grace`, and the message names the
/// worker. Returns 0 when all succeeded, else the first failed worker's exit code (1 for a
/// signal).
inline int run_local_workers(const std::string& program, const std::vector<std::string>& arguments,
                             int64_t nproc, std::chrono::seconds grace = std::chrono::seconds(10)) {
  if (nproc < 1) throw std::invalid_argument(fmt::format("--nproc-per-node {}: expected 1 or more", nproc));
  const char* address_variable = std::getenv("MASTER_ADDR");
  const std::string address = address_variable != nullptr && *address_variable != 0 ? address_variable : "127.0.0.1";
  const char* port_variable = std::getenv("MASTER_PORT");
  const std::string port = port_variable != nullptr && *port_variable != 0
      ? std::string(port_variable) : std::to_string(detail::free_loopback_port());

  const detail::PrivateFolder rendezvous("reidnet-job");
  const std::string store_file = (rendezvous.path() / "store").string();

  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(program.c_str()));
  for (const auto& argument : arguments) argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);

  auto& workers = detail::supervised_workers();
  workers.assign(static_cast<size_t>(nproc), -1);
  struct sigaction forward {};
  forward.sa_handler = detail::forward_signal;
  sigemptyset(&forward.sa_mask);
  ::sigaction(SIGINT, &forward, nullptr);
  ::sigaction(SIGTERM, &forward, nullptr);
  ::sigaction(SIGHUP, &forward, nullptr);
  const pid_t supervisor = ::getpid();
  for (int64_t rank = 0; rank < nproc; ++rank) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      detail::forward_signal(SIGKILL);
      throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    }
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // a killed supervisor takes its workers along
      if (::getppid() != supervisor) ::_exit(1);
      const auto text = std::to_string(rank);
      ::setenv("RANK", text.c_str(), 1);
      ::setenv("LOCAL_RANK", text.c_str(), 1);
      ::setenv("GROUP_RANK", "0", 1);
      ::setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", address.c_str(), 1);
      ::setenv("MASTER_PORT", port.c_str(), 1);
      ::setenv(kStoreFileVariable, store_file.c_str(), 1);
      ::execv(program.c_str(), argv.data());
      std::fprintf(stderr, "cannot run %s: %s\n", program.c_str(), std::strerror(errno));
      ::_exit(127);
    }
    workers[static_cast<size_t>(rank)] = pid;
  }

  int result = 0;
  int64_t running = nproc;
  std::chrono::steady_clock::time_point kill_at{};
  bool stopping = false;
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, stopping ? WNOHANG : 0);
    if (pid < 0 && errno == EINTR) continue;
    if (pid < 0) break;
    if (pid == 0) {  // stopping: the others have until kill_at to exit
      if (std::chrono::steady_clock::now() >= kill_at) detail::forward_signal(SIGKILL);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    int64_t rank = 0;
    while (rank < nproc && workers[static_cast<size_t>(rank)] != pid) ++rank;
    if (rank == nproc) continue;
    workers[static_cast<size_t>(rank)] = -1;
    --running;
    const bool failed = !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    if (failed && !stopping) {
      result = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
      fmt::print(stderr, "worker rank {} (pid {}) {}; stopping the other {} worker(s)\n", rank, pid,
                 detail::describe_status(status), running);
      std::fflush(stderr);
      stopping = true;
      kill_at = std::chrono::steady_clock::now() + grace;
      detail::forward_signal(SIGTERM);
    }
  }
  workers.clear();
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  ::signal(SIGHUP, SIG_DFL);
  return result;
}

}  // namespace reidnet
