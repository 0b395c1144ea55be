// The CPU kernels proper, compiled once per instruction set: carafe_kernel.cpp
// includes this file inside namespace carafe_mm::<isa> with CARAFE_IN_REGISTER
// defined, plain and under `#pragma GCC target("arch=x86-64-v3")`.
// No #include here: everything it needs is included before.
//
// Shape letters as in ../carafe.h: N, C, G, H×W, s (scale factor), k, r = k/2,
// Ho×Wo = sH×sW, t = ky·k + kx, Cg = C / G.

// Channels of one group processed together; they share each mask load.
constexpr int kForwardBlock = 4;
constexpr int kBackwardBlock = 4;
// Outputs streamed past the caches come in pieces of at least this size
// (smaller ones leave partial cache lines, which non-temporal stores handle
// badly).
constexpr int64_t kStreamMinBytes = 4096;
// Target size of the per-item mask buffers, so that they stay in L2.
constexpr int64_t kForwardMaskBytes = 256 * 1024;
constexpr int64_t kBackwardMaskBytes = 384 * 1024;
// Multiply-adds a parallel task must have at least: a call smaller than this
// runs on the calling thread, without waking the pool (which costs tens of
// microseconds idle, milliseconds on a loaded machine).
constexpr int64_t kMinParallelMacs = int64_t(1) << 18;

// The grain of at::parallel_for over work items of `item_macs` each (a
// double: the product of sizes need not fit int64).
inline int64_t parallel_grain(double item_macs) {
  return item_macs >= kMinParallelMacs
             ? 1
             : static_cast<int64_t>(kMinParallelMacs / std::max(item_macs, 1.0));
}

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

// Input rows per work item: as many as fit `budget` bytes of per-row buffers,
// but few enough to give every thread several items.
int64_t choose_band(const Geometry& geo, int64_t row_bytes, int64_t budget) {
  int64_t band = std::max<int64_t>(1, budget / row_bytes);
  band = std::min(band, geo.H);
  const int64_t want_items = 4 * at::get_num_threads();
  while (band > 1 && geo.N * geo.G * ceil_div(geo.H, band) < want_items) {
    band = ceil_div(band, 2);
  }
  return band;
}

// ---------------------------------------------------------------------------
// Row conversions between the tensors (scalar_t) and the buffers (acc_t)

// dst[0, n) = src[0, n) as acc_t; dst[n, n_padded) = 0.
template <typename acc_t, typename scalar_t>
CARAFE_INLINE void load_row(const scalar_t* src, acc_t* dst, int64_t n,
                            int64_t n_padded) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<acc_t>(src[i]);
  std::fill(dst + n, dst + n_padded, acc_t(0));
}

// A padded output-resolution row: `pad` zeros, the row, zeros up to Wp.
template <typename acc_t, typename scalar_t>
CARAFE_INLINE void load_padded_row(const scalar_t* src, acc_t* dst, int64_t n,
                                   int64_t pad, int64_t Wp) {
  std::fill(dst, dst + pad, acc_t(0));
  load_row(src, dst + pad, n, Wp - pad);
}

// dst[s·ix + p] = src[ix] for p < s. S > 0 fixes s at compile time so that
// the copy vectorises.
template <int S, typename acc_t, typename scalar_t>
CARAFE_INLINE void upsample_row(const scalar_t* src, acc_t* dst, int64_t W,
                                int64_t s) {
  const int64_t step = S > 0 ? S : s;
  for (int64_t ix = 0; ix < W; ++ix) {
    const acc_t v = static_cast<acc_t>(src[ix]);
    for (int64_t p = 0; p < step; ++p) dst[step * ix + p] = v;
  }
}

