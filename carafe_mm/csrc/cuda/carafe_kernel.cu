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
//                    in registers. The other half compute grad_features: two
//                    threads for two neighbouring input pixels, one per
//                    output row parity, the masks of the output pixels that
//                    read them in registers.
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

// The place of a tiled kernel's block b: tile (ty, tx) of the input, slice
// of the group's channels, group g, image n (tile x fastest).
struct TileBlock {
  int64_t tx, ty, slice, g, n;
};

__device__ inline TileBlock decode_tile_block(int64_t b, int64_t tiles_w,
                                              int64_t tiles_h, int64_t slices,
                                              int64_t G) {
  TileBlock tb;
  tb.tx = b % tiles_w;
  b /= tiles_w;
  tb.ty = b % tiles_h;
  b /= tiles_h;
  tb.slice = b % slices;
  b /= slices;
  tb.g = b % G;
  tb.n = b / G;
  return tb;
}

// Channels c, ..., c + V - 1 of pixel (y, x) of planes of H×W values
// `plane` apart, staged as one shared-memory word; zeros from channel
// c + count on and outside the planes (the zero padding: w · 0, so that a
// non-finite value gives NaN as in the CPU kernel and the reference).
template <int V, typename scalar_t>
__device__ inline Lanes<scalar_t, V> halo_lanes(const scalar_t* p,
                                                int64_t plane, int count,
                                                int c, int64_t y, int64_t x,
                                                int64_t H, int64_t W) {
  const bool valid = y >= 0 && y < H && x >= 0 && x < W;
  Lanes<scalar_t, V> e;
#pragma unroll
  for (int j = 0; j < V; ++j) {
    e.v[j] = valid && j < count ? p[(c + j) * plane + y * W + x] : scalar_t(0);
  }
  return e;
}

