// The instruction sets the CPU kernels are compiled for, as traits classes
// that the kernels take as their first template parameter:
//
//   IsaDefault  the compiler's baseline (x86-64, or any other architecture)
//   IsaAvx2     AVX2 + FMA (x86-64-v3); built by GCC on x86-64, and run
//               where the CPU has both (see use_avx2)
//
// Each one says how to keep a vector in a register, whether and how to
// stream float stores past the caches and fence them, and runs a work item
// compiled for its instruction set: Isa::run<item>(args...) calls `item`
// from a function with that target. The work items and everything they call
// are always_inline, so all of their code is generated for that target.
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CARAFE_HAVE_AVX2 1
#endif

namespace carafe_mm {
namespace cpu {

struct IsaDefault {
  static constexpr bool kStreamStores = false;

  template <typename V>
  [[gnu::always_inline]] static inline void keep_in_register(V&) {}

  [[gnu::always_inline]] static inline void store_fence() {}

  // Work items stay out of line: inlined into the parallel_for lambdas,
  // their inner loops lose registers to the lambdas' state.
  template <auto item, typename... Args>
  [[gnu::noinline]] static void run(Args&&... args) {
    item(std::forward<Args>(args)...);
  }
};

#ifdef CARAFE_HAVE_AVX2
// Its functions carry no target attribute: they are only ever compiled inside
// run, which has it (an always_inline function with the attribute could not
// be inlined into the always_inline code between them).
struct IsaAvx2 {
  static constexpr bool kStreamStores = true;

  // Makes GCC load a vector once into a register that feeds several FMAs,
  // instead of folding the load into each of them (which makes the loops
  // load-bound).
  template <typename V>
  [[gnu::always_inline]] static inline void keep_in_register(V& v) {
    asm("" : "+x"(v));
  }

  // dst[0, 8) = src[0, 8) around the caches, dst 32-byte aligned:
  // _mm256_stream_ps(dst, _mm256_loadu_ps(src)), spelt as the builtin, which
  // is checked against the target of the function it ends up in.
  [[gnu::always_inline]] static inline void stream_store_8(float* dst,
                                                           const float* src) {
    typedef float V __attribute__((vector_size(32)));
    V v;
    std::memcpy(&v, src, sizeof(V));
    __builtin_ia32_movntps256(dst, v);
  }

  // Orders the streamed stores before the stores that follow.
  [[gnu::always_inline]] static inline void store_fence() { _mm_sfence(); }

  template <auto item, typename... Args>
  [[gnu::noinline, gnu::target("arch=x86-64-v3")]] static void run(
      Args&&... args) {
    item(std::forward<Args>(args)...);
  }
};
#endif

// Whether the kernels run IsaAvx2: where it is built and the CPU has AVX2 and
// FMA, unless CARAFE_MM_CPU_ISA=default asks for IsaDefault (for tests and
// debugging).
inline bool use_avx2() {
#ifdef CARAFE_HAVE_AVX2
  static const bool use = [] {
    const char* isa = std::getenv("CARAFE_MM_CPU_ISA");
    if (isa != nullptr && std::string(isa) == "default") return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return use;
#else
  return false;
#endif
}

}  // namespace cpu
}  // namespace carafe_mm
