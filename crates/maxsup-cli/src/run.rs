//! The body of `train-conv` and `train-vit`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use maxsup_dist::{ProcessEnv, World};
use maxsup_train::{
    DataParallel, DataSource, Fanout, JsonLinesLog, TrainConfig, Trainer, LOG_FILE,
};

use crate::args::TrainArgs;
use crate::progress::TerminalProgress;

/// Which models a binary trains: `train-conv` the ResNet family, `train-vit` the DeiT family,
/// as the model registry classifies them.
pub use maxsup_models::ModelFamily;

/// The recipe a binary of `family` trains when none is named (its quick start): `train-conv`
/// resnet20_cifar, `train-vit` deit_tiny_patch4_32, both with MaxSup on CIFAR-10.
pub fn default_recipe(family: ModelFamily) -> &'static str {
    match family {
        ModelFamily::ResNet => "cifar10-resnet20",
        ModelFamily::DeiT => "cifar10-deit-tiny",
    }
}

fn accepts(family: ModelFamily, model: &str) -> bool {
    maxsup_models::model_family(model) == Some(family)
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: TrainArgs,
}

/// Parses the command line, trains, prints the summary; the exit code says whether it worked.
pub fn train_main(binary: &str, family: ModelFamily) -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = Cli::parse_from(&argv);
    let who = match World::from_env(&ProcessEnv) {
        Ok(Some(w)) if w.is_distributed() => format!("{binary} [rank {}]", w.rank),
        _ => binary.to_string(),
    };
    match train_parsed(binary, family, &cli.args, &argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{who}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What `train_main` does with `argv` (the program name first), returning the error instead of
/// printing it: for programs that embed a training run (the GPU check runs `--gpus 1`).
pub fn train_with_args(binary: &str, family: ModelFamily, argv: &[OsString]) -> Result<()> {
    let cli = Cli::try_parse_from(argv)?;
    train_parsed(binary, family, &cli.args, argv)
}

fn train_parsed(
    binary: &str,
    family: ModelFamily,
    args: &TrainArgs,
    argv: &[OsString],
) -> Result<()> {
    let world = World::from_env(&ProcessEnv)?;
    let launched = world.as_ref().filter(|w| w.is_distributed());
    match (args.nproc, args.gpus, launched) {
        (Some(_), Some(_), _) => bail!(
            "--nproc and --gpus: give one (--nproc N: N processes on the CPU; --gpus N: one \
             process per GPU)"
        ),
        (_, Some(0), _) => bail!("--gpus 0: give the number of GPUs (1 or more), or leave it out"),
        (Some(0), _, _) => {
            bail!("--nproc 0: give the number of processes (2 or more), or leave it out")
        }
        (Some(n), None, Some(w)) | (None, Some(n), Some(w)) => {
            let (flag, hint) = match args.gpus {
                Some(_) => ("--gpus", " and give --device cuda"),
                None => ("--nproc", ""),
            };
            bail!(
                "{flag} {n} under a launcher (this is rank {} of {}): the launcher starts the \
                 processes; leave it out{hint}",
                w.rank,
                w.world_size
            )
        }
        (Some(n), None, None) if n != 1 => launch(n, argv, "--nproc", vec![]),
        (None, Some(n), None) if n > 1 => launch_gpus(n, args, argv),
        // One GPU through the data-parallel path (NCCL with one rank).
        (None, Some(_), None) => run(binary, family, args, Some(World::single()), &argv[1..]),
        _ => run(binary, family, args, launched.cloned(), &argv[1..]),
    }
}

/// `--nproc N` / `--gpus N`: this binary N times over, each with its rank, the cores divided
/// among them; `extra` is added to every child's flags.
fn launch(n: usize, argv: &[OsString], flag: &str, extra: Vec<OsString>) -> Result<()> {
    let exe = std::env::current_exe().context("locating this binary to start its ranks")?;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mut children = maxsup_dist::without_flag(&argv[1..], flag);
    children.extend(extra);
    maxsup_dist::launch_local(&exe, &children, n, (cores / n.max(1)).max(1), flag)
}

/// `--gpus N`: N processes, rank r on GPU r, after checking that the GPUs are there.
fn launch_gpus(n: usize, args: &TrainArgs, argv: &[OsString]) -> Result<()> {
    // A CPU --device is an error before any process starts.
    args.device_flag()?;
    let available = maxsup_train::cuda_device_count().with_context(|| format!("--gpus {n}"))?;
    if n > available {
        bail!("--gpus {n}: this machine has {available} GPU(s) visible to this process");
    }
    let extra = match args.device {
        Some(_) => vec![],
        None => vec!["--device".into(), "cuda".into()],
    };
    launch(n, argv, "--gpus", extra)
}

/// Joins the data-parallel run `world` describes (None: a single process) with the collective
/// for the configured device: NCCL on this rank's GPU, TCP on the CPU. Every rank must have
/// been given the same flags.
fn join(
    world: Option<World>,
    flags: &[OsString],
    config: &TrainConfig,
) -> Result<Option<DataParallel>> {
    let Some(world) = world else {
        return Ok(None);
    };
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let device = maxsup_train::device_for_rank(
        &config.device,
        world.local_rank,
        world.local_world_size,
        visible.as_deref(),
    )?;
    let agreement: Vec<u8> = flags
        .iter()
        .flat_map(|a| {
            a.to_string_lossy()
                .into_owned()
                .into_bytes()
                .into_iter()
                .chain([0])
        })
        .collect();
    let collective = maxsup_dist::join(&world, &agreement, &device)?;
    Ok(Some(DataParallel::new(collective)))
}

fn run(
    binary: &str,
    family: ModelFamily,
    args: &TrainArgs,
    world: Option<World>,
    flags: &[OsString],
) -> Result<()> {
    let default_recipe = default_recipe(family);
    if args.list_recipes {
        for r in maxsup_train::recipe_names() {
            println!("{r}");
        }
        return Ok(());
    }
    let leader = world.as_ref().is_none_or(|w| w.rank == 0);
    let start = Instant::now();
    let mut trainer = match &args.resume {
        Some(path) => {
            let checkpoint = resume_path(path, args, default_recipe)?;
            if leader {
                eprintln!("{binary}: resuming from {}", checkpoint.display());
            }
            Trainer::resume_data_parallel(
                &checkpoint,
                |saved, completed| {
                    if !accepts(family, &saved.model) {
                        bail!(
                        "{binary} trains {family} models; the run in {} trains `{}` (resume it with the other binary)",
                        checkpoint.display(),
                        saved.model
                    );
                    }
                    let config = args.resolve_resumed(saved, completed)?;
                    if &config != saved && leader {
                        eprintln!("{binary}: resuming with changed settings (the run is no longer identical to an uninterrupted one):");
                        eprintln!("{}", changed_fields(saved, &config)?.join("\n"));
                    }
                    Ok(config)
                },
                |config| {
                    let mut parallel = join(world, flags, config)?;
                    if let Some(p) = parallel.as_mut() {
                        p.barrier()?;
                    }
                    Ok(parallel)
                },
            )?
        }
        None => {
            let config = args.resolve(default_recipe)?;
            if !accepts(family, &config.model) {
                bail!(
                    "{binary} trains {family} models; `{}` is not one (use the other binary)",
                    config.model
                );
            }
            if leader {
                println!("{}", serde_json::to_string_pretty(&config)?);
            }
            if args.print_config {
                return Ok(());
            }
            // Fail before downloading anything. A data-parallel rank opens only its own GPU.
            let parallel = join(world, flags, &config)?;
            let device = match &parallel {
                Some(p) => p.device(),
                None => maxsup_train::parse_device(&config.device)?,
            };
            config.precision.check_device(&device)?;
            if leader {
                ensure_data(&config)?;
            }
            match parallel {
                Some(mut p) => {
                    p.barrier()?;
                    Trainer::new_data_parallel(config, p)?
                }
                None => Trainer::new(config)?,
            }
        }
    };
    if !trainer.is_leader() {
        trainer.run(&mut maxsup_train::Silent)?;
        return Ok(());
    }
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
        data_name(&state.config.input.source),
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
    let DataSource::Cifar10 { dir } = &config.input.source else {
        return Ok(());
    };
    if dir.join("test_batch.bin").exists() {
        return Ok(());
    }
    // Carried in the binary, so that an installed `train-conv` fetches too.
    const SCRIPT: &str = include_str!("../../../data/fetch-cifar10.sh");
    eprintln!(
        "CIFAR-10 not found in {}: fetching it (data/fetch-cifar10.sh)",
        dir.display()
    );
    maxsup_data::fetch::install_with_embedded_script(
        "fetch-cifar10.sh",
        SCRIPT,
        dir,
        "test_batch.bin",
    )?;
    Ok(())
}
