// Run-time ISA selection for the CPU kernels, capped by MAMEXT_CPU_CAPABILITY.
// x86-64: default|avx2|avx512 from cpuid (through the compiler's
// __builtin_cpu_supports, which also checks that the OS saves the wide
// registers). aarch64: default|neon; Advanced SIMD is part of the base
// architecture, so neon is always available. Other architectures: default.
#include "cpu/kernels.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace mamext::cpu {

const char* capability_name(Capability c) {
  switch (c) {
    case Capability::AVX512: return "avx512";
    case Capability::AVX2: return "avx2";
    case Capability::NEON: return "neon";
    default: return "default";
  }
}

Capability parse_capability(const char* name) {
  std::string s(name);
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
#if defined(__x86_64__) || defined(_M_X64)
  if (s == "avx512") return Capability::AVX512;
  if (s == "avx2") return Capability::AVX2;
  if (s == "default") return Capability::Default;
  throw std::invalid_argument("mamext: unknown CPU capability '" + std::string(name) +
                              "' (expected default, avx2 or avx512)");
#elif defined(__aarch64__)
  if (s == "neon") return Capability::NEON;
  if (s == "default") return Capability::Default;
  throw std::invalid_argument("mamext: unknown CPU capability '" + std::string(name) +
                              "' (expected default or neon on aarch64)");
#else
  if (s == "default") return Capability::Default;
  throw std::invalid_argument("mamext: unknown CPU capability '" + std::string(name) +
                              "' (expected default: this architecture has only the portable kernels)");
#endif
}

Capability detected_capability() {
#if defined(__x86_64__) || defined(_M_X64)
  static const Capability detected = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
      return Capability::AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("bmi2"))
      return Capability::AVX2;
    return Capability::Default;
  }();
  return detected;
#elif defined(__aarch64__)
  return Capability::NEON;
#else
  return Capability::Default;
#endif
}

namespace {

Capability initial_capability() {
  Capability c = detected_capability();
  if (const char* env = std::getenv("MAMEXT_CPU_CAPABILITY"); env && *env) {
    Capability wanted = parse_capability(env);  // a typo is an error, not a silent fallback
    if (static_cast<int>(wanted) < static_cast<int>(c)) c = wanted;
  }
  return c;
}

std::atomic<int>& active() {
  static std::atomic<int> level{static_cast<int>(initial_capability())};
  return level;
}

}  // namespace

Capability active_capability() { return static_cast<Capability>(active().load(std::memory_order_relaxed)); }

void set_capability(Capability c) {
  if (static_cast<int>(c) > static_cast<int>(detected_capability()))
    throw std::invalid_argument(std::string("mamext: this CPU does not support ") + capability_name(c) +
                                " (best available: " + capability_name(detected_capability()) + ")");
  active().store(static_cast<int>(c), std::memory_order_relaxed);
}

const KernelTable& kernels() {
  switch (active_capability()) {
#if defined(__x86_64__) || defined(_M_X64)
    case Capability::AVX512: return avx512::kernel_table();
    case Capability::AVX2: return avx2::kernel_table();
#elif defined(__aarch64__)
    case Capability::NEON: return neon::kernel_table();
#endif
    default: return default_isa::kernel_table();
  }
}

}  // namespace mamext::cpu
