#include "checkpoints/restore.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <memory>

#include "checkpoints/checksum.h"
#include "checkpoints/errors.h"
#include "checkpoints/layout.h"
#include "checkpoints/safetensors.h"
#include "parallel/runtime.h"

namespace shc::checkpoints {

namespace {

// The rank files of one checkpoint, opened on first use; tensors read from them are verified
// against the checksums the manifest holds.
class VerifiedReader {
 public:
  explicit VerifiedReader(std::string dir) : dir_(std::move(dir)) {}
  torch::Tensor read(const std::string& file, const std::string& name,
                     const std::string& expected) {
    auto& f = files_[file];
    if (!f) f = std::make_unique<SafetensorsFile>(dir_ + "/" + file);
    const torch::Tensor t = f->read(name);
    if (const std::string found = checksum(t); found != expected) {
      throw CheckpointError("checksum mismatch in '" + f->path() + "' tensor '" + name +
                            "' (expected " + expected + ", read " + found + ")");
    }
    return t;
  }

 private:
  std::string dir_;
  std::map<std::string, std::unique_ptr<SafetensorsFile>> files_;
};

}  // namespace

int64_t verify_checkpoint(const std::string& dir, const Manifest& manifest) {
  VerifiedReader reader(dir);
  int64_t checked = 0;
  for (const auto& [name, record] : manifest.tensors) {
    for (const auto& piece : record.pieces) {
      reader.read(piece.file, name, piece.checksum);
      ++checked;
    }
  }
  for (const auto& rank : manifest.ranks) {
    for (const auto& [name, sum] : rank.tensors) {
      reader.read(rank.file, name, sum);
      ++checked;
    }
  }
  return checked;
}

void load_into(const std::string& dir, const Manifest& manifest, RankState& state, int rank) {
  VerifiedReader reader(dir);

  torch::NoGradGuard no_grad;
  for (auto& slice : state.slices) {
    const auto it = manifest.tensors.find(slice.name);
    if (it == manifest.tensors.end()) {
      throw CheckpointError("checkpoint '" + dir + "' has no tensor '" + slice.name + "'");
    }
    const TensorRecord& record = it->second;
    if (record.shape != slice.shape) {
      throw CheckpointError("checkpoint '" + dir + "' tensor '" + slice.name +
                            "' has another shape than the model's");
    }
    const int64_t begin = slice.offset, end = slice.offset + slice.data.numel();
    int64_t covered = 0;
    for (const auto& piece : record.pieces) {
      const int64_t lo = std::max(begin, piece.offset);
      const int64_t hi = std::min(end, piece.offset + piece.numel);
      if (hi <= lo) continue;
      const torch::Tensor stored = reader.read(piece.file, slice.name, piece.checksum);
      if (stored.numel() != piece.numel) {
        throw CheckpointError("'" + dir + "/" + piece.file + "' tensor '" + slice.name +
                              "' holds " + std::to_string(stored.numel()) +
                              " elements, the manifest says " + std::to_string(piece.numel));
      }
      slice.data.narrow(0, lo - begin, hi - lo)
          .copy_(stored.view({-1}).narrow(0, lo - piece.offset, hi - lo));
      covered += hi - lo;
    }
    if (covered != end - begin) {
      throw CheckpointError("checkpoint '" + dir + "' does not hold all of tensor '" + slice.name +
                            "' (elements " + std::to_string(begin) + ".." + std::to_string(end) +
                            ")");
    }
  }
  state.rank_tensors.clear();
  if (rank >= 0 && rank < int(manifest.ranks.size())) {
    const RankFile& mine = manifest.ranks[rank];
    for (const auto& [name, sum] : mine.tensors) {
      state.rank_tensors.emplace_back(name, reader.read(mine.file, name, sum));
    }
  }
}

std::vector<std::string> resume_candidates(const std::string& run_dir) {
  std::vector<std::string> out;
  const auto latest = read_latest(run_dir);
  if (latest) out.push_back(*latest);
  auto dirs = step_dirs(run_dir);
  std::reverse(dirs.begin(), dirs.end());
  for (const auto& d : dirs) {
    if (!latest || step_of(d) != step_of(*latest)) out.push_back(d);
  }
  return out;
}

std::optional<Resumed> resume(std::vector<std::string> candidates, bool strict,
                              const std::function<void(const Manifest&)>& check, RankState& state,
                              int rank, const std::function<void(const std::string&)>& report) {
  auto& runtime = parallel::Runtime::instance();
  std::string list;
  for (const auto& c : candidates) list += c + '\n';
  runtime.broadcast_string(list);
  candidates.clear();
  for (size_t start = 0, end; (end = list.find('\n', start)) != std::string::npos;
       start = end + 1) {
    candidates.push_back(list.substr(start, end - start));
  }

  // One agreement: did any rank fail? If so, rank 0 learns every rank's message.
  auto failed_anywhere = [&](const std::string& error) {
    if (runtime.all_reduce_max({error.empty() ? 0 : 1})[0] == 0) return std::string();
    std::string message;
    for (const auto& e : runtime.gather_strings(error)) {
      if (!e.empty() && message.find(e) == std::string::npos)
        message += (message.empty() ? "" : "; ") + e;
    }
    runtime.broadcast_string(message);
    return message;
  };

  for (const auto& dir : candidates) {
    Resumed resumed{dir, {}};
    std::string error;
    try {
      resumed.manifest = read_manifest(dir);
    } catch (const CheckpointError& e) {
      error = e.what();
    }
    if (error = failed_anywhere(error); error.empty()) {
      try {
        check(resumed.manifest);
        load_into(dir, resumed.manifest, state, rank);
      } catch (const CheckpointError& e) {
        error = e.what();
      } catch (const c10::Error& e) {
        error = "cannot load checkpoint '" + dir + "': " + e.what_without_backtrace();
      } catch (const nlohmann::json::exception& e) {
        error = "corrupt manifest in '" + dir + "': " + e.what();
      }
      error = failed_anywhere(error);
    }
    if (error.empty()) return resumed;
    if (strict) throw CheckpointError(error + " (checkpoint.strict: no fallback)");
    if (rank == 0) report(error);
  }
  return std::nullopt;
}

}  // namespace shc::checkpoints
