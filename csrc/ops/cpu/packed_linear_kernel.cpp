// CPU glue for the packed (sparse) MAM / Linear operator: argument checks,
// structure validation, dtype handling and the split of work across threads.
// The arithmetic is in ops/cpu/simd/packed_linear_simd.cpp (one build per ISA), chosen
// through packed_kernels() by the active CPU capability.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "ops/cpu/simd/mam_linear_simd.h"
#include "ops/cpu/simd/packed_linear_simd.h"
#include "ops/packed_linear.h"

namespace mamext {
namespace cpu {

const PackedKernelTable& packed_kernels() {
  switch (active_capability()) {
#if defined(__x86_64__) || defined(_M_X64)
    case Capability::AVX512: return avx512::packed_kernel_table();
    case Capability::AVX2: return avx2::packed_kernel_table();
#elif defined(__aarch64__)
    case Capability::NEON: return neon::packed_kernel_table();
#endif
    default: return default_isa::packed_kernel_table();
  }
}

}  // namespace cpu

namespace {

constexpr const char* kOp = kPackedOp;

cpu::PackedIndex index_kind(at::ScalarType t) {
  switch (t) {
    case at::kByte: return cpu::PackedIndex::UInt8;
    case at::kShort: return cpu::PackedIndex::Int16;
    case at::kInt: return cpu::PackedIndex::Int32;
    default: TORCH_CHECK(false, kOp, ": indices must be uint8, int16 or int32, got ", t);
  }
  return cpu::PackedIndex::Int32;
}

// Offsets start at 0, never decrease, end at nnz, rows hold at most K entries;
// indices lie in [0, K) and strictly increase within each row. Runs on every
// call (a packed layer's buffers can be edited like any tensor), so the common
// case is a branch-free, vectorisable, parallel pass; the exact message comes
// from a second, sequential pass only when something is wrong.
template <typename I>
void validate_structure_slow(const I* idx, const int64_t* off, int64_t N, int64_t K) {
  for (int64_t n = 0; n < N; ++n) {  // every span first: the index loop below relies on them
    const int64_t j0 = off[n], j1 = off[n + 1];
    TORCH_CHECK(j0 <= j1 && j1 - j0 <= K, kOp, ": offsets must be non-decreasing with at most in_features (", K,
                ") entries per row; row ", n, " spans [", j0, ", ", j1, ")");
  }
  for (int64_t n = 0; n < N; ++n) {
    int64_t prev = -1;
    for (int64_t j = off[n]; j < off[n + 1]; ++j) {
      const int64_t k = static_cast<int64_t>(idx[j]);
      TORCH_CHECK(k > prev && k < K, kOp, ": indices of row ", n,
                  " must be strictly increasing and in [0, in_features=", K, "); found ", k, " after ", prev);
      prev = k;
    }
  }
}

// Validates the private copies off (N + 1) and, filled here from the caller's
// idx, cp (nnz): the copy of each thread's rows is taken once and then checked,
// so what was validated is exactly what the kernels read, whatever another
// thread writes into the layer's buffers meanwhile. Returns the longest row's
// length.
template <typename I>
int64_t validate_structure(const I* idx, I* cp, const int64_t* off, int64_t N, int64_t nnz, int64_t K) {
  TORCH_CHECK(off[0] == 0, kOp, ": offsets[0] must be 0, got ", off[0]);
  TORCH_CHECK(off[N] == nnz, kOp, ": offsets[-1] (", off[N], ") must equal the number of values (", nnz, ")");
  bool bad_rows = false;  // offsets first: the index pass below relies on them
  int64_t longest = 0;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t len = off[n + 1] - off[n];
    bad_rows |= (len < 0) | (len > K);
    longest = std::max(longest, len);
  }
  if (bad_rows) validate_structure_slow(cp, off, N, K);  // raises on the offsets alone
  std::atomic<bool> bad{false};
  const int64_t grain = std::max<int64_t>(64, N * 32768 / std::max<int64_t>(nnz, 1) + 1);
  at::parallel_for(0, N, nnz >= 32768 ? grain : N, [&](int64_t b, int64_t e) {
    if (off[e] > off[b]) std::memcpy(cp + off[b], idx + off[b], static_cast<size_t>(off[e] - off[b]) * sizeof(I));
    int flag = 0;
    for (int64_t n = b; n < e; ++n) {
      const int64_t j0 = off[n], j1 = off[n + 1];
      if (j0 == j1) continue;
      flag |= static_cast<int64_t>(cp[j0]) < 0;
      flag |= static_cast<int64_t>(cp[j1 - 1]) >= K;
      for (int64_t j = j0 + 1; j < j1; ++j) flag |= cp[j] <= cp[j - 1];
    }
    if (flag) bad.store(true, std::memory_order_relaxed);
  });
  if (bad.load()) validate_structure_slow(cp, off, N, K);  // raises
  return longest;
}

// The structure the kernels read: validated private copies of indices and
// offsets (O(nnz), like the validation itself).
struct Structure {
  at::Tensor indices, offsets;
};

Structure validated_structure(const at::Tensor& indices, const at::Tensor& offsets, int64_t N, int64_t K,
                              bool int8_sum) {
  const int64_t nnz = indices.numel();
  Structure st{at::empty_like(indices), offsets.clone()};
  const int64_t* off = st.offsets.data_ptr<int64_t>();
  int64_t longest;
  switch (index_kind(indices.scalar_type())) {
    case cpu::PackedIndex::UInt8:
      longest = validate_structure(indices.data_ptr<uint8_t>(), st.indices.data_ptr<uint8_t>(), off, N, nnz, K);
      break;
    case cpu::PackedIndex::Int16:
      longest = validate_structure(indices.data_ptr<int16_t>(), st.indices.data_ptr<int16_t>(), off, N, nnz, K);
      break;
    default:
      longest = validate_structure(indices.data_ptr<int32_t>(), st.indices.data_ptr<int32_t>(), off, N, nnz, K);
      break;
  }
  // |values * codes| <= 127 * 127: longer int32 sums could overflow.
  TORCH_CHECK(!int8_sum || longest <= kInt8SumMaxTerms, kOp, ": an int8 sum (mam=False) of more than ",
              kInt8SumMaxTerms, " kept connections per neuron can overflow int32; the longest row has ", longest);
  return st;
}

// Tiny batches (M < 4): neurons split across threads, f(n0, n1).
template <typename F>
void for_neuron_ranges(int64_t M, int64_t N, int64_t nnz, const F& f) {
  const int64_t work_per_row = nnz / std::max<int64_t>(N, 1) + 4;
  at::parallel_for(0, N, std::max<int64_t>(16, 32768 / std::max<int64_t>(1, M * work_per_row)), f);
}

template <typename T>
const cpu::PackedFloatKernels<T>& float_kernels();
template <>
const cpu::PackedFloatKernels<float>& float_kernels<float>() { return cpu::packed_kernels().f32; }
template <>
const cpu::PackedFloatKernels<double>& float_kernels<double>() { return cpu::packed_kernels().f64; }

// Whether a per-thread sample panel (K x pw elements) stays within
// kPackedPanelMaxBytes; beyond, the panel-free row path bounds the scratch.
bool panel_fits(int64_t K, int64_t pw, size_t esize) {
  return K <= cpu::kPackedPanelMaxBytes / (pw * static_cast<int64_t>(esize));
}

// The batch-panel schedule shared by the float and int8 paths. Per thread,
// one panel (K x pw: the transposed samples of one block, L2-resident for
// moderate K) is filled once and reused by all the neuron chunks the thread
// computes for that block. Units are (sample block, neuron chunk), sample-block
// major; neuron chunks only when there are too few sample blocks to feed the
// threads (each chunk then refills its panel).
//   fill(E* panel, b0, nb) -> bool   (false: non-finite samples)
//   work(const E* panel, bool filled_ok, b0, nb, n0, n1)
template <typename E, typename Fill, typename Work>
void for_each_panel_unit(int64_t M, int64_t N, int64_t K, int64_t pw, int64_t tn, const at::TensorOptions& opts,
                         const Fill& fill, const Work& work) {
  if (M == 0 || N == 0) return;  // nothing to compute (and no neuron chunk to divide by)
  const int64_t bblocks = (M + pw - 1) / pw;
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  int64_t nchunks = 1;
  while (bblocks * nchunks < 2 * threads && N >= nchunks * 2 * 4 * tn) nchunks *= 2;
  const int64_t nper = ((N + nchunks - 1) / nchunks + tn - 1) / tn * tn;
  nchunks = (N + nper - 1) / nper;
  auto panels = at::empty({threads, K * pw}, opts);
  at::parallel_for(0, bblocks * nchunks, 1, [&](int64_t u0, int64_t u1) {
    const int64_t tid = at::get_thread_num();
    at::Tensor own;  // only if the thread id is unexpected (never with OpenMP or the native pool)
    E* p;
    if (tid >= 0 && tid < threads) {
      p = panels.data_ptr<E>() + tid * K * pw;
    } else {
      own = at::empty({K * pw}, opts);
      p = own.data_ptr<E>();
    }
    int64_t filled = -1;
    bool ok = true;
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t bi = u / nchunks, ci = u % nchunks;
      const int64_t b0 = bi * pw, nb = std::min(pw, M - b0);
      const int64_t n0 = ci * nper, n1 = std::min(N, n0 + nper);
      if (bi != filled) {
        ok = fill(p, b0, nb);
        filled = bi;
      }
      work(static_cast<const E*>(p), ok, b0, nb, n0, n1);
    }
  });
}

