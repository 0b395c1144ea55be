// CUDA kernels of carafe_mm::carafe_forward and carafe_mm::carafe_backward.
//
// Shape letters as in ../carafe.h: N, C, G, H×W, s (scale factor), k, r = k/2,
// Ho×Wo = sH×sW, t = ky·k + kx, Cg = C / G.
//
// Every kernel is a gather: each thread owns the outputs it writes, so the
// backward needs no atomics and is deterministic. All index arithmetic is in
// int64_t, grid-stride loops cover any size, and half types accumulate in
// fp32 (at::opmath_type).
//   forward, k ∈ {3, 5} and s = 2 (tiled)
//                    block = (n, g, channel slice, tile of input pixels),
//                    thread = one input pixel and its s² output pixels: their
//                    k²·s² mask values stay in registers, the features of the
//                    tile and its halo are staged in shared memory a chunk of
//                    channels at a time.
//   forward, other (k, s)
//                    thread = (n, g, block of kChannels channels, oy, ox):
//                    loads each of the k² mask values once and applies it to
//                    its channels.
//   backward, k ∈ {3, 5} and s = 2 (tiled, both gradients in one launch)
//                    block = (n, g, tile of input pixels), all the group's
//                    channels; grad_output and the features around the tile
//                    staged in shared memory a chunk of channels at a time.
//                    Half the threads compute grad_masks: one input pixel
//                    each, its k²·s² mask gradients summed over the channels
//                    in registers. The other half compute grad_features: one
//                    input pixel each, the k²·s² mask values of the output
//                    pixels that read it in registers.
//   grad_masks, other (k, s)
//                    thread = (n, g, block of kTaps taps, oy, ox): sums
//                    grad_output · features over the group's channels.
//   grad_features, other (k, s)
//                    thread = (n, g, block of kChannels channels, iy, ix): sums
//                    grad_output · masks over the k²·s² output pixels that
//                    read this input pixel, loading each mask value once for
//                    its channels.
// ox (or ix) is the fastest index of every thread layout, so neighbouring
// threads read neighbouring addresses. tests/cuda_emu runs these kernels on
// the CPU in CI; tools/benchmark_cuda_model.py counts their memory traffic.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "../carafe.h"

namespace carafe_mm {
namespace {

constexpr int kThreads = 256;
constexpr int kChannels = 16;  // forward: channels per thread
constexpr int kTaps = 25;      // grad_masks: taps per thread
// The tiled forward: input pixels per block, channels per shared-memory chunk.
constexpr int kTileH = 8, kTileW = 32, kChunk = 8;
// The tiled backward: input pixels per block (a warp spans two rows, so
// that narrow images leave fewer lanes idle).
constexpr int kBackTileH = 16, kBackTileW = 16;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Enough blocks to fill the device several times; grid-stride loops do the
// rest.
unsigned int grid_size(int64_t work) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<unsigned int>(
      std::max<int64_t>(1, std::min(ceil_div(work, kThreads), sms * 32)));
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    carafe_forward_kernel(const scalar_t* __restrict__ features,
                          const scalar_t* __restrict__ masks,
                          scalar_t* __restrict__ output, int64_t C, int64_t H,
                          int64_t W, int64_t G, int64_t k, int64_t s,
                          int64_t channel_blocks, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Ho = s * H, Wo = s * W, Cg = C / G, r = k / 2, k2 = k * k;
  const int64_t plane = H * W, out_plane = Ho * Wo;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       idx < total; idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t rest = idx;
    const int64_t ox = rest % Wo;
    rest /= Wo;
    const int64_t oy = rest % Ho;
    rest /= Ho;
    const int64_t cblock = rest % channel_blocks;
    rest /= channel_blocks;
    const int64_t g = rest % G;
    const int64_t n = rest / G;
    const int64_t c0 = cblock * kChannels;
    const int64_t count = Cg - c0 < kChannels ? Cg - c0 : kChannels;

    const scalar_t* m = masks + (n * G + g) * k2 * out_plane + oy * Wo + ox;
    const scalar_t* f = features + (n * C + g * Cg + c0) * plane;
    acc_t acc[kChannels];
#pragma unroll
    for (int i = 0; i < kChannels; ++i) acc[i] = acc_t(0);
    for (int64_t ky = 0; ky < k; ++ky) {
      const int64_t iy = oy / s + ky - r;
      const bool row_inside = iy >= 0 && iy < H;
      for (int64_t kx = 0; kx < k; ++kx) {
        const int64_t ix = ox / s + kx - r;
        const acc_t w = static_cast<acc_t>(m[(ky * k + kx) * out_plane]);
        if (row_inside && ix >= 0 && ix < W) {
          const scalar_t* fp = f + iy * W + ix;
#pragma unroll
          for (int i = 0; i < kChannels; ++i) {
            if (i < count) acc[i] += w * static_cast<acc_t>(fp[i * plane]);
          }
        } else {
          // The zero padding: w · 0, so that a non-finite mask gives NaN as
          // in the CPU kernel and the reference.
          const acc_t zero = w * acc_t(0);
#pragma unroll
          for (int i = 0; i < kChannels; ++i) acc[i] += zero;
        }
      }
    }
    scalar_t* o = output + ((n * C + g * Cg + c0) * Ho + oy) * Wo + ox;
#pragma unroll
    for (int i = 0; i < kChannels; ++i) {
      if (i < count) o[i * out_plane] = static_cast<scalar_t>(acc[i]);
    }
  }
}

// Two neighbouring elements, loaded or stored by one instruction.
template <typename T>
struct alignas(2 * sizeof(T)) Pair {
  T x, y;
};

// V channels of one pixel, staged in one shared-memory word.
template <typename T, int V>
struct alignas(V * sizeof(T)) Lanes {
  T v[V];
};

template <typename T>
bool pair_aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % sizeof(Pair<T>) == 0;
}

