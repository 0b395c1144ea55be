// The CPU kernels of carafe_mm::carafe_forward and carafe_mm::carafe_backward,
// as templates over an instruction set (isa.h) and the tensors' dtype.
//
// Shape letters as in ../carafe.h: N, C, G, H×W, s (scale factor), k, r = k/2,
// Ho×Wo = sH×sW, t = ky·k + kx, Cg = C / G. Besides:
//   Wv = Wo rounded up to whole pairs of SIMD vectors: the width of a buffer
//        row, which the inner loops walk without a remainder
//   Wh = Wv + 2·s·r: a buffer row with s·r zeros of halo on either side
//
// Both kernels work on small row buffers in the accumulation type acc_t
// (float for float/half/bfloat16, double for double), so one vectorised inner
// loop serves every dtype, reads of half types accumulate in fp32, and the
// zero padding of CARAFE is explicit zeros in the buffers (no bounds checks in
// the inner loops).
//
// Forward (output-stationary): a work item is (n, g, a band of input rows).
// Its masks are converted once into a buffer and stay in cache while the
// channels of the group stream through in blocks of kForwardChannelBlock:
// each block's feature rows are upsampled in x (nearest, zero padded), so
// that tap (ky, kx) of output pixel ox is upsampled[row + ky][ox + s·kx], a
// unit-stride load, and the s output rows of an input row share each load.
// float outputs are written with non-temporal stores (see store_output_rows).
//
// Backward (input-stationary): a work item is (n, g, a band of input rows).
// Every product grad_output · masks of tap (ky, kx) at output pixel (oy, ox)
// goes to exactly one input pixel, (oy/s + ky - r, ox/s + kx - r), so the
// items own disjoint outputs: the gradient of their features rows, and the
// grad_masks rows oy = s·(iy + r - ky) + py of every tap. No atomics, no
// reduction buffers, deterministic. The grad_output rows a band needs (its
// own plus r rows of halo on either side) are converted once per channel
// block.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "isa.h"
#include "tuning.h"

#if !defined(__GNUC__) && !defined(__clang__)
#error "carafe_mm's CPU kernel uses GCC/Clang vector extensions"
#endif

