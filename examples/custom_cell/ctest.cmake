# custom_cell's ctest checks (registered in examples/CMakeLists.txt):
#   cmake -DEXE=path/to/custom_cell -DWORK=scratch/dir -DMODE=smoke|errors -P ctest.cmake
# smoke:  the --smoke run passes its gradcheck, trains all three models (so every loss fell) and writes its
#         files; the user's own text (--data) works too.
# errors: each kind of bad input gets exit code 2 and its one-line message.
include(${CMAKE_CURRENT_LIST_DIR}/../common/expect.cmake)
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

if(MODE STREQUAL "smoke")
  set(run "${WORK}/run")
  expect_run(NAME "smoke run" COMMAND ${EXE} --smoke --out ${run}
             STDOUT "gradcheck 'mgu': passed.*mgu .*lstm .*gru .*wrote"
             FILES ${run}/metrics.csv ${run}/compare.svg)
  file(STRINGS ${run}/metrics.csv header LIMIT_COUNT 1)
  if(NOT header STREQUAL "step,mgu_train_bpc,mgu_val_bpc,mgu_tokens_per_s,lstm_train_bpc,lstm_val_bpc,lstm_tokens_per_s,gru_train_bpc,gru_val_bpc,gru_tokens_per_s")
    message(FATAL_ERROR "metrics.csv header: got '${header}'")
  endif()
  string(REPEAT "the cat sat on the mat. the dog sat on the log.\n" 60 text)
  file(WRITE ${WORK}/mine.txt "${text}")
  expect_run(NAME "own data" COMMAND ${EXE} --smoke --data ${WORK}/mine.txt --window 16 --batch 4 --steps 40
             --out ${WORK}/mine
             FILES ${WORK}/mine/metrics.csv ${WORK}/mine/compare.svg)
  # --test: every model's bits/char on another text, the last line.
  file(WRITE ${WORK}/other.txt "the dog sat on the cat. the log sat on the mat.\n")
  expect_run(NAME "own data, --test" COMMAND ${EXE} --smoke --data ${WORK}/mine.txt --test ${WORK}/other.txt
             --window 16 --batch 4 --steps 40 --out ${WORK}/mine_t
             STDOUT "custom_cell: test bits/char on '[^']*other.txt' \\(48 characters\\): mgu [0-9.]+, lstm [0-9.]+, gru [0-9.]+\n$")
elseif(MODE STREQUAL "errors")
  set(out --out ${WORK}/out)
  expect_run(NAME "missing data file" COMMAND ${EXE} --smoke ${out} --data ${WORK}/nope.txt EXIT 2
             STDERR "^custom_cell: cannot read --data file; got '[^']*nope.txt' \\(no such file\\), expected a readable text file\n$")
  file(WRITE ${WORK}/empty.txt "")
  expect_run(NAME "empty data file" COMMAND ${EXE} --smoke ${out} --data ${WORK}/empty.txt EXIT 2
             STDERR "custom_cell: --data file is empty; got '[^']*empty.txt' \\(0 bytes\\)")
  # A binary file (here: one with a NUL byte) is not text.
  execute_process(COMMAND printf "abc\\000def" OUTPUT_FILE ${WORK}/binary.txt)
  expect_run(NAME "malformed (binary) data file" COMMAND ${EXE} --smoke ${out} --data ${WORK}/binary.txt EXIT 2
             STDERR "^custom_cell: --data file is not text; got a NUL byte at offset 3 of '[^']*binary.txt', expected a text file\n$")
  file(WRITE ${WORK}/short.txt "Far too short for a window of 32 characters in 16 streams.\n")
  expect_run(NAME "data too short for the window" COMMAND ${EXE} --smoke ${out} --data ${WORK}/short.txt EXIT 2
             STDERR "^custom_cell: --data file too short for --window 32 and --batch 16; got 59 bytes in '[^']*short.txt', expected at least 587 ")
  expect_run(NAME "flag out of range" COMMAND ${EXE} --smoke ${out} --hidden 0 EXIT 2
             STDERR "custom_cell: --hidden out of range; got 0, expected 1 <= --hidden <= 4096")
  # An absurd learning rate: the loss goes non-finite; the run stops (exit 3) naming the op and time step.
  expect_run(NAME "non-finite loss" COMMAND ${EXE} --smoke ${out} --lr 1e30 EXIT 3
             STDERR "^custom_cell: [a-z]+: training diverged at step [0-9]+; got loss (inf|-?nan), expected a finite loss \\(the step run again stops at: run_cell: step t=[0-9]+ of 32: [a-z_]+: non-finite output \\(anomaly detection\\)")
  expect_run(NAME "unknown flag" COMMAND ${EXE} --smoke --bogus EXIT 2 STDERR "^custom_cell: .*--bogus")
  expect_run(NAME "help" COMMAND ${EXE} --help STDOUT "--data.*--hidden")
else()
  message(FATAL_ERROR "ctest.cmake: unknown MODE; got '${MODE}', expected smoke or errors")
endif()
