// A small CPU emulation of the CUDA execution model, used only by the tests
// (tests/test_cuda.py compiles csrc/cuda/*.cu with g++ -DMAMEXT_CUDA_EMULATION
// and runs the very same kernel code on the CPU). It lets the kernels' index
// arithmetic, tile edges, shared-memory pipeline, warp shuffles, NaN path and
// backward ordering be checked on machines without a GPU. It is not a
// performance model and not part of the extension.
//
// Model: the blocks of a grid run one after another; the threads of a block
// are real std::threads (so __syncthreads and warp shuffles are real
// barriers); __shared__ variables become function-local statics (shared by the
// block's threads, reused by the next block). Device intrinsics map to their
// IEEE single-rounding host equivalents (compile with -ffp-contract=off).
#pragma once

#ifndef MAMEXT_CUDA_EMULATION
#error "emulation.h is for the CPU emulation build only"
#endif

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n)

using cudaError_t = int;
using cudaStream_t = void*;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidValue = 1;
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t = nullptr) {
  std::memset(p, v, n);
  return cudaSuccess;
}
// Device queries: a one-SM device (launch heuristics that scale with the SM
// count give few blocks) with an H100's shared memory per block.
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount, cudaDevAttrMaxSharedMemoryPerBlockOptin };
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrMultiProcessorCount ? 1 : 227 * 1024;
  return cudaSuccess;
}
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
template <typename F>
cudaError_t cudaFuncSetAttribute(F*, cudaFuncAttribute, int) {
  return cudaSuccess;
}

struct float2 {
  float x, y;
};
struct float4 {
  float x, y, z, w;
};
struct uint2 {
  unsigned x, y;
};

namespace mamext::emu {

struct Dim {
  unsigned x = 0;
};
inline thread_local Dim thread_idx, block_idx;
inline Dim block_dim, grid_dim;

// A reusable barrier for n threads (mutex + condition variable, generation count).
class Barrier {
 public:
  explicit Barrier(unsigned n) : n_(n) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mu_);
    const unsigned long gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return gen_ != gen; });
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  const unsigned n_;
  unsigned count_ = 0;
  unsigned long gen_ = 0;
};

struct Block {
  explicit Block(unsigned n) : all(n), warps() {
    for (unsigned w = 0; w < (n + 31) / 32; ++w) warps.emplace_back(std::make_unique<Warp>());
  }
  struct Warp {
    Barrier bar{32};
    alignas(8) unsigned char buf[32][8];
  };
  Barrier all;
  std::atomic<int> or_flag{0};
  std::vector<std::unique_ptr<Warp>> warps;
};
inline Block* block = nullptr;

// Dynamic shared memory of the running launch (MAMEXT_LAUNCH_SMEM), like the
// static __shared__ variables shared by a block's threads and reused by the
// next block.
inline unsigned char* dyn_smem = nullptr;

// Runs body() as every thread of every block, blocks in order.
inline void launch(unsigned grid, unsigned threads, const std::function<void()>& body) {
  grid_dim.x = grid;
  block_dim.x = threads;
  for (unsigned b = 0; b < grid; ++b) {
    Block blk(threads);
    block = &blk;
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, b, t] {
        block_idx.x = b;
        thread_idx.x = t;
        body();
      });
    for (auto& th : pool) th.join();
    block = nullptr;
  }
}

// launch() with `smem` bytes of dynamic shared memory, filled with a garbage
// pattern (0xA5 bytes) so a kernel that reads before writing shows it.
inline void launch_smem(unsigned grid, unsigned threads, size_t smem, const std::function<void()>& body) {
  std::vector<std::max_align_t> buf(smem / sizeof(std::max_align_t) + 1);
  std::memset(buf.data(), 0xA5, buf.size() * sizeof(std::max_align_t));
  dyn_smem = reinterpret_cast<unsigned char*>(buf.data());
  launch(grid, threads, body);
  dyn_smem = nullptr;
}

template <typename T>
T shfl(T v, int src_lane) {
  static_assert(sizeof(T) <= 8);
  auto& w = *block->warps[thread_idx.x / 32];
  const int lane = static_cast<int>(thread_idx.x % 32);
  w.bar.arrive_and_wait();  // the previous exchange has been read by all lanes
  std::memcpy(w.buf[lane], &v, sizeof(T));
  w.bar.arrive_and_wait();
  T r;
  std::memcpy(&r, w.buf[src_lane & 31], sizeof(T));
  return r;
}

}  // namespace mamext::emu

#define threadIdx (::mamext::emu::thread_idx)
#define blockIdx (::mamext::emu::block_idx)
#define blockDim (::mamext::emu::block_dim)
#define gridDim (::mamext::emu::grid_dim)

inline void __syncthreads() { ::mamext::emu::block->all.arrive_and_wait(); }
inline int __syncthreads_or(int pred) {
  auto* b = ::mamext::emu::block;
  b->all.arrive_and_wait();
  if (pred) b->or_flag.store(1);
  b->all.arrive_and_wait();
  const int r = b->or_flag.load();
  b->all.arrive_and_wait();
  if (threadIdx.x == 0) b->or_flag.store(0);  // before anyone's next call passes its first barrier
  return r;
}
template <typename T>
T __shfl_sync(unsigned, T v, int src) {
  return ::mamext::emu::shfl(v, src);
}
template <typename T>
T __shfl_xor_sync(unsigned, T v, int mask) {
  return ::mamext::emu::shfl(v, static_cast<int>(threadIdx.x % 32) ^ mask);
}

template <typename T>
T __ldg(const T* p) {
  return *p;
}
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline int __ffs(int v) { return __builtin_ffs(v); }
using std::fmaxf;
using std::fminf;
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
  std::atomic_ref<unsigned long long> a(*p);
  unsigned long long cur = a.load();
  while (v < cur && !a.compare_exchange_weak(cur, v)) {
  }
  return cur;
}
inline int atomicOr(int* p, int v) { return std::atomic_ref<int>(*p).fetch_or(v); }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline double atomicAdd(double* p, double v) { return std::atomic_ref<double>(*p).fetch_add(v); }

// float16 / bfloat16 storage types with round-to-nearest-even conversions.
struct __half {
  uint16_t bits;
};
struct __half2 {
  __half x, y;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
struct __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
inline float __half2float(__half h) {
  _Float16 f;
  std::memcpy(&f, &h.bits, 2);
  return static_cast<float>(f);
}
inline __half __float2half_rn(float v) {
  const _Float16 f = static_cast<_Float16>(v);
  __half h;
  std::memcpy(&h.bits, &f, 2);
  return h;
}
inline float2 __half22float2(__half2 h) { return {__half2float(h.x), __half2float(h.y)}; }
inline float __bfloat162float(__nv_bfloat16 h) {
  const uint32_t u = static_cast<uint32_t>(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  __nv_bfloat16 h;
  if (std::isnan(v)) {
    h.bits = 0x7fc0;
  } else {
    u += 0x7fffu + ((u >> 16) & 1u);
    h.bits = static_cast<uint16_t>(u >> 16);
  }
  return h;
}
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {__bfloat162float(h.x), __bfloat162float(h.y)}; }
