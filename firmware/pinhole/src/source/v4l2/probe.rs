//! `pinhole probe`: what video devices and encoders this machine has, and what pinhole would
//! do with each camera.
//!
//! [`gather`] reads the devices; [`render`] is a pure function from that description to the
//! text, tested with stand-in descriptions (no `/dev/video*` exists on these machines).

use std::fmt::Write as _;
use std::path::PathBuf;

use ::v4l2::Backend;

use super::device;
use super::encoder::{self, CodecDevice, EncoderChoice};
use super::negotiate::{self, FormatCaps, Fourcc, IntervalRange, Want};

/// One `/dev/video*` node.
#[derive(Debug, Clone)]
pub struct Node {
    pub path: PathBuf,
    pub info: Result<NodeInfo, String>,
}

#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub driver: String,
    pub card: String,
    pub bus: String,
    pub caps: u32,
    pub capture: Vec<FormatCaps>,
    pub output: Vec<Fourcc>,
}

impl NodeInfo {
    fn codec_device(&self, path: &std::path::Path) -> CodecDevice {
        CodecDevice {
            path: path.to_path_buf(),
            driver: self.driver.clone(),
            card: self.card.clone(),
            caps: self.caps,
            capture_formats: self.capture.iter().map(|f| f.fourcc).collect(),
            output_formats: self.output.clone(),
        }
    }

    fn is_camera(&self) -> bool {
        self.caps & CAP_VIDEO_CAPTURE != 0 && self.caps & encoder::CAP_VIDEO_M2M == 0
    }
}

const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;

/// Capability bits worth showing, with their names.
const CAP_NAMES: &[(u32, &str)] = &[
    (0x0000_0001, "video-capture"),
    (0x0000_0002, "video-output"),
    (0x0000_1000, "video-capture-mplane"),
    (0x0000_2000, "video-output-mplane"),
    (0x0000_4000, "m2m-mplane"),
    (0x0000_8000, "m2m"),
    (0x0080_0000, "metadata-capture"),
    (0x0100_0000, "read-write"),
    (0x0400_0000, "streaming"),
];

fn cap_names(caps: u32) -> String {
    let names: Vec<&str> = CAP_NAMES
        .iter()
        .filter(|(bit, _)| caps & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        format!("{caps:#010x}")
    } else {
        names.join(", ")
    }
}

/// Reads every `/dev/video*` node.
pub fn gather() -> Vec<Node> {
    device::video_nodes()
        .into_iter()
        .map(|path| {
            let info = device::open(&path).map(|mut dev| describe(&mut dev));
            Node { path, info }
        })
        .collect()
}

/// What one opened node says about itself (a real node, or a stand-in in the tests).
pub fn describe<B: Backend>(dev: &mut B) -> NodeInfo {
    let caps = dev.caps().clone();
    NodeInfo {
        capture: device::capture_formats(dev).unwrap_or_default(),
        output: device::output_formats(dev),
        driver: caps.driver,
        card: caps.card,
        bus: caps.bus,
        caps: caps.caps,
    }
}