// Where the backward stages grad_output in shared memory: word
// at(ci, py, by, px, bx) holds output pixel (s·by + py, s·bx + px) of the
// tile and its halo (s = 2), channel word ci. The strides put each warp's
// reads in distinct banks: the grad_masks half reads 16 pixels of each of
// two input rows, rows kByStride ≡ 16 (mod 32) banks apart; the
// grad_features half reads 8 even bx of two rows (the even banks) for each
// of two py an odd number of banks apart (the odd ones).
template <int kHaloH, int kHaloW>
struct BackwardGradLayout {
  static constexpr int kPxStride = (kHaloW + 7) / 16 * 16 + 8;  // 8 mod 16
  static constexpr int kByStride = 2 * kPxStride;               // 16 mod 32
  static constexpr int kPyStride = kHaloH * kByStride + 1;      // odd
  static constexpr int kWords = 2 * kPyStride;                  // per ci
  __device__ static int at(int ci, int py, int by, int px, int bx) {
    return ci * kWords + py * kPyStride + by * kByStride + px * kPxStride + bx;
  }
};

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
    const TileBlock tb = decode_tile_block(b, tiles_w, tiles_h, slices, G);
    const int64_t n = tb.n, g = tb.g;
    const int64_t iy = tb.ty * kTileH + ly, ix = tb.tx * kTileW + lx;
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
    const int64_t c_begin = tb.slice * slice_channels;
    const int64_t c_end =
        Cg < c_begin + slice_channels ? Cg : c_begin + slice_channels;
    const scalar_t* f = features + (n * C + g * Cg) * plane;
    scalar_t* o = output + (n * C + g * Cg) * out_plane + S * iy * Wo + S * ix;
    const int64_t y0 = tb.ty * kTileH - R, x0 = tb.tx * kTileW - R;
    for (int64_t c0 = c_begin; c0 < c_end; c0 += kChunk) {
      const int chunk = static_cast<int>(c_end - c0 < kChunk ? c_end - c0 : kChunk);
      __syncthreads();  // the previous chunk's reads are done
      for (int i = threadIdx.x; i < chunk * kHaloH * kHaloW; i += blockDim.x) {
        const int hx = i % kHaloW, hy = i / kHaloW % kHaloH;
        const int ci = i / (kHaloW * kHaloH);
        tile[ci][hy][hx] = static_cast<acc_t>(
            halo_lanes<1>(f + c0 * plane, plane, 1, ci, y0 + hy, x0 + hx, H, W)
                .v[0]);
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
//   grad_features half: two threads own two neighbouring input pixels Q0,
//                       Q1 of a row, one thread each output row parity py.
//                       The output pixels that read Q are the s² pixels of
//                       each B = Q + (r - ky, r - kx), through tap (ky, kx);
//                       a thread keeps the k²·s masks of its py for both
//                       pixels in registers (read by no other thread), reads
//                       the union of the two pixels' grad_output windows
//                       (k·(k + 1)·s values instead of 2·k²·s) and sums both
//                       pixels; a shuffle with the other py's thread
//                       completes the pixel it writes.
// For each chunk of channels the block stages the features around the tile
// and grad_output around its output pixels in shared memory, as the input
// type (exact), two channels to a 32-bit word for half types.
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
  // The grad_features half's lanes: 8 pairs of a row × 2 py × 2 rows.
  static_assert(kBackTileW == 16 && kBackTileH % 2 == 0, "lane layout");
  constexpr int V = sizeof(scalar_t) == 2 ? 2 : 1;  // channels per word
  using lanes_t = Lanes<scalar_t, V>;
  constexpr int kChunkB = sizeof(lanes_t) == 8 ? 2 : 4;  // words per pixel
  using GradLayout = BackwardGradLayout<kHaloH, kHaloW>;
  constexpr int kFeaturePitch = (kHaloW + 15) / 32 * 32 + 16;  // 16 mod 32
  constexpr int kGradValues = S * kHaloH * S * kHaloW;
  constexpr int kFeatureValues = kHaloH * kHaloW;
  __shared__ lanes_t grad_tile[kChunkB * GradLayout::kWords];
  __shared__ lanes_t feature_tile[kChunkB][kHaloH][kFeaturePitch];
  const int64_t Ho = S * H, Wo = S * W, Cg = C / G;
  const int64_t plane = H * W, out_plane = Ho * Wo;
  const bool masks_half = threadIdx.x < kPixels;
  const int pixel = threadIdx.x % kPixels, lane = pixel % 32;
  // grad_features half: py of this thread, its pixels (ly, lx + q).
  const int py = lane / 8 % 2;
  const int lx = masks_half ? pixel % kBackTileW : 2 * (lane % 8);
  const int ly = masks_half ? pixel / kBackTileW : 2 * (pixel / 32) + lane / 16;
  for (int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    const TileBlock tb = decode_tile_block(b, tiles_w, tiles_h, 1, G);
    const int64_t iy = tb.ty * kBackTileH + ly, ix = tb.tx * kBackTileW + lx;
    const bool inside = iy < H && ix < W;
    // The warp's first row: the whole warp is below the input when it is.
    const bool warp_inside = tb.ty * kBackTileH + (ly & ~1) < H;

    // grad_masks half: acc[p][t], the mask gradient of tap t at output pixel
    // p of this thread's pixel. grad_features half: acc[2 q + px][t], the
    // mask of tap t at output pixel (py, px) of B for pixel q; 0 where B is
    // outside the input.
    acc_t acc[S2][K2];
#pragma unroll
    for (int t = 0; t < K2; ++t) {
#pragma unroll
      for (int p = 0; p < S2; ++p) acc[p][t] = acc_t(0);
    }
    if (!masks_half && iy < H) {
      const scalar_t* mg = masks + (tb.n * G + tb.g) * K2 * out_plane;
#pragma unroll
      for (int t = 0; t < K2; ++t) {
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const int64_t by = iy + R - t / K, bx = ix + q + R - t % K;
          if (ix + q >= W || by < 0 || by >= H || bx < 0 || bx >= W) continue;
          const scalar_t* mp = mg + t * out_plane + (S * by + py) * Wo + S * bx;
          if (paired) {
            const Pair<scalar_t> v = *reinterpret_cast<const Pair<scalar_t>*>(mp);
            acc[2 * q][t] = static_cast<acc_t>(v.x);
            acc[2 * q + 1][t] = static_cast<acc_t>(v.y);
          } else {
            acc[2 * q][t] = static_cast<acc_t>(mp[0]);
            acc[2 * q + 1][t] = static_cast<acc_t>(mp[1]);
          }
        }
      }
    }
    const int64_t group = tb.n * C + tb.g * Cg;
    const scalar_t* go = grad_output + group * out_plane;
    const scalar_t* f = features + group * plane;
    // grad_features half: the thread writes pixel q = py.
    scalar_t* gf = grad_features + group * plane + iy * W + ix + py;
    const bool writes = iy < H && ix + py < W;
    const int64_t y0 = tb.ty * kBackTileH - R, x0 = tb.tx * kBackTileW - R;
    const int64_t oy0 = S * y0, ox0 = S * x0;
    for (int64_t c0 = 0; c0 < Cg; c0 += kChunkB * V) {
      const int channels =
          static_cast<int>(Cg - c0 < kChunkB * V ? Cg - c0 : kChunkB * V);
      const int chunk = (channels + V - 1) / V;
      __syncthreads();  // the previous chunk's reads are done
      for (int i = threadIdx.x; i < chunk * kGradValues; i += blockDim.x) {
        const int col = i % (S * kHaloW), row = i / (S * kHaloW) % (S * kHaloH);
        const int ci = i / kGradValues;
        grad_tile[GradLayout::at(ci, row % S, row / S, col % S, col / S)] =
            halo_lanes<V>(go + c0 * out_plane, out_plane, channels - ci * V,
                          ci * V, oy0 + row, ox0 + col, Ho, Wo);
      }
      for (int i = threadIdx.x; i < chunk * kFeatureValues; i += blockDim.x) {
        const int hx = i % kHaloW, hy = i / kHaloW % kHaloH;
        const int ci = i / kFeatureValues;
        feature_tile[ci][hy][hx] = halo_lanes<V>(
            f + c0 * plane, plane, channels - ci * V, ci * V, y0 + hy, x0 + hx,
            H, W);
      }
      __syncthreads();
      if (masks_half) {
        if (!inside) continue;
        for (int ci = 0; ci < chunk; ++ci) {
          acc_t gv[S2][V];
#pragma unroll
          for (int p = 0; p < S2; ++p) {
            const lanes_t e = grad_tile[GradLayout::at(ci, p / S, ly + R, p % S, lx + R)];
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
        continue;
      }
      if (!warp_inside) continue;
      for (int ci = 0; ci < chunk; ++ci) {
        // sum[q][j]: this py's share of pixel q's gradient, channel j.
        acc_t sum[2][V];
#pragma unroll
        for (int j = 0; j < V; ++j) sum[0][j] = sum[1][j] = acc_t(0);
        // B = (ly + dy, lx + dx) in tile coordinates: tap (2r - dy, 2r - dx)
        // of pixel 0 and (2r - dy, 2r + 1 - dx) of pixel 1.
#pragma unroll
        for (int dy = 0; dy < K; ++dy) {
#pragma unroll
          for (int dx = 0; dx < K + 1; ++dx) {
#pragma unroll
            for (int px = 0; px < S; ++px) {
              const lanes_t e = grad_tile[GradLayout::at(ci, py, ly + dy, px, lx + dx)];
#pragma unroll
              for (int j = 0; j < V; ++j) {
                const acc_t v = static_cast<acc_t>(e.v[j]);
                if (dx < K) sum[0][j] += v * acc[px][(2 * R - dy) * K + 2 * R - dx];
                if (dx > 0) {
                  sum[1][j] += v * acc[2 + px][(2 * R - dy) * K + 2 * R + 1 - dx];
                }
              }
            }
          }
        }
#pragma unroll
        for (int j = 0; j < V; ++j) {
          // Keep pixel q = py, hand the other to the other py's thread.
          const acc_t mine = py ? sum[1][j] : sum[0][j];
          const acc_t theirs = py ? sum[0][j] : sum[1][j];
          const acc_t total = mine + __shfl_xor_sync(0xffffffffu, theirs, 8);
          const int c = ci * V + j;
          if (writes && c < channels) {
            gf[(c0 + c) * plane] = static_cast<scalar_t>(total);
          }
        }
      }
    }
    if (!masks_half || !inside) continue;
    scalar_t* gm = grad_masks + (tb.n * G + tb.g) * K2 * out_plane +
                   S * iy * Wo + S * ix;
#pragma unroll
    for (int t = 0; t < K2; ++t) {
      // grad_masks is a fresh allocation: pairs are aligned.
#pragma unroll
      for (int p = 0; p < S; ++p) {
        *reinterpret_cast<Pair<scalar_t>*>(gm + t * out_plane + p * Wo) = {
            static_cast<scalar_t>(acc[S * p][t]),
            static_cast<scalar_t>(acc[S * p + 1][t])};
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
