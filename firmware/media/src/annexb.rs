//! Annex-B byte streams (ITU-T H.264 Annex B): NAL units separated by start codes.
//!
//! ```text
//!  [leading_zero_8bits]* 00 00 01 NAL [trailing_zero_8bits]* 00 00 01 NAL ... 00 00 01 NAL [00]*
//!                        └ start ┘     (the zero before a start code makes it a 4-byte one)
//! ```
//!
//! [`NalSplitter`] is a streaming parser: [`push`](NalSplitter::push) bytes as they arrive, split
//! anywhere (inside a start code too), and [`pop`](NalSplitter::pop) complete NAL units, without
//! their start code or trailing zero bytes. A NAL unit is known to be complete only when the next
//! start code arrives (or at [`flush`](NalSplitter::flush), at the end of the stream): Annex B
//! carries no lengths. [`split_annexb`] splits a buffer that holds whole NAL units.
//!
//! Tolerance: bytes before the first start code are discarded and counted
//! ([`NalSplitter::discarded_bytes`]); empty NAL units (two start codes in a row) are skipped; a
//! NAL unit longer than the limit ([`NalSplitter::with_max_nal_len`]) is dropped and the splitter
//! resynchronises at the next start code, so memory stays bounded whatever the input.

use bytes::{Buf, Bytes, BytesMut};

/// Default limit on one NAL unit: far above any real slice (a 4K intra frame at high quality is
/// a few MB), low enough that a stream without start codes cannot exhaust a Pi's memory.
pub const DEFAULT_MAX_NAL_LEN: usize = 16 << 20;

/// Streaming Annex-B splitter. See the [module docs](self).
///
/// Each input byte is copied once (into an internal `BytesMut`), scanned once, and handed out
/// as a zero-copy [`Bytes`] slice of that buffer.
#[derive(Debug)]
pub struct NalSplitter {
    /// Unconsumed input. While `in_nal`, it starts with the current NAL unit's first byte.
    buf: BytesMut,
    /// Whether a start code has been seen, i.e. `buf` begins inside a NAL unit.
    in_nal: bool,
    /// Index in `buf` of the next byte to examine as the `01` of a start code; everything before
    /// it has been scanned already.
    scan_pos: usize,
    /// Non-zero garbage before the first start code, counted in bytes.
    discarded_bytes: u64,
    /// Zero bytes dropped before any start code that may yet turn out to be `leading_zero_8bits`
    /// (not garbage) if a start code follows them directly.
    pending_zeros: u64,
    oversized_nals: u64,
    max_nal_len: usize,
    /// Bytes examined by the start code search, for the linear-time test.
    scanned_bytes: u64,
}

impl Default for NalSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl NalSplitter {
    /// A splitter with the [`DEFAULT_MAX_NAL_LEN`] limit.
    pub fn new() -> Self {
        Self::with_max_nal_len(DEFAULT_MAX_NAL_LEN)
    }

    /// A splitter that drops NAL units longer than `max_nal_len` bytes.
    pub fn with_max_nal_len(max_nal_len: usize) -> Self {
        NalSplitter {
            buf: BytesMut::new(),
            in_nal: false,
            scan_pos: 2,
            discarded_bytes: 0,
            pending_zeros: 0,
            oversized_nals: 0,
            max_nal_len,
            scanned_bytes: 0,
        }
    }

    /// Appends input. Nothing is parsed until [`pop`](Self::pop).
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete NAL unit (no start code, no trailing zero bytes), or `None` until more
    /// input arrives.
    pub fn pop(&mut self) -> Option<Bytes> {
        loop {
            let from = self.scan_pos.max(2);
            self.scanned_bytes += self.buf.len().saturating_sub(from) as u64;
            match find_start_code(&self.buf, from) {
                Some(sc) => {
                    if self.in_nal {
                        let nal_len = trimmed_len(self.buf.get(..sc).unwrap_or_default());
                        let mut chunk = self.buf.split_to(sc + 3);
                        chunk.truncate(nal_len);
                        self.scan_pos = 2;
                        if nal_len > 0 {
                            return Some(chunk.freeze());
                        }
                    } else {
                        self.account_garbage(sc);
                        // Zeros right before the first start code are leading_zero_8bits.
                        self.pending_zeros = 0;
                        self.buf.advance(sc + 3);
                        self.in_nal = true;
                        self.scan_pos = 2;
                    }
                }
                None => {
                    self.scan_pos = self.buf.len();
                    if !self.in_nal {
                        // Keep two bytes: they may be the "00 00" of a start code split here.
                        let drop = self.buf.len().saturating_sub(2);
                        self.account_garbage(drop);
                        self.buf.advance(drop);
                        self.scan_pos = self.buf.len();
                    } else if self.buf.len() > self.max_nal_len {
                        self.oversized_nals += 1;
                        self.in_nal = false;
                        let drop = self.buf.len().saturating_sub(2);
                        self.buf.advance(drop);
                        self.scan_pos = self.buf.len();
                    }
                    return None;
                }
            }
        }
    }

