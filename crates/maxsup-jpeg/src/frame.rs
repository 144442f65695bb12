//! Marker segments (T.81 B.2): frame header, quantization and Huffman tables, restart interval,
//! Adobe colour transform, and the per-component coefficient storage they describe.

use crate::error::{corrupt, unsupported, JpegError};
use crate::huffman::HuffmanTable;
use crate::pool::BufferPool;

/// What a JPEG holds, from its frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub width: usize,
    pub height: usize,
    /// Colour components (1 grayscale, 3 YCbCr or RGB).
    pub components: usize,
    pub progressive: bool,
}

/// One colour component and its quantized coefficients (zigzag order, 64 per block).
pub(crate) struct Component {
    pub id: u8,
    pub h: usize,
    pub v: usize,
    pub quant_index: usize,
    /// Blocks per row and rows of blocks, padded to whole MCUs.
    pub blocks_w: usize,
    pub blocks_h: usize,
    pub coefs: Vec<i16>,
    /// Per block: bit k set when AC coefficient k (zigzag) is non-zero.
    pub nz: Vec<u64>,
    pub dc_pred: i32,
}

impl Component {
    /// Width and height in samples at full scale (T.81 A.1.1).
    pub fn sample_size(&self, frame: &Frame) -> (usize, usize) {
        (
            (frame.width * self.h).div_ceil(frame.h_max),
            (frame.height * self.v).div_ceil(frame.v_max),
        )
    }
}

pub(crate) struct Frame {
    pub width: usize,
    pub height: usize,
    pub progressive: bool,
    pub components: Vec<Component>,
    pub h_max: usize,
    pub v_max: usize,
    pub mcus_x: usize,
    pub mcus_y: usize,
}

/// Largest accepted width or height.
pub const MAX_SIDE: usize = 1 << 15;

/// Everything read from the segments so far.
pub(crate) struct Tables {
    /// Quantization tables in zigzag order.
    pub quant: [Option<[u16; 64]>; 4],
    pub dc: [Option<HuffmanTable>; 4],
    pub ac: [Option<HuffmanTable>; 4],
    pub restart_interval: usize,
    /// Adobe APP14 transform flag: 0 = no colour transform (RGB), 1 = YCbCr.
    pub adobe_transform: Option<u8>,
}

impl Tables {
    pub fn new() -> Tables {
        Tables {
            quant: [None; 4],
            dc: [None, None, None, None],
            ac: [None, None, None, None],
            restart_interval: 0,
            adobe_transform: None,
        }
    }
}

/// Big-endian u16 at `p`.
pub(crate) fn be16(data: &[u8], p: usize) -> Result<usize, JpegError> {
    match data.get(p..p + 2) {
        Some(b) => Ok(((b[0] as usize) << 8) | b[1] as usize),
        None => corrupt("segment runs past the end of the data"),
    }
}

pub(crate) fn parse_dqt(seg: &[u8], tables: &mut Tables) -> Result<(), JpegError> {
    let mut p = 0;
    while p < seg.len() {
        let (precision, id) = (seg[p] >> 4, (seg[p] & 15) as usize);
        p += 1;
        if id > 3 {
            return corrupt(format!("quantization table id {id} above 3"));
        }
        let mut q = [0u16; 64];
        for (k, e) in q.iter_mut().enumerate() {
            *e = match precision {
                0 => *seg
                    .get(p + k)
                    .ok_or(JpegError::Corrupt("short DQT".into()))? as u16,
                1 => be16(seg, p + 2 * k)? as u16,
                _ => return corrupt("quantization table precision above 16 bits"),
            };
        }
        p += 64 * (precision as usize + 1);
        if p > seg.len() {
            return corrupt("short DQT segment");
        }
        tables.quant[id] = Some(q);
    }
    Ok(())
}

pub(crate) fn parse_dht(seg: &[u8], tables: &mut Tables) -> Result<(), JpegError> {
    let mut p = 0;
    while p < seg.len() {
        let (class, id) = (seg[p] >> 4, (seg[p] & 15) as usize);
        if class > 1 || id > 3 {
            return corrupt(format!("Huffman table class {class} id {id} out of range"));
        }
        let counts: [u8; 16] = match seg.get(p + 1..p + 17) {
            Some(c) => c.try_into().unwrap(),
            None => return corrupt("short DHT segment"),
        };
        let n: usize = counts.iter().map(|&c| c as usize).sum();
        let values = match seg.get(p + 17..p + 17 + n) {
            Some(v) => v,
            None => return corrupt("short DHT segment"),
        };
        let table = HuffmanTable::new(&counts, values)?;
        if class == 0 {
            tables.dc[id] = Some(table);
        } else {
            tables.ac[id] = Some(table);
        }
        p += 17 + n;
    }
    Ok(())
}

