# Tests of checkpoints/ (SPEC §7); include()d from tests/CMakeLists.txt. checkpoints_test is the
# GoogleTest suite; safetensors_interop checks files against Python's `safetensors` package
# (pinned in scripts/requirements.txt) in both directions, through safetensors_tool.
include(GoogleTest)
if(NOT TARGET GTest::gtest_main)
  find_package(GTest REQUIRED)
endif()

add_executable(checkpoints_test ${CMAKE_CURRENT_LIST_DIR}/checkpoints_test.cpp)
target_link_libraries(checkpoints_test PRIVATE shc_checkpoints GTest::gtest_main shc_warnings)
# Named checkpoints.<Suite>.<Test>, so that `ctest -R checkpoints` selects them all.
gtest_discover_tests(checkpoints_test DISCOVERY_MODE PRE_TEST TEST_PREFIX checkpoints.
  PROPERTIES TIMEOUT 120)

find_package(nlohmann_json 3 REQUIRED)
add_executable(safetensors_tool ${CMAKE_CURRENT_LIST_DIR}/safetensors_tool.cpp)
target_link_libraries(safetensors_tool
  PRIVATE shc_checkpoints nlohmann_json::nlohmann_json shc_warnings)
add_test(NAME safetensors_interop
  COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/safetensors_interop.py
          $<TARGET_FILE:safetensors_tool> ${CMAKE_CURRENT_BINARY_DIR}/safetensors_interop)
set_tests_properties(safetensors_interop PROPERTIES TIMEOUT 120)
