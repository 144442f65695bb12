//! The fused attention forward of ops.cu (`attention.cuh`: tensor-core products through the
//! wmma stand-in, scores and softmax in shared memory), run by the emulator over the launch shape
//! of `maxsup_ops::kernel_geometry::attention_fwd`, against softmax(q k^T) v computed in f64 from
//! the same bf16 inputs: the probabilities and the output within bf16 rounding.

mod common;

use common::*;
use half::bf16;
use maxsup_kernel_emu::{attention_fwd_d32_bf16, attention_fwd_d64_bf16, launch_with_shared_limit};
use maxsup_ops::kernel_geometry as geom;

/// The H100's opt-in limit of dynamic shared memory per block.
const H100_SHARED: usize = 232_448;

struct Reference {
    /// `[B][heads][N][N]`
    probs: Vec<f32>,
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
            for j in 0..n {
                probs[(bh * n + i) * n + j] = (e[j] / z) as f32;
            }
            for c in 0..d {
                let o: f64 = (0..n).map(|j| e[j] / z * at(2, bh, j, c)).sum();
                out[((b * n + i) * heads + h) * d + c] = o as f32;
            }
        }
    }
    Reference { probs, out }
}

fn check(dims: (usize, usize, usize, usize)) {
    let (batch, n, heads, d) = dims;
    let kernel = match d {
        64 => attention_fwd_d64_bf16,
        32 => attention_fwd_d32_bf16,
        _ => unreachable!("head dims of the kernel"),
    };
    // q already scaled by d^-1/2, as qkv_heads_fwd leaves it; scores of a few units.
    let total = 3 * batch * heads * n * d;
    let mut qkv = random::<bf16>(total, 7 + total as u64, 1.0, 0.0);
    let scale = (d as f32).powf(-0.5) * 2.0;
    for v in &mut qkv[..total / 3] {
        *v = bf16::from_f32(v.to_f32() * scale);
    }
    let want = reference(&qkv, dims);
    let mut out = vec![bf16::from_f32(f32::NAN); batch * n * heads * d];
    let mut probs = vec![bf16::from_f32(f32::NAN); batch * heads * n * n];
    let geometry = geom::attention_fwd(batch * heads, n, d, H100_SHARED).expect("fits");
    let (qp, op, pp) = (qkv.as_ptr(), out.as_mut_ptr(), probs.as_mut_ptr());
    launch_with_shared_limit(geometry, H100_SHARED as u32, || unsafe {
        kernel(qp, op, pp, batch as i32, n as i32, heads as i32)
    })
    .unwrap_or_else(|e| panic!("dims {dims:?}: {e}"));
    // Probabilities: one bf16 rounding of an f32 softmax of f32 scores. The output: bf16
    // products of the rounded probabilities, summed in f32, rounded once.
    assert_close(
        &format!("attention probabilities dims={dims:?}"),
        &widen(&probs),
        &want.probs,
        1.0 / 256.0,
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
