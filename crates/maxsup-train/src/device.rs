//! `--device cpu|cuda[:N]` parsing, with a clear error when CUDA was not compiled in.

use anyhow::{bail, Context, Result};
use candle_core::Device;

/// Opens the device named on the command line: `cpu`, `cuda` (GPU 0) or `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim();
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match spec.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .with_context(|| format!("bad device `{spec}`: expected cpu, cuda or cuda:N"))?,
        None => bail!("bad device `{spec}`: expected cpu, cuda or cuda:N"),
    };
    if !candle_core::utils::cuda_is_available() {
        bail!(
            "device `{spec}` asked for, but this binary was built without CUDA support; \
             rebuild with `--features cuda` (see docs/cuda.md) or use --device cpu"
        );
    }
    let device =
        Device::new_cuda(ordinal).with_context(|| format!("cannot open CUDA device {ordinal}"))?;
    configure(&device).with_context(|| format!("cannot configure CUDA device {ordinal}"))?;
    Ok(device)
}

/// Memory pool and event tracking set for training-sized work (`maxsup_ops::configure_device`).
#[cfg(feature = "cuda")]
fn configure(device: &Device) -> candle_core::Result<()> {
    match device {
        Device::Cuda(d) => maxsup_ops::configure_device(d),
        _ => Ok(()),
    }
}

#[cfg(not(feature = "cuda"))]
fn configure(_: &Device) -> candle_core::Result<()> {
    Ok(())
}

/// Sets what `precision` implies for the math libraries on `device`: TF32 tensor cores for f32
/// runs on CUDA (as PyTorch's cuDNN default), nothing on the CPU. Errors for bf16 on the CPU.
pub fn prepare_precision(device: &Device, precision: crate::Precision) -> Result<()> {
    precision.check_device(device)?;
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        maxsup_ops::set_tf32(precision == crate::Precision::F32);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_garbage() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        let err = parse_device("gpu").unwrap_err().to_string();
        assert!(err.contains("expected cpu, cuda or cuda:N"), "{err}");
        assert!(parse_device("cuda:x").is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_get_it() {
        let err = parse_device("cuda:1").unwrap_err().to_string();
        assert!(err.contains("built without CUDA support"), "{err}");
    }
}
