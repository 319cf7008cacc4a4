# Tests of parallel/ (SPEC §5); include()d from tests/CMakeLists.txt. Every rank of an MPI test is
# one process, so the GoogleTest executable runs whole under mpirun (plain add_test, no
# discovery): alone (a 1-rank world, MPI as a singleton), with 2 ranks, and with 4 ranks on this
# 2-core machine (--oversubscribe). --bind-to none lets ranks share cores.
include(GoogleTest)
if(NOT TARGET GTest::gtest)
  find_package(GTest REQUIRED)
endif()

add_executable(parallel_test
  ${CMAKE_CURRENT_LIST_DIR}/ddp_test.cpp
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

# NAME_np1, NAME_np2 and NAME_np4 (--oversubscribe): the GoogleTest program TARGET run whole by
# every rank.
function(shc_add_mpi_test name target)
  add_test(NAME ${name}_np1 COMMAND ${target})
  add_test(NAME ${name}_np2
    COMMAND ${SHC_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:${target}>)
  add_test(NAME ${name}_np4
    COMMAND ${SHC_MPIEXEC} --oversubscribe ${MPIEXEC_NUMPROC_FLAG} 4 $<TARGET_FILE:${target}>)
  set_tests_properties(${name}_np1 PROPERTIES ENVIRONMENT "${SHC_PARALLEL_TEST_ENV}" TIMEOUT 300)
  set_tests_properties(${name}_np2 PROPERTIES
    ENVIRONMENT "${SHC_PARALLEL_TEST_ENV}" TIMEOUT 300 PROCESSORS 2)
  set_tests_properties(${name}_np4 PROPERTIES
    ENVIRONMENT "${SHC_PARALLEL_TEST_ENV}" TIMEOUT 300 PROCESSORS 4)
endfunction()
shc_add_mpi_test(parallel_test parallel_test)

# The watchdog ends a hung job: exit 5 within MAX_SECONDS (the 2 s timeout + 10 s, and + 10 s
# more when abort_job has to give up on a stuck abort hook), with the line
#   [rank R] collective #3 OP timed out after 2 s; waiting for ranks LIST
set(SHC_CHECK_FAILURE ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/check_job_failure.py)
function(shc_watchdog_test name op waiting max_seconds)
  add_test(NAME ${name}
    COMMAND ${SHC_CHECK_FAILURE} --code 5 --max-seconds ${max_seconds}
            --message "^\\[rank [0-9]+\\] collective #3 ${op} timed out after 2 s; waiting for ranks ${waiting}$"
            -- ${SHC_MPIEXEC} ${ARGN})
endfunction()
shc_watchdog_test(watchdog_np2 all_reduce "1" 12
  ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:watchdog_probe> 2 1)
shc_watchdog_test(watchdog_np4 all_reduce "1, 3" 12
  --oversubscribe ${MPIEXEC_NUMPROC_FLAG} 4 $<TARGET_FILE:watchdog_probe> 2 1,3)
# In a sub-group (odd world ranks): the message still names world ranks.
shc_watchdog_test(watchdog_group_np4 all_reduce "3" 12
  --oversubscribe ${MPIEXEC_NUMPROC_FLAG} 4 $<TARGET_FILE:watchdog_probe> 2 3 --odd-group)
# The Runtime's own barrier and string broadcast (used before any communicator exists).
shc_watchdog_test(watchdog_runtime_np2 barrier "1" 12
  ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:watchdog_probe> 2 1 --runtime)
# An abort hook that never returns (an NCCL abort stuck behind a kernel) cannot keep the job alive.
shc_watchdog_test(watchdog_stuck_abort_hook_np2 all_reduce "1" 24
  ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:watchdog_probe> 2 1 --stuck-abort-hook)
set_tests_properties(watchdog_np2 watchdog_runtime_np2 watchdog_stuck_abort_hook_np2 PROPERTIES
  ENVIRONMENT "${SHC_PARALLEL_TEST_ENV}" TIMEOUT 120 PROCESSORS 2)
set_tests_properties(watchdog_np4 watchdog_group_np4 PROPERTIES
  ENVIRONMENT "${SHC_PARALLEL_TEST_ENV}" TIMEOUT 120 PROCESSORS 4)

# A failure on one rank ends the whole job within 30 s with that rank's exit code and its message
# on stderr and in its log file (SPEC §5). shc_with_faults is the real CLI plus a test-only job
# whose DDP communication thread fails on rank 1.
add_executable(shc_with_faults ${PROJECT_SOURCE_DIR}/launch/main.cpp
                               ${CMAKE_CURRENT_LIST_DIR}/ddp_fault_job.cpp)
target_link_libraries(shc_with_faults PRIVATE shc_launch shc_jobs shc_warnings)
set(SHC_FAILURE_DIR ${CMAKE_CURRENT_BINARY_DIR}/failure)
add_test(NAME failure_ddp_thread_np2
  COMMAND ${SHC_CHECK_FAILURE} --code 1
          --message "\\[rank 1\\].*shc ddp-fault: injected failure in all_reduce #3"
          --log "${SHC_FAILURE_DIR}/ddp_thread/logs/rank*.log" --
          ${SHC_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:shc_with_faults> ddp-fault
          --run.dir ${SHC_FAILURE_DIR}/ddp_thread)
# A token id >= vocab in the one sequence that a single rank reads: exit 3 (data).
add_test(NAME failure_data_one_rank_np2
  COMMAND ${SHC_CHECK_FAILURE} --code 3
          --message "\\[rank [01]\\].*shc train: .*token id 300 >= vocab_size 257"
          --log "${SHC_FAILURE_DIR}/data/run/logs/rank*.log"
          --setup ${CMAKE_CURRENT_LIST_DIR}/make_faulty_shard.py $<TARGET_FILE:shc>
                  ${SHC_FAILURE_DIR}/data 32 --
          ${SHC_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:shc> train
          --run.dir ${SHC_FAILURE_DIR}/data/run --data.train "${SHC_FAILURE_DIR}/data/data/train-*.h5"
          --model.preset tiny --model.n_layers 1 --train.seq_len 32 --train.global_batch 2
          --train.max_steps 1000 --train.eval_every 0 --train.threads 1)
# Rank 0 cannot create the run directory (a regular file in the way), while rank 1 waits at the
# runtime barrier: exit 3 (I/O).
add_test(NAME failure_run_dir_np2
  COMMAND ${SHC_CHECK_FAILURE} --code 3
          --message "\\[rank 0\\].*shc train: cannot create the run directory '${SHC_FAILURE_DIR}/blocker/run'"
          --file-in-the-way ${SHC_FAILURE_DIR}/blocker --
          ${SHC_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:shc> train
          --run.dir ${SHC_FAILURE_DIR}/blocker/run --data.train unused.h5 --model.preset tiny)
set_tests_properties(failure_ddp_thread_np2 failure_data_one_rank_np2 failure_run_dir_np2
  PROPERTIES ENVIRONMENT "${SHC_PARALLEL_TEST_ENV}" TIMEOUT 120 PROCESSORS 2)
# A run directory that is another directory on rank 1 (a private mount over the same path, as on
# nodes without a shared filesystem): exit 3 at start, saying so (skipped without mount rights).
add_test(NAME failure_unshared_run_dir_np2
  COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/shared_run_dir_test.sh $<TARGET_FILE:shc>
          ${SHC_FAILURE_DIR})
set_tests_properties(failure_unshared_run_dir_np2 PROPERTIES
  ENVIRONMENT "${SHC_PARALLEL_TEST_ENV}" TIMEOUT 180 PROCESSORS 2 SKIP_RETURN_CODE 77)

# `shc selftest` on the CPU: every check passes on 1 and 2 ranks; with --selftest.abort_path the
# last rank's failure ends the job with exit 1 within 30 s.
add_test(NAME selftest_np1 COMMAND shc selftest)
add_test(NAME selftest_np2
  COMMAND ${SHC_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:shc> selftest)
set_tests_properties(selftest_np1 selftest_np2 PROPERTIES
  PASS_REGULAR_EXPRESSION "all checks passed" FAIL_REGULAR_EXPRESSION "FAIL"
  ENVIRONMENT "${SHC_PARALLEL_TEST_ENV}" TIMEOUT 120 PROCESSORS 2)
add_test(NAME selftest_abort_path_np2
  COMMAND ${SHC_CHECK_FAILURE} --code 1
          --message "\\[rank 1\\].*shc selftest: injected failure in all_reduce #2" --
          ${SHC_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:shc> selftest
          --selftest.abort_path true)
set_tests_properties(selftest_abort_path_np2 PROPERTIES
  ENVIRONMENT "${SHC_PARALLEL_TEST_ENV}" TIMEOUT 120 PROCESSORS 2)

# FSDP's device rule, ZeRO-2/ZeRO-3 gathers and memory, bf16 memory, adaptive-rank recompute.
add_executable(fsdp_test
  ${CMAKE_CURRENT_LIST_DIR}/fsdp_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/parallel_test_main.cpp
)
target_link_libraries(fsdp_test PRIVATE shc_jobs shc_parallel GTest::gtest shc_warnings)
shc_add_mpi_test(fsdp_test fsdp_test)

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
