// CUDA kernels of maxsup-ops: the memory-bound ops of ResNet and DeiT training, forward and
// backward, for f32 and bf16 storage. All arithmetic is f32; reductions across threads are f64
// (BatchNorm statistics) or f32 in a fixed order, so a result does not depend on timing.
//
// Naming: `<op>_<dtype>`, extern "C", launched from src/cuda/kernels.rs. Every kernel takes plain
// contiguous buffers and element counts; shapes are checked on the host before launch.
#include <cuda_bf16.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(bf16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float v) { return __float2bfloat16_rn(v); }

// The launch's dynamic shared memory as an array of T (the host emulation of the kernels,
// crates/maxsup-kernel-emu, defines its own).
#ifndef DYNAMIC_SHARED
#define DYNAMIC_SHARED(T, name) extern __shared__ __align__(128) T name[]
#endif

#define GRID_STRIDE(i, n) \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)blockDim.x * gridDim.x)

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Block-wide f64 sum of one value per thread (blockDim.x a multiple of 32, at most 1024);
// the result is valid in thread 0.
__device__ double block_sum_d(double v) {
  __shared__ double part[32];
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum_d(v);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  int nw = blockDim.x >> 5;
  v = (threadIdx.x < nw) ? part[threadIdx.x] : 0.0;
  if (warp == 0) v = warp_sum_d(v);
  __syncthreads();
  return v;
}

// ---------------------------------------------------------------- element-wise

template <typename T> __device__ void relu_fwd(const T* x, T* y, size_t n) {
  GRID_STRIDE(i, n) { float v = to_f(x[i]); y[i] = from_f<T>(v > 0.f ? v : 0.f); }
}
// dx = dy where y > 0: the gradient through a ReLU (also of a fused BN+ReLU or add+ReLU) from its output.
template <typename T> __device__ void relu_bwd(const T* y, const T* dy, T* dx, size_t n) {
  GRID_STRIDE(i, n) { dx[i] = to_f(y[i]) > 0.f ? dy[i] : from_f<T>(0.f); }
}
template <typename T> __device__ void add_relu_fwd(const T* a, const T* b, T* y, size_t n) {
  GRID_STRIDE(i, n) { float v = to_f(a[i]) + to_f(b[i]); y[i] = from_f<T>(v > 0.f ? v : 0.f); }
}
// GELU with the exact erf form: y = x * Phi(x); its derivative Phi(x) + x * phi(x). One
// definition for the plain and the bias-fused kernels, so both round alike.
__device__ __forceinline__ float gelu_f(float v) { return 0.5f * v * (1.f + erff(v * 0.70710678118654752f)); }
__device__ __forceinline__ float gelu_grad_f(float v) {
  float cdf = 0.5f * (1.f + erff(v * 0.70710678118654752f));
  float pdf = 0.39894228040143268f * expf(-0.5f * v * v);
  return cdf + v * pdf;
}
template <typename T> __device__ void gelu_fwd(const T* x, T* y, size_t n) {
  GRID_STRIDE(i, n) { y[i] = from_f<T>(gelu_f(to_f(x[i]))); }
}
template <typename T> __device__ void gelu_bwd(const T* x, const T* dy, T* dx, size_t n) {
  GRID_STRIDE(i, n) { dx[i] = from_f<T>(to_f(dy[i]) * gelu_grad_f(to_f(x[i]))); }
}

// ---------------------------------------------------------------- softmax over the last dim
// One warp per row.

template <typename T> __device__ void softmax_fwd(const T* x, T* y, size_t rows, int d) {
  size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* xr = x + row * d;
  T* yr = y + row * d;
  float m = -INFINITY;
  for (int j = lane; j < d; j += 32) m = fmaxf(m, to_f(xr[j]));
  m = warp_max(m);
  float s = 0.f;
  for (int j = lane; j < d; j += 32) s += expf(to_f(xr[j]) - m);
  s = warp_sum(s);
  float inv = 1.f / s;
  for (int j = lane; j < d; j += 32) yr[j] = from_f<T>(expf(to_f(xr[j]) - m) * inv);
}
// dx = y * (dy - sum(dy * y)).
template <typename T> __device__ void softmax_bwd(const T* y, const T* dy, T* dx, size_t rows, int d) {
  size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* yr = y + row * d;
  const T* gr = dy + row * d;
  float dot = 0.f;
  for (int j = lane; j < d; j += 32) dot += to_f(yr[j]) * to_f(gr[j]);
  dot = warp_sum(dot);
  for (int j = lane; j < d; j += 32) dx[row * d + j] = from_f<T>(to_f(yr[j]) * (to_f(gr[j]) - dot));
}

// ---------------------------------------------------------------- LayerNorm over the last dim
// One warp per row; weight and bias are f32. Row statistics are recomputed in the backward.

template <typename T> __device__ void row_stats(const T* xr, int d, float eps, int lane, float* mean, float* rstd) {
  float s = 0.f;
  for (int j = lane; j < d; j += 32) s += to_f(xr[j]);
  float m = warp_sum(s) / d;
  float v = 0.f;
  for (int j = lane; j < d; j += 32) { float c = to_f(xr[j]) - m; v += c * c; }
  v = warp_sum(v) / d;
  *mean = m;
  *rstd = rsqrtf(v + eps);
}

