//! The body of `train-conv` and `train-vit`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use maxsup_train::{DataSource, Fanout, JsonLinesLog, TrainConfig, Trainer, LOG_FILE, RECIPES};

use crate::args::TrainArgs;
use crate::progress::TerminalProgress;

/// Which models a binary trains: `train-conv` the ResNet family, `train-vit` the DeiT family,
/// as the model registry classifies them.
pub use maxsup_models::ModelFamily;

fn accepts(family: ModelFamily, model: &str) -> bool {
    maxsup_models::model_family(model) == Some(family)
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: TrainArgs,
}

/// Parses the command line, trains, prints the summary; the exit code says whether it worked.
pub fn train_main(binary: &str, family: ModelFamily, default_recipe: &str) -> ExitCode {
    let cli = Cli::parse_from(std::env::args_os());
    match run(binary, family, default_recipe, &cli.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{binary}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(binary: &str, family: ModelFamily, default_recipe: &str, args: &TrainArgs) -> Result<()> {
    if args.list_recipes {
        for r in RECIPES {
            println!("{r}");
        }
        return Ok(());
    }
    let start = Instant::now();
    let mut trainer = match &args.resume {
        Some(path) => {
            let checkpoint = resume_path(path, args, default_recipe)?;
            eprintln!("{binary}: resuming from {}", checkpoint.display());
            Trainer::resume_with(&checkpoint, |saved, completed| {
                if !accepts(family, &saved.model) {
                    bail!(
                        "{binary} trains {family} models; the run in {} trains `{}` (resume it with the other binary)",
                        checkpoint.display(),
                        saved.model
                    );
                }
                let config = args.resolve_resumed(saved, completed)?;
                if &config != saved {
                    eprintln!("{binary}: resuming with changed settings (the run is no longer identical to an uninterrupted one):");
                    eprintln!("{}", changed_fields(saved, &config)?.join("\n"));
                }
                Ok(config)
            })?
        }
        None => {
            let config = args.resolve(default_recipe)?;
            if !accepts(family, &config.model) {
                bail!(
                    "{binary} trains {family} models; `{}` is not one (use the other binary)",
                    config.model
                );
            }
            println!("{}", serde_json::to_string_pretty(&config)?);
            if args.print_config {
                return Ok(());
            }
            // Fail before downloading anything.
            let device = maxsup_train::parse_device(&config.device)?;
            config.precision.check_device(&device)?;
            ensure_data(&config)?;
            Trainer::new(config)?
        }
    };
    let out_dir = trainer.out_dir().to_path_buf();
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut log = JsonLinesLog::append(&out_dir.join(LOG_FILE))?;
    let mut progress = TerminalProgress::new(args.no_progress);
    let mut observers = Fanout(vec![&mut progress, &mut log]);
    let state = trainer.run(&mut observers)?;
    let last = state
        .last_eval
        .as_ref()
        .context("the run has no evaluation")?;
    println!(
        "done: {} on {} with {} for {} epochs: test top-1 {:.2}% (best {:.2}% at epoch {}), top-5 {:.2}%, NLL {:.4}, ECE {:.4}; {:.1} min; checkpoints in {}",
        state.config.model,
        data_name(&state.config.data),
        state.config.loss,
        state.config.epochs,
        100.0 * last.top1,
        100.0 * state.best_top1,
        state.best_epoch.map_or(0, |e| e + 1),
        100.0 * last.top5,
        last.nll,
        last.ece15,
        start.elapsed().as_secs_f64() / 60.0,
        out_dir.display()
    );
    Ok(())
}

/// `--resume` alone continues the run directory of the resolved configuration.
fn resume_path(path: &str, args: &TrainArgs, default_recipe: &str) -> Result<PathBuf> {
    if !path.is_empty() {
        return Ok(PathBuf::from(path));
    }
    let out_dir = args.resolve(default_recipe)?.out_dir;
    Trainer::last_checkpoint(&out_dir).with_context(|| {
        format!(
            "--resume: no checkpoint in {} (give its path)",
            out_dir.display()
        )
    })
}

/// `  field: old -> new` for every top-level configuration field that differs.
fn changed_fields(old: &TrainConfig, new: &TrainConfig) -> Result<Vec<String>> {
    let (a, b) = (serde_json::to_value(old)?, serde_json::to_value(new)?);
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Ok(vec![]);
    };
    Ok(a.iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| format!("  {k}: {v} -> {}", b.get(k).cloned().unwrap_or_default()))
        .collect())
}

fn data_name(data: &DataSource) -> String {
    match data {
        DataSource::Cifar10 { .. } => "CIFAR-10".into(),
        DataSource::FashionMnist { .. } => "Fashion-MNIST".into(),
        DataSource::Folder { root } => root.display().to_string(),
        DataSource::Zip { root, .. } => root.display().to_string(),
    }
}

/// The default run needs no user data: CIFAR-10 is installed by the project's fetch script.
fn ensure_data(config: &TrainConfig) -> Result<()> {
    let DataSource::Cifar10 { dir } = &config.data else {
        return Ok(());
    };
    if dir.join("test_batch.bin").exists() {
        return Ok(());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/fetch-cifar10.sh");
    eprintln!(
        "CIFAR-10 not found in {}: fetching it with {}",
        dir.display(),
        script.display()
    );
    maxsup_data::fetch::install_with_script(&script, dir, "test_batch.bin")?;
    Ok(())
}
