//! Class-plane projection against numpy's SVD following the official plotting code.

mod fixture_util;
use fixture_util::*;
use maxsup_metrics::project_onto_class_plane;

#[test]
fn coordinates_match_numpy_svd_reference() {
    let fx = load("projection.json");
    let d = fx["d"].as_u64().unwrap() as usize;
    let classes = u32s(&fx["classes"]);
    let p = project_onto_class_plane(
        &f32s(&fx["features"]),
        d,
        &u32s(&fx["labels"]),
        [classes[0], classes[1], classes[2]],
    )
    .unwrap();
    let coords = fx["coords"].as_array().unwrap();
    assert_eq!(p.coords.len(), coords.len());
    for (mine, reference) in p.coords.iter().zip(coords) {
        let r = f64s(reference);
        close(mine[0], r[0], 1e-9, "x");
        close(mine[1], r[1], 1e-9, "y");
    }
    for (mine, reference) in p.basis.iter().zip(fx["basis"].as_array().unwrap()) {
        for (a, b) in mine.iter().zip(f64s(reference)) {
            close(*a, b, 1e-9, "basis");
        }
    }
    for (a, b) in p.singular_values.iter().zip(f64s(&fx["singular_values"])) {
        close(*a, b, 1e-9, "singular value");
    }
    assert!(p.labels.iter().all(|l| classes.contains(l)));
}

#[test]
fn rejects_collinear_or_missing_classes() {
    // Centroids 0, 1, 2 on one line.
    let f = [0.0f32, 0.0, 1.0, 0.0, 2.0, 0.0];
    assert!(project_onto_class_plane(&f, 2, &[0, 1, 2], [0, 1, 2])
        .unwrap_err()
        .to_string()
        .contains("collinear"));
    assert!(project_onto_class_plane(&f, 2, &[0, 1, 1], [0, 1, 2]).is_err());
    assert!(project_onto_class_plane(&f, 2, &[0, 1, 2], [0, 1, 1]).is_err());
}
