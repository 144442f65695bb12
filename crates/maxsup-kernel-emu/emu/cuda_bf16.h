// Stands in for CUDA's <cuda_bf16.h> when kernels/ops.cu is compiled as C++ for the host
// emulation (see runtime.cpp): the CUDA keywords, thread indices, barriers, warp shuffles,
// atomics and the bf16 type with round-to-nearest-even conversion.
#pragma once
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <cmath>
#include <algorithm>
#include <type_traits>

#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) alignas(n)

struct emu_uint3 { unsigned int x, y, z; };

extern "C" const emu_uint3* emu_thread_idx();
extern "C" void emu_syncthreads();
extern "C" uint64_t emu_shfl_xor(uint64_t bits, int lane_mask);
extern "C" void* emu_dynamic_shared();
extern emu_uint3 emu_block_idx, emu_block_dim, emu_grid_dim;

#define threadIdx (*emu_thread_idx())
#define blockIdx emu_block_idx
#define blockDim emu_block_dim
#define gridDim emu_grid_dim
#define __syncthreads() emu_syncthreads()
#define DYNAMIC_SHARED(T, name) T* name = (T*)emu_dynamic_shared()

using std::isnan;
using std::max;
using std::min;

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
// A product and a sum that are never contracted into an FMA (the build compiles with
// -ffp-contract=off; on the GPU these intrinsics forbid the contraction).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }

// Full-warp shuffles only (the mask is checked by the scheduler through the lane count).
inline float __shfl_xor_sync(unsigned, float v, int o) {
  uint32_t b;
  memcpy(&b, &v, 4);
  b = (uint32_t)emu_shfl_xor(b, o);
  memcpy(&v, &b, 4);
  return v;
}
inline double __shfl_xor_sync(unsigned, double v, int o) {
  uint64_t b;
  memcpy(&b, &v, 8);
  b = emu_shfl_xor(b, o);
  memcpy(&v, &b, 8);
  return v;
}

// A barrier of the warp's 32 lanes that orders their memory accesses (a full-warp rendezvous,
// as a shuffle is here).
inline void __syncwarp(unsigned = 0xffffffffu) { emu_shfl_xor(0, 0); }

// CUDA's 16-byte vector type, for 128-bit loads and stores.
struct alignas(16) uint4 { unsigned int x, y, z, w; };

// Threads of a block run one at a time, so a read-modify-write is atomic.
inline float atomicAdd(float* p, float v) {
  float old = *p;
  *p = old + v;
  return old;
}

struct __nv_bfloat16 { uint16_t bits; };

inline float __bfloat162float(__nv_bfloat16 v) {
  uint32_t b = (uint32_t)v.bits << 16;
  float f;
  memcpy(&f, &b, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t b;
  memcpy(&b, &f, 4);
  __nv_bfloat16 r;
  if ((b & 0x7fffffffu) > 0x7f800000u) {
    r.bits = (uint16_t)((b >> 16) | 0x40);  // NaN stays a (quiet) NaN
  } else {
    r.bits = (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
  }
  return r;
}
