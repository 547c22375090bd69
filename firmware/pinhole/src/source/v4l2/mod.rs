//! `v4l2:/dev/videoN[?options]`: a V4L2 camera through the workspace's `v4l2` crate (the
//! kernel ABI in Rust: no libv4l, no bindgen).
//!
//! ```text
//! camera ─ H.264 (UVC 1.5) ──────────────────────────────────────────► H264Buffers ─┐
//!        ├ YUYV / NV12 / YU12 ─► yuv::convert ─┐                                    ├─► Frame ─► pipeline
//!        └ MJPEG ─► mjpeg::decode ─────────────┴┬─► V4L2 M2M encoder (Pi 4: /dev/video11) ─┤
//!                                               └─► OpenH264 (software) ──────────────────┘
//! ```
//!
//! The decisions live in pure modules that are unit-tested with stand-in device descriptions
//! (these machines have no `/dev/video*` and cannot load vivid or v4l2loopback):
//! [`negotiate`] (format, size, rate), [`encoder`] (which encoder, which controls), [`frames`]
//! (buffer checks, access units, timestamps), [`yuv`] (raw → I420) and [`mjpeg`] (JPEG →
//! I420). [`device`] is the part that talks to the kernel, over the `v4l2` crate's `Backend`
//! seam (so its capture loop is tested with that crate's stand-in camera); [`hardware`]
//! drives an M2M encoder through the same crate; [`probe`] is `pinhole probe`.
//!
//! Options: `size=WxH` (default: nearest to 1280x720), `fps=N` (30), `bitrate=BITS` (2M;
//! k/M suffixes), `gop=FRAMES` (one second), `encoder=auto|software|/dev/videoN`.

pub mod device;
pub(crate) mod encoder;
pub mod frames;
pub mod hardware;
pub mod mjpeg;
pub mod negotiate;
pub mod probe;
pub mod software;
pub(crate) mod yuv;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::watch;

use self::encoder::EncoderPref;
use self::negotiate::Want;
use super::{run_blocking, Delivery, FrameSink, SharedPipeline, SourceError};
use crate::status::Status;

pub const DEFAULT_BITRATE_BPS: u32 = 2_000_000;
const BITRATE_RANGE: std::ops::RangeInclusive<u32> = 100_000..=50_000_000;

/// A parsed `v4l2:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V4l2Options {
    pub path: PathBuf,
    pub want: Want,
    pub bitrate_bps: u32,
    /// `None`: one second's worth of frames at the negotiated rate.
    pub gop_frames: Option<u32>,
    pub encoder: EncoderPref,
}

impl V4l2Options {
    /// Parses what follows `v4l2:`, e.g. `/dev/video0?size=1280x720&fps=30`.
    pub fn parse(rest: &str) -> Result<V4l2Options, String> {
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, q),
            None => (rest, ""),
        };
        if !path.starts_with("/dev/") || path.len() <= "/dev/".len() {
            return Err(format!(
                "v4l2:{rest}: give the device node, e.g. v4l2:/dev/video0 (`pinhole probe` lists them)"
            ));
        }
        let mut opts = V4l2Options {
            path: PathBuf::from(path),
            want: Want::default(),
            bitrate_bps: DEFAULT_BITRATE_BPS,
            gop_frames: None,
            encoder: EncoderPref::Auto,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = |allowed: &str| format!("v4l2 option {key}={value:?}: allowed {allowed}");
            match key {
                "size" => {
                    let (w, h) = value
                        .split_once('x')
                        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
                        .filter(|&(w, h)| (16..=8192).contains(&w) && (16..=8192).contains(&h))
                        .ok_or_else(|| bad("WIDTHxHEIGHT, 16..=8192 each, e.g. 1280x720"))?;
                    opts.want.size = Some((w, h));
                }
                "fps" => {
                    let fps = value
                        .parse::<u32>()
                        .ok()
                        .filter(|f| (1..=120).contains(f))
                        .ok_or_else(|| bad("1..=120"))?;
                    opts.want.fps = Some(fps);
                }
                "gop" => {
                    let gop = value
                        .parse::<u32>()
                        .ok()
                        .filter(|g| (1..=600).contains(g))
                        .ok_or_else(|| bad("1..=600 frames"))?;
                    opts.gop_frames = Some(gop);
                }
                "bitrate" => {
                    opts.bitrate_bps =
                        parse_bitrate(value)
                            .filter(|b| BITRATE_RANGE.contains(b))
                            .ok_or_else(|| bad("100k..=50M bits per second, e.g. 2M or 800k"))?;
                }
                "encoder" => opts.encoder = EncoderPref::parse(value)?,
                _ => {
                    return Err(format!(
                        "v4l2 option {key:?} is unknown; allowed size, fps, bitrate, gop, encoder"
                    ))
                }
            }
        }
        Ok(opts)
    }

    /// The URI with every option spelled out, for status and logs.
    pub fn display_uri(&self) -> String {
        let mut s = format!("v4l2:{}?", self.path.display());
        if let Some((w, h)) = self.want.size {
            s.push_str(&format!("size={w}x{h}&"));
        }
        if let Some(f) = self.want.fps {
            s.push_str(&format!("fps={f}&"));
        }
        if let Some(g) = self.gop_frames {
            s.push_str(&format!("gop={g}&"));
        }
        s.push_str(&format!(
            "bitrate={}&encoder={}",
            self.bitrate_bps, self.encoder
        ));
        s
    }
}

