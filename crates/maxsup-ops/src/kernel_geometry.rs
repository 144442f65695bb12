//! The launch shapes of the CUDA kernels of `kernels/ops.cu`, in plain Rust: the CUDA launchers
//! (feature `cuda`) and the host emulation of the kernels (`maxsup-kernel-emu`, which runs them
//! on the CPU in the default test suite) both take them from here, so the grids the tests run
//! are the grids the GPU runs.

/// A kernel launch: grid and block sizes (x, y, z) and dynamic shared memory in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
}

/// Threads per block of the element-wise and per-plane kernels.
pub const THREADS: u32 = 256;

/// A 1-D launch of `blocks` blocks (at least one, at most `i32::MAX`) of `threads` threads.
pub fn blocks(blocks: usize, threads: u32, shared_bytes: u32) -> Launch {
    Launch {
        grid: (blocks.clamp(1, i32::MAX as usize) as u32, 1, 1),
        block: (threads, 1, 1),
        shared_bytes,
    }
}

/// A grid-stride launch over `n` elements (capped; the kernels loop).
pub fn elementwise(n: usize) -> Launch {
    blocks(n.div_ceil(THREADS as usize).min(65_536 * 8), THREADS, 0)
}

/// One warp per row, 8 rows per block (softmax and LayerNorm over the last dimension).
pub fn warp_per_row(rows: usize) -> Launch {
    blocks(rows.div_ceil(8), 256, 0)
}

/// (image, channel) planes per block of the NCHW BatchNorm normalisation and input gradient:
/// about 2048 elements per 256-thread block, so that ResNet-50's 14x14 and 7x7 planes do not
/// leave most of a block idle (one plane per block left 81% of its threads idle at 7x7).
pub fn planes_per_block(hw: usize) -> usize {
    (2048 / hw.max(1)).max(1)
}

/// Blocks of `per_block` planes (see [`planes_per_block`]) over `planes` planes.
pub fn plane_groups(planes: usize, per_block: usize) -> Launch {
    blocks(planes.div_ceil(per_block.max(1)), 256, 0)
}

/// One thread per channel (the BatchNorm finalisations).
pub fn per_channel(c: usize) -> Launch {
    blocks(c.div_ceil(128), 128, 0)
}

/// How many blocks share one channel's NCHW BatchNorm reduction: enough (channel, split) blocks
/// to fill the GPU (~1024), never more splits than images.
pub fn bn_splits(n: usize, c: usize) -> usize {
    1024usize.div_ceil(c.max(1)).clamp(1, n.max(1))
}

/// The (channel, split) grid of the NCHW BatchNorm sums.
pub fn bn_reduce(c: usize, splits: usize) -> Launch {
    Launch {
        grid: (c as u32, splits as u32, 1),
        block: (256, 1, 1),
        shared_bytes: 0,
    }
}

/// Row splits of a column reduction over `m` rows of `c` columns (the NHWC BatchNorm sums, a
/// linear layer's bias gradient): ~1024 blocks of 32 columns x 8 rows in all, at most 256 (the
/// finalisations add a column's splits serially) and no more than there are 8-row groups.
pub fn column_splits(m: usize, c: usize) -> usize {
    let channel_blocks = c.div_ceil(32).max(1);
    (1024 / channel_blocks)
        .clamp(1, 256)
        .min(m.div_ceil(8).max(1))
}

/// The (32-column, split) grid of 32 x 8 blocks of a column reduction (see [`column_splits`]).
pub fn column_reduce(c: usize, splits: usize) -> Launch {
    Launch {
        grid: (c.div_ceil(32) as u32, splits as u32, 1),
        block: (32, 8, 1),
        shared_bytes: 0,
    }
}

/// Blocks (partial-sum rows) of the LayerNorm parameter gradients: 8 rows per block at a time,
/// enough blocks to fill the GPU, few enough that the partial buffer stays small.
pub fn layer_norm_param_parts(rows: usize) -> usize {
    rows.div_ceil(8).clamp(1, 1024)
}

/// Static shared memory of the LayerNorm backward (`row_mean[32]`, `row_rstd[32]`, f32; ptxas
/// reports 256 bytes): the 48 KiB a launch gets covers it and the dynamic accumulators together.
pub const LAYER_NORM_BWD_STATIC_SHARED: usize = 256;

/// Rows of `d` elements longer than this exceed the 48 KiB of shared memory of the LayerNorm
/// backward (2·d f32 accumulators next to its static row statistics).
pub const LAYER_NORM_PARAMS_MAX_D: usize = (48 * 1024 - LAYER_NORM_BWD_STATIC_SHARED) / 8;

/// `layer_norm_bwd_params` over `parts` blocks for rows of `d`: 2·d f32 of shared memory.
pub fn layer_norm_params(parts: usize, d: usize) -> Launch {
    blocks(parts, 256, (2 * d * 4) as u32)
}