template <typename T>
__device__ void layer_norm_fwd(const T* x, const float* w, const float* b, T* y, size_t rows, int d, float eps) {
  size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* xr = x + row * d;
  float m, r;
  row_stats(xr, d, eps, lane, &m, &r);
  for (int j = lane; j < d; j += 32) y[row * d + j] = from_f<T>((to_f(xr[j]) - m) * r * w[j] + b[j]);
}
// The backward in one pass over x and dy: per row (a warp), dx = rstd * (g - mean(g) - xhat *
// mean(g * xhat)), g = dy * w, plus `res` (a pre-norm block's residual gradient, or null) added
// as a separate add of the stored dx would; per block, partial[block][0][j] = sum over its rows
// of dy * xhat and partial[block][1][j] = sum of dy (the weight and bias gradients). Rows are
// dealt to blocks round-robin, one per warp at a time: each warp finds its row's statistics and
// writes its dx, then thread t adds the rows in order into the columns j = t (mod blockDim) it
// alone owns (no atomics: the sums do not depend on timing). Dynamic shared memory: 2*d floats.
template <typename T>
__device__ void layer_norm_bwd(const T* x, const float* w, const T* dy, const T* res, T* dx, float* partial, size_t rows, int d, float eps) {
  DYNAMIC_SHARED(float, acc);
  __shared__ float row_mean[32], row_rstd[32];
  for (int j = threadIdx.x; j < 2 * d; j += blockDim.x) acc[j] = 0.f;
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (size_t base = (size_t)blockIdx.x * nw; base < rows; base += (size_t)gridDim.x * nw) {
    if (base + warp < rows) {
      size_t row = base + warp;
      const T* xr = x + row * d;
      const T* gr = dy + row * d;
      float m, r;
      row_stats(xr, d, eps, lane, &m, &r);
      row_mean[warp] = m;
      row_rstd[warp] = r;
      float sg = 0.f, sgx = 0.f;
      for (int j = lane; j < d; j += 32) {
        float g = to_f(gr[j]) * w[j];
        sg += g;
        sgx += g * (to_f(xr[j]) - m) * r;
      }
      sg = warp_sum(sg) / d;
      sgx = warp_sum(sgx) / d;
      for (int j = lane; j < d; j += 32) {
        float xh = (to_f(xr[j]) - m) * r;
        T v = from_f<T>(r * (to_f(gr[j]) * w[j] - sg - xh * sgx));
        if (res) v = from_f<T>(__fadd_rn(to_f(res[row * d + j]), to_f(v)));  // no FMA with r * (...) in f32
        dx[row * d + j] = v;
      }
    }
    __syncthreads();
    for (int r = 0; r < nw && base + r < rows; ++r) {
      const T* xr = x + (base + r) * d;
      const T* gr = dy + (base + r) * d;
      float m = row_mean[r], rs = row_rstd[r];
      for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float g = to_f(gr[j]);
        acc[j] += g * (to_f(xr[j]) - m) * rs;
        acc[d + j] += g;
      }
    }
    __syncthreads();
  }
  for (int j = threadIdx.x; j < 2 * d; j += blockDim.x) partial[(size_t)blockIdx.x * 2 * d + j] = acc[j];
}

// out[j] = sum over r < parts of partial[r][j], for j < width (one thread per column, fixed order).
extern "C" __global__ void column_sum_f32(const float* partial, float* out, int parts, int width) {
  int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= width) return;
  float s = 0.f;
  for (int r = 0; r < parts; ++r) s += partial[(size_t)r * width + j];
  out[j] = s;
}

// ---------------------------------------------------------------- a linear layer's bias
// Over a [m, n] row-major GEMM result (n output features). The bias has the activations' dtype
// and `g + bias` is rounded to it, as the separate bias add stores it, so the fused kernels
// give the unfused ones' values. Column sums: grid (ceil(n/32), S), block (32, 8), thread
// (tx, ty) of block (bx, by) owns column bx*32+tx over rows by*8+ty, by*8+ty+8S, ...; the 8
// rows of a block are added in a fixed order into partial[by][col], then column_sum_f32 adds
// the S splits: no atomics, the sums do not depend on timing.

template <typename T> __device__ __forceinline__ float biased(T g, T bias) { return to_f(from_f<T>(to_f(g) + to_f(bias))); }

// The end of the column sums: thread (tx, ty) holds its rows' sum of column ch.
__device__ void store_column_partial(float acc, float* partial, int ch, int n) {
  __shared__ float s[8][32];
  s[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && ch < n) {
    float t = 0.f;
    for (int k = 0; k < 8; ++k) t += s[k][threadIdx.x];
    partial[(size_t)blockIdx.y * n + ch] = t;
  }
}

// The column sums' loop: thread (tx, ty) of block (bx, by) adds f(r, ch) for column
// ch = bx*32+tx over rows r = by*8+ty, by*8+ty+8S, ..., and the block's sums reach partial.
template <typename F>
__device__ __forceinline__ void column_rows(size_t m, int n, int splits, float* partial, F f) {
  int ch = blockIdx.x * 32 + threadIdx.x;
  float acc = 0.f;
  if (ch < n)
    for (size_t r = (size_t)blockIdx.y * 8 + threadIdx.y; r < m; r += (size_t)splits * 8) acc += f(r, ch);
  store_column_partial(acc, partial, ch, n);
}

// y = gelu(g + bias): fc1's bias add and the MLP's GELU in one pass.
template <typename T> __device__ void bias_gelu_fwd(const T* g, const T* bias, T* y, size_t total, int n) {
  GRID_STRIDE(i, total) { y[i] = from_f<T>(gelu_f(biased(g[i], bias[i % n]))); }
}
// dh = dy * gelu'(g + bias), and the column partial sums of dh (fc1's bias gradient).
template <typename T>
__device__ void bias_gelu_bwd(const T* g, const T* bias, const T* dy, T* dh, float* partial, size_t m, int n, int splits) {
  column_rows(m, n, splits, partial, [&](size_t r, int ch) {
    size_t i = r * n + ch;
    T v = from_f<T>(to_f(dy[i]) * gelu_grad_f(biased(g[i], bias[ch])));
    dh[i] = v;
    return to_f(v);
  });
}
// The column partial sums of dy: a bias gradient.
template <typename T> __device__ void bias_grad_partial(const T* dy, float* partial, size_t m, int n, int splits) {
  column_rows(m, n, splits, partial, [&](size_t r, int ch) { return to_f(dy[r * n + ch]); });
}

