//! The `testsrc` picture: a moving I420 test pattern with the capture time burned in.
//!
//! Pure: no clocks, no I/O. The caller passes the frame number and the capture wall-clock time;
//! the same inputs always give the same picture.
//!
//! ```text
//!  ┌──────────────────────────────────────────────┐ y = 0
//!  │█ █ █   █ █     █  … 48-cell time band       │ band_rows(height) rows
//!  ├──────────────────────────────────────────────┤
//!  │ colour bars, scrolling left a few px a frame │
//!  │        ┌──────────────────────────┐          │
//!  │        │ 12:34:56.789 UTC         │          │ white on black, readable on a phone
//!  │        │ FRAME 0001234            │          │
//!  │        └──────────────────────────┘          │
//!  ├──────────────────────────────────────────────┤
//!  │   ▇▇  ← box, one step per frame, bouncing    │ dark grey
//!  └──────────────────────────────────────────────┘ y = height
//! ```
//!
//! Bars scroll, the box moves one step and the frame number changes on every frame, so a dropped,
//! repeated or frozen frame is visible by eye and by comparing consecutive pictures.
//!
//! # The time band (a contract: tests and benchmarks decode it)
//!
//! The capture time, `capture_unix_ms` (milliseconds since 1970-01-01T00:00:00Z, UTC), is
//! written into the luma plane as 48 bits:
//!
//! - The band is the top `band_rows(height)` rows of the picture, where
//!   `band_rows(h) = max(2, (h / 24) rounded down to an even number)` (integer division;
//!   720 → 30 rows, 1080 → 44, 64 → 2). The band is always an even number of rows, so it covers
//!   whole 4:2:0 chroma rows.
//! - The band is split left to right into [`BAND_CELLS`] = 48 cells. Cell `i` (0 ≤ i < 48) spans
//!   columns `x` in `[i * width / 48, (i + 1) * width / 48)` (integer division), over every row of
//!   the band.
//! - Cell `i` carries bit `47 - i` of `capture_unix_ms`: cell 0 is the most significant bit,
//!   cell 47 the least significant. A 1 bit is white (`Y = 235`), a 0 bit is black (`Y = 16`).
//!   Chroma over the whole band is neutral (`U = V = 128`).
//! - Bits above bit 47 are not carried: 2^48 ms is in the year 10889.
//!
//! [`decode_time_band`] reads it back: for each cell it averages the luma of the central half of
//! the cell (central half of its columns and of the band's rows) and calls the bit 1 when that
//! average is above the midpoint 125.5. It returns `None` when the band does not look like one:
//! a cell's average is too close to the midpoint to call (no band there, or a badly damaged
//! one), every bit is 0 (a black picture), or every bit is 1 (a white picture).

use std::fmt::Write as _;

// The glyph table lives beside this file (`source/font.rs`) but belongs to the pattern alone.
#[path = "font.rs"]
mod font;

use font::{CELL_HEIGHT, CELL_WIDTH, GLYPH_HEIGHT, GLYPH_WIDTH};

pub use crate::codec::i420::{I420Frame, CHROMA_NEUTRAL, Y_BLACK};

/// Number of cells (bits) in the time band.
pub const BAND_CELLS: usize = 48;
/// Luma of a 1 cell, and of the text (video-range white).
pub const Y_WHITE: u8 = 235;

/// Smallest width and height the pattern draws (the band needs 48 columns, the text some room).
pub const MIN_DIMENSION: usize = 64;
/// Largest width and height the pattern draws; a guard against absurd allocations.
pub const MAX_DIMENSION: usize = 8192;

/// Luma midpoint between a 0 cell and a 1 cell, times two (to stay in integers): 16 + 235.
const MIDPOINT_X2: u64 = Y_BLACK as u64 + Y_WHITE as u64;
/// A cell whose average luma is within this distance of the midpoint is not trusted.
const UNSURE_MARGIN: u64 = (Y_WHITE - Y_BLACK) as u64 / 4;

