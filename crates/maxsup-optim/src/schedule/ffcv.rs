//! The FFCV ImageNet example's schedules (`train_imagenet.py`), interpolated per iteration as FFCV does.

use super::LrSchedule;

/// Shape of the per-epoch FFCV schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum FfcvShape {
    /// `lr_schedule_type: cyclic`: `np.interp(epoch, [0, lr_peak_epoch, epochs], [1e-4 * lr, lr, 0])`.
    Cyclic { lr_peak_epoch: f64 },
    /// `lr_schedule_type: step`: `step_ratio^(epoch // step_length) * lr`, and 0 from `epochs` on.
    Step { step_ratio: f64, step_length: usize },
}

/// FFCV's LR: the per-epoch value `f(e)` of [`FfcvShape`], linearly interpolated inside epoch `e` from `f(e)`
/// at iteration 0 towards `f(e + 1)` (FFCV: `np.interp(arange(iters), [0, iters], [f(e), f(e+1)])`). FFCV's
/// ResNet-50 config: `lr = 1.7` (batch 1024), `epochs = 88`, cyclic with `lr_peak_epoch = 2`.
#[derive(Clone, Debug, PartialEq)]
pub struct FfcvLr {
    pub base_lr: f64,
    pub epochs: usize,
    pub shape: FfcvShape,
}

impl FfcvLr {
    /// FFCV's per-epoch value `f(epoch)` (what `get_lr(epoch)` returns).
    pub fn epoch_lr(&self, epoch: usize) -> f64 {
        match &self.shape {
            FfcvShape::Cyclic { lr_peak_epoch } => np_interp(
                epoch as f64,
                &[0.0, *lr_peak_epoch, self.epochs as f64],
                &[1e-4 * self.base_lr, self.base_lr, 0.0],
            ),
            FfcvShape::Step {
                step_ratio,
                step_length,
            } => {
                if epoch >= self.epochs {
                    return 0.0;
                }
                let steps = epoch.checked_div(*step_length).unwrap_or(0);
                step_ratio.powf(steps as f64) * self.base_lr
            }
        }
    }
}

impl LrSchedule for FfcvLr {
    fn lr(&self, epoch: usize, iter: usize, iters_per_epoch: usize) -> f64 {
        let start = self.epoch_lr(epoch);
        if iters_per_epoch == 0 {
            return start;
        }
        let end = self.epoch_lr(epoch + 1);
        np_interp(iter as f64, &[0.0, iters_per_epoch as f64], &[start, end])
    }
}

/// `numpy.interp` for increasing `xp`: clamps to the end values outside `[xp[0], xp[last]]` and evaluates
/// `slope * (x - xp[j]) + fp[j]` on segment `j` with `xp[j] <= x < xp[j + 1]`, as numpy does (so equal
/// breakpoints, like `lr_peak_epoch = 0`, behave as in FFCV).
fn np_interp(x: f64, xp: &[f64], fp: &[f64]) -> f64 {
    let last = xp.len() - 1;
    if x < xp[0] {
        return fp[0];
    }
    if x >= xp[last] {
        return fp[last];
    }
    let j = (0..last).rev().find(|&j| xp[j] <= x).unwrap_or(0);
    let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
    slope * (x - xp[j]) + fp[j]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn np_interp_matches_numpy_edge_cases() {
        // np.interp(2.0, [0, 2, 10], [1, 5, 0]) == 5.0 (breakpoint), clamping on both sides.
        assert_eq!(np_interp(2.0, &[0.0, 2.0, 10.0], &[1.0, 5.0, 0.0]), 5.0);
        assert_eq!(np_interp(-1.0, &[0.0, 2.0, 10.0], &[1.0, 5.0, 0.0]), 1.0);
        assert_eq!(np_interp(11.0, &[0.0, 2.0, 10.0], &[1.0, 5.0, 0.0]), 0.0);
        assert_eq!(np_interp(6.0, &[0.0, 2.0, 10.0], &[1.0, 5.0, 0.0]), 2.5);
    }
}
