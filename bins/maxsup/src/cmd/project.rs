//! `maxsup project`: three classes' penultimate features on the plane through their centroids
//! (paper Figure 1), one panel per checkpoint.

use std::path::PathBuf;

use anyhow::{bail, Result};
use maxsup_metrics::{labels_to_classes, project_onto_class_plane, FeatureFile};
use maxsup_viz::{plot_feature_projections, ClassName, PlotOptions, ProjectionPanel};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Feature files (from `maxsup extract`).
    #[arg(required = true)]
    pub features: Vec<PathBuf>,
    /// Names of the feature files in the plot, in order (default: file names).
    #[arg(long, num_args = 1..)]
    pub names: Vec<String>,
    /// The three classes, e.g. 0,1,2.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub classes: Vec<u32>,
    /// Samples per class shown (the paper uses 80).
    #[arg(long, value_parser = super::at_least_one(), default_value_t = 80)]
    pub per_class: usize,
    /// Output figure (.png or .svg).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let [a, b, c] = args.classes[..] else {
        bail!("--classes needs exactly three classes")
    };
    let mut panels = vec![];
    for (i, path) in args.features.iter().enumerate() {
        let file = FeatureFile::open(path)?;
        let all = file.read_all()?;
        let labels = labels_to_classes(&all.labels)?;
        let d = file.feature_dim();
        // The first `per_class` samples of each chosen class.
        let mut taken = [0usize; 3];
        let (mut features, mut kept) = (vec![], vec![]);
        for (j, &l) in labels.iter().enumerate() {
            if let Some(slot) = [a, b, c].iter().position(|&x| x == l) {
                if taken[slot] < args.per_class {
                    taken[slot] += 1;
                    features.extend_from_slice(&all.features[j * d..(j + 1) * d]);
                    kept.push(l);
                }
            }
        }
        let projection = project_onto_class_plane(&features, d, &kept, [a, b, c])?;
        let name = args.names.get(i).cloned().unwrap_or_else(|| {
            path.file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into()
        });
        panels.push(ProjectionPanel {
            name,
            points: projection.coords,
            labels: projection.labels,
        });
    }
    let classes: Vec<ClassName> = [a, b, c]
        .iter()
        .map(|&id| ClassName {
            id,
            name: format!("class {id}"),
        })
        .collect();
    plot_feature_projections(
        &panels,
        &classes,
        &args.out,
        &PlotOptions::titled("Penultimate features, class-centroid plane"),
    )?;
    println!("wrote {}", args.out.display());
    Ok(())
}
