//! Raw camera frames through a V4L2 memory-to-memory H.264 encoder — the Pi 4's
//! `bcm2835-codec-encode` at `/dev/video11`, or any stateful M2M encoder — with the
//! `v4l2` crate (the workspace's only `unsafe` code: its ioctls and mmap).
//!
//! Set up with [`super::encoder::streaming_controls`] (refusals logged, the essential ones at
//! warn); an IDR is requested (`force_key_frame`) for the first frame of every run and after a
//! lost frame. One frame in, its access unit out, no frame of added latency. The encoded
//! buffers go through [`H264Buffers`] like a UVC camera's, so the rest of the path is the same.

use std::path::Path;

use ::v4l2::{Backend, Config, Encoder, Picture, V4l2Device};
use media::h264::AccessUnit;

use super::encoder::{self, ControlSetting, EncodeParams};
use super::frames::H264Buffers;
use super::negotiate::Interval;
use super::yuv::I420;

/// Frames lost in a row (corrupt or unusable buffers) before the run is failed and the
/// encoder reopened.
const MAX_LOST_IN_ROW: u32 = 5;

/// Why a frame produced no access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HwProblem {
    /// One frame lost; encoding goes on (and asked for an IDR).
    Lost(String),
    /// The run must end; the supervisor reopens camera and encoder.
    Fatal(String),
}

/// The encoder wrapper, over the real device (or, in tests, the crate's stand-in driver).
pub struct HardwareEncoder<B: Backend = V4l2Device> {
    enc: Encoder<B>,
    buffers: H264Buffers,
    lost_in_row: u32,
}

impl<B: Backend> std::fmt::Debug for HardwareEncoder<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HardwareEncoder")
            .field("node", &self.enc.node())
            .finish_non_exhaustive()
    }
}

/// Sets each control on its own, so one the device lacks does not stop the others; logs
/// refusals (essential ones at warn). Returns how many were accepted.
pub fn apply_controls(
    what: &str,
    controls: &[ControlSetting],
    mut set: impl FnMut(&ControlSetting) -> Result<(), String>,
) -> usize {
    let mut ok = 0;
    for c in controls {
        match set(c) {
            Ok(()) => ok += 1,
            Err(e) if c.essential => tracing::warn!(
                source = "v4l2",
                device = what,
                control = c.name,
                value = c.value,
                error = %e,
                "control refused; the stream may carry B-frames or lack in-band SPS/PPS"
            ),
            Err(e) => {
                tracing::debug!(source = "v4l2", device = what, control = c.name, error = %e, "control not set")
            }
        }
    }
    ok
}

/// The encoder's setup for `width`×`height` frames at `interval`.
pub fn config(width: u32, height: u32, interval: Option<Interval>) -> Config {
    let mut config = Config::new(width, height);
    config.frame_interval = interval.map(|i| (i.num, i.den));
    config
}

impl HardwareEncoder<V4l2Device> {
    /// Opens and sets up the encoder at `path` for `width`×`height` frames.
    pub fn open(
        path: &Path,
        width: u32,
        height: u32,
        interval: Option<Interval>,
        params: EncodeParams,
    ) -> Result<HardwareEncoder, String> {
        let enc =
            Encoder::open(path, &config(width, height, interval)).map_err(|e| e.to_string())?;
        Ok(HardwareEncoder::with_encoder(enc, params))
    }
}

impl<B: Backend> HardwareEncoder<B> {
    /// Sets the streaming controls on a set-up encoder.
    pub fn with_encoder(mut enc: Encoder<B>, params: EncodeParams) -> HardwareEncoder<B> {
        let node = enc.node().to_string();
        let accepted = apply_controls(&node, &encoder::streaming_controls(params), |c| {
            enc.set_control(c.id, c.value).map_err(|e| e.to_string())
        });
        let mut hw = HardwareEncoder {
            enc,
            buffers: H264Buffers::new(),
            lost_in_row: 0,
        };
        hw.log_notes();
        tracing::info!(source = "v4l2", encoder = %node, card = hw.enc.card(), input = %hw.enc.input_format(),
            controls = accepted, capture_buffer = hw.enc.capture_format().planes.first().map_or(0, |p| p.sizeimage),
            "hardware encoder ready");
        hw
    }

    /// For the log and status: `V4L2 M2M /dev/video11 (bcm2835-codec-encode, YU12 in)`.
    pub fn describe(&self) -> String {
        format!(
            "V4L2 M2M {} ({}, {} in)",
            self.enc.node(),
            self.enc.card(),
            self.enc.input_format()
        )
    }

    /// The next frame is an IDR.
    pub fn request_idr(&mut self) {
        self.enc.request_idr();
    }

    fn log_notes(&mut self) {
        for note in self.enc.take_notes() {
            tracing::warn!(source = "v4l2", encoder = self.enc.node(), "{note}");
        }
    }

