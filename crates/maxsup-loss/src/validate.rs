//! Input checks shared by every loss: the shapes, dtypes and ranges a loss accepts, with errors
//! that say what was wrong instead of a panic or a silently broadcast result.

use std::cell::Cell;
use std::marker::PhantomData;

use candle_core::{bail, DType, Result, Tensor};

/// The dtype the loss arithmetic runs in: f64 stays f64, every other float (f32, f16, bf16) is
/// computed in f32, as PyTorch's autocast does for `cross_entropy`, so half-precision logits
/// do not lose the small differences the regularizers are made of.
pub(crate) fn compute_dtype(logits: &Tensor) -> Result<DType> {
    match logits.dtype() {
        DType::F64 => Ok(DType::F64),
        DType::F32 | DType::F16 | DType::BF16 => Ok(DType::F32),
        other => {
            bail!("loss: logits must be a float tensor (f32, f16, bf16 or f64), got {other:?}")
        }
    }
}

/// Checks `logits` is `[B, K]` with `B >= 1`, `K >= 2`, returns `(B, K)` and the logits in the
/// compute dtype.
pub(crate) fn logits_2d(logits: &Tensor, what: &str) -> Result<(usize, usize, Tensor)> {
    let dims = logits.dims();
    if dims.len() != 2 {
        bail!(
            "{what}: logits must have shape [batch, classes], got {:?}",
            dims
        );
    }
    let (b, k) = (dims[0], dims[1]);
    if b == 0 {
        bail!("{what}: empty batch (logits shape {:?})", dims);
    }
    if k < 2 {
        bail!(
            "{what}: need at least 2 classes, logits shape is {:?}",
            dims
        );
    }
    let z = logits.to_dtype(compute_dtype(logits)?)?;
    Ok((b, k, z))
}

/// Checks `targets` holds `batch` class indices in `[0, num_classes)` and returns them as a
/// `[B, 1]` u32 tensor on the logits' device, ready for `gather`.
pub(crate) fn class_indices(targets: &Tensor, logits: &Tensor, what: &str) -> Result<Tensor> {
    let (batch, num_classes) = logits.dims2()?;
    index_tensor(
        &class_index_values(targets, batch, num_classes, what)?,
        logits.device(),
    )
}

/// The checked class indices as a `[B, 1]` u32 tensor on `device`.
pub(crate) fn index_tensor(values: &[u32], device: &candle_core::Device) -> Result<Tensor> {
    Tensor::from_slice(values, (values.len(), 1), device)
}

/// Checks `targets` holds `batch` class indices in `[0, num_classes)` and returns them on the host.
///
/// The indices are read back to the host to be range-checked: `B` integers, which is negligible
/// next to a forward pass, and the only way to turn an out-of-range label into an error rather
/// than an out-of-bounds gather. `targets` may live on the CPU while the logits are on a GPU
/// (a training loop has the labels on the host already): then nothing is read from the GPU, and
/// the checked indices travel to the logits' device by [`index_tensor`].
pub(crate) fn class_index_values(
    targets: &Tensor,
    batch: usize,
    num_classes: usize,
    what: &str,
) -> Result<Vec<u32>> {
    let dims = targets.dims();
    if dims != [batch] {
        bail!(
            "{what}: targets must have shape [{batch}] (one class index per sample), got {dims:?}"
        );
    }
    let values: Vec<i64> = match targets.dtype() {
        DType::U32 => targets
            .to_vec1::<u32>()?
            .into_iter()
            .map(i64::from)
            .collect(),
        DType::I64 => targets.to_vec1::<i64>()?,
        DType::U8 => targets
            .to_vec1::<u8>()?
            .into_iter()
            .map(i64::from)
            .collect(),
        other => bail!("{what}: targets must be class indices (u32 or i64), got {other:?}"),
    };
    if let Some(i) = values
        .iter()
        .position(|&v| v < 0 || v >= num_classes as i64)
    {
        let bad = values[i];
        bail!(
            "{what}: target {bad} at batch position {i} is out of range for {num_classes} classes"
        );
    }
    Ok(values.into_iter().map(|v| v as u32).collect())
}

