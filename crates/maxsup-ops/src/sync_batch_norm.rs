//! SyncBatchNorm: train-mode BatchNorm normalising with the statistics of the whole
//! data-parallel batch instead of each process's part of it (torch's `nn.SyncBatchNorm`, which
//! the official FFCV ResNet runs use).
//!
//! The trainer installs the replicas' sum for the span of a training step
//! ([`sync_batch_norm`], a guard on the current thread: forward and backward both run on it);
//! [`crate::batch_norm2d`] then
//! - forward: gathers every replica's `[mean | var]` (each rank fills its own row of a
//!   `[world, 2C]` buffer, summed over the replicas) and combines them in f64 (the mean of the
//!   means; the mean of `var_r + (mean_r - mean)^2`, all terms non-negative, so no cancellation),
//!   which also feed the running statistics (over `world` times the local count);
//! - backward: sums the per-channel `[sum(g * xhat) | sum(g)]` over the replicas for the input
//!   gradient (as torch all-reduces `sum_dy` and `sum_dy_xmu`); the weight and bias gradients
//!   stay local, since data parallelism averages them afterwards like every other gradient.
//!
//! Every replica must hold the same number of samples (data parallelism splits a global batch
//! into equal parts), and call the same BatchNorm layers in the same order.

use candle_core::{DType, Result, Tensor};
use std::cell::RefCell;
use std::rc::Rc;

/// The replicas of a data-parallel run, as BatchNorm needs them.
pub trait ReplicaSum {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// The element-wise sum of the f32 tensor `t` over the replicas, identical on each.
    fn sum(&self, t: &Tensor) -> Result<Tensor>;
}

thread_local! {
    static ACTIVE: RefCell<Option<Rc<dyn ReplicaSum>>> = const { RefCell::new(None) };
}

/// While it lives, train-mode [`crate::batch_norm2d`] on this thread is synchronised over
/// `replicas`; dropping it restores what was there before.
#[must_use = "BatchNorm is synchronised only while the guard lives"]
pub struct SyncBatchNormGuard {
    previous: Option<Rc<dyn ReplicaSum>>,
}

/// Synchronises train-mode BatchNorm over `replicas` on this thread until the guard drops.
pub fn sync_batch_norm(replicas: Rc<dyn ReplicaSum>) -> SyncBatchNormGuard {
    let previous = ACTIVE.with(|a| a.borrow_mut().replace(replicas));
    SyncBatchNormGuard { previous }
}

impl Drop for SyncBatchNormGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        ACTIVE.with(|a| *a.borrow_mut() = previous);
    }
}

/// The replicas BatchNorm is synchronised over on this thread, if any.
pub(crate) fn active() -> Option<Rc<dyn ReplicaSum>> {
    ACTIVE.with(|a| a.borrow().clone())
}

/// The `[mean | biased var]` (f32, 2C) of the whole batch from this replica's `local` one.
pub(crate) fn global_stats(replicas: &dyn ReplicaSum, local: &Tensor) -> Result<Tensor> {
    let (rank, world) = (replicas.rank(), replicas.world_size());
    let width = local.elem_count();
    let c = width / 2;
    let local = local.flatten_all()?.to_dtype(DType::F32)?;
    let mut parts = Vec::with_capacity(3);
    if rank > 0 {
        parts.push(Tensor::zeros(rank * width, DType::F32, local.device())?);
    }
    parts.push(local.clone());
    if rank + 1 < world {
        parts.push(Tensor::zeros(
            (world - rank - 1) * width,
            DType::F32,
            local.device(),
        )?);
    }
    let rows = Tensor::cat(&parts, 0)?.reshape((world, width))?;
    let rows = replicas.sum(&rows)?.to_dtype(DType::F64)?;
    let means = rows.narrow(1, 0, c)?;
    let vars = rows.narrow(1, c, c)?;
    let mean = means.mean_keepdim(0)?;
    let var = (vars + means.broadcast_sub(&mean)?.sqr()?)?.mean_keepdim(0)?;
    Tensor::cat(&[mean.flatten_all()?, var.flatten_all()?], 0)?.to_dtype(DType::F32)
}

/// `local` summed over the replicas and divided by their number: per-channel sums of the whole
/// batch scaled to one replica's count, which is what the input-gradient kernel (written for
/// the local count) needs to produce the whole batch's gradient.
pub(crate) fn mean_over_replicas(replicas: &dyn ReplicaSum, local: &Tensor) -> Result<Tensor> {
    replicas
        .sum(local)?
        .affine(1.0 / replicas.world_size() as f64, 0.0)
}