namespace carafe_mm {
namespace cpu {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Geometry {
  int64_t N, C, H, W, G, k, s;
  int64_t Cg() const { return C / G; }
  int64_t r() const { return k / 2; }
  int64_t k2() const { return k * k; }
  int64_t Ho() const { return s * H; }
  int64_t Wo() const { return s * W; }
  // Wv for SIMD vectors of `lanes` values.
  int64_t Wv(int64_t lanes) const {
    return ceil_div(Wo(), 2 * lanes) * 2 * lanes;
  }
  // Wh for SIMD vectors of `lanes` values.
  int64_t Wh(int64_t lanes) const { return Wv(lanes) + 2 * s * r(); }
};

// A work item: input rows [iy0, iy1) (a band) of group g of sample n.
struct WorkItem {
  int64_t n, g, iy0, iy1;
};

// The grain of at::parallel_for over work items of `item_macs` each (a
// double: the product of sizes need not fit int64).
inline int64_t parallel_grain(double item_macs) {
  return item_macs >= kMinParallelMacs
             ? 1
             : static_cast<int64_t>(kMinParallelMacs /
                                    std::max(item_macs, 1.0));
}

// Input rows per work item: as many as fit `budget` bytes of per-row buffers,
// but few enough to give every thread several items.
inline int64_t choose_band(const Geometry& geo, int64_t row_bytes,
                           int64_t budget) {
  int64_t band = std::max<int64_t>(1, budget / row_bytes);
  band = std::min(band, geo.H);
  const int64_t want_items = kItemsPerThread * at::get_num_threads();
  while (band > 1 && geo.N * geo.G * ceil_div(geo.H, band) < want_items) {
    band = ceil_div(band, 2);
  }
  return band;
}

// Runs item(work, buffers) for every work item of a kernel, in parallel;
// each parallel task has its own Buffers(geo, band).
template <typename Buffers, typename Item>
void for_each_work_item(const Geometry& geo, int64_t band, int64_t grain,
                        const Item& item) {
  const int64_t bands = ceil_div(geo.H, band);
  at::parallel_for(
      0, geo.N * geo.G * bands, grain, [&](int64_t begin, int64_t end) {
        Buffers buf(geo, band);
        for (int64_t i = begin; i < end; ++i) {
          const int64_t b = i % bands;
          const WorkItem work{i / (bands * geo.G), (i / bands) % geo.G,
                              b * band, std::min(geo.H, (b + 1) * band)};
          item(work, buf);
        }
      });
}

// A 32-byte SIMD vector of T (8 floats or 4 doubles).
template <typename T>
struct Simd {
  typedef T type __attribute__((vector_size(32)));
  static constexpr int64_t lanes = 32 / sizeof(T);
};

template <typename V, typename T>
[[gnu::always_inline]] inline V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename T>
[[gnu::always_inline]] inline void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// ---------------------------------------------------------------------------
// Row conversions between the tensors (scalar_t) and the buffers (acc_t)

// dst[0, n) = src[0, n) as acc_t; dst[n, n_padded) = 0.
template <typename acc_t, typename scalar_t>
[[gnu::always_inline]] inline void load_row(const scalar_t* src, acc_t* dst,
                                            int64_t n, int64_t n_padded) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<acc_t>(src[i]);
  std::fill(dst + n, dst + n_padded, acc_t(0));
}

// An output-resolution row with halo: `pad` zeros, the row, zeros up to
// `width`.
template <typename acc_t, typename scalar_t>
[[gnu::always_inline]] inline void load_haloed_row(const scalar_t* src,
                                                   acc_t* dst, int64_t n,
                                                   int64_t pad, int64_t width) {
  std::fill(dst, dst + pad, acc_t(0));
  load_row(src, dst + pad, n, width - pad);
}

// dst[s·ix + p] = src[ix] for p < s. S > 0 fixes s at compile time so that
// the copy vectorises.
template <int S, typename acc_t, typename scalar_t>
[[gnu::always_inline]] inline void upsample_row(const scalar_t* src, acc_t* dst,
                                                int64_t W, int64_t s) {
  const int64_t step = S > 0 ? S : s;
  for (int64_t ix = 0; ix < W; ++ix) {
    const acc_t v = static_cast<acc_t>(src[ix]);
    for (int64_t p = 0; p < step; ++p) dst[step * ix + p] = v;
  }
}

// `pad` zeros, the row upsampled s times in x, zeros up to `width`.
template <typename acc_t, typename scalar_t>
[[gnu::always_inline]] inline void load_upsampled_row(const scalar_t* src,
                                                      acc_t* dst, int64_t W,
                                                      int64_t s, int64_t pad,
                                                      int64_t width) {
  std::fill(dst, dst + pad, acc_t(0));
  switch (s) {
    case 1:
      upsample_row<1>(src, dst + pad, W, s);
      break;
    case 2:
      upsample_row<2>(src, dst + pad, W, s);
      break;
    case 3:
      upsample_row<3>(src, dst + pad, W, s);
      break;
    case 4:
      upsample_row<4>(src, dst + pad, W, s);
      break;
    default:
      upsample_row<0>(src, dst + pad, W, s);
  }
  std::fill(dst + pad + s * W, dst + width, acc_t(0));
}

template <typename scalar_t, typename acc_t>
[[gnu::always_inline]] inline void store_row(const acc_t* src, scalar_t* dst,
                                             int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<scalar_t>(src[i]);
}

// The output rows [0, rows) of one channel, src rows Wv apart, to the
// contiguous dst. Where the ISA streams stores, float outputs of
// kStreamMinBytes or more go around the caches (nothing reads them soon, and
// the write-allocate reads would double the traffic): packed into `staging`,
// then streamed in one piece, so that the non-temporal stores fill whole
// cache lines.
template <typename Isa, typename scalar_t, typename acc_t>
[[gnu::always_inline]] inline void store_output_rows(const acc_t* src,
                                                     scalar_t* dst,
                                                     int64_t rows, int64_t Wo,
                                                     int64_t Wv,
                                                     acc_t* staging) {
  if constexpr (Isa::kStreamStores && std::is_same_v<scalar_t, float> &&
                std::is_same_v<acc_t, float>) {
    const int64_t n = rows * Wo;
    if (n * 4 >= kStreamMinBytes) {
      for (int64_t y = 0; y < rows; ++y) {
        std::memcpy(staging + y * Wo, src + y * Wv, Wo * sizeof(float));
      }
      int64_t i = 0;
      for (; i < n && reinterpret_cast<uintptr_t>(dst + i) % 32 != 0; ++i) {
        dst[i] = staging[i];
      }
      for (; i + 8 <= n; i += 8) Isa::stream_store_8(dst + i, staging + i);
      for (; i < n; ++i) dst[i] = staging[i];
      return;
    }
  }
  for (int64_t y = 0; y < rows; ++y) store_row(src + y * Wv, dst + y * Wo, Wo);
}

// dst[ix] = Σ_p src[s·ix + p], p < s: the gradient of an upsampled row.
template <int S, typename scalar_t, typename acc_t>
[[gnu::always_inline]] inline void pool_row_s(const acc_t* src, scalar_t* dst,
                                              int64_t W, int64_t s) {
  const int64_t step = S > 0 ? S : s;
  for (int64_t ix = 0; ix < W; ++ix) {
    acc_t sum = 0;
    for (int64_t p = 0; p < step; ++p) sum += src[step * ix + p];
    dst[ix] = static_cast<scalar_t>(sum);
  }
}

template <typename scalar_t, typename acc_t>
[[gnu::always_inline]] inline void pool_row(const acc_t* src, scalar_t* dst,
                                            int64_t W, int64_t s) {
  switch (s) {
    case 1:
      return store_row(src, dst, W);
    case 2:
      return pool_row_s<2>(src, dst, W, s);
    default:
      return pool_row_s<0>(src, dst, W, s);
  }
}

// ---------------------------------------------------------------------------
// Forward

template <typename acc_t>
struct ForwardBuffers {
  // (k², s·band, Wv): the masks of the band's output rows.
  std::vector<acc_t> masks;
  // (CB, band + 2r, Wh): upsampled[c][u][j] =
  // features[c][iy0 - r + u][(j - s·r) / s], zero outside the features.
  std::vector<acc_t> upsampled;
  // (CB, s·band, Wv): the output rows of the band.
  std::vector<acc_t> output;
  // (s·band·Wo): one channel's output rows, packed for streaming.
  std::vector<acc_t> staging;

