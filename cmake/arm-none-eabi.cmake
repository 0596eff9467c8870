# CMake toolchain file for the GNU Arm Embedded toolchain (arm-none-eabi-gcc).
#
#   cmake -S . -B build-an386 -G Ninja \
#         -DCMAKE_TOOLCHAIN_FILE=cmake/arm-none-eabi.cmake -DKL_BOARD=mps2-an386
#
# The compilers are looked up on PATH. To use a toolchain that is not on PATH,
# set ARM_GCC_ROOT (cache variable or environment variable) to its install
# prefix (the directory holding bin/arm-none-eabi-gcc).
#
# CPU / FPU flags are NOT set here: they come from the board file
# (boards/qemu/<board>/board.cmake, variable KL_CPU_FLAGS) and are applied by
# cmake/kl_firmware.cmake, so one toolchain file serves every board.

set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)

# Bare metal: there is no way to link a test executable without a linker
# script, so try_compile() only builds static libraries.
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)

set(_kl_cross arm-none-eabi-)

if(NOT DEFINED ARM_GCC_ROOT AND DEFINED ENV{ARM_GCC_ROOT})
  set(ARM_GCC_ROOT "$ENV{ARM_GCC_ROOT}")
endif()
set(_kl_hints)
if(ARM_GCC_ROOT)
  list(APPEND _kl_hints "${ARM_GCC_ROOT}/bin")
endif()
# try_compile() re-runs this file in a child project: forward the hint.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES ARM_GCC_ROOT)

find_program(KL_ARM_GCC ${_kl_cross}gcc HINTS ${_kl_hints})
if(NOT KL_ARM_GCC)
  message(FATAL_ERROR
    "arm-none-eabi-gcc not found on PATH. Install the GNU Arm Embedded "
    "toolchain (Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi) or set "
    "ARM_GCC_ROOT to its install prefix.")
endif()
get_filename_component(_kl_bin "${KL_ARM_GCC}" DIRECTORY)

set(CMAKE_C_COMPILER   "${KL_ARM_GCC}")
set(CMAKE_ASM_COMPILER "${KL_ARM_GCC}")
find_program(KL_ARM_GXX ${_kl_cross}g++ HINTS "${_kl_bin}" ${_kl_hints})
if(KL_ARM_GXX)
  set(CMAKE_CXX_COMPILER "${KL_ARM_GXX}")
endif()
find_program(CMAKE_OBJCOPY ${_kl_cross}objcopy HINTS "${_kl_bin}" ${_kl_hints})
find_program(CMAKE_OBJDUMP ${_kl_cross}objdump HINTS "${_kl_bin}" ${_kl_hints})
find_program(CMAKE_SIZE    ${_kl_cross}size    HINTS "${_kl_bin}" ${_kl_hints})
find_program(CMAKE_AR      ${_kl_cross}ar      HINTS "${_kl_bin}" ${_kl_hints})
find_program(CMAKE_RANLIB  ${_kl_cross}ranlib  HINTS "${_kl_bin}" ${_kl_hints})

# Never pick up host headers or libraries.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
