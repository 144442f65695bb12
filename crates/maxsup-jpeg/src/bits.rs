//! Bit reader over entropy-coded JPEG data: undoes 0xFF00 byte stuffing, stops at markers, and
//! keeps up to 64 bits buffered MSB-first so Huffman lookups are a shift and a table index.

use crate::error::{corrupt, JpegError};

/// The out-of-line paths (slow refill, restart, end of scan) are free functions of plain values, so
/// a reader's address never escapes and, once the hot loops are inlined, its fields live in
/// registers instead of being stored and reloaded around every bit operation.
#[derive(Clone, Copy)]
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte to load.
    pos: usize,
    /// Buffered bits, the next one in bit 63.
    buf: u64,
    /// Number of valid bits in `buf`.
    count: u32,
    /// Zero bits appended because the data ended or a marker was reached; consuming them means the
    /// scan was shorter than its content claims (checked by [`BitReader::check_overrun`]).
    fabricated: u32,
    /// A marker (or the end of data) was reached; no more bytes are loaded until a restart.
    at_marker: bool,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// True when one of the 8 bytes is 0xFF (the classic "has zero byte" test on the complement).
#[inline(always)]
fn has_ff(x: u64) -> bool {
    (!x).wrapping_sub(ONES) & x & HIGHS != 0
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8], pos: usize) -> BitReader<'a> {
        BitReader {
            data,
            pos,
            buf: 0,
            count: 0,
            fabricated: 0,
            at_marker: false,
        }
    }

    /// Tops the buffer up to at least 57 bits.
    #[inline(always)]
    fn refill(&mut self) {
        // Fast path: eight bytes without 0xFF load at once. Bits beyond the `count` we record are
        // the same bytes a later refill would OR into the same positions, so leaving them is harmless.
        if !self.at_marker && self.pos + 8 <= self.data.len() {
            let chunk = u64::from_be_bytes(self.data[self.pos..self.pos + 8].try_into().unwrap());
            if !has_ff(chunk) {
                let bytes = (64 - self.count) / 8;
                self.buf |= chunk >> self.count;
                self.count += bytes * 8;
                self.pos += bytes as usize;
                return;
            }
        }
        let (pos, buf, count, fabricated, at_marker) = refill_slow(
            self.data,
            self.pos,
            self.buf,
            self.count,
            self.fabricated,
            self.at_marker,
        );
        self.pos = pos;
        self.buf = buf;
        self.count = count;
        self.fabricated = fabricated;
        self.at_marker = at_marker;
    }

    /// Makes sure at least `n` (<= 57) bits are buffered.
    #[inline(always)]
    pub fn ensure(&mut self, n: u32) {
        if self.count < n {
            self.refill();
        }
    }

    /// The next `n` bits (1..=32) without consuming them; call [`BitReader::ensure`] first.
    #[inline(always)]
    pub fn peek(&self, n: u32) -> u32 {
        (self.buf >> (64 - n)) as u32
    }

    #[inline(always)]
    pub fn consume(&mut self, n: u32) {
        debug_assert!(n <= self.count);
        self.buf <<= n;
        self.count -= n;
    }

    /// Reads `n` bits (0..=32) as an unsigned number, MSB first.
    #[inline(always)]
    pub fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        self.ensure(n);
        let v = self.peek(n);
        self.consume(n);
        v
    }

    #[inline(always)]
    pub fn bit(&mut self) -> bool {
        self.ensure(1);
        let v = self.buf >> 63 != 0;
        self.consume(1);
        v
    }

    /// Errors when the scan consumed bits that were never in the stream.
    #[inline(always)]
    pub fn check_overrun(&self) -> Result<(), JpegError> {
        if self.fabricated > self.count {
            return corrupt(
                "entropy-coded data ends before the scan is complete (truncated or corrupt)",
            );
        }
        Ok(())
    }

    /// Handles a restart marker: drops the padding bits of the current interval and positions the
    /// reader after the next `RSTn` marker.
    #[inline(always)]
    pub fn restart(&mut self) -> Result<(), JpegError> {
        self.check_overrun()?;
        self.pos = after_restart_marker(self.data, self.pos)?;
        self.buf = 0;
        self.count = 0;
        self.fabricated = 0;
        self.at_marker = false;
        Ok(())
    }

    /// Position of the marker that ends this scan (searching on from the last byte loaded), for
    /// continuing with the next segment; also used when decoding stops early.
    #[inline(always)]
    pub fn end_of_scan(&self) -> usize {
        end_of_scan(self.data, self.pos)
    }
}

