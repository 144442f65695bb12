//! Huffman tables (DHT) and symbol decoding. Codes of up to `FAST_BITS` bits resolve with one table
//! lookup; longer ones walk the canonical code ranges. AC tables also get a combined table that
//! returns run, coefficient value and total length when code and magnitude bits fit the lookahead.

use crate::bits::BitReader;
use crate::error::{corrupt, JpegError};

pub(crate) const FAST_BITS: u32 = 9;

#[derive(Clone)]
pub(crate) struct HuffmanTable {
    /// `(length << 8) | symbol` for every `FAST_BITS`-bit prefix that starts a short code; 0 otherwise.
    fast: Vec<u16>,
    /// For AC use: `(value << 16) | (run << 8) | total_bits` when a code and its magnitude bits fit
    /// in `FAST_BITS`; 0 otherwise.
    ac_fast: Vec<i32>,
    /// Largest code of each length (-1 when none), index 1..=16; index 17 is a sentinel.
    max_code: [i32; 18],
    /// `values` index of the first code of each length, minus that code.
    offset: [i32; 17],
    values: Vec<u8>,
}

/// Sign-extends a `size`-bit magnitude category value (JPEG's EXTEND).
#[inline(always)]
pub(crate) fn extend(v: u32, size: u32) -> i32 {
    if size == 0 {
        return 0;
    }
    let v = v as i32;
    if v < (1 << (size - 1)) {
        v - (1 << size) + 1
    } else {
        v
    }
}

impl HuffmanTable {
    /// Builds a table from DHT's 16 code-length counts and the symbols in code order.
    pub fn new(counts: &[u8; 16], values: &[u8]) -> Result<HuffmanTable, JpegError> {
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total != values.len() || total > 256 {
            return corrupt("Huffman table symbol count does not match its code lengths");
        }
        let mut fast = vec![0u16; 1 << FAST_BITS];
        let mut max_code = [-1i32; 18];
        let mut offset = [0i32; 17];
        let mut code: u32 = 0;
        let mut k = 0usize;
        for len in 1..=16u32 {
            let n = counts[len as usize - 1] as usize;
            offset[len as usize] = k as i32 - code as i32;
            for _ in 0..n {
                if code >= 1 << len {
                    return corrupt("Huffman table has more codes than its lengths allow");
                }
                if len <= FAST_BITS {
                    let shift = FAST_BITS - len;
                    let base = (code << shift) as usize;
                    for e in &mut fast[base..base + (1 << shift)] {
                        *e = ((len as u16) << 8) | values[k] as u16;
                    }
                }
                code += 1;
                k += 1;
            }
            if n > 0 {
                max_code[len as usize] = code as i32 - 1;
            }
            code <<= 1;
        }
        max_code[17] = i32::MAX;
        let mut table = HuffmanTable {
            fast,
            ac_fast: vec![0; 1 << FAST_BITS],
            max_code,
            offset,
            values: values.to_vec(),
        };
        for prefix in 0..1u32 << FAST_BITS {
            let e = table.fast[prefix as usize];
            if e == 0 {
                continue;
            }
            let (len, sym) = ((e >> 8) as u32, (e & 0xFF) as u32);
            let (run, size) = (sym >> 4, sym & 15);
            if size != 0 && len + size <= FAST_BITS {
                let magnitude = (prefix >> (FAST_BITS - len - size)) & ((1 << size) - 1);
                let value = extend(magnitude, size);
                table.ac_fast[prefix as usize] =
                    (value << 16) | ((run as i32) << 8) | (len + size) as i32;
            }
        }
        Ok(table)
    }

    /// Decodes one symbol.
    #[inline(always)]
    pub fn decode(&self, r: &mut BitReader) -> Result<u8, JpegError> {
        r.ensure(16);
        let e = self.fast[r.peek(FAST_BITS) as usize];
        if e != 0 {
            r.consume((e >> 8) as u32);
            return Ok(e as u8);
        }
        let (symbol, len) = self.decode_slow(r.peek(16))?;
        r.consume(len);
        Ok(symbol)
    }

    /// Codes longer than `FAST_BITS`, from the next 16 bits: (symbol, code length).
    #[cold]
    #[inline(never)]
    fn decode_slow(&self, next16: u32) -> Result<(u8, u32), JpegError> {
        for len in FAST_BITS + 1..=16 {
            let code = (next16 >> (16 - len)) as i32;
            if code <= self.max_code[len as usize] {
                let i = (self.offset[len as usize] + code) as usize;
                return match self.values.get(i) {
                    Some(&v) => Ok((v, len)),
                    None => corrupt("Huffman code outside its table"),
                };
            }
        }
        corrupt("invalid Huffman code")
    }

    /// The combined AC entry for the next bits (see `ac_fast`); 0 when the slow path is needed.
    /// Call after `r.ensure(16)`.
    #[inline(always)]
    pub fn ac_fast(&self, r: &BitReader) -> i32 {
        self.ac_fast[r.peek(FAST_BITS) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_short_and_long_codes() {
        // Lengths: one code of 2 bits (00 -> 0x11), one of 3 bits (010 -> 0x01), one of 12 bits
        // (011000000000 -> 0xF0).
        let mut counts = [0u8; 16];
        counts[1] = 1;
        counts[2] = 1;
        counts[11] = 1;
        let t = HuffmanTable::new(&counts, &[0x11, 0x01, 0xF0]).unwrap();
        // Bits: 00 | 010 | 011000000000 | then value bits.
        let bytes = [0b0001_0011, 0b0000_0000, 0b0000_0000, 0xFF, 0xD9];
        let mut r = BitReader::new(&bytes, 0);
        assert_eq!(t.decode(&mut r).unwrap(), 0x11);
        assert_eq!(t.decode(&mut r).unwrap(), 0x01);
        assert_eq!(t.decode(&mut r).unwrap(), 0xF0);
    }

    #[test]
    fn extend_matches_the_standard() {
        assert_eq!(extend(0, 1), -1);
        assert_eq!(extend(1, 1), 1);
        assert_eq!(extend(0, 3), -7);
        assert_eq!(extend(3, 3), -4);
        assert_eq!(extend(4, 3), 4);
        assert_eq!(extend(7, 3), 7);
    }

    #[test]
    fn rejects_oversubscribed_lengths() {
        let mut counts = [0u8; 16];
        counts[0] = 3; // three 1-bit codes cannot exist
        assert!(HuffmanTable::new(&counts, &[1, 2, 3]).is_err());
    }
}
