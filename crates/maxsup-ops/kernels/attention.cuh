// ---------------------------------------------------------------- fused attention forward (bf16)
// Included by ops.cu. softmax(q k^T) v for one (image, head) and 128 queries per block, on
// tensor cores (wmma, 16x16x16 bf16 with f32 accumulation), from the heads' layout
// [3][B][heads][N][D] that qkv_heads_fwd writes (q already scaled). It replaces two batched
// GEMMs, the softmax kernel and the heads-merging copy: neither the scores nor the
// probabilities reach global memory, the output lands in [B][N][heads * D], and each query row
// leaves its log-sum-exp L = max + log(sum exp(s - max)) (f32 [B][heads][N]), from which the
// backward recomputes the probabilities as exp(s - L), as FlashAttention does: 4 bytes per
// query stored instead of the 2N bytes of its bf16 row of P.
//
// Shared memory: the head's keys and values (all N rows, zero-padded to a multiple of 16, each
// row padded by 8 elements against bank conflicts), and per warp its 16 rows of f32 scores plus
// a bf16 staging area: first its 16 queries, then each 16x16 tile of probabilities for the
// second product. Whole rows are in shared memory,
// so the softmax is exact (no running rescale); N is bounded by the shared memory the device
// allows (the launcher checks: DeiT's N = 197 with D = 64 takes 180.5 KiB).
//
// Values: scores in f32 (the unfused path rounds them to bf16 out of cuBLAS), probabilities
// rounded to bf16 as the softmax kernel stores them, and the second product multiplies those
// rounded probabilities, as cuBLAS does with the stored P.
#include <mma.h>

#define ATT_WARPS 8
#define ATT_QUERIES (16 * ATT_WARPS)

// Elements of a padded key/value row, and floats of a padded score row.
__device__ __forceinline__ int att_kv_stride(int d) { return d + 8; }
__device__ __forceinline__ int att_score_stride(int np, int d) { return (np > d ? np : d) + 4; }
#define ATT_STAGE_STRIDE 24
// bf16 elements of a warp's staging area: 16 query rows of D, or a 16 x 24 probability tile.
__device__ __forceinline__ int att_stage_elems(int d) { return 16 * (d > ATT_STAGE_STRIDE ? d : ATT_STAGE_STRIDE); }