  ForwardBuffers(const Geometry& geo, int64_t band) {
    constexpr int64_t L = Simd<acc_t>::lanes;
    const int64_t s = geo.s, Wv = geo.Wv(L);
    masks.resize(geo.k2() * s * band * Wv);
    upsampled.resize(kForwardChannelBlock * (band + 2 * geo.r()) * geo.Wh(L));
    output.resize(kForwardChannelBlock * s * band * Wv);
    staging.resize(s * band * geo.Wo());
  }
};

// Forward of one channel block over one band.
//   masks      (k², rows, Wv)
//   upsampled  (CB, up_rows, Wh)
//   output     (CB, rows, Wv)
// Output row y of the band reads upsampled rows y / s + ky (the band starts
// at an input row boundary). With S = s fixed at compile time, the s output
// rows of an input row are computed together and share each load of
// upsampled; S = 0 handles any s one output row at a time. NV vectors of x
// per step.
template <typename Isa, typename T, int CB, int S, int NV>
[[gnu::always_inline]] inline void forward_block(const T* masks,
                                                 const T* upsampled, T* output,
                                                 int64_t rows, int64_t up_rows,
                                                 int64_t Wv, int64_t k,
                                                 int64_t s) {
  using V = typename Simd<T>::type;
  constexpr int64_t L = Simd<T>::lanes;
  constexpr int SR = S > 0 ? S : 1;    // output rows per step
  const int64_t step = S > 0 ? S : s;  // x distance between taps
  const int64_t Wh = Wv + 2 * s * (k / 2);
  const int64_t tap_plane = rows * Wv;
  const int64_t up_plane = up_rows * Wh;
  for (int64_t y = 0; y < rows; y += SR) {
    for (int64_t ky = 0; ky < k; ++ky) {
      // Tap row ky of output rows [y, y + SR): reads upsampled row
      // y / s + ky; the partial sums wait in output between tap rows.
      const T* up_row = upsampled + (y / s + ky) * Wh;
      const T* mask_row = masks + ky * k * tap_plane + y * Wv;
      for (int64_t x = 0; x < Wv; x += NV * L) {
        V acc[CB][SR][NV];
#pragma GCC unroll 16
        for (int c = 0; c < CB; ++c)
#pragma GCC unroll 16
          for (int py = 0; py < SR; ++py)
#pragma GCC unroll 16
            for (int v = 0; v < NV; ++v)
              acc[c][py][v] =
                  ky == 0
                      ? V{}
                      : load<V>(output + (c * rows + y + py) * Wv + x + v * L);
        const T* m = mask_row + x;
        const T* u = up_row + x;
        for (int64_t kx = 0; kx < k; ++kx, m += tap_plane, u += step) {
          V uv[CB][NV];
#pragma GCC unroll 16
          for (int c = 0; c < CB; ++c)
#pragma GCC unroll 16
            for (int v = 0; v < NV; ++v) {
              uv[c][v] = load<V>(u + c * up_plane + v * L);
              Isa::keep_in_register(uv[c][v]);
            }
#pragma GCC unroll 16
          for (int py = 0; py < SR; ++py) {
#pragma GCC unroll 16
            for (int v = 0; v < NV; ++v) {
              const V mv = load<V>(m + py * Wv + v * L);
#pragma GCC unroll 16
              for (int c = 0; c < CB; ++c) acc[c][py][v] += mv * uv[c][v];
            }
          }
        }
#pragma GCC unroll 16
        for (int c = 0; c < CB; ++c)
#pragma GCC unroll 16
          for (int py = 0; py < SR; ++py)
#pragma GCC unroll 16
            for (int v = 0; v < NV; ++v)
              store(output + (c * rows + y + py) * Wv + x + v * L,
                    acc[c][py][v]);
      }
    }
  }
}

template <typename Isa, typename T, int CB>
[[gnu::always_inline]] inline void forward_block_s(const T* masks,
                                                   const T* upsampled,
                                                   T* output, int64_t rows,
                                                   int64_t up_rows, int64_t Wv,
                                                   int64_t k, int64_t s) {
  switch (s) {
    case 1:
      return forward_block<Isa, T, CB, 1, 2>(masks, upsampled, output, rows,
                                             up_rows, Wv, k, s);
    case 2:
      return forward_block<Isa, T, CB, 2, 1>(masks, upsampled, output, rows,
                                             up_rows, Wv, k, s);
    default:
      return forward_block<Isa, T, CB, 0, 2>(masks, upsampled, output, rows,
                                             up_rows, Wv, k, s);
  }
}

template <typename Isa, typename T>
[[gnu::always_inline]] inline void forward_block_any(
    int cb, const T* masks, const T* upsampled, T* output, int64_t rows,
    int64_t up_rows, int64_t Wv, int64_t k, int64_t s) {
  static_assert(kForwardChannelBlock == 4,
                "the cases below cover blocks of 1..4");
  switch (cb) {
    case 4:
      return forward_block_s<Isa, T, 4>(masks, upsampled, output, rows, up_rows,
                                        Wv, k, s);
    case 3:
      return forward_block_s<Isa, T, 3>(masks, upsampled, output, rows, up_rows,
                                        Wv, k, s);
    case 2:
      return forward_block_s<Isa, T, 2>(masks, upsampled, output, rows, up_rows,
                                        Wv, k, s);
    default:
      return forward_block_s<Isa, T, 1>(masks, upsampled, output, rows, up_rows,
                                        Wv, k, s);
  }
}

// The forward work item `work`: loads its masks, then per channel block
// loads the upsampled feature rows, computes and stores the output rows.
template <typename Isa, typename scalar_t>
[[gnu::always_inline]] inline void forward_item(
    const scalar_t* features, const scalar_t* masks, scalar_t* output,
    const Geometry& geo, const WorkItem& work,
    ForwardBuffers<at::opmath_type<scalar_t>>& buf) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t L = Simd<acc_t>::lanes;
  const int64_t k = geo.k, s = geo.s, r = geo.r(), k2 = geo.k2();
  const int64_t H = geo.H, W = geo.W, Ho = geo.Ho(), Wo = geo.Wo();
  const int64_t Cg = geo.Cg(), Wv = geo.Wv(L), Wh = geo.Wh(L);
  const int64_t iy0 = work.iy0, iy1 = work.iy1;
  const int64_t rows = s * (iy1 - iy0), up_rows = iy1 - iy0 + 2 * r;
  const int64_t oy0 = s * iy0;
  acc_t* masks_buf = buf.masks.data();
  acc_t* upsampled_buf = buf.upsampled.data();
  acc_t* output_buf = buf.output.data();

