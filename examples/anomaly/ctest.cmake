# anomaly's ctest checks (registered in examples/CMakeLists.txt):
#   cmake -DEXE=path/to/anomaly -DWORK=scratch/dir -DMODE=smoke|errors -P ctest.cmake
# smoke:  the --smoke run on the births succeeds (its loss fell), writes its files and ends with the test line;
#         the user's own CSV: several series in one file (--group-column/--group), a label column, a --test
#         file; and one without labels, which lists what it flags.
# errors: each kind of bad input gets exit code 2 and its one-line message.
include(${CMAKE_CURRENT_LIST_DIR}/../common/expect.cmake)
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

# Two sensors, a daily cycle of period 7 with a spike every 50 days on sensor b (labelled).
set(csv "t,sensor,temp,fault\n")
set(after "t,sensor,temp,fault\n")
set(nolabel "t,sensor,temp\n")
foreach(i RANGE 0 499)
  math(EXPR phase "${i} % 7")
  math(EXPR spike "${i} % 50")
  math(EXPR base "100 + 5 * ${phase}")
  if(spike EQUAL 25)
    math(EXPR b "${base} + 60")
    set(f 1)
  else()
    set(b ${base})
    set(f 0)
  endif()
  string(APPEND nolabel "${i},a,${base}\n${i},b,${b}\n")
  if(i LESS 400)
    string(APPEND csv "${i},a,${base},0\n${i},b,${b},${f}\n")
  else()
    string(APPEND after "${i},a,${base},0\n${i},b,${b},${f}\n")
  endif()
endforeach()
file(WRITE ${WORK}/sensors.csv "${csv}")
file(WRITE ${WORK}/later.csv "${after}")

if(MODE STREQUAL "smoke")
  expect_run(NAME "smoke run, births" COMMAND ${EXE} --smoke --out ${WORK}/births
             STDOUT "anomaly: test precision [0-9.]+, recall [0-9.]+, F1 [0-9.]+, ROC-AUC [0-9.]+ \\([0-9]+ flagged of 1826 days, 56 anomalies\\); seasonal detector F1 [0-9.]+, ROC-AUC [0-9.]+\n$"
             FILES ${WORK}/births/metrics.csv ${WORK}/births/anomalies.svg ${WORK}/births/scores.csv)
  expect_run(NAME "own data, one sensor of two, --test" COMMAND ${EXE} --smoke --data ${WORK}/sensors.csv
             --test ${WORK}/later.csv --value-column temp --label-column fault --group-column sensor --group b
             --window 14 --out ${WORK}/sensor
             STDOUT "500 values of 'temp' \\(group b\\).*400 for training.*100 for testing; labelled anomalies: 8 and 2.*2 anomalies")
  file(WRITE ${WORK}/nolabel.csv "${nolabel}")
  expect_run(NAME "own data without labels" COMMAND ${EXE} --smoke --data ${WORK}/nolabel.csv --value-column temp
             --group-column sensor --group b --window 14 --out ${WORK}/nolabel
             STDOUT "no labels.*anomaly: test: [0-9]+ of [0-9]+ days flagged")
elseif(MODE STREQUAL "errors")
  set(out --out ${WORK}/out)
  expect_run(NAME "missing data file" COMMAND ${EXE} --smoke ${out} --data ${WORK}/nope.csv EXIT 2
             STDERR "^anomaly: cannot read --data file; got '[^']*nope.csv' \\(no such file\\)")
  expect_run(NAME "no such value column" COMMAND ${EXE} --smoke ${out} --data ${WORK}/sensors.csv EXIT 2
             STDERR "^anomaly: no such column in the --data file; got --value-column 'births'")
  expect_run(NAME "named label column missing" COMMAND ${EXE} --smoke ${out} --data ${WORK}/sensors.csv
             --value-column temp --label-column broken EXIT 2
             STDERR "^anomaly: no such column in the --data file; got --label-column 'broken'")
  file(WRITE ${WORK}/badlabel.csv "t,v,l\n1,5,2\n")
  expect_run(NAME "bad label" COMMAND ${EXE} --smoke ${out} --data ${WORK}/badlabel.csv --value-column v --label-column l
             EXIT 2 STDERR "^anomaly: --data file has a bad label; got '2' at line 2")
  file(WRITE ${WORK}/badvalue.csv "t,v\n1,-3\n")
  expect_run(NAME "non-positive value with --log" COMMAND ${EXE} --smoke ${out} --data ${WORK}/badvalue.csv --value-column v
             EXIT 2 STDERR "^anomaly: --data file has a bad value; got '-3' at line 2 of '[^']*', expected a positive number")
  expect_run(NAME "too few values" COMMAND ${EXE} --smoke ${out} --data ${WORK}/sensors.csv --value-column temp
             --group-column sensor --group zzz EXIT 2 STDERR "^anomaly: too few values for --group 'zzz'")
  expect_run(NAME "group without its column" COMMAND ${EXE} --smoke ${out} --group b EXIT 2
             STDERR "^anomaly: --group-column and --group go together")
  expect_run(NAME "unknown flag" COMMAND ${EXE} --smoke --bogus EXIT 2 STDERR "^anomaly: .*--bogus")
  expect_run(NAME "help" COMMAND ${EXE} --help STDOUT "--group-column")
else()
  message(FATAL_ERROR "ctest.cmake: unknown MODE; got '${MODE}', expected smoke or errors")
endif()
