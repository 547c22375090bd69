//! [`Encoder`]: the stateful V4L2 encoder interface driven one frame at a time, over any
//! [`Backend`]. Everything here is plain code (no ioctls): setup order, buffer ownership,
//! timestamp matching and error mapping are tested with a stand-in driver.
//!
//! Setup follows the kernel's stateful encoder interface: H.264 on CAPTURE first, then the raw
//! format on OUTPUT (YU12, else NV12, YM12, NM12), the frame interval, MMAP buffers on both
//! queues; controls may be set before the first frame; streaming starts with the first frame.
//!
//! Per frame: the I420 picture is copied into a free OUTPUT buffer, queued with its timestamp
//! (made strictly increasing), and the call waits (bounded by [`Config::timeout`]) for the
//! CAPTURE buffer that carries the encoded picture — found by its timestamp, which encoders
//! copy from OUTPUT to CAPTURE (`V4L2_BUF_FLAG_TIMESTAMP_COPY`). A buffer without a picture
//! (SPS/PPS alone: bcm2835-codec sends its codec header that way) is put in front of the
//! picture. Exactly one frame is in flight: no frame of added latency.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use crate::backend::{flags, Backend, Caps, Dequeued, Format, Fourcc, PlaneFormat, Queue};
use crate::layout::{self, Layout, LayoutError, Picture};

/// `V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME` (`linux/v4l2-controls.h`).
pub const CID_FORCE_KEY_FRAME: u32 = 0x0099_09e5;

/// How the encoder is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub width: u32,
    pub height: u32,
    /// Time per frame (`timeperframe`, e.g. `(1, 30)`); `None` leaves the driver's.
    pub frame_interval: Option<(u32, u32)>,
    pub output_buffers: u32,
    pub capture_buffers: u32,
    /// Bytes per CAPTURE buffer; 0 chooses from the size ([`capture_buffer_size`]).
    pub capture_size: u32,
    /// How long one frame may take to come back encoded.
    pub timeout: Duration,
}

impl Config {
    pub fn new(width: u32, height: u32) -> Config {
        Config {
            width,
            height,
            frame_interval: None,
            output_buffers: 3,
            capture_buffers: 3,
            capture_size: 0,
            timeout: Duration::from_secs(1),
        }
    }
}

/// The CAPTURE buffer size for a picture size: an encoded frame must fit in one buffer.
/// rpicam-apps uses 512 KiB; bcm2835-codec defaults to 768 KiB above 720p (Big Buck Bunny's
/// 1080p IDR frames exceed 512 KiB). Half a byte per pixel, at least 512 KiB, covers both.
pub fn capture_buffer_size(width: u32, height: u32) -> u32 {
    let half = u64::from(width) * u64::from(height) / 2;
    half.clamp(512 << 10, 16 << 20) as u32
}

/// One encoded access unit (Annex B; SPS/PPS in front when the encoder sent them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub data: Vec<u8>,
    /// `V4L2_BUF_FLAG_KEYFRAME` on the buffer.
    pub keyframe: bool,
    /// The timestamp the frame was queued with (µs).
    pub timestamp_us: i64,
}

/// Something worth one log line that did not stop encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// `VIDIOC_S_PARM` refused: the encoder's rate control assumes its default rate.
    FrameIntervalNotSet { error: String },
    /// `force_key_frame` refused: the stream starts at the encoder's next periodic IDR.
    IdrRefused { error: String },
    /// An encoded picture for an earlier frame arrived late and was dropped.
    StaleDropped { timestamp_us: i64, bytes: usize },
    /// The driver does not copy OUTPUT timestamps to CAPTURE: buffers are matched by order.
    TimestampsNotCopied,
    /// An empty CAPTURE buffer came back.
    EmptyBuffer,
    /// A CAPTURE buffer without H.264 start codes for no frame in flight was dropped.
    GarbageDropped { bytes: usize },
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::FrameIntervalNotSet { error } => write!(
                f,
                "frame rate not set on the encoder (VIDIOC_S_PARM: {error}); its rate control uses the driver's default"
            ),
            Note::IdrRefused { error } => write!(
                f,
                "force_key_frame refused ({error}); viewers wait for the next periodic IDR"
            ),
            Note::StaleDropped {
                timestamp_us,
                bytes,
            } => write!(
                f,
                "dropped a late encoded picture of {bytes} bytes for an earlier frame (timestamp {timestamp_us} µs)"
            ),
            Note::TimestampsNotCopied => f.write_str(
                "the driver does not copy timestamps from OUTPUT to CAPTURE; matching encoded buffers by order",
            ),
            Note::EmptyBuffer => f.write_str("the encoder returned an empty buffer"),
            Note::GarbageDropped { bytes } => {
                write!(f, "dropped a {bytes}-byte encoded buffer without H.264 start codes")
            }
        }
    }
}

