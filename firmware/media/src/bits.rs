//! Bit-level reading and writing of H.264 RBSP data (ITU-T H.264 §7.2, §9.1).
//!
//! A NAL unit's payload is an RBSP ("raw byte sequence payload") with *emulation prevention*
//! bytes inserted so that it never contains a start code: the encoder writes `00 00 03` wherever
//! the RBSP has `00 00` followed by a byte `<= 03` (§7.4.1). [`nal_to_rbsp`] removes those bytes,
//! [`rbsp_to_nal`] inserts them. [`BitReader`] reads an RBSP (fixed-width fields and the
//! exp-Golomb codes `ue(v)`/`se(v)` of §9.1), [`BitWriter`] writes one.
//!
//! Nothing here panics on malformed input: running out of bits or an over-long exp-Golomb code
//! is a [`BitsError`].

use thiserror::Error;

/// What can go wrong reading an RBSP.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BitsError {
    /// The data ended before the field did.
    #[error("ran out of bits at bit {position}: wanted {wanted}, {left} left")]
    OutOfBits {
        /// Bit offset into the RBSP where the read started.
        position: usize,
        /// Bits the read needed.
        wanted: usize,
        /// Bits that were left.
        left: usize,
    },
    /// An exp-Golomb code with more than 32 leading zeros, or a value that does not fit the
    /// 32-bit result (H.264 never codes a value above 2^32 - 2).
    #[error("exp-Golomb code at bit {position} does not fit in 32 bits")]
    ExpGolombOverflow {
        /// Bit offset into the RBSP where the code started.
        position: usize,
    },
    /// `read_bits` was asked for more than 32 bits.
    #[error("asked for {0} bits at once; at most 32 can be read")]
    TooWide(u32),
}

/// Reads bits, most significant first, from an RBSP (emulation prevention already removed).
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    data: &'a [u8],
    /// Offset of the next bit to read, in bits from the start of `data`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// A reader positioned at the first bit of `rbsp`.
    pub fn new(rbsp: &'a [u8]) -> Self {
        BitReader { data: rbsp, pos: 0 }
    }

    /// Offset of the next bit to read, in bits from the start.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bits not yet read.
    pub fn bits_left(&self) -> usize {
        (self.data.len() * 8).saturating_sub(self.pos)
    }

    /// Whether the next bit starts a byte.
    pub fn is_byte_aligned(&self) -> bool {
        self.pos % 8 == 0
    }

    fn need(&self, wanted: usize) -> Result<(), BitsError> {
        let left = self.bits_left();
        if wanted > left {
            return Err(BitsError::OutOfBits {
                position: self.pos,
                wanted,
                left,
            });
        }
        Ok(())
    }

    /// Reads one bit `u(1)`.
    pub fn read_bit(&mut self) -> Result<bool, BitsError> {
        self.need(1)?;
        let byte = self.data.get(self.pos / 8).copied().unwrap_or(0);
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    /// Reads a flag `u(1)` (alias of [`read_bit`](Self::read_bit), for readability at call sites
    /// that follow the spec's syntax tables).
    pub fn read_flag(&mut self) -> Result<bool, BitsError> {
        self.read_bit()
    }

    /// Reads `n <= 32` bits `u(n)` as an unsigned number; `n == 0` reads nothing and gives 0.
    pub fn read_bits(&mut self, n: u32) -> Result<u32, BitsError> {
        if n > 32 {
            return Err(BitsError::TooWide(n));
        }
        self.need(n as usize)?;
        let mut value: u64 = 0;
        let mut remaining = n as usize;
        while remaining > 0 {
            let byte = u64::from(self.data.get(self.pos / 8).copied().unwrap_or(0));
            let bit_in_byte = self.pos % 8;
            let avail = 8 - bit_in_byte;
            let take = avail.min(remaining);
            let shifted = (byte >> (avail - take)) & ((1u64 << take) - 1);
            value = (value << take) | shifted;
            self.pos += take;
            remaining -= take;
        }
        // At most 32 bits were accumulated.
        Ok(value as u32)
    }

    /// Skips `n` bits.
    pub fn skip_bits(&mut self, n: usize) -> Result<(), BitsError> {
        self.need(n)?;
        self.pos += n;
        Ok(())
    }

    /// Reads an unsigned exp-Golomb code `ue(v)` (§9.1).
    pub fn read_ue(&mut self) -> Result<u32, BitsError> {
        let start = self.pos;
        let mut leading_zeros = 0u32;
        while !self.read_bit()? {
            leading_zeros += 1;
            if leading_zeros > 32 {
                return Err(BitsError::ExpGolombOverflow { position: start });
            }
        }
        if leading_zeros == 0 {
            return Ok(0);
        }
        let suffix = u64::from(self.read_bits(leading_zeros)?);
        let value = (1u64 << leading_zeros) - 1 + suffix;
        u32::try_from(value).map_err(|_| BitsError::ExpGolombOverflow { position: start })
    }

    /// Reads a signed exp-Golomb code `se(v)` (§9.1.1): 0, 1, -1, 2, -2, …
    pub fn read_se(&mut self) -> Result<i32, BitsError> {
        let start = self.pos;
        let k = i64::from(self.read_ue()?);
        let value = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        i32::try_from(value).map_err(|_| BitsError::ExpGolombOverflow { position: start })
    }

    /// `more_rbsp_data()` (§7.2): whether anything but the `rbsp_trailing_bits` (a one bit, then
    /// zero bits to the end) is left.
    pub fn more_rbsp_data(&self) -> bool {
        // Find the last one bit in the data; there is more data if it lies after the position.
        let Some((idx, &byte)) = self.data.iter().enumerate().rev().find(|(_, &b)| b != 0) else {
            return false;
        };
        let last_one = idx * 8 + 7 - byte.trailing_zeros() as usize;
        last_one > self.pos
    }
}

