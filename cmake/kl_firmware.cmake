# kilolearn firmware helpers.
#
# Included by the top-level CMakeLists.txt after the board file:
#
#   set(KL_BOARD host CACHE STRING "host or a board under boards/qemu")
#   if(NOT KL_BOARD STREQUAL host)
#     include(boards/qemu/${KL_BOARD}/board.cmake)
#   endif()
#   include(cmake/kl_firmware.cmake)
#
# Including this file
#   * sets the compile flags for ALL C code configured after it
#     (-std=c99 -Wall -Wextra -Werror -O2; on a board also the board's CPU/FPU
#     flags, -ffunction-sections -fdata-sections and newlib-nano headers), so
#     include it before add_subdirectory() of the engine;
#   * creates the OBJECT library `kl_port`: the posix port on the host, the
#     bare-metal port (startup, UART/SysTick/semihosting port, newlib stubs)
#     on a board. It carries the include directory for kl_port.h;
#   * defines kl_add_firmware().
#
#   kl_add_firmware(<name> [SOURCES] <src>... [LIBRARIES <lib>...]
#                   [DEFINITIONS <def>...] [INCLUDES <dir>...])
#
# builds <name> (host: a normal executable; board: <name>.elf plus
# <name>.map) from the sources, the port and, if a target of that name exists
# when the build system is generated, the engine library `kilolearn`.
# kl_apply_flags(<target>) applies the same flags to a target that was
# created before this file was included.

include_guard(GLOBAL)

