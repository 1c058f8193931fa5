# sine_rnn's ctest checks (registered in examples/CMakeLists.txt):
#   cmake -DEXE=path/to/sine_rnn -DWORK=scratch/dir -DMODE=smoke|errors|loss_check -P ctest.cmake
# smoke:  the --smoke run succeeds, so its loss halved.
# errors: a bad flag or flag value gets exit code 2 and its one-line message.
# loss_check: a real run whose loss does not fall (--lr 0) succeeds with a one-line warning; the same run under
#         --smoke fails (exit 1), as CI's check must.
include(${CMAKE_CURRENT_LIST_DIR}/../common/expect.cmake)

if(MODE STREQUAL "smoke")
  expect_run(NAME "smoke run" COMMAND ${EXE} --smoke STDOUT "step   200  loss .*held-out next-step MSE")
elseif(MODE STREQUAL "errors")
  expect_run(NAME "unknown flag" COMMAND ${EXE} --bogus EXIT 2 STDERR "^sine_rnn: [^\n]*--bogus[^\n]*sine_rnn --help[^\n]*\n$")
  expect_run(NAME "not a number" COMMAND ${EXE} --steps many EXIT 2 STDERR "^sine_rnn: [^\n]*many[^\n]*\n$")
  expect_run(NAME "flag out of range" COMMAND ${EXE} --hidden 0 EXIT 2
             STDERR "^sine_rnn: --hidden out of range; got 0, expected 1 <= --hidden <= 4096\n$")
  expect_run(NAME "help" COMMAND ${EXE} --help STDOUT "--window")
elseif(MODE STREQUAL "loss_check")
  expect_run(NAME "real run, loss flat" COMMAND ${EXE} --lr 0 --steps 200 EXIT 0
             STDERR "^sine_rnn: warning: the loss did not fall; got [0-9.e+-]+ at the end, expected below 0.5 x [0-9.e+-]+ \\(the first step's\\); try a lower --lr or more --steps\n$")
  expect_run(NAME "smoke run, loss flat" COMMAND ${EXE} --smoke --lr 0 EXIT 1
             STDERR "^sine_rnn: the loss did not fall; got [0-9.e+-]+ at the end, expected below 0.5 x [0-9.e+-]+ \\(the first step's\\)\n$")
else()
  message(FATAL_ERROR "ctest.cmake: unknown MODE; got '${MODE}', expected smoke, errors or loss_check")
endif()
