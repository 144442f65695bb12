//! One scan (SOS segment + entropy-coded data): MCU traversal, restart intervals, and the early stop
//! once every block row the caller needs has been decoded.

use crate::bits::BitReader;
use crate::blocks::{self, Band};
use crate::error::{corrupt, JpegError};
use crate::frame::{be16, Component, Frame, Tables};
use crate::huffman::HuffmanTable;
use crate::output::BlockRange;

/// Scan kinds, as const generic parameters: each gets its own specialized MCU loop.
const SEQUENTIAL: u8 = 0;
const DC_FIRST: u8 = 1;
const DC_REFINE: u8 = 2;
const AC_FIRST: u8 = 3;
const AC_REFINE: u8 = 4;

struct ScanComponent {
    index: usize,
    dc: usize,
    ac: usize,
}

/// Tables and parameters shared by every block of a scan.
struct ScanTables<'t> {
    dc: Vec<&'t HuffmanTable>,
    ac: Vec<&'t HuffmanTable>,
    band: Band,
}

/// Decodes block (`bx`, `by`) of the `i`-th component of the scan.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn decode_block<const KIND: u8, const PDEP: bool>(
    t: &ScanTables,
    r: &mut BitReader,
    comp: &mut Component,
    i: usize,
    bx: usize,
    by: usize,
    eobrun: &mut u32,
    keep: bool,
) -> Result<(), JpegError> {
    let b = by * comp.blocks_w + bx;
    let blk = &mut comp.coefs[b * 64..b * 64 + 64];
    let nz = &mut comp.nz[b];
    let al = t.band.al;
    match KIND {
        SEQUENTIAL => blocks::baseline(r, t.dc[i], t.ac[i], &mut comp.dc_pred, blk, nz),
        DC_FIRST => blocks::dc_first(r, t.dc[i], &mut comp.dc_pred, blk, nz, al),
        DC_REFINE => {
            blocks::dc_refine(r, blk, al);
            Ok(())
        }
        AC_FIRST => blocks::ac_first(r, t.ac[i], blk, nz, t.band, eobrun),
        _ => blocks::ac_refine::<PDEP>(r, t.ac[i], blk, nz, t.band, eobrun, keep),
    }
}

/// Decodes the scan whose SOS segment starts at `data[pos]` (the marker's `FF DA`). `needed[c]`
/// are the blocks of component `c` the caller will read: the scan stops after the MCU row that
/// completes rows `..needed[c].y1`, and refinement scans skip the value updates of blocks outside.
/// Returns the offset of the marker following the scan. `PDEP`: BMI2 is enabled in the caller and
/// its `pdep` is fast ([`crate::cpu::fast_pdep`]).
#[inline(always)]
pub(crate) fn decode_scan<const PDEP: bool>(
    data: &[u8],
    pos: usize,
    frame: &mut Frame,
    tables: &Tables,
    needed: &[BlockRange],
) -> Result<usize, JpegError> {
    let len = be16(data, pos + 2)?;
    let seg = match data.get(pos + 4..pos + 2 + len) {
        Some(s) if len >= 2 => s,
        _ => return corrupt("SOS segment runs past the end of the data"),
    };
    let ns = *seg
        .first()
        .ok_or(JpegError::Corrupt("empty SOS segment".into()))? as usize;
    if ns == 0 || ns > 4 || seg.len() < 1 + 2 * ns + 3 {
        return corrupt("malformed SOS segment");
    }
    let mut comps = Vec::with_capacity(ns);
    for i in 0..ns {
        let id = seg[1 + 2 * i];
        let index = frame
            .components
            .iter()
            .position(|c| c.id == id)
            .ok_or_else(|| JpegError::Corrupt(format!("scan refers to unknown component {id}")))?;
        let t = seg[2 + 2 * i];
        comps.push(ScanComponent {
            index,
            dc: (t >> 4) as usize & 3,
            ac: (t & 15) as usize & 3,
        });
    }
    let p = 1 + 2 * ns;
    let (ss, se, ah, al) = (
        seg[p] as u32,
        seg[p + 1] as u32,
        (seg[p + 2] >> 4) as u32,
        (seg[p + 2] & 15) as u32,
    );
    let kind = if !frame.progressive {
        SEQUENTIAL
    } else if ss == 0 {
        if se != 0 {
            return corrupt("progressive DC scan with a non-zero spectral end");
        }
        if ah == 0 {
            DC_FIRST
        } else {
            DC_REFINE
        }
    } else {
        if se < ss || se > 63 || ns != 1 {
            return corrupt("progressive AC scan with a bad band or several components");
        }
        if ah == 0 {
            AC_FIRST
        } else {
            AC_REFINE
        }
    };
    if al > 13 {
        return corrupt("successive approximation shift above 13");
    }
    let need_dc = matches!(kind, SEQUENTIAL | DC_FIRST);
    let need_ac = matches!(kind, SEQUENTIAL | AC_FIRST | AC_REFINE);
    // Placeholder for tables a scan kind never reads; built once.
    static EMPTY: std::sync::OnceLock<HuffmanTable> = std::sync::OnceLock::new();
    let empty = EMPTY.get_or_init(|| HuffmanTable::new(&[0; 16], &[]).expect("empty table"));
    let mut dc_tables = Vec::with_capacity(ns);
    let mut ac_tables = Vec::with_capacity(ns);
    for c in &comps {
        dc_tables.push(match (&tables.dc[c.dc], need_dc) {
            (Some(t), _) => t,
            (None, false) => empty,
            (None, true) => {
                return corrupt(format!("scan uses undefined DC Huffman table {}", c.dc))
            }
        });
        ac_tables.push(match (&tables.ac[c.ac], need_ac) {
            (Some(t), _) => t,
            (None, false) => empty,
            (None, true) => {
                return corrupt(format!("scan uses undefined AC Huffman table {}", c.ac))
            }
        });
    }
    for c in &comps {
        frame.components[c.index].dc_pred = 0;
    }

    let r = BitReader::new(data, pos + 2 + len);
    let tabs = ScanTables {
        dc: dc_tables,
        ac: ac_tables,
        band: Band { ss, se, al },
    };
    let restart = tables.restart_interval;
    let r = match kind {
        SEQUENTIAL => traverse::<SEQUENTIAL, PDEP>(r, frame, &comps, &tabs, needed, restart)?,
        DC_FIRST => traverse::<DC_FIRST, PDEP>(r, frame, &comps, &tabs, needed, restart)?,
        DC_REFINE => traverse::<DC_REFINE, PDEP>(r, frame, &comps, &tabs, needed, restart)?,
        AC_FIRST => traverse::<AC_FIRST, PDEP>(r, frame, &comps, &tabs, needed, restart)?,
        _ => traverse::<AC_REFINE, PDEP>(r, frame, &comps, &tabs, needed, restart)?,
    };
    r.check_overrun()?;
    Ok(r.end_of_scan())
}

