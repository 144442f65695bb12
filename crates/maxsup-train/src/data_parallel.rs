//! What torch's DistributedDataParallel does, on a [`Collective`]: equal weights at the start
//! (rank 0's, broadcast), gradients averaged over the ranks after every backward pass (one flat
//! buffer in parameter order, identical on every rank), BatchNorm buffers taken from rank 0
//! before every forward pass (DDP's default `broadcast_buffers=True`), and a checksum that
//! proves the replicas still agree at every checkpoint.
//!
//! A world of one process (`--gpus 1`, `torchrun --nproc-per-node 1`) takes the same path, so
//! that it exercises the collective it would use at scale; its reductions are copies.

use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use maxsup_dist::Collective;
use maxsup_models::ImageClassifier;
use std::cell::RefCell;
use std::rc::Rc;

/// The data-parallel side of a trainer.
pub struct DataParallel {
    /// Shared with the SyncBatchNorm guard of a training step ([`DataParallel::sync_batch_norm`]),
    /// which sums statistics from inside the forward and backward passes.
    comm: Rc<RefCell<Box<dyn Collective>>>,
}

impl DataParallel {
    pub fn new(comm: Box<dyn Collective>) -> Self {
        Self {
            comm: Rc::new(RefCell::new(comm)),
        }
    }

    /// SyncBatchNorm over the ranks for as long as the guard lives (a training step's forward
    /// and backward passes, on this thread).
    pub fn sync_batch_norm(&self) -> maxsup_ops::SyncBatchNormGuard {
        maxsup_ops::sync_batch_norm(Rc::new(Replicas(self.comm.clone())))
    }

    pub fn rank(&self) -> usize {
        self.comm.borrow().rank()
    }

    pub fn world_size(&self) -> usize {
        self.comm.borrow().world_size()
    }

    /// The device the collective moves tensors on: the trainer's device must be this one.
    pub fn device(&self) -> Device {
        self.comm.borrow().device()
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
        if vars.is_empty() {
            return Ok(());
        }
        let flat = flatten(vars.iter().map(|v| Ok(v.as_tensor().clone())))?;
        let flat = self.comm.borrow_mut().broadcast(&flat)?;
        for (v, part) in vars.iter().zip(unflatten(&flat, vars.iter().copied())) {
            v.set(&part?)?;
        }
        Ok(())
    }

    /// Replaces the gradient of every var by its mean over the ranks. A var without a gradient
    /// on this rank counts as zero (so every rank sends the same layout), and keeps none if no
    /// rank has one.
    pub fn average_gradients(&mut self, grads: &mut GradStore, vars: &[Var]) -> Result<()> {
        if vars.is_empty() {
            return Ok(());
        }
        let flat = flatten(vars.iter().map(|v| match grads.get(v.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => Ok(Tensor::zeros(v.elem_count(), DType::F32, v.device())?),
        }))?;
        let world = self.world_size();
        let sum = self.comm.borrow_mut().all_reduce_sum(&flat)?;
        let mean = sum.affine(1.0 / world as f64, 0.0)?;
        for (v, g) in vars.iter().zip(unflatten(&mean, vars.iter())) {
            grads.insert(v.as_tensor(), g?);
        }
        Ok(())
    }

    /// Sums host values over the ranks (metrics).
    pub fn sum(&mut self, values: &mut [f64]) -> Result<()> {
        self.comm.borrow_mut().all_reduce_host(values)
    }

    /// A checksum of every model tensor, compared across the ranks: an error naming the first
    /// rank whose replica differs from rank 0's.
    pub fn check_replicas(&mut self, model: &dyn ImageClassifier, epoch: usize) -> Result<u64> {
        let sum = model_checksum(model)?;
        let all = self.comm.borrow_mut().all_gather_host(&sum.to_le_bytes())?;
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
        self.comm.borrow_mut().barrier()
    }
}

/// The collective as SyncBatchNorm's replicas.
struct Replicas(Rc<RefCell<Box<dyn Collective>>>);

impl maxsup_ops::ReplicaSum for Replicas {
    fn rank(&self) -> usize {
        self.0.borrow().rank()
    }

    fn world_size(&self) -> usize {
        self.0.borrow().world_size()
    }

    fn sum(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        self.0.borrow_mut().all_reduce_sum(t).map_err(|e| {
            candle_core::Error::Msg(format!("SyncBatchNorm's sum over the ranks: {e:#}"))
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use maxsup_dist::{HostGroup, TcpCollective, World};
    use maxsup_models::{create_model, ModelOptions};
    use std::time::Duration;

    fn bits(t: &Tensor) -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.into_iter().map(f32::to_bits).collect()
    }

    /// A world of one (`--gpus 1`) runs every collective of the path; each is an identity.
    #[test]
    fn a_world_of_one_goes_through_the_collective_and_changes_nothing() {
        let (group, _) = HostGroup::join(
            &World::single(),
            b"",
            &[],
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap();
        let mut dp = DataParallel::new(Box::new(TcpCollective::new(group)));
        assert!(dp.device().is_cpu() && dp.is_leader() && dp.world_size() == 1);
        let options = ModelOptions {
            num_classes: Some(10),
            ..Default::default()
        };
        let model = create_model("resnet20_cifar", &options, &Device::Cpu).unwrap();
        let before = model_checksum(model.as_ref()).unwrap();
        dp.broadcast_model(model.as_ref()).unwrap();
        dp.broadcast_buffers(model.as_ref()).unwrap();
        assert_eq!(model_checksum(model.as_ref()).unwrap(), before);

        let x = Tensor::ones((2, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
        let loss = model
            .forward_t(&x, true)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap();
        let mut grads = loss.backward().unwrap();
        let vars: Vec<Var> = model.params().trainable().map(|p| p.var.clone()).collect();
        let want: Vec<Vec<u32>> = vars
            .iter()
            .map(|v| bits(grads.get(v.as_tensor()).unwrap()))
            .collect();
        dp.average_gradients(&mut grads, &vars).unwrap();
        for (v, w) in vars.iter().zip(&want) {
            assert_eq!(&bits(grads.get(v.as_tensor()).unwrap()), w);
        }
        // (The training-mode forward pass moved the BatchNorm statistics.)
        let now = model_checksum(model.as_ref()).unwrap();
        assert_eq!(dp.check_replicas(model.as_ref(), 0).unwrap(), now);
    }
}
