# forecast's ctest checks (registered in examples/CMakeLists.txt):
#   cmake -DEXE=path/to/forecast -DWORK=scratch/dir -DMODE=smoke|errors|loss_check -P ctest.cmake
# smoke:  the --smoke runs on CO2 and (with the LSTM) sunspots succeed, so their loss fell, and write their three
#         files; the user's own CSV series (--data, --column) trains too.
# errors: each kind of bad input gets exit code 2 and its one-line message.
# loss_check: a real run on the user's data whose loss does not fall (--lr 0) succeeds with a one-line warning
#         and its files; the same run under --smoke fails (exit 1), as CI's check must.
include(${CMAKE_CURRENT_LIST_DIR}/../common/expect.cmake)
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

# A seasonal series with a trend, 120 rows of "month,value" (season 12).
set(series "month,value\n")
foreach(i RANGE 1 120)
  math(EXPR v "300 + ${i} + 3 * ((${i} % 12) * (12 - ${i} % 12))")
  string(APPEND series "${i},${v}\n")
endforeach()
file(WRITE ${WORK}/mine.csv "${series}")

if(MODE STREQUAL "smoke")
  expect_run(NAME "smoke run, co2" COMMAND ${EXE} --smoke --out ${WORK}/co2
             STDOUT "test RMSE over 26 steps ahead: gru [0-9.]+, naive [0-9.]+, seasonal naive \\(season 52\\) [0-9.]+"
             FILES ${WORK}/co2/metrics.csv ${WORK}/co2/loss.svg ${WORK}/co2/forecast.svg)
  file(STRINGS ${WORK}/co2/metrics.csv header LIMIT_COUNT 1)
  if(NOT header STREQUAL "step,train_loss,test_loss,test_rmse,lr")
    message(FATAL_ERROR "metrics.csv header: got '${header}'")
  endif()
  expect_run(NAME "smoke run, sunspots, lstm" COMMAND ${EXE} --smoke --dataset sunspots --cell lstm --out ${WORK}/sun
             STDOUT "test RMSE over 6 steps ahead: lstm" FILES ${WORK}/sun/metrics.csv ${WORK}/sun/forecast.svg)
  expect_run(NAME "own data" COMMAND ${EXE} --smoke --data ${WORK}/mine.csv --column value --season 12 --window 24
             --horizon 6 --out ${WORK}/mine STDOUT "120 values, 96 for training"
             FILES ${WORK}/mine/metrics.csv ${WORK}/mine/loss.svg ${WORK}/mine/forecast.svg)
  # --test: the 24 values after these 120, tested on; all of --data trains.
  set(after "month,value\n")
  foreach(i RANGE 121 144)
    math(EXPR v "300 + ${i} + 3 * ((${i} % 12) * (12 - ${i} % 12))")
    string(APPEND after "${i},${v}\n")
  endforeach()
  file(WRITE ${WORK}/after.csv "${after}")
  expect_run(NAME "own data, --test file" COMMAND ${EXE} --smoke --data ${WORK}/mine.csv --test ${WORK}/after.csv
             --column value --season 12 --window 24 --horizon 6 --out ${WORK}/mine_t
             STDOUT "144 values, 120 for training.*test RMSE over 6 steps ahead")
  file(WRITE ${WORK}/tiny.csv "month,value\n121,400\n")
  expect_run(NAME "--test too short" COMMAND ${EXE} --smoke --data ${WORK}/mine.csv --test ${WORK}/tiny.csv
             --column value --season 12 --window 24 --horizon 6 --out ${WORK}/tiny EXIT 2
             STDERR "^forecast: --test file too short for --horizon 6; got 1 values, expected at least 6")
