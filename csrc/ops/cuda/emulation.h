// A small CPU emulation of the CUDA execution model, used only by the tests
// (tests/_cuda_emulation.py compiles csrc/ops/cuda/*.cu with g++
// -DMAMEXT_CUDA_EMULATION and runs the very same kernel code on the CPU). It
// lets the kernels' index arithmetic, tile edges, shared-memory pipeline, warp
// shuffles, NaN path and backward ordering be checked on machines without a
// GPU. It is not a performance model and not part of the extension.
//
// Model: the blocks of a grid run one after another. The threads of a block
// are fibers (one stack each) on the launching OS thread, switched by a
// deterministic scheduler at every synchronisation point: __syncthreads,
// __syncthreads_or and the warp shuffles. A barrier releases its threads only
// when every thread of the block (of the warp, for a shuffle) has reached it;
// a block whose live threads all wait at a barrier that can no longer complete
// (a thread exited, or waits at another barrier) is a launch failure reported
// by cudaGetLastError, not a hang.
//
// Missing barriers are exposed, not hidden: the scheduler runs in rounds; in
// one round every runnable thread runs alone, from its last synchronisation
// point to its next one, before the next thread starts. So without the
// barrier that should separate a shared-memory write from the reads of other
// threads, each reader that runs before the writer sees the stale value (the
// previous tile, the previous block's data, or the 0xA5 fill of dynamic
// shared memory). Rounds alternate ascending and descending thread order, and
// so do the first rounds of consecutive blocks, so a reader with a lower and
// one with a higher index than its writer both run first at some point
// (MAMEXT_EMU_SEED=<n> instead shuffles every round with that seed).
//
// __shared__ variables become function-local statics (shared by the block's
// threads, reused by the next block). __align__(n) really aligns and
// the vector types have CUDA's alignment; __ldg checks the alignment of its
// pointer, so a misaligned vector load is a launch failure. Device intrinsics
// map to their IEEE single-rounding host equivalents (compile with
// -ffp-contract=off). One launch runs at a time in a process.
#pragma once

#ifndef MAMEXT_CUDA_EMULATION
#error "emulation.h is for the CPU emulation build only"
#endif

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <vector>

#if !defined(__x86_64__) || defined(MAMEXT_EMU_UCONTEXT)
#include <ucontext.h>
#define MAMEXT_EMU_USE_UCONTEXT 1
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

using cudaError_t = int;
using cudaStream_t = void*;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidValue = 1;
constexpr cudaError_t cudaErrorLaunchFailure = 719;
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

// Vector types with CUDA's alignment.
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};

