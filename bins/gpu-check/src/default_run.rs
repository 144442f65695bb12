//! Issue #14's target "the default CIFAR-10 run (`train-conv --device cuda`) finishes in under
//! 2 minutes", estimated within the check's time: the default recipe run twice, in this
//! process, on a CIFAR-10-shaped random dataset: first a few steps and a small evaluation, whose
//! wall time bounds every one-time cost of a real run (kernels loaded, cuDNN's algorithms
//! chosen for the training and evaluation shapes, the data read); then 100 steps and the whole
//! test split, whose training and evaluation times (the run's log) scale to the recipe's epochs
//! and split sizes. The scaling is linear in images, as a run's steady state is.

use std::path::Path;
use std::time::Instant;

use crate::train_conv::{fake_cifar, train};
use anyhow::{Context, Result};
use maxsup_train::{EvalStats, TrainConfig, TrainStats, LOG_FILE};
use serde_json::{json, Value};

/// The recipe `train-conv` runs when none is named.
fn default_recipe() -> &'static str {
    maxsup_cli::default_recipe(maxsup_cli::ModelFamily::ResNet)
}

/// The target of the issue, in seconds.
pub const TARGET_S: f64 = 120.0;
/// CIFAR-10's training and test images.
const TRAIN_IMAGES: f64 = 50_000.0;
const TEST_IMAGES: f64 = 10_000.0;

/// One run's training and evaluation statistics from its log, and its wall time.
struct Timed {
    train: TrainStats,
    eval: EvalStats,
    wall_s: f64,
}

fn run(
    data: &Path,
    out: &Path,
    device: &str,
    train_images: usize,
    eval_images: usize,
) -> Result<Timed> {
    let (data_dir, out_dir) = (
        data.to_string_lossy().into_owned(),
        out.to_string_lossy().into_owned(),
    );
    let (train_subset, eval_subset) = (train_images.to_string(), eval_images.to_string());
    let flags = [
        "--device",
        device,
        "--cifar10",
        &data_dir,
        "--epochs",
        "1",
        "--train-subset",
        &train_subset,
        "--eval-subset",
        &eval_subset,
        "--no-progress",
        "--out-dir",
        &out_dir,
    ];
    let start = Instant::now();
    train(&flags).with_context(|| format!("train-conv {}", flags.join(" ")))?;
    let wall_s = start.elapsed().as_secs_f64();
    let log = out.join(LOG_FILE);
    let text =
        std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    let (mut train_stats, mut eval_stats) = (None, None);
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)?;
        match v["event"].as_str() {
            Some("train") => train_stats = Some(serde_json::from_value(v)?),
            Some("eval") => eval_stats = Some(serde_json::from_value(v)?),
            _ => {}
        }
    }
    match (train_stats, eval_stats) {
        (Some(train), Some(eval)) => Ok(Timed {
            train,
            eval,
            wall_s,
        }),
        _ => anyhow::bail!("{} has no train or eval event", log.display()),
    }
}

/// The estimate (seconds) of a run of `epochs` from a warm-up run's wall time and a measured
/// run's training and evaluation rates; the measured run's time outside both (model built,
/// checkpoint written) counts once per epoch.
fn estimate(warm_up: &Timed, measured: &Timed, epochs: usize) -> f64 {
    let train_s = measured.train.seconds * TRAIN_IMAGES / measured.train.images as f64;
    let eval_s = measured.eval.seconds * TEST_IMAGES / measured.eval.samples as f64;
    let other_s = (measured.wall_s - measured.train.seconds - measured.eval.seconds).max(0.0);
    warm_up.wall_s + epochs as f64 * (train_s + eval_s + other_s)
}

/// The estimate's row on CUDA device `gpu`: the recipe, both runs and whether the estimate
/// meets the target.
pub fn measure(work: &Path, gpu: usize) -> Result<Value> {
    measure_with(
        work,
        &format!("cuda:{gpu}"),
        (10, 100),
        TEST_IMAGES as usize,
    )
}

