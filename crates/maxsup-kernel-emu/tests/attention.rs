//! The fused attention forward and backward of ops.cu (`attention.cuh`: tensor-core products
//! through the wmma stand-in, scores, softmax and gradient tiles in shared memory), run by the
//! emulator over the launch shapes of `maxsup_ops::kernel_geometry::attention_{fwd,bwd}`,
//! against softmax(q k^T) v, its rows' log-sum-exps and its gradients computed in f64 from the
//! same bf16 inputs: within bf16 rounding (f32 for the log-sum-exps).

mod common;

use common::*;
use half::bf16;
use maxsup_kernel_emu::{
    attention_bwd_d32_bf16, attention_bwd_d64_bf16, attention_fwd_d32_bf16, attention_fwd_d64_bf16,
    launch_with_shared_limit,
};
use maxsup_ops::kernel_geometry as geom;

/// The H100's opt-in limit of dynamic shared memory per block.
const H100_SHARED: usize = 232_448;

struct Reference {
    /// `[B][heads][N][N]`
    probs: Vec<f32>,
    /// `[B][heads][N]`: `log(sum_j exp(s_ij))`
    lse: Vec<f32>,
    /// `[B][N][heads * D]`
    out: Vec<f32>,
}

/// softmax(q k^T) v in f64 from `[3][B][heads][N][D]`.
fn reference(qkv: &[bf16], (batch, n, heads, d): (usize, usize, usize, usize)) -> Reference {
    let plane = batch * heads * n * d;
    let at = |part: usize, bh: usize, t: usize, c: usize| {
        qkv[part * plane + (bh * n + t) * d + c].to_f32() as f64
    };
    let mut probs = vec![0f32; batch * heads * n * n];
    let mut lse = vec![0f32; batch * heads * n];
    let mut out = vec![0f32; batch * n * heads * d];
    for bh in 0..batch * heads {
        let (b, h) = (bh / heads, bh % heads);
        for i in 0..n {
            let s: Vec<f64> = (0..n)
                .map(|j| (0..d).map(|c| at(0, bh, i, c) * at(1, bh, j, c)).sum())
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
            let z: f64 = e.iter().sum();
            lse[bh * n + i] = (m + z.ln()) as f32;
            for j in 0..n {
                probs[(bh * n + i) * n + j] = (e[j] / z) as f32;
            }
            for c in 0..d {
                let o: f64 = (0..n).map(|j| e[j] / z * at(2, bh, j, c)).sum();
                out[((b * n + i) * heads + h) * d + c] = o as f32;
            }
        }
    }
    Reference { probs, lse, out }
}

/// Random `[3][B][heads][N][D]` inputs (seeded by `seed` and the size) with q already scaled by
/// d^-1/2, as qkv_heads_fwd leaves it, and doubled: scores of a few units.
fn scaled_qkv((batch, n, heads, d): (usize, usize, usize, usize), seed: u64) -> Vec<bf16> {
    let total = 3 * batch * heads * n * d;
    let mut qkv = random::<bf16>(total, seed + total as u64, 1.0, 0.0);
    let scale = (d as f32).powf(-0.5) * 2.0;
    for v in &mut qkv[..total / 3] {
        *v = bf16::from_f32(v.to_f32() * scale);
    }
    qkv
}

fn check(dims: (usize, usize, usize, usize)) {
    let (batch, n, heads, d) = dims;
    let kernel = match d {
        64 => attention_fwd_d64_bf16,
        32 => attention_fwd_d32_bf16,
        _ => unreachable!("head dims of the kernel"),
    };
    let qkv = scaled_qkv(dims, 7);
    let want = reference(&qkv, dims);
    let mut out = vec![bf16::from_f32(f32::NAN); batch * n * heads * d];
    let mut lse = vec![f32::NAN; batch * heads * n];
    let geometry = geom::attention_fwd(batch * heads, n, d, H100_SHARED).expect("fits");
    let (qp, op, lp) = (qkv.as_ptr(), out.as_mut_ptr(), lse.as_mut_ptr());
    launch_with_shared_limit(geometry, H100_SHARED as u32, || unsafe {
        kernel(qp, op, lp, batch as i32, n as i32, heads as i32)
    })
    .unwrap_or_else(|e| panic!("dims {dims:?}: {e}"));
    // Log-sum-exps: f32 scores of exact bf16 products, an f32 sum. The output: bf16 products
    // of the probabilities rounded to bf16, summed in f32, rounded once.
    assert_close(
        &format!("attention log-sum-exps dims={dims:?}"),
        &lse,
        &want.lse,
        1e-5,
    );
    assert_close(
        &format!("attention output dims={dims:?}"),
        &widen(&out),
        &want.out,
        1.5e-2,
    );
}

#[test]
fn fused_attention_matches_softmax_of_scores_times_values() {
    // (batch, tokens, heads, head dim): DeiT's 197 tokens (two query blocks, the second with
    // idle warps; 13 key tiles with 11 padding rows), a token count that is a multiple of 16,
    // one below a block of 128 queries, a tiny one, and the 32-wide head.
    for dims in [
        (1usize, 197usize, 2usize, 64usize),
        (2, 16, 1, 64),
        (1, 127, 1, 64),
        (2, 5, 3, 64),
        (1, 65, 2, 32),
    ] {
        check(dims);
    }
}

#[test]
fn fused_attention_needs_the_shared_memory_opt_in() {
    let geometry = geom::attention_fwd(1, 197, 64, H100_SHARED).expect("fits");
    let err = maxsup_kernel_emu::launch(geometry, || {}).unwrap_err();
    assert!(err.contains("opt-in"), "{err}");
}

