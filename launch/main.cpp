#include <iostream>

#include "launch/cli.h"

int main(int argc, char** argv) {
  return shc::launch::run_cli(argc, argv, std::cout, std::cerr);
}
