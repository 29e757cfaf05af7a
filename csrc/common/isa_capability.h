// The capability level of the ISA a per-ISA kernel source is being compiled
// for (one of MAMEXT_ISA_AVX512 / _AVX2 / _NEON / default, see vec.h), for
// the kernel tables those sources export. No torch headers: included by the
// per-ISA kernel sources; holds a constant only (no inline functions, see
// ops/cpu/simd/mam_linear_simd.h).
#pragma once

#include "common/cpu_dispatch.h"

namespace mamext::cpu::MAMEXT_ISA {

#if defined(MAMEXT_ISA_AVX512)
constexpr Capability kCapability = Capability::AVX512;
#elif defined(MAMEXT_ISA_AVX2)
constexpr Capability kCapability = Capability::AVX2;
#elif defined(MAMEXT_ISA_NEON)
constexpr Capability kCapability = Capability::NEON;
#else
constexpr Capability kCapability = Capability::Default;
#endif

}  // namespace mamext::cpu::MAMEXT_ISA
