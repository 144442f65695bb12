//! `--device cpu|cuda[:N]` parsing, with a clear error when CUDA was not compiled in, and the
//! GPU of a data-parallel rank.

use anyhow::{bail, Context, Result};
use candle_core::Device;

/// A `--device` value, parsed but not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    /// `cuda` (no ordinal given) or `cuda:N`.
    Cuda(Option<usize>),
}

impl DeviceSpec {
    pub fn parse(spec: &str) -> Result<DeviceSpec> {
        let spec = spec.trim();
        if spec == "cpu" {
            return Ok(DeviceSpec::Cpu);
        }
        match spec.strip_prefix("cuda") {
            Some("") => Ok(DeviceSpec::Cuda(None)),
            Some(rest) => rest
                .strip_prefix(':')
                .and_then(|n| n.parse::<usize>().ok())
                .map(|n| DeviceSpec::Cuda(Some(n)))
                .with_context(|| format!("bad device `{spec}`: expected cpu, cuda or cuda:N")),
            None => bail!("bad device `{spec}`: expected cpu, cuda or cuda:N"),
        }
    }

    pub fn is_cpu(self) -> bool {
        self == DeviceSpec::Cpu
    }
}

/// Opens the device named on the command line: `cpu`, `cuda` (GPU 0) or `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device> {
    match DeviceSpec::parse(spec)? {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(ordinal) => open_cuda(ordinal.unwrap_or(0), spec),
    }
}

/// The device of one process of a data-parallel run configured for `spec`: the CPU, or the GPU
/// of its local rank (torch's `cuda:LOCAL_RANK`), or GPU 0 when `CUDA_VISIBLE_DEVICES` leaves
/// the process a single one (as SLURM's `--gpus-per-task=1` does). An explicit `cuda:N` is
/// refused when several processes share the machine: they would all take GPU N.
pub fn device_for_rank(
    spec: &str,
    local_rank: usize,
    local_world_size: usize,
    visible_devices: Option<&str>,
) -> Result<Device> {
    match DeviceSpec::parse(spec)? {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(ordinal) => {
            let ordinal = rank_ordinal(ordinal, local_rank, local_world_size, visible_devices)?;
            open_cuda(ordinal, spec)
        }
    }
}

/// [`device_for_rank`]'s choice of GPU.
fn rank_ordinal(
    given: Option<usize>,
    local_rank: usize,
    local_world_size: usize,
    visible_devices: Option<&str>,
) -> Result<usize> {
    if let Some(n) = given {
        if local_world_size > 1 {
            bail!(
                "--device cuda:{n} in a data-parallel run with {local_world_size} processes on \
                 this machine: every process would take GPU {n}; give --device cuda (each \
                 process takes the GPU of its local rank)"
            );
        }
        return Ok(n);
    }
    let visible = visible_devices
        .map(|v| v.split(',').filter(|d| !d.trim().is_empty()).count())
        .unwrap_or(usize::MAX);
    Ok(if visible == 1 { 0 } else { local_rank })
}

/// How many GPUs this process sees (`--gpus N` checks N against it before starting ranks).
pub fn cuda_device_count() -> Result<usize> {
    #[cfg(feature = "cuda")]
    {
        use candle_core::cuda_backend::cudarc::driver::CudaContext;
        let n = CudaContext::device_count().map_err(|e| {
            anyhow::anyhow!("cannot count the GPUs (is the NVIDIA driver loaded?): {e:?}")
        })?;
        Ok(n.max(0) as usize)
    }
    #[cfg(not(feature = "cuda"))]
    bail!(
        "this binary was built without CUDA support; rebuild with `--features cuda` (see \
         docs/cuda.md), or train on CPU processes with --nproc"
    )
}

fn open_cuda(ordinal: usize, spec: &str) -> Result<Device> {
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

/// Sets how convolution algorithms are chosen on `device`: by timing them when `benchmark`
/// (`maxsup_ops::set_cudnn_benchmark`), else by cuDNN's heuristic. Timing is a CUDA setting:
/// asking for it on the CPU is an error.
pub fn prepare_convolutions(device: &Device, benchmark: bool) -> Result<()> {
    if benchmark && !device.is_cuda() {
        bail!(
            "cudnn_benchmark times cuDNN's convolution algorithms: it needs a CUDA device, the run \
             is on the CPU (--cudnn-benchmark false turns it off)"
        );
    }
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        maxsup_ops::set_cudnn_benchmark(benchmark);
    }
    Ok(())
}

/// Sets whether DeiT's attention runs as tensor-core kernels (forward, backward) on `device`
/// (`maxsup_ops::set_fused_attention`); a CUDA bf16 setting: asking for it on the CPU or in f32
/// is an error (the attention would run unfused, unasked).
pub fn prepare_attention(device: &Device, fused: bool, precision: crate::Precision) -> Result<()> {
    if fused && !device.is_cuda() {
        bail!(
            "fused_attention is a CUDA kernel: it needs a CUDA device, the run is on the CPU \
             (--fused-attention false turns it off)"
        );
    }
    if fused && precision != crate::Precision::Bf16 {
        bail!(
            "fused_attention is a bf16 kernel: the run's precision is {precision} \
             (--precision bf16, or --fused-attention false)"
        );
    }
    maxsup_ops::set_fused_attention(fused);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_settings_on_the_cpu_are_errors_that_name_the_flag_to_turn_them_off() {
        let cpu = Device::Cpu;
        let e = prepare_attention(&cpu, true, crate::Precision::F32).unwrap_err();
        assert!(e.to_string().contains("--fused-attention false"), "{e}");
        let e = prepare_convolutions(&cpu, true).unwrap_err();
        assert!(e.to_string().contains("--cudnn-benchmark false"), "{e}");
        prepare_attention(&cpu, false, crate::Precision::F32).unwrap();
        prepare_convolutions(&cpu, false).unwrap();
    }

    #[test]
    fn parses_cpu_and_rejects_garbage() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        let err = parse_device("gpu").unwrap_err().to_string();
        assert!(err.contains("expected cpu, cuda or cuda:N"), "{err}");
        assert!(parse_device("cuda:x").is_err());
        assert_eq!(DeviceSpec::parse("cuda").unwrap(), DeviceSpec::Cuda(None));
        assert_eq!(
            DeviceSpec::parse(" cuda:3").unwrap(),
            DeviceSpec::Cuda(Some(3))
        );
    }

    #[test]
    fn a_rank_takes_the_gpu_of_its_local_rank() {
        assert_eq!(rank_ordinal(None, 3, 4, None).unwrap(), 3);
        // SLURM's one GPU per task: the only visible GPU.
        assert_eq!(rank_ordinal(None, 3, 4, Some("5")).unwrap(), 0);
        assert_eq!(rank_ordinal(None, 3, 4, Some("0,1,2,3")).unwrap(), 3);
        assert_eq!(rank_ordinal(Some(2), 0, 1, None).unwrap(), 2);
        let e = rank_ordinal(Some(2), 1, 2, None).unwrap_err().to_string();
        assert!(e.contains("cuda:2") && e.contains("--device cuda"), "{e}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_get_it() {
        let err = parse_device("cuda:1").unwrap_err().to_string();
        assert!(err.contains("built without CUDA support"), "{err}");
    }
}
