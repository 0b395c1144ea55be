// CPU kernels of carafe_mm::carafe_forward and carafe_mm::carafe_backward.
//
// Shape letters as in ../carafe.h: N, C, G, H×W, s (scale factor), k, r = k/2,
// Ho×Wo = sH×sW, t = ky·k + kx.
//
// Both kernels work on small row buffers in the accumulation type acc_t
// (float for float/half/bfloat16, double for double), so one vectorised inner
// loop serves every dtype, reads of half types accumulate in fp32, and the
// zero padding of CARAFE is explicit zeros in the buffers (no bounds checks in
// the inner loops). Rows are padded to Wq, a multiple of two SIMD vectors.
//
// Forward (output-stationary): a work item is (n, g, a band of input rows).
// Its masks are converted once into `mb` and stay in cache while the
// channels of the group stream through in blocks of kBlock: each block's
// feature rows are upsampled in x (nearest, zero padded) into `ub`, so that
// tap (ky, kx) of output pixel ox is ub[row + ky][ox + s·kx], a unit-stride
// load.
//
// Backward (input-stationary): a work item is (n, g, one input row iy). Every
// product grad_output · masks of tap (ky, kx) at output pixel (oy, ox) goes to
// exactly one input pixel, so the work items own disjoint outputs: the
// gradient of the features row iy, and the grad_masks rows
// oy = s·(iy + r - ky) + py of every tap. No atomics, no reduction buffers,
// deterministic.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../carafe.h"

#if !defined(__GNUC__) && !defined(__clang__)
#error "carafe_mm's CPU kernel uses GCC/Clang vector extensions"
#endif

// The inner loops are compiled twice, for AVX2+FMA and for the baseline
// ISA, and the loader picks the best one for the machine (GCC ifunc).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CARAFE_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CARAFE_MULTIVERSION
#endif
#define CARAFE_INLINE inline __attribute__((always_inline))

