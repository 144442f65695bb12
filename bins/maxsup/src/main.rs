//! `maxsup`: one command line for the toolkit's utilities. Each subcommand lives in its own
//! module under `cmd/` and only parses arguments and wires library crates together.

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(
    name = "maxsup",
    version,
    about = "MaxSup toolkit: models, data, metrics"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    // Subcommands are registered here, one line each; their arguments live in cmd/<name>.rs.
    /// Class separation of penultimate features: d_within, d_total, R^2 (Kornblith et al.).
    Metrics(cmd::metrics::Args),
    /// Linear transfer probe: L2 logistic regression on frozen features, λ chosen on validation.
    Probe(cmd::probe::Args),
    /// Accuracy, NLL, ECE and reliability data of stored logits.
    Calibration(cmd::calibration::Args),
    /// Check datasets (zip cache + map, ImageFolder, CIFAR-10) and build zip caches.
    Data(cmd::data::Args),
    /// Parameter counts of a model per top-level module; without a name, list the models.
    InspectModel(cmd::inspect_model::Args),
    /// Penultimate features, logits and labels of a checkpoint over a dataset split.
    Extract(cmd::extract::Args),
    /// Grad-CAM heat maps of one or more checkpoints, as a PNG grid.
    Gradcam(cmd::gradcam::Args),
    /// Logit analysis of feature files: near-zero share, top-1 probability, density plots.
    Logits(cmd::logits::Args),
    /// Three classes' features projected on their centroid plane (paper Figure 1).
    Project(cmd::project::Args),
    /// The paper's Table 1 from a set of runs' feature files, beside the paper's numbers.
    Table1(cmd::table1::Args),
    /// The paper's linear-transfer table from a set of runs' transfer feature files.
    Table2(cmd::table2::Args),
}

fn main() -> std::process::ExitCode {
    maxsup_cli::allocator::retain_freed_pages();
    maxsup_cli::cpu_threads::candle_ops_on_calling_thread();
    if let Err(e) = maxsup_cli::cpu_threads::join_rayon_pool(None) {
        eprintln!("warning: {e:#}; parallel ops run slower");
    }
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maxsup: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Metrics(a) => cmd::metrics::run(a),
        Command::Probe(a) => cmd::probe::run(a),
        Command::Calibration(a) => cmd::calibration::run(a),
        Command::Data(a) => cmd::data::run(a),
        Command::InspectModel(a) => cmd::inspect_model::run(a),
        Command::Extract(a) => cmd::extract::run(a),
        Command::Gradcam(a) => cmd::gradcam::run(a),
        Command::Logits(a) => cmd::logits::run(a),
        Command::Project(a) => cmd::project::run(a),
        Command::Table1(a) => cmd::table1::run(a),
        Command::Table2(a) => cmd::table2::run(a),
    }
}
