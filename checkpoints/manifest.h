// RUN_DIR/checkpoints/step_<N>/manifest.json (SPEC §7): what a checkpoint holds and where. The
// manifest is written last, by rank 0, once every rank's shard file is on disk; a step directory
// without a valid manifest is not a checkpoint.
//
// Tensors are recorded at their global shape: each is a set of pieces, a piece being elements
// [offset, offset + numel) of the flattened tensor stored in one rank's safetensors file under the
// tensor's name. Any world size and strategy can therefore load any slice it needs (resharding).
// Every piece, every rank-local tensor (RNG states) and the manifest itself carry an xxHash
// checksum (checkpoints/checksum.h).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace shc::checkpoints {

inline constexpr int kFormatVersion = 1;
inline constexpr const char* kManifestFile = "manifest.json";

struct Piece {
  std::string file;  // the rank file holding it, relative to the checkpoint directory
  int64_t offset = 0, numel = 0;
  std::string checksum;
};

struct TensorRecord {
  std::vector<int64_t> shape;  // global shape
  std::string dtype;           // safetensors dtype name, e.g. "F32"
  std::vector<Piece> pieces;   // disjoint, together covering every element
};

struct RankFile {
  std::string file;                            // e.g. "rank00001.safetensors"
  std::map<std::string, std::string> tensors;  // rank-local tensor -> checksum (RNG states)
};

struct Manifest {
  int format_version = kFormatVersion;
  int64_t step = 0;
  int world_size = 1;
  std::map<std::string, TensorRecord> tensors;  // resharded on load
  std::vector<RankFile> ranks;                  // index = rank
  // What the trainer records besides tensors: model family and config, strategy and sharding,
  // data position, schedule, optimizer step count, tokenizer, provenance (jobs/trainer.cpp).
  nlohmann::json run;

  nlohmann::json to_json() const;
  static Manifest from_json(const nlohmann::json& j);  // nlohmann::json::exception when malformed
};

// Writes `manifest` to dir/manifest.json as {"checksum": ..., "manifest": {...}}, the checksum
// being that of the manifest's serialisation; fsynced.
void write_manifest(const std::string& dir, const Manifest& manifest);
// Reads and verifies dir/manifest.json. CheckpointError naming the file: "checksum mismatch" when
// the manifest does not match its checksum, "corrupt" when it does not parse, "missing" when
// absent.
Manifest read_manifest(const std::string& dir);

}  // namespace shc::checkpoints
