#include "checkpoints/layout.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "checkpoints/file_io.h"

namespace shc::checkpoints {

namespace fs = std::filesystem;

std::string checkpoints_dir(const std::string& run_dir) {
  return (fs::path(run_dir) / "checkpoints").string();
}

std::string step_dir(const std::string& run_dir, int64_t step) {
  return (fs::path(checkpoints_dir(run_dir)) / ("step_" + std::to_string(step))).string();
}

std::string temporary_dir(const std::string& run_dir, int64_t step) {
  return (fs::path(checkpoints_dir(run_dir)) / (".tmp-" + std::to_string(step))).string();
}

std::string latest_file(const std::string& run_dir) {
  return (fs::path(run_dir) / "latest").string();
}

std::string rank_file_name(int rank) {
  char name[32];
  std::snprintf(name, sizeof name, "rank%05d.safetensors", rank);
  return name;
}

std::optional<int64_t> step_of(const std::string& dir) {
  const std::string name = fs::path(dir).lexically_normal().filename().string();
  if (name.rfind("step_", 0) != 0 || name.size() == 5) return std::nullopt;
  const std::string digits = name.substr(5);
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      digits.size() > 18) {
    return std::nullopt;
  }
  return std::stoll(digits);
}

std::vector<std::string> step_dirs(const std::string& run_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(checkpoints_dir(run_dir), ec)) {
    const auto step = step_of(entry.path().string());
    if (step && entry.is_directory()) found.emplace_back(*step, entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [step, path] : found) out.push_back(std::move(path));
  return out;
}

std::optional<std::string> read_latest(const std::string& run_dir) {
  const std::string path = latest_file(run_dir);
  if (!fs::exists(path)) return std::nullopt;
  std::string name = read_file(path);
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  return (fs::path(run_dir) / name).string();
}

void write_latest(const std::string& run_dir, const std::string& dir) {
  const auto relative = fs::path(dir).lexically_relative(run_dir).string();
  write_file_atomically(latest_file(run_dir), relative + "\n");
}

std::vector<std::string> apply_retention(const std::string& run_dir, int keep_last,
                                         int64_t keep_every, const std::string& protect) {
  const auto dirs = step_dirs(run_dir);
  std::vector<std::string> removed;
  for (size_t i = 0; i + size_t(std::max(keep_last, 0)) < dirs.size(); ++i) {
    const int64_t step = *step_of(dirs[i]);
    if (keep_every > 0 && step % keep_every == 0) continue;
    if (fs::path(dirs[i]).lexically_normal() == fs::path(protect).lexically_normal()) continue;
    fs::remove_all(dirs[i]);
    removed.push_back(dirs[i]);
  }
  return removed;
}

}  // namespace shc::checkpoints