/// The gradients dq, dk, dv (`[3][B][heads][N][D]`, f64 sums) of softmax(q k^T) v at the
/// output gradient `d_out` (`[B][N][heads * D]`), from the probabilities `probs` (the bf16
/// values the kernel recomputes): dS = P (dO v^T - rowsum(P dO v^T)).
fn reference_grads(
    qkv: &[bf16],
    probs: &[bf16],
    d_out: &[bf16],
    (batch, n, heads, d): (usize, usize, usize, usize),
) -> Vec<f32> {
    let plane = batch * heads * n * d;
    let at = |part: usize, bh: usize, t: usize, c: usize| {
        qkv[part * plane + (bh * n + t) * d + c].to_f32() as f64
    };
    let mut grads = vec![0f32; 3 * plane];
    for bh in 0..batch * heads {
        let (b, h) = (bh / heads, bh % heads);
        let d_o = |t: usize, c: usize| d_out[((b * n + t) * heads + h) * d + c].to_f32() as f64;
        let p = |i: usize, j: usize| probs[(bh * n + i) * n + j].to_f32() as f64;
        let mut ds = vec![0f64; n * n];
        for i in 0..n {
            let dp: Vec<f64> = (0..n)
                .map(|j| (0..d).map(|c| d_o(i, c) * at(2, bh, j, c)).sum())
                .collect();
            let delta: f64 = (0..n).map(|j| p(i, j) * dp[j]).sum();
            for j in 0..n {
                ds[i * n + j] = p(i, j) * (dp[j] - delta);
            }
        }
        for t in 0..n {
            for c in 0..d {
                let dq: f64 = (0..n).map(|j| ds[t * n + j] * at(1, bh, j, c)).sum();
                let dk: f64 = (0..n).map(|i| ds[i * n + t] * at(0, bh, i, c)).sum();
                let dv: f64 = (0..n).map(|i| p(i, t) * d_o(i, c)).sum();
                for (part, g) in [dq, dk, dv].into_iter().enumerate() {
                    grads[part * plane + (bh * n + t) * d + c] = g as f32;
                }
            }
        }
    }
    grads
}

/// `got` within `tol` of `want` relative to the largest `|want|` (gradients are small where
/// the probabilities are: an absolute floor of 1 would hide a wrong dq), which must not be 0.
fn assert_close_to_scale(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0f32, |m, w| m.max(w.abs()));
    assert!(scale > 0.0, "{what}: the reference is zero");
    let (i, err) = got
        .iter()
        .zip(want)
        .map(|(g, w)| {
            if g.is_finite() {
                (g - w).abs() / scale
            } else {
                f32::INFINITY
            }
        })
        .enumerate()
        .fold((0, 0f32), |a, (i, e)| if e > a.1 { (i, e) } else { a });
    assert!(
        err <= tol,
        "{what}: [{i}] got {}, want {} (error {err:e} of the largest |want| {scale} > {tol:e})",
        got[i],
        want[i]
    );
}

fn check_backward(dims: (usize, usize, usize, usize)) {
    let (batch, n, heads, d) = dims;
    let kernel = match d {
        64 => attention_bwd_d64_bf16,
        32 => attention_bwd_d32_bf16,
        _ => unreachable!("head dims of the kernel"),
    };
    let qkv = scaled_qkv(dims, 11);
    let total = qkv.len();
    // The forward's results as the kernel gets them: f32 log-sum-exps, the bf16 output; the
    // probabilities it recomputes from them, rounded to bf16 as it does.
    let fwd = reference(&qkv, dims);
    let probs: Vec<bf16> = fwd.probs.iter().map(|&v| bf16::from_f32(v)).collect();
    let out: Vec<bf16> = fwd.out.iter().map(|&v| bf16::from_f32(v)).collect();
    let d_out = random::<bf16>(out.len(), 5 + total as u64, 1.0, 0.0);
    let want = reference_grads(&qkv, &probs, &d_out, dims);
    let mut grads = vec![bf16::from_f32(f32::NAN); total];
    let geometry = geom::attention_bwd(batch * heads, n, d, H100_SHARED).expect("fits");
    let (qp, lp, op, gp) = (qkv.as_ptr(), fwd.lse.as_ptr(), out.as_ptr(), d_out.as_ptr());
    let dp = grads.as_mut_ptr();
    launch_with_shared_limit(geometry, H100_SHARED as u32, || unsafe {
        kernel(qp, lp, op, gp, dp, batch as i32, n as i32, heads as i32)
    })
    .unwrap_or_else(|e| panic!("dims {dims:?}: {e}"));
    // dS rounded to bf16 once, delta from the bf16 output, each gradient rounded once.
    let plane = total / 3;
    for (part, name) in ["dq", "dk", "dv"].iter().enumerate() {
        let range = part * plane..(part + 1) * plane;
        assert_close_to_scale(
            &format!("attention {name} dims={dims:?}"),
            &widen(&grads[range.clone()]),
            &want[range],
            1e-2,
        );
    }
}

#[test]
fn fused_attention_backward_matches_the_gradients_of_the_softmax_products() {
    // DeiT's 197 tokens (13 tiles over 8 warps: a second round for 5 of them, padding rows),
    // a multiple of 16, one above it, a tiny one with three heads, and the 32-wide head.
    for dims in [
        (1usize, 197usize, 2usize, 64usize),
        (2, 32, 1, 64),
        (1, 17, 1, 64),
        (2, 5, 3, 64),
        (1, 65, 2, 32),
    ] {
        check_backward(dims);
    }
}

#[test]
fn fused_attention_backward_needs_the_shared_memory_opt_in() {
    let geometry = geom::attention_bwd(1, 197, 64, H100_SHARED).expect("fits");
    let err = maxsup_kernel_emu::launch(geometry, || {}).unwrap_err();
    assert!(err.contains("opt-in"), "{err}");
}
