//! A linear layer's bias inside the transformer graph node (`residual_branch`'s CUDA path):
//! fc1's bias add fused with the exact GELU after it, and bias gradients as column sums.
//!
//! Unfused, fc1's bias add is a pass of its own over the MLP-wide activation (read the GEMM
//! result, write the biased copy) before the GELU reads it again; its gradient was a cast to
//! f32 (a copy, under bf16) and candle's reduction over the rows, which reads a column at a
//! time. Fused, the forward reads the GEMM result once and writes the GELU's output, the
//! backward reads it once more and writes the input gradient with its column sums beside it, and
//! the other bias gradients (fc2, qkv, proj) are one coalesced column-sum pass.
//!
//! `g + bias` is rounded to the activations' dtype before the GELU, as the separate bias add
//! stores it, so values match the unfused ops'. No op here has a backward of its own: the graph
//! node's backward calls them.

use crate::cpu::normal;
use crate::cpu::slices::contiguous_f32;
use crate::cpu::uninit::Output;
use crate::linear::column_sums;
use crate::side_output::SideOutput;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Rows per rayon task of the CPU kernels.
const ROWS_PER_TASK: usize = 16;

/// Checks that `g` is rows of `bias`'s features in its dtype, or an error naming `op`. The ops'
/// kernels (CPU and CUDA) then take the shapes as given.
fn check_rows(g: &Tensor, bias: &Tensor, op: &str) -> Result<()> {
    let n = bias.elem_count();
    if n == 0 || g.dims().last() != Some(&n) || g.dtype() != bias.dtype() {
        candle_core::bail!(
            "{op}: {:?} {:?} is not rows of {n} features in the bias's {:?}",
            g.shape(),
            g.dtype(),
            bias.dtype()
        );
    }
    Ok(())
}

/// `gelu(g + bias)`: fc1's output from its bias-free GEMM result `g` (`[..., n]`, contiguous)
/// and its bias (`[n]`, `g`'s dtype).
pub(crate) fn bias_gelu(g: &Tensor, bias: &Tensor) -> Result<Tensor> {
    check_rows(g, bias, "bias_gelu")?;
    g.contiguous()?
        .apply_op2_no_bwd(&bias.contiguous()?, &BiasGeluOp)
}

/// The gradients through [`bias_gelu`] for its output gradient `dy`: `(dg, dbias)`, both in
/// `g`'s dtype (the bias gradient accumulated in f32).
pub(crate) fn bias_gelu_backward(
    g: &Tensor,
    bias: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Tensor)> {
    check_rows(g, bias, "bias_gelu backward")?;
    if dy.shape() != g.shape() || dy.dtype() != g.dtype() {
        candle_core::bail!(
            "bias_gelu output gradient {:?} {:?} does not match the input {:?} {:?}",
            dy.shape(),
            dy.dtype(),
            g.shape(),
            g.dtype()
        );
    }
    let op = BiasGeluBackwardOp {
        bias_grad: SideOutput::new("bias_gelu bias gradient"),
    };
    let dg = g
        .contiguous()?
        .apply_op3_no_bwd(&bias.contiguous()?, &dy.contiguous()?, &op)?;
    let db = op.bias_grad.take()?.to_dtype(g.dtype())?;
    Ok((dg, db))
}

/// The bias gradient of a linear layer from its output gradient `dy` (`[..., n]`): the sum over
/// all rows, accumulated in f32, in `dy`'s dtype.
pub(crate) fn bias_grad(dy: &Tensor) -> Result<Tensor> {
    if dy.rank() == 0 || dy.dims().last() == Some(&0) {
        candle_core::bail!("bias gradient: {:?} is not rows of features", dy.shape());
    }
    dy.contiguous()?
        .apply_op1_no_bwd(&BiasGradOp)?
        .to_dtype(dy.dtype())
}

struct BiasGeluOp;

