//! Pictures in planar 4:2:0 (I420): what the test pattern draws, what raw and MJPEG cameras
//! are converted to, what OpenH264 encodes and what the snapshot decoders hand out.

use openh264::formats::YUVSource;

/// Video-range black luma (BT.601/709: 16).
pub const Y_BLACK: u8 = 16;
/// Neutral chroma: every grey, black or white area.
pub const CHROMA_NEUTRAL: u8 = 128;

/// One picture in planar 4:2:0 (I420): full-size luma, then quarter-size U and V, each plane
/// tightly packed (stride = width, and width / 2 for chroma).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct I420Frame {
    /// Width in pixels (even).
    pub width: usize,
    /// Height in pixels (even).
    pub height: usize,
    /// Luma, `width * height` bytes.
    pub y: Vec<u8>,
    /// Cb, `(width / 2) * (height / 2)` bytes.
    pub u: Vec<u8>,
    /// Cr, `(width / 2) * (height / 2)` bytes.
    pub v: Vec<u8>,
}

impl I420Frame {
    /// A black picture; `width` and `height` must be even (a camera's negotiated size is).
    pub fn new(width: usize, height: usize) -> Self {
        let chroma = (width / 2) * (height / 2);
        Self {
            width,
            height,
            y: vec![Y_BLACK; width * height],
            u: vec![CHROMA_NEUTRAL; chroma],
            v: vec![CHROMA_NEUTRAL; chroma],
        }
    }

    /// The Y, U and V planes.
    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        (&self.y, &self.u, &self.v)
    }
}

impl YUVSource for I420Frame {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (self.width, self.width / 2, self.width / 2)
    }

    fn y(&self) -> &[u8] {
        &self.y
    }

    fn u(&self) -> &[u8] {
        &self.u
    }

    fn v(&self) -> &[u8] {
        &self.v
    }
}
