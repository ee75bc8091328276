// Fused GLIF forward and backward for the CPU: the whole time loop per neuron tile.
//
// Built on first use by sj_glif/cpu.py (torch.utils.cpp_extension.load, -O3 -march=native
// -fno-trapping-math) and registered as torch.ops.sj_glif_cpu.{fwd,bwd}. Same inputs,
// outputs and math as sj_glif/torch_path.py (torch_fwd / torch_bwd) and the spec
// (shared/glif-spec.md):
//
//   u_t = (D - Gh D s_{t-1}) u_{t-1} - L + K_t x_t - R s_{t-1},   s_t = [u_t >= theta]
//
// Layout. One time step of x [T, *step] is viewed as [outer, C, inner] around channel_dim
// (layer-wise parameters, or C == 1: [1, 1, numel]). A tile is a contiguous run of at most
// `cap` elements of one step; each tile is walked through all T steps with its state in a
// small buffer, so x is read once and spikes written once (forward), and the backward
// re-reads x for its tile from cache.
//   - "scalar" tiles (inner >= 16, or C == 1): one channel per tile, the coefficients are
//     scalars; the tile runs along inner.
//   - "vector" tiles (channel-last and other small inner): the tile runs along the period
//     P = C * inner of one outer row; the coefficients are tables expanded to [P] (and
//     [T, P] for the conductance), read with the same index as the data.
// Inner loops run over the contiguous tile axis with `#pragma omp simd` and vectorise.
//
// Backward. A tile is walked in register blocks of one SIMD vector of neurons: each
// block recomputes its membranes (a forward sweep into a [T, lanes] scratch buffer, in L1)
// unless the caller stored u_seq, then runs reverse time with the carried gradients and
// the per-lane parameter sums in registers. The sums (compute dtype, over T steps; for
// channel-varying tiles over up to kFoldGroup tiles of the same positions) are then folded
// into float64 accumulators per work item (a fixed run of tiles), and the work items are
// summed in order at the end: the result depends on the shape only, not on the thread
// count, and is bitwise reproducible.
//
// Dtypes: float16/bfloat16/float32 inputs compute in float32, float64 in float64. Spikes
// and dx come out in the input dtype, the state and u_seq in the compute dtype.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace {

using at::Tensor;

template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};

constexpr int64_t kMaxTile = 256;         // elements per tile
constexpr int64_t kMinInner = 16;         // below this, channel-varying ("vector") tiles
// Channel-varying tiles add their per-position sums (kSums + T rows of tile length) to the
// float64 accumulators; folding every tile cost 10-18 % of the channel-last backward
// (measured on the Zen 4 VM). The sums of up to kFoldGroup consecutive tiles of the same
// positions are first added in the compute dtype (a work item keeps one buffer per
// segment, for rows of at most kFoldSegs segments), then folded once.
constexpr int64_t kFoldGroup = 8;
constexpr int64_t kFoldSegs = 4;
constexpr int kSums = 5;  // per-channel sums: theta, u_prev, u_prev s_prev, u, s_prev
constexpr int kTh = 0, kUp = 1, kUps = 2, kU = 3, kUs = 4;

