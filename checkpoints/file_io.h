// Durable file writes for checkpoints (SPEC §7, commit protocol): POSIX calls with every failure
// turned into a CheckpointError that names the file, so that a full disk (ENOSPC), a file size
// limit (EFBIG) or an I/O error (EIO) is reported instead of leaving a silently short file.
// Durability follows the usual POSIX recipe: data reaches the disk with fsync(2) on the file, and
// a rename or a new directory entry with fsync(2) on the directory that holds it.
#pragma once

#include <cstddef>
#include <string>

namespace shc::checkpoints {

// An open file descriptor, closed (errors ignored) when destroyed or reset. Movable, not copyable.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  int release();
  void reset();

 private:
  int fd_ = -1;
};

// fsync(2) of a file or a directory. CheckpointError "cannot fsync '<path>': <strerror>".
void fsync_path(const std::string& path);

// Replaces `path` with `contents` so that a reader sees either the old file or the complete new
// one, never a partial one, even if the process or the machine dies meanwhile: writes
// `path + ".tmp.<pid>"`, fsyncs it, renames it over `path` and fsyncs the parent directory.
// On failure the temporary file is removed and `path` is untouched.
void write_file_atomically(const std::string& path, const std::string& contents);

// The whole file. CheckpointError "cannot read '<path>': <strerror>" when missing or unreadable.
std::string read_file(const std::string& path);

// Creates (or truncates) a file and writes it sequentially. write() hands the caller's buffer to
// write(2) as it is (no buffering, no copy), so large writes stay large. Every failure is a
// CheckpointError "cannot write '<path>': <strerror>". A writer destroyed without
// sync_and_close() closes the file without throwing and without fsync.
class FileWriter {
 public:
  explicit FileWriter(std::string path);  // open(2) with O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  // All `bytes` bytes, retrying partial writes and EINTR.
  void write(const void* data, size_t bytes);
  // fsync(2) then close(2); both can report a failed write-back (EIO, ENOSPC on some filesystems).
  void sync_and_close();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  UniqueFd fd_;
};

}  // namespace shc::checkpoints