namespace carafe_mm {
namespace {

// Channels of one group processed together; they share each mask load.
constexpr int kBlock = 4;
// Target size of the forward's mask buffer, so that it stays in L2.
constexpr int64_t kMaskBufferBytes = 256 * 1024;

// A 32-byte SIMD vector of T (8 floats or 4 doubles).
template <typename T>
struct Simd {
  typedef T type __attribute__((vector_size(32)));
  static constexpr int64_t lanes = 32 / sizeof(T);
};

template <typename V, typename T>
CARAFE_INLINE V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename T>
CARAFE_INLINE void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Geometry {
  int64_t N, C, H, W, G, k, s;
  int64_t Cg() const { return C / G; }
  int64_t r() const { return k / 2; }
  int64_t k2() const { return k * k; }
  int64_t Ho() const { return s * H; }
  int64_t Wo() const { return s * W; }
  // Output width padded to whole pairs of SIMD vectors.
  int64_t Wq(int64_t lanes) const { return ceil_div(Wo(), 2 * lanes) * 2 * lanes; }
  // A padded row: `s·r` zeros on either side of Wq values.
  int64_t Wp(int64_t lanes) const { return Wq(lanes) + 2 * s * r(); }
};

// ---------------------------------------------------------------------------
// Inner loops (acc_t only)

// Forward of one channel block over one band.
//   mb (k², rows, Wq)    masks of the band's output rows
//   ub (CB, urows, Wp)   ub[c][u][j] = features[c][iy0 - r + u][(j - s·r) / s]
//                        (zero outside the features)
//   ob (CB, rows, Wq)    output rows of the band
// Output row y of the band reads ub rows y / s + ky (the band starts at an
// input row boundary).
template <typename T, int CB>
CARAFE_INLINE void forward_block(const T* mb, const T* ub, T* ob,
                                 int64_t rows, int64_t urows, int64_t Wq,
                                 int64_t k, int64_t s) {
  using V = typename Simd<T>::type;
  constexpr int64_t L = Simd<T>::lanes;
  const int64_t Wp = Wq + 2 * s * (k / 2);
  const int64_t tap_stride = rows * Wq;
  const int64_t uch = urows * Wp;
  for (int64_t y = 0; y < rows; ++y) {
    const T* urow = ub + (y / s) * Wp;
    for (int64_t x = 0; x < Wq; x += 2 * L) {
      V acc[CB][2];
      for (int c = 0; c < CB; ++c) acc[c][0] = acc[c][1] = V{};
      const T* m = mb + y * Wq + x;
      for (int64_t ky = 0; ky < k; ++ky) {
        const T* u = urow + ky * Wp + x;
        for (int64_t kx = 0; kx < k; ++kx, m += tap_stride, u += s) {
          const V m0 = load<V>(m), m1 = load<V>(m + L);
          for (int c = 0; c < CB; ++c) {
            acc[c][0] += m0 * load<V>(u + c * uch);
            acc[c][1] += m1 * load<V>(u + c * uch + L);
          }
        }
      }
      for (int c = 0; c < CB; ++c) {
        store(ob + (c * rows + y) * Wq + x, acc[c][0]);
        store(ob + (c * rows + y) * Wq + x + L, acc[c][1]);
      }
    }
  }
}

// Backward of one channel block at one input row iy.
//   mb  (k², s, Wp)      mb[t][py] = masks row oy = s·(iy + r - ky) + py,
//                        padded: position x' holds output column x' - s·r
//   gmb (k², s, Wp)      accumulates grad_masks of the same rows
//   gb  (CB, k, s, Wp)   gb[c][ky][py] = grad_output row oy, padded alike
//   ub  (CB, Wq)         ub[c][j] = features[c][iy][j / s] (zero past Wo)
//   ab  (CB, Wq)         out: ab[c][j] = d loss / d ub[c][j]
// Input column ix = j / s receives from output column ox = j + s·(r - kx)
// through tap kx, i.e. from padded position j + s·(2r - kx).
// Only taps ky in [ky0, ky1), whose rows lie inside the output, are visited.
template <typename T, int CB>
CARAFE_INLINE void backward_block(const T* mb, T* gmb, const T* gb,
                                  const T* ub, T* ab, int64_t Wq, int64_t k,
                                  int64_t s, int64_t ky0, int64_t ky1) {
  using V = typename Simd<T>::type;
  constexpr int64_t L = Simd<T>::lanes;
  const int64_t r = k / 2;
  const int64_t Wp = Wq + 2 * s * r;
  const int64_t gch = k * s * Wp;
  for (int64_t x = 0; x < Wq; x += L) {
    V acc[CB], u[CB];
    for (int c = 0; c < CB; ++c) {
      acc[c] = V{};
      u[c] = load<V>(ub + c * Wq + x);
    }
    for (int64_t ky = ky0; ky < ky1; ++ky) {
      for (int64_t py = 0; py < s; ++py) {
        const T* g_row = gb + (ky * s + py) * Wp + x;
        for (int64_t kx = 0; kx < k; ++kx) {
          const int64_t shift = s * (2 * r - kx);
          const int64_t at = ((ky * k + kx) * s + py) * Wp + x + shift;
          const V m = load<V>(mb + at);
          V gm = load<V>(gmb + at);
          for (int c = 0; c < CB; ++c) {
            const V g = load<V>(g_row + c * gch + shift);
            acc[c] += g * m;
            gm += g * u[c];
          }
          store(gmb + at, gm);
        }
      }
    }
    for (int c = 0; c < CB; ++c) store(ab + c * Wq + x, acc[c]);
  }
}

template <typename T>
CARAFE_INLINE void forward_block_any(int cb, const T* mb, const T* ub, T* ob,
                                     int64_t rows, int64_t urows, int64_t Wq,
                                     int64_t k, int64_t s) {
  switch (cb) {
    case 4: return forward_block<T, 4>(mb, ub, ob, rows, urows, Wq, k, s);
    case 3: return forward_block<T, 3>(mb, ub, ob, rows, urows, Wq, k, s);
    case 2: return forward_block<T, 2>(mb, ub, ob, rows, urows, Wq, k, s);
    default: return forward_block<T, 1>(mb, ub, ob, rows, urows, Wq, k, s);
  }
}

template <typename T>
CARAFE_INLINE void backward_block_any(int cb, const T* mb, T* gmb, const T* gb,
                                      const T* ub, T* ab, int64_t Wq,
                                      int64_t k, int64_t s, int64_t ky0,
                                      int64_t ky1) {
  switch (cb) {
    case 4: return backward_block<T, 4>(mb, gmb, gb, ub, ab, Wq, k, s, ky0, ky1);
    case 3: return backward_block<T, 3>(mb, gmb, gb, ub, ab, Wq, k, s, ky0, ky1);
    case 2: return backward_block<T, 2>(mb, gmb, gb, ub, ab, Wq, k, s, ky0, ky1);
    default: return backward_block<T, 1>(mb, gmb, gb, ub, ab, Wq, k, s, ky0, ky1);
  }
}

static_assert(kBlock == 4, "forward_block_any / backward_block_any cover 1..4");

// Multiversioned entry points (function multiversioning needs non-templates).
CARAFE_MULTIVERSION void forward_block_f32(int cb, const float* mb,
                                           const float* ub, float* ob,
                                           int64_t rows, int64_t urows,
                                           int64_t Wq, int64_t k, int64_t s) {
  forward_block_any(cb, mb, ub, ob, rows, urows, Wq, k, s);
}
CARAFE_MULTIVERSION void forward_block_f64(int cb, const double* mb,
                                           const double* ub, double* ob,
                                           int64_t rows, int64_t urows,
                                           int64_t Wq, int64_t k, int64_t s) {
  forward_block_any(cb, mb, ub, ob, rows, urows, Wq, k, s);
}
CARAFE_MULTIVERSION void backward_block_f32(int cb, const float* mb,
                                            float* gmb, const float* gb,
                                            const float* ub, float* ab,
                                            int64_t Wq, int64_t k, int64_t s,
                                            int64_t ky0, int64_t ky1) {
  backward_block_any(cb, mb, gmb, gb, ub, ab, Wq, k, s, ky0, ky1);
}
CARAFE_MULTIVERSION void backward_block_f64(int cb, const double* mb,
                                            double* gmb, const double* gb,
                                            const double* ub, double* ab,
                                            int64_t Wq, int64_t k, int64_t s,
                                            int64_t ky0, int64_t ky1) {
  backward_block_any(cb, mb, gmb, gb, ub, ab, Wq, k, s, ky0, ky1);
}

inline void forward_block_dispatch(int cb, const float* mb, const float* ub,
                                   float* ob, int64_t rows, int64_t urows,
                                   int64_t Wq, int64_t k, int64_t s) {
  forward_block_f32(cb, mb, ub, ob, rows, urows, Wq, k, s);
}
inline void forward_block_dispatch(int cb, const double* mb, const double* ub,
                                   double* ob, int64_t rows, int64_t urows,
                                   int64_t Wq, int64_t k, int64_t s) {
  forward_block_f64(cb, mb, ub, ob, rows, urows, Wq, k, s);
}
inline void backward_block_dispatch(int cb, const float* mb, float* gmb,
                                    const float* gb, const float* ub,
                                    float* ab, int64_t Wq, int64_t k,
                                    int64_t s, int64_t ky0, int64_t ky1) {
  backward_block_f32(cb, mb, gmb, gb, ub, ab, Wq, k, s, ky0, ky1);
}
inline void backward_block_dispatch(int cb, const double* mb, double* gmb,
                                    const double* gb, const double* ub,
                                    double* ab, int64_t Wq, int64_t k,
                                    int64_t s, int64_t ky0, int64_t ky1) {
  backward_block_f64(cb, mb, gmb, gb, ub, ab, Wq, k, s, ky0, ky1);
}

// ---------------------------------------------------------------------------
// Row conversions between the tensors (scalar_t) and the buffers (acc_t)

// dst[0, n) = src[0, n) as acc_t; dst[n, n_padded) = 0.
template <typename acc_t, typename scalar_t>
inline void load_row(const scalar_t* src, acc_t* dst, int64_t n,
                     int64_t n_padded) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<acc_t>(src[i]);
  std::fill(dst + n, dst + n_padded, acc_t(0));
}

// A padded output-resolution row: `pad` zeros, the row, zeros up to Wp.
template <typename acc_t, typename scalar_t>
inline void load_padded_row(const scalar_t* src, acc_t* dst, int64_t n,
                            int64_t pad, int64_t Wp) {
  std::fill(dst, dst + pad, acc_t(0));
  load_row(src, dst + pad, n, Wp - pad);
}

// dst[s·ix + p] = src[ix] for p < s, written from dst[pad]; zeros elsewhere
// in [0, width).
template <typename acc_t, typename scalar_t>
inline void load_upsampled_row(const scalar_t* src, acc_t* dst, int64_t W,
                               int64_t s, int64_t pad, int64_t width) {
  std::fill(dst, dst + pad, acc_t(0));
  acc_t* out = dst + pad;
  for (int64_t ix = 0; ix < W; ++ix) {
    const acc_t v = static_cast<acc_t>(src[ix]);
    for (int64_t p = 0; p < s; ++p) out[s * ix + p] = v;
  }
  std::fill(dst + pad + s * W, dst + width, acc_t(0));
}

template <typename scalar_t, typename acc_t>
inline void store_row(const acc_t* src, scalar_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<scalar_t>(src[i]);
}

// ---------------------------------------------------------------------------
// Drivers

// Input rows per forward work item: enough for the mask buffer to fill about
// kMaskBufferBytes, but small enough to give every thread several items.
int64_t forward_band(const Geometry& geo, int64_t mask_row_bytes) {
  int64_t band = std::max<int64_t>(1, kMaskBufferBytes / mask_row_bytes);
  band = std::min(band, geo.H);
  const int64_t want_items = 4 * at::get_num_threads();
  while (band > 1 && geo.N * geo.G * ceil_div(geo.H, band) < want_items) {
    band = ceil_div(band, 2);
  }
  return band;
}

template <typename scalar_t>
void forward_kernel(const scalar_t* features, const scalar_t* masks,
                    scalar_t* output, const Geometry& geo) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t L = Simd<acc_t>::lanes;
  const int64_t k = geo.k, s = geo.s, r = geo.r(), k2 = geo.k2();
  const int64_t H = geo.H, W = geo.W, Ho = geo.Ho(), Wo = geo.Wo();
  const int64_t Cg = geo.Cg();
  const int64_t Wq = geo.Wq(L), Wp = geo.Wp(L), pad = s * r;
  const int64_t band = forward_band(geo, k2 * s * Wq * sizeof(acc_t));
  const int64_t bands = ceil_div(H, band);

