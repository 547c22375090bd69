//! Raw camera frames (YUYV, NV12, YU12 with the driver's line stride) → I420 for the encoder.
//!
//! Pure and checked: a buffer shorter than the frame it claims to hold is an error, never a
//! panic or a read past the end.

use super::negotiate::RawFormat;

/// A planar 4:2:0 picture with tight strides: the test source's picture type.
pub use crate::codec::I420Frame as I420;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{format:?} frame of {width}x{height} with line stride {stride}: needs {need} bytes, got {got}")]
    TooShort {
        format: RawFormat,
        width: usize,
        height: usize,
        stride: usize,
        need: usize,
        got: usize,
    },
    #[error("line stride {stride} is too small for {width} pixels of {format:?}")]
    BadStride {
        format: RawFormat,
        width: usize,
        stride: usize,
    },
}

/// The smallest line stride for `width` pixels (bytes of the first plane).
pub fn min_stride(format: RawFormat, width: usize) -> usize {
    match format {
        RawFormat::Yuyv => width * 2,
        RawFormat::Nv12 | RawFormat::Yu12 => width,
    }
}

/// Bytes a frame occupies with line stride `stride` (the driver's `bytesperline`; 0 means
/// tight).
pub fn frame_len(format: RawFormat, width: usize, height: usize, stride: usize) -> usize {
    let stride = if stride == 0 {
        min_stride(format, width)
    } else {
        stride
    };
    match format {
        RawFormat::Yuyv => stride * height,
        // Chroma lines are half as long and half as many (two planes for YU12).
        RawFormat::Nv12 | RawFormat::Yu12 => stride * height + (stride / 2) * (height / 2) * 2,
    }
}

/// Converts one frame into `out`, which has the frame's size.
pub fn convert(
    format: RawFormat,
    data: &[u8],
    stride: usize,
    out: &mut I420,
) -> Result<(), ConvertError> {
    let (w, h) = (out.width, out.height);
    let stride = if stride == 0 {
        min_stride(format, w)
    } else {
        stride
    };
    if stride < min_stride(format, w) {
        return Err(ConvertError::BadStride {
            format,
            width: w,
            stride,
        });
    }
    let need = frame_len(format, w, h, stride);
    if data.len() < need {
        return Err(ConvertError::TooShort {
            format,
            width: w,
            height: h,
            stride,
            need,
            got: data.len(),
        });
    }
    let (cw, ch) = (w / 2, h / 2);
    match format {
        RawFormat::Yuyv => {
            for row in 0..h {
                let line = &data[row * stride..row * stride + w * 2];
                let y = &mut out.y[row * w..(row + 1) * w];
                for (dst, px) in y.iter_mut().zip(line.chunks_exact(2)) {
                    *dst = px[0];
                }
            }
            // 4:2:2 → 4:2:0: average the chroma of each pair of lines.
            for crow in 0..ch {
                let a = &data[2 * crow * stride..2 * crow * stride + w * 2];
                let b = &data[(2 * crow + 1) * stride..(2 * crow + 1) * stride + w * 2];
                for cx in 0..cw {
                    let i = cx * 4;
                    out.u[crow * cw + cx] = avg(a[i + 1], b[i + 1]);
                    out.v[crow * cw + cx] = avg(a[i + 3], b[i + 3]);
                }
            }
        }
        RawFormat::Nv12 => {
            copy_plane(data, stride, w, h, &mut out.y);
            let uv = &data[stride * h..];
            for crow in 0..ch {
                let line = &uv[crow * stride..crow * stride + cw * 2];
                for (cx, pair) in line.chunks_exact(2).enumerate() {
                    out.u[crow * cw + cx] = pair[0];
                    out.v[crow * cw + cx] = pair[1];
                }
            }
        }
        RawFormat::Yu12 => {
            copy_plane(data, stride, w, h, &mut out.y);
            let cstride = stride / 2;
            let u = &data[stride * h..];
            copy_plane(u, cstride, cw, ch, &mut out.u);
            let v = &u[cstride * ch..];
            copy_plane(v, cstride, cw, ch, &mut out.v);
        }
    }
    Ok(())
}

fn avg(a: u8, b: u8) -> u8 {
    (u16::from(a) + u16::from(b)).div_ceil(2) as u8
}

fn copy_plane(src: &[u8], stride: usize, w: usize, h: usize, dst: &mut [u8]) {
    for (row, out) in dst.chunks_exact_mut(w).take(h).enumerate() {
        out.copy_from_slice(&src[row * stride..row * stride + w]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Stand-in frames: no camera here, so the tests build the byte layouts a driver returns
    //! (with padded strides, as UVC and the Pi's ISP use) and check the I420 result.
    use super::*;

    #[test]
    fn yuyv_with_a_padded_stride_becomes_i420_with_averaged_chroma() {
        // 4x2 pixels, stride 12 (4 bytes of padding per line).
        let data = [
            10, 100, 11, 200, 12, 102, 13, 202, 0, 0, 0, 0, //
            20, 110, 21, 210, 22, 112, 23, 212, 0, 0, 0, 0,
        ];
        let mut out = I420::new(4, 2);
        convert(RawFormat::Yuyv, &data, 12, &mut out).unwrap();
        let (y, u, v) = out.planes();
        assert_eq!(y, [10, 11, 12, 13, 20, 21, 22, 23]);
        assert_eq!(u, [105, 107]);
        assert_eq!(v, [205, 207]);
    }

    #[test]
    fn nv12_and_yu12_deinterleave_and_copy_planes() {
        // 4x2 NV12, tight.
        let data = [1, 2, 3, 4, 5, 6, 7, 8, 50, 60, 51, 61];
        let mut out = I420::new(4, 2);
        convert(RawFormat::Nv12, &data, 0, &mut out).unwrap();
        assert_eq!(
            out.planes(),
            (&[1, 2, 3, 4, 5, 6, 7, 8][..], &[50, 51][..], &[60, 61][..])
        );
        // 4x2 YU12 with stride 8: chroma lines have stride 4.
        let data = [
            1, 2, 3, 4, 0, 0, 0, 0, 5, 6, 7, 8, 0, 0, 0, 0, //
            50, 51, 0, 0, // U
            60, 61, 0, 0, // V
        ];
        let mut out = I420::new(4, 2);
        convert(RawFormat::Yu12, &data, 8, &mut out).unwrap();
        assert_eq!(
            out.planes(),
            (&[1, 2, 3, 4, 5, 6, 7, 8][..], &[50, 51][..], &[60, 61][..])
        );
    }

    #[test]
    fn short_buffers_and_bad_strides_are_errors_not_panics() {
        let mut out = I420::new(640, 480);
        let e = convert(RawFormat::Yuyv, &[0; 1000], 0, &mut out).unwrap_err();
        assert!(
            e.to_string().contains("needs 614400 bytes, got 1000"),
            "{e}"
        );
        let e = convert(RawFormat::Nv12, &[0; 1000], 100, &mut out).unwrap_err();
        assert!(matches!(e, ConvertError::BadStride { .. }));
        assert_eq!(frame_len(RawFormat::Nv12, 640, 480, 0), 640 * 480 * 3 / 2);
        assert_eq!(
            frame_len(RawFormat::Yu12, 640, 480, 704),
            704 * 480 + 352 * 240 * 2
        );
    }
}