// Forward for the common (k, s): a block owns a tile of kTileH×kTileW input
// pixels of one image and group and a slice of the group's channels; a
// thread owns one input pixel and its s² output pixels, whose k²·s² mask
// values it keeps in registers (each mask value is loaded once). For each
// chunk of kChunk channels the block stages the tile and its halo in shared
// memory, so each feature value is loaded from global memory once per tile
// (plus the halo) and read from shared memory once per tap for all s²
// output pixels that share it.
template <typename scalar_t, int K, int S>
__global__ void __launch_bounds__(kTileH * kTileW)
    carafe_forward_tiled_kernel(const scalar_t* __restrict__ features,
                                const scalar_t* __restrict__ masks,
                                scalar_t* __restrict__ output, int64_t C,
                                int64_t H, int64_t W, int64_t G,
                                int64_t tiles_h, int64_t tiles_w,
                                int64_t slices, int64_t slice_channels,
                                int64_t blocks, bool paired) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int R = K / 2, K2 = K * K, S2 = S * S;
  constexpr int kHaloH = kTileH + K - 1, kHaloW = kTileW + K - 1;
  __shared__ acc_t tile[kChunk][kHaloH][kHaloW];
  const int64_t Ho = S * H, Wo = S * W, Cg = C / G;
  const int64_t plane = H * W, out_plane = Ho * Wo;
  const int lx = threadIdx.x % kTileW, ly = threadIdx.x / kTileW;
  for (int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    int64_t rest = b;
    const int64_t tx = rest % tiles_w;
    rest /= tiles_w;
    const int64_t ty = rest % tiles_h;
    rest /= tiles_h;
    const int64_t slice = rest % slices;
    rest /= slices;
    const int64_t g = rest % G;
    const int64_t n = rest / G;
    const int64_t iy = ty * kTileH + ly, ix = tx * kTileW + lx;
    const bool inside = iy < H && ix < W;

    acc_t m[S2][K2];
    if (inside) {
      const scalar_t* mp =
          masks + (n * G + g) * K2 * out_plane + S * iy * Wo + S * ix;
#pragma unroll
      for (int t = 0; t < K2; ++t) {
        if constexpr (S == 2) {
          // The two output pixels of a row in one load, where aligned.
          if (paired) {
#pragma unroll
            for (int py = 0; py < 2; ++py) {
              const Pair<scalar_t> v = *reinterpret_cast<const Pair<scalar_t>*>(
                  mp + t * out_plane + py * Wo);
              m[2 * py][t] = static_cast<acc_t>(v.x);
              m[2 * py + 1][t] = static_cast<acc_t>(v.y);
            }
            continue;
          }
        }
#pragma unroll
        for (int p = 0; p < S2; ++p) {
          m[p][t] = static_cast<acc_t>(
              mp[t * out_plane + (p / S) * Wo + p % S]);
        }
      }
    }
    const int64_t c_begin = slice * slice_channels;
    const int64_t c_end =
        Cg < c_begin + slice_channels ? Cg : c_begin + slice_channels;
    const scalar_t* f = features + (n * C + g * Cg) * plane;
    scalar_t* o = output + (n * C + g * Cg) * out_plane + S * iy * Wo + S * ix;
    const int64_t y0 = ty * kTileH - R, x0 = tx * kTileW - R;
    for (int64_t c0 = c_begin; c0 < c_end; c0 += kChunk) {
      const int chunk = static_cast<int>(c_end - c0 < kChunk ? c_end - c0 : kChunk);
      __syncthreads();  // the previous chunk's reads are done
      for (int i = threadIdx.x; i < chunk * kHaloH * kHaloW; i += blockDim.x) {
        const int hx = i % kHaloW, hy = i / kHaloW % kHaloH;
        const int ci = i / (kHaloW * kHaloH);
        const int64_t y = y0 + hy, x = x0 + hx;
        // The zero padding: w · 0, so that a non-finite mask gives NaN.
        tile[ci][hy][hx] = y >= 0 && y < H && x >= 0 && x < W
                               ? static_cast<acc_t>(f[(c0 + ci) * plane + y * W + x])
                               : acc_t(0);
      }
      __syncthreads();
      if (!inside) continue;
      for (int ci = 0; ci < chunk; ++ci) {
        acc_t acc[S2];
#pragma unroll
        for (int p = 0; p < S2; ++p) acc[p] = acc_t(0);
#pragma unroll
        for (int t = 0; t < K2; ++t) {
          const acc_t v = tile[ci][ly + t / K][lx + t % K];
#pragma unroll
          for (int p = 0; p < S2; ++p) acc[p] += m[p][t] * v;
        }
        scalar_t* op = o + (c0 + ci) * out_plane;
        if constexpr (S == 2) {
          // The output is a fresh allocation: pairs are aligned.
#pragma unroll
          for (int py = 0; py < 2; ++py) {
            *reinterpret_cast<Pair<scalar_t>*>(op + py * Wo) = {
                static_cast<scalar_t>(acc[2 * py]),
                static_cast<scalar_t>(acc[2 * py + 1])};
          }
        } else {
#pragma unroll
          for (int p = 0; p < S2; ++p) {
            op[(p / S) * Wo + p % S] = static_cast<scalar_t>(acc[p]);
          }
        }
      }
    }
  }
}