template <typename T>
void run_float(const at::Tensor& x, const at::Tensor& values, const void* idx, int ik, const int64_t* off,
               const at::Tensor& bias, bool mam, at::Tensor& out, int64_t M, int64_t N, int64_t K) {
  const auto& kt = float_kernels<T>();
  const T* xp = x.data_ptr<T>();
  const T* vp = values.data_ptr<T>();
  const T* bp = bias.defined() ? bias.data_ptr<T>() : nullptr;
  T* op = out.data_ptr<T>();
  const int64_t nnz = values.numel();
  const int mi = mam ? 1 : 0;

  const int64_t work_per_row = nnz / std::max<int64_t>(N, 1) + 4;
  auto run_checked = [&] {
    const auto fn = kt.rows_checked[mi][ik];
    at::parallel_for(0, M, std::max<int64_t>(1, 16384 / (N * work_per_row + K)), [&](int64_t b, int64_t e) {
      fn(xp, K, vp, idx, off, bp, op, N, 0, N, b, e);
    });
  };
  // NaN/inf in the weights: the exact scalar path for everything. Inputs are
  // checked per sample block while filling the panels (a separate pass for tiny M).
  if (!kt.all_finite(vp, nnz)) return run_checked();
  // Tiny batch, or a K whose sample panel would exceed kPackedPanelMaxBytes:
  // scalar over neurons straight from the row-major samples, no panels.
  if (M < 4 || !panel_fits(K, kt.tile_batch, sizeof(T))) {
    if (!kt.all_finite(xp, M * K)) return run_checked();
    const auto fn = kt.rows[mi][ik];
    for_neuron_ranges(M, N, nnz, [&](int64_t b, int64_t e) { fn(xp, K, vp, idx, off, bp, op, N, b, e, 0, M); });
    return;
  }
  const int64_t pw = kt.tile_batch;
  const auto tile = kt.tile[mi][ik];
  const auto checked = kt.rows_checked[mi][ik];
  for_each_panel_unit<T>(
      M, N, K, pw, kt.tile_neurons, x.options(),
      [&](T* p, int64_t b0, int64_t nb) { return kt.panel(xp + b0 * K, K, nb, pw, p); },
      [&](const T* p, bool ok, int64_t b0, int64_t nb, int64_t n0, int64_t n1) {
        if (ok)
          tile(p, pw, nb, vp, idx, off, bp, K, op + b0 * N, N, n0, n1);
        else  // NaN/inf in this block's inputs: the exact scalar path
          checked(xp, K, vp, idx, off, bp, op, N, n0, n1, b0, b0 + nb);
      });
}

