// Small pieces that several jobs share (train, analyze-routing, evaluate): how many intra-op
// threads a rank should use, and a loader batch as a tensor.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "parallel/runtime.h"

namespace shc::jobs {

// Intra-op threads for this rank when the user did not choose: the cores this process may run on
// (mpirun binds each rank to a core by default; so does OpenMPI's singleton start), shared among
// the ranks of this node when the process is not bound. More threads than cores makes LibTorch's
// OpenMP workers spin against each other (measured: 30x slower steps).
int default_threads(const parallel::Runtime& runtime);

// A loader batch (data::Loader::next_batch: rows of seq_len + 1 tokens) as a (rows, seq_len + 1)
// int64 tensor.
torch::Tensor batch_tensor(std::vector<int32_t> tokens, int64_t rows);

// Rank 0's `list()`, on every rank (rank 0 calls it and broadcasts the result). For what each rank
// could see differently on its own, e.g. the checkpoints of a run that is still writing them.
std::vector<std::string> agreed_list(const std::function<std::vector<std::string>()>& list,
                                     parallel::Runtime& runtime);

struct StoredModel;  // model_files.h

// read_stored_model(path) with `path` resolved by rank 0 (resolve_stored_model_path), on every
// rank: a run still writing checkpoints cannot give the ranks different models.
StoredModel read_agreed_stored_model(const std::string& path, parallel::Runtime& runtime);

// "a,b,,c" -> {a, b, c}: the items of a comma-separated option, empty ones dropped.
std::vector<std::string> split_list(const std::string& comma_separated);

}  // namespace shc::jobs
