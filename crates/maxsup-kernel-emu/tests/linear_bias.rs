//! The bias kernels of ops.cu (fc1's bias fused with the GELU, forward and backward, and a
//! linear layer's bias gradient), run by the emulator over the launch shapes of
//! `maxsup_ops::kernel_geometry`: the fused kernels against the unfused ones they replace (a
//! bias add stored in the element type, then `gelu_fwd` / `gelu_bwd`: bit for bit), and the
//! column sums against a naive f64 sum of the same gradient.

mod common;

use common::*;
use half::bf16;
use maxsup_kernel_emu::launch;
use maxsup_ops::kernel_geometry as geom;

/// Column sums of a row-major `[m, n]` matrix in f64: the naive reference.
fn naive_column_sums(v: &[f32], m: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|c| (0..m).map(|r| v[r * n + c] as f64).sum::<f64>() as f32)
        .collect()
}

fn bias_kernels<E: Elem>() {
    let k = E::kernels();
    // n below, at and above a 32-column block; m short of one 8-row group, and long enough
    // that each thread strides over several rows.
    for (m, n) in [(5usize, 3usize), (37, 32), (300, 70), (2100, 33)] {
        let total = m * n;
        let g = random::<E>(total, 21 + total as u64, 2.0, 0.0);
        let bias = random::<E>(n, 22 + n as u64, 1.0, 0.3);
        let dy = random::<E>(total, 23 + total as u64, 1.0, 0.0);
        let name = |op: &str| format!("{op} {} m={m} n={n}", E::NAME);
        let (gp, bp, dyp) = (g.as_ptr(), bias.as_ptr(), dy.as_ptr());

        // The unfused reference: the bias add stored in E, then the GELU kernels.
        let h: Vec<E> = (0..total)
            .map(|i| E::from_f32(g[i].to_f32() + bias[i % n].to_f32()))
            .collect();
        let mut y_ref = zeros::<E>(total);
        let (hp, yrp) = (h.as_ptr(), y_ref.as_mut_ptr());
        launch(geom::elementwise(total), || unsafe {
            (k.gelu_fwd)(hp, yrp, total)
        })
        .unwrap();
        let mut dh_ref = zeros::<E>(total);
        let dhrp = dh_ref.as_mut_ptr();
        launch(geom::elementwise(total), || unsafe {
            (k.gelu_bwd)(hp, dyp, dhrp, total)
        })
        .unwrap();

        let mut y = zeros::<E>(total);
        let yp = y.as_mut_ptr();
        launch(geom::elementwise(total), || unsafe {
            (k.bias_gelu_fwd)(gp, bp, yp, total, n as i32)
        })
        .unwrap();
        assert_close(&name("bias_gelu_fwd"), &widen(&y), &widen(&y_ref), 0.0);

        let splits = geom::column_splits(m, n);
        let mut dh = vec![E::from_f32(f32::NAN); total];
        let mut partial = vec![f32::NAN; splits * n];
        let (dhp, pp) = (dh.as_mut_ptr(), partial.as_mut_ptr());
        launch(geom::column_reduce(n, splits), || unsafe {
            (k.bias_gelu_bwd)(gp, bp, dyp, dhp, pp, m, n as i32, splits as i32)
        })
        .unwrap();
        assert_close(&name("bias_gelu_bwd dh"), &widen(&dh), &widen(&dh_ref), 0.0);
        // f32 sums over the rows: the tolerance grows with their number.
        let tol = 2e-6 * (m as f32).sqrt();
        let want_db = naive_column_sums(&widen(&dh_ref), m, n);
        assert_close(
            &name("bias_gelu_bwd dbias"),
            &finish_column_sums(&partial, splits, n),
            &want_db,
            tol,
        );

        let mut partial = vec![f32::NAN; splits * n];
        let pp = partial.as_mut_ptr();
        launch(geom::column_reduce(n, splits), || unsafe {
            (k.bias_grad_partial)(dyp, pp, m, n as i32, splits as i32)
        })
        .unwrap();
        assert_close(
            &name("bias_grad_partial"),
            &finish_column_sums(&partial, splits, n),
            &naive_column_sums(&widen(&dy), m, n),
            tol,
        );
    }
}

#[test]
fn bias_kernels_match_the_unfused_kernels_and_a_naive_column_sum() {
    bias_kernels::<f32>();
    bias_kernels::<bf16>();
}
