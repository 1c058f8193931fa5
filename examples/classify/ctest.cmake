# classify's ctest checks (registered in examples/CMakeLists.txt):
#   cmake -DEXE=path/to/classify -DWORK=scratch/dir -DMODE=smoke|errors -P ctest.cmake
# smoke:  the --smoke run succeeds (so its loss fell) and writes its three files; the LSTM without class weights
#         and the user's own CSV (other column names, UTF-8 text) train too.
# errors: each kind of bad input gets exit code 2 and its one-line message.
include(${CMAKE_CURRENT_LIST_DIR}/../common/expect.cmake)
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

if(MODE STREQUAL "smoke")
  expect_run(NAME "smoke run" COMMAND ${EXE} --smoke --out ${WORK}/run
             STDOUT "test accuracy [0-9.]+%, balanced accuracy [0-9.]+% \\(1480 names\\)"
             FILES ${WORK}/run/metrics.csv ${WORK}/run/loss.svg ${WORK}/run/confusion.svg)
  file(STRINGS ${WORK}/run/metrics.csv header LIMIT_COUNT 1)
  if(NOT header STREQUAL "step,train_loss,test_loss,test_accuracy,test_balanced_accuracy,lr")
    message(FATAL_ERROR "metrics.csv header: got '${header}'")
  endif()
  file(READ ${WORK}/run/confusion.svg svg)
  if(NOT svg MATCHES "<svg" OR NOT svg MATCHES ">portuguese<")
    message(FATAL_ERROR "confusion.svg: no heatmap with the class labels")
  endif()
  expect_run(NAME "lstm, no class weights" COMMAND ${EXE} --smoke --cell lstm --class-weights none --out ${WORK}/lstm
             STDOUT "bidirectional lstm.*class weights none" FILES ${WORK}/lstm/confusion.svg)
  # The user's own data: short words -> double letter, single letters, or an accent (UTF-8), other column names.
  set(csv "word,kind\n")
  foreach(w IN ITEMS ball tree moon seen book feed hill wood glass grass been keen door pool)
    string(APPEND csv "${w},double\n${w}é,accent\n")
  endforeach()
  foreach(w IN ITEMS cat dog sun map pen cup red hat top fig lid jam bus dot)
    string(APPEND csv "${w},single\n")
  endforeach()
  file(WRITE ${WORK}/mine.csv "${csv}")
  expect_run(NAME "own data" COMMAND ${EXE} --smoke --data ${WORK}/mine.csv --text-column word --label-column kind
             --batch 16 --steps 100 --out ${WORK}/mine STDOUT "3 classes"
             FILES ${WORK}/mine/metrics.csv ${WORK}/mine/loss.svg ${WORK}/mine/confusion.svg)
  # --test: all of --data trains, these rows test (a character training never saw included: 'z').
  file(WRITE ${WORK}/mine_test.csv "word,kind\nfizz,double\nzoo,double\nzooé,accent\nzip,single\n")
  expect_run(NAME "own data, --test file" COMMAND ${EXE} --smoke --data ${WORK}/mine.csv --test ${WORK}/mine_test.csv
             --text-column word --label-column kind --batch 16 --steps 100 --out ${WORK}/mine_t
             STDOUT "test accuracy [0-9.]+%, balanced accuracy [0-9.]+% \\(4 names\\)")
  file(WRITE ${WORK}/bad_test.csv "word,kind\nfizz,triple\n")
  expect_run(NAME "--test label the training data lacks" COMMAND ${EXE} --smoke --data ${WORK}/mine.csv
             --test ${WORK}/bad_test.csv --text-column word --label-column kind --out ${WORK}/bad_t EXIT 2
             STDERR "^classify: --test file has a label the training data lacks; got 'triple' at line 2")
