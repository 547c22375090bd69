//! MJPEG camera frames → I420, in pure Rust: what libv4lconvert did for MJPEG-only UVC webcams.
//!
//! ```text
//! JPEG ─► scan_headers ─► (no DHT: insert the ITU-T T.81 K.3 tables before SOS)
//!      ─► zune-jpeg: interleaved full-range YCbCr at full size (it upsamples the chroma)
//!      ─► ycbcr_to_i420: luma and 2×2 chroma sums, full range → video range
//!      ─► finish_chroma: zune-jpeg's chroma upsampling blur undone (4:2:0, 4:2:2)
//! ```
//!
//! * Many UVC cameras send each frame without Huffman tables (DHT), relying on the standard
//!   "typical" tables of T.81 Annex K.3 (the AVI/OpenDML MJPEG convention). [`scan_headers`]
//!   finds which of the four standard tables (DC and AC, luma 0 and chroma 1) a frame leaves
//!   undefined before its first scan and [`with_standard_tables`] inserts them.
//! * The result is video range (Y 16–235, Cb/Cr 16–240) like the rest of the frame path
//!   ([`crate::source::pattern::Y_BLACK`]): JPEG (JFIF) samples are full range.
//! * A frame with an odd width or height loses its last column or row: I420 (and the H.264
//!   encoders behind it) need even sizes. Grey (one-component) JPEGs get neutral chroma.
//! * A broken frame (garbage, torn or truncated buffer, no end-of-image marker, a size beyond
//!   [`MAX_DIMENSION`], entropy data the decoder rejects — zune-jpeg runs in strict mode) is an
//!   [`MjpegError`] for that frame alone; the [`Decoder`] keeps working for the next one.
//!   Nothing here panics on any input, and a panic inside the decoder crate is caught and
//!   reported as an error as well. A frame whose scan lost bytes in the middle but still ends
//!   in FF D9 can decode to a damaged picture: the JPEG itself cannot tell (the driver flags
//!   such buffers, V4L2_BUF_FLAG_ERROR, which is the capture loop's to check).
//!
//! [`decode`] is the one-call entry point; a capture loop keeps a [`Decoder`] and calls
//! [`Decoder::decode_into`], which reuses its buffers and the output picture's.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::codec::i420::CHROMA_NEUTRAL;
pub use crate::codec::I420Frame;
use crate::source::pattern::MAX_DIMENSION;

/// Why one MJPEG frame gave no picture. The frame is to be dropped; the next may be fine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MjpegError {
    #[error(
        "MJPEG frame of {len} bytes does not start with a JPEG start-of-image marker (FF D8) \
         but with {head}: not a JPEG (wrong pixel format negotiated, or a torn buffer)"
    )]
    NotJpeg { len: usize, head: String },
    #[error(
        "MJPEG frame of {len} bytes is cut short: {what} (a truncated or incomplete frame, \
         e.g. a USB transfer error)"
    )]
    Truncated { len: usize, what: String },
    #[error("MJPEG frame of {len} bytes is malformed at byte {at}: {what}")]
    Malformed { len: usize, at: usize, what: String },
    #[error("MJPEG frame of {len} bytes could not be decoded: {reason}")]
    Decode { len: usize, reason: String },
    #[error(
        "MJPEG frame is {width}x{height}: too small for an I420 picture (at least 2x2 pixels)"
    )]
    TooSmall { width: usize, height: usize },
    #[error(
        "MJPEG frame of {len} bytes is in the {colorspace} colour space: only YCbCr and \
         greyscale JPEGs are supported"
    )]
    Unsupported { len: usize, colorspace: String },
    #[error("MJPEG frame of {len} bytes made the JPEG decoder panic; the frame is dropped")]
    DecoderPanicked { len: usize },
}

/// Huffman table class in a DHT segment (T.81 B.2.4.2, `Tc`).
const DC: usize = 0;
const AC: usize = 1;

/// One Huffman table as a DHT segment carries it: the number of codes of each length 1..=16
/// (`BITS`, `Li`) and the symbols in order of increasing code length (`HUFFVAL`, `Vi,j`).
struct HuffmanSpec {
    class: usize,
    id: u8,
    bits: [u8; 16],
    values: &'static [u8],
}

