// Run-time ISA selection for the CPU kernels, capped by MAMEXT_CPU_CAPABILITY.
// x86-64: default|avx2|avx512 from cpuid (through the compiler's
// __builtin_cpu_supports, which also checks that the OS saves the wide
// registers). aarch64: default|neon; Advanced SIMD is part of the base
// architecture, so neon is always available. Other architectures: default.
#include "common/cpu_dispatch.h"

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef MAMEXT_ISA_LEVELS
#error "MAMEXT_ISA_LEVELS (the ISA level names, lowest first) is defined by CMakeLists.txt"
#endif

namespace mamext::cpu {
namespace {

const std::vector<std::string>& level_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    std::string all = MAMEXT_ISA_LEVELS;
    for (size_t start = 0;;) {
      const size_t comma = all.find(',', start);
      out.push_back(all.substr(start, comma - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    if (static_cast<int>(out.size()) != kLevels)
      throw std::logic_error("mamext: MAMEXT_ISA_LEVELS does not match cpu::Capability");
    return out;
  }();
  return names;
}

}  // namespace

const char* isa_levels() { return MAMEXT_ISA_LEVELS; }

const char* capability_name(Capability c) { return level_names().at(static_cast<size_t>(c)).c_str(); }

Capability parse_capability(const char* name) {
  std::string s(name);
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  const auto& names = level_names();
  for (int i = 0; i < kLevels; ++i)
    if (s == names[i]) return static_cast<Capability>(i);
  std::string expected;
  for (int i = 0; i < kLevels; ++i) expected += (i ? (i + 1 == kLevels ? " or " : ", ") : "") + names[i];
  throw std::invalid_argument("mamext: unknown CPU capability '" + std::string(name) + "' (expected " + expected +
                              ")");
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

}  // namespace mamext::cpu
