# tag's ctest checks (registered in examples/CMakeLists.txt):
#   cmake -DEXE=path/to/tag -DWORK=scratch/dir -DMODE=smoke|errors -P ctest.cmake
# smoke:  the --smoke runs on Brown (softmax, CRF, Transformer encoder) succeed, so their loss fell, write their files and end with
#         the test line; the user's own CoNLL data with BIO tags and a --test file trains and reports entity F1.
# errors: each kind of bad input gets exit code 2 and its one-line message.
include(${CMAKE_CURRENT_LIST_DIR}/../common/expect.cmake)
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

# A small CoNLL set: names (B-PER I-PER) and places (B-LOC) in a few sentence patterns.
set(first Anna Ben Clara David Eva Frank Greta Hans)
set(last Smith Jones Weber Rossi)
set(place Paris Berlin Rome Madrid Oslo)
set(conll "")
set(i 0)
foreach(f IN LISTS first)
  foreach(l IN LISTS last)
    foreach(p IN LISTS place)
      math(EXPR i "${i} + 1")
      math(EXPR pattern "${i} % 3")
      if(pattern EQUAL 0)
        string(APPEND conll "${f} B-PER\n${l} I-PER\nlives O\nin O\n${p} B-LOC\n. O\n\n")
      elseif(pattern EQUAL 1)
        string(APPEND conll "yesterday O\n${f} B-PER\nflew O\nto O\n${p} B-LOC\n\n")
      else()
        string(APPEND conll "the O\nmayor O\nof O\n${p} B-LOC\nmet O\n${f} B-PER\n${l} I-PER\n\n")
      endif()
    endforeach()
  endforeach()
endforeach()
file(WRITE ${WORK}/train.conll "${conll}")
file(WRITE ${WORK}/test.conll "Zoe B-PER\nSmith I-PER\nlives O\nin O\nRome B-LOC\n. O\n\nyesterday O\nAnna B-PER\nflew O\nto O\nLima B-LOC\n\n")

if(MODE STREQUAL "smoke")
  expect_run(NAME "smoke run, Brown" COMMAND ${EXE} --smoke --out ${WORK}/brown
             STDOUT "tag: test accuracy [0-9.]+% \\([0-9]+ tokens\\), unseen words [0-9.]+% \\([0-9]+\\); baseline [0-9.]+%\n$"
             FILES ${WORK}/brown/metrics.csv ${WORK}/brown/loss.svg ${WORK}/brown/confusion.svg
                   ${WORK}/brown/per_tag.csv ${WORK}/brown/checkpoint.safetensors)
  file(STRINGS ${WORK}/brown/per_tag.csv header LIMIT_COUNT 1)
  if(NOT header STREQUAL "tag,test_tokens,accuracy,baseline_accuracy")
    message(FATAL_ERROR "per_tag.csv header: got '${header}'")
  endif()
  expect_run(NAME "smoke run, CRF, no char encoder" COMMAND ${EXE} --smoke --crf --chars 0 --out ${WORK}/crf
             STDOUT "tag: test accuracy" FILES ${WORK}/crf/metrics.csv)
  expect_run(NAME "smoke run, Transformer encoder" COMMAND ${EXE} --smoke --model transformer --d-model 32 --ff 64
             --layers 1 --out ${WORK}/transformer STDOUT "Transformer 32 x 1 layers, 4 heads.*tag: test accuracy")
  expect_run(NAME "own CoNLL data, BIO" COMMAND ${EXE} --smoke --data ${WORK}/train.conll --test ${WORK}/test.conll
             --crf --out ${WORK}/conll
             STDOUT "4 tags \\(BIO\\).*tag: test accuracy [0-9.]+% \\(11 tokens\\).*entity precision [0-9.]+%, recall [0-9.]+%, F1 [0-9.]+")
elseif(MODE STREQUAL "errors")
  set(out --out ${WORK}/out)
  expect_run(NAME "missing data file" COMMAND ${EXE} --smoke ${out} --data ${WORK}/nope.conll EXIT 2
             STDERR "^tag: cannot read --data file; got '[^']*nope.conll' \\(no such file\\)")
  file(WRITE ${WORK}/bad.conll "Anna B-PER\nlonely\n\n")
  expect_run(NAME "malformed CoNLL line" COMMAND ${EXE} --smoke ${out} --data ${WORK}/bad.conll --format conll EXIT 2
             STDERR "^tag: malformed CoNLL line in '[^']*bad.conll' line 2; got 'lonely', expected a token and its tag\n$")
  file(WRITE ${WORK}/bad.brown "The/at dog\n")
  expect_run(NAME "malformed Brown token" COMMAND ${EXE} --smoke ${out} --data ${WORK}/bad.brown --format brown EXIT 2
             STDERR "^tag: malformed token in '[^']*bad.brown' line 1; got 'dog', expected word/tag\n$")
  file(WRITE ${WORK}/few.conll "a O\n\nb O\n\n")
  expect_run(NAME "too few sentences" COMMAND ${EXE} --smoke ${out} --data ${WORK}/few.conll EXIT 2
             STDERR "^tag: too few sentences; got 2 for training, 0 for validation")
  file(WRITE ${WORK}/empty.conll "")
  expect_run(NAME "empty test file" COMMAND ${EXE} --smoke ${out} --data ${WORK}/train.conll --test ${WORK}/empty.conll
             EXIT 2 STDERR "^tag: --test file is empty")
  expect_run(NAME "unknown format" COMMAND ${EXE} --smoke ${out} --format csv EXIT 2
             STDERR "^tag: unknown --format; got 'csv', expected auto, brown or conll\n$")
  expect_run(NAME "flag out of range" COMMAND ${EXE} --smoke ${out} --hidden 0 EXIT 2
             STDERR "^tag: --hidden out of range; got 0, expected 1 <= --hidden <= 4096\n$")
  expect_run(NAME "unknown flag" COMMAND ${EXE} --smoke --bogus EXIT 2 STDERR "^tag: .*--bogus")
  expect_run(NAME "help" COMMAND ${EXE} --help STDOUT "--crf")
else()
  message(FATAL_ERROR "ctest.cmake: unknown MODE; got '${MODE}', expected smoke or errors")
endif()