elseif(MODE STREQUAL "errors")
  set(out --out ${WORK}/out)
  expect_run(NAME "missing data file" COMMAND ${EXE} --smoke ${out} --data ${WORK}/nope.csv EXIT 2
             STDERR "^classify: cannot read --data file; got '[^']*nope.csv' \\(no such file\\), expected a readable CSV file\n$")
  file(WRITE ${WORK}/empty.csv "")
  expect_run(NAME "empty data file" COMMAND ${EXE} --smoke ${out} --data ${WORK}/empty.csv EXIT 2
             STDERR "classify: --data file is empty; got '[^']*empty.csv' \\(0 bytes\\)")
  file(WRITE ${WORK}/ragged.csv "name,label\nAbbott,english\nMüller;german\n")
  expect_run(NAME "row without a separator" COMMAND ${EXE} --smoke ${out} --data ${WORK}/ragged.csv EXIT 2
             STDERR "classify: --data file is not CSV; got 1 cell\\(s\\) at line 3 of '[^']*ragged.csv', expected 2 as in the header \\(name, label\\)")
  file(WRITE ${WORK}/cols.csv "surname,language\nAbbott,english\n")
  expect_run(NAME "no such column" COMMAND ${EXE} --smoke ${out} --data ${WORK}/cols.csv EXIT 2
             STDERR "classify: no such column in the --data file; got --text-column 'name' in '[^']*cols.csv', expected one of surname, language")
  file(WRITE ${WORK}/short.csv "name,label\nAbbott,english\nMüller,german\nDupont,french\n")
  expect_run(NAME "too short" COMMAND ${EXE} --smoke ${out} --data ${WORK}/short.csv EXIT 2
             STDERR "classify: --data file too short; got 3 row\\(s\\) and 3 label\\(s\\) in '[^']*short.csv', expected at least 10 rows and 2 labels")
  set(singles "name,label\n")
  foreach(i RANGE 1 10)
    string(APPEND singles "Name${i},label${i}\n")
  endforeach()
  file(WRITE ${WORK}/singles.csv "${singles}")
  expect_run(NAME "one row per label" COMMAND ${EXE} --smoke ${out} --data ${WORK}/singles.csv EXIT 2
             STDERR "classify: --data file too short to test on; got 10 labels with one row each in '[^']*singles.csv', expected a label with at least 2 rows")
  set(rows "name,label\n")
  foreach(i RANGE 1 12)
    string(APPEND rows "Name${i},a\n")
  endforeach()
  file(WRITE ${WORK}/emptycell.csv "${rows},b\n")
  expect_run(NAME "empty name" COMMAND ${EXE} --smoke ${out} --data ${WORK}/emptycell.csv EXIT 2
             STDERR "classify: --data file has an empty cell; got ',b' at line 14 of '[^']*emptycell.csv'")
  string(ASCII 255 bad)
  file(WRITE ${WORK}/latin1.csv "${rows}M${bad}ller,b\n")
  expect_run(NAME "not UTF-8" COMMAND ${EXE} --smoke ${out} --data ${WORK}/latin1.csv EXIT 2
             STDERR "classify: --data file is not UTF-8; got 'M\\\\xffller' at line 14 of '[^']*latin1.csv', expected UTF-8 text")
  expect_run(NAME "unknown class weights" COMMAND ${EXE} --smoke ${out} --class-weights inverse EXIT 2
             STDERR "classify: unknown --class-weights; got 'inverse', expected balanced or none")
  expect_run(NAME "flag out of range" COMMAND ${EXE} --smoke ${out} --hidden 0 EXIT 2
             STDERR "classify: --hidden out of range; got 0, expected 1 <= --hidden <= 4096")
  expect_run(NAME "unknown flag" COMMAND ${EXE} --smoke --bogus EXIT 2 STDERR "^classify: .*--bogus")
  expect_run(NAME "help" COMMAND ${EXE} --help STDOUT "--class-weights")
else()
  message(FATAL_ERROR "ctest.cmake: unknown MODE; got '${MODE}', expected smoke or errors")
endif()
