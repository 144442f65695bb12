//! Entropy decoding of one 8x8 block, for each kind of scan (ITU T.81 F.2 and G.1.2). Coefficients
//! stay quantized and are stored column by column (`ZZ_COL`), the layout the inverse DCT loads as
//! vectors; each block also keeps a bit mask of its non-zero AC coefficients indexed by zigzag
//! position, which lets progressive refinement scans jump between non-zero coefficients instead
//! of testing all 63.

use crate::bits::BitReader;
use crate::error::{corrupt, JpegError};
use crate::huffman::{extend, HuffmanTable};
use crate::idct::ZZ_COL;

/// Mask of zigzag positions `ss..=se`.
#[inline(always)]
pub(crate) fn band_mask(ss: u32, se: u32) -> u64 {
    (u64::MAX >> (63 - se)) & (u64::MAX << ss)
}

/// Mask of positions `>= k` (k may be 64).
#[inline(always)]
fn from(k: u32) -> u64 {
    if k >= 64 {
        0
    } else {
        u64::MAX << k
    }
}

/// Reads a DC difference and returns the new predictor.
#[inline(always)]
fn dc_value(r: &mut BitReader, dc: &HuffmanTable, pred: &mut i32) -> Result<i32, JpegError> {
    let size = dc.decode(r)? as u32;
    if size > 15 {
        return corrupt("DC difference category above 15");
    }
    let diff = extend(r.bits(size), size);
    *pred = pred.wrapping_add(diff);
    Ok(*pred)
}

/// Sequential (baseline / extended) block: DC difference then run-length coded AC values.
#[inline(always)]
pub(crate) fn baseline(
    r: &mut BitReader,
    dc: &HuffmanTable,
    ac: &HuffmanTable,
    pred: &mut i32,
    blk: &mut [i16],
    nz: &mut u64,
) -> Result<(), JpegError> {
    blk.fill(0);
    blk[0] = dc_value(r, dc, pred)? as i16;
    let mut k = 1u32;
    let mut mask = 0u64;
    while k <= 63 {
        r.ensure(16);
        let f = ac.ac_fast(r);
        if f != 0 {
            r.consume((f & 0xFF) as u32);
            k += ((f >> 8) & 0xFF) as u32;
            if k > 63 {
                return corrupt("AC coefficient run goes past the end of a block");
            }
            blk[ZZ_COL[k as usize]] = (f >> 16) as i16;
            mask |= 1 << k;
            k += 1;
            continue;
        }
        let sym = ac.decode(r)? as u32;
        let (run, size) = (sym >> 4, sym & 15);
        if size == 0 {
            if run != 15 {
                break; // end of block
            }
            k += 16;
            continue;
        }
        k += run;
        if k > 63 {
            return corrupt("AC coefficient run goes past the end of a block");
        }
        blk[ZZ_COL[k as usize]] = extend(r.bits(size), size) as i16;
        mask |= 1 << k;
        k += 1;
    }
    *nz = mask;
    Ok(())
}

/// Progressive DC, first scan: the predictor-coded DC value shifted left by `al`.
#[inline(always)]
pub(crate) fn dc_first(
    r: &mut BitReader,
    dc: &HuffmanTable,
    pred: &mut i32,
    blk: &mut [i16],
    nz: &mut u64,
    al: u32,
) -> Result<(), JpegError> {
    // The first scan to reach a block (T.81 G.1.1.1.1: DC before AC), so it clears the block and
    // its mask here, while their cache lines are being touched anyway, instead of in a separate
    // pass over reused buffers.
    blk.fill(0);
    *nz = 0;
    blk[0] = (dc_value(r, dc, pred)? << al) as i16;
    Ok(())
}

/// Progressive DC refinement: one more bit of precision.
#[inline(always)]
pub(crate) fn dc_refine(r: &mut BitReader, blk: &mut [i16], al: u32) {
    if r.bit() {
        blk[0] |= (1i32 << al) as i16;
    }
}

/// The spectral band `ss..=se` (zigzag positions) and bit position `al` of a progressive scan.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Band {
    pub ss: u32,
    pub se: u32,
    pub al: u32,
}

/// Progressive AC, first scan of a band (one component), with end-of-band runs.
#[inline(always)]
pub(crate) fn ac_first(
    r: &mut BitReader,
    ac: &HuffmanTable,
    blk: &mut [i16],
    nz: &mut u64,
    band: Band,
    eobrun: &mut u32,
) -> Result<(), JpegError> {
    let Band { ss, se, al } = band;
    if *eobrun > 0 {
        *eobrun -= 1;
        return Ok(());
    }
    let mut k = ss;
    while k <= se {
        r.ensure(16);
        let f = ac.ac_fast(r);
        if f != 0 {
            r.consume((f & 0xFF) as u32);
            k += ((f >> 8) & 0xFF) as u32;
            if k > se {
                return corrupt("AC coefficient run goes past the end of the spectral band");
            }
            blk[ZZ_COL[k as usize]] = ((f >> 16) << al) as i16;
            *nz |= 1 << k;
            k += 1;
            continue;
        }
        let sym = ac.decode(r)? as u32;
        let (run, size) = (sym >> 4, sym & 15);
        if size == 0 {
            if run < 15 {
                *eobrun = (1 << run) - 1 + r.bits(run);
                break;
            }
            k += 16;
            continue;
        }
        k += run;
        if k > se {
            return corrupt("AC coefficient run goes past the end of the spectral band");
        }
        blk[ZZ_COL[k as usize]] = (extend(r.bits(size), size) << al) as i16;
        *nz |= 1 << k;
        k += 1;
    }
    Ok(())
}

