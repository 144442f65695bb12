//! The output of a graph node whose forward already ran outside candle's op (a sub-network run
//! on detached inputs: `residual_branch`'s CUDA path, `residual_block`): the node's `fwd` hands
//! the result to candle once, as a copy of its storage (candle's custom ops return owned
//! storage), and the node's hand-written backward does the rest.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, Shape, Storage, Tensor};
use std::sync::Mutex;

pub(crate) struct PrecomputedOutput {
    what: &'static str,
    slot: Mutex<Option<Tensor>>,
}

impl PrecomputedOutput {
    /// `what` names the node in errors.
    pub(crate) fn new(what: &'static str, y: Tensor) -> Self {
        Self {
            what,
            slot: Mutex::new(Some(y)),
        }
    }

    /// The result, once: a second forward of the same node is an error.
    fn take(&self) -> Result<Tensor> {
        let mut slot = self
            .slot
            .lock()
            .map_err(|_| candle_core::Error::Msg(format!("{}: output lock poisoned", self.what)))?;
        slot.take().ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "{}: the graph node ran its forward twice",
                self.what
            ))
        })
    }

    /// Calls `f` with the result's storage and layout, checked to be the whole buffer in order
    /// (so a copy of the storage is the tensor).
    fn whole<R>(&self, f: impl FnOnce(&Storage, &Layout, &Shape) -> Result<R>) -> Result<R> {
        let y = self.take()?;
        let (storage, layout) = y.storage_and_layout();
        if layout.contiguous_offsets() != Some((0, y.elem_count())) {
            candle_core::bail!(
                "{}: the saved output is not a whole contiguous buffer",
                self.what
            );
        }
        f(&storage, layout, y.shape())
    }

    pub(crate) fn cpu(&self) -> Result<(CpuStorage, Shape)> {
        self.whole(|s, l, shape| match s {
            Storage::Cpu(s) => Ok((s.try_clone(l)?, shape.clone())),
            _ => candle_core::bail!("{}: the output is not on the CPU", self.what),
        })
    }

    #[cfg(feature = "cuda")]
    pub(crate) fn cuda(&self) -> Result<(candle_core::CudaStorage, Shape)> {
        self.whole(|s, l, shape| match s {
            Storage::Cuda(s) => Ok((s.try_clone(l)?, shape.clone())),
            _ => candle_core::bail!("{}: the output is not on the CUDA device", self.what),
        })
    }
}

/// The `cpu_fwd` and `cuda_fwd` of a three-operand graph node (`CustomOp3`) whose output is
/// the [`PrecomputedOutput`] in `self.$field`: its operands are there for candle's graph (their
/// gradients), not read.
macro_rules! precomputed_fwd3 {
    ($field:ident) => {
        fn cpu_fwd(
            &self,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
            _: &candle_core::CpuStorage,
            _: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            self.$field.cpu()
        }

        #[cfg(feature = "cuda")]
        fn cuda_fwd(
            &self,
            _: &candle_core::CudaStorage,
            _: &candle_core::Layout,
            _: &candle_core::CudaStorage,
            _: &candle_core::Layout,
            _: &candle_core::CudaStorage,
            _: &candle_core::Layout,
        ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
            self.$field.cuda()
        }
    };
}
pub(crate) use precomputed_fwd3;

/// `tensors` flattened and concatenated into one vector, in order: a graph node's packed
/// parameter operand, or its gradient (candle's custom ops take at most three operands).
pub(crate) fn packed<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> Result<Tensor> {
    let flat: Vec<Tensor> = tensors
        .into_iter()
        .map(|t| t.flatten_all())
        .collect::<Result<_>>()?;
    Tensor::cat(&flat, 0)
}
