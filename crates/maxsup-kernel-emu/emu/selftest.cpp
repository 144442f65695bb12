// Kernels that exercise the emulator itself (tests/emulator.rs): a correct butterfly sum, and
// the barrier misuses it must report instead of hanging.
#include "cuda_bf16.h"

// out[block] = sum of in[] over the block's threads: a warp butterfly, then warp 0 over the
// per-warp sums in shared memory.
extern "C" void emu_selftest_block_sum(const float* in, float* out) {
  __shared__ float part[32];
  unsigned t = threadIdx.x, lane = t & 31, warp = t >> 5;
  float v = in[blockIdx.x * blockDim.x + t];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  v = t < (blockDim.x >> 5) ? part[t] : 0.f;
  if (warp == 0) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (t == 0) out[blockIdx.x] = v;
  }
}

// Thread 0 skips the barrier the others wait at.
extern "C" void emu_selftest_divergent_sync() {
  if (threadIdx.x != 0) __syncthreads();
}

// Lane 0 exits before a full-mask shuffle.
extern "C" void emu_selftest_shuffle_after_exit(float* out) {
  if (threadIdx.x == 0) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.f, 1);
}

// bf16 round trip of the stand-in header: out[i] = float(bf16_rn(in[i])).
extern "C" void emu_selftest_bf16_round(const float* in, float* out, size_t n) {
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
    out[i] = __bfloat162float(__float2bfloat16_rn(in[i]));
}