// exp for float in plain arithmetic so that GCC vectorises it (Cephes expf, ~1 ulp), for
// x already clamped to [-87, 88] (or NaN, which propagates).
inline __attribute__((always_inline)) float vexp_clamped(float x) {
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  // 2^n by the exponent bits; a NaN n converts to INT_MIN, and the unsigned arithmetic
  // below is defined for it (y is NaN then, and so is the result)
  const uint32_t bits = (static_cast<uint32_t>(static_cast<int32_t>(n)) + 127u) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

// exp(x), |x| clamped to the finite range; a NaN stays NaN.
inline __attribute__((always_inline)) float vexp(float x) {
  x = std::min(x, 88.0f);  // (88 < x ? 88 : x): a NaN stays NaN
  return vexp_clamped(std::max(x, -87.0f));
}
inline __attribute__((always_inline)) double vexp(double x) { return std::exp(x); }

// exp(x) for x <= 0 (or NaN): one NaN-preserving lower clamp instead of vexp's two
// (below -87 the result is exp(-87), ~1.6e-38: no denormals).
inline __attribute__((always_inline)) float vexp_neg(float x) {
  return vexp_clamped(x < -87.0f ? -87.0f : x);
}
inline __attribute__((always_inline)) double vexp_neg(double x) { return std::exp(x); }

// sg(z): the surrogate derivative, same formulas as sj_glif/surrogates.py.
template <int SID, typename F>
inline __attribute__((always_inline)) F surrogate(F z, F a) {
  constexpr F kHalfPi = F(1.57079632679489661923);
  constexpr F kInvSqrtPi = F(0.56418958354775628695);
  F za = std::fabs(z);
  if constexpr (SID == 0) {  // sigmoid
    // sigmoid'(a z) a = a e / (1 + e)^2 with e = exp(-a |z|) (even in z; e <= 1)
    const F e = vexp_neg(-std::fabs(a * z));
    const F d = F(1) + e;
    return a * e / (d * d);
  } else if constexpr (SID == 1) {  // atan
    F w = kHalfPi * a * z;
    return (a * F(0.5)) / (F(1) + w * w);
  } else if constexpr (SID == 2) {  // piecewise quadratic
    return za > F(1) / a ? F(0) : a - a * a * za;
  } else if constexpr (SID == 3) {  // piecewise exp
    return (a * F(0.5)) * vexp(-a * za);
  } else if constexpr (SID == 4) {  // soft sign
    F d = F(1) / a + za;
    return F(1) / (F(2) * a * d * d);
  } else if constexpr (SID == 5) {  // super spike
    F d = za + F(1);
    return a / (d * d);
  } else if constexpr (SID == 6) {  // erf
    F w = a * z;
    return a * kInvSqrtPi * vexp_neg(-(w * w));
  } else {  // rect
    return za < F(0.5) / a ? a : F(0);
  }
}

// ------------------------------------------------------------------------------ layout

struct Layout {
  int64_t T = 0, N = 0;  // steps, elements per step
  int64_t outer = 1, C = 1, inner = 1;
  bool vec = false;  // channel-varying tiles
  int64_t P = 1;     // coefficient table length: C (scalar tiles) or C * inner (vector)
  int64_t cap = kMaxTile, nseg = 1, ntiles = 0;

  // tile i -> (offset in a step, length, offset into the coefficient tables)
  inline void tile(int64_t i, int64_t& base, int64_t& len, int64_t& cpos) const {
    int64_t seg = i % nseg, row = i / nseg;
    if (vec) {
      int64_t p0 = seg * cap;
      base = row * P + p0;
      len = std::min(cap, P - p0);
      cpos = p0;
    } else {
      int64_t c = row % C;
      base = row * inner + seg * cap;
      len = std::min(cap, inner - seg * cap);
      cpos = c;
    }
  }
};

Layout make_layout(const Tensor& x, int64_t channel_dim, bool layerwise, int64_t C, int64_t cap) {
  Layout l;
  l.T = x.size(0);
  l.N = x.numel() / std::max<int64_t>(l.T, 1);
  if (x.numel() == 0) l.N = 0;
  if (layerwise || C == 1) {
    l.outer = 1;
    l.C = 1;
    l.inner = l.N;
  } else {
    l.C = C;
    for (int64_t d = 0; d < channel_dim; ++d) l.outer *= x.size(1 + d);
    for (int64_t d = channel_dim + 1; d < x.dim() - 1; ++d) l.inner *= x.size(1 + d);
  }
  l.vec = l.C > 1 && l.inner < kMinInner;
  l.P = l.vec ? l.C * l.inner : l.C;
  l.cap = cap;
  if (l.N == 0) {
    l.ntiles = 0;
    return l;
  }
  int64_t run = l.vec ? l.P : l.inner;  // contiguous run a tile lies in
  l.nseg = (run + cap - 1) / cap;
  int64_t rows = l.vec ? l.outer : l.outer * l.C;
  l.ntiles = rows * l.nseg;
  return l;
}

// ------------------------------------------------------------------------------ coefficients

inline double sigm(double v) { return 1.0 / (1.0 + std::exp(-v)); }
inline double dsig(double s) { return s * (1.0 - s); }

// Raw parameters as float64 vectors: [C] (layer-wise: [1]) and conduct rows t0..t0+T-1 [T, C].
struct Raw {
  std::vector<double> alpha, beta, gamma, tau, vth, vl, vr, k;
  int64_t C = 1, T = 0;
};

std::vector<double> to_vec(const std::optional<Tensor>& p, int64_t C) {
  std::vector<double> out(C, 0.0);
  if (!p.has_value()) return out;
  Tensor t = p->detach().to(at::kDouble).contiguous().reshape({-1});
  TORCH_CHECK_VALUE(t.numel() == C, "sj_glif_cpu: a parameter has ", t.numel(), " values, expected ", C);
  std::memcpy(out.data(), t.data_ptr<double>(), sizeof(double) * C);
  return out;
}

Raw read_raw(const std::optional<Tensor>& alpha, const std::optional<Tensor>& beta,
             const std::optional<Tensor>& gamma, const Tensor& tau, const Tensor& vth,
             const Tensor& vl, const Tensor& vr, const Tensor& conduct, int64_t t0, int64_t T) {
  Raw r;
  r.C = tau.dim() == 0 ? 1 : tau.size(0);
  r.T = T;
  r.alpha = to_vec(alpha, r.C);
  r.beta = to_vec(beta, r.C);
  r.gamma = to_vec(gamma, r.C);
  r.tau = to_vec(tau, r.C);
  r.vth = to_vec(vth, r.C);
  r.vl = to_vec(vl, r.C);
  r.vr = to_vec(vr, r.C);
  TORCH_CHECK_VALUE(t0 >= 0 && t0 + T <= conduct.size(0), "sj_glif_cpu: conduct has ",
              conduct.size(0), " rows, steps ", t0, "..", t0 + T - 1, " requested");
  r.k = to_vec(conduct.detach().narrow(0, t0, T), T * r.C);
  return r;
}

// Per-channel coefficients in float64: D, Gh, L, R, theta, K [T, C].
struct Coef {
  std::vector<double> D, Gh, L, R, th, K;
};

Coef coefficients(const Raw& r, int64_t gate_mode) {
  const int64_t C = r.C;
  Coef c;
  c.D.resize(C), c.Gh.resize(C), c.L.resize(C), c.R.resize(C), c.th.resize(C);
  c.K.resize(r.T * C);
  for (int64_t i = 0; i < C; ++i) {
    double st = sigm(r.tau[i]), vl = sigm(r.vl[i]), vr = sigm(r.vr[i]);
    c.th[i] = sigm(r.vth[i]);
    if (gate_mode == 2) {
      c.D[i] = st, c.Gh[i] = 1.0, c.L[i] = vl, c.R[i] = vr;
    } else {
      bool hard = gate_mode == 1;
      double a = hard ? double(r.alpha[i] > 0) : sigm(r.alpha[i]);
      double g = hard ? double(r.gamma[i] > 0) : sigm(r.gamma[i]);
      c.D[i] = 1.0 - a * (1.0 - st), c.Gh[i] = g, c.L[i] = (1.0 - a) * vl;
      c.R[i] = (1.0 - g) * vr;
    }
  }
  for (int64_t t = 0; t < r.T; ++t) {
    for (int64_t i = 0; i < C; ++i) {
      double sk = sigm(r.k[t * C + i]);
      if (gate_mode == 2) {
        c.K[t * C + i] = sk;
      } else {
        double b = gate_mode == 1 ? double(r.beta[i] > 0) : sigm(r.beta[i]);
        c.K[t * C + i] = 1.0 - b * (1.0 - sk);
      }
    }
  }
  return c;
}

// The coefficient tables the tiles read, in the compute dtype: [P] and K [T, P].
template <typename acc_t>
struct Tables {
  std::vector<acc_t> D, GhD, L, R, th, K;
};

template <typename acc_t>
Tables<acc_t> make_tables(const Coef& c, const Layout& l) {
  Tables<acc_t> tb;
  const int64_t P = l.P, rep = l.vec ? l.inner : 1;
  tb.D.resize(P), tb.GhD.resize(P), tb.L.resize(P), tb.R.resize(P), tb.th.resize(P);
  tb.K.resize(l.T * P);
  const int64_t C = l.P / rep;
  for (int64_t p = 0; p < P; ++p) {
    int64_t ch = C == 1 ? 0 : p / rep;  // C == 1: layer-wise (one coefficient set)
    tb.D[p] = acc_t(c.D[ch]);
    tb.GhD[p] = acc_t(c.Gh[ch] * c.D[ch]);
    tb.L[p] = acc_t(c.L[ch]);
    tb.R[p] = acc_t(c.R[ch]);
    tb.th[p] = acc_t(c.th[ch]);
    for (int64_t t = 0; t < l.T; ++t) tb.K[t * P + p] = acc_t(c.K[t * (c.D.size()) + ch]);
  }
  return tb;
}

#define CO(ptr, j) (VEC ? (ptr)[j] : (ptr)[0])

// ------------------------------------------------------------------------------ forward

// Lanes per register block, in SIMD vectors (64 bytes with AVX-512, else 32). The
// forward's recurrence is a short chain per step (compare, select, multiply-add), so two
// vectors in flight hide its latency; the backward has enough independent work per step
// for one, and more would spill its six accumulators per vector (measured: 2 or 4 vectors
// ran the backward up to 2x slower on Zen 4).
#ifdef __AVX512F__
constexpr int kVecBytes = 64;
#else
constexpr int kVecBytes = 32;
#endif
#ifndef SJ_GLIF_FWD_VECS
#define SJ_GLIF_FWD_VECS 2
#endif
#ifndef SJ_GLIF_BWD_VECS
#define SJ_GLIF_BWD_VECS 1
#endif
template <typename acc_t, int NV = SJ_GLIF_FWD_VECS>
constexpr int kFwdLanes = NV * kVecBytes / int(sizeof(acc_t));
// From this many steps the forward walks blocks of kFwdVecsLong vectors: its block then
// reads and writes 2 T rows, and longer runs per row kept the rows streaming (measured at
// T = 32 on Zen 4: 4 vectors 0.65 vs 0.85 ns per element; at T = 8, 2 vectors were 5-10 %
// faster).
constexpr int64_t kLongT = 16;
constexpr int kFwdVecsLong = 4;
template <typename acc_t>
constexpr int kBwdLanes = SJ_GLIF_BWD_VECS * kVecBytes / int(sizeof(acc_t));

// Software prefetch for the backward. A block walks T rows of each tensor at a stride of
// a whole step (megabytes), a few cache lines per row: many short streams for the
// hardware prefetchers. In reverse time each block asks for the lines kPrefetchBytes
// ahead in the rows it reads and writes (measured on a 2-core Zen 4 VM: 256 bytes ahead
// gives the backward 7-27%; 512 to 4096 bytes, or prefetching to L2 only, gained nothing
// more, and the forward is fastest without). A prefetch never faults, so addresses past
// the end of a row are harmless.
//
// Also measured there and not kept: two or four SIMD vectors per backward block (spills,
// up to 2x slower), staging each tile's rows through contiguous copies (slower),
// non-temporal stores of dx (slower), recomputing a whole tile (or groups of
// four vectors) ahead of the reverse blocks so that the forward recurrence's latency is
// hidden (slower: 1.6-2.3 vs 1.5-1.6 ns per element), recomputing the next block inside
// each block's reverse loop (software pipelining; slower, 1.3-1.7 vs 1.0 ns with rect),
// evaluating the surrogate in the recompute sweep into scratch (5-10 % slower), and a
// step-major forward (the tile's state in L1, each step a contiguous run; 15-20 % slower).
// Later, also not kept: every term of a step that does not depend on the carried gradient
// (the surrogate included) computed for all steps in one pass before reverse time, so that
// the exp/divide chains run T at a time (slower: 5-19 % with sigmoid, 37-45 % with rect; the
// extra scratch stores cost more than the shorter chain saves), the spikes recomputed
// from u in reverse time instead of stored (no gain), the next block's membranes
// recomputed before this block's reverse time (no consistent gain), blocks of 32-byte
// vectors (15-25 % slower), and, for T >= 16, prefetching a few steps ahead inside the
// block (slower). A known slow case, not diagnosed: at [32, 16, 64, 16, 16] (a step of
// 1 MiB) the backward runs up to 2.5x slower per element than at [32, 15, 65, 16, 17]
// (rect: 2.3 against 0.9 ns per element; sigmoid 2.0 against 1.4). Each of the x, spike
// gradient and dx streams adds to it. Huge pages do not change it (not the TLB), nor does
// staging each tile's rows through padded buffers; channel-last [32, 32, 196, 128], whose
// step is also a multiple of 4 KiB (but not of 1 MiB), is not slow, so it is not the L1
// or L2 sets alone: likely rows that share a set in a cache indexed by higher address
// bits.
// The backward costs about the same per element on an L2- or L3-resident input as at
// [8, 32, 128, 32, 32], and dropping grad_spike's reads saves under 10 %: it is bound by
// the core, not by memory (one L1-resident tile, timed alone: 1.0-1.2 ns per element at
// T = 8 with sigmoid, against about 1.3 in the op on a large input). What bounds it is
// the count of vector operations: with AVX-512 and sigmoid, a reverse step compiles to
// about 44 per vector of 16 neurons, some 24 of them the surrogate's exp and divide, and
// the recompute step to about 12 more. A Newton reciprocal in place of the divide (seven
// multiply-adds for one divide) ran the backward 12 % slower: the divide's latency is
// hidden, only issue slots count. Reading float32 x itself in reverse time instead of its
// scratch copy (one store less per step) gained 0-5 %, within noise: not kept.
#ifndef SJ_GLIF_PREFETCH_BYTES
#define SJ_GLIF_PREFETCH_BYTES 256
#endif
constexpr int64_t kPrefetchBytes = SJ_GLIF_PREFETCH_BYTES;
template <int BYTES, bool WRITE, typename T>
inline __attribute__((always_inline)) void prefetch_row(const T* p) {
  if constexpr (kPrefetchBytes > 0) {
    const char* c = reinterpret_cast<const char*>(p) + kPrefetchBytes;
    for (int b = 0; b < BYTES; b += 64) __builtin_prefetch(c + b, WRITE ? 1 : 0, 3);
  }
}

// Non-temporal ("streaming") stores of the large outputs. A block writes a few cache lines
// of each of its T rows; written through the cache, each line is first read from memory
// (the store's read for ownership) and later evicted, so the outputs cost three passes of
// memory traffic instead of one. A block's rows are written to a small aligned staging
// buffer and then streamed out whole lines at a time (measured at 2 threads on the Zen 4
// VM: the forward 26-33 % faster at [8, 32, 128, 32, 32] and channel-last, forward +
// backward 2-11 %). The spikes only: streaming the backward's dx the same way made it
// slower (it is bound by the core, and its blocks write one line per row). Only with AVX
// (x86), for rows of whole cache lines at 64-byte-aligned addresses, and for outputs of at
// least kStreamMinBytes; every other case keeps plain stores.
#if defined(__AVX512F__)
constexpr bool kStream = true;
constexpr int kStreamChunk = 64;  // bytes per streaming store
inline __attribute__((always_inline)) void stream_chunk(char* d, const char* s) {
  _mm512_stream_si512(reinterpret_cast<__m512i*>(d), _mm512_load_si512(s));
}
#elif defined(__AVX__)
constexpr bool kStream = true;
constexpr int kStreamChunk = 32;
inline __attribute__((always_inline)) void stream_chunk(char* d, const char* s) {
  _mm256_stream_si256(reinterpret_cast<__m256i*>(d),
                      _mm256_load_si256(reinterpret_cast<const __m256i*>(s)));
}
#else
constexpr bool kStream = false;
constexpr int kStreamChunk = 64;
inline void stream_chunk(char*, const char*) {}
#endif

// Whether rows at p, p + stride_bytes, ... start on cache lines.
inline bool line_aligned(const void* p, int64_t stride_bytes) {
  return reinterpret_cast<uintptr_t>(p) % 64 == 0 && stride_bytes % 64 == 0;
}

// rows x BYTES (whole cache lines) from a 64-byte-aligned packed buffer to dst (row stride
// ds_bytes), streamed.
template <int BYTES>
inline __attribute__((always_inline)) void stream_rows(const void* src, void* dst,
                                                       int64_t ds_bytes, int64_t rows) {
  static_assert(BYTES % 64 == 0, "whole cache lines");
  for (int64_t t = 0; t < rows; ++t) {
    const char* s = static_cast<const char*>(src) + t * BYTES;
    char* d = static_cast<char*>(dst) + t * ds_bytes;
    for (int b = 0; b < BYTES; b += kStreamChunk) stream_chunk(d + b, s + b);
  }
}

// Outputs from this many bytes are streamed. A smaller output may still be in the last-level
// cache when the next layer reads it, and streaming would send it to memory first. (The
// C library's reported L3 size is no guide: on the Zen 4 VM it is the whole chip's 320 MB,
// against 32 MB per core complex.)
constexpr int64_t kStreamMinBytes = int64_t(64) << 20;

// Streamed stores are weakly ordered: each thread fences them before its part of a
// parallel region ends.
inline void stream_fence() {
#if defined(__AVX512F__) || defined(__AVX__)
  _mm_sfence();
#endif
}

// A 64-byte-aligned staging area inside buf (which has 64 bytes to spare).
template <typename T>
inline T* align64(T* buf) {
  return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(buf) + 63) & ~uintptr_t(63));
}

