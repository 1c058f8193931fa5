# char_lm's ctest checks (registered in examples/CMakeLists.txt):
#   cmake -DEXE=path/to/char_lm -DWORK=scratch/dir -DMODE=smoke|resume|errors|loss_check -P ctest.cmake
# smoke:  the --smoke run succeeds (so its loss fell) and writes its four files; sampling from its checkpoint
#         works; the user's own text (--data) trains too, with the custom cell.
# resume: a run stopped at step 50 and resumed to the end writes the same checkpoint, byte for byte, as a run
#         that was never stopped (model, optimizer, schedule, RNG, carried state).
# errors: each kind of bad input gets exit code 2 and its one-line message.
# loss_check: a real run whose loss does not fall (--lr 0) succeeds with a one-line warning and its files; the
#         same run under --smoke fails (exit 1), as CI's check must.
include(${CMAKE_CURRENT_LIST_DIR}/../common/expect.cmake)
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

# A two-layer `cell` run of `steps` steps stopped at `stop` and resumed writes the same checkpoint, byte for byte,
# as the same run never stopped.
function(check_exact_resume cell steps stop)
  set(run ${EXE} --smoke --cell ${cell} --layers 2 --steps ${steps})
  expect_run(NAME "${cell} uninterrupted" COMMAND ${run} --out ${WORK}/${cell}_straight)
  expect_run(NAME "${cell} stopped at step ${stop}" COMMAND ${run} --out ${WORK}/${cell}_resumed --stop-at ${stop}
             STDOUT "stopped at step ${stop}")
  expect_run(NAME "${cell} resumed" COMMAND ${run} --out ${WORK}/${cell}_resumed --resume
             STDOUT "resuming at step ${stop}")
  expect_same_file(NAME "${cell} resumed checkpoint equals the uninterrupted one"
                   A ${WORK}/${cell}_straight/checkpoint.safetensors B ${WORK}/${cell}_resumed/checkpoint.safetensors)
endfunction()

