//! A tensor an op's kernel produces beside its output (candle's custom ops return one tensor):
//! max-pool's arg-max for its backward, the convolution backward's weight gradient. The kernel
//! puts it in; the caller reads it after the op has run.

use candle_core::{Result, Tensor};
use std::sync::Mutex;

pub(crate) struct SideOutput {
    what: &'static str,
    slot: Mutex<Option<Tensor>>,
}

impl SideOutput {
    /// An empty slot; `what` names it in errors.
    pub(crate) fn new(what: &'static str) -> Self {
        Self {
            what,
            slot: Mutex::new(None),
        }
    }

    pub(crate) fn put(&self, t: Tensor) -> Result<()> {
        *self.lock()? = Some(t);
        Ok(())
    }

    /// Puts a kernel's CUDA buffer in, as a tensor of `shape` outside the graph.
    #[cfg(feature = "cuda")]
    pub(crate) fn put_cuda(
        &self,
        storage: candle_core::CudaStorage,
        shape: impl Into<candle_core::Shape>,
    ) -> Result<()> {
        self.put(Tensor::from_storage(
            candle_core::Storage::Cuda(storage),
            shape,
            candle_core::op::BackpropOp::none(),
            false,
        ))
    }

    /// Puts f32 values computed on the CPU in, as a tensor of `shape`.
    pub(crate) fn put_cpu(
        &self,
        values: Vec<f32>,
        shape: impl Into<candle_core::Shape>,
    ) -> Result<()> {
        self.put(Tensor::from_vec(values, shape, &candle_core::Device::Cpu)?)
    }

    /// The tensor, left in place (a graph may run its backward more than once).
    pub(crate) fn get(&self) -> Result<Tensor> {
        self.lock()?.clone().ok_or_else(|| self.missing())
    }

    pub(crate) fn take(&self) -> Result<Tensor> {
        self.lock()?.take().ok_or_else(|| self.missing())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<Tensor>>> {
        self.slot
            .lock()
            .map_err(|_| candle_core::Error::Msg(format!("{}: poisoned lock", self.what)))
    }

    fn missing(&self) -> candle_core::Error {
        candle_core::Error::Msg(format!(
            "{} was not produced (the op has not run)",
            self.what
        ))
    }
}