template <int D>
__device__ void attention_fwd(const bf16* qkv, bf16* out, float* lse, int batch, int tokens, int heads) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 tensor cores need sm_80; the launcher does not use this kernel below that
#else
  namespace wmma = nvcuda::wmma;
  typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> RowA;
  typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> ColB;
  typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> RowB;
  typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> Acc;
  constexpr int V8 = D / 8;  // 16-byte vectors per row
  const int n = tokens, np = (n + 15) & ~15, ks_stride = att_kv_stride(D), ss = att_score_stride(np, D);
  const int bh = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const size_t plane = (size_t)batch * heads * n * D;
  const bf16* q = qkv + (size_t)bh * n * D;
  const bf16* k = q + plane;
  const bf16* v = q + 2 * plane;

  DYNAMIC_SHARED(uint4, smem);
  bf16* ks = (bf16*)smem;
  bf16* vs = ks + (size_t)np * ks_stride;
  float* sw = (float*)(vs + (size_t)np * ks_stride) + (size_t)warp * (16 * ss + att_stage_elems(D) / 2);
  bf16* stage = (bf16*)(sw + 16 * ss);

  // The head's keys and values, rows past the last token zero.
  const uint4 zero4 = {0u, 0u, 0u, 0u};
  for (int i = threadIdx.x; i < np * V8; i += blockDim.x) {
    int r = i / V8, c = i % V8;
    bool in = r < n;
    ((uint4*)(ks + (size_t)r * ks_stride))[c] = in ? ((const uint4*)(k + (size_t)r * D))[c] : zero4;
    ((uint4*)(vs + (size_t)r * ks_stride))[c] = in ? ((const uint4*)(v + (size_t)r * D))[c] : zero4;
  }
  __syncthreads();
  const int q0 = blockIdx.y * ATT_QUERIES + warp * 16;
  if (q0 >= n) return;  // no barrier of the block follows

  // This warp's 16 queries (zero past the last token), staged apart from the score rows (so a
  // lane reading scores before the warp has stored them sees the block's stale memory, not
  // finite queries: the emulator's poison makes a missing barrier show).
  bf16* qs = stage;
  for (int i = lane; i < 16 * V8; i += 32) {
    int r = i / V8, c = i % V8;
    ((uint4*)(qs + r * D))[c] = q0 + r < n ? ((const uint4*)(q + (size_t)(q0 + r) * D))[c] : zero4;
  }
  __syncwarp();
  RowA qf[D / 16];
  for (int d = 0; d < D / 16; ++d) wmma::load_matrix_sync(qf[d], qs + d * 16, D);
  // (The probability tiles overwrite the staged queries after the barriers below.)

  // Scores: 16 rows x np keys, f32.
  for (int j = 0; j < np / 16; ++j) {
    Acc acc;
    wmma::fill_fragment(acc, 0.f);
    for (int d = 0; d < D / 16; ++d) {
      ColB kf;  // k^T's 16x16 block (d, j) is k's rows j read column-major
      wmma::load_matrix_sync(kf, ks + (size_t)j * 16 * ks_stride + d * 16, ks_stride);
      wmma::mma_sync(acc, qf[d], kf, acc);
    }
    wmma::store_matrix_sync(sw + j * 16, acc, ss, wmma::mem_row_major);
  }
  __syncwarp();

  // Softmax of each row by the whole warp, its log-sum-exp stored; the probabilities kept,
  // rounded to bf16, for the second product; the padding columns zero. Each lane keeps to its
  // own columns.
  const int b = bh / heads, h = bh % heads;
  for (int r = 0; r < 16; ++r) {
    float* row = sw + r * ss;
    float m = -INFINITY;
    for (int c = lane; c < n; c += 32) m = fmaxf(m, row[c]);
    m = warp_max(m);
    float s = 0.f;
    for (int c = lane; c < n; c += 32) s += expf(row[c] - m);
    s = warp_sum(s);
    float inv = 1.f / s;
    if (lane == 0 && q0 + r < n) lse[(size_t)bh * n + q0 + r] = m + logf(s);
    for (int c = lane; c < np; c += 32) row[c] = to_f(from_f<bf16>(c < n ? expf(row[c] - m) * inv : 0.f));
  }
  __syncwarp();

  // Output: P (16 x np) times the values (np x D), one 16x16 probability tile at a time.
  Acc of[D / 16];
  for (int d = 0; d < D / 16; ++d) wmma::fill_fragment(of[d], 0.f);
  for (int j = 0; j < np / 16; ++j) {
    for (int i = lane; i < 256; i += 32) stage[(i / 16) * ATT_STAGE_STRIDE + i % 16] = from_f<bf16>(sw[(i / 16) * ss + j * 16 + i % 16]);
    __syncwarp();
    RowA pf;
    wmma::load_matrix_sync(pf, stage, ATT_STAGE_STRIDE);
    for (int d = 0; d < D / 16; ++d) {
      RowB vf;
      wmma::load_matrix_sync(vf, vs + (size_t)j * 16 * ks_stride + d * 16, ks_stride);
      wmma::mma_sync(of[d], pf, vf, of[d]);
    }
    __syncwarp();  // the next tile overwrites the stage
  }
  for (int d = 0; d < D / 16; ++d) wmma::store_matrix_sync(sw + d * 16, of[d], ss, wmma::mem_row_major);
  __syncwarp();
  for (int i = lane; i < 16 * D; i += 32) {
    int r = i / D, c = i % D;
    if (q0 + r < n) out[(((size_t)b * n + q0 + r) * heads + h) * D + c] = from_f<bf16>(sw[r * ss + c]);
  }
