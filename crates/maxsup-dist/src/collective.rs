//! The collective operations data parallelism needs, as one trait: tensor reductions and
//! broadcasts on the tensors' device, and small host-side exchanges (metrics, checksums).
//!
//! [`TcpCollective`] moves everything through the rendezvous sockets (host-staged): the CPU
//! transport of `--nproc N --device cpu`, which runs every part of the data-parallel path except
//! NCCL itself on a machine without GPUs.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

use crate::host_group::HostGroup;

pub trait Collective {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// The device whose tensors this collective moves (the CPU for [`TcpCollective`], this
    /// rank's GPU for NCCL).
    fn device(&self) -> Device;
    /// The element-wise sum of `t` over all ranks (f32), identical on every rank.
    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<Tensor>;
    /// Rank 0's `t` on every rank.
    fn broadcast(&mut self, t: &Tensor) -> Result<Tensor>;
    /// Sums host values over all ranks, identical on every rank.
    fn all_reduce_host(&mut self, values: &mut [f64]) -> Result<()>;
    /// Every rank's bytes, by rank.
    fn all_gather_host(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>>;
    fn barrier(&mut self) -> Result<()> {
        self.all_gather_host(&[]).map(|_| ())
    }
}

/// Collectives over the rendezvous sockets; tensors are staged through host memory.
pub struct TcpCollective {
    group: HostGroup,
}

impl TcpCollective {
    pub fn new(group: HostGroup) -> Self {
        Self { group }
    }
}

impl Collective for TcpCollective {
    fn rank(&self) -> usize {
        self.group.rank()
    }

    fn world_size(&self) -> usize {
        self.group.world_size()
    }

    fn device(&self) -> Device {
        Device::Cpu
    }

    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<Tensor> {
        if self.world_size() == 1 {
            return Ok(t.clone());
        }
        anyhow::ensure!(
            t.dtype() == DType::F32,
            "all-reduce of a {:?} tensor: only f32 is reduced",
            t.dtype()
        );
        let mut values = t.flatten_all()?.to_vec1::<f32>()?;
        self.group.all_reduce_sum(&mut values)?;
        Ok(Tensor::from_vec(values, t.shape(), t.device())?)
    }

    fn broadcast(&mut self, t: &Tensor) -> Result<Tensor> {
        if self.world_size() == 1 {
            return Ok(t.clone());
        }
        anyhow::ensure!(
            t.dtype() == DType::F32,
            "broadcast of a {:?} tensor: only f32 is sent",
            t.dtype()
        );
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        let mut bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.group.broadcast(&mut bytes)?;
        anyhow::ensure!(
            bytes.len() == values.len() * 4,
            "rank 0 broadcast {} values for a tensor of {} (the ranks run different models)",
            bytes.len() / 4,
            values.len()
        );
        let got: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Tensor::from_vec(got, t.shape(), t.device())?)
    }

    fn all_reduce_host(&mut self, values: &mut [f64]) -> Result<()> {
        self.group.all_reduce_sum(values)
    }

    fn all_gather_host(&mut self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.group.all_gather(mine)
    }
}
