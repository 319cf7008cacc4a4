// Small MPI helpers shared by the backends (not part of the public API).
#pragma once

#include <mpi.h>

#include <stdexcept>
#include <string>

namespace shc::parallel::detail {

// Throws std::runtime_error naming the call and MPI's error text (on communicators whose error
// handler is MPI_ERRORS_RETURN; elsewhere MPI aborts before returning an error).
inline void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(rc, text, &length);
  throw std::runtime_error(std::string(call) + " failed: " + std::string(text, length));
}

inline MPI_Comm duplicate(MPI_Comm parent) {
  MPI_Comm comm = MPI_COMM_NULL;
  check_mpi(MPI_Comm_dup(parent, &comm), "MPI_Comm_dup");
  // Errors on it become exceptions instead of MPI's default abort.
  MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  return comm;
}

inline int comm_rank(MPI_Comm comm) {
  int rank = 0;
  check_mpi(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  return rank;
}

inline int comm_size(MPI_Comm comm) {
  int size = 0;
  check_mpi(MPI_Comm_size(comm, &size), "MPI_Comm_size");
  return size;
}

// MPI_Comm_free unless MPI is already finalised (a communicator outliving the runtime).
inline void free_comm(MPI_Comm& comm) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
}

}  // namespace shc::parallel::detail
