//! The element-wise, softmax and LayerNorm kernels of ops.cu, run by the emulator over the
//! launch shapes of `maxsup_ops::kernel_geometry`, against maxsup-ops' CPU ops (forward and
//! autograd backward) on the same inputs, for f32 and bf16 storage.

mod common;

use common::*;
use half::bf16;
use maxsup_kernel_emu::launch;
use maxsup_ops::kernel_geometry as geom;

fn elementwise<E: Elem>() {
    let k = E::kernels();
    let tol = E::TOL;
    for n in [1usize, 255, 4099] {
        let x = random::<E>(n, 1 + n as u64, 2.0, 0.0);
        let b = random::<E>(n, 2 + n as u64, 2.0, 0.0);
        let dy = random::<E>(n, 3 + n as u64, 1.0, 0.0);
        let (xf, bf, gf) = (widen(&x), widen(&b), widen(&dy));
        let name = |op: &str| format!("{op} {} n={n}", E::NAME);

        let mut y = zeros::<E>(n);
        let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
        launch(geom::elementwise(n), || unsafe { (k.relu_fwd)(xp, yp, n) }).unwrap();
        let want: Vec<f32> = xf.iter().map(|v| v.max(0.0)).collect();
        assert_close(&name("relu_fwd"), &widen(&y), &want, 0.0);

        let mut dx = zeros::<E>(n);
        let (yp, gp, dp) = (y.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
        launch(geom::elementwise(n), || unsafe {
            (k.relu_bwd)(yp, gp, dp, n)
        })
        .unwrap();
        let (_, want, _) = with_grads(&xf, &[n], &[], &gf, maxsup_ops::relu);
        assert_close(&name("relu_bwd"), &widen(&dx), &want, 0.0);

        let mut s = zeros::<E>(n);
        let (bp, sp) = (b.as_ptr(), s.as_mut_ptr());
        launch(geom::elementwise(n), || unsafe {
            (k.add_relu_fwd)(xp, bp, sp, n)
        })
        .unwrap();
        let want = maxsup_ops::add_relu(&cpu(&xf, &[n]), &cpu(&bf, &[n])).unwrap();
        assert_close(
            &name("add_relu_fwd"),
            &widen(&s),
            &stored::<E>(&values(&want)),
            0.0,
        );

        let mut y = zeros::<E>(n);
        let yp = y.as_mut_ptr();
        launch(geom::elementwise(n), || unsafe { (k.gelu_fwd)(xp, yp, n) }).unwrap();
        let (want_y, want_dx, _) = with_grads(&xf, &[n], &[], &gf, maxsup_ops::gelu_erf);
        assert_close(&name("gelu_fwd"), &widen(&y), &want_y, tol);
        let mut dx = zeros::<E>(n);
        let dp = dx.as_mut_ptr();
        launch(geom::elementwise(n), || unsafe {
            (k.gelu_bwd)(xp, gp, dp, n)
        })
        .unwrap();
        assert_close(&name("gelu_bwd"), &widen(&dx), &want_dx, tol);
    }
}

/// The grid-stride loops cover work larger than the grid (the GPU's grid is capped at 2^19
/// blocks, too many to emulate: here 3 blocks for 40 blocks' worth).
#[test]
fn grid_stride_kernels_cover_more_work_than_their_grid() {
    let n = 40 * geom::THREADS as usize + 17;
    let x = random::<f32>(n, 5, 1.0, 0.0);
    let mut y = vec![f32::NAN; n];
    let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
    launch(geom::blocks(3, geom::THREADS, 0), || unsafe {
        (maxsup_kernel_emu::F32.relu_fwd)(xp, yp, n)
    })
    .unwrap();
    let want: Vec<f32> = x.iter().map(|v| v.max(0.0)).collect();
    assert_close("relu_fwd over a small grid", &y, &want, 0.0);
}

#[test]
fn elementwise_kernels_match_the_cpu_ops() {
    elementwise::<f32>();
    elementwise::<bf16>();
}

fn softmax<E: Elem>() {
    let k = E::kernels();
    for (rows, d) in [(13usize, 1usize), (9, 31), (17, 100), (3, 1000)] {
        let n = rows * d;
        let x = random::<E>(n, 7 + n as u64, 3.0, 0.5);
        let dy = random::<E>(n, 8 + n as u64, 1.0, 0.0);
        let (xf, gf) = (widen(&x), widen(&dy));
        let (want_y, want_dx, _) =
            with_grads(&xf, &[rows, d], &[], &gf, maxsup_ops::softmax_last_dim);
        let name = |op: &str| format!("{op} {} rows={rows} d={d}", E::NAME);

        let mut y = zeros::<E>(n);
        let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
        launch(geom::warp_per_row(rows), || unsafe {
            (k.softmax_fwd)(xp, yp, rows, d as i32)
        })
        .unwrap();
        assert_close(&name("softmax_fwd"), &widen(&y), &want_y, E::TOL);

        // The backward from the kernel's own (stored) output, as on the GPU.
        let mut dx = zeros::<E>(n);
        let (yp, gp, dp) = (y.as_ptr(), dy.as_ptr(), dx.as_mut_ptr());
        launch(geom::warp_per_row(rows), || unsafe {
            (k.softmax_bwd)(yp, gp, dp, rows, d as i32)
        })
        .unwrap();
        assert_close(&name("softmax_bwd"), &widen(&dx), &want_dx, 2.0 * E::TOL);
    }
}

#[test]
fn softmax_kernels_match_the_cpu_op() {
    softmax::<f32>();
    softmax::<bf16>();
}

fn layer_norm<E: Elem>() {
    let k = E::kernels();
    let eps = 1e-6f32;
    // 8200 rows: more than 1024 blocks of 8, so blocks take a second round of rows.
    for (rows, d) in [(19usize, 48usize), (5, 384), (70, 7), (8200, 5)] {
        let n = rows * d;
        let x = random::<E>(n, 11 + n as u64, 2.0, 3.0);
        let dy = random::<E>(n, 12 + n as u64, 1.0, 0.0);
        let w = random::<f32>(d, 13, 0.5, 1.0);
        let b = random::<f32>(d, 14, 0.5, 0.0);
        let (xf, gf) = (widen(&x), widen(&dy));
        let (wv, bv) = (
            candle_core::Var::from_tensor(&cpu(&w, &[d])).unwrap(),
            candle_core::Var::from_tensor(&cpu(&b, &[d])).unwrap(),
        );
        let (want_y, want_dx, want_p) = with_grads(&xf, &[rows, d], &[&wv, &bv], &gf, |t| {
            maxsup_ops::layer_norm(t, wv.as_tensor(), bv.as_tensor(), eps as f64)
        });
        let name = |op: &str| format!("{op} {} rows={rows} d={d}", E::NAME);
        let (xp, gp, wp, bp) = (x.as_ptr(), dy.as_ptr(), w.as_ptr(), b.as_ptr());

        let mut y = zeros::<E>(n);
        let yp = y.as_mut_ptr();
        launch(geom::warp_per_row(rows), || unsafe {
            (k.layer_norm_fwd)(xp, wp, bp, yp, rows, d as i32, eps)
        })
        .unwrap();
        assert_close(&name("layer_norm_fwd"), &widen(&y), &want_y, E::TOL);

        // The backward: dx per row and the parameter gradients' per-block partial sums in one
        // kernel, then the column sum (as rows.rs); once without and once with a residual
        // gradient, which must come out as the stored dx plus it, as a separate add in E.
        let parts = geom::layer_norm_param_parts(rows);
        let width = 2 * d;
        let backward = |res: *const E| {
            let mut dx = vec![E::from_f32(f32::NAN); n];
            let mut partial = vec![f32::NAN; parts * width];
            let (dp, pp) = (dx.as_mut_ptr(), partial.as_mut_ptr());
            launch(geom::layer_norm_params(parts, d), || unsafe {
                (k.layer_norm_bwd)(xp, wp, gp, res, dp, pp, rows, d as i32, eps)
            })
            .unwrap();
            (dx, finish_column_sums(&partial, parts, width))
        };
        let (dx, sums) = backward(std::ptr::null());
        assert_close(
            &name("layer_norm_bwd dx"),
            &widen(&dx),
            &want_dx,
            2.0 * E::TOL,
        );
        let res = random::<E>(n, 15 + n as u64, 1.0, 0.5);
        let want: Vec<f32> = (0..n)
            .map(|i| E::from_f32(res[i].to_f32() + dx[i].to_f32()).to_f32())
            .collect();
        let (dxr, sums_r) = backward(res.as_ptr());
        assert_close(
            &name("layer_norm_bwd dx + residual"),
            &widen(&dxr),
            &want,
            0.0,
        );
        assert_close(
            &name("layer_norm_bwd sums, residual or not"),
            &sums_r,
            &sums,
            0.0,
        );
        // f32 sums over the rows: the tolerance grows with their number.
        let tol = 1e-4 * (rows as f32).sqrt();
        assert_close(&name("layer_norm dweight"), &sums[..d], &want_p[0], tol);
        assert_close(&name("layer_norm dbias"), &sums[d..], &want_p[1], tol);
    }
}

#[test]
fn layer_norm_kernels_match_the_cpu_op() {
    layer_norm::<f32>();
    layer_norm::<bf16>();
}
