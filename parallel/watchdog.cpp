#include "parallel/watchdog.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "parallel/abort.h"

namespace shc::parallel {
namespace {

using Clock = std::chrono::steady_clock;

// How often the thread checks the in-flight collectives and the side channel: the detection
// latency on top of timeout_s, and the only steady cost (one MPI_Iprobe per tick).
constexpr std::chrono::milliseconds kPollInterval{200};
// Side-channel tags: a question carries the asker's latest entered sequence number (so a peer
// that exits right after asking still told everyone how far it got); an answer carries the
// answerer's.
constexpr int kTagQuestion = 1;
constexpr int kTagAnswer = 2;

bool mpi_finalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

// Every live, enabled watchdog, so that the runtime can stop their threads before MPI_Finalize
// even if a communicator outlives main(). Never destroyed: the Runtime (a static constructed
// before them) reads them from its own destructor at exit.
std::mutex& registry_mutex() {
  static auto* mutex = new std::mutex;
  return *mutex;
}
std::vector<Watchdog*>& registry() {
  static auto* watchdogs = new std::vector<Watchdog*>;
  return *watchdogs;
}

// "2" for 2.0, "0.5" for 0.5: the message echoes the option as the user wrote it.
std::string format_seconds(double seconds) {
  std::ostringstream out;
  out << seconds;
  return out.str();
}

}  // namespace

Watchdog::Watchdog(MPI_Comm group, WatchdogOptions options, HealthFn health)
    : options_(options), health_(std::move(health)), enabled_(options.timeout_s > 0) {
  if (!enabled_) return;
  if (MPI_Comm_dup(group, &side_) != MPI_SUCCESS) {
    throw std::runtime_error("watchdog: MPI_Comm_dup of the side channel failed");
  }
  int size = 0;
  MPI_Comm_rank(side_, &rank_);
  MPI_Comm_size(side_, &size);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_);
  // The message names MPI_COMM_WORLD ranks, which is what mpirun and its logs show.
  MPI_Group side_group, world_group;
  MPI_Comm_group(side_, &side_group);
  MPI_Comm_group(MPI_COMM_WORLD, &world_group);
  std::vector<int> group_ranks(size);
  std::iota(group_ranks.begin(), group_ranks.end(), 0);
  world_ranks_.resize(size);
  MPI_Group_translate_ranks(side_group, size, group_ranks.data(), world_group, world_ranks_.data());
  MPI_Group_free(&side_group);
  MPI_Group_free(&world_group);
  peer_entered_.assign(size, 0);

  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    registry().push_back(this);
  }
  thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto& all = registry();
    all.erase(std::remove(all.begin(), all.end(), this), all.end());
  }
  stop();
}

void Watchdog::begin(std::uint64_t seq, const char* op) {
  entered_.store(seq);
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mutex_);
  in_flight_[seq] = InFlight{op, Clock::now(), nullptr};
}

void Watchdog::end(std::uint64_t seq, DoneFn done) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = in_flight_.find(seq);
  if (it == in_flight_.end()) return;
  if (done) {
    it->second.done = std::move(done);
  } else {
    in_flight_.erase(it);
  }
}

void Watchdog::stop() {
  std::call_once(stopped_, [this] {
    if (!enabled_) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
    // After MPI_Finalize nothing may be called; stop_all() ran before it, so this is only a
    // communicator destroyed after the runtime (its side channel died with MPI).
    if (side_ == MPI_COMM_NULL || mpi_finalized()) return;
    serve_side_channel();  // answer a late question rather than leave it unreceived
    for (auto& pending : sends_) MPI_Wait(&pending.request, MPI_STATUS_IGNORE);
    sends_.clear();
    MPI_Comm_free(&side_);
  });
}

void Watchdog::stop_all() {
  std::lock_guard<std::mutex> lock(registry_mutex());
  for (Watchdog* watchdog : registry()) watchdog->stop();
}

