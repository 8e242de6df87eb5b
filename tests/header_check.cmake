# Checks that one public header compiles on its own: runs the compiler with -fsyntax-only on
# SOURCE (a file that includes the header twice) with the flags in FLAGS (a response file).
# ctest calls it with -DCOMPILER= -DFLAGS= -DSOURCE= -DSTAMP=, and -DPCH=<file> to put that
# precompiled header before SOURCE. With -DPCH_OUTPUT=<file> it instead precompiles SOURCE into
# that file, with the same flags. -DCOMPILER_KIND=clang uses clang's spelling of both (GCC's
# otherwise): clang builds the header with its template instantiations done once, and loads
# it in a fraction of the time GCC takes for its own.
#
# A passing check leaves STAMP and the compiler's dependency list STAMP.d behind; while
# neither the compiler, the flags nor any file the header pulled in (LibTorch's headers
# included) is newer than STAMP, the check passes again without compiling.
foreach(variable COMPILER FLAGS SOURCE STAMP)
  if(NOT DEFINED ${variable})
    message(FATAL_ERROR "header_check.cmake needs -D${variable}=")
  endif()
endforeach()
set(depfile "${STAMP}.d")

set(up_to_date FALSE)
if(EXISTS "${STAMP}" AND EXISTS "${depfile}")
  set(up_to_date TRUE)
  file(READ "${depfile}" dependencies)
  # Make syntax: "<stamp>: <file> <file> \<newline> <file> ...", spaces in names as "\ ".
  string(REPLACE "\\\n" " " dependencies "${dependencies}")
  string(REPLACE "\\ " "<space>" dependencies "${dependencies}")
  string(FIND "${dependencies}" ": " colon)
  if(colon LESS 0)
    set(up_to_date FALSE)
  else()
    math(EXPR colon "${colon} + 2")
    string(SUBSTRING "${dependencies}" ${colon} -1 dependencies)
    string(REGEX MATCHALL "[^ \t\r\n]+" dependencies "${dependencies}")
  endif()
  set(inputs "${COMPILER}" "${FLAGS}" "${SOURCE}")
  if(DEFINED PCH)
    list(APPEND inputs "${PCH}")
  endif()
  foreach(dependency IN LISTS dependencies ITEMS ${inputs})
    if(NOT up_to_date)
      break()
    endif()
    string(REPLACE "<space>" " " dependency "${dependency}")
    if(NOT IS_ABSOLUTE "${dependency}")
      get_filename_component(dependency "${dependency}" ABSOLUTE)
    endif()
    # True when the dependency is missing, newer than the stamp, or of the same time.
    if("${dependency}" IS_NEWER_THAN "${STAMP}")
      set(up_to_date FALSE)
    endif()
  endforeach()
endif()
if(up_to_date)
  message(STATUS "unchanged since it last compiled on its own: ${SOURCE}")
  return()
endif()

file(REMOVE "${STAMP}" "${depfile}")
if(DEFINED PCH_OUTPUT AND COMPILER_KIND STREQUAL "clang")
  set(compile -Xclang -fpch-instantiate-templates -x c++-header "${SOURCE}" -o "${PCH_OUTPUT}")
elseif(DEFINED PCH_OUTPUT)
  set(compile -x c++-header "${SOURCE}" -o "${PCH_OUTPUT}")
elseif(DEFINED PCH AND COMPILER_KIND STREQUAL "clang")
  set(compile -include-pch "${PCH}" -fsyntax-only "${SOURCE}")
elseif(DEFINED PCH)
  # GCC finds <header>.gch beside the header it is asked to include.
  string(REGEX REPLACE "\\.gch$" "" header "${PCH}")
  set(compile -include "${header}" -Winvalid-pch -fsyntax-only "${SOURCE}")
else()
  set(compile -fsyntax-only "${SOURCE}")
endif()
execute_process(COMMAND "${COMPILER}" "@${FLAGS}" -MD -MF "${depfile}" -MT "${STAMP}" ${compile}
                RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  file(REMOVE "${depfile}")
  file(READ "${SOURCE}" includes)
  message(FATAL_ERROR "does not compile on its own (with nothing before it but LibTorch's "
                      "torch/torch.h, precompiled):\n${includes}")
endif()
file(TOUCH "${STAMP}")