/// Checks `soft_targets` is `[B, K]` like the logits and returns it in `dtype`.
pub(crate) fn soft_targets(
    soft: &Tensor,
    batch: usize,
    num_classes: usize,
    dtype: DType,
    what: &str,
) -> Result<Tensor> {
    if soft.dims() != [batch, num_classes] {
        bail!(
            "{what}: soft targets must have the logits' shape [{batch}, {num_classes}], got {:?}",
            soft.dims()
        );
    }
    soft.to_dtype(dtype)
}

/// Checks a scalar hyper-parameter is finite (and in a range when one applies).
pub(crate) fn finite_param(value: f64, name: &str, what: &str) -> Result<()> {
    if !value.is_finite() {
        bail!("{what}: {name} must be finite, got {value}");
    }
    Ok(())
}

/// Turns a non-finite scalar loss into an error that says which samples carry non-finite
/// logits, instead of handing NaN to the optimizer.
///
/// Reading the scalar back is one value per step, free on the CPU; on a GPU it stops the host
/// from queueing ahead, so a training loop that reads its step report anyway runs the losses
/// under [`defer_finite_checks`] and calls [`check_finite_loss`] on the value it reads.
pub(crate) fn finite_loss(loss: Tensor, logits: &Tensor, what: &str) -> Result<Tensor> {
    if FINITE_CHECKS_DEFERRED.with(Cell::get) > 0 {
        return Ok(loss);
    }
    let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    check_finite_loss(value, logits, what)?;
    Ok(loss)
}

/// The error [`finite_loss`] raises, for a loss `value` read back by the caller: `Ok` when it
/// is finite, otherwise an error naming the batch positions whose `logits` are non-finite
/// (reads the `[B, K]` logits, only on that path).
pub fn check_finite_loss(value: f64, logits: &Tensor, what: &str) -> Result<()> {
    if value.is_finite() {
        return Ok(());
    }
    let rows = logits.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let bad: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.iter().any(|v| !v.is_finite()))
        .map(|(i, _)| i)
        .collect();
    if bad.is_empty() {
        bail!("{what}: loss is {value} although every logit is finite (check the targets/hyper-parameters)");
    }
    let shown: Vec<String> = bad.iter().take(8).map(|i| i.to_string()).collect();
    bail!(
        "{what}: loss is {value}: non-finite logits in {} of {} samples (batch positions {}{})",
        bad.len(),
        rows.len(),
        shown.join(", "),
        if bad.len() > 8 { ", ..." } else { "" }
    )
}

thread_local! {
    /// Live [`DeferredFiniteChecks`] guards on this thread.
    static FINITE_CHECKS_DEFERRED: Cell<usize> = const { Cell::new(0) };
}

/// While the returned guard lives, the losses computed on this thread skip their read-back of
/// the loss value (the non-finite check): the caller promises to read the value itself and pass
/// it to [`check_finite_loss`] before using the step's result. Everything else (shapes, dtypes,
/// label ranges, hyper-parameters) is still checked.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let logits = Tensor::new(&[[f32::NAN, 0.0]], &Device::Cpu)?;
/// let targets = Tensor::new(&[0u32], &Device::Cpu)?;
/// let loss = {
///     let _deferred = maxsup_loss::defer_finite_checks();
///     maxsup_loss::cross_entropy(&logits, &targets)? // no error yet: the check is the caller's
/// };
/// let value = loss.to_scalar::<f32>()? as f64;
/// assert!(maxsup_loss::check_finite_loss(value, &logits, "step").is_err());
/// assert!(maxsup_loss::cross_entropy(&logits, &targets).is_err()); // guard dropped: checked again
/// # Ok::<(), candle_core::Error>(())
/// ```
#[must_use = "the checks are deferred only while the guard lives"]
pub fn defer_finite_checks() -> DeferredFiniteChecks {
    FINITE_CHECKS_DEFERRED.with(|n| n.set(n.get() + 1));
    DeferredFiniteChecks {
        _same_thread: PhantomData,
    }
}

/// The guard of [`defer_finite_checks`]; not `Send`, since the deferral is per thread.
pub struct DeferredFiniteChecks {
    _same_thread: PhantomData<*const ()>,
}

impl Drop for DeferredFiniteChecks {
    fn drop(&mut self) {
        FINITE_CHECKS_DEFERRED.with(|n| n.set(n.get() - 1));
    }
}
