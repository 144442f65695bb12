//! Fused LayerNorm over the last dimension with its backward (candle's fused `LayerNorm` has
//! none). Row statistics are recomputed in the backward instead of stored: one extra read of `x`
//! is cheaper than keeping them alive for the whole graph.

use crate::cpu::slices::{contiguous_f32, num_threads, split_range};
use crate::cpu::uninit::{ensure_len, Output};
use crate::dispatch::{fused, unpack};
use crate::reference;
use crate::side_output::SideOutput;
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::CudaStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

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

/// `y = (x - mean) * rstd * w + b` row by row (rows of `w.len()`), parallel over rows; writes
/// all of `y` (the caller checked that `x` and `y` are whole rows of the weight's length).
pub(crate) fn forward_rows(x: &[f32], w: &[f32], b: &[f32], eps: f32, y: &mut [MaybeUninit<f32>]) {
    let d = w.len();
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .with_min_len(16)
        .for_each(|(yr, xr)| {
            let (mean, rstd) = row_stats(xr, eps);
            for (((o, &v), &wv), &bv) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                o.write((v - mean) * rstd * wv + bv);
            }
        });
}

/// The backward of [`forward_rows`] given the output gradient `g`: writes all of `dx` (plus
/// `residual`, when given: the gradient a residual connection around the norm carries past it)
/// and returns `(dweight, dbias)`. Row statistics are recomputed from `x`.
pub(crate) fn backward_rows(
    xv: &[f32],
    wv: &[f32],
    gv: &[f32],
    eps: f32,
    dx: &mut [MaybeUninit<f32>],
    residual: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let d = wv.len();
    let rows = xv.len() / d;
    let ranges = split_range(rows, num_threads());
    let mut parts = Vec::with_capacity(ranges.len());
    let mut rest = &mut dx[..rows * d];
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
                let (mean, rstd) = row_stats(xr, eps);
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
                let through = residual.map(|res| &res[row * d..(row + 1) * d]);
                for j in 0..d {
                    let xh = (xr[j] - mean) * rstd;
                    let v = rstd * (gr[j] * wv[j] - mg - xh * mgx);
                    dr[j].write(through.map_or(v, |t| v + t[j]));
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
    (dw, db)
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
        let mut y = Output::new(x.len());
        forward_rows(x, w, b, self.eps, y.slots());
        // SAFETY: rows of length d (the weight's and bias's length, checked) cover `x` and `y`.
        let y = unsafe { y.assume_init() };
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let d = wl.shape().elem_count();
        if bl.shape().elem_count() != d || xl.shape().dims().last() != Some(&d) {
            candle_core::bail!(
                "layer_norm: input {:?} last dim must equal weight {d} and bias {}",
                xl.shape(),
                bl.shape().elem_count()
            );
        }
        let y = crate::cuda::rows::layer_norm_fwd((xs, xl), (ws, wl), (bs, bl), self.eps)?;
        Ok((y, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = layer_norm_backward(x, w, b, dy, None, self.eps)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The gradients of [`layer_norm`] with respect to its input, weight and bias for the output
/// gradient `dy`, as ops of the tensors' device (contiguous `x`, f32 weight and bias; where the
/// fused op applies). `residual` (`x`'s shape and dtype) is added to the input gradient, inside
/// its kernel on CUDA: a pre-norm block's input gradient, `dy_block + dx_norm`.
pub(crate) fn layer_norm_backward(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    dy: &Tensor,
    residual: Option<&Tensor>,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let dy = dy.contiguous()?;
    if let Some(r) = residual {
        if r.shape() != x.shape() || r.dtype() != x.dtype() {
            candle_core::bail!(
                "layer_norm backward: residual gradient {:?} {:?} does not match the input {:?} {:?}",
                r.shape(),
                r.dtype(),
                x.shape(),
                x.dtype()
            );
        }
    }
    if x.device().is_cpu() {
        // One pass over the rows gives all three gradients (f32), packed [dx | dw | db].
        let packed = x.apply_op3_no_bwd(w, &dy, &LayerNormBackwardCpu { eps })?;
        let g = unpack(
            &packed,
            &[Some(x.shape()), Some(w.shape()), Some(b.shape())],
        )?;
        let mut g = g.into_iter().flatten();
        let missing =
            || candle_core::Error::Msg("layer_norm backward: a gradient is missing".into());
        let dx = g.next().ok_or_else(missing)?;
        let dw = g.next().ok_or_else(missing)?;
        let db = g.next().ok_or_else(missing)?;
        let dx = match residual {
            Some(r) => (r + dx)?,
            None => dx,
        };
        return Ok((dx, dw, db));
    }
    // On a GPU dx keeps the input's dtype (bf16 in mixed precision) while the parameter
    // gradients are f32: one kernel writes dx and leaves `[dweight | dbias]` beside it.
    let residual = residual.map(|r| r.contiguous()).transpose()?;
    let op = LayerNormBackwardCuda {
        eps,
        residual,
        params: SideOutput::new("layer_norm parameter gradients"),
    };
    let dx = x.apply_op3_no_bwd(w, &dy, &op)?;
    let dwb = op.params.take()?;
    let d = w.elem_count();
    let dw = dwb.narrow(0, 0, d)?.reshape(w.shape())?;
    let db = dwb.narrow(0, d, d)?.reshape(b.shape())?;
    Ok((dx, dw, db))
}

/// The CPU backward: `[dx | dweight | dbias]` in one pass over the rows.
struct LayerNormBackwardCpu {
    eps: f32,
}

impl CustomOp3 for LayerNormBackwardCpu {
    fn name(&self) -> &'static str {
        "maxsup-layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xv = contiguous_f32(xs, xl, "layer_norm input")?;
        let wv = contiguous_f32(ws, wl, "layer_norm weight")?;
        let gv = contiguous_f32(gs, gl, "layer_norm output gradient")?;
        let d = wv.len();
        // dx first, then room for dw and db (no copy of the activation-sized part).
        ensure_len("layer_norm output gradient", gv.len(), xv.len())?;
        if d == 0 || xv.len() % d != 0 {
            candle_core::bail!(
                "layer_norm backward: input of {} elements is not rows of the weight's {d}",
                xv.len()
            );
        }
        let mut dx = Output::with_room(xv.len(), 2 * d);
        let (dw, db) = backward_rows(xv, wv, gv, self.eps, dx.slots(), None);
        // SAFETY: `backward_rows` writes every element of `dx`.
        let mut dx = unsafe { dx.assume_init() };
        dx.extend_from_slice(&dw);
        dx.extend_from_slice(&db);
        let n = dx.len();
        Ok((CpuStorage::F32(dx), Shape::from(n)))
    }
}

/// The GPU backward: the input gradient (the input's dtype) as the output, `[dweight | dbias]`
/// (f32) left in `params`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct LayerNormBackwardCuda {
    eps: f32,
    /// Added to the input gradient (contiguous, the input's shape and dtype), or none.
    residual: Option<Tensor>,
    params: SideOutput,
}

impl CustomOp3 for LayerNormBackwardCuda {
    fn name(&self) -> &'static str {
        "maxsup-layer-norm-backward-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!(
            "layer_norm: this backward is for CUDA; the CPU runs LayerNormBackwardCpu"
        )
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (dx, dwb) = crate::cuda::captured::with_optional_cuda(
            self.residual.as_ref(),
            "layer_norm backward: the residual gradient",
            |residual| {
                crate::cuda::rows::layer_norm_bwd((xs, xl), (ws, wl), (gs, gl), residual, self.eps)
            },
        )?;
        self.params.put_cuda(dwb, 2 * wl.shape().elem_count())?;
        Ok((dx, xl.shape().clone()))
    }
}

/// LayerNorm over the last dimension with affine weight and bias (both shape [D]).
///
/// Runs the fused op (f32 on the CPU; f32 or bf16 input with f32 weight and bias on CUDA, f32
/// statistics), else the composed reference.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused(&[x], &[weight, bias]) || x.rank() == 0 {
        let (weight, bias) = (&weight.to_dtype(x.dtype())?, &bias.to_dtype(x.dtype())?);
        return reference::layer_norm(x, weight, bias, eps);
    }
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        LayerNormOp { eps: eps as f32 },
    )
}
