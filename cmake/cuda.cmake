# CUDA build switch for mamext, included by CMakeLists.txt before find_package(Torch).
#
# In:  MAMEXT_WITH_CUDA (cache: AUTO | 0/OFF | 1/ON), MAMEXT_TORCH_HAS_CUDA (0/1),
#      Python_EXECUTABLE.
# Out: MAMEXT_BUILD_CUDA (ON/OFF). When ON, the CUDA language is enabled, nvcc and
#      the toolkit are located, CUDA_PATH is exported for torch's CMake files, a
#      default TORCH_CUDA_ARCH_LIST is set, and the cuBLAS/cuSPARSE/nvrtc headers
#      and libraries that torch needs but the system toolkit may lack are taken
#      from NVIDIA's pip wheels (site-packages/nvidia/*) through an overlay folder
#      in the build tree.
#
# AUTO: ON when the installed torch was built with CUDA and nvcc is found, OFF
#       otherwise (silently for a CPU-only torch, so the CPU build is unchanged).
# 1/ON: a clear FATAL_ERROR when that is impossible.
# 0/OFF: never.

string(TOUPPER "${MAMEXT_WITH_CUDA}" _mamext_cuda_req)
if(_mamext_cuda_req MATCHES "^(0|OFF|FALSE|NO|N)$")
  set(MAMEXT_BUILD_CUDA OFF)
  message(STATUS "mamext: CUDA kernels disabled (MAMEXT_WITH_CUDA=${MAMEXT_WITH_CUDA})")
  return()
elseif(_mamext_cuda_req MATCHES "^(1|ON|TRUE|YES|Y)$")
  set(_mamext_cuda_required TRUE)
elseif(_mamext_cuda_req STREQUAL "AUTO" OR _mamext_cuda_req STREQUAL "")
  set(_mamext_cuda_required FALSE)
else()
  message(FATAL_ERROR "mamext: MAMEXT_WITH_CUDA must be AUTO, 0/OFF or 1/ON, got '${MAMEXT_WITH_CUDA}'")
endif()

# Fails the configure when CUDA was forced on, otherwise turns it off with a note.
macro(_mamext_cuda_unavailable why)
  if(_mamext_cuda_required)
    message(FATAL_ERROR "mamext: MAMEXT_WITH_CUDA=${MAMEXT_WITH_CUDA} but the CUDA kernels cannot be built: ${why}")
  endif()
  set(MAMEXT_BUILD_CUDA OFF)
  if(NOT "${MAMEXT_TORCH_HAS_CUDA}" STREQUAL "0")
    message(STATUS "mamext: CUDA kernels disabled: ${why}")
  endif()
  return()
endmacro()

if(NOT "${MAMEXT_TORCH_HAS_CUDA}" STREQUAL "1")
  _mamext_cuda_unavailable("the installed torch (${Python_EXECUTABLE}) was built without CUDA (torch.version.cuda is None); install a CUDA build of torch")
endif()

# CUDA with C++20 needs CMake >= 3.26 (pip install "cmake>=3.26").
if(CMAKE_VERSION VERSION_LESS 3.26)
  _mamext_cuda_unavailable("CMake ${CMAKE_VERSION} is too old for CUDA with C++20; need >= 3.26 (pip install 'cmake>=3.26')")
endif()

# ---------------------------------------------------------------------------
# nvcc and the toolkit root. nvcc may be a wrapper script (not a symlink), so ask
# nvcc itself where it lives (_HERE_ in its dry-run output).
# ---------------------------------------------------------------------------
set(_mamext_nvcc "")
if(CMAKE_CUDA_COMPILER)
  set(_mamext_nvcc "${CMAKE_CUDA_COMPILER}")
elseif(DEFINED ENV{CUDACXX} AND NOT "$ENV{CUDACXX}" STREQUAL "")
  set(_mamext_nvcc "$ENV{CUDACXX}")
else()
  find_program(_mamext_nvcc_found nvcc
    HINTS "$ENV{CUDA_PATH}/bin" "$ENV{CUDA_HOME}/bin" "$ENV{CUDA_ROOT}/bin"
    PATHS /usr/local/cuda/bin /opt/cuda/bin)
  if(_mamext_nvcc_found)
    set(_mamext_nvcc "${_mamext_nvcc_found}")
  endif()
  unset(_mamext_nvcc_found CACHE)
endif()
if(NOT _mamext_nvcc OR NOT EXISTS "${_mamext_nvcc}")
  _mamext_cuda_unavailable("nvcc not found (looked at CMAKE_CUDA_COMPILER, $CUDACXX, $CUDA_PATH/bin, $CUDA_HOME/bin, PATH, /usr/local/cuda/bin)")
endif()
execute_process(
  COMMAND "${_mamext_nvcc}" -dryrun -c -x cu /dev/null -o /dev/null
  OUTPUT_VARIABLE _mamext_nvcc_out ERROR_VARIABLE _mamext_nvcc_out RESULT_VARIABLE _mamext_nvcc_rc)
