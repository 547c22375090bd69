//! Where an I420 picture's bytes go in an encoder's OUTPUT buffer, and where a decoder's
//! CAPTURE buffer keeps them: the plane layout of YU12, NV12 (one buffer plane) and YM12, NM12
//! (one buffer plane per picture plane), with the driver's `bytesperline`. Pure and checked: a
//! buffer or picture too short is an error, never a panic.

use crate::backend::{Format, Fourcc, Rect};

/// The raw formats this crate feeds an encoder, best first: I420 as the camera path makes it,
/// then NV12, then their multi-planar variants.
pub const PREFERRED: [Fourcc; 4] = [Fourcc::YU12, Fourcc::NV12, Fourcc::YM12, Fourcc::NM12];

/// An I420 picture: full-size Y, half-size U and V (rounded up), each with its line stride.
#[derive(Debug, Clone, Copy)]
pub struct Picture<'a> {
    pub width: u32,
    pub height: u32,
    pub y: &'a [u8],
    pub u: &'a [u8],
    pub v: &'a [u8],
    pub y_stride: usize,
    pub uv_stride: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("{fourcc} is not a raw format this encoder path can fill (YU12, NV12, YM12, NM12)")]
    Unsupported { fourcc: Fourcc },
    #[error("{fourcc} needs {want} buffer plane(s), the driver set {got}")]
    PlaneCount {
        fourcc: Fourcc,
        want: usize,
        got: usize,
    },
    #[error("bytesperline {stride} of plane {plane} is too small for {need} bytes per line")]
    Stride {
        plane: usize,
        stride: usize,
        need: usize,
    },
    #[error("plane {plane} holds {have} bytes, a {width}x{height} frame needs {need}")]
    TooSmall {
        plane: usize,
        have: usize,
        need: usize,
        width: u32,
        height: u32,
    },
    #[error("the picture is {got_w}x{got_h}, the encoder was set up for {width}x{height}")]
    PictureSize {
        got_w: u32,
        got_h: u32,
        width: u32,
        height: u32,
    },
    #[error("the picture's {plane} plane is {have} bytes, {need} needed")]
    PictureShort {
        plane: &'static str,
        have: usize,
        need: usize,
    },
    #[error("the visible rectangle {rect} does not lie inside the {width}x{height} picture")]
    Visible { rect: Rect, width: u32, height: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Y,
    U,
    V,
    /// Interleaved U, V.
    Uv,
}

/// One picture plane's place: which buffer plane, where in it, with which stride.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    part: Part,
    buffer_plane: usize,
    offset: usize,
    stride: usize,
}

/// The layout of one raw format at one size, from the format the driver set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub fourcc: Fourcc,
    pub width: u32,
    pub height: u32,
    spans: Vec<Span>,
    /// Bytes used in each buffer plane.
    used: Vec<usize>,
}