    /// End of stream: returns the NAL units still buffered, one per call, the last one being
    /// the remainder after the last start code; `None` once empty. The splitter is then reset
    /// and a later [`push`](Self::push) starts a new stream (expecting a start code first).
    pub fn flush(&mut self) -> Option<Bytes> {
        if let Some(nal) = self.pop() {
            return Some(nal);
        }
        let out = if self.in_nal {
            let len = trimmed_len(&self.buf);
            let mut chunk = self.buf.split();
            chunk.truncate(len);
            (len > 0).then(|| chunk.freeze())
        } else {
            // No start code ever followed: all of it was garbage.
            self.discarded_bytes += self.pending_zeros + self.buf.len() as u64;
            self.buf.clear();
            None
        };
        self.in_nal = false;
        self.scan_pos = 2;
        self.pending_zeros = 0;
        out
    }

    /// Bytes discarded before the first start code (not counting zero bytes directly before
    /// it, which Annex B allows as `leading_zero_8bits`).
    pub fn discarded_bytes(&self) -> u64 {
        self.discarded_bytes
    }

    /// NAL units dropped for exceeding the length limit.
    pub fn oversized_nals(&self) -> u64 {
        self.oversized_nals
    }

    /// The first bytes of the NAL unit being received, once one has begun: what is known of it
    /// before its end arrives, for deciding early what it is (see
    /// [`AnnexBReader`](crate::h264::AnnexBReader)). Trailing zero bytes are left out, as they
    /// may be the start of the next start code. Call it after [`pop`](Self::pop) returned `None`.
    pub fn pending_prefix(&self) -> Option<&[u8]> {
        if !self.in_nal {
            return None;
        }
        let len = trimmed_len(&self.buf);
        self.buf.get(..len).filter(|p| !p.is_empty())
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// Counts `buf[..n]`, about to be dropped before any start code, as garbage: zero bytes are
    /// held back in `pending_zeros` until we know whether a start code follows them.
    fn account_garbage(&mut self, n: usize) {
        for &b in self.buf.get(..n).unwrap_or_default() {
            if b == 0 {
                self.pending_zeros += 1;
            } else {
                self.discarded_bytes += self.pending_zeros + 1;
                self.pending_zeros = 0;
            }
        }
    }
}

/// Finds the first `00 00 01` whose `01` lies at index `from` or later (`from >= 2`), and
/// returns the index of its first `00`. The search starts two bytes before `from`, so it can
/// resume where the previous one stopped even if a start code straddles two pushes.
fn find_start_code(buf: &[u8], from: usize) -> Option<usize> {
    // SIMD substring search (scanning is most of the splitter's cost at camera bitrates). In
    // coded slices `00 00` is rare (emulation prevention), much rarer than a lone `01`, so
    // this stops far less often than a search for the `01` byte.
    static START_CODE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(&[0, 0, 1]));
    let start = from.max(2) - 2;
    buf.get(start..)
        .and_then(|s| START_CODE.find(s))
        .map(|off| start + off)
}

