//! The BatchNorm and max-pool kernels of ops.cu, NCHW and NHWC, run by the emulator in the
//! sequence and launch shapes of the CUDA launchers (src/cuda/batch_norm.rs, pool.rs), against
//! maxsup-ops' CPU ops on the same NCHW inputs, for f32 and bf16 storage.

mod common;

use candle_core::{Tensor, Var};
use common::*;
use half::bf16;
use maxsup_kernel_emu::{bn_bwd_finalize, launch, Kernels};
use maxsup_ops::kernel_geometry as geom;

/// `[N, C, H, W]` data as `[N, H, W, C]` (what the NHWC kernels read).
fn nchw_to_nhwc<T: Copy>(v: &[T], (n, c, h, w): (usize, usize, usize, usize)) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len());
    for b in 0..n {
        for p in 0..h * w {
            for ch in 0..c {
                out.push(v[(b * c + ch) * h * w + p]);
            }
        }
    }
    out
}

fn nhwc_to_nchw<T: Copy>(v: &[T], (n, c, h, w): (usize, usize, usize, usize)) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len());
    for b in 0..n {
        for ch in 0..c {
            for p in 0..h * w {
                out.push(v[(b * h * w + p) * c + ch]);
            }
        }
    }
    out
}

/// The f32 `[mean | biased variance]` of the launcher's `stats`.
fn bn_stats<E: Elem>(
    k: &Kernels<E>,
    x: &[E],
    dims: (usize, usize, usize, usize),
    nhwc: bool,
) -> Vec<f32> {
    let (n, c, h, w) = dims;
    let (m, hw) = (n * h * w, h * w);
    let xp = x.as_ptr();
    let (sp, hw_arg, count);
    let mut partial;
    if nhwc {
        sp = geom::column_splits(m, c);
        partial = vec![f64::NAN; c * sp * 2];
        let pp = partial.as_mut_ptr();
        launch(geom::column_reduce(c, sp), || unsafe {
            (k.bn_stats_partial_nhwc)(xp, pp, m, c as i32, sp as i32)
        })
        .unwrap();
        (hw_arg, count) = (1, m as f64);
    } else {
        sp = geom::bn_splits(n, c);
        partial = vec![f64::NAN; c * sp * 2];
        let pp = partial.as_mut_ptr();
        launch(geom::bn_reduce(c, sp), || unsafe {
            (k.bn_stats_partial)(xp, pp, n as i32, c as i32, hw as i32, sp as i32)
        })
        .unwrap();
        (hw_arg, count) = (hw as i32, m as f64);
    }
    let mut stats = vec![f32::NAN; 2 * c];
    let (pp, st) = (partial.as_ptr(), stats.as_mut_ptr());
    launch(geom::per_channel(c), || unsafe {
        (k.bn_stats_finalize)(xp, pp, st, c as i32, hw_arg, sp as i32, count)
    })
    .unwrap();
    stats
}

/// The launcher's `backward_sums`: `[dweight | dbias]` from the gradient reaching the norm.
fn bn_sums<E: Elem>(
    k: &Kernels<E>,
    (x, y, g): (&[E], &[E], &[E]),
    stats: &[f32],
    dims: (usize, usize, usize, usize),
    eps: f32,
    nhwc: bool,
    relu_in_kernel: bool,
) -> Vec<f32> {
    let (n, c, h, w) = dims;
    let (xp, yp, gp, st) = (x.as_ptr(), y.as_ptr(), g.as_ptr(), stats.as_ptr());
    let sp;
    let mut partial;
    if nhwc {
        sp = geom::column_splits(n * h * w, c);
        partial = vec![f64::NAN; c * sp * 2];
        let pp = partial.as_mut_ptr();
        launch(geom::column_reduce(c, sp), || unsafe {
            (k.bn_bwd_partial_nhwc)(xp, gp, st, pp, n * h * w, c as i32, sp as i32)
        })
        .unwrap();
    } else {
        sp = geom::bn_splits(n, c);
        partial = vec![f64::NAN; c * sp * 2];
        let pp = partial.as_mut_ptr();
        let relu = relu_in_kernel as i32;
        launch(geom::bn_reduce(c, sp), || unsafe {
            (k.bn_bwd_partial)(
                xp,
                yp,
                gp,
                st,
                pp,
                n as i32,
                c as i32,
                (h * w) as i32,
                sp as i32,
                relu,
            )
        })
        .unwrap();
    }
    let mut sums = vec![f32::NAN; 2 * c];
    let (pp, sm) = (partial.as_ptr(), sums.as_mut_ptr());
    launch(geom::per_channel(c), || unsafe {
        bn_bwd_finalize(pp, st, sm, c as i32, sp as i32, eps)
    })
    .unwrap();
    sums
}

