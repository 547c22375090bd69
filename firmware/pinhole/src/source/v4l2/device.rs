//! The only part that touches a device: the workspace's `v4l2` crate (its [`Backend`]: a real
//! node, or in the tests its stand-in camera) turned into the plain descriptions the pure
//! modules take, and the capture loop.
//!
//! ```text
//! open ─ QUERYCAP ─ ENUM_FMT/FRAMESIZES/FRAMEINTERVALS ─► negotiate ─ S_FMT ─ S_PARM ─ (controls)
//!      ─ REQBUFS + QUERYBUF + mmap ─ QBUF × n ─ STREAMON
//!      ─ loop { poll ─ DQBUF ─ check / convert or decode / encode ─ emit ─ QBUF } ─ STREAMOFF
//! ```
//!
//! No `/dev/video*` exists on these machines, so the loop is tested through the stand-in
//! camera driver (`v4l2::standin::camera`): negotiation, mmap buffers, timestamps, dequeue
//! errors, a vanishing device and a stalled one; a missing node gives a clear error (unit and
//! e2e tests). Nothing here can panic on driver data: every index, length and offset the
//! driver returns is checked. `board/v4l2.md` lists what was verified and what was not.

use std::collections::hash_map::{Entry, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ::v4l2::{Backend, Caps, Format, Fraction, FrameInterval, FrameSize, Queue, V4l2Device};

use super::encoder::{self, CodecDevice, ControlSetting, EncodeParams, EncoderChoice};
use super::frames::{self, BufferMeta, H264Buffers, TimeNote, Timeline};
use super::hardware::{self, HardwareEncoder, HwProblem};
use super::mjpeg;
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
/// `VIDIOC_DQBUF` failures in a row (other than `ENODEV`, which ends the run at once) before
/// the run is failed and the device reopened.
const MAX_DEQUEUE_ERRORS: u32 = 3;

/// The capture loop's timing and buffer count (the tests shorten the watchdog).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub poll: Duration,
    pub stall: Duration,
    pub buffers: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            poll: POLL_TIMEOUT,
            stall: STALL_TIMEOUT,
            buffers: CAPTURE_BUFFERS,
        }
    }
}

fn is_errno(e: &io::Error, n: i32) -> bool {
    e.raw_os_error() == Some(n)
}

/// Opens a node (and reads its capabilities), with errors that say what to do.
pub fn open(path: &Path) -> Result<V4l2Device, String> {
    if !path.exists() {
        return Err(format!(
            "no such device {}: is the camera plugged in? run `pinhole probe` to list video devices",
            path.display()
        ));
    }
    V4l2Device::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => format!(
            "cannot open {}: permission denied (add the user running pinhole to the `video` group)",
            path.display()
        ),
        _ if is_errno(&e, nix::libc::ENOTTY) => format!(
            "{} is not a V4L2 device (VIDIOC_QUERYCAP: {e}); run `pinhole probe` to list video devices",
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

fn interval(f: Fraction) -> Interval {
    Interval {
        num: f.num,
        den: f.den,
    }
}

/// The capture queue's formats, sizes and rates.
pub fn capture_formats<B: Backend>(dev: &mut B) -> Result<Vec<FormatCaps>, String> {
    let descs = dev
        .format_descs(Queue::Capture)
        .map_err(|e| format!("VIDIOC_ENUM_FMT failed: {e}"))?;
    let mut out = Vec::new();
    for d in descs {
        let mut sizes = Vec::new();
        // A format without sizes (some M2M capture queues) is listed without them.
        for fs in dev.frame_sizes(d.fourcc).unwrap_or_default() {
            let (size, probe_at) = match fs {
                FrameSize::Discrete { width, height } => {
                    (SizeRange::Discrete { width, height }, (width, height))
                }
                FrameSize::Stepwise {
                    min_width,
                    max_width,
                    step_width,
                    min_height,
                    max_height,
                    step_height,
                } => (
                    SizeRange::Stepwise {
                        min_width,
                        max_width,
                        step_width,
                        min_height,
                        max_height,
                        step_height,
                    },
                    (max_width, max_height),
                ),
            };
            let intervals = dev
                .frame_intervals(d.fourcc, probe_at.0, probe_at.1)
                .unwrap_or_default()
                .into_iter()
                .map(|i| match i {
                    FrameInterval::Discrete(f) => IntervalRange::Discrete(interval(f)),
                    FrameInterval::Stepwise { min, max } => IntervalRange::Stepwise {
                        min: interval(min),
                        max: interval(max),
                    },
                })
                .collect();
            sizes.push(SizeCaps { size, intervals });
        }
        out.push(FormatCaps {
            fourcc: d.fourcc,
            description: d.description,
            sizes,
        });
    }
    Ok(out)
}

/// The OUTPUT queue's formats (what an M2M device takes in).
pub fn output_formats<B: Backend>(dev: &mut B) -> Vec<Fourcc> {
    dev.formats(Queue::Output).unwrap_or_default()
}

/// Every M2M node, described for [`encoder::select_encoder`]. Nodes that fail to open are
/// skipped (a camera in use elsewhere is no encoder anyway).
pub fn codec_devices(skip: &Path) -> Vec<CodecDevice> {
    let mut out = Vec::new();
    for path in video_nodes() {
        if path == skip {
            continue;
        }
        let Ok(mut dev) = open(&path) else { continue };
        let caps = dev.caps().clone();
        if !caps.is_m2m() {
            continue;
        }
        out.push(CodecDevice {
            path: path.clone(),
            driver: caps.driver,
            card: caps.card,
            caps: caps.caps,
            capture_formats: dev.formats(Queue::Capture).unwrap_or_default(),
            output_formats: output_formats(&mut dev),
        });
    }
    out
}

/// Sets each control on its own (see [`hardware::apply_controls`]). Returns how many were
/// accepted.
pub fn apply_controls<B: Backend>(dev: &mut B, what: &str, controls: &[ControlSetting]) -> usize {
    hardware::apply_controls(what, controls, |c| {
        let v = i32::try_from(c.value)
            .map_err(|_| format!("value {} does not fit the control's 32 bits", c.value))?;
        dev.set_control(c.id, v).map_err(|e| e.to_string())
    })
}

/// `CLOCK_MONOTONIC` in µs, the clock V4L2 stamps buffers with.
fn monotonic_us() -> i64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() * 1_000_000 + t.tv_nsec() / 1_000)
        .unwrap_or(0)
}