// `pad` zeros, the row upsampled s times in x, zeros up to `width`.
template <typename acc_t, typename scalar_t>
CARAFE_INLINE void load_upsampled_row(const scalar_t* src, acc_t* dst,
                                      int64_t W, int64_t s, int64_t pad,
                                      int64_t width) {
  std::fill(dst, dst + pad, acc_t(0));
  switch (s) {
    case 1: upsample_row<1>(src, dst + pad, W, s); break;
    case 2: upsample_row<2>(src, dst + pad, W, s); break;
    case 3: upsample_row<3>(src, dst + pad, W, s); break;
    case 4: upsample_row<4>(src, dst + pad, W, s); break;
    default: upsample_row<0>(src, dst + pad, W, s);
  }
  std::fill(dst + pad + s * W, dst + width, acc_t(0));
}

template <typename scalar_t, typename acc_t>
CARAFE_INLINE void store_row(const acc_t* src, scalar_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<scalar_t>(src[i]);
}

// The output rows [0, rows) of one channel, src rows Wq apart, to the
// contiguous dst. float outputs of kStreamMinBytes or more go around
// the caches (nothing reads them soon, and the write-allocate reads would
// double the traffic): packed into `staging`, then streamed in one piece,
// so that the non-temporal stores fill whole cache lines.
template <typename scalar_t, typename acc_t>
CARAFE_INLINE void store_rows(const acc_t* src, scalar_t* dst, int64_t rows,
                              int64_t Wo, int64_t Wq, acc_t* staging) {
#ifdef CARAFE_STREAM_STORE_F32
  if constexpr (std::is_same_v<scalar_t, float> &&
                std::is_same_v<acc_t, float>) {
    const int64_t n = rows * Wo;
    if (n * 4 >= kStreamMinBytes) {
      for (int64_t y = 0; y < rows; ++y) {
        std::memcpy(staging + y * Wo, src + y * Wq, Wo * sizeof(float));
      }
      int64_t i = 0;
      for (; i < n && reinterpret_cast<uintptr_t>(dst + i) % 32 != 0; ++i) {
        dst[i] = staging[i];
      }
      for (; i + 8 <= n; i += 8) CARAFE_STREAM_STORE_F32(dst + i, staging + i);
      for (; i < n; ++i) dst[i] = staging[i];
      return;
    }
  }
#endif
  for (int64_t y = 0; y < rows; ++y) store_row(src + y * Wq, dst + y * Wo, Wo);
}

// dst[ix] = Σ_p src[s·ix + p], p < s: the gradient of an upsampled row.
template <int S, typename scalar_t, typename acc_t>
CARAFE_INLINE void pool_row_s(const acc_t* src, scalar_t* dst, int64_t W,
                              int64_t s) {
  const int64_t step = S > 0 ? S : s;
  for (int64_t ix = 0; ix < W; ++ix) {
    acc_t sum = 0;
    for (int64_t p = 0; p < step; ++p) sum += src[step * ix + p];
    dst[ix] = static_cast<scalar_t>(sum);
  }
}

template <typename scalar_t, typename acc_t>
CARAFE_INLINE void pool_row(const acc_t* src, scalar_t* dst, int64_t W,
                            int64_t s) {
  switch (s) {
    case 1: return store_row(src, dst, W);
    case 2: return pool_row_s<2>(src, dst, W, s);
    default: return pool_row_s<0>(src, dst, W, s);
  }
}

// ---------------------------------------------------------------------------
// Inner loops (acc_t only)