  at::parallel_for(0, geo.N * geo.G * bands, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> mb(k2 * s * band * Wq);
    std::vector<acc_t> ub(kBlock * (band + 2 * r) * Wp);
    std::vector<acc_t> ob(kBlock * s * band * Wq);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item % bands;
      const int64_t g = (item / bands) % geo.G;
      const int64_t n = item / (bands * geo.G);
      const int64_t iy0 = b * band, iy1 = std::min(H, iy0 + band);
      const int64_t rows = s * (iy1 - iy0), urows = iy1 - iy0 + 2 * r;
      const int64_t oy0 = s * iy0;

      const scalar_t* m_src = masks + (n * geo.G + g) * k2 * Ho * Wo;
      for (int64_t t = 0; t < k2; ++t) {
        for (int64_t y = 0; y < rows; ++y) {
          load_row(m_src + (t * Ho + oy0 + y) * Wo,
                   mb.data() + (t * rows + y) * Wq, Wo, Wq);
        }
      }
      for (int64_t c0 = 0; c0 < Cg; c0 += kBlock) {
        const int cb = static_cast<int>(std::min<int64_t>(kBlock, Cg - c0));
        const int64_t c_first = n * geo.C + g * Cg + c0;
        for (int ci = 0; ci < cb; ++ci) {
          const scalar_t* f_src = features + (c_first + ci) * H * W;
          for (int64_t u = 0; u < urows; ++u) {
            acc_t* dst = ub.data() + (ci * urows + u) * Wp;
            const int64_t iy = iy0 - r + u;
            if (iy < 0 || iy >= H) {
              std::fill(dst, dst + Wp, acc_t(0));
            } else {
              load_upsampled_row(f_src + iy * W, dst, W, s, pad, Wp);
            }
          }
        }
        forward_block_dispatch(cb, mb.data(), ub.data(), ob.data(), rows,
                               urows, Wq, k, s);
        for (int ci = 0; ci < cb; ++ci) {
          scalar_t* o_dst = output + ((c_first + ci) * Ho + oy0) * Wo;
          for (int64_t y = 0; y < rows; ++y) {
            store_row(ob.data() + (ci * rows + y) * Wq, o_dst + y * Wo, Wo);
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad_output, const scalar_t* features,
                     const scalar_t* masks, scalar_t* grad_features,
                     scalar_t* grad_masks, const Geometry& geo) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t L = Simd<acc_t>::lanes;
  const int64_t k = geo.k, s = geo.s, r = geo.r(), k2 = geo.k2();
  const int64_t H = geo.H, W = geo.W, Ho = geo.Ho(), Wo = geo.Wo();
  const int64_t Cg = geo.Cg();
  const int64_t Wq = geo.Wq(L), Wp = geo.Wp(L), pad = s * r;

  // grad_masks rows of tap row ky that only ever see the zero padding
  // around the features (virtual input rows iv < 0 or iv >= H) are zeroed by
  // the item of the first or last input row.
  auto zero_virtual_rows = [&](scalar_t* gm_dst, int64_t iv) {
    for (int64_t ky = 0; ky < k; ++ky) {
      const int64_t oy_base = s * (iv + r - ky);
      if (oy_base < 0 || oy_base >= Ho) continue;
      for (int64_t kx = 0; kx < k; ++kx) {
        scalar_t* row = gm_dst + ((ky * k + kx) * Ho + oy_base) * Wo;
        std::fill(row, row + s * Wo, scalar_t(0));
      }
    }
  };

  at::parallel_for(0, geo.N * geo.G * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> mb(k2 * s * Wp), gmb(k2 * s * Wp);
    std::vector<acc_t> gb(kBlock * k * s * Wp);
    std::vector<acc_t> ub(kBlock * Wq), ab(kBlock * Wq);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t iy = item % H;
      const int64_t g = (item / H) % geo.G;
      const int64_t n = item / (H * geo.G);
      // Taps ky whose output rows s·(iy + r - ky) + py lie in [0, Ho).
      const int64_t ky0 = std::max<int64_t>(0, iy + r - H + 1);
      const int64_t ky1 = std::min<int64_t>(k, iy + r + 1);

      const int64_t mask_offset = (n * geo.G + g) * k2 * Ho * Wo;
      for (int64_t ky = ky0; ky < ky1; ++ky) {
        const int64_t oy_base = s * (iy + r - ky);
        for (int64_t kx = 0; kx < k; ++kx) {
          const int64_t t = ky * k + kx;
          for (int64_t py = 0; py < s; ++py) {
            load_padded_row(masks + mask_offset + (t * Ho + oy_base + py) * Wo,
                            mb.data() + (t * s + py) * Wp, Wo, pad, Wp);
          }
        }
      }
      std::fill(gmb.begin(), gmb.end(), acc_t(0));

      for (int64_t c0 = 0; c0 < Cg; c0 += kBlock) {
        const int cb = static_cast<int>(std::min<int64_t>(kBlock, Cg - c0));
        const int64_t c_first = n * geo.C + g * Cg + c0;
        for (int ci = 0; ci < cb; ++ci) {
          const scalar_t* go_src = grad_output + (c_first + ci) * Ho * Wo;
          for (int64_t ky = ky0; ky < ky1; ++ky) {
            const int64_t oy_base = s * (iy + r - ky);
            for (int64_t py = 0; py < s; ++py) {
              load_padded_row(go_src + (oy_base + py) * Wo,
                              gb.data() + ((ci * k + ky) * s + py) * Wp, Wo,
                              pad, Wp);
            }
          }
          load_upsampled_row(features + ((c_first + ci) * H + iy) * W,
                             ub.data() + ci * Wq, W, s, 0, Wq);
        }
        backward_block_dispatch(cb, mb.data(), gmb.data(), gb.data(),
                                ub.data(), ab.data(), Wq, k, s, ky0, ky1);
        for (int ci = 0; ci < cb; ++ci) {
          const acc_t* a = ab.data() + ci * Wq;
          scalar_t* gf_dst = grad_features + ((c_first + ci) * H + iy) * W;
          for (int64_t ix = 0; ix < W; ++ix) {
            acc_t sum = 0;
            for (int64_t p = 0; p < s; ++p) sum += a[s * ix + p];
            gf_dst[ix] = static_cast<scalar_t>(sum);
          }
        }
      }

      scalar_t* gm_dst = grad_masks + mask_offset;
      for (int64_t ky = ky0; ky < ky1; ++ky) {
        const int64_t oy_base = s * (iy + r - ky);
        for (int64_t kx = 0; kx < k; ++kx) {
          const int64_t t = ky * k + kx;
          for (int64_t py = 0; py < s; ++py) {
            store_row(gmb.data() + (t * s + py) * Wp + pad,
                      gm_dst + (t * Ho + oy_base + py) * Wo, Wo);
          }
        }
      }
      if (iy == 0) {
        for (int64_t iv = -r; iv < 0; ++iv) zero_virtual_rows(gm_dst, iv);
      }
      if (iy == H - 1) {
        for (int64_t iv = H; iv < H + r; ++iv) zero_virtual_rows(gm_dst, iv);
      }
    }
  });
}

Geometry geometry(const at::Tensor& features, int64_t kernel_size,
                  int64_t group_size, int64_t scale_factor) {
  return Geometry{features.size(0), features.size(1), features.size(2),
                  features.size(3), group_size, kernel_size, scale_factor};
}

at::Tensor carafe_forward_cpu(const at::Tensor& features_in,
                              const at::Tensor& masks_in, int64_t kernel_size,
                              int64_t group_size, int64_t scale_factor) {
  check_carafe_forward_args(features_in, masks_in, kernel_size, group_size,
                            scale_factor);
  const auto features = features_in.contiguous();
  const auto masks = masks_in.contiguous();
  const Geometry geo =
      geometry(features, kernel_size, group_size, scale_factor);
  auto output =
      at::empty({geo.N, geo.C, geo.Ho(), geo.Wo()}, features.options());
  if (output.numel() == 0) return output;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features.scalar_type(), "carafe_forward_cpu",
      [&] {
        forward_kernel<scalar_t>(features.const_data_ptr<scalar_t>(),
                                 masks.const_data_ptr<scalar_t>(),
                                 output.mutable_data_ptr<scalar_t>(), geo);
      });
  return output;
}

