//! The alpha schedule of MaxSup (and of LS in the paper's comparisons).

/// How the regularization weight alpha evolves over epochs.
///
/// The paper raises alpha linearly from 0.1 to 0.2 over training (App. F). The official
/// torchvision/DeiT code divides by `epochs - 1` with a 0-based epoch, so the last epoch uses
/// exactly the end value; that is what [`AlphaSchedule::linear`] does. (The FFCV variant divides
/// by `epochs` and stops at 0.1989 for 90 epochs; we follow the paper's stated end point.)
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum AlphaSchedule {
    /// The same alpha at every epoch (the paper's ablations use 0.1).
    Constant(f64),
    /// `begin + (end - begin) * epoch / (epochs - 1)` for 0-based `epoch`, clamped to the range.
    Linear { begin: f64, end: f64, epochs: usize },
}

impl AlphaSchedule {
    /// A constant alpha.
    pub fn constant(alpha: f64) -> Self {
        Self::Constant(alpha)
    }

    /// Linear from `begin` at epoch 0 to exactly `end` at epoch `epochs - 1`.
    ///
    /// ```
    /// use maxsup_loss::AlphaSchedule;
    /// let s = AlphaSchedule::linear(0.1, 0.2, 90);
    /// assert_eq!(s.at(0), 0.1);
    /// assert!((s.at(89) - 0.2).abs() < 1e-12);
    /// ```
    pub fn linear(begin: f64, end: f64, epochs: usize) -> Self {
        Self::Linear { begin, end, epochs }
    }

    /// The paper's schedule, 0.1 -> 0.2 over `epochs`.
    pub fn paper(epochs: usize) -> Self {
        Self::linear(0.1, 0.2, epochs)
    }

    /// Alpha for the 0-based `epoch`. Epochs past the end keep the end value; a one-epoch run
    /// uses `begin`.
    pub fn at(&self, epoch: usize) -> f64 {
        match *self {
            Self::Constant(alpha) => alpha,
            Self::Linear { begin, end, epochs } => {
                if epochs <= 1 {
                    return begin;
                }
                let last = (epochs - 1) as f64;
                let t = (epoch as f64).min(last);
                begin + (end - begin) * t / last
            }
        }
    }
}
