//! Builds the model, optimizer, LR schedule and criterion a [`TrainConfig`] describes.

use anyhow::{Context, Result};
use candle_core::Device;
use maxsup_loss::{AlphaSchedule, Criterion, CriterionConfig};
use maxsup_models::{create_model, ImageClassifier, ModelOptions};
use maxsup_optim::{
    split_weight_decay, AdamW, AdamWConfig, FfcvLr, FfcvShape, Granularity, LrSchedule,
    MultiStepLr, Optimizer, Sgd, SgdConfig, StepLr, TimmCosineLr,
};

use crate::recipe::{OptimizerConfig, ScheduleConfig, TrainConfig};

/// The model, initialized from the run's seed.
pub fn build_model(
    config: &TrainConfig,
    num_classes: usize,
    device: &Device,
) -> Result<Box<dyn ImageClassifier>> {
    let is_deit =
        maxsup_models::model_family(&config.model) == Some(maxsup_models::ModelFamily::DeiT);
    let options = ModelOptions {
        num_classes: Some(num_classes),
        drop_path_rate: if is_deit { config.drop_path } else { 0.0 },
        blurpool: config.blurpool && !is_deit,
        img_size: is_deit.then_some(config.input.image_size),
        seed: config.seed,
    };
    create_model(&config.model, &options, device)
        .with_context(|| format!("building model `{}`", config.model))
}

/// The optimizer over the model's trainable parameters, with the recipe's weight-decay groups.
pub fn build_optimizer(
    config: &TrainConfig,
    model: &dyn ImageClassifier,
) -> Result<Box<dyn Optimizer>> {
    let named: Vec<(String, candle_core::Var)> = model
        .params()
        .trainable()
        .map(|e| (e.name.clone(), e.var.clone()))
        .collect();
    let lr = config.scaled_lr();
    // Norms and biases never decay; the model names anything else it exempts (timm's rule).
    let groups = split_weight_decay(named, config.weight_decay, model.info().no_weight_decay)?;
    Ok(match config.optimizer {
        OptimizerConfig::Sgd { momentum, nesterov } => Box::new(Sgd::new(
            groups.into(),
            SgdConfig {
                lr,
                momentum,
                nesterov,
            },
        )?),
        OptimizerConfig::AdamW { beta1, beta2, eps } => Box::new(AdamW::new(
            groups.into(),
            AdamWConfig {
                lr,
                betas: (beta1, beta2),
                eps,
            },
        )?),
    })
}

/// The learning-rate schedule, a pure function of the position in training.
pub fn build_schedule(config: &TrainConfig) -> Box<dyn LrSchedule + Send + Sync> {
    let base_lr = config.scaled_lr();
    let granularity = if config.lr_per_iteration {
        Granularity::PerIteration
    } else {
        Granularity::PerEpoch
    };
    match &config.schedule {
        ScheduleConfig::Step { step_size, gamma } => Box::new(StepLr {
            base_lr,
            step_size: *step_size,
            gamma: *gamma,
        }),
        ScheduleConfig::MultiStep { milestones, gamma } => Box::new(MultiStepLr {
            base_lr,
            milestones: milestones.clone(),
            gamma: *gamma,
        }),
        ScheduleConfig::Cosine {
            warmup_epochs,
            warmup_lr,
            min_lr,
        } => Box::new(TimmCosineLr {
            base_lr,
            t_initial: config.epochs as f64,
            lr_min: *min_lr,
            warmup_t: *warmup_epochs as f64,
            warmup_lr_init: *warmup_lr,
            warmup_prefix: false,
            granularity,
        }),
        ScheduleConfig::Ffcv { peak_epoch } => Box::new(FfcvLr {
            base_lr,
            epochs: config.epochs,
            shape: FfcvShape::Cyclic {
                lr_peak_epoch: *peak_epoch,
            },
        }),
    }
}

/// The loss by name with the alpha schedule of the run.
pub fn build_criterion(
    config: &TrainConfig,
    num_classes: usize,
    device: &Device,
) -> Result<Criterion> {
    let criterion = CriterionConfig {
        kind: config.loss,
        num_classes,
        alpha: AlphaSchedule::linear(config.alpha_start, config.alpha_end, config.epochs),
        beta: config.lp_beta,
        gamma: config.focal_gamma,
        zipf_weight: config.zipf_weight,
        zipf_power: 1.0,
    };
    Ok(Criterion::new(criterion, device)?)
}
