//! The training loop: epochs of steps, evaluation, atomic checkpoints and exact resume.

mod checkpointing;
mod step_report;

use std::fs;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use maxsup_data::Batch;
use maxsup_loss::{Criterion, LossInput};
use maxsup_models::{seed_stochastic_layers, ImageClassifier};
use maxsup_ops::{ReadBack, StagedUpload};
use maxsup_optim::{clip_grad_norm_on_device, LrSchedule, ModelEma, Optimizer};
use serde::{Deserialize, Serialize};

use crate::batch_tensor::images_tensor;
use crate::checkpoint::write_atomically;
use crate::components::{build_criterion, build_model, build_optimizer, build_schedule};
use crate::data_parallel::DataParallel;
use crate::data_setup::{build_loaders_for_rank, DataLoaders};
use crate::device::{parse_device, DeviceSpec};
use crate::evaluate::evaluate_sharded;
use crate::events::{EvalStats, Event, Observer, TrainStats};
use crate::recipe::TrainConfig;
use step_report::{PendingReport, StepPosition, StepResult};

/// File names inside the run directory.
pub const LAST_CHECKPOINT: &str = "last.safetensors";
pub const BEST_CHECKPOINT: &str = "best.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const LOG_FILE: &str = "log.jsonl";

/// The scalar state of a run, stored in the checkpoint metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    pub config: TrainConfig,
    /// The next epoch to train (0-based); equals the number of finished epochs.
    pub next_epoch: usize,
    pub global_step: u64,
    pub best_top1: f64,
    pub best_epoch: Option<usize>,
    pub last_eval: Option<EvalStats>,
    /// The last evaluation of the EMA weights (runs with `--ema-decay`).
    #[serde(default)]
    pub last_ema_eval: Option<EvalStats>,
}

/// A training run: model, optimizer, schedule, loss, EMA, data and progress.
pub struct Trainer {
    pub state: RunState,
    device: Device,
    model: Box<dyn ImageClassifier>,
    optimizer: Box<dyn Optimizer>,
    schedule: Box<dyn LrSchedule + Send + Sync>,
    criterion: Criterion,
    ema: Option<ModelEma>,
    /// A second instance of the model that receives the EMA weights for evaluation (timm
    /// evaluates its `ModelEmaV2` copy after every epoch), so the trained model is never touched.
    ema_model: Option<Box<dyn ImageClassifier>>,
    data: DataLoaders,
    /// The batches' copies to the device (page-locked staging on CUDA): images, and the
    /// Mixup/CutMix targets in buffers of their own (each stream alternates two).
    staging: StagedUpload,
    soft_target_staging: StagedUpload,
    /// The page-locked buffers the step reports come back through (CUDA).
    read_back: ReadBack,
    /// Set in a data-parallel run (several processes).
    parallel: Option<DataParallel>,
}

impl Trainer {
    /// A fresh run from `config` (validated, seeded).
    pub fn new(config: TrainConfig) -> Result<Self> {
        Self::build(config, None)
    }

    /// A fresh run as one process of a data-parallel run over `parallel`: this rank's part of
    /// every global batch, gradients averaged over the ranks, rank 0's weights everywhere.
    pub fn new_data_parallel(config: TrainConfig, parallel: DataParallel) -> Result<Self> {
        Self::build(config, Some(parallel))
    }

    fn build(config: TrainConfig, mut parallel: Option<DataParallel>) -> Result<Self> {
        config.validate()?;
        // A data-parallel rank trains on the device its collective was built on (its own GPU
        // under NCCL, chosen by its local rank); a single process on the configured one.
        let device = match &parallel {
            Some(p) => {
                let device = p.device();
                let wanted = DeviceSpec::parse(&config.device)?;
                if device.is_cpu() != wanted.is_cpu() {
                    bail!(
                        "this data-parallel rank's collective moves {} tensors, but the run is \
                         configured for `{}` (every rank must use the --device it was joined for)",
                        if device.is_cpu() { "CPU" } else { "CUDA" },
                        config.device
                    );
                }
                device
            }
            None => parse_device(&config.device)?,
        };
        crate::prepare_precision(&device, config.precision)?;
        crate::prepare_convolutions(&device, config.cudnn_benchmark)?;
        crate::prepare_attention(&device, config.fused_attention, config.precision)?;
        let (rank, world) = parallel
            .as_ref()
            .map_or((0, 1), |p| (p.rank(), p.world_size()));
        let data = build_loaders_for_rank(&config, rank, world)?;
        let model = build_model(&config, data.num_classes, &device)?;
        if let Some(p) = parallel.as_mut() {
            p.broadcast_model(model.as_ref())
                .context("giving every rank rank 0's initial weights")?;
        }
        let optimizer = build_optimizer(&config, model.as_ref())?;
        let schedule = build_schedule(&config);
        let criterion = build_criterion(&config, data.num_classes, &device)?;
        let (ema, ema_model) = match config.ema_decay {
            Some(decay) => (
                Some(ModelEma::new(named_tensors(model.as_ref()), decay)?),
                Some(build_model(&config, data.num_classes, &device)?),
            ),
            None => (None, None),
        };
        let state = RunState {
            config,
            next_epoch: 0,
            global_step: 0,
            best_top1: -1.0,
            best_epoch: None,
            last_eval: None,
            last_ema_eval: None,
        };
        Ok(Self {
            state,
            device,
            model,
            optimizer,
            schedule,
            criterion,
            ema,
            ema_model,
            data,
            staging: StagedUpload::new(),
            soft_target_staging: StagedUpload::new(),
            read_back: ReadBack::new(),
            parallel,
        })
    }

