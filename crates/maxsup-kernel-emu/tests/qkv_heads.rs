//! The attention-head kernels of ops.cu (the qkv projection's result to and from
//! `[3][B][heads][N][hd]`), run by the emulator over the launch shapes of
//! `maxsup_ops::kernel_geometry`, against a naive index-by-index reference of the separate ops
//! they replace (bias add stored in the element type, the queries scaled in it, the permutation;
//! back: the queries' gradient scaled, the permutation, `bias_grad_partial`): bit for bit.

mod common;

use common::*;
use half::bf16;
use maxsup_kernel_emu::launch;
use maxsup_ops::kernel_geometry as geom;

/// Where column `j` of row `b * n + t` of the qkv result lands in `[3][B][heads][N][hd]`.
fn heads_index(
    b: usize,
    t: usize,
    j: usize,
    (batch, n, heads, hd): (usize, usize, usize, usize),
) -> usize {
    let c = heads * hd;
    let (part, h, d) = (j / c, j % c / hd, j % hd);
    (((part * batch + b) * heads + h) * n + t) * hd + d
}

fn qkv_kernels<E: Elem>() {
    let k = E::kernels();
    // (batch, tokens, heads, head dim): DeiT's head dim, a 3-column head (columns of a warp
    // cross heads and parts), and enough rows that each thread strides over several.
    for dims in [
        (2usize, 5usize, 2usize, 64usize),
        (3, 7, 3, 3),
        (4, 197, 1, 16),
    ] {
        let (batch, n, heads, hd) = dims;
        let (m, c3) = (batch * n, 3 * heads * hd);
        let total = m * c3;
        let scale = (hd as f32).powf(-0.5);
        let g = random::<E>(total, 31 + total as u64, 2.0, 0.0);
        let bias = random::<E>(c3, 32 + c3 as u64, 1.0, 0.3);
        let name = |op: &str| format!("{op} {} dims={dims:?}", E::NAME);

        // The separate ops, element by element.
        let s = E::from_f32(scale).to_f32();
        let mut want = vec![0f32; total];
        for b in 0..batch {
            for t in 0..n {
                for j in 0..c3 {
                    let i = (b * n + t) * c3 + j;
                    let mut v = E::from_f32(g[i].to_f32() + bias[j].to_f32()).to_f32();
                    if j < c3 / 3 {
                        v = E::from_f32(v * s).to_f32();
                    }
                    want[heads_index(b, t, j, dims)] = v;
                }
            }
        }
        let mut out = vec![E::from_f32(f32::NAN); total];
        let (gp, bp, op) = (g.as_ptr(), bias.as_ptr(), out.as_mut_ptr());
        launch(geom::elementwise(total), || unsafe {
            (k.qkv_heads_fwd)(gp, bp, op, total, n as i32, heads as i32, hd as i32, scale)
        })
        .unwrap();
        assert_close(&name("qkv_heads_fwd"), &widen(&out), &want, 0.0);

        // Back: the three gradients in the heads' layout.
        let d = random::<E>(total, 33 + total as u64, 1.0, 0.0);
        let plane = total / 3;
        let (dq, dk, dv) = (&d[..plane], &d[plane..2 * plane], &d[2 * plane..]);
        let mut dh_want = vec![E::from_f32(0.0); total];
        for b in 0..batch {
            for t in 0..n {
                for j in 0..c3 {
                    let mut v = d[heads_index(b, t, j, dims)];
                    if j < c3 / 3 {
                        v = E::from_f32(v.to_f32() * s);
                    }
                    dh_want[(b * n + t) * c3 + j] = v;
                }
            }
        }
        let splits = geom::column_splits(m, c3);
        let want_db = separate_bias_grad(&dh_want, m, c3);

        let mut dh = vec![E::from_f32(f32::NAN); total];
        let mut partial = vec![f32::NAN; splits * c3];
        let (dqp, dkp, dvp) = (dq.as_ptr(), dk.as_ptr(), dv.as_ptr());
        let (dhp, pp) = (dh.as_mut_ptr(), partial.as_mut_ptr());
        launch(geom::column_reduce(c3, splits), || unsafe {
            (k.qkv_heads_bwd)(
                dqp,
                dkp,
                dvp,
                dhp,
                pp,
                m,
                n as i32,
                heads as i32,
                hd as i32,
                scale,
                splits as i32,
            )
        })
        .unwrap();
        assert_close(
            &name("qkv_heads_bwd dh"),
            &widen(&dh),
            &widen(&dh_want),
            0.0,
        );
        assert_close(
            &name("qkv_heads_bwd dbias"),
            &finish_column_sums(&partial, splits, c3),
            &want_db,
            0.0,
        );
    }
}

#[test]
fn qkv_head_kernels_match_the_separate_ops_bit_for_bit() {
    qkv_kernels::<f32>();
    qkv_kernels::<bf16>();
}
