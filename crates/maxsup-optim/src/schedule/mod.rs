//! Learning-rate schedules as pure functions of `(epoch, iteration within epoch, iterations per epoch)`.
//!
//! Pure functions (no internal counter) make resuming trivial: the engine recomputes the LR from the position
//! it resumes at, and the schedule cannot drift from the checkpoint. Each type documents which PyTorch / timm /
//! FFCV object it reproduces and whether it changes per epoch or per iteration.

mod cosine_annealing;
mod ffcv;
mod step;
mod timm_cosine;

pub use cosine_annealing::CosineAnnealingLr;
pub use ffcv::{FfcvLr, FfcvShape};
pub use step::{MultiStepLr, StepLr};
pub use timm_cosine::TimmCosineLr;

/// A learning-rate schedule.
pub trait LrSchedule {
    /// LR to use for iteration `iter` (0-based) of epoch `epoch` (0-based) when an epoch has
    /// `iters_per_epoch` iterations. Per-epoch schedules ignore `iter` and `iters_per_epoch`.
    fn lr(&self, epoch: usize, iter: usize, iters_per_epoch: usize) -> f64;
}

/// Whether a schedule moves once per epoch or continuously per iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    /// The LR is constant within an epoch (PyTorch `scheduler.step()` per epoch, timm `t_in_epochs=True`).
    PerEpoch,
    /// The LR changes every iteration (PyTorch `scheduler.step()` per batch with periods given in iterations,
    /// timm `t_in_epochs=False` with `step_update(num_updates)`).
    PerIteration,
}

impl Granularity {
    /// Schedule time in (fractional) epochs: `epoch` per epoch, `epoch + iter / iters_per_epoch` per
    /// iteration (an `iters_per_epoch` of 0 is treated as per-epoch rather than dividing by zero).
    pub fn time(self, epoch: usize, iter: usize, iters_per_epoch: usize) -> f64 {
        match self {
            Granularity::PerIteration if iters_per_epoch > 0 => {
                (epoch * iters_per_epoch + iter) as f64 / iters_per_epoch as f64
            }
            _ => epoch as f64,
        }
    }
}

/// The linear scaling rule: `base_lr * global_batch / reference_batch`. DeiT uses `reference_batch = 512`
/// (`lr = 5e-4 * 1024 / 512 = 1e-3` for its batch of 1024); a `reference_batch` of 0 returns `base_lr`.
pub fn linear_scaled_lr(base_lr: f64, global_batch: usize, reference_batch: usize) -> f64 {
    if reference_batch == 0 {
        return base_lr;
    }
    base_lr * global_batch as f64 / reference_batch as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deit_linear_scaling() {
        assert_eq!(linear_scaled_lr(5e-4, 1024, 512), 1e-3);
        assert_eq!(linear_scaled_lr(5e-4, 256, 512), 2.5e-4);
    }

    #[test]
    fn time_per_iteration_is_fractional_epochs() {
        assert_eq!(Granularity::PerIteration.time(3, 5, 10), 3.5);
        assert_eq!(Granularity::PerEpoch.time(3, 5, 10), 3.0);
        assert_eq!(Granularity::PerIteration.time(3, 5, 0), 3.0);
    }
}