/// The normalisation kernel (NCHW or NHWC, by `nhwc`) on `x` in the kernel's layout with the
/// given statistics, plus `residual` when given, then ReLU when `relu`.
fn bn_apply<E: Elem>(
    k: &Kernels<E>,
    (x, residual): (&[E], Option<&[E]>),
    stats: &[f32],
    (wt, bs): (&[f32], &[f32]),
    (n, c, h, w): (usize, usize, usize, usize),
    relu: bool,
    nhwc: bool,
) -> Vec<E> {
    let total = n * c * h * w;
    let eps = 1e-5f32;
    let mut y = zeros::<E>(total);
    let (xp, st, wp, bp, yp) = (
        x.as_ptr(),
        stats.as_ptr(),
        wt.as_ptr(),
        bs.as_ptr(),
        y.as_mut_ptr(),
    );
    let rp = residual.map_or(std::ptr::null(), |r| r.as_ptr());
    let relu_i = relu as i32;
    if nhwc {
        launch(geom::elementwise(total), || unsafe {
            (k.bn_apply_nhwc)(xp, st, wp, bp, rp, yp, total, c as i32, eps, relu_i)
        })
        .unwrap();
    } else {
        let per_block = geom::planes_per_block(h * w);
        launch(geom::plane_groups(n * c, per_block), || unsafe {
            (k.bn_apply)(
                xp,
                st,
                wp,
                bp,
                rp,
                yp,
                c as i32,
                (h * w) as i32,
                eps,
                relu_i,
                n * c,
                per_block as i32,
            )
        })
        .unwrap();
    }
    y
}

/// The end of a ResNet block through the kernels (statistics, then the normalisation adding the
/// residual and clamping in one pass) against `batch_norm2d_add_relu` on the CPU.
fn batch_norm_add_relu<E: Elem>(dims: (usize, usize, usize, usize), nhwc: bool) {
    let k = E::kernels();
    let (n, c, h, w) = dims;
    let total = n * c * h * w;
    let x = random::<E>(total, 31 + total as u64, 1.5, 3.0);
    let r = random::<E>(total, 32 + total as u64, 1.0, 0.0);
    let wt = random::<f32>(c, 33, 0.3, 1.0);
    let bs = random::<f32>(c, 34, 0.3, 0.0);
    let (rm, rv) = (
        Var::from_tensor(&cpu(&vec![0.0; c], &[c])).unwrap(),
        Var::from_tensor(&cpu(&vec![1.0; c], &[c])).unwrap(),
    );
    let want = maxsup_ops::batch_norm2d_add_relu(
        &cpu(&widen(&x), &[n, c, h, w]),
        &cpu(&widen(&r), &[n, c, h, w]),
        &cpu(&wt, &[c]),
        &cpu(&bs, &[c]),
        &rm,
        &rv,
        true,
        0.1,
        1e-5,
    )
    .unwrap();
    let (xk, rk) = match nhwc {
        true => (nchw_to_nhwc(&x, dims), nchw_to_nhwc(&r, dims)),
        false => (x.clone(), r.clone()),
    };
    let stats = bn_stats(&k, &xk, dims, nhwc);
    let y = bn_apply(&k, (&xk, Some(&rk)), &stats, (&wt, &bs), dims, true, nhwc);
    let y = match nhwc {
        true => nhwc_to_nchw(&y, dims),
        false => y,
    };
    let name = format!(
        "bn_apply + residual + relu {} {dims:?} nhwc={nhwc}",
        E::NAME
    );
    assert_close(&name, &widen(&y), &values(&want), E::TOL.max(1e-5));
}