/// ITU-T T.81 (09/92) Annex K.3.1, Table K.3: luminance DC differences. Symbols are the
/// difference categories 0..=11.
const DC_LUMA: HuffmanSpec = HuffmanSpec {
    class: DC,
    id: 0,
    bits: [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
    values: &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
};

/// Annex K.3.1, Table K.4: chrominance DC differences.
const DC_CHROMA: HuffmanSpec = HuffmanSpec {
    class: DC,
    id: 1,
    bits: [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    values: &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
};

/// Annex K.3.2, Table K.5: luminance AC coefficients. Symbols are RRRRSSSS (zero run, size);
/// 0x00 is EOB and 0xF0 is ZRL. Listed by code length, and within one length in code order.
const AC_LUMA: HuffmanSpec = HuffmanSpec {
    class: AC,
    id: 0,
    bits: [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 125],
    values: &[
        // 2 to 9 bits
        0x01, 0x02, //
        0x03, //
        0x00, 0x04, 0x11, //
        0x05, 0x12, 0x21, //
        0x31, 0x41, //
        0x06, 0x13, 0x51, 0x61, //
        0x07, 0x22, 0x71, //
        0x14, 0x32, 0x81, 0x91, 0xa1, //
        // 10 to 15 bits
        0x08, 0x23, 0x42, 0xb1, 0xc1, //
        0x15, 0x52, 0xd1, 0xf0, //
        0x24, 0x33, 0x62, 0x72, //
        0x82, //
        // 16 bits
        0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35,
        0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54,
        0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73,
        0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a,
        0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
        0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4,
        0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
        0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5,
        0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ],
};

/// Annex K.3.2, Table K.6: chrominance AC coefficients.
const AC_CHROMA: HuffmanSpec = HuffmanSpec {
    class: AC,
    id: 1,
    bits: [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 119],
    values: &[
        // 2 to 9 bits
        0x00, 0x01, //
        0x02, //
        0x03, 0x11, //
        0x04, 0x05, 0x21, 0x31, //
        0x06, 0x12, 0x41, 0x51, //
        0x07, 0x61, 0x71, //
        0x13, 0x22, 0x32, 0x81, //
        0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, //
        // 10 to 15 bits
        0x09, 0x23, 0x33, 0x52, 0xf0, //
        0x15, 0x62, 0x72, 0xd1, //
        0x0a, 0x16, 0x24, 0x34, //
        0xe1, //
        0x25, 0xf1, //
        // 16 bits
        0x17, 0x18, 0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a,
        0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59,
        0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78,
        0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95,
        0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2,
        0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8,
        0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe2, 0xe3, 0xe4, 0xe5,
        0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ],
};

/// The four tables a DHT-less MJPEG frame is decoded with, in the order they are inserted.
const STANDARD_TABLES: [&HuffmanSpec; 4] = [&DC_LUMA, &AC_LUMA, &DC_CHROMA, &AC_CHROMA];

// Each table's BITS counts add up to the symbols it lists (checked at compile time).
const _: () = {
    let mut t = 0;
    while t < STANDARD_TABLES.len() {
        let spec = STANDARD_TABLES[t];
        let (mut sum, mut i) = (0, 0);
        while i < 16 {
            sum += spec.bits[i] as usize;
            i += 1;
        }
        assert!(sum == spec.values.len(), "BITS and HUFFVAL disagree");
        t += 1;
    }
};

// Markers (T.81 Table B.1).
const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const DHT: u8 = 0xC4;
const TEM: u8 = 0x01;
const RST0: u8 = 0xD0;
const RST7: u8 = 0xD7;

/// What the headers of one frame say, as far as inserting tables and finding its end need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// Offset of the first start-of-scan marker (its `FF`): where missing tables go.
    pub sos_at: usize,
    /// Which Huffman tables (`[class][id]`, class 0 = DC, 1 = AC; ids 0..=3) a DHT segment
    /// defines before the first scan.
    pub defined: [[bool; 4]; 2],
    /// Offset just past the end-of-image marker (`FF D9`); bytes after it (a driver's
    /// padding) are not part of the picture.
    pub end: usize,
    /// How many luma samples share one chroma sample, across and down (2, 1 for 4:2:2; 2, 2
    /// for 4:2:0), from the frame header; 1, 1 when there is no chroma or the header is odd.
    pub chroma_factors: (u8, u8),
}

impl Headers {
    /// The standard tables this frame lacks.
    fn missing(&self) -> Vec<&'static HuffmanSpec> {
        STANDARD_TABLES
            .into_iter()
            .filter(|t| !self.defined[t.class][usize::from(t.id)])
            .collect()
    }
}

/// Walks the marker segments from SOI to the first SOS, noting the Huffman tables defined on
/// the way, then finds the end-of-image marker after the scan.
///
/// Inside entropy-coded data every `FF` is followed by a stuffed `00` or a restart marker
/// (`D0`–`D7`), so the first `FF D9` after the SOS header is the real end of the image. A frame
/// without one is truncated.
pub fn scan_headers(jpeg: &[u8]) -> Result<Headers, MjpegError> {
    let len = jpeg.len();
    let truncated = |what: &str| MjpegError::Truncated {
        len,
        what: what.to_owned(),
    };
    let malformed = |at: usize, what: String| MjpegError::Malformed { len, at, what };
    if len < 2 || jpeg[0] != 0xFF || jpeg[1] != SOI {
        let head = jpeg
            .iter()
            .take(4)
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(MjpegError::NotJpeg {
            len,
            head: if head.is_empty() {
                "nothing (an empty buffer)".to_owned()
            } else {
                head
            },
        });
    }
    let mut defined = [[false; 4]; 2];
    let mut chroma_factors = (1, 1);
    let mut i = 2;
    let sos_at = loop {
        let Some(&byte) = jpeg.get(i) else {
            return Err(truncated("the headers end before the first scan (SOS)"));
        };
        if byte != 0xFF {
            return Err(malformed(
                i,
                format!("expected a marker (FF xx) between header segments, found {byte:02X}"),
            ));
        }
        let marker_at = i;
        // Any number of FF fill bytes may precede a marker (T.81 B.1.1.2).
        while jpeg.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&marker) = jpeg.get(i) else {
            return Err(truncated("the headers end in a marker"));
        };
        i += 1;
        match marker {
            TEM | RST0..=RST7 | SOI => continue,
            EOI => return Err(malformed(marker_at, "end of image before any scan".into())),
            0x00 => return Err(malformed(marker_at, "FF 00 is not a marker".into())),
            _ => {}
        }
        let (Some(&hi), Some(&lo)) = (jpeg.get(i), jpeg.get(i + 1)) else {
            return Err(truncated("the headers end in a segment length"));
        };
        let seg_len = usize::from(u16::from_be_bytes([hi, lo]));
        if seg_len < 2 {
            return Err(malformed(
                i,
                format!("marker FF {marker:02X} has a segment length of {seg_len} (at least 2)"),
            ));
        }
        let end = i + seg_len;
        if end > len {
            return Err(truncated(&format!(
                "the FF {marker:02X} segment at byte {marker_at} needs {seg_len} bytes, {} are left",
                len - i
            )));
        }
        if marker == DHT {
            note_tables(&jpeg[i + 2..end], &mut defined);
        }
        if is_sof(marker) {
            chroma_factors = sampling(&jpeg[i + 2..end]);
        }
        i = end;
        if marker == SOS {
            break marker_at;
        }
    };
    // `i` is just past the SOS header: the entropy-coded data starts here.
    let eoi = memchr::memmem::find(&jpeg[i..], &[0xFF, EOI])
        .ok_or_else(|| truncated("no end-of-image marker (FF D9) after the scan"))?;
    Ok(Headers {
        sos_at,
        defined,
        end: i + eoi + 2,
        chroma_factors,
    })
}