if(_mamext_nvcc_out MATCHES "_HERE_=([^\r\n]*)")
  set(_mamext_nvcc_bin "${CMAKE_MATCH_1}")
  string(STRIP "${_mamext_nvcc_bin}" _mamext_nvcc_bin)
  set(_mamext_nvcc "${_mamext_nvcc_bin}/nvcc")
else()
  get_filename_component(_mamext_nvcc "${_mamext_nvcc}" REALPATH)
  get_filename_component(_mamext_nvcc_bin "${_mamext_nvcc}" DIRECTORY)
endif()
if(NOT EXISTS "${_mamext_nvcc}")
  _mamext_cuda_unavailable("could not run nvcc (${_mamext_nvcc}): ${_mamext_nvcc_out}")
endif()
get_filename_component(MAMEXT_CUDA_ROOT "${_mamext_nvcc_bin}" DIRECTORY)
if(NOT EXISTS "${MAMEXT_CUDA_ROOT}/include/cuda_runtime.h")
  _mamext_cuda_unavailable("no cuda_runtime.h under the toolkit root ${MAMEXT_CUDA_ROOT} (from ${_mamext_nvcc})")
endif()

# torch's CMake files (FindCUDA / FindCUDAToolkit) look at CUDA_PATH.
if(NOT DEFINED ENV{CUDA_PATH} OR "$ENV{CUDA_PATH}" STREQUAL "")
  set(ENV{CUDA_PATH} "${MAMEXT_CUDA_ROOT}")
endif()
set(CMAKE_CUDA_COMPILER "${_mamext_nvcc}")
if(NOT DEFINED CUDA_TOOLKIT_ROOT_DIR)
  set(CUDA_TOOLKIT_ROOT_DIR "${MAMEXT_CUDA_ROOT}" CACHE PATH "CUDA toolkit root (set by mamext)")
endif()
if(NOT DEFINED CUDAToolkit_ROOT)
  set(CUDAToolkit_ROOT "${MAMEXT_CUDA_ROOT}")
endif()

# Architectures: torch's CMake reads TORCH_CUDA_ARCH_LIST (variable, else env).
if(NOT DEFINED TORCH_CUDA_ARCH_LIST)
  if(DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT "$ENV{TORCH_CUDA_ARCH_LIST}" STREQUAL "")
    set(TORCH_CUDA_ARCH_LIST "$ENV{TORCH_CUDA_ARCH_LIST}")
  else()
    # 7.5: T4 / Turing; 8.0: A100; 9.0 (+ PTX for newer GPUs): H100 / H200.
    # 7.0 (V100) is not in CUDA 13 (nvcc 13 dropped sm_70 and older): build it
    # with a CUDA 12 toolkit and TORCH_CUDA_ARCH_LIST=7.0.
    set(TORCH_CUDA_ARCH_LIST "7.5;8.0;9.0+PTX")
  endif()
endif()
string(REPLACE " " ";" TORCH_CUDA_ARCH_LIST "${TORCH_CUDA_ARCH_LIST}")
set(TORCH_CUDA_ARCH_LIST "${TORCH_CUDA_ARCH_LIST}" CACHE STRING "CUDA architectures for the mamext kernels" FORCE)
# The glue names the built architectures when a GPU has no kernel image.
string(REPLACE ";" " " _mamext_arch_words "${TORCH_CUDA_ARCH_LIST}")
add_compile_definitions(MAMEXT_CUDA_ARCH_LIST="${_mamext_arch_words}")

# ---------------------------------------------------------------------------
# Headers and libraries from NVIDIA's pip wheels (torch's CUDA dependencies):
# every header / shared library present in site-packages/nvidia/*/{include,lib}
# but absent from the system toolkit is linked into an overlay folder in the
# build tree, which is added after the toolkit's own paths. Versioned-only
# libraries (libcublas.so.13) also get the unversioned name the linker and
# find_library look for.
# ---------------------------------------------------------------------------
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
    "import os, sys\ntry:\n    import nvidia\nexcept Exception:\n    sys.exit(0)\nfor p in list(getattr(nvidia, '__path__', [])):\n    for d in sorted(os.listdir(p)):\n        d = os.path.join(p, d)\n        if os.path.isdir(os.path.join(d, 'include')) or os.path.isdir(os.path.join(d, 'lib')):\n            print(d)\n"
  OUTPUT_VARIABLE _mamext_nv_dirs OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _mamext_nv_rc)