/// Loads bytes one at a time (stuffing, markers, end of data) until more than 56 bits are buffered;
/// returns the new (pos, buf, count, fabricated, at_marker).
#[cold]
#[inline(never)]
fn refill_slow(
    data: &[u8],
    mut pos: usize,
    mut buf: u64,
    mut count: u32,
    mut fabricated: u32,
    mut at_marker: bool,
) -> (usize, u64, u32, u32, bool) {
    while count <= 56 {
        let byte = if at_marker {
            fabricated += 8;
            0
        } else {
            match data.get(pos) {
                None => {
                    at_marker = true;
                    fabricated += 8;
                    0
                }
                Some(&0xFF) => match data.get(pos + 1) {
                    Some(0x00) => {
                        pos += 2;
                        0xFF
                    }
                    // Fill bytes (0xFF 0xFF ...) before a marker are allowed.
                    _ => {
                        at_marker = true;
                        fabricated += 8;
                        0
                    }
                },
                Some(&b) => {
                    pos += 1;
                    b
                }
            }
        };
        buf |= (byte as u64) << (56 - count);
        count += 8;
    }
    (pos, buf, count, fabricated, at_marker)
}

/// Offset after the `RSTn` marker that must follow a restart interval ending before `pos`.
#[cold]
#[inline(never)]
fn after_restart_marker(data: &[u8], pos: usize) -> Result<usize, JpegError> {
    let marker_pos = next_marker(data, pos);
    match data.get(marker_pos + 1) {
        Some(m) if (0xD0..=0xD7).contains(m) => Ok(marker_pos + 2),
        _ => corrupt("expected a restart marker (RSTn) between restart intervals"),
    }
}

/// The marker ending the scan whose data continues at `pos` (restart markers skipped).
#[inline(never)]
fn end_of_scan(data: &[u8], pos: usize) -> usize {
    let mut p = pos;
    loop {
        p = next_marker(data, p);
        match data.get(p + 1) {
            Some(m) if (0xD0..=0xD7).contains(m) => p += 2,
            _ => return p,
        }
    }
}

/// Offset of the next marker (`0xFF` followed by a byte other than `0x00` and `0xFF`) at or after
/// `from`, or the data length when there is none.
pub(crate) fn next_marker(data: &[u8], from: usize) -> usize {
    let mut p = from;
    while p + 1 < data.len() {
        match data[p..data.len() - 1].iter().position(|&b| b == 0xFF) {
            None => return data.len(),
            Some(i) => p += i,
        }
        let next = data[p + 1];
        if next != 0x00 && next != 0xFF {
            return p;
        }
        p += 1;
    }
    data.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unstuffs_and_stops_at_marker() {
        // 0xAB, stuffed 0xFF, 0x12, then an EOI marker.
        let data = [0xAB, 0xFF, 0x00, 0x12, 0xFF, 0xD9];
        let mut r = BitReader::new(&data, 0);
        assert_eq!(r.bits(8), 0xAB);
        assert_eq!(r.bits(8), 0xFF);
        assert_eq!(r.bits(4), 0x1);
        assert_eq!(r.bits(4), 0x2);
        assert!(r.check_overrun().is_ok());
        assert_eq!(r.bits(8), 0);
        assert!(r.check_overrun().is_err());
        assert_eq!(r.end_of_scan(), 4);
    }

    #[test]
    fn fast_path_matches_bytewise_reading() {
        let data: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
        let mut r = BitReader::new(&data, 0);
        let mut got = Vec::new();
        for _ in 0..data.len() * 8 / 5 {
            got.push(r.bits(5) as u8);
        }
        let mut expect = Vec::new();
        let mut acc = 0u32;
        let mut n = 0;
        for &b in &data {
            acc = (acc << 8) | b as u32;
            n += 8;
            while n >= 5 {
                expect.push(((acc >> (n - 5)) & 31) as u8);
                n -= 5;
            }
        }
        assert_eq!(got, expect[..got.len()]);
    }

    #[test]
    fn restart_skips_to_after_rst() {
        let data = [0b1010_1111, 0xFF, 0xD0, 0x80, 0xFF, 0xD9];
        let mut r = BitReader::new(&data, 0);
        assert_eq!(r.bits(4), 0b1010);
        r.restart().unwrap();
        assert!(r.bit());
        assert_eq!(r.end_of_scan(), 4);
    }
}
