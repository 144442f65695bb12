//! The argument table of the multi-tensor kernels (`TensorTable` in `kernels/ops.cu`) and how a
//! list of tensors is split into launches. Feature-free: the CUDA launcher and the host emulation
//! of the kernels (`maxsup-kernel-emu`) build their tables here, so the tests run the batches the
//! GPU runs.

use super::{AdamWStep, SgdMomentum};
use crate::kernel_geometry::{blocks, Launch, THREADS};
use std::ops::Range;

/// The kernel of a multi-tensor update and its launch-wide scalars, in f32 as the kernels take
/// them: each f64 hyper-parameter rounded once, as candle's `affine` rounds its constants, so the
/// kernels compute the composed update's floats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Update {
    /// `sgd_momentum_multi_f32`; per tensor: `scalars[0]` = weight decay.
    Sgd {
        lr: f32,
        momentum: f32,
        nesterov: bool,
    },
    /// `adamw_multi_f32`; per tensor: [`adamw_scalars`].
    AdamW(AdamWConstants),
    /// `ema_multi_f32`; no per-tensor scalars.
    Ema { decay: f32, one_minus_decay: f32 },
}

/// AdamW's launch-wide constants in f32 (also the CPU pass's, `maxsup-optim`'s `adamw_cpu`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConstants {
    /// `1 - beta1`, the weight of `lerp(exp_avg, grad, w)`, and `1 - w` for its other form.
    pub w: f32,
    pub one_minus_w: f32,
    /// PyTorch's lerp form for `w >= 0.5`: `end - (end - start) * (1 - w)`.
    pub from_end: bool,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    pub eps: f32,
}

impl AdamWConstants {
    pub fn new(step: AdamWStep) -> Self {
        let w = 1.0 - step.beta1;
        AdamWConstants {
            w: w as f32,
            one_minus_w: (1.0 - w) as f32,
            from_end: w >= 0.5,
            beta2: step.beta2 as f32,
            one_minus_beta2: (1.0 - step.beta2) as f32,
            eps: step.eps as f32,
        }
    }
}

impl Update {
    pub fn sgd(step: SgdMomentum) -> Self {
        Update::Sgd {
            lr: step.lr as f32,
            momentum: step.momentum as f32,
            nesterov: step.nesterov,
        }
    }

    pub fn adamw(step: AdamWStep) -> Self {
        Update::AdamW(AdamWConstants::new(step))
    }

    pub fn ema(decay: f64) -> Self {
        Update::Ema {
            decay: decay as f32,
            one_minus_decay: (1.0 - decay) as f32,
        }
    }

    /// The kernel's name in ops.cu.
    pub fn kernel(&self) -> &'static str {
        match self {
            Update::Sgd { .. } => "sgd_momentum_multi_f32",
            Update::AdamW(_) => "adamw_multi_f32",
            Update::Ema { .. } => "ema_multi_f32",
        }
    }

    /// Whether the kernel writes the `param` buffers (the EMA only reads the model).
    pub fn writes_param(&self) -> bool {
        !matches!(self, Update::Ema { .. })
    }
}

/// SGD's per-tensor scalars: the weight decay.
pub fn sgd_scalars(weight_decay: f64) -> [f32; 3] {
    [weight_decay as f32, 0.0, 0.0]
}

/// AdamW's per-tensor scalars for a parameter at step `t` (>= 1) of its own:
/// `[1 - lr * wd, 1 / sqrt(1 - beta2^t), -lr / (1 - beta1^t)]`, each from f64 as the composed
/// update computes it (no decay factor, i.e. 1, without weight decay).
pub fn adamw_scalars(step: AdamWStep, weight_decay: f64, t: u64) -> [f32; 3] {
    let decay = if weight_decay != 0.0 {
        1.0 - step.lr * weight_decay
    } else {
        1.0
    };
    let bias_correction1 = 1.0 - step.beta1.powf(t as f64);
    let bias_correction2_sqrt = (1.0 - step.beta2.powf(t as f64)).sqrt();
    [
        decay as f32,
        (1.0 / bias_correction2_sqrt) as f32,
        (-(step.lr / bias_correction1)) as f32,
    ]
}

/// Tensors per launch (`MT_TENSORS` in ops.cu): the table is passed by value as a kernel
/// argument, ~1.8 KB, inside the 4 KB every CUDA GPU accepts.
pub const MAX_TENSORS: usize = 32;
/// Elements per block (`MT_CHUNK` in ops.cu): 64 per thread, enough that the launch is a few
/// thousand blocks for a ResNet-50 rather than one per 256 elements.
pub const CHUNK: usize = 16384;

/// `TensorTable` of ops.cu, field for field (`#[repr(C)]`; pointers are device addresses, or
/// host addresses in the emulation).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TensorTable {
    pub param: [u64; MAX_TENSORS],
    pub grad: [u64; MAX_TENSORS],
    pub state0: [u64; MAX_TENSORS],
    pub state1: [u64; MAX_TENSORS],
    pub scalar0: [f32; MAX_TENSORS],
    pub scalar1: [f32; MAX_TENSORS],
    pub scalar2: [f32; MAX_TENSORS],
    pub len: [u64; MAX_TENSORS],
    pub block_start: [u32; MAX_TENSORS + 1],
    pub count: i32,
}

