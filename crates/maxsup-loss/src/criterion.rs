//! One entry point for the training loop: any of the losses by name, with its schedule and state.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use candle_core::{bail, Device, Result, Tensor};

use crate::{
    cross_entropy, focal, label_smoothing, logit_penalty, maxsup, maxsup_penalty,
    soft_target_cross_entropy, AlphaSchedule, OnlineLabelSmoothing, ZipfLabelSmoothing,
};

/// The losses the paper compares, by their command-line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum LossKind {
    /// `ce`: plain cross entropy (the baseline).
    Ce,
    /// `ls`: label smoothing with the alpha schedule.
    Ls,
    /// `maxsup`: cross entropy + MaxSup with the alpha schedule.
    Maxsup,
    /// `ols`: Online Label Smoothing.
    Ols,
    /// `zipf`: Zipf's Label Smoothing (needs dense logits).
    Zipf,
    /// `lp`: logit penalty.
    Lp,
    /// `focal`: focal loss.
    Focal,
}

impl LossKind {
    /// Every kind, in the order the paper's tables list them.
    pub const ALL: [LossKind; 7] = [
        Self::Ce,
        Self::Ls,
        Self::Ols,
        Self::Zipf,
        Self::Maxsup,
        Self::Lp,
        Self::Focal,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ce => "ce",
            Self::Ls => "ls",
            Self::Maxsup => "maxsup",
            Self::Ols => "ols",
            Self::Zipf => "zipf",
            Self::Lp => "lp",
            Self::Focal => "focal",
        }
    }

    /// Whether alpha (and so the schedule) is used by this loss.
    pub fn uses_alpha(self) -> bool {
        matches!(self, Self::Ls | Self::Maxsup)
    }
}

impl fmt::Display for LossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LossKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                format!("unknown loss `{s}` (expected one of: {})", names.join(", "))
            })
    }
}

/// Hyper-parameters of every loss; only those of the chosen kind are used.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CriterionConfig {
    pub kind: LossKind,
    pub num_classes: usize,
    /// Alpha of LS and MaxSup; the paper's default is linear 0.1 -> 0.2.
    pub alpha: AlphaSchedule,
    /// Logit-penalty beta (official 2e-3).
    pub beta: f64,
    /// Focal gamma (official 2.0).
    pub gamma: f64,
    /// Zipf-LS weight (official 0.1 on ImageNet) and power (1.0).
    pub zipf_weight: f64,
    pub zipf_power: f64,
}

impl CriterionConfig {
    /// The official defaults for `kind` over a run of `epochs` epochs.
    pub fn new(kind: LossKind, num_classes: usize, epochs: usize) -> Self {
        Self {
            kind,
            num_classes,
            alpha: AlphaSchedule::paper(epochs),
            beta: 2e-3,
            gamma: 2.0,
            zipf_weight: 0.1,
            zipf_power: 1.0,
        }
    }
}

/// What a criterion may need from a training step.
#[derive(Debug, Clone, Copy)]
pub struct LossInput<'a> {
    /// `[B, K]` raw logits.
    pub logits: &'a Tensor,
    /// `[B]` class indices.
    pub targets: &'a Tensor,
    /// `[B, K]` Mixup/CutMix targets; when set, they replace `targets` in the data term.
    pub soft_targets: Option<&'a Tensor>,
    /// `[B, K, H, W]` logits at every location of the last feature map (Zipf-LS only).
    pub dense_logits: Option<&'a Tensor>,
}

impl<'a> LossInput<'a> {
    /// Hard labels only.
    pub fn new(logits: &'a Tensor, targets: &'a Tensor) -> Self {
        Self {
            logits,
            targets,
            soft_targets: None,
            dense_logits: None,
        }
    }
}

/// A loss chosen by name, with its alpha schedule and (for OLS) its state.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use maxsup_loss::{Criterion, CriterionConfig, LossInput, LossKind};
/// let mut criterion = Criterion::new(CriterionConfig::new(LossKind::Maxsup, 3, 10), &Device::Cpu)?;
/// criterion.set_epoch(9); // last epoch: alpha = 0.2
/// let logits = Tensor::new(&[[2.0f32, 0.5, -1.0]], &Device::Cpu)?;
/// let targets = Tensor::new(&[0u32], &Device::Cpu)?;
/// let loss = criterion.loss(&LossInput::new(&logits, &targets), true)?;
/// assert!((criterion.alpha() - 0.2).abs() < 1e-12);
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Criterion {
    config: CriterionConfig,
    epoch: usize,
    online: Option<OnlineLabelSmoothing>,
}

