//! Which encoder turns raw camera frames into H.264, and the controls it gets for streaming.
//!
//! Pure: devices come in as plain descriptions ([`CodecDevice`]), so the choice is tested with
//! stand-ins. The order follows rpicam-apps: the Pi 4's VideoCore encoder first — the node
//! `/dev/video11` whose `VIDIOC_QUERYCAP` card is `bcm2835-codec-encode` — then any other
//! memory-to-memory device that takes raw frames on its OUTPUT queue and gives H.264 on its
//! CAPTURE queue, and otherwise OpenH264 in-process (Pi 5, Jetson Orin Nano: no hardware H.264
//! encoder; see [`super::software`]).

use std::fmt;
use std::path::{Path, PathBuf};

use super::negotiate::Fourcc;

/// The node and card rpicam-apps checks for the Pi 4's encoder.
pub const BCM2835_ENCODER_PATH: &str = "/dev/video11";
pub const BCM2835_ENCODER_CARD: &str = "bcm2835-codec-encode";

/// `V4L2_CAP_VIDEO_M2M_MPLANE` and `V4L2_CAP_VIDEO_M2M`.
pub const CAP_VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
pub const CAP_VIDEO_M2M: u32 = 0x0000_8000;

/// A V4L2 node as far as encoder selection cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecDevice {
    pub path: PathBuf,
    pub driver: String,
    pub card: String,
    /// `device_caps` (or `capabilities`) from `VIDIOC_QUERYCAP`.
    pub caps: u32,
    /// Formats of the CAPTURE queue (what an encoder produces).
    pub capture_formats: Vec<Fourcc>,
    /// Formats of the OUTPUT queue (what an encoder takes).
    pub output_formats: Vec<Fourcc>,
}

impl CodecDevice {
    pub fn is_m2m(&self) -> bool {
        self.caps & (CAP_VIDEO_M2M | CAP_VIDEO_M2M_MPLANE) != 0
    }

    /// A memory-to-memory H.264 encoder: H.264 out of CAPTURE, something raw into OUTPUT.
    pub fn is_h264_encoder(&self) -> bool {
        self.is_m2m()
            && self.capture_formats.contains(&Fourcc::H264)
            && !self.output_formats.is_empty()
            && !self.output_formats.contains(&Fourcc::H264)
    }

    fn is_bcm2835_encoder(&self) -> bool {
        self.path == Path::new(BCM2835_ENCODER_PATH) && self.card == BCM2835_ENCODER_CARD
    }
}

/// What the user asked for with `?encoder=`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EncoderPref {
    /// rpicam-apps' order (see the module docs).
    #[default]
    Auto,
    /// OpenH264 in-process, even when a hardware encoder exists.
    Software,
    /// This M2M node.
    Device(PathBuf),
}

impl EncoderPref {
    pub fn parse(value: &str) -> Result<EncoderPref, String> {
        match value {
            "auto" => Ok(EncoderPref::Auto),
            "software" | "openh264" => Ok(EncoderPref::Software),
            v if v.starts_with("/dev/") => Ok(EncoderPref::Device(PathBuf::from(v))),
            v => Err(format!(
                "encoder={v:?}: allowed auto, software, or an M2M encoder node such as /dev/video11"
            )),
        }
    }
}

