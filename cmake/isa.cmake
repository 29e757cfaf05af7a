# CPU kernel instruction sets per target architecture, included by CMakeLists.txt
# before the per-ISA kernel objects are created.
#
# Out: MAMEXT_ISA_LEVELS (the capability levels to compile every CPU kernel
#      source for, lowest first; each becomes namespace mamext::cpu::<level>,
#      `default` as default_isa, a C++ keyword) and MAMEXT_ISA_FLAGS_<level>
#      (extra compiler flags for that level's objects). The list is the one
#      definition of the levels: C++ gets it as MAMEXT_ISA_LEVELS, Python as
#      _C.build_info["isa_levels"].
#
#   x86-64 (x86_64, AMD64): default avx2 avx512, chosen at run time by cpuid.
#   aarch64 (aarch64, arm64): default neon. Advanced SIMD is part of the
#       base architecture, so neon needs no flags and is always selected unless
#       MAMEXT_CPU_CAPABILITY=default.
#   anything else: default_isa only (the portable kernels).
#
# The names here must match csrc/common/cpu_dispatch.cpp, which selects the tables
# with the same architecture tests (__x86_64__, __aarch64__).

string(TOLOWER "${CMAKE_SYSTEM_PROCESSOR}" _mamext_cpu)
set(MAMEXT_ISA_FLAGS_default "")
if(_mamext_cpu MATCHES "^(x86_64|amd64|x64)$")
  set(MAMEXT_ISA_LEVELS default avx2 avx512)
  set(MAMEXT_ISA_FLAGS_avx2 -mavx2 -mfma -mf16c -mbmi -mbmi2 -mlzcnt -mpopcnt)
  set(MAMEXT_ISA_FLAGS_avx512 -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c -mbmi -mbmi2 -mlzcnt -mpopcnt)
elseif(_mamext_cpu MATCHES "^(aarch64|arm64)$")
  set(MAMEXT_ISA_LEVELS default neon)
  set(MAMEXT_ISA_FLAGS_neon "")
  # FMA is always available on aarch64 and GCC contracts a * b + c by default;
  # the exact-rounding contract (one rounding per product and per sum, as in
  # the reference) needs it off for the operator glue too, not only the kernels.
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-ffp-contract=off>)
else()
  set(MAMEXT_ISA_LEVELS default)
endif()
message(STATUS "mamext: CPU kernels for ${CMAKE_SYSTEM_PROCESSOR}: ${MAMEXT_ISA_LEVELS}")

# mamext_add_isa_objects(<prefix> <csrc dir> <out objects> <out defines>): one
# OBJECT library <prefix>_<namespace> per level in MAMEXT_ISA_LEVELS, compiling
# every csrc/ops/cpu/simd/*_simd.cpp into namespace mamext::cpu::<namespace>
# (`default` is a C++ keyword: its namespace is default_isa) with that level's
# flags. Sets <out objects> to their object files and <out defines> to
# MAMEXT_CHECK_HAS_<NAMESPACE>=1 per level. The extension and the kernel check
# (tests/native) both build their kernels here, so they compile them alike.
function(mamext_add_isa_objects prefix csrc out_objects out_defines)
  file(GLOB sources CONFIGURE_DEPENDS "${csrc}/ops/cpu/simd/*_simd.cpp")
  set(objects "")
  set(defines "")
  foreach(level IN LISTS MAMEXT_ISA_LEVELS)
    if(level STREQUAL "default")
      set(isa default_isa)
    else()
      set(isa ${level})
    endif()
    string(TOUPPER ${isa} ISA_UPPER)
    add_library(${prefix}_${isa} OBJECT ${sources})
    target_compile_definitions(${prefix}_${isa} PRIVATE MAMEXT_ISA=${isa} MAMEXT_ISA_${ISA_UPPER}=1)
    target_compile_options(${prefix}_${isa} PRIVATE ${MAMEXT_ISA_FLAGS_${level}} -O3 -ffp-contract=off
                           -fno-math-errno -fno-trapping-math -Wall -Wextra -Wno-maybe-uninitialized)
    target_include_directories(${prefix}_${isa} PRIVATE "${csrc}")
    list(APPEND objects $<TARGET_OBJECTS:${prefix}_${isa}>)
    list(APPEND defines MAMEXT_CHECK_HAS_${ISA_UPPER}=1)
  endforeach()
  set(${out_objects} ${objects} PARENT_SCOPE)
  set(${out_defines} ${defines} PARENT_SCOPE)
endfunction()
