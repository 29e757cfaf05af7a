// Kernel-level check of every per-ISA CPU kernel table linked into this
// program (tests/native/CMakeLists.txt builds the kernels for the ISA list of
// cmake/isa.cmake) against a scalar reference, bit for bit: values with the
// sign of a zero, NaN-ness, argmax/argmin indices, the backward sums, the int8
// codes and scales, the convolution's phase planes and im2col tiles. Runs
// natively or under qemu-aarch64.
//
// Usage: kernel_check [seed]; exit status 0 when every comparison passed.
#include "check_common.h"

namespace kcheck {

std::vector<Isa> linked_isas() {
  std::vector<Isa> v{{"default", &cpu::default_isa::kernel_table(), &cpu::default_isa::packed_kernel_table(),
                      &cpu::default_isa::conv_kernel_table(), true}};
#if defined(MAMEXT_CHECK_HAS_NEON)
  v.push_back({"neon", &cpu::neon::kernel_table(), &cpu::neon::packed_kernel_table(),
                 &cpu::neon::conv_kernel_table(), true});
#endif
#if defined(MAMEXT_CHECK_HAS_AVX2)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
    v.push_back({"avx2", &cpu::avx2::kernel_table(), &cpu::avx2::packed_kernel_table(),
                 &cpu::avx2::conv_kernel_table(), false});
  else
    std::printf("note: this CPU cannot run avx2, not checked\n");
#endif
#if defined(MAMEXT_CHECK_HAS_AVX512)
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    v.push_back({"avx512", &cpu::avx512::kernel_table(), &cpu::avx512::packed_kernel_table(),
                 &cpu::avx512::conv_kernel_table(), false});
  else
    std::printf("note: this CPU cannot run avx512, not checked\n");
#endif
  return v;
}

// The capability a table of level `name` must report (the enum has only the
// target architecture's levels).
cpu::Capability expected_capability(const std::string& name) {
#if defined(MAMEXT_CHECK_HAS_NEON)
  if (name == "neon") return cpu::Capability::NEON;
#endif
#if defined(MAMEXT_CHECK_HAS_AVX2)
  if (name == "avx2") return cpu::Capability::AVX2;
#endif
#if defined(MAMEXT_CHECK_HAS_AVX512)
  if (name == "avx512") return cpu::Capability::AVX512;
#endif
  return cpu::Capability::Default;
}

}  // namespace kcheck

int main(int argc, char** argv) {
  using namespace kcheck;
  g_rng.seed(argc > 1 ? std::stoull(argv[1]) : 20240601ull);
  const auto isas = linked_isas();
  std::printf("ISAs checked:");
  for (const auto& isa : isas) {
    std::printf(" %s", isa.name);
    const std::string name = isa.name;
    const auto want = expected_capability(name);
    expect_true(name + " tables report their level",
                isa.dense->capability == want && isa.packed->capability == want && isa.conv->capability == want);
  }
  std::printf("\n");
  check_dense_all(isas);
  check_packed_all(isas);
  check_int8_all(isas);
  check_conv_all(isas);
  std::printf("%lld checks, %lld failed\n", static_cast<long long>(g_checks), static_cast<long long>(g_failures));
  return g_failures == 0 ? 0 : 1;
}
