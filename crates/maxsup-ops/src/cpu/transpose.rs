//! Cache-friendly transposes: tiles of `TILE x TILE` read as contiguous runs of the source rows
//! and written as contiguous runs of the destination rows.
//!
//! Transposing element by element, one source row at a time, writes a column of the destination:
//! when its rows are a multiple of 1-4 KiB apart (a `[K, O]` weight with O = 256..2048, a
//! `[O, P]` image gradient) they fall into a few L1 sets, which hold fewer lines than the column
//! has rows, so every write misses.

use super::uninit::Output;
use rayon::prelude::*;

const TILE: usize = 16;

/// `dst [cols, rows] = srcᵀ` for a row-major `src [rows, cols]`.
pub fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(
        src.len() >= rows * cols && dst.len() >= rows * cols,
        "transpose: buffers too small"
    );
    for r0 in (0..rows).step_by(TILE) {
        let nr = TILE.min(rows - r0);
        for c0 in (0..cols).step_by(TILE) {
            let nc = TILE.min(cols - c0);
            let mut tile = [[0f32; TILE]; TILE];
            for (i, t) in tile.iter_mut().enumerate().take(nr) {
                let at = (r0 + i) * cols + c0;
                t[..nc].copy_from_slice(&src[at..at + nc]);
            }
            for j in 0..nc {
                let at = (c0 + j) * rows + r0;
                for (d, t) in dst[at..at + nr].iter_mut().zip(&tile) {
                    *d = t[j];
                }
            }
        }
    }
}

/// Each of `items` consecutive row-major `[rows, cols]` blocks of `src` transposed to
/// `[cols, rows]`, in parallel over the blocks: the NHWC <-> NCHW conversion of an image batch
/// (`rows = H·W, cols = C` one way, `rows = C, cols = H·W` the other) and OHWI <-> OIHW of a
/// filter bank.
pub fn transpose_items(src: &[f32], items: usize, rows: usize, cols: usize) -> Vec<f32> {
    let per = rows * cols;
    assert_eq!(src.len(), items * per, "transpose_items: buffer length");
    let mut dst = vec![0f32; items * per];
    if per == 0 {
        return dst;
    }
    dst.par_chunks_mut(per)
        .zip(src.par_chunks(per))
        .for_each(|(d, s)| transpose_into(s, rows, cols, d));
    dst
}

/// `Σ parts` transposed: each part is `[K, O]` (a thread's weight gradient), the result
/// `[O, K]`. In parallel over blocks of `TILE` output rows, each walked in `TILE x TILE` tiles:
/// a tile's `TILE` input rows are read as contiguous runs and summed over the parts into a small
/// local tile, which is then written out as whole runs of its `TILE` output rows. Scattering
/// element by element instead (one output column at a time across 32 rows) put the 32 rows,
/// `K * 4` bytes apart (8 KiB for K = 2048), into the same L1 set: every write missed, and the
/// transpose alone took ~15% of a ResNet-50 step. The parts are added in order from zero (the
/// sums of a serial loop, bit for bit).
pub fn sum_transposed(parts: &[Vec<f32>], o: usize, k: usize) -> Vec<f32> {
    let mut dw = Output::new(o * k);
    if o * k == 0 {
        // SAFETY: there are no slots to write.
        return unsafe { dw.assume_init() };
    }
    dw.slots()
        .par_chunks_mut(TILE * k)
        .enumerate()
        .for_each(|(block, rows)| {
            let (oc0, n_rows) = (block * TILE, rows.len() / k);
            let mut tile = [[0f32; TILE]; TILE];
            for kk0 in (0..k).step_by(TILE) {
                let n_kk = TILE.min(k - kk0);
                for (j, col) in tile.iter_mut().enumerate().take(n_kk) {
                    let at = (kk0 + j) * o + oc0;
                    let col = &mut col[..n_rows];
                    col.fill(0.0);
                    for part in parts {
                        for (c, &v) in col.iter_mut().zip(&part[at..at + n_rows]) {
                            *c += v;
                        }
                    }
                }
                for (oi, row) in rows.chunks_exact_mut(k).enumerate() {
                    for (j, slot) in row[kk0..kk0 + n_kk].iter_mut().enumerate() {
                        slot.write(tile[j][oi]);
                    }
                }
            }
        });
    // SAFETY: the blocks cover the o rows of k; every (row, kk) of each block was written.
    unsafe { dw.assume_init() }
}

#[cfg(test)]
mod tests {
    use super::{sum_transposed, transpose_into, transpose_items};

    #[test]
    fn transpose_matches_definition_on_ragged_shapes() {
        for &(rows, cols) in &[(1, 1), (16, 16), (17, 3), (5, 40), (64, 33), (0, 7)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 7.0).collect();
            let mut dst = vec![f32::NAN; rows * cols];
            transpose_into(&src, rows, cols, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        dst[c * rows + r],
                        src[r * cols + c],
                        "{rows}x{cols} at ({r}, {c})"
                    );
                }
            }
        }
    }

    /// Per block, against the definition; back and forth is the identity.
    #[test]
    fn transpose_items_transposes_each_block() {
        let (items, rows, cols) = (3, 5, 7);
        let src: Vec<f32> = (0..items * rows * cols).map(|i| i as f32).collect();
        let t = transpose_items(&src, items, rows, cols);
        for b in 0..items {
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        t[b * rows * cols + c * rows + r],
                        src[b * rows * cols + r * cols + c]
                    );
                }
            }
        }
        assert_eq!(transpose_items(&t, items, cols, rows), src);
        assert!(transpose_items(&[], 0, 4, 4).is_empty());
    }

    /// Against the serial definition, on ragged sizes (partial tiles both ways), one and several
    /// parts, and no parts (zeros).
    #[test]
    fn sum_transposed_matches_serial_sum_and_transpose() {
        for &(o, k, n_parts) in &[(37, 21, 3), (16, 16, 1), (1, 1, 2), (5, 40, 0), (33, 2, 2)] {
            let parts: Vec<Vec<f32>> = (0..n_parts)
                .map(|p| {
                    (0..k * o)
                        .map(|i| ((i * 7 + p * 13) % 23) as f32 * 0.37 - 3.0)
                        .collect()
                })
                .collect();
            let got = sum_transposed(&parts, o, k);
            assert_eq!(got.len(), o * k);
            for oc in 0..o {
                for kk in 0..k {
                    let mut want = 0f32;
                    for part in &parts {
                        want += part[kk * o + oc];
                    }
                    assert_eq!(got[oc * k + kk], want, "o={o} k={k} at ({oc}, {kk})");
                }
            }
        }
    }
}
