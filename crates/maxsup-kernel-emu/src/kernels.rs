//! The entry points of ops.cu as Rust declarations: one [`Kernels`] table per element type
//! (`E` = f32 or bf16 storage) plus the two untyped kernels. The signatures mirror the
//! `INSTANTIATE` list of ops.cu (`size_t` = usize, `int` = i32, `uint8_t` = u8).

use half::bf16;
use maxsup_ops::multi_tensor::table::{AdamWConstants, TensorTable, Update};
use maxsup_ops::softmax_loss::LossTerms;

macro_rules! kernel_tables {
    ($($field:ident ($f32:ident, $bf16:ident): ($($ty:ty),*);)*) => {
        /// The typed kernels of ops.cu for element type `E`.
        #[derive(Clone, Copy)]
        pub struct Kernels<E: 'static> {
            $(pub $field: unsafe extern "C" fn($($ty),*),)*
        }
        mod f32_entry {
            type E = f32;
            extern "C" { $(pub fn $f32($(_: $ty),*);)* }
        }
        mod bf16_entry {
            type E = super::bf16;
            extern "C" { $(pub fn $bf16($(_: $ty),*);)* }
        }
        /// The f32 kernels.
        pub const F32: Kernels<f32> = Kernels { $($field: f32_entry::$f32,)* };
        /// The bf16 kernels.
        pub const BF16: Kernels<bf16> = Kernels { $($field: bf16_entry::$bf16,)* };
    };
}

kernel_tables! {
    relu_fwd(relu_fwd_f32, relu_fwd_bf16): (*const E, *mut E, usize);
    relu_bwd(relu_bwd_f32, relu_bwd_bf16): (*const E, *const E, *mut E, usize);
    add_relu_fwd(add_relu_fwd_f32, add_relu_fwd_bf16): (*const E, *const E, *mut E, usize);
    gelu_fwd(gelu_fwd_f32, gelu_fwd_bf16): (*const E, *mut E, usize);
    gelu_bwd(gelu_bwd_f32, gelu_bwd_bf16): (*const E, *const E, *mut E, usize);
    bias_gelu_fwd(bias_gelu_fwd_f32, bias_gelu_fwd_bf16): (*const E, *const E, *mut E, usize, i32);
    bias_gelu_bwd(bias_gelu_bwd_f32, bias_gelu_bwd_bf16):
        (*const E, *const E, *const E, *mut E, *mut f32, usize, i32, i32);
    bias_grad_partial(bias_grad_partial_f32, bias_grad_partial_bf16): (*const E, *mut f32, usize, i32, i32);
    residual_out_fwd(residual_out_fwd_f32, residual_out_fwd_bf16):
        (*const E, *const E, *const E, *const f32, *mut E, usize, i32, usize);
    residual_out_bwd(residual_out_bwd_f32, residual_out_bwd_bf16):
        (*const E, *const f32, *mut E, *mut f32, usize, i32, usize, i32);
    qkv_heads_fwd(qkv_heads_fwd_f32, qkv_heads_fwd_bf16): (*const E, *const E, *mut E, usize, i32, i32, i32, f32);
    qkv_heads_bwd(qkv_heads_bwd_f32, qkv_heads_bwd_bf16):
        (*const E, *const E, *const E, *mut E, *mut f32, usize, i32, i32, i32, f32, i32);
    softmax_fwd(softmax_fwd_f32, softmax_fwd_bf16): (*const E, *mut E, usize, i32);
    softmax_bwd(softmax_bwd_f32, softmax_bwd_bf16): (*const E, *const E, *mut E, usize, i32);
    layer_norm_fwd(layer_norm_fwd_f32, layer_norm_fwd_bf16):
        (*const E, *const f32, *const f32, *mut E, usize, i32, f32);
    layer_norm_bwd(layer_norm_bwd_f32, layer_norm_bwd_bf16):
        (*const E, *const f32, *const E, *const E, *mut E, *mut f32, usize, i32, f32);
    bn_stats_partial(bn_stats_partial_f32, bn_stats_partial_bf16): (*const E, *mut f64, i32, i32, i32, i32);
    bn_stats_finalize(bn_stats_finalize_f32, bn_stats_finalize_bf16):
        (*const E, *const f64, *mut f32, i32, i32, i32, f64);
    bn_apply(bn_apply_f32, bn_apply_bf16):
        (*const E, *const f32, *const f32, *const f32, *const E, *mut E, i32, i32, f32, i32, usize, i32);
    bn_bwd_partial(bn_bwd_partial_f32, bn_bwd_partial_bf16):
        (*const E, *const E, *const E, *const f32, *mut f64, i32, i32, i32, i32, i32);
    bn_bwd_dx(bn_bwd_dx_f32, bn_bwd_dx_bf16):
        (*const E, *const E, *const E, *const f32, *const f32, *const f32, *mut E, i32, i32, f32, f32, i32, usize, i32);
    max_pool_fwd(max_pool_fwd_f32, max_pool_fwd_bf16):
        (*const E, *mut E, *mut u8, usize, i32, i32, i32, i32, i32, i32, i32);
    max_pool_bwd(max_pool_bwd_f32, max_pool_bwd_bf16):
        (*const E, *const u8, *mut E, usize, i32, i32, i32, i32, i32, i32, i32);
    bn_stats_partial_nhwc(bn_stats_partial_nhwc_f32, bn_stats_partial_nhwc_bf16): (*const E, *mut f64, usize, i32, i32);
    bn_apply_nhwc(bn_apply_nhwc_f32, bn_apply_nhwc_bf16):
        (*const E, *const f32, *const f32, *const f32, *const E, *mut E, usize, i32, f32, i32);
    bn_bwd_partial_nhwc(bn_bwd_partial_nhwc_f32, bn_bwd_partial_nhwc_bf16):
        (*const E, *const E, *const f32, *mut f64, usize, i32, i32);
    bn_bwd_dx_nhwc(bn_bwd_dx_nhwc_f32, bn_bwd_dx_nhwc_bf16):
        (*const E, *const E, *const f32, *const f32, *const f32, *mut E, usize, i32, f32, f32);
    max_pool_fwd_nhwc(max_pool_fwd_nhwc_f32, max_pool_fwd_nhwc_bf16):
        (*const E, *mut E, *mut u8, usize, i32, i32, i32, i32, i32, i32, i32, i32);
    max_pool_bwd_nhwc(max_pool_bwd_nhwc_f32, max_pool_bwd_nhwc_bf16):
        (*const E, *const u8, *mut E, usize, i32, i32, i32, i32, i32, i32, i32, i32);
}

