//! The only part that touches a device: the `v4l` crate (through libv4l2) turned into the
//! plain descriptions the pure modules take, and the capture loop.
//!
//! Not testable on these machines (no `/dev/video*`, no vivid or v4l2loopback): what can be
//! checked here is that a missing or wrong node gives a clear error (unit and e2e tests).
//! `board/v4l2.md` lists what was verified and what was not.
//!
//! The `v4l` crate panics on some unexpected driver data (a card name that is not UTF-8, an
//! unknown colourspace); every call into it runs under `catch_unwind` in [`guard`], so such a
//! device fails its run with an error instead of taking anything else down.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use v4l::buffer::Type;
use v4l::capability::Flags as CapFlags;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::traits::CaptureStream;
use v4l::video::{Capture, Output};
use v4l::Device;

use super::encoder::{self, CodecDevice, ControlSetting, EncodeParams, EncoderChoice};
use super::frames::{self, BufferMeta, H264Buffers, TimeNote, Timeline};
use super::hardware::{self, HardwareEncoder, HwProblem};
use super::negotiate::{
    self, Delivery, FormatCaps, Fourcc, Interval, IntervalRange, Plan, SizeCaps, SizeRange,
};
use super::software::SoftwareEncoder;
use super::yuv::{self, I420};
use super::V4l2Options;

/// Buffers in the capture queue: enough to ride out a slow encode, few enough to keep latency
/// and memory low.
const CAPTURE_BUFFERS: u32 = 4;
/// How long one wait for a frame lasts before the stop flag is checked again.
const POLL_TIMEOUT: Duration = Duration::from_millis(500);
/// A camera that delivers nothing for this long is restarted (a wedged UVC camera).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `f` and turns a panic inside the `v4l` crate into an error.
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(format!(
                "{what}: the v4l crate failed on this device's data ({msg})"
            ))
        }
    }
}

/// Opens a node, with errors that say what to do.
pub fn open(path: &Path) -> Result<Device, String> {
    if !path.exists() {
        return Err(format!(
            "no such device {}: is the camera plugged in? run `pinhole probe` to list video devices",
            path.display()
        ));
    }
    Device::with_path(path).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => format!(
            "cannot open {}: permission denied (add the user running pinhole to the `video` group)",
            path.display()
        ),
        _ => format!("cannot open {}: {e}", path.display()),
    })
}

/// `/dev/video*` nodes in numeric order.
pub fn video_nodes() -> Vec<PathBuf> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name();
                    let n = name.to_str()?.strip_prefix("video")?.parse::<u32>().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

/// What `VIDIOC_QUERYCAP` says.
#[derive(Debug, Clone)]
pub struct NodeCaps {
    pub driver: String,
    pub card: String,
    pub bus: String,
    pub caps: u32,
}

pub fn query_caps(dev: &Device) -> Result<NodeCaps, String> {
    let c = dev
        .query_caps()
        .map_err(|e| format!("VIDIOC_QUERYCAP failed: {e}"))?;
    Ok(NodeCaps {
        driver: c.driver,
        card: c.card,
        bus: c.bus,
        caps: c.capabilities.bits(),
    })
}

fn fourcc(f: v4l::FourCC) -> Fourcc {
    Fourcc(f.repr)
}

fn interval(f: v4l::Fraction) -> Interval {
    Interval {
        num: f.numerator,
        den: f.denominator,
    }
}

