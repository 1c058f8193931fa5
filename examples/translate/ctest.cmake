# translate's ctest checks (registered in examples/CMakeLists.txt):
#   cmake -DEXE=path/to/translate -DWORK=scratch/dir -DMODE=smoke|errors -P ctest.cmake
# smoke:  the --smoke run succeeds (its loss fell), writes its files and heat maps and ends with the test line;
#         --task numbers with the Transformer encoder and Bahdanau attention; the user's own TSV with other
#         columns and a --test file, with scheduled sampling.
# errors: each kind of bad input gets exit code 2 and its one-line message.
include(${CMAKE_CURRENT_LIST_DIR}/../common/expect.cmake)
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

if(MODE STREQUAL "smoke")
  expect_run(NAME "smoke run" COMMAND ${EXE} --smoke --out ${WORK}/run
             STDOUT "reference: .*translate: test BLEU [0-9.]+, chrF [0-9.]+, exact [0-9.]+% \\(BiGRU encoder, luong attention, beam 3\\); without attention BLEU [0-9.]+, chrF [0-9.]+, exact [0-9.]+%; 24 sentences\n$"
             FILES ${WORK}/run/metrics.csv ${WORK}/run/loss.svg ${WORK}/run/translations.tsv ${WORK}/run/attention_0.svg
                   ${WORK}/run/attention_1.svg ${WORK}/run/attention.safetensors ${WORK}/run/baseline.safetensors)
  expect_run(NAME "numbers, transformer, bahdanau" COMMAND ${EXE} --smoke --task numbers --model transformer
             --attention bahdanau --no-baseline --out ${WORK}/numbers
             STDOUT "translate: test BLEU [0-9.]+, chrF [0-9.]+, exact [0-9.]+% \\(Transformer encoder, bahdanau attention, beam 3\\); 24 sentences\n$")
  # Own data: other column names, a --test file, scheduled sampling.
  set(tsv "id\tde\ten\n")
  foreach(i RANGE 1 40)
    string(APPEND tsv "${i}\tein hund ${i}\ta dog ${i}\n${i}\tzwei katzen ${i}\ttwo cats ${i}\n")
  endforeach()
  file(WRITE ${WORK}/mine.tsv "${tsv}")
  file(WRITE ${WORK}/mine_test.tsv "id\tde\ten\n1\tein hund 7\ta dog 7\n2\tzwei katzen 9\ttwo cats 9\n")
  expect_run(NAME "own data, --test, scheduled sampling" COMMAND ${EXE} --smoke --data ${WORK}/mine.tsv
             --test ${WORK}/mine_test.tsv --src-column de --tgt-column en --sampling-k 20 --out ${WORK}/mine
             STDOUT "80 training pairs, 2 test pairs from .*; 2 sentences\n$")
elseif(MODE STREQUAL "errors")
  set(out --out ${WORK}/out)
  expect_run(NAME "missing data file" COMMAND ${EXE} --smoke ${out} --data ${WORK}/nope.tsv EXIT 2
             STDERR "^translate: cannot read --data file; got '[^']*nope.tsv' \\(no such file\\)")
  file(WRITE ${WORK}/cols.tsv "english\tspanish\nhello\thola\n")
  expect_run(NAME "no such column" COMMAND ${EXE} --smoke ${out} --data ${WORK}/cols.tsv EXIT 2
             STDERR "^translate: no such column in the --data file; got 'en' in '[^']*cols.tsv'")
  file(WRITE ${WORK}/ragged.tsv "en\tes\nhello\thola\nbye\n")
  expect_run(NAME "ragged row" COMMAND ${EXE} --smoke ${out} --data ${WORK}/ragged.tsv EXIT 2
             STDERR "^translate: --data file has a row with 1 tab-separated cells; got line 3 of '[^']*ragged.tsv', expected 2")
  file(WRITE ${WORK}/empty_side.tsv "en\tes\nhello\t\n")
  expect_run(NAME "empty target" COMMAND ${EXE} --smoke ${out} --data ${WORK}/empty_side.tsv EXIT 2
             STDERR "^translate: --data file has an empty target at line 2")
  string(ASCII 241 latin1_n)  # "ñ" in Latin-1: not UTF-8
  file(WRITE ${WORK}/latin1.tsv "en\tes\nyear\ta${latin1_n}o\n")
  expect_run(NAME "not UTF-8" COMMAND ${EXE} --smoke ${out} --data ${WORK}/latin1.tsv EXIT 2
             STDERR "^translate: --data file is not UTF-8; got byte 0xf1 at line 2")
  file(WRITE ${WORK}/small.tsv "en\tes\nhello\thola\n")
  expect_run(NAME "too few pairs" COMMAND ${EXE} --smoke ${out} --data ${WORK}/small.tsv EXIT 2
             STDERR "^translate: --data file too small; got 1 pairs")
  expect_run(NAME "unknown model" COMMAND ${EXE} --smoke ${out} --model lstm EXIT 2
             STDERR "^translate: unknown --model; got 'lstm', expected rnn or transformer\n$")
  expect_run(NAME "heads do not divide" COMMAND ${EXE} --smoke ${out} --d-model 30 --heads 4 EXIT 2
             STDERR "^translate: --d-model must be a multiple of --heads; got 30 and 4\n$")
  expect_run(NAME "flag out of range" COMMAND ${EXE} --smoke ${out} --beam 0 EXIT 2
             STDERR "^translate: --beam out of range; got 0, expected 1 <= --beam <= 100\n$")
  expect_run(NAME "diverged" COMMAND ${EXE} --smoke ${out} --lr 1e30 --clip 0 --steps 20 EXIT 3
             STDERR "^translate: training diverged at step")
  expect_run(NAME "unknown flag" COMMAND ${EXE} --smoke --bogus EXIT 2 STDERR "^translate: .*--bogus")
  expect_run(NAME "help" COMMAND ${EXE} --help STDOUT "--sampling-k")
else()
  message(FATAL_ERROR "ctest.cmake: unknown MODE; got '${MODE}', expected smoke or errors")
endif()