impl fmt::Display for EncoderPref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncoderPref::Auto => f.write_str("auto"),
            EncoderPref::Software => f.write_str("software"),
            EncoderPref::Device(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The encoder chosen for raw frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncoderChoice {
    /// A V4L2 memory-to-memory encoder.
    M2m {
        path: PathBuf,
        card: String,
        /// Why this one (for the log and `pinhole probe`).
        reason: &'static str,
    },
    /// OpenH264 in-process.
    Software { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("encoder={path}: no such M2M H.264 encoder (found: {found}); run `pinhole probe` to list them")]
    NotAnEncoder { path: String, found: String },
}

/// The encoders found, best first, as `pinhole probe` lists them.
pub fn ranked_encoders(devices: &[CodecDevice]) -> Vec<EncoderChoice> {
    let mut out = Vec::new();
    if let Some(d) = devices.iter().find(|d| d.is_bcm2835_encoder()) {
        out.push(EncoderChoice::M2m {
            path: d.path.clone(),
            card: d.card.clone(),
            reason: "the Pi 4's VideoCore encoder (as rpicam-apps detects it)",
        });
    }
    for d in devices {
        if d.is_h264_encoder() && !d.is_bcm2835_encoder() {
            out.push(EncoderChoice::M2m {
                path: d.path.clone(),
                card: d.card.clone(),
                reason: "a memory-to-memory device with H.264 on its CAPTURE queue",
            });
        }
    }
    out.push(EncoderChoice::Software {
        reason: "OpenH264, in-process".into(),
    });
    out
}

/// Chooses the encoder for raw frames. See the module docs for the order.
pub fn select_encoder(
    pref: &EncoderPref,
    devices: &[CodecDevice],
) -> Result<EncoderChoice, SelectError> {
    match pref {
        EncoderPref::Software => Ok(EncoderChoice::Software {
            reason: "encoder=software".into(),
        }),
        EncoderPref::Auto => {
            Ok(ranked_encoders(devices)
                .into_iter()
                .next()
                .unwrap_or(EncoderChoice::Software {
                    reason: "no hardware encoder found".into(),
                }))
        }
        EncoderPref::Device(path) => {
            let found = devices.iter().find(|d| &d.path == path);
            match found {
                Some(d) if d.is_h264_encoder() || d.is_bcm2835_encoder() => {
                    Ok(EncoderChoice::M2m {
                        path: d.path.clone(),
                        card: d.card.clone(),
                        reason: "asked for with encoder=",
                    })
                }
                _ => {
                    let list: Vec<String> = ranked_encoders(devices)
                        .iter()
                        .filter_map(|c| match c {
                            EncoderChoice::M2m { path, .. } => Some(path.display().to_string()),
                            EncoderChoice::Software { .. } => None,
                        })
                        .collect();
                    Err(SelectError::NotAnEncoder {
                        path: path.display().to_string(),
                        found: if list.is_empty() {
                            "none".into()
                        } else {
                            list.join(", ")
                        },
                    })
                }
            }
        }
    }
}

/// Stateful codec control ids (`linux/v4l2-controls.h`, `V4L2_CID_CODEC_BASE` = 0x00990900).
pub(crate) mod cid {
    const BASE: u32 = 0x0099_0900;
    pub const B_FRAMES: u32 = BASE + 202;
    pub const GOP_SIZE: u32 = BASE + 203;
    pub const BITRATE_MODE: u32 = BASE + 206;
    pub const BITRATE: u32 = BASE + 207;
    pub const REPEAT_SEQ_HEADER: u32 = BASE + 226;
    pub const FORCE_KEY_FRAME: u32 = BASE + 229;
    pub const H264_I_PERIOD: u32 = BASE + 358;
    pub const H264_LEVEL: u32 = BASE + 359;
    pub const H264_PROFILE: u32 = BASE + 363;
    /// `V4L2_MPEG_VIDEO_BITRATE_MODE_CBR`.
    pub const BITRATE_MODE_CBR: i64 = 1;
    /// `V4L2_MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE`.
    pub const PROFILE_CONSTRAINED_BASELINE: i64 = 1;
    /// `V4L2_MPEG_VIDEO_H264_LEVEL_4_0`: 1080p30.
    pub const LEVEL_4_0: i64 = 11;
}

/// The streaming parameters an encoder is set up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeParams {
    pub bitrate_bps: u32,
    /// Frames from one IDR to the next.
    pub gop_frames: u32,
}

/// One control to set, with a name for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlSetting {
    pub id: u32,
    pub name: &'static str,
    pub value: i64,
    /// Without it the stream is wrong for browsers (B-frames, no in-band SPS/PPS): a device
    /// that refuses it is logged as a warning, not at debug level.
    pub essential: bool,
}

