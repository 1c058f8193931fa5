# long_memory's ctest checks (registered in examples/CMakeLists.txt):
#   cmake -DEXE=path/to/long_memory -DWORK=scratch/dir -DMODE=smoke|errors -P ctest.cmake
# smoke:  the --smoke run succeeds (so every cell's loss fell) and writes its files; a lengths file (--data)
#         with clipping on works too.
# errors: each kind of bad input gets exit code 2 and its one-line message.
include(${CMAKE_CURRENT_LIST_DIR}/../common/expect.cmake)
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

if(MODE STREQUAL "smoke")
  set(run "${WORK}/run")
  expect_run(NAME "smoke run" COMMAND ${EXE} --smoke --out ${run}
             STDOUT "adding +10  lstm .*copy +10  gru "
             FILES ${run}/summary.csv ${run}/metrics_adding_T10.csv ${run}/metrics_copy_T10.csv
                   ${run}/learning_adding_T10.svg ${run}/learning_copy_T10.svg ${run}/grad_norm_adding_T10.csv
                   ${run}/grad_norm_adding_T10.svg ${run}/grad_norm_copy_T10.svg)
  file(STRINGS ${run}/metrics_adding_T10.csv header LIMIT_COUNT 1)
  if(NOT header MATCHES "^step,rnn_train_loss,rnn_val_loss,rnn_val_score,rnn_mean_grad_norm,rnn_max_grad_norm,lstm_")
    message(FATAL_ERROR "metrics_adding_T10.csv header: got '${header}'")
  endif()
  file(STRINGS ${run}/grad_norm_adding_T10.csv rows)
  list(LENGTH rows n)
  if(NOT n EQUAL 11)  # header + one row per time step
    message(FATAL_ERROR "grad_norm_adding_T10.csv: got ${n} lines, expected 11")
  endif()
  file(WRITE ${WORK}/lengths.txt "length\n# two short ones\n8\n12\n")
  expect_run(NAME "lengths from a file, clipping on" COMMAND ${EXE} --smoke --tasks adding --cells lstm --clip 1
             --data ${WORK}/lengths.txt --out ${WORK}/mine STDOUT "adding task, T = 12"
             FILES ${WORK}/mine/learning_adding_T8.svg ${WORK}/mine/learning_adding_T12.svg)
elseif(MODE STREQUAL "errors")
  set(out --out ${WORK}/out)
  expect_run(NAME "missing data file" COMMAND ${EXE} --smoke ${out} --data ${WORK}/nope.txt EXIT 2
             STDERR "^long_memory: cannot read --data file; got '[^']*nope.txt' \\(no such file\\), expected a readable file of sequence lengths\n$")
  file(WRITE ${WORK}/empty.txt "")
  expect_run(NAME "empty data file" COMMAND ${EXE} --smoke ${out} --data ${WORK}/empty.txt EXIT 2
             STDERR "long_memory: --data file is empty; got '[^']*empty.txt' \\(0 bytes\\)")
  file(WRITE ${WORK}/comments.txt "length\n# nothing here\n")
  expect_run(NAME "no lengths in the file" COMMAND ${EXE} --smoke ${out} --data ${WORK}/comments.txt EXIT 2
             STDERR "long_memory: --data file has no sequence lengths; got only blank lines")
  file(WRITE ${WORK}/bad.txt "10\n20, forty\n")
  expect_run(NAME "malformed data file" COMMAND ${EXE} --smoke ${out} --data ${WORK}/bad.txt EXIT 2
             STDERR "^long_memory: --data file is malformed; got 'forty' on line 2 of '[^']*bad.txt', expected sequence lengths")
  file(WRITE ${WORK}/short.txt "5\n")
  expect_run(NAME "length too short for the task" COMMAND ${EXE} --smoke ${out} --data ${WORK}/short.txt EXIT 2
             STDERR "^long_memory: sequence length too short for the copy task; got 5 in --data file '[^']*short.txt', expected at least 7 \\(2 x --copy-symbols \\+ 1\\)\n$")
  expect_run(NAME "flag out of range" COMMAND ${EXE} --smoke ${out} --hidden 0 EXIT 2
             STDERR "long_memory: --hidden out of range; got 0, expected 1 <= --hidden <= 4096")
  expect_run(NAME "unknown cell" COMMAND ${EXE} --smoke ${out} --cells rnn,lstn EXIT 2
             STDERR "long_memory: unknown --cells entry; got 'lstn', expected rnn, lstm or gru")
  expect_run(NAME "unknown task" COMMAND ${EXE} --smoke ${out} --tasks add EXIT 2
             STDERR "long_memory: unknown --tasks entry; got 'add', expected adding or copy")
  expect_run(NAME "unknown flag" COMMAND ${EXE} --smoke --bogus EXIT 2 STDERR "^long_memory: .*--bogus")
  expect_run(NAME "help" COMMAND ${EXE} --help STDOUT "--lengths.*--data.*generated")
else()
  message(FATAL_ERROR "ctest.cmake: unknown MODE; got '${MODE}', expected smoke or errors")
endif()
