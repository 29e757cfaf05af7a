# CPU kernel instruction sets per target architecture, included by CMakeLists.txt
# before the per-ISA kernel objects are created.
#
# Out: MAMEXT_ISA_LIST (the ISAs to compile every CPU kernel source for, lowest
#      first; each becomes namespace mamext::cpu::<isa> and the definitions
#      MAMEXT_ISA=<isa>, MAMEXT_ISA_<ISA>=1) and MAMEXT_ISA_FLAGS_<isa> (extra
#      compiler flags for that ISA's objects).
#
#   x86-64 (x86_64, AMD64): default_isa avx2 avx512, chosen at run time by cpuid.
#   aarch64 (aarch64, arm64): default_isa neon. Advanced SIMD is part of the
#       base architecture, so neon needs no flags and is always selected unless
#       MAMEXT_CPU_CAPABILITY=default.
#   anything else: default_isa only (the portable kernels).
#
# The names here must match csrc/cpu/dispatch.cpp, which selects the tables
# with the same architecture tests (__x86_64__, __aarch64__).

string(TOLOWER "${CMAKE_SYSTEM_PROCESSOR}" _mamext_cpu)
set(MAMEXT_ISA_FLAGS_default_isa "")
if(_mamext_cpu MATCHES "^(x86_64|amd64|x64)$")
  set(MAMEXT_ISA_LIST default_isa avx2 avx512)
  set(MAMEXT_ISA_FLAGS_avx2 -mavx2 -mfma -mf16c -mbmi -mbmi2 -mlzcnt -mpopcnt)
  set(MAMEXT_ISA_FLAGS_avx512 -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c -mbmi -mbmi2 -mlzcnt -mpopcnt)
elseif(_mamext_cpu MATCHES "^(aarch64|arm64)$")
  set(MAMEXT_ISA_LIST default_isa neon)
  set(MAMEXT_ISA_FLAGS_neon "")
  # FMA is always available on aarch64 and GCC contracts a * b + c by default;
  # the exact-rounding contract (one rounding per product and per sum, as in
  # the reference) needs it off for the operator glue too, not only the kernels.
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-ffp-contract=off>)
else()
  set(MAMEXT_ISA_LIST default_isa)
endif()
message(STATUS "mamext: CPU kernels for ${CMAKE_SYSTEM_PROCESSOR}: ${MAMEXT_ISA_LIST}")