void Watchdog::run() {
  const std::chrono::duration<double> timeout(options_.timeout_s);
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, kPollInterval);
    if (stopping_) break;
    // Everything that talks to MPI or the device runs without the lock: a stalled driver call
    // must not stall the threads that issue collectives, which take the lock in begin() and
    // end(). `pending` holds its own references to the collectives' completion checks, so the
    // events they own are destroyed below, unlocked, not when the map entries are erased.
    std::vector<std::pair<std::uint64_t, InFlight>> pending;
    for (const auto& [seq, entry] : in_flight_) {
      if (entry.done) pending.emplace_back(seq, entry);
    }
    lock.unlock();
    serve_side_channel();
    // A failed device query (e.g. a CUDA error surfacing through the event) ends the job like a
    // hang would.
    std::vector<std::uint64_t> finished;
    for (const auto& [seq, entry] : pending) {
      try {
        if (entry.done()) finished.push_back(seq);
      } catch (const std::exception& error) {
        fail("collective #" + std::to_string(seq) + " " + entry.op + " failed: " + error.what());
      }
    }
    if (health_) {
      const std::string error = health_();
      if (!error.empty()) fail("communicator failed: " + error);
    }
    lock.lock();
    for (std::uint64_t seq : finished) in_flight_.erase(seq);
    lock.unlock();
    pending.clear();
    lock.lock();

    if (!in_flight_.empty() && Clock::now() - in_flight_.begin()->second.start > timeout) {
      const std::uint64_t seq = in_flight_.begin()->first;
      const std::string op = in_flight_.begin()->second.op;
      lock.unlock();
      report_and_exit(seq, op);
    }
  }
}

std::vector<int> Watchdog::serve_side_channel() {
  std::vector<int> answered;
  for (;;) {
    int arrived = 0;
    MPI_Status status;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, side_, &arrived, &status);
    if (!arrived) break;
    std::int64_t entered = 0;
    // Only this thread receives on side_, so the probed message is still there.
    MPI_Recv(&entered, 1, MPI_INT64_T, status.MPI_SOURCE, status.MPI_TAG, side_, MPI_STATUS_IGNORE);
    std::int64_t& known = peer_entered_[status.MPI_SOURCE];
    known = std::max(known, entered);
    if (status.MPI_TAG == kTagQuestion) {
      send(status.MPI_SOURCE, kTagAnswer, static_cast<std::int64_t>(entered_.load()));
    } else {
      answered.push_back(status.MPI_SOURCE);
    }
  }
  for (auto it = sends_.begin(); it != sends_.end();) {
    int complete = 0;
    MPI_Test(&it->request, &complete, MPI_STATUS_IGNORE);
    it = complete ? sends_.erase(it) : std::next(it);
  }
  return answered;
}

void Watchdog::send(int peer, int tag, std::int64_t value) {
  sends_.push_back(PendingSend{value, MPI_REQUEST_NULL});
  PendingSend& pending = sends_.back();
  MPI_Isend(&pending.value, 1, MPI_INT64_T, peer, tag, side_, &pending.request);
}

void Watchdog::report_and_exit(std::uint64_t seq, const std::string& op) {
  const int size = static_cast<int>(world_ranks_.size());
  for (int peer = 0; peer < size; ++peer) {
    if (peer != rank_) send(peer, kTagQuestion, static_cast<std::int64_t>(entered_.load()));
  }
  // Peers answer from their own watchdog threads within one poll interval; a peer that has not
  // answered by the deadline (dead, or its process frozen) counts by what it reported before.
  const auto wait = std::chrono::duration<double>(std::clamp(options_.timeout_s, 1.0, 5.0));
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(wait);
  std::vector<bool> answered(size, false);
  answered[rank_] = true;
  while (Clock::now() < deadline &&
         std::find(answered.begin(), answered.end(), false) != answered.end()) {
    for (int peer : serve_side_channel()) answered[peer] = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }

  std::string waiting;
  for (int peer = 0; peer < size; ++peer) {
    if (peer == rank_ || peer_entered_[peer] >= static_cast<std::int64_t>(seq)) continue;
    if (!waiting.empty()) waiting += ", ";
    waiting += std::to_string(world_ranks_[peer]);
  }
  if (waiting.empty()) waiting = "(none: every rank entered it)";
  const std::string message = "[rank " + std::to_string(world_rank_) + "] collective #" +
                              std::to_string(seq) + " " + op + " timed out after " +
                              format_seconds(options_.timeout_s) + " s; waiting for ranks " +
                              waiting + "\n";
  // One write, so that the lines of ranks sharing a terminal do not interleave.
  std::fputs(message.c_str(), stderr);
  abort_job(kWatchdogExitCode);
}

void Watchdog::fail(const std::string& what) {
  const std::string message = "[rank " + std::to_string(world_rank_) + "] " + what + "\n";
  std::fputs(message.c_str(), stderr);
  abort_job(kWatchdogExitCode);
}

}  // namespace shc::parallel