/// [`measure`] on `device` with a warm-up and a measured run of `steps` steps each, the measured
/// run evaluating `eval_images`.
fn measure_with(
    work: &Path,
    device: &str,
    steps: (usize, usize),
    eval_images: usize,
) -> Result<Value> {
    let recipe = TrainConfig::preset(default_recipe())?;
    let data = work.join("cifar");
    fake_cifar(&data)?;
    let batch = recipe.batch_size;
    // Whole evaluation batches, so that the warm-up meets the measured run's shapes.
    let warm_up_eval = 2 * recipe.eval_batch_size;
    let warm_up = run(
        &data,
        &work.join("warm-up"),
        device,
        steps.0 * batch,
        warm_up_eval,
    )?;
    let measured = run(
        &data,
        &work.join("measured"),
        device,
        steps.1 * batch,
        eval_images,
    )?;
    let estimated_s = estimate(&warm_up, &measured, recipe.epochs);
    let runs = |t: &Timed| {
        json!({"train_images": t.train.images, "train_s": t.train.seconds,
               "images_per_second": t.train.images_per_second, "eval_images": t.eval.samples,
               "eval_s": t.eval.seconds, "wall_s": t.wall_s})
    };
    Ok(json!({
        "recipe": default_recipe(), "model": recipe.model, "epochs": recipe.epochs, "batch": batch,
        "warm_up": runs(&warm_up), "measured": runs(&measured),
        "estimated_run_s": estimated_s, "target_s": TARGET_S, "meets_target": estimated_s <= TARGET_S,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed(images: usize, train_s: f64, samples: u64, eval_s: f64, wall_s: f64) -> Timed {
        let train = TrainStats {
            epoch: 0,
            loss: 1.0,
            accuracy: 0.5,
            ls_regularization: 0.0,
            ls_error_amplification: 0.0,
            alpha: 0.1,
            lr_last: 0.1,
            images,
            seconds: train_s,
            images_per_second: images as f64 / train_s,
            loader_stall_seconds: 0.0,
            skipped_samples: 0,
        };
        let eval = EvalStats {
            epoch: 0,
            samples,
            top1: 0.1,
            top5: 0.5,
            nll: 2.3,
            ece15: 0.0,
            seconds: eval_s,
        };
        Timed {
            train,
            eval,
            wall_s,
        }
    }

    #[test]
    fn the_estimate_scales_each_part_to_the_whole_run() {
        // 12,800 images in 2 s (6,400/s), 10,000 evaluated in 0.5 s, 0.25 s besides.
        let measured = timed(12_800, 2.0, 10_000, 0.5, 2.75);
        let warm_up = timed(1_280, 1.0, 1_000, 0.2, 3.0);
        // 3 s once, then per epoch 50,000 / 6,400 = 7.8125 s + 0.5 s + 0.25 s.
        let got = estimate(&warm_up, &measured, 8);
        assert!(
            (got - (3.0 + 8.0 * (7.8125 + 0.5 + 0.25))).abs() < 1e-9,
            "{got}"
        );
    }

    /// The whole path on the CPU, a few steps: the trainer's log gives both runs' figures.
    #[test]
    fn a_short_measurement_reads_both_runs_from_the_trainers_log() -> Result<()> {
        let work =
            std::env::temp_dir().join(format!("gpu-check-default-run-test-{}", std::process::id()));
        let row = measure_with(&work, "cpu", (1, 2), 1000);
        let _ = std::fs::remove_dir_all(&work);
        let row = row?;
        let batch = row["batch"].as_u64().unwrap();
        assert_eq!(row["warm_up"]["train_images"].as_u64(), Some(batch));
        assert_eq!(row["measured"]["train_images"].as_u64(), Some(2 * batch));
        assert_eq!(row["measured"]["eval_images"].as_u64(), Some(1000));
        let estimate = row["estimated_run_s"].as_f64().unwrap();
        assert!(
            estimate > row["warm_up"]["wall_s"].as_f64().unwrap(),
            "{row}"
        );
        assert_eq!(row["meets_target"].as_bool(), Some(estimate <= TARGET_S));
        Ok(())
    }

    #[test]
    fn the_default_recipe_is_a_cifar_run_with_epochs_and_a_batch() {
        let recipe = TrainConfig::preset(default_recipe()).unwrap();
        assert!(recipe.epochs > 0 && recipe.batch_size > 0);
        assert_eq!(recipe.input.image_size, 32);
    }
}