// Column-major input xt (K, M) -> column-major output out_t (N, M): the same
// units as run_float, no transposes. NaN/inf anywhere: the row-major path on a
// contiguous copy (exact semantics), transposed into out_t.
template <typename T>
void run_float_cols(const at::Tensor& xt, const at::Tensor& values, const void* idx, int ik, const int64_t* off,
                    const at::Tensor& bias, bool mam, at::Tensor& out_t, int64_t M, int64_t N, int64_t K) {
  const auto& kt = float_kernels<T>();
  const T* xp = xt.data_ptr<T>();
  const T* vp = values.data_ptr<T>();
  const T* bp = bias.defined() ? bias.data_ptr<T>() : nullptr;
  T* op = out_t.data_ptr<T>();
  const int mi = mam ? 1 : 0;
  auto fallback = [&] {
    at::Tensor tmp = at::empty({M, N}, xt.options());
    run_float<T>(xt.t().contiguous(), values, idx, ik, off, bias, mam, tmp, M, N, K);
    out_t.copy_(tmp.t());
  };
  if (!kt.all_finite(vp, values.numel())) return fallback();
  // Inputs: one contiguous pass, split across threads.
  std::atomic<bool> finite{true};
  at::parallel_for(0, K, std::max<int64_t>(1, (1 << 14) / M), [&](int64_t b, int64_t e) {
    if (!kt.all_finite(xp + b * M, (e - b) * M)) finite.store(false, std::memory_order_relaxed);
  });
  if (!finite.load()) return fallback();
  // Neurons split across threads, each thread writing whole rows of out_t
  // (splitting the samples instead would interleave the threads' stores
  // within every row, so they would contend for the same cache lines).
  const int64_t pw = kt.tile_batch;
  const auto tile = kt.tile_cols[mi][ik];
  at::parallel_for(0, N, kt.tile_neurons, [&](int64_t n0, int64_t n1) {
    for (int64_t b0 = 0; b0 < M; b0 += pw) tile(xp, M, b0, std::min(pw, M - b0), vp, idx, off, bp, K, op, n0, n1);
  });
}

