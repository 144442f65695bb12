//! Launcher of the multi-tensor optimizer kernels: device addresses of every tensor into the
//! argument tables of `multi_tensor::table`, one launch per table.

use super::launch::launch_kernel;
use crate::multi_tensor::table::{batches, AdamWConstants, Entry, TensorTable, Update};
use crate::multi_tensor::Slot;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DeviceRepr};
use candle_core::cuda_backend::CudaDevice;
use candle_core::{DType, Result, Storage, Tensor};

// SAFETY: `TensorTable` is `#[repr(C)]` plain data with the layout of ops.cu's struct (checked
// by `table_layout_matches_the_kernel_struct`); the kernels take it by value.
unsafe impl DeviceRepr for TensorTable {}

/// A tensor's device address and element count, checked to be f32, contiguous and on `dev`.
fn address(t: &Tensor, dev: &CudaDevice, what: &str, role: &str) -> Result<(u64, usize)> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(s) = &*storage else {
        candle_core::bail!("{what}: the {role} is not on a CUDA device");
    };
    if s.device.id() != dev.id() {
        candle_core::bail!("{what}: the {role} is on another CUDA device than its parameter");
    }
    if t.dtype() != DType::F32 {
        candle_core::bail!("{what}: the {role} must be f32, got {:?}", t.dtype());
    }
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{what}: the {role} must be contiguous");
    };
    let slice = s.as_cuda_slice::<f32>()?;
    let stream = dev.cuda_stream();
    // The address outlives the borrow: the storage stays alive through the caller's `&Tensor`,
    // and every kernel that reads or writes it runs on this same stream, in order.
    let (base, _sync) = slice.device_ptr(&stream);
    Ok((base + 4 * start as u64, end - start))
}

/// Runs `update` over `slots` (all f32 CUDA tensors of one device, checked here).
pub(crate) fn multi_tensor(what: &str, update: Update, slots: &[Slot]) -> Result<()> {
    let dev = match slots[0].param.device() {
        candle_core::Device::Cuda(d) => d.clone(),
        _ => candle_core::bail!("{what}: expects CUDA tensors"),
    };
    let param_written = update.writes_param();
    // Non-contiguous gradients (a transposed weight's) are copied once, kept alive to the launch.
    let mut gathered = Vec::new();
    let mut entries = Vec::with_capacity(slots.len());
    let mut written: Vec<(u64, u64, usize)> = Vec::new();
    for (i, s) in slots.iter().enumerate() {
        let (param, len) = address(s.param, &dev, what, "parameter")?;
        let mut entry = Entry {
            param,
            len,
            scalars: s.scalars,
            ..Entry::default()
        };
        if param_written {
            written.push((param, param + 4 * len as u64, i));
        }
        if let Some(g) = s.grad {
            let g = if g.is_contiguous() {
                g.clone()
            } else {
                g.contiguous()?
            };
            let (addr, n) = address(&g, &dev, what, "gradient")?;
            check_len(what, "gradient", n, len, s.param)?;
            entry.grad = addr;
            gathered.push(g);
        }
        for (k, state) in s.state.iter().enumerate() {
            if let Some(t) = state {
                let (addr, n) = address(t, &dev, what, "state tensor")?;
                check_len(what, "state tensor", n, len, s.param)?;
                written.push((addr, addr + 4 * n as u64, i));
                if k == 0 {
                    entry.state0 = addr;
                } else {
                    entry.state1 = addr;
                }
            }
        }
        entries.push(entry);
    }
    check_disjoint(what, &mut written)?;
    for batch in batches(&entries) {
        let table = batch.table;
        match update {
            Update::Sgd {
                lr,
                momentum,
                nesterov,
            } => {
                let nesterov = nesterov as i32;
                launch_kernel!(
                    &dev,
                    update.kernel(),
                    batch.launch(),
                    &table,
                    &lr,
                    &momentum,
                    &nesterov
                );
            }
            Update::AdamW(AdamWConstants {
                w,
                one_minus_w,
                from_end,
                beta2,
                one_minus_beta2,
                eps,
            }) => {
                let from_end = from_end as i32;
                launch_kernel!(
                    &dev,
                    update.kernel(),
                    batch.launch(),
                    &table,
                    &w,
                    &one_minus_w,
                    &from_end,
                    &beta2,
                    &one_minus_beta2,
                    &eps
                );
            }
            Update::Ema {
                decay,
                one_minus_decay,
            } => {
                launch_kernel!(
                    &dev,
                    update.kernel(),
                    batch.launch(),
                    &table,
                    &decay,
                    &one_minus_decay
                );
            }
        }
    }
    drop(gathered);
    Ok(())
}

fn check_len(what: &str, role: &str, n: usize, want: usize, param: &Tensor) -> Result<()> {
    if n != want {
        candle_core::bail!(
            "{what}: a {role} of {n} elements for a parameter of shape {:?}",
            param.dims()
        );
    }
    Ok(())
}

/// Errors when two written buffers overlap (the same tensor given twice, or a state tensor
/// sharing storage with a parameter): their updates would race.
fn check_disjoint(what: &str, ranges: &mut [(u64, u64, usize)]) -> Result<()> {
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        let ((_, end, i), (start, _, j)) = (pair[0], pair[1]);
        if start < end {
            candle_core::bail!("{what}: tensors {i} and {j} share memory that the update writes");
        }
    }
    Ok(())
}