// ---------------------------------------------------------------- a residual branch's output
// y = x + s[image] * (o + bias) over [m, n] rows, for the output linear's bias-free GEMM result o
// and the images' stochastic-depth scales s (f32, null: none; 1/keep is kept exact rather than
// rounded to T), rounded as the separate ops store them: the bias add, the product with the
// scale, the residual add, each in T.
template <typename T>
__device__ void residual_out_fwd(const T* x, const T* o, const T* bias, const float* s, T* y, size_t total, int n, size_t per_image) {
  GRID_STRIDE(i, total) {
    float v = biased(o[i], bias[i % n]);
    // __fmul_rn / __fadd_rn: in f32, where the roundings to T vanish, nvcc would otherwise
    // contract the product and the residual add into one FMA, rounded once, not as the ops.
    if (s) v = to_f(from_f<T>(__fmul_rn(v, s[i / per_image])));
    y[i] = from_f<T>(__fadd_rn(to_f(x[i]), v));
  }
}
// g = dy * s[image] (the branch's output gradient under stochastic depth) and its column partial
// sums (the output linear's bias gradient). Column-sum geometry (see "a linear layer's bias").
template <typename T>
__device__ void residual_out_bwd(const T* dy, const float* s, T* g, float* partial, size_t m, int n, size_t rows_per_image, int splits) {
  column_rows(m, n, splits, partial, [&](size_t r, int ch) {
    size_t i = r * n + ch;
    T v = from_f<T>(to_f(dy[i]) * s[r / rows_per_image]);
    g[i] = v;
    return to_f(v);
  });
}

// ---------------------------------------------------------------- attention heads from qkv
// The qkv projection's `[B*N, 3C]` result (C = heads * hd, the columns [q | k | v], each
// head-major) to and from `[3][B][heads][N][hd]`: the bias add, the head split and the queries'
// scale in one pass, and back with the bias gradient's column sums beside it. Values are
// rounded as the separate ops store them: `g + bias` to T, then `q * scale` with the scale in T
// (candle's affine takes it in the tensor's dtype).

// Where column j of row r of the qkv result lands in [3][B][heads][N][hd].
__device__ __forceinline__ size_t qkv_heads_index(size_t r, int j, size_t batch, int tokens, int heads, int hd) {
  int c = heads * hd;
  int part = j / c, h = (j - part * c) / hd, d = j - part * c - h * hd;
  size_t b = r / tokens;
  size_t t = r - b * tokens;
  return ((((size_t)part * batch + b) * heads + h) * tokens + t) * hd + d;
}

template <typename T>
__device__ void qkv_heads_fwd(const T* g, const T* bias, T* out, size_t total, int tokens, int heads, int hd, float scale) {
  int n = 3 * heads * hd;
  size_t rows = total / n, batch = rows / tokens;
  float s = to_f(from_f<T>(scale));
  GRID_STRIDE(i, total) {
    size_t r = i / n;
    int j = (int)(i - r * n);
    float v = biased(g[i], bias[j]);
    if (j < n / 3) v = to_f(from_f<T>(v * s));
    out[qkv_heads_index(r, j, batch, tokens, heads, hd)] = from_f<T>(v);
  }
}
// dh[r][j] from the gradients of the scaled queries, the keys and the values ([B][heads][N][hd]
// each; the queries' times the scale), and the column partial sums of dh (the qkv bias
// gradient). Column-sum geometry (see "a linear layer's bias").
template <typename T>
__device__ void qkv_heads_bwd(const T* dq, const T* dk, const T* dv, T* dh, float* partial, size_t m, int tokens, int heads,
                              int hd, float scale, int splits) {
  int c = heads * hd, n = 3 * c;
  // A thread's column, hence its part (q, k or v), is fixed: found once, outside the row loop.
  int part = (int)(blockIdx.x * 32 + threadIdx.x) / c;
  const T* src = part == 0 ? dq : (part == 1 ? dk : dv);
  float s = to_f(from_f<T>(scale));
  size_t batch = m / tokens;
  column_rows(m, n, splits, partial, [&](size_t r, int ch) {
    // The part's own [B][heads][N][hd] plane: the index with part 0.
    T v = src[qkv_heads_index(r, ch - part * c, batch, tokens, heads, hd)];
    if (part == 0) v = from_f<T>(to_f(v) * s);
    dh[r * n + ch] = v;
    return to_f(v);
  });
}

// ---------------------------------------------------------------- BatchNorm over NCHW
// Statistics: grid (C, S): block (c, s) reduces images s, s+S, ... of channel c. Values are
// shifted by the channel's first element before squaring (no cancellation when |mean| >> std);
// per-thread sums are f32, the block and the finalisation f64. Planes smaller than the block
// (ResNet-50's 14x14 and 7x7) are spread over it several images per pass, and the normalisation
// and input gradient take several planes per block (`per_block`, about 2048 elements), so that
// most threads do not idle there.

// Calls f(index) for every element of channel ch in images s, s + splits, ... of an NCHW tensor.
template <typename F>
__device__ __forceinline__ void for_channel_elements(int n, int c, int hw, int ch, int s, int splits, F f) {
  if (hw >= (int)blockDim.x) {
    for (int b = s; b < n; b += splits) {
      size_t off = ((size_t)b * c + ch) * hw;
      for (int i = threadIdx.x; i < hw; i += blockDim.x) f(off + i);
    }
  } else {
    int lanes = blockDim.x / hw, lane = threadIdx.x / hw, i = threadIdx.x - lane * hw;
    if (lane < lanes)
      for (int b = s + lane * splits; b < n; b += lanes * splits) f(((size_t)b * c + ch) * hw + i);
  }
}

// The planes [first, first + count) of block blockIdx.x, for the per-plane-group kernels: calls
// f(index, channel) for each of their elements.
template <typename F>
__device__ __forceinline__ void for_plane_group(int c, int hw, size_t planes, int per_block, F f) {
  size_t first = (size_t)blockIdx.x * per_block;
  size_t left = planes - first;
  int span = (int)(left < (size_t)per_block ? left : (size_t)per_block) * hw;
  int ch0 = (int)(first % c);
  size_t base = first * hw;
  for (int j = threadIdx.x; j < span; j += blockDim.x) f(base + j, (ch0 + j / hw) % c);
}

