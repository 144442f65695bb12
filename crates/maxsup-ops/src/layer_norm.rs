//! Fused LayerNorm over the last dimension with its backward (candle's fused `LayerNorm` has
//! none). Row statistics are recomputed in the backward instead of stored: one extra read of `x`
//! is cheaper than keeping them alive for the whole graph.

use crate::cpu::slices::{
    contiguous_f32, is_cpu_f32, num_threads, output_buffer, split_range, tensor_from_vec, with_f32,
};
use crate::reference;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

struct LayerNormOp {
    eps: f32,
}

/// Mean and 1/sqrt(var + eps) of one row (biased variance, two passes for accuracy).
fn row_stats(r: &[f32], eps: f32) -> (f32, f32) {
    let n = r.len() as f32;
    let mean = r.iter().sum::<f32>() / n;
    let var = r.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "maxsup-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, "layer_norm input")?;
        let w = contiguous_f32(ws, wl, "layer_norm weight")?;
        let b = contiguous_f32(bs, bl, "layer_norm bias")?;
        let d = w.len();
        if b.len() != d || xl.shape().dims().last() != Some(&d) {
            candle_core::bail!(
                "layer_norm: input {:?} last dim must equal weight {d} and bias {}",
                xl.shape(),
                b.len()
            );
        }
        let mut y = output_buffer(x.len());
        y.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .with_min_len(16)
            .for_each(|(yr, xr)| {
                let (mean, rstd) = row_stats(xr, self.eps);
                for (((o, &v), &wv), &bv) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                    *o = (v - mean) * rstd * wv + bv;
                }
            });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = x.dim(D::Minus1)?;
        let (dx, dw, db) = with_f32(x, |xv| {
            with_f32(w, |wv| {
                with_f32(dy, |gv| {
                    let mut dx = output_buffer(xv.len());
                    let rows = xv.len() / d.max(1);
                    let ranges = split_range(rows, num_threads());
                    let mut parts = Vec::with_capacity(ranges.len());
                    let mut rest = dx.as_mut_slice();
                    for r in &ranges {
                        let (h, t) = rest.split_at_mut(r.len() * d);
                        parts.push(h);
                        rest = t;
                    }
                    let partial: Vec<(Vec<f32>, Vec<f32>)> = parts
                        .into_par_iter()
                        .zip(ranges.par_iter())
                        .map(|(dxp, r)| {
                            let (mut dw, mut db) = (vec![0f32; d], vec![0f32; d]);
                            for (i, row) in r.clone().enumerate() {
                                let xr = &xv[row * d..(row + 1) * d];
                                let gr = &gv[row * d..(row + 1) * d];
                                let (mean, rstd) = row_stats(xr, self.eps);
                                let (mut sg, mut sgx) = (0f32, 0f32);
                                for j in 0..d {
                                    let xh = (xr[j] - mean) * rstd;
                                    let g = gr[j] * wv[j];
                                    sg += g;
                                    sgx += g * xh;
                                    dw[j] += gr[j] * xh;
                                    db[j] += gr[j];
                                }
                                let (mg, mgx) = (sg / d as f32, sgx / d as f32);
                                let dr = &mut dxp[i * d..(i + 1) * d];
                                for j in 0..d {
                                    let xh = (xr[j] - mean) * rstd;
                                    dr[j] = rstd * (gr[j] * wv[j] - mg - xh * mgx);
                                }
                            }
                            (dw, db)
                        })
                        .collect();
                    let (mut dw, mut db) = (vec![0f32; d], vec![0f32; d]);
                    for (pw, pb) in partial {
                        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
                        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
                    }
                    Ok((dx, dw, db))
                })
            })
        })?;
        Ok((
            Some(tensor_from_vec(dx, x.shape())?),
            Some(tensor_from_vec(dw, w.shape())?),
            Some(tensor_from_vec(db, b.shape())?),
        ))
    }
}

/// LayerNorm over the last dimension with affine weight and bias (both shape [D]).
///
/// f32 on CPU runs the fused custom op; other dtypes/devices the composed reference.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if !is_cpu_f32(&[x, weight, bias]) || x.rank() == 0 {
        return reference::layer_norm(x, weight, bias, eps);
    }
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        LayerNormOp { eps: eps as f32 },
    )
}