string(REPLACE "\n" ";" _mamext_nv_dirs "${_mamext_nv_dirs}")
set(MAMEXT_CUDA_OVERLAY "${CMAKE_BINARY_DIR}/mamext_cuda_overlay")
file(REMOVE_RECURSE "${MAMEXT_CUDA_OVERLAY}")
file(MAKE_DIRECTORY "${MAMEXT_CUDA_OVERLAY}/include" "${MAMEXT_CUDA_OVERLAY}/lib")
set(_mamext_overlay_headers "")
set(_mamext_overlay_libs "")
set(_mamext_sys_libdirs "${MAMEXT_CUDA_ROOT}/lib64" "${MAMEXT_CUDA_ROOT}/lib" "${MAMEXT_CUDA_ROOT}/lib64/stubs")
foreach(_d IN LISTS _mamext_nv_dirs)
  if(_d STREQUAL "")
    continue()
  endif()
  if(IS_DIRECTORY "${_d}/include")
    file(GLOB _hs RELATIVE "${_d}/include" "${_d}/include/*.h" "${_d}/include/*.hpp")
    foreach(_h IN LISTS _hs)
      if(NOT EXISTS "${MAMEXT_CUDA_ROOT}/include/${_h}" AND NOT EXISTS "${MAMEXT_CUDA_OVERLAY}/include/${_h}")
        file(CREATE_LINK "${_d}/include/${_h}" "${MAMEXT_CUDA_OVERLAY}/include/${_h}" SYMBOLIC)
        list(APPEND _mamext_overlay_headers "${_h}")
      endif()
    endforeach()
  endif()
  if(IS_DIRECTORY "${_d}/lib")
    file(GLOB _ls RELATIVE "${_d}/lib" "${_d}/lib/lib*.so*")
    foreach(_l IN LISTS _ls)
      string(REGEX REPLACE "\\.so.*$" ".so" _base "${_l}")
      set(_have FALSE)
      foreach(_sd IN LISTS _mamext_sys_libdirs)
        if(EXISTS "${_sd}/${_base}" OR EXISTS "${_sd}/${_l}")
          set(_have TRUE)
        endif()
      endforeach()
      if(NOT _have AND NOT EXISTS "${MAMEXT_CUDA_OVERLAY}/lib/${_l}")
        file(CREATE_LINK "${_d}/lib/${_l}" "${MAMEXT_CUDA_OVERLAY}/lib/${_l}" SYMBOLIC)
        if(NOT EXISTS "${MAMEXT_CUDA_OVERLAY}/lib/${_base}")
          file(CREATE_LINK "${_d}/lib/${_l}" "${MAMEXT_CUDA_OVERLAY}/lib/${_base}" SYMBOLIC)
        endif()
        list(APPEND _mamext_overlay_libs "${_l}")
      endif()
    endforeach()
  endif()
endforeach()
if(_mamext_overlay_headers OR _mamext_overlay_libs)
  list(LENGTH _mamext_overlay_headers _nh)
  list(LENGTH _mamext_overlay_libs _nl)
  message(STATUS "mamext: ${_nh} CUDA headers and ${_nl} libraries missing from ${MAMEXT_CUDA_ROOT} taken from NVIDIA pip wheels (${MAMEXT_CUDA_OVERLAY})")
  # Searched after the toolkit: FindCUDAToolkit / FindCUDA (find_library), the
  # linker, and every compile in this directory (headers).
  list(APPEND CMAKE_LIBRARY_PATH "${MAMEXT_CUDA_OVERLAY}/lib")
  list(APPEND CMAKE_INCLUDE_PATH "${MAMEXT_CUDA_OVERLAY}/include")
  include_directories(AFTER SYSTEM "${MAMEXT_CUDA_OVERLAY}/include")
  link_directories(AFTER "${MAMEXT_CUDA_OVERLAY}/lib")
endif()
foreach(_h cublas_v2.h cusparse.h)
  if(NOT EXISTS "${MAMEXT_CUDA_ROOT}/include/${_h}" AND NOT EXISTS "${MAMEXT_CUDA_OVERLAY}/include/${_h}")
    _mamext_cuda_unavailable("${_h} (needed by torch's CUDA headers) is neither in ${MAMEXT_CUDA_ROOT}/include nor in NVIDIA's pip wheels (pip install nvidia-cublas nvidia-cusparse, or a full CUDA toolkit)")
  endif()
endforeach()

enable_language(CUDA)
# torch's CMake chooses the -gencode flags from TORCH_CUDA_ARCH_LIST and sets
# CMAKE_CUDA_ARCHITECTURES to OFF (with a harmless warning that it ignores the
# value CMake picked); set it here too so a re-configure never sees it empty.
set(CMAKE_CUDA_ARCHITECTURES OFF)
set(CMAKE_CUDA_STANDARD 20)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
# Exact float semantics: products must round once (no FMA contraction) so the
# CUDA kernels agree bit for bit with the CPU kernels; see csrc/ops/cuda/.
string(APPEND CMAKE_CUDA_FLAGS " --fmad=false -Xfatbin=-compress-all")
# ptxas reports register spills and local memory as warnings ("ptxas warning :
# ... spill" / "Local memory used"); .ci/cuda_build_check.sh fails on them.
string(APPEND CMAKE_CUDA_FLAGS " -Xptxas=-warn-spills,-warn-lmem-usage")
set(MAMEXT_BUILD_CUDA ON)
message(STATUS "mamext: CUDA kernels enabled: nvcc ${CMAKE_CUDA_COMPILER_VERSION} at ${CMAKE_CUDA_COMPILER}, "
               "TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}")
