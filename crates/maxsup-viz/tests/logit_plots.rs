//! Rendering smoke tests of the logit-analysis figures: files exist, decode at the requested
//! size and contain more than a blank canvas; bad data is refused with the file named.

mod common;

use common::{check_svg, distinct_colours, out_dir, read_png, Lcg};
use maxsup_viz::*;

/// Three fake checkpoints whose near-zero shares and logit spreads differ, like CE / LS / MaxSup.
fn summaries() -> Vec<LogitSummarySeries> {
    let mut rng = Lcg::new(7);
    ["CE", "LS", "MaxSup"]
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let centre = 0.15 + 0.25 * k as f64;
            let share: Vec<f64> = (0..2000)
                .map(|_| (centre + 0.08 * rng.normal()).clamp(0.0, 1.0))
                .collect();
            let top1 = share
                .iter()
                .map(|s| (0.95 - 0.6 * s + 0.05 * rng.normal()).clamp(0.0, 1.0))
                .collect();
            LogitSummarySeries {
                name: name.to_string(),
                near_zero_share: share,
                top1_probability: top1,
            }
        })
        .collect()
}

fn logits() -> Vec<NamedSeries> {
    let mut rng = Lcg::new(11);
    [("CE", 1.6), ("LS", 0.7), ("MaxSup", 1.1)]
        .iter()
        .map(|(name, sd)| NamedSeries {
            name: name.to_string(),
            values: (0..20_000).map(|_| (sd * rng.normal()) as f32).collect(),
        })
        .collect()
}

#[test]
fn near_zero_share_histograms_render_png_and_svg() {
    let dir = out_dir("near_zero_hist");
    let opts = PlotOptions::titled("Near-zero logit share per sample").with_size(1200, 420);
    plot_near_zero_share_histograms(&summaries(), 40, dir.join("hist.png"), &opts).unwrap();
    plot_near_zero_share_histograms(&summaries(), 40, dir.join("hist.svg"), &opts).unwrap();
    assert!(distinct_colours(&read_png(&dir.join("hist.png"), 1200, 420)) > 10);
    check_svg(&dir.join("hist.svg"));
}

#[test]
fn top1_scatter_renders_png_and_svg() {
    let dir = out_dir("top1_scatter");
    let opts = PlotOptions::titled("Top-1 probability vs near-zero share").with_size(1200, 420);
    plot_top1_vs_near_zero(&summaries(), dir.join("scatter.png"), &opts).unwrap();
    plot_top1_vs_near_zero(&summaries(), dir.join("scatter.svg"), &opts).unwrap();
    assert!(distinct_colours(&read_png(&dir.join("scatter.png"), 1200, 420)) > 10);
    check_svg(&dir.join("scatter.svg"));
}

#[test]
fn logit_density_renders_png_and_svg() {
    let dir = out_dir("logit_density");
    let opts = PlotOptions::titled("Logit density").with_size(800, 500);
    plot_logit_density(
        &logits(),
        DEFAULT_LOGIT_RANGE,
        160,
        dir.join("density.png"),
        &opts,
    )
    .unwrap();
    plot_logit_density(
        &logits(),
        DEFAULT_LOGIT_RANGE,
        160,
        dir.join("density.svg"),
        &opts,
    )
    .unwrap();
    assert!(distinct_colours(&read_png(&dir.join("density.png"), 800, 500)) > 10);
    let svg = std::fs::read_to_string(dir.join("density.svg")).unwrap();
    assert!(svg.contains("MaxSup"), "legend names missing from the SVG");
    check_svg(&dir.join("density.svg"));
}

#[test]
fn bad_inputs_are_refused_naming_the_file() {
    let dir = out_dir("logit_bad");
    let mut broken = summaries();
    broken[1].top1_probability.pop();
    let path = dir.join("broken.png");
    let err = plot_top1_vs_near_zero(&broken, &path, &PlotOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("broken.png") && err.contains("'LS'"), "{err}");
    assert!(!path.exists(), "a failed plot must not leave a file");

    let err = plot_logit_density(
        &logits(),
        DEFAULT_LOGIT_RANGE,
        10,
        dir.join("x.jpg"),
        &PlotOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, VizError::UnsupportedFormat { .. }) && err.to_string().contains("x.jpg"),
        "{err}"
    );

    let err = plot_logit_density(
        &[],
        DEFAULT_LOGIT_RANGE,
        10,
        dir.join("empty.svg"),
        &PlotOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("empty.svg"), "{err}");

    let missing_dir = dir.join("no/such/dir/d.png");
    let err = plot_logit_density(
        &logits(),
        DEFAULT_LOGIT_RANGE,
        10,
        &missing_dir,
        &PlotOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, VizError::Write { .. }) && err.to_string().contains("d.png"),
        "{err}"
    );
}
