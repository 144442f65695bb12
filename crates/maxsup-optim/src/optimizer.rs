//! The interface the training engine drives, shared by [`crate::Sgd`] and [`crate::AdamW`].

use candle_core::{backprop::GradStore, Result, Var};

use crate::state::OptimizerState;

/// A first-order optimizer over named parameter groups with one learning rate set by the schedule.
pub trait Optimizer {
    /// Applies one update from `grads`. Parameters without an entry in `grads` are skipped and their state is
    /// left untouched (PyTorch's `p.grad is None`).
    fn step(&mut self, grads: &GradStore) -> Result<()>;
    /// The learning rate the next [`Optimizer::step`] uses.
    fn lr(&self) -> f64;
    /// Sets the learning rate for all groups (called by the engine from an [`crate::LrSchedule`]).
    fn set_lr(&mut self, lr: f64);
    /// All optimized parameters, in group order (e.g. for [`crate::clip_grad_norm`]).
    fn vars(&self) -> Vec<Var>;
    /// Snapshot of the internal state (deep copies), for checkpoints.
    fn export_state(&self) -> Result<OptimizerState>;
    /// Restores a snapshot taken by [`Optimizer::export_state`] on an optimizer built over the same parameter
    /// names; afterwards steps continue exactly as if training had not stopped.
    fn import_state(&mut self, state: &OptimizerState) -> Result<()>;
}
