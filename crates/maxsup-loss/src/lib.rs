//! # maxsup-loss
//!
//! Max Suppression (MaxSup, arXiv 2502.15798) and every loss the paper compares it with, for
//! [candle](https://github.com/huggingface/candle): exact against PyTorch, on any device, for
//! f32, f16, bf16 (computed in f32) and f64 logits.
//!
//! | function | loss |
//! |---|---|
//! | [`cross_entropy`] | `-log softmax(z)_y` |
//! | [`maxsup`] | `CE + alpha * (z_max - mean_k z_k)` (paper Eq. 8) |
//! | [`maxsup_penalty`] | `alpha * (z_max - mean_k z_k)` alone, label-free (for Mixup/CutMix) |
//! | [`label_smoothing`] | CE against `(1 - alpha) onehot + alpha / K` |
//! | [`ls_decomposition`] | LS term split into regularization + error amplification (Eq. 5) |
//! | [`soft_target_cross_entropy`] | CE against soft targets |
//! | [`logit_penalty`] | `CE + beta * sum_k z_k^2 / 2` |
//! | [`focal`] | `-(1 - p_t)^gamma log p_t`, `p_t` detached |
//! | [`OnlineLabelSmoothing`] | Online LS (Zhang et al.), stateful |
//! | [`ZipfLabelSmoothing`] | Zipf's LS (Liang et al.), from dense logits |
//! | [`Criterion`] | any of the above by name (`ce`, `ls`, `maxsup`, `ols`, `zipf`, `lp`, `focal`) |
//!
//! Every loss returns the batch mean as a scalar tensor. Targets are class indices (`u32` or
//! `i64`, shape `[B]`); logits are `[B, K]`. Bad input (wrong shapes, labels out of range, an empty
//! batch, fewer than two classes, non-finite logits) is an error that says what is wrong.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use maxsup_loss::{maxsup, AlphaSchedule};
//!
//! let device = Device::Cpu;
//! let logits = Var::new(&[[3.0f32, 1.0, 0.0], [0.5, 2.5, 0.0]], &device)?;
//! let targets = Tensor::new(&[0u32, 0], &device)?; // the second sample is misclassified
//! let alpha = AlphaSchedule::paper(100).at(0); // 0.1 at the first epoch
//! let loss = maxsup(logits.as_tensor(), &targets, alpha)?;
//! let grads = loss.backward()?;
//! let grad = grads.get(logits.as_tensor()).unwrap();
//! assert_eq!(grad.dims(), &[2, 3]);
//! # Ok::<(), candle_core::Error>(())
//! ```

mod criterion;
mod cross_entropy;
mod focal;
mod fused;
mod label_smoothing;
mod log_softmax;
mod logit_penalty;
mod maxsup;
mod online_ls;
mod schedule;
mod softmax_family;
mod validate;
mod zipf_ls;

pub use criterion::{Criterion, CriterionConfig, LossInput, LossKind};
pub use cross_entropy::{cross_entropy, soft_target_cross_entropy};
pub use focal::focal;
pub use label_smoothing::{label_smoothing, ls_decomposition, LsDecomposition};
pub use logit_penalty::logit_penalty;
pub use maxsup::{maxsup, maxsup_penalty};
pub use online_ls::OnlineLabelSmoothing;
pub use schedule::AlphaSchedule;
pub use validate::{check_finite_loss, defer_finite_checks, DeferredFiniteChecks};
pub use zipf_ls::ZipfLabelSmoothing;