elseif(MODE STREQUAL "errors")
  set(out --out ${WORK}/out)
  set(mine --season 12 --window 24 --horizon 6 --column value)
  expect_run(NAME "missing data file" COMMAND ${EXE} --smoke ${out} --data ${WORK}/nope.csv EXIT 2
             STDERR "^forecast: cannot read --data file; got '[^']*nope.csv' \\(no such file\\), expected a readable CSV file\n$")
  file(WRITE ${WORK}/empty.csv "")
  expect_run(NAME "empty data file" COMMAND ${EXE} --smoke ${out} --data ${WORK}/empty.csv EXIT 2
             STDERR "forecast: --data file is empty; got '[^']*empty.csv' \\(0 bytes\\)")
  file(WRITE ${WORK}/blank.csv "\n\n")
  expect_run(NAME "no header" COMMAND ${EXE} --smoke ${out} --data ${WORK}/blank.csv EXIT 2
             STDERR "forecast: --data file is not CSV; got no header row in '[^']*blank.csv'")
  file(WRITE ${WORK}/ragged.csv "month,value\n1,3.5\n2,4.5,7\n")
  expect_run(NAME "row with too many cells" COMMAND ${EXE} --smoke ${out} --data ${WORK}/ragged.csv ${mine} EXIT 2
             STDERR "forecast: --data file is not CSV; got 3 cell\\(s\\) at line 3 of '[^']*ragged.csv', expected 2 as in the header \\(month, value\\)")
  file(WRITE ${WORK}/text.csv "month,value\n1,3.5\n2,n/a\n")
  expect_run(NAME "value not a number" COMMAND ${EXE} --smoke ${out} --data ${WORK}/text.csv ${mine} EXIT 2
             STDERR "forecast: --data file has a value that is not a number; got 'n/a' at line 3 of '[^']*text.csv', expected a number in column 'value'")
  expect_run(NAME "no such column" COMMAND ${EXE} --smoke ${out} --data ${WORK}/mine.csv --column sales EXIT 2
             STDERR "forecast: no such column in the --data file; got column 'sales' in '[^']*mine.csv', expected one of month, value")
  expect_run(NAME "default column missing from own data" COMMAND ${EXE} --smoke ${out} --data ${WORK}/mine.csv EXIT 2
             STDERR "got column 'co2_ppm' in '[^']*mine.csv', expected one of month, value")
  file(STRINGS ${WORK}/mine.csv rows LIMIT_COUNT 31)
  list(JOIN rows "\n" short)
  file(WRITE ${WORK}/short.csv "${short}\n")
  expect_run(NAME "too short for the window" COMMAND ${EXE} --smoke ${out} --data ${WORK}/short.csv ${mine} EXIT 2
             STDERR "forecast: --data file too short for --window 24, --horizon 6 and --season 12; got 30 values in column 'value' of '[^']*short.csv', expected at least 37 ")
  expect_run(NAME "unknown dataset" COMMAND ${EXE} --smoke ${out} --dataset co3 EXIT 2
             STDERR "forecast: unknown --dataset; got 'co3', expected co2 or sunspots")
  expect_run(NAME "unknown cell" COMMAND ${EXE} --smoke ${out} --cell rnn EXIT 2
             STDERR "forecast: unknown --cell; got 'rnn', expected gru or lstm")
  expect_run(NAME "flag out of range" COMMAND ${EXE} --smoke ${out} --horizon 0 EXIT 2
             STDERR "forecast: --horizon out of range; got 0, expected 1 <= --horizon <= 10000")
  # An absurd learning rate: the loss goes non-finite; the run stops (exit 3) naming the op where it happened.
  expect_run(NAME "non-finite loss" COMMAND ${EXE} --smoke ${out} --lr 1e30 EXIT 3
             STDERR "^forecast: training diverged at step [0-9]+; got loss (inf|-?nan), expected a finite loss \\(the step run again stops at: [a-z_]+: non-finite output \\(anomaly detection\\); got [0-9]+ of [0-9]+ elements non-finite.*\\); try a smaller --lr \\(now 1e\\+30\\)")
  expect_run(NAME "unknown flag" COMMAND ${EXE} --smoke --bogus EXIT 2 STDERR "^forecast: .*--bogus")
  expect_run(NAME "help" COMMAND ${EXE} --help STDOUT "--column")
elseif(MODE STREQUAL "loss_check")
  set(flat --data ${WORK}/mine.csv --column value --season 12 --window 24 --horizon 6 --lr 0 --steps 40 --log-every 10
           --eval-every 20)
  expect_run(NAME "real run, loss flat" COMMAND ${EXE} ${flat} --out ${WORK}/real EXIT 0
             STDERR "^forecast: warning: the loss did not fall; got [0-9.e+-]+ at the end, expected below 0.8 x [0-9.e+-]+ \\(the first 10 steps'\\); try a lower --lr or more --steps\n$"
             FILES ${WORK}/real/metrics.csv ${WORK}/real/loss.svg ${WORK}/real/forecast.svg)
  expect_run(NAME "smoke run, loss flat" COMMAND ${EXE} --smoke ${flat} --out ${WORK}/smoke EXIT 1
             STDERR "^forecast: the loss did not fall; got [0-9.e+-]+ at the end, expected below 0.8 x [0-9.e+-]+ \\(the first 10 steps'\\)\n$")
elseif(MODE STREQUAL "mpi")
  # 2 ranks of a data-parallel job: the smoke run learns and rank 0 writes the files; an absurd learning rate
  # stops every rank (exit 3) with rank 0's one message naming the op.
  expect_run(NAME "2 ranks" COMMAND ${MPIEXEC} -np 2 ${EXE} --smoke --out ${WORK}/mpi
             STDOUT "test RMSE over 26 steps ahead: gru" FILES ${WORK}/mpi/metrics.csv ${WORK}/mpi/forecast.svg)
  expect_run(NAME "2 ranks, non-finite loss" COMMAND ${MPIEXEC} -np 2 ${EXE} --smoke --out ${WORK}/bad --lr 1e30 EXIT 3
             STDERR "forecast: training diverged at step [0-9]+; got loss (inf|-?nan), expected a finite loss \\(the step run again stops at")
else()
  message(FATAL_ERROR "ctest.cmake: unknown MODE; got '${MODE}', expected smoke, errors or loss_check")
endif()
