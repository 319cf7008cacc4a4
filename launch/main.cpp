#include <iostream>

#include "jobs/host_memory.h"
#include "launch/cli.h"

int main(int argc, char** argv) {
  shc::keep_freed_host_memory();
  return shc::launch::run_cli(argc, argv, std::cout, std::cerr);
}