// Forward of one channel block over one band.
//   mb (k², rows, Wq)    masks of the band's output rows
//   ub (CB, urows, Wp)   ub[c][u][j] = features[c][iy0 - r + u][(j - s·r) / s]
//                        (zero outside the features)
//   ob (CB, rows, Wq)    output rows of the band
// Output row y of the band reads ub rows y / s + ky (the band starts at an
// input row boundary). With S = s fixed at compile time, the s output rows
// of an input row are computed together and share each load of ub; S = 0
// handles any s one output row at a time. NV vectors of x per step.
template <typename T, int CB, int S, int NV>
CARAFE_INLINE void forward_block(const T* mb, const T* ub, T* ob,
                                 int64_t rows, int64_t urows, int64_t Wq,
                                 int64_t k, int64_t s) {
  using V = typename Simd<T>::type;
  constexpr int64_t L = Simd<T>::lanes;
  constexpr int SR = S > 0 ? S : 1;  // output rows per step
  const int64_t step = S > 0 ? S : s;  // x distance between taps
  const int64_t Wp = Wq + 2 * s * (k / 2);
  const int64_t tap_stride = rows * Wq;
  const int64_t uch = urows * Wp;
  for (int64_t y = 0; y < rows; y += SR) {
    for (int64_t ky = 0; ky < k; ++ky) {
      // Tap row ky of output rows [y, y + SR): reads ub row y / s + ky;
      // the partial sums wait in ob between tap rows.
      const T* urow = ub + (y / s + ky) * Wp;
      const T* mrow = mb + ky * k * tap_stride + y * Wq;
      for (int64_t x = 0; x < Wq; x += NV * L) {
        V acc[CB][SR][NV];
        CARAFE_UNROLL
        for (int c = 0; c < CB; ++c)
          CARAFE_UNROLL
          for (int py = 0; py < SR; ++py)
            CARAFE_UNROLL
            for (int v = 0; v < NV; ++v)
              acc[c][py][v] = ky == 0 ? V{} :
                  load<V>(ob + (c * rows + y + py) * Wq + x + v * L);
        const T* m = mrow + x;
        const T* u = urow + x;
        for (int64_t kx = 0; kx < k; ++kx, m += tap_stride, u += step) {
          V uv[CB][NV];
          CARAFE_UNROLL
          for (int c = 0; c < CB; ++c)
            CARAFE_UNROLL
            for (int v = 0; v < NV; ++v) {
              uv[c][v] = load<V>(u + c * uch + v * L);
              CARAFE_IN_REGISTER(uv[c][v]);
            }
          CARAFE_UNROLL
          for (int py = 0; py < SR; ++py) {
            CARAFE_UNROLL
            for (int v = 0; v < NV; ++v) {
              const V mv = load<V>(m + py * Wq + v * L);
              CARAFE_UNROLL
              for (int c = 0; c < CB; ++c) acc[c][py][v] += mv * uv[c][v];
            }
          }
        }
        CARAFE_UNROLL
        for (int c = 0; c < CB; ++c)
          CARAFE_UNROLL
          for (int py = 0; py < SR; ++py)
            CARAFE_UNROLL
            for (int v = 0; v < NV; ++v)
              store(ob + (c * rows + y + py) * Wq + x + v * L, acc[c][py][v]);
      }
    }
  }
}

