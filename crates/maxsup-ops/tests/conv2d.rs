//! The conv2d custom op (im2col + GEMM, and Winograd for wide 3x3 layers) against candle's composed conv (reference) and finite differences.

mod common;
use candle_core::Result;
use common::*;
use maxsup_ops::{conv2d, reference};

/// (n, c, h, w, o, k, stride, pad, dil, bias)
type Case = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    bool,
);

const CASES: &[Case] = &[
    (2, 3, 9, 9, 4, 3, 1, 1, 1, false),
    (3, 4, 11, 7, 5, 3, 2, 1, 1, true),
    (2, 6, 8, 8, 7, 1, 1, 0, 1, false),   // pointwise: plain GEMM
    (5, 6, 8, 8, 7, 1, 2, 0, 1, false),   // 1x1 stride 2 (ResNet downsample)
    (2, 3, 19, 17, 4, 7, 2, 3, 1, true),  // 7x7 stem
    (3, 2, 10, 12, 3, 3, 1, 2, 2, false), // dilation
    (1, 3, 5, 5, 2, 2, 3, 0, 1, false),   // odd stride, one image (multi-thread GEMM path)
    (9, 3, 4, 4, 6, 3, 1, 1, 1, false),   // many images per block (P = 16)
    (2, 3, 7, 5, 4, 5, 1, 2, 1, true),    // same-size 5x5: contiguous shifted im2col/col2im
    (2, 2, 2, 3, 3, 5, 1, 2, 1, false),   // same-size taps that read only padding
    (3, 2, 1, 6, 2, 3, 1, 1, 1, false),   // single-row image
    (4, 64, 9, 10, 64, 3, 1, 1, 1, true), // Winograd F(4x4, 3x3), tiles overhanging
    (300, 3, 1, 1, 5, 1, 1, 0, 1, false), // 1x1 images: weight gradient as one batch GEMM
    (2, 40, 2, 2, 70, 1, 2, 0, 1, true),  // strided 1x1, few pixels: the same
    (8, 3, 16, 16, 4, 3, 1, 1, 1, false), // many pixels: per-thread weight-gradient partials
    // Narrow 3x3 "same" layers: the direct AVX-512 kernel where the CPU has it (rows of one
    // masked vector, two vectors, two segments; output-channel blocks left partial).
    (2, 5, 6, 20, 10, 3, 1, 1, 1, false),
    (2, 4, 3, 40, 17, 3, 1, 1, 1, true),
    (1, 16, 5, 16, 16, 3, 1, 1, 1, false),
    (2, 3, 4, 33, 3, 3, 1, 1, 1, false),
    // Taps that read only padding: a 3x3 on 1x1 images (the centre tap), a stride-2 3x3 on 2x2
    // images (a 2x2 sub-kernel); the dead taps' weight gradient is zero.
    (3, 4, 1, 1, 5, 3, 1, 1, 1, true),
    (2, 3, 2, 2, 4, 3, 2, 1, 1, false),
];

#[test]
fn matches_reference_outputs_and_gradients() -> Result<()> {
    for (i, &(n, c, h, w, o, k, s, p, d, with_bias)) in CASES.iter().enumerate() {
        let x = rand_var(&[n, c, h, w], 10 + i as u64)?;
        let wt = rand_var(&[o, c, k, k], 20 + i as u64)?;
        let b = rand_var(&[o], 30 + i as u64)?;
        let bias = with_bias.then(|| b.as_tensor());
        let fast = || conv2d(x.as_tensor(), wt.as_tensor(), bias, s, p, d, 1);
        let slow = || reference::conv2d(x.as_tensor(), wt.as_tensor(), bias, s, p, d, 1);
        let (yf, gf) = output_and_grads(&[&x, &wt], &fast, 99)?;
        let (ys, gs) = output_and_grads(&[&x, &wt], &slow, 99)?;
        let what = format!("case {i} {:?}", CASES[i]);
        assert_close(&yf, &ys, 1e-4, &format!("{what} output"))?;
        assert_close(&gf[0], &gs[0], 1e-4, &format!("{what} dx"))?;
        assert_close(&gf[1], &gs[1], 1e-4, &format!("{what} dw"))?;
        check_finite_diff(&x, &gf[0], &fast, 99, 1e-2)?;
        check_finite_diff(&wt, &gf[1], &fast, 99, 1e-2)?;
    }
    Ok(())
}

/// candle's own conv backward returns a wrongly sized input gradient when the stride leaves
/// input columns unused (here W = 6, k = 2, s = 3); the custom op is checked by finite differences.
#[test]
fn uneven_stride_matches_finite_differences() -> Result<()> {
    let x = rand_var(&[2, 3, 5, 6], 5)?;
    let wt = rand_var(&[2, 3, 2, 2], 6)?;
    let fast = || conv2d(x.as_tensor(), wt.as_tensor(), None, 3, 0, 1, 1);
    let (y, g) = output_and_grads(&[&x, &wt], &fast, 3)?;
    assert_eq!(y.dims(), &[2, 2, 2, 2]);
    assert_eq!(g[0].dims(), &[2, 3, 5, 6]);
    check_finite_diff(&x, &g[0], &fast, 3, 1e-2)?;
    check_finite_diff(&wt, &g[1], &fast, 3, 1e-2)
}

#[test]
fn untracked_input_gets_no_gradient_but_weight_does() -> Result<()> {
    let x = rand_tensor(&[2, 3, 8, 8], 1)?;
    let wt = rand_var(&[4, 3, 3, 3], 2)?;
    let y = conv2d(&x, wt.as_tensor(), None, 1, 1, 1, 1)?;
    let grads = y.sum_all()?.backward()?;
    assert!(grads.get(&x).is_none());
    let g = grads.get(wt.as_tensor()).expect("weight gradient");
    let yr = reference::conv2d(&x, wt.as_tensor(), None, 1, 1, 1, 1)?;
    let gr = yr.sum_all()?.backward()?;
    assert_close(g, gr.get(wt.as_tensor()).unwrap(), 1e-4, "dw")
}

#[test]
fn rejects_channel_mismatch() -> Result<()> {
    let x = rand_tensor(&[1, 3, 8, 8], 1)?;
    let w = rand_tensor(&[4, 2, 3, 3], 2)?;
    let err = conv2d(&x, &w, None, 1, 1, 1, 1).unwrap_err().to_string();
    assert!(err.contains("channels"), "{err}");
    Ok(())
}