template <typename T>
__device__ void bn_stats_partial(const T* x, double* partial, int n, int c, int hw, int splits) {
  int ch = blockIdx.x, s = blockIdx.y;
  float shift = to_f(x[(size_t)ch * hw]);
  float a = 0.f, a2 = 0.f;
  for_channel_elements(n, c, hw, ch, s, splits, [&](size_t i) { float v = to_f(x[i]) - shift; a += v; a2 += v * v; });
  double sa = block_sum_d((double)a);
  double sa2 = block_sum_d((double)a2);
  if (threadIdx.x == 0) {
    partial[((size_t)ch * splits + s) * 2] = sa;
    partial[((size_t)ch * splits + s) * 2 + 1] = sa2;
  }
}
// stats[0][c] = mean, stats[1][c] = biased variance.
template <typename T>
__device__ void bn_stats_finalize(const T* x, const double* partial, float* stats, int c, int hw, int splits, double count) {
  int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  double a = 0.0, a2 = 0.0;
  for (int s = 0; s < splits; ++s) { a += partial[((size_t)ch * splits + s) * 2]; a2 += partial[((size_t)ch * splits + s) * 2 + 1]; }
  double ms = a / count;
  double var = a2 / count - ms * ms;
  stats[ch] = (float)(ms + (double)to_f(x[(size_t)ch * hw]));
  stats[c + ch] = (float)(var > 0.0 ? var : 0.0);
}
// y = (x - mean) * rstd * w + b (+ r), optionally max(., 0). `per_block` planes (image,
// channel) per block.
template <typename T>
__device__ void bn_apply(const T* x, const float* stats, const float* w, const float* b, const T* r, T* y, int c, int hw, float eps, int relu,
                         size_t planes, int per_block) {
  for_plane_group(c, hw, planes, per_block, [&](size_t i, int ch) {
    float rstd = rsqrtf(stats[c + ch] + eps);
    float scale = w[ch] * rstd;
    float shift = b[ch] - stats[ch] * scale;
    float v = to_f(x[i]) * scale + shift;
    if (r) v += to_f(r[i]);
    if (relu) v = v > 0.f ? v : 0.f;
    y[i] = from_f<T>(v);
  });
}
// Backward sums per channel: sum(g) and sum(g * (x - mean)), g = dy (masked by y > 0 when relu).
template <typename T>
__device__ void bn_bwd_partial(const T* x, const T* y, const T* dy, const float* stats, double* partial, int n, int c, int hw, int splits, int relu) {
  int ch = blockIdx.x, s = blockIdx.y;
  float mean = stats[ch];
  float a = 0.f, ax = 0.f;
  for_channel_elements(n, c, hw, ch, s, splits, [&](size_t i) {
    float g = to_f(dy[i]);
    if (relu && !(to_f(y[i]) > 0.f)) g = 0.f;
    a += g;
    ax += g * (to_f(x[i]) - mean);
  });
  double sa = block_sum_d((double)a);
  double sax = block_sum_d((double)ax);
  if (threadIdx.x == 0) {
    partial[((size_t)ch * splits + s) * 2] = sa;
    partial[((size_t)ch * splits + s) * 2 + 1] = sax;
  }
}
// sums[0][c] = dweight = rstd * sum(g * (x - mean)), sums[1][c] = dbias = sum(g).
extern "C" __global__ void bn_bwd_finalize(const double* partial, const float* stats, float* sums, int c, int splits, float eps) {
  int ch = blockIdx.x * blockDim.x + threadIdx.x;
  if (ch >= c) return;
  double a = 0.0, ax = 0.0;
  for (int s = 0; s < splits; ++s) { a += partial[((size_t)ch * splits + s) * 2]; ax += partial[((size_t)ch * splits + s) * 2 + 1]; }
  double rstd = 1.0 / sqrt((double)stats[c + ch] + (double)eps);
  sums[ch] = (float)(ax * rstd);
  sums[c + ch] = (float)a;
}
// dx = w * rstd / M * (M * g - sum(g) - xhat * sum(g * xhat)).
template <typename T>
__device__ void bn_bwd_dx(const T* x, const T* y, const T* dy, const float* stats, const float* w, const float* sums, T* dx, int c, int hw, float count, float eps, int relu,
                          size_t planes, int per_block) {
  for_plane_group(c, hw, planes, per_block, [&](size_t i, int ch) {
    float mean = stats[ch];
    float rstd = rsqrtf(stats[c + ch] + eps);
    float k = w[ch] * rstd / count;
    float sgx = sums[ch], sg = sums[c + ch];
    float g = to_f(dy[i]);
    if (relu && !(to_f(y[i]) > 0.f)) g = 0.f;
    float xh = (to_f(x[i]) - mean) * rstd;
    dx[i] = from_f<T>(k * (count * g - sg - xh * sgx));
  });
}

// ---------------------------------------------------------------- BatchNorm over NHWC
// The channels-last input as M = N*H*W rows of C channels. Sums: grid (ceil(C/32), S), block
// (32, 8): thread (tx, ty) of block (bx, by) reduces channel bx*32+tx over rows by*8+ty,
// by*8+ty+8S, ...; the 8 rows of a block are added in f64 in a fixed order. The partial sums are
// laid out as the NCHW kernels' ([C][S][2]), so the same finalisations apply (with hw = 1: the
// shift, x[ch], is the channel's first element there too).

// The end of both NHWC sums: thread (tx, ty) holds its rows' two sums (a, b) of channel ch;
// the 8 rows of the block are added in f64 in a fixed order and stored as partial[ch][split].
__device__ void store_nhwc_partial(float a, float b, double* partial, int ch, int c, int splits) {
  __shared__ double sa[8][32], sb[8][32];
  sa[threadIdx.y][threadIdx.x] = a;
  sb[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0 && ch < c) {
    double ta = 0.0, tb = 0.0;
    for (int k = 0; k < 8; ++k) { ta += sa[k][threadIdx.x]; tb += sb[k][threadIdx.x]; }
    partial[((size_t)ch * splits + blockIdx.y) * 2] = ta;
    partial[((size_t)ch * splits + blockIdx.y) * 2 + 1] = tb;
  }
}