/// The controls for low-latency streaming, in the order they are set: no B-frames (browsers'
/// decoders would hold frames back), a fixed IDR period (each IDR starts a segment and is
/// where new viewers join), CBR at the bitrate, SPS/PPS repeated before every IDR (a viewer
/// or a restarted pipeline can start at any IDR), Constrained Baseline at level 4.0.
/// rpicam-apps sets the same for its `--inline` H.264.
pub fn streaming_controls(p: EncodeParams) -> Vec<ControlSetting> {
    let gop = i64::from(p.gop_frames.max(1));
    vec![
        ControlSetting {
            id: cid::B_FRAMES,
            name: "b_frames",
            value: 0,
            essential: true,
        },
        ControlSetting {
            id: cid::H264_I_PERIOD,
            name: "h264_i_period",
            value: gop,
            essential: true,
        },
        ControlSetting {
            id: cid::GOP_SIZE,
            name: "gop_size",
            value: gop,
            essential: false,
        },
        ControlSetting {
            id: cid::BITRATE_MODE,
            name: "bitrate_mode",
            value: cid::BITRATE_MODE_CBR,
            essential: false,
        },
        ControlSetting {
            id: cid::BITRATE,
            name: "video_bitrate",
            value: i64::from(p.bitrate_bps),
            essential: false,
        },
        ControlSetting {
            id: cid::REPEAT_SEQ_HEADER,
            name: "repeat_sequence_header",
            value: 1,
            essential: true,
        },
        ControlSetting {
            id: cid::H264_PROFILE,
            name: "h264_profile",
            value: cid::PROFILE_CONSTRAINED_BASELINE,
            essential: false,
        },
        ControlSetting {
            id: cid::H264_LEVEL,
            name: "h264_level",
            value: cid::LEVEL_4_0,
            essential: false,
        },
    ]
}