// The membrane recurrence, shared by the forward and the backward's recompute so that both
// give the same u bit for bit:  u_t = a v + ((K x_t - L) - r),  with the carried
// a = D - Gh D s_{t-1} and r = R s_{t-1}. Every multiply-add is an explicit fma: left to
// the compiler, contraction differed between the vectorised body and the scalar remainder
// of a block (and so between the forward's and the backward's block widths), and a
// stored u_seq then gave a backward different in the last bit from a recomputed one.
//
// Step 0 (`membrane`, with `init_ar`): the initial state s_0 may be any value (it can
// carry a gradient) and enters linearly. After it the spike is 0 or 1, and
// `membrane_next` computes both candidates from v, a = D, r = 0 (quiet) and
// a = D - Gh D, r = R (fired), and the previous spike test selects one: the recurrence's
// critical path is one multiply-add alongside the compare, then a select, instead of
// compare -> select -> subtract -> multiply-add (measured on Zen 4: the forward 18-28 %
// faster at [8, 32, 128, 32, 32] and channel-last, the backward 6-10 %).
template <typename acc_t>
inline __attribute__((always_inline)) acc_t membrane(acc_t v, acc_t a, acc_t r, acc_t K,
                                                     acc_t x, acc_t L) {
  return std::fma(a, v, std::fma(K, x, -L) - r);
}
template <typename acc_t>
inline __attribute__((always_inline)) void init_ar(acc_t s0, acc_t D, acc_t GhD, acc_t R,
                                                   acc_t& a, acc_t& r) {
  a = std::fma(-GhD, s0, D);
  r = R * s0;
}
// u_t after step 0, from v = u_{t-1} and its spike test: the same value as membrane() with
// a and r selected by that spike.
template <typename acc_t>
inline __attribute__((always_inline)) acc_t membrane_next(acc_t v, bool fired, acc_t D,
                                                          acc_t GhD, acc_t R, acc_t K, acc_t x,
                                                          acc_t L) {
  const acc_t c = std::fma(K, x, -L);
  const acc_t quiet = std::fma(D, v, c);          // c - 0 == c
  const acc_t spiked = std::fma(D - GhD, v, c - R);
  return fired ? spiked : quiet;
}

// n (<= kFwdLanes) neurons through T steps with the state in registers. Pointers are offset
// to the block (coefficients too; read at [0] unless VEC); x, spk and u (nullable) have
// step stride N; v0/s0 the initial state (a zero buffer when none is given).
template <typename scalar_t, typename acc_t, bool VEC, bool STORE_U, int NV>
inline __attribute__((always_inline)) void fwd_block(
    const scalar_t* __restrict x, int64_t xs, int64_t T, int64_t N, const acc_t* __restrict D,
    const acc_t* __restrict GhD, const acc_t* __restrict L, const acc_t* __restrict R,
    const acc_t* __restrict TH, const acc_t* __restrict Kb, int64_t P,
    const acc_t* __restrict v0, const acc_t* __restrict s0, scalar_t* __restrict spk,
    int64_t ss, acc_t* __restrict u, acc_t* __restrict vlast, acc_t* __restrict slast, const int n) {
  constexpr int W = kFwdLanes<acc_t, NV>;
  acc_t v[W], av[W], rv[W];
#pragma omp simd
  for (int w = 0; w < n; ++w) {
    v[w] = v0[w];
    init_ar(s0[w], CO(D, w), CO(GhD, w), CO(R, w), av[w], rv[w]);
  }
  for (int64_t t = 0; t < T; ++t) {
    const scalar_t* __restrict xt = x + t * xs;
    const acc_t* __restrict K = Kb + t * P;
    scalar_t* __restrict st = spk + t * ss;
    acc_t* __restrict ut = STORE_U ? u + t * N : nullptr;
    if (t == 0) {
#pragma omp simd
      for (int w = 0; w < n; ++w) {
        const acc_t un = membrane(v[w], av[w], rv[w], CO(K, w), acc_t(xt[w]), CO(L, w));
        v[w] = un;
        st[w] = scalar_t(un >= CO(TH, w) ? acc_t(1) : acc_t(0));
        if constexpr (STORE_U) ut[w] = un;
      }
    } else {
#pragma omp simd
      for (int w = 0; w < n; ++w) {
        const acc_t un = membrane_next(v[w], v[w] >= CO(TH, w), CO(D, w), CO(GhD, w),
                                       CO(R, w), CO(K, w), acc_t(xt[w]), CO(L, w));
        v[w] = un;
        st[w] = scalar_t(un >= CO(TH, w) ? acc_t(1) : acc_t(0));
        if constexpr (STORE_U) ut[w] = un;
      }
    }
  }
  // the last spike, as in the loop (T >= 1: blocks run only for a non-empty input)
#pragma omp simd
  for (int w = 0; w < n; ++w) {
    vlast[w] = v[w];
    slast[w] = v[w] >= CO(TH, w) ? acc_t(1) : acc_t(0);
  }
}