template <typename T>
__device__ void bn_stats_partial_nhwc(const T* x, double* partial, size_t m, int c, int splits) {
  int ch = blockIdx.x * 32 + threadIdx.x;
  float a = 0.f, a2 = 0.f;
  if (ch < c) {
    float shift = to_f(x[ch]);
    for (size_t r = (size_t)blockIdx.y * 8 + threadIdx.y; r < m; r += (size_t)splits * 8) {
      float v = to_f(x[r * c + ch]) - shift;
      a += v;
      a2 += v * v;
    }
  }
  store_nhwc_partial(a, a2, partial, ch, c, splits);
}
template <typename T>
__device__ void bn_apply_nhwc(const T* x, const float* stats, const float* w, const float* b, const T* r, T* y, size_t total, int c, float eps, int relu) {
  GRID_STRIDE(i, total) {
    int ch = i % c;
    float scale = w[ch] * rsqrtf(stats[c + ch] + eps);
    float v = to_f(x[i]) * scale + (b[ch] - stats[ch] * scale);
    if (r) v += to_f(r[i]);
    if (relu) v = v > 0.f ? v : 0.f;
    y[i] = from_f<T>(v);
  }
}
template <typename T>
__device__ void bn_bwd_partial_nhwc(const T* x, const T* dy, const float* stats, double* partial, size_t m, int c, int splits) {
  int ch = blockIdx.x * 32 + threadIdx.x;
  float a = 0.f, ax = 0.f;
  if (ch < c) {
    float mean = stats[ch];
    for (size_t r = (size_t)blockIdx.y * 8 + threadIdx.y; r < m; r += (size_t)splits * 8) {
      float g = to_f(dy[r * c + ch]);
      a += g;
      ax += g * (to_f(x[r * c + ch]) - mean);
    }
  }
  store_nhwc_partial(a, ax, partial, ch, c, splits);
}
template <typename T>
__device__ void bn_bwd_dx_nhwc(const T* x, const T* dy, const float* stats, const float* w, const float* sums, T* dx, size_t total, int c, float count, float eps) {
  GRID_STRIDE(i, total) {
    int ch = i % c;
    float rstd = rsqrtf(stats[c + ch] + eps);
    float xh = (to_f(x[i]) - stats[ch]) * rstd;
    dx[i] = from_f<T>(w[ch] * rstd / count * (count * to_f(dy[i]) - sums[c + ch] - xh * sums[ch]));
  }
}

// ---------------------------------------------------------------- max-pool over NHWC
// As the NCHW kernels, one thread per output (forward) or input (backward) element, the channel
// fastest so a warp reads consecutive channels.

template <typename T>
__device__ void max_pool_fwd_nhwc(const T* x, T* y, uint8_t* arg, size_t n, int c, int h, int w, int oh, int ow, int k, int s, int p) {
  GRID_STRIDE(idx, n * oh * ow * c) {
    int ch = idx % c;
    size_t q = idx / c;
    int j = q % ow;
    q /= ow;
    int i = q % oh;
    size_t b = q / oh;
    int r0 = i * s - p, c0 = j * s - p;
    const T* xb = x + b * h * w * c + ch;
    float best = -INFINITY;
    int at = max(0, -r0) * k + max(0, -c0);
    for (int ky = 0; ky < k; ++ky) {
      int r = r0 + ky;
      if (r < 0 || r >= h) continue;
      for (int kx = 0; kx < k; ++kx) {
        int cc = c0 + kx;
        if (cc < 0 || cc >= w) continue;
        float v = to_f(xb[((size_t)r * w + cc) * c]);
        if (v > best || isnan(v)) { best = v; at = ky * k + kx; }
      }
    }
    y[idx] = from_f<T>(best);
    arg[idx] = (uint8_t)at;
  }
}
template <typename T>
__device__ void max_pool_bwd_nhwc(const T* dy, const uint8_t* arg, T* dx, size_t n, int c, int h, int w, int oh, int ow, int k, int s, int p) {
  GRID_STRIDE(idx, n * h * w * c) {
    int ch = idx % c;
    size_t q = idx / c;
    int cc = q % w;
    q /= w;
    int r = q % h;
    size_t b = q / h;
    int i0 = max(0, (r + p - k + s) / s), i1 = min(oh - 1, (r + p) / s);
    int j0 = max(0, (cc + p - k + s) / s), j1 = min(ow - 1, (cc + p) / s);
    float g = 0.f;
    for (int i = i0; i <= i1; ++i) {
      int ky = r + p - i * s;
      if (ky < 0 || ky >= k) continue;
      for (int j = j0; j <= j1; ++j) {
        int kx = cc + p - j * s;
        if (kx < 0 || kx >= k) continue;
        size_t o = ((b * oh + i) * ow + j) * c + ch;
        if (arg[o] == ky * k + kx) g += to_f(dy[o]);
      }
    }
    dx[idx] = from_f<T>(g);
  }
}

// ---------------------------------------------------------------- max-pool over NCHW
// arg holds the winner's position inside its (unclipped) window, ky * k + kx; padded cells never
// win; the first maximum wins, a NaN wins over numbers (as the CPU kernel and PyTorch).

