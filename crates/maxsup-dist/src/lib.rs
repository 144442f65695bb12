//! Data-parallel plumbing: which process this is ([`World`], from torchrun, SLURM or our own
//! `--nproc` launcher), the TCP rendezvous and host collectives ([`HostGroup`]), and the
//! [`Collective`] trait the trainer averages gradients through ([`TcpCollective`] on the CPU).
//!
//! The design and the launch commands are in `docs/distributed.md`.

mod collective;
mod host_group;
mod launch;
#[cfg(feature = "cuda")]
mod nccl;
mod world;

pub use collective::{Collective, TcpCollective};
pub use host_group::{Element, HostGroup};
pub use launch::{launch_local, without_flag};
#[cfg(feature = "cuda")]
pub use nccl::NcclCollective;
pub use world::{Env, ProcessEnv, World};

use std::time::Duration;

/// Seconds from `var`, else `default`.
fn timeout_from_env(var: &str, default: Duration) -> anyhow::Result<Duration> {
    match std::env::var(var) {
        Err(_) => Ok(default),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| anyhow::anyhow!("{var}={v:?} is not a number of seconds")),
    }
}

/// The rendezvous and collective timeouts of the environment (`MAXSUP_RDZV_TIMEOUT`, default
/// 300 s; `MAXSUP_COLLECTIVE_TIMEOUT`, default 600 s).
fn timeouts() -> anyhow::Result<(Duration, Duration)> {
    Ok((
        timeout_from_env("MAXSUP_RDZV_TIMEOUT", Duration::from_secs(300))?,
        timeout_from_env("MAXSUP_COLLECTIVE_TIMEOUT", Duration::from_secs(600))?,
    ))
}

/// Joins `world` with the collective for `device`: NCCL on a CUDA device (in a build with the
/// `cuda` feature), TCP on the CPU, with the timeouts of the environment. `agreement` must be
/// equal on every rank (e.g. the command line).
pub fn join(
    world: &World,
    agreement: &[u8],
    device: &candle_core::Device,
) -> anyhow::Result<Box<dyn Collective>> {
    let (rendezvous, timeout) = timeouts()?;
    match device {
        candle_core::Device::Cpu => {
            let (group, _) = HostGroup::join(world, agreement, &[], rendezvous, timeout)?;
            Ok(Box::new(TcpCollective::new(group)))
        }
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(_) => Ok(Box::new(NcclCollective::join(
            world, agreement, device, rendezvous, timeout,
        )?)),
        other => anyhow::bail!(
            "a data-parallel run on {other:?} has no collective: NCCL needs a CUDA build \
             (--features cuda, docs/cuda.md); the CPU uses TCP"
        ),
    }
}