    pub fn config(&self) -> &TrainConfig {
        &self.state.config
    }

    pub fn model(&self) -> &dyn ImageClassifier {
        self.model.as_ref()
    }

    pub fn out_dir(&self) -> &Path {
        &self.state.config.out_dir
    }

    /// Whether this process writes checkpoints and logs (rank 0, or the only process).
    pub fn is_leader(&self) -> bool {
        self.parallel.as_ref().is_none_or(DataParallel::is_leader)
    }

    pub fn train_batches_per_epoch(&self) -> usize {
        self.data.train.batches_per_epoch()
    }

    /// Trains the remaining epochs, evaluating and checkpointing after each one.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<RunState> {
        if self.is_leader() {
            fs::create_dir_all(self.out_dir())
                .with_context(|| format!("creating {}", self.out_dir().display()))?;
            let config_json = serde_json::to_vec_pretty(&self.state.config)?;
            write_atomically(&self.out_dir().join(CONFIG_FILE), &config_json)?;
        }
        while self.state.next_epoch < self.state.config.epochs {
            self.run_epoch(observer)?;
        }
        Ok(self.state.clone())
    }

    /// Trains, evaluates and checkpoints one epoch.
    pub fn run_epoch(&mut self, observer: &mut dyn Observer) -> Result<(TrainStats, EvalStats)> {
        let epoch = self.state.next_epoch;
        let train = self.train_epoch(epoch, observer)?;
        observer.on_event(&Event::Train(train.clone()))?;
        if let Some(p) = self.parallel.as_mut() {
            p.broadcast_buffers(self.model.as_ref())?;
        }
        let eval = evaluate_sharded(
            self.model.as_ref(),
            &self.data.eval,
            &self.device,
            self.state.config.precision.compute_dtype(),
            epoch,
            self.parallel.as_mut(),
        )?;
        observer.on_event(&Event::Eval(eval.clone()))?;
        let ema_eval = self.evaluate_ema(epoch)?;
        if let Some(e) = &ema_eval {
            observer.on_event(&Event::EmaEval(e.clone()))?;
        }
        self.state.next_epoch = epoch + 1;
        self.state.last_eval = Some(eval.clone());
        self.state.last_ema_eval = ema_eval;
        let best = eval.top1 > self.state.best_top1;
        if best {
            self.state.best_top1 = eval.top1;
            self.state.best_epoch = Some(epoch);
        }
        if let Some(p) = self.parallel.as_mut() {
            let checksum = p.check_replicas(self.model.as_ref(), epoch)?;
            observer.on_event(&Event::Replicas {
                epoch,
                world_size: p.world_size(),
                checksum: format!("{checksum:016x}"),
            })?;
            if !p.is_leader() {
                return Ok((train, eval));
            }
        }
        let last = self.out_dir().join(LAST_CHECKPOINT);
        self.save(&last)?;
        observer.on_event(&Event::Checkpoint {
            epoch,
            path: last.clone(),
            best: false,
        })?;
        if best {
            let best_path = self.out_dir().join(BEST_CHECKPOINT);
            let bytes = fs::read(&last).with_context(|| format!("reading {}", last.display()))?;
            write_atomically(&best_path, &bytes)?;
            observer.on_event(&Event::Checkpoint {
                epoch,
                path: best_path,
                best: true,
            })?;
        }
        Ok((train, eval))
    }

    /// The EMA weights evaluated like the model (None without EMA). Best-checkpoint selection
    /// stays on the trained model, as in DeiT's `main.py`.
    fn evaluate_ema(&mut self, epoch: usize) -> Result<Option<EvalStats>> {
        let (Some(ema), Some(model)) = (&self.ema, &self.ema_model) else {
            return Ok(None);
        };
        ema.copy_into(
            model
                .params()
                .entries()
                .iter()
                .map(|e| (e.name.as_str(), &e.var)),
        )?;
        let stats = evaluate_sharded(
            model.as_ref(),
            &self.data.eval,
            &self.device,
            self.state.config.precision.compute_dtype(),
            epoch,
            self.parallel.as_mut(),
        )
        .context("evaluating the EMA weights")?;
        Ok(Some(stats))
    }

    fn train_epoch(&mut self, epoch: usize, observer: &mut dyn Observer) -> Result<TrainStats> {
        let batches = self.data.train.batches_per_epoch();
        if batches == 0 {
            bail!(
                "the training set has fewer samples than one batch ({})",
                self.state.config.batch_size
            );
        }
        self.criterion.set_epoch(epoch);
        let alpha = self.criterion.alpha();
        let first_lr = self.schedule.lr(epoch, 0, batches);
        let epochs = self.state.config.epochs;
        observer.on_event(&Event::EpochStart {
            epoch,
            epochs,
            batches,
            lr: first_lr,
            alpha,
        })?;
        let start = Instant::now();
        let mut sums = EpochSums::default();
        let mut lr = first_lr;
        let mut stream = self.data.train.epoch(epoch as u64);
        let mut ran = 0;
        // Step t's report is read after step t + 1 is queued (see `step_report`).
        let mut pending: Option<PendingReport> = None;
        for iter in 0.. {
            let Some(batch) = stream.next() else { break };
            ran += 1;
            let batch =
                batch.with_context(|| format!("loading training batch {iter} of epoch {epoch}"))?;
            lr = self.schedule.lr(epoch, iter, batches);
            self.optimizer.set_lr(lr);
            // Drop-path masks depend only on (seed, global step): a resumed run repeats them.
            seed_stochastic_layers(
                self.state.config.seed ^ self.state.global_step.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let position = StepPosition {
                epoch,
                batch: iter,
                global_step: self.state.global_step + 1,
                lr,
                samples: batch.indices.clone(),
            };
            let queued = self
                .step(&batch, alpha, position.clone())
                .with_context(|| self.failure_context(&position))?;
            self.state.global_step += 1;
            if let Some(done) = pending.replace(queued) {
                self.report_step(done, batches, start, &mut sums, observer)?;
            }
        }
        if let Some(done) = pending.take() {
            self.report_step(done, batches, start, &mut sums, observer)?;
        }
        if ran != batches {
            bail!("epoch {epoch} ran {ran} of its {batches} training batches (the loader stopped early)");
        }
        self.criterion.end_epoch()?;
        let seconds = start.elapsed().as_secs_f64();
        Ok(sums.stats(
            epoch,
            alpha,
            lr,
            seconds,
            stream.stall_time().as_secs_f64(),
            stream.skipped(),
        ))
    }

    /// Reads a queued step's report, adds it to the epoch's sums and tells the observer.
    fn report_step(
        &mut self,
        pending: PendingReport,
        batches: usize,
        start: Instant,
        sums: &mut EpochSums,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let at = pending.position.clone();
        let step = pending
            .read(&mut self.read_back, self.parallel.as_mut())
            .with_context(|| self.failure_context(&at))?;
        sums.add(&step, step.samples);
        let images_per_second = sums.images as f64 / start.elapsed().as_secs_f64();
        observer.on_event(&Event::Step {
            epoch: at.epoch,
            batch: at.batch,
            batches,
            global_step: at.global_step,
            loss: step.loss,
            lr: at.lr,
            images_per_second,
        })
    }

    /// Queues one optimization step on `batch` and its report; reads nothing from the device.
    fn step(&mut self, batch: &Batch, alpha: f64, position: StepPosition) -> Result<PendingReport> {
        if let Some(p) = self.parallel.as_mut() {
            p.broadcast_buffers(self.model.as_ref())?;
        }
        // Lives through the forward and backward passes below.
        let _sync_bn = match &self.parallel {
            Some(p) if self.state.config.sync_bn => Some(p.sync_batch_norm()),
            _ => None,
        };
        let x = images_tensor(
            batch,
            &self.device,
            self.state.config.precision.compute_dtype(),
            Some(&mut self.staging),
        )?;
        // Channels-last: one transpose of the batch here; the ops keep the format through the
        // network (evaluation stays NCHW: eval-mode BatchNorm is composed and gives NCHW anyway).
        let x = match self.state.config.channels_last {
            true => maxsup_ops::to_channels_last(&x)?,
            false => x,
        };
        // The labels stay on the host for the losses' range check (no read from a GPU); the
        // device copy is for the accuracy.
        let host_labels = Tensor::from_slice(&batch.labels, batch.len(), &Device::Cpu)?;
        let y = host_labels.to_device(&self.device)?;
        let soft = match &batch.soft_targets {
            Some(s) => Some(self.soft_target_staging.upload(
                s,
                (batch.len(), batch.num_classes),
                &self.device,
            )?),
            None => None,
        };
        // The loss runs in f32 whatever the activations' dtype.
        let (logits, dense) = if self.criterion.needs_dense_logits() {
            let feature_map = self.model.forward_stage(&x, true)?;
            let dense = self.model.dense_logits(&feature_map.detach())?;
            (
                self.model
                    .forward_from_stage(&feature_map, true)?
                    .to_dtype(DType::F32)?,
                Some(dense.to_dtype(DType::F32)?),
            )
        } else {
            (self.model.forward_t(&x, true)?.to_dtype(DType::F32)?, None)
        };
        let input = LossInput {
            logits: &logits,
            targets: &host_labels,
            soft_targets: soft.as_ref(),
            dense_logits: dense.as_ref(),
        };
        let loss = {
            // Checked when the report is read.
            let _deferred = maxsup_loss::defer_finite_checks();
            self.criterion.loss(&input, true)?
        };
        let mut grads = loss.backward()?;
        if let Some(p) = self.parallel.as_mut() {
            p.average_gradients(&mut grads, &self.optimizer.vars())?;
        }
        if let Some(max_norm) = self.state.config.clip_grad {
            // No read of the norm: the step queues on (the loss check catches a non-finite one).
            clip_grad_norm_on_device(&mut grads, &self.optimizer.vars(), max_norm)?;
        }
        self.optimizer.step(&grads)?;
        if let Some(ema) = self.ema.as_mut() {
            ema.update(named_tensors(self.model.as_ref()))?;
        }
        PendingReport::queue(
            &mut self.read_back,
            &loss,
            &logits,
            &y,
            &host_labels,
            alpha,
            position,
        )
    }

    /// What to tell the user when a step fails (e.g. a non-finite loss).
    fn failure_context(&self, at: &StepPosition) -> String {
        let shown: Vec<String> = at.samples.iter().take(8).map(|i| i.to_string()).collect();
        let last = self.out_dir().join(LAST_CHECKPOINT);
        let checkpoint = if self.state.next_epoch > 0 && last.exists() {
            format!(
                "last good checkpoint: {} (after epoch {})",
                last.display(),
                self.state.next_epoch - 1
            )
        } else {
            "no checkpoint written yet".to_string()
        };
        format!(
            "training step failed at epoch {}, batch {} (global step {}), samples [{}{}]; {checkpoint}",
            at.epoch,
            at.batch,
            at.global_step - 1,
            shown.join(", "),
            if at.samples.len() > 8 { ", ..." } else { "" }
        )
    }
}

