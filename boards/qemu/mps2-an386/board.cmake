# kilolearn board file: QEMU mps2-an386 (Cortex-M4F, single-precision FPU, DSP).
#
# Included by the top-level CMakeLists.txt when KL_BOARD=mps2-an386; consumed by
# cmake/kl_firmware.cmake. Configure with
#   -DCMAKE_TOOLCHAIN_FILE=cmake/arm-none-eabi.cmake -DKL_BOARD=mps2-an386
#
# Keep KL_QEMU_MACHINE / KL_JOB_ADDR in sync with BOARDS in
# scripts/kilolearn/qemu.py (the Python runner loads the job image there).

set(KL_BOARD_NAME    mps2-an386)
set(KL_BOARD_DIR     "${CMAKE_CURRENT_LIST_DIR}")
set(KL_CPU           cortex-m4)
set(KL_CPU_FLAGS     -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16)
set(KL_LINKER_SCRIPT "${CMAKE_CURRENT_LIST_DIR}/link.ld")
set(KL_LINKER_INCLUDE_DIRS "${CMAKE_CURRENT_LIST_DIR}/../common")
set(KL_QEMU_MACHINE  mps2-an386)
# 16 MB PSRAM at 0x21000000 (RAM in QEMU 7.2, unused by the program).
set(KL_JOB_ADDR      0x21000000)
set(KL_JOB_MAX       0x1000000)   # 16 MB PSRAM
# CMSDK APB UART0 (QEMU's first serial port, -serial stdio / -nographic).
set(KL_UART_BASE     0x40004000)
# Processor clock feeding SysTick (CLKSOURCE=1). Under -icount shift=0 QEMU
# retires one instruction per virtual ns, so one SysTick tick is
# 1e9 / KL_CPU_HZ instructions.
set(KL_CPU_HZ        25000000)

include("${CMAKE_CURRENT_LIST_DIR}/../common/board_common.cmake")
