//! Format negotiation: from what a capture device offers to one (format, size, rate).
//!
//! Pure: the device description comes in as plain data ([`FormatCaps`]), so the choice is
//! unit-tested with stand-in descriptions of real cameras (these machines have no
//! `/dev/video*`). The order of preference:
//!
//! 1. **H.264 from the camera** (UVC 1.5 webcams, some CSI bridges): no encoding at all.
//! 2. **Raw YUV the camera makes itself** (YUYV, NV12, YU12): one conversion to I420 at most,
//!    then the encoder.
//! 3. **MJPEG** (`MJPG`/`JPEG`), the fast mode of most UVC webcams: each frame is decoded to
//!    I420 in pinhole ([`super::mjpeg`], pure Rust), then encoded — a JPEG decode per frame of
//!    CPU. Between 2 and 3 the size decides (many webcams give YUYV only up to 640x480 at
//!    30 fps but MJPEG at 720p); at the same size the raw format wins.
//!
//! An explicitly requested size (`?size=WxH`) is a filter across all classes first: a camera
//! whose H.264 mode lacks that size but whose YUYV mode has it gets YUYV. With no exact match,
//! the best class's closest size is taken and a note says so. Raw formats need even sizes
//! (4:2:0 chroma), so odd ones are skipped.

use std::fmt;

/// A V4L2 pixel format code, e.g. `H264`, `YUYV`: the encoder crate's type, one for both.
pub use ::v4l2::Fourcc;

/// A time per frame as a fraction of a second (V4L2's `timeperframe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub num: u32,
    pub den: u32,
}

impl Interval {
    pub fn from_fps(fps: u32) -> Interval {
        Interval {
            num: 1,
            den: fps.max(1),
        }
    }

    /// Frames per second, if the fraction is valid.
    pub fn fps(self) -> Option<f64> {
        (self.num > 0 && self.den > 0).then(|| f64::from(self.den) / f64::from(self.num))
    }

    /// The frame duration in 90 kHz units, rounded (30 fps → 3000, 30000/1001 → 3003).
    pub fn ticks_90k(self) -> Option<u32> {
        if self.num == 0 || self.den == 0 {
            return None;
        }
        let t = (u64::from(self.num) * 90_000 + u64::from(self.den) / 2) / u64::from(self.den);
        u32::try_from(t).ok().filter(|&t| t > 0)
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fps() {
            Some(fps) if (fps - fps.round()).abs() < 0.005 => write!(f, "{fps:.0} fps"),
            Some(fps) => write!(f, "{fps:.2} fps"),
            None => write!(f, "{}/{} s", self.num, self.den),
        }
    }
}

/// Frame sizes a format offers (`VIDIOC_ENUM_FRAMESIZES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeRange {
    Discrete {
        width: u32,
        height: u32,
    },
    Stepwise {
        min_width: u32,
        max_width: u32,
        step_width: u32,
        min_height: u32,
        max_height: u32,
        step_height: u32,
    },
}

impl SizeRange {
    /// Whether this range includes exactly `width`×`height`.
    pub fn contains(&self, width: u32, height: u32) -> bool {
        match *self {
            SizeRange::Discrete {
                width: w,
                height: h,
            } => (w, h) == (width, height),
            SizeRange::Stepwise {
                min_width,
                max_width,
                step_width,
                min_height,
                max_height,
                step_height,
            } => {
                (min_width..=max_width).contains(&width)
                    && (min_height..=max_height).contains(&height)
                    && (width - min_width) % step_width.max(1) == 0
                    && (height - min_height) % step_height.max(1) == 0
            }
        }
    }