extern "C" {
    /// `out[j] = sum over r < parts of partial[r * width + j]`.
    pub fn column_sum_f32(partial: *const f32, out: *mut f32, parts: i32, width: i32);
    /// `sums = [rstd * sum(g (x - mean)) | sum(g)]` from the `[C][splits][2]` partial sums.
    pub fn bn_bwd_finalize(
        partial: *const f64,
        stats: *const f32,
        sums: *mut f32,
        c: i32,
        splits: i32,
        eps: f32,
    );
}

extern "C" {
    fn sgd_momentum_multi_f32(table: TensorTable, lr: f32, momentum: f32, nesterov: i32);
    fn adamw_multi_f32(
        table: TensorTable,
        w: f32,
        one_minus_w: f32,
        from_end: i32,
        beta2: f32,
        one_minus_beta2: f32,
        eps: f32,
    );
    fn ema_multi_f32(table: TensorTable, decay: f32, one_minus_decay: f32);
}

/// Calls the multi-tensor kernel of `update` on `table`, as the CUDA launcher passes them.
///
/// # Safety
/// Every address in `table` points to a live f32 buffer of its tensor's length; runs inside
/// [`crate::launch`].
pub unsafe fn multi_tensor(update: Update, table: TensorTable) {
    match update {
        Update::Sgd {
            lr,
            momentum,
            nesterov,
        } => sgd_momentum_multi_f32(table, lr, momentum, nesterov as i32),
        Update::AdamW(AdamWConstants {
            w,
            one_minus_w,
            from_end,
            beta2,
            one_minus_beta2,
            eps,
        }) => adamw_multi_f32(
            table,
            w,
            one_minus_w,
            from_end as i32,
            beta2,
            one_minus_beta2,
            eps,
        ),
        Update::Ema {
            decay,
            one_minus_decay,
        } => ema_multi_f32(table, decay, one_minus_decay),
    }
}

extern "C" {
    /// `row_loss[r]` = the per-sample softmax-family loss of row `r` of `z` (`[B, k]`).
    pub fn softmax_loss_rows_f32(
        z: *const f32,
        y: *const u32,
        terms: LossTerms,
        row_loss: *mut f64,
        k: i32,
    );
    /// `out[0]` = the mean of `b` per-row losses.
    pub fn softmax_loss_mean_f32(row_loss: *const f64, out: *mut f32, b: i32);
    /// The gradient of the batch-mean loss with respect to `z`.
    pub fn softmax_loss_grad_f32(
        z: *const f32,
        y: *const u32,
        terms: LossTerms,
        g: *mut f32,
        k: i32,
        inv_b: f64,
    );
}

extern "C" {
    /// softmax(q k^T) v per (image, head) from `qkv` (`[3][B][heads][N][64]`): the output in
    /// `[B][N][heads * 64]`, each query row's log-sum-exp of its scores in `[B][heads][N]`.
    pub fn attention_fwd_d64_bf16(
        qkv: *const bf16,
        out: *mut bf16,
        lse: *mut f32,
        batch: i32,
        tokens: i32,
        heads: i32,
    );
    /// [`attention_fwd_d64_bf16`] for head dim 32.
    pub fn attention_fwd_d32_bf16(
        qkv: *const bf16,
        out: *mut bf16,
        lse: *mut f32,
        batch: i32,
        tokens: i32,
        heads: i32,
    );
    /// The gradients of [`attention_fwd_d64_bf16`]'s output from its log-sum-exps, the output
    /// and its gradient (`[B][N][heads * 64]`): dq, dk, dv in `[3][B][heads][N][64]`.
    pub fn attention_bwd_d64_bf16(
        qkv: *const bf16,
        lse: *const f32,
        out: *const bf16,
        d_out: *const bf16,
        dqkv: *mut bf16,
        batch: i32,
        tokens: i32,
        heads: i32,
    );
    /// [`attention_bwd_d64_bf16`] for head dim 32.
    pub fn attention_bwd_d32_bf16(
        qkv: *const bf16,
        lse: *const f32,
        out: *const bf16,
        d_out: *const bf16,
        dqkv: *mut bf16,
        batch: i32,
        tokens: i32,
        heads: i32,
    );
}