impl CustomOp2 for BiasGeluOp {
    fn name(&self) -> &'static str {
        "maxsup-bias-gelu"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = bl.shape().elem_count();
        let g = contiguous_f32(gs, gl, "bias_gelu input")?;
        let b = contiguous_f32(bs, bl, "bias_gelu bias")?;
        let mut y = Output::new(g.len());
        y.slots()
            .par_chunks_mut(n * ROWS_PER_TASK)
            .zip(g.par_chunks(n * ROWS_PER_TASK))
            .for_each(|(yc, gc)| {
                let mut h = vec![0f32; n];
                for (yr, gr) in yc.chunks_mut(n).zip(gc.chunks(n)) {
                    h.iter_mut()
                        .zip(gr.iter().zip(b))
                        .for_each(|(h, (g, b))| *h = g + b);
                    normal::gelu(yr, &h);
                }
            });
        // SAFETY: `g` is whole rows of `n`, and every row of `y` was written.
        let y = unsafe { y.assume_init() };
        Ok((CpuStorage::F32(y), gl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let y = crate::cuda::bias::bias_gelu_fwd((gs, gl), (bs, bl))?;
        Ok((y, gl.shape().clone()))
    }
}

/// `(g, bias, dy) -> dg`, with the bias gradient (f32) left in `bias_grad`.
struct BiasGeluBackwardOp {
    bias_grad: SideOutput,
}

impl CustomOp3 for BiasGeluBackwardOp {
    fn name(&self) -> &'static str {
        "maxsup-bias-gelu-backward"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = bl.shape().elem_count();
        let m = gl.shape().elem_count() / n;
        let g = contiguous_f32(gs, gl, "bias_gelu input")?;
        let b = contiguous_f32(bs, bl, "bias_gelu bias")?;
        let dy = contiguous_f32(ds, dl, "bias_gelu output gradient")?;
        let mut dg = Output::new(g.len());
        dg.slots()
            .par_chunks_mut(n * ROWS_PER_TASK)
            .zip(g.par_chunks(n * ROWS_PER_TASK))
            .zip(dy.par_chunks(n * ROWS_PER_TASK))
            .for_each(|((oc, gc), dc)| {
                let mut h = vec![0f32; n];
                for ((or, gr), dr) in oc.chunks_mut(n).zip(gc.chunks(n)).zip(dc.chunks(n)) {
                    h.iter_mut()
                        .zip(gr.iter().zip(b))
                        .for_each(|(h, (g, b))| *h = g + b);
                    normal::gelu_backward(or, &h, dr);
                }
            });
        // SAFETY: `g` and `dy` are whole rows of `n`, and every row of `dg` was written.
        let dg = unsafe { dg.assume_init() };
        let db = column_sums(&dg, m, n);
        self.bias_grad.put_cpu(db, n)?;
        Ok((CpuStorage::F32(dg), gl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
        ds: &candle_core::CudaStorage,
        dl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let n = bl.shape().elem_count();
        let (dg, db) = crate::cuda::bias::bias_gelu_bwd((gs, gl), (bs, bl), (ds, dl))?;
        self.bias_grad.put_cuda(db, n)?;
        Ok((dg, gl.shape().clone()))
    }
}

/// `dy: [..., n] -> [n]` (f32): the column sums.
struct BiasGradOp;

impl CustomOp1 for BiasGradOp {
    fn name(&self) -> &'static str {
        "maxsup-bias-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let n = l.shape().dims().last().copied().unwrap_or(0);
        let m = l.shape().elem_count() / n;
        let dy = contiguous_f32(s, l, "bias gradient's output gradient")?;
        Ok((CpuStorage::F32(column_sums(dy, m, n)), Shape::from(n)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let n = l.shape().dims().last().copied().unwrap_or(0);
        let db = crate::cuda::bias::bias_grad((s, l), n)?;
        Ok((db, Shape::from(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn seq(n: usize, scale: f32, shift: f32) -> Vec<f32> {
        // A deterministic spread of values through GELU's curved region, both signs.
        (0..n)
            .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * scale + shift)
            .collect()
    }

    fn operands(m: usize, n: usize) -> Result<(Tensor, Tensor, Tensor)> {
        let dev = Device::Cpu;
        Ok((
            Tensor::from_vec(seq(m * n, 6.0, 0.0), (m, n), &dev)?,
            Tensor::from_vec(seq(n, 2.0, 0.25), n, &dev)?,
            Tensor::from_vec(seq(m * n, 1.0, 0.1), (m, n), &dev)?,
        ))
    }

    /// The fused ops give the unfused ones' values exactly: the bias add, then the GELU op and
    /// its backward, then a column sum over the rows.
    #[test]
    fn fused_bias_ops_equal_the_unfused_ones() -> Result<()> {
        // 40 rows: more than one rayon task of ROWS_PER_TASK rows, the last one partial.
        let (m, n) = (40, 13);
        let (g, b, dy) = operands(m, n)?;
        let h = g.broadcast_add(&b)?;
        let want_y = crate::gelu_erf(&h)?;
        let want_dh = crate::gelu::gelu_erf_backward(&h, &dy)?;
        let y = bias_gelu(&g, &b)?;
        assert_eq!(y.to_vec2::<f32>()?, want_y.to_vec2::<f32>()?);
        let (dh, db) = bias_gelu_backward(&g, &b, &dy)?;
        assert_eq!(dh.to_vec2::<f32>()?, want_dh.to_vec2::<f32>()?);
        let naive: Vec<f32> = (0..n)
            .map(|j| {
                let col = want_dh.narrow(1, j, 1)?.to_vec2::<f32>()?;
                Ok(col.iter().map(|r| r[0] as f64).sum::<f64>() as f32)
            })
            .collect::<Result<_>>()?;
        for (got, want) in db.to_vec1::<f32>()?.iter().zip(&naive) {
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }
        let dbias = bias_grad(&dy.reshape((4, 10, n))?)?;
        let want = dy.sum(0)?.to_vec1::<f32>()?;
        for (got, want) in dbias.to_vec1::<f32>()?.iter().zip(&want) {
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }
        Ok(())
    }

    #[test]
    fn operands_that_are_not_rows_of_the_bias_are_errors_naming_the_op() -> Result<()> {
        let (g, b, dy) = operands(6, 5)?;
        let short = b.narrow(0, 0, 4)?;
        let e = bias_gelu(&g, &short).unwrap_err().to_string();
        assert!(e.contains("bias_gelu") && e.contains("4 features"), "{e}");
        let e = bias_gelu_backward(&g, &b, &dy.narrow(0, 0, 5)?)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bias_gelu output gradient"), "{e}");
        Ok(())
    }
}
