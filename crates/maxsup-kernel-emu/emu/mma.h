// Stands in for CUDA's <mma.h> (the warp matrix functions, `nvcuda::wmma`) in the host
// emulation, for the 16x16x16 bf16 shape with f32 accumulators.
//
// A fragment's element-to-lane mapping is unspecified on the GPU, so kernels may only load,
// store, fill and multiply whole fragments. Here every lane holds the whole 16x16 tile:
// `load_matrix_sync` reads all of it (whatever memory holds when the lane runs), `mma_sync`
// multiplies in f32 in k order, and `store_matrix_sync` writes only this lane's share of the
// tile (elements i with (7 i + 3) % 32 == lane: scattered, so that no lane's share lines up
// with the rows or columns a kernel's lane reads next). So a lane that reads the stored tile, or a warp that
// loads what other lanes wrote, without a `__syncwarp()` in between sees stale values under
// some schedule, as on the GPU. Pointers must be 32-byte aligned and leading dimensions a
// multiple of 16 bytes (the GPU's rules); a violation aborts the test process with a message.
#pragma once
#include "cuda_bf16.h"

#include <stdio.h>
#include <stdlib.h>

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulation covers the 16x16x16 shape");
  T x[256];  // row-major [16][16], whole in every lane
  enum { num_elements = 256 };
};

inline void emu_wmma_check(const void* p, unsigned ldm, size_t elem, const char* what) {
  if (((uintptr_t)p & 31) != 0 || (ldm * elem) % 16 != 0) {
    fprintf(stderr, "wmma %s: pointer %p must be 32-byte aligned and ldm %u a multiple of 16 bytes\n", what, p, ldm);
    abort();
  }
}

inline unsigned emu_lane() {
  const emu_uint3& t = threadIdx;
  return (t.x + t.y * blockDim.x + t.z * blockDim.x * blockDim.y) & 31;
}

template <typename Use, typename T, typename Layout>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  emu_wmma_check(p, ldm, sizeof(T), "load_matrix_sync");
  // matrix_a row_major: A[i][k] at p[i*ldm+k]; matrix_b row_major: B[k][j] at p[k*ldm+j]; the
  // col_major forms transpose the address. Both are stored row-major in the fragment.
  constexpr bool row = std::is_same<Layout, row_major>::value;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = row ? p[r * ldm + c] : p[c * ldm + r];
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm, layout_t l) {
  emu_wmma_check(p, ldm, sizeof(float), "load_matrix_sync");
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t l) {
  emu_wmma_check(p, ldm, sizeof(float), "store_matrix_sync");
  unsigned lane = emu_lane();
  for (unsigned i = 0; i < 256; ++i) {
    if ((7 * i + 3) % 32 != lane) continue;
    unsigned r = i / 16, c = i % 16;
    (l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[i];
  }
}

template <typename Use, typename T, typename Layout>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, const T& v) {
  for (auto& e : f.x) e = v;
}

template <typename LA, typename LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
  float out[256];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      float s = c.x[i * 16 + j];
      for (int k = 0; k < 16; ++k) s += __bfloat162float(a.x[i * 16 + k]) * __bfloat162float(b.x[k * 16 + j]);
      out[i * 16 + j] = s;
    }
  for (int i = 0; i < 256; ++i) d.x[i] = out[i];
}

}  // namespace wmma
}  // namespace nvcuda
