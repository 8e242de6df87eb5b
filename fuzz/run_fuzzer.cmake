# Builds fuzz/ with clang (libFuzzer + ASan + UBSan) in its own build tree and runs the
# checkpoint fuzzer over its starting corpus for a bounded time; fails on any crash.
# ctest calls it with -DSOURCE=<fuzz dir> -DBINARY=<build dir> -DSECONDS=<n>.
find_program(CLANGXX NAMES clang++ clang++-18 clang++-17 clang++-16 clang++-15 clang++-14 REQUIRED)
set(work ${BINARY}/corpus)  # new inputs go here; the starting corpus stays untouched
file(REMOVE_RECURSE ${work})
file(MAKE_DIRECTORY ${work})
foreach(step configure build run)
  if(step STREQUAL "configure")
    set(command ${CMAKE_COMMAND} -S ${SOURCE} -B ${BINARY} -DCMAKE_BUILD_TYPE=RelWithDebInfo
                -DCMAKE_CXX_COMPILER=${CLANGXX})
  elseif(step STREQUAL "build")
    set(command ${CMAKE_COMMAND} --build ${BINARY})
  else()
    set(command ${BINARY}/checkpoint_fuzzer -max_total_time=${SECONDS} -rss_limit_mb=2048
                -timeout=10 -print_final_stats=1 -artifact_prefix=${BINARY}/
                ${work} ${SOURCE}/corpus)
  endif()
  execute_process(COMMAND ${command} RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "checkpoint fuzzer: the ${step} step failed (${status}); "
                        "a crashing input is saved as ${BINARY}/crash-* (replay: "
                        "${BINARY}/checkpoint_fuzzer <file>)")
  endif()
endforeach()