  const scalar_t* masks_src = masks + (work.n * geo.G + work.g) * k2 * Ho * Wo;
  for (int64_t t = 0; t < k2; ++t) {
    for (int64_t y = 0; y < rows; ++y) {
      load_row(masks_src + (t * Ho + oy0 + y) * Wo,
               masks_buf + (t * rows + y) * Wv, Wo, Wv);
    }
  }
  for (int64_t c0 = 0; c0 < Cg; c0 += kForwardChannelBlock) {
    const int cb =
        static_cast<int>(std::min<int64_t>(kForwardChannelBlock, Cg - c0));
    const int64_t c_first = work.n * geo.C + work.g * Cg + c0;
    for (int ci = 0; ci < cb; ++ci) {
      const scalar_t* features_src = features + (c_first + ci) * H * W;
      for (int64_t u = 0; u < up_rows; ++u) {
        acc_t* dst = upsampled_buf + (ci * up_rows + u) * Wh;
        const int64_t iy = iy0 - r + u;
        if (iy < 0 || iy >= H) {
          std::fill(dst, dst + Wh, acc_t(0));
        } else {
          load_upsampled_row(features_src + iy * W, dst, W, s, s * r, Wh);
        }
      }
    }
    forward_block_any<Isa>(cb, masks_buf, upsampled_buf, output_buf, rows,
                           up_rows, Wv, k, s);
    for (int ci = 0; ci < cb; ++ci) {
      store_output_rows<Isa>(output_buf + ci * rows * Wv,
                             output + ((c_first + ci) * Ho + oy0) * Wo, rows,
                             Wo, Wv, buf.staging.data());
    }
  }
  Isa::store_fence();  // order the streamed stores
}

