// Internal to data/: RAII for HDF5 identifiers and the attribute helpers the shard reader and
// writer share. Includes <hdf5.h>, so it stays out of the public headers.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

namespace shc::data::h5 {

// Owns one HDF5 identifier and closes it with the matching H5*close on destruction. Closing
// happens under the caller's hdf5_lock() like every other HDF5 call.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& other) noexcept
      : id_(std::exchange(other.id_, H5I_INVALID_HID)), closer_(other.closer_) {}
  Handle& operator=(Handle&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = std::exchange(other.id_, H5I_INVALID_HID);
      closer_ = other.closer_;
    }
    return *this;
  }
  ~Handle() { reset(); }

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  explicit operator bool() const { return valid(); }
  void reset() {
    if (id_ >= 0 && closer_ != nullptr) closer_(id_);
    id_ = H5I_INVALID_HID;
  }
  // Closes now and reports whether closing succeeded (flushes happen on file close).
  bool close() {
    const bool ok = id_ < 0 || closer_ == nullptr || closer_(id_) >= 0;
    id_ = H5I_INVALID_HID;
    return ok;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

// Turns off HDF5's automatic error-stack printing for the calling thread (the stack is per
// thread in thread-safe builds), so a failure reaches the user as one DataError line. Cheap
// after the first call on a thread.
void silence_errors();

// Attributes on an object (the file's root group for shards).
void write_int_attribute(hid_t object, const char* name, hid_t file_type, int64_t value);
void write_string_attribute(hid_t object, const char* name, const std::string& value);
bool has_attribute(hid_t object, const char* name);
// nullopt when the attribute is missing or not of integer class; "why" says which.
std::optional<int64_t> read_int_attribute(hid_t object, const char* name, std::string* why);
// Accepts fixed-length and variable-length strings; nullopt as above.
std::optional<std::string> read_string_attribute(hid_t object, const char* name, std::string* why);

// "uint16", "int32", "float64", "string", ... for error messages.
std::string describe_type(hid_t type);

}  // namespace shc::data::h5
