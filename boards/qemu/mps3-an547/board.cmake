# kilolearn board file: QEMU mps3-an547 (Cortex-M55 on the SSE-300, Secure state,
# double-precision FPU, DSP, MVE integer + floating point "Helium").
#
# Included by the top-level CMakeLists.txt when KL_BOARD=mps3-an547; consumed by
# cmake/kl_firmware.cmake. Configure with
#   -DCMAKE_TOOLCHAIN_FILE=cmake/arm-none-eabi.cmake -DKL_BOARD=mps3-an547
#
# Keep KL_QEMU_MACHINE / KL_JOB_ADDR in sync with BOARDS in
# scripts/kilolearn/device/qemu.py (the Python runner loads the job image there).

set(KL_BOARD_NAME    mps3-an547)
set(KL_BOARD_DIR     "${CMAKE_CURRENT_LIST_DIR}")
set(KL_CPU           cortex-m55)
# -mcpu=cortex-m55 implies +mve.fp and the DP FPU (__ARM_FEATURE_MVE == 3, __ARM_FP == 14);
# newlib-nano's multilib is thumb/v8-m.main+dp/hard.
set(KL_CPU_FLAGS     -mcpu=cortex-m55 -mthumb -mfloat-abi=hard)
set(KL_LINKER_SCRIPT "${CMAKE_CURRENT_LIST_DIR}/link.ld")
set(KL_LINKER_INCLUDE_DIRS "${CMAKE_CURRENT_LIST_DIR}/../common")
set(KL_QEMU_MACHINE  mps3-an547)
# 16 MB of the DDR, Secure alias (0x70000000; 0x60000000 is distinct memory in QEMU 7.2).
set(KL_JOB_ADDR      0x70000000)
set(KL_JOB_MAX       0x1000000)   # 16 MB
# CMSDK APB UART0 (QEMU's first serial port), Secure alias of 0x49303000.
set(KL_UART_BASE     0x59303000)
# SSE-300 system clock (SysTick CLKSOURCE=1): 32 MHz, so one tick is
# 1e9 / 32e6 = 31.25 instructions under -icount shift=0 (measured against loops
# of known length: 2,000,000 instructions = 64,000 ticks).
set(KL_CPU_HZ        32000000)

include("${CMAKE_CURRENT_LIST_DIR}/../common/board_common.cmake")