/// The capture queue's formats, sizes and rates.
pub fn capture_formats(dev: &Device) -> Result<Vec<FormatCaps>, String> {
    let descs = Capture::enum_formats(dev).map_err(|e| format!("VIDIOC_ENUM_FMT failed: {e}"))?;
    let mut out = Vec::new();
    for d in descs {
        let mut sizes = Vec::new();
        // A format without sizes (some M2M capture queues) is listed without them.
        for fs in Capture::enum_framesizes(dev, d.fourcc).unwrap_or_default() {
            let (size, probe_at) = match fs.size {
                FrameSizeEnum::Discrete(s) => (
                    SizeRange::Discrete {
                        width: s.width,
                        height: s.height,
                    },
                    (s.width, s.height),
                ),
                FrameSizeEnum::Stepwise(s) => (
                    SizeRange::Stepwise {
                        min_width: s.min_width,
                        max_width: s.max_width,
                        step_width: s.step_width,
                        min_height: s.min_height,
                        max_height: s.max_height,
                        step_height: s.step_height,
                    },
                    (s.max_width, s.max_height),
                ),
            };
            let intervals = Capture::enum_frameintervals(dev, d.fourcc, probe_at.0, probe_at.1)
                .unwrap_or_default()
                .into_iter()
                .map(|i| match i.interval {
                    FrameIntervalEnum::Discrete(f) => IntervalRange::Discrete(interval(f)),
                    FrameIntervalEnum::Stepwise(s) => IntervalRange::Stepwise {
                        min: interval(s.min),
                        max: interval(s.max),
                    },
                })
                .collect();
            sizes.push(SizeCaps { size, intervals });
        }
        out.push(FormatCaps {
            fourcc: fourcc(d.fourcc),
            description: d.description,
            emulated: d.flags.contains(v4l::format::description::Flags::EMULATED),
            sizes,
        });
    }
    Ok(out)
}

/// The OUTPUT queue's formats (what an M2M device takes in).
pub fn output_formats(dev: &Device) -> Vec<Fourcc> {
    Output::enum_formats(dev)
        .unwrap_or_default()
        .into_iter()
        .map(|d| fourcc(d.fourcc))
        .collect()
}

/// Every M2M node, described for [`encoder::select_encoder`]. Nodes that fail to open are
/// skipped (a camera in use elsewhere is no encoder anyway).
pub fn codec_devices(skip: &Path) -> Vec<CodecDevice> {
    let mut out = Vec::new();
    for path in video_nodes() {
        if path == skip {
            continue;
        }
        let described = guard(&path.display().to_string(), || {
            let dev = open(&path)?;
            let caps = query_caps(&dev)?;
            if caps.caps & (encoder::CAP_VIDEO_M2M | encoder::CAP_VIDEO_M2M_MPLANE) == 0 {
                return Ok(None);
            }
            let capture = capture_formats(&dev)
                .unwrap_or_default()
                .into_iter()
                .map(|f| f.fourcc)
                .collect();
            Ok(Some(CodecDevice {
                path: path.clone(),
                driver: caps.driver,
                card: caps.card,
                caps: caps.caps,
                capture_formats: capture,
                output_formats: output_formats(&dev),
            }))
        });
        if let Ok(Some(d)) = described {
            out.push(d);
        }
    }
    out
}

/// Sets each control on its own (see [`hardware::apply_controls`]). Returns how many were
/// accepted.
pub fn apply_controls(dev: &Device, what: &str, controls: &[ControlSetting]) -> usize {
    hardware::apply_controls(what, controls, |c| {
        let ctrl = v4l::control::Control {
            id: c.id,
            value: v4l::control::Value::Integer(c.value),
        };
        dev.set_control(ctrl).map_err(|e| e.to_string())
    })
}

/// `CLOCK_MONOTONIC` in µs, the clock V4L2 stamps buffers with.
fn monotonic_us() -> i64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() * 1_000_000 + t.tv_nsec() / 1_000)
        .unwrap_or(0)
}

/// A buffer timestamp in µs.
#[allow(clippy::useless_conversion)] // time_t is i32 on 32-bit targets
fn timeval_us(t: v4l::Timestamp) -> i64 {
    i64::from(t.sec)
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(t.usec))
}

/// `CLOCK_REALTIME − CLOCK_MONOTONIC` in µs, now.
fn unix_offset_us() -> i64 {
    let real = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
        .map(|t| t.tv_sec() * 1_000_000 + t.tv_nsec() / 1_000)
        .unwrap_or(0);
    real - monotonic_us()
}