impl Layout {
    pub fn new(f: &Format) -> Result<Layout, LayoutError> {
        let (w, h) = (f.width as usize, f.height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let bpl = |i: usize| -> usize { f.planes.get(i).map_or(0, |p| p.bytesperline as usize) };
        let want_planes = match f.fourcc {
            Fourcc::YU12 | Fourcc::NV12 => 1,
            Fourcc::YM12 => 3,
            Fourcc::NM12 => 2,
            fourcc => return Err(LayoutError::Unsupported { fourcc }),
        };
        if f.planes.len() != want_planes {
            return Err(LayoutError::PlaneCount {
                fourcc: f.fourcc,
                want: want_planes,
                got: f.planes.len(),
            });
        }
        // A bytesperline of 0 means tightly packed.
        let or = |s: usize, tight: usize| if s == 0 { tight } else { s };
        let y_stride = or(bpl(0), w);
        let span = |part, buffer_plane, offset, stride| Span {
            part,
            buffer_plane,
            offset,
            stride,
        };
        let spans = match f.fourcc {
            Fourcc::YU12 => {
                // V4L2: chroma lines are half the luma bytesperline.
                let c = y_stride / 2;
                vec![
                    span(Part::Y, 0, 0, y_stride),
                    span(Part::U, 0, y_stride * h, c),
                    span(Part::V, 0, y_stride * h + c * ch, c),
                ]
            }
            Fourcc::NV12 => vec![
                span(Part::Y, 0, 0, y_stride),
                span(Part::Uv, 0, y_stride * h, y_stride),
            ],
            Fourcc::YM12 => vec![
                span(Part::Y, 0, 0, y_stride),
                span(Part::U, 1, 0, or(bpl(1), cw)),
                span(Part::V, 2, 0, or(bpl(2), cw)),
            ],
            _ => vec![
                span(Part::Y, 0, 0, y_stride),
                span(Part::Uv, 1, 0, or(bpl(1), 2 * cw)),
            ],
        };
        let mut used = vec![0usize; want_planes];
        for s in &spans {
            let (line, rows) = match s.part {
                Part::Y => (w, h),
                Part::U | Part::V => (cw, ch),
                Part::Uv => (2 * cw, ch),
            };
            if s.stride < line {
                return Err(LayoutError::Stride {
                    plane: s.buffer_plane,
                    stride: s.stride,
                    need: line,
                });
            }
            let end = s.offset + s.stride * rows;
            used[s.buffer_plane] = used[s.buffer_plane].max(end);
        }
        for (i, (&need, p)) in used.iter().zip(&f.planes).enumerate() {
            if p.sizeimage != 0 && (p.sizeimage as usize) < need {
                return Err(LayoutError::TooSmall {
                    plane: i,
                    have: p.sizeimage as usize,
                    need,
                    width: f.width,
                    height: f.height,
                });
            }
        }
        Ok(Layout {
            fourcc: f.fourcc,
            width: f.width,
            height: f.height,
            spans,
            used,
        })
    }

    pub fn buffer_planes(&self) -> usize {
        self.used.len()
    }

    /// Bytes used in buffer plane `i`.
    pub fn used(&self, i: usize) -> usize {
        self.used.get(i).copied().unwrap_or(0)
    }

    /// Checks that `pic` matches the layout's size and its planes are long enough.
    pub fn check(&self, pic: &Picture<'_>) -> Result<(), LayoutError> {
        if (pic.width, pic.height) != (self.width, self.height) {
            return Err(LayoutError::PictureSize {
                got_w: pic.width,
                got_h: pic.height,
                width: self.width,
                height: self.height,
            });
        }
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let need = |stride: usize, line: usize, rows: usize| {
            if rows == 0 {
                0
            } else {
                stride * (rows - 1) + line
            }
        };
        for (plane, data, stride, line, rows) in [
            ("Y", pic.y, pic.y_stride, w, h),
            ("U", pic.u, pic.uv_stride, cw, ch),
            ("V", pic.v, pic.uv_stride, cw, ch),
        ] {
            let n = need(stride.max(line), line, rows);
            if stride < line || data.len() < n {
                return Err(LayoutError::PictureShort {
                    plane,
                    have: data.len(),
                    need: n,
                });
            }
        }
        Ok(())
    }

    /// Copies `pic` (already [`Layout::check`]ed) into buffer plane `plane` (`dst`); returns
    /// its `bytesused`.
    pub fn fill(
        &self,
        plane: usize,
        pic: &Picture<'_>,
        dst: &mut [u8],
    ) -> Result<usize, LayoutError> {
        let used = self.used(plane);
        if dst.len() < used {
            return Err(LayoutError::TooSmall {
                plane,
                have: dst.len(),
                need: used,
                width: self.width,
                height: self.height,
            });
        }
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        for s in self.spans.iter().filter(|s| s.buffer_plane == plane) {
            match s.part {
                Part::Y => copy_rows(pic.y, pic.y_stride, w, h, &mut dst[s.offset..], s.stride),
                Part::U => copy_rows(pic.u, pic.uv_stride, cw, ch, &mut dst[s.offset..], s.stride),
                Part::V => copy_rows(pic.v, pic.uv_stride, cw, ch, &mut dst[s.offset..], s.stride),
                Part::Uv => {
                    for row in 0..ch {
                        let u = &pic.u[row * pic.uv_stride..][..cw];
                        let v = &pic.v[row * pic.uv_stride..][..cw];
                        let out = &mut dst[s.offset + row * s.stride..][..2 * cw];
                        for (pair, (a, b)) in out.chunks_exact_mut(2).zip(u.iter().zip(v)) {
                            pair[0] = *a;
                            pair[1] = *b;
                        }
                    }
                }
            }
        }
        Ok(used)
    }
}

/// Where one plane's rows are read from: `rows` lines of `line` bytes, the first at `x0`, `y0`
/// in a plane of `stride` that starts at `offset`.
#[derive(Debug, Clone, Copy)]
struct Window {
    offset: usize,
    stride: usize,
    x0: usize,
    y0: usize,
    line: usize,
    rows: usize,
}

impl Window {
    /// The bytes a buffer plane must hold for the window (up to the end of its last line).
    fn need(&self) -> usize {
        if self.rows == 0 {
            return 0;
        }
        self.offset + self.stride * (self.y0 + self.rows - 1) + self.x0 + self.line
    }

