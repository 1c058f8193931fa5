# compare_cells' ctest checks (registered in examples/CMakeLists.txt):
#   cmake -DEXE=path/to/compare_cells -DWORK=scratch/dir -DMODE=smoke|errors -P ctest.cmake
# smoke:  the --smoke run sizes three cells to one budget, trains each through char_lm (whose --smoke fails unless
#         its loss fell) and writes the table and both plots.
# errors: bad flags and a failing char_lm get exit code 2 and a one-line message.
include(${CMAKE_CURRENT_LIST_DIR}/../common/expect.cmake)
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

if(MODE STREQUAL "smoke")
  set(run "${WORK}/run")
  expect_run(NAME "smoke run" COMMAND ${EXE} --smoke --out ${run}
             STDOUT "\\| lstm \\| 48 \\| [0-9]+ \\| [0-9.]+ .*\\| mingru \\| [0-9]+ \\|.*\\| rglru \\| [0-9]+ \\|"
             FILES ${run}/compare.md ${run}/compare_steps.svg ${run}/compare_time.svg ${run}/mingru/metrics.csv)
elseif(MODE STREQUAL "errors")
  set(out --out ${WORK}/out)
  expect_run(NAME "unknown cell" COMMAND ${EXE} --smoke ${out} --cells lstm,nope EXIT 2
             STDERR "compare_cells: char_lm --count-params failed for --cell nope; got exit code 2: char_lm: unknown --cell; got 'nope'")
  expect_run(NAME "empty cell list" COMMAND ${EXE} --smoke ${out} --cells , EXIT 2
             STDERR "compare_cells: --cells is empty; got ','")
  expect_run(NAME "missing char_lm" COMMAND ${EXE} --smoke ${out} --char-lm ${WORK}/no_such_program EXIT 2
             STDERR "compare_cells: cannot run '[^']*no_such_program'")
  expect_run(NAME "flag out of range" COMMAND ${EXE} --smoke ${out} --steps 0 EXIT 2
             STDERR "compare_cells: --steps out of range; got 0")
endif()