/// `CLOCK_REALTIME − CLOCK_MONOTONIC` in µs, now.
fn unix_offset_us() -> i64 {
    let real = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
        .map(|t| t.tv_sec() * 1_000_000 + t.tv_nsec() / 1_000)
        .unwrap_or(0);
    real - monotonic_us()
}

/// What the capture loop hands on.
#[derive(Debug)]
pub enum Event {
    Frame(media::segmenter::Frame),
    Running {
        plan: Plan,
        encoder: String,
    },
    /// A buffer that gave no frame (corrupt, short, an undecodable JPEG, a failed
    /// `DQBUF`…); the run goes on. Logged by the loop (once per kind).
    Dropped {
        what: String,
    },
}

/// Dropped buffers, counted per kind, so each kind is logged once per run at warn (and the
/// rest at debug) however often it happens.
#[derive(Default)]
struct Problems {
    /// Message with its digits removed (offsets and sizes vary within a kind) → count.
    kinds: HashMap<String, u64>,
    total: u64,
}

/// Different kinds remembered at most (a driver producing endless new messages cannot grow
/// the map without bound).
const MAX_KINDS: usize = 64;

impl Problems {
    fn dropped(&mut self, name: &str, what: String, emit: &mut dyn FnMut(Event)) {
        self.total += 1;
        let kind: String = what.chars().filter(|c| !c.is_ascii_digit()).collect();
        let known = self.kinds.len();
        let first = match self.kinds.entry(kind) {
            Entry::Occupied(mut n) => {
                *n.get_mut() += 1;
                false
            }
            Entry::Vacant(v) if known < MAX_KINDS => {
                v.insert(1);
                true
            }
            Entry::Vacant(_) => false,
        };
        if first {
            tracing::warn!(source = "v4l2", device = name, total = self.total,
                "dropped a frame: {what} (further frames dropped for this reason are logged at debug)");
        } else {
            tracing::debug!(
                source = "v4l2",
                device = name,
                total = self.total,
                "dropped a frame: {what}"
            );
        }
        emit(Event::Dropped { what });
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
    let dev = open(path)?;
    capture(dev, opts, stop, emit, Limits::default(), &|| {
        codec_devices(path)
    })
}

/// How raw buffers become the I420 picture the encoder takes.
enum RawInput {
    Yuv {
        format: negotiate::RawFormat,
        stride: usize,
        frame_len: usize,
    },
    Mjpeg,
}

/// How buffers become access units in this run.
enum Pipeline {
    Native(H264Buffers),
    Raw {
        input: RawInput,
        picture: I420,
        encoder: RawEncoder,
    },
}

/// Who encodes raw frames.
enum RawEncoder {
    Software(Box<SoftwareEncoder>),
    Hardware(Box<HardwareEncoder>),
}

/// The encoder for raw frames: the M2M hardware if chosen and it can be set up, else OpenH264.
fn raw_encoder(
    opts: &V4l2Options,
    name: &str,
    (width, height): (u32, u32),
    interval: Option<Interval>,
    fps: f64,
    params: EncodeParams,
    codecs: &dyn Fn() -> Vec<CodecDevice>,
) -> Result<RawEncoder, String> {
    let choice =
        encoder::select_encoder(&opts.encoder, &codecs()).map_err(|e| format!("{name}: {e}"))?;
    let hw = match &choice {
        EncoderChoice::M2m {
            path: enc,
            card,
            reason,
        } => match HardwareEncoder::open(enc, width, height, interval, params) {
            Ok(hw) => Some(hw),
            // encoder=auto: a hardware encoder that cannot be set up is not worth failing the
            // camera for.
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
    Ok(match hw {
        Some(hw) => RawEncoder::Hardware(Box::new(hw)),
        None => RawEncoder::Software(Box::new(
            SoftwareEncoder::new(width, height, fps, params).map_err(|e| format!("{name}: {e}"))?,
        )),
    })
}

/// Captures from an opened node until `stop`: negotiation, buffers and the loop, over any
/// [`Backend`] (the real node in [`run`], the stand-in camera in the tests). `codecs` lists
/// the M2M encoders, asked only when raw frames need one.
pub fn capture<B: Backend>(
    mut dev: B,
    opts: &V4l2Options,
    stop: &AtomicBool,
    emit: &mut dyn FnMut(Event),
    limits: Limits,
    codecs: &dyn Fn() -> Vec<CodecDevice>,
) -> Result<(), String> {
    let name = opts.path.display().to_string();
    let name = name.as_str();
    let caps: Caps = dev.caps().clone();
    if !caps.is_capture() || !caps.can_stream() {
        return Err(format!(
            "{name} ({}, {}) is not a streaming video capture device; run `pinhole probe` to find the camera's node",
            caps.card, caps.driver
        ));
    }
    let formats = capture_formats(&mut dev).map_err(|e| format!("{name}: {e}"))?;
    let plan = negotiate::negotiate(&formats, opts.want).map_err(|e| format!("{name}: {e}"))?;
    for note in &plan.notes {
        tracing::info!(source = "v4l2", device = %name, "{note}");
    }

    // Apply the plan; drivers may adjust the size, which is then what is captured.
    let want_fmt = Format {
        width: plan.width,
        height: plan.height,
        fourcc: plan.fourcc,
        planes: Vec::new(),
    };
    let got = dev.set_format(Queue::Capture, &want_fmt).map_err(|e| {
        format!(
            "{name}: VIDIOC_S_FMT {} {}x{} failed: {e}",
            plan.fourcc, plan.width, plan.height
        )
    })?;
    if got.fourcc != plan.fourcc {
        return Err(format!(
            "{name}: asked for {} but the driver set {}",
            plan.fourcc, got.fourcc
        ));
    }
    let &[plane_fmt] = got.planes.as_slice() else {
        return Err(format!(
            "{name}: the driver set {got} in {} planes; pinhole reads formats that fit one plane (YUYV, NV12, YU12, MJPG, H264)",
            got.planes.len()
        ));
    };
    let (width, height) = (got.width, got.height);
    let mut interval = plan.interval;
    if let Some(i) = plan.interval {
        match dev.set_capture_interval(Fraction {
            num: i.num,
            den: i.den,
        }) {
            Ok(Some(f)) => interval = Some(self::interval(f)),
            Ok(None) => {
                tracing::info!(source = "v4l2", device = %name, "the driver cannot set a frame rate; using its own")
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

    let size = (width, height);
    let mut pipeline = match plan.delivery {
        Delivery::H264 => {
            // A UVC H.264 camera is its own encoder: ask it for the streaming settings and an
            // IDR now (cameras that lack these controls ignore them).
            let mut controls = encoder::streaming_controls(params);
            controls.push(encoder::force_key_frame());
            apply_controls(&mut dev, name, &controls);
            Pipeline::Native(H264Buffers::new())
        }
        Delivery::Raw { format } => {
            let stride = plane_fmt.bytesperline as usize;
            Pipeline::Raw {
                input: RawInput::Yuv {
                    format,
                    stride,
                    frame_len: yuv::frame_len(format, width as usize, height as usize, stride),
                },
                picture: I420::new(width as usize, height as usize),
                encoder: raw_encoder(opts, name, size, interval, fps, params, codecs)?,
            }
        }
        Delivery::Mjpeg => Pipeline::Raw {
            input: RawInput::Mjpeg,
            picture: I420::new(width as usize, height as usize),
            encoder: raw_encoder(opts, name, size, interval, fps, params, codecs)?,
        },
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

    // MMAP buffers, all queued, then stream.
    let gone = |e: &io::Error| {
        format!("{name} is gone (ENODEV: {e}; unplugged, or its driver was reset); reopening it when it is back")
    };
    let buffers = dev.allocate(Queue::Capture, limits.buffers).map_err(|e| {
        format!(
            "{name}: requesting {} mmap buffers failed: {e}",
            limits.buffers
        )
    })?;
    if buffers.is_empty() {
        return Err(format!("{name}: the driver granted no capture buffers"));
    }
    for index in 0..buffers.len() {
        dev.queue(Queue::Capture, index, &[], 0)
            .map_err(|e| format!("{name}: VIDIOC_QBUF of buffer {index} failed: {e}"))?;
    }
    dev.stream(Queue::Capture, true)
        .map_err(|e| format!("{name}: VIDIOC_STREAMON failed: {e}"))?;
    let looped = capture_loop(
        &mut dev,
        name,
        opts,
        stop,
        emit,
        limits,
        buffers.len(),
        &mut pipeline,
        (width, height, fps, params),
        interval,
        &gone,
    );
    // Buffers go back to the application (and are unmapped when the node is dropped).
    if let Err(e) = dev.stream(Queue::Capture, false) {
        tracing::debug!(source = "v4l2", device = %name, error = %e, "VIDIOC_STREAMOFF failed");
    }
    looped
}

#[allow(clippy::too_many_arguments)]
fn capture_loop<B: Backend>(
    dev: &mut B,
    name: &str,
    opts: &V4l2Options,
    stop: &AtomicBool,
    emit: &mut dyn FnMut(Event),
    limits: Limits,
    n_buffers: usize,
    pipeline: &mut Pipeline,
    (width, height, fps, params): (u32, u32, f64, EncodeParams),
    interval: Option<Interval>,
    gone: &dyn Fn(&io::Error) -> String,
) -> Result<(), String> {
    let mut timeline = Timeline::new(interval.and_then(Interval::ticks_90k));
    let mut problems = Problems::default();
    let mut last_frame = Instant::now();
    let mut dropped_total: u64 = 0;
    let mut dequeue_errors: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        let ready = match dev.wait(limits.poll) {
            Ok(r) => r,
            Err(e) if is_errno(&e, nix::libc::ENODEV) => return Err(gone(&e)),
            Err(e) => return Err(format!("{name}: poll failed: {e}")),
        };
        let d = match dev.dequeue(Queue::Capture) {
            Ok(Some(d)) => {
                dequeue_errors = 0;
                d
            }
            Ok(None) => {
                if ready.error {
                    return Err(format!(
                        "{name}: the capture queue reports an error (POLLERR) and has no frame; reopening the device"
                    ));
                }
                if last_frame.elapsed() >= limits.stall {
                    return Err(format!(
                        "{name}: no frames for {:.1} s (the camera stopped delivering); reopening the device",
                        limits.stall.as_secs_f64()
                    ));
                }
                continue;
            }
            Err(e) if is_errno(&e, nix::libc::ENODEV) => return Err(gone(&e)),
            Err(e) => {
                dequeue_errors += 1;
                if dequeue_errors >= MAX_DEQUEUE_ERRORS {
                    return Err(format!(
                        "{name}: VIDIOC_DQBUF failed {dequeue_errors} times in a row (last: {e}); reopening the device"
                    ));
                }
                problems.dropped(name, format!("VIDIOC_DQBUF failed: {e}"), emit);
                continue;
            }
        };
        last_frame = Instant::now();
        if d.index >= n_buffers {
            return Err(format!(
                "{name}: the driver returned buffer {} but granted {n_buffers}; reopening the device",
                d.index
            ));
        }
        let arrival = monotonic_us();
        let produced = {
            let p = d.planes.first().copied().unwrap_or_default();
            let plane = dev.plane(Queue::Capture, d.index, 0).unwrap_or(&[]);
            let data = plane.get(p.data_offset as usize..).unwrap_or(&[]);
            let meta = BufferMeta {
                bytesused: p.bytesused.saturating_sub(p.data_offset),
                length: data.len(),
                flags: d.flags,
                timestamp_us: d.timestamp_us,
                sequence: d.sequence,
            };
            process(
                pipeline,
                data,
                &meta,
                arrival,
                &mut timeline,
                name,
                opts,
                (width, height, fps, params),
            )
        };
        // The buffer goes back to the driver whatever became of its contents.
        if let Err(e) = dev.queue(Queue::Capture, d.index, &[], 0) {
            if is_errno(&e, nix::libc::ENODEV) {
                return Err(gone(&e));
            }
            return Err(format!(
                "{name}: VIDIOC_QBUF of buffer {} failed: {e}; reopening the device",
                d.index
            ));
        }
        let (au, stamp, note) = match produced {
            Ok(Some(x)) => x,
            Ok(None) => continue,
            Err(Problem::Frame(what)) => {
                problems.dropped(name, what, emit);
                continue;
            }
            Err(Problem::Fatal(e)) => return Err(e),
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
    if problems.total > 0 {
        tracing::info!(source = "v4l2", device = %name, dropped = problems.total, "capture stopped");
    }
    Ok(())
}

/// Why a buffer gave no access unit.
enum Problem {
    /// This frame is lost; the run goes on.
    Frame(String),
    /// The run ends (the supervisor reopens the device).
    Fatal(String),
}

type Produced = Option<(media::h264::AccessUnit, frames::Stamp, Option<TimeNote>)>;

/// One dequeued buffer through the pipeline: `Ok(None)` when it made no access unit of its
/// own (parameter sets only, an encoder that held the frame).
#[allow(clippy::too_many_arguments)]
fn process(
    pipeline: &mut Pipeline,
    data: &[u8],
    meta: &BufferMeta,
    arrival: i64,
    timeline: &mut Timeline,
    name: &str,
    opts: &V4l2Options,
    (width, height, fps, params): (u32, u32, f64, EncodeParams),
) -> Result<Produced, Problem> {
    let frame = |e: &dyn std::fmt::Display| Problem::Frame(e.to_string());
    match pipeline {
        Pipeline::Native(buffers) => {
            let used = frames::check_buffer(meta).map_err(|e| frame(&e))?;
            let bytes = data.get(..used).unwrap_or(data);
            let Some(au) = buffers.push(bytes).map_err(|e| frame(&e))? else {
                // Parameter sets only: they go in front of the next picture.
                return Ok(None);
            };
            let (stamp, note) = timeline.stamp(meta, arrival, unix_offset_us());
            Ok(Some((au, stamp, note)))
        }
        Pipeline::Raw {
            input,
            picture,
            encoder,
        } => {
            match input {
                RawInput::Yuv {
                    format,
                    stride,
                    frame_len,
                } => {
                    let used = frames::check_raw_buffer(meta, *frame_len, width, height)
                        .map_err(|e| frame(&e))?;
                    let bytes = data.get(..used).unwrap_or(data);
                    yuv::convert(*format, bytes, *stride, picture).map_err(|e| frame(&e))?;
                }
                RawInput::Mjpeg => {
                    let used = frames::check_buffer(meta).map_err(|e| frame(&e))?;
                    let bytes = data.get(..used).unwrap_or(data);
                    let decoded = mjpeg::decode(bytes)
                        .map_err(|e| Problem::Frame(format!("undecodable MJPEG frame: {e}")))?;
                    if (decoded.width, decoded.height) != (width as usize, height as usize) {
                        return Err(Problem::Frame(format!(
                            "MJPEG frame is {}x{}, the negotiated size is {width}x{height}",
                            decoded.width, decoded.height
                        )));
                    }
                    *picture = decoded;
                }
            }
            let (stamp, note) = timeline.stamp(meta, arrival, unix_offset_us());
            let encoded = match encoder {
                RawEncoder::Software(sw) => sw
                    .encode(picture, stamp.dts_90k / 90)
                    .map_err(|e| HwProblem::Fatal(format!("{name}: {e}"))),
                // The camera buffer's own time goes to the encoder (it only matches buffers
                // by it); media time comes from the timeline as for UVC H.264.
                RawEncoder::Hardware(hw) => hw.encode(picture, meta.timestamp_us),
            };
            match encoded {
                Ok(Some(au)) => Ok(Some((au, stamp, note))),
                // OpenH264 is not configured to skip, and an M2M encoder's headers-only
                // buffer goes in front of the next picture; if either happens, the timeline
                // shows a short gap.
                Ok(None) => Ok(None),
                Err(HwProblem::Lost(e)) => Err(Problem::Frame(e)),
                // encoder=auto: a hardware encoder that broke mid-stream is replaced by
                // OpenH264 for the rest of this run (its first frame is an IDR with new
                // parameter sets, so viewers get a new init segment) rather than failing the
                // camera; the next run tries the hardware again.
                Err(HwProblem::Fatal(e))
                    if matches!(encoder, RawEncoder::Hardware(_))
                        && opts.encoder == encoder::EncoderPref::Auto =>
                {
                    tracing::warn!(source = "v4l2", device = %name,
                        "hardware encoder failed, encoding with OpenH264 for the rest of this run: {e}");
                    *encoder = RawEncoder::Software(Box::new(
                        SoftwareEncoder::new(width, height, fps, params)
                            .map_err(|e| Problem::Fatal(format!("{name}: {e}")))?,
                    ));
                    Ok(None)
                }
                Err(HwProblem::Fatal(e)) => Err(Problem::Fatal(e)),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The capture loop driven through the `v4l2` crate's Backend seam by its stand-in camera
    //! driver (`v4l2::standin::camera`): these machines have no `/dev/video*` and cannot load
    //! vivid or v4l2loopback, so a model of a UVC-like driver answers every ioctl. Everything
    //! after the seam — negotiation, buffer handling, conversion, OpenH264, the timeline —
    //! is the real code.
    use super::*;
    use crate::source::v4l2::encoder::cid;
    use ::v4l2::standin::camera::{CamFormat, CamTs, Camera, Shot};

    /// What one capture run produced.
    #[derive(Default)]
    struct Outcome {
        result: Option<Result<(), String>>,
        frames: Vec<media::segmenter::Frame>,
        dropped: Vec<String>,
        plan: Option<Plan>,
        encoder: String,
        took: Duration,
    }

    const FAST: Limits = Limits {
        poll: Duration::from_millis(20),
        stall: Duration::from_millis(300),
        buffers: 4,
    };

    /// Captures from `cam` until `frames` frames or `dropped` dropped buffers (or the run
    /// ends by itself).
    fn capture_from(cam: &mut Camera, uri: &str, frames: usize, dropped: usize) -> Outcome {
        let opts = V4l2Options::parse(uri).unwrap();
        let stop = AtomicBool::new(false);
        let mut out = Outcome::default();
        let started = Instant::now();
        let result = capture(
            &mut *cam,
            &opts,
            &stop,
            &mut |e| {
                match e {
                    Event::Frame(f) => out.frames.push(f),
                    Event::Dropped { what } => out.dropped.push(what),
                    Event::Running { plan, encoder } => {
                        out.plan = Some(plan);
                        out.encoder = encoder;
                    }
                }
                if out.frames.len() >= frames || out.dropped.len() >= dropped {
                    stop.store(true, Ordering::Relaxed);
                }
            },
            FAST,
            &Vec::new,
        );
        out.took = started.elapsed();
        out.result = Some(result);
        out
    }

    fn grey_yuyv(w: usize, h: usize) -> Vec<u8> {
        vec![0x80; w * h * 2]
    }

    fn yuyv_camera(script: impl FnMut(u64) -> Shot + Send + 'static) -> Camera {
        Camera::uvc(
            vec![
                CamFormat::discrete(Fourcc::MJPG, &[(1280, 720)], &[30]),
                CamFormat::discrete(Fourcc::YUYV, &[(160, 120), (320, 240)], &[30, 15]),
            ],
            Box::new(script),
        )
    }

    fn count(log: &[String], prefix: &str) -> usize {
        log.iter().filter(|l| l.starts_with(prefix)).count()
    }

    #[test]
    fn a_yuyv_camera_is_negotiated_captured_through_mmap_buffers_and_encoded() {
        // Stand-in UVC camera (no /dev/video* here): MJPEG at 720p, YUYV at 160x120 and
        // 320x240, 30 or 15 fps; the URI asks for 160x120 at 15 fps.
        let mut cam = yuyv_camera(|_| Shot::frame(grey_yuyv(160, 120)));
        let out = capture_from(&mut cam, "/dev/video0?size=160x120&fps=15", 10, 1);
        assert_eq!(out.result, Some(Ok(())));
        let plan = out.plan.unwrap();
        assert_eq!(
            (plan.fourcc, plan.width, plan.height),
            (Fourcc::YUYV, 160, 120)
        );
        assert_eq!(plan.interval, Some(Interval::from_fps(15)));
        assert_eq!(out.encoder, "OpenH264 (software)");
        // The ioctls, in the order a V4L2 application makes them.
        let log = &cam.log;
        let pos = |op: &str| log.iter().position(|l| l.starts_with(op)).unwrap();
        assert!(log.contains(&"S_FMT YUYV 160x120".to_string()), "{log:?}");
        assert!(log.contains(&"S_PARM 1/15".to_string()), "{log:?}");
        assert!(pos("ENUM_FMT") < pos("S_FMT") && pos("S_FMT") < pos("S_PARM"));
        assert!(pos("S_PARM") < pos("REQBUFS 4") && pos("REQBUFS 4") < pos("STREAMON"));
        assert!(pos("QBUF 3") < pos("STREAMON"), "all buffers queued first");
        // Every dequeued buffer went back, and STREAMOFF returned them all.
        assert_eq!(count(log, "QBUF"), 4 + count(log, "DQBUF"));
        assert!(log.last().unwrap() == "STREAMOFF" && !cam.is_streaming());
        assert_eq!(cam.owned_buffers(), 4);
        // Ten encoded frames on an exact 15 fps grid, the first an IDR.
        assert_eq!(out.frames.len(), 10);
        assert!(out.frames[0].au.is_idr && out.frames[0].au.sps().is_some());
        for w in out.frames.windows(2) {
            assert_eq!(w[1].dts_90k, w[0].dts_90k + u64::from(w[0].duration_90k));
            assert!(
                (5_900..=6_100).contains(&w[0].duration_90k),
                "{}",
                w[0].duration_90k
            );
        }
        assert!(out.dropped.is_empty(), "{:?}", out.dropped);
    }

    #[test]
    fn monotonic_buffer_timestamps_are_used_and_copied_zero_ones_fall_back_to_arrival() {
        // Stand-in camera stamping CLOCK_MONOTONIC at exactly 30 fps (frames are made as fast
        // as the loop asks, so arrival times would be much closer together).
        let mut cam = yuyv_camera(|_| Shot::frame(grey_yuyv(160, 120)));
        let out = capture_from(&mut cam, "/dev/video0?size=160x120&fps=30", 6, 1);
        assert_eq!(out.result, Some(Ok(())));
        // Media time follows the buffer stamps exactly (arrival times, set by how fast the
        // loop and OpenH264 run, would not fall on the 3000-tick grid).
        for (i, f) in out.frames.iter().enumerate() {
            assert_eq!(f.dts_90k, 3_000 * i as u64, "frame {i}");
        }
        for w in out.frames.windows(2) {
            let d = w[1].capture_unix_us as i64 - w[0].capture_unix_us as i64;
            // 1/30 s apart in wall-clock time, give or take the REALTIME−MONOTONIC offset,
            // read per frame (a busy machine can preempt between the two clock reads).
            assert!((28_333..=38_333).contains(&d), "{d}");
        }
        // A driver with V4L2_BUF_FLAG_TIMESTAMP_COPY hands back what was queued (0 here): not
        // a capture time, so arrival times are used and media time still advances.
        let mut cam = yuyv_camera(|_| Shot::Frame {
            data: grey_yuyv(160, 120),
            ts: CamTs::Copy,
            flags: 0,
            dropped: 0,
        });
        let out = capture_from(&mut cam, "/dev/video0?size=160x120&fps=30", 4, 1);
        assert_eq!(out.result, Some(Ok(())));
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        for f in &out.frames {
            assert!(
                (now_us - f.capture_unix_us as i64).abs() < 10_000_000,
                "{}",
                f.capture_unix_us
            );
        }
        assert!(out.frames.windows(2).all(|w| w[1].dts_90k > w[0].dts_90k));
    }

    #[test]
    fn a_multi_planar_nv12_camera_is_captured_too() {
        // Stand-in for a SoC camera node that offers only the multi-planar API.
        let mut cam = Camera::mplane(
            vec![CamFormat::discrete(Fourcc::NV12, &[(160, 120)], &[30])],
            Box::new(|_| Shot::frame(vec![0x80; 160 * 120 * 3 / 2])),
        );
        let out = capture_from(&mut cam, "/dev/video0", 3, 1);
        assert_eq!(out.result, Some(Ok(())));
        assert_eq!(out.frames.len(), 3);
        assert_eq!(out.plan.unwrap().fourcc, Fourcc::NV12);
    }

    #[test]
    fn an_h264_camera_gets_its_controls_and_its_buffers_become_access_units() {
        // Stand-in UVC 1.5 camera encoding H.264 itself: SPS, PPS and an IDR, then P slices.
        let annexb = |nals: &[&[u8]]| {
            let mut v = Vec::new();
            for n in nals {
                v.extend_from_slice(&[0, 0, 0, 1]);
                v.extend_from_slice(n);
            }
            v
        };
        let sps: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0x8c, 0x8d, 0x40];
        let pps: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
        let idr = annexb(&[sps, pps, &[0x65, 0x88, 0x84, 0x00, 0x33]]);
        let p = annexb(&[&[0x41, 0x9a, 0x02, 0x03]]);
        let mut cam = Camera::uvc(
            vec![CamFormat::discrete(Fourcc::H264, &[(640, 480)], &[30])],
            Box::new(move |n| Shot::frame(if n % 30 == 0 { idr.clone() } else { p.clone() })),
        );
        cam.controls = vec![(cid::GOP_SIZE, 0), (cid::FORCE_KEY_FRAME, 0)];
        let out = capture_from(&mut cam, "/dev/video0", 5, 1);
        assert_eq!(out.result, Some(Ok(())));
        assert_eq!(out.encoder, "camera (H.264)");
        assert!(out.frames[0].au.is_idr && out.frames[0].au.sps().is_some());
        assert!(out.frames[1..].iter().all(|f| !f.au.is_idr));
        // The GOP control the camera has was set (to one second at 30 fps); the ones it
        // lacks were refused without stopping the others.
        assert_eq!(cam.control(cid::GOP_SIZE).unwrap(), 30);
        assert!(count(&cam.log, "S_CTRL") > 2, "{:?}", cam.log);
    }

    #[test]
    fn a_dequeue_error_or_a_corrupt_buffer_loses_one_frame_but_a_persistent_one_ends_the_run() {
        // Stand-in camera whose DQBUF fails once with EIO and flags one buffer as corrupt.
        let mut cam = yuyv_camera(|n| match n {
            2 => Shot::DequeueFails(nix::libc::EIO),
            4 => Shot::Frame {
                data: grey_yuyv(160, 120),
                ts: CamTs::Monotonic,
                flags: ::v4l2::backend::flags::ERROR,
                dropped: 0,
            },
            _ => Shot::frame(grey_yuyv(160, 120)),
        });
        let out = capture_from(&mut cam, "/dev/video0?size=160x120", 6, 10);
        assert_eq!(out.result, Some(Ok(())));
        assert_eq!(out.frames.len(), 6);
        assert_eq!(out.dropped.len(), 2, "{:?}", out.dropped);
        assert!(
            out.dropped[0].contains("VIDIOC_DQBUF failed"),
            "{:?}",
            out.dropped
        );
        assert!(out.dropped[1].contains("corrupt"), "{:?}", out.dropped);
        // DQBUF failing every time from the third frame on: the run ends, to be reopened.
        let mut cam = yuyv_camera(|n| {
            if n < 2 {
                Shot::frame(grey_yuyv(160, 120))
            } else {
                Shot::DequeueFails(nix::libc::EIO)
            }
        });
        let out = capture_from(&mut cam, "/dev/video0?size=160x120", 100, 100);
        let err = out.result.unwrap().unwrap_err();
        assert!(
            err.contains("/dev/video0: VIDIOC_DQBUF failed 3 times in a row"),
            "{err}"
        );
        assert_eq!(out.frames.len(), 2);
    }

    #[test]
    fn a_camera_that_vanishes_mid_stream_ends_the_run_with_a_clear_error() {
        // Stand-in camera unplugged after five frames: POLLERR, then ENODEV from every ioctl.
        let mut cam = yuyv_camera(|n| {
            if n < 5 {
                Shot::frame(grey_yuyv(160, 120))
            } else {
                Shot::Vanish
            }
        });
        let out = capture_from(&mut cam, "/dev/video0?size=160x120", 100, 100);
        let err = out.result.unwrap().unwrap_err();
        assert!(
            err.contains("/dev/video0 is gone (ENODEV") && err.contains("unplugged"),
            "{err}"
        );
        assert_eq!(out.frames.len(), 5);
    }

    #[test]
    fn a_camera_that_stops_delivering_trips_the_watchdog() {
        // Stand-in camera that goes silent after three frames (a wedged UVC camera); the
        // watchdog is 0.3 s here (5 s in a real run).
        let mut cam = yuyv_camera(|n| {
            if n < 3 {
                Shot::frame(grey_yuyv(160, 120))
            } else {
                Shot::Nothing
            }
        });
        let out = capture_from(&mut cam, "/dev/video0?size=160x120", 100, 100);
        let err = out.result.unwrap().unwrap_err();
        assert!(
            err.contains("no frames for 0.3 s") && err.contains("reopening"),
            "{err}"
        );
        assert_eq!(out.frames.len(), 3);
        assert!(out.took < Duration::from_secs(5), "{:?}", out.took);
    }

    #[test]
    fn garbage_and_truncated_mjpeg_frames_are_dropped_one_by_one_without_ending_the_run() {
        // Stand-in MJPEG-only camera sending bytes that are no JPEG and a JPEG cut off after
        // its first marker.
        let mut cam = Camera::uvc(
            vec![CamFormat::discrete(Fourcc::MJPG, &[(160, 120)], &[30])],
            Box::new(|n| {
                Shot::frame(if n % 2 == 0 {
                    vec![0xde; 700]
                } else {
                    vec![0xff, 0xd8, 0xff, 0xdb, 0x00]
                })
            }),
        );
        let out = capture_from(&mut cam, "/dev/video0", 100, 6);
        assert_eq!(out.result, Some(Ok(())));
        assert_eq!(out.plan.unwrap().delivery, Delivery::Mjpeg);
        assert_eq!(out.dropped.len(), 6);
        assert!(
            out.dropped
                .iter()
                .all(|d| d.starts_with("undecodable MJPEG frame")),
            "{:?}",
            out.dropped
        );
        assert!(out.frames.is_empty());
    }

    #[test]
    fn an_m2m_node_or_a_camera_without_usable_formats_is_refused_clearly() {
        // Stand-in nodes: an encoder given as the camera, and a Bayer-only sensor.
        let mut enc = yuyv_camera(|_| Shot::Nothing);
        enc.caps.caps = 0x0420_4000;
        let err = capture_from(&mut enc, "/dev/video11", 1, 1)
            .result
            .unwrap()
            .unwrap_err();
        assert!(
            err.contains("is not a streaming video capture device") && err.contains("probe"),
            "{err}"
        );
        let mut bayer = Camera::uvc(
            vec![CamFormat::discrete(
                Fourcc(*b"pRAA"),
                &[(1640, 1232)],
                &[30],
            )],
            Box::new(|_| Shot::Nothing),
        );
        let err = capture_from(&mut bayer, "/dev/video0", 1, 1)
            .result
            .unwrap()
            .unwrap_err();
        assert!(err.contains("pRAA") && err.contains("usable"), "{err}");
        assert!(!bayer.log.iter().any(|l| l.starts_with("REQBUFS")));
    }
}
