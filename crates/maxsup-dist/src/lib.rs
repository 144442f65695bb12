//! Data-parallel plumbing: which process this is ([`World`], from torchrun, SLURM or our own
//! `--nproc` launcher), the TCP rendezvous and host collectives ([`HostGroup`]), and the
//! [`Collective`] trait the trainer averages gradients through ([`TcpCollective`] on the CPU).
//!
//! The design and the launch commands are in `docs/distributed.md`.

mod collective;
mod host_group;
mod launch;
mod world;

pub use collective::{Collective, TcpCollective};
pub use host_group::{Element, HostGroup};
pub use launch::{launch_local, without_flag};
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

/// Joins `world` over TCP with the timeouts of the environment (`MAXSUP_RDZV_TIMEOUT`, default
/// 300 s; `MAXSUP_COLLECTIVE_TIMEOUT`, default 600 s). `agreement` must be equal on every rank
/// (e.g. the command line).
pub fn join(world: &World, agreement: &[u8]) -> anyhow::Result<TcpCollective> {
    let rendezvous = timeout_from_env("MAXSUP_RDZV_TIMEOUT", Duration::from_secs(300))?;
    let timeout = timeout_from_env("MAXSUP_COLLECTIVE_TIMEOUT", Duration::from_secs(600))?;
    let (group, _) = HostGroup::join(world, agreement, &[], rendezvous, timeout)?;
    Ok(TcpCollective::new(group))
}
