// Process-wide logging (SPEC §8). Everything logs through BOOST_LOG_TRIVIAL(level); this file
// only decides where records go: rank 0 (or every rank) to stderr, every rank to its own file.
#pragma once

#include <string>

namespace shc::jobs {

// Console sink on stderr, lines like "[2026-11-22 05:50:01.123] [rank 0] info: message".
// Only rank 0 writes to the console unless all_ranks_to_console. level is trace, debug, info,
// warning, error or fatal (throws std::invalid_argument otherwise) and filters every sink.
// Calling it again replaces the previous console sink and level.
void init_logging(int rank, const std::string& level, bool all_ranks_to_console);

// Also write every record of this process to run_dir/logs/rank<R>.log (directories created,
// appended to on resume, flushed per record so a crash loses nothing). A second call moves the
// file sink to the new path. Throws std::runtime_error when the file cannot be opened.
void add_rank_log_file(const std::string& run_dir, int rank);

// A fatal error of this rank: an error record (in this rank's log file, and on the console where
// this rank logs there), and on stderr in any case, prefixed "[rank R]", so that the failing rank's
// message is never filtered away.
void log_fatal(const std::string& message);

// How many ranks the launcher started (mpirun, srun), before MPI is initialised: the first of
// OMPI_COMM_WORLD_SIZE, PMI_SIZE, and under SLURM SLURM_STEP_NUM_TASKS / SLURM_NTASKS, that is
// set to a number; else 1.
int world_size_from_environment();

// This process's rank as the launcher announces it, before MPI is initialised: the first of
// OMPI_COMM_WORLD_RANK, PMI_RANK, PMIX_RANK, SLURM_PROCID that is set to a number, else 0.
int rank_from_environment();

}  // namespace shc::jobs
