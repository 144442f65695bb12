//! The chain graph nodes (a ResNet body or a DeiT body as one candle op) free each activation
//! gradient once the block before has used it, as candle's own backward does: the memory a
//! backward adds above what the forward left must not grow with the number of blocks, beyond
//! their parameter gradients. Measured with a counting allocator (this test's own binary).
//! Before: 8 Bottlenecks needed 4.7 MB more than 2 (18 activations), 16 DeiT sub-blocks 6.5 MB
//! more than 4 (32); after, neither grows.

mod common;
use candle_core::{DType, Device, Result, Tensor, Var};
use common::*;
use maxsup_ops::{
    residual_blocks_graph, BlockConv, BlockNorm, Branch, BranchKind, BranchWeights, ResidualBlock,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), SeqCst) + layout.size();
            PEAK.fetch_max(live, SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), SeqCst);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The tests run on threads of one process, whose allocations the counts mix: one measures at
/// a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Bytes the backward of `loss` needs above the memory live before it, and the gradients.
fn backward_extra(loss: &Tensor) -> Result<(usize, candle_core::backprop::GradStore)> {
    let before = LIVE.load(SeqCst);
    PEAK.store(before, SeqCst);
    let grads = loss.backward()?;
    Ok((PEAK.load(SeqCst).saturating_sub(before), grads))
}

fn pair(cin: usize, cout: usize, k: usize, seed: u64) -> Result<(BlockConv, BlockNorm)> {
    let w = (rand_tensor(&[cout, cin, k, k], seed)? * (1.0 / ((cin * k * k) as f64).sqrt()))?;
    Ok((
        BlockConv {
            weight: Var::from_tensor(&w)?.as_tensor().clone(),
            stride: 1,
            padding: k / 2,
            blur: None,
        },
        BlockNorm {
            weight: Var::ones(cout, DType::F32, &Device::Cpu)?
                .as_tensor()
                .clone(),
            bias: Var::zeros(cout, DType::F32, &Device::Cpu)?
                .as_tensor()
                .clone(),
            running_mean: Var::zeros(cout, DType::F32, &Device::Cpu)?,
            running_var: Var::ones(cout, DType::F32, &Device::Cpu)?,
        },
    ))
}

/// `n` identity Bottlenecks (16 -> 4 -> 16) on `[4, 16, 32, 32]`: the extra bytes of their
/// backward, and the size of one activation.
fn resnet_chain_extra(n: usize) -> Result<(usize, usize)> {
    let blocks: Vec<ResidualBlock> = (0..n as u64)
        .map(|i| {
            Ok(ResidualBlock {
                main: vec![
                    pair(16, 4, 1, 100 * i)?,
                    pair(4, 4, 3, 100 * i + 1)?,
                    pair(4, 16, 1, 100 * i + 2)?,
                ],
                shortcut: None,
                momentum: 0.1,
                eps: 1e-5,
            })
        })
        .collect::<Result<_>>()?;
    let x = rand_var(&[4, 16, 32, 32], 7)?;
    let r = rand_tensor(&[4, 16, 32, 32], 8)?;
    let loss = (residual_blocks_graph(x.as_tensor(), &blocks)? * &r)?.sum_all()?;
    let (extra, grads) = backward_extra(&loss)?;
    for b in &blocks {
        for (c, norm) in &b.main {
            for t in [&c.weight, &norm.weight, &norm.bias] {
                assert!(grads.get(t).is_some(), "a parameter lost its gradient");
            }
        }
    }
    assert!(grads.get(x.as_tensor()).is_some());
    Ok((extra, r.elem_count() * 4))
}

