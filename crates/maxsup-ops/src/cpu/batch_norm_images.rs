//! BatchNorm's CPU kernels for planes of few pixels, walking whole images instead of planes.
//!
//! The plane-by-plane kernels call one vector loop per `(image, channel)` plane. ResNet-50's late
//! layers at 32 px have 1 to 16 pixels per plane (131,072 planes of one pixel per BatchNorm of
//! its last stage at batch 64), so the calls, rayon's splitting and the per-plane constants cost
//! more than the arithmetic: BatchNorm was ~18% of a ResNet-50 step. Here the per-channel
//! constants are expanded once over one image's `C x HW` layout and each image is one vector loop
//! (normalisation, input gradient), and the reductions accumulate whole channel blocks of every
//! image into f64 arrays, in parallel over blocks of channels.

use super::lanes::{self, DxConsts};
use super::slices::num_threads;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Planes with fewer pixels than this take these kernels.
pub const FEW_PIXELS: usize = 64;

/// Each value repeated `hw` times: per-channel constants laid out like one image.
fn expand<T: Copy>(per_channel: &[T], hw: usize) -> Vec<T> {
    per_channel
        .iter()
        .flat_map(|&v| std::iter::repeat_n(v, hw))
        .collect()
}

/// Channels per reduction task: about 2048 elements of each image, and enough tasks to keep
/// every thread busy.
fn block_channels(c: usize, hw: usize) -> usize {
    (2048 / hw.max(1)).min(c.div_ceil(4 * num_threads())).max(1)
}

/// Per channel `Σ_images Σ_pixels f(acc)`, where `fill(acc, image_block, c0)` adds one image's
/// block of channels `c0..c0 + len / hw` into the f64 accumulators of that block.
fn reduce_channels(
    n: usize,
    c: usize,
    hw: usize,
    arrays: usize,
    fill: impl Fn(&mut [Vec<f64>], usize, usize) + Sync,
) -> Vec<Vec<f64>> {
    let cb = block_channels(c, hw);
    let blocks: Vec<Vec<Vec<f64>>> = (0..c.div_ceil(cb))
        .into_par_iter()
        .map(|blk| {
            let (c0, c1) = (blk * cb, ((blk + 1) * cb).min(c));
            let mut acc = vec![vec![0f64; (c1 - c0) * hw]; arrays];
            for b in 0..n {
                fill(&mut acc, b, c0);
            }
            // Sum each channel's pixels.
            acc.iter()
                .map(|a| a.chunks(hw).map(|p| p.iter().sum::<f64>()).collect())
                .collect()
        })
        .collect();
    (0..arrays)
        .map(|i| {
            blocks
                .iter()
                .flat_map(|blk| blk[i].iter().copied())
                .collect()
        })
        .collect()
}

/// Per-channel mean and biased variance (f64), two passes as the plane kernels do.
pub fn channel_stats(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<(f64, f64)> {
    let m = (n * hw) as f64;
    let block = |b: usize, c0: usize, len: usize| &x[(b * c + c0) * hw..(b * c + c0) * hw + len];
    let sums = reduce_channels(n, c, hw, 1, |acc, b, c0| {
        let len = acc[0].len();
        lanes::add_f64(&mut acc[0], block(b, c0, len));
    });
    let mean: Vec<f64> = sums[0].iter().map(|s| s / m).collect();
    let mean_e = expand(&mean, hw);
    let sq = reduce_channels(n, c, hw, 1, |acc, b, c0| {
        let len = acc[0].len();
        let mu = &mean_e[c0 * hw..c0 * hw + len];
        lanes::add_sq_dev_f64(&mut acc[0], block(b, c0, len), mu);
    });
    mean.iter()
        .zip(&sq[0])
        .map(|(&mu, &q)| (mu, q / m))
        .collect()
}

/// Per channel `(Σ g, Σ g * (x - mean) * rstd)`, rounded to f32.
pub fn grad_sums(
    g: &[f32],
    x: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    mean: &[f32],
    rstd: &[f32],
) -> Vec<(f32, f32)> {
    let (mean_e, rstd_e) = (expand(mean, hw), expand(rstd, hw));
    let sums = reduce_channels(n, c, hw, 2, |acc, b, c0| {
        let len = acc[0].len();
        let at = (b * c + c0) * hw;
        let e = c0 * hw..c0 * hw + len;
        let (s, sx) = acc.split_at_mut(1);
        lanes::add_grad_sums_f64(
            &mut s[0],
            &mut sx[0],
            &g[at..at + len],
            &x[at..at + len],
            &mean_e[e.clone()],
            &rstd_e[e],
        );
    });
    sums[0]
        .iter()
        .zip(&sums[1])
        .map(|(&s, &sx)| (s as f32, sx as f32))
        .collect()
}

/// `y = x * scale + shift` per channel (then ReLU when `relu`), image by image.
pub fn affine(
    y: &mut [MaybeUninit<f32>],
    x: &[f32],
    chw: usize,
    hw: usize,
    scale: &[f32],
    shift: &[f32],
    relu: bool,
) {
    let (scale_e, shift_e) = (expand(scale, hw), expand(shift, hw));
    y.par_chunks_mut(chw)
        .zip(x.par_chunks(chw))
        .for_each(|(yi, xi)| lanes::affine_vec(yi, xi, &scale_e, &shift_e, relu));
}

/// [`affine`] with the block's shortcut `r` added before a ReLU, in the same pass.
pub fn affine_add_relu(
    y: &mut [MaybeUninit<f32>],
    x: &[f32],
    r: &[f32],
    chw: usize,
    hw: usize,
    scale: &[f32],
    shift: &[f32],
) {
    let (scale_e, shift_e) = (expand(scale, hw), expand(shift, hw));
    y.par_chunks_mut(chw)
        .zip(x.par_chunks(chw).zip(r.par_chunks(chw)))
        .for_each(|(yi, (xi, ri))| lanes::affine_vec_add_relu(yi, xi, ri, &scale_e, &shift_e));
}

/// Per-channel constants of the input gradient (see [`lanes::batch_norm_dx`]).
pub struct ChannelDx {
    pub k: Vec<f32>,
    pub s: Vec<f32>,
    pub sx: Vec<f32>,
    pub mean: Vec<f32>,
    pub rstd: Vec<f32>,
}

/// BatchNorm's input gradient, image by image.
pub fn dx(
    dx: &mut [MaybeUninit<f32>],
    g: &[f32],
    x: &[f32],
    chw: usize,
    hw: usize,
    m: f32,
    per_channel: &ChannelDx,
) {
    let e = |v: &[f32]| expand(v, hw);
    let (k, s, sx) = (e(&per_channel.k), e(&per_channel.s), e(&per_channel.sx));
    let (mean, rstd) = (e(&per_channel.mean), e(&per_channel.rstd));
    let consts = DxConsts {
        k: &k,
        s: &s,
        sx: &sx,
        mean: &mean,
        rstd: &rstd,
    };
    dx.par_chunks_mut(chw)
        .zip(g.par_chunks(chw).zip(x.par_chunks(chw)))
        .for_each(|(di, (gi, xi))| lanes::batch_norm_dx_vec(di, gi, xi, m, &consts));
}