/// 75 % colour bars (BT.709, video range), left to right: white, yellow, cyan, green, magenta,
/// red, blue, black. `(Y, U, V)`.
const BARS: [(u8, u8, u8); 8] = [
    (180, 128, 128),
    (168, 44, 136),
    (145, 147, 44),
    (133, 63, 52),
    (63, 193, 204),
    (51, 109, 212),
    (28, 212, 120),
    (16, 128, 128),
];
/// Background of the lower strip the box moves along.
const Y_LOWER: u8 = 40;
/// The moving box: 75 % yellow.
const BOX_YUV: (u8, u8, u8) = (168, 44, 136);

/// The pattern cannot be drawn at this size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "test pattern size {width}x{height} is not allowed: width and height must be even and \
     {MIN_DIMENSION}..={MAX_DIMENSION}"
)]
pub struct PatternError {
    /// Requested width in pixels.
    pub width: usize,
    /// Requested height in pixels.
    pub height: usize,
}

/// Rows in the time band for a picture `height` rows tall: `max(2, even(height / 24))`.
pub fn band_rows(height: usize) -> usize {
    ((height / 24) & !1).max(2)
}

/// Columns `[start, end)` of band cell `cell` in a picture `width` columns wide.
pub fn band_cell_columns(width: usize, cell: usize) -> (usize, usize) {
    (cell * width / BAND_CELLS, (cell + 1) * width / BAND_CELLS)
}

/// Reads `capture_unix_ms` back from the time band of a luma plane (see the module docs).
///
/// `stride` is the distance in bytes between rows of `y_plane` (at least `width`). Returns
/// `None` when the plane is too small for the given geometry or the band is implausible.
pub fn decode_time_band(y_plane: &[u8], width: usize, height: usize, stride: usize) -> Option<u64> {
    if width < BAND_CELLS || height < 2 || stride < width {
        return None;
    }
    let rows = band_rows(height);
    if rows > height || y_plane.len() < (rows - 1) * stride + width {
        return None;
    }
    let (row0, row1) = central_half(0, rows);
    let mut value = 0u64;
    for cell in 0..BAND_CELLS {
        let (x0, x1) = band_cell_columns(width, cell);
        let (col0, col1) = central_half(x0, x1);
        let mut sum = 0u64;
        for row in row0..row1 {
            let start = row * stride;
            sum += y_plane[start + col0..start + col1]
                .iter()
                .map(|&p| u64::from(p))
                .sum::<u64>();
        }
        let count = ((row1 - row0) * (col1 - col0)) as u64;
        // Compare 2 * average with 2 * midpoint, all in integers.
        let avg_x2 = 2 * sum / count;
        if avg_x2.abs_diff(MIDPOINT_X2) < 2 * UNSURE_MARGIN {
            return None;
        }
        value = (value << 1) | u64::from(avg_x2 > MIDPOINT_X2);
    }
    let all_ones = (1u64 << BAND_CELLS) - 1;
    if value == 0 || value == all_ones {
        return None;
    }
    Some(value)
}

/// The central half of `[start, end)`, at least one element wide when the span is not empty.
fn central_half(start: usize, end: usize) -> (usize, usize) {
    let len = end - start;
    if len < 4 {
        (start, end)
    } else {
        (start + len / 4, end - len / 4)
    }
}

/// The test pattern's pictures are [`I420Frame`]s (`crate::codec`).
impl I420Frame {
    /// A black picture of the given (even, in range) size.
    pub fn black(width: usize, height: usize) -> Result<Self, PatternError> {
        check_size(width, height)?;
        Ok(Self::new(width, height))
    }
}

fn check_size(width: usize, height: usize) -> Result<(), PatternError> {
    let ok = |d: usize| d % 2 == 0 && (MIN_DIMENSION..=MAX_DIMENSION).contains(&d);
    if ok(width) && ok(height) {
        Ok(())
    } else {
        Err(PatternError { width, height })
    }
}

/// Rounds down to an even number.
const fn even(n: usize) -> usize {
    n & !1
}

