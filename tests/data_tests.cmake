# Tests of data/ (shards, tokenizers, prepare, loader); include()d from tests/CMakeLists.txt.
# data_test is torch-free; prepare_cli_test drives `shc prepare` through launch/cli.cpp and so
# links the jobs (and with them LibTorch).
include(GoogleTest)
if(NOT TARGET GTest::gtest_main)
  find_package(GTest REQUIRED)
endif()

add_executable(data_test
  ${CMAKE_CURRENT_LIST_DIR}/loader_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/prepare_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/shard_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_test.cpp
)
# HDF5 directly too: the tests inspect and break shard files with the plain C API.
target_link_libraries(data_test PRIVATE shc_data HDF5::HDF5 GTest::gtest_main shc_warnings)
target_compile_definitions(data_test PRIVATE SHC_TEST_PYTHON="${Python3_EXECUTABLE}")
gtest_discover_tests(data_test DISCOVERY_MODE PRE_TEST PROPERTIES TIMEOUT 120)

add_executable(prepare_cli_test ${CMAKE_CURRENT_LIST_DIR}/prepare_cli_test.cpp)
# shc_launch and shc_jobs are OBJECT libraries: both must be linked directly (see jobs/).
target_link_libraries(prepare_cli_test
  PRIVATE shc_launch shc_jobs shc_data GTest::gtest_main shc_warnings)
gtest_discover_tests(prepare_cli_test DISCOVERY_MODE PRE_TEST PROPERTIES TIMEOUT 120)