fn named_tensors(model: &dyn ImageClassifier) -> impl Iterator<Item = (&str, &Tensor)> {
    model
        .params()
        .entries()
        .iter()
        .map(|e| (e.name.as_str(), e.var.as_tensor()))
}

#[derive(Default)]
struct EpochSums {
    steps: usize,
    images: usize,
    loss: f64,
    correct: usize,
    reg: f64,
    err: f64,
}

impl EpochSums {
    fn add(&mut self, s: &StepResult, images: usize) {
        self.steps += 1;
        self.images += images;
        self.loss += s.loss;
        self.correct += s.correct;
        self.reg += s.ls_regularization;
        self.err += s.ls_error_amplification;
    }

    fn stats(
        &self,
        epoch: usize,
        alpha: f64,
        lr_last: f64,
        seconds: f64,
        stall: f64,
        skipped: usize,
    ) -> TrainStats {
        let steps = self.steps.max(1) as f64;
        TrainStats {
            epoch,
            loss: self.loss / steps,
            accuracy: self.correct as f64 / self.images.max(1) as f64,
            ls_regularization: self.reg / steps,
            ls_error_amplification: self.err / steps,
            alpha,
            lr_last,
            images: self.images,
            seconds,
            images_per_second: self.images as f64 / seconds.max(1e-9),
            loader_stall_seconds: stall,
            skipped_samples: skipped,
        }
    }
}