    /// The size in this range nearest to `want` (by area, then by the larger).
    fn nearest(&self, want: (u32, u32)) -> (u32, u32) {
        match *self {
            SizeRange::Discrete { width, height } => (width, height),
            SizeRange::Stepwise {
                min_width,
                max_width,
                step_width,
                min_height,
                max_height,
                step_height,
            } => {
                let snap = |v: u32, min: u32, max: u32, step: u32| {
                    let v = v.clamp(min, max);
                    let step = step.max(1);
                    min + (v - min) / step * step
                };
                (
                    snap(want.0, min_width, max_width, step_width),
                    snap(want.1, min_height, max_height, step_height),
                )
            }
        }
    }
}

impl fmt::Display for SizeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeRange::Discrete { width, height } => write!(f, "{width}x{height}"),
            SizeRange::Stepwise {
                min_width,
                max_width,
                step_width,
                min_height,
                max_height,
                step_height,
            } => write!(
                f,
                "{min_width}x{min_height} to {max_width}x{max_height} (step {step_width}x{step_height})"
            ),
        }
    }
}

/// Frame intervals offered at one size (`VIDIOC_ENUM_FRAMEINTERVALS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntervalRange {
    Discrete(Interval),
    /// Any interval from `min` (fastest) to `max` (slowest).
    Stepwise {
        min: Interval,
        max: Interval,
    },
}

/// One size with the intervals offered at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeCaps {
    pub size: SizeRange,
    pub intervals: Vec<IntervalRange>,
}

/// One pixel format of a capture queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatCaps {
    pub fourcc: Fourcc,
    pub description: String,
    pub sizes: Vec<SizeCaps>,
}

/// Raw formats the converter in [`super::yuv`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFormat {
    /// Packed 4:2:2, Y0 U Y1 V.
    Yuyv,
    /// Y plane, then interleaved UV at half resolution.
    Nv12,
    /// Planar I420: Y, U, V.
    Yu12,
}

impl RawFormat {
    pub fn from_fourcc(f: Fourcc) -> Option<RawFormat> {
        match &f.0 {
            b"YUYV" => Some(RawFormat::Yuyv),
            b"NV12" => Some(RawFormat::Nv12),
            b"YU12" => Some(RawFormat::Yu12),
            _ => None,
        }
    }

    pub fn fourcc(self) -> Fourcc {
        match self {
            RawFormat::Yuyv => Fourcc::YUYV,
            RawFormat::Nv12 => Fourcc::NV12,
            RawFormat::Yu12 => Fourcc::YU12,
        }
    }
}

/// What the camera delivers once the plan is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// H.264 Annex-B, one access unit per buffer.
    H264,
    /// Raw frames to convert to I420 and encode.
    Raw { format: RawFormat },
    /// JPEG pictures to decode to I420 ([`super::mjpeg`]) and encode.
    Mjpeg,
}

/// The chosen capture mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub fourcc: Fourcc,
    pub delivery: Delivery,
    pub width: u32,
    pub height: u32,
    /// `None` when the device lists no intervals: the driver's default rate is used.
    pub interval: Option<Interval>,
    /// Compromises made (no exact size, no exact rate), for the log.
    pub notes: Vec<String>,
}

/// What the user asked for; `None` means "pinhole's default".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Want {
    pub size: Option<(u32, u32)>,
    pub fps: Option<u32>,
}

/// Size aimed for without `?size=`: 720p, the sweet spot for a Pi-class encoder and a LAN.
pub const DEFAULT_SIZE: (u32, u32) = (1280, 720);
/// Rate aimed for without `?fps=`.
pub const DEFAULT_FPS: u32 = 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiateError {
    #[error("the device lists no capture formats")]
    NoFormats,
    #[error(
        "none of the device's formats can be used ({offered}); usable: H264, YUYV, NV12, YU12, MJPG"
    )]
    NoUsableFormat { offered: String },
}

/// Preference class: lower is better.
fn class_of(f: &FormatCaps) -> Option<(u8, Delivery)> {
    if f.fourcc == Fourcc::H264 {
        return Some((0, Delivery::H264));
    }
    // Raw and MJPEG compete on size; at the same size raw wins (see the module docs).
    if f.fourcc == Fourcc::MJPG || f.fourcc == Fourcc::JPEG {
        return Some((1, Delivery::Mjpeg));
    }
    let raw = RawFormat::from_fourcc(f.fourcc)?;
    Some((1, Delivery::Raw { format: raw }))
}