template <typename T>
__device__ void max_pool_fwd(const T* x, T* y, uint8_t* arg, size_t planes, int h, int w, int oh, int ow, int k, int s, int p) {
  GRID_STRIDE(idx, planes * oh * ow) {
    int j = idx % ow;
    int i = (idx / ow) % oh;
    size_t pl = idx / ((size_t)oh * ow);
    int r0 = i * s - p, c0 = j * s - p;
    const T* xp = x + pl * h * w;
    float best = -INFINITY;
    int at = max(0, -r0) * k + max(0, -c0);  // the first cell inside the input
    for (int ky = 0; ky < k; ++ky) {
      int r = r0 + ky;
      if (r < 0 || r >= h) continue;
      for (int kx = 0; kx < k; ++kx) {
        int cc = c0 + kx;
        if (cc < 0 || cc >= w) continue;
        float v = to_f(xp[r * w + cc]);
        if (v > best || isnan(v)) { best = v; at = ky * k + kx; }
      }
    }
    y[idx] = from_f<T>(best);
    arg[idx] = (uint8_t)at;
  }
}
// One thread per input cell: the sum of dy over the windows that chose it (deterministic, no atomics).
template <typename T>
__device__ void max_pool_bwd(const T* dy, const uint8_t* arg, T* dx, size_t planes, int h, int w, int oh, int ow, int k, int s, int p) {
  GRID_STRIDE(idx, planes * h * w) {
    int c = idx % w;
    int r = (idx / w) % h;
    size_t pl = idx / ((size_t)h * w);
    int i0 = max(0, (r + p - k + s) / s), i1 = min(oh - 1, (r + p) / s);
    int j0 = max(0, (c + p - k + s) / s), j1 = min(ow - 1, (c + p) / s);
    float g = 0.f;
    for (int i = i0; i <= i1; ++i) {
      int ky = r + p - i * s;
      if (ky < 0 || ky >= k) continue;
      for (int j = j0; j <= j1; ++j) {
        int kx = c + p - j * s;
        if (kx < 0 || kx >= k) continue;
        size_t o = (pl * oh + i) * ow + j;
        if (arg[o] == ky * k + kx) g += to_f(dy[o]);
      }
    }
    dx[idx] = from_f<T>(g);
  }
}

// ---------------------------------------------------------------- fused softmax-family loss
// Per sample: ce * (-log p_y) + uniform * (-mean_k log p_k) + maxsup * (z_max - mean_k z_k)
//           + lp / 2 * sum_k z_k^2  (CE, label smoothing, MaxSup, logit penalty),
// on f32 logits [B, K], one block per row, statistics in f64 as the CPU kernel
// (crates/maxsup-loss/src/fused.rs); a tie for the maximum goes to the first index. The batch
// mean is a fixed-order reduction of the per-row losses.
struct LossTerms { double ce, uniform, maxsup, lp; };

// Block-wide f64 sum, valid in every thread. No barrier after the read: the next write of
// `total` (the next call's) comes after the barriers inside that call's block_sum_d, which
// every thread reaches only after reading this one.
__device__ double block_sum_all_d(double v) {
  __shared__ double total;
  v = block_sum_d(v);
  if (threadIdx.x == 0) total = v;
  __syncthreads();
  return total;
}

// The row's maximum and its first index, valid in every thread (blockDim.x a power of two, at
// most 1024). At most one call per kernel: nothing writes `best` or `where` after it, so the
// reads at the end need no trailing barrier (a second call would).
__device__ void block_max_arg(float v, int at, float* max_out, int* arg_out) {
  __shared__ float best[1024];
  __shared__ int where[1024];
  best[threadIdx.x] = v;
  where[threadIdx.x] = at;
  __syncthreads();
  for (int s = blockDim.x >> 1; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      float v2 = best[threadIdx.x + s];
      int a2 = where[threadIdx.x + s];
      if (v2 > best[threadIdx.x] || (v2 == best[threadIdx.x] && a2 < where[threadIdx.x])) {
        best[threadIdx.x] = v2;
        where[threadIdx.x] = a2;
      }
    }
    __syncthreads();
  }
  *max_out = best[0];
  *arg_out = where[0];
}

struct LossRow { double max, lse, mean, sum_sq; int argmax; };

__device__ LossRow loss_row(const float* zr, int k) {
  float m = -INFINITY;
  int at = 0x7fffffff;
  double sum = 0.0, sum_sq = 0.0;
  for (int j = threadIdx.x; j < k; j += blockDim.x) {
    float v = zr[j];
    if (v > m || at == 0x7fffffff) { m = v; at = j; }
    sum += (double)v;
    sum_sq += (double)v * (double)v;
  }
  LossRow r;
  float mf;
  block_max_arg(m, at, &mf, &r.argmax);
  r.max = (double)mf;
  r.mean = block_sum_all_d(sum) / k;
  r.sum_sq = block_sum_all_d(sum_sq);
  double se = 0.0;
  for (int j = threadIdx.x; j < k; j += blockDim.x) se += exp((double)zr[j] - r.max);
  r.lse = r.max + log(block_sum_all_d(se));
  return r;
}

extern "C" __global__ void softmax_loss_rows_f32(const float* z, const uint32_t* y, LossTerms t, double* row_loss, int k) {
  const float* zr = z + (size_t)blockIdx.x * k;
  LossRow r = loss_row(zr, k);
  if (threadIdx.x == 0) {
    double log_p_y = (double)zr[y[blockIdx.x]] - r.lse;
    double mean_log_p = r.mean - r.lse;
    row_loss[blockIdx.x] = -t.ce * log_p_y - t.uniform * mean_log_p + t.maxsup * (r.max - r.mean) + t.lp * 0.5 * r.sum_sq;
  }
}

// out[0] = mean of the b per-row losses (one block; each thread sums a fixed stride of rows).
extern "C" __global__ void softmax_loss_mean_f32(const double* row_loss, float* out, int b) {
  double s = 0.0;
  for (int i = threadIdx.x; i < b; i += blockDim.x) s += row_loss[i];
  s = block_sum_d(s);
  if (threadIdx.x == 0) out[0] = (float)(s / b);
}

// d loss / d z for an upstream gradient of 1: (ce * (p - [j == y]) + uniform * (p - 1/K)
// + maxsup * ([j == argmax] - 1/K) + lp * z) / B.
extern "C" __global__ void softmax_loss_grad_f32(const float* z, const uint32_t* y, LossTerms t, float* g, int k, double inv_b) {
  const float* zr = z + (size_t)blockIdx.x * k;
  float* gr = g + (size_t)blockIdx.x * k;
  LossRow r = loss_row(zr, k);
  int target = (int)y[blockIdx.x];
  double inv_k = 1.0 / k;
  for (int j = threadIdx.x; j < k; j += blockDim.x) {
    double zj = (double)zr[j];
    double p = exp(zj - r.lse);
    double d = t.ce * (p - (j == target ? 1.0 : 0.0)) + t.uniform * (p - inv_k) +
               t.maxsup * ((j == r.argmax ? 1.0 : 0.0) - inv_k) + t.lp * zj;
    gr[j] = (float)(d * inv_b);
  }
}

