//! Differentiable layers shared by the models. All heavy lifting goes through `maxsup-ops`,
//! whose functions keep candle's autograd intact (candle's fused LayerNorm, softmax and
//! max-pool have no usable backward).

pub(crate) mod batch_norm;
pub(crate) mod conv;
mod drop_path;
mod layer_norm;
mod linear;

pub use batch_norm::BatchNorm2d;
pub use conv::Conv2d;
pub use drop_path::{drop_path, drop_path_scale, linear_drop_path_rates, seed_stochastic_layers};
pub use layer_norm::LayerNorm;
pub use linear::Linear;

/// Parameter `p` in the dtype of the activation `x`. Mixed precision keeps f32 master weights and
/// runs bf16 activations: each layer casts its weights inside the graph, so their gradients come
/// back through the cast as f32. A no-op when the dtypes agree.
pub(crate) fn like(
    p: &candle_core::Tensor,
    x: &candle_core::Tensor,
) -> candle_core::Result<candle_core::Tensor> {
    if p.dtype() == x.dtype() {
        Ok(p.clone())
    } else {
        p.to_dtype(x.dtype())
    }
}
