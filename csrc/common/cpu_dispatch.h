// Run-time choice of the CPU kernel level (ISA). The levels, lowest first, are
// defined once per architecture in cmake/isa.cmake (MAMEXT_ISA_LEVELS, passed
// to the compiler as a string such as "default,avx2,avx512"); each operator's
// per-ISA kernel table is picked by active_capability() in its
// ops/cpu/<op>_kernel.cpp.
// No torch headers: the per-ISA kernel sources include this file.
#pragma once

namespace mamext::cpu {

// Values index the MAMEXT_ISA_LEVELS list of the target architecture
// (cmake/isa.cmake); kLevels is its length.
#if defined(__x86_64__) || defined(_M_X64)
enum class Capability : int { Default = 0, AVX2 = 1, AVX512 = 2 };
constexpr int kLevels = 3;
#elif defined(__aarch64__)
enum class Capability : int { Default = 0, NEON = 1 };
constexpr int kLevels = 2;
#else
enum class Capability : int { Default = 0 };
constexpr int kLevels = 1;
#endif

// The best level the CPU supports.
Capability detected_capability();
// The level in use: detected_capability() capped by MAMEXT_CPU_CAPABILITY.
Capability active_capability();
// Force a level (tests, benchmarks); throws if the CPU cannot run it.
void set_capability(Capability c);
const char* capability_name(Capability c);
Capability parse_capability(const char* name);
// MAMEXT_ISA_LEVELS: the level names, lowest first, comma separated.
const char* isa_levels();

}  // namespace mamext::cpu