std::tuple<at::Tensor, at::Tensor> carafe_backward_cpu(
    const at::Tensor& grad_output_in, const at::Tensor& features_in,
    const at::Tensor& masks_in, int64_t kernel_size, int64_t group_size,
    int64_t scale_factor) {
  check_carafe_backward_args(grad_output_in, features_in, masks_in,
                             kernel_size, group_size, scale_factor);
  const auto grad_output = grad_output_in.contiguous();
  const auto features = features_in.contiguous();
  const auto masks = masks_in.contiguous();
  const Geometry geo =
      geometry(features, kernel_size, group_size, scale_factor);
  auto grad_features = at::empty(features.sizes(), features.options());
  auto grad_masks = at::empty(masks.sizes(), masks.options());
  if (grad_output.numel() == 0) {
    // No output pixels (N, C, H or W is 0): nothing flows back.
    grad_features.zero_();
    grad_masks.zero_();
    return {grad_features, grad_masks};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features.scalar_type(), "carafe_backward_cpu",
      [&] {
        backward_kernel<scalar_t>(
            grad_output.const_data_ptr<scalar_t>(),
            features.const_data_ptr<scalar_t>(),
            masks.const_data_ptr<scalar_t>(),
            grad_features.mutable_data_ptr<scalar_t>(),
            grad_masks.mutable_data_ptr<scalar_t>(), geo);
      });
  return {grad_features, grad_masks};
}

}  // namespace

TORCH_LIBRARY_IMPL(carafe_mm, CPU, m) {
  m.impl("carafe_forward", &carafe_forward_cpu);
  m.impl("carafe_backward", &carafe_backward_cpu);
}

}  // namespace carafe_mm