// Backward of one channel block at one input row iy.
//   mb  (k², s, Wp)   mb[t][py] = masks row oy = s·(iy + r - ky) + py,
//                     padded: position x' holds output column x' - s·r
//   gmb (k², s, Wp)   accumulates grad_masks of the same rows
//   g0                grad_output row s·(iy + r) of the first channel, padded
//                     alike; row oy of channel c is at
//                     g0 + c·g_ch + (oy - s·(iy + r))·Wp
//   ub  (CB, Wq)      ub[c][j] = features[c][iy][j / s] (zero past Wo)
//   ab  (CB, Wq)      out: ab[c][j] = d loss / d ub[c][j]
// Input column ix = j / s receives from output column ox = j + s·(r - kx)
// through tap kx, i.e. from padded position j + s·(2r - kx).
// Only taps ky in [ky0, ky1), whose rows lie inside the output, are visited.
template <typename T, int CB>
CARAFE_INLINE void backward_block(const T* mb, T* gmb, const T* g0,
                                  int64_t g_ch, const T* ub, T* ab,
                                  int64_t Wq, int64_t k, int64_t s,
                                  int64_t ky0, int64_t ky1) {
  using V = typename Simd<T>::type;
  constexpr int64_t L = Simd<T>::lanes;
  const int64_t r = k / 2;
  const int64_t Wp = Wq + 2 * s * r;
  for (int64_t x = 0; x < Wq; x += L) {
    V acc[CB], u[CB];
    CARAFE_UNROLL
    for (int c = 0; c < CB; ++c) {
      acc[c] = V{};
      u[c] = load<V>(ub + c * Wq + x);
    }
    for (int64_t ky = ky0; ky < ky1; ++ky) {
      for (int64_t py = 0; py < s; ++py) {
        const T* g_row = g0 + (py - ky * s) * Wp + x;
        for (int64_t kx = 0; kx < k; ++kx) {
          const int64_t shift = s * (2 * r - kx);
          const int64_t at = ((ky * k + kx) * s + py) * Wp + x + shift;
          const V m = load<V>(mb + at);
          V gm = load<V>(gmb + at);
          CARAFE_UNROLL
          for (int c = 0; c < CB; ++c) {
            V g = load<V>(g_row + c * g_ch + shift);
            CARAFE_IN_REGISTER(g);  // one load for both products
            acc[c] += g * m;
            gm += g * u[c];
          }
          store(gmb + at, gm);
        }
      }
    }
    CARAFE_UNROLL
    for (int c = 0; c < CB; ++c) store(ab + c * Wq + x, acc[c]);
  }
}

template <typename T, int CB>
CARAFE_INLINE void forward_block_s(const T* mb, const T* ub, T* ob,
                                   int64_t rows, int64_t urows, int64_t Wq,
                                   int64_t k, int64_t s) {
  switch (s) {
    case 1: return forward_block<T, CB, 1, 2>(mb, ub, ob, rows, urows, Wq, k, s);
    case 2: return forward_block<T, CB, 2, 1>(mb, ub, ob, rows, urows, Wq, k, s);
    default: return forward_block<T, CB, 0, 2>(mb, ub, ob, rows, urows, Wq, k, s);
  }
}

template <typename T>
CARAFE_INLINE void forward_block_any(int cb, const T* mb, const T* ub, T* ob,
                                     int64_t rows, int64_t urows, int64_t Wq,
                                     int64_t k, int64_t s) {
  static_assert(kForwardBlock == 4, "the cases below cover blocks of 1..4");
  switch (cb) {
    case 4: return forward_block_s<T, 4>(mb, ub, ob, rows, urows, Wq, k, s);
    case 3: return forward_block_s<T, 3>(mb, ub, ob, rows, urows, Wq, k, s);
    case 2: return forward_block_s<T, 2>(mb, ub, ob, rows, urows, Wq, k, s);
    default: return forward_block_s<T, 1>(mb, ub, ob, rows, urows, Wq, k, s);
  }
}

// Blocks of the backward have 4, 2 or 1 channels (see block_size).
template <typename T>
CARAFE_INLINE void backward_block_any(int cb, const T* mb, T* gmb,
                                      const T* g0, int64_t g_ch, const T* ub,
                                      T* ab, int64_t Wq, int64_t k, int64_t s,
                                      int64_t ky0, int64_t ky1) {
  static_assert(kBackwardBlock == 4, "the cases below cover 4, 2, 1");
  switch (cb) {
    case 4:
      return backward_block<T, 4>(mb, gmb, g0, g_ch, ub, ab, Wq, k, s, ky0,
                                  ky1);
    case 2:
      return backward_block<T, 2>(mb, gmb, g0, g_ch, ub, ab, Wq, k, s, ky0,
                                  ky1);
    default:
      return backward_block<T, 1>(mb, gmb, g0, g_ch, ub, ab, Wq, k, s, ky0,
                                  ky1);
  }
}

