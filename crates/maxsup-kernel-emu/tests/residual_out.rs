//! The residual-output kernels of ops.cu (`y = x + s ⊙ (o + bias)` and, back, `dy ⊙ s` with its
//! column sums), run by the emulator over the launch shapes of `maxsup_ops::kernel_geometry`,
//! against the separate ops they replace element by element (each step stored in the element
//! type; the column sums through `bias_grad_partial` over the same gradient): bit for bit.

mod common;

use common::*;
use half::bf16;
use maxsup_kernel_emu::launch;
use maxsup_ops::kernel_geometry as geom;

fn residual_kernels<E: Elem>() {
    let k = E::kernels();
    // (images, rows per image, width): DeiT-like rows, and widths off a 32-column block.
    for (batch, per, n) in [(3usize, 5usize, 70usize), (2, 197, 32), (4, 1, 3)] {
        let (m, total) = (batch * per, batch * per * n);
        let x = random::<E>(total, 41 + total as u64, 2.0, 0.0);
        let o = random::<E>(total, 42 + total as u64, 3.0, 0.1);
        let bias = random::<E>(n, 43 + n as u64, 1.0, 0.3);
        // One image dropped (0), the others kept with the 1/(1-p) scale or doubled; f32, as
        // the kernels take it (1/0.9 is not a bf16).
        let scale: Vec<f32> = (0..batch).map(|b| [1.0 / 0.9, 0.0, 2.0][b % 3]).collect();
        let name = |op: &str| format!("{op} {} batch={batch} per={per} n={n}", E::NAME);
        let (xp, op, bp) = (x.as_ptr(), o.as_ptr(), bias.as_ptr());

        for scaled in [true, false] {
            let want: Vec<f32> = (0..total)
                .map(|i| {
                    let mut v = E::from_f32(o[i].to_f32() + bias[i % n].to_f32());
                    if scaled {
                        v = E::from_f32(v.to_f32() * scale[i / (per * n)]);
                    }
                    E::from_f32(x[i].to_f32() + v.to_f32()).to_f32()
                })
                .collect();
            let mut y = vec![E::from_f32(f32::NAN); total];
            let sp = if scaled {
                scale.as_ptr()
            } else {
                std::ptr::null()
            };
            let yp = y.as_mut_ptr();
            launch(geom::elementwise(total), || unsafe {
                (k.residual_out_fwd)(xp, op, bp, sp, yp, total, n as i32, per * n)
            })
            .unwrap();
            assert_close(
                &name(&format!("residual_out_fwd scaled={scaled}")),
                &widen(&y),
                &want,
                0.0,
            );
        }

        let dy = random::<E>(total, 44 + total as u64, 1.0, 0.0);
        let g_want: Vec<E> = (0..total)
            .map(|i| E::from_f32(dy[i].to_f32() * scale[i / (per * n)]))
            .collect();
        let splits = geom::column_splits(m, n);
        let want_db = separate_bias_grad(&g_want, m, n);
        let mut g = vec![E::from_f32(f32::NAN); total];
        let mut partial = vec![f32::NAN; splits * n];
        let (dyp, sp, gp, pp) = (
            dy.as_ptr(),
            scale.as_ptr(),
            g.as_mut_ptr(),
            partial.as_mut_ptr(),
        );
        launch(geom::column_reduce(n, splits), || unsafe {
            (k.residual_out_bwd)(dyp, sp, gp, pp, m, n as i32, per, splits as i32)
        })
        .unwrap();
        assert_close(
            &name("residual_out_bwd g"),
            &widen(&g),
            &widen(&g_want),
            0.0,
        );
        assert_close(
            &name("residual_out_bwd dbias"),
            &finish_column_sums(&partial, splits, n),
            &want_db,
            0.0,
        );
    }
}

#[test]
fn residual_output_kernels_match_the_separate_ops_bit_for_bit() {
    residual_kernels::<f32>();
    residual_kernels::<bf16>();
}