template <typename Isa, typename scalar_t>
void forward_kernel(const scalar_t* features, const scalar_t* masks,
                    scalar_t* output, const Geometry& geo) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t L = Simd<acc_t>::lanes;
  const int64_t k2 = geo.k2(), s = geo.s;
  const int64_t band = choose_band(geo, k2 * s * geo.Wv(L) * sizeof(acc_t),
                                   forward_mask_budget());
  const int64_t grain =
      parallel_grain(double(geo.Cg()) * band * s * geo.Wo() * k2);
  for_each_work_item<ForwardBuffers<acc_t>>(
      geo, band, grain, [&](const WorkItem& work, ForwardBuffers<acc_t>& buf) {
        Isa::template run<forward_item<Isa, scalar_t>>(features, masks, output,
                                                       geo, work, buf);
      });
}

// ---------------------------------------------------------------------------
// Backward

template <typename acc_t>
struct BackwardBuffers {
  // (band, k², s, Wh): masks[i][t][py] = masks row oy = s·(iy + r - ky) + py
  // of input row iy = iy0 + i, with halo: position x' holds output column
  // x' - s·r.
  std::vector<acc_t> masks;
  // (band, k², s, Wh): the gradient of the same rows, accumulated.
  std::vector<acc_t> grad_masks;
  // (CB, s·(band + 2r), Wh): grad_output rows [s·(iy0 - r), s·(iy1 + r))
  // of the channel block, with halo; rows outside the output are not
  // loaded, and never read.
  std::vector<acc_t> grad_output;
  // (band, CB, Wv): upsampled[i][c][j] = features[c][iy0 + i][j / s], zero
  // past Wo.
  std::vector<acc_t> upsampled;
  // (CB, Wv): the gradient of one input row of `upsampled`.
  std::vector<acc_t> grad_upsampled;

  BackwardBuffers(const Geometry& geo, int64_t band) {
    constexpr int64_t L = Simd<acc_t>::lanes;
    const int64_t s = geo.s, Wv = geo.Wv(L), Wh = geo.Wh(L);
    masks.resize(band * geo.k2() * s * Wh);
    grad_masks.resize(band * geo.k2() * s * Wh);
    grad_output.resize(kBackwardChannelBlock * s * (band + 2 * geo.r()) * Wh);
    upsampled.resize(kBackwardChannelBlock * band * Wv);
    grad_upsampled.resize(kBackwardChannelBlock * Wv);
  }
};

