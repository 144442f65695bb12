//! The DeiT network and its [`ImageClassifier`] implementation.

use candle_core::{DType, Device, Result, Tensor, Var};

use super::block::{timm_linear as linear, Block, LN_EPS};
use super::config::DeiTConfig;
use crate::classifier::ImageClassifier;
use crate::info::{DataConfig, ModelInfo};
use crate::init::Init;
use crate::layers::{conv::ConvSpec, linear_drop_path_rates, Conv2d, LayerNorm, Linear};
use crate::params::{ParamBuilder, ParamStore};

/// DeiT with timm's names: `cls_token`, `pos_embed`, `patch_embed.proj`, `blocks.N.norm1`,
/// `blocks.N.attn.qkv`, `blocks.N.attn.proj`, `blocks.N.norm2`, `blocks.N.mlp.fc1/fc2`, `norm`,
/// `head`.
#[derive(Debug)]
pub struct DeiT {
    name: String,
    config: DeiTConfig,
    cls_token: Tensor,
    pos_embed: Tensor,
    patch_embed: Conv2d,
    blocks: Vec<Block>,
    norm: LayerNorm,
    head: Linear,
    params: ParamStore,
    info: ModelInfo,
}

impl DeiT {
    /// Builds the network with timm's init: trunc-normal(0.02) for Linear weights, `pos_embed`
    /// and `cls_token`; zero Linear biases; LayerNorm 1/0; the patch-embedding conv keeps
    /// PyTorch's default conv init (timm does not re-initialise it).
    pub fn new(name: &str, config: DeiTConfig, device: &Device, seed: u64) -> anyhow::Result<Self> {
        config.validate()?;
        let builder = ParamBuilder::new(device, DType::F32, seed);
        let root = builder.root();
        let d = config.embed_dim;
        let p = config.patch_size;
        // timm's state_dict order: cls_token, pos_embed, patch_embed, blocks, norm, head.
        let cls_token = root.param("cls_token", &[1, 1, d], Init::timm_trunc_normal())?;
        let pos_embed = root.param(
            "pos_embed",
            &[1, 1 + config.num_patches(), d],
            Init::timm_trunc_normal(),
        )?;
        let patch_embed = Conv2d::new(
            &root.pp("patch_embed").pp("proj"),
            ConvSpec {
                in_channels: 3,
                out_channels: d,
                kernel: p,
                stride: p,
                padding: 0,
                bias: true,
                blurpool: false,
                weight_init: Init::torch_default(3 * p * p),
            },
        )?;
        let rates = linear_drop_path_rates(config.drop_path_rate, config.depth);
        let blocks = rates
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                Block::new(
                    &root.pp("blocks").pp(i),
                    d,
                    config.num_heads,
                    config.mlp_ratio,
                    r,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = LayerNorm::new(&root.pp("norm"), d, LN_EPS)?;
        let head = linear(&root.pp("head"), d, config.num_classes)?;
        let params = builder.finish();
        // Built outside the registry: the family's defaults (the registry declares each entry's).
        let info = ModelInfo::deit(DataConfig::imagenet_deit(config.img_size));
        Ok(Self {
            name: name.to_string(),
            config,
            cls_token,
            pos_embed,
            patch_embed,
            blocks,
            norm,
            head,
            params,
            info,
        })
    }

    /// Replaces the declared facts (the registry's entry for this model).
    pub fn with_info(mut self, info: ModelInfo) -> Self {
        self.info = info;
        self
    }

    pub fn config(&self) -> &DeiTConfig {
        &self.config
    }

    /// The drop-path rate of each block (timm's linear schedule).
    pub fn block_drop_path_rates(&self) -> Vec<f64> {
        self.blocks.iter().map(|b| b.drop_path_rate()).collect()
    }

    /// Final norm, then the CLS token: [B, 1+N, D] -> [B, D].
    fn pool(&self, tokens: &Tensor) -> Result<Tensor> {
        self.norm.forward(&tokens.narrow(1, 0, 1)?)?.squeeze(1)
    }

    /// Images to the tokens the first block takes: patches embedded, the CLS token first, the
    /// position embedding added ([B, 1+N, D]).
    fn embed(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let size = self.config.img_size;
        if h != size || w != size {
            candle_core::bail!(
                "{} expects {size}x{size} images (pos_embed is fixed), got {h}x{w}",
                self.name
            );
        }
        // [B, D, h', w'] -> [B, N, D]
        let patches = self
            .patch_embed
            .forward(x)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let cls = crate::layers::like(&self.cls_token, &patches)?.broadcast_as((
            b,
            1,
            self.config.embed_dim,
        ))?;
        let pos_embed = crate::layers::like(&self.pos_embed, &patches)?;
        Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&pos_embed)
    }

    /// `blocks` on tokens `t`, their sub-blocks as one chain (`maxsup_ops::residual_branches`).
    fn run_blocks(&self, t: &Tensor, blocks: &[Block], train: bool) -> Result<Tensor> {
        let mut subs = Vec::with_capacity(2 * blocks.len());
        for block in blocks {
            subs.extend(block.sub_blocks(t, train)?);
        }
        let branches: Vec<_> = subs.iter().map(|s| s.branch()).collect();
        maxsup_ops::residual_branches(t, &branches)
    }
}

impl ImageClassifier for DeiT {
    fn name(&self) -> &str {
        &self.name
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.pool(&self.forward_stage(x, train)?)
    }

    fn forward_head(&self, features: &Tensor) -> Result<Tensor> {
        self.head.forward(features)
    }

    fn forward_stage(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.run_blocks(&self.embed(x)?, &self.blocks, train)
    }

    fn forward_cam(&self, x: &Tensor) -> Result<(Var, Tensor)> {
        let Some((last, rest)) = self.blocks.split_last() else {
            candle_core::bail!(
                "{}: Grad-CAM targets the last block, and it has none",
                self.name
            )
        };
        let input = self.run_blocks(&self.embed(x)?, rest, false)?.detach();
        let target = Var::from_tensor(&last.norm1(&input)?.detach())?;
        let tokens = last.forward_from_norm1(&input, target.as_tensor())?;
        Ok((target, self.forward_from_stage(&tokens, false)?))
    }

    fn forward_from_stage(&self, activation: &Tensor, _train: bool) -> Result<Tensor> {
        self.forward_head(&self.pool(activation)?)
    }

    fn dense_logits(&self, _feature_map: &Tensor) -> Result<Tensor> {
        candle_core::bail!(
            "dense_logits is defined for convolutional models only; {} has no spatial feature map",
            self.name
        )
    }

    fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    fn num_features(&self) -> usize {
        self.config.embed_dim
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }
}