namespace mamext::emu {

struct Dim {
  unsigned x = 0;
};
// The running thread's coordinates (set by the scheduler at every switch).
inline Dim thread_idx, block_idx, block_dim, grid_dim;

// The launch status cudaGetLastError returns (and resets).
inline cudaError_t last_error = cudaSuccess;

// Reports a kernel error: the message goes to stderr, the launch fails.
[[gnu::format(printf, 1, 2)]] inline void fail(const char* fmt, ...) {
  if (last_error == cudaSuccess) {  // the first error of a launch is the informative one
    std::va_list args;
    va_start(args, fmt);
    std::fputs("CUDA emulation: ", stderr);
    std::vfprintf(stderr, fmt, args);
    std::fputc('\n', stderr);
    va_end(args);
  }
  last_error = cudaErrorLaunchFailure;
}

// ------------------------------------------------------ fiber contexts ---

#ifdef MAMEXT_EMU_USE_UCONTEXT
struct Context {
  ucontext_t uc;
};
inline void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
inline void prepare_context(Context& c, unsigned char* stack, size_t size, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
#else
// x86-64: save the callee-saved registers on the current stack, swap stack
// pointers, restore (no system call, unlike swapcontext's signal mask).
extern "C" void mamext_emu_switch(void** save_sp, void* load_sp);
asm(R"(
  .pushsection .text
  .weak mamext_emu_switch
  .hidden mamext_emu_switch
  .type mamext_emu_switch, @function
mamext_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size mamext_emu_switch, .-mamext_emu_switch
  .popsection
)");
struct Context {
  void* sp = nullptr;
};
inline void switch_context(Context& from, Context& to) { mamext_emu_switch(&from.sp, to.sp); }
// A stack that mamext_emu_switch "returns" into entry() with the ABI's alignment.
inline void prepare_context(Context& c, unsigned char* stack, size_t size, void (*entry)()) {
  void** sp = reinterpret_cast<void**>(reinterpret_cast<uintptr_t>(stack + size) & ~uintptr_t(15));
  *--sp = nullptr;  // entry's return address: entry never returns
  *--sp = reinterpret_cast<void*>(entry);
  for (int r = 0; r < 6; ++r) *--sp = nullptr;  // rbp, rbx, r12 .. r15
  c.sp = sp;
}
#endif

// Fiber stacks, kept for the whole process; a guard page below each one turns
// an overflow into a crash instead of silent corruption.
class StackPool {
 public:
  static constexpr size_t kSize = 256 * 1024;
  unsigned char* get(size_t i) {
    const size_t guard = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    while (stacks_.size() <= i) {
      void* p = mmap(nullptr, kSize + guard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
      if (p == MAP_FAILED) {
        std::perror("CUDA emulation: mmap of a fiber stack");
        std::abort();
      }
      mprotect(p, guard, PROT_NONE);
      stacks_.push_back(static_cast<unsigned char*>(p) + guard);
    }
    return stacks_[i];
  }

 private:
  std::vector<unsigned char*> stacks_;
};

// ----------------------------------------------------------- scheduler ---

// A barrier of `size` threads; gen counts completions. or_result holds the
// OR of the predicates of the last completion (__syncthreads_or).
struct Barrier {
  unsigned size = 0, arrived = 0, gen = 0;
  unsigned long release_round = 0;
  int or_acc = 0, or_result = 0;
};

struct Fiber {
  Context ctx;
  unsigned tid = 0;
  Barrier* waiting = nullptr;  // the barrier it waits at, if any
  unsigned wait_gen = 0;       // that barrier's generation when it arrived
  bool done = false;
};

class Scheduler {
 public:
  // Runs body() as every thread of block b; false after a deadlock.
  bool run_block(unsigned b, unsigned threads, const std::function<void()>& body);
  // Called by the running fiber: waits until all of bar's threads arrived.
  int arrive(Barrier& bar, int pred);

  Barrier& block_barrier() { return block_bar_; }
  Barrier& warp_barrier(unsigned warp) { return warp_bars_[warp]; }
  unsigned char* exchange(unsigned warp, unsigned parity, unsigned lane) {
    return reinterpret_cast<unsigned char*>(&exchange_[(warp * 2 + parity) * 32 + lane]);
  }
  [[noreturn]] static void fiber_main();

 private:
  void reset(unsigned threads);
  bool runnable(const Fiber& f) const {
    return !f.done && (!f.waiting || (f.waiting->gen != f.wait_gen && f.waiting->release_round <= round_));
  }
  void order_round(unsigned threads);
  void report_deadlock(unsigned b);

  StackPool stacks_;
  std::vector<Fiber> fibers_;
  std::vector<unsigned> order_;
  Barrier block_bar_;
  std::vector<Barrier> warp_bars_;
  std::vector<uint64_t> exchange_;  // per warp, two buffers of 32 lanes x 8 bytes
  Context home_;
  Fiber* current_ = nullptr;
  const std::function<void()>* body_ = nullptr;
  unsigned long round_ = 0;
  uint64_t rng_ = 0;  // MAMEXT_EMU_SEED: shuffled rounds
};

inline Scheduler scheduler;

inline void Scheduler::fiber_main() {
  (*scheduler.body_)();
  scheduler.current_->done = true;
  switch_context(scheduler.current_->ctx, scheduler.home_);
  std::abort();  // a finished fiber is never resumed
}

inline void Scheduler::reset(unsigned threads) {
  const unsigned warps = (threads + 31) / 32;
  fibers_.assign(threads, Fiber{});
  order_.resize(threads);
  block_bar_ = Barrier{};
  block_bar_.size = threads;
  warp_bars_.assign(warps, Barrier{});
  for (unsigned w = 0; w < warps; ++w) warp_bars_[w].size = threads - 32 * w < 32 ? threads - 32 * w : 32;
  exchange_.resize(size_t(warps) * 64);
  for (unsigned t = 0; t < threads; ++t) {
    fibers_[t].tid = t;
    prepare_context(fibers_[t].ctx, stacks_.get(t), StackPool::kSize, &Scheduler::fiber_main);
  }
}

// This round's thread order: ascending and descending in turn (blocks start
// in turn too, so code without any barrier also runs both ways); or a seeded
// shuffle.
inline void Scheduler::order_round(unsigned threads) {
  const bool ascending = (round_ + block_idx.x) % 2 == 0;
  for (unsigned i = 0; i < threads; ++i) order_[i] = ascending ? i : threads - 1 - i;
  if (rng_ == 0) return;
  for (unsigned i = threads; i > 1; --i) {
    rng_ ^= rng_ << 13;
    rng_ ^= rng_ >> 7;
    rng_ ^= rng_ << 17;
    const unsigned j = static_cast<unsigned>(rng_ % i);
    const unsigned t = order_[i - 1];
    order_[i - 1] = order_[j];
    order_[j] = t;
  }
}

inline bool Scheduler::run_block(unsigned b, unsigned threads, const std::function<void()>& body) {
  reset(threads);
  body_ = &body;
  if (const char* seed = std::getenv("MAMEXT_EMU_SEED"))
    rng_ = std::strtoull(seed, nullptr, 10) * 0x9E3779B97F4A7C15ull + b + 1;
  else
    rng_ = 0;
  unsigned live = threads;
  for (round_ = 0; live > 0; ++round_) {
    bool ran = false;
    order_round(threads);
    for (unsigned t : order_) {
      Fiber& f = fibers_[t];
      if (!runnable(f)) continue;
      f.waiting = nullptr;
      current_ = &f;
      thread_idx.x = f.tid;
      switch_context(home_, f.ctx);
      ran = true;
      live -= f.done ? 1 : 0;
    }
    if (!ran) {
      report_deadlock(b);
      return false;
    }
  }
  return true;
}

inline int Scheduler::arrive(Barrier& bar, int pred) {
  Fiber& f = *current_;
  bar.or_acc |= pred;
  f.waiting = &bar;
  f.wait_gen = bar.gen;
  if (++bar.arrived == bar.size) {  // the last one: release everyone from the next round on
    bar.arrived = 0;
    bar.or_result = bar.or_acc;
    bar.or_acc = 0;
    bar.release_round = round_ + 1;
    ++bar.gen;
  }
  switch_context(f.ctx, home_);
  return bar.or_result;  // not overwritten before this thread arrives again
}

inline void Scheduler::report_deadlock(unsigned b) {
  unsigned at_block = 0, at_warp = 0, exited = 0;
  for (const Fiber& f : fibers_) {
    if (f.done)
      ++exited;
    else if (f.waiting == &block_bar_)
      ++at_block;
    else
      ++at_warp;
  }
  fail("deadlock in block %u of %u threads: %u wait at __syncthreads, %u at a warp shuffle, %u exited "
       "(a barrier not reached by every thread of its block or warp)",
       b, unsigned(fibers_.size()), at_block, at_warp, exited);
}

// Dynamic shared memory of the running launch (MAMEXT_LAUNCH_SMEM), like the
// static __shared__ variables shared by a block's threads and reused by the
// next block.
inline unsigned char* dyn_smem = nullptr;

inline std::mutex& launch_mutex() {
  static std::mutex mu;
  return mu;
}

// Runs body() as every thread of every block, blocks in order; stops at the
// first block that deadlocks.
inline void launch(unsigned grid, unsigned threads, const std::function<void()>& body) {
  std::lock_guard<std::mutex> lock(launch_mutex());
  if (threads == 0 || threads > 1024) {
    fail("invalid block size %u", threads);
    return;
  }
  grid_dim.x = grid;
  block_dim.x = threads;
  for (unsigned b = 0; b < grid; ++b) {
    block_idx.x = b;
    if (!scheduler.run_block(b, threads, body)) return;
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

// Warp shuffle: every lane publishes v, waits for the whole warp, reads the
// source lane's value. Two buffers alternate, so a lane that runs ahead to the
// next shuffle cannot overwrite a value another lane has yet to read.
template <typename T>
T shfl(T v, int src_lane) {
  static_assert(sizeof(T) <= 8);
  const unsigned warp = thread_idx.x / 32, lane = thread_idx.x % 32;
  Barrier& bar = scheduler.warp_barrier(warp);
  const unsigned parity = bar.gen & 1;
  std::memcpy(scheduler.exchange(warp, parity, lane), &v, sizeof(T));
  scheduler.arrive(bar, 0);
  T r;
  std::memcpy(&r, scheduler.exchange(warp, parity, static_cast<unsigned>(src_lane) & 31), sizeof(T));
  return r;
}

inline void check_aligned(const void* p, size_t align, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % align != 0)
    fail("misaligned %s of %zu bytes at %p (thread %u of block %u)", what, align, p, thread_idx.x, block_idx.x);
}

}  // namespace mamext::emu

#define threadIdx (::mamext::emu::thread_idx)
#define blockIdx (::mamext::emu::block_idx)
#define blockDim (::mamext::emu::block_dim)
#define gridDim (::mamext::emu::grid_dim)

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = ::mamext::emu::last_error;
  ::mamext::emu::last_error = cudaSuccess;
  return e;
}

inline void __syncthreads() { ::mamext::emu::scheduler.arrive(::mamext::emu::scheduler.block_barrier(), 0); }
inline int __syncthreads_or(int pred) {
  return ::mamext::emu::scheduler.arrive(::mamext::emu::scheduler.block_barrier(), pred != 0);
}
template <typename T>
T __shfl_sync(unsigned, T v, int src) {
  return ::mamext::emu::shfl(v, src);
}
template <typename T>
T __shfl_xor_sync(unsigned, T v, int mask) {
  return ::mamext::emu::shfl(v, static_cast<int>(threadIdx.x % 32) ^ mask);
}

// Read-only load; the pointer must be aligned for T (a float4 load on 16 bytes).
template <typename T>
T __ldg(const T* p) {
  ::mamext::emu::check_aligned(p, alignof(T), "__ldg");
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline int __ffs(int v) { return __builtin_ffs(v); }
// IEEE maxNum / minNum: a NaN operand loses to a number. Inline (the libm
// calls would dominate the emulated tiled kernels' run time).
namespace mamext::emu {
inline float max_num(float a, float b) { return (b > a || a != a) ? b : a; }
inline float min_num(float a, float b) { return (b < a || a != a) ? b : a; }
}  // namespace mamext::emu
#define fmaxf ::mamext::emu::max_num
#define fminf ::mamext::emu::min_num
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
struct alignas(4) __half2 {
  __half x, y;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
struct alignas(4) __nv_bfloat162 {
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