if(MODE STREQUAL "smoke")
  set(run "${WORK}/run")
  expect_run(NAME "smoke run" COMMAND ${EXE} --smoke --out ${run}
             STDOUT "validation [0-9.]+ bits/char"
             FILES ${run}/metrics.csv ${run}/loss.svg ${run}/samples.txt ${run}/checkpoint.safetensors)
  file(STRINGS ${run}/metrics.csv header LIMIT_COUNT 1)
  if(NOT header STREQUAL "step,train_loss,val_bpc,tokens_per_s,lr")
    message(FATAL_ERROR "metrics.csv header: got '${header}'")
  endif()
  expect_run(NAME "sample from the checkpoint" COMMAND ${EXE} --sample-only --out ${run} --prompt "Elizabeth "
             --sample-chars 40 STDOUT "^Elizabeth ")
  # The user's own data, in the same format (any text), with the custom cell.
  string(REPEAT "the cat sat on the mat. the dog sat on the log.\n" 60 text)
  file(WRITE ${WORK}/mine.txt "${text}")
  # --test: a checkpoint's bits/char on another text, without training (and after training, as the last line).
  expect_run(NAME "eval-only on another text" COMMAND ${EXE} --eval-only --test ${WORK}/mine.txt --out ${run}
             STDOUT "^char_lm: test [0-9.]+ bits/char on '[^']*mine.txt' \\(2880 characters\\)\n$")
  expect_run(NAME "--test after training" COMMAND ${EXE} --smoke --steps 60 --test ${WORK}/mine.txt --out ${WORK}/t
             STDOUT "char_lm: test [0-9.]+ bits/char on '[^']*mine.txt' \\(2880 characters\\)\n$")
  file(WRITE ${WORK}/odd.txt "an unseen character: \u00e9 is not in Austen's vocabulary\n")
  expect_run(NAME "eval-only, a character the model never saw" COMMAND ${EXE} --eval-only --test ${WORK}/odd.txt
             --out ${run} EXIT 2 STDERR "^char_lm: --test file has a character the model never saw")
  expect_run(NAME "eval-only without --test" COMMAND ${EXE} --eval-only --out ${run} EXIT 2
             STDERR "^char_lm: --eval-only needs a text to evaluate; got no --test FILE")
  expect_run(NAME "own data, custom cell" COMMAND ${EXE} --smoke --data ${WORK}/mine.txt --cell custom --window 16
             --batch 4 --steps 80 --out ${WORK}/mine FILES ${WORK}/mine/metrics.csv ${WORK}/mine/loss.svg)
  # The AWD-LSTM regularisers together (they must still let the loss fall).
  expect_run(NAME "own data, AWD regularisers" COMMAND ${EXE} --smoke --data ${WORK}/mine.txt --window 16 --batch 4
             --steps 80 --weight-drop 0.2 --locked-dropout 0.1 --embed-dropout 0.05 --zoneout 0.05 --ar 1 --tar 1
             --out ${WORK}/awd FILES ${WORK}/awd/metrics.csv)
  # --diagnose: the per-step gradient norms and the gate table, for the LSTM and (unfused) the custom cell.
  expect_run(NAME "diagnose, lstm" COMMAND ${EXE} --smoke --data ${WORK}/mine.txt --window 16 --batch 4 --steps 80
             --layers 2 --diagnose --out ${WORK}/diag
             STDOUT "--diagnose, one window of 16 steps: gradient norm at the first / last step; c_l0 "
             FILES ${WORK}/diag/diagnose_grad_norm.csv ${WORK}/diag/diagnose_grad_norm.svg ${WORK}/diag/diagnose_gates.csv)
  file(STRINGS ${WORK}/diag/diagnose_grad_norm.csv header LIMIT_COUNT 1)
  if(NOT header STREQUAL "t,c_l0,c_l1,h_l0,h_l1")
    message(FATAL_ERROR "diagnose_grad_norm.csv header: got '${header}'")
  endif()
  file(READ ${WORK}/diag/diagnose_gates.csv gates)
  if(NOT gates MATCHES "\nf_l1,0[.][0-9]+,")
    message(FATAL_ERROR "diagnose_gates.csv: no row for the second layer's forget gate; got '${gates}'")
  endif()
  expect_run(NAME "diagnose, custom cell" COMMAND ${EXE} --smoke --data ${WORK}/mine.txt --cell custom --no-fuse
             --window 16 --batch 4 --steps 80 --diagnose --out ${WORK}/diag_custom
             STDOUT "state0 [0-9.e+-]+ / [0-9.e+-]+.*\nf +0[.]" FILES ${WORK}/diag_custom/diagnose_gates.csv)
  # The scan cells (two layers: the carried state is one row per layer), on the same text.
  foreach(cell mingru minlstm rglru slstm mlstm)
    expect_run(NAME "own data, ${cell}" COMMAND ${EXE} --smoke --data ${WORK}/mine.txt --cell ${cell} --layers 2
               --window 16 --batch 4 --steps 80 --lr 0.01 --out ${WORK}/${cell} FILES ${WORK}/${cell}/metrics.csv)
  endforeach()
  expect_run(NAME "prompt outside the vocabulary" COMMAND ${EXE} --sample-only --out ${WORK}/mine --prompt "Xyz"
             EXIT 2 STDERR "char_lm: --prompt has a character the model never saw; got 'X' at offset 0")
elseif(MODE STREQUAL "resume")
  expect_run(NAME "uninterrupted run" COMMAND ${EXE} --smoke --out ${WORK}/straight)
  expect_run(NAME "run stopped at step 50" COMMAND ${EXE} --smoke --out ${WORK}/resumed --stop-at 50
             STDOUT "stopped at step 50")
  expect_run(NAME "resumed run" COMMAND ${EXE} --smoke --out ${WORK}/resumed --resume STDOUT "resuming at step 50")
  expect_same_file(NAME "resumed checkpoint equals the uninterrupted one"
                   A ${WORK}/straight/checkpoint.safetensors B ${WORK}/resumed/checkpoint.safetensors)
  # The same with two-layer stacks of the other carried states: MinGRU (each layer's last scan output), Griffin's
  # blocks (plus each layer's conv tail), mLSTM (each layer's matrix memory [L, B, heads, D, D]).
  check_exact_resume(mingru 120 50)
  check_exact_resume(rglru 60 30)
  check_exact_resume(mlstm 60 30)
  expect_run(NAME "resume with another model" COMMAND ${EXE} --smoke --out ${WORK}/resumed --resume --hidden 32
             --steps 200 EXIT 2 STDERR "char_lm: --hidden differs from the checkpoint; got 32, expected 64")
  expect_run(NAME "resume a finished run" COMMAND ${EXE} --smoke --out ${WORK}/resumed --resume EXIT 2
             STDERR "char_lm: nothing to do; got --steps 120 and a checkpoint at step 120")
