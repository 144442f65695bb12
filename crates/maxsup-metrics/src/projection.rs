//! Müller et al. feature-space picture (paper Fig. 1/3/4): penultimate
//! activations of three classes projected onto the plane through their class centroids.
//!
//! Same steps as the official plotting code: centroids of the activations (not classifier
//! weights); orthonormal basis = top-2 right singular vectors of the centroids minus their mean;
//! activations centred by the mean activation of the selected samples, then projected.
//! The SVD of the 3×D centred centroid matrix C is exact and cheap through its 3×3 Gram matrix:
//! C Cᵀ = U S² Uᵀ (Jacobi eigen-solver), v_i = Cᵀ u_i / s_i. Singular vectors have an arbitrary
//! sign, so each basis vector is flipped to make its largest-magnitude entry positive (the numpy
//! fixture applies the same rule).

use anyhow::{bail, ensure, Result};
use serde::Serialize;

/// Coordinates of the selected samples in the centroid plane.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassPlaneProjection {
    /// The three classes, in the order given.
    pub classes: [u32; 3],
    /// 2-D coordinates, one per selected sample, in input order.
    pub coords: Vec<[f64; 2]>,
    /// Class of each coordinate.
    pub labels: Vec<u32>,
    /// Index of each selected sample in the input.
    pub indices: Vec<usize>,
    /// Orthonormal basis of the plane (two D-vectors).
    pub basis: [Vec<f64>; 2],
    /// Singular values of the centred centroids (the third is ~0: three points span a plane).
    pub singular_values: [f64; 3],
}

/// Projects the samples of `classes` (features row-major [N, d]) onto their centroid plane.
pub fn project_onto_class_plane(
    features: &[f32],
    d: usize,
    labels: &[u32],
    classes: [u32; 3],
) -> Result<ClassPlaneProjection> {
    ensure!(
        d > 0 && features.len() == labels.len() * d,
        "projection: {} values for {} labels of dimension {d}",
        features.len(),
        labels.len()
    );
    ensure!(
        classes[0] != classes[1] && classes[0] != classes[2] && classes[1] != classes[2],
        "projection: the three classes must differ, got {classes:?}"
    );
    let indices: Vec<usize> = (0..labels.len())
        .filter(|&i| classes.contains(&labels[i]))
        .collect();
    let mut centroids = [vec![0.0f64; d], vec![0.0f64; d], vec![0.0f64; d]];
    let mut counts = [0usize; 3];
    let mut global = vec![0.0f64; d];
    for &i in &indices {
        let c = classes.iter().position(|&c| c == labels[i]).unwrap_or(0);
        counts[c] += 1;
        for ((s, g), &v) in centroids[c]
            .iter_mut()
            .zip(global.iter_mut())
            .zip(&features[i * d..(i + 1) * d])
        {
            *s += f64::from(v);
            *g += f64::from(v);
        }
    }
    for (c, &n) in counts.iter().enumerate() {
        ensure!(n > 0, "projection: class {} has no samples", classes[c]);
        centroids[c].iter_mut().for_each(|v| *v /= n as f64);
    }
    global.iter_mut().for_each(|v| *v /= indices.len() as f64);
    // Centre the centroids by their own mean (the plane through them).
    let centre: Vec<f64> = (0..d)
        .map(|j| (centroids[0][j] + centroids[1][j] + centroids[2][j]) / 3.0)
        .collect();
    for c in &mut centroids {
        c.iter_mut().zip(&centre).for_each(|(v, m)| *v -= m);
    }
    let mut gram = [[0.0f64; 3]; 3];
    for a in 0..3 {
        for b in 0..3 {
            gram[a][b] = centroids[a]
                .iter()
                .zip(&centroids[b])
                .map(|(x, y)| x * y)
                .sum();
        }
    }
    let (eigvals, eigvecs) = symmetric_eigen3(gram);
    let mut order = [0usize, 1, 2];
    order.sort_by(|&a, &b| eigvals[b].total_cmp(&eigvals[a]));
    let singular_values = order.map(|i| eigvals[i].max(0.0).sqrt());
    if singular_values[1] <= 1e-12 * singular_values[0].max(f64::MIN_POSITIVE) {
        bail!("projection: the centroids of classes {classes:?} are collinear, they span no plane");
    }
    let basis = [0, 1].map(|r| {
        let (i, s) = (order[r], singular_values[r]);
        let mut v: Vec<f64> = (0..d)
            .map(|j| (0..3).map(|a| centroids[a][j] * eigvecs[a][i]).sum::<f64>() / s)
            .collect();
        let lead = v.iter().enumerate().fold(
            0,
            |best, (j, x)| if x.abs() > v[best].abs() { j } else { best },
        );
        if v[lead] < 0.0 {
            v.iter_mut().for_each(|x| *x = -*x);
        }
        v
    });
    let coords = indices
        .iter()
        .map(|&i| {
            let row = &features[i * d..(i + 1) * d];
            [0, 1].map(|r| {
                row.iter()
                    .zip(&global)
                    .zip(&basis[r])
                    .map(|((&x, m), b)| (f64::from(x) - m) * b)
                    .sum()
            })
        })
        .collect();
    Ok(ClassPlaneProjection {
        classes,
        coords,
        labels: indices.iter().map(|&i| labels[i]).collect(),
        indices,
        basis,
        singular_values,
    })
}

/// Eigen-decomposition of a symmetric 3×3 matrix by cyclic Jacobi rotations.
/// Returns eigenvalues and eigenvectors as columns (`vecs[row][col]`).
#[allow(clippy::needless_range_loop)] // index form mirrors the textbook rotation formulas
fn symmetric_eigen3(mut a: [[f64; 3]; 3]) -> ([f64; 3], [[f64; 3]; 3]) {
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _sweep in 0..64 {
        let off = a[0][1].powi(2) + a[0][2].powi(2) + a[1][2].powi(2);
        let scale = a[0][0].powi(2) + a[1][1].powi(2) + a[2][2].powi(2);
        if off <= 1e-30 * scale.max(f64::MIN_POSITIVE) {
            break;
        }
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            if a[p][q] == 0.0 {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let c = 1.0 / (t * t + 1.0).sqrt();
            let s = t * c;
            // A <- Jᵀ A J with J the rotation in the (p, q) plane.
            for k in 0..3 {
                let (akp, akq) = (a[k][p], a[k][q]);
                a[k][p] = c * akp - s * akq;
                a[k][q] = s * akp + c * akq;
            }
            for k in 0..3 {
                let (apk, aqk) = (a[p][k], a[q][k]);
                a[p][k] = c * apk - s * aqk;
                a[q][k] = s * apk + c * aqk;
            }
            for row in &mut v {
                let (vp, vq) = (row[p], row[q]);
                row[p] = c * vp - s * vq;
                row[q] = s * vp + c * vq;
            }
        }
    }
    ([a[0][0], a[1][1], a[2][2]], v)
}

#[cfg(test)]
mod tests {
    use super::symmetric_eigen3;

    #[test]
    fn jacobi_reconstructs_the_matrix() {
        let m = [[4.0, 1.0, -2.0], [1.0, 3.0, 0.5], [-2.0, 0.5, 1.0]];
        let (w, v) = symmetric_eigen3(m);
        for r in 0..3 {
            for c in 0..3 {
                let rec: f64 = (0..3).map(|i| v[r][i] * w[i] * v[c][i]).sum();
                assert!(
                    (rec - m[r][c]).abs() < 1e-12,
                    "{r}{c}: {rec} vs {}",
                    m[r][c]
                );
            }
        }
    }
}
