//! Saving a run and resuming it exactly: the checkpoint holds the model, the optimizer's state,
//! the EMA average and the loss's state beside the run state, and a resumed run refuses a
//! checkpoint that lacks any of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use maxsup_optim::{ModelEma, OptimizerState};

use super::{named_tensors, RunState, Trainer, LAST_CHECKPOINT};
use crate::checkpoint::{load_checkpoint, save_checkpoint, CheckpointTensors};
use crate::data_parallel::DataParallel;
use crate::recipe::TrainConfig;

impl Trainer {
    /// Continues the run saved in `checkpoint`, with the configuration stored in it.
    pub fn resume(checkpoint: &Path) -> Result<Self> {
        Self::resume_with(checkpoint, |saved, _| Ok(saved.clone()))
    }

    /// [`Trainer::resume`] with the saved configuration replaced by `config(saved, completed
    /// epochs)`: e.g. more epochs, or another output directory. Only what a caller changes
    /// differs from an uninterrupted run.
    pub fn resume_with(
        checkpoint: &Path,
        config: impl FnOnce(&TrainConfig, usize) -> Result<TrainConfig>,
    ) -> Result<Self> {
        Self::resume_data_parallel(checkpoint, config, |_| Ok(None))
    }

    /// [`Trainer::resume_with`] for one process of a data-parallel run: every rank reads the
    /// same checkpoint, then `join` builds the rank's [`DataParallel`] for the resolved
    /// configuration (its device decides the collective; `None` for a single process).
    pub fn resume_data_parallel(
        checkpoint: &Path,
        config: impl FnOnce(&TrainConfig, usize) -> Result<TrainConfig>,
        join: impl FnOnce(&TrainConfig) -> Result<Option<DataParallel>>,
    ) -> Result<Self> {
        let (tensors, mut state): (CheckpointTensors, RunState) =
            load_checkpoint(checkpoint, &Device::Cpu)?;
        state.config = config(&state.config, state.next_epoch)?;
        let parallel = join(&state.config)?;
        let mut trainer = Self::build(state.config.clone(), parallel)?;
        trainer
            .restore(tensors, state)
            .with_context(|| format!("restoring {}", checkpoint.display()))?;
        Ok(trainer)
    }

    /// Writes the whole run state to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors = CheckpointTensors {
            model: named_tensors(self.model.as_ref())
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect(),
            optimizer: self.optimizer.export_state()?.to_tensor_map()?,
            ema: match &self.ema {
                Some(ema) => ema.export_state()?,
                None => HashMap::new(),
            },
            loss: self.criterion.state(),
        };
        save_checkpoint(path, &tensors, &self.state)
    }

    /// After the first step every trainable parameter has optimizer state (all of them get a
    /// gradient, which the model tests check; SGD without momentum keeps none): a checkpoint
    /// lacking some would resume with fresh moments for those parameters, i.e. not exactly.
    fn check_optimizer_state_complete(
        &self,
        saved: &std::collections::HashMap<String, Tensor>,
        state: &RunState,
    ) -> Result<()> {
        let keeps_state = match state.config.optimizer {
            crate::OptimizerConfig::Sgd { momentum, .. } => momentum != 0.0,
            crate::OptimizerConfig::AdamW { .. } => true,
        };
        if state.global_step == 0 || !keeps_state {
            return Ok(());
        }
        let with_state: std::collections::HashSet<&str> = saved
            .keys()
            .filter_map(|k| k.rsplit_once('.').map(|(name, _)| name))
            .collect();
        if let Some(p) = self
            .model
            .params()
            .trainable()
            .find(|p| !with_state.contains(p.name.as_str()))
        {
            bail!(
                "checkpoint lacks the optimizer state of `{}` after {} steps ({} of the {} \
                 parameters have some); resuming would not continue the run exactly",
                p.name,
                state.global_step,
                with_state.len(),
                self.model.params().trainable().count()
            );
        }
        Ok(())
    }

    fn restore(&mut self, tensors: CheckpointTensors, state: RunState) -> Result<()> {
        for entry in self.model.params().entries() {
            let saved = tensors
                .model
                .get(&entry.name)
                .with_context(|| format!("checkpoint lacks model tensor `{}`", entry.name))?;
            if saved.dims() != entry.var.dims() {
                bail!(
                    "model tensor `{}`: checkpoint shape {:?}, model shape {:?}",
                    entry.name,
                    saved.dims(),
                    entry.var.dims()
                );
            }
            maxsup_models::check_weight_values(
                &entry.name,
                saved,
                entry.var.dtype(),
                "checkpoint",
            )?;
            entry
                .var
                .set(&saved.to_device(&self.device)?.to_dtype(entry.var.dtype())?)?;
        }
        self.check_optimizer_state_complete(&tensors.optimizer, &state)?;
        let optimizer_tensors = to_device(tensors.optimizer, &self.device)?;
        self.optimizer
            .import_state(&OptimizerState::from_tensor_map(optimizer_tensors)?)?;
        if let Some(p) = self.parallel.as_mut() {
            p.broadcast_model(self.model.as_ref())
                .context("giving every rank rank 0's restored weights")?;
        }
        if let Some(ema) = self.ema.as_mut() {
            // A run with EMA that lacks (part of) its average would restart it: not exact.
            if let Some(e) = self
                .model
                .params()
                .entries()
                .iter()
                .find(|e| !tensors.ema.contains_key(&e.name))
            {
                bail!(
                    "checkpoint lacks the EMA average of `{}` (the run uses --ema-decay {}); \
                     resuming would restart the EMA",
                    e.name,
                    ema.decay()
                );
            }
            *ema = ModelEma::from_state(to_device(tensors.ema, &self.device)?, ema.decay())?;
        }
        self.criterion
            .load_state(&to_device(tensors.loss, &self.device)?)?;
        self.state = state;
        Ok(())
    }

    /// The run directory's last checkpoint, if any.
    pub fn last_checkpoint(out_dir: &Path) -> Option<PathBuf> {
        let p = out_dir.join(LAST_CHECKPOINT);
        p.exists().then_some(p)
    }
}

fn to_device(map: HashMap<String, Tensor>, device: &Device) -> Result<HashMap<String, Tensor>> {
    map.into_iter()
        .map(|(k, t)| Ok((k, t.to_device(device)?)))
        .collect()
}
