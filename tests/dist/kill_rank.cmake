# A rank killed with SIGKILL ends the whole job (no hang), and the last complete checkpoint still loads.
#   cmake -DMPIEXEC=mpirun -DEXE=kill_rank -DWORK=dir -DVICTIM=0|1 -P kill_rank.cmake
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")
execute_process(COMMAND ${MPIEXEC} -np 2 ${EXE} train ${WORK} ${VICTIM} RESULT_VARIABLE job_rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err TIMEOUT 120)
if(job_rc MATCHES "timeout")
  message(FATAL_ERROR "kill_rank: the job hung after rank ${VICTIM} was killed\n${out}\n${err}")
endif()
if(job_rc EQUAL 0)
  message(FATAL_ERROR "kill_rank: the job finished although rank ${VICTIM} was killed\n${out}\n${err}")
endif()
execute_process(COMMAND ${EXE} check ${WORK} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
if(NOT rc EQUAL 0 OR NOT out MATCHES "step 3")
  message(FATAL_ERROR "kill_rank: the last checkpoint does not load at step 3; got exit ${rc}\n${out}\n${err}")
endif()
message(STATUS "rank ${VICTIM} killed: the job ended (mpirun exit ${job_rc}), the checkpoint loads at step 3")