// One tile (len neurons, pointers offset to it) through T steps, in register blocks.
// stage: room for T * kFwdLanes<acc_t, NV> + 64 bytes' worth of scalar_t, to stream the
// spikes of whole, line-aligned blocks to spk; nullptr: plain stores (spk is a buffer
// about to be read again).
template <typename scalar_t, typename acc_t, bool VEC, bool STORE_U, int NV>
void fwd_tile(const scalar_t* x, int64_t xs, int64_t T, int64_t N, int64_t len,
              const Tables<acc_t>& tb, int64_t cpos, const acc_t* v0, const acc_t* s0,
              scalar_t* spk, int64_t ss, acc_t* u, acc_t* vlast, acc_t* slast, scalar_t* stage) {
  constexpr int W = kFwdLanes<acc_t, NV>;
  constexpr int kRowBytes = W * int(sizeof(scalar_t));
  const int64_t P = tb.D.size();
  scalar_t* st = stage ? align64(stage) : nullptr;
  for (int64_t j = 0; j < len; j += W) {
    const int n = int(std::min<int64_t>(W, len - j));
    const int64_t c = VEC ? cpos + j : cpos;
#define SJ_GLIF_BLOCK(out, os, count)                                                          \
  fwd_block<scalar_t, acc_t, VEC, STORE_U, NV>(                                                \
      x + j, xs, T, N, tb.D.data() + c, tb.GhD.data() + c, tb.L.data() + c, tb.R.data() + c,  \
      tb.th.data() + c, tb.K.data() + c, P, v0 + j, s0 + j,                                   \
      out, os, STORE_U ? u + j : nullptr, vlast + j, slast + j, count)
    if constexpr (kStream && kRowBytes % 64 == 0) {
      const int64_t ss_bytes = ss * int64_t(sizeof(scalar_t));
      if (n == W && st && line_aligned(spk + j, ss_bytes)) {
        SJ_GLIF_BLOCK(st, W, W);
        stream_rows<kRowBytes>(st, spk + j, ss_bytes, T);
        continue;
      }
    }
    if (n == W) {
      SJ_GLIF_BLOCK(spk + j, ss, W);
    } else {
      SJ_GLIF_BLOCK(spk + j, ss, n);
    }
#undef SJ_GLIF_BLOCK
  }
}

// ------------------------------------------------------------------------------ backward

// n (<= kBwdLanes) neurons through the backward. The block's membranes u_0..u_T (u_0 = v0)
// and spikes s_0..s_T (s_0 = s0) go to `scratch` ([2, T + 1, kBwdLanes], in L1, with the
// block's x [T, kBwdLanes], so that reverse time re-reads it from L1): recomputed by a
// forward sweep, or taken from the stored u_seq (useq, step stride N). Then reverse time
// with the carried gradient and the per-lane sums in registers, no branch inside the loop.
// Pointers are offset to the block; the coefficient pointers too (read at [0] unless VEC).
// Writes dx, dv0, ds0. The per-lane sums (kSums rows, then one row per step (du x); row
// stride lstride) are added to accf, which the caller zeroes when a group of tiles starts
// (VEC: accf offset to the block; a one-channel tile: every block adds to the same
// kBwdLanes lanes).
//
// Reverse time. With q_t = R + Gh D u_t and m_t = D - Gh D s_t, the gradient reaching u_t
// (from step t + 1 through the membrane and the reset, and from the spike s_t) is
//   d_t = d_{t+1} m_t - keep d_{t+1} q_t sg_t + g_t sg_t + gu_t
//       = d_{t+1} (m_t - keep q_t sg_t) + (g_t sg_t + gu_t),
// one multiply-add on the loop-carried chain; everything else is off it. The last step
// starts from the incoming gradients of v_T and s_T instead of d_{T}.
template <typename scalar_t, typename acc_t, bool VEC, int SID>
inline __attribute__((always_inline)) void bwd_block(
    const scalar_t* __restrict x, int64_t xs, const scalar_t* __restrict gspk, int64_t gstride,
    const acc_t* __restrict gu, int64_t gustride, const acc_t* __restrict useq,
    const acc_t* __restrict v0, const acc_t* __restrict s0, const acc_t* __restrict gv,
    const acc_t* __restrict gsl, int64_t T, int64_t N, const acc_t* __restrict D,
    const acc_t* __restrict GhD, const acc_t* __restrict L, const acc_t* __restrict R,
    const acc_t* __restrict TH, const acc_t* __restrict Kb, int64_t P, acc_t a, acc_t keep,
    scalar_t* __restrict dx, int64_t dxs, acc_t* __restrict dv0, acc_t* __restrict ds0,
    acc_t* __restrict accf, int64_t lstride, acc_t* __restrict scratch, const int n) {
  constexpr int W = kBwdLanes<acc_t>;
  acc_t* __restrict U = scratch;                    // [T + 1, W]
  acc_t* __restrict S = scratch + (T + 1) * W;      // [T + 1, W]
  acc_t* __restrict X = scratch + 2 * (T + 1) * W;  // [T, W]
#pragma omp simd
  for (int w = 0; w < n; ++w) U[w] = v0[w], S[w] = s0[w];
  if (useq) {
    for (int64_t t = 0; t < T; ++t) {
      const acc_t* __restrict ut = useq + t * N;
      const scalar_t* __restrict xt = x + t * xs;
      acc_t* __restrict un = U + (t + 1) * W;
      acc_t* __restrict sn = S + (t + 1) * W;
      acc_t* __restrict xn = X + t * W;
#pragma omp simd
      for (int w = 0; w < n; ++w) {
        un[w] = ut[w];
        sn[w] = ut[w] >= CO(TH, w) ? acc_t(1) : acc_t(0);
        xn[w] = acc_t(xt[w]);
      }
    }
  } else {
    acc_t v[W], av[W], rv[W];
#pragma omp simd
    for (int w = 0; w < n; ++w) {
      v[w] = v0[w];
      init_ar(s0[w], CO(D, w), CO(GhD, w), CO(R, w), av[w], rv[w]);
    }
    for (int64_t t = 0; t < T; ++t) {
      const scalar_t* __restrict xt = x + t * xs;
      const acc_t* __restrict K = Kb + t * P;
      acc_t* __restrict un = U + (t + 1) * W;
      acc_t* __restrict sn = S + (t + 1) * W;
      acc_t* __restrict xn = X + t * W;
      prefetch_row<W * sizeof(scalar_t), false>(xt);
      if (t == 0) {
#pragma omp simd
        for (int w = 0; w < n; ++w) {
          const acc_t xv = acc_t(xt[w]);
          xn[w] = xv;
          const acc_t u = membrane(v[w], av[w], rv[w], CO(K, w), xv, CO(L, w));
          v[w] = u;
          un[w] = u;
          sn[w] = u >= CO(TH, w) ? acc_t(1) : acc_t(0);
        }
      } else {
#pragma omp simd
        for (int w = 0; w < n; ++w) {
          const acc_t xv = acc_t(xt[w]);
          xn[w] = xv;
          const acc_t u = membrane_next(v[w], v[w] >= CO(TH, w), CO(D, w), CO(GhD, w),
                                        CO(R, w), CO(K, w), xv, CO(L, w));
          v[w] = u;
          un[w] = u;
          sn[w] = u >= CO(TH, w) ? acc_t(1) : acc_t(0);
        }
      }
    }
  }
  acc_t dn[W], ath[W], aup[W], aups[W], au[W], aus[W];
#pragma omp simd
  for (int w = 0; w < n; ++w) ath[w] = aup[w] = aups[w] = au[w] = aus[w] = acc_t(0);
  // step t of reverse time; FIRST: t = T - 1, from the incoming gradients of v_T and s_T
#define SJ_GLIF_BWD_STEP(FIRST)                                                              \
  {                                                                                          \
    const acc_t* __restrict ut = U + (t + 1) * W;                                            \
    const acc_t* __restrict st = S + (t + 1) * W;                                            \
    const acc_t* __restrict up = U + t * W;                                                  \
    const acc_t* __restrict spv = S + t * W;                                                 \
    const scalar_t* __restrict gt = gspk + t * gstride;                                      \
    const acc_t* __restrict gut = gu + t * gustride;                                         \
    const acc_t* __restrict xt = X + t * W;                                                  \
    scalar_t* __restrict dxt = dx + t * dxs;                                                 \
    const acc_t* __restrict K = Kb + t * P;                                                  \
    acc_t* __restrict ak = accf + (kSums + t) * lstride;                                     \
    if (gstride) prefetch_row<W * sizeof(scalar_t), false>(gt);                              \
    prefetch_row<W * sizeof(scalar_t), true>(dxt);                                           \
    _Pragma("omp simd") for (int w = 0; w < n; ++w) {                                        \
      const acc_t sg = surrogate<SID, acc_t>(ut[w] - CO(TH, w), a);                          \
      const acc_t g = acc_t(gt[w]);                                                          \
      acc_t d, ds;                                                                           \
      if constexpr (FIRST) {                                                                 \
        ds = (g + gsl[w]) * sg;                                                              \
        d = gv[w] + ds + gut[w];                                                             \
      } else {                                                                               \
        const acc_t m = CO(D, w) - CO(GhD, w) * st[w];                                       \
        const acc_t nq = -keep * (CO(R, w) + CO(GhD, w) * ut[w]);                            \
        ds = (g + dn[w] * nq) * sg;                                                          \
        d = dn[w] * (m + nq * sg) + (g * sg + gut[w]);                                       \
      }                                                                                      \
      dxt[w] = scalar_t(d * CO(K, w));                                                       \
      ak[w] += d * xt[w];                                                                    \
      const acc_t dup = d * up[w];                                                           \
      ath[w] += ds;                                                                          \
      aup[w] += dup;                                                                         \
      aups[w] += dup * spv[w];                                                               \
      au[w] += d;                                                                            \
      aus[w] += d * spv[w];                                                                  \
      dn[w] = d;                                                                             \
    }                                                                                        \
  }
  if (T > 0) {
    int64_t t = T - 1;
    SJ_GLIF_BWD_STEP(true)
    for (t = T - 2; t >= 0; --t) SJ_GLIF_BWD_STEP(false)
  }
#undef SJ_GLIF_BWD_STEP
  acc_t* __restrict sth = accf + kTh * lstride;
  acc_t* __restrict sup = accf + kUp * lstride;
  acc_t* __restrict sups = accf + kUps * lstride;
  acc_t* __restrict su = accf + kU * lstride;
  acc_t* __restrict sus = accf + kUs * lstride;
#pragma omp simd
  for (int w = 0; w < n; ++w) {
    // dL/dv_0 = d_0 m_0 and dL/ds_0 = -keep d_0 q_0 (u_0 = v0, s_0 = s0)
    dv0[w] = dn[w] * (CO(D, w) - CO(GhD, w) * S[w]);
    ds0[w] = -keep * dn[w] * (CO(R, w) + CO(GhD, w) * U[w]);
    sth[w] += ath[w], sup[w] += aup[w], sups[w] += aups[w], su[w] += au[w], sus[w] += aus[w];
  }
}

