//! timm `CosineLRScheduler` with linear warm-up (one cycle), the DeiT schedule.

use std::f64::consts::PI;

use super::{Granularity, LrSchedule};

/// timm `CosineLRScheduler(t_initial, lr_min, warmup_t, warmup_lr_init, warmup_prefix, cycle_limit=1)`, no
/// noise, `k_decay = 1`. With `t` in epochs (fractional when per-iteration, matching timm's `t_in_epochs=False`
/// with every period given in updates):
/// - `t < warmup_t`: `warmup_lr_init + t * (base_lr - warmup_lr_init) / warmup_t`;
/// - otherwise, with `t' = t - warmup_t` if `warmup_prefix` else `t' = t` (timm's default: the cosine is
///   computed at `t` directly over `t_initial`, so warm-up overlaps its start):
///   `lr_min + (base_lr - lr_min) * (1 + cos(pi * t' / t_initial)) / 2` while `t' < t_initial`, then `lr_min`.
///
/// DeiT (`--sched cosine --warmup-epochs 5 --warmup-lr 1e-6 --min-lr 1e-5 --epochs 300`) is
/// `t_initial = 300, warmup_t = 5, warmup_lr_init = 1e-6, lr_min = 1e-5`, per epoch. DeiT's loop calls
/// `lr_scheduler.step(epoch)` *after* training epoch `epoch`, so the LR in effect during epoch `e` is this
/// schedule at `max(e, 1) - 1`; [`TimmCosineLr::deit_loop_lr`] gives that value.
#[derive(Clone, Debug, PartialEq)]
pub struct TimmCosineLr {
    pub base_lr: f64,
    /// Cosine length in epochs (timm `t_initial`, DeiT `--epochs`); a non-positive value yields `lr_min` after
    /// warm-up.
    pub t_initial: f64,
    pub lr_min: f64,
    /// Warm-up length in epochs (0 disables warm-up).
    pub warmup_t: f64,
    pub warmup_lr_init: f64,
    /// timm `warmup_prefix`: start the cosine after warm-up instead of at 0.
    pub warmup_prefix: bool,
    pub granularity: Granularity,
}

impl TimmCosineLr {
    /// The schedule at time `t` (epochs).
    pub fn at(&self, t: f64) -> f64 {
        if t < self.warmup_t {
            return self.warmup_lr_init
                + t * ((self.base_lr - self.warmup_lr_init) / self.warmup_t);
        }
        let t = if self.warmup_prefix {
            t - self.warmup_t
        } else {
            t
        };
        if self.t_initial <= 0.0 || t >= self.t_initial {
            return self.lr_min;
        }
        self.lr_min + 0.5 * (self.base_lr - self.lr_min) * (1.0 + (PI * t / self.t_initial).cos())
    }

    /// LR in effect during epoch `epoch` of DeiT's `main.py` loop (`lr_scheduler.step(epoch)` at the end of
    /// each epoch, initial LR `warmup_lr_init`): the per-epoch schedule one epoch late.
    pub fn deit_loop_lr(&self, epoch: usize) -> f64 {
        self.at(epoch.saturating_sub(1) as f64)
    }
}

impl LrSchedule for TimmCosineLr {
    fn lr(&self, epoch: usize, iter: usize, iters_per_epoch: usize) -> f64 {
        self.at(self.granularity.time(epoch, iter, iters_per_epoch))
    }
}