elseif(MODE STREQUAL "errors")
  set(out --out ${WORK}/out)
  expect_run(NAME "missing data file" COMMAND ${EXE} --smoke ${out} --data ${WORK}/nope.txt EXIT 2
             STDERR "^char_lm: cannot read --data file; got '[^']*nope.txt' \\(no such file\\), expected a readable text file\n$")
  file(WRITE ${WORK}/empty.txt "")
  expect_run(NAME "empty data file" COMMAND ${EXE} --smoke ${out} --data ${WORK}/empty.txt EXIT 2
             STDERR "char_lm: --data file is empty; got '[^']*empty.txt' \\(0 bytes\\)")
  expect_run(NAME "directory as data" COMMAND ${EXE} --smoke ${out} --data ${WORK} EXIT 2
             STDERR "not a regular file")
  file(WRITE ${WORK}/short.txt "Far too short for a window of 32 characters in 16 streams.\n")
  expect_run(NAME "data too short for the window" COMMAND ${EXE} --smoke ${out} --data ${WORK}/short.txt EXIT 2
             STDERR "char_lm: --data file too short for --window 32 and --batch 16; got 59 bytes in '[^']*short.txt', expected at least 587 ")
  expect_run(NAME "binary data" COMMAND ${EXE} --smoke ${out} --data ${EXE} EXIT 2
             STDERR "char_lm: --data file is not text; got a NUL byte at offset [0-9]+ of '[^']*', expected a text file")
  expect_run(NAME "flag out of range" COMMAND ${EXE} --smoke ${out} --hidden 0 EXIT 2
             STDERR "char_lm: --hidden out of range; got 0, expected 1 <= --hidden <= 8192")
  expect_run(NAME "unknown cell" COMMAND ${EXE} --smoke ${out} --cell lstn EXIT 2
             STDERR "char_lm: unknown --cell; got 'lstn', expected one of lstm, gru, rnn, custom, mingru, minlstm, rglru, slstm, mlstm")
  expect_run(NAME "zoneout on a scan cell" COMMAND ${EXE} --smoke ${out} --cell mingru --zoneout 0.1 EXIT 2
             STDERR "char_lm: --weight-drop and --zoneout are for the built-in layers; got --cell mingru, expected lstm, gru or rnn")
  expect_run(NAME "locked dropout out of range" COMMAND ${EXE} --smoke ${out} --locked-dropout 1.5 EXIT 2
             STDERR "char_lm: --locked-dropout out of range; got 1.5, expected 0 <= --locked-dropout <= 0.95")
  # A run that diverges stops with exit code 3 and says what to change (its last good checkpoint stays).
  expect_run(NAME "diverging run" COMMAND ${EXE} --smoke ${out} --lr 10 --clip 1e9 EXIT 3
             STDERR "^char_lm: training diverged at step [0-9]+; got loss .*; try a smaller --lr \\(now 10\\) or a tighter --clip \\(now 1000000000\\)\n$")
  expect_run(NAME "xLSTM heads" COMMAND ${EXE} --smoke ${out} --cell slstm --hidden 30 EXIT 2
             STDERR "char_lm: --hidden must be a multiple of 4 for --cell slstm \\(4 heads\\); got 30")
  expect_run(NAME "unknown flag" COMMAND ${EXE} --smoke --bogus EXIT 2 STDERR "^char_lm: .*--bogus.*char_lm --help")
  expect_run(NAME "not a number" COMMAND ${EXE} --steps many EXIT 2 STDERR "^char_lm: .*many")
  expect_run(NAME "resume without a checkpoint" COMMAND ${EXE} --smoke ${out} --resume EXIT 2
             STDERR "char_lm: no checkpoint to resume; got no file '[^']*checkpoint.safetensors'")
  file(WRITE ${WORK}/bad.safetensors "not a checkpoint at all")
  expect_run(NAME "corrupt checkpoint" COMMAND ${EXE} --sample-only --checkpoint ${WORK}/bad.safetensors EXIT 2
             STDERR "^load_checkpoint: ")
  expect_run(NAME "help" COMMAND ${EXE} --help STDOUT "--cell")
elseif(MODE STREQUAL "loss_check")
  string(REPEAT "the cat sat on the mat. the dog sat on the log.\n" 60 text)
  file(WRITE ${WORK}/mine.txt "${text}")
  set(flat --data ${WORK}/mine.txt --embed 8 --hidden 16 --window 16 --batch 4 --steps 80 --lr 0 --log-every 10
           --eval-every 20 --eval-chars 200 --checkpoint-every 20 --sample-chars 20)
  expect_run(NAME "real run, loss flat" COMMAND ${EXE} ${flat} --out ${WORK}/real EXIT 0
             STDERR "^char_lm: warning: the loss did not fall; got [0-9.e+-]+ at the end, expected below 0.8 x [0-9.e+-]+ \\(the first step's\\); try a lower --lr or more --steps\n$"
             FILES ${WORK}/real/metrics.csv ${WORK}/real/loss.svg ${WORK}/real/samples.txt
                   ${WORK}/real/checkpoint.safetensors)
  expect_run(NAME "smoke run, loss flat" COMMAND ${EXE} --smoke ${flat} --out ${WORK}/smoke EXIT 1
             STDERR "^char_lm: the loss did not fall; got [0-9.e+-]+ at the end, expected below 0.8 x [0-9.e+-]+ \\(the first step's\\)\n$")
