# One fuzz target's ctest (UNROLL_FUZZ):
#   cmake -DFUZZER=<binary> -DSEEDS=<committed corpus> -DCORPUS=<build-tree corpus> -DREGRESSIONS=<dir>
#         -DARTIFACTS=<path prefix of crash files> -DSECONDS=<n> -P run_fuzzer.cmake
# Runs each regression case once as a plain input (a bug that is back fails in a second), then fuzzes for SECONDS
# from a copy of the seeds in the build tree (what it finds accumulates there; the committed corpus stays as it
# is). Fails on any crash, sanitizer report, leak, timeout or out-of-memory.
cmake_minimum_required(VERSION 3.21)
# -malloc_limit_mb: inputs are a few KB, so no single allocation should come near 256 MB; a loader that trusts a
# size in the file before checking it against the file size fails here instead of exhausting the machine.
set(limits -rss_limit_mb=2048 -malloc_limit_mb=256 -timeout=10)

file(GLOB cases LIST_DIRECTORIES false ${REGRESSIONS}/*)
if(cases)
  execute_process(COMMAND ${FUZZER} ${limits} ${cases} COMMAND_ERROR_IS_FATAL ANY)
endif()

file(MAKE_DIRECTORY ${CORPUS})
file(COPY ${SEEDS}/ DESTINATION ${CORPUS})
# -artifact_prefix: the crash-*, leak-*, timeout-* and oom-* inputs go to the build tree, not the working directory.
get_filename_component(artifact_dir ${ARTIFACTS} DIRECTORY)
file(MAKE_DIRECTORY ${artifact_dir})
execute_process(COMMAND ${FUZZER} ${limits} -max_total_time=${SECONDS} -print_final_stats=1
                        -artifact_prefix=${ARTIFACTS} ${CORPUS}
                COMMAND_ERROR_IS_FATAL ANY)
