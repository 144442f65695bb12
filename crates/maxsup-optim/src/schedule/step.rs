//! Piecewise-constant decays: `torch.optim.lr_scheduler.StepLR` and `MultiStepLR`, stepped once per epoch.

use super::LrSchedule;

/// `StepLR(step_size, gamma)` stepped per epoch: `base_lr * gamma^(epoch / step_size)`. Used by the
/// torchvision ResNet recipe (x0.1 every 30 epochs) and FFCV's step option. The power is applied as repeated
/// multiplication, as PyTorch's chained update does, so values match it to the last bit in practice.
#[derive(Clone, Debug, PartialEq)]
pub struct StepLr {
    pub base_lr: f64,
    /// Epochs between decays; 0 means "never decay".
    pub step_size: usize,
    pub gamma: f64,
}

impl LrSchedule for StepLr {
    fn lr(&self, epoch: usize, _iter: usize, _iters_per_epoch: usize) -> f64 {
        let decays = epoch.checked_div(self.step_size).unwrap_or(0);
        repeated_decay(self.base_lr, self.gamma, decays)
    }
}

/// `MultiStepLR(milestones, gamma)` stepped per epoch: multiply by `gamma` at every milestone epoch reached
/// (a repeated milestone counts twice, as in PyTorch). CIFAR-100 recipe: `milestones = [60, 120, 160]`,
/// `gamma = 0.2`.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiStepLr {
    pub base_lr: f64,
    pub milestones: Vec<usize>,
    pub gamma: f64,
}

impl LrSchedule for MultiStepLr {
    fn lr(&self, epoch: usize, _iter: usize, _iters_per_epoch: usize) -> f64 {
        let decays = self.milestones.iter().filter(|&&m| m <= epoch).count();
        repeated_decay(self.base_lr, self.gamma, decays)
    }
}

fn repeated_decay(base_lr: f64, gamma: f64, decays: usize) -> f64 {
    (0..decays).fold(base_lr, |lr, _| lr * gamma)
}