// ---------------------------------------------------------------- multi-tensor optimizer updates
// One launch updates up to MT_TENSORS f32 tensors in place: block b works on tensor t, where
// block_start[t] <= b < block_start[t + 1], elements [(b - block_start[t]) * MT_CHUNK, ...) of
// it, each thread every blockDim-th one (coalesced). The table travels as a kernel argument
// (no upload per step); src/multi_tensor/table.rs builds it with the same layout. The arithmetic
// is the composed candle update's (crates/maxsup-optim), operation by operation, in f32, with
// products as __fmul_rn so that nvcc cannot contract them into FMAs: the GPU computes the same
// floats as the CPU optimizer.
#define MT_TENSORS 32
#define MT_CHUNK 16384

struct TensorTable {
  float* param[MT_TENSORS];         // updated in place (EMA: the model, read only)
  const float* grad[MT_TENSORS];    // gradients (unused by the EMA)
  float* state0[MT_TENSORS];        // momentum buffer / exp_avg / EMA average
  float* state1[MT_TENSORS];        // exp_avg_sq
  float scalar0[MT_TENSORS];        // SGD: weight decay; AdamW: 1 - lr * wd
  float scalar1[MT_TENSORS];        // AdamW: 1 / sqrt(1 - beta2^t)
  float scalar2[MT_TENSORS];        // AdamW: -lr / (1 - beta1^t)
  unsigned long long len[MT_TENSORS];
  unsigned int block_start[MT_TENSORS + 1];
  int count;
};

// The tensor of this block and the element range [begin, end) the block covers.
__device__ __forceinline__ int mt_tensor(const TensorTable& t, size_t* begin, size_t* end) {
  int k = 0;
  while (k + 1 < t.count && blockIdx.x >= t.block_start[k + 1]) ++k;
  size_t b = (size_t)(blockIdx.x - t.block_start[k]) * MT_CHUNK;
  size_t e = b + MT_CHUNK;
  *begin = b;
  *end = e < t.len[k] ? e : (size_t)t.len[k];
  return k;
}

// torch.optim.SGD (dampening 0): d = g + wd * p; buf = momentum * buf + d (a zeroed buffer makes
// the first step's buf = d); p -= lr * (Nesterov ? d + momentum * buf : buf).
extern "C" __global__ void sgd_momentum_multi_f32(TensorTable t, float lr, float momentum, int nesterov) {
  size_t begin, end;
  int k = mt_tensor(t, &begin, &end);
  float* p = t.param[k];
  const float* g = t.grad[k];
  float* buf = t.state0[k];
  float wd = t.scalar0[k];
  for (size_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    float pv = p[i];
    float d = wd != 0.f ? g[i] + __fmul_rn(pv, wd) : g[i];
    float b = __fmul_rn(buf[i], momentum) + d;
    buf[i] = b;
    float step = nesterov ? d + __fmul_rn(b, momentum) : b;
    p[i] = pv - __fmul_rn(step, lr);
  }
}

// torch.optim.AdamW: p *= 1 - lr * wd; m = lerp(m, g, w) (w = 1 - beta1, PyTorch's two-branch
// form: `hi` for w >= 0.5); v = beta2 * v + (1 - beta2) * g^2;
// p += -lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps).
extern "C" __global__ void adamw_multi_f32(TensorTable t, float w, float one_minus_w, int hi, float beta2,
                                           float one_minus_beta2, float eps) {
  size_t begin, end;
  int k = mt_tensor(t, &begin, &end);
  float* p = t.param[k];
  const float* g = t.grad[k];
  float* m = t.state0[k];
  float* v = t.state1[k];
  float decay = t.scalar0[k], inv_bc2_sqrt = t.scalar1[k], neg_step = t.scalar2[k];
  for (size_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    float gi = g[i], mi = m[i];
    float diff = gi - mi;
    mi = hi ? gi - __fmul_rn(diff, one_minus_w) : mi + __fmul_rn(diff, w);
    float vi = __fmul_rn(v[i], beta2) + __fmul_rn(__fmul_rn(gi, gi), one_minus_beta2);
    m[i] = mi;
    v[i] = vi;
    float denom = __fmul_rn(sqrtf(vi), inv_bc2_sqrt) + eps;
    p[i] = __fmul_rn(p[i], decay) + __fmul_rn(mi / denom, neg_step);
  }
}

// timm ModelEmaV2: ema = decay * ema + (1 - decay) * model, model read from `param`.
extern "C" __global__ void ema_multi_f32(TensorTable t, float decay, float one_minus_decay) {
  size_t begin, end;
  int k = mt_tensor(t, &begin, &end);
  const float* model = t.param[k];
  float* ema = t.state0[k];
  for (size_t i = begin + threadIdx.x; i < end; i += blockDim.x) ema[i] = __fmul_rn(ema[i], decay) + __fmul_rn(model[i], one_minus_decay);
}

// ---------------------------------------------------------------- instantiations