fn parse_bitrate(v: &str) -> Option<u32> {
    let (num, mult) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1_000u64),
        b'M' | b'm' => (&v[..v.len() - 1], 1_000_000u64),
        _ => (v, 1u64),
    };
    let n: u64 = num.parse().ok()?;
    u32::try_from(n.checked_mul(mult)?).ok()
}

/// One run: capture on a thread of its own (blocking `poll`/`DQBUF`, conversion, encoding),
/// writing frames straight into the pipeline as the test source does.
pub async fn run(
    opts: &V4l2Options,
    pipeline: SharedPipeline,
    status: Arc<Status>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), SourceError> {
    let opts = opts.clone();
    let out = Delivery::new(pipeline, status);
    run_blocking("v4l2", out, shutdown, move |stop, out| {
        device::run(&opts, stop, &mut |event| match event {
            device::Event::Running { .. } | device::Event::Dropped { .. } => {}
            device::Event::Frame(frame) => {
                if !stop.load(Ordering::Relaxed) {
                    out.frame(frame);
                }
            }
        })
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn v4l2_uris_parse_with_options_and_bad_ones_say_what_is_allowed() {
        let o = V4l2Options::parse("/dev/video0").unwrap();
        assert_eq!(o.path, PathBuf::from("/dev/video0"));
        assert_eq!(o.want, Want::default());
        assert_eq!(o.bitrate_bps, DEFAULT_BITRATE_BPS);
        let o = V4l2Options::parse(
            "/dev/video2?size=1920x1080&fps=25&bitrate=4M&gop=50&encoder=software",
        )
        .unwrap();
        assert_eq!(o.want.size, Some((1920, 1080)));
        assert_eq!(o.want.fps, Some(25));
        assert_eq!(o.bitrate_bps, 4_000_000);
        assert_eq!(o.gop_frames, Some(50));
        assert_eq!(o.encoder, EncoderPref::Software);
        assert_eq!(
            o.display_uri(),
            "v4l2:/dev/video2?size=1920x1080&fps=25&gop=50&bitrate=4000000&encoder=software"
        );
        assert_eq!(
            V4l2Options::parse("/dev/video0?bitrate=800k")
                .unwrap()
                .bitrate_bps,
            800_000
        );
        for (bad, says) in [
            ("video0", "v4l2:/dev/video0"),
            ("/dev/", "v4l2:/dev/video0"),
            ("/dev/video0?size=big", "WIDTHxHEIGHT"),
            ("/dev/video0?fps=0", "1..=120"),
            ("/dev/video0?bitrate=1G", "100k..=50M"),
            ("/dev/video0?gop=0", "1..=600"),
            ("/dev/video0?encoder=nvenc", "allowed auto"),
            ("/dev/video0?colour=red", "unknown"),
        ] {
            let e = V4l2Options::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn a_missing_device_fails_the_run_with_a_clear_error() {
        // A real run against a node that does not exist (none do on these machines).
        use crate::hub::Hub;
        use crate::pipeline::Pipeline;
        let hub = Hub::new();
        let status = Arc::new(Status::new("cam", "v4l2:/dev/video99".into(), 100));
        let config = media::segmenter::SegmenterConfig {
            fragment_duration_90k: 9_000,
            low_delay_vui: true,
        };
        let pipeline = Arc::new(std::sync::Mutex::new(
            Pipeline::new(config, hub, status.clone()).unwrap(),
        ));
        let (_tx, rx) = watch::channel(false);
        let opts = V4l2Options::parse("/dev/video99").unwrap();
        let err = run(&opts, pipeline, status, rx)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such device /dev/video99"), "{err}");
        assert!(err.contains("pinhole probe"), "{err}");
    }
}