// The largest power of two <= min(remaining, kBackwardBlock).
int block_size(int64_t remaining) {
  int cb = 1;
  while (cb * 2 <= std::min<int64_t>(remaining, kBackwardBlock)) cb *= 2;
  return cb;
}

// ---------------------------------------------------------------------------
// Work items

template <typename scalar_t>
struct Buffers {
  using acc_t = at::opmath_type<scalar_t>;
  std::vector<acc_t> mb, ub, ob, gmb, gb, staging;
};

// Forward of input rows [iy0, iy1) of group g of sample n.
template <typename scalar_t>
CARAFE_NOINLINE void forward_item(const scalar_t* features,
                                      const scalar_t* masks, scalar_t* output,
                                      const Geometry& geo, int64_t n,
                                      int64_t g, int64_t iy0, int64_t iy1,
                                      Buffers<scalar_t>& buf) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t L = Simd<acc_t>::lanes;
  const int64_t k = geo.k, s = geo.s, r = geo.r(), k2 = geo.k2();
  const int64_t H = geo.H, W = geo.W, Ho = geo.Ho(), Wo = geo.Wo();
  const int64_t Cg = geo.Cg(), Wq = geo.Wq(L), Wp = geo.Wp(L);
  const int64_t rows = s * (iy1 - iy0), urows = iy1 - iy0 + 2 * r;
  const int64_t oy0 = s * iy0;
  acc_t* mb = buf.mb.data();
  acc_t* ub = buf.ub.data();
  acc_t* ob = buf.ob.data();

  const scalar_t* m_src = masks + (n * geo.G + g) * k2 * Ho * Wo;
  for (int64_t t = 0; t < k2; ++t) {
    for (int64_t y = 0; y < rows; ++y) {
      load_row(m_src + (t * Ho + oy0 + y) * Wo, mb + (t * rows + y) * Wq, Wo,
               Wq);
    }
  }
  for (int64_t c0 = 0; c0 < Cg; c0 += kForwardBlock) {
    const int cb = static_cast<int>(std::min<int64_t>(kForwardBlock, Cg - c0));
    const int64_t c_first = n * geo.C + g * Cg + c0;
    for (int ci = 0; ci < cb; ++ci) {
      const scalar_t* f_src = features + (c_first + ci) * H * W;
      for (int64_t u = 0; u < urows; ++u) {
        acc_t* dst = ub + (ci * urows + u) * Wp;
        const int64_t iy = iy0 - r + u;
        if (iy < 0 || iy >= H) {
          std::fill(dst, dst + Wp, acc_t(0));
        } else {
          load_upsampled_row(f_src + iy * W, dst, W, s, s * r, Wp);
        }
      }
    }
    forward_block_any(cb, mb, ub, ob, rows, urows, Wq, k, s);
    for (int ci = 0; ci < cb; ++ci) {
      store_rows(ob + ci * rows * Wq, output + ((c_first + ci) * Ho + oy0) * Wo,
                 rows, Wo, Wq, buf.staging.data());
    }
  }
  CARAFE_STORE_FENCE();  // order the streamed stores
}