// The backward for the common (k, s = 2) in one launch, so that grad_output
// is read from DRAM once. A block owns a tile of kBackTileH×kBackTileW input
// pixels of one image and group and all the group's channels, and has two
// halves of kBackTileH·kBackTileW threads (whole warps) that share the
// staged tiles:
//   grad_masks half:    a thread owns one input pixel B and its s² output
//                       pixels, and accumulates their k²·s² mask gradients
//                       in registers over the channels (grad_output at its
//                       own pixels · the features around B);
//   grad_features half: a thread owns one input pixel Q. The output pixels
//                       that read Q are the s² pixels of each input pixel
//                       B = Q + (r - ky, r - kx), through tap (ky, kx); their
//                       k²·s² mask values are read by no other thread and
//                       stay in registers.
// For each chunk of channels the block stages the features around the tile
// and grad_output around its output pixels in shared memory, as the input
// type (exact), two channels to a 32-bit word for half types; grad_output's
// even and odd columns are kept apart, 16 banks apart, so that a warp's
// reads fall in distinct banks.
template <typename scalar_t, int K>
__global__ void __launch_bounds__(2 * kBackTileH * kBackTileW)
    carafe_backward_tiled_kernel(const scalar_t* __restrict__ grad_output,
                                 const scalar_t* __restrict__ features,
                                 const scalar_t* __restrict__ masks,
                                 scalar_t* __restrict__ grad_features,
                                 scalar_t* __restrict__ grad_masks, int64_t C,
                                 int64_t H, int64_t W, int64_t G,
                                 int64_t tiles_h, int64_t tiles_w,
                                 int64_t blocks, bool paired) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int S = 2, R = K / 2, K2 = K * K, S2 = S * S;
  constexpr int kHaloH = kBackTileH + K - 1, kHaloW = kBackTileW + K - 1;
  constexpr int kPixels = kBackTileH * kBackTileW;
  constexpr int V = sizeof(scalar_t) == 2 ? 2 : 1;  // channels per word
  using lanes_t = Lanes<scalar_t, V>;
  constexpr int kChunkB = sizeof(lanes_t) == 8 ? 2 : 4;  // words per pixel
  // Row pitches in words: a warp's two rows 16 banks apart.
  constexpr int kPitch = (kHaloW + 3) / 8 * 8 + 4;           // 4 mod 8
  constexpr int kFeaturePitch = (kHaloW + 15) / 32 * 32 + 16;  // 16 mod 32
  constexpr int kGradValues = S * kHaloH * S * kHaloW;
  constexpr int kFeatureValues = kHaloH * kHaloW;
  __shared__ lanes_t grad_tile[kChunkB][S * kHaloH][S][kPitch];
  __shared__ lanes_t feature_tile[kChunkB][kHaloH][kFeaturePitch];
  const int64_t Ho = S * H, Wo = S * W, Cg = C / G;
  const int64_t plane = H * W, out_plane = Ho * Wo;
  const bool masks_half = threadIdx.x < kPixels;
  const int pixel = threadIdx.x % kPixels;
  const int lx = pixel % kBackTileW, ly = pixel / kBackTileW;
  for (int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    int64_t rest = b;
    const int64_t tx = rest % tiles_w;
    rest /= tiles_w;
    const int64_t ty = rest % tiles_h;
    rest /= tiles_h;
    const int64_t g = rest % G;
    const int64_t n = rest / G;
    const int64_t iy = ty * kBackTileH + ly, ix = tx * kBackTileW + lx;
    const bool inside = iy < H && ix < W;

    // grad_masks half: acc[p][t], the mask gradient of tap t at output pixel
    // p of this thread's pixel. grad_features half: acc[p][t], the mask of
    // tap t at output pixel p of B; 0 where B is outside the input.
    acc_t acc[S2][K2];
#pragma unroll
    for (int t = 0; t < K2; ++t) {
#pragma unroll
      for (int p = 0; p < S2; ++p) acc[p][t] = acc_t(0);
    }
    if (!masks_half && inside) {
      const scalar_t* mg = masks + (n * G + g) * K2 * out_plane;
#pragma unroll
      for (int t = 0; t < K2; ++t) {
        const int64_t by = iy + R - t / K, bx = ix + R - t % K;
        if (by < 0 || by >= H || bx < 0 || bx >= W) continue;
#pragma unroll
        for (int py = 0; py < S; ++py) {
          const scalar_t* mp = mg + t * out_plane + (S * by + py) * Wo + S * bx;
          if (paired) {
            const Pair<scalar_t> v = *reinterpret_cast<const Pair<scalar_t>*>(mp);
            acc[S * py][t] = static_cast<acc_t>(v.x);
            acc[S * py + 1][t] = static_cast<acc_t>(v.y);
          } else {
            acc[S * py][t] = static_cast<acc_t>(mp[0]);
            acc[S * py + 1][t] = static_cast<acc_t>(mp[1]);
          }
        }
      }
    }
    const scalar_t* go = grad_output + (n * C + g * Cg) * out_plane;
    const scalar_t* f = features + (n * C + g * Cg) * plane;
    scalar_t* gf = grad_features + (n * C + g * Cg) * plane + iy * W + ix;
    const int64_t y0 = ty * kBackTileH - R, x0 = tx * kBackTileW - R;
    const int64_t oy0 = S * y0, ox0 = S * x0;
    for (int64_t c0 = 0; c0 < Cg; c0 += kChunkB * V) {
      const int channels =
          static_cast<int>(Cg - c0 < kChunkB * V ? Cg - c0 : kChunkB * V);
      const int chunk = (channels + V - 1) / V;
      __syncthreads();  // the previous chunk's reads are done
      for (int i = threadIdx.x; i < chunk * kGradValues; i += blockDim.x) {
        const int col = i % (S * kHaloW), row = i / (S * kHaloW) % (S * kHaloH);
        const int ci = i / kGradValues;
        const int64_t oy = oy0 + row, ox = ox0 + col;
        const bool valid = oy >= 0 && oy < Ho && ox >= 0 && ox < Wo;
        lanes_t e;
#pragma unroll
        for (int j = 0; j < V; ++j) {
          const int c = ci * V + j;
          e.v[j] = valid && c < channels
                       ? go[(c0 + c) * out_plane + oy * Wo + ox]
                       : scalar_t(0);
        }
        grad_tile[ci][row][col % S][col / S] = e;
      }
      for (int i = threadIdx.x; i < chunk * kFeatureValues; i += blockDim.x) {
        const int hx = i % kHaloW, hy = i / kHaloW % kHaloH;
        const int ci = i / kFeatureValues;
        const int64_t y = y0 + hy, x = x0 + hx;
        // The zero padding: w · 0, so that a non-finite value gives NaN as
        // in the CPU kernel and the reference.
        const bool valid = y >= 0 && y < H && x >= 0 && x < W;
        lanes_t e;
#pragma unroll
        for (int j = 0; j < V; ++j) {
          const int c = ci * V + j;
          e.v[j] = valid && c < channels ? f[(c0 + c) * plane + y * W + x]
                                         : scalar_t(0);
        }
        feature_tile[ci][hy][hx] = e;
      }
      __syncthreads();
      if (!inside) continue;
      if (masks_half) {
        for (int ci = 0; ci < chunk; ++ci) {
          acc_t gv[S2][V];
#pragma unroll
          for (int p = 0; p < S2; ++p) {
            const lanes_t e = grad_tile[ci][S * (ly + R) + p / S][p % S][lx + R];
#pragma unroll
            for (int j = 0; j < V; ++j) gv[p][j] = static_cast<acc_t>(e.v[j]);
          }
#pragma unroll
          for (int t = 0; t < K2; ++t) {
            const lanes_t e = feature_tile[ci][ly + t / K][lx + t % K];
#pragma unroll
            for (int j = 0; j < V; ++j) {
              const acc_t v = static_cast<acc_t>(e.v[j]);
#pragma unroll
              for (int p = 0; p < S2; ++p) acc[p][t] += gv[p][j] * v;
            }
          }
        }
      } else {
        for (int ci = 0; ci < chunk; ++ci) {
          acc_t sum[V];
#pragma unroll
          for (int j = 0; j < V; ++j) sum[j] = acc_t(0);
#pragma unroll
          for (int t = 0; t < K2; ++t) {
            // B in tile coordinates.
            const int bly = ly + 2 * R - t / K, blx = lx + 2 * R - t % K;
#pragma unroll
            for (int p = 0; p < S2; ++p) {
              const lanes_t e = grad_tile[ci][S * bly + p / S][p % S][blx];
#pragma unroll
              for (int j = 0; j < V; ++j) {
                sum[j] += static_cast<acc_t>(e.v[j]) * acc[p][t];
              }
            }
          }
#pragma unroll
          for (int j = 0; j < V; ++j) {
            const int c = ci * V + j;
            if (c < channels) {
              gf[(c0 + c) * plane] = static_cast<scalar_t>(sum[j]);
            }
          }
        }
      }
    }
    if (!masks_half || !inside) continue;
    scalar_t* gm =
        grad_masks + (n * G + g) * K2 * out_plane + S * iy * Wo + S * ix;
#pragma unroll
    for (int t = 0; t < K2; ++t) {
      // grad_masks is a fresh allocation: pairs are aligned.
#pragma unroll
      for (int py = 0; py < S; ++py) {
        *reinterpret_cast<Pair<scalar_t>*>(gm + t * out_plane + py * Wo) = {
            static_cast<scalar_t>(acc[S * py][t]),
            static_cast<scalar_t>(acc[S * py + 1][t])};
      }
    }
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    carafe_backward_masks_kernel(const scalar_t* __restrict__ grad_output,
                                 const scalar_t* __restrict__ features,
                                 scalar_t* __restrict__ grad_masks, int64_t C,
                                 int64_t H, int64_t W, int64_t G, int64_t k,
                                 int64_t s, int64_t tap_blocks, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Ho = s * H, Wo = s * W, Cg = C / G, r = k / 2, k2 = k * k;
  const int64_t plane = H * W, out_plane = Ho * Wo;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       idx < total; idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t rest = idx;
    const int64_t ox = rest % Wo;
    rest /= Wo;
    const int64_t oy = rest % Ho;
    rest /= Ho;
    const int64_t tblock = rest % tap_blocks;
    rest /= tap_blocks;
    const int64_t g = rest % G;
    const int64_t n = rest / G;
    const int64_t t0 = tblock * kTaps;

    // Offset of each tap's input pixel in a feature plane; -1 for taps past
    // k² or on the zero padding.
    int64_t offset[kTaps];
    acc_t acc[kTaps];
#pragma unroll
    for (int i = 0; i < kTaps; ++i) {
      acc[i] = acc_t(0);
      offset[i] = -1;
      const int64_t t = t0 + i;
      if (t < k2) {
        const int64_t iy = oy / s + t / k - r;
        const int64_t ix = ox / s + t % k - r;
        if (iy >= 0 && iy < H && ix >= 0 && ix < W) offset[i] = iy * W + ix;
      }
    }
    const scalar_t* go = grad_output + (n * C + g * Cg) * out_plane + oy * Wo + ox;
    const scalar_t* f = features + (n * C + g * Cg) * plane;
    for (int64_t c = 0; c < Cg; ++c) {
      const acc_t gv = static_cast<acc_t>(go[c * out_plane]);
#pragma unroll
      for (int i = 0; i < kTaps; ++i) {
        if (offset[i] >= 0) {
          acc[i] += gv * static_cast<acc_t>(f[c * plane + offset[i]]);
        }
      }
    }
    scalar_t* gm = grad_masks + ((n * G + g) * k2 + t0) * out_plane + oy * Wo + ox;
#pragma unroll
    for (int i = 0; i < kTaps; ++i) {
      if (t0 + i < k2) gm[i * out_plane] = static_cast<scalar_t>(acc[i]);
    }
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    carafe_backward_features_kernel(const scalar_t* __restrict__ grad_output,
                                    const scalar_t* __restrict__ masks,
                                    scalar_t* __restrict__ grad_features,
                                    int64_t C, int64_t H, int64_t W, int64_t G,
                                    int64_t k, int64_t s, int64_t channel_blocks,
                                    int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Ho = s * H, Wo = s * W, Cg = C / G, r = k / 2, k2 = k * k;
  const int64_t plane = H * W, out_plane = Ho * Wo;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       idx < total; idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t rest = idx;
    const int64_t ix = rest % W;
    rest /= W;
    const int64_t iy = rest % H;
    rest /= H;
    const int64_t cblock = rest % channel_blocks;
    rest /= channel_blocks;
    const int64_t g = rest % G;
    const int64_t n = rest / G;
    const int64_t c0 = cblock * kChannels;
    const int64_t count = Cg - c0 < kChannels ? Cg - c0 : kChannels;

    const scalar_t* go = grad_output + (n * C + g * Cg + c0) * out_plane;
    const scalar_t* m = masks + (n * G + g) * k2 * out_plane;
    acc_t acc[kChannels];
#pragma unroll
    for (int i = 0; i < kChannels; ++i) acc[i] = acc_t(0);
    for (int64_t ky = 0; ky < k; ++ky) {
      // Output rows whose tap ky reads input row iy.
      const int64_t oy0 = s * (iy + r - ky);
      if (oy0 < 0 || oy0 >= Ho) continue;
      for (int64_t kx = 0; kx < k; ++kx) {
        const int64_t ox0 = s * (ix + r - kx);
        if (ox0 < 0 || ox0 >= Wo) continue;
        const scalar_t* mt = m + (ky * k + kx) * out_plane;
        for (int64_t py = 0; py < s; ++py) {
          const int64_t row = (oy0 + py) * Wo + ox0;
          for (int64_t px = 0; px < s; ++px) {
            // Each mask value is loaded once for the block's channels.
            const acc_t w = static_cast<acc_t>(mt[row + px]);
            const scalar_t* gp = go + row + px;
#pragma unroll
            for (int i = 0; i < kChannels; ++i) {
              if (i < count) acc[i] += static_cast<acc_t>(gp[i * out_plane]) * w;
            }
          }
        }
      }
    }
    scalar_t* gf = grad_features + (n * C + g * Cg + c0) * plane + iy * W + ix;
#pragma unroll
    for (int i = 0; i < kChannels; ++i) {
      if (i < count) gf[i * plane] = static_cast<scalar_t>(acc[i]);
    }
  }
}

template <typename scalar_t, int K>
void launch_forward_tiled(const at::Tensor& features, const at::Tensor& masks,
                          at::Tensor& output, int64_t G, cudaStream_t stream) {
  const int64_t N = features.size(0), C = features.size(1);
  const int64_t H = features.size(2), W = features.size(3);
  const int64_t tiles_h = ceil_div(H, kTileH), tiles_w = ceil_div(W, kTileW);
  const int64_t tiles = N * G * tiles_h * tiles_w;
  // Split the channels over blocks until there are a few blocks per SM;
  // each slice re-reads the tile's masks.
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t chunks = ceil_div(C / G, kChunk);
  const int64_t wanted = std::max<int64_t>(1, ceil_div(2 * sms, tiles));
  const int64_t slice_channels = kChunk * ceil_div(chunks, std::min(chunks, wanted));
  const int64_t slices = ceil_div(C / G, slice_channels);
  const int64_t blocks = tiles * slices;
  const auto grid = static_cast<unsigned int>(std::min(blocks, sms * 32));
  carafe_forward_tiled_kernel<scalar_t, K, 2>
      <<<grid, kTileH * kTileW, 0, stream>>>(
          features.const_data_ptr<scalar_t>(), masks.const_data_ptr<scalar_t>(),
          output.mutable_data_ptr<scalar_t>(), C, H, W, G, tiles_h, tiles_w,
          slices, slice_channels, blocks,
          pair_aligned(masks.const_data_ptr<scalar_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_forward_tiled(const at::Tensor& features, const at::Tensor& masks,
                          at::Tensor& output, int64_t k, int64_t G,
                          cudaStream_t stream) {
  if (k == 3) {
    launch_forward_tiled<scalar_t, 3>(features, masks, output, G, stream);
  } else {
    launch_forward_tiled<scalar_t, 5>(features, masks, output, G, stream);
  }
}

template <typename scalar_t, int K>
void launch_backward_tiled(const at::Tensor& grad_output,
                           const at::Tensor& features, const at::Tensor& masks,
                           at::Tensor& grad_features, at::Tensor& grad_masks,
                           int64_t G, cudaStream_t stream) {
  const int64_t N = features.size(0), C = features.size(1);
  const int64_t H = features.size(2), W = features.size(3);
  const int64_t tiles_h = ceil_div(H, kBackTileH);
  const int64_t tiles_w = ceil_div(W, kBackTileW);
  // One block per tile: grad_masks sums the channels within the block.
  const int64_t blocks = N * G * tiles_h * tiles_w;
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const auto grid = static_cast<unsigned int>(std::min(blocks, sms * 32));
  carafe_backward_tiled_kernel<scalar_t, K>
      <<<grid, 2 * kBackTileH * kBackTileW, 0, stream>>>(
          grad_output.const_data_ptr<scalar_t>(),
          features.const_data_ptr<scalar_t>(), masks.const_data_ptr<scalar_t>(),
          grad_features.mutable_data_ptr<scalar_t>(),
          grad_masks.mutable_data_ptr<scalar_t>(), C, H, W, G, tiles_h,
          tiles_w, blocks, pair_aligned(masks.const_data_ptr<scalar_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor carafe_forward_cuda(const at::Tensor& features_in,
                               const at::Tensor& masks_in,
                               const c10::Scalar& kernel_size_arg,
                               const c10::Scalar& group_size_arg,
                               const c10::Scalar& scale_factor_arg) {
  const CarafeArgs args =
      check_carafe_forward_args(features_in, masks_in, kernel_size_arg,
                                group_size_arg, scale_factor_arg);
  const int64_t kernel_size = args.kernel_size;
  const c10::cuda::CUDAGuard device_guard(features_in.device());
  const auto features = features_in.contiguous();
  const auto masks = masks_in.contiguous();
  const int64_t N = features.size(0), C = features.size(1);
  const int64_t H = features.size(2), W = features.size(3);
  const int64_t s = args.scale_factor, G = args.group_size;
  auto output = at::empty({N, C, s * H, s * W}, features.options());
  if (output.numel() == 0) return output;

  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t k = kernel_size;
  // (k, s) pairs with a tiled kernel: k²·s² mask values fit in registers.
  const bool tiled = (k == 3 || k == 5) && s == 2;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features.scalar_type(), "carafe_forward_cuda",
      [&] {
        if (tiled) {
          launch_forward_tiled<scalar_t>(features, masks, output, k, G,
                                         stream);
          return;
        }
        const int64_t channel_blocks = ceil_div(C / G, kChannels);
        const int64_t total = N * G * channel_blocks * s * H * s * W;
        carafe_forward_kernel<scalar_t>
            <<<grid_size(total), kThreads, 0, stream>>>(
                features.const_data_ptr<scalar_t>(),
                masks.const_data_ptr<scalar_t>(),
                output.mutable_data_ptr<scalar_t>(), C, H, W, G, k, s,
                channel_blocks, total);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return output;
}

std::tuple<at::Tensor, at::Tensor> carafe_backward_cuda(
    const at::Tensor& grad_output_in, const at::Tensor& features_in,
    const at::Tensor& masks_in, const c10::Scalar& kernel_size_arg,
    const c10::Scalar& group_size_arg, const c10::Scalar& scale_factor_arg) {
  const CarafeArgs args = check_carafe_backward_args(
      grad_output_in, features_in, masks_in, kernel_size_arg, group_size_arg,
      scale_factor_arg);
  const c10::cuda::CUDAGuard device_guard(features_in.device());
  const auto grad_output = grad_output_in.contiguous();
  const auto features = features_in.contiguous();
  const auto masks = masks_in.contiguous();
  const int64_t N = features.size(0), C = features.size(1);
  const int64_t H = features.size(2), W = features.size(3);
  const int64_t s = args.scale_factor, G = args.group_size;
  const int64_t k = args.kernel_size;
  auto grad_features = at::empty(features.sizes(), features.options());
  auto grad_masks = at::empty(masks.sizes(), masks.options());
  if (grad_output.numel() == 0) {
    // No output pixels (N, C, H or W is 0): nothing flows back.
    grad_features.zero_();
    grad_masks.zero_();
    return {grad_features, grad_masks};
  }

  // (k, s) pairs with a tiled backward kernel, as in the forward.
  const bool tiled = (k == 3 || k == 5) && s == 2;
  const int64_t tap_blocks = ceil_div(k * k, kTaps);
  const int64_t mask_total = N * G * tap_blocks * s * H * s * W;
  const int64_t channel_blocks = ceil_div(C / G, kChannels);
  const int64_t feature_total = N * G * channel_blocks * H * W;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features.scalar_type(), "carafe_backward_cuda",
      [&] {
        if (tiled && k == 3) {
          launch_backward_tiled<scalar_t, 3>(grad_output, features, masks,
                                             grad_features, grad_masks, G,
                                             stream);
          return;
        }
        if (tiled) {
          launch_backward_tiled<scalar_t, 5>(grad_output, features, masks,
                                             grad_features, grad_masks, G,
                                             stream);
          return;
        }
        carafe_backward_masks_kernel<scalar_t>
            <<<grid_size(mask_total), kThreads, 0, stream>>>(
                grad_output.const_data_ptr<scalar_t>(),
                features.const_data_ptr<scalar_t>(),
                grad_masks.mutable_data_ptr<scalar_t>(), C, H, W, G, k, s,
                tap_blocks, mask_total);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        carafe_backward_features_kernel<scalar_t>
            <<<grid_size(feature_total), kThreads, 0, stream>>>(
                grad_output.const_data_ptr<scalar_t>(),
                masks.const_data_ptr<scalar_t>(),
                grad_features.mutable_data_ptr<scalar_t>(), C, H, W, G, k, s,
                channel_blocks, feature_total);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return {grad_features, grad_masks};
}

}  // namespace

TORCH_LIBRARY_IMPL(carafe_mm, CUDA, m) {
  m.impl("carafe_forward", &carafe_forward_cuda);
  m.impl("carafe_backward", &carafe_backward_cuda);
}

}  // namespace carafe_mm