// Backward of one channel block at one input row iy.
//   masks, grad_masks  (k², s, Wh) of row iy, see BackwardBuffers
//   grad_output        grad_output row s·(iy + r) of the first channel, with
//                      halo; row oy of channel c is at
//                      grad_output + c·grad_output_plane + (oy - s·(iy + r))·Wh
//   upsampled          (CB, Wv) of row iy
//   grad_upsampled     (CB, Wv) out: d loss / d upsampled
// Input column ix = j / s receives from output column ox = j + s·(r - kx)
// through tap kx, i.e. from haloed position j + s·(2r - kx).
// Only taps ky in [ky0, ky1), whose rows lie inside the output, are visited.
template <typename Isa, typename T, int CB>
[[gnu::always_inline]] inline void backward_block(
    const T* masks, T* grad_masks, const T* grad_output,
    int64_t grad_output_plane, const T* upsampled, T* grad_upsampled,
    int64_t Wv, int64_t k, int64_t s, int64_t ky0, int64_t ky1) {
  using V = typename Simd<T>::type;
  constexpr int64_t L = Simd<T>::lanes;
  const int64_t r = k / 2;
  const int64_t Wh = Wv + 2 * s * r;
  for (int64_t x = 0; x < Wv; x += L) {
    V acc[CB], u[CB];
#pragma GCC unroll 16
    for (int c = 0; c < CB; ++c) {
      acc[c] = V{};
      u[c] = load<V>(upsampled + c * Wv + x);
    }
    for (int64_t ky = ky0; ky < ky1; ++ky) {
      for (int64_t py = 0; py < s; ++py) {
        const T* g_row = grad_output + (py - ky * s) * Wh + x;
        for (int64_t kx = 0; kx < k; ++kx) {
          const int64_t shift = s * (2 * r - kx);
          const int64_t at = ((ky * k + kx) * s + py) * Wh + x + shift;
          const V m = load<V>(masks + at);
          V gm = load<V>(grad_masks + at);
#pragma GCC unroll 16
          for (int c = 0; c < CB; ++c) {
            V g = load<V>(g_row + c * grad_output_plane + shift);
            Isa::keep_in_register(g);  // one load for both products
            acc[c] += g * m;
            gm += g * u[c];
          }
          store(grad_masks + at, gm);
        }
      }
    }
#pragma GCC unroll 16
    for (int c = 0; c < CB; ++c) store(grad_upsampled + c * Wv + x, acc[c]);
  }
}

// Blocks of the backward have 4, 2 or 1 channels (see backward_block_size).
template <typename Isa, typename T>
[[gnu::always_inline]] inline void backward_block_any(
    int cb, const T* masks, T* grad_masks, const T* grad_output,
    int64_t grad_output_plane, const T* upsampled, T* grad_upsampled,
    int64_t Wv, int64_t k, int64_t s, int64_t ky0, int64_t ky1) {
  static_assert(kBackwardChannelBlock == 4, "the cases below cover 4, 2, 1");
  switch (cb) {
    case 4:
      return backward_block<Isa, T, 4>(masks, grad_masks, grad_output,
                                       grad_output_plane, upsampled,
                                       grad_upsampled, Wv, k, s, ky0, ky1);
    case 2:
      return backward_block<Isa, T, 2>(masks, grad_masks, grad_output,
                                       grad_output_plane, upsampled,
                                       grad_upsampled, Wv, k, s, ky0, ky1);
    default:
      return backward_block<Isa, T, 1>(masks, grad_masks, grad_output,
                                       grad_output_plane, upsampled,
                                       grad_upsampled, Wv, k, s, ky0, ky1);
  }
}

// The largest power of two <= min(remaining, kBackwardChannelBlock).
inline int backward_block_size(int64_t remaining) {
  int cb = 1;
  while (cb * 2 <= std::min<int64_t>(remaining, kBackwardChannelBlock)) {
    cb *= 2;
  }
  return cb;
}

// The sizes and offsets of a backward work item, worked out once.
struct BackwardItem {
  int64_t k, s, r, k2, H, W, Ho, Wo, Cg, Wv, Wh, pad;
  int64_t iy0, iy1, rows;
  // grad_output rows [grad_first, grad_first + grad_rows) are buffered.
  int64_t grad_first, grad_rows;
  // Values per input row in the masks and grad_masks buffers.
  int64_t mask_row;
  // Offset of the masks of (n, g) in the masks tensor.
  int64_t mask_offset;
  // Offset of channel 0 of (n, g) in the features tensor's channels.
  int64_t channel_offset;

  BackwardItem(const Geometry& geo, const WorkItem& work, int64_t lanes)
      : k(geo.k),
        s(geo.s),
        r(geo.r()),
        k2(geo.k2()),
        H(geo.H),
        W(geo.W),
        Ho(geo.Ho()),
        Wo(geo.Wo()),
        Cg(geo.Cg()),
        Wv(geo.Wv(lanes)),
        Wh(geo.Wh(lanes)),
        pad(s * r),
        iy0(work.iy0),
        iy1(work.iy1),
        rows(work.iy1 - work.iy0),
        grad_first(s * (work.iy0 - r)),
        grad_rows(s * (rows + 2 * r)),
        mask_row(k2 * s * Wh),
        mask_offset((work.n * geo.G + work.g) * k2 * Ho * Wo),
        channel_offset(work.n * geo.C + work.g * Cg) {}

