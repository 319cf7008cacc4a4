// `shc inspect PATH`: what a checkpoint, a run directory, an export or a dataset shard holds,
// printed to stdout. A checkpoint's every tensor is read and checked against its checksum; a
// mismatch is reported and the job exits 3.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <iostream>
#include <set>
#include <string>

#include "checkpoints/errors.h"
#include "checkpoints/layout.h"
#include "checkpoints/manifest.h"
#include "checkpoints/restore.h"
#include "checkpoints/safetensors.h"
#include "data/shard.h"
#include "jobs/job.h"

namespace shc::jobs {
namespace {

namespace fs = std::filesystem;

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void inspect_checkpoint(const std::string& dir, std::ostream& out) {
  const auto m = checkpoints::read_manifest(dir);
  const auto& run = m.run;
  out << "checkpoint " << dir << "\n"
      << "  step " << m.step << ", world size " << m.world_size << ", strategy "
      << run.at("strategy").at("name").get<std::string>() << " (shard group "
      << run.at("strategy").at("shard_group_size") << ")\n"
      << "  model " << run.at("model").at("family").get<std::string>() << " "
      << run.at("model").at("config").dump() << "\n"
      << "  data: " << run.at("data").at("consumed_sequences") << " sequences consumed, tokenizer "
      << run.at("data").at("tokenizer").get<std::string>() << "\n"
      << "  optimizer step " << run.at("optimizer").at("step") << ", lr "
      << run.at("schedule").at("lr") << " of schedule to step "
      << run.at("schedule").at("max_steps") << "\n"
      << "  saved " << run.at("provenance").at("saved_at").get<std::string>() << " by "
      << run.at("provenance").at("git_revision").get<std::string>() << ", LibTorch "
      << run.at("provenance").at("libtorch").get<std::string>() << "\n";
  int64_t elements = 0;
  std::set<std::string> files;
  for (const auto& [name, record] : m.tensors) {
    int64_t numel = 1;
    for (auto d : record.shape) numel *= d;
    elements += numel;
    out << "  " << name << " " << record.dtype << " " << shape_text(record.shape) << " in "
        << record.pieces.size() << " piece(s)\n";
    for (const auto& piece : record.pieces) files.insert(piece.file);
  }
  const int64_t checked = checkpoints::verify_checkpoint(dir, m);
  out << "  " << m.tensors.size() << " tensors, " << elements << " elements, " << files.size()
      << " file(s); checksums verified: " << checked << " stored tensors OK\n";
}

void inspect_safetensors(const std::string& path, std::ostream& out) {
  const checkpoints::SafetensorsFile file(path);
  out << "safetensors " << path << " (" << fs::file_size(path) << " bytes)\n";
  for (const auto& [key, value] : file.metadata())
    out << "  metadata " << key << " = " << value << "\n";
  for (const auto& e : file.entries()) {
    out << "  " << e.name << " " << checkpoints::dtype_name(e.dtype) << " " << shape_text(e.shape)
        << "\n";
  }
  out << "  " << file.entries().size() << " tensors\n";
}

void inspect_shard(const std::string& path, std::ostream& out) {
  const data::ShardReader reader(path);
  const auto& info = reader.info();
  out << "dataset shard " << path << "\n"
      << "  " << info.num_tokens << " tokens (uint" << info.token_bytes * 8 << "), vocab_size "
      << info.vocab_size << ", eos_id " << info.eos_id << ", tokenizer " << info.tokenizer
      << (info.has_doc_offsets ? ", with document offsets" : "") << "\n";
}

class InspectJob : public Job {
 public:
  void add_options(po::options_description& options) const override {
    options.add_options()("path", po::value<std::string>()->required()->value_name("PATH"),
                          "a checkpoint directory, a run directory (its latest checkpoint), an "
                          "export (.safetensors) or a dataset shard (.h5); also as a bare "
                          "argument: shc inspect PATH");
  }
  void add_positional(po::positional_options_description& positional) const override {
    positional.add("path", 1);
  }

  int run(const po::variables_map& vm) override {
    const std::string path = vm["path"].as<std::string>();
    if (fs::is_directory(path)) {
      if (fs::exists(fs::path(path) / checkpoints::kManifestFile)) {
        inspect_checkpoint(path, std::cout);
      } else if (const auto latest = checkpoints::read_latest(path)) {
        std::cout << "run directory " << path << ": latest is " << *latest << "\n";
        inspect_checkpoint(*latest, std::cout);
      } else {
        throw checkpoints::CheckpointError("'" + path +
                                           "' is neither a checkpoint (no manifest.json) nor a "
                                           "run directory (no latest)");
      }
    } else if (!fs::exists(path)) {
      throw checkpoints::CheckpointError("no such file or directory '" + path + "'");
    } else if (fs::path(path).extension() == ".h5") {
      inspect_shard(path, std::cout);
    } else {
      inspect_safetensors(path, std::cout);
    }
    return kExitOk;
  }
};

SHC_REGISTER_JOB(InspectJob, "inspect",
                 "summarise a checkpoint (checksums verified), an export or a dataset shard");

}  // namespace
}  // namespace shc::jobs