// Backward of input rows [a, e) of group g of sample n.
template <typename scalar_t>
CARAFE_NOINLINE void backward_item(
    const scalar_t* grad_output, const scalar_t* features,
    const scalar_t* masks, scalar_t* grad_features, scalar_t* grad_masks,
    const Geometry& geo, int64_t n, int64_t g, int64_t a, int64_t e,
    Buffers<scalar_t>& buf) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t L = Simd<acc_t>::lanes;
  const int64_t k = geo.k, s = geo.s, r = geo.r(), k2 = geo.k2();
  const int64_t H = geo.H, W = geo.W, Ho = geo.Ho(), Wo = geo.Wo();
  const int64_t Cg = geo.Cg(), Wq = geo.Wq(L), Wp = geo.Wp(L), pad = s * r;
  const int64_t nb = e - a;
  // grad_output rows [s·(a - r), s·(e + r)) are buffered; rows outside the
  // output are never read.
  const int64_t g_rows = s * (nb + 2 * r), g_first = s * (a - r);
  const int64_t m_row = k2 * s * Wp;  // per input row in mb / gmb
  acc_t* mb = buf.mb.data();
  acc_t* gmb = buf.gmb.data();
  acc_t* gb = buf.gb.data();
  acc_t* ub = buf.ub.data();
  acc_t* ab = buf.ob.data();
  auto ky_range = [&](int64_t iy) {
    // Taps ky whose output rows s·(iy + r - ky) + py lie in [0, Ho).
    return std::make_pair(std::max<int64_t>(0, iy + r - H + 1),
                          std::min<int64_t>(k, iy + r + 1));
  };

  // fn(row of the masks tensor, row of mb / gmb) for every mask row that
  // input row a + i owns: tap t of output row oy = s·(a + i + r - ky) + py.
  const int64_t mask_offset = (n * geo.G + g) * k2 * Ho * Wo;
  auto for_each_owned_row = [&](int64_t i, auto&& fn) {
    const auto [ky0, ky1] = ky_range(a + i);
    for (int64_t ky = ky0; ky < ky1; ++ky) {
      const int64_t oy_base = s * (a + i + r - ky);
      for (int64_t kx = 0; kx < k; ++kx) {
        const int64_t t = ky * k + kx;
        for (int64_t py = 0; py < s; ++py) {
          fn(mask_offset + (t * Ho + oy_base + py) * Wo,
             i * m_row + (t * s + py) * Wp);
        }
      }
    }
  };

  for (int64_t i = 0; i < nb; ++i) {
    for_each_owned_row(i, [&](int64_t tensor_row, int64_t buffer_row) {
      load_padded_row(masks + tensor_row, mb + buffer_row, Wo, pad, Wp);
    });
  }
  std::fill(gmb, gmb + nb * m_row, acc_t(0));

  for (int64_t c0 = 0, cb = 0; c0 < Cg; c0 += cb) {
    cb = block_size(Cg - c0);
    const int64_t c_first = n * geo.C + g * Cg + c0;
    for (int ci = 0; ci < cb; ++ci) {
      const scalar_t* go_src = grad_output + (c_first + ci) * Ho * Wo;
      for (int64_t lr = 0; lr < g_rows; ++lr) {
        const int64_t oy = g_first + lr;
        if (oy < 0 || oy >= Ho) continue;
        load_padded_row(go_src + oy * Wo, gb + (ci * g_rows + lr) * Wp, Wo,
                        pad, Wp);
      }
      for (int64_t i = 0; i < nb; ++i) {
        load_upsampled_row(features + ((c_first + ci) * H + a + i) * W,
                           ub + (i * cb + ci) * Wq, W, s, 0, Wq);
      }
    }
    for (int64_t i = 0; i < nb; ++i) {
      const int64_t iy = a + i;
      const auto [ky0, ky1] = ky_range(iy);
      // Row s·(iy + r) of the buffer holds output row s·(iy + r) - g_first.
      const acc_t* g0 = gb + s * (i + 2 * r) * Wp;
      backward_block_any(cb, mb + i * m_row, gmb + i * m_row, g0,
                         g_rows * Wp, ub + i * cb * Wq, ab, Wq, k, s, ky0,
                         ky1);
      for (int ci = 0; ci < cb; ++ci) {
        pool_row(ab + ci * Wq, grad_features + ((c_first + ci) * H + iy) * W,
                 W, s);
      }
    }
  }

  for (int64_t i = 0; i < nb; ++i) {
    for_each_owned_row(i, [&](int64_t tensor_row, int64_t buffer_row) {
      store_row(gmb + buffer_row + pad, grad_masks + tensor_row, Wo);
    });
  }
  scalar_t* gm_dst = grad_masks + mask_offset;
  // grad_masks rows of taps that only ever see the zero padding above the
  // first or below the last input row (virtual rows iv < 0 or iv >= H)
  // belong to the first and the last band.
  auto zero_virtual_row = [&](int64_t iv) {
    for (int64_t ky = 0; ky < k; ++ky) {
      const int64_t oy_base = s * (iv + r - ky);
      if (oy_base < 0 || oy_base >= Ho) continue;
      for (int64_t kx = 0; kx < k; ++kx) {
        scalar_t* row = gm_dst + ((ky * k + kx) * Ho + oy_base) * Wo;
        std::fill(row, row + s * Wo, scalar_t(0));
      }
    }
  };
  if (a == 0) {
    for (int64_t iv = -r; iv < 0; ++iv) zero_virtual_row(iv);
  }
  if (e == H) {
    for (int64_t iv = H; iv < H + r; ++iv) zero_virtual_row(iv);
  }
}

