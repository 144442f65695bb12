//! Rendering smoke tests of the feature-projection, reliability and Grad-CAM grid figures.

mod common;

use common::{check_svg, distinct_colours, out_dir, read_png, Lcg};
use maxsup_metrics::{ReliabilityBin, ReliabilityDiagram};
use maxsup_viz::*;

fn projection_panels() -> Vec<ProjectionPanel> {
    let mut rng = Lcg::new(3);
    let centres = [[0.0, 3.0], [-2.6, -1.5], [2.6, -1.5]];
    [("CE", 1.2), ("LS", 0.5), ("MaxSup", 0.8)]
        .iter()
        .map(|(name, spread)| {
            let mut points = Vec::new();
            let mut labels = Vec::new();
            for (k, c) in centres.iter().enumerate() {
                for _ in 0..80 {
                    points.push([c[0] + spread * rng.normal(), c[1] + spread * rng.normal()]);
                    labels.push([17u32, 42, 99][k]);
                }
            }
            ProjectionPanel {
                name: name.to_string(),
                points,
                labels,
            }
        })
        .collect()
}

fn class_names() -> Vec<ClassName> {
    [(17, "goldfinch"), (42, "agama"), (99, "goose")]
        .iter()
        .map(|(id, n)| ClassName {
            id: *id,
            name: n.to_string(),
        })
        .collect()
}

#[test]
fn feature_projections_render_png_and_svg() {
    let dir = out_dir("projection");
    let opts = PlotOptions::titled("Penultimate-layer features, 3 classes").with_size(1200, 430);
    plot_feature_projections(
        &projection_panels(),
        &class_names(),
        dir.join("proj.png"),
        &opts,
    )
    .unwrap();
    plot_feature_projections(
        &projection_panels(),
        &class_names(),
        dir.join("proj.svg"),
        &opts,
    )
    .unwrap();
    assert!(distinct_colours(&read_png(&dir.join("proj.png"), 1200, 430)) > 10);
    check_svg(&dir.join("proj.svg"));
    assert!(std::fs::read_to_string(dir.join("proj.svg"))
        .unwrap()
        .contains("goldfinch"));

    let mut stray = projection_panels();
    stray[2].labels[5] = 7;
    let err = plot_feature_projections(&stray, &class_names(), dir.join("stray.png"), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stray.png") && err.contains("class 7"),
        "{err}"
    );
}

fn calibration_bins() -> Vec<ReliabilityBin> {
    // Over-confident model: accuracy trails confidence; low bins empty.
    (0..10)
        .map(|m| {
            let confidence = (m as f64 + 0.5) / 10.0;
            let count = if m < 2 { 0 } else { 50 * m as u64 };
            ReliabilityBin {
                lower: m as f64 / 10.0,
                upper: (m + 1) as f64 / 10.0,
                count,
                accuracy: (confidence - 0.12).max(0.0),
                confidence,
            }
        })
        .collect()
}

#[test]
fn reliability_diagram_renders_png_and_svg_with_ece_in_title() {
    let dir = out_dir("reliability");
    let bins = ReliabilityDiagram::from_bins(calibration_bins()).unwrap();
    assert!((bins.ece - 0.12).abs() < 1e-12, "{}", bins.ece);
    let opts = PlotOptions::titled("Reliability, CIFAR-10-C").with_size(600, 600);
    plot_reliability_diagram(&bins, dir.join("rel.png"), &opts).unwrap();
    plot_reliability_diagram(&bins, dir.join("rel.svg"), &opts).unwrap();
    assert!(distinct_colours(&read_png(&dir.join("rel.png"), 600, 600)) > 10);
    check_svg(&dir.join("rel.svg"));
    assert!(std::fs::read_to_string(dir.join("rel.svg"))
        .unwrap()
        .contains("ECE = 0.1200"));
}

/// A synthetic 64x64 "photo": a smooth colour gradient with a bright square as the object.
fn photo(seed: u64) -> RgbImage {
    let mut rng = Lcg::new(seed);
    let (cy, cx) = (
        16 + (rng.uniform() * 32.0) as usize,
        16 + (rng.uniform() * 32.0) as usize,
    );
    let mut chw = vec![0f32; 3 * 64 * 64];
    for y in 0..64usize {
        for x in 0..64usize {
            let object = y.abs_diff(cy) < 10 && x.abs_diff(cx) < 10;
            let i = y * 64 + x;
            chw[i] = if object { 0.95 } else { x as f32 / 80.0 };
            chw[4096 + i] = if object { 0.85 } else { y as f32 / 80.0 };
            chw[8192 + i] = if object { 0.2 } else { 0.5 };
        }
    }
    maxsup_viz::rgb_from_chw_f32(64, 64, &chw).unwrap()
}

/// A 7x7 map peaked at the given cell.
fn cam(peak: (usize, usize), sharpness: f32) -> HeatMap {
    let values = (0..49)
        .map(|i| {
            let (dy, dx) = (
                (i / 7) as f32 - peak.0 as f32,
                (i % 7) as f32 - peak.1 as f32,
            );
            (-(dy * dy + dx * dx) / sharpness).exp()
        })
        .collect();
    HeatMap::new(7, 7, values).unwrap()
}

#[test]
fn gradcam_grid_renders_png_of_the_requested_size() {
    let dir = out_dir("gradcam");
    let grid = GradCamGrid {
        images: vec![photo(1), photo(2), photo(3), photo(4)],
        column_labels: vec![
            "image 1".into(),
            "image 2".into(),
            "image 3".into(),
            "image 4".into(),
        ],
        rows: vec![
            GradCamRow {
                label: "Baseline".into(),
                cams: vec![
                    cam((1, 1), 4.0),
                    cam((5, 2), 4.0),
                    cam((3, 3), 8.0),
                    cam((0, 6), 3.0),
                ],
            },
            GradCamRow {
                label: "Label Smoothing".into(),
                cams: vec![
                    cam((2, 2), 2.0),
                    cam((4, 4), 2.0),
                    cam((2, 5), 2.0),
                    cam((6, 0), 2.0),
                ],
            },
            GradCamRow {
                label: "MaxSup".into(),
                cams: vec![
                    cam((3, 3), 1.0),
                    cam((3, 3), 1.5),
                    cam((3, 3), 3.0),
                    cam((3, 3), 6.0),
                ],
            },
        ],
        alpha: 0.5,
        show_inputs: true,
    };
    let opts = PlotOptions::titled("Grad-CAM, DeiT-Small").with_size(900, 820);
    let path = dir.join("gradcam.png");
    write_gradcam_grid(&grid, &path, &opts).unwrap();
    assert!(distinct_colours(&read_png(&path, 900, 820)) > 100);

    let err = write_gradcam_grid(&grid, dir.join("gradcam.svg"), &opts).unwrap_err();
    assert!(matches!(err, VizError::UnsupportedFormat { .. }), "{err}");
    let mut short = grid.clone();
    short.rows[1].cams.pop();
    let err = write_gradcam_grid(&short, dir.join("short.png"), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("short.png") && err.contains("Label Smoothing"),
        "{err}"
    );
    let err = write_gradcam_grid(
        &grid,
        dir.join("tiny.png"),
        &PlotOptions::default().with_size(64, 64),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("tiny.png") && err.contains("too small"),
        "{err}"
    );
}