    fn row<'a>(&self, src: &'a [u8], r: usize) -> &'a [u8] {
        &src[self.offset + self.stride * (self.y0 + r) + self.x0..][..self.line]
    }
}

impl Layout {
    /// Reads the visible part `rect` of a picture in this layout out of its buffer planes
    /// (`planes[i]`: buffer plane `i`'s bytes from its data offset) as tightly packed I420: Y
    /// `w*h` bytes, U and V `ceil(w/2)*ceil(h/2)` each; NV12's interleaved chroma is split.
    pub fn read_i420(&self, planes: &[&[u8]], rect: Rect) -> Result<[Vec<u8>; 3], LayoutError> {
        let outside = || LayoutError::Visible {
            rect,
            width: self.width,
            height: self.height,
        };
        let left = usize::try_from(rect.left).map_err(|_| outside())?;
        let top = usize::try_from(rect.top).map_err(|_| outside())?;
        let (w, h) = (rect.width as usize, rect.height as usize);
        if w == 0 || h == 0 || left + w > self.width as usize || top + h > self.height as usize {
            return Err(outside());
        }
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let (cx, cy) = (left / 2, top / 2);
        let mut out = [vec![0u8; w * h], vec![0u8; cw * ch], vec![0u8; cw * ch]];
        for s in &self.spans {
            let src = planes.get(s.buffer_plane).copied().unwrap_or(&[]);
            let win = match s.part {
                Part::Y => (left, top, w, h),
                Part::U | Part::V => (cx, cy, cw, ch),
                Part::Uv => (2 * cx, cy, 2 * cw, ch),
            };
            let win = Window {
                offset: s.offset,
                stride: s.stride,
                x0: win.0,
                y0: win.1,
                line: win.2,
                rows: win.3,
            };
            if src.len() < win.need() {
                return Err(LayoutError::TooSmall {
                    plane: s.buffer_plane,
                    have: src.len(),
                    need: win.need(),
                    width: self.width,
                    height: self.height,
                });
            }
            match s.part {
                Part::Y | Part::U | Part::V => {
                    let dst = &mut out[match s.part {
                        Part::Y => 0,
                        Part::U => 1,
                        _ => 2,
                    }];
                    for (r, line) in dst.chunks_exact_mut(win.line).enumerate() {
                        line.copy_from_slice(win.row(src, r));
                    }
                }
                Part::Uv => {
                    let [_, u, v] = &mut out;
                    for (r, (u, v)) in u
                        .chunks_exact_mut(cw)
                        .zip(v.chunks_exact_mut(cw))
                        .enumerate()
                    {
                        for (pair, (a, b)) in win
                            .row(src, r)
                            .chunks_exact(2)
                            .zip(u.iter_mut().zip(v.iter_mut()))
                        {
                            *a = pair[0];
                            *b = pair[1];
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

fn copy_rows(
    src: &[u8],
    src_stride: usize,
    line: usize,
    rows: usize,
    dst: &mut [u8],
    stride: usize,
) {
    for row in 0..rows {
        dst[row * stride..][..line].copy_from_slice(&src[row * src_stride..][..line]);
    }
}

/// The first format of [`PREFERRED`] the driver offers.
pub fn choose(offered: &[Fourcc]) -> Option<Fourcc> {
    PREFERRED.into_iter().find(|f| offered.contains(f))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Stand-in formats as drivers set them (bcm2835-codec aligns YU12's bytesperline to 64
    //! on its encoder and does not align the height; the values below follow that rule).
    use super::*;
    use crate::backend::PlaneFormat;

    fn fmt(fourcc: Fourcc, w: u32, h: u32, planes: &[(u32, u32)]) -> Format {
        Format {
            width: w,
            height: h,
            fourcc,
            planes: planes
                .iter()
                .map(|&(bytesperline, sizeimage)| PlaneFormat {
                    bytesperline,
                    sizeimage,
                })
                .collect(),
        }
    }

    /// A 4x2 I420 picture: Y 1..=8, U 50, 51, V 60, 61.
    /// The 4x2 picture over `pic()`'s planes, tightly packed.
    fn picture<'a>(y: &'a [u8], u: &'a [u8], v: &'a [u8]) -> Picture<'a> {
        Picture {
            width: 4,
            height: 2,
            y,
            u,
            v,
            y_stride: 4,
            uv_stride: 2,
        }
    }

    fn pic() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        ((1..=8).collect(), vec![50, 51], vec![60, 61])
    }

    #[test]
    fn yu12_with_a_padded_stride_puts_chroma_after_the_luma_at_half_stride() {
        let (y, u, v) = pic();
        let p = picture(&y, &u, &v);
        let l = Layout::new(&fmt(Fourcc::YU12, 4, 2, &[(8, 24)])).unwrap();
        let mut buf = vec![0xee; 24];
        l.check(&p).unwrap();
        assert_eq!(l.fill(0, &p, &mut buf).unwrap(), 8 * 2 + 4 * 2);
        assert_eq!(
            buf,
            [
                1, 2, 3, 4, 0xee, 0xee, 0xee, 0xee, 5, 6, 7, 8, 0xee, 0xee, 0xee, 0xee, //
                50, 51, 0xee, 0xee, // U, stride 4
                60, 61, 0xee, 0xee, // V
            ]
        );
    }

    #[test]
    fn nv12_interleaves_and_the_multi_planar_variants_use_their_own_planes() {
        let (y, u, v) = pic();
        let p = picture(&y, &u, &v);
        let l = Layout::new(&fmt(Fourcc::NV12, 4, 2, &[(4, 12)])).unwrap();
        let mut buf = vec![0; 12];
        assert_eq!(l.fill(0, &p, &mut buf).unwrap(), 12);
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8, 50, 60, 51, 61]);

        let l = Layout::new(&fmt(Fourcc::YM12, 4, 2, &[(4, 8), (2, 2), (2, 2)])).unwrap();
        assert_eq!(l.buffer_planes(), 3);
        let mut planes = [vec![0; 8], vec![0; 2], vec![0; 2]];
        for (i, b) in planes.iter_mut().enumerate() {
            l.fill(i, &p, b).unwrap();
        }
        assert_eq!(planes, [y.clone(), u.clone(), v.clone()]);

        let l = Layout::new(&fmt(Fourcc::NM12, 4, 2, &[(4, 8), (4, 4)])).unwrap();
        let mut uv = vec![0; 4];
        l.fill(1, &p, &mut uv).unwrap();
        assert_eq!(uv, [50, 60, 51, 61]);
    }

    #[test]
    fn nv12_with_padded_lines_and_a_crop_reads_back_as_tight_i420() {
        // A decoder's CAPTURE buffer: 6x4 coded NV12 with lines padded to 8 bytes (0xee), a
        // 4x2 visible rectangle at (2, 2) whose pixels are numbered; everything else is 0xdd.
        let l = Layout::new(&fmt(Fourcc::NV12, 6, 4, &[(8, 8 * 4 + 8 * 2)])).unwrap();
        let mut buf = vec![0xee; 8 * 6];
        for row in 0..4 {
            buf[row * 8..row * 8 + 6].fill(0xdd);
        }
        for row in 0..2 {
            buf[32 + row * 8..32 + row * 8 + 6].fill(0xdd);
        }
        for (i, (row, col)) in [
            (2, 2),
            (2, 3),
            (2, 4),
            (2, 5),
            (3, 2),
            (3, 3),
            (3, 4),
            (3, 5),
        ]
        .into_iter()
        .enumerate()
        {
            buf[row * 8 + col] = 1 + i as u8;
        }
        // Chroma row 1, pairs 1 and 2: U 50, 51 and V 60, 61 interleaved.
        buf[32 + 8 + 2..32 + 8 + 6].copy_from_slice(&[50, 60, 51, 61]);
        let visible = Rect {
            left: 2,
            top: 2,
            width: 4,
            height: 2,
        };
        let [y, u, v] = l.read_i420(&[&buf], visible).unwrap();
        assert_eq!(y, (1..=8).collect::<Vec<u8>>());
        assert_eq!((u, v), (vec![50, 51], vec![60, 61]));
        // The whole coded picture: padding never leaks in.
        let [y, ..] = l
            .read_i420(
                &[&buf],
                Rect {
                    width: 6,
                    height: 4,
                    ..Rect::default()
                },
            )
            .unwrap();
        assert!(!y.contains(&0xee));
        assert_eq!(y.len(), 24);
        // A buffer that ends inside the last chroma line, a rectangle outside the picture.
        let e = l.read_i420(&[&buf[..8 * 5 + 3]], visible).unwrap_err();
        assert!(matches!(e, LayoutError::TooSmall { need: 46, .. }), "{e}");
        let e = l
            .read_i420(&[&buf], Rect { left: 4, ..visible })
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the visible rectangle 4x2+4+2 does not lie inside the 6x4 picture"
        );
    }

    #[test]
    fn yu12_and_ym12_read_back_what_fill_wrote() {
        let (y, u, v) = pic();
        let p = picture(&y, &u, &v);
        let all = Rect {
            width: 4,
            height: 2,
            ..Rect::default()
        };
        let l = Layout::new(&fmt(Fourcc::YU12, 4, 2, &[(8, 24)])).unwrap();
        let mut buf = vec![0xee; 24];
        l.fill(0, &p, &mut buf).unwrap();
        assert_eq!(
            l.read_i420(&[&buf], all).unwrap(),
            [y.clone(), u.clone(), v.clone()]
        );
        let l = Layout::new(&fmt(Fourcc::YM12, 4, 2, &[(4, 8), (2, 2), (2, 2)])).unwrap();
        let planes: Vec<&[u8]> = vec![&y, &u, &v];
        assert_eq!(
            l.read_i420(&planes, all).unwrap(),
            [y.clone(), u.clone(), v.clone()]
        );
        // A missing plane is too small, not a panic.
        assert!(l.read_i420(&planes[..2], all).is_err());
    }

    #[test]
    fn odd_sizes_round_chroma_up_and_720p_yu12_matches_the_pi_encoders_sizeimage() {
        // 1280x720 YU12 on bcm2835-codec-encode: bytesperline 1280, sizeimage 1382400.
        let l = Layout::new(&fmt(Fourcc::YU12, 1280, 720, &[(1280, 1_382_400)])).unwrap();
        assert_eq!(l.used(0), 1_382_400);
        let l = Layout::new(&fmt(Fourcc::YM12, 5, 3, &[(5, 15), (3, 6), (3, 6)])).unwrap();
        assert_eq!((l.used(1), l.used(2)), (6, 6));
    }

    #[test]
    fn formats_too_small_or_unknown_and_short_pictures_are_errors() {
        assert!(matches!(
            Layout::new(&fmt(Fourcc::YU12, 64, 64, &[(64, 1000)])),
            Err(LayoutError::TooSmall { need: 6144, .. })
        ));
        assert!(matches!(
            Layout::new(&fmt(Fourcc(*b"YUYV"), 64, 64, &[(128, 8192)])),
            Err(LayoutError::Unsupported { .. })
        ));
        assert!(matches!(
            Layout::new(&fmt(Fourcc::YM12, 64, 64, &[(64, 4096)])),
            Err(LayoutError::PlaneCount {
                want: 3,
                got: 1,
                ..
            })
        ));
        assert!(matches!(
            Layout::new(&fmt(Fourcc::NV12, 64, 64, &[(32, 0)])),
            Err(LayoutError::Stride { .. })
        ));
        let l = Layout::new(&fmt(Fourcc::YU12, 4, 2, &[(4, 12)])).unwrap();
        let (y, u, _) = pic();
        let short = Picture {
            width: 4,
            height: 2,
            y: &y,
            u: &u,
            v: &[1],
            y_stride: 4,
            uv_stride: 2,
        };
        let e = l.check(&short).unwrap_err();
        assert!(
            e.to_string().contains("V plane is 1 bytes, 2 needed"),
            "{e}"
        );
        let wrong = Picture { width: 8, ..short };
        assert!(matches!(
            l.check(&wrong),
            Err(LayoutError::PictureSize { .. })
        ));
        let mut tiny = [0u8; 4];
        assert!(l.fill(0, &short, &mut tiny).is_err());
        assert_eq!(
            choose(&[Fourcc::NV12, Fourcc(*b"YUYV")]),
            Some(Fourcc::NV12)
        );
        assert_eq!(choose(&[Fourcc(*b"RGB3")]), None);
    }
}
