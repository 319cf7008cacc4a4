// Precompiled header for SHC's own targets (not installed): LibTorch's headers dominate compile
// time (~15 s per translation unit without it).
#pragma once
#include <torch/torch.h>