/// Writes bits, most significant first, into an RBSP.
#[derive(Debug, Clone, Default)]
pub struct BitWriter {
    out: Vec<u8>,
    /// Bits of the partial byte, right-aligned.
    cur: u8,
    /// Number of bits in `cur` (0..8).
    n_cur: u32,
}

impl BitWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bits written so far.
    pub fn bit_len(&self) -> usize {
        self.out.len() * 8 + self.n_cur as usize
    }

    /// Whether the next bit starts a byte.
    pub fn is_byte_aligned(&self) -> bool {
        self.n_cur == 0
    }

    /// Writes one bit.
    pub fn write_bit(&mut self, bit: bool) {
        self.cur = (self.cur << 1) | u8::from(bit);
        self.n_cur += 1;
        if self.n_cur == 8 {
            self.out.push(self.cur);
            self.cur = 0;
            self.n_cur = 0;
        }
    }

    /// Writes the low `n` bits of `value`, most significant first. `n` above 32 is treated as 32.
    pub fn write_bits(&mut self, n: u32, value: u32) {
        self.write_bits_u64(n.min(32), u64::from(value));
    }

    fn write_bits_u64(&mut self, n: u32, value: u64) {
        for i in (0..n.min(64)).rev() {
            self.write_bit((value >> i) & 1 == 1);
        }
    }

    /// Writes an unsigned exp-Golomb code `ue(v)`; every `u32` is representable.
    pub fn write_ue(&mut self, value: u32) {
        let v = u64::from(value) + 1;
        let bits = 64 - v.leading_zeros(); // 1..=33
        let leading_zeros = bits - 1;
        self.write_bits_u64(leading_zeros, 0);
        self.write_bits_u64(bits, v);
    }

    /// Writes a signed exp-Golomb code `se(v)`.
    pub fn write_se(&mut self, value: i32) {
        let v = i64::from(value);
        let k = if v > 0 { 2 * v - 1 } else { -2 * v };
        // |i32::MIN| * 2 = 2^32 does not fit a u32: the one value se(v) cannot carry in 32 bits.
        self.write_ue(u32::try_from(k).unwrap_or(u32::MAX));
    }

    /// Writes `rbsp_trailing_bits()` (§7.3.2.11): a one bit, then zero bits to a byte boundary.
    pub fn write_trailing_bits(&mut self) {
        self.write_bit(true);
        while !self.is_byte_aligned() {
            self.write_bit(false);
        }
    }

    /// Copies `n` bits from `reader` verbatim.
    pub fn copy_bits(&mut self, reader: &mut BitReader<'_>, n: usize) -> Result<(), BitsError> {
        reader.need(n)?;
        let mut left = n;
        while left > 0 {
            let take = left.min(32) as u32;
            let v = reader.read_bits(take)?;
            self.write_bits(take, v);
            left -= take as usize;
        }
        Ok(())
    }

    /// The bytes written; a partial last byte is padded with zero bits.
    pub fn into_bytes(mut self) -> Vec<u8> {
        if self.n_cur > 0 {
            self.out.push(self.cur << (8 - self.n_cur));
        }
        self.out
    }
}