/// Start-of-frame markers: C0–CF but DHT (C4), JPG (C8) and DAC (CC).
fn is_sof(marker: u8) -> bool {
    (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

/// Luma samples per chroma sample (across, down) from a start-of-frame body (T.81 B.2.2:
/// precision, height, width, component count, then id, `H<<4 | V`, table per component),
/// when it has three components and both chroma ones are sampled alike; else (1, 1).
fn sampling(sof: &[u8]) -> (u8, u8) {
    let comps = match sof.get(5) {
        Some(&3) => sof.get(6..15),
        _ => None,
    };
    let Some(c) = comps else { return (1, 1) };
    let (luma, cb, cr) = (c[1], c[4], c[7]);
    let (h, v) = (luma >> 4, luma & 15);
    let (ch, cv) = (cb >> 4, cb & 15);
    if cb != cr || ch == 0 || cv == 0 || h % ch != 0 || v % cv != 0 {
        return (1, 1);
    }
    (h / ch, v / cv)
}

/// Marks the tables one DHT segment's body defines. A malformed body stops the walk; the
/// decoder reports it.
fn note_tables(mut body: &[u8], defined: &mut [[bool; 4]; 2]) {
    while body.len() >= 17 {
        let (class, id) = (usize::from(body[0] >> 4), usize::from(body[0] & 0x0F));
        let count: usize = body[1..17].iter().map(|&n| usize::from(n)).sum();
        if class < 2 && id < 4 {
            defined[class][id] = true;
        }
        body = body.get(17 + count..).unwrap_or(&[]);
    }
}

/// Appends one DHT segment holding `tables` (T.81 B.2.4.2).
fn push_dht(out: &mut Vec<u8>, tables: &[&HuffmanSpec]) {
    let body: usize = tables.iter().map(|t| 17 + t.values.len()).sum();
    // At most four tables of at most 1 + 16 + 162 bytes: always fits the 16-bit length.
    let seg_len = u16::try_from(2 + body).unwrap_or(u16::MAX);
    out.extend_from_slice(&[0xFF, DHT]);
    out.extend_from_slice(&seg_len.to_be_bytes());
    for t in tables {
        // `class` is 0 or 1: the shift cannot overflow.
        out.push(((t.class as u8) << 4) | t.id);
        out.extend_from_slice(&t.bits);
        out.extend_from_slice(t.values);
    }
}

/// The frame up to its end-of-image marker, with the standard Huffman tables inserted before
/// its first scan when it lacks any of them (borrowed unchanged when it has them all).
pub fn with_standard_tables(jpeg: &[u8]) -> Result<Cow<'_, [u8]>, MjpegError> {
    let headers = scan_headers(jpeg)?;
    let mut out = Vec::new();
    Ok(if assemble(jpeg, &headers, &mut out) {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(&jpeg[..headers.end])
    })
}

/// Writes the frame with the missing standard tables into `out`; false (and `out` untouched)
/// when none is missing.
fn assemble(jpeg: &[u8], headers: &Headers, out: &mut Vec<u8>) -> bool {
    let missing = headers.missing();
    if missing.is_empty() {
        return false;
    }
    out.clear();
    out.reserve(headers.end + 4 + 4 * (17 + 162));
    out.extend_from_slice(&jpeg[..headers.sos_at]);
    push_dht(out, &missing);
    out.extend_from_slice(&jpeg[headers.sos_at..headers.end]);
    true
}

/// Full-range (JFIF) luma → video range 16..=235: 16 + y·219/255, rounded. In 16-bit fixed
/// point rather than a table so that the compiler can vectorise the loops; exact for every
/// input (tested against the rational formula).
#[inline(always)]
fn y_to_video(y: u8) -> u8 {
    ((u32::from(y) * 56284 + (16 << 16) + (1 << 15)) >> 16) as u8
}

/// The sum of four full-range chroma samples (0..=1020) → their mean in video range 16..=240,
/// rounded once: 128 + (sum/4 − 128)·224/255 = (3968 + 56·sum) / 255. Fixed point, exact.
#[inline(always)]
fn chroma_sum4_to_video(sum: u32) -> u8 {
    (((3968 + 56 * sum) * 65793 + (1 << 23)) >> 24) as u8
}

/// Turns zune-jpeg's interleaved full-range YCbCr (3 bytes a pixel, `width` pixels a line)
/// into `out` (even size, at most the picture's): luma through [`y_to_video`], each 2×2
/// block's chroma summed into `sums` (Cb plane, then Cr), then [`finish_chroma`].
fn ycbcr_to_i420(
    ycc: &[u8],
    width: usize,
    chroma_factors: (u8, u8),
    sums: &mut Vec<u16>,
    out: &mut I420Frame,
) {
    let (w, cw, ch) = (out.width, out.width / 2, out.height / 2);
    sums.resize(2 * cw * ch, 0);
    let (su, sv) = sums.split_at_mut(cw * ch);
    let line = width * 3;
    let lines = ycc.chunks_exact(line).take(out.height);
    let mut pairs = lines.clone().step_by(2).zip(lines.skip(1).step_by(2));
    let y_rows = out.y.chunks_exact_mut(2 * w);
    let c_rows = su.chunks_exact_mut(cw).zip(sv.chunks_exact_mut(cw));
    for (y2, (u, v)) in y_rows.zip(c_rows) {
        let Some((a, b)) = pairs.next() else { break };
        let (a, b) = (&a[..w * 3], &b[..w * 3]);
        let (ya, yb) = y2.split_at_mut(w);
        for (dst, src) in [(ya, a), (yb, b)] {
            for (d, px) in dst.iter_mut().zip(src.chunks_exact(3)) {
                *d = y_to_video(px[0]);
            }
        }
        let src = a.chunks_exact(6).zip(b.chunks_exact(6));
        for ((u, v), (pa, pb)) in u.iter_mut().zip(v.iter_mut()).zip(src) {
            let sum = |k: usize| {
                u16::from(pa[k]) + u16::from(pa[k + 3]) + u16::from(pb[k]) + u16::from(pb[k + 3])
            };
            *u = sum(1);
            *v = sum(2);
        }
    }
    let sharpen = (chroma_factors.0 == 2, chroma_factors.1 == 2);
    finish_chroma(su, cw, sharpen, &mut out.u);
    finish_chroma(sv, cw, sharpen, &mut out.v);
}

/// 2×2 chroma sums → video-range chroma.
///
/// Where the JPEG's chroma was subsampled by 2 in a direction, zune-jpeg's triangle
/// upsampling (¾ nearest, ¼ next) followed by our pairwise mean is the filter [1 6 1]/8 on
/// the JPEG's own chroma samples: a slight blur of colour edges. One step of its inverse,
/// [−1 10 −1]/8, takes most of that back (on ffmpeg's testsrc2, 4:2:0 chroma comes ~7 dB
/// closer to the JPEG's own). Edges repeat their last sample, as the upsampler does.
fn finish_chroma(sums: &[u16], cw: usize, (across, down): (bool, bool), out: &mut [u8]) {
    if !across && !down {
        for (o, &s) in out.iter_mut().zip(sums) {
            *o = chroma_sum4_to_video(u32::from(s));
        }
        return;
    }
    // Weights (centre, each neighbour) in eighths: the inverse step, or the identity.
    let (hc, hn) = if across { (10, -1) } else { (8, 0) };
    let (vc, vn) = if down { (10, -1) } else { (8, 0) };
    let rows: Vec<&[u16]> = sums.chunks_exact(cw).collect();
    let mut col = vec![0i32; cw];
    for (r, dst) in out.chunks_exact_mut(cw).enumerate() {
        let up = rows[r.saturating_sub(1)];
        let mid = rows[r];
        let down_row = rows[(r + 1).min(rows.len() - 1)];
        for (((c, &u), &m), &d) in col.iter_mut().zip(up).zip(mid).zip(down_row) {
            *c = vc * i32::from(m) + vn * (i32::from(u) + i32::from(d));
        }
        // `col` is in sixty-fourths of a 2×2 sum after this: round, keep to 0..=1020.
        let at = |l: i32, m: i32, r: i32| {
            let t = (hc * m + hn * (l + r) + 32) >> 6;
            chroma_sum4_to_video(t.clamp(0, 1020) as u32)
        };
        let last = cw - 1;
        dst[0] = at(col[0], col[0], col[1.min(last)]);
        if last > 0 {
            // Three shifted views of the row, so that the loop has no index arithmetic.
            let (l, m, r) = (&col[..last - 1], &col[1..last], &col[2..]);
            for (o, ((&l, &m), &r)) in dst[1..last].iter_mut().zip(l.iter().zip(m).zip(r)) {
                *o = at(l, m, r);
            }
            dst[last] = at(col[last - 1], col[last], col[last]);
        }
    }
}

/// Greyscale (one byte a pixel, `width` a line) → `out`, with neutral chroma.
fn grey_to_i420(grey: &[u8], width: usize, out: &mut I420Frame) {
    let w = out.width;
    for (src, dst) in grey.chunks_exact(width).zip(out.y.chunks_exact_mut(w)) {
        for (d, &s) in dst.iter_mut().zip(&src[..w]) {
            *d = y_to_video(s);
        }
    }
    out.u.fill(CHROMA_NEUTRAL);
    out.v.fill(CHROMA_NEUTRAL);
}

/// Decodes MJPEG frames one after another, reusing its buffers (the table-insertion copy and
/// the decoded YCbCr picture) from frame to frame. A failed frame leaves it ready for the next.
#[derive(Debug, Default)]
pub struct Decoder {
    with_tables: Vec<u8>,
    pixels: Vec<u8>,
    chroma_sums: Vec<u16>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes one frame into a new picture.
    pub fn decode(&mut self, jpeg: &[u8]) -> Result<I420Frame, MjpegError> {
        let mut out = I420Frame::new(0, 0);
        self.decode_into(jpeg, &mut out)?;
        Ok(out)
    }

    /// Decodes one frame into `out`, which takes the picture's size rounded down to even
    /// numbers (its planes are reallocated only when that size changes). On error `out`
    /// holds no meaningful picture.
    pub fn decode_into(&mut self, jpeg: &[u8], out: &mut I420Frame) -> Result<(), MjpegError> {
        let len = jpeg.len();
        let headers = scan_headers(jpeg)?;
        let stream: &[u8] = if assemble(jpeg, &headers, &mut self.with_tables) {
            &self.with_tables
        } else {
            &jpeg[..headers.end]
        };
        let pixels = &mut self.pixels;
        let decoded = catch_unwind(AssertUnwindSafe(|| decode_pixels(stream, len, pixels)))
            .map_err(|_| MjpegError::DecoderPanicked { len })??;
        let (w, h) = (decoded.width & !1, decoded.height & !1);
        if w == 0 || h == 0 {
            return Err(MjpegError::TooSmall {
                width: decoded.width,
                height: decoded.height,
            });
        }
        if (out.width, out.height) != (w, h) {
            *out = I420Frame::new(w, h);
        }
        if decoded.grey {
            grey_to_i420(&self.pixels, decoded.width, out);
        } else {
            let factors = headers.chroma_factors;
            ycbcr_to_i420(
                &self.pixels,
                decoded.width,
                factors,
                &mut self.chroma_sums,
                out,
            );
        }
        Ok(())
    }
}

/// One decoded picture's geometry; its pixels are in the decoder's buffer.
struct Decoded {
    width: usize,
    height: usize,
    /// One byte a pixel (greyscale JPEG) instead of three (YCbCr).
    grey: bool,
}

fn decode_pixels(stream: &[u8], len: usize, pixels: &mut Vec<u8>) -> Result<Decoded, MjpegError> {
    let fail = |e: zune_jpeg::errors::DecodeErrors| MjpegError::Decode {
        len,
        reason: e.to_string(),
    };
    let options = |colorspace| {
        DecoderOptions::default()
            .jpeg_set_out_colorspace(colorspace)
            .set_max_width(MAX_DIMENSION)
            .set_max_height(MAX_DIMENSION)
            .set_strict_mode(true)
    };
    let mut decoder =
        JpegDecoder::new_with_options(ZCursor::new(stream), options(ColorSpace::YCbCr));
    decoder.decode_headers().map_err(fail)?;
    let grey = match decoder.input_colorspace() {
        Some(ColorSpace::YCbCr) => false,
        Some(ColorSpace::Luma) => {
            decoder =
                JpegDecoder::new_with_options(ZCursor::new(stream), options(ColorSpace::Luma));
            decoder.decode_headers().map_err(fail)?;
            true
        }
        other => {
            return Err(MjpegError::Unsupported {
                len,
                colorspace: other.map_or_else(|| "unknown".to_owned(), |c| format!("{c:?}")),
            })
        }
    };
    let (Some(info), Some(size)) = (decoder.info(), decoder.output_buffer_size()) else {
        return Err(MjpegError::Decode {
            len,
            reason: "no picture size after the headers".to_owned(),
        });
    };
    let (width, height) = (usize::from(info.width), usize::from(info.height));
    if size != width * height * if grey { 1 } else { 3 } {
        return Err(MjpegError::Decode {
            len,
            reason: format!("decoder wants {size} bytes for a {width}x{height} picture"),
        });
    }
    pixels.resize(size, 0);
    decoder.decode_into(&mut pixels[..size]).map_err(fail)?;
    Ok(Decoded {
        width,
        height,
        grey,
    })
}

/// Decodes one MJPEG frame (a whole JPEG, with or without Huffman tables) into an I420
/// picture in video range. See the module documentation for what is supported.
pub fn decode(jpeg: &[u8]) -> Result<I420Frame, MjpegError> {
    Decoder::new().decode(jpeg)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Hand-made JPEGs with known content (no encoder needed): SOI, DQT (all ones), SOF0, SOS,
    //! an entropy-coded scan written bit by bit with the K.3 codes, EOI — and no DHT, as many
    //! UVC cameras send them. Frames from a real encoder (ffmpeg) are in tests/mjpeg.rs.
    use super::*;

    /// Writes Huffman codes and value bits MSB first, stuffing a 00 after every FF and padding
    /// the last byte with ones (T.81 F.1.2.3).
    #[derive(Default)]
    struct Bits {
        out: Vec<u8>,
        acc: u8,
        n: u8,
    }

    impl Bits {
        fn put(&mut self, bits: &str) -> &mut Self {
            for c in bits.chars().filter(|c| !c.is_whitespace()) {
                self.acc = (self.acc << 1) | u8::from(c == '1');
                self.n += 1;
                if self.n == 8 {
                    self.out.push(self.acc);
                    if self.acc == 0xFF {
                        self.out.push(0);
                    }
                    (self.acc, self.n) = (0, 0);
                }
            }
            self
        }
        fn finish(&mut self) -> Vec<u8> {
            while self.n != 0 {
                self.put("1");
            }
            std::mem::take(&mut self.out)
        }
    }

    /// One block with all-zero coefficients: DC difference category 0, then end-of-block.
    const LUMA_FLAT: &str = "00 1010";
    const CHROMA_FLAT: &str = "00 00";

    /// A baseline JPEG of `width`x`height` whose luma has sampling `luma_hv` (0x11, 0x21 or
    /// 0x22) and two 1x1 chroma components (none when `grey`), with `scan` as its data.
    fn jpeg(width: u16, height: u16, luma_hv: u8, grey: bool, scan: &[u8]) -> Vec<u8> {
        let mut j = vec![0xFF, SOI];
        j.extend_from_slice(&[0xFF, 0xDB, 0, 67, 0]);
        j.extend_from_slice(&[1; 64]);
        let comps: &[(u8, u8, u8)] = if grey {
            &[(1, luma_hv, 0)]
        } else {
            &[(1, luma_hv, 0), (2, 0x11, 0x11), (3, 0x11, 0x11)]
        };
        let n = comps.len() as u8;
        j.extend_from_slice(&[0xFF, 0xC0, 0, 8 + 3 * n, 8]);
        j.extend_from_slice(&height.to_be_bytes());
        j.extend_from_slice(&width.to_be_bytes());
        j.push(n);
        for &(id, hv, _) in comps {
            j.extend_from_slice(&[id, hv, 0]);
        }
        j.extend_from_slice(&[0xFF, SOS, 0, 6 + 2 * n, n]);
        for &(id, _, tables) in comps {
            j.extend_from_slice(&[id, tables]);
        }
        j.extend_from_slice(&[0, 63, 0]);
        j.extend_from_slice(scan);
        j.extend_from_slice(&[0xFF, EOI]);
        j
    }

    /// A flat mid-grey picture: every block all zero, `luma_blocks` luma blocks per MCU.
    fn flat(width: u16, height: u16, luma_hv: u8) -> Vec<u8> {
        let (h, v) = (usize::from(luma_hv >> 4), usize::from(luma_hv & 15));
        let mcus = usize::from(width).div_ceil(8 * h) * usize::from(height).div_ceil(8 * v);
        let mut bits = Bits::default();
        for _ in 0..mcus {
            for _ in 0..h * v {
                bits.put(LUMA_FLAT);
            }
            bits.put(CHROMA_FLAT).put(CHROMA_FLAT);
        }
        jpeg(width, height, luma_hv, false, &bits.finish())
    }

    fn decoded_by_zune_alone(jpeg: &[u8]) -> Result<Vec<u8>, String> {
        JpegDecoder::new(ZCursor::new(jpeg))
            .decode()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn standard_tables_are_the_ones_of_annex_k() {
        // Spot checks against T.81 Tables K.3–K.6 (code lengths per symbol): the luma DC code
        // of category 0 is 2 bits, luma EOB (0x00) 4 bits, ZRL (0xF0) 11 bits; chroma EOB 2
        // bits, chroma ZRL 10 bits; every AC table ends with 0xFA at 16 bits.
        fn length_of(t: &HuffmanSpec, symbol: u8) -> usize {
            let at = t.values.iter().position(|&v| v == symbol).unwrap();
            let mut seen = 0;
            for (len, &count) in t.bits.iter().enumerate() {
                seen += usize::from(count);
                if at < seen {
                    return len + 1;
                }
            }
            unreachable!()
        }
        assert_eq!(length_of(&DC_LUMA, 0), 2);
        assert_eq!(length_of(&DC_LUMA, 11), 9);
        assert_eq!(length_of(&DC_CHROMA, 11), 11);
        assert_eq!(length_of(&AC_LUMA, 0x00), 4);
        assert_eq!(length_of(&AC_LUMA, 0xF0), 11);
        assert_eq!(length_of(&AC_LUMA, 0xFA), 16);
        assert_eq!(length_of(&AC_CHROMA, 0x00), 2);
        assert_eq!(length_of(&AC_CHROMA, 0xF0), 10);
        assert_eq!(length_of(&AC_CHROMA, 0xFA), 16);
        for t in STANDARD_TABLES {
            assert_eq!(t.values.len(), if t.class == DC { 12 } else { 162 });
            let mut sorted = t.values.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), t.values.len(), "a symbol is listed twice");
        }
    }

    #[test]
    fn frames_without_tables_get_the_standard_ones_before_their_scan() {
        let frame = flat(8, 8, 0x11);
        let h = scan_headers(&frame).unwrap();
        assert_eq!(h.defined, [[false; 4]; 2]);
        assert_eq!(h.end, frame.len());
        assert_eq!(&frame[h.sos_at..h.sos_at + 2], [0xFF, SOS]);
        let fixed = with_standard_tables(&frame).unwrap();
        let Cow::Owned(fixed) = fixed else {
            panic!("tables were not inserted")
        };
        // One DHT segment of 4 tables: 2 + 4·17 + 2·12 + 2·162 bytes, then the SOS unchanged.
        let dht = &fixed[h.sos_at..];
        assert_eq!(&dht[..4], [0xFF, DHT, 0x01, 0xA2]);
        assert_eq!(0x01A2, 2 + 4 * 17 + 2 * 12 + 2 * 162);
        assert_eq!(&dht[4..6], [0x00, 0]);
        assert_eq!(&fixed[..h.sos_at], &frame[..h.sos_at]);
        assert_eq!(&fixed[h.sos_at + 2 + 0x01A2..], &frame[h.sos_at..]);
        // Now it has all four, and is passed through as it is.
        let again = scan_headers(&fixed).unwrap();
        assert_eq!(again.defined, [[true, true, false, false]; 2]);
        assert!(matches!(
            with_standard_tables(&fixed).unwrap(),
            Cow::Borrowed(_)
        ));
        // zune-jpeg alone cannot decode the frame without them (it only fills them in for
        // frames with an AVI1 APP0 marker): the insertion is what makes it decodable.
        assert!(decoded_by_zune_alone(&frame).is_err());
        assert!(decoded_by_zune_alone(&fixed).is_ok());
    }

    #[test]
    fn only_missing_tables_are_inserted_and_padding_after_eoi_is_dropped() {
        let frame = flat(8, 8, 0x11);
        let h = scan_headers(&frame).unwrap();
        // A DHT with the luma DC table only (as if a camera sent part of them).
        let mut partial = frame[..h.sos_at].to_vec();
        let body = [&[0x00][..], &DC_LUMA.bits, DC_LUMA.values].concat();
        partial.extend_from_slice(&[0xFF, DHT, 0, (2 + body.len()) as u8]);
        partial.extend_from_slice(&body);
        partial.extend_from_slice(&frame[h.sos_at..]);
        partial.extend_from_slice(&[0; 100]); // a driver's padding after EOI
        let hp = scan_headers(&partial).unwrap();
        assert_eq!(hp.defined, [[true, false, false, false], [false; 4]]);
        assert_eq!(hp.end, partial.len() - 100);
        let fixed = with_standard_tables(&partial).unwrap();
        let added = fixed.len() - hp.end;
        assert_eq!(added, 4 + 3 * 17 + 12 + 2 * 162);
        assert_eq!(decode(&partial).unwrap(), decode(&frame).unwrap());
    }

    #[test]
    fn a_flat_frame_decodes_to_video_range_mid_grey_in_every_sampling() {
        // All coefficients zero: every sample is 128 (full range) → Y 126, Cb = Cr = 128.
        for (w, h, hv) in [(8, 8, 0x11), (16, 8, 0x21), (16, 16, 0x22), (48, 32, 0x22)] {
            let pic = decode(&flat(w, h, hv)).unwrap();
            assert_eq!((pic.width, pic.height), (usize::from(w), usize::from(h)));
            assert!(pic.y.iter().all(|&y| y == 126), "{w}x{h} {hv:02x}");
            assert!(pic.u.iter().chain(&pic.v).all(|&c| c == 128));
        }
        // Odd sizes lose their last column and row; 1 pixel wide is too small.
        let pic = decode(&flat(15, 9, 0x22)).unwrap();
        assert_eq!((pic.width, pic.height), (14, 8));
        assert_eq!((pic.y.len(), pic.u.len()), (14 * 8, 7 * 4));
        let e = decode(&flat(1, 9, 0x11)).unwrap_err();
        assert!(
            matches!(
                e,
                MjpegError::TooSmall {
                    width: 1,
                    height: 9
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn dc_levels_land_in_video_range_and_chroma_is_averaged() {
        // 16x8, 4:4:4, two MCUs. Luma DC: +1016 (category 10: code 11111110, bits 1111111000)
        // makes the left block 255 (→ 235); then −1016 (bits 0000000111) makes the right 128.
        // Cb in the left block: +1016 (chroma category 10: code 1111111110) → 255 (→ 240).
        let mut bits = Bits::default();
        bits.put("11111110 1111111000").put("1010"); // Y: DC +1016, EOB
        bits.put("1111111110 1111111000").put("00"); // Cb: DC +1016, EOB
        bits.put(CHROMA_FLAT); // Cr
        bits.put("11111110 0000000111").put("1010"); // Y: DC −1016, EOB
        bits.put("1111111110 0000000111").put("00"); // Cb: DC −1016, EOB
        bits.put(CHROMA_FLAT);
        let frame = jpeg(16, 8, 0x11, false, &bits.finish());
        let pic = decode(&frame).unwrap();
        for row in pic.y.chunks_exact(16) {
            assert_eq!(row, [[235; 8], [126; 8]].concat());
        }
        for row in pic.u.chunks_exact(8) {
            assert_eq!(row, [[240; 4], [128; 4]].concat());
        }
        assert!(pic.v.iter().all(|&c| c == 128));
    }

    #[test]
    fn grey_jpegs_get_neutral_chroma() {
        let mut bits = Bits::default();
        bits.put("11111110 1111111000").put("1010");
        let pic = decode(&jpeg(8, 8, 0x11, true, &bits.finish())).unwrap();
        assert_eq!((pic.width, pic.height), (8, 8));
        assert!(pic.y.iter().all(|&y| y == 235));
        assert!(pic.u.iter().chain(&pic.v).all(|&c| c == CHROMA_NEUTRAL));
    }

    #[test]
    fn range_conversion_rounds_exactly() {
        // Against the rational formulas, rounded half up, for every input.
        for y in 0..=255u8 {
            let exact = (2 * (16 * 255 + 219 * u32::from(y)) + 255) / 510;
            assert_eq!(u32::from(y_to_video(y)), exact, "y {y}");
        }
        for sum in 0..=1020u32 {
            let exact = (2 * (15872 + 224 * sum) + 1020) / 2040;
            assert_eq!(u32::from(chroma_sum4_to_video(sum)), exact, "sum {sum}");
        }
        assert_eq!(
            (y_to_video(0), y_to_video(128), y_to_video(255)),
            (16, 126, 235)
        );
        let c = chroma_sum4_to_video;
        assert_eq!((c(0), c(512), c(1020)), (16, 128, 240));
    }

    #[test]
    fn broken_headers_say_what_is_wrong() {
        let frame = flat(16, 16, 0x22);
        let h = scan_headers(&frame).unwrap();
        let msg = |bytes: &[u8]| decode(bytes).unwrap_err().to_string();
        assert!(msg(&[]).contains("not a JPEG"), "{}", msg(&[]));
        assert!(
            msg(b"YUYVYUYV").contains("59 55 59 56"),
            "{}",
            msg(b"YUYVYUYV")
        );
        assert!(msg(&frame[..h.sos_at + 5]).contains("FF DA segment"));
        assert!(msg(&frame[..frame.len() - 1]).contains("no end-of-image marker"));
        let mut junk = frame.clone();
        junk[2] = 0x42;
        assert!(
            msg(&junk).contains("at byte 2: expected a marker"),
            "{}",
            msg(&junk)
        );
        let mut eoi = frame[..2].to_vec();
        eoi.extend_from_slice(&[0xFF, EOI]);
        assert!(msg(&eoi).contains("end of image before any scan"));
        // A size beyond MAX_DIMENSION is refused before anything is allocated for it.
        let huge = jpeg(60000, 60000, 0x11, false, &[0; 16]);
        assert!(matches!(decode(&huge), Err(MjpegError::Decode { .. })));
    }

    /// xorshift64*: deterministic noise for the loop tests below.
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// In place of a cargo-fuzz target (the fuzz crate builds `media` alone; pulling in pinhole
    /// would cost the fuzz step a sanitizer build of the whole daemon): thousands of random,
    /// truncated and corrupted frames, each an error or a picture, never a panic — and one
    /// Decoder carries on through all of them.
    #[test]
    fn random_truncated_and_corrupted_frames_never_panic() {
        let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
        let mut decoder = Decoder::new();
        let good = flat(48, 32, 0x22);
        let want = decode(&good).unwrap();
        let mut checked = 0;
        let mut check = |bytes: &[u8], decoder: &mut Decoder| {
            let r = decoder.decode(bytes);
            assert!(
                !matches!(r, Err(MjpegError::DecoderPanicked { .. })),
                "{r:?}"
            );
            // The next good frame is unaffected (checked after every tenth).
            checked += 1;
            if checked % 10 == 0 {
                assert_eq!(decoder.decode(&good).unwrap(), want);
            }
            r
        };
        // Pure noise, with and without a JPEG start.
        for _ in 0..300 {
            let n = noise.below(3000);
            let mut bytes = noise.bytes(n);
            if noise.below(2) == 0 && bytes.len() >= 2 {
                bytes[..2].copy_from_slice(&[0xFF, SOI]);
            }
            check(&bytes, &mut decoder).unwrap_err();
        }
        // Every truncation of a good frame.
        for cut in 0..good.len() - 1 {
            check(&good[..cut], &mut decoder).unwrap_err();
        }
        // Good headers of random sizes and samplings, random scan data.
        for _ in 0..200 {
            let (w, h) = (1 + noise.below(80) as u16, 1 + noise.below(80) as u16);
            let hv = [0x11, 0x21, 0x22, 0x12][noise.below(4)];
            let n = noise.below(2000);
            let scan: Vec<u8> = noise.bytes(n);
            let scan: Vec<u8> = scan.into_iter().filter(|&b| b != 0xFF).collect();
            let _ = check(&jpeg(w, h, hv, noise.below(4) == 0, &scan), &mut decoder);
        }
        // Corrupted good frames: overwritten bytes anywhere, headers included.
        for _ in 0..1000 {
            let mut bytes = good.clone();
            for _ in 0..1 + noise.below(4) {
                let at = noise.below(bytes.len());
                bytes[at] = noise.next() as u8;
            }
            let _ = check(&bytes, &mut decoder);
        }
    }
}
