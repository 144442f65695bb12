//! Which process this is in a data-parallel run: rank, world size and where rank 0 listens,
//! read from the variables the usual launchers set.
//!
//! Precedence: our own `--nproc` launcher and torchrun both set torchrun's variables (`RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`); under SLURM
//! without torchrun, `SLURM_PROCID`, `SLURM_NTASKS` and `SLURM_LOCALID` are used, with the address
//! from `MASTER_ADDR` (sbatch scripts export it; see docs/distributed.md).
//!
//! The rendezvous port is `MAXSUP_RDZV_PORT` when set, else `MASTER_PORT + 1`: torchrun's agent
//! already serves its own store on `MASTER_PORT`, whose wire protocol is internal to PyTorch.

use anyhow::{bail, Context, Result};

/// The environment a run reads, as a lookup (the process environment, or a map in tests).
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

/// One process's place in the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    pub rank: usize,
    pub world_size: usize,
    /// Rank among the processes of this machine (the GPU ordinal on a multi-GPU node).
    pub local_rank: usize,
    pub local_world_size: usize,
    /// Where rank 0 serves the rendezvous.
    pub addr: String,
    pub port: u16,
    /// Identifies the job (torchrun's run id or SLURM's job id), so that two jobs that happen to
    /// share an address and port refuse each other instead of mixing.
    pub run_token: String,
}

impl World {
    /// A single process (no launcher variables set).
    pub fn single() -> World {
        World {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: 1,
            addr: "127.0.0.1".into(),
            port: 0,
            run_token: String::new(),
        }
    }

    pub fn is_distributed(&self) -> bool {
        self.world_size > 1
    }

    /// The world described by `env`; `None` when no launcher variable is set (a plain run).
    pub fn from_env(env: &dyn Env) -> Result<Option<World>> {
        let torchrun = env.get("RANK").is_some() || env.get("WORLD_SIZE").is_some();
        let slurm = env.get("SLURM_PROCID").is_some();
        let (rank, world_size, local_rank, local_world_size) = if torchrun {
            let rank = number(env, "RANK")?;
            let world = number(env, "WORLD_SIZE")?;
            let local = optional_number(env, "LOCAL_RANK")?.unwrap_or(rank);
            let local_world = optional_number(env, "LOCAL_WORLD_SIZE")?.unwrap_or(world);
            (rank, world, local, local_world)
        } else if slurm {
            let rank = number(env, "SLURM_PROCID")?;
            let world = number(env, "SLURM_NTASKS")?;
            let local = optional_number(env, "SLURM_LOCALID")?.unwrap_or(0);
            let local_world = optional_number(env, "SLURM_NTASKS_PER_NODE")?.unwrap_or(world);
            (rank, world, local, local_world)
        } else {
            return Ok(None);
        };
        if world_size == 0 {
            bail!("the launcher's world size is 0 (WORLD_SIZE / SLURM_NTASKS)");
        }
        if rank >= world_size {
            bail!("rank {rank} is not below the world size {world_size}");
        }
        if local_rank >= local_world_size.max(1) {
            bail!("local rank {local_rank} is not below the local world size {local_world_size}");
        }
        let port = match optional_number(env, "MAXSUP_RDZV_PORT")? {
            Some(p) => p,
            None if world_size == 1 => 0,
            None => match optional_number(env, "MASTER_PORT")? {
                Some(p) => p + 1,
                None => bail!(
                    "a distributed run needs MASTER_PORT (or MAXSUP_RDZV_PORT): the port rank 0 \
                     listens on"
                ),
            },
        };
        let port = u16::try_from(port)
            .ok()
            .filter(|_| port > 0 || world_size == 1)
            .with_context(|| format!("rendezvous port {port} is not a TCP port"))?;
        let addr = match env.get("MASTER_ADDR") {
            Some(a) if !a.is_empty() => a,
            _ if world_size == 1 => "127.0.0.1".into(),
            _ => bail!(
                "a distributed run needs MASTER_ADDR, the address of rank 0's machine (torchrun \
                 sets it; in sbatch scripts export it, see docs/distributed.md)"
            ),
        };
        let run_token = env
            .get("TORCHELASTIC_RUN_ID")
            .or_else(|| env.get("SLURM_JOB_ID"))
            .or_else(|| env.get("MAXSUP_RUN_TOKEN"))
            .unwrap_or_default();
        Ok(Some(World {
            rank,
            world_size,
            local_rank,
            local_world_size,
            addr,
            port,
            run_token,
        }))
    }
}

fn number(env: &dyn Env, name: &str) -> Result<usize> {
    optional_number(env, name)?.with_context(|| {
        format!("{name} is not set (the launcher sets it with the other rank variables)")
    })
}

fn optional_number(env: &dyn Env, name: &str) -> Result<Option<usize>> {
    match env.get(name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{name}={v:?} is not a non-negative integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchrun_slurm_and_plain_runs() {
        let plain: [(&str, &str); 0] = [];
        assert_eq!(World::from_env(&plain).unwrap(), None);
        let torchrun = [
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "node7"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_RUN_ID", "job-42"),
        ];
        let w = World::from_env(&torchrun).unwrap().unwrap();
        assert_eq!(
            (w.rank, w.world_size, w.local_rank, w.local_world_size),
            (3, 8, 1, 2)
        );
        assert_eq!(
            (w.addr.as_str(), w.port, w.run_token.as_str()),
            ("node7", 29501, "job-42")
        );
        let slurm = [
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NTASKS_PER_NODE", "4"),
            ("SLURM_JOB_ID", "991"),
            ("MASTER_ADDR", "gpu001"),
            ("MAXSUP_RDZV_PORT", "40000"),
        ];
        let w = World::from_env(&slurm).unwrap().unwrap();
        assert_eq!(
            (w.rank, w.world_size, w.local_rank, w.port),
            (5, 16, 1, 40000)
        );
        assert_eq!(w.run_token, "991");
    }

    #[test]
    fn bad_variables_are_errors_naming_them() {
        let e = |env: &dyn Env| format!("{:#}", World::from_env(env).unwrap_err());
        assert!(e(&[("RANK", "1")]).contains("WORLD_SIZE is not set"));
        assert!(e(&[("RANK", "x"), ("WORLD_SIZE", "2")]).contains("RANK=\"x\""));
        assert!(e(&[("RANK", "2"), ("WORLD_SIZE", "2")]).contains("rank 2 is not below"));
        assert!(
            e(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1")]).contains("MASTER_ADDR")
        );
        assert!(
            e(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "a")]).contains("MASTER_PORT")
        );
        assert!(e(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "a"),
            ("MASTER_PORT", "70000")
        ])
        .contains("not a TCP port"));
    }
}