// One tile (len neurons) through the backward, in register blocks of kBwdLanes. Pointers are
// offset to the tile; v0/s0/gv/gsl non-null (a zero buffer when absent), gspk/gu with
// stride 0 on a zero buffer when absent, useq nullable. accf: [kSums + T, len] (one channel: [kSums + T, kBwdLanes]).
template <typename scalar_t, typename acc_t, bool VEC, int SID>
void bwd_tile(const scalar_t* x, int64_t xs, const scalar_t* gspk, int64_t gstride,
              const acc_t* gu, int64_t gustride, const acc_t* useq, const acc_t* v0,
              const acc_t* s0, const acc_t* gv, const acc_t* gsl, int64_t T, int64_t N,
              int64_t len, const Tables<acc_t>& tb, int64_t cpos, acc_t a, bool detach,
              scalar_t* dx, int64_t dxs, acc_t* dv0, acc_t* ds0, acc_t* accf, acc_t* scratch) {
  constexpr int W = kBwdLanes<acc_t>;
  const int64_t P = tb.D.size();
  const acc_t keep = detach ? acc_t(0) : acc_t(1);
  // accf is zeroed by the caller; one channel: every block adds to the same W lanes
  // ([kSums + T, W])
  for (int64_t j = 0; j < len; j += W) {
    const int n = int(std::min<int64_t>(W, len - j));
    const int64_t c = VEC ? cpos + j : cpos;
    const acc_t* uj = useq ? useq + j : nullptr;
#define SJ_GLIF_BLOCK(count)                                                                    \
  bwd_block<scalar_t, acc_t, VEC, SID>(                                                         \
      x + j, xs, gspk + (gstride ? j : 0), gstride, gu + (gustride ? j : 0), gustride, uj,    \
      v0 + j, s0 + j, gv + j, gsl + j, T, N, tb.D.data() + c, tb.GhD.data() + c, tb.L.data() + c,   \
      tb.R.data() + c, tb.th.data() + c, tb.K.data() + c, P, a, keep, dx + j, dxs, dv0 + j,   \
      ds0 + j, VEC ? accf + j : accf, VEC ? len : W, scratch, count)
    if (n == W) {
      SJ_GLIF_BLOCK(W);  // a constant lane count: the block lives in registers
    } else {
      SJ_GLIF_BLOCK(n);
    }
#undef SJ_GLIF_BLOCK
  }
}

// Add a tile's per-lane sums (rows x len) to a work item's float64 accumulators (rows x
// P, at the tile's coefficient position): per position for channel-varying tiles, summed
// over the lanes (one channel) otherwise. A fixed order for a given len.
template <typename acc_t>
void fold(const acc_t* accf, int64_t rows, int64_t len, bool vec, double* ad, int64_t P) {
  for (int64_t k = 0; k < rows; ++k) {
    const acc_t* __restrict src = accf + k * len;
    double* __restrict dst = ad + k * P;
    if (vec) {
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) dst[j] += double(src[j]);
    } else {
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < len; ++j) sum += double(src[j]);
      dst[0] += sum;
    }
  }
}

// [T, len] tile of a 16-bit tensor (step stride N) to/from a packed compute-dtype buffer.
template <typename scalar_t, typename acc_t>
void to_compute(const scalar_t* src, int64_t N, acc_t* dst, int64_t T, int64_t len) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < len; ++j) dst[t * len + j] = acc_t(src[t * N + j]);
  }
}
template <typename scalar_t, typename acc_t>
void from_compute(const acc_t* src, scalar_t* dst, int64_t N, int64_t T, int64_t len) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < len; ++j) dst[t * N + j] = scalar_t(src[t * len + j]);
  }
}

// ------------------------------------------------------------------------------ ops