/// Length of `nal` without its trailing zero bytes (`trailing_zero_8bits`, or the first zero
/// of a 4-byte start code). A NAL unit never ends in a zero byte (§7.4.2.10, §7.4.1).
fn trimmed_len(nal: &[u8]) -> usize {
    nal.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

/// Splits a buffer holding whole NAL units in Annex-B form (e.g. one encoded frame). Same rules
/// as [`NalSplitter`] fed the whole buffer and flushed: garbage before the first start code,
/// trailing zero bytes and empty NAL units are dropped. The buffer is copied once; the NAL
/// units are slices of that copy.
pub fn split_annexb(data: &[u8]) -> Vec<Bytes> {
    let all = Bytes::copy_from_slice(data);
    let mut nals = Vec::new();
    let Some(first) = find_start_code(&all, 2) else {
        return nals;
    };
    let mut start = first + 3;
    loop {
        let next = find_start_code(&all, start + 2);
        let end = next.unwrap_or(all.len());
        let len = trimmed_len(all.get(start..end).unwrap_or_default());
        if len > 0 {
            nals.push(all.slice(start..start + len));
        }
        match next {
            Some(n) => start = n + 3,
            None => return nals,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn drain(s: &mut NalSplitter) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(n) = s.pop() {
            out.push(n);
        }
        while let Some(n) = s.flush() {
            out.push(n);
        }
        out
    }

    fn chunked(chunks: &[&[u8]]) -> Vec<Bytes> {
        let mut s = NalSplitter::new();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c);
            while let Some(n) = s.pop() {
                out.push(n);
            }
        }
        out.extend(drain(&mut s));
        out
    }

    /// A stream with everything the splitter must tolerate at once.
    const MESSY: &[u8] = &[
        0xde, 0xad, 0x00, // garbage, with a zero in it
        0x00, 0x00, 0x00, 0x01, 0x09, 0xf0, // 4-byte start code, AUD
        0x00, 0x00, 0x01, 0x67, 0x42, 0x00, 0x1e, 0x00, 0x00, 0x03, 0x01, // SPS with an EPB
        0x00, 0x00, 0x01, // empty NAL
        0x00, 0x00, 0x01, 0x68, 0xce, 0x00, 0x00, // PPS, two trailing zero bytes
        0x00, 0x00, 0x00, 0x01, 0x65, 0x88, 0x00, 0x00, 0x02, 0x80, // IDR slice
        0x00, 0x00, // trailing zeros at end of stream
    ];

    fn messy_nals() -> Vec<&'static [u8]> {
        vec![
            &[0x09, 0xf0],
            &[0x67, 0x42, 0x00, 0x1e, 0x00, 0x00, 0x03, 0x01],
            &[0x68, 0xce],
            &[0x65, 0x88, 0x00, 0x00, 0x02, 0x80],
        ]
    }

    /// The reference answer for the messy stream, fed whole.
    #[test]
    fn whole_buffer_split_drops_garbage_empty_nals_and_trailing_zeros() {
        assert_eq!(split_annexb(MESSY), messy_nals());
        assert_eq!(chunked(&[MESSY]), messy_nals());
    }

    /// Pipes and sockets split reads anywhere, including inside a start code.
    #[test]
    fn a_split_at_every_byte_offset_gives_identical_nals() {
        for i in 0..=MESSY.len() {
            let (a, b) = MESSY.split_at(i);
            assert_eq!(chunked(&[a, b]), messy_nals(), "split at {i}");
        }
    }

    /// Two cuts cover a start code split into three pieces (00 | 00 | 01).
    #[test]
    fn splits_at_every_pair_of_offsets_give_identical_nals() {
        for i in 0..=MESSY.len() {
            for j in i..=MESSY.len() {
                let parts = [&MESSY[..i], &MESSY[i..j], &MESSY[j..]];
                assert_eq!(chunked(&parts), messy_nals(), "splits at {i}, {j}");
            }
        }
    }

    /// Byte-at-a-time is the worst chunking, and what a slow pipe delivers.
    #[test]
    fn byte_at_a_time_gives_identical_nals() {
        let parts: Vec<&[u8]> = MESSY.chunks(1).collect();
        assert_eq!(chunked(&parts), messy_nals());
    }

    /// Garbage is counted so a source can report "N bytes skipped before sync", but the zeros
    /// of a 4-byte start code or leading_zero_8bits are not garbage.
    #[test]
    fn garbage_before_the_first_start_code_is_counted_and_leading_zeros_are_not() {
        let mut s = NalSplitter::new();
        s.push(MESSY);
        drain(&mut s);
        // "de ad": the 00 after them is indistinguishable from leading_zero_8bits.
        assert_eq!(s.discarded_bytes(), 2);

        for split in 0..12 {
            let stream = [0, 0, 0, 0, 0, 0, 1, 0x09, 0xf0];
            let mut s = NalSplitter::new();
            s.push(&stream[..split.min(stream.len())]);
            assert_eq!(s.pop(), None);
            s.push(&stream[split.min(stream.len())..]);
            assert_eq!(drain(&mut s), vec![Bytes::from_static(&[0x09, 0xf0])]);
            assert_eq!(s.discarded_bytes(), 0, "split {split}");
        }
    }

    /// A source that never sends a start code must not grow memory, and nothing comes out.
    #[test]
    fn a_stream_without_start_codes_is_all_garbage_in_bounded_memory() {
        let mut s = NalSplitter::new();
        for _ in 0..1000 {
            s.push(&[0xab; 1000]);
            assert_eq!(s.pop(), None);
            assert!(s.buffered_len() <= 2);
        }
        assert_eq!(s.flush(), None);
        assert_eq!(s.discarded_bytes(), 1_000_000);
        assert!(split_annexb(&[0xab; 100]).is_empty());
    }

    /// The last NAL unit has no start code after it: only flush can return it.
    #[test]
    fn the_last_nal_comes_out_only_at_flush() {
        let mut s = NalSplitter::new();
        s.push(&[0, 0, 1, 0x65, 0xaa, 0, 0, 1, 0x41, 0xbb, 0, 0]);
        assert_eq!(s.pop(), Some(Bytes::from_static(&[0x65, 0xaa])));
        assert_eq!(s.pop(), None, "0x41 may still be growing");
        assert_eq!(s.flush(), Some(Bytes::from_static(&[0x41, 0xbb])));
        assert_eq!(s.flush(), None);
        // After a flush the splitter starts over, wanting a start code first.
        s.push(&[0x41, 0xcc, 0, 0, 1, 0x41, 0xdd]);
        assert_eq!(s.pop(), None);
        assert_eq!(s.flush(), Some(Bytes::from_static(&[0x41, 0xdd])));
    }

    /// flush without a pop loop first must still return every NAL unit, one per call.
    #[test]
    fn flush_alone_drains_every_nal() {
        let mut s = NalSplitter::new();
        s.push(MESSY);
        let mut out = Vec::new();
        while let Some(n) = s.flush() {
            out.push(n);
        }
        assert_eq!(out, messy_nals());
    }

    /// A runaway NAL unit is dropped and the splitter picks up again at the next start code.
    #[test]
    fn an_oversized_nal_is_dropped_and_the_splitter_resyncs() {
        let mut s = NalSplitter::with_max_nal_len(100);
        s.push(&[0, 0, 1, 0x41]);
        for _ in 0..10 {
            s.push(&[0x55; 50]);
            assert_eq!(s.pop(), None);
        }
        assert_eq!(s.oversized_nals(), 1);
        assert!(s.buffered_len() <= 100);
        s.push(&[0, 0, 1, 0x41, 0x77, 0, 0, 1]);
        assert_eq!(s.pop(), Some(Bytes::from_static(&[0x41, 0x77])));
    }

    /// Scanning must stay linear: a big NAL unit arriving in small pieces is not re-scanned
    /// from its start on every push (that would be quadratic on a 1080p I-frame).
    #[test]
    fn scanning_is_linear_in_the_input() {
        let mut s = NalSplitter::new();
        s.push(&[0, 0, 0, 1, 0x65]);
        let piece = [0x11u8; 100];
        for _ in 0..10_000 {
            s.push(&piece);
            assert_eq!(s.pop(), None);
        }
        s.push(&[0, 0, 1, 0x41]);
        let nal = s.pop().unwrap();
        assert_eq!(nal.len(), 1 + 1_000_000);
        assert!(s.scanned_bytes <= 1_000_200, "scanned {}", s.scanned_bytes);
    }

    /// NAL units handed out are slices of one buffer, not copies.
    #[test]
    fn nals_are_not_copied_out() {
        let mut s = NalSplitter::new();
        s.push(&[0, 0, 1, 0x41, 1, 2, 3, 0, 0, 1, 0x41, 4, 5, 6, 0, 0, 1]);
        let a = s.pop().unwrap();
        let b = s.pop().unwrap();
        // Adjacent in memory: one allocation, split.
        assert_eq!(a.as_ptr() as usize + a.len() + 3, b.as_ptr() as usize);
    }
}