/// An even-aligned rectangle, clipped to the picture.
#[derive(Debug, Clone, Copy)]
struct Rect {
    x: usize,
    y: usize,
    w: usize,
    h: usize,
}

/// The test pattern for one picture size: the static parts precomputed once.
#[derive(Debug, Clone)]
pub struct Pattern {
    width: usize,
    height: usize,
    band_rows: usize,
    /// First row after the bars (the lower strip starts here).
    bars_end: usize,
    /// One luma row of bars, `width + bar_period` long, so any scroll offset is one slice.
    bars_y: Vec<u8>,
    bars_u: Vec<u8>,
    bars_v: Vec<u8>,
    /// Width of one full cycle of the 8 bars, in luma pixels (even).
    bar_period: usize,
    /// Bars move left by this many luma pixels per frame (even, so chroma moves whole pixels).
    scroll_step: usize,
    /// The moving box: side length, top row, step per frame, number of positions - 1.
    box_side: usize,
    box_top: usize,
    box_step: usize,
    box_last_position: u64,
    /// Font scale: each font pixel is `scale × scale` picture pixels.
    scale: usize,
    /// The black box behind the text.
    text_box: Rect,
}

/// The text lines drawn in the box. The frame line has at least this many characters
/// ("FRAME " and 7 digits); the time line always has 16 ("HH:MM:SS.mmm UTC").
const TIME_LINE_CHARS: usize = 16;
const FRAME_LINE_MIN_CHARS: usize = 13;

