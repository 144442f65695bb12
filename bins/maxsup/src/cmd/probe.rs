//! `maxsup probe TRAIN.safetensors TEST.safetensors`: linear transfer probe (L2 multinomial
//! logistic regression, λ chosen on a stratified validation split, refit, test accuracy).

use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use maxsup_metrics::probe::{log_grid, LbfgsParams};
use maxsup_metrics::{labels_to_classes, run_probe, FeatureFile, ProbeConfig, ProbeData};
use std::path::{Path, PathBuf};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Training feature file (the validation split is carved out of it).
    pub train: PathBuf,
    /// Test feature file.
    pub test: PathBuf,
    /// Print JSON (full λ path included) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Number of log-spaced λ values.
    #[arg(long, value_parser = super::at_least_one(), default_value_t = 45)]
    pub num_lambdas: usize,
    /// Smallest L2 penalty λ of the grid.
    #[arg(long, default_value_t = 1e-6)]
    pub lambda_min: f64,
    /// Largest L2 penalty λ of the grid.
    #[arg(long, default_value_t = 1e5)]
    pub lambda_max: f64,
    /// Fraction of each class held out for choosing λ.
    #[arg(long, default_value_t = 0.2)]
    pub val_fraction: f64,
    /// Seed of the train/validation split (SplitMix64, reproducible from Python).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// L-BFGS iteration cap per fit.
    #[arg(long, value_parser = super::at_least_one(), default_value_t = 1000)]
    pub max_iter: usize,
    /// Stop when the largest gradient entry is below this (scikit-learn's `tol`).
    #[arg(long, default_value_t = 1e-4)]
    pub tol: f64,
    /// Use raw features instead of standardising them with the training statistics.
    #[arg(long)]
    pub no_standardize: bool,
}

fn load(path: &Path) -> Result<ProbeData> {
    let file = FeatureFile::open(path)?;
    let all = file.read_all()?;
    let labels =
        labels_to_classes(&all.labels).with_context(|| format!("in {}", path.display()))?;
    Ok(ProbeData {
        features: all.features,
        labels,
        dim: file.feature_dim(),
    })
}

pub fn run(args: Args) -> Result<()> {
    if !(args.val_fraction > 0.0 && args.val_fraction < 1.0) {
        bail!(
            "--val-fraction {} must be between 0 and 1 (the share of training rows held out)",
            args.val_fraction
        );
    }
    if !(args.lambda_min > 0.0 && args.lambda_min <= args.lambda_max && args.lambda_max.is_finite())
    {
        bail!(
            "--lambda-min {:e} and --lambda-max {:e}: the grid needs 0 < min <= max",
            args.lambda_min,
            args.lambda_max
        );
    }
    if args.tol.is_nan() || args.tol <= 0.0 {
        bail!("--tol {} must be positive", args.tol);
    }
    let cfg = ProbeConfig {
        lambdas: log_grid(args.lambda_min, args.lambda_max, args.num_lambdas),
        val_fraction: args.val_fraction,
        seed: args.seed,
        standardize: !args.no_standardize,
        solver: LbfgsParams {
            max_iter: args.max_iter,
            gtol: args.tol,
            ..Default::default()
        },
    };
    let r = run_probe(load(&args.train)?, load(&args.test)?, &cfg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "{} classes, D = {}: {} train / {} val / {} test samples",
        r.num_classes, r.dim, r.train_samples, r.val_samples, r.test_samples
    );
    let accs: Vec<f64> = r.path.iter().map(|p| p.val_accuracy).collect();
    let worst = accs.iter().copied().fold(f64::INFINITY, f64::min);
    let iters: usize = r.path.iter().map(|p| p.iterations).sum();
    println!("validation accuracy over {} λ in [{:.0e}, {:.0e}]: min {:.4}, max {:.4} ({iters} L-BFGS iterations)", accs.len(), args.lambda_min, args.lambda_max, worst, r.chosen_val_accuracy);
    for p in r.path.iter().step_by((r.path.len() / 9).max(1)) {
        println!(
            "  λ {:>9.3e}  val acc {:.4}  ({} it)",
            p.lambda, p.val_accuracy, p.iterations
        );
    }
    println!(
        "chosen λ {:.4e} (sklearn C = {:.4e} on the refit)",
        r.chosen_lambda, r.refit_sklearn_c
    );
    println!("test accuracy {:.4}", r.test_accuracy);
    println!("time {:.2} s", r.seconds);
    Ok(())
}