#[test]
fn a_resnet_chains_backward_does_not_keep_every_blocks_gradients() -> Result<()> {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (short, activation) = resnet_chain_extra(2)?;
    let (long, _) = resnet_chain_extra(8)?;
    // Each Bottleneck's pairs hand on about three activations' worth of gradients (inputs and
    // the normalisations'); six more blocks kept to the end would add ~18. Their parameter
    // gradients are ~1 KB each.
    assert!(
        long < short + 2 * activation,
        "backward of 8 blocks needs {long} bytes above the forward's, of 2 blocks {short} \
         (one activation: {activation})"
    );
    Ok(())
}

/// `n` DeiT sub-block pairs (attention, then MLP; D = 32, 2 heads) on `[8, 197, 32]`: the extra
/// bytes of their backward, and the size of one activation.
fn deit_chain_extra(n: usize) -> Result<(usize, usize)> {
    let (b, t, d) = (8, 197, 32);
    let linear = |o: usize, i: usize, seed: u64| -> Result<(Tensor, Tensor)> {
        let w = (rand_tensor(&[o, i], seed)? * (1.0 / (i as f64).sqrt()))?;
        let w = Var::from_tensor(&w)?.as_tensor().clone();
        let bias = Var::from_tensor(&(rand_tensor(&[o], seed + 1)? * 0.1)?)?;
        Ok((w, bias.as_tensor().clone()))
    };
    // Per sub-block: LayerNorm weight and bias, fc1 (weight, bias), fc2 (weight, bias), kind.
    type Owned = (
        (Tensor, Tensor),
        (Tensor, Tensor),
        (Tensor, Tensor),
        BranchKind,
    );
    let mut owned: Vec<Owned> = vec![];
    for i in 0..2 * n as u64 {
        let (width, out_in, kind) = match i % 2 {
            0 => (3 * d, d, BranchKind::Attention { heads: 2 }),
            _ => (4 * d, 4 * d, BranchKind::Mlp),
        };
        let norm = (
            Var::ones(d, DType::F32, &Device::Cpu)?.as_tensor().clone(),
            Var::zeros(d, DType::F32, &Device::Cpu)?.as_tensor().clone(),
        );
        owned.push((
            norm,
            linear(width, d, 10 * i)?,
            linear(d, out_in, 10 * i + 2)?,
            kind,
        ));
    }
    let branches: Vec<Branch> = owned
        .iter()
        .map(|(norm, fc1, fc2, kind)| Branch {
            weights: BranchWeights {
                norm_weight: &norm.0,
                norm_bias: &norm.1,
                norm_eps: 1e-6,
                in_weight: &fc1.0,
                in_bias: &fc1.1,
                out_weight: &fc2.0,
                out_bias: &fc2.1,
            },
            kind: *kind,
            scale: None,
        })
        .collect();
    let x = rand_var(&[b, t, d], 7)?;
    let r = rand_tensor(&[b, t, d], 8)?;
    let y = maxsup_ops::residual_branches_graph(x.as_tensor(), &branches)?;
    let loss = (y * &r)?.sum_all()?;
    let (extra, grads) = backward_extra(&loss)?;
    for (norm, fc1, fc2, _) in &owned {
        for t in [&norm.0, &norm.1, &fc1.0, &fc1.1, &fc2.0, &fc2.1] {
            assert!(grads.get(t).is_some(), "a parameter lost its gradient");
        }
    }
    Ok((extra, r.elem_count() * 4))
}

#[test]
fn a_deit_chains_backward_does_not_keep_every_sub_blocks_gradients() -> Result<()> {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (short, activation) = deit_chain_extra(2)?;
    let (long, _) = deit_chain_extra(8)?;
    // Twelve more sub-blocks' input gradients kept to the end would add 12 activations (and
    // LayerNorm's parameter gradients as views of its packed CPU buffer, 12 more); their
    // parameter gradients (~25 KB a sub-block) add ~0.3 MB, 1.5 activations.
    assert!(
        long < short + 6 * activation,
        "backward of 16 sub-blocks needs {long} bytes above the forward's, of 4 {short} \
         (one activation: {activation})"
    );
    Ok(())
}
