//! `--precision f32|bf16`: the dtype training runs its activations in.
//!
//! bf16 is mixed precision as PyTorch's autocast does it: f32 master weights, gradients and
//! optimizer state, bf16 activations and conv/GEMM inputs, f32 BatchNorm/LayerNorm statistics
//! and loss. The layers cast their weights to the activations' dtype inside the graph (see
//! `maxsup_models::layers`), so the only switch is the dtype of the image batch; the logits are
//! cast back to f32 before the loss. No loss scaling: bf16 has f32's exponent range.

use anyhow::{bail, Result};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32 (on CUDA with TF32 tensor cores for convolutions and GEMMs).
    #[default]
    F32,
    /// bf16 activations, f32 weights and statistics (CUDA only).
    Bf16,
}

impl Precision {
    /// `f32` or `bf16`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim() {
            "f32" | "fp32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            other => bail!("bad precision `{other}`: expected f32 or bf16"),
        }
    }

    /// What a run on `device` uses when `--precision` is not given: bf16 on CUDA, f32 elsewhere.
    pub fn default_for(device: &str) -> Self {
        if device.trim().starts_with("cuda") {
            Self::Bf16
        } else {
            Self::F32
        }
    }

    /// The dtype of the activations.
    pub fn compute_dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
        }
    }

    /// Errors when the precision cannot run on `device` (candle's CPU backend has no bf16 GEMM).
    pub fn check_device(self, device: &Device) -> Result<()> {
        if self == Self::Bf16 && !device.is_cuda() {
            bail!("--precision bf16 needs a CUDA device (--device cuda); on the CPU use --precision f32");
        }
        Ok(())
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_defaults_by_device() {
        assert_eq!(Precision::parse("bf16").unwrap(), Precision::Bf16);
        assert_eq!(Precision::parse("f32").unwrap(), Precision::F32);
        assert!(Precision::parse("fp16")
            .unwrap_err()
            .to_string()
            .contains("expected f32 or bf16"));
        assert_eq!(Precision::default_for("cuda:1"), Precision::Bf16);
        assert_eq!(Precision::default_for("cpu"), Precision::F32);
        assert_eq!(Precision::Bf16.compute_dtype(), DType::BF16);
    }

    #[test]
    fn bf16_on_the_cpu_is_refused() {
        let err = Precision::Bf16
            .check_device(&Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs a CUDA device"), "{err}");
        Precision::F32.check_device(&Device::Cpu).unwrap();
    }

    #[test]
    fn configs_without_the_field_read_as_f32() {
        #[derive(Deserialize)]
        struct Old {
            #[serde(default)]
            precision: Precision,
        }
        let old: Old = serde_json::from_str("{}").unwrap();
        assert_eq!(old.precision, Precision::F32);
    }
}