#[test]
fn batch_norm_add_relu_kernels_match_the_cpu_op() {
    for dims in [(3, 5, 7, 9), (2, 40, 2, 2)] {
        for nhwc in [false, true] {
            batch_norm_add_relu::<f32>(dims, nhwc);
            batch_norm_add_relu::<bf16>(dims, nhwc);
        }
    }
}

/// Train-mode BatchNorm (+ReLU) forward and backward through the kernels, as the CUDA op runs
/// it, against `batch_norm2d(_relu)` on the CPU.
fn batch_norm<E: Elem>(dims: (usize, usize, usize, usize), relu: bool, nhwc: bool) {
    let k = E::kernels();
    let (n, c, h, w) = dims;
    let total = n * c * h * w;
    let eps = 1e-5f32;
    let name = |op: &str| format!("{op} {} {dims:?} relu={relu} nhwc={nhwc}", E::NAME);
    // An offset far from zero: the statistics' shift must prevent cancellation.
    let x = random::<E>(total, 21 + total as u64, 1.5, 40.0);
    let dy = random::<E>(total, 22 + total as u64, 1.0, 0.0);
    let wt = random::<f32>(c, 23, 0.3, 1.0);
    let bs = random::<f32>(c, 24, 0.3, 0.0);

    let (wv, bv) = (
        Var::from_tensor(&cpu(&wt, &[c])).unwrap(),
        Var::from_tensor(&cpu(&bs, &[c])).unwrap(),
    );
    let (rm, rv) = (
        Var::from_tensor(
            &Tensor::zeros(c, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
        )
        .unwrap(),
        Var::from_tensor(
            &Tensor::ones(c, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
        )
        .unwrap(),
    );
    let op = if relu {
        maxsup_ops::batch_norm2d_relu
    } else {
        maxsup_ops::batch_norm2d
    };
    let (want_y, want_dx, want_p) =
        with_grads(&widen(&x), &[n, c, h, w], &[&wv, &bv], &widen(&dy), |t| {
            op(
                t,
                wv.as_tensor(),
                bv.as_tensor(),
                &rm,
                &rv,
                true,
                0.1,
                eps as f64,
            )
        });

    let (xk, gk) = if nhwc {
        (nchw_to_nhwc(&x, dims), nchw_to_nhwc(&dy, dims))
    } else {
        (x.clone(), dy.clone())
    };
    let stats = bn_stats(&k, &xk, dims, nhwc);
    // Against the f64 statistics of the stored input.
    let xf = widen(&x);
    for ch in 0..c {
        let vals: Vec<f64> = (0..n)
            .flat_map(|b| (0..h * w).map(move |p| (b * c + ch) * h * w + p))
            .map(|i| xf[i] as f64)
            .collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / vals.len() as f64;
        assert!(
            ((stats[ch] as f64) - mean).abs() <= 1e-6 * mean.abs(),
            "{}: mean[{ch}] {} vs {mean}",
            name("bn stats"),
            stats[ch]
        );
        assert!(
            ((stats[c + ch] as f64) - var).abs() <= 1e-4 * var,
            "{}: var[{ch}] {} vs {var}",
            name("bn stats"),
            stats[c + ch]
        );
    }

    let y = bn_apply(&k, (&xk, None), &stats, (&wt, &bs), dims, relu, nhwc);
    let y_nchw = if nhwc {
        nhwc_to_nchw(&y, dims)
    } else {
        y.clone()
    };
    assert_close(
        &name("bn_apply"),
        &widen(&y_nchw),
        &want_y,
        E::TOL.max(1e-4),
    );

    // The ReLU mask first (relu_bwd from the stored output), then the plain norm's backward.
    let mut g = gk.clone();
    if relu {
        let (yp, gp, out) = (y.as_ptr(), gk.as_ptr(), g.as_mut_ptr());
        launch(geom::elementwise(total), || unsafe {
            (k.relu_bwd)(yp, gp, out, total)
        })
        .unwrap();
    }
    let sums = bn_sums(&k, (&xk, &xk, &g), &stats, dims, eps, nhwc, false);
    let tol = 1e-4 * ((n * h * w) as f32).sqrt();
    assert_close(&name("bn dweight"), &sums[..c], &want_p[0], tol);
    assert_close(&name("bn dbias"), &sums[c..], &want_p[1], tol);
    if relu && !nhwc {
        // The kernels' own mask (relu = 1 reads y) gives the same sums.
        let masked = bn_sums(&k, (&xk, &y, &gk), &stats, dims, eps, false, true);
        assert_close(&name("bn sums, mask in the kernel"), &masked, &sums, 1e-6);
    }

    let mut dx = zeros::<E>(total);
    let (xp, st, wp) = (xk.as_ptr(), stats.as_ptr(), wt.as_ptr());
    let (gp, sm, dp) = (g.as_ptr(), sums.as_ptr(), dx.as_mut_ptr());
    let count = (n * h * w) as f32;
    if nhwc {
        launch(geom::elementwise(total), || unsafe {
            (k.bn_bwd_dx_nhwc)(xp, gp, st, wp, sm, dp, total, c as i32, count, eps)
        })
        .unwrap();
    } else {
        let per_block = geom::planes_per_block(h * w);
        launch(geom::plane_groups(n * c, per_block), || unsafe {
            (k.bn_bwd_dx)(
                xp,
                xp,
                gp,
                st,
                wp,
                sm,
                dp,
                c as i32,
                (h * w) as i32,
                count,
                eps,
                0,
                n * c,
                per_block as i32,
            )
        })
        .unwrap();
    }
    let dx_nchw = if nhwc {
        nhwc_to_nchw(&dx, dims)
    } else {
        dx.clone()
    };
    assert_close(
        &name("bn_bwd_dx"),
        &widen(&dx_nchw),
        &want_dx,
        (2.0 * E::TOL).max(2e-4),
    );
}

#[test]
fn batch_norm_kernels_match_the_cpu_op() {
    for dims in [(3, 5, 7, 9), (2, 70, 4, 4), (9, 33, 1, 1)] {
        for (relu, nhwc) in [(false, false), (true, false), (false, true), (true, true)] {
            batch_norm::<f32>(dims, relu, nhwc);
            batch_norm::<bf16>(dims, relu, nhwc);
        }
    }
    // NCHW planes of at least a block (one image per pass, groups of 7 planes) ...
    for relu in [false, true] {
        batch_norm::<f32>((2, 3, 17, 16), relu, false);
        batch_norm::<bf16>((2, 3, 17, 16), relu, false);
    }
    // ... and small planes where each block's images take several passes of 2 (600 channels:
    // 2 splits; the smallest such case is large for the emulator, so two of its variants).
    batch_norm::<f32>((7, 600, 10, 10), false, false);
    batch_norm::<bf16>((7, 600, 10, 10), true, false);
}

/// Max-pool forward and backward through the kernels against `max_pool2d` on the CPU; values
/// on a coarse grid so windows hold ties (the first maximum wins), and NaNs (which win).
fn max_pool<E: Elem>(
    dims: (usize, usize, usize, usize),
    (kern, stride, pad): (usize, usize, usize),
    nhwc: bool,
) {
    let km = E::kernels();
    let (n, c, h, w) = dims;
    let oh = (h + 2 * pad - kern) / stride + 1;
    let ow = (w + 2 * pad - kern) / stride + 1;
    let (total_in, total_out) = (n * c * h * w, n * c * oh * ow);
    let name = |op: &str| {
        format!(
            "{op} {} {dims:?} k{kern} s{stride} p{pad} nhwc={nhwc}",
            E::NAME
        )
    };
    let mut x: Vec<E> = random::<f32>(total_in, 31 + total_in as u64, 2.0, 0.0)
        .iter()
        .map(|v| E::from_f32((v * 2.0).round() / 2.0))
        .collect();
    x[5] = E::from_f32(f32::NAN);
    let dy = random::<E>(total_out, 32 + total_in as u64, 1.0, 0.0);
    let (want_y, want_dx, _) = with_grads(&widen(&x), &[n, c, h, w], &[], &widen(&dy), |t| {
        maxsup_ops::max_pool2d(t, kern, stride, pad)
    });

    let (xk, gk) = if nhwc {
        (nchw_to_nhwc(&x, dims), nchw_to_nhwc(&dy, (n, c, oh, ow)))
    } else {
        (x.clone(), dy.clone())
    };
    let mut y = zeros::<E>(total_out);
    let mut arg = vec![0u8; total_out];
    let (xp, yp, ap) = (xk.as_ptr(), y.as_mut_ptr(), arg.as_mut_ptr());
    let d = [h, w, oh, ow, kern, stride, pad].map(|v| v as i32);
    if nhwc {
        launch(geom::elementwise(total_out), || unsafe {
            (km.max_pool_fwd_nhwc)(
                xp, yp, ap, n, c as i32, d[0], d[1], d[2], d[3], d[4], d[5], d[6],
            )
        })
        .unwrap();
    } else {
        launch(geom::elementwise(total_out), || unsafe {
            (km.max_pool_fwd)(xp, yp, ap, n * c, d[0], d[1], d[2], d[3], d[4], d[5], d[6])
        })
        .unwrap();
    }
    let y_nchw = if nhwc {
        nhwc_to_nchw(&y, (n, c, oh, ow))
    } else {
        y.clone()
    };
    assert_close(&name("max_pool_fwd"), &widen(&y_nchw), &want_y, 0.0);

    let mut dx = zeros::<E>(total_in);
    let (gp, ap, dp) = (gk.as_ptr(), arg.as_ptr(), dx.as_mut_ptr());
    if nhwc {
        launch(geom::elementwise(total_in), || unsafe {
            (km.max_pool_bwd_nhwc)(
                gp, ap, dp, n, c as i32, d[0], d[1], d[2], d[3], d[4], d[5], d[6],
            )
        })
        .unwrap();
    } else {
        launch(geom::elementwise(total_in), || unsafe {
            (km.max_pool_bwd)(gp, ap, dp, n * c, d[0], d[1], d[2], d[3], d[4], d[5], d[6])
        })
        .unwrap();
    }
    let dx_nchw = if nhwc {
        nhwc_to_nchw(&dx, dims)
    } else {
        dx.clone()
    };
    // Sums of up to k*k gradients in the stored type.
    assert_close(
        &name("max_pool_bwd"),
        &widen(&dx_nchw),
        &stored::<E>(&want_dx),
        E::TOL.min(1e-6),
    );
}

#[test]
fn max_pool_kernels_match_the_cpu_op() {
    for dims in [(2, 3, 9, 11), (1, 40, 8, 8)] {
        for geo in [(3, 2, 1), (2, 2, 0), (3, 1, 1)] {
            for nhwc in [false, true] {
                max_pool::<f32>(dims, geo, nhwc);
                max_pool::<bf16>(dims, geo, nhwc);
            }
        }
    }
}
