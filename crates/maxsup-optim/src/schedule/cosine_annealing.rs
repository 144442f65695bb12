//! `torch.optim.lr_scheduler.CosineAnnealingLR` (no restarts), per epoch or per iteration.

use std::f64::consts::PI;

use super::{Granularity, LrSchedule};

/// `eta_min + (base_lr - eta_min) * (1 + cos(pi * t / t_max)) / 2` with `t` in epochs (fractional when
/// per-iteration; PyTorch's `T_max` in iterations is `t_max * iters_per_epoch`). Used by the paper's ResNet
/// recipe (cosine annealing) and the CIFAR-10-C recipe (`T_max = epochs`). Like PyTorch, `t > t_max` keeps
/// following the cosine (the LR rises again); set `t_max` to the run length.
#[derive(Clone, Debug, PartialEq)]
pub struct CosineAnnealingLr {
    pub base_lr: f64,
    /// Half-period in epochs; a non-positive value yields `base_lr` throughout.
    pub t_max: f64,
    pub eta_min: f64,
    pub granularity: Granularity,
}

impl LrSchedule for CosineAnnealingLr {
    fn lr(&self, epoch: usize, iter: usize, iters_per_epoch: usize) -> f64 {
        if self.t_max <= 0.0 {
            return self.base_lr;
        }
        let t = self.granularity.time(epoch, iter, iters_per_epoch);
        self.eta_min + (self.base_lr - self.eta_min) * (1.0 + (PI * t / self.t_max).cos()) / 2.0
    }
}