    /// Encodes one picture captured at `timestamp_us` (the camera buffer's time, µs). `Ok(None)`
    /// for a buffer holding only parameter sets (kept for the next picture).
    pub fn encode(
        &mut self,
        picture: &I420,
        timestamp_us: i64,
    ) -> Result<Option<AccessUnit>, HwProblem> {
        use openh264::formats::YUVSource;
        let (w, h) = picture.dimensions();
        let (y_stride, uv_stride, _) = picture.strides();
        let (y, u, v) = picture.planes();
        let pic = Picture {
            width: u32::try_from(w).unwrap_or(u32::MAX),
            height: u32::try_from(h).unwrap_or(u32::MAX),
            y,
            u,
            v,
            y_stride,
            uv_stride,
        };
        let res = self.enc.encode(&pic, timestamp_us);
        self.log_notes();
        let res = match res {
            Ok(encoded) => self
                .buffers
                .push(&encoded.data)
                .map_err(|e| format!("{}: encoded buffer dropped: {e}", self.enc.node())),
            Err(e) if e.is_transient() => Err(e.to_string()),
            Err(e) => return Err(HwProblem::Fatal(e.to_string())),
        };
        match res {
            Ok(au) => {
                self.lost_in_row = 0;
                Ok(au)
            }
            Err(msg) => {
                self.enc.request_idr();
                self.lost_in_row += 1;
                if self.lost_in_row >= MAX_LOST_IN_ROW {
                    return Err(HwProblem::Fatal(format!(
                        "{msg} ({MAX_LOST_IN_ROW} frames in a row lost; reopening)"
                    )));
                }
                Err(HwProblem::Lost(msg))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_crates_idr_control_is_encoder_rs_force_key_frame() {
        assert_eq!(::v4l2::CID_FORCE_KEY_FRAME, encoder::force_key_frame().id);
    }

    #[test]
    fn a_missing_encoder_node_fails_to_open_with_a_clear_error() {
        // A real open of a node that does not exist (no /dev/video* on these machines).
        let e = HardwareEncoder::open(
            Path::new("/dev/video99"),
            640,
            480,
            Some(Interval::from_fps(30)),
            EncodeParams {
                bitrate_bps: 1_000_000,
                gop_frames: 30,
            },
        )
        .unwrap_err();
        assert!(
            e.starts_with("cannot open /dev/video99: no such device node"),
            "{e}"
        );
    }

    #[test]
    fn stand_in_pi4_frames_become_access_units_and_five_lost_in_a_row_fail_the_run() {
        // The v4l2 crate's stand-in driver (no /dev/video11 on these machines), answering
        // like bcm2835-codec-encode: SPS/PPS in a buffer of their own before the IDR, then
        // P frames, then only corrupt buffers (V4L2_BUF_FLAG_ERROR).
        use ::v4l2::backend::flags;
        use ::v4l2::standin::{out, Out, Reply, StandIn, Ts};
        const SPS_PPS: &[u8] = &[
            0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0x8c, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80,
        ];
        let mut s = StandIn::pi4(Box::new(|f| Reply {
            outs: match f.n {
                0 => vec![
                    Out {
                        ts: Ts::Fixed(0),
                        ..out(0, SPS_PPS)
                    },
                    out(1, &[0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00, 0x33]),
                ],
                1 => vec![out(1, &[0, 0, 0, 1, 0x41, 0x9a, 0x02, 0x03])],
                _ => vec![Out {
                    flags: flags::ERROR,
                    ..out(1, &[0, 0, 0, 1, 0x41, 0x9a])
                }],
            },
            ..Reply::default()
        }));
        let params = EncodeParams {
            bitrate_bps: 1_000_000,
            gop_frames: 30,
        };
        let enc = Encoder::new(
            &mut s,
            "/dev/video11".into(),
            &config(64, 48, Some(Interval::from_fps(30))),
        )
        .unwrap();
        let mut hw = HardwareEncoder::with_encoder(enc, params);
        assert_eq!(
            hw.describe(),
            "V4L2 M2M /dev/video11 (bcm2835-codec-encode, YU12 in)"
        );
        let pic = I420::new(64, 48);
        let au = hw.encode(&pic, 1_000).unwrap().unwrap();
        assert!(au.is_idr && au.sps().is_some() && au.pps().is_some());
        let au = hw.encode(&pic, 34_333).unwrap().unwrap();
        assert!(!au.is_idr && !au.has_b_slices);
        for i in 0..4 {
            let e = hw.encode(&pic, 70_000 + i * 33_333).unwrap_err();
            assert!(
                matches!(&e, HwProblem::Lost(m) if m.contains("V4L2_BUF_FLAG_ERROR")),
                "{e:?}"
            );
        }
        let e = hw.encode(&pic, 300_000).unwrap_err();
        assert!(
            matches!(&e, HwProblem::Fatal(m) if m.contains("5 frames in a row lost")),
            "{e:?}"
        );
        drop(hw);
        // Every streaming control went to the driver before streaming started.
        let streamon = s
            .log
            .iter()
            .position(|l| l.starts_with("STREAMON"))
            .unwrap();
        for c in encoder::streaming_controls(params) {
            let set = s
                .log
                .iter()
                .position(|l| l.starts_with(&format!("S_CTRL {:#x}=", c.id)))
                .unwrap_or_else(|| panic!("{} not set: {:#?}", c.name, s.log));
            assert!(set < streamon, "{}", c.name);
        }
    }

    #[test]
    fn controls_are_set_one_by_one_and_refusals_do_not_stop_the_rest() {
        // Stand-in setter: a UVC-like device that refuses every control but the bitrate.
        let controls = encoder::streaming_controls(EncodeParams {
            bitrate_bps: 2_000_000,
            gop_frames: 30,
        });
        let mut seen = Vec::new();
        let ok = apply_controls("/dev/video11", &controls, |c| {
            seen.push(c.name);
            if c.id == encoder::cid::BITRATE {
                Ok(())
            } else {
                Err("Invalid argument".into())
            }
        });
        assert_eq!(ok, 1);
        assert_eq!(seen.len(), controls.len());
    }
}