/// `column_sum_f32` over `width` columns, one thread each.
pub fn column_sum(width: usize) -> Launch {
    blocks(width.div_ceil(256), 256, 0)
}

/// One block per row of the fused loss (`softmax_loss_rows`, `softmax_loss_grad`); the block's
/// max/arg-max tree needs a power of two.
pub fn loss_rows(rows: usize) -> Launch {
    blocks(rows, 256, 0)
}

/// The one block of the fused loss's batch mean.
pub fn loss_mean() -> Launch {
    blocks(1, 256, 0)
}

/// Head dims the fused attention kernels are built for (`attention_{fwd,bwd}_d{D}_bf16`).
pub const FUSED_ATTENTION_HEAD_DIMS: [usize; 2] = [32, 64];

/// A fused attention kernel's launch ([`attention_fwd`], [`attention_bwd`]) from its (image,
/// head) pairs, tokens, head dim and the device's shared memory limit, if it fits.
pub type AttentionGeometry = fn(usize, usize, usize, usize) -> Option<Launch>;

/// Queries per block of the fused attention forward (16 per warp, 8 warps).
const ATTENTION_QUERIES: usize = 128;

/// Dynamic shared memory of the fused attention forward (ops.cu's `attention.cuh`): the keys
/// and values of one head (`N` rounded up to 16 rows of `D + 8` bf16) and, per warp, 16 rows of
/// f32 scores (`max(N16, D) + 4` wide) plus a bf16 staging area of 16 x `max(D, 24)`.
pub fn attention_shared_bytes(tokens: usize, head_dim: usize) -> usize {
    let np = tokens.div_ceil(16) * 16;
    let kv = 2 * np * (head_dim + 8) * 2;
    let per_warp = 16 * (np.max(head_dim) + 4) * 4 + 16 * head_dim.max(24) * 2;
    kv + 8 * per_warp
}

/// The fused attention forward over `batch_heads` (image, head) pairs of `tokens` queries:
/// one block of 8 warps per pair and 128 queries, or `None` when the grid or the shared memory
/// (at most `shared_limit` bytes) does not fit.
pub fn attention_fwd(
    batch_heads: usize,
    tokens: usize,
    head_dim: usize,
    shared_limit: usize,
) -> Option<Launch> {
    let shared = attention_shared_bytes(tokens, head_dim);
    let query_blocks = tokens.div_ceil(ATTENTION_QUERIES);
    attention_blocks(batch_heads, query_blocks, shared, shared_limit)
}

/// A grid of 8-warp blocks, `batch_heads` by `query_blocks`, each with `shared` bytes of
/// dynamic shared memory, if the grid and the memory (at most `shared_limit`) fit.
fn attention_blocks(
    batch_heads: usize,
    query_blocks: usize,
    shared: usize,
    shared_limit: usize,
) -> Option<Launch> {
    let fits = shared <= shared_limit
        && (1..=i32::MAX as usize).contains(&batch_heads)
        && (1..=65_535).contains(&query_blocks);
    fits.then_some(Launch {
        grid: (batch_heads as u32, query_blocks as u32, 1),
        block: (256, 1, 1),
        shared_bytes: shared as u32,
    })
}

/// Dynamic shared memory of the fused attention backward (`attention.cuh`): q, k, v and the
/// output gradient of one head (`N` rounded up to 16 rows of `D + 8` bf16), the row sums
/// `delta` and log-sum-exps (f32 per padded row each) and, per warp, a 16 x 20 f32 tile and two
/// 16 x 24 bf16 tiles.
pub fn attention_bwd_shared_bytes(tokens: usize, head_dim: usize) -> usize {
    let np = tokens.div_ceil(16) * 16;
    let planes = 4 * np * (head_dim + 8) * 2;
    let per_warp = 16 * 20 * 4 + 2 * 16 * 24 * 2;
    planes + 2 * np * 4 + 8 * per_warp
}

