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

# The README's C++ examples, compiled and run from the README's own text: every ```cpp block
# preceded by `<!-- example: NAME -->` becomes NAME.cpp (extract_readme_examples.py), so the
# documentation cannot drift from what builds. The list below must match the README's markers
# (the extraction fails otherwise). They include <shc/shc.h> as an installed user would; in the
# build tree build/readme_include/shc points at core/.
set(SHC_README_EXAMPLES readme_wrapper readme_history readme_inject)
set(SHC_README_DIR ${CMAKE_CURRENT_BINARY_DIR}/readme_examples)
set(SHC_README_SOURCES)
foreach(example ${SHC_README_EXAMPLES})
  list(APPEND SHC_README_SOURCES ${SHC_README_DIR}/${example}.cpp)
endforeach()
add_custom_command(
  OUTPUT ${SHC_README_SOURCES}
  COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/extract_readme_examples.py
          ${PROJECT_SOURCE_DIR}/README.md ${SHC_README_DIR} ${SHC_README_EXAMPLES}
  DEPENDS ${PROJECT_SOURCE_DIR}/README.md ${CMAKE_CURRENT_LIST_DIR}/extract_readme_examples.py
  COMMENT "Extracting the C++ examples from README.md"
  VERBATIM)
file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/readme_include)
file(CREATE_LINK ${PROJECT_SOURCE_DIR}/core ${CMAKE_BINARY_DIR}/readme_include/shc SYMBOLIC)
foreach(example ${SHC_README_EXAMPLES})
  add_executable(${example} ${SHC_README_DIR}/${example}.cpp)
  target_include_directories(${example} PRIVATE ${CMAKE_BINARY_DIR}/readme_include)
  target_link_libraries(${example} PRIVATE shc_core shc_warnings)
  add_test(NAME ${example} COMMAND ${example})
  set_tests_properties(${example} PROPERTIES TIMEOUT 120)
endforeach()