#endif
}

extern "C" __global__ void attention_fwd_d64_bf16(const bf16* qkv, bf16* out, float* lse, int batch, int tokens, int heads) {
  attention_fwd<64>(qkv, out, lse, batch, tokens, heads);
}
extern "C" __global__ void attention_fwd_d32_bf16(const bf16* qkv, bf16* out, float* lse, int batch, int tokens, int heads) {
  attention_fwd<32>(qkv, out, lse, batch, tokens, heads);
}

// ---------------------------------------------------------------- fused attention backward (bf16)
// The gradients of softmax(q k^T) v for one (image, head) per block of 8 warps, on tensor cores,
// from q, k, v, the forward's row log-sum-exps L ([B][heads][N], f32), the output O and its
// gradient dO (both [B][N][heads * D]): dq, dk, dv written in the heads' layout
// [3][B][heads][N][D] (merge_qkv_heads turns them into the qkv projection's gradient). It
// replaces the unfused backward's copy of dO into heads, four batched GEMMs (two of them writing
// [N][N] results: dP and, through the softmax backward, dS) and the softmax backward: here S,
// P, dP and dS exist one 16x16 tile at a time, in a warp's shared memory.
//
// P_ij = exp(q_i k_j - L_i), recomputed from the scores and rounded to bf16 as the forward's
// second product used it; not bit for bit the forward's exp(s - max) / sum (one bf16 ulp apart
// at times), as in FlashAttention's backward. With delta_i = sum_c dO[i][c] O[i][c] (= sum_j P[i][j] dP[i][j], as
// FlashAttention's backward uses it), dS = P * (dO v^T - delta); dv = P^T dO, dk = dS^T q,
// dq = dS k. Two passes over the tiles, without atomics (so the result does not depend on the
// schedule): a warp owns a key tile and sums its dk, dv over every query tile, then a query
// tile and sums its dq over every key tile, computing each P and dS tile again (eight more
// 16x16x16 products per tile) rather than storing it.
//
// Shared memory: q, k, v and dO of the head (all N rows, zero-padded to a multiple of 16, each
// row padded by 8 elements), delta and L (f32 per padded row), and per warp a 16 x 20 f32 tile
// and two 16 x 24 bf16 tiles (P and dS). DeiT's N = 197 with D = 64 takes 140.6 KiB.
//
// Values: S and dP in f32 (the unfused path rounds them to bf16 out of cuBLAS), P and dS
// rounded to bf16 as the softmax forward and backward store them, the products from bf16
// operands with f32 sums, each gradient rounded once.
#define ATT_BWD_TILE_STRIDE 20

template <int D>
__device__ void attention_bwd(const bf16* qkv, const float* lse, const bf16* o, const bf16* d_o, bf16* dqkv, int batch,
                              int tokens, int heads) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 tensor cores need sm_80; the launcher does not use this kernel below that