at::ScalarType compute_type(const Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

int64_t norm_channel_dim(const Tensor& x, int64_t channel_dim) {
  const int64_t nd = x.dim() - 1;
  TORCH_CHECK_VALUE(nd >= 1, "sj_glif_cpu: x must be [T, *step], got ", x.sizes());
  TORCH_CHECK_VALUE(-nd <= channel_dim && channel_dim < nd, "sj_glif_cpu: channel_dim ", channel_dim,
              " out of range for a step of ", nd, " dims");
  return channel_dim < 0 ? channel_dim + nd : channel_dim;
}

// The op is public (torch.ops.sj_glif_cpu, and torch.ops.sj_glif with impl="cpp"): every
// shape the kernels index by is checked here, with what was expected and what came, before
// anything is read or allocated (a mismatch would otherwise read or write out of bounds).
void check_shapes(const Tensor& x, int64_t cd, const std::optional<Tensor>& alpha,
                  const std::optional<Tensor>& beta, const std::optional<Tensor>& gamma,
                  const Tensor& tau, const Tensor& v_threshold, const Tensor& linear_decay,
                  const Tensor& v_subreset, const Tensor& conduct, int64_t gate_mode,
                  const std::optional<Tensor>& v0, const std::optional<Tensor>& s0) {
  const auto xt = x.scalar_type();
  TORCH_CHECK_VALUE(xt == at::kHalf || xt == at::kBFloat16 || xt == at::kFloat || xt == at::kDouble,
                    "sj_glif_cpu: x must be a floating tensor (float16, bfloat16, float32, ",
                    "float64), got ", xt);
  TORCH_CHECK_VALUE(gate_mode >= 0 && gate_mode <= 2, "sj_glif_cpu: gate_mode must be 0 (soft), ",
              "1 (hard) or 2 (coarse), got ", gate_mode);
  TORCH_CHECK_VALUE(tau.dim() <= 1, "sj_glif_cpu: tau must be [C] (channel-wise) or [] (layer-wise), ",
              "got shape ", tau.sizes());
  const bool layerwise = tau.dim() == 0;
  const int64_t C = layerwise ? 1 : tau.size(0);
  TORCH_CHECK_VALUE(layerwise || x.size(1 + cd) == C, "sj_glif_cpu: the parameters have ", C,
              " channels but x of shape ", x.sizes(), " has ", x.size(1 + cd),
              " at channel_dim ", cd, " of its step");
  const char* names[7] = {"alpha", "beta", "gamma", "tau", "v_threshold", "linear_decay",
                          "v_subreset"};
  const std::optional<Tensor> ps[7] = {alpha, beta, gamma, tau, v_threshold, linear_decay,
                                       v_subreset};
  for (int i = 0; i < 7; ++i) {
    if (!ps[i].has_value() || !ps[i]->defined()) {
      TORCH_CHECK_VALUE(i < 3 && gate_mode == 2, "sj_glif_cpu: parameter ", names[i],
                  " is required", i < 3 ? " unless gate_mode is 2 (coarse)" : "");
      continue;
    }
    TORCH_CHECK_VALUE(ps[i]->sizes() == tau.sizes(), "sj_glif_cpu: parameter ", names[i],
                " must have tau's shape ", tau.sizes(), ", got ", ps[i]->sizes());
  }
  TORCH_CHECK_VALUE(conduct.dim() == (layerwise ? 1 : 2) && (layerwise || conduct.size(1) == C),
              "sj_glif_cpu: conduct must be ", layerwise ? "[T_rows]" : "[T_rows, C] with C = ",
              layerwise ? "" : std::to_string(C), ", got shape ", conduct.sizes());
  const auto step = x.sizes().slice(1);
  const char* snames[2] = {"v0", "s0"};
  const std::optional<Tensor>* st[2] = {&v0, &s0};
  for (int i = 0; i < 2; ++i) {
    if (st[i]->has_value() && (*st[i])->defined()) {
      TORCH_CHECK_VALUE((*st[i])->sizes() == step, "sj_glif_cpu: ", snames[i],
                  " must have one step's shape ", step, ", got ", (*st[i])->sizes());
      TORCH_CHECK_VALUE((*st[i])->device().is_cpu(), "sj_glif_cpu: ", snames[i],
                  " must be on the CPU, got ", (*st[i])->device());
    }
  }
}

// An incoming gradient or stored stream must have `want`'s shape (None / undefined: absent).
void check_like(const std::optional<Tensor>& t, at::IntArrayRef want, const char* name,
                const char* what) {
  if (!t.has_value() || !t->defined()) return;
  TORCH_CHECK_VALUE(t->sizes() == want, "sj_glif_cpu: ", name, " must have ", what, " ", want,
              ", got ", t->sizes());
  TORCH_CHECK_VALUE(t->device().is_cpu(), "sj_glif_cpu: ", name, " must be on the CPU, got ",
              t->device());
}

Tensor opt_state(const std::optional<Tensor>& t, at::ScalarType cdt) {
  if (!t.has_value() || !t->defined()) return Tensor();
  return t->to(cdt).contiguous();
}

// A large fresh output: on Linux its cost is mostly first-touch page faults (glibc maps a
// block over 32 MiB anew for every allocation; a 134 MB output: ~60 ms of 4 KiB faults on
// the benchmark VM, several times the writing itself). Its 2 MiB-aligned interior is
// advised to use transparent huge pages before the first write (THP "madvise" mode, the
// default of many distributions; torch offers the same process-wide as
// THP_MEM_ALLOC_ENABLE=1). Advice only: nothing changes where THP is off, or for memory the
// allocator reuses (already faulted in).
Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  Tensor t = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t p = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t lo = (p + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t hi = (p + t.nbytes()) & ~(kHuge - 1);
  if (t.nbytes() >= 8 * kHuge && hi > lo) {
    (void)madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // advice: no error
  }
#endif
  return t;
}

template <typename T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> glif_fwd(
    const Tensor& x_in, const std::optional<Tensor>& v0_in, const std::optional<Tensor>& s0_in,
    const std::optional<Tensor>& alpha, const std::optional<Tensor>& beta,
    const std::optional<Tensor>& gamma, const Tensor& tau, const Tensor& v_threshold,
    const Tensor& linear_decay, const Tensor& v_subreset, const Tensor& conduct, int64_t t0,
    int64_t channel_dim, int64_t gate_mode, bool store_u) {
  TORCH_CHECK_VALUE(x_in.device().is_cpu(), "sj_glif_cpu: x must be on the CPU, got ", x_in.device());
  const int64_t cd = norm_channel_dim(x_in, channel_dim);
  check_shapes(x_in, cd, alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset,
               conduct, gate_mode, v0_in, s0_in);
  const Tensor x = x_in.contiguous();  // the one copy, for a non-contiguous input
  const auto cdt = compute_type(x);
  const int64_t T = x.size(0);
  const bool layerwise = tau.dim() == 0;
  const Layout l = make_layout(x, cd, layerwise, layerwise ? 1 : tau.size(0), kMaxTile);
  const Coef c = coefficients(
      read_raw(alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset, conduct, t0, T),
      gate_mode);
  const auto step = x.sizes().slice(1);
  const auto copt = x.options().dtype(cdt);
  Tensor spike = empty_output(x.sizes(), x.options());
  Tensor v_last = at::empty(step, copt);
  Tensor s_last = at::empty(step, copt);
  Tensor u_seq = store_u ? empty_output(x.sizes(), copt) : at::empty({0}, copt);
  const Tensor v0 = opt_state(v0_in, cdt), s0 = opt_state(s0_in, cdt);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sj_glif_cpu_fwd", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    const Tables<acc_t> tb = make_tables<acc_t>(c, l);
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* sp = spike.data_ptr<scalar_t>();
    acc_t* up = store_u ? u_seq.data_ptr<acc_t>() : nullptr;
    const acc_t* v0p = ptr_or_null<acc_t>(v0);
    const acc_t* s0p = ptr_or_null<acc_t>(s0);
    acc_t* vl = v_last.data_ptr<acc_t>();
    acc_t* sl = s_last.data_ptr<acc_t>();
    const int64_t grain = l.N * T < 32768 ? std::max<int64_t>(l.ntiles, 1) : 1;
    // the kernels are compiled for the compute dtype only: a 16-bit input is converted per
    // tile (x in, spikes out) so that it runs exactly the float32 arithmetic
    constexpr bool kDirect = std::is_same_v<scalar_t, acc_t>;
    const bool stream = kStream && int64_t(spike.nbytes()) >= kStreamMinBytes;
    using Fn = decltype(&fwd_tile<acc_t, acc_t, true, true, SJ_GLIF_FWD_VECS>);
    const auto pick = [&](auto nv) -> Fn {
      constexpr int NV = decltype(nv)::value;
      return l.vec ? (up ? fwd_tile<acc_t, acc_t, true, true, NV>
                         : fwd_tile<acc_t, acc_t, true, false, NV>)
                   : (up ? fwd_tile<acc_t, acc_t, false, true, NV>
                         : fwd_tile<acc_t, acc_t, false, false, NV>);
    };
    const Fn tile = T >= kLongT ? pick(std::integral_constant<int, kFwdVecsLong>{})
                                : pick(std::integral_constant<int, SJ_GLIF_FWD_VECS>{});
    at::parallel_for(0, l.ntiles, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> xb(kDirect ? 0 : T * l.cap), sb(kDirect ? 0 : T * l.cap);
      std::vector<acc_t> stage(stream ? T * kFwdLanes<acc_t, kFwdVecsLong> + 64 / sizeof(acc_t) : 0);
      const std::vector<acc_t> zeros(l.cap, acc_t(0));  // the zero state, when none is given
      for (int64_t i = begin; i < end; ++i) {
        int64_t base, len, cpos;
        l.tile(i, base, len, cpos);
        const acc_t* v0t = v0p ? v0p + base : zeros.data();
        const acc_t* s0t = s0p ? s0p + base : zeros.data();
        acc_t* ut = up ? up + base : nullptr;
        if constexpr (kDirect) {
          // (the same type here; the cast only lets the 16-bit instantiations compile: an
          // `if constexpr` in this non-template lambda does not discard its branch)
          tile(reinterpret_cast<const acc_t*>(xp) + base, l.N, T, l.N, len, tb, cpos, v0t, s0t,
               reinterpret_cast<acc_t*>(sp) + base, l.N, ut, vl + base, sl + base,
               stream ? stage.data() : nullptr);
        } else {
          to_compute(xp + base, l.N, xb.data(), T, len);
          tile(xb.data(), len, T, l.N, len, tb, cpos, v0t, s0t, sb.data(), len, ut, vl + base,
               sl + base, nullptr);
          from_compute(sb.data(), sp + base, l.N, T, len);
        }
      }
      stream_fence();
    });
  });
  return {spike, v_last, s_last, u_seq};
}

