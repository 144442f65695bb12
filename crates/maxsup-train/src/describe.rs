//! A run's configuration in one line of prose, for the tables and reports made from its
//! checkpoints: what a reader needs to tell two sets of rows apart (the recipe, the network, the
//! schedule, the precision and the device), read back from the `config.json` the run saved.

use std::path::Path;

use anyhow::{Context, Result};

use crate::{OptimizerConfig, ScheduleConfig, TrainConfig, CONFIG_FILE};

impl TrainConfig {
    /// The configuration the run in `dir` saved next to its checkpoints (`config.json`).
    pub fn read_run_config(dir: &Path) -> Result<TrainConfig> {
        let path = dir.join(CONFIG_FILE);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// How the run was trained, in one line, leaving out the loss and its own settings (tables
    /// have a row per loss) and the output directory.
    pub fn describe(&self) -> String {
        let optimizer = match self.optimizer {
            OptimizerConfig::Sgd { momentum, nesterov } => format!(
                "SGD{} momentum {momentum}",
                if nesterov { " with Nesterov" } else { "" }
            ),
            OptimizerConfig::AdamW { beta1, beta2, .. } => format!("AdamW ({beta1}, {beta2})"),
        };
        let schedule = match &self.schedule {
            ScheduleConfig::Cosine {
                warmup_epochs: 0,
                min_lr,
                ..
            } => format!("cosine to {min_lr}"),
            ScheduleConfig::Cosine {
                warmup_epochs,
                warmup_lr,
                min_lr,
            } => format!("{warmup_epochs}-epoch warm-up from {warmup_lr}, cosine to {min_lr}"),
            ScheduleConfig::Step { step_size, gamma } => {
                format!("x{gamma} every {step_size} epochs")
            }
            ScheduleConfig::MultiStep { milestones, gamma } => {
                format!("x{gamma} at epochs {milestones:?}")
            }
            ScheduleConfig::Ffcv { peak_epoch } => {
                format!("FFCV ramp peaking at epoch {peak_epoch}")
            }
        };
        let subset = match self.train_subset {
            Some(n) => format!(", the first {n} training images"),
            None => String::new(),
        };
        let format = if self.channels_last {
            " channels-last"
        } else {
            ""
        };
        format!(
            "recipe `{}`: {}, {} epochs, batch {}, {optimizer}, lr {} ({schedule}), weight decay {}, \
             {}{format} on {}, seed {}{subset}",
            self.recipe,
            self.model,
            self.epochs,
            self.batch_size,
            self.scaled_lr(),
            self.weight_decay,
            self.precision,
            self.device,
            self.seed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_config_reads_back_and_describes_its_recipe() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = TrainConfig::preset("cifar10-resnet18").unwrap();
        c.train_subset = Some(1000);
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            serde_json::to_vec(&c).unwrap(),
        )
        .unwrap();
        let read = TrainConfig::read_run_config(dir.path()).unwrap();
        assert_eq!(read, c);
        assert_eq!(
            read.describe(),
            "recipe `cifar10-resnet18`: resnet18_cifar, 15 epochs, batch 512, SGD with Nesterov \
             momentum 0.9, lr 0.4 (2-epoch warm-up from 0.04, cosine to 0), weight decay 0.0005, \
             f32 on cpu, seed 0, the first 1000 training images"
        );
        let e = TrainConfig::read_run_config(&dir.path().join("missing")).unwrap_err();
        assert!(format!("{e:#}").contains("missing/config.json"), "{e:#}");
    }
}
