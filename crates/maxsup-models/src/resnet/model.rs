//! The ResNet network and its [`ImageClassifier`] implementation.

use candle_core::{DType, Device, Result, Tensor};

use super::blocks::{conv, Block, BlockSpec};
use super::config::{BlockKind, ResNetConfig, Stem};
use crate::classifier::ImageClassifier;
use crate::info::{DataConfig, ModelInfo};
use crate::init::Init;
use crate::layers::{BatchNorm2d, Conv2d, Linear};
use crate::params::{ParamBuilder, ParamStore};

/// A ResNet whose parameters carry torchvision's names (`conv1`, `bn1`, `layer1.0.conv1`,
/// `layer1.0.downsample.0`, `fc`, ...), so torchvision checkpoints load unchanged.
#[derive(Debug)]
pub struct ResNet {
    name: String,
    config: ResNetConfig,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    stages: Vec<Vec<Block>>,
    fc: Linear,
    params: ParamStore,
    info: ModelInfo,
}

impl ResNet {
    /// Builds the network with torchvision's initialisation (kaiming-normal fan_out convs,
    /// BN weight 1 / bias 0, default `nn.Linear` init for `fc`) drawn from `seed`.
    pub fn new(name: &str, config: ResNetConfig, device: &Device, seed: u64) -> Result<Self> {
        if config.layers.len() != config.widths.len() || config.layers.is_empty() {
            candle_core::bail!("ResNet config needs one width per stage, got {config:?}");
        }
        let builder = ParamBuilder::new(device, DType::F32, seed);
        let root = builder.root();
        let (kernel, stride) = match config.stem {
            Stem::ImageNet => (7, 2),
            Stem::Cifar => (3, 1),
        };
        let conv1 = conv(
            &root.pp("conv1"),
            3,
            config.stem_width,
            kernel,
            stride,
            config.blurpool,
        )?;
        let bn1 = BatchNorm2d::new(&root.pp("bn1"), config.stem_width)?;
        let mut inp = config.stem_width;
        let mut stages = Vec::with_capacity(config.layers.len());
        for (i, (&n, &planes)) in config.layers.iter().zip(&config.widths).enumerate() {
            let stage_scope = root.pp(format!("layer{}", i + 1));
            let mut blocks = Vec::with_capacity(n);
            for j in 0..n {
                let spec = BlockSpec {
                    inp,
                    planes,
                    stride: if i > 0 && j == 0 { 2 } else { 1 },
                    blurpool: config.blurpool,
                };
                let s = stage_scope.pp(j);
                blocks.push(match config.block {
                    BlockKind::Basic => Block::basic(&s, &spec)?,
                    BlockKind::Bottleneck => Block::bottleneck(&s, &spec)?,
                });
                inp = planes * config.block.expansion();
            }
            stages.push(blocks);
        }
        let features = config.num_features();
        let fc_init = Init::torch_default(features);
        let fc = Linear::new(
            &root.pp("fc"),
            features,
            config.num_classes,
            fc_init.clone(),
            fc_init,
        )?;
        let params = builder.finish();
        // Built outside the registry: the family's defaults (the registry declares each entry's).
        let info = ModelInfo::resnet(match config.stem {
            Stem::ImageNet => DataConfig::IMAGENET_RESNET,
            Stem::Cifar => DataConfig::cifar(32),
        });
        Ok(Self {
            name: name.to_string(),
            config,
            conv1,
            bn1,
            stages,
            fc,
            params,
            info,
        })
    }

    /// Replaces the declared facts (the registry's entry for this model).
    pub fn with_info(mut self, info: ModelInfo) -> Self {
        self.info = info;
        self
    }

    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// Global average pool [B, C, h, w] -> [B, C]: one reduction over both dims (under bf16 one
    /// rounding of the f32 sum, not two; one backward node).
    fn pool(activation: &Tensor) -> Result<Tensor> {
        activation.mean((2, 3))
    }
}

impl ImageClassifier for ResNet {
    fn name(&self) -> &str {
        &self.name
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Self::pool(&self.forward_stage(x, train)?)
    }

    fn forward_head(&self, features: &Tensor) -> Result<Tensor> {
        self.fc.forward(features)
    }

    fn forward_stage(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = self.bn1.forward_relu_t(&self.conv1.forward(x)?, train)?;
        if self.config.stem == Stem::ImageNet {
            y = maxsup_ops::max_pool2d(&y, 3, 2, 1)?;
        }
        // The body as one chain (`maxsup_ops::residual_blocks`): in train mode on CUDA one
        // graph node, so no block boundary costs candle's zero-fill and add of its gradient.
        // There channels-last activations enter as an [N, H, W, C] tensor: no permutation node
        // (and its transposing backward) at either end. Elsewhere each of a block's composed
        // ops permutes on its own, and the op layout would only add permutation nodes.
        let blocks: Vec<_> = self
            .stages
            .iter()
            .flatten()
            .map(|b| b.residual_block(&y))
            .collect::<Result<_>>()?;
        let op_layout = train && y.device().is_cuda() && maxsup_ops::is_channels_last(&y);
        match op_layout {
            true => maxsup_ops::channels_last_view(&maxsup_ops::residual_blocks_nhwc(
                &maxsup_ops::nhwc_view(&y)?,
                &blocks,
                train,
            )?),
            false => maxsup_ops::residual_blocks(&y, &blocks, train),
        }
    }

    fn forward_from_stage(&self, activation: &Tensor, _train: bool) -> Result<Tensor> {
        self.forward_head(&Self::pool(activation)?)
    }

    fn dense_logits(&self, feature_map: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = feature_map.dims4()?;
        // [B, C, h, w] -> [B*h*w, C] -> fc -> [B, h, w, K] -> [B, K, h, w].
        let flat = feature_map.permute((0, 2, 3, 1))?.reshape((b * h * w, c))?;
        let k = self.fc.out_features();
        self.fc
            .forward(&flat)?
            .reshape((b, h, w, k))?
            .permute((0, 3, 1, 2))
    }

    fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    fn num_features(&self) -> usize {
        self.config.num_features()
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }
}
