//! The CPU convolution kernels on raw slices, for benchmarks that time them without candle's
//! graph around them (`bins/bench-train/src/bin/conv-kernels.rs`, `bench/conv_kernels.sh`). Not a stable API.

use crate::cpu::{conv, im2col::ConvGeom};

/// One convolution's shapes: input `[n, c, hw, hw]`, weight `[o, c, k, k]`, padding `k / 2`.
#[derive(Clone, Copy, Debug)]
pub struct ConvShape {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
    pub o: usize,
    pub k: usize,
    pub stride: usize,
}

impl ConvShape {
    fn geom(&self) -> candle_core::Result<ConvGeom> {
        ConvGeom::new(
            (self.n, self.c, self.hw, self.hw),
            (self.o, self.c, self.k, self.k),
            self.stride,
            self.k / 2,
            1,
        )
    }

    /// Elements of the output `[n, o, oh, ow]`.
    pub fn output_len(&self) -> candle_core::Result<usize> {
        let g = self.geom()?;
        Ok(g.n * g.o * g.oh * g.ow)
    }
}

/// The forward pass `conv2d` runs for f32 on the CPU.
pub fn conv2d_forward(s: ConvShape, x: &[f32], w: &[f32]) -> candle_core::Result<Vec<f32>> {
    Ok(conv::forward(&s.geom()?, x, w))
}

/// The backward pass `conv2d` runs for f32 on the CPU: (input gradient if `want_dx`, weight
/// gradient).
pub fn conv2d_backward(
    s: ConvShape,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    want_dx: bool,
) -> candle_core::Result<(Option<Vec<f32>>, Vec<f32>)> {
    let (dx, dw) = conv::backward(&s.geom()?, x, w, dy, want_dx, true);
    Ok((dx, dw.expect("asked for")))
}