/// What the capture loop hands on: a frame, or a problem worth a log line.
pub enum Event {
    Frame(media::segmenter::Frame),
    Running { plan: Plan, encoder: String },
}

/// Counters for "one clear log line per problem per stream".
#[derive(Default)]
struct Problems {
    bad_buffers: u64,
}

impl Problems {
    fn buffer(&mut self, path: &Path, what: &dyn std::fmt::Display) {
        self.bad_buffers += 1;
        if self.bad_buffers <= 3 || self.bad_buffers % 100 == 0 {
            tracing::warn!(source = "v4l2", device = %path.display(), count = self.bad_buffers, "dropped buffer: {what}");
        }
    }
}

/// Opens, negotiates and captures until `stop`, calling `emit` for each frame. Blocking: runs
/// on a thread of its own.
pub fn run(
    opts: &V4l2Options,
    stop: &AtomicBool,
    emit: &mut dyn FnMut(Event),
) -> Result<(), String> {
    let path = opts.path.as_path();
    let name = path.display().to_string();
    let dev = open(path)?;
    let caps = query_caps(&dev).map_err(|e| format!("{name}: {e}"))?;
    let flags = CapFlags::from_bits_truncate(caps.caps);
    if !flags.contains(CapFlags::VIDEO_CAPTURE) || !flags.contains(CapFlags::STREAMING) {
        return Err(format!(
            "{name} ({}, {}) is not a streaming video capture device; run `pinhole probe` to find the camera's node",
            caps.card, caps.driver
        ));
    }
    let formats = capture_formats(&dev).map_err(|e| format!("{name}: {e}"))?;
    let plan = negotiate::negotiate(&formats, opts.want).map_err(|e| format!("{name}: {e}"))?;
    for note in &plan.notes {
        tracing::info!(source = "v4l2", device = %name, "{note}");
    }

    // Apply the plan; drivers may adjust the size, which is then what is captured.
    let want_fmt = v4l::Format::new(plan.width, plan.height, v4l::FourCC::new(&plan.fourcc.0));
    let got = Capture::set_format(&dev, &want_fmt).map_err(|e| {
        format!(
            "{name}: VIDIOC_S_FMT {} {}x{} failed: {e}",
            plan.fourcc, plan.width, plan.height
        )
    })?;
    if fourcc(got.fourcc) != plan.fourcc {
        return Err(format!(
            "{name}: asked for {} but the driver set {}",
            plan.fourcc,
            fourcc(got.fourcc)
        ));
    }
    let (width, height) = (got.width, got.height);
    let mut interval = plan.interval;
    if let Some(i) = plan.interval {
        let params = v4l::video::capture::Parameters::new(v4l::Fraction::new(i.num, i.den));
        match Capture::set_params(&dev, &params) {
            Ok(p) => {
                interval = Some(Interval {
                    num: p.interval.numerator,
                    den: p.interval.denominator,
                })
            }
            Err(e) => {
                tracing::info!(source = "v4l2", device = %name, error = %e, "frame rate not set; using the driver's")
            }
        }
    }
    let fps = interval.and_then(Interval::fps).unwrap_or(30.0);
    let gop_frames = opts
        .gop_frames
        .unwrap_or_else(|| fps.round().max(1.0) as u32);
    let params = EncodeParams {
        bitrate_bps: opts.bitrate_bps,
        gop_frames,
    };

    let mut pipeline = match plan.delivery {
        Delivery::H264 => {
            // A UVC H.264 camera is its own encoder: ask it for the streaming settings and an
            // IDR now (cameras that lack these controls ignore them).
            let mut controls = encoder::streaming_controls(params);
            controls.push(encoder::force_key_frame());
            apply_controls(&dev, &name, &controls);
            Pipeline::Native(H264Buffers::new())
        }
        Delivery::Raw { format, .. } => {
            let choice = encoder::select_encoder(&opts.encoder, &codec_devices(path))
                .map_err(|e| format!("{name}: {e}"))?;
            let hw = match &choice {
                EncoderChoice::M2m {
                    path: enc,
                    card,
                    reason,
                } => match HardwareEncoder::open(enc, width, height, interval, params) {
                    Ok(hw) => Some(hw),
                    // encoder=auto: a hardware encoder that cannot be set up is not worth
                    // failing the camera for.
                    Err(e) if opts.encoder == encoder::EncoderPref::Auto => {
                        tracing::warn!(source = "v4l2", device = %name, encoder = %enc.display(), card = %card, why = reason,
                            "hardware encoder unusable, encoding with OpenH264 instead: {e}");
                        None
                    }
                    Err(e) => {
                        return Err(format!(
                            "{name}: encoder={}: {e} (encoder=auto falls back to software)",
                            enc.display()
                        ))
                    }
                },
                EncoderChoice::Software { .. } => None,
            };
            let stride = got.stride as usize;
            let frame_len = yuv::frame_len(format, width as usize, height as usize, stride);
            let encoder = match hw {
                Some(hw) => RawEncoder::Hardware(Box::new(hw)),
                None => RawEncoder::Software(Box::new(
                    SoftwareEncoder::new(width, height, fps, params)
                        .map_err(|e| format!("{name}: {e}"))?,
                )),
            };
            Pipeline::Raw {
                format,
                stride,
                frame_len,
                picture: I420::new(width as usize, height as usize),
                encoder,
            }
        }
    };
    let encoder_name = match &pipeline {
        Pipeline::Native(_) => "camera (H.264)".to_string(),
        Pipeline::Raw {
            encoder: RawEncoder::Hardware(hw),
            ..
        } => hw.describe(),
        Pipeline::Raw { .. } => "OpenH264 (software)".to_string(),
    };
    tracing::info!(source = "v4l2", device = %name, card = %caps.card, format = %plan.fourcc, width, height,
        rate = %interval.map_or_else(|| "driver default".to_string(), |i| i.to_string()), encoder = %encoder_name, "capturing");
    emit(Event::Running {
        plan: Plan {
            width,
            height,
            interval,
            ..plan.clone()
        },
        encoder: encoder_name,
    });

    let mut stream = v4l::io::mmap::Stream::with_buffers(&dev, Type::VideoCapture, CAPTURE_BUFFERS)
        .map_err(|e| format!("{name}: requesting {CAPTURE_BUFFERS} mmap buffers failed: {e}"))?;
    stream.set_timeout(POLL_TIMEOUT);
    let mut timeline = Timeline::new(interval.and_then(Interval::ticks_90k));
    let mut problems = Problems::default();
    let mut last_frame = Instant::now();
    let mut dropped_total: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let (data, meta) = match CaptureStream::next(&mut stream) {
            Ok(x) => x,
            Err(e)
                if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock =>
            {
                if last_frame.elapsed() >= STALL_TIMEOUT {
                    return Err(format!(
                        "{name}: no frames for {} s; reopening the device",
                        STALL_TIMEOUT.as_secs()
                    ));
                }
                continue;
            }
            Err(e) => return Err(format!("{name}: capture failed: {e} (unplugged?)")),
        };
        let arrival = monotonic_us();
        let meta = BufferMeta {
            bytesused: meta.bytesused,
            length: data.len(),
            flags: meta.flags.bits(),
            timestamp_us: timeval_us(meta.timestamp),
            sequence: meta.sequence,
        };
        last_frame = Instant::now();
        let (au, stamp, note) = match &mut pipeline {
            Pipeline::Native(buffers) => {
                let used = match frames::check_buffer(&meta) {
                    Ok(n) => n,
                    Err(e) => {
                        problems.buffer(path, &e);
                        continue;
                    }
                };
                let au = match buffers.push(&data[..used]) {
                    Ok(Some(au)) => au,
                    // Parameter sets only: they go in front of the next picture.
                    Ok(None) => continue,
                    Err(e) => {
                        problems.buffer(path, &e);
                        continue;
                    }
                };
                let (stamp, note) = timeline.stamp(&meta, arrival, unix_offset_us());
                (au, stamp, note)
            }
            Pipeline::Raw {
                format,
                stride,
                frame_len,
                picture,
                encoder,
            } => {
                let used = match frames::check_raw_buffer(&meta, *frame_len, width, height) {
                    Ok(n) => n,
                    Err(e) => {
                        problems.buffer(path, &e);
                        continue;
                    }
                };
                if let Err(e) = yuv::convert(*format, &data[..used], *stride, picture) {
                    problems.buffer(path, &e);
                    continue;
                }
                let (stamp, note) = timeline.stamp(&meta, arrival, unix_offset_us());
                let encoded = match encoder {
                    RawEncoder::Software(sw) => sw
                        .encode(picture, stamp.dts_90k / 90)
                        .map_err(|e| HwProblem::Fatal(format!("{name}: {e}"))),
                    // The camera buffer's own time goes to the encoder (it only matches
                    // buffers by it); media time comes from the timeline as for UVC H.264.
                    RawEncoder::Hardware(hw) => hw.encode(picture, meta.timestamp_us),
                };
                let au = match encoded {
                    Ok(au) => au,
                    Err(HwProblem::Lost(e)) => {
                        problems.buffer(path, &e);
                        continue;
                    }
                    // encoder=auto: a hardware encoder that broke mid-stream is replaced by
                    // OpenH264 for the rest of this run (its first frame is an IDR with new
                    // parameter sets, so viewers get a new init segment) rather than failing
                    // the camera; the next run tries the hardware again.
                    Err(HwProblem::Fatal(e))
                        if matches!(encoder, RawEncoder::Hardware(_))
                            && opts.encoder == encoder::EncoderPref::Auto =>
                    {
                        tracing::warn!(source = "v4l2", device = %name,
                            "hardware encoder failed, encoding with OpenH264 for the rest of this run: {e}");
                        *encoder = RawEncoder::Software(Box::new(
                            SoftwareEncoder::new(width, height, fps, params)
                                .map_err(|e| format!("{name}: {e}"))?,
                        ));
                        continue;
                    }
                    Err(HwProblem::Fatal(e)) => return Err(e),
                };
                match au {
                    Some(au) => (au, stamp, note),
                    // OpenH264 is not configured to skip, and an M2M encoder's headers-only
                    // buffer goes in front of the next picture; if either happens, the
                    // timeline shows a short gap.
                    None => continue,
                }
            }
        };
        if stamp.dropped > 0 {
            dropped_total += u64::from(stamp.dropped);
            tracing::debug!(source = "v4l2", device = %name, dropped = stamp.dropped, total = dropped_total, "driver dropped frames");
        }
        match note {
            Some(TimeNote::UsingArrival) => {
                tracing::warn!(source = "v4l2", device = %name, "buffer timestamps missing or implausible; using arrival times")
            }
            Some(TimeNote::WentBackwards { by_us }) => {
                tracing::warn!(source = "v4l2", device = %name, by_us, "buffer timestamps went backwards; using arrival times for this run")
            }
            Some(TimeNote::Gap { ms }) => {
                tracing::info!(source = "v4l2", device = %name, ms, "no frames for a while; the timeline jumps")
            }
            None => {}
        }
        emit(Event::Frame(media::segmenter::Frame {
            dts_90k: stamp.dts_90k,
            duration_90k: stamp.duration_90k,
            cts_offset_90k: 0,
            capture_unix_us: stamp.capture_unix_us,
            au,
        }));
    }
    Ok(())
}

/// How buffers become access units in this run.
enum Pipeline {
    Native(H264Buffers),
    Raw {
        format: negotiate::RawFormat,
        stride: usize,
        frame_len: usize,
        picture: I420,
        encoder: RawEncoder,
    },
}

/// Who encodes raw frames.
enum RawEncoder {
    Software(Box<SoftwareEncoder>),
    Hardware(Box<HardwareEncoder>),
}