template <typename scalar_t, typename acc_t, bool VEC>
using BwdTileFn = decltype(&bwd_tile<scalar_t, acc_t, VEC, 0>);

template <typename scalar_t, typename acc_t, bool VEC>
BwdTileFn<scalar_t, acc_t, VEC> pick_bwd(int64_t sid) {
  switch (sid) {
    case 0: return bwd_tile<scalar_t, acc_t, VEC, 0>;
    case 1: return bwd_tile<scalar_t, acc_t, VEC, 1>;
    case 2: return bwd_tile<scalar_t, acc_t, VEC, 2>;
    case 3: return bwd_tile<scalar_t, acc_t, VEC, 3>;
    case 4: return bwd_tile<scalar_t, acc_t, VEC, 4>;
    case 5: return bwd_tile<scalar_t, acc_t, VEC, 5>;
    case 6: return bwd_tile<scalar_t, acc_t, VEC, 6>;
    case 7: return bwd_tile<scalar_t, acc_t, VEC, 7>;
    default: TORCH_CHECK_VALUE(false, "sj_glif_cpu: unknown surrogate id ", sid, " (expected 0..7)");
  }
  return nullptr;
}

// Raw-parameter gradients from the per-channel sums (chain rule through the sigmoids;
// hard gates: straight-through). sums: kSums rows then T rows, each [C].
std::vector<std::vector<double>> raw_grads(const std::vector<double>& sums, const Raw& r,
                                           const Coef& c, int64_t gate_mode) {
  const int64_t C = r.C, T = r.T;
  // alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset: [C]; conduct: [T, C]
  std::vector<std::vector<double>> g(7, std::vector<double>(C, 0.0));
  std::vector<double> gk(T * C, 0.0);
  for (int64_t i = 0; i < C; ++i) {
    const double s_ups = sums[kUps * C + i];
    const double sD = sums[kUp * C + i] - c.Gh[i] * s_ups;  // sum du u_prev (1 - Gh s_prev)
    const double sGh = -c.D[i] * s_ups;
    const double sL = -sums[kU * C + i], sR = -sums[kUs * C + i], sTh = -sums[kTh * C + i];
    const double st = sigm(r.tau[i]), vl = sigm(r.vl[i]), vr = sigm(r.vr[i]);
    g[4][i] = sTh * dsig(sigm(r.vth[i]));
    if (gate_mode == 2) {
      g[3][i] = sD * dsig(st);
      g[5][i] = sL * dsig(vl);
      g[6][i] = sR * dsig(vr);
      for (int64_t t = 0; t < T; ++t) {
        gk[t * C + i] = sums[(kSums + t) * C + i] * dsig(sigm(r.k[t * C + i]));
      }
      continue;
    }
    const bool hard = gate_mode == 1;
    const double sa = sigm(r.alpha[i]), sb = sigm(r.beta[i]), sg = sigm(r.gamma[i]);
    const double a = hard ? double(r.alpha[i] > 0) : sa;
    const double b = hard ? double(r.beta[i] > 0) : sb;
    const double gm = hard ? double(r.gamma[i] > 0) : sg;
    g[0][i] = (-sD * (1.0 - st) - sL * vl) * dsig(sa);
    g[3][i] = sD * a * dsig(st);
    g[5][i] = sL * (1.0 - a) * dsig(vl);
    g[2][i] = (sGh - sR * vr) * dsig(sg);
    g[6][i] = sR * (1.0 - gm) * dsig(vr);
    double beta_sum = 0.0;
    for (int64_t t = 0; t < T; ++t) {
      const double sk = sigm(r.k[t * C + i]), sK = sums[(kSums + t) * C + i];
      beta_sum += sK * (1.0 - sk);
      gk[t * C + i] = sK * b * dsig(sk);
    }
    g[1][i] = -beta_sum * dsig(sb);
  }
  g.push_back(std::move(gk));
  return g;
}

Tensor from_vec(const std::vector<double>& v, at::IntArrayRef shape, at::ScalarType dtype) {
  Tensor t = at::empty(shape, at::TensorOptions().dtype(at::kDouble));
  std::memcpy(t.data_ptr<double>(), v.data(), sizeof(double) * v.size());
  return t.to(dtype);
}

