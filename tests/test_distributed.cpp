// Multi-process training on c10d: the loader's shards against torch's DistributedSampler,
// three steps of reidnet's GradientAverager against PyTorch's DistributedDataParallel (both
// on Gloo, two processes over loopback), and reidnet-train's multi-process runs and failures.
#include "support.hpp"
#include "scratch.hpp"

#include <reidnet/io/checkpoint.hpp>
#include <reidnet/data/data_loader.hpp>
#include <reidnet/distributed/distributed.hpp>
#include <reidnet/distributed/local_launcher.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

// A namespace per topic: the topics build as one unit (CMake unity build) without their
// helpers meeting.
namespace reidnet_test_distributed {

namespace fs = std::filesystem;

namespace {

using reidnet::test::run_program;
using reidnet::test::scratch;
using reidnet::test::toy_data;

const fs::path& workspace() {
  static const fs::path root = reidnet::test::fresh_workspace("distributed_workspace");
  return root;
}

/// A process started with extra environment variables, its output going to a log file.
struct Process {
  pid_t pid = -1;
  fs::path log;
  std::chrono::steady_clock::time_point started;
};

struct Finished {
  int code = -1;        // exit status; -1 when a signal ended it
  int signal = 0;
  std::string output;
  double seconds = 0;
};

Process start(const std::string& binary, const std::vector<std::string>& arguments,
              const std::map<std::string, std::string>& environment) {
  REQUIRE_MESSAGE(fs::exists(binary), binary << " is missing");
  static int count = 0;
  Process process;
  process.log = workspace() / ("process" + std::to_string(++count) + ".log");
  process.started = std::chrono::steady_clock::now();
  process.pid = ::fork();
  REQUIRE(process.pid >= 0);
  if (process.pid == 0) {
    const int fd = ::open(process.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    for (const auto& [name, value] : environment) ::setenv(name.c_str(), value.c_str(), 1);
    std::vector<char*> argv{const_cast<char*>(binary.c_str())};
    for (const auto& argument : arguments) argv.push_back(const_cast<char*>(argument.c_str()));
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
  return process;
}

/// Waits for `process`, killing it after `limit` (then code -1, signal 9); calls `while_running`
/// every 50 ms until it ends.
Finished wait_for(const Process& process, std::chrono::seconds limit,
                  const std::function<void()>& while_running = {}) {
  Finished finished;
  int status = 0;
  for (;;) {
    const pid_t done = ::waitpid(process.pid, &status, WNOHANG);
    if (done == process.pid) break;
    if (while_running) while_running();
    if (std::chrono::steady_clock::now() - process.started > limit) {
      ::kill(process.pid, SIGKILL);
      ::waitpid(process.pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  finished.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - process.started).count();
  finished.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  finished.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  std::ifstream file(process.log);
  finished.output.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
  return finished;
}

std::map<std::string, std::string> rank_environment(int rank, int world_size, int port) {
  return {{"RANK", std::to_string(rank)},           {"LOCAL_RANK", std::to_string(rank)},
          {"WORLD_SIZE", std::to_string(world_size)}, {"MASTER_ADDR", "127.0.0.1"},
          {"MASTER_PORT", std::to_string(port)}};
}

std::string examples_program(const std::string& name) {
  return std::string(REIDNET_TEST_EXAMPLES_DIR) + "/" + name;
}


std::vector<std::string> train_arguments(const fs::path& out) {
  return {"--data", toy_data().string(), "--out", out.string(), "--height", "64", "--width", "32",
          "--batch-size", "4", "--workers", "1", "--seed", "3", "--threads", "1", "--warm-epoch", "1"};
}

std::string joined(const std::vector<std::string>& arguments) {
  std::string text;
  for (const auto& argument : arguments) text += " " + argument;
  return text;
}

}  // namespace

TEST_CASE("a loader shard takes DistributedSampler's indices; P x K shards take whole batches") {
  const auto reference = reidnet::read_state_dict(reidnet::test::fixture("distributed", "sampler.pt"));
  const std::vector<reidnet::Sample> samples(45);
  for (int64_t rank = 0; rank < 2; ++rank) {
    for (int64_t epoch = 0; epoch < 3; ++epoch) {
      CAPTURE(rank);
      CAPTURE(epoch);
      const auto batches = reidnet::plan_batches(
          samples, reidnet::LoaderOptions().batch_size(4).shuffle(true).seed(7).shard(reidnet::Shard{rank, 2}),
          epoch);
      std::vector<int64_t> flat;
      for (const auto& batch : batches) flat.insert(flat.end(), batch.begin(), batch.end());
      const auto& expected = reference[fmt::format("rank{}_epoch{}", rank, epoch)];
      REQUIRE(static_cast<int64_t>(flat.size()) == expected.numel());
      CHECK(torch::equal(torch::tensor(flat, torch::kInt64), expected));
    }
  }
  SUBCASE("P x K") {
    std::vector<reidnet::Sample> people;
    for (int64_t id = 0; id < 9; ++id) {
      for (int64_t i = 0; i < 5; ++i) people.push_back({"", id, 1, id});
    }
    const auto options = reidnet::LoaderOptions().batch_size(6).instances_per_identity(3).seed(2);
    const auto whole = reidnet::plan_batches(people, options, 1);
    auto copy = options;
    const auto rank0 = reidnet::plan_batches(people, copy.shard(reidnet::Shard{0, 2}), 1);
    const auto rank1 = reidnet::plan_batches(people, copy.shard(reidnet::Shard{1, 2}), 1);
    CHECK(rank0.size() == whole.size() / 2);
    CHECK(rank1.size() == rank0.size());
    for (size_t i = 0; i < rank0.size(); ++i) {
      CHECK(rank0[i] == whole[2 * i]);
      CHECK(rank1[i] == whole[2 * i + 1]);
    }
  }
  SUBCASE("a shard outside the world is refused") {
    CHECK_THROWS_WITH(reidnet::plan_batches(samples, reidnet::LoaderOptions().shard(reidnet::Shard{2, 2}), 0),
                      doctest::Contains("shard rank 2 of world size 2"));
  }
}

namespace {

/// Runs `world_size` ranks of ddp_worker.cpp (reidnet_tests --ddp-worker) in `mode` (and
/// `precision`, float32 or float64) into workspace()/<name>; returns each rank's weights after the steps.
std::vector<reidnet::StateDict> run_worker_job(const std::string& mode, int world_size,
                                               const std::string& name,
                                               const std::string& precision = "float32") {
  const auto out = scratch(workspace() / name);
  fs::create_directories(out);
  const int port = reidnet::detail::free_loopback_port();
  const std::string worker = std::string(REIDNET_TEST_BINARY_DIR) + "/reidnet_tests";
  std::vector<Process> ranks;
  for (int rank = 0; rank < world_size; ++rank) {
    ranks.push_back(start(worker, {"--ddp-worker", mode, reidnet::test::fixture("distributed", ""), out.string(), precision},
                          rank_environment(rank, world_size, port)));
  }
  std::vector<reidnet::StateDict> weights;
  for (int rank = 0; rank < world_size; ++rank) {
    const auto finished = wait_for(ranks[static_cast<size_t>(rank)], std::chrono::seconds(300));
    INFO(finished.output);
    REQUIRE(finished.code == 0);
    weights.push_back(reidnet::read_state_dict((out / fmt::format("rank{}.pth", rank)).string()));
  }
  return weights;
}

/// The largest absolute difference between two state dicts' tensors (of the same keys).
double largest_difference(const reidnet::StateDict& actual, const reidnet::StateDict& expected) {
  REQUIRE(actual.size() == expected.size());
  double largest = 0;
  for (const auto& item : expected) {
    CAPTURE(item.key());
    REQUIRE(actual.contains(item.key()));
    const auto difference = (actual[item.key()].to(torch::kDouble) - item.value().to(torch::kDouble));
    largest = std::max(largest, difference.abs().max().item<double>());
  }
  return largest;
}

/// The ranks' weights agree bit for bit. (Their BatchNorm statistics are each rank's own last
/// batch's: broadcast from rank 0 before each forward, then updated locally.)
void check_ranks_identical(const reidnet::StateDict& rank0, const reidnet::StateDict& rank1) {
  for (const auto& item : rank0) {
    if (item.key().find("running_") != std::string::npos) continue;
    CAPTURE(item.key());
    CHECK(torch::equal(item.value(), rank1[item.key()]));
  }
}

}  // namespace

TEST_CASE("3 steps on 2 processes equal PyTorch DDP's (Gloo): weights within 1e-5, ranks bit-identical") {
  const auto mine = run_worker_job("ddp", 2, "ddp");
  for (int rank = 0; rank < 2; ++rank) {
    CAPTURE(rank);
    const auto theirs = reidnet::read_state_dict(
        reidnet::test::fixture("distributed", fmt::format("ddp_rank{}.pth", rank)));
    const double largest = largest_difference(mine[static_cast<size_t>(rank)], theirs);
    MESSAGE("rank " << rank << ": largest difference from PyTorch DDP " << largest);
    CHECK(largest <= 1e-5);
  }
  check_ranks_identical(mine[0], mine[1]);
}

TEST_CASE("SyncBatchNorm: 2 processes at batch 6 equal 1 process at batch 12 (float64: within 1e-5)") {
  // float64 leaves only rounding between the two, so this checks the algorithm: every tensor,
  // running statistics (the global batch's) included. (Not float32: three steps of ResNet-50
  // from random weights on noise are ill-conditioned, and one process's own float32 run ends
  // about 0.6 away from its float64 run in some running variance, as far as the control.)
  const auto one = run_worker_job("sync-bn", 1, "batch12_float64", "float64");
  const auto shared = run_worker_job("sync-bn", 2, "sync_bn_float64", "float64");
  for (int rank = 0; rank < 2; ++rank) {
    CAPTURE(rank);
    const double largest = largest_difference(shared[static_cast<size_t>(rank)], one[0]);
    MESSAGE("float64, rank " << rank << ": largest difference from one process at batch 12 " << largest);
    CHECK(largest <= 1e-5);
  }
  for (const auto& item : shared[0]) {
    CAPTURE(item.key());
    CHECK(torch::equal(item.value(), shared[1][item.key()]));
  }
  // Each rank's own statistics give another model: the check above can fail.
  const auto local = run_worker_job("local-bn", 2, "local_bn_float64", "float64");
  const double apart = largest_difference(local[0], one[0]);
  MESSAGE("float64, each rank's own BatchNorm statistics: largest difference " << apart);
  CHECK(apart > 1e-3);
}

TEST_CASE("reidnet-train --nproc-per-node 2 trains; rank 0 alone writes; resume takes any world size") {
  const auto out = scratch(workspace() / "two");
  auto arguments = train_arguments(out);
  const auto two = run_program("reidnet-train", "--nproc-per-node 2" + joined(arguments) +
                               " --total-epoch 2 --epochs-this-run 1");
  INFO(two.output);
  REQUIRE(two.status == 0);
  CHECK(two.output.find("on each of 2 processes (gloo backend)") != std::string::npos);
  // Rank 0 speaks for the job: one line per epoch, not one per process.
  CHECK(two.output.find("epoch 1/2") == two.output.rfind("epoch 1/2"));
  for (const char* file : {"net_last.pth", "opts.yaml", "train.log", "train.jpg", "optimizer.pt"}) {
    CHECK_MESSAGE(fs::exists(out / file), file);
  }
  // Resumed on one process,
  const auto one = run_program("reidnet-train", "--resume " + out.string() + " --threads 1");
  INFO(one.output);
  REQUIRE(one.status == 0);
  CHECK(one.output.find("resuming " + out.string() + " at epoch 2") != std::string::npos);
  CHECK(one.output.find("epoch 2/2") != std::string::npos);
  // and a one-process run resumed on two.
  const auto single = scratch(workspace() / "one_then_two");
  REQUIRE(run_program("reidnet-train", joined(train_arguments(single)) +
                      " --total-epoch 2 --epochs-this-run 1").status == 0);
  const auto resumed = run_program("reidnet-train", "--nproc-per-node 2 --resume " + single.string() +
                                   " --threads 1 --sync-bn");
  INFO(resumed.output);
  REQUIRE(resumed.status == 0);
  CHECK(resumed.output.find("epoch 2/2") != std::string::npos);
  // ft_net: ResNet-50's 53 BatchNorm2d and the ClassBlock's BatchNorm1d.
  CHECK(resumed.output.find("SyncBatchNorm: 54 BatchNorm layers normalise over all 2 processes") !=
        std::string::npos);
  CHECK(reidnet::read_state_dict((single / "net_last.pth").string()).size() > 0);
}

TEST_CASE("a worker killed mid-epoch stops the job within 60 s, with a message; the last "
          "checkpoint stays loadable") {
  const auto check_checkpoint = [](const fs::path& out) {
    const auto state = reidnet::read_state_dict((out / "net_last.pth").string());
    CHECK(state.contains("classifier.classifier.0.weight"));
    std::ifstream trainer_state(out / "trainer_state.yaml");
    std::string first;
    std::getline(trainer_state, first);
    CHECK(first == "next_epoch: 1");
  };
  SUBCASE("under --nproc-per-node, the launcher stops the others") {
    const auto out = scratch(workspace() / "killed_supervised");
    auto arguments = train_arguments(out);
    arguments.insert(arguments.begin(), {"--nproc-per-node", "2"});
    arguments.insert(arguments.end(), {"--total-epoch", "3"});
    const auto temporary = scratch(workspace() / "killed_supervised_tmp");  // the launcher's TMPDIR
    fs::create_directories(temporary);
    const auto job = start(examples_program("reidnet-train"), arguments,
                           {{"REIDNET_KILL_RANK_AT", "1:2:3"}, {"TMPDIR", temporary.string()}});
    const auto finished = wait_for(job, std::chrono::seconds(240));
    INFO(finished.output);
    CHECK(finished.code != 0);
    CHECK(finished.output.find("worker rank 1") != std::string::npos);
    CHECK(finished.output.find("was killed by signal 9") != std::string::npos);
    check_checkpoint(out);
    CHECK(fs::is_empty(temporary));  // the rendezvous folder went with the job
  }
  SUBCASE("launched without a supervisor (as by torchrun), the survivor fails on its own") {
    const auto out = scratch(workspace() / "killed_alone");
    auto arguments = train_arguments(out);
    arguments.insert(arguments.end(), {"--total-epoch", "3"});
    const int port = reidnet::detail::free_loopback_port();
    auto doomed_environment = rank_environment(1, 2, port);
    doomed_environment["REIDNET_KILL_RANK_AT"] = "1:2:3";
    const auto survivor = start(examples_program("reidnet-train"), arguments, rank_environment(0, 2, port));
    const auto doomed = start(examples_program("reidnet-train"), arguments, doomed_environment);
    const auto killed = wait_for(doomed, std::chrono::seconds(240));
    CHECK(killed.signal == SIGKILL);
    const auto killed_at = std::chrono::steady_clock::now();
    const auto finished = wait_for(survivor, std::chrono::seconds(240));
    INFO(finished.output);
    CHECK(finished.code == 1);
    CHECK(std::chrono::steady_clock::now() - killed_at < std::chrono::seconds(60));
    CHECK(finished.output.find("a collective failed") != std::string::npos);
    check_checkpoint(out);
  }
}

TEST_CASE("a rank that never joins, or a wrong MASTER_PORT, fails within twice --dist-timeout") {
  const auto out = scratch(workspace() / "alone");
  auto arguments = train_arguments(out);
  arguments.insert(arguments.end(), {"--total-epoch", "1", "--dist-timeout", "5"});
  const int port = reidnet::detail::free_loopback_port();
  for (const int rank : {0, 1}) {
    CAPTURE(rank);  // rank 0 waits for rank 1; rank 1 finds nothing on the port
    const auto finished = wait_for(start(examples_program("reidnet-train"), arguments,
                                         rank_environment(rank, 2, port)),
                                   std::chrono::seconds(60));
    INFO(finished.output);
    CHECK(finished.code == 1);
    CHECK(finished.seconds < 2 * 5 + 5);
    CHECK(finished.output.find("within the 5 s timeout") != std::string::npos);
    CHECK(finished.output.find(fmt::format("127.0.0.1:{}", port)) != std::string::npos);
    CHECK_FALSE(fs::exists(out));  // nothing written before the job had met
  }
}

namespace {

/// A TCP socket: its local address and state as /proc/net/tcp{,6} give them.
struct TcpSocket {
  std::string address;
  int port = 0;
  bool loopback = false;
  bool listening = false;
  pid_t pid = -1;
};

/// `pid` and its descendants, found through the parent ids in /proc/<pid>/stat.
std::vector<pid_t> process_tree(pid_t root) {
  std::map<pid_t, std::vector<pid_t>> children;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const auto close = text.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(text.substr(close + 1));
    std::string state;
    pid_t parent = -1;
    rest >> state >> parent;
    children[parent].push_back(static_cast<pid_t>(std::stol(name)));
  }
  std::vector<pid_t> tree{root};
  for (size_t i = 0; i < tree.size(); ++i) {
    for (const pid_t child : children[tree[i]]) tree.push_back(child);
  }
  return tree;
}

/// The TCP sockets (IPv4 and IPv6) that processes `pids` hold, matched to their processes
/// through the socket inodes of /proc/<pid>/fd.
std::vector<TcpSocket> tcp_sockets(const std::vector<pid_t>& pids) {
  std::map<std::string, pid_t> inodes;
  for (const pid_t pid : pids) {
    try {  // (the process may end meanwhile)
      std::error_code error;
      for (const auto& fd : fs::directory_iterator(fmt::format("/proc/{}/fd", pid), error)) {
        std::error_code unreadable;
        const std::string target = fs::read_symlink(fd.path(), unreadable).string();
        if (!unreadable && target.rfind("socket:[", 0) == 0) {
          inodes[target.substr(8, target.size() - 9)] = pid;
        }
      }
    } catch (const fs::filesystem_error&) {
    }
  }
  std::vector<TcpSocket> sockets;
  for (const int family : {AF_INET, AF_INET6}) {
    std::ifstream table(family == AF_INET ? "/proc/net/tcp" : "/proc/net/tcp6");
    std::string line;
    std::getline(table, line);  // the header
    while (std::getline(table, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode;
      const auto found = inodes.find(inode);
      if (found == inodes.end()) continue;
      const auto colon = local.find(':');
      const std::string hex = local.substr(0, colon);
      TcpSocket listener;
      listener.listening = state == "0A";
      listener.port = static_cast<int>(std::stoul(local.substr(colon + 1), nullptr, 16));
      listener.pid = found->second;
      // The kernel prints the address as 32-bit words in this machine's byte order.
      unsigned char bytes[16] = {};
      for (size_t word = 0; word < hex.size() / 8; ++word) {
        const auto value = static_cast<uint32_t>(std::stoul(hex.substr(word * 8, 8), nullptr, 16));
        std::memcpy(bytes + 4 * word, &value, 4);
      }
      char text[INET6_ADDRSTRLEN] = "";
      ::inet_ntop(family, bytes, text, sizeof text);
      listener.address = text;
      if (family == AF_INET) {
        listener.loopback = bytes[0] == 127;
      } else {
        in6_addr address;
        std::memcpy(&address, bytes, 16);
        listener.loopback = IN6_IS_ADDR_LOOPBACK(&address) || (IN6_IS_ADDR_V4MAPPED(&address) && bytes[12] == 127);
      }
      sockets.push_back(listener);
    }
  }
  return sockets;
}

/// Looks at the TCP sockets of some processes and their descendants: remembers every
/// listening socket on an address beyond loopback, and how many looks found the processes
/// holding TCP sockets at all (connected ones included: Gloo's pairs), so that a watch that
/// saw nothing cannot pass for one that found nothing wrong.
struct ListenWatch {
  std::vector<TcpSocket> exposed;
  int looks_with_sockets = 0;

  void look(const std::vector<pid_t>& roots) {
    std::vector<pid_t> pids;
    for (const pid_t root : roots) {
      const auto tree = process_tree(root);
      pids.insert(pids.end(), tree.begin(), tree.end());
    }
    const auto sockets = tcp_sockets(pids);
    if (!sockets.empty()) ++looks_with_sockets;
    for (const auto& socket : sockets) {
      if (socket.listening && !socket.loopback) exposed.push_back(socket);
    }
  }

  std::string report() const {
    std::set<std::string> lines;
    for (const auto& socket : exposed) {
      lines.insert(fmt::format("pid {} listens on {} port {}\n", socket.pid, socket.address, socket.port));
    }
    std::string text;
    for (const auto& line : lines) text += line;
    return text;
  }
};

/// The names in `folder`.
std::vector<std::string> entries(const fs::path& folder) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(folder)) names.push_back(entry.path().filename().string());
  return names;
}

}  // namespace

TEST_CASE("reidnet-train --nproc-per-node 2 listens on nothing beyond loopback; its rendezvous "
          "folder is private and removed at the end") {
  const auto out = scratch(workspace() / "loopback_only");
  const auto temporary = scratch(workspace() / "loopback_only_tmp");  // the launcher's TMPDIR
  fs::create_directories(temporary);
  auto arguments = train_arguments(out);
  arguments.insert(arguments.begin(), {"--nproc-per-node", "2"});
  arguments.insert(arguments.end(), {"--total-epoch", "1"});
  const auto job = start(examples_program("reidnet-train"), arguments, {{"TMPDIR", temporary.string()}});
  ListenWatch watch;
  std::set<std::string> folders;
  bool private_folders = true;
  const auto finished = wait_for(job, std::chrono::seconds(300), [&] {
    watch.look({job.pid});
    std::error_code error;
    for (const auto& entry : fs::directory_iterator(temporary, error)) {
      if (entry.path().filename().string().rfind("reidnet-job-", 0) != 0) continue;
      folders.insert(entry.path().filename().string());
      struct stat info {};
      if (::stat(entry.path().c_str(), &info) == 0 && (info.st_mode & 0777) != 0700) private_folders = false;
    }
  });
  INFO(finished.output);
  REQUIRE(finished.code == 0);
  INFO(watch.report());
  CHECK(watch.looks_with_sockets > 0);  // Gloo's connections, at least
  CHECK(watch.exposed.empty());
  CHECK(folders.size() == 1);
  CHECK(private_folders);
  CHECK(entries(temporary).empty());
}

TEST_CASE("under torchrun's variables with a loopback MASTER_ADDR, Gloo listens on loopback only, "
          "and so does the store where LibTorch lets reidnet bind it (2.4 and later)") {
  const auto out = scratch(workspace() / "torchrun_loopback");
  auto arguments = train_arguments(out);
  arguments.insert(arguments.end(), {"--total-epoch", "1"});
  const int port = reidnet::detail::free_loopback_port();
  const auto rank0 = start(examples_program("reidnet-train"), arguments, rank_environment(0, 2, port));
  const auto rank1 = start(examples_program("reidnet-train"), arguments, rank_environment(1, 2, port));
  ListenWatch watch;
  const auto first = wait_for(rank1, std::chrono::seconds(300), [&] { watch.look({rank0.pid, rank1.pid}); });
  const auto second = wait_for(rank0, std::chrono::seconds(300));
  INFO(first.output);
  INFO(second.output);
  REQUIRE(first.code == 0);
  REQUIRE(second.code == 0);
  INFO(watch.report());
  CHECK(watch.looks_with_sockets > 0);
  for (const auto& listener : watch.exposed) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    CHECK_MESSAGE(false, "listens beyond loopback: " << listener.address << " port " << listener.port);
#else
    // LibTorch 1.13's TCPStore binds every interface, and nothing can tell it otherwise.
    CHECK(listener.port == port);
#endif
  }
}

TEST_CASE("WORLD_SIZE above 4096 is refused; at 4096 with one rank started, it fails within "
          "about twice --dist-timeout") {
  REQUIRE(reidnet::kMaxWorldSize == 4096);
  const auto out = scratch(workspace() / "world_size");
  auto arguments = train_arguments(out);
  for (const char* size : {"4097", "100000"}) {
    const auto refused = run_program("reidnet-train", joined(arguments), fmt::format("WORLD_SIZE={} RANK=0", size));
    INFO(refused.output);
    CHECK(refused.status == 2);
    CHECK(refused.output.find(fmt::format("WORLD_SIZE='{}'", size)) != std::string::npos);
    CHECK(refused.output.find("4096") != std::string::npos);
  }
  arguments.insert(arguments.end(), {"--total-epoch", "1", "--dist-timeout", "3"});
  const int port = reidnet::detail::free_loopback_port();
  for (const int rank : {0, 4095}) {
    CAPTURE(rank);  // rank 0 waits for 4095 others; rank 4095 finds nothing on the port
    const auto finished = wait_for(start(examples_program("reidnet-train"), arguments,
                                         rank_environment(rank, 4096, port)),
                                   std::chrono::seconds(60));
    INFO(finished.output);
    MESSAGE("WORLD_SIZE 4096, rank " << rank << " alone, --dist-timeout 3: failed after "
            << finished.seconds << " s");
    CHECK(finished.signal == 0);
    CHECK(finished.code == 1);
    CHECK(finished.seconds < 2 * 3 + 5);  // (+5: the program's start, as above)
    CHECK(finished.output.find("within the 3 s timeout") != std::string::npos);
    CHECK(finished.output.find(fmt::format("127.0.0.1:{}", port)) != std::string::npos);
    if (rank == 0) CHECK(finished.output.find("1 of 4096 ranks joined") != std::string::npos);
    CHECK_FALSE(fs::exists(out));
  }
}

TEST_CASE("ProcessGroup::connect: one deadline for the whole rendezvous, on a TCPStore or the "
          "launcher's file store") {
  using reidnet::test::run_in_child;
  // Each in a child: a failed rendezvous leaves c10d's threads behind.
  const auto connect_alone = [](reidnet::LaunchEnvironment launch, int milliseconds) {
    return run_in_child([launch, milliseconds](std::string& message) {
      try {
        reidnet::ProcessGroup::connect(launch, torch::kCPU,
                                       reidnet::ProcessGroupOptions().timeout(std::chrono::milliseconds(milliseconds)));
        message = "connected";
        return 0;
      } catch (const std::runtime_error& error) {
        message = error.what();
        return 1;
      }
    }, 60);
  };
  SUBCASE("TCPStore, WORLD_SIZE 4096, rank 0 alone") {
    reidnet::LaunchEnvironment launch;
    launch.world_size = 4096;
    launch.master_port = reidnet::detail::free_loopback_port();
    const auto run = connect_alone(launch, 2000);
    INFO(run.message);
    MESSAGE("connect, WORLD_SIZE 4096, rank 0 alone, 2 s timeout: failed after " << run.seconds << " s");
    CHECK(run.code == 1);
    CHECK(run.seconds < 2 * 2);
    CHECK(run.message.find("through the rendezvous") != std::string::npos);
    CHECK(run.message.find("1 of 4096 ranks joined") != std::string::npos);
    CHECK(run.message.find("within the 2 s timeout") != std::string::npos);
  }
  SUBCASE("file store: rank 0 names the rank that never came; folder left as it was") {
    reidnet::test::TemporaryFolder folder("reidnet_file_store");
    reidnet::LaunchEnvironment launch;
    launch.world_size = 3;
    launch.store_file = (folder.path / "store").string();
    const auto writer = run_in_child([&](std::string&) {  // rank 2 checks in and leaves
      auto store = c10::make_intrusive<c10d::FileStore>(launch.store_file, 3);
      store->set("reidnet/rendezvous/2", std::vector<uint8_t>{'1'});
      store->add("reidnet/rendezvous/joined", 1);
      return 0;
    });
    REQUIRE(writer.code == 0);
    const auto run = connect_alone(launch, 1000);
    INFO(run.message);
    CHECK(run.code == 1);
    CHECK(run.seconds < 2 * 1);
    CHECK(run.message.find("the launcher's file store " + launch.store_file) != std::string::npos);
    CHECK(run.message.find("2 of 3 ranks joined (missing: rank 1)") != std::string::npos);
  }
  SUBCASE("a world size above the limit") {
    reidnet::LaunchEnvironment launch;
    launch.world_size = reidnet::kMaxWorldSize + 1;
    CHECK_THROWS_AS(reidnet::ProcessGroup::connect(launch, torch::kCPU), std::invalid_argument);
  }
}

TEST_CASE("where a job meets over loopback, and the store's own listening socket") {
  reidnet::LaunchEnvironment launch;
  launch.world_size = 2;
  CHECK(reidnet::detail::loopback_job_address(launch) == std::optional<std::string>("127.0.0.1"));
  launch.master_addr = "::1";
  CHECK(reidnet::detail::loopback_job_address(launch) == std::optional<std::string>("::1"));
  // A host name resolving to loopback counts only when every rank is known to be here.
  launch.master_addr = "localhost";
  CHECK_FALSE(reidnet::detail::loopback_job_address(launch).has_value());
  launch.local_world_size = 2;
  CHECK(reidnet::detail::loopback_job_address(launch).has_value());
  launch.master_addr = "192.0.2.1";  // a documentation address: only parsed, never reached
  CHECK_FALSE(reidnet::detail::loopback_job_address(launch).has_value());
  launch.store_file = "/run/job/store";
  CHECK(reidnet::detail::loopback_job_address(launch) == std::optional<std::string>("127.0.0.1"));

  reidnet::LaunchEnvironment local;
  local.master_port = reidnet::detail::free_loopback_port();
  const int fd = reidnet::detail::listen_on_master_address(local);
  REQUIRE(fd >= 0);
  sockaddr_in bound{};
  socklen_t length = sizeof bound;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length) == 0);
  CHECK(bound.sin_family == AF_INET);
  CHECK(ntohl(bound.sin_addr.s_addr) == INADDR_LOOPBACK);
  CHECK(ntohs(bound.sin_port) == local.master_port);
  // The port is now taken: a second store there is refused with the reason.
  CHECK_THROWS_WITH(reidnet::detail::listen_on_master_address(local), doctest::Contains("Address already in use"));
  ::close(fd);
}

TEST_CASE("bad launcher variables and flags are usage errors (exit code 2)") {
  const auto out = scratch(workspace() / "bad");
  const auto arguments = joined(train_arguments(out));
  CHECK(run_program("reidnet-train", arguments, "WORLD_SIZE=2 RANK=2").status == 2);
  CHECK(run_program("reidnet-train", arguments, "WORLD_SIZE=two RANK=0").status == 2);
  CHECK(run_program("reidnet-train", arguments, "WORLD_SIZE=2").status == 2);
  const auto nested = run_program("reidnet-train", "--nproc-per-node 2" + arguments, "WORLD_SIZE=2 RANK=0");
  CHECK(nested.status == 2);
  CHECK(nested.output.find("WORLD_SIZE is set") != std::string::npos);
  CHECK(run_program("reidnet-train", "--nproc-per-node 0" + arguments).status == 2);
  CHECK(run_program("reidnet-train", "--dist-backend mpi" + arguments).status == 2);
  const auto message = run_program("reidnet-train", arguments, "WORLD_SIZE=2 RANK=5").output;
  CHECK(message.find("RANK='5'") != std::string::npos);
  CHECK_FALSE(fs::exists(out));
}

}  // namespace reidnet_test_distributed
