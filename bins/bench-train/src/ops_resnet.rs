//! A stand-in ResNet built directly on maxsup-ops' fused layers (conv2d, batch_norm2d, relu,
//! max_pool2d), selected with `--model ops:<name>`.
//!
//! Why: it measures what the registry models gain once their layers call the fused ops
//! (e.g. `BatchNorm2d` -> `maxsup_ops::batch_norm2d`), independently of how far that switch has
//! progressed. Same architectures as torchvision / He et al.; weights are random (the benchmark
//! only times steps), so no checkpoint compatibility is attempted.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};
use maxsup_ops::{batch_norm2d, conv2d, linear, max_pool2d, relu};

/// Conv (no bias) + BatchNorm with its running statistics.
struct ConvBn {
    w: Var,
    gamma: Var,
    beta: Var,
    rm: Var,
    rv: Var,
    stride: usize,
    pad: usize,
}

impl ConvBn {
    fn new(
        vars: &mut Vec<(String, Var)>,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
    ) -> Result<Self> {
        let std = (2.0 / (cout * k * k) as f64).sqrt();
        let w = Var::from_tensor(&Tensor::randn(
            0f32,
            std as f32,
            (cout, cin, k, k),
            &Device::Cpu,
        )?)?;
        let gamma = Var::ones(cout, DType::F32, &Device::Cpu)?;
        let beta = Var::zeros(cout, DType::F32, &Device::Cpu)?;
        let i = vars.len();
        vars.push((format!("{i}.weight"), w.clone()));
        vars.push((format!("{i}.bn.weight"), gamma.clone()));
        vars.push((format!("{i}.bn.bias"), beta.clone()));
        let (rm, rv) = (
            Var::zeros(cout, DType::F32, &Device::Cpu)?,
            Var::ones(cout, DType::F32, &Device::Cpu)?,
        );
        Ok(Self {
            w,
            gamma,
            beta,
            rm,
            rv,
            stride,
            pad: k / 2,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = conv2d(x, self.w.as_tensor(), None, self.stride, self.pad, 1, 1)?;
        Ok(batch_norm2d(
            &y,
            self.gamma.as_tensor(),
            self.beta.as_tensor(),
            &self.rm,
            &self.rv,
            train,
            0.1,
            1e-5,
        )?)
    }
}

/// Basic (two 3x3) or bottleneck (1x1, 3x3, 1x1) residual block with projection shortcut.
struct Block {
    convs: Vec<ConvBn>,
    short: Option<ConvBn>,
}

impl Block {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        for (i, c) in self.convs.iter().enumerate() {
            y = c.forward(&y, train)?;
            if i + 1 < self.convs.len() {
                y = relu(&y)?;
            }
        }
        let s = match &self.short {
            Some(p) => p.forward(x, train)?,
            None => x.clone(),
        };
        Ok(relu(&(y + s)?)?)
    }
}

/// The whole network: stem, stages, global average pool, linear head.
pub struct OpsResNet {
    stem: ConvBn,
    max_pool: bool,
    blocks: Vec<Block>,
    fc_w: Var,
    fc_b: Var,
    /// Trainable parameters with unique names (for the optimizer).
    pub vars: Vec<(String, Var)>,
}

impl OpsResNet {
    /// `ops:resnet18_cifar`, `ops:resnet50` (ImageNet stem), `ops:resnet20_cifar`.
    pub fn new(name: &str, classes: usize) -> Result<Self> {
        let (bottleneck, layers, widths, cifar_stem, stem_w): (bool, Vec<usize>, Vec<usize>, bool, usize) = match name {
            "resnet18_cifar" => (false, vec![2, 2, 2, 2], vec![64, 128, 256, 512], true, 64),
            "resnet18" => (false, vec![2, 2, 2, 2], vec![64, 128, 256, 512], false, 64),
            "resnet50" => (true, vec![3, 4, 6, 3], vec![64, 128, 256, 512], false, 64),
            "resnet20_cifar" => (false, vec![3, 3, 3], vec![16, 32, 64], true, 16),
            other => bail!("unknown ops: model `{other}` (known: resnet18_cifar, resnet18, resnet50, resnet20_cifar)"),
        };
        let mut vars = Vec::new();
        let stem = if cifar_stem {
            ConvBn::new(&mut vars, 3, stem_w, 3, 1)?
        } else {
            ConvBn::new(&mut vars, 3, stem_w, 7, 2)?
        };
        let exp = if bottleneck { 4 } else { 1 };
        let mut blocks = Vec::new();
        let mut cin = stem_w;
        for (si, (&n, &w)) in layers.iter().zip(&widths).enumerate() {
            for bi in 0..n {
                let stride = if bi == 0 && si > 0 { 2 } else { 1 };
                let cout = w * exp;
                let convs = if bottleneck {
                    vec![
                        ConvBn::new(&mut vars, cin, w, 1, 1)?,
                        ConvBn::new(&mut vars, w, w, 3, stride)?,
                        ConvBn::new(&mut vars, w, cout, 1, 1)?,
                    ]
                } else {
                    vec![
                        ConvBn::new(&mut vars, cin, w, 3, stride)?,
                        ConvBn::new(&mut vars, w, w, 3, 1)?,
                    ]
                };
                let short = if stride != 1 || cin != cout {
                    Some(ConvBn::new(&mut vars, cin, cout, 1, stride)?)
                } else {
                    None
                };
                blocks.push(Block { convs, short });
                cin = cout;
            }
        }
        let fc_w = Var::from_tensor(&Tensor::randn(
            0f32,
            (1.0 / cin as f64).sqrt() as f32,
            (classes, cin),
            &Device::Cpu,
        )?)?;
        let fc_b = Var::zeros(classes, DType::F32, &Device::Cpu)?;
        vars.push(("fc.weight".into(), fc_w.clone()));
        vars.push(("fc.bias".into(), fc_b.clone()));
        Ok(Self {
            stem,
            max_pool: !cifar_stem,
            blocks,
            fc_w,
            fc_b,
            vars,
        })
    }

    /// Images [B, 3, H, W] to logits [B, K].
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = relu(&self.stem.forward(x, train)?)?;
        if self.max_pool {
            y = max_pool2d(&y, 3, 2, 1)?;
        }
        for b in &self.blocks {
            y = b.forward(&y, train)?;
        }
        let pooled = y.mean((2, 3))?;
        Ok(linear(
            &pooled,
            self.fc_w.as_tensor(),
            Some(self.fc_b.as_tensor()),
        )?)
    }
}