impl Criterion {
    /// Builds the criterion; OLS allocates its `K x K` state on `device`.
    pub fn new(config: CriterionConfig, device: &Device) -> Result<Self> {
        let online = match config.kind {
            LossKind::Ols => Some(OnlineLabelSmoothing::new(config.num_classes, device)?),
            _ => None,
        };
        Ok(Self {
            config,
            epoch: 0,
            online,
        })
    }

    pub fn config(&self) -> &CriterionConfig {
        &self.config
    }

    pub fn kind(&self) -> LossKind {
        self.config.kind
    }

    /// Sets the 0-based epoch the alpha schedule is evaluated at.
    pub fn set_epoch(&mut self, epoch: usize) {
        self.epoch = epoch;
    }

    /// Alpha at the current epoch (also meaningful for losses that ignore it).
    pub fn alpha(&self) -> f64 {
        self.config.alpha.at(self.epoch)
    }

    /// Whether [`LossInput::dense_logits`] must be provided.
    pub fn needs_dense_logits(&self) -> bool {
        self.config.kind == LossKind::Zipf
    }

    /// The batch loss. `train` lets OLS record this batch's statistics.
    pub fn loss(&mut self, input: &LossInput<'_>, train: bool) -> Result<Tensor> {
        let alpha = self.alpha();
        let c = self.config;
        if let Some(soft) = input.soft_targets {
            return self.soft_target_loss(input.logits, soft, alpha);
        }
        let (z, y) = (input.logits, input.targets);
        match c.kind {
            LossKind::Ce => cross_entropy(z, y),
            LossKind::Ls => label_smoothing(z, y, alpha),
            LossKind::Maxsup => maxsup(z, y, alpha),
            LossKind::Lp => logit_penalty(z, y, c.beta),
            LossKind::Focal => focal(z, y, c.gamma),
            LossKind::Ols => match self.online.as_mut() {
                Some(ols) => ols.forward(z, y, train),
                None => bail!("criterion ols: state missing"),
            },
            LossKind::Zipf => {
                let Some(dense) = input.dense_logits else {
                    bail!("criterion zipf: needs the dense logits [B, K, H, W] of the last feature map");
                };
                let zipf = ZipfLabelSmoothing {
                    weight: c.zipf_weight,
                    power: c.zipf_power,
                    mask_incorrect: false,
                };
                zipf.forward(z, dense, y)
            }
        }
    }

    /// Mixup/CutMix: the data term uses the soft targets; label-independent regularizers are
    /// added unchanged (as the official DeiT code adds MaxSup), LS smooths the mixed targets.
    fn soft_target_loss(&self, z: &Tensor, soft: &Tensor, alpha: f64) -> Result<Tensor> {
        let c = self.config;
        match c.kind {
            LossKind::Ce => soft_target_cross_entropy(z, soft),
            LossKind::Maxsup => soft_target_cross_entropy(z, soft)? + maxsup_penalty(z, alpha)?,
            LossKind::Ls => {
                let smoothed = soft.affine(1.0 - alpha, alpha / c.num_classes as f64)?;
                soft_target_cross_entropy(z, &smoothed)
            }
            LossKind::Lp => {
                let penalty = (z
                    .to_dtype(candle_core::DType::F32)?
                    .sqr()?
                    .sum(1)?
                    .mean_all()?
                    * (c.beta / 2.0))?;
                soft_target_cross_entropy(z, soft)? + penalty
            }
            LossKind::Ols | LossKind::Zipf | LossKind::Focal => bail!(
                "criterion {}: not defined for Mixup/CutMix soft targets; turn Mixup/CutMix off",
                c.kind
            ),
        }
    }

    /// End-of-epoch hook: rebuilds the OLS supervision matrix; no-op for the other losses.
    pub fn end_epoch(&mut self) -> Result<()> {
        match self.online.as_mut() {
            Some(ols) => ols.end_epoch(),
            None => Ok(()),
        }
    }

    /// State to store in a checkpoint (empty for stateless losses).
    pub fn state(&self) -> HashMap<String, Tensor> {
        self.online.as_ref().map(|o| o.state()).unwrap_or_default()
    }

    /// Restores [`state`](Self::state).
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        match self.online.as_mut() {
            Some(ols) => ols.load_state(state),
            None => Ok(()),
        }
    }
}
