# Project include for cross-building the extension against an aarch64 torch
# wheel unpacked on an x86-64 host (.ci/aarch64_check.sh):
#   cmake -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-toolchain.cmake
#         -DCMAKE_PROJECT_INCLUDE=cmake/aarch64-cross-torch.cmake
#         -DTorch_DIR=<wheel>/torch/share/cmake/Torch ...
# PyPI's aarch64 torch wheels are built with CUDA, and their CMake package looks
# for a CUDA toolkit unless the target torch::cudart already exists. The
# extension's CPU build uses no CUDA API, so an empty stand-in is enough to
# compile and link against the wheel's headers and libraries (libtorch,
# libtorch_cpu, libc10 and the CUDA ones it names, all aarch64).
if(NOT TARGET torch::cudart)
  add_library(torch::cudart INTERFACE IMPORTED)
endif()

# CMakeLists.txt adds the host (x86-64) torch and pybind11 to CMAKE_PREFIX_PATH;
# searching there would find x86-64 libtorch. Packages come from explicit
# Torch_DIR / pybind11_DIR instead.
set(CMAKE_FIND_USE_CMAKE_PATH FALSE)