get_filename_component(KL_REPO_ROOT "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
set(KL_PORT_DIR "${KL_REPO_ROOT}/modules/kilolearn/port")

if(NOT DEFINED KL_BOARD)
  set(KL_BOARD host)
endif()

if(KL_BOARD STREQUAL host)
  set(KL_BAREMETAL OFF)
else()
  set(KL_BAREMETAL ON)
  foreach(_v KL_CPU_FLAGS KL_LINKER_SCRIPT KL_JOB_ADDR KL_UART_BASE KL_INSN_PER_TICK_NUM
      KL_INSN_PER_TICK_DEN)
    if(NOT DEFINED ${_v})
      message(FATAL_ERROR "KL_BOARD=${KL_BOARD}: ${_v} not set; include "
        "boards/qemu/${KL_BOARD}/board.cmake before cmake/kl_firmware.cmake")
    endif()
  endforeach()
  if(NOT CMAKE_C_COMPILER MATCHES "arm-none-eabi-gcc")
    message(FATAL_ERROR "KL_BOARD=${KL_BOARD} needs "
      "-DCMAKE_TOOLCHAIN_FILE=${KL_REPO_ROOT}/cmake/arm-none-eabi.cmake")
  endif()
endif()

# ---- flags -----------------------------------------------------------------

set(KL_C_FLAGS -std=c99 -Wall -Wextra -Werror -Wdouble-promotion -O2)
if(KL_BAREMETAL)
  set(KL_TARGET_FLAGS ${KL_CPU_FLAGS} -ffunction-sections -fdata-sections
      --specs=nano.specs)
else()
  set(KL_TARGET_FLAGS)
endif()

set(CMAKE_C_STANDARD 99)
set(CMAKE_C_STANDARD_REQUIRED ON)
set(CMAKE_C_EXTENSIONS OFF)

# Directory-wide: applies to every target created after this point in this
# directory and its subdirectories (the engine library included).
add_compile_options(
  "$<$<COMPILE_LANGUAGE:C>:${KL_C_FLAGS}>"
  ${KL_TARGET_FLAGS})
if(KL_BAREMETAL)
  add_link_options(${KL_CPU_FLAGS})
endif()

function(kl_apply_flags target)
  target_compile_options(${target} PRIVATE
    "$<$<COMPILE_LANGUAGE:C>:${KL_C_FLAGS}>" ${KL_TARGET_FLAGS})
  if(KL_BAREMETAL)
    target_link_options(${target} PRIVATE ${KL_CPU_FLAGS})
  endif()
endfunction()

# ---- port ------------------------------------------------------------------

if(NOT TARGET kl_port)
  if(KL_BAREMETAL)
    add_library(kl_port OBJECT
      "${KL_PORT_DIR}/baremetal/startup.c"
      "${KL_PORT_DIR}/baremetal/kl_port_baremetal.c"
      "${KL_PORT_DIR}/baremetal/syscalls.c")
    if(NOT DEFINED KL_JOB_MAX)
      set(KL_JOB_MAX 0x1000000)
    endif()
    if(NOT DEFINED KL_CPU_HZ)
      set(KL_CPU_HZ 25000000)
    endif()
    target_compile_definitions(kl_port PRIVATE
      KL_UART_BASE=${KL_UART_BASE}u
      KL_JOB_ADDR=${KL_JOB_ADDR}u
      KL_JOB_MAX=${KL_JOB_MAX}u
      KL_CPU_HZ=${KL_CPU_HZ}u
      KL_INSN_PER_TICK_NUM=${KL_INSN_PER_TICK_NUM}u
      KL_INSN_PER_TICK_DEN=${KL_INSN_PER_TICK_DEN}u)
    target_include_directories(kl_port PRIVATE "${KL_PORT_DIR}/baremetal")
  else()
    add_library(kl_port OBJECT "${KL_PORT_DIR}/posix/kl_port_posix.c"
      "${KL_PORT_DIR}/posix/kl_store_file.c")
    # kl_store_file.c includes kilolearn/kl_store.h
    target_include_directories(kl_port PRIVATE
      "${KL_PORT_DIR}/../include")
  endif()
  target_include_directories(kl_port PUBLIC "${KL_PORT_DIR}")
endif()

# ---- firmware --------------------------------------------------------------

function(kl_add_firmware name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" ""
    "SOURCES;LIBRARIES;DEFINITIONS;INCLUDES")
  set(_srcs ${arg_SOURCES} ${arg_UNPARSED_ARGUMENTS})
  if(NOT _srcs)
    message(FATAL_ERROR "kl_add_firmware(${name}): no sources")
  endif()

  add_executable(${name} ${_srcs})
  # The engine library, if the project defines it (checked at generate
  # time, so it may be defined after this call).
  target_link_libraries(${name} PRIVATE
    kl_port ${arg_LIBRARIES} "$<TARGET_NAME_IF_EXISTS:kilolearn>")
  if(arg_DEFINITIONS)
    target_compile_definitions(${name} PRIVATE ${arg_DEFINITIONS})
  endif()
  if(arg_INCLUDES)
    target_include_directories(${name} PRIVATE ${arg_INCLUDES})
  endif()

  if(KL_BAREMETAL)
    # The simulated NOR flash of the weight store (kl_store.h): the upper
    # half of the board's job region (PSRAM), which keeps its contents over
    # a system reset.
    math(EXPR _flash_sim "${KL_JOB_ADDR} + ${KL_JOB_MAX} / 2" OUTPUT_FORMAT HEXADECIMAL)
    math(EXPR _flash_max "${KL_JOB_MAX} / 2" OUTPUT_FORMAT HEXADECIMAL)
    target_compile_definitions(${name} PRIVATE KL_BAREMETAL=1 KL_JOB_ADDR=${KL_JOB_ADDR}u
      KL_FLASH_SIM_ADDR=${_flash_sim}u KL_FLASH_SIM_MAX=${_flash_max}u)
    set(_ld_dirs)
    foreach(_d ${KL_LINKER_INCLUDE_DIRS})
      list(APPEND _ld_dirs "-L${_d}")
    endforeach()
    set_target_properties(${name} PROPERTIES
      SUFFIX ".elf"
      LINK_DEPENDS "${KL_LINKER_SCRIPT}")
    target_link_options(${name} PRIVATE
      --specs=nano.specs
      -nostartfiles
      "-T${KL_LINKER_SCRIPT}"
      ${_ld_dirs}
      -Wl,--gc-sections
      "-Wl,-Map=$<TARGET_FILE_DIR:${name}>/${name}.map")
    target_link_libraries(${name} PRIVATE m)
    if(CMAKE_SIZE)
      add_custom_command(TARGET ${name} POST_BUILD
        COMMAND "${CMAKE_SIZE}" "$<TARGET_FILE:${name}>"
        VERBATIM)
    endif()
  else()
    if(UNIX)
      target_link_libraries(${name} PRIVATE m)
    endif()
  endif()
endfunction()