/// Removes emulation prevention bytes: every `03` that follows `00 00` (§7.4.1, §7.3.1).
pub fn nal_to_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0usize;
    for &b in nal {
        if zeros >= 2 && b == 0x03 {
            zeros = 0;
            continue;
        }
        out.push(b);
        if b == 0 {
            zeros += 1;
        } else {
            zeros = 0;
        }
    }
    out
}

/// Inserts emulation prevention bytes: a `03` before any byte `<= 03` that follows `00 00`, and
/// after a final `00 00` (§7.4.1), so the result never contains a start code.
pub fn rbsp_to_nal(rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + rbsp.len() / 64 + 1);
    let mut zeros = 0usize;
    for &b in rbsp {
        if zeros >= 2 && b <= 0x03 {
            out.push(0x03);
            zeros = 0;
        }
        out.push(b);
        if b == 0 {
            zeros += 1;
        } else {
            zeros = 0;
        }
    }
    if zeros >= 2 {
        // An RBSP ending in a cabac_zero_word: §7.4.1 appends a final 03.
        out.push(0x03);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The exp-Golomb table of §9.1 (Table 9-2), read both ways, pins the bit order.
    #[test]
    fn exp_golomb_codes_match_the_spec_table() {
        // 1 | 010 | 011 | 00100 | 00101 | 00110 | 00111 | 0001000 => 0..=7
        let mut w = BitWriter::new();
        for v in 0..=7 {
            w.write_ue(v);
        }
        let len = w.bit_len();
        assert_eq!(len, 1 + 3 + 3 + 5 * 4 + 7);
        let bytes = w.into_bytes();
        assert_eq!(bytes[0], 0b1010_0110);
        let mut r = BitReader::new(&bytes);
        for v in 0..=7 {
            assert_eq!(r.read_ue().unwrap(), v);
        }
    }

    /// se(v) maps 1, 2, 3, 4 to 1, -1, 2, -2 (Table 9-3); a sign slip would flip every offset.
    #[test]
    fn signed_exp_golomb_alternates_signs() {
        let values = [0, 1, -1, 2, -2, 1000, -1000, i32::MAX, i32::MIN + 1];
        let mut w = BitWriter::new();
        for &v in &values {
            w.write_se(v);
        }
        let bytes = w.into_bytes();
        let mut r = BitReader::new(&bytes);
        for &v in &values {
            assert_eq!(r.read_se().unwrap(), v);
        }
    }

    /// The extremes of ue(v) round-trip; one more leading zero is rejected, not wrapped.
    #[test]
    fn ue_accepts_u32_max_and_rejects_longer_codes() {
        let mut w = BitWriter::new();
        w.write_ue(u32::MAX);
        w.write_ue(u32::MAX - 1);
        let bytes = w.into_bytes();
        let mut r = BitReader::new(&bytes);
        assert_eq!(r.read_ue().unwrap(), u32::MAX);
        assert_eq!(r.read_ue().unwrap(), u32::MAX - 1);

        // 33 zeros then a one: too long.
        let mut w = BitWriter::new();
        w.write_bits(32, 0);
        w.write_bits(2, 1);
        w.write_bits(32, 0);
        w.write_bits(2, 0);
        let bytes = w.into_bytes();
        assert!(matches!(
            BitReader::new(&bytes).read_ue(),
            Err(BitsError::ExpGolombOverflow { position: 0 })
        ));

        // 32 zeros, a one, then a non-zero suffix: 2^32 or more.
        let mut w = BitWriter::new();
        w.write_bits(32, 0);
        w.write_bit(true);
        w.write_bits(32, 1);
        let bytes = w.into_bytes();
        assert!(BitReader::new(&bytes).read_ue().is_err());
    }

    /// Reading past the end is an error carrying the position, never a panic or a zero.
    #[test]
    fn reads_past_the_end_are_errors() {
        let mut r = BitReader::new(&[0xff]);
        assert_eq!(r.read_bits(5).unwrap(), 0b11111);
        assert_eq!(r.bits_left(), 3);
        assert_eq!(
            r.read_bits(4),
            Err(BitsError::OutOfBits {
                position: 5,
                wanted: 4,
                left: 3
            })
        );
        assert_eq!(r.position(), 5, "a failed read consumes nothing");
        assert!(BitReader::new(&[]).read_ue().is_err());
        assert!(BitReader::new(&[0, 0]).read_ue().is_err());
        assert_eq!(r.read_bits(33), Err(BitsError::TooWide(33)));
    }

    /// Fields straddling byte boundaries are where hand-written readers usually slip.
    #[test]
    fn read_bits_across_byte_boundaries() {
        let data = [0b1011_0011, 0b1100_0101, 0xde, 0xad, 0xbe, 0xef, 0x80];
        let mut r = BitReader::new(&data);
        assert_eq!(r.read_bits(3).unwrap(), 0b101);
        assert_eq!(r.read_bits(7).unwrap(), 0b100_1111);
        assert_eq!(r.read_bits(6).unwrap(), 0b00_0101);
        assert_eq!(r.read_bits(32).unwrap(), 0xdead_beef);
        assert_eq!(r.read_bits(0).unwrap(), 0);
        assert!(r.read_bit().unwrap());
        assert!(!r.more_rbsp_data(), "only trailing zero bits are left");
    }

    /// more_rbsp_data is what tells an optional trailing field from the stop bit.
    #[test]
    fn more_rbsp_data_sees_the_stop_bit() {
        // 1 (data) 1 (stop) 000000
        let data = [0b1100_0000];
        let mut r = BitReader::new(&data);
        assert!(r.more_rbsp_data());
        r.read_bit().unwrap();
        assert!(!r.more_rbsp_data());
        assert!(!BitReader::new(&[0, 0]).more_rbsp_data());
    }

    /// copy_bits is how the VUI rewrite keeps the untouched fields bit-exact.
    #[test]
    fn copy_bits_is_verbatim_at_any_alignment() {
        let data: Vec<u8> = (0u8..40).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        for skip in 0..9 {
            let mut r = BitReader::new(&data);
            r.skip_bits(skip).unwrap();
            let mut w = BitWriter::new();
            for _ in 0..skip {
                w.write_bit(false);
            }
            w.copy_bits(&mut r, data.len() * 8 - skip).unwrap();
            let mut expected = data.clone();
            // The skipped bits were written as zeros.
            if skip > 0 {
                expected[0] &= 0xffu8.checked_shr(skip as u32).unwrap_or(0);
            }
            assert_eq!(w.into_bytes(), expected, "skip {skip}");
        }
        let mut r = BitReader::new(&[1]);
        assert!(BitWriter::new().copy_bits(&mut r, 9).is_err());
    }

    /// Emulation prevention: the examples of §7.4.1 both ways, and consecutive runs.
    #[test]
    fn emulation_prevention_round_trips() {
        let cases: &[(&[u8], &[u8])] = &[
            (&[0, 0, 0], &[0, 0, 3, 0]),
            (&[0, 0, 1], &[0, 0, 3, 1]),
            (&[0, 0, 2], &[0, 0, 3, 2]),
            (&[0, 0, 3], &[0, 0, 3, 3]),
            (&[0, 0, 4], &[0, 0, 4]),
            (&[0, 0, 0, 0, 0], &[0, 0, 3, 0, 0, 3, 0]),
            (&[0x67, 0, 0, 1, 0, 0, 2], &[0x67, 0, 0, 3, 1, 0, 0, 3, 2]),
            (&[5, 0, 0], &[5, 0, 0, 3]),
            (&[5, 0], &[5, 0]),
            (&[], &[]),
        ];
        for &(rbsp, nal) in cases {
            assert_eq!(rbsp_to_nal(rbsp), nal, "rbsp {rbsp:02x?}");
            assert_eq!(nal_to_rbsp(nal), rbsp, "nal {nal:02x?}");
        }
    }

    /// Any RBSP survives rbsp_to_nal then nal_to_rbsp, and the NAL form holds no start code.
    #[test]
    fn emulation_prevention_is_lossless_for_all_short_inputs() {
        // Every 5-byte string over the alphabet {0, 1, 3, 0x80}.
        let alphabet = [0u8, 1, 3, 0x80];
        for n in 0..4u32.pow(5) {
            let rbsp: Vec<u8> = (0..5)
                .map(|i| alphabet[((n >> (2 * i)) & 3) as usize])
                .collect();
            let nal = rbsp_to_nal(&rbsp);
            assert_eq!(nal_to_rbsp(&nal), rbsp);
            assert!(
                !nal.windows(3).any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 2),
                "{nal:02x?}"
            );
        }
    }
}