/// Why encoding failed. Each names the node, what failed and what to do. Only
/// [`Error::is_transient`] ones leave the encoder usable (one frame lost, an IDR requested).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open {node}: {detail}")]
    Open { node: String, detail: String },
    #[error("{node} ({card}) is not a memory-to-memory H.264 encoder: {why}")]
    NotAnEncoder {
        node: String,
        card: String,
        why: String,
    },
    #[error("{node}: the encoder takes none of YU12, NV12, YM12, NM12 (it offers {offered})")]
    NoRawFormat { node: String, offered: String },
    #[error("{node}: {what} failed: {detail}")]
    Ioctl {
        node: String,
        what: String,
        detail: String,
    },
    #[error("{node}: asked for {want} on the {queue} queue, the driver set {got}; {hint}")]
    FormatRefused {
        node: String,
        queue: Queue,
        want: String,
        got: String,
        hint: &'static str,
    },
    #[error("{node}: {queue} buffers: {source}")]
    Layout {
        node: String,
        queue: Queue,
        source: LayoutError,
    },
    #[error("{node}: {what} within {ms} ms; the encoder is stuck (another program using it, or a firmware fault) and will be reopened")]
    Timeout {
        node: String,
        what: &'static str,
        ms: u128,
    },
    #[error("{node}: the device reports an error (poll: POLLERR); the encoder will be reopened")]
    Device { node: String },
    #[error("{node}: the encoder ended the stream (V4L2_BUF_FLAG_LAST); it will be reopened")]
    Ended { node: String },
    #[error("{node}: the driver flagged the {queue} buffer as corrupt (V4L2_BUF_FLAG_ERROR); one frame lost, IDR requested")]
    Corrupt { node: String, queue: Queue },
    #[error("{node}: the encoded buffer {why}; one frame lost, IDR requested")]
    BadBuffer { node: String, why: String },
}

impl Error {
    /// One frame lost; the encoder goes on (and has asked for an IDR).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Corrupt { .. } | Error::BadBuffer { .. })
    }
}

/// A driver's errno in words, with what to do where there is something to do.
pub fn describe(e: &io::Error) -> String {
    crate::backend::describe_errno(e, "encoder", "choose another encoder")
}

#[derive(Debug, Clone)]
struct Slot {
    queued: bool,
    lengths: Vec<usize>,
}

/// What a CAPTURE buffer holds, as far as matching goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A coded slice (NAL types 1–5).
    Picture,
    /// Start codes, but no slice: SPS/PPS, SEI.
    Headers,
    /// No start code at all.
    Garbage,
}

/// Looks for a slice NAL unit after a start code (stops at the first).
fn classify(data: &[u8]) -> Kind {
    let mut found = false;
    let mut i = 0;
    while i + 3 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            found = true;
            if (1..=5).contains(&(data[i + 3] & 0x1f)) {
                return Kind::Picture;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    if found {
        Kind::Headers
    } else {
        Kind::Garbage
    }
}

/// A V4L2 memory-to-memory H.264 encoder, one frame at a time. Streaming stops on drop (and
/// the device's buffers are unmapped when the backend goes).
pub struct Encoder<B: Backend> {
    backend: B,
    node: String,
    card: String,
    layout: Layout,
    capture_format: Format,
    output: Vec<Slot>,
    capture: Vec<Slot>,
    streaming: bool,
    idr_pending: bool,
    idr_refusal_noted: bool,
    empty_noted: bool,
    last_ts: i64,
    first_ts: Option<i64>,
    by_order: bool,
    timeout: Duration,
    notes: Vec<Note>,
}

impl<B: Backend> fmt::Debug for Encoder<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("node", &self.node)
            .field("input", &self.layout.fourcc)
            .field("streaming", &self.streaming)
            .finish_non_exhaustive()
    }
}

impl Encoder<crate::V4l2Device> {
    /// Opens and sets up the node at `path`.
    pub fn open(path: &std::path::Path, config: &Config) -> Result<Self, Error> {
        let node = path.display().to_string();
        let dev = crate::V4l2Device::open(path).map_err(|e| Error::Open {
            node: node.clone(),
            detail: describe(&e),
        })?;
        Encoder::new(dev, node, config)
    }
}