#else
  namespace wmma = nvcuda::wmma;
  typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> RowA;
  typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major> ColA;
  typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> ColB;
  typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> RowB;
  typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> Acc;
  constexpr int V8 = D / 8;  // 16-byte vectors per row
  const int n = tokens, np = (n + 15) & ~15, tiles = np / 16, st = att_kv_stride(D);
  const int bh = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  const int b = bh / heads, h = bh % heads;
  const size_t plane = (size_t)batch * heads * n * D;
  const bf16* q = qkv + (size_t)bh * n * D;
  const bf16* k = q + plane;
  const bf16* v = q + 2 * plane;
  const float* lse_h = lse + (size_t)bh * n;
  bf16* dq = dqkv + (size_t)bh * n * D;
  bf16* dk = dq + plane;
  bf16* dv = dq + 2 * plane;

  DYNAMIC_SHARED(uint4, smem);
  bf16* qs = (bf16*)smem;
  bf16* ks = qs + (size_t)np * st;
  bf16* vs = ks + (size_t)np * st;
  bf16* dos = vs + (size_t)np * st;
  float* delta = (float*)(dos + (size_t)np * st);
  float* lrow = delta + np;
  float* tile = lrow + np + (size_t)warp * (16 * ATT_BWD_TILE_STRIDE + 16 * ATT_STAGE_STRIDE);
  bf16* pt = (bf16*)(tile + 16 * ATT_BWD_TILE_STRIDE);
  bf16* dst = pt + 16 * ATT_STAGE_STRIDE;

  // Row t of this head in the merged [B][N][heads * D] layout of O and dO.
  auto merged = [&](int t) { return (((size_t)b * n + t) * heads + h) * D; };
  const uint4 zero4 = {0u, 0u, 0u, 0u};
  for (int i = threadIdx.x; i < np * V8; i += blockDim.x) {
    int r = i / V8, c = i % V8;
    bool in = r < n;
    ((uint4*)(qs + (size_t)r * st))[c] = in ? ((const uint4*)(q + (size_t)r * D))[c] : zero4;
    ((uint4*)(ks + (size_t)r * st))[c] = in ? ((const uint4*)(k + (size_t)r * D))[c] : zero4;
    ((uint4*)(vs + (size_t)r * st))[c] = in ? ((const uint4*)(v + (size_t)r * D))[c] : zero4;
    ((uint4*)(dos + (size_t)r * st))[c] = in ? ((const uint4*)(d_o + merged(r)))[c] : zero4;
  }
  for (int r = warp; r < np; r += warps) {
    float s = 0.f;
    if (r < n)
      for (int c = lane; c < D; c += 32) s += to_f(d_o[merged(r) + c]) * to_f(o[merged(r) + c]);
    s = warp_sum(s);
    if (lane == 0) {
      delta[r] = s;
      lrow[r] = r < n ? lse_h[r] : 0.f;
    }
  }
  __syncthreads();  // the last barrier of the block: from here each warp keeps to its own tiles

  // Tile (i, j) of P into `pt` and of dS into `dst`, by the warp; ends with the warp in step.
  auto ds_tile = [&](int i, int j) {
    Acc sc, dp;  // q_i k_j^T and dO_i v_j^T
    wmma::fill_fragment(sc, 0.f);
    wmma::fill_fragment(dp, 0.f);
    for (int d = 0; d < D / 16; ++d) {
      RowA a;
      ColB bt;  // k^T's and v^T's blocks are k's and v's rows j read column-major
      wmma::load_matrix_sync(a, qs + (size_t)i * 16 * st + d * 16, st);
      wmma::load_matrix_sync(bt, ks + (size_t)j * 16 * st + d * 16, st);
      wmma::mma_sync(sc, a, bt, sc);
      wmma::load_matrix_sync(a, dos + (size_t)i * 16 * st + d * 16, st);
      wmma::load_matrix_sync(bt, vs + (size_t)j * 16 * st + d * 16, st);
      wmma::mma_sync(dp, a, bt, dp);
    }
    wmma::store_matrix_sync(tile, sc, ATT_BWD_TILE_STRIDE, wmma::mem_row_major);
    __syncwarp();
    for (int e = lane; e < 256; e += 32) {
      int r = e >> 4, c = e & 15, gi = i * 16 + r, gj = j * 16 + c;
      float pij = gi < n && gj < n ? expf(tile[r * ATT_BWD_TILE_STRIDE + c] - lrow[gi]) : 0.f;
      pt[r * ATT_STAGE_STRIDE + c] = from_f<bf16>(pij);
    }
    __syncwarp();  // dP overwrites the scores
    wmma::store_matrix_sync(tile, dp, ATT_BWD_TILE_STRIDE, wmma::mem_row_major);
    __syncwarp();
    for (int e = lane; e < 256; e += 32) {
      int r = e >> 4, c = e & 15;
      float ds = to_f(pt[r * ATT_STAGE_STRIDE + c]) * (tile[r * ATT_BWD_TILE_STRIDE + c] - delta[i * 16 + r]);
      dst[r * ATT_STAGE_STRIDE + c] = from_f<bf16>(ds);
    }
    __syncwarp();
  };
  // Row tile t of the accumulators `acc` ([16][D]) into rows t*16.. of a [N][D] gradient.
  auto store_rows = [&](Acc* acc, bf16* dst_rows, int t) {
    for (int d = 0; d < D / 16; ++d) {
      wmma::store_matrix_sync(tile, acc[d], ATT_BWD_TILE_STRIDE, wmma::mem_row_major);
      __syncwarp();
      for (int e = lane; e < 256; e += 32) {
        int r = e >> 4, c = e & 15;
        if (t * 16 + r < n) dst_rows[(size_t)(t * 16 + r) * D + d * 16 + c] = from_f<bf16>(tile[r * ATT_BWD_TILE_STRIDE + c]);
      }
      __syncwarp();  // the next block of columns overwrites the tile
    }
  };

  // Pass 1: key tiles. dv_j = sum_i P_ij^T dO_i, dk_j = sum_i dS_ij^T q_i.
  for (int j = warp; j < tiles; j += warps) {
    Acc gk[D / 16], gv[D / 16];
    for (int d = 0; d < D / 16; ++d) {
      wmma::fill_fragment(gk[d], 0.f);
      wmma::fill_fragment(gv[d], 0.f);
    }
    for (int i = 0; i < tiles; ++i) {
      ds_tile(i, j);
      ColA ptt, dstt;  // P_ij^T and dS_ij^T: the row-major tiles read column-major
      wmma::load_matrix_sync(ptt, pt, ATT_STAGE_STRIDE);
      wmma::load_matrix_sync(dstt, dst, ATT_STAGE_STRIDE);
      for (int d = 0; d < D / 16; ++d) {
        RowB ob, qb;
        wmma::load_matrix_sync(ob, dos + (size_t)i * 16 * st + d * 16, st);
        wmma::load_matrix_sync(qb, qs + (size_t)i * 16 * st + d * 16, st);
        wmma::mma_sync(gv[d], ptt, ob, gv[d]);
        wmma::mma_sync(gk[d], dstt, qb, gk[d]);
      }
      // No barrier here: the next tile writes P and dS only after ds_tile's first and third
      // barriers, which every lane reaches after these loads of them.
    }
    store_rows(gk, dk, j);
    store_rows(gv, dv, j);
  }
  // Pass 2: query tiles. dq_i = sum_j dS_ij k_j.
  for (int i = warp; i < tiles; i += warps) {
    Acc gq[D / 16];
    for (int d = 0; d < D / 16; ++d) wmma::fill_fragment(gq[d], 0.f);
    for (int j = 0; j < tiles; ++j) {
      ds_tile(i, j);
      RowA a;
      wmma::load_matrix_sync(a, dst, ATT_STAGE_STRIDE);
      for (int d = 0; d < D / 16; ++d) {
        RowB kb;
        wmma::load_matrix_sync(kb, ks + (size_t)j * 16 * st + d * 16, st);
        wmma::mma_sync(gq[d], a, kb, gq[d]);
      }
      // No barrier here either: the next tile writes dS only after ds_tile's third barrier.
    }
    store_rows(gq, dq, i);
  }
#endif
}

extern "C" __global__ void attention_bwd_d64_bf16(const bf16* qkv, const float* lse, const bf16* o, const bf16* d_o, bf16* dqkv,
                                                  int batch, int tokens, int heads) {
  attention_bwd<64>(qkv, lse, o, d_o, dqkv, batch, tokens, heads);
}
extern "C" __global__ void attention_bwd_d32_bf16(const bf16* qkv, const float* lse, const bf16* o, const bf16* d_o, bf16* dqkv,
                                                  int batch, int tokens, int heads) {
  attention_bwd<32>(qkv, lse, o, d_o, dqkv, batch, tokens, heads);
}
