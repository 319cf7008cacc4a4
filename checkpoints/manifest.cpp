#include "checkpoints/manifest.h"

#include <filesystem>

#include "checkpoints/checksum.h"
#include "checkpoints/errors.h"
#include "checkpoints/file_io.h"

namespace shc::checkpoints {

using nlohmann::json;

json Manifest::to_json() const {
  json tensors_json = json::object();
  for (const auto& [name, record] : tensors) {
    json pieces = json::array();
    for (const auto& p : record.pieces) {
      pieces.push_back(
          {{"file", p.file}, {"offset", p.offset}, {"numel", p.numel}, {"checksum", p.checksum}});
    }
    tensors_json[name] = {{"shape", record.shape}, {"dtype", record.dtype}, {"pieces", pieces}};
  }
  json ranks_json = json::array();
  for (const auto& r : ranks) ranks_json.push_back({{"file", r.file}, {"tensors", r.tensors}});
  return {{"format", "shc-checkpoint"},
          {"format_version", format_version},
          {"step", step},
          {"world_size", world_size},
          {"run", run},
          {"ranks", ranks_json},
          {"tensors", tensors_json}};
}

Manifest Manifest::from_json(const json& j) {
  Manifest m;
  if (j.at("format").get<std::string>() != "shc-checkpoint") {
    throw std::runtime_error("not an SHC checkpoint manifest");
  }
  m.format_version = j.at("format_version").get<int>();
  if (m.format_version != kFormatVersion) {
    throw std::runtime_error("format version " + std::to_string(m.format_version) +
                             " (this build reads " + std::to_string(kFormatVersion) + ")");
  }
  m.step = j.at("step").get<int64_t>();
  m.world_size = j.at("world_size").get<int>();
  m.run = j.at("run");
  for (const auto& r : j.at("ranks")) {
    m.ranks.push_back({r.at("file").get<std::string>(),
                       r.at("tensors").get<std::map<std::string, std::string>>()});
  }
  for (const auto& [name, t] : j.at("tensors").items()) {
    TensorRecord record;
    record.shape = t.at("shape").get<std::vector<int64_t>>();
    record.dtype = t.at("dtype").get<std::string>();
    for (const auto& p : t.at("pieces")) {
      record.pieces.push_back({p.at("file").get<std::string>(), p.at("offset").get<int64_t>(),
                               p.at("numel").get<int64_t>(), p.at("checksum").get<std::string>()});
    }
    m.tensors.emplace(name, std::move(record));
  }
  return m;
}

void write_manifest(const std::string& dir, const Manifest& manifest) {
  // Invalid UTF-8 (e.g. a path or command line in another encoding) is replaced, not fatal.
  const std::string body = manifest.to_json().dump(1, ' ', false, json::error_handler_t::replace);
  const std::string text = "{\"checksum\": \"" + checksum(body.data(), body.size()) +
                           "\",\n\"manifest\": " + body + "}\n";
  write_file_atomically(dir + "/" + kManifestFile, text);
}

Manifest read_manifest(const std::string& dir) {
  const std::string path = dir + "/" + kManifestFile;
  if (!std::filesystem::exists(path)) throw CheckpointError("missing manifest '" + path + "'");
  const std::string text = read_file(path);
  json outer;
  try {
    outer = json::parse(text);
  } catch (const json::exception& e) {
    throw CheckpointError("corrupt manifest '" + path + "': " + e.what());
  }
  try {
    // The checksum covers the manifest exactly as written: its own serialisation.
    const std::string body =
        outer.at("manifest").dump(1, ' ', false, json::error_handler_t::replace);
    if (checksum(body.data(), body.size()) != outer.at("checksum").get<std::string>()) {
      throw CheckpointError("checksum mismatch in manifest '" + path + "'");
    }
    return Manifest::from_json(outer.at("manifest"));
  } catch (const CheckpointError&) {
    throw;
  } catch (const std::exception& e) {
    throw CheckpointError("corrupt manifest '" + path + "': " + e.what());
  }
}

}  // namespace shc::checkpoints