impl Pattern {
    /// Precomputes the pattern for pictures `width × height` (both even, 64..=8192).
    pub fn new(width: usize, height: usize) -> Result<Self, PatternError> {
        check_size(width, height)?;
        let band_rows = band_rows(height);
        let bars_end = band_rows + even((height - band_rows) * 2 / 3);

        let bar_width = even(width / BARS.len()).max(2);
        let bar_period = bar_width * BARS.len();
        let mut bars_y = Vec::with_capacity(width + bar_period);
        let mut bars_u = Vec::with_capacity((width + bar_period) / 2);
        let mut bars_v = Vec::with_capacity((width + bar_period) / 2);
        while bars_y.len() < width + bar_period {
            let (y, u, v) = BARS[(bars_y.len() / bar_width) % BARS.len()];
            bars_y.extend_from_slice(&[y, y]);
            bars_u.push(u);
            bars_v.push(v);
        }

        let lower_rows = height - bars_end;
        let box_side = even((lower_rows * 3 / 4).min(width / 8)).max(2);
        let box_top = bars_end + even((lower_rows - box_side) / 2);
        let box_step = even(width / 128).max(2);
        let box_last_position = ((width - box_side) / box_step) as u64;

        // Font scale: about a hundredth of the height, reduced until the text fits the width.
        let mut scale = (height / 100).max(1);
        while scale > 1 && Self::text_box_size(scale, TIME_LINE_CHARS).0 > width {
            scale -= 1;
        }
        let (box_w, box_h) = Self::text_box_size(scale, TIME_LINE_CHARS);
        let bars_rows = bars_end - band_rows;
        let text_box = Rect {
            x: even(width.saturating_sub(box_w) / 2),
            y: band_rows + even(bars_rows.saturating_sub(box_h) / 2),
            w: box_w.min(width),
            h: box_h.min(height - band_rows),
        };

        Ok(Self {
            width,
            height,
            band_rows,
            bars_end,
            bars_y,
            bars_u,
            bars_v,
            bar_period,
            scroll_step: even(width / 320).max(2),
            box_side,
            box_top,
            box_step,
            box_last_position,
            scale,
            text_box,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Size (even width, even height) of the black box holding two lines of `chars` characters.
    fn text_box_size(scale: usize, chars: usize) -> (usize, usize) {
        let pad = 2 * scale;
        let text_w = (chars * CELL_WIDTH - 1) * scale;
        let text_h = (CELL_HEIGHT + GLYPH_HEIGHT) * scale;
        ((text_w + 2 * pad + 1) & !1, (text_h + 2 * pad + 1) & !1)
    }

    /// Renders frame `frame_index`, captured at `capture_unix_ms`, into a new picture.
    pub fn render(&self, frame_index: u64, capture_unix_ms: u64) -> I420Frame {
        let chroma = (self.width / 2) * (self.height / 2);
        let mut out = I420Frame {
            width: self.width,
            height: self.height,
            y: vec![0; self.width * self.height],
            u: vec![0; chroma],
            v: vec![0; chroma],
        };
        self.render_into(frame_index, capture_unix_ms, &mut out);
        out
    }

    /// Renders frame `frame_index`, captured at `capture_unix_ms`, into `out`, reusing its
    /// buffers. Every pixel is written; `out` is resized first if its size differs.
    pub fn render_into(&self, frame_index: u64, capture_unix_ms: u64, out: &mut I420Frame) {
        let (w, h) = (self.width, self.height);
        let cw = w / 2;
        out.width = w;
        out.height = h;
        out.y.resize(w * h, 0);
        out.u.resize(cw * (h / 2), 0);
        out.v.resize(cw * (h / 2), 0);

        // Scrolling colour bars: every row is the same slice of the precomputed bar row.
        let offset =
            ((frame_index % self.bar_period as u64) as usize * self.scroll_step) % self.bar_period;
        let src_y = &self.bars_y[offset..offset + w];
        for row in out.y[self.band_rows * w..self.bars_end * w].chunks_exact_mut(w) {
            row.copy_from_slice(src_y);
        }
        let (c0, c1) = (self.band_rows / 2 * cw, self.bars_end / 2 * cw);
        let src_u = &self.bars_u[offset / 2..offset / 2 + cw];
        let src_v = &self.bars_v[offset / 2..offset / 2 + cw];
        for row in out.u[c0..c1].chunks_exact_mut(cw) {
            row.copy_from_slice(src_u);
        }
        for row in out.v[c0..c1].chunks_exact_mut(cw) {
            row.copy_from_slice(src_v);
        }

        // Lower strip, and the box bouncing along it one step per frame.
        out.y[self.bars_end * w..].fill(Y_LOWER);
        out.u[self.bars_end / 2 * cw..].fill(CHROMA_NEUTRAL);
        out.v[self.bars_end / 2 * cw..].fill(CHROMA_NEUTRAL);
        let bounce = 2 * self.box_last_position;
        let position = match frame_index.checked_rem(bounce) {
            Some(k) if k > self.box_last_position => bounce - k,
            Some(k) => k,
            None => 0,
        };
        let box_rect = Rect {
            x: position as usize * self.box_step,
            y: self.box_top,
            w: self.box_side,
            h: self.box_side,
        };
        fill_rect(out, box_rect, BOX_YUV);

        // The readable text: capture time (UTC) and frame number, white on black.
        fill_rect(
            out,
            self.text_box,
            (Y_BLACK, CHROMA_NEUTRAL, CHROMA_NEUTRAL),
        );
        let mut time_line = String::with_capacity(TIME_LINE_CHARS);
        let ms_of_day = capture_unix_ms % 86_400_000;
        let _ = write!(
            time_line,
            "{:02}:{:02}:{:02}.{:03} UTC",
            ms_of_day / 3_600_000,
            ms_of_day / 60_000 % 60,
            ms_of_day / 1000 % 60,
            ms_of_day % 1000
        );
        let mut frame_line = String::with_capacity(FRAME_LINE_MIN_CHARS + 8);
        let _ = write!(frame_line, "FRAME {frame_index:07}");
        let pad = 2 * self.scale;
        let text_x = self.text_box.x + pad;
        let text_y = self.text_box.y + pad;
        let clip = Rect {
            x: self.text_box.x,
            y: self.text_box.y,
            w: self.text_box.w,
            h: self.text_box.h,
        };
        self.draw_text(out, &time_line, text_x, text_y, clip);
        self.draw_text(
            out,
            &frame_line,
            text_x,
            text_y + CELL_HEIGHT * self.scale,
            clip,
        );

        // The time band last, so nothing can draw over it.
        self.draw_band(out, capture_unix_ms);
    }

    /// Draws `text` in white at (`x`, `y`), scaled, clipped to `clip` (and the picture).
    fn draw_text(&self, out: &mut I420Frame, text: &str, x: usize, y: usize, clip: Rect) {
        let w = self.width;
        let s = self.scale;
        let x_end = (clip.x + clip.w).min(w);
        let y_end = (clip.y + clip.h).min(self.height);
        let text_end = (x + text.chars().count() * CELL_WIDTH * s).min(x_end);
        if x >= text_end {
            return;
        }
        for glyph_row in 0..GLYPH_HEIGHT {
            let top = y + glyph_row * s;
            if top >= y_end {
                break;
            }
            // Draw one picture row of this glyph row, then copy it down `s - 1` times.
            let row_start = top * w;
            let line = &mut out.y[row_start..row_start + w];
            for (i, c) in text.chars().enumerate() {
                let bits = font::glyph(c)[glyph_row];
                for col in 0..GLYPH_WIDTH {
                    if bits & (0x10 >> col) != 0 {
                        let px = x + (i * CELL_WIDTH + col) * s;
                        if px < text_end {
                            line[px..(px + s).min(text_end)].fill(Y_WHITE);
                        }
                    }
                }
            }
            for copy in 1..s.min(y_end - top) {
                out.y.copy_within(
                    row_start + x..row_start + text_end,
                    row_start + copy * w + x,
                );
            }
        }
    }

    /// Writes the 48-cell time band (see the module docs) over the top `band_rows` rows.
    fn draw_band(&self, out: &mut I420Frame, capture_unix_ms: u64) {
        let w = self.width;
        let first = &mut out.y[..w];
        for cell in 0..BAND_CELLS {
            let bit = (capture_unix_ms >> (BAND_CELLS - 1 - cell)) & 1;
            let (x0, x1) = band_cell_columns(w, cell);
            first[x0..x1].fill(if bit == 1 { Y_WHITE } else { Y_BLACK });
        }
        for row in 1..self.band_rows {
            out.y.copy_within(0..w, row * w);
        }
        let chroma_end = self.band_rows / 2 * (w / 2);
        out.u[..chroma_end].fill(CHROMA_NEUTRAL);
        out.v[..chroma_end].fill(CHROMA_NEUTRAL);
    }
}

/// Fills an even-aligned rectangle (clipped to the picture) with one colour.
fn fill_rect(out: &mut I420Frame, r: Rect, (y, u, v): (u8, u8, u8)) {
    let (w, h) = (out.width, out.height);
    let x0 = r.x.min(w);
    let x1 = (r.x + r.w).min(w);
    let y0 = r.y.min(h);
    let y1 = (r.y + r.h).min(h);
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    for row in y0..y1 {
        out.y[row * w + x0..row * w + x1].fill(y);
    }
    let cw = w / 2;
    for row in y0 / 2..y1.div_ceil(2) {
        out.u[row * cw + x0 / 2..row * cw + x1.div_ceil(2)].fill(u);
        out.v[row * cw + x0 / 2..row * cw + x1.div_ceil(2)].fill(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2025-01-02T03:04:05.678Z.
    const SOME_MS: u64 = 1_735_787_045_678;

    fn band_of(frame: &I420Frame) -> Option<u64> {
        decode_time_band(&frame.y, frame.width, frame.height, frame.width)
    }

    /// Benchmarks and tests read latency from this band, so every bit position must survive,
    /// including the top bit and alternating patterns that stress the cell boundaries.
    #[test]
    fn band_round_trips_for_many_times_and_sizes() {
        let times = [
            SOME_MS,
            1,
            1 << 47,
            (1 << 48) - 2,
            0x5555_5555_5555,
            0xAAAA_AAAA_AAAA,
            0x8000_0000_0001,
            1_700_000_000_000,
            4_102_444_800_000, // 2100-01-01
        ];
        for (w, h) in [
            (1280, 720),
            (1920, 1080),
            (640, 360),
            (64, 64),
            (3840, 2160),
            (98, 70),
        ] {
            let pattern = Pattern::new(w, h).expect("valid size");
            for (n, &ms) in times.iter().enumerate() {
                let frame = pattern.render(n as u64, ms);
                assert_eq!(band_of(&frame), Some(ms), "{w}x{h} {ms:#x}");
            }
        }
    }

    #[test]
    fn band_geometry_matches_the_documented_formula() {
        assert_eq!(band_rows(720), 30);
        assert_eq!(band_rows(1080), 44);
        assert_eq!(band_rows(64), 2);
        assert_eq!(band_rows(100), 4);
        assert_eq!(band_cell_columns(1280, 0), (0, 26));
        assert_eq!(band_cell_columns(1280, 47), (1253, 1280));

        // Pixel-exact check of the contract on a 720p frame: bit 47 - i in cell i, 235/16 luma.
        let ms = 0x8000_0000_0001;
        let frame = Pattern::new(1280, 720).expect("size").render(3, ms);
        for row in 0..30 {
            for cell in 0..BAND_CELLS {
                let (x0, x1) = band_cell_columns(1280, cell);
                let want = if cell == 0 || cell == 47 {
                    Y_WHITE
                } else {
                    Y_BLACK
                };
                assert!(frame.y[row * 1280 + x0..row * 1280 + x1]
                    .iter()
                    .all(|&p| p == want));
            }
        }
        assert_ne!(
            frame.y[30 * 1280..31 * 1280],
            frame.y[..1280],
            "band is exactly 30 rows"
        );
        assert!(frame.u[..15 * 640].iter().all(|&c| c == CHROMA_NEUTRAL));
        assert!(frame.v[..15 * 640].iter().all(|&c| c == CHROMA_NEUTRAL));
    }

    /// A black or white picture, or one without a band, must not be read as a time.
    #[test]
    fn implausible_bands_decode_to_none() {
        let black = I420Frame::black(640, 360).expect("size");
        assert_eq!(band_of(&black), None);
        let white = vec![Y_WHITE; 640 * 360];
        assert_eq!(decode_time_band(&white, 640, 360, 640), None);
        let grey = vec![128; 640 * 360];
        assert_eq!(decode_time_band(&grey, 640, 360, 640), None);
        // Time 0 renders as an all-black band: indistinguishable from no band, so None.
        let zero = Pattern::new(640, 360).expect("size").render(0, 0);
        assert_eq!(band_of(&zero), None);
    }

    #[test]
    fn decode_rejects_geometry_that_does_not_fit_the_plane() {
        let frame = Pattern::new(640, 360).expect("size").render(0, SOME_MS);
        assert_eq!(decode_time_band(&frame.y, 640, 360, 639), None);
        assert_eq!(decode_time_band(&frame.y[..100], 640, 360, 640), None);
        assert_eq!(decode_time_band(&frame.y, 40, 360, 640), None);
        assert_eq!(decode_time_band(&[], 0, 0, 0), None);
    }

    /// Decoders hand out planes with padding; the stride must be honoured.
    #[test]
    fn decode_honours_a_stride_wider_than_the_picture() {
        let frame = Pattern::new(640, 360).expect("size").render(0, SOME_MS);
        let stride = 704;
        let mut padded = vec![0u8; stride * 360];
        for (dst, src) in padded
            .chunks_exact_mut(stride)
            .zip(frame.y.chunks_exact(640))
        {
            dst[..640].copy_from_slice(src);
        }
        assert_eq!(decode_time_band(&padded, 640, 360, stride), Some(SOME_MS));
    }

    /// Drops and freezes are only visible if every frame differs from the one before, in the
    /// bars, the box and the text.
    #[test]
    fn consecutive_frames_differ_everywhere_that_moves() {
        let p = Pattern::new(1280, 720).expect("size");
        let mut prev = p.render(0, SOME_MS);
        for n in 1..400u64 {
            let cur = p.render(n, SOME_MS);
            let bars_rows = 40 * 1280..41 * 1280;
            assert_ne!(
                prev.y[bars_rows.clone()],
                cur.y[bars_rows],
                "bars frozen at {n}"
            );
            let lower = p.box_top * 1280..(p.box_top + 1) * 1280;
            assert_ne!(prev.y[lower.clone()], cur.y[lower], "box frozen at {n}");
            let text = p.text_box.y * 1280..(p.text_box.y + p.text_box.h) * 1280;
            assert_ne!(
                prev.y[text.clone()],
                cur.y[text],
                "frame number frozen at {n}"
            );
            prev = cur;
        }
    }

    #[test]
    fn rendering_is_deterministic_and_render_into_reuses_any_buffer() {
        let p = Pattern::new(320, 180).expect("size");
        let a = p.render(17, SOME_MS);
        let mut b = I420Frame::black(64, 64).expect("size");
        p.render_into(17, SOME_MS, &mut b);
        assert_eq!(a, b);
        assert_eq!(a.y.len(), 320 * 180);
        assert_eq!(a.u.len(), 160 * 90);
    }

    /// The text must show the time of day in UTC; check the glyphs drawn for each character.
    #[test]
    fn text_shows_utc_time_and_frame_number() {
        let p = Pattern::new(1280, 720).expect("size");
        let frame = p.render(42, SOME_MS);
        let read = |line: usize| -> String {
            let s = p.scale;
            let x0 = p.text_box.x + 2 * s;
            let y0 = p.text_box.y + 2 * s + line * CELL_HEIGHT * s;
            let mut out = String::new();
            for i in 0..TIME_LINE_CHARS {
                let mut bitmap = [0u8; GLYPH_HEIGHT];
                for (r, bits) in bitmap.iter_mut().enumerate() {
                    for c in 0..GLYPH_WIDTH {
                        let x = x0 + (i * CELL_WIDTH + c) * s + s / 2;
                        let y = y0 + r * s + s / 2;
                        if frame.y[y * 1280 + x] == Y_WHITE {
                            *bits |= 0x10 >> c;
                        }
                    }
                }
                let c = "0123456789:. UTCFRAME"
                    .chars()
                    .find(|&c| font::glyph(c) == &bitmap)
                    .unwrap_or('?');
                out.push(c);
            }
            out.trim_end().to_string()
        };
        assert_eq!(read(0), "03:04:05.678 UTC");
        assert_eq!(read(1), "FRAME 0000042");
    }

    #[test]
    fn text_is_large_enough_to_read_on_a_phone() {
        let p = Pattern::new(1280, 720).expect("size");
        assert!(p.scale >= 6, "glyphs {} px tall", p.scale * GLYPH_HEIGHT);
        assert!(p.text_box.x + p.text_box.w <= 1280);
    }

    #[test]
    fn odd_or_out_of_range_sizes_are_rejected() {
        for (w, h) in [(641, 360), (640, 361), (62, 64), (64, 62), (8194, 64)] {
            assert_eq!(
                Pattern::new(w, h).err(),
                Some(PatternError {
                    width: w,
                    height: h
                })
            );
        }
        assert!(Pattern::new(64, 64).is_ok());
    }

    /// Small and odd-proportioned sizes must not panic (text clipped, box still moving).
    #[test]
    fn tiny_and_extreme_sizes_render() {
        for (w, h) in [(64, 64), (64, 2160), (3840, 64), (66, 66), (130, 98)] {
            let p = Pattern::new(w, h).expect("size");
            for n in 0..300 {
                let f = p.render(n, SOME_MS + n);
                assert_eq!(band_of(&f), Some(SOME_MS + n), "{w}x{h}");
            }
            let _ = p.render(u64::MAX, u64::MAX);
        }
    }
}
