//! Peak resident memory of this process, as the kernel records it (VmHWM in /proc/self/status).

use anyhow::{Context, Result};

/// VmHWM (peak resident set) in MiB.
pub fn peak_rss_mb() -> Result<f64> {
    status_mb("VmHWM:")
}

/// VmRSS (current resident set) in MiB.
pub fn rss_mb() -> Result<f64> {
    status_mb("VmRSS:")
}

fn status_mb(key: &str) -> Result<f64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .with_context(|| format!("no {key} line in /proc/self/status"))?;
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM line has no value")?
        .parse()
        .with_context(|| format!("parsing `{line}`"))?;
    Ok(kb / 1024.0)
}
