//! The one interface every model implements, so training, Grad-CAM, Zipf-LS and the feature
//! metrics can be written once for ResNets and DeiTs.

use candle_core::{Result, Tensor, Var};

use crate::info::ModelInfo;
use crate::params::ParamStore;

/// An image classifier split into stages the analyses need.
///
/// Pipeline: `x --forward_stage--> activation --pool--> features --forward_head--> logits`.
/// `train` selects training behaviour (BatchNorm batch statistics and running-stat updates,
/// drop path); with `train = false` the forward pass is deterministic.
///
/// Object safe, `Send + Sync`: models are used as `Box<dyn ImageClassifier>` / `Arc<dyn ...>`.
pub trait ImageClassifier: Send + Sync {
    /// The registry name this model was built from (e.g. `resnet50`).
    fn name(&self) -> &str;

    /// What the model declares about itself: family, classifier, no-weight-decay set, whether
    /// its last stage is spatial, and its evaluation input.
    fn info(&self) -> &ModelInfo;

    /// Images [B, 3, H, W] to logits [B, K].
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let act = self.forward_stage(x, train)?;
        self.forward_from_stage(&act, train)
    }

    /// Images to penultimate features [B, D]: ResNet global-average-pooled last feature map,
    /// DeiT CLS token after the final LayerNorm.
    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Tensor>;

    /// Features [B, D] to logits [B, K] (the classifier `fc` / `head`).
    fn forward_head(&self, features: &Tensor) -> Result<Tensor>;

    /// Images to the last-stage activation: ResNet the last conv feature map [B, C, h, w]
    /// before pooling (Grad-CAM's target); DeiT the tokens [B, 1+N, D] after the last block,
    /// before the final norm.
    fn forward_stage(&self, x: &Tensor, train: bool) -> Result<Tensor>;

    /// The rest of the network after [`ImageClassifier::forward_stage`]: activation to logits.
    fn forward_from_stage(&self, activation: &Tensor, train: bool) -> Result<Tensor>;

    /// Grad-CAM's forward, in eval mode: its target activation as a leaf [`Var`] and the logits
    /// computed from it, so that the backward of a class score reaches the target. By default
    /// the target is [`ImageClassifier::forward_stage`]'s activation (ResNets: the last feature
    /// map). DeiTs target the last block's first LayerNorm output, as the official
    /// visualisation does (`model.blocks[-1].norm1`): their tokens after the last block reach
    /// the logits through the CLS token alone, so every patch token's gradient there is zero.
    fn forward_cam(&self, x: &Tensor) -> Result<(Var, Tensor)> {
        let target = Var::from_tensor(&self.forward_stage(x, false)?.detach())?;
        let logits = self.forward_from_stage(target.as_tensor(), false)?;
        Ok((target, logits))
    }

    /// The classifier applied at every spatial location of a feature map [B, C, h, w] from
    /// `forward_stage`, giving [B, K, h, w] (Zipf's label smoothing needs it). Averaging it over
    /// (h, w) equals the logits. DeiT returns an error: it has no spatial feature map.
    fn dense_logits(&self, feature_map: &Tensor) -> Result<Tensor>;

    /// K, the number of logits.
    fn num_classes(&self) -> usize;

    /// D, the width of `forward_features`' output.
    fn num_features(&self) -> usize;

    /// All named tensors (trainable parameters and buffers) under PyTorch state-dict names.
    fn params(&self) -> &ParamStore;
}