pub(crate) fn parse_app14(seg: &[u8], tables: &mut Tables) {
    if seg.len() >= 12 && &seg[..5] == b"Adobe" {
        tables.adobe_transform = Some(seg[11]);
    }
}

/// Parses SOFn. `marker` selects the process; only Huffman-coded 8-bit baseline, extended and
/// progressive frames with 1 or 3 components are handled.
pub(crate) fn parse_sof(marker: u8, seg: &[u8]) -> Result<Frame, JpegError> {
    let progressive = match marker {
        0xC0 | 0xC1 => false,
        0xC2 => true,
        0xC3 | 0xC7 | 0xCB | 0xCF => return unsupported("lossless JPEG"),
        0xC5 | 0xC6 => return unsupported("hierarchical JPEG"),
        _ => return unsupported("arithmetic-coded JPEG"),
    };
    if seg.len() < 6 {
        return corrupt("short SOF segment");
    }
    if seg[0] != 8 {
        return unsupported(format!("{}-bit samples", seg[0]));
    }
    let height = be16(seg, 1)?;
    let width = be16(seg, 3)?;
    let n = seg[5] as usize;
    if height == 0 {
        return unsupported("height defined by a DNL marker");
    }
    if width == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return corrupt(format!("image size {width}x{height} out of range"));
    }
    if n != 1 && n != 3 {
        return unsupported(format!("{n} colour components"));
    }
    if seg.len() < 6 + 3 * n {
        return corrupt("short SOF segment");
    }
    let mut components = Vec::with_capacity(n);
    for i in 0..n {
        let c = &seg[6 + 3 * i..9 + 3 * i];
        let (h, v) = ((c[1] >> 4) as usize, (c[1] & 15) as usize);
        if !(1..=4).contains(&h) || !(1..=4).contains(&v) || c[2] > 3 {
            return corrupt(format!(
                "component {} has sampling {h}x{v}, table {}",
                c[0], c[2]
            ));
        }
        components.push(Component {
            id: c[0],
            h,
            v,
            quant_index: c[2] as usize,
            blocks_w: 0,
            blocks_h: 0,
            coefs: Vec::new(),
            nz: Vec::new(),
            dc_pred: 0,
        });
    }
    // A single component is one block per MCU whatever its factors say (T.81 A.2.2).
    if n == 1 {
        components[0].h = 1;
        components[0].v = 1;
    }
    let h_max = components.iter().map(|c| c.h).max().unwrap();
    let v_max = components.iter().map(|c| c.v).max().unwrap();
    let mcus_x = width.div_ceil(8 * h_max);
    let mcus_y = height.div_ceil(8 * v_max);
    Ok(Frame {
        width,
        height,
        progressive,
        components,
        h_max,
        v_max,
        mcus_x,
        mcus_y,
    })
}

thread_local! {
    /// Coefficient buffers (~0.8 MB for a 512x512 image) and non-zero masks of earlier images on
    /// this thread, reused.
    static COEF_BUFFERS: BufferPool<i16> = const { BufferPool::new() };
    static MASK_BUFFERS: BufferPool<u64> = const { BufferPool::new() };
}

impl Frame {
    /// Sets up coefficient storage. Blocks and their masks are cleared by the first scan that
    /// reaches them (the sequential block decoder, or the first DC scan of a progressive image),
    /// so a reused buffer is not zeroed here; blocks no scan reached are never read (the region's
    /// rows are decoded).
    pub fn allocate(&mut self) {
        for c in self.components.iter_mut() {
            c.blocks_w = self.mcus_x * c.h;
            c.blocks_h = self.mcus_y * c.v;
            let blocks = c.blocks_w * c.blocks_h;
            c.coefs = COEF_BUFFERS.with(|p| p.take(blocks * 64));
            c.nz = MASK_BUFFERS.with(|p| p.take(blocks));
        }
    }

    pub fn info(&self) -> ImageInfo {
        ImageInfo {
            width: self.width,
            height: self.height,
            components: self.components.len(),
            progressive: self.progressive,
        }
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        for c in &mut self.components {
            COEF_BUFFERS.with(|p| p.give(std::mem::take(&mut c.coefs)));
            MASK_BUFFERS.with(|p| p.give(std::mem::take(&mut c.nz)));
        }
    }
}