fn list(v: &[Fourcc]) -> String {
    if v.is_empty() {
        return "nothing".into();
    }
    v.iter()
        .map(Fourcc::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl<B: Backend> Encoder<B> {
    /// Sets up `backend` (named `node` in errors) as an H.264 encoder for `config`.
    pub fn new(mut backend: B, node: String, config: &Config) -> Result<Self, Error> {
        let caps: Caps = backend.caps().clone();
        let not = |why: String| Error::NotAnEncoder {
            node: node.clone(),
            card: caps.card.clone(),
            why,
        };
        if !caps.is_m2m() {
            return Err(not(format!(
                "its capabilities ({:#010x}) have neither V4L2_CAP_VIDEO_M2M nor _MPLANE",
                caps.caps
            )));
        }
        if !caps.can_stream() {
            return Err(not("it has no streaming I/O".into()));
        }
        let ioctl = |what: String| {
            let node = node.clone();
            move |e: io::Error| Error::Ioctl {
                node,
                what,
                detail: describe(&e),
            }
        };
        let coded = backend
            .formats(Queue::Capture)
            .map_err(ioctl("VIDIOC_ENUM_FMT on the CAPTURE queue".into()))?;
        if !coded.contains(&Fourcc::H264) {
            return Err(not(format!(
                "its CAPTURE queue gives {}, not H264",
                list(&coded)
            )));
        }
        let offered = backend
            .formats(Queue::Output)
            .map_err(ioctl("VIDIOC_ENUM_FMT on the OUTPUT queue".into()))?;
        let input = layout::choose(&offered).ok_or_else(|| Error::NoRawFormat {
            node: node.clone(),
            offered: list(&offered),
        })?;
        let (w, h) = (config.width, config.height);

        // CAPTURE first: the stateful encoder interface derives the OUTPUT side from it.
        let capture_size = if config.capture_size == 0 {
            capture_buffer_size(w, h)
        } else {
            config.capture_size
        };
        let want = Format {
            width: w,
            height: h,
            fourcc: Fourcc::H264,
            planes: vec![PlaneFormat {
                bytesperline: 0,
                sizeimage: capture_size,
            }],
        };
        let capture_format = backend
            .set_format(Queue::Capture, &want)
            .map_err(ioctl(format!("VIDIOC_S_FMT on the CAPTURE queue ({want})")))?;
        if capture_format.fourcc != Fourcc::H264 || capture_format.planes.is_empty() {
            return Err(Error::FormatRefused {
                node: node.clone(),
                queue: Queue::Capture,
                want: want.to_string(),
                got: capture_format.to_string(),
                hint: "this node does not encode H.264; choose another encoder",
            });
        }

        let n_planes = match input {
            Fourcc::YM12 => 3,
            Fourcc::NM12 => 2,
            _ => 1,
        };
        let want = Format {
            width: w,
            height: h,
            fourcc: input,
            planes: vec![PlaneFormat::default(); n_planes],
        };
        let out = backend
            .set_format(Queue::Output, &want)
            .map_err(ioctl(format!("VIDIOC_S_FMT on the OUTPUT queue ({want})")))?;
        if out.fourcc != input || (out.width, out.height) != (w, h) {
            return Err(Error::FormatRefused {
                node: node.clone(),
                queue: Queue::Output,
                want: want.to_string(),
                got: out.to_string(),
                hint: "choose a camera size the encoder supports (e.g. size=1280x720), or encoder=software",
            });
        }
        let layout = Layout::new(&out).map_err(|source| Error::Layout {
            node: node.clone(),
            queue: Queue::Output,
            source,
        })?;

        let mut notes = Vec::new();
        if let Some((num, den)) = config.frame_interval {
            if let Err(e) = backend.set_frame_interval(num, den) {
                notes.push(Note::FrameIntervalNotSet {
                    error: describe(&e),
                });
            }
        }

        let n = config.output_buffers.max(1);
        let out_lengths = backend.allocate(Queue::Output, n).map_err(ioctl(format!(
            "requesting {n} OUTPUT buffers (VIDIOC_REQBUFS, QUERYBUF, mmap)"
        )))?;
        let n = config.capture_buffers.max(1);
        let cap_lengths = backend.allocate(Queue::Capture, n).map_err(ioctl(format!(
            "requesting {n} CAPTURE buffers (VIDIOC_REQBUFS, QUERYBUF, mmap)"
        )))?;
        if out_lengths.is_empty() || cap_lengths.is_empty() {
            return Err(Error::Ioctl {
                node,
                what: "VIDIOC_REQBUFS".into(),
                detail: "the driver granted no buffers".into(),
            });
        }
        for lengths in &out_lengths {
            for i in 0..layout.buffer_planes() {
                let have = lengths.get(i).copied().unwrap_or(0);
                if have < layout.used(i) {
                    return Err(Error::Layout {
                        node,
                        queue: Queue::Output,
                        source: LayoutError::TooSmall {
                            plane: i,
                            have,
                            need: layout.used(i),
                            width: w,
                            height: h,
                        },
                    });
                }
            }
        }
        let slots = |v: Vec<Vec<usize>>| {
            v.into_iter()
                .map(|lengths| Slot {
                    queued: false,
                    lengths,
                })
                .collect()
        };
        Ok(Encoder {
            backend,
            card: caps.card,
            node,
            layout,
            capture_format,
            output: slots(out_lengths),
            capture: slots(cap_lengths),
            streaming: false,
            idr_pending: true,
            idr_refusal_noted: false,
            empty_noted: false,
            last_ts: 0,
            first_ts: None,
            by_order: false,
            timeout: config.timeout,
            notes,
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn card(&self) -> &str {
        &self.card
    }

    /// The raw format frames are fed in (YU12, NV12, YM12 or NM12).
    pub fn input_format(&self) -> Fourcc {
        self.layout.fourcc
    }

    /// The H.264 format the driver set on CAPTURE (its `sizeimage` is the buffer size).
    pub fn capture_format(&self) -> &Format {
        &self.capture_format
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Notes gathered since the last call, for the log.
    pub fn take_notes(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
    }

    /// `VIDIOC_S_CTRL`; `value` must fit 32 bits.
    pub fn set_control(&mut self, id: u32, value: i64) -> Result<(), Error> {
        let detail = match i32::try_from(value) {
            Ok(v) => match self.backend.set_control(id, v) {
                Ok(()) => return Ok(()),
                Err(e) => describe(&e),
            },
            Err(_) => format!("value {value} does not fit the control's 32 bits"),
        };
        Err(Error::Ioctl {
            node: self.node.clone(),
            what: format!("VIDIOC_S_CTRL {id:#010x}={value}"),
            detail,
        })
    }

    /// The next frame is encoded as an IDR (`force_key_frame` before it is queued). Also
    /// done by itself for the first frame and after a lost one.
    pub fn request_idr(&mut self) {
        self.idr_pending = true;
    }

    fn ioctl_err(&self, what: &str, e: &io::Error) -> Error {
        if e.raw_os_error() == Some(nix::libc::EPIPE) {
            return Error::Ended {
                node: self.node.clone(),
            };
        }
        Error::Ioctl {
            node: self.node.clone(),
            what: what.to_string(),
            detail: describe(e),
        }
    }

    fn start(&mut self) -> Result<(), Error> {
        for i in 0..self.capture.len() {
            self.queue_capture(i)?;
        }
        for q in [Queue::Capture, Queue::Output] {
            self.backend
                .stream(q, true)
                .map_err(|e| self.ioctl_err(&format!("VIDIOC_STREAMON on the {q} queue"), &e))?;
        }
        self.streaming = true;
        Ok(())
    }

    fn queue_capture(&mut self, index: usize) -> Result<(), Error> {
        let planes = self.capture[index].lengths.len().max(1);
        self.backend
            .queue(Queue::Capture, index, &vec![0; planes], 0)
            .map_err(|e| self.ioctl_err("VIDIOC_QBUF on the CAPTURE queue", &e))?;
        self.capture[index].queued = true;
        Ok(())
    }

    /// Encodes one I420 picture taken at `timestamp_us` and waits for its access unit.
    pub fn encode(&mut self, pic: &Picture<'_>, timestamp_us: i64) -> Result<Encoded, Error> {
        self.layout.check(pic).map_err(|source| Error::Layout {
            node: self.node.clone(),
            queue: Queue::Output,
            source,
        })?;
        if !self.streaming {
            self.start()?;
        }
        // Strictly increasing, never 0 (what drivers put on buffers they stamp themselves).
        let ts = timestamp_us.max(self.last_ts.saturating_add(1)).max(1);
        self.last_ts = ts;
        let first_ts = *self.first_ts.get_or_insert(ts);
        let deadline = Instant::now() + self.timeout;

        let index = self.free_output(deadline)?;
        if std::mem::take(&mut self.idr_pending) {
            if let Err(e) = self.backend.set_control(CID_FORCE_KEY_FRAME, 1) {
                if !std::mem::replace(&mut self.idr_refusal_noted, true) {
                    self.notes.push(Note::IdrRefused {
                        error: describe(&e),
                    });
                }
            }
        }
        let mut used = Vec::with_capacity(self.layout.buffer_planes());
        for plane in 0..self.layout.buffer_planes() {
            let Some(dst) = self.backend.plane_mut(Queue::Output, index, plane) else {
                return Err(Error::Ioctl {
                    node: self.node.clone(),
                    what: format!("mapping OUTPUT buffer {index} plane {plane}"),
                    detail: "not mapped".into(),
                });
            };
            let n = self
                .layout
                .fill(plane, pic, dst)
                .map_err(|source| Error::Layout {
                    node: self.node.clone(),
                    queue: Queue::Output,
                    source,
                })?;
            used.push(u32::try_from(n).unwrap_or(u32::MAX));
        }
        self.backend
            .queue(Queue::Output, index, &used, ts)
            .map_err(|e| self.ioctl_err("VIDIOC_QBUF on the OUTPUT queue", &e))?;
        self.output[index].queued = true;

        let res = self.collect(ts, first_ts, deadline);
        if matches!(&res, Err(e) if e.is_transient()) {
            self.idr_pending = true;
        }
        res
    }

    /// A free OUTPUT buffer, waiting for one to come back if all are queued.
    fn free_output(&mut self, deadline: Instant) -> Result<usize, Error> {
        loop {
            self.reclaim_output(None)?;
            if let Some(i) = self.output.iter().position(|s| !s.queued) {
                return Ok(i);
            }
            self.wait_until(deadline, "no OUTPUT buffer came back")?;
        }
    }

    /// Waits (`poll`) until a queue is ready or `deadline`; past the deadline it is a timeout
    /// saying `what` did not happen, and a device that reports only an error is gone.
    fn wait_until(&mut self, deadline: Instant, what: &'static str) -> Result<(), Error> {
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Timeout {
                node: self.node.clone(),
                what,
                ms: self.timeout.as_millis(),
            });
        }
        let ready = self
            .backend
            .wait(deadline - now)
            .map_err(|e| self.ioctl_err("poll", &e))?;
        if ready.error && !ready.output && !ready.capture {
            return Err(Error::Device {
                node: self.node.clone(),
            });
        }
        Ok(())
    }

    /// Takes back every OUTPUT buffer the driver is done with. One flagged as an error while
    /// it carried the frame in flight (`in_flight`) loses that frame.
    fn reclaim_output(&mut self, in_flight: Option<i64>) -> Result<(), Error> {
        while let Some(d) = self
            .backend
            .dequeue(Queue::Output)
            .map_err(|e| self.ioctl_err("VIDIOC_DQBUF on the OUTPUT queue", &e))?
        {
            if let Some(s) = self.output.get_mut(d.index) {
                s.queued = false;
            }
            if d.flags & flags::ERROR != 0 && in_flight == Some(d.timestamp_us) {
                return Err(Error::Corrupt {
                    node: self.node.clone(),
                    queue: Queue::Output,
                });
            }
        }
        Ok(())
    }

    /// Waits for the encoded picture of the frame queued at `ts`.
    fn collect(&mut self, ts: i64, first_ts: i64, deadline: Instant) -> Result<Encoded, Error> {
        let mut headers = Vec::new();
        loop {
            while let Some(d) = self
                .backend
                .dequeue(Queue::Capture)
                .map_err(|e| self.ioctl_err("VIDIOC_DQBUF on the CAPTURE queue", &e))?
            {
                if let Some(done) = self.take_capture(d, ts, first_ts, &mut headers)? {
                    return Ok(done);
                }
            }
            self.reclaim_output(Some(ts))?;
            self.wait_until(deadline, "no encoded frame came back")?;
        }
    }

    /// Copies a dequeued CAPTURE buffer out, queues it again, and decides what it is.
    fn take_capture(
        &mut self,
        d: Dequeued,
        ts: i64,
        first_ts: i64,
        headers: &mut Vec<u8>,
    ) -> Result<Option<Encoded>, Error> {
        let Some(slot) = self.capture.get_mut(d.index) else {
            return Err(Error::BadBuffer {
                node: self.node.clone(),
                why: format!("has index {}, beyond the buffers requested", d.index),
            });
        };
        slot.queued = false;
        let p = d.planes.first().copied().unwrap_or_default();
        let (used, offset) = (p.bytesused as usize, p.data_offset as usize);
        let data = match self.backend.plane(Queue::Capture, d.index, 0) {
            Some(buf) if used <= buf.len() && offset <= used => Ok(buf[offset..used].to_vec()),
            Some(buf) => Err(format!(
                "claims {used} bytes from offset {offset} in a {}-byte buffer",
                buf.len()
            )),
            None => Err("is not mapped".to_string()),
        };
        self.queue_capture(d.index)?;
        let data = data.map_err(|why| Error::BadBuffer {
            node: self.node.clone(),
            why,
        })?;

        if !self.by_order && d.flags & flags::TIMESTAMP_MASK != flags::TIMESTAMP_COPY {
            self.by_order = true;
            self.notes.push(Note::TimestampsNotCopied);
        }
        let ours = self.by_order || d.timestamp_us == ts;
        if d.flags & flags::LAST != 0 && data.is_empty() {
            return Err(Error::Ended {
                node: self.node.clone(),
            });
        }
        if d.flags & flags::ERROR != 0 {
            if ours {
                return Err(Error::Corrupt {
                    node: self.node.clone(),
                    queue: Queue::Capture,
                });
            }
            self.notes.push(Note::StaleDropped {
                timestamp_us: d.timestamp_us,
                bytes: data.len(),
            });
            return Ok(None);
        }
        if data.is_empty() {
            if !std::mem::replace(&mut self.empty_noted, true) {
                self.notes.push(Note::EmptyBuffer);
            }
            return Ok(None);
        }
        match classify(&data) {
            Kind::Garbage if ours => Err(Error::BadBuffer {
                node: self.node.clone(),
                why: format!("holds {} bytes without an H.264 start code", data.len()),
            }),
            Kind::Garbage => {
                self.notes.push(Note::GarbageDropped { bytes: data.len() });
                Ok(None)
            }
            Kind::Headers => {
                headers.extend_from_slice(&data);
                Ok(None)
            }
            Kind::Picture => {
                if !ours {
                    if (first_ts..ts).contains(&d.timestamp_us) {
                        self.notes.push(Note::StaleDropped {
                            timestamp_us: d.timestamp_us,
                            bytes: data.len(),
                        });
                        return Ok(None);
                    }
                    // Neither this frame's nor an earlier one's: the driver stamps buffers
                    // itself although it claims to copy.
                    self.by_order = true;
                    self.notes.push(Note::TimestampsNotCopied);
                }
                let mut out = std::mem::take(headers);
                out.extend_from_slice(&data);
                Ok(Some(Encoded {
                    data: out,
                    keyframe: d.flags & flags::KEYFRAME != 0,
                    timestamp_us: ts,
                }))
            }
        }
    }
}

impl<B: Backend> Drop for Encoder<B> {
    fn drop(&mut self) {
        if self.streaming {
            // STREAMOFF returns every buffer; errors do not matter any more.
            let _ = self.backend.stream(Queue::Output, false);
            let _ = self.backend.stream(Queue::Capture, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_told_from_headers_and_garbage() {
        assert_eq!(
            classify(&[0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3]),
            Kind::Headers
        );
        assert_eq!(
            classify(&[0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x65, 0x88]),
            Kind::Picture
        );
        assert_eq!(classify(&[0, 0, 1, 0x41, 0x9a]), Kind::Picture);
        assert_eq!(classify(&[0xde, 0xad, 0xbe, 0xef]), Kind::Garbage);
        assert_eq!(classify(&[0, 0, 1]), Kind::Garbage);
    }

    #[test]
    fn capture_buffers_fit_an_idr_frame() {
        assert_eq!(capture_buffer_size(640, 480), 512 << 10);
        assert_eq!(capture_buffer_size(1920, 1080), 1_036_800);
    }

    #[test]
    fn errnos_read_as_what_to_do() {
        use nix::libc;
        let d = describe(&io::Error::from_raw_os_error(libc::EBUSY));
        assert!(d.starts_with("device busy: another program"), "{d}");
        let d = describe(&io::Error::from_raw_os_error(libc::EACCES));
        assert!(d.contains("`video` group"), "{d}");
        let d = describe(&io::Error::from_raw_os_error(libc::EIO));
        assert!(d.contains("hardware or its firmware failed"), "{d}");
    }
}