/// Applies one correction bit, in zigzag order, to each already non-zero coefficient in `targets`:
/// a set bit adds `p1` away from zero unless that bit is already set (G.1.2.3). Branch-free per
/// coefficient: the correction bits are close to random, so a branch on them mispredicts often.
#[inline(always)]
fn correct(r: &mut BitReader, blk: &mut [i16], mut targets: u64, p1: i16) {
    while targets != 0 {
        let take = targets.count_ones().min(32);
        let bits = r.bits(take);
        for i in (0..take).rev() {
            let k = ZZ_COL[targets.trailing_zeros() as usize];
            targets &= targets - 1;
            let c = blk[k];
            let sign = c >> 15; // 0 or -1
            let step = (p1 ^ sign).wrapping_sub(sign); // p1 toward c's sign
            let apply = ((bits >> i) & 1) as i16 & ((c & p1) == 0) as i16;
            blk[k] = c.wrapping_add(step * apply);
        }
    }
}

/// Consumes the correction bits of `targets` without applying them (a block nobody will read).
#[inline(always)]
fn skip_corrections(r: &mut BitReader, targets: u64) {
    let mut n = targets.count_ones();
    while n > 0 {
        let take = n.min(32);
        r.bits(take);
        n -= take;
    }
}

/// [`correct`] for a block the region reads, [`skip_corrections`] otherwise.
#[inline(always)]
fn correct_or_skip(r: &mut BitReader, blk: &mut [i16], targets: u64, p1: i16, keep: bool) {
    if keep {
        correct(r, blk, targets, p1);
    } else {
        skip_corrections(r, targets);
    }
}

/// Position of the `n`-th (0-based) set bit of `x`. With `PDEP` one BMI2 instruction deposits bit
/// `n` onto the `n`-th set bit of `x`; that took ~12% off a progressive crop decode, since `n`
/// (a run length) varies unpredictably and the bit-clearing loop mispredicts its exit. (A
/// branch-free broadword select measured no faster than the loop.)
#[inline(always)]
fn nth_set_bit<const PDEP: bool>(mut x: u64, n: u32) -> Option<u32> {
    #[cfg(target_arch = "x86_64")]
    if PDEP {
        // SAFETY: `PDEP` is only set by callers running with BMI2 enabled (see `scan`).
        let d = unsafe { std::arch::x86_64::_pdep_u64(1u64 << n, x) };
        return (d != 0).then(|| d.trailing_zeros());
    }
    for _ in 0..n {
        x &= x.wrapping_sub(1);
    }
    (x != 0).then(|| x.trailing_zeros())
}

/// Progressive AC refinement of a band by bit `al`: new coefficients of magnitude 1 placed
/// after runs of still-zero coefficients, and a correction bit for every coefficient that was
/// already non-zero, including those skipped by a run or inside an end-of-band run. With `keep`
/// false only the bit stream and the non-zero mask advance: the values of a block outside the
/// decoded region are never read, and skipping their updates saves the memory traffic.
#[inline(always)]
pub(crate) fn ac_refine<const PDEP: bool>(
    r: &mut BitReader,
    ac: &HuffmanTable,
    blk: &mut [i16],
    nz: &mut u64,
    band: Band,
    eobrun: &mut u32,
    keep: bool,
) -> Result<(), JpegError> {
    let Band { ss, se, al } = band;
    let p1: i16 = 1 << al;
    let band = band_mask(ss, se);
    let mut k = ss;
    if *eobrun == 0 {
        while k <= se {
            let sym = ac.decode(r)? as u32;
            let (run, size) = (sym >> 4, sym & 15);
            let value = match size {
                1 => {
                    if r.bit() {
                        p1
                    } else {
                        -p1
                    }
                }
                0 if run != 15 => {
                    *eobrun = (1 << run) + r.bits(run);
                    break;
                }
                0 => 0, // ZRL: skip 16 zero coefficients
                _ => return corrupt("AC refinement value with magnitude other than 1"),
            };
            // The new coefficient (or the end of a ZRL) lands on the `run`-th still-zero position.
            let zeros = !*nz & band & from(k);
            let pos = match nth_set_bit::<PDEP>(zeros, if value != 0 { run } else { 15 }) {
                Some(p) => p,
                None if value == 0 => se + 1,
                None => return corrupt("AC refinement run goes past the end of the spectral band"),
            };
            correct_or_skip(r, blk, *nz & band & from(k) & !from(pos), p1, keep);
            if value != 0 {
                if keep {
                    blk[ZZ_COL[pos as usize]] = value;
                }
                *nz |= 1 << pos;
            }
            k = pos + 1;
        }
    }
    if *eobrun > 0 {
        correct_or_skip(r, blk, *nz & band & from(k), p1, keep);
        *eobrun -= 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_and_nth_bit() {
        assert_eq!(band_mask(1, 63), u64::MAX - 1);
        assert_eq!(band_mask(1, 5), 0b111110);
        for (x, n, at) in [
            (0b1011000, 0, Some(3)),
            (0b1011000, 2, Some(6)),
            (0b1011000, 3, None),
        ] {
            assert_eq!(nth_set_bit::<false>(x, n), at);
            if crate::cpu::fast_pdep() {
                assert_eq!(nth_set_bit::<true>(x, n), at);
            }
        }
    }

    #[test]
    fn nth_set_bit_paths_agree() {
        let pdep = crate::cpu::fast_pdep();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for t in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Sparse and dense masks, and the extremes.
            let v = match t % 4 {
                0 => x & (x >> 3) & (x >> 5),
                1 => x,
                2 => u64::MAX << (t % 64),
                _ => x | (x >> 1),
            };
            for n in 0..16 {
                let expect = nth_set_bit::<false>(v, n);
                if pdep {
                    assert_eq!(nth_set_bit::<true>(v, n), expect, "{v:#x} n={n}");
                }
            }
        }
    }
}
