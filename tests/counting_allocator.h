// The counting CPU allocator lives in jobs/ (`shc profile` measures memory with it); the tests use
// it under its old name.
#pragma once

#include "jobs/counting_allocator.h"

namespace shc::test {
using CountingCpuAllocator = shc::jobs::CountingCpuAllocator;
}  // namespace shc::test