#define INSTANTIATE(T, S)                                                                                  \
  extern "C" __global__ void relu_fwd_##S(const T* x, T* y, size_t n) { relu_fwd(x, y, n); }               \
  extern "C" __global__ void relu_bwd_##S(const T* y, const T* dy, T* dx, size_t n) { relu_bwd(y, dy, dx, n); } \
  extern "C" __global__ void add_relu_fwd_##S(const T* a, const T* b, T* y, size_t n) { add_relu_fwd(a, b, y, n); } \
  extern "C" __global__ void gelu_fwd_##S(const T* x, T* y, size_t n) { gelu_fwd(x, y, n); }               \
  extern "C" __global__ void gelu_bwd_##S(const T* x, const T* dy, T* dx, size_t n) { gelu_bwd(x, dy, dx, n); } \
  extern "C" __global__ void bias_gelu_fwd_##S(const T* g, const T* bias, T* y, size_t total, int n) { bias_gelu_fwd(g, bias, y, total, n); } \
  extern "C" __global__ void bias_gelu_bwd_##S(const T* g, const T* bias, const T* dy, T* dh, float* partial, size_t m, int n, int splits) { bias_gelu_bwd(g, bias, dy, dh, partial, m, n, splits); } \
  extern "C" __global__ void bias_grad_partial_##S(const T* dy, float* partial, size_t m, int n, int splits) { bias_grad_partial(dy, partial, m, n, splits); } \
  extern "C" __global__ void residual_out_fwd_##S(const T* x, const T* o, const T* bias, const float* s, T* y, size_t total, int n, size_t per_image) { residual_out_fwd(x, o, bias, s, y, total, n, per_image); } \
  extern "C" __global__ void residual_out_bwd_##S(const T* dy, const float* s, T* g, float* partial, size_t m, int n, size_t rows_per_image, int splits) { residual_out_bwd(dy, s, g, partial, m, n, rows_per_image, splits); } \
  extern "C" __global__ void qkv_heads_fwd_##S(const T* g, const T* bias, T* out, size_t total, int tokens, int heads, int hd, float scale) { qkv_heads_fwd(g, bias, out, total, tokens, heads, hd, scale); } \
  extern "C" __global__ void qkv_heads_bwd_##S(const T* dq, const T* dk, const T* dv, T* dh, float* partial, size_t m, int tokens, int heads, int hd, float scale, int splits) { qkv_heads_bwd(dq, dk, dv, dh, partial, m, tokens, heads, hd, scale, splits); } \
  extern "C" __global__ void softmax_fwd_##S(const T* x, T* y, size_t rows, int d) { softmax_fwd(x, y, rows, d); } \
  extern "C" __global__ void softmax_bwd_##S(const T* y, const T* dy, T* dx, size_t rows, int d) { softmax_bwd(y, dy, dx, rows, d); } \
  extern "C" __global__ void layer_norm_fwd_##S(const T* x, const float* w, const float* b, T* y, size_t rows, int d, float eps) { layer_norm_fwd(x, w, b, y, rows, d, eps); } \
  extern "C" __global__ void layer_norm_bwd_##S(const T* x, const float* w, const T* dy, const T* res, T* dx, float* partial, size_t rows, int d, float eps) { layer_norm_bwd(x, w, dy, res, dx, partial, rows, d, eps); } \
  extern "C" __global__ void bn_stats_partial_##S(const T* x, double* partial, int n, int c, int hw, int splits) { bn_stats_partial(x, partial, n, c, hw, splits); } \
  extern "C" __global__ void bn_stats_finalize_##S(const T* x, const double* partial, float* stats, int c, int hw, int splits, double count) { bn_stats_finalize(x, partial, stats, c, hw, splits, count); } \
  extern "C" __global__ void bn_apply_##S(const T* x, const float* stats, const float* w, const float* b, const T* r, T* y, int c, int hw, float eps, int relu, size_t planes, int per_block) { bn_apply(x, stats, w, b, r, y, c, hw, eps, relu, planes, per_block); } \
  extern "C" __global__ void bn_bwd_partial_##S(const T* x, const T* y, const T* dy, const float* stats, double* partial, int n, int c, int hw, int splits, int relu) { bn_bwd_partial(x, y, dy, stats, partial, n, c, hw, splits, relu); } \
  extern "C" __global__ void bn_bwd_dx_##S(const T* x, const T* y, const T* dy, const float* stats, const float* w, const float* sums, T* dx, int c, int hw, float count, float eps, int relu, size_t planes, int per_block) { bn_bwd_dx(x, y, dy, stats, w, sums, dx, c, hw, count, eps, relu, planes, per_block); } \
  extern "C" __global__ void max_pool_fwd_##S(const T* x, T* y, uint8_t* arg, size_t planes, int h, int w, int oh, int ow, int k, int s, int p) { max_pool_fwd(x, y, arg, planes, h, w, oh, ow, k, s, p); } \
  extern "C" __global__ void max_pool_bwd_##S(const T* dy, const uint8_t* arg, T* dx, size_t planes, int h, int w, int oh, int ow, int k, int s, int p) { max_pool_bwd(dy, arg, dx, planes, h, w, oh, ow, k, s, p); } \
  extern "C" __global__ void bn_stats_partial_nhwc_##S(const T* x, double* partial, size_t m, int c, int splits) { bn_stats_partial_nhwc(x, partial, m, c, splits); } \
  extern "C" __global__ void bn_apply_nhwc_##S(const T* x, const float* stats, const float* w, const float* b, const T* r, T* y, size_t total, int c, float eps, int relu) { bn_apply_nhwc(x, stats, w, b, r, y, total, c, eps, relu); } \
  extern "C" __global__ void bn_bwd_partial_nhwc_##S(const T* x, const T* dy, const float* stats, double* partial, size_t m, int c, int splits) { bn_bwd_partial_nhwc(x, dy, stats, partial, m, c, splits); } \
  extern "C" __global__ void bn_bwd_dx_nhwc_##S(const T* x, const T* dy, const float* stats, const float* w, const float* sums, T* dx, size_t total, int c, float count, float eps) { bn_bwd_dx_nhwc(x, dy, stats, w, sums, dx, total, c, count, eps); } \
  extern "C" __global__ void max_pool_fwd_nhwc_##S(const T* x, T* y, uint8_t* arg, size_t n, int c, int h, int w, int oh, int ow, int k, int s, int p) { max_pool_fwd_nhwc(x, y, arg, n, c, h, w, oh, ow, k, s, p); } \
  extern "C" __global__ void max_pool_bwd_nhwc_##S(const T* dy, const uint8_t* arg, T* dx, size_t n, int c, int h, int w, int oh, int ow, int k, int s, int p) { max_pool_bwd_nhwc(dy, arg, dx, n, c, h, w, oh, ow, k, s, p); }

INSTANTIATE(float, f32)
INSTANTIATE(bf16, bf16)

#include "attention.cuh"
