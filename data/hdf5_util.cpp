#include "data/hdf5_util.h"

#include <stdexcept>
#include <vector>

namespace shc::data::h5 {

void silence_errors() {
  thread_local bool done = false;
  if (!done) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    done = true;
  }
}

void write_int_attribute(hid_t object, const char* name, hid_t file_type, int64_t value) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(object, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr || H5Awrite(attr.get(), H5T_NATIVE_INT64, &value) < 0) {
    throw std::runtime_error(std::string("cannot write attribute '") + name + "'");
  }
}

void write_string_attribute(hid_t object, const char* name, const std::string& value) {
  // A variable-length ASCII string: h5py reads it as a Python str, and C readers with the
  // usual H5T_C_S1 memory type need no character-set conversion (HDF5 has none).
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_ASCII);
  H5Tset_strpad(type.get(), H5T_STR_NULLTERM);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(object, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
              H5Aclose);
  const char* data = value.c_str();
  if (!attr || H5Awrite(attr.get(), type.get(), &data) < 0) {
    throw std::runtime_error(std::string("cannot write attribute '") + name + "'");
  }
}

bool has_attribute(hid_t object, const char* name) {
  return H5Aexists(object, name) > 0;
}

namespace {

// Opens a scalar (or one-element) attribute; sets why and returns an invalid handle otherwise.
Handle open_scalar_attribute(hid_t object, const char* name, std::string* why) {
  if (!has_attribute(object, name)) {
    if (why) *why = std::string("missing attribute '") + name + "'";
    return {};
  }
  Handle attr(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
  if (!attr) {
    if (why) *why = std::string("cannot read attribute '") + name + "'";
    return {};
  }
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  if (!space || H5Sget_simple_extent_npoints(space.get()) != 1) {
    if (why) *why = std::string("attribute '") + name + "' is not a single value";
    return {};
  }
  return attr;
}

}  // namespace

std::optional<int64_t> read_int_attribute(hid_t object, const char* name, std::string* why) {
  Handle attr = open_scalar_attribute(object, name, why);
  if (!attr) return std::nullopt;
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  if (!type || H5Tget_class(type.get()) != H5T_INTEGER) {
    if (why) {
      *why = std::string("attribute '") + name + "' has type " + describe_type(type.get()) +
             ", expected an integer";
    }
    return std::nullopt;
  }
  int64_t value = 0;
  if (H5Aread(attr.get(), H5T_NATIVE_INT64, &value) < 0) {
    if (why) *why = std::string("cannot read attribute '") + name + "'";
    return std::nullopt;
  }
  return value;
}

std::optional<std::string> read_string_attribute(hid_t object, const char* name, std::string* why) {
  Handle attr = open_scalar_attribute(object, name, why);
  if (!attr) return std::nullopt;
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  if (!type || H5Tget_class(type.get()) != H5T_STRING) {
    if (why) {
      *why = std::string("attribute '") + name + "' has type " + describe_type(type.get()) +
             ", expected a string";
    }
    return std::nullopt;
  }
  const auto fail = [&]() -> std::optional<std::string> {
    if (why) *why = std::string("cannot read attribute '") + name + "'";
    return std::nullopt;
  };
  if (H5Tis_variable_str(type.get()) > 0) {
    Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
    char* data = nullptr;
    if (H5Aread(attr.get(), mem.get(), &data) < 0) return fail();
    std::string value = data ? data : "";
    H5free_memory(data);
    return value;
  }
  const size_t size = H5Tget_size(type.get());
  Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(mem.get(), size + 1);
  H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
  H5Tset_strpad(mem.get(), H5T_STR_NULLTERM);
  std::vector<char> buffer(size + 1, '\0');
  if (H5Aread(attr.get(), mem.get(), buffer.data()) < 0) return fail();
  return std::string(buffer.data());
}

std::string describe_type(hid_t type) {
  if (type < 0) return "unknown";
  const size_t bits = H5Tget_size(type) * 8;
  switch (H5Tget_class(type)) {
    case H5T_INTEGER:
      return (H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int") + std::to_string(bits);
    case H5T_FLOAT:
      return "float" + std::to_string(bits);
    case H5T_STRING:
      return "string";
    case H5T_COMPOUND:
      return "compound";
    case H5T_ENUM:
      return "enum";
    case H5T_ARRAY:
      return "array";
    default:
      return "non-numeric";
  }
}

}  // namespace shc::data::h5
