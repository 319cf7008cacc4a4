# Tests of parallel/ (SPEC §5); include()d from tests/CMakeLists.txt. Every rank of an MPI test is
# one process, so the GoogleTest executable runs whole under mpirun (plain add_test, no
# discovery): alone (a 1-rank world, MPI as a singleton), with 2 ranks, and with 4 ranks on this
# 2-core machine (--oversubscribe). --bind-to none lets ranks share cores.
include(GoogleTest)
if(NOT TARGET GTest::gtest)
  find_package(GTest REQUIRED)
endif()

add_executable(parallel_test
  ${CMAKE_CURRENT_LIST_DIR}/parallel_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/parallel_test_main.cpp
)
target_link_libraries(parallel_test PRIVATE shc_parallel GTest::gtest shc_warnings)

# A rank that stops calling collectives: the watchdog must end the job with exit 5.
add_executable(watchdog_probe ${CMAKE_CURRENT_LIST_DIR}/watchdog_probe.cpp)
target_link_libraries(watchdog_probe PRIVATE shc_parallel shc_warnings)

# OpenMPI refuses to run as root (CI containers) without the first two; one torch thread per rank
# keeps oversubscribed ranks from fighting over the cores. Set per test, not globally.
set(SHC_PARALLEL_TEST_ENV OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1)
set(SHC_MPIEXEC ${MPIEXEC_EXECUTABLE} ${MPIEXEC_PREFLAGS} --bind-to none)

add_test(NAME parallel_test_np1 COMMAND parallel_test)
add_test(NAME parallel_test_np2
  COMMAND ${SHC_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:parallel_test>)
add_test(NAME parallel_test_np4
  COMMAND ${SHC_MPIEXEC} --oversubscribe ${MPIEXEC_NUMPROC_FLAG} 4 $<TARGET_FILE:parallel_test>)
set_tests_properties(parallel_test_np1 PROPERTIES ENVIRONMENT "${SHC_PARALLEL_TEST_ENV}" TIMEOUT 300)
set_tests_properties(parallel_test_np2 PROPERTIES
  ENVIRONMENT "${SHC_PARALLEL_TEST_ENV}" TIMEOUT 300 PROCESSORS 2)
set_tests_properties(parallel_test_np4 PROPERTIES
  ENVIRONMENT "${SHC_PARALLEL_TEST_ENV}" TIMEOUT 300 PROCESSORS 4)

# check_watchdog.py TIMEOUT EXPECTED_WAITING COMMAND...: exit 5, the message, and wall time under
# TIMEOUT + 10 s.
set(SHC_CHECK_WATCHDOG ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/check_watchdog.py)
add_test(NAME watchdog_np2
  COMMAND ${SHC_CHECK_WATCHDOG} 2 "1"
          ${SHC_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:watchdog_probe> 2 1)
add_test(NAME watchdog_np4
  COMMAND ${SHC_CHECK_WATCHDOG} 2 "1, 3"
          ${SHC_MPIEXEC} --oversubscribe ${MPIEXEC_NUMPROC_FLAG} 4
          $<TARGET_FILE:watchdog_probe> 2 1,3)
# In a sub-group (odd world ranks): the message still names world ranks.
add_test(NAME watchdog_group_np4
  COMMAND ${SHC_CHECK_WATCHDOG} 2 "3"
          ${SHC_MPIEXEC} --oversubscribe ${MPIEXEC_NUMPROC_FLAG} 4
          $<TARGET_FILE:watchdog_probe> 2 3 --odd-group)
set_tests_properties(watchdog_np2 PROPERTIES
  ENVIRONMENT "${SHC_PARALLEL_TEST_ENV}" TIMEOUT 120 PROCESSORS 2)
set_tests_properties(watchdog_np4 watchdog_group_np4 PROPERTIES
  ENVIRONMENT "${SHC_PARALLEL_TEST_ENV}" TIMEOUT 120 PROCESSORS 4)

# FSDP's device rule, ZeRO-2/ZeRO-3 gathers and memory, bf16 memory, adaptive-rank recompute.
add_executable(fsdp_test
  ${CMAKE_CURRENT_LIST_DIR}/fsdp_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/parallel_test_main.cpp
)
target_link_libraries(fsdp_test PRIVATE shc_jobs shc_parallel GTest::gtest shc_warnings)
add_test(NAME fsdp_test_np1 COMMAND fsdp_test)
add_test(NAME fsdp_test_np2
  COMMAND ${SHC_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:fsdp_test>)
add_test(NAME fsdp_test_np4
  COMMAND ${SHC_MPIEXEC} --oversubscribe ${MPIEXEC_NUMPROC_FLAG} 4 $<TARGET_FILE:fsdp_test>)
set_tests_properties(fsdp_test_np1 PROPERTIES ENVIRONMENT "${SHC_PARALLEL_TEST_ENV}" TIMEOUT 300)
set_tests_properties(fsdp_test_np2 PROPERTIES
  ENVIRONMENT "${SHC_PARALLEL_TEST_ENV}" TIMEOUT 300 PROCESSORS 2)
set_tests_properties(fsdp_test_np4 PROPERTIES
  ENVIRONMENT "${SHC_PARALLEL_TEST_ENV}" TIMEOUT 300 PROCESSORS 4)

# Sharded initialisation of the 1b preset: 2 ranks only (each builds the 1.68 B-parameter model
# unit by unit, ~3.4 GB of shards per rank; 4 oversubscribed ranks would double the runtime).
add_executable(fsdp_init_memory_test
  ${CMAKE_CURRENT_LIST_DIR}/fsdp_init_memory_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/parallel_test_main.cpp
)
target_link_libraries(fsdp_init_memory_test PRIVATE shc_parallel GTest::gtest shc_warnings)
add_test(NAME fsdp_init_memory_np2
  COMMAND ${SHC_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:fsdp_init_memory_test>)
set_tests_properties(fsdp_init_memory_np2 PROPERTIES
  ENVIRONMENT "${SHC_PARALLEL_TEST_ENV}" TIMEOUT 300 PROCESSORS 2)
