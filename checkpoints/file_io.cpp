#include "checkpoints/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "checkpoints/errors.h"

namespace shc::checkpoints {
namespace {

[[noreturn]] void throw_error(const char* what, const std::string& path, int error) {
  throw CheckpointError(std::string("cannot ") + what + " '" + path + "': " + std::strerror(error));
}

std::string parent_directory(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = other.release();
  }
  return *this;
}

int UniqueFd::release() {
  return std::exchange(fd_, -1);
}

void UniqueFd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void fsync_path(const std::string& path) {
  // O_RDONLY opens directories as well as files; fsync(2) on either flushes it.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0 || ::fsync(fd.get()) != 0) throw_error("fsync", path, errno);
}

void write_file_atomically(const std::string& path, const std::string& contents) {
  const std::string temporary = path + ".tmp." + std::to_string(::getpid());
  try {
    FileWriter writer(temporary);
    writer.write(contents.data(), contents.size());
    writer.sync_and_close();
    if (std::rename(temporary.c_str(), path.c_str()) != 0)
      throw_error("rename", temporary + "' to '" + path, errno);
  } catch (...) {
    ::unlink(temporary.c_str());
    throw;
  }
  fsync_path(parent_directory(path));
}

std::string read_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat info {};
  if (fd.get() < 0 || ::fstat(fd.get(), &info) != 0) throw_error("read", path, errno);
  if (S_ISDIR(info.st_mode)) throw_error("read", path, EISDIR);
  std::string contents(static_cast<size_t>(info.st_size), '\0');
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = ::read(fd.get(), contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_error("read", path, errno);
    if (n == 0) break;  // the file shrank meanwhile: return what it holds
    done += static_cast<size_t>(n);
  }
  contents.resize(done);
  return contents;
}

FileWriter::FileWriter(std::string path) : path_(std::move(path)) {
  fd_ = UniqueFd(::open(path_.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644));
  if (fd_.get() < 0) throw_error("write", path_, errno);
}

void FileWriter::write(const void* data, size_t bytes) {
  const char* next = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd_.get(), next, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_error("write", path_, errno);
    next += n;
    bytes -= static_cast<size_t>(n);
  }
}

void FileWriter::sync_and_close() {
  if (::fsync(fd_.get()) != 0) throw_error("write", path_, errno);
  // close(2) releases the descriptor even when it reports an error: never retry it.
  if (::close(fd_.release()) != 0) throw_error("write", path_, errno);
}

}  // namespace shc::checkpoints