/// The control that asks for an IDR now: sent when a stream starts or restarts, so viewers
/// need not wait a whole GOP.
pub fn force_key_frame() -> ControlSetting {
    ControlSetting {
        id: cid::FORCE_KEY_FRAME,
        name: "force_key_frame",
        value: 1,
        essential: false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Stand-in devices: no `/dev/video*` exists on these machines, so each test lists nodes
    //! as a Pi 4, a Pi 5 and a generic board report them in `v4l2-ctl --all`.
    use super::*;

    fn dev(path: &str, card: &str, caps: u32, cap: &[Fourcc], out: &[Fourcc]) -> CodecDevice {
        CodecDevice {
            path: PathBuf::from(path),
            driver: "drv".into(),
            card: card.into(),
            caps,
            capture_formats: cap.to_vec(),
            output_formats: out.to_vec(),
        }
    }

    /// Stand-in for a Pi 4 (Bookworm): the decoder, encoder and ISP nodes of bcm2835-codec,
    /// plus a USB webcam.
    fn pi4() -> Vec<CodecDevice> {
        vec![
            dev(
                "/dev/video0",
                "HD Webcam",
                0x0420_0001,
                &[Fourcc::YUYV],
                &[],
            ),
            dev(
                "/dev/video10",
                "bcm2835-codec-decode",
                0x0420_4000,
                &[Fourcc::YU12, Fourcc::NV12],
                &[Fourcc::H264, Fourcc::MJPG],
            ),
            dev(
                "/dev/video11",
                "bcm2835-codec-encode",
                0x0420_4000,
                &[Fourcc::H264],
                &[Fourcc::YU12, Fourcc::NV12, Fourcc::YUYV],
            ),
            dev(
                "/dev/video12",
                "bcm2835-codec-isp",
                0x0420_4000,
                &[Fourcc::YU12],
                &[Fourcc::YU12],
            ),
        ]
    }

    #[test]
    fn on_a_pi_4_the_videocore_encoder_at_video11_is_chosen() {
        // Stand-in device list (see the module note).
        let c = select_encoder(&EncoderPref::Auto, &pi4()).unwrap();
        assert!(
            matches!(&c, EncoderChoice::M2m { path, card, .. } if path == Path::new("/dev/video11") && card == "bcm2835-codec-encode"),
            "{c:?}"
        );
    }

    #[test]
    fn the_decoder_and_isp_nodes_are_not_mistaken_for_encoders() {
        // Stand-in: the Pi 4 list without its encoder node.
        let devices: Vec<_> = pi4()
            .into_iter()
            .filter(|d| d.card != "bcm2835-codec-encode")
            .collect();
        let c = select_encoder(&EncoderPref::Auto, &devices).unwrap();
        assert!(matches!(c, EncoderChoice::Software { .. }), "{c:?}");
    }

    #[test]
    fn a_pi_5_or_orin_nano_without_hardware_h264_gets_the_software_encoder() {
        // Stand-in for a Pi 5: only the HEVC decoder (rpivid) and a webcam.
        let devices = vec![
            dev(
                "/dev/video0",
                "USB Camera",
                0x0420_0001,
                &[Fourcc::MJPG],
                &[],
            ),
            dev(
                "/dev/video19",
                "rpivid",
                0x0420_4000,
                &[Fourcc::NV12],
                &[Fourcc(*b"S265")],
            ),
        ];
        let c = select_encoder(&EncoderPref::Auto, &devices).unwrap();
        assert!(matches!(c, EncoderChoice::Software { .. }), "{c:?}");
        assert_eq!(ranked_encoders(&devices).len(), 1);
    }

    #[test]
    fn any_m2m_node_with_h264_on_its_capture_queue_counts_generically() {
        // Stand-in for e.g. a Rockchip/Allwinner/Hantro encoder (single-planar M2M).
        let devices = vec![dev(
            "/dev/video3",
            "hantro-vpu",
            0x0400_8000,
            &[Fourcc::H264],
            &[Fourcc::NV12],
        )];
        let c = select_encoder(&EncoderPref::Auto, &devices).unwrap();
        assert!(
            matches!(c, EncoderChoice::M2m { ref path, .. } if path == Path::new("/dev/video3"))
        );
        // The Pi 4 encoder still ranks first when both exist.
        let mut both = pi4();
        both.extend(devices);
        let ranked = ranked_encoders(&both);
        assert!(
            matches!(&ranked[0], EncoderChoice::M2m { card, .. } if card == "bcm2835-codec-encode")
        );
        assert!(matches!(&ranked[1], EncoderChoice::M2m { card, .. } if card == "hantro-vpu"));
        assert!(matches!(ranked[2], EncoderChoice::Software { .. }));
    }

    #[test]
    fn a_card_named_like_the_pi_encoder_elsewhere_than_video11_is_only_a_generic_candidate() {
        // Stand-in: rpicam-apps checks the node *and* the card.
        let devices = vec![dev(
            "/dev/video31",
            "bcm2835-codec-encode",
            0x0420_4000,
            &[Fourcc::MJPG],
            &[Fourcc::YU12],
        )];
        assert!(matches!(
            select_encoder(&EncoderPref::Auto, &devices).unwrap(),
            EncoderChoice::Software { .. }
        ));
    }

    #[test]
    fn encoder_preferences_parse_and_a_wrong_node_is_refused_naming_the_real_ones() {
        assert_eq!(EncoderPref::parse("auto").unwrap(), EncoderPref::Auto);
        assert_eq!(
            EncoderPref::parse("software").unwrap(),
            EncoderPref::Software
        );
        assert!(EncoderPref::parse("nvenc").unwrap_err().contains("allowed"));
        let pref = EncoderPref::parse("/dev/video10").unwrap();
        let err = select_encoder(&pref, &pi4()).unwrap_err().to_string();
        assert!(
            err.contains("/dev/video10") && err.contains("/dev/video11"),
            "{err}"
        );
        assert!(err.contains("pinhole probe"), "{err}");
        let pref = EncoderPref::parse("/dev/video11").unwrap();
        assert!(matches!(
            select_encoder(&pref, &pi4()).unwrap(),
            EncoderChoice::M2m { .. }
        ));
        assert!(matches!(
            select_encoder(&EncoderPref::Software, &pi4()).unwrap(),
            EncoderChoice::Software { .. }
        ));
    }

    #[test]
    fn streaming_controls_turn_off_b_frames_fix_the_gop_and_repeat_headers() {
        let ctrls = streaming_controls(EncodeParams {
            bitrate_bps: 4_000_000,
            gop_frames: 30,
        });
        let get = |id| ctrls.iter().find(|c| c.id == id).map(|c| c.value);
        assert_eq!(get(cid::B_FRAMES), Some(0));
        assert_eq!(get(cid::H264_I_PERIOD), Some(30));
        assert_eq!(get(cid::GOP_SIZE), Some(30));
        assert_eq!(get(cid::BITRATE), Some(4_000_000));
        assert_eq!(get(cid::REPEAT_SEQ_HEADER), Some(1));
        assert_eq!(get(cid::BITRATE_MODE), Some(cid::BITRATE_MODE_CBR));
        // The ids are the kernel's (v4l2-controls.h): spot-check two absolute values.
        assert_eq!(cid::H264_I_PERIOD, 0x0099_0A66);
        assert_eq!(force_key_frame().id, 0x0099_09E5);
        // The ones a browser stream cannot do without are marked essential.
        let essential: Vec<_> = ctrls
            .iter()
            .filter(|c| c.essential)
            .map(|c| c.name)
            .collect();
        assert_eq!(
            essential,
            ["b_frames", "h264_i_period", "repeat_sequence_header"]
        );
    }
}