fn rates(intervals: &[IntervalRange]) -> String {
    if intervals.is_empty() {
        return "rate not listed".into();
    }
    intervals
        .iter()
        .map(|i| match i {
            IntervalRange::Discrete(i) => i.to_string(),
            IntervalRange::Stepwise { min, max } => format!("{max} to {min}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report `pinhole probe` prints.
pub fn render(nodes: &[Node]) -> String {
    let mut out = String::new();
    if nodes.is_empty() {
        out.push_str(
            "No video devices: /dev/video* does not exist on this machine.\n\
             Plug in a USB camera, or enable the camera interface (a Pi camera is read with\n\
             libcamera: use exec:rpicam-vid … or gst:libcamerasrc …; see --help).\n",
        );
    }
    for node in nodes {
        let _ = write!(out, "{}", node.path.display());
        let info = match &node.info {
            Ok(i) => i,
            Err(e) => {
                let _ = writeln!(out, ": cannot be read: {e}");
                continue;
            }
        };
        let _ = writeln!(
            out,
            ": {} (driver {}, {})",
            info.card, info.driver, info.bus
        );
        let _ = writeln!(out, "  capabilities: {}", cap_names(info.caps));
        if info.caps & (encoder::CAP_VIDEO_M2M | encoder::CAP_VIDEO_M2M_MPLANE) != 0 {
            let list = |v: &[Fourcc]| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.iter()
                        .map(Fourcc::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            let capture: Vec<Fourcc> = info.capture.iter().map(|f| f.fourcc).collect();
            let _ = writeln!(
                out,
                "  memory-to-memory: takes {} (OUTPUT queue), gives {} (CAPTURE queue)",
                list(&info.output),
                list(&capture)
            );
            continue;
        }
        if info.capture.is_empty() {
            let _ = writeln!(out, "  no capture formats (metadata or control node)");
            continue;
        }
        for f in &info.capture {
            let _ = writeln!(out, "  {} ({})", f.fourcc, f.description);
            for s in &f.sizes {
                let _ = writeln!(out, "    {}: {}", s.size, rates(&s.intervals));
            }
        }
        if info.is_camera() {
            match negotiate::negotiate(&info.capture, Want::default()) {
                Ok(plan) => {
                    let how = match plan.delivery {
                        negotiate::Delivery::H264 => "H.264 from the camera, no encoding",
                        negotiate::Delivery::Raw { .. } => "raw, encoded by the encoder below",
                        negotiate::Delivery::Mjpeg => {
                            "JPEG decoded by pinhole, encoded by the encoder below"
                        }
                    };
                    let rate = plan
                        .interval
                        .map_or_else(|| "the driver's rate".to_string(), |i| i.to_string());
                    let _ = writeln!(
                        out,
                        "  pinhole would use: {} {}x{} at {rate} ({how}) with --source v4l2:{}",
                        plan.fourcc,
                        plan.width,
                        plan.height,
                        node.path.display()
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "  pinhole cannot use it: {e}");
                }
            }
        }
    }
    let codecs: Vec<CodecDevice> = nodes
        .iter()
        .filter_map(|n| n.info.as_ref().ok().map(|i| i.codec_device(&n.path)))
        .filter(CodecDevice::is_m2m)
        .collect();
    out.push_str("\nH.264 encoders for raw cameras, in the order pinhole tries them:\n");
    for (i, e) in encoder::ranked_encoders(&codecs).iter().enumerate() {
        // The first is what encoder=auto uses (falling back to software if it cannot be set up).
        let used = if i == 0 {
            " [used with encoder=auto]"
        } else {
            ""
        };
        let _ = match e {
            EncoderChoice::M2m { path, card, reason } => writeln!(
                out,
                "  {}. {} ({card}): {reason}{used}",
                i + 1,
                path.display()
            ),
            EncoderChoice::Software { reason } => {
                writeln!(out, "  {}. software: {reason}{used}", i + 1)
            }
        };
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Stand-in machines: no `/dev/video*` exists here, so the report is rendered from
    //! descriptions of a Pi 4 with a webcam and of a machine without devices.
    use super::*;
    use crate::source::v4l2::negotiate::{Interval, SizeCaps, SizeRange};

    fn fmt(fourcc: Fourcc, w: u32, h: u32, fps: u32) -> FormatCaps {
        FormatCaps {
            fourcc,
            description: fourcc.to_string(),
            sizes: vec![SizeCaps {
                size: SizeRange::Discrete {
                    width: w,
                    height: h,
                },
                intervals: vec![IntervalRange::Discrete(Interval::from_fps(fps))],
            }],
        }
    }

    #[test]
    fn a_machine_without_devices_says_so_and_still_lists_the_software_encoder() {
        let text = render(&[]);
        assert!(text.starts_with("No video devices"), "{text}");
        assert!(
            text.contains("1. software: OpenH264, in-process [used with encoder=auto]"),
            "{text}"
        );
    }

    #[test]
    fn a_pi_4_with_a_webcam_lists_formats_the_plan_and_the_videocore_encoder_first() {
        // Stand-in for a Pi 4: an MJPEG/YUYV webcam at video0, a metadata node, an unreadable
        // node and the bcm2835-codec encoder at video11.
        let nodes = vec![
            Node {
                path: "/dev/video0".into(),
                info: Ok(NodeInfo {
                    driver: "uvcvideo".into(),
                    card: "USB Camera".into(),
                    bus: "usb-0000:01:00.0-1.3".into(),
                    caps: 0x0420_0001,
                    capture: vec![
                        fmt(Fourcc::MJPG, 1280, 720, 30),
                        fmt(Fourcc::YUYV, 640, 480, 30),
                    ],
                    output: vec![],
                }),
            },
            Node {
                path: "/dev/video1".into(),
                info: Ok(NodeInfo {
                    driver: "uvcvideo".into(),
                    card: "USB Camera".into(),
                    bus: "usb-0000:01:00.0-1.3".into(),
                    caps: 0x0480_0000,
                    capture: vec![],
                    output: vec![],
                }),
            },
            Node {
                path: "/dev/video2".into(),
                info: Err("cannot open /dev/video2: Device or resource busy".into()),
            },
            Node {
                path: "/dev/video11".into(),
                info: Ok(NodeInfo {
                    driver: "bcm2835-codec".into(),
                    card: "bcm2835-codec-encode".into(),
                    bus: "platform:bcm2835-codec".into(),
                    caps: 0x0420_4000,
                    capture: vec![fmt(Fourcc::H264, 1920, 1080, 30)],
                    output: vec![Fourcc::YU12, Fourcc::NV12],
                }),
            },
        ];
        let text = render(&nodes);
        assert!(
            text.contains("/dev/video0: USB Camera (driver uvcvideo"),
            "{text}"
        );
        assert!(
            text.contains("capabilities: video-capture, streaming"),
            "{text}"
        );
        assert!(text.contains("MJPG (MJPG)"), "{text}");
        assert!(text.contains("1280x720: 30 fps"), "{text}");
        assert!(
            text.contains("pinhole would use: MJPG 1280x720 at 30 fps (JPEG decoded by pinhole, encoded by the encoder below) with --source v4l2:/dev/video0"),
            "{text}"
        );
        assert!(
            text.contains("/dev/video1: USB Camera") && text.contains("no capture formats"),
            "{text}"
        );
        assert!(
            text.contains("/dev/video2: cannot be read: cannot open /dev/video2"),
            "{text}"
        );
        assert!(
            text.contains("takes YU12, NV12 (OUTPUT queue), gives H264"),
            "{text}"
        );
        assert!(
            text.contains("1. /dev/video11 (bcm2835-codec-encode): the Pi 4's VideoCore encoder (as rpicam-apps detects it) [used with encoder=auto]"),
            "{text}"
        );
        assert!(
            text.contains("2. software: OpenH264, in-process\n"),
            "{text}"
        );
    }

    #[test]
    fn a_node_is_described_through_the_v4l2_crate() {
        // The v4l2 crate's stand-in camera answers ENUM_FMT, ENUM_FRAMESIZES and
        // ENUM_FRAMEINTERVALS as a UVC webcam would (no /dev/video* here).
        use ::v4l2::standin::camera::{CamFormat, Camera, Shot};
        let mut cam = Camera::uvc(
            vec![
                CamFormat::discrete(Fourcc::MJPG, &[(1280, 720), (640, 480)], &[30, 15]),
                CamFormat::discrete(Fourcc::YUYV, &[(640, 480)], &[30]),
            ],
            Box::new(|_| Shot::Nothing),
        );
        let info = describe(&mut cam);
        assert_eq!(info.card, "Stand-in UVC Camera");
        assert_eq!(info.capture.len(), 2);
        assert_eq!(info.capture[0].description, "Motion-JPEG");
        assert_eq!(info.capture[0].sizes.len(), 2);
        assert_eq!(
            info.capture[0].sizes[0].intervals,
            vec![
                IntervalRange::Discrete(Interval::from_fps(30)),
                IntervalRange::Discrete(Interval::from_fps(15))
            ]
        );
        assert!(info.output.is_empty(), "a camera has no OUTPUT queue");
        let text = render(&[Node {
            path: "/dev/video0".into(),
            info: Ok(info),
        }]);
        assert!(
            text.contains("YUYV (YUYV 4:2:2)\n    640x480: 30 fps"),
            "{text}"
        );
        assert!(
            text.contains("pinhole would use: MJPG 1280x720 at 30 fps (JPEG decoded by pinhole"),
            "{text}"
        );
    }
}
