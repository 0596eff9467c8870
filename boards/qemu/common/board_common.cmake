# Shared tail of the QEMU mps2 board files (boards/qemu/<board>/board.cmake).

# Instructions retired per SysTick tick under QEMU -icount shift=0
# (1 instruction per virtual nanosecond): 1e9 / KL_CPU_HZ as a reduced fraction
# KL_INSN_PER_TICK_NUM / KL_INSN_PER_TICK_DEN (40/1 at 25 MHz, 125/4 at 32 MHz).
set(_kl_a 1000000000)
set(_kl_b ${KL_CPU_HZ})
while(NOT _kl_b EQUAL 0)
  math(EXPR _kl_r "${_kl_a} % ${_kl_b}")
  set(_kl_a ${_kl_b})
  set(_kl_b ${_kl_r})
endwhile()
math(EXPR KL_INSN_PER_TICK_NUM "1000000000 / ${_kl_a}")
math(EXPR KL_INSN_PER_TICK_DEN "${KL_CPU_HZ} / ${_kl_a}")

if(NOT CMAKE_C_COMPILER_LOADED)
  # Included before project(): pick the cross toolchain unless one was given.
  if(NOT CMAKE_TOOLCHAIN_FILE)
    get_filename_component(CMAKE_TOOLCHAIN_FILE
      "${CMAKE_CURRENT_LIST_DIR}/../../../cmake/arm-none-eabi.cmake" ABSOLUTE)
  endif()
elseif(NOT CMAKE_C_COMPILER MATCHES "arm-none-eabi-gcc")
  message(FATAL_ERROR
    "KL_BOARD=${KL_BOARD_NAME} needs the arm-none-eabi toolchain, but the C "
    "compiler is ${CMAKE_C_COMPILER}. Configure a fresh build directory with "
    "-DCMAKE_TOOLCHAIN_FILE=<repo>/cmake/arm-none-eabi.cmake")
endif()
