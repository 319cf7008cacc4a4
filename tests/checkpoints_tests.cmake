# Tests of checkpoints/ (SPEC §7); include()d from tests/CMakeLists.txt. checkpoints_test is the
# GoogleTest suite; safetensors_interop checks files against Python's `safetensors` package
# (pinned in scripts/requirements.txt) in both directions, through safetensors_tool.
include(GoogleTest)
if(NOT TARGET GTest::gtest_main)
  find_package(GTest REQUIRED)
endif()

add_executable(checkpoints_test ${CMAKE_CURRENT_LIST_DIR}/checkpoints_test.cpp)
target_link_libraries(checkpoints_test PRIVATE shc_checkpoint_files GTest::gtest_main shc_warnings)
# Named checkpoints.<Suite>.<Test>, so that `ctest -R checkpoints` selects them all.
gtest_discover_tests(checkpoints_test DISCOVERY_MODE PRE_TEST TEST_PREFIX checkpoints.
  PROPERTIES TIMEOUT 120)

find_package(nlohmann_json 3 REQUIRED)
add_executable(safetensors_tool ${CMAKE_CURRENT_LIST_DIR}/safetensors_tool.cpp)
target_link_libraries(safetensors_tool
  PRIVATE shc_checkpoint_files nlohmann_json::nlohmann_json shc_warnings)
add_test(NAME safetensors_interop
  COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/safetensors_interop.py
          $<TARGET_FILE:safetensors_tool> ${CMAKE_CURRENT_BINARY_DIR}/safetensors_interop)
set_tests_properties(safetensors_interop PROPERTIES TIMEOUT 120)

# The checkpoint protocol in one process: layout, retention, manifest checksums, metrics
# truncation, and the export round trip (same logits).
add_executable(checkpoint_io_test ${CMAKE_CURRENT_LIST_DIR}/checkpoint_io_test.cpp)
target_link_libraries(checkpoint_io_test PRIVATE shc_jobs GTest::gtest_main shc_warnings)
gtest_discover_tests(checkpoint_io_test DISCOVERY_MODE PRE_TEST TEST_PREFIX checkpoints.
  PROPERTIES TIMEOUT 120)

# `shc train` checkpoints end to end, one scenario per test (tests/checkpoint_end_to_end.py).
foreach(scenario exact_resume reshard crash_during_write corruption retention_async_rerun
                 preemption disk_full export)
  add_test(NAME checkpoint_${scenario}
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/checkpoint_end_to_end.py
            $<TARGET_FILE:shc> ${CMAKE_CURRENT_BINARY_DIR}/checkpoint_end_to_end ${scenario})
  set_tests_properties(checkpoint_${scenario} PROPERTIES TIMEOUT 600)
endforeach()
