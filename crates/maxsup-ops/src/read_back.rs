//! Reading a step's small report back to the host without waiting for the work queued after it.
//!
//! `Tensor::to_vec1` on CUDA queues its copy behind everything already on the stream and waits
//! for it: a trainer that reads step `t`'s report after queueing step `t + 1` (so that the host
//! prepares the next step while the GPU works) still waits for step `t + 1` to finish, and the
//! GPU then idles while the host builds step `t + 2`. [`ReadBack::queue`] puts the copy on the
//! stream right behind the report's own kernels, into page-locked memory, and records an event;
//! [`ReadBack::read`] waits for that event alone, so step `t`'s report arrives while step
//! `t + 1` runs and the host stays a step ahead. Buffers are reused (freeing page-locked memory
//! synchronises the whole device). On the CPU the values are read when queued.

use candle_core::{DType, Result, Tensor};

/// A pool of page-locked buffers for [`PendingRead`]s; keep one per stream of reports.
#[derive(Default)]
pub struct ReadBack {
    #[cfg(feature = "cuda")]
    free: Vec<crate::cuda::read_back::Buffer>,
}

/// A queued read of an f64 tensor's values.
pub struct PendingRead {
    inner: Inner,
}

enum Inner {
    Ready(Vec<f64>),
    #[cfg(feature = "cuda")]
    Cuda(crate::cuda::read_back::Buffer, usize),
}

impl ReadBack {
    pub fn new() -> ReadBack {
        ReadBack::default()
    }

    /// Queues the read of `t`'s values (f64, any shape, read in row-major order): on CUDA a
    /// copy behind the work queued so far, on the CPU the values at once.
    pub fn queue(&mut self, t: &Tensor) -> Result<PendingRead> {
        if t.dtype() != DType::F64 {
            candle_core::bail!("read_back: expects an f64 tensor, got {:?}", t.dtype());
        }
        #[cfg(feature = "cuda")]
        if let candle_core::Device::Cuda(dev) = t.device() {
            let t = t.contiguous()?;
            let (storage, layout) = t.storage_and_layout();
            let candle_core::Storage::Cuda(s) = &*storage else {
                candle_core::bail!("read_back: a CUDA tensor without CUDA storage");
            };
            let (buffer, n) = crate::cuda::read_back::queue(dev, s, layout, &mut self.free)?;
            return Ok(PendingRead {
                inner: Inner::Cuda(buffer, n),
            });
        }
        Ok(PendingRead {
            inner: Inner::Ready(t.flatten_all()?.to_vec1::<f64>()?),
        })
    }

    /// The values of a queued read, waiting only for the work queued before it; its buffer
    /// returns to the pool.
    pub fn read(&mut self, pending: PendingRead) -> Result<Vec<f64>> {
        match pending.inner {
            Inner::Ready(v) => Ok(v),
            #[cfg(feature = "cuda")]
            Inner::Cuda(buffer, n) => {
                let values = crate::cuda::read_back::read(&buffer, n);
                self.free.push(buffer);
                values
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cpu_reads_return_the_values_in_order() -> Result<()> {
        let mut rb = ReadBack::new();
        let a = Tensor::new(&[[1f64, 2.0], [3.0, 4.0]], &Device::Cpu)?;
        let first = rb.queue(&a)?;
        let second = rb.queue(&a.t()?)?;
        assert_eq!(rb.read(second)?, vec![1.0, 3.0, 2.0, 4.0]);
        assert_eq!(rb.read(first)?, vec![1.0, 2.0, 3.0, 4.0]);
        let err = rb
            .queue(&a.to_dtype(DType::F32)?)
            .err()
            .expect("f32 refused");
        assert!(err.to_string().contains("f64"), "{err}");
        Ok(())
    }
}
