//! What torch's DistributedDataParallel does, on a [`Collective`]: equal weights at the start
//! (rank 0's, broadcast), gradients averaged over the ranks after every backward pass (one flat
//! buffer in parameter order, identical on every rank), BatchNorm buffers taken from rank 0
//! before every forward pass (DDP's default `broadcast_buffers=True`), and a checksum that
//! proves the replicas still agree at every checkpoint.

use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use maxsup_dist::Collective;
use maxsup_models::ImageClassifier;

/// The data-parallel side of a trainer.
pub struct DataParallel {
    comm: Box<dyn Collective>,
}

impl DataParallel {
    pub fn new(comm: Box<dyn Collective>) -> Self {
        Self { comm }
    }

    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    pub fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    /// Rank 0 writes checkpoints and logs.
    pub fn is_leader(&self) -> bool {
        self.rank() == 0
    }

    /// Every model tensor (parameters and buffers) set to rank 0's.
    pub fn broadcast_model(&mut self, model: &dyn ImageClassifier) -> Result<()> {
        let vars: Vec<&Var> = model.params().entries().iter().map(|e| &e.var).collect();
        self.broadcast_vars(&vars)
    }

    /// The buffers (BatchNorm running statistics) set to rank 0's.
    pub fn broadcast_buffers(&mut self, model: &dyn ImageClassifier) -> Result<()> {
        let vars: Vec<&Var> = model.params().buffers().map(|e| &e.var).collect();
        self.broadcast_vars(&vars)
    }

    fn broadcast_vars(&mut self, vars: &[&Var]) -> Result<()> {
        if vars.is_empty() || self.world_size() == 1 {
            return Ok(());
        }
        let flat = flatten(vars.iter().map(|v| Ok(v.as_tensor().clone())))?;
        let flat = self.comm.broadcast(&flat)?;
        for (v, part) in vars.iter().zip(unflatten(&flat, vars.iter().copied())) {
            v.set(&part?)?;
        }
        Ok(())
    }

    /// Replaces the gradient of every var by its mean over the ranks. A var without a gradient
    /// on this rank counts as zero (so every rank sends the same layout), and keeps none if no
    /// rank has one.
    pub fn average_gradients(&mut self, grads: &mut GradStore, vars: &[Var]) -> Result<()> {
        if self.world_size() == 1 || vars.is_empty() {
            return Ok(());
        }
        let flat = flatten(vars.iter().map(|v| match grads.get(v.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => Ok(Tensor::zeros(v.elem_count(), DType::F32, v.device())?),
        }))?;
        let mean = self
            .comm
            .all_reduce_sum(&flat)?
            .affine(1.0 / self.world_size() as f64, 0.0)?;
        for (v, g) in vars.iter().zip(unflatten(&mean, vars.iter())) {
            grads.insert(v.as_tensor(), g?);
        }
        Ok(())
    }

    /// Sums host values over the ranks (metrics).
    pub fn sum(&mut self, values: &mut [f64]) -> Result<()> {
        self.comm.all_reduce_host(values)
    }

    /// A checksum of every model tensor, compared across the ranks: an error naming the first
    /// rank whose replica differs from rank 0's.
    pub fn check_replicas(&mut self, model: &dyn ImageClassifier, epoch: usize) -> Result<u64> {
        let sum = model_checksum(model)?;
        let all = self.comm.all_gather_host(&sum.to_le_bytes())?;
        let read = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        let first = read(&all[0]);
        if let Some((rank, theirs)) = all
            .iter()
            .map(|b| read(b))
            .enumerate()
            .find(|(_, c)| *c != first)
        {
            bail!(
                "after epoch {epoch} the weights of rank {rank} differ from rank 0's (checksum \
                 {theirs:016x} vs {first:016x}): the replicas diverged"
            );
        }
        Ok(sum)
    }

    pub fn barrier(&mut self) -> Result<()> {
        self.comm.barrier()
    }
}

/// The tensors as one flat f32 buffer, in order (the layout every rank shares).
fn flatten(tensors: impl Iterator<Item = Result<Tensor>>) -> Result<Tensor> {
    let parts: Vec<Tensor> = tensors
        .map(|t| Ok(t?.to_dtype(DType::F32)?.flatten_all()?))
        .collect::<Result<_>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// [`flatten`]'s inverse: the consecutive pieces of `flat` shaped and typed like `vars`.
fn unflatten<'a>(
    flat: &'a Tensor,
    vars: impl Iterator<Item = &'a Var> + 'a,
) -> impl Iterator<Item = Result<Tensor>> + 'a {
    let mut at = 0;
    vars.map(move |v| {
        let n = v.elem_count();
        let part = flat
            .narrow(0, at, n)?
            .reshape(v.shape())?
            .to_dtype(v.dtype())?;
        at += n;
        Ok(part)
    })
}

/// FNV-1a over the little-endian bytes of every model tensor (as f32), in parameter order.
pub fn model_checksum(model: &dyn ImageClassifier) -> Result<u64> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for e in model.params().entries() {
        for b in e.name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        let values = e
            .var
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for v in values {
            for b in v.to_le_bytes() {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    Ok(h)
}