  // Taps ky whose output rows s·(iy + r - ky) + py lie in [0, Ho).
  std::pair<int64_t, int64_t> taps_inside(int64_t iy) const {
    return {std::max<int64_t>(0, iy + r - H + 1),
            std::min<int64_t>(k, iy + r + 1)};
  }
};

// fn(row of the masks tensor, row of the masks buffer) for every mask row
// that input row iy0 + i owns: tap t of output row oy = s·(iy0 + i + r - ky)
// + py.
template <typename Fn>
[[gnu::always_inline]] inline void for_each_owned_mask_row(
    const BackwardItem& item, int64_t i, const Fn& fn) {
  const auto [ky0, ky1] = item.taps_inside(item.iy0 + i);
  for (int64_t ky = ky0; ky < ky1; ++ky) {
    const int64_t oy_base = item.s * (item.iy0 + i + item.r - ky);
    for (int64_t kx = 0; kx < item.k; ++kx) {
      const int64_t t = ky * item.k + kx;
      for (int64_t py = 0; py < item.s; ++py) {
        fn(item.mask_offset + (t * item.Ho + oy_base + py) * item.Wo,
           i * item.mask_row + (t * item.s + py) * item.Wh);
      }
    }
  }
}

// Step 1: the mask rows the band owns into buf.masks; buf.grad_masks = 0.
template <typename scalar_t, typename acc_t>
[[gnu::always_inline]] inline void load_owned_masks(
    const scalar_t* masks, const BackwardItem& item,
    BackwardBuffers<acc_t>& buf) {
  acc_t* masks_buf = buf.masks.data();
  for (int64_t i = 0; i < item.rows; ++i) {
    for_each_owned_mask_row(
        item, i, [&](int64_t tensor_row, int64_t buffer_row) {
          load_haloed_row(masks + tensor_row, masks_buf + buffer_row, item.Wo,
                          item.pad, item.Wh);
        });
  }
  std::fill(buf.grad_masks.data(),
            buf.grad_masks.data() + item.rows * item.mask_row, acc_t(0));
}

// Step 2: the grad_output rows and upsampled feature rows of channels
// [c0, c0 + cb) into buf.grad_output and buf.upsampled.
template <typename scalar_t, typename acc_t>
[[gnu::always_inline]] inline void load_channel_block(
    const scalar_t* grad_output, const scalar_t* features,
    const BackwardItem& item, int64_t c0, int cb, BackwardBuffers<acc_t>& buf) {
  acc_t* grad_output_buf = buf.grad_output.data();
  acc_t* upsampled_buf = buf.upsampled.data();
  const int64_t c_first = item.channel_offset + c0;
  for (int ci = 0; ci < cb; ++ci) {
    const scalar_t* grad_output_src =
        grad_output + (c_first + ci) * item.Ho * item.Wo;
    for (int64_t lr = 0; lr < item.grad_rows; ++lr) {
      const int64_t oy = item.grad_first + lr;
      if (oy < 0 || oy >= item.Ho) continue;
      load_haloed_row(grad_output_src + oy * item.Wo,
                      grad_output_buf + (ci * item.grad_rows + lr) * item.Wh,
                      item.Wo, item.pad, item.Wh);
    }
    for (int64_t i = 0; i < item.rows; ++i) {
      load_upsampled_row(
          features + ((c_first + ci) * item.H + item.iy0 + i) * item.W,
          upsampled_buf + (i * cb + ci) * item.Wv, item.W, item.s, 0, item.Wv);
    }
  }
}

// Step 3: for each input row of the band, the gradient of the features
// (stored to grad_features) and the channel block's share of the gradient
// of the masks (accumulated in buf.grad_masks).
template <typename Isa, typename scalar_t, typename acc_t>
[[gnu::always_inline]] inline void backward_channel_block(
    scalar_t* grad_features, const BackwardItem& item, int64_t c0, int cb,
    BackwardBuffers<acc_t>& buf) {
  const int64_t c_first = item.channel_offset + c0;
  acc_t* grad_upsampled = buf.grad_upsampled.data();
  for (int64_t i = 0; i < item.rows; ++i) {
    const int64_t iy = item.iy0 + i;
    const auto [ky0, ky1] = item.taps_inside(iy);
    // Row s·(iy + r) of the buffer holds output row s·(iy + r) - grad_first.
    const acc_t* grad_output_row =
        buf.grad_output.data() + item.s * (i + 2 * item.r) * item.Wh;
    backward_block_any<Isa>(cb, buf.masks.data() + i * item.mask_row,
                            buf.grad_masks.data() + i * item.mask_row,
                            grad_output_row, item.grad_rows * item.Wh,
                            buf.upsampled.data() + i * cb * item.Wv,
                            grad_upsampled, item.Wv, item.k, item.s, ky0, ky1);
    for (int ci = 0; ci < cb; ++ci) {
      pool_row(grad_upsampled + ci * item.Wv,
               grad_features + ((c_first + ci) * item.H + iy) * item.W, item.W,
               item.s);
    }
  }
}

