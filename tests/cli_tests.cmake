# Tests of the `shc` command line; include()d from tests/CMakeLists.txt.
include(GoogleTest)
if(NOT TARGET GTest::gtest_main)
  find_package(GTest REQUIRED)
endif()
add_executable(cli_test ${CMAKE_CURRENT_LIST_DIR}/cli_test.cpp)
# shc_launch and shc_jobs are OBJECT libraries: both must be linked directly (see jobs/).
target_link_libraries(cli_test PRIVATE shc_launch shc_jobs GTest::gtest_main shc_warnings)
# PRE_TEST: list the tests when CTest runs, not at build time, so building never has to load
# LibTorch's shared libraries.
gtest_discover_tests(cli_test DISCOVERY_MODE PRE_TEST)
