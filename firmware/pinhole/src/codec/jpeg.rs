//! JPEG encoding of an [`I420Frame`] (4:2:0, `jpeg-encoder`, pure Rust), scaled down to a width
//! first when asked (never up).

use super::i420::I420Frame;
use super::scale::scale_plane;

/// A JPEG and its size.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub width: usize,
    pub height: usize,
}

/// The picture scaled to `width` (never up, sizes kept even), as a 4:2:0 JPEG of `quality`.
pub fn encode(f: &I420Frame, width: Option<usize>, quality: u8) -> Result<Encoded, String> {
    let (w, h) = match width {
        Some(w) if w < f.width => {
            let h = (f.height * w + f.width / 2) / f.width;
            (w & !1, (h & !1).max(2))
        }
        _ => (f.width, f.height),
    };
    let (cw, ch) = (f.width.div_ceil(2), f.height.div_ceil(2));
    let (dcw, dch) = (w.div_ceil(2), h.div_ceil(2));
    let scaled;
    let planes = if (w, h) == (f.width, f.height) {
        (&f.y[..], &f.u[..], &f.v[..])
    } else {
        scaled = (
            scale_plane(&f.y, f.width, f.height, w, h),
            scale_plane(&f.u, cw, ch, dcw, dch),
            scale_plane(&f.v, cw, ch, dcw, dch),
        );
        (&scaled.0[..], &scaled.1[..], &scaled.2[..])
    };
    let image = Planar {
        y: planes.0,
        u: planes.1,
        v: planes.2,
        width: w,
        height: h,
    };
    let (Ok(_), Ok(_)) = (u16::try_from(w), u16::try_from(h)) else {
        return Err(format!("{w}x{h} is too large for a JPEG"));
    };
    let mut out = Vec::with_capacity(w * h / 4);
    let mut enc = jpeg_encoder::Encoder::new(&mut out, quality);
    enc.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
    enc.encode_image(image)
        .map_err(|e| format!("JPEG encoding failed: {e}"))?;
    Ok(Encoded {
        bytes: out,
        width: w,
        height: h,
    })
}

/// I420 planes as the JPEG encoder reads them: one row of Y, Cb, Cr per pixel at a time.
struct Planar<'a> {
    y: &'a [u8],
    u: &'a [u8],
    v: &'a [u8],
    width: usize,
    height: usize,
}

impl jpeg_encoder::ImageBuffer for Planar<'_> {
    fn get_jpeg_color_type(&self) -> jpeg_encoder::JpegColorType {
        jpeg_encoder::JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        u16::try_from(self.width).unwrap_or(u16::MAX)
    }

    fn height(&self) -> u16 {
        u16::try_from(self.height).unwrap_or(u16::MAX)
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let y = usize::from(y);
        let cw = self.width.div_ceil(2);
        let luma = &self.y[y * self.width..(y + 1) * self.width];
        let crow = (y / 2) * cw;
        buffers[0].extend_from_slice(luma);
        // Chroma at full width (the encoder subsamples it again for 4:2:0).
        for (buf, plane) in [(1, self.u), (2, self.v)] {
            let row = &plane[crow..crow + cw];
            buffers[buf].extend(row.iter().flat_map(|&c| [c, c]).take(self.width));
        }
    }
}