// ---------------------------------------------------------------------------
// Drivers

template <typename scalar_t>
void forward_kernel(const scalar_t* features, const scalar_t* masks,
                    scalar_t* output, const Geometry& geo) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t L = Simd<acc_t>::lanes;
  const int64_t k2 = geo.k2(), s = geo.s, r = geo.r();
  const int64_t Wq = geo.Wq(L), Wp = geo.Wp(L);
  const int64_t band = choose_band(geo, k2 * s * Wq * sizeof(acc_t),
                                   kForwardMaskBytes);
  const int64_t bands = ceil_div(geo.H, band);
  const int64_t grain =
      parallel_grain(double(geo.Cg()) * band * s * geo.Wo() * k2);
  at::parallel_for(0, geo.N * geo.G * bands, grain, [&](int64_t begin,
                                                        int64_t end) {
    Buffers<scalar_t> buf;
    buf.mb.resize(k2 * s * band * Wq);
    buf.ub.resize(kForwardBlock * (band + 2 * r) * Wp);
    buf.ob.resize(kForwardBlock * s * band * Wq);
    buf.staging.resize(s * band * geo.Wo());
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item % bands;
      const int64_t g = (item / bands) % geo.G;
      const int64_t n = item / (bands * geo.G);
      forward_item(features, masks, output, geo, n, g, b * band,
                   std::min(geo.H, (b + 1) * band), buf);
    }
  });
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad_output, const scalar_t* features,
                     const scalar_t* masks, scalar_t* grad_features,
                     scalar_t* grad_masks, const Geometry& geo) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t L = Simd<acc_t>::lanes;
  const int64_t k2 = geo.k2(), s = geo.s, r = geo.r();
  const int64_t Wq = geo.Wq(L), Wp = geo.Wp(L);
  const int64_t band = choose_band(geo, 2 * k2 * s * Wp * sizeof(acc_t),
                                   kBackwardMaskBytes);
  const int64_t bands = ceil_div(geo.H, band);
  // Two multiply-adds per tap and output element: one for each gradient.
  const int64_t grain =
      parallel_grain(2.0 * geo.Cg() * band * s * geo.Wo() * k2);
  at::parallel_for(0, geo.N * geo.G * bands, grain, [&](int64_t begin,
                                                        int64_t end) {
    Buffers<scalar_t> buf;
    buf.mb.resize(band * k2 * s * Wp);
    buf.gmb.resize(band * k2 * s * Wp);
    buf.gb.resize(kBackwardBlock * s * (band + 2 * r) * Wp);
    buf.ub.resize(kBackwardBlock * band * Wq);
    buf.ob.resize(kBackwardBlock * Wq);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item % bands;
      const int64_t g = (item / bands) % geo.G;
      const int64_t n = item / (bands * geo.G);
      backward_item(grad_output, features, masks, grad_features, grad_masks,
                    geo, n, g, b * band, std::min(geo.H, (b + 1) * band),
                    buf);
    }
  });
}

