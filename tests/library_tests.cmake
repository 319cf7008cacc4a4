# Hyper-connections as a library (SPEC §4.3); include()d from tests/CMakeLists.txt after
# parallel_tests.cmake (shc_add_mpi_test).

# The wrapper, an injected transformer and the history kind under DDP (and history under FSDP)
# equal one process: 1, 2 and 4 ranks.
add_executable(library_parallel_test
  ${CMAKE_CURRENT_LIST_DIR}/library_parallel_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/parallel_test_main.cpp
)
target_link_libraries(library_parallel_test PRIVATE shc_jobs shc_parallel GTest::gtest shc_warnings)
shc_add_mpi_test(library_parallel library_parallel_test)
