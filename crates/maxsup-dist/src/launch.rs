//! `--nproc N` / `--gpus N`: one machine, N processes of the same binary, each told its place
//! with torchrun's variables (so the code path is the one torchrun and SLURM take), supervised
//! until they end.
//! When one fails, the others end with an error naming it (their collectives see its socket
//! close); any still running after a grace period are killed, so the launcher never hangs.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long the other ranks get to notice a failed one and exit on their own.
const GRACE: Duration = Duration::from_secs(30);

/// Starts `n` copies of `exe args` with ranks 0..n on this machine and waits for all of them.
/// Each gets `threads` compute threads (`RAYON_NUM_THREADS`), so that together they use the
/// machine's cores once, not n times over.
/// `flag` (`--nproc`, `--gpus`) names the request in errors.
pub fn launch_local(
    exe: &Path,
    args: &[OsString],
    n: usize,
    threads: usize,
    flag: &str,
) -> Result<()> {
    if n < 2 {
        bail!("{flag} {n}: a launched data-parallel run needs at least 2 processes");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free local port for the rendezvous")?
        .port();
    let token = format!("nproc-{}-{port}", std::process::id());
    let mut children: Vec<Child> = Vec::with_capacity(n);
    for rank in 0..n {
        let child = Command::new(exe)
            .args(args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("LOCAL_WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MAXSUP_RDZV_PORT", port.to_string())
            .env("MAXSUP_RUN_TOKEN", &token)
            .env("RAYON_NUM_THREADS", threads.max(1).to_string())
            .spawn()
            .with_context(|| format!("starting rank {rank} ({})", exe.display()));
        match child {
            Ok(c) => children.push(c),
            Err(e) => {
                for c in &mut children {
                    let _ = c.kill();
                }
                return Err(e);
            }
        }
    }
    supervise(children)
}

fn supervise(mut children: Vec<Child>) -> Result<()> {
    let mut status: Vec<Option<ExitStatus>> = vec![None; children.len()];
    let mut failed_at: Option<(usize, Instant)> = None;
    loop {
        for (rank, c) in children.iter_mut().enumerate() {
            if status[rank].is_none() {
                if let Some(s) = c
                    .try_wait()
                    .with_context(|| format!("waiting for rank {rank}"))?
                {
                    status[rank] = Some(s);
                    if !s.success() && failed_at.is_none() {
                        failed_at = Some((rank, Instant::now()));
                    }
                }
            }
        }
        if status.iter().all(Option::is_some) {
            break;
        }
        if let Some((_, since)) = failed_at {
            if since.elapsed() > GRACE {
                for (rank, c) in children.iter_mut().enumerate() {
                    if status[rank].is_none() {
                        let _ = c.kill();
                        status[rank] = c.wait().ok();
                    }
                }
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match failed_at {
        None => Ok(()),
        Some((rank, _)) => bail!(
            "rank {rank} of {} failed ({}); the run stopped (checkpoints written are intact: resume \
             with --resume)",
            children.len(),
            describe(status[rank].expect("a failed rank has a status"))
        ),
    }
}

fn describe(s: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = s.signal() {
            return format!("killed by signal {sig}");
        }
    }
    match s.code() {
        Some(c) => format!("exit status {c}"),
        None => "no exit status".into(),
    }
}

/// `args` without `flag N` / `flag=N` (what the children get).
pub fn without_flag(args: &[OsString], flag: &str) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut skip = false;
    let prefix = format!("{flag}=");
    for a in args {
        if skip {
            skip = false;
            continue;
        }
        let s = a.to_string_lossy();
        if s == flag {
            skip = true;
        } else if !s.starts_with(&prefix) {
            out.push(a.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_launch_flag_is_removed_for_the_children() {
        let args: Vec<OsString> = ["--epochs", "2", "--nproc", "4", "--lr", "0.1", "--nproc=3"]
            .iter()
            .map(OsString::from)
            .collect();
        let kept: Vec<String> = without_flag(&args, "--nproc")
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(kept, ["--epochs", "2", "--lr", "0.1"]);
    }
}