void run_int8(const at::Tensor& x, const at::Tensor& values, const void* idx, int ik, const int64_t* off,
              const at::Tensor& bias, const at::Tensor& wscale, bool mam, at::Tensor& out, int64_t M, int64_t N,
              int64_t K) {
  const auto& kt = cpu::packed_kernels().i8;
  const float* xp = x.data_ptr<float>();
  auto xq_rows = at::empty({M, K}, x.options().dtype(at::kInt));
  auto sx_t = at::empty({M}, x.options());
  int32_t* xr = xq_rows.data_ptr<int32_t>();
  float* sx = sx_t.data_ptr<float>();
  at::parallel_for(0, M, std::max<int64_t>(1, 16384 / K), [&](int64_t b, int64_t e) { kt.quantize(xp, K, xr, sx, b, e); });
  const auto tile = kt.tile[mam ? 1 : 0][ik];
  const int8_t* vp = values.data_ptr<int8_t>();
  const float* ws = wscale.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  if (M < 4 || !panel_fits(K, kt.tile_batch, sizeof(int32_t))) {  // no panels: straight from the row-major codes
    const auto rows = kt.rows[mam ? 1 : 0][ik];
    for_neuron_ranges(M, N, values.numel(),
                      [&](int64_t b, int64_t e) { rows(xr, K, vp, idx, off, ws, bp, sx, op, N, b, e, 0, M); });
    return;
  }
  const int64_t pw = kt.tile_batch;
  for_each_panel_unit<int32_t>(
      M, N, K, pw, kt.tile_neurons, x.options().dtype(at::kInt),
      [&](int32_t* p, int64_t b0, int64_t nb) { return kt.panel(xr + b0 * K, K, nb, pw, p); },
      [&](const int32_t* p, bool, int64_t b0, int64_t nb, int64_t n0, int64_t n1) {
        tile(p, pw, nb, vp, idx, off, ws, bp, sx + b0, K, op + b0 * N, N, n0, n1);
      });
}

at::Tensor packed_linear_cpu(const at::Tensor& input, const at::Tensor& values, const at::Tensor& indices,
                             const at::Tensor& offsets, const std::optional<at::Tensor>& bias_opt,
                             const std::optional<at::Tensor>& scale_opt, int64_t in_features, bool mam) {
  const PackedArgs a = check_packed_args(input, values, indices, offsets, bias_opt, scale_opt, in_features,
                                         [](const at::Tensor& t, const char* name) {
                                           TORCH_CHECK(t.device().is_cpu(), kOp, ": all tensors must be on the CPU, got ",
                                                       name, " on ", t.device());
                                         });
  const auto it = a.input_type;
  const auto ct = a.compute_type;
  const bool is_int8 = a.is_int8;
  const int64_t M = a.M, K = a.K, N = a.N;
  const int ik = static_cast<int>(index_kind(a.indices.scalar_type()));
  const Structure st = validated_structure(a.indices, a.offsets, N, K, is_int8 && !mam);
  const at::Tensor &vals = a.values, &idx = st.indices, &off = st.offsets, &bias = a.bias, &wscale = a.weight_scale;
  const bool cols = a.column_major;
  at::Tensor out;
  if (cols && !is_int8 && N > 0) {
    const at::Tensor xt = input.t().to(ct).contiguous();  // (K, M): no copy for float32/float64 input
    at::Tensor out_t = at::empty({N, M}, xt.options());
    const int64_t* op = off.data_ptr<int64_t>();
    const void* ip = idx.data_ptr();
    if (ct == at::kDouble)
      run_float_cols<double>(xt, vals, ip, ik, op, bias, mam, out_t, M, N, K);
    else
      run_float_cols<float>(xt, vals, ip, ik, op, bias, mam, out_t, M, N, K);
    return out_t.t().to(it);
  }
  const at::Tensor x = input.reshape({M, K}).to(ct).contiguous();
  out = at::empty({M, N}, x.options());
  if (M > 0 && N > 0) {
    const int64_t* op = off.data_ptr<int64_t>();
    const void* ip = idx.data_ptr();
    if (is_int8)
      run_int8(x, vals, ip, ik, op, bias, wscale, mam, out, M, N, K);
    else if (ct == at::kDouble)
      run_float<double>(x, vals, ip, ik, op, bias, mam, out, M, N, K);
    else
      run_float<float>(x, vals, ip, ik, op, bias, mam, out, M, N, K);
  }
  if (cols) return out.t().contiguous().t().to(it);  // int8 (or N == 0): same layout rule
  auto sizes = input.sizes().vec();
  sizes.back() = N;
  return out.to(it).view(sizes);
}

}  // namespace

TORCH_LIBRARY_IMPL(mamext, CPU, m) { m.impl("packed_linear", &packed_linear_cpu); }

}  // namespace mamext