/// The fused attention backward over `batch_heads` (image, head) pairs of `tokens` tokens: one
/// block of 8 warps per pair, or `None` when the grid or the shared memory (at most
/// `shared_limit` bytes) does not fit.
pub fn attention_bwd(
    batch_heads: usize,
    tokens: usize,
    head_dim: usize,
    shared_limit: usize,
) -> Option<Launch> {
    let shared = attention_bwd_shared_bytes(tokens, head_dim);
    attention_blocks(batch_heads, 1, shared, shared_limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_attention_fits_deit_on_an_h100() {
        // DeiT: 197 tokens, head dim 64: 2 x 208 x 72 x 2 + 8 x (16 x 212 x 4 + 16 x 64 x 2).
        assert_eq!(attention_shared_bytes(197, 64), 184_832);
        let h100_opt_in = 232_448; // 227 KiB per block
        let l = attention_fwd(256 * 6, 197, 64, h100_opt_in).expect("fits");
        assert_eq!((l.grid, l.block), ((1536, 2, 1), (256, 1, 1)));
        // A 384-pixel ViT (577 tokens) does not; neither does an empty batch.
        assert!(attention_fwd(6, 577, 64, h100_opt_in).is_none());
        assert!(attention_fwd(0, 197, 64, h100_opt_in).is_none());
        // Score rows are at least the head dim wide (the output is staged in them); the
        // staging area holds 16 queries, or a 16 x 24 tile for narrow heads.
        assert_eq!(
            attention_shared_bytes(5, 64),
            2 * 16 * 72 * 2 + 8 * (16 * 68 * 4 + 16 * 64 * 2)
        );
        assert_eq!(
            attention_shared_bytes(5, 16),
            2 * 16 * 24 * 2 + 8 * (16 * 20 * 4 + 16 * 24 * 2)
        );
    }

    #[test]
    fn fused_attention_backward_fits_deit_on_an_h100() {
        // 4 x 208 x 72 x 2 + 2 x 208 x 4 + 8 x (16 x 20 x 4 + 2 x 16 x 24 x 2).
        assert_eq!(attention_bwd_shared_bytes(197, 64), 144_000);
        let h100_opt_in = 232_448;
        let l = attention_bwd(256 * 6, 197, 64, h100_opt_in).expect("fits");
        assert_eq!((l.grid, l.block), ((1536, 1, 1), (256, 1, 1)));
        assert_eq!(l.shared_bytes, 144_000);
        // 384 pixels (577 tokens) does not fit; an A10's 99 KiB does not hold DeiT's head.
        assert!(attention_bwd(6, 577, 64, h100_opt_in).is_none());
        assert!(attention_bwd(6, 197, 64, 101_376).is_none());
        assert!(attention_bwd(0, 197, 64, h100_opt_in).is_none());
    }

    #[test]
    fn the_attention_backward_fits_wherever_the_forward_does() {
        // The graph node keeps only the forward's log-sum-exps: its backward has no
        // probabilities to fall back on.
        for d in FUSED_ATTENTION_HEAD_DIMS {
            for limit in [48 * 1024, 101_376, 166_912, 232_448] {
                for n in 1..1200 {
                    if attention_fwd(12, n, d, limit).is_some() {
                        assert!(
                            attention_bwd(12, n, d, limit).is_some(),
                            "N={n} D={d} {limit}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn launch_shapes_cover_their_work() {
        for n in [0usize, 1, 255, 256, 257, 1 << 20, 123_456_789] {
            let c = elementwise(n);
            assert_eq!(c.block.0, THREADS);
            // Grid-stride kernels: any grid covers n; the grid is capped, never zero.
            assert!(c.grid.0 >= 1 && c.grid.0 <= 65_536 * 8);
            if n <= 65_536 * 8 * THREADS as usize {
                assert!(c.grid.0 as usize * THREADS as usize >= n);
            }
        }
        for rows in [1usize, 7, 8, 9, 50_432] {
            let c = warp_per_row(rows);
            assert!(c.grid.0 as usize * (c.block.0 as usize / 32) >= rows);
        }
        for c in [1usize, 127, 128, 129, 2048] {
            let l = per_channel(c);
            assert!(l.grid.0 as usize * l.block.0 as usize >= c);
        }
        assert_eq!(
            layer_norm_params(4, LAYER_NORM_PARAMS_MAX_D).shared_bytes as usize
                + LAYER_NORM_BWD_STATIC_SHARED,
            48 * 1024
        );
    }

    #[test]
    fn nhwc_reductions_fill_the_gpu_within_the_finalisation_bound() {
        for (m, c) in [
            (256 * 112 * 112, 64),
            (256 * 49, 2048),
            (8, 16),
            (1, 3),
            (100, 512),
        ] {
            let s = column_splits(m, c);
            assert!((1..=256).contains(&s), "m {m} c {c}: {s}");
            assert!(
                s <= m.div_ceil(8),
                "m {m} c {c}: {s} splits, some without rows"
            );
            let blocks = c.div_ceil(32) * s;
            assert!(
                blocks >= 512.min(c.div_ceil(32) * m.div_ceil(8)) || s == 256,
                "m {m} c {c}: {blocks} blocks"
            );
        }
    }

    #[test]
    fn reductions_split_channels_over_images_without_empty_blocks() {
        for (n, c) in [(1, 64), (256, 64), (256, 2048), (8, 3), (2, 1)] {
            let s = bn_splits(n, c);
            assert!(s >= 1 && s <= n, "n {n} c {c}: {s}");
            assert!(
                c * s >= 1024.min(c * n),
                "n {n} c {c}: {s} splits leave the GPU idle"
            );
        }
    }
}
