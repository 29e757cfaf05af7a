// The rounding of the packed int8 path, shared by the CPU kernels
// (cpu/packed_mam_kernel.cpp) and the CUDA kernels (cuda/packed_mam_kernel.cu),
// and mirrored in C by the export (python/mamext/export.py): round half to
// even of a float already scaled to [-127, 127], clamped to +-127.
// Branch free (random data would mispredict): clamp, truncate, then step by
// one where the exact remainder passes 0.5, or equals 0.5 with t odd.
//
// No namespace and no include guard on purpose: each includer puts it inside
// its own namespace (the CPU kernels are compiled once per ISA and must not
// share a symbol). MAMEXT_ROUND_Q_QUALIFIERS: `inline` by default,
// `__device__ __forceinline__` for CUDA.
#ifndef MAMEXT_ROUND_Q_QUALIFIERS
#define MAMEXT_ROUND_Q_QUALIFIERS inline
#endif
MAMEXT_ROUND_Q_QUALIFIERS int32_t round_q(float v) {
  v = v > 127.0f ? 127.0f : v;
  v = v < -127.0f ? -127.0f : v;
  const int32_t t = static_cast<int32_t>(v);  // toward zero
  const float f = v - static_cast<float>(t);   // exact
  const int32_t odd = t & 1;
  const int32_t up = static_cast<int32_t>(f > 0.5f) | (static_cast<int32_t>(f == 0.5f) & odd);
  const int32_t down = static_cast<int32_t>(f < -0.5f) | (static_cast<int32_t>(f == -0.5f) & odd);
  return t + up - down;
}
#undef MAMEXT_ROUND_Q_QUALIFIERS
