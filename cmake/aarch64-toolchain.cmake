# Cross compilation for 64-bit ARM Linux with Debian's GNU cross toolchain
# (packages g++-aarch64-linux-gnu, and qemu-user to run the results):
#   cmake -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-toolchain.cmake ...
# CMAKE_SYSTEM_PROCESSOR = aarch64 makes cmake/isa.cmake build the portable
# and NEON kernels. Programs built this way run under
# CMAKE_CROSSCOMPILING_EMULATOR (qemu-aarch64 with the cross sysroot).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(MAMEXT_AARCH64_TRIPLE aarch64-linux-gnu CACHE STRING "GNU triple of the aarch64 cross compiler")
set(CMAKE_C_COMPILER ${MAMEXT_AARCH64_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${MAMEXT_AARCH64_TRIPLE}-g++)
set(MAMEXT_AARCH64_SYSROOT /usr/${MAMEXT_AARCH64_TRIPLE} CACHE PATH "target libraries (libc, libstdc++) for qemu")
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L ${MAMEXT_AARCH64_SYSROOT})

# Host programs (Python, nvcc) from the host; target libraries and packages
# from the sysroot or from explicit paths (Torch_DIR of an aarch64 torch wheel).
set(CMAKE_FIND_ROOT_PATH ${MAMEXT_AARCH64_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