// Step 4: buf.grad_masks to the grad_masks rows the band owns.
template <typename scalar_t, typename acc_t>
[[gnu::always_inline]] inline void store_owned_grad_masks(
    scalar_t* grad_masks, const BackwardItem& item,
    const BackwardBuffers<acc_t>& buf) {
  const acc_t* grad_masks_buf = buf.grad_masks.data();
  for (int64_t i = 0; i < item.rows; ++i) {
    for_each_owned_mask_row(item, i,
                            [&](int64_t tensor_row, int64_t buffer_row) {
                              store_row(grad_masks_buf + buffer_row + item.pad,
                                        grad_masks + tensor_row, item.Wo);
                            });
  }
}

// Step 5: zeros to the grad_masks rows of taps that only ever see the zero
// padding above the first or below the last input row (virtual input rows
// iv < 0 or iv >= H), which belong to the first and the last band.
template <typename scalar_t>
[[gnu::always_inline]] inline void zero_padding_grad_masks(
    scalar_t* grad_masks, const BackwardItem& item) {
  scalar_t* grad_masks_dst = grad_masks + item.mask_offset;
  auto zero_virtual_row = [&](int64_t iv) {
    for (int64_t ky = 0; ky < item.k; ++ky) {
      const int64_t oy_base = item.s * (iv + item.r - ky);
      if (oy_base < 0 || oy_base >= item.Ho) continue;
      for (int64_t kx = 0; kx < item.k; ++kx) {
        scalar_t* row =
            grad_masks_dst + ((ky * item.k + kx) * item.Ho + oy_base) * item.Wo;
        std::fill(row, row + item.s * item.Wo, scalar_t(0));
      }
    }
  };
  if (item.iy0 == 0) {
    for (int64_t iv = -item.r; iv < 0; ++iv) zero_virtual_row(iv);
  }
  if (item.iy1 == item.H) {
    for (int64_t iv = item.H; iv < item.H + item.r; ++iv) zero_virtual_row(iv);
  }
}

// The backward work item `work`, in the steps above.
template <typename Isa, typename scalar_t>
[[gnu::always_inline]] inline void backward_item(
    const scalar_t* grad_output, const scalar_t* features,
    const scalar_t* masks, scalar_t* grad_features, scalar_t* grad_masks,
    const Geometry& geo, const WorkItem& work,
    BackwardBuffers<at::opmath_type<scalar_t>>& buf) {
  using acc_t = at::opmath_type<scalar_t>;
  const BackwardItem item(geo, work, Simd<acc_t>::lanes);
  load_owned_masks(masks, item, buf);
  for (int64_t c0 = 0, cb = 0; c0 < item.Cg; c0 += cb) {
    cb = backward_block_size(item.Cg - c0);
    load_channel_block(grad_output, features, item, c0, cb, buf);
    backward_channel_block<Isa>(grad_features, item, c0, cb, buf);
  }
  store_owned_grad_masks(grad_masks, item, buf);
  zero_padding_grad_masks(grad_masks, item);
}

template <typename Isa, typename scalar_t>
void backward_kernel(const scalar_t* grad_output, const scalar_t* features,
                     const scalar_t* masks, scalar_t* grad_features,
                     scalar_t* grad_masks, const Geometry& geo) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t L = Simd<acc_t>::lanes;
  const int64_t k2 = geo.k2(), s = geo.s;
  const int64_t band = choose_band(geo, 2 * k2 * s * geo.Wh(L) * sizeof(acc_t),
                                   backward_mask_budget());
  // Two multiply-adds per tap and output element: one for each gradient.
  const int64_t grain =
      parallel_grain(2.0 * geo.Cg() * band * s * geo.Wo() * k2);
  for_each_work_item<BackwardBuffers<acc_t>>(
      geo, band, grain, [&](const WorkItem& work, BackwardBuffers<acc_t>& buf) {
        Isa::template run<backward_item<Isa, scalar_t>>(
            grad_output, features, masks, grad_features, grad_masks, geo, work,
            buf);
      });
}

}  // namespace cpu
}  // namespace carafe_mm
