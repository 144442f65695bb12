//! Grad-CAM (Selvaraju et al.): class-discriminative heat maps from a late activation.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor, D};
use maxsup_models::ImageClassifier;

/// Grad-CAM maps of a batch.
#[derive(Debug, Clone)]
pub struct GradCam {
    /// One `[h, w]` map per image, row-major, `>= 0`.
    pub maps: Vec<Vec<f32>>,
    pub height: usize,
    pub width: usize,
    /// The class each map explains.
    pub classes: Vec<u32>,
}

/// `ReLU(sum_k alpha_k^c A^k)` with `alpha_k^c` the spatial mean of `d y^c / d A^k` (`y^c` the
/// pre-softmax score), for the top class of each image or the given `classes`.
///
/// The activation `A` is the model's Grad-CAM target ([`ImageClassifier::forward_cam`]): for
/// ResNets the last block's feature map `[B, C, h, w]`; for DeiTs the last block's first
/// LayerNorm output (the official visualisation's `model.blocks[-1].norm1`) with the CLS token
/// dropped and the patch tokens laid out on their grid (its reshape transform).
pub fn grad_cam(
    model: &dyn ImageClassifier,
    images: &Tensor,
    classes: Option<&[u32]>,
) -> Result<GradCam> {
    let (activation, logits) = model.forward_cam(images)?;
    let (b, k) = logits.dims2()?;
    let classes: Vec<u32> = match classes {
        Some(c) if c.len() == b => c.to_vec(),
        Some(c) => bail!("grad_cam: {} classes given for {b} images", c.len()),
        None => logits.argmax(D::Minus1)?.to_vec1()?,
    };
    if let Some(&bad) = classes.iter().find(|&&c| c as usize >= k) {
        bail!("grad_cam: class {bad} out of range for {k} classes");
    }
    let mut onehot = vec![0f32; b * k];
    for (i, &c) in classes.iter().enumerate() {
        onehot[i * k + c as usize] = 1.0;
    }
    let onehot = Tensor::from_vec(onehot, (b, k), logits.device())?.to_dtype(logits.dtype())?;
    let score = (logits * onehot)?.sum_all()?;
    let grads = score.backward()?;
    let Some(grad) = grads.get(activation.as_tensor()) else {
        bail!("grad_cam: no gradient reached the target activation");
    };
    let spatial = model.info().spatial_stage;
    let (act, grad, height, width) = spatial_layout(activation.as_tensor(), grad, spatial)?;
    // act, grad: [B, C, h*w]
    let alpha = grad.mean_keepdim(2)?; // [B, C, 1]
    let cam = act.broadcast_mul(&alpha)?.sum(1)?.relu()?; // [B, h*w]
    let maps: Vec<Vec<f32>> = cam.to_dtype(DType::F32)?.to_vec2()?;
    Ok(GradCam {
        maps,
        height,
        width,
        classes,
    })
}

/// The activation and its gradient as `[B, C, h*w]` with the grid size: a spatial stage (as the
/// model declares) as it is; tokens with the CLS token first (DeiT) on their square grid.
fn spatial_layout(
    act: &Tensor,
    grad: &Tensor,
    spatial: bool,
) -> Result<(Tensor, Tensor, usize, usize)> {
    match (spatial, act.dims()) {
        (true, &[b, c, h, w]) => Ok((
            act.reshape((b, c, h * w))?,
            grad.reshape((b, c, h * w))?,
            h,
            w,
        )),
        (false, &[_, tokens, _]) if tokens > 1 => {
            let patches = tokens - 1;
            let side = (patches as f64).sqrt().round() as usize;
            if side * side != patches {
                bail!("grad_cam: {patches} patch tokens do not form a square grid");
            }
            let layout = |t: &Tensor| -> Result<Tensor> {
                Ok(t.narrow(1, 1, patches)?.transpose(1, 2)?.contiguous()?)
            };
            Ok((layout(act)?, layout(grad)?, side, side))
        }
        (spatial, other) => {
            bail!(
                "grad_cam: target activation of shape {other:?} does not fit a model declaring {}",
                if spatial {
                    "a spatial stage [B, C, h, w]"
                } else {
                    "tokens [B, 1 + patches, D]"
                }
            )
        }
    }
}
