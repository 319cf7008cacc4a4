#include "data/loader.h"

#include <glob.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <filesystem>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <numeric>
#include <sstream>
#include <thread>

#include "data/shard.h"

namespace shc::data {

namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform in [0, range) without modulo bias (rejection sampling).
uint64_t uniform_below(uint64_t& state, uint64_t range) {
  const uint64_t limit = std::numeric_limits<uint64_t>::max() -
                         std::numeric_limits<uint64_t>::max() % range;  // a multiple of range
  uint64_t x;
  do {
    x = splitmix64(state);
  } while (x >= limit);
  return x % range;
}

std::string at(const std::string& path) {
  return "data file '" + path + "': ";
}

}  // namespace

std::vector<uint32_t> epoch_permutation(int64_t num_sequences, uint64_t seed, int64_t epoch) {
  if (num_sequences < 0 || num_sequences > int64_t{std::numeric_limits<uint32_t>::max()}) {
    throw std::invalid_argument("epoch_permutation: " + std::to_string(num_sequences) +
                                " sequences is outside [0, 2^32 - 1]");
  }
  std::vector<uint32_t> order(static_cast<size_t>(num_sequences));
  std::iota(order.begin(), order.end(), 0u);
  uint64_t state = seed;
  state = splitmix64(state) ^ static_cast<uint64_t>(epoch);
  state = splitmix64(state);
  for (size_t i = order.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(uniform_below(state, i));
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

std::vector<std::string> expand_glob(const std::string& pattern) {
  if (pattern.find_first_of("*?[{~") == std::string::npos) {
    std::error_code ec;
    if (!std::filesystem::exists(pattern, ec)) throw DataError(at(pattern) + "no such file");
    return {pattern};
  }
  glob_t found{};
  const int rc = ::glob(pattern.c_str(), GLOB_BRACE | GLOB_TILDE, nullptr, &found);
  std::vector<std::string> out;
  if (rc == 0) out.assign(found.gl_pathv, found.gl_pathv + found.gl_pathc);
  ::globfree(&found);
  if (rc == GLOB_NOSPACE) throw std::bad_alloc();
  if (out.empty()) throw DataError("no data files match '" + pattern + "'");
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> expand_globs(const std::vector<std::string>& patterns) {
  std::vector<std::string> out;
  for (const auto& pattern : patterns) {
    auto files = expand_glob(pattern);
    out.insert(out.end(), files.begin(), files.end());
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<std::string> expand_glob_list(const std::string& comma_separated) {
  std::vector<std::string> patterns;
  std::stringstream s(comma_separated);
  for (std::string p; std::getline(s, p, ',');) {
    if (!p.empty()) patterns.push_back(p);
  }
  return expand_globs(patterns);
}

// ---------------------------------------------------------------------------------------------
// The prefetch thread. It alone calls HDF5: it opens and validates the files, reads each batch
// this rank needs, and closes the files when it ends.

class Loader::Worker {
 public:
  struct Metadata {
    int64_t sequences = 0;
    int64_t tokens = 0;
    int64_t vocab_size = 0;
    int64_t eos_id = -1;
    std::string tokenizer;
  };

  explicit Worker(const LoaderOptions& options, int64_t local_batch)
      : options_(options), local_batch_(local_batch) {
    // The thread owns the promise, so the shared state outlives its set_value() call.
    std::promise<void> ready;
    auto started = ready.get_future();
    thread_ = std::thread([this, ready = std::move(ready)]() mutable { run(ready); });
    try {
      started.get();  // metadata_ is written by the thread before it signals
    } catch (...) {
      thread_.join();  // the thread ends after a failed start
      throw;
    }
  }

  ~Worker() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_producer_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  const Metadata& metadata() const { return metadata_; }

  std::vector<int32_t> next(int64_t position) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (error_) std::rethrow_exception(error_);
    wake_consumer_.wait(lock, [&] { return !queue_.empty(); });
    Batch batch = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    wake_producer_.notify_one();
    if (batch.error) {
      std::lock_guard<std::mutex> relock(mutex_);
      error_ = batch.error;
      std::rethrow_exception(batch.error);
    }
    if (batch.position != position) {
      throw std::logic_error("loader: prefetched position " + std::to_string(batch.position) +
                             " where " + std::to_string(position) + " was expected");
    }
    return std::move(batch.tokens);
  }

  void restore(int64_t position) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++generation_;
      queue_.clear();
      next_position_ = position;
      error_ = nullptr;
      paused_ = false;
    }
    wake_producer_.notify_all();
  }

 private:
  struct Batch {
    int64_t position = 0;
    std::vector<int32_t> tokens;
    std::exception_ptr error;
  };

  // Files and the global sequence numbering; lives on the thread.
  struct Index {
    std::vector<ShardReader> readers;
    std::vector<int64_t> first_sequence;  // per file, plus the total at the end
  };

  Index open_files(Metadata& metadata) const {
    Index index;
    const int64_t window = options_.seq_len + 1;
    index.first_sequence.push_back(0);
    for (const auto& file : options_.files) {
      ShardReader reader(file);
      const ShardInfo& info = reader.info();
      if (index.readers.empty()) {
        metadata.vocab_size = info.vocab_size;
        metadata.eos_id = info.eos_id;
        metadata.tokenizer = info.tokenizer;
        if (options_.expected_vocab >= 0 && info.vocab_size != options_.expected_vocab) {
          throw DataError(at(file) + "vocab_size " + std::to_string(info.vocab_size) +
                          " differs from the model's vocab_size " +
                          std::to_string(options_.expected_vocab));
        }
      } else if (info.vocab_size != metadata.vocab_size || info.tokenizer != metadata.tokenizer ||
                 info.eos_id != metadata.eos_id) {
        const auto describe = [](int64_t vocab, const std::string& tokenizer, int64_t eos) {
          return "vocab_size " + std::to_string(vocab) + ", tokenizer '" + tokenizer +
                 "', eos_id " + std::to_string(eos);
        };
        throw DataError(at(file) + describe(info.vocab_size, info.tokenizer, info.eos_id) +
                        " differ from '" + options_.files.front() + "' (" +
                        describe(metadata.vocab_size, metadata.tokenizer, metadata.eos_id) +
                        "): the shards come from different tokenizers");
      }
      if (info.num_tokens < window) {
        throw DataError(at(file) + "holds " + std::to_string(info.num_tokens) +
                        " tokens, fewer than one sequence (seq_len + 1 = " +
                        std::to_string(window) + " tokens)");
      }
      metadata.tokens += info.num_tokens;
      index.first_sequence.push_back(index.first_sequence.back() +
                                     (info.num_tokens - 1) / options_.seq_len);
      index.readers.push_back(std::move(reader));
    }
    metadata.sequences = index.first_sequence.back();
    if (metadata.sequences > int64_t{std::numeric_limits<uint32_t>::max()}) {
      throw DataError("loader: " + std::to_string(metadata.sequences) +
                      " sequences per epoch is more than this loader supports (2^32 - 1)");
    }
    return index;
  }

  // The permutations of the epochs in use (at most two kept: a batch may straddle an epoch end).
  const std::vector<uint32_t>& order(int64_t epoch) {
    auto found = orders_.find(epoch);
    if (found != orders_.end()) return found->second;
    while (orders_.size() >= 2) orders_.erase(orders_.begin());
    return orders_.emplace(epoch, epoch_permutation(metadata_.sequences, options_.seed, epoch))
        .first->second;
  }

  void fill(const Index& index, Batch& batch) {
    const int64_t window = options_.seq_len + 1;
    const int64_t sequences = metadata_.sequences;
    batch.tokens.resize(static_cast<size_t>(local_batch_ * window));
    std::vector<uint32_t> buffer(static_cast<size_t>(window));
    const int64_t first = batch.position + options_.rank * local_batch_;
    for (int64_t row = 0; row < local_batch_; ++row) {
      const int64_t position = first + row;
      const int64_t sequence =
          order(position / sequences)[static_cast<size_t>(position % sequences)];
      const auto next_file =
          std::upper_bound(index.first_sequence.begin(), index.first_sequence.end(), sequence);
      const size_t file = static_cast<size_t>(next_file - index.first_sequence.begin() - 1);
      const int64_t offset = (sequence - index.first_sequence[file]) * options_.seq_len;
      index.readers[file].read_range(offset, window, buffer.data());
      std::transform(buffer.begin(), buffer.end(), batch.tokens.begin() + row * window,
                     [](uint32_t id) { return static_cast<int32_t>(id); });
    }
  }

  void run(std::promise<void>& ready) {
    Index index;
    try {
      Metadata metadata;
      index = open_files(metadata);
      metadata_ = metadata;
    } catch (...) {
      index = Index();  // close what was opened, on this thread
      ready.set_exception(std::current_exception());
      return;
    }
    ready.set_value();
    while (true) {
      Batch batch;
      int64_t generation = 0;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_producer_.wait(lock, [&] {
          return stop_ ||
                 (!paused_ && queue_.size() < static_cast<size_t>(options_.prefetch_batches));
        });
        if (stop_) break;
        generation = generation_;
        batch.position = next_position_;
        next_position_ += options_.global_batch;
      }
      try {
        fill(index, batch);
      } catch (...) {
        batch.tokens.clear();
        batch.error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (generation != generation_) continue;  // restored meanwhile: drop it
        if (batch.error) paused_ = true;          // nothing more until restore()
        queue_.push_back(std::move(batch));
      }
      wake_consumer_.notify_one();
    }
    // index (the open files) is destroyed here, on this thread.
  }

  const LoaderOptions options_;
  const int64_t local_batch_;
  Metadata metadata_;
  std::map<int64_t, std::vector<uint32_t>> orders_;  // thread only

  std::mutex mutex_;
  std::condition_variable wake_producer_;
  std::condition_variable wake_consumer_;
  std::deque<Batch> queue_;
  int64_t generation_ = 0;
  int64_t next_position_ = 0;
  bool stop_ = false;
  bool paused_ = false;
  std::exception_ptr error_;  // consumer side: the error handed out, until restore()
  std::thread thread_;
};

// ---------------------------------------------------------------------------------------------

Loader::Loader(LoaderOptions options) : options_(std::move(options)) {
  auto& o = options_;
  const auto bad = [](const std::string& why) { return std::invalid_argument("loader: " + why); };
  if (o.files.empty()) throw bad("no data files");
  if (o.seq_len < 1) throw bad("seq_len (" + std::to_string(o.seq_len) + ") must be positive");
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    throw bad("rank " + std::to_string(o.rank) + " is outside world size " +
              std::to_string(o.world_size));
  }
  if (o.global_batch < 1 || o.global_batch % o.world_size != 0) {
    throw bad("global_batch (" + std::to_string(o.global_batch) +
              ") must be a positive multiple of the world size (" + std::to_string(o.world_size) +
              ")");
  }
  if (o.prefetch_batches < 1) throw bad("prefetch_batches must be at least 1");
  std::sort(o.files.begin(), o.files.end());
  o.files.erase(std::unique(o.files.begin(), o.files.end()), o.files.end());
  local_batch_ = o.global_batch / o.world_size;

  worker_ = std::make_unique<Worker>(o, local_batch_);
  const auto& m = worker_->metadata();
  sequences_per_epoch_ = m.sequences;
  total_tokens_ = m.tokens;
  vocab_size_ = m.vocab_size;
  eos_id_ = m.eos_id;
  tokenizer_ = m.tokenizer;
}

Loader::~Loader() = default;

std::vector<int32_t> Loader::next_batch() {
  auto batch = worker_->next(position_);
  position_ += options_.global_batch;
  return batch;
}

void Loader::restore(int64_t position) {
  if (position < 0 || position % options_.global_batch != 0) {
    throw std::invalid_argument("loader: cannot restore position " + std::to_string(position) +
                                ": not a multiple of global_batch " +
                                std::to_string(options_.global_batch));
  }
  worker_->restore(position);
  position_ = position;
}

}  // namespace shc::data