/// One tensor's entry: its buffers (0 where the kernel does not read them), per-tensor scalars
/// and element count.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Entry {
    pub param: u64,
    pub grad: u64,
    pub state0: u64,
    pub state1: u64,
    pub scalars: [f32; 3],
    pub len: usize,
}

/// One launch: the entries it covers and its table.
#[derive(Clone, Debug)]
pub struct Batch {
    pub entries: Range<usize>,
    pub table: TensorTable,
    pub blocks: usize,
}

impl Batch {
    /// The launch shape: one block per `CHUNK` elements of each tensor.
    pub fn launch(&self) -> Launch {
        blocks(self.blocks, THREADS, 0)
    }
}

/// Splits `entries` into launches of at most [`MAX_TENSORS`] tensors (and fewer than 2^31
/// blocks), in order; empty tensors get no blocks. No batch for an empty list.
pub fn batches(entries: &[Entry]) -> Vec<Batch> {
    let max_blocks = i32::MAX as usize;
    let mut out = Vec::new();
    let mut start = 0;
    while start < entries.len() {
        let mut table = TensorTable {
            param: [0; MAX_TENSORS],
            grad: [0; MAX_TENSORS],
            state0: [0; MAX_TENSORS],
            state1: [0; MAX_TENSORS],
            scalar0: [0.0; MAX_TENSORS],
            scalar1: [0.0; MAX_TENSORS],
            scalar2: [0.0; MAX_TENSORS],
            len: [0; MAX_TENSORS],
            block_start: [0; MAX_TENSORS + 1],
            count: 0,
        };
        let mut total = 0usize;
        let mut end = start;
        while end < entries.len() && end - start < MAX_TENSORS {
            let e = &entries[end];
            let need = e.len.div_ceil(CHUNK);
            if end > start && total + need > max_blocks {
                break;
            }
            let k = end - start;
            table.param[k] = e.param;
            table.grad[k] = e.grad;
            table.state0[k] = e.state0;
            table.state1[k] = e.state1;
            table.scalar0[k] = e.scalars[0];
            table.scalar1[k] = e.scalars[1];
            table.scalar2[k] = e.scalars[2];
            table.len[k] = e.len as u64;
            table.block_start[k] = total as u32;
            total += need;
            end += 1;
        }
        let count = end - start;
        table.count = count as i32;
        table.block_start[count..].fill(total as u32);
        if total > 0 {
            out.push(Batch {
                entries: start..end,
                table,
                blocks: total,
            });
        }
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(lens: &[usize]) -> Vec<Entry> {
        lens.iter()
            .enumerate()
            .map(|(i, &len)| Entry {
                param: 1000 + i as u64,
                len,
                ..Entry::default()
            })
            .collect()
    }

    /// Every element of every tensor belongs to exactly one block, found the way the kernel
    /// finds it (the first tensor whose next start exceeds the block index).
    #[test]
    fn blocks_cover_every_element_once() {
        let lens = [
            1,
            0,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK - 7,
            0,
            0,
            64,
            2_359_296,
            5,
        ];
        let mut lens: Vec<usize> = lens.to_vec();
        lens.extend((0..40).map(|i| i * 1001));
        let es = entries(&lens);
        let bs = batches(&es);
        assert_eq!(bs.len(), 2, "50 tensors: two launches of at most 32");
        let mut seen: Vec<usize> = vec![0; lens.len()];
        for b in &bs {
            let t = &b.table;
            assert_eq!(t.count as usize, b.entries.len());
            assert!(b.entries.len() <= MAX_TENSORS);
            for block in 0..b.blocks as u32 {
                let mut k = 0;
                while k + 1 < t.count as usize && block >= t.block_start[k + 1] {
                    k += 1;
                }
                let begin = (block - t.block_start[k]) as usize * CHUNK;
                let end = (begin + CHUNK).min(t.len[k] as usize);
                assert!(begin < end, "block {block} has no work");
                seen[b.entries.start + k] += end - begin;
                assert_eq!(t.param[k], 1000 + (b.entries.start + k) as u64);
            }
        }
        assert_eq!(seen, lens);
    }

    #[test]
    fn empty_tensors_need_no_launch() {
        assert!(batches(&[]).is_empty());
        assert!(batches(&entries(&[0, 0])).is_empty());
    }

    /// The Rust table has the C struct's size: 4 pointer arrays, 3 float arrays, the lengths,
    /// the block starts and the count.
    #[test]
    fn table_layout_matches_the_kernel_struct() {
        let n = MAX_TENSORS;
        let want = 4 * 8 * n + 3 * 4 * n + 8 * n + 4 * (n + 1) + 4;
        assert_eq!(std::mem::size_of::<TensorTable>(), want.next_multiple_of(8));
        assert!(std::mem::size_of::<TensorTable>() <= 4096);
    }
}
