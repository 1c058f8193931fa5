# sentiment's ctest checks (registered in examples/CMakeLists.txt):
#   cmake -DEXE=path/to/sentiment -DWORK=scratch/dir -DMODE=smoke|errors -P ctest.cmake
# smoke:  the --smoke run succeeds (its loss fell), writes its files, shows attention words and ends with the
#         test line; the same with a Transformer encoder; --cross-domain writes its table; the user's own CSV
#         with three classes and a --test file.
# errors: each kind of bad input gets exit code 2 and its one-line message.
include(${CMAKE_CURRENT_LIST_DIR}/../common/expect.cmake)
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

if(MODE STREQUAL "smoke")
  expect_run(NAME "smoke run" COMMAND ${EXE} --smoke --out ${WORK}/run
             STDOUT "attention: .*sentiment: test accuracy [0-9.]+% \\(BiLSTM \\+ attention\\), [0-9.]+% \\(bag of words\\); 600 sentences\n$"
             FILES ${WORK}/run/metrics.csv ${WORK}/run/loss.svg ${WORK}/run/attention.txt)
  expect_run(NAME "smoke run, Transformer encoder" COMMAND ${EXE} --smoke --model transformer --layers 1 --steps 300
             --out ${WORK}/transformer STDOUT "test accuracy [0-9.]+% \\(Transformer \\+ attention\\)"
             FILES ${WORK}/transformer/metrics.csv)
  expect_run(NAME "cross-domain" COMMAND ${EXE} --smoke --cross-domain --steps 40 --out ${WORK}/cross
             STDOUT "amazon +2000 +1000.*yelp +2000 +1000" FILES ${WORK}/cross/cross_domain.csv)
  # Three classes, quoted cells with commas, other column names, and a --test file.
  set(csv "review,stars\n")
  foreach(i RANGE 1 20)
    string(APPEND csv "\"great, really great ${i}\",good\n\"awful, simply awful ${i}\",bad\nfine ${i} i guess,meh\n")
  endforeach()
  file(WRITE ${WORK}/mine.csv "${csv}")
  file(WRITE ${WORK}/mine_test.csv "review,stars\n\"great, truly\",good\nawful stuff,bad\nfine,meh\n")
  expect_run(NAME "own data, 3 classes, --test" COMMAND ${EXE} --smoke --data ${WORK}/mine.csv --test ${WORK}/mine_test.csv
             --text-column review --label-column stars --steps 60 --out ${WORK}/mine
             STDOUT "3 classes \\(bad, good, meh\\).*test accuracy [0-9.]+% .*; 3 sentences\n$")
elseif(MODE STREQUAL "errors")
  set(out --out ${WORK}/out)
  expect_run(NAME "missing data file" COMMAND ${EXE} --smoke ${out} --data ${WORK}/nope.csv EXIT 2
             STDERR "^sentiment: cannot read --data file; got '[^']*nope.csv' \\(no such file\\)")
  file(WRITE ${WORK}/cols.csv "sentence,polarity\nhello,pos\n")
  expect_run(NAME "no such column" COMMAND ${EXE} --smoke ${out} --data ${WORK}/cols.csv EXIT 2
             STDERR "^sentiment: no such column in the --data file; got 'text' in '[^']*cols.csv'")
  file(WRITE ${WORK}/quote.csv "text,label\n\"unclosed,pos\n")
  expect_run(NAME "unclosed quote" COMMAND ${EXE} --smoke ${out} --data ${WORK}/quote.csv EXIT 2
             STDERR "^sentiment: --data file is not CSV; got a quoted cell that does not close at line 2")
  file(WRITE ${WORK}/bad_test.csv "source,text,label\nx,so so,neutral\n")
  expect_run(NAME "--test label the training data lacks" COMMAND ${EXE} --smoke ${out} --test ${WORK}/bad_test.csv
             EXIT 2 STDERR "^sentiment: --test file has a label the training data lacks; got 'neutral' at line 2")
  expect_run(NAME "unknown model" COMMAND ${EXE} --smoke ${out} --model gru EXIT 2
             STDERR "^sentiment: unknown --model; got 'gru', expected bilstm or transformer\n$")
  expect_run(NAME "flag out of range" COMMAND ${EXE} --smoke ${out} --hidden 0 EXIT 2
             STDERR "^sentiment: --hidden out of range; got 0, expected 1 <= --hidden <= 4096\n$")
  expect_run(NAME "unknown flag" COMMAND ${EXE} --smoke --bogus EXIT 2 STDERR "^sentiment: .*--bogus")
  expect_run(NAME "help" COMMAND ${EXE} --help STDOUT "--cross-domain")
else()
  message(FATAL_ERROR "ctest.cmake: unknown MODE; got '${MODE}', expected smoke or errors")
endif()
