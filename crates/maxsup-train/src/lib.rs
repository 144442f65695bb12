//! The training engine behind `train-conv` and `train-vit`.
//!
//! A [`TrainConfig`] (from a [recipe preset](TrainConfig::preset), overridable field by field)
//! becomes a [`Trainer`]: model, optimizer, LR schedule, loss with its alpha schedule, EMA and
//! data loaders. [`Trainer::run`] trains epoch by epoch, evaluates (top-1/top-5, NLL, ECE) and
//! writes an atomic checkpoint after every epoch; [`Trainer::resume`] continues a run exactly (on
//! the CPU a resumed run ends with the same weights as an uninterrupted one).

mod batch_tensor;
mod checkpoint;
mod components;
mod data_parallel;
mod data_setup;
mod describe;
mod device;
mod evaluate;
mod events;
mod precision;
mod recipe;
mod trainer;

pub use batch_tensor::images_tensor;
pub use checkpoint::{
    is_training_checkpoint, load_checkpoint, save_checkpoint, write_atomically, CheckpointTensors,
};
pub use components::{build_criterion, build_model, build_optimizer, build_schedule};
pub use data_parallel::{model_checksum, DataParallel};
pub use data_setup::{
    build_eval_loader, build_loaders, build_loaders_for_rank, open_split, DataLoaders, EvalInput,
    Split,
};
pub use device::{
    cuda_device_count, device_for_rank, parse_device, prepare_attention, prepare_convolutions,
    prepare_precision, DeviceSpec,
};
pub use evaluate::{evaluate, evaluate_sharded};
pub use events::{EvalStats, Event, Fanout, JsonLinesLog, Observer, Silent, TrainStats};
pub use precision::Precision;
pub use recipe::{
    recipe_names, AugmentConfig, DataSource, OptimizerConfig, ScheduleConfig, TrainConfig,
    TrainData,
};
pub use trainer::{RunState, Trainer, BEST_CHECKPOINT, CONFIG_FILE, LAST_CHECKPOINT, LOG_FILE};