std::vector<Tensor> glif_bwd(
    const std::optional<Tensor>& grad_spike_in, const std::optional<Tensor>& grad_v_last_in,
    const std::optional<Tensor>& grad_s_last_in, const std::optional<Tensor>& grad_u_seq_in,
    const Tensor& x_in, const std::optional<Tensor>& v0_in, const std::optional<Tensor>& s0_in,
    const Tensor& u_seq_in, const std::optional<Tensor>& alpha, const std::optional<Tensor>& beta,
    const std::optional<Tensor>& gamma, const Tensor& tau, const Tensor& v_threshold,
    const Tensor& linear_decay, const Tensor& v_subreset, const Tensor& conduct, int64_t t0,
    int64_t channel_dim, int64_t gate_mode, int64_t surrogate_id, double sg_alpha,
    bool detach_reset) {
  TORCH_CHECK_VALUE(x_in.device().is_cpu(), "sj_glif_cpu: x must be on the CPU, got ", x_in.device());
  const int64_t cd = norm_channel_dim(x_in, channel_dim);
  check_shapes(x_in, cd, alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset,
               conduct, gate_mode, v0_in, s0_in);
  check_like(grad_spike_in, x_in.sizes(), "grad_spike", "the input's shape");
  check_like(grad_u_seq_in, x_in.sizes(), "grad_u_seq", "the input's shape");
  check_like(grad_v_last_in, x_in.sizes().slice(1), "grad_v_last", "one step's shape");
  check_like(grad_s_last_in, x_in.sizes().slice(1), "grad_s_last", "one step's shape");
  TORCH_CHECK_VALUE(u_seq_in.numel() == 0 || u_seq_in.sizes() == x_in.sizes(),
              "sj_glif_cpu: u_seq must be empty (recompute) or have the input's shape ",
              x_in.sizes(), ", got ", u_seq_in.sizes());
  const Tensor x = x_in.contiguous();
  const auto cdt = compute_type(x);
  const int64_t T = x.size(0);
  const bool layerwise = tau.dim() == 0;
  const int64_t C = layerwise ? 1 : tau.size(0);
  const bool recompute = u_seq_in.numel() == 0;
  const Layout l = make_layout(x, cd, layerwise, C, kMaxTile);
  const Raw r =
      read_raw(alpha, beta, gamma, tau, v_threshold, linear_decay, v_subreset, conduct, t0, T);
  const Coef c = coefficients(r, gate_mode);
  const auto step = x.sizes().slice(1);
  const auto copt = x.options().dtype(cdt);

  auto grad_or_empty = [&](const std::optional<Tensor>& g, at::ScalarType dt) {
    if (!g.has_value() || !g->defined()) return Tensor();
    return g->to(dt).contiguous();
  };
  const Tensor gspk = grad_or_empty(grad_spike_in, x.scalar_type());
  const Tensor gv = grad_or_empty(grad_v_last_in, cdt);
  const Tensor gsl = grad_or_empty(grad_s_last_in, cdt);
  const Tensor gu = grad_or_empty(grad_u_seq_in, cdt);
  const Tensor u_seq = recompute ? Tensor() : u_seq_in.to(cdt).contiguous();
  const Tensor v0 = opt_state(v0_in, cdt), s0 = opt_state(s0_in, cdt);

  Tensor dx = empty_output(x.sizes(), x.options());
  // an initial state given as None (zero) has no gradient slot: none is written
  const bool want_dv0 = v0.defined(), want_ds0 = s0.defined();
  Tensor dv0 = want_dv0 ? at::empty(step, copt) : at::empty({0}, copt);
  Tensor ds0 = want_ds0 ? at::empty(step, copt) : at::empty({0}, copt);

  // work items: fixed runs of tiles (independent of the thread count), each with its own
  // float64 accumulators [kSums + T, P]
  const int64_t rows = kSums + T;
  const int64_t item_bytes = rows * l.P * int64_t(sizeof(double));
  // (up to 64 items, enough for the threads of one socket; about 512 KiB of accumulators,
  // at least 16 items: a buffer of this thread, reused from call to call)
  const int64_t n_items =
      l.ntiles == 0 ? 0
                    : std::min<int64_t>({l.ntiles, 64,
                                         std::max<int64_t>(16, (int64_t(512) << 10) / item_bytes)});
  static thread_local std::vector<double> accd_buffer;
  accd_buffer.assign(n_items * rows * l.P, 0.0);
  std::vector<double>& accd = accd_buffer;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sj_glif_cpu_bwd", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    const Tables<acc_t> tb = make_tables<acc_t>(c, l);
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gsp = ptr_or_null<scalar_t>(gspk);
    const acc_t* gvp = ptr_or_null<acc_t>(gv);
    const acc_t* gslp = ptr_or_null<acc_t>(gsl);
    const acc_t* gup = ptr_or_null<acc_t>(gu);
    const acc_t* usp = ptr_or_null<acc_t>(u_seq);
    const acc_t* v0p = ptr_or_null<acc_t>(v0);
    const acc_t* s0p = ptr_or_null<acc_t>(s0);
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    acc_t* dv0p = want_dv0 ? dv0.data_ptr<acc_t>() : nullptr;
    acc_t* ds0p = want_ds0 ? ds0.data_ptr<acc_t>() : nullptr;
    const acc_t a = acc_t(sg_alpha);
    const auto tile_vec = pick_bwd<acc_t, acc_t, true>(surrogate_id);
    const auto tile_sca = pick_bwd<acc_t, acc_t, false>(surrogate_id);
    constexpr bool kDirect = std::is_same_v<scalar_t, acc_t>;  // else convert per tile
    const int64_t grain = l.N * T < 16384 ? std::max<int64_t>(n_items, 1) : 1;
    at::parallel_for(0, n_items, grain, [&](int64_t ib, int64_t ie) {
      const int64_t cap = l.cap;
      // tiles folded together: channel-varying tiles of one segment (see kFoldGroup), else 1
      const bool group = l.vec && l.nseg <= kFoldSegs;
      const int64_t group_tiles = group ? kFoldGroup : 1;
      std::vector<acc_t> accf((group ? l.nseg : 1) * rows * cap), zeros(cap, acc_t(0)), sink(cap);
      std::vector<int64_t> grouped(group ? l.nseg : 1);
      std::vector<acc_t> scratch((3 * T + 2) * kBwdLanes<acc_t>);
      std::vector<acc_t> xb(kDirect ? 0 : T * cap), gb(kDirect ? 0 : T * cap);
      std::vector<acc_t> dxb(kDirect ? 0 : T * cap);
      for (int64_t item = ib; item < ie; ++item) {
        double* ad = accd.data() + item * rows * l.P;
        const int64_t tb_begin = item * l.ntiles / n_items;
        const int64_t tb_end = (item + 1) * l.ntiles / n_items;
        std::fill(grouped.begin(), grouped.end(), 0);
        for (int64_t i = tb_begin; i < tb_end; ++i) {
          int64_t base, len, cpos;
          l.tile(i, base, len, cpos);
          const int64_t seg = group ? i % l.nseg : 0;
          acc_t* acc = accf.data() + seg * rows * cap;
          const int64_t width = l.vec ? len : kBwdLanes<acc_t>;  // accf row length
          if (grouped[seg] == 0) std::fill(acc, acc + rows * width, acc_t(0));
          const acc_t *xt, *gt;
          acc_t* dxt;
          int64_t xs, gs, dxs;
          if constexpr (kDirect) {
            // (same types; see the forward)
            xt = reinterpret_cast<const acc_t*>(xp) + base, xs = l.N;
            dxt = reinterpret_cast<acc_t*>(dxp) + base, dxs = l.N;
            gt = gsp ? reinterpret_cast<const acc_t*>(gsp) + base : zeros.data();
            gs = gsp ? l.N : 0;
          } else {
            to_compute(xp + base, l.N, xb.data(), T, len);
            xt = xb.data(), xs = len, dxt = dxb.data(), dxs = len;
            if (gsp) to_compute(gsp + base, l.N, gb.data(), T, len);
            gt = gsp ? gb.data() : zeros.data(), gs = gsp ? len : 0;
          }
          (l.vec ? tile_vec : tile_sca)(
              xt, xs, gt, gs, gup ? gup + base : zeros.data(), gup ? l.N : 0,
              usp ? usp + base : nullptr, v0p ? v0p + base : zeros.data(),
              s0p ? s0p + base : zeros.data(), gvp ? gvp + base : zeros.data(),
              gslp ? gslp + base : zeros.data(), T, l.N, len, tb, cpos, a, detach_reset, dxt, dxs,
              dv0p ? dv0p + base : sink.data(), ds0p ? ds0p + base : sink.data(), acc,
              scratch.data());
          if constexpr (!kDirect) from_compute(dxb.data(), dxp + base, l.N, T, len);
          if (++grouped[seg] == group_tiles || i + l.nseg >= tb_end) {
            fold(acc, rows, width, l.vec, ad + cpos, l.P);
            grouped[seg] = 0;
          }
        }
      }
    });
  });

  // items in order, then positions in order: a fixed summation order
  std::vector<double> sums(rows * C, 0.0);
  const int64_t rep = l.vec ? l.inner : 1;
  for (int64_t item = 0; item < n_items; ++item) {
    const double* ad = accd.data() + item * rows * l.P;
    for (int64_t k = 0; k < rows; ++k) {
      const double* row = ad + k * l.P;  // [C, rep], or [P] for one channel
      double* out = sums.data() + k * C;
      if (C == 1) {
        for (int64_t p = 0; p < l.P; ++p) out[0] += row[p];
      } else {
        for (int64_t ch = 0; ch < C; ++ch) {
          for (int64_t r = 0; r < rep; ++r) out[ch] += row[ch * rep + r];
        }
      }
    }
  }
  auto g = raw_grads(sums, r, c, gate_mode);

  std::vector<Tensor> out{dx, dv0, ds0};
  const std::optional<Tensor>* gates[3] = {&alpha, &beta, &gamma};
  const Tensor* params[4] = {&tau, &v_threshold, &linear_decay, &v_subreset};
  for (int i = 0; i < 3; ++i) {
    const auto& p = *gates[i];
    if (!p.has_value() || !p->defined()) {
      out.push_back(at::zeros_like(tau));
    } else if (gate_mode == 2) {
      out.push_back(at::zeros_like(*p));
    } else {
      out.push_back(from_vec(g[i], p->sizes(), p->scalar_type()));
    }
  }
  for (int i = 0; i < 4; ++i) out.push_back(from_vec(g[3 + i], params[i]->sizes(), params[i]->scalar_type()));
  Tensor dk = at::zeros_like(conduct);
  std::vector<int64_t> kshape{T};
  if (!layerwise) kshape.push_back(C);
  dk.narrow(0, t0, T).copy_(from_vec(g[7], kshape, conduct.scalar_type()));
  out.push_back(dk);
  return out;
}

}  // namespace

TORCH_LIBRARY(sj_glif_cpu, m) {
  m.def(
      "fwd(Tensor x, Tensor? v0, Tensor? s0, Tensor? alpha, Tensor? beta, Tensor? gamma, "
      "Tensor tau, Tensor v_threshold, Tensor linear_decay, Tensor v_subreset, Tensor conduct, "
      "int t0, int channel_dim, int gate_mode, bool store_u) -> (Tensor, Tensor, Tensor, Tensor)",
      &glif_fwd);
  m.def(
      "bwd(Tensor? grad_spike, Tensor? grad_v_last, Tensor? grad_s_last, Tensor? grad_u_seq, "
      "Tensor x, Tensor? v0, Tensor? s0, Tensor u_seq, Tensor? alpha, Tensor? beta, "
      "Tensor? gamma, Tensor tau, Tensor v_threshold, Tensor linear_decay, Tensor v_subreset, "
      "Tensor conduct, int t0, int channel_dim, int gate_mode, int surrogate_id, float sg_alpha, "
      "bool detach_reset) -> Tensor[]",
      &glif_bwd);
}