/// Walks the scan's MCUs (restart intervals included) up to the rows needed, decoding each block.
#[inline(always)]
fn traverse<'a, const KIND: u8, const PDEP: bool>(
    mut r: BitReader<'a>,
    frame: &mut Frame,
    comps: &[ScanComponent],
    tabs: &ScanTables,
    needed: &[BlockRange],
    restart: usize,
) -> Result<BitReader<'a>, JpegError> {
    let mut eobrun = 0u32;
    let mut mcus_done = 0usize;

    if comps.len() == 1 {
        // Non-interleaved: one block per MCU, over the component's own (unpadded) block grid.
        let ci = comps[0].index;
        let (w, h) = frame.components[ci].sample_size(frame);
        let (bw, bh) = (w.div_ceil(8), h.div_ceil(8));
        let rows = bh.min(needed[ci].y1);
        for by in 0..rows {
            for bx in 0..bw {
                if restart > 0 && mcus_done > 0 && mcus_done.is_multiple_of(restart) {
                    r.restart()?;
                    frame.components[ci].dc_pred = 0;
                    eobrun = 0;
                }
                decode_block::<KIND, PDEP>(
                    tabs,
                    &mut r,
                    &mut frame.components[ci],
                    0,
                    bx,
                    by,
                    &mut eobrun,
                    needed[ci].contains(bx, by),
                )?;
                mcus_done += 1;
            }
        }
    } else {
        let mut rows = 0;
        for c in comps {
            let v = frame.components[c.index].v;
            rows = rows.max(needed[c.index].y1.div_ceil(v));
        }
        let rows = rows.min(frame.mcus_y);
        for my in 0..rows {
            for mx in 0..frame.mcus_x {
                if restart > 0 && mcus_done > 0 && mcus_done.is_multiple_of(restart) {
                    r.restart()?;
                    for c in comps {
                        frame.components[c.index].dc_pred = 0;
                    }
                    eobrun = 0;
                }
                for (i, c) in comps.iter().enumerate() {
                    let (h, v) = (frame.components[c.index].h, frame.components[c.index].v);
                    for y in 0..v {
                        for x in 0..h {
                            decode_block::<KIND, PDEP>(
                                tabs,
                                &mut r,
                                &mut frame.components[c.index],
                                i,
                                mx * h + x,
                                my * v + y,
                                &mut eobrun,
                                true, // interleaved scans are never refinements of AC
                            )?;
                        }
                    }
                }
                mcus_done += 1;
            }
        }
    }
    Ok(r)
}