/// Costs a JPEG decode per frame.
fn is_decoded(d: Delivery) -> bool {
    d == Delivery::Mjpeg
}

/// Whether a size suits the delivery (raw needs even dimensions for 4:2:0).
fn size_ok(delivery: Delivery, (w, h): (u32, u32)) -> bool {
    w >= 16
        && h >= 16
        && match delivery {
            Delivery::H264 => true,
            Delivery::Raw { .. } | Delivery::Mjpeg => w % 2 == 0 && h % 2 == 0,
        }
}

fn area_distance(a: (u32, u32), b: (u32, u32)) -> u64 {
    (u64::from(a.0) * u64::from(a.1)).abs_diff(u64::from(b.0) * u64::from(b.1))
}

/// Picks the capture mode. See the module docs for the rules.
pub fn negotiate(formats: &[FormatCaps], want: Want) -> Result<Plan, NegotiateError> {
    if formats.is_empty() {
        return Err(NegotiateError::NoFormats);
    }
    // Candidates: (class, delivery, format index, size caps index, size).
    let mut candidates = Vec::new();
    for (fi, f) in formats.iter().enumerate() {
        let Some((class, delivery)) = class_of(f) else {
            continue;
        };
        let target = want.size.unwrap_or(DEFAULT_SIZE);
        for (si, s) in f.sizes.iter().enumerate() {
            let size = if want.size.is_some() && s.size.contains(target.0, target.1) {
                target
            } else {
                s.size.nearest(target)
            };
            if size_ok(delivery, size) {
                candidates.push((class, delivery, fi, si, size));
            }
        }
    }
    if candidates.is_empty() {
        let offered = formats
            .iter()
            .map(|f| f.fourcc.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(NegotiateError::NoUsableFormat { offered });
    }
    let mut notes = Vec::new();
    let target = want.size.unwrap_or(DEFAULT_SIZE);
    // An explicit size is a filter across classes first.
    let exact: Vec<_> = candidates
        .iter()
        .copied()
        .filter(|c| want.size.is_some() && c.4 == target)
        .collect();
    let pool = if exact.is_empty() {
        if let Some((w, h)) = want.size {
            notes.push(format!(
                "the device offers no {w}x{h}; taking the nearest size"
            ));
        }
        candidates
    } else {
        exact
    };
    let best_class = pool.iter().map(|c| c.0).min().unwrap_or(0);
    let chosen = pool
        .iter()
        .filter(|c| c.0 == best_class)
        // Nearest area; on a tie the larger picture; then the device's own order.
        .min_by(|a, b| {
            area_distance(a.4, target)
                .cmp(&area_distance(b.4, target))
                .then_with(|| {
                    (u64::from(b.4 .0) * u64::from(b.4 .1))
                        .cmp(&(u64::from(a.4 .0) * u64::from(a.4 .1)))
                })
                .then_with(|| is_decoded(a.1).cmp(&is_decoded(b.1)))
                .then_with(|| (a.2, a.3).cmp(&(b.2, b.3)))
        })
        .copied();
    let Some((_, delivery, fi, si, (width, height))) = chosen else {
        return Err(NegotiateError::NoFormats);
    };
    let format = &formats[fi];
    let intervals = &format.sizes[si].intervals;
    let fps = want.fps.unwrap_or(DEFAULT_FPS);
    let interval = choose_interval(intervals, fps);
    if let (Some(i), Some(_)) = (interval, want.fps) {
        if i.fps()
            .is_some_and(|got| (got - f64::from(fps)).abs() > 0.05)
        {
            notes.push(format!(
                "the device offers no {fps} fps at {width}x{height}; taking {i}"
            ));
        }
    }
    if delivery == Delivery::Mjpeg {
        notes.push(format!(
            "{} frames are decoded by pinhole (the device offers no H.264 or raw YUV at this size): expect a JPEG decode per frame of CPU",
            format.fourcc
        ));
    }
    Ok(Plan {
        fourcc: format.fourcc,
        delivery,
        width,
        height,
        interval,
        notes,
    })
}

/// The interval nearest to `fps` frames per second (on a tie, the faster).
fn choose_interval(intervals: &[IntervalRange], fps: u32) -> Option<Interval> {
    let want = f64::from(fps.max(1));
    let mut best: Option<(f64, f64, Interval)> = None;
    for r in intervals {
        let candidate = match *r {
            IntervalRange::Discrete(i) => i,
            IntervalRange::Stepwise { min, max } => {
                // min is the shortest interval (fastest rate).
                let (fast, slow) = (min.fps().unwrap_or(want), max.fps().unwrap_or(want));
                if want > fast {
                    min
                } else if want < slow {
                    max
                } else {
                    Interval::from_fps(fps)
                }
            }
        };
        let Some(got) = candidate.fps() else { continue };
        let d = (got - want).abs();
        let better = match best {
            None => true,
            Some((bd, bfps, _)) => d < bd - 1e-9 || ((d - bd).abs() <= 1e-9 && got > bfps),
        };
        if better {
            best = Some((d, got, candidate));
        }
    }
    best.map(|b| b.2)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Stand-in devices: these machines have no `/dev/video*` and cannot load vivid or
    //! v4l2loopback, so each test describes a real camera's `v4l2-ctl --list-formats-ext` as
    //! plain data and checks the choice.
    use super::*;

    fn discrete(w: u32, h: u32, fps: &[u32]) -> SizeCaps {
        SizeCaps {
            size: SizeRange::Discrete {
                width: w,
                height: h,
            },
            intervals: fps
                .iter()
                .map(|&f| IntervalRange::Discrete(Interval::from_fps(f)))
                .collect(),
        }
    }

    fn format(fourcc: Fourcc, sizes: Vec<SizeCaps>) -> FormatCaps {
        FormatCaps {
            fourcc,
            description: fourcc.to_string(),
            sizes,
        }
    }

    /// Stand-in for a Logitech C920-style UVC webcam: YUYV (slow at large sizes), MJPEG, and
    /// H.264 from its own encoder.
    fn c920_like() -> Vec<FormatCaps> {
        vec![
            format(
                Fourcc::YUYV,
                vec![
                    discrete(640, 480, &[30, 15]),
                    discrete(1280, 720, &[10, 5]),
                    discrete(1920, 1080, &[5]),
                ],
            ),
            format(
                Fourcc::MJPG,
                vec![discrete(1280, 720, &[30]), discrete(1920, 1080, &[30])],
            ),
            format(
                Fourcc::H264,
                vec![
                    discrete(640, 480, &[30]),
                    discrete(1280, 720, &[30, 24, 15]),
                    discrete(1920, 1080, &[30]),
                ],
            ),
        ]
    }

    #[test]
    fn a_webcam_that_encodes_h264_itself_is_taken_as_h264_at_720p30() {
        // Stand-in device (no /dev/video* here): a C920-like UVC camera.
        let plan = negotiate(&c920_like(), Want::default()).unwrap();
        assert_eq!(plan.delivery, Delivery::H264);
        assert_eq!((plan.width, plan.height), (1280, 720));
        assert_eq!(plan.interval, Some(Interval::from_fps(30)));
        assert!(plan.notes.is_empty(), "{:?}", plan.notes);
    }

    #[test]
    fn an_explicit_size_picks_the_h264_mode_that_has_it() {
        // Stand-in device: the C920-like description again.
        let plan = negotiate(
            &c920_like(),
            Want {
                size: Some((1920, 1080)),
                fps: Some(30),
            },
        )
        .unwrap();
        assert_eq!(
            (plan.fourcc, plan.width, plan.height),
            (Fourcc::H264, 1920, 1080)
        );
    }

    #[test]
    fn an_explicit_size_only_a_raw_mode_has_beats_the_h264_class() {
        // Stand-in device: H.264 only up to 720p, YUYV up to 1080p.
        let formats = vec![
            format(Fourcc::H264, vec![discrete(1280, 720, &[30])]),
            format(Fourcc::YUYV, vec![discrete(1920, 1080, &[5])]),
        ];
        let plan = negotiate(
            &formats,
            Want {
                size: Some((1920, 1080)),
                fps: None,
            },
        )
        .unwrap();
        assert_eq!(plan.fourcc, Fourcc::YUYV);
        assert_eq!(plan.interval, Some(Interval::from_fps(5)));
    }

    #[test]
    fn a_size_nobody_offers_takes_the_nearest_in_the_best_class_and_says_so() {
        // Stand-in device: the C920-like description.
        let plan = negotiate(
            &c920_like(),
            Want {
                size: Some((1024, 768)),
                fps: None,
            },
        )
        .unwrap();
        assert_eq!(
            (plan.fourcc, plan.width, plan.height),
            (Fourcc::H264, 1280, 720)
        );
        assert!(plan.notes[0].contains("no 1024x768"), "{:?}", plan.notes);
    }

    #[test]
    fn raw_beats_mjpeg_at_the_same_size_and_unusable_formats_are_ignored() {
        // Stand-in for a cheap UVC camera: YUYV and MJPEG at 720p, and RGB nobody uses.
        let formats = vec![
            format(Fourcc::MJPG, vec![discrete(1280, 720, &[30])]),
            format(Fourcc::YUYV, vec![discrete(1280, 720, &[30])]),
            format(Fourcc(*b"RGB3"), vec![discrete(1280, 720, &[30])]),
        ];
        let plan = negotiate(&formats, Want::default()).unwrap();
        assert_eq!(
            plan.delivery,
            Delivery::Raw {
                format: RawFormat::Yuyv
            }
        );
        assert!(plan.notes.is_empty(), "{:?}", plan.notes);
    }

    #[test]
    fn mjpeg_at_720p_beats_native_yuyv_at_vga_only() {
        // Stand-in for a typical cheap webcam: YUYV up to 640x480, MJPEG at 720p and VGA.
        let formats = vec![
            format(
                Fourcc::MJPG,
                vec![discrete(1280, 720, &[30]), discrete(640, 480, &[30])],
            ),
            format(Fourcc::YUYV, vec![discrete(640, 480, &[30])]),
        ];
        let plan = negotiate(&formats, Want::default()).unwrap();
        assert_eq!((plan.fourcc, plan.width), (Fourcc::MJPG, 1280));
        assert_eq!(plan.delivery, Delivery::Mjpeg);
        // Asked for VGA, the raw YUYV wins the tie.
        let plan = negotiate(
            &formats,
            Want {
                size: Some((640, 480)),
                fps: None,
            },
        )
        .unwrap();
        assert_eq!(plan.fourcc, Fourcc::YUYV);
    }

    #[test]
    fn an_mjpeg_only_camera_is_decoded_by_pinhole_and_says_it_costs_cpu() {
        // Stand-in for an MJPEG-only USB camera (no libv4lconvert any more: pinhole decodes).
        let formats = vec![format(
            Fourcc::MJPG,
            vec![discrete(1920, 1080, &[30]), discrete(1280, 720, &[30])],
        )];
        let plan = negotiate(&formats, Want::default()).unwrap();
        assert_eq!(plan.delivery, Delivery::Mjpeg);
        assert_eq!((plan.width, plan.height), (1280, 720));
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("JPEG decode per frame")),
            "{:?}",
            plan.notes
        );
        // The older JPEG code is the same thing.
        let formats = vec![format(Fourcc::JPEG, vec![discrete(640, 480, &[30])])];
        assert_eq!(
            negotiate(&formats, Want::default()).unwrap().delivery,
            Delivery::Mjpeg
        );
    }

    #[test]
    fn unusable_formats_are_listed_in_the_error() {
        // Stand-in for a raw Bayer sensor (a CSI camera without an ISP in the path).
        let formats = vec![format(Fourcc(*b"pRAA"), vec![discrete(1640, 1232, &[30])])];
        let msg = negotiate(&formats, Want::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("pRAA") && msg.contains("usable"), "{msg}");
        assert_eq!(
            negotiate(&[], Want::default()).unwrap_err(),
            NegotiateError::NoFormats
        );
    }

    #[test]
    fn stepwise_sizes_snap_to_the_step_and_stepwise_rates_take_the_wanted_fps() {
        // Stand-in for a stepwise CSI bridge / M2M-style description.
        let formats = vec![FormatCaps {
            fourcc: Fourcc::NV12,
            description: "NV12".into(),
            sizes: vec![SizeCaps {
                size: SizeRange::Stepwise {
                    min_width: 32,
                    max_width: 1920,
                    step_width: 32,
                    min_height: 32,
                    max_height: 1080,
                    step_height: 2,
                },
                intervals: vec![IntervalRange::Stepwise {
                    min: Interval::from_fps(60),
                    max: Interval::from_fps(1),
                }],
            }],
        }];
        let plan = negotiate(
            &formats,
            Want {
                size: Some((1000, 700)),
                fps: Some(25),
            },
        )
        .unwrap();
        assert_eq!((plan.width, plan.height), (992, 700));
        assert_eq!(plan.interval, Some(Interval::from_fps(25)));
    }

    #[test]
    fn odd_raw_sizes_are_skipped_but_odd_h264_sizes_are_fine() {
        // Stand-in: a device offering only an odd-sized YUYV mode.
        let formats = vec![format(Fourcc::YUYV, vec![discrete(641, 481, &[30])])];
        assert!(negotiate(&formats, Want::default()).is_err());
        let formats = vec![format(Fourcc::H264, vec![discrete(641, 481, &[30])])];
        assert!(negotiate(&formats, Want::default()).is_ok());
    }

    #[test]
    fn the_nearest_rate_is_taken_and_a_missed_explicit_rate_is_noted() {
        // Stand-in: the C920-like YUYV mode at 720p offers only 10 and 5 fps.
        let formats = vec![format(Fourcc::YUYV, vec![discrete(1280, 720, &[10, 5])])];
        let plan = negotiate(
            &formats,
            Want {
                size: None,
                fps: Some(30),
            },
        )
        .unwrap();
        assert_eq!(plan.interval, Some(Interval::from_fps(10)));
        assert!(
            plan.notes.iter().any(|n| n.contains("no 30 fps")),
            "{:?}",
            plan.notes
        );
        // No intervals listed: the driver's default.
        let formats = vec![format(Fourcc::YUYV, vec![discrete(1280, 720, &[])])];
        assert_eq!(negotiate(&formats, Want::default()).unwrap().interval, None);
    }

    #[test]
    fn intervals_convert_to_90khz_ticks() {
        assert_eq!(Interval::from_fps(30).ticks_90k(), Some(3000));
        assert_eq!(
            Interval {
                num: 1001,
                den: 30000
            }
            .ticks_90k(),
            Some(3003)
        );
        assert_eq!(Interval { num: 0, den: 30 }.ticks_90k(), None);
        assert_eq!(
            Interval {
                num: 1001,
                den: 30000
            }
            .to_string(),
            "29.97 fps"
        );
        assert_eq!(Fourcc::from_u32(Fourcc::H264.to_u32()), Fourcc::H264);
        assert_eq!(Fourcc([b'Y', b'U', 0, 1]).to_string(), "YU??");
    }
}