elseif(MODE STREQUAL "mpi")
  # 2 ranks x 1 shard compute what 1 process x 2 shards does, bit for bit: the same samples (drawn from the
  # model at steps 60 and 120 and at the end). Only rank 0 prints and writes.
  set(run ${EXE} --smoke --steps 120)
  expect_run(NAME "one process, 2 shards" COMMAND ${run} --threads 2 --shards 2 --out ${WORK}/single)
  expect_run(NAME "2 ranks, 1 shard each" COMMAND ${MPIEXEC} -np 2 ${run} --threads 1 --shards 1 --out ${WORK}/mpi
             STDOUT "^[^\n]*char_lm: .*char_lm: 120 steps in [^\n]*\n"
             FILES ${WORK}/mpi/metrics.csv ${WORK}/mpi/loss.svg ${WORK}/mpi/samples.txt ${WORK}/mpi/checkpoint.safetensors
             OUTPUT_VARIABLE out)
  string(REGEX MATCHALL "steps in" finals "${out}")
  list(LENGTH finals n)
  if(NOT n EQUAL 1)
    message(FATAL_ERROR "under mpirun the final line was printed ${n} times, expected once (rank 0)")
  endif()
  expect_same_file(NAME "2 ranks sample what 1 process of 2 shards samples"
                   A ${WORK}/single/samples.txt B ${WORK}/mpi/samples.txt)
  # Resume under MPI equals the uninterrupted MPI run, byte for byte.
  expect_run(NAME "2 ranks, stopped at step 60" COMMAND ${MPIEXEC} -np 2 ${run} --threads 1 --shards 1
             --out ${WORK}/mpi_resumed --stop-at 60 STDOUT "stopped at step 60")
  expect_run(NAME "2 ranks, resumed" COMMAND ${MPIEXEC} -np 2 ${run} --threads 1 --shards 1 --out ${WORK}/mpi_resumed
             --resume STDOUT "resuming at step 60")
  expect_same_file(NAME "resumed under MPI equals uninterrupted"
                   A ${WORK}/mpi/checkpoint.safetensors B ${WORK}/mpi_resumed/checkpoint.safetensors)
  # Another world size resumes too (same data order; the batch is cut differently): 2 ranks -> 1 process.
  expect_run(NAME "2 ranks, stopped at step 60 (for 1 process)" COMMAND ${MPIEXEC} -np 2 ${run} --threads 1
             --shards 1 --out ${WORK}/mpi_to_single --stop-at 60 STDOUT "stopped at step 60")
  expect_run(NAME "resumed as 1 process" COMMAND ${run} --threads 1 --shards 1 --out ${WORK}/mpi_to_single --resume
             STDOUT "resuming at step 60.*char_lm: 120 steps in")
  # Ranks that read different texts (mpirun's MPMD form: one program line per rank) are refused before training.
  string(REPEAT "the cat sat on the mat. the dog sat on the log.\n" 60 text_a)
  string(REPLACE "cat" "bat" text_b "${text_a}")
  file(WRITE ${WORK}/a.txt "${text_a}")
  file(WRITE ${WORK}/b.txt "${text_b}")
  set(small --smoke --window 16 --batch 4 --out ${WORK}/differ)
  expect_run(NAME "ranks with different data" COMMAND ${MPIEXEC} -np 1 ${EXE} ${small} --data ${WORK}/a.txt
             : -np 1 ${EXE} ${small} --data ${WORK}/b.txt EXIT 2
             STDERR "char_lm: the ranks' --data differ; got rank\\(s\\) 1 with other contents than rank 0's")
  # A bad flag: one message (rank 0's), exit code 2 (mpirun adds its own notice of the abort).
  expect_run(NAME "bad flag under mpirun" COMMAND ${MPIEXEC} -np 2 ${EXE} --smoke --hidden 0 --out ${WORK}/bad EXIT 2
             STDERR "char_lm: --hidden out of range" OUTPUT_VARIABLE ignored)
else()
  message(FATAL_ERROR "ctest.cmake: unknown MODE; got '${MODE}', expected smoke, resume, errors or loss_check")
endif()
