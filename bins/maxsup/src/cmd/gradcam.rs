//! `maxsup gradcam`: Grad-CAM heat maps of one or more checkpoints on the same images, as a grid.

use std::path::PathBuf;

use anyhow::{bail, Result};
use maxsup_analysis::{grad_cam, load_model};
use maxsup_train::{build_eval_loader, parse_device, Split};
use maxsup_viz::{write_gradcam_grid, GradCamGrid, GradCamRow, HeatMap, PlotOptions, RgbImage};

use maxsup_cli::DatasetArgs;

use super::extract::eval_input;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoints to compare, one grid row each.
    #[arg(long, required = true, num_args = 1..)]
    pub weights: Vec<PathBuf>,
    /// Row labels (default: the file names).
    #[arg(long, num_args = 1..)]
    pub names: Vec<String>,
    /// Model name for plain weight files.
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub data: DatasetArgs,
    /// Explain the first N validation images.
    #[arg(long, value_parser = super::at_least_one(), default_value_t = 6)]
    pub images: usize,
    /// Explain this class instead of each model's top class.
    #[arg(long)]
    pub class: Option<u32>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    if !args.names.is_empty() && args.names.len() != args.weights.len() {
        bail!(
            "--names: {} names for {} checkpoints",
            args.names.len(),
            args.weights.len()
        );
    }
    let device = parse_device(&args.device)?;
    let mut rows = vec![];
    let mut shown: Option<(Vec<RgbImage>, Vec<String>)> = None;
    for (i, path) in args.weights.iter().enumerate() {
        let loaded = load_model(path, args.model.as_deref(), &device)?;
        if let Some(c) = args.class {
            let k = loaded.model.num_classes();
            if c as usize >= k {
                bail!(
                    "--class {c}: {} has {k} classes (0..={})",
                    path.display(),
                    k - 1
                );
            }
        }
        let input = eval_input(
            &args.data,
            loaded.config.as_ref(),
            &loaded.model.info().data,
        )?;
        let loader = build_eval_loader(&input, Split::Val, args.images, Some(args.images))?;
        let batch = loader
            .epoch(0)
            .next()
            .transpose()?
            .ok_or_else(|| anyhow::anyhow!("no validation images"))?;
        let x = maxsup_train::images_tensor(&batch, &device, candle_core::DType::F32, None)?;
        let classes = args.class.map(|c| vec![c; batch.len()]);
        let cam = grad_cam(loaded.model.as_ref(), &x, classes.as_deref())?;
        if shown.is_none() {
            let p = loader.pipeline();
            let [_, _, h, w] = batch.shape;
            let images = batch
                .normalized_images()
                .chunks(batch.image_len())
                .map(|chw| {
                    let pixels: Vec<f32> = chw
                        .iter()
                        .enumerate()
                        .map(|(j, v)| v * p.std[j / (h * w)] + p.mean[j / (h * w)])
                        .collect();
                    maxsup_viz::rgb_from_chw_f32(h, w, &pixels)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let labels = batch.labels.iter().map(|l| format!("label {l}")).collect();
            shown = Some((images, labels));
        }
        let maps = cam
            .maps
            .into_iter()
            .map(|m| HeatMap::new(cam.height, cam.width, m))
            .collect::<Result<Vec<_>, _>>()?;
        let label = args
            .names
            .get(i)
            .cloned()
            .unwrap_or_else(|| path.display().to_string());
        rows.push(GradCamRow { label, cams: maps });
    }
    let (images, column_labels) = shown.expect("at least one checkpoint");
    let grid = GradCamGrid {
        images,
        column_labels,
        rows,
        alpha: 0.5,
        show_inputs: true,
    };
    write_gradcam_grid(&grid, &args.out, &PlotOptions::titled("Grad-CAM"))?;
    println!("wrote {}", args.out.display());
    Ok(())
}
