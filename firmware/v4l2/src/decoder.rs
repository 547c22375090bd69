//! [`Decoder`]: the kernel's stateful memory-to-memory video decoder interface
//! (`Documentation/userspace-api/media/v4l/dev-decoder.rst`) for H.264, over any [`Backend`]:
//! the Raspberry Pi 4's `bcm2835-codec-decode` (`/dev/video10`, multi-planar) and other
//! stateful decoders (single- or multi-planar). Everything here is plain code (no ioctls):
//! setup order, buffer ownership, the source-change protocol, timestamp matching and error
//! mapping are tested with a stand-in driver (`standin::decoder`).
//!
//! ```text
//! open:    QUERYCAP (M2M) ─ ENUM_FMT OUTPUT ∋ H264 ─ S_FMT OUTPUT H264 (sizeimage) ─
//!          SUBSCRIBE_EVENT SOURCE_CHANGE, EOS ─ REQBUFS/QUERYBUF/mmap OUTPUT ─ STREAMON OUTPUT
//! decode:  AU (Annex B) ─► free OUTPUT buffer ─► QBUF (timestamp = a private tag)
//!          first SPS ─► event SOURCE_CHANGE ─► G_FMT CAPTURE (S_FMT to YU12 if offered, else
//!          NV12) ─ G_SELECTION COMPOSE (visible size) ─ G_CTRL MIN_BUFFERS_FOR_CAPTURE ─
//!          REQBUFS/mmap CAPTURE ─ QBUF all ─ STREAMON CAPTURE
//!          DQBUF CAPTURE ─► tag → the AU's timestamp ─► tight I420 (if wanted) ─► QBUF again
//! change:  event SOURCE_CHANGE while streaming ─► DQBUF until V4L2_BUF_FLAG_LAST (or EPIPE)
//!          ─► STREAMOFF CAPTURE ─ REQBUFS 0 ─ the CAPTURE setup again
//! drain:   DECODER_CMD STOP ─► DQBUF until LAST ─► DECODER_CMD START (or STREAMOFF/ON CAPTURE)
//! ```
//!
//! Every wait is a `poll` with a deadline: [`Config::timeout`] for a bitstream buffer to come
//! back, a drain or a resolution change to finish, [`Config::picture_wait`] for the picture of
//! an access unit just queued (a stateful decoder may hold a few pictures back; those come
//! with later calls or [`Decoder::drain`]).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::libc;

use crate::backend::{
    flags, Backend, Caps, Dequeued, Format, Fourcc, PlaneFormat, Queue, Rect, DEC_CMD_START,
    DEC_CMD_STOP, EVENT_EOS, EVENT_SOURCE_CHANGE, SEL_TGT_COMPOSE,
};
use crate::layout::{self, Layout, LayoutError, Picture};

/// `V4L2_CID_MIN_BUFFERS_FOR_CAPTURE` (`linux/v4l2-controls.h`): the CAPTURE buffers a decoder
/// needs for the stream (its reference frames and the pictures it holds back).
pub const CID_MIN_BUFFERS_FOR_CAPTURE: u32 = 0x0098_0927;

/// How many access units in flight are remembered (their timestamps and whether their
/// pictures are wanted); older ones are forgotten (their pictures, if they ever come, are not
/// returned).
const MAX_PENDING: usize = 64;

/// The timestamps the driver sees: a private tag per access unit, 1 ms apart, so that the
/// caller's timestamps may repeat, go back or be negative.
const TAG_STEP_US: i64 = 1_000;

/// How the decoder is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The stream's coded size when known: given to `S_FMT` on OUTPUT (as the stateful
    /// interface allows; the driver takes the real size from the SPS either way) and used to
    /// size the bitstream buffers. `None` passes 0x0.
    pub coded_size: Option<(u32, u32)>,
    /// Bytes per bitstream (OUTPUT) buffer; 0 chooses from the size
    /// ([`bitstream_buffer_size`]). An access unit must fit in one buffer.
    pub bitstream_size: u32,
    pub output_buffers: u32,
    /// CAPTURE buffers beyond the driver's minimum (`V4L2_CID_MIN_BUFFERS_FOR_CAPTURE`).
    pub extra_capture_buffers: u32,
    /// CAPTURE buffers when the driver does not say its minimum.
    pub default_capture_buffers: u32,
    /// How long the driver may take to give back a bitstream buffer, or to finish a drain or a
    /// resolution change.
    pub timeout: Duration,
    /// How long [`Decoder::decode`] waits for the picture of the access unit it queued (and,
    /// before the first picture, for the decoder to find the stream's format).
    pub picture_wait: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            coded_size: None,
            bitstream_size: 0,
            output_buffers: 4,
            extra_capture_buffers: 2,
            default_capture_buffers: 6,
            timeout: Duration::from_secs(1),
            picture_wait: Duration::from_millis(100),
        }
    }
}

/// The bitstream buffer size for a coded size: a byte per pixel (1080p: 2 MB), at least
/// 1 MiB, at most 16 MiB; 2 MiB when the size is not known. An IDR access unit from a camera
/// is far smaller (bcm2835's own default is 512 KiB up to 720p, 768 KiB above).
pub fn bitstream_buffer_size(coded_size: Option<(u32, u32)>) -> u32 {
    match coded_size {
        Some((w, h)) => (u64::from(w) * u64::from(h)).clamp(1 << 20, 16 << 20) as u32,
        None => 2 << 20,
    }
}

/// A decoded picture: tightly packed I420 of the visible size (Y `width*height` bytes, U and
/// V `ceil(width/2)*ceil(height/2)` each), with the timestamp its access unit was queued with.
#[derive(Clone, PartialEq, Eq)]
pub struct Decoded {
    pub width: u32,
    pub height: u32,
    pub timestamp_us: i64,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

impl Decoded {
    /// The picture as an I420 [`Picture`] (what the encoder and pinhole's JPEG path take).
    pub fn picture(&self) -> Picture<'_> {
        Picture {
            width: self.width,
            height: self.height,
            y: &self.y,
            u: &self.u,
            v: &self.v,
            y_stride: self.width as usize,
            uv_stride: self.width.div_ceil(2) as usize,
        }
    }
}

impl fmt::Debug for Decoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoded")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("timestamp_us", &self.timestamp_us)
            .field("y", &format_args!("{} bytes", self.y.len()))
            .field("u", &format_args!("{} bytes", self.u.len()))
            .field("v", &format_args!("{} bytes", self.v.len()))
            .finish()
    }
}

/// Something worth one log line that did not stop decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The CAPTURE queue was set up (after the first source-change event, or again after a
    /// resolution change).
    CaptureSetUp {
        format: String,
        bytesperline: u32,
        visible: Rect,
        buffers: usize,
        again: bool,
    },
    /// `VIDIOC_G_SELECTION` gave no usable visible rectangle: the format's size is used.
    NoSelection { error: String },
    /// The driver refused the EOS event; drains end on `V4L2_BUF_FLAG_LAST` alone.
    NoEosEvents { error: String },
    /// The driver does not copy OUTPUT timestamps to CAPTURE: pictures are matched by order.
    TimestampsNotCopied,
    /// A picture nobody asked for came back flagged `V4L2_BUF_FLAG_ERROR`.
    BadPictureDropped { timestamp_us: i64 },
    /// An empty CAPTURE buffer without `V4L2_BUF_FLAG_LAST` came back.
    EmptyBuffer,
    /// A resolution change brought no `V4L2_BUF_FLAG_LAST` buffer within the timeout; the
    /// CAPTURE queue was set up again anyway.
    NoLastBuffer,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::CaptureSetUp {
                format,
                bytesperline,
                visible,
                buffers,
                again,
            } => write!(
                f,
                "decoder {}: {format} (bytesperline {bytesperline}), visible {visible}, {buffers} buffers",
                if *again { "resolution changed" } else { "found the stream's format" }
            ),
            Note::NoSelection { error } => write!(
                f,
                "no visible rectangle from the decoder (VIDIOC_G_SELECTION: {error}); using the format's size"
            ),
            Note::NoEosEvents { error } => write!(
                f,
                "the decoder refused the EOS event ({error}); drains end on the last buffer alone"
            ),
            Note::TimestampsNotCopied => f.write_str(
                "the decoder does not copy timestamps from OUTPUT to CAPTURE; matching pictures by order",
            ),
            Note::BadPictureDropped { timestamp_us } => write!(
                f,
                "dropped a picture the decoder flagged as corrupt (timestamp {timestamp_us} µs; not asked for)"
            ),
            Note::EmptyBuffer => f.write_str("the decoder returned an empty buffer"),
            Note::NoLastBuffer => f.write_str(
                "the decoder changed resolution without a last buffer (V4L2_BUF_FLAG_LAST); its CAPTURE queue was set up again anyway",
            ),
        }
    }
}

/// Why decoding failed. Each names the node, what failed and what to do. Only
/// [`Error::is_transient`] ones leave the decoder usable (one picture or access unit lost).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open {node}: {detail}")]
    Open { node: String, detail: String },
    #[error("{node} ({card}) is not a stateful memory-to-memory H.264 decoder: {why}")]
    NotADecoder {
        node: String,
        card: String,
        why: String,
    },
    #[error("{node}: the decoder gives none of YU12, NV12, YM12, NM12 (it offers {offered})")]
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
    #[error("{node}: CAPTURE buffers: {source}")]
    Layout { node: String, source: LayoutError },
    #[error("{node}: {what} within {ms} ms; the decoder is stuck (another program using it, or a firmware fault): reopen it or decode in software")]
    Timeout {
        node: String,
        what: &'static str,
        ms: u128,
    },
    #[error("{node}: the decoder is gone ({what}: ENODEV; unplugged, or the driver was unloaded): reopen it or decode in software")]
    Gone { node: String, what: String },
    #[error("{node}: the decoder flagged the picture of the access unit at {timestamp_us} µs as corrupt (V4L2_BUF_FLAG_ERROR); that picture is lost")]
    Corrupt { node: String, timestamp_us: i64 },
    #[error("{node}: the access unit {why}; it was not decoded")]
    AccessUnit { node: String, why: String },
    #[error("{node}: the decoded buffer {why}; that picture is lost")]
    BadBuffer { node: String, why: String },
}

impl Error {
    /// One picture or access unit lost; the decoder goes on. (After a lost reference picture,
    /// later pictures may show artefacts until the next IDR.)
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. } | Error::AccessUnit { .. } | Error::BadBuffer { .. }
        )
    }
}

/// A driver's errno in words, with what to do where there is something to do.
pub fn describe(e: &io::Error) -> String {
    crate::backend::describe_errno(e, "decoder", "decode in software")
}

fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::ENXIO))
}

fn io_err(node: &str, what: &str, e: &io::Error) -> Error {
    if is_gone(e) {
        return Error::Gone {
            node: node.to_string(),
            what: what.to_string(),
        };
    }
    Error::Ioctl {
        node: node.to_string(),
        what: what.to_string(),
        detail: describe(e),
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

/// The H.264 decoder among `/dev/video*`: the first memory-to-memory node (by number) whose
/// OUTPUT queue takes H264 and whose CAPTURE queue gives YU12 or NV12 (or their multi-planar
/// variants). On a Pi 4 that is `/dev/video10` (`bcm2835-codec-decode`). `None`, quietly,
/// when there is none or `/dev` cannot be read.
pub fn find_h264_decoder() -> Option<PathBuf> {
    find_in(Path::new("/dev"))
}

/// [`find_h264_decoder`] over the `video<N>` entries of `dir`.
fn find_in(dir: &Path) -> Option<PathBuf> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix("video")?
                .parse::<u32>()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).find(|p| {
        crate::V4l2Device::open(p)
            .map(|mut d| is_h264_decoder(&mut d))
            .unwrap_or(false)
    })
}

/// Whether the node behind `backend` looks like a stateful H.264 decoder: M2M with streaming,
/// H264 on OUTPUT, YU12/NV12/YM12/NM12 on CAPTURE.
pub fn is_h264_decoder<B: Backend>(backend: &mut B) -> bool {
    let caps = backend.caps();
    if !caps.is_m2m() || !caps.can_stream() {
        return false;
    }
    let takes_h264 = backend
        .formats(Queue::Output)
        .is_ok_and(|f| f.contains(&Fourcc::H264));
    takes_h264
        && backend
            .formats(Queue::Capture)
            .is_ok_and(|f| layout::choose(&f).is_some())
}

#[derive(Debug, Clone)]
struct Slot {
    queued: bool,
    lengths: Vec<usize>,
}

/// An access unit queued and not yet matched with a picture.
#[derive(Debug, Clone, Copy)]
struct Pending {
    tag: i64,
    timestamp_us: i64,
    want: bool,
}

/// The CAPTURE side once set up (it is streaming while this exists).
#[derive(Debug)]
struct Capture {
    format: Format,
    layout: Layout,
    visible: Rect,
    slots: Vec<Slot>,
}

/// A V4L2 stateful H.264 decoder, one access unit at a time. On drop it drains (bounded) and
/// stops both queues; the device's buffers are unmapped when the backend goes.
pub struct Decoder<B: Backend> {
    backend: B,
    node: String,
    card: String,
    config: Config,
    output: Vec<Slot>,
    capture: Option<Capture>,
    /// A source change arrived while CAPTURE was not set up: set it up.
    source_changed: bool,
    /// A source change arrived while CAPTURE was streaming (since when): wait for its last
    /// buffer, then set CAPTURE up again.
    change_pending: Option<Instant>,
    /// CAPTURE returned its last buffer (`V4L2_BUF_FLAG_LAST` or `EPIPE`).
    last_seen: bool,
    eos_seen: bool,
    resolution_changes: u32,
    next_tag: i64,
    pending: VecDeque<Pending>,
    ready: Vec<Decoded>,
    /// A wanted picture came back flagged as an error (its timestamp).
    bad: Option<i64>,
    by_order: bool,
    empty_noted: bool,
    selection_noted: bool,
    closed: bool,
    notes: Vec<Note>,
}

impl<B: Backend> fmt::Debug for Decoder<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("node", &self.node)
            .field("capture", &self.capture.as_ref().map(|c| &c.format))
            .finish_non_exhaustive()
    }
}

impl Decoder<crate::V4l2Device> {
    /// Opens and sets up the node at `path` with the default [`Config`].
    pub fn open(path: &Path) -> Result<Self, Error> {
        Decoder::open_with(path, &Config::default())
    }

    /// Opens and sets up the node at `path`.
    pub fn open_with(path: &Path, config: &Config) -> Result<Self, Error> {
        let node = path.display().to_string();
        let dev = crate::V4l2Device::open(path).map_err(|e| Error::Open {
            node: node.clone(),
            detail: describe(&e),
        })?;
        Decoder::with_config(dev, node, config)
    }
}

impl<B: Backend> Decoder<B> {
    /// Sets up `backend` (named `node_name` in errors) as an H.264 decoder with the default
    /// [`Config`].
    pub fn new(backend: B, node_name: impl Into<String>) -> Result<Self, Error> {
        Decoder::with_config(backend, node_name, &Config::default())
    }

    /// Sets up `backend` (named `node_name` in errors) as an H.264 decoder: the OUTPUT side
    /// and the events; the CAPTURE side follows once the driver has seen an SPS.
    pub fn with_config(
        mut backend: B,
        node_name: impl Into<String>,
        config: &Config,
    ) -> Result<Self, Error> {
        let node = node_name.into();
        let caps: Caps = backend.caps().clone();
        let not = |why: String| Error::NotADecoder {
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
        let coded = backend
            .formats(Queue::Output)
            .map_err(|e| io_err(&node, "VIDIOC_ENUM_FMT on the OUTPUT queue", &e))?;
        if !coded.contains(&Fourcc::H264) {
            return Err(not(format!(
                "its OUTPUT queue takes {}, not H264",
                list(&coded)
            )));
        }
        let (width, height) = config.coded_size.unwrap_or((0, 0));
        let size = match config.bitstream_size {
            0 => bitstream_buffer_size(config.coded_size),
            n => n,
        };
        let want = Format {
            width,
            height,
            fourcc: Fourcc::H264,
            planes: vec![PlaneFormat {
                bytesperline: 0,
                sizeimage: size,
            }],
        };
        let got = backend.set_format(Queue::Output, &want).map_err(|e| {
            io_err(
                &node,
                &format!("VIDIOC_S_FMT on the OUTPUT queue ({want})"),
                &e,
            )
        })?;
        if got.fourcc != Fourcc::H264 {
            return Err(Error::FormatRefused {
                node,
                queue: Queue::Output,
                want: want.to_string(),
                got: got.to_string(),
                hint: "this node does not decode H.264; choose another decoder",
            });
        }
        if let Err(e) = backend.subscribe_event(EVENT_SOURCE_CHANGE) {
            if is_gone(&e) {
                return Err(io_err(&node, "VIDIOC_SUBSCRIBE_EVENT", &e));
            }
            return Err(not(format!(
                "it sends no source-change events (VIDIOC_SUBSCRIBE_EVENT: {})",
                describe(&e)
            )));
        }
        let mut notes = Vec::new();
        if let Err(e) = backend.subscribe_event(EVENT_EOS) {
            notes.push(Note::NoEosEvents {
                error: describe(&e),
            });
        }
        let n = config.output_buffers.max(1);
        let lengths = backend.allocate(Queue::Output, n).map_err(|e| {
            io_err(
                &node,
                &format!("requesting {n} OUTPUT buffers (VIDIOC_REQBUFS, QUERYBUF, mmap)"),
                &e,
            )
        })?;
        if lengths.is_empty() || lengths.iter().any(|l| l.first().is_none_or(|&n| n == 0)) {
            return Err(Error::Ioctl {
                node,
                what: "VIDIOC_REQBUFS on the OUTPUT queue".into(),
                detail: "the driver granted no usable buffers".into(),
            });
        }
        backend
            .stream(Queue::Output, true)
            .map_err(|e| io_err(&node, "VIDIOC_STREAMON on the OUTPUT queue", &e))?;
        Ok(Decoder {
            backend,
            card: caps.card,
            node,
            config: config.clone(),
            output: lengths
                .into_iter()
                .map(|lengths| Slot {
                    queued: false,
                    lengths,
                })
                .collect(),
            capture: None,
            source_changed: false,
            change_pending: None,
            last_seen: false,
            eos_seen: false,
            resolution_changes: 0,
            next_tag: TAG_STEP_US,
            pending: VecDeque::new(),
            ready: Vec::new(),
            bad: None,
            by_order: false,
            empty_noted: false,
            selection_noted: false,
            closed: false,
            notes,
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn card(&self) -> &str {
        &self.card
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The raw format the decoder writes pictures in (after the stream's format was found).
    pub fn capture_format(&self) -> Option<&Format> {
        self.capture.as_ref().map(|c| &c.format)
    }

    /// The visible part of the decoded pictures (the `COMPOSE` selection, or the format's
    /// size), once known.
    pub fn visible(&self) -> Option<Rect> {
        self.capture.as_ref().map(|c| c.visible)
    }

    /// Resolution changes handled since the decoder was set up (not counting the first
    /// source change).
    pub fn resolution_changes(&self) -> u32 {
        self.resolution_changes
    }

    /// Notes gathered since the last call, for the log.
    pub fn take_notes(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
    }

    /// Decodes one access unit (Annex B, one per buffer) queued with `timestamp_us` and
    /// returns every picture that came out so far (see [`Decoder::decode_with`]).
    pub fn decode(
        &mut self,
        annexb_access_unit: &[u8],
        timestamp_us: i64,
    ) -> Result<Vec<Decoded>, Error> {
        self.decode_with(annexb_access_unit, timestamp_us, true)
    }

    /// Queues one access unit and returns the pictures that came out so far, in the order the
    /// decoder gave them, each with the timestamp its access unit was queued with. Only the
    /// pictures of access units queued with `want` are copied out and returned; the others
    /// (reference frames decoded on the way to the one wanted) are handed straight back to
    /// the driver. With `want`, the call waits up to [`Config::picture_wait`] for this access
    /// unit's picture; a decoder that holds pictures back returns them with later calls or
    /// [`Decoder::drain`].
    ///
    /// A wanted picture flagged `V4L2_BUF_FLAG_ERROR` makes the call fail with
    /// [`Error::Corrupt`] (transient); pictures that came out with it are kept for the next
    /// call.
    pub fn decode_with(
        &mut self,
        annexb_access_unit: &[u8],
        timestamp_us: i64,
        want: bool,
    ) -> Result<Vec<Decoded>, Error> {
        let au = annexb_access_unit;
        if au.is_empty() {
            return Err(Error::AccessUnit {
                node: self.node.clone(),
                why: "is empty".into(),
            });
        }
        let deadline = Instant::now() + self.config.timeout;
        self.pump()?;
        let index = self.free_output(deadline)?;
        let room = self.output[index].lengths.first().copied().unwrap_or(0);
        if au.len() > room {
            return Err(Error::AccessUnit {
                node: self.node.clone(),
                why: format!(
                    "is {} bytes, more than a bitstream buffer holds ({room}; Config::bitstream_size)",
                    au.len()
                ),
            });
        }
        let Some(dst) = self
            .backend
            .plane_mut(Queue::Output, index, 0)
            .and_then(|p| p.get_mut(..au.len()))
        else {
            return Err(Error::Ioctl {
                node: self.node.clone(),
                what: format!("mapping OUTPUT buffer {index}"),
                detail: "not mapped, or shorter than the driver said".into(),
            });
        };
        dst.copy_from_slice(au);
        let tag = self.next_tag;
        self.next_tag += TAG_STEP_US;
        let used = u32::try_from(au.len()).unwrap_or(u32::MAX);
        self.backend
            .queue(Queue::Output, index, &[used], tag)
            .map_err(|e| self.io_err("VIDIOC_QBUF on the OUTPUT queue", &e))?;
        self.output[index].queued = true;
        self.pending.push_back(Pending {
            tag,
            timestamp_us,
            want,
        });
        while self.pending.len() > MAX_PENDING {
            self.pending.pop_front();
        }
        if want {
            let until = Instant::now() + self.config.picture_wait;
            loop {
                self.pump()?;
                if self.bad.is_some() || !self.pending.iter().any(|p| p.tag == tag) {
                    break;
                }
                if Instant::now() >= until {
                    break;
                }
                self.wait(until)?;
            }
        } else {
            self.pump()?;
        }
        self.take_ready()
    }

    /// Drains the decoder (`V4L2_DEC_CMD_STOP`): every access unit queued so far is decoded
    /// and the wanted pictures still held back are returned; then decoding resumes
    /// (`V4L2_DEC_CMD_START`, or `STREAMOFF`/`STREAMON` on CAPTURE where that is refused).
    /// Bounded by [`Config::timeout`].
    pub fn drain(&mut self) -> Result<Vec<Decoded>, Error> {
        self.drain_within(self.config.timeout)?;
        self.resume()?;
        self.take_ready()
    }

    /// Drains (as [`Decoder::drain`]) and stops both queues: the last pictures.
    pub fn close(mut self) -> Result<Vec<Decoded>, Error> {
        let res = self.drain_within(self.config.timeout);
        self.stop();
        res?;
        self.take_ready()
    }

    fn take_ready(&mut self) -> Result<Vec<Decoded>, Error> {
        if let Some(timestamp_us) = self.bad.take() {
            return Err(Error::Corrupt {
                node: self.node.clone(),
                timestamp_us,
            });
        }
        Ok(std::mem::take(&mut self.ready))
    }

    fn io_err(&self, what: &str, e: &io::Error) -> Error {
        io_err(&self.node, what, e)
    }

    fn timeout(&self, what: &'static str) -> Error {
        Error::Timeout {
            node: self.node.clone(),
            what,
            ms: self.config.timeout.as_millis(),
        }
    }

    /// Everything that can be done without waiting: events, bitstream buffers back, pictures
    /// out, CAPTURE set up (again) when the driver asked for it.
    fn pump(&mut self) -> Result<(), Error> {
        self.events()?;
        self.reclaim_output()?;
        self.take_pictures()?;
        if self.last_seen && self.change_pending.is_none() {
            // The source change may have been queued after its last buffer was dequeued.
            self.events()?;
        }
        if let Some(since) = self.change_pending {
            if self.last_seen || since.elapsed() >= self.config.timeout {
                if !self.last_seen {
                    self.notes.push(Note::NoLastBuffer);
                }
                self.change_pending = None;
                self.teardown_capture()?;
                self.resolution_changes += 1;
                self.setup_capture()?;
            }
        }
        if self.source_changed && self.capture.is_none() {
            self.setup_capture()?;
        }
        Ok(())
    }

    fn events(&mut self) -> Result<(), Error> {
        // Bounded: a driver cannot keep the caller here.
        for _ in 0..64 {
            let Some(ev) = self
                .backend
                .dequeue_event()
                .map_err(|e| self.io_err("VIDIOC_DQEVENT", &e))?
            else {
                break;
            };
            match ev.kind {
                EVENT_SOURCE_CHANGE => {
                    if self.capture.is_some() {
                        self.change_pending.get_or_insert_with(Instant::now);
                    } else {
                        self.source_changed = true;
                    }
                }
                EVENT_EOS => self.eos_seen = true,
                _ => {}
            }
        }
        Ok(())
    }

    fn reclaim_output(&mut self) -> Result<(), Error> {
        for _ in 0..=self.output.len() {
            let Some(d) = self
                .backend
                .dequeue(Queue::Output)
                .map_err(|e| self.io_err("VIDIOC_DQBUF on the OUTPUT queue", &e))?
            else {
                break;
            };
            if let Some(s) = self.output.get_mut(d.index) {
                s.queued = false;
            }
        }
        Ok(())
    }

    /// A free bitstream buffer, waiting for one to come back if all are queued.
    fn free_output(&mut self, deadline: Instant) -> Result<usize, Error> {
        loop {
            if let Some(i) = self.output.iter().position(|s| !s.queued) {
                return Ok(i);
            }
            if Instant::now() >= deadline {
                return Err(self.timeout("no bitstream (OUTPUT) buffer came back"));
            }
            self.wait(deadline)?;
            self.pump()?;
        }
    }

    /// `poll` until something is ready or `until`. `POLLERR` alone is a state on an M2M node
    /// (no queue streaming with buffers queued), not a fault: it is slept off briefly rather
    /// than spun on; a vanished device shows as `ENODEV` from the next ioctl.
    fn wait(&mut self, until: Instant) -> Result<(), Error> {
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        let left = until - now;
        let r = self
            .backend
            .wait(left)
            .map_err(|e| self.io_err("poll", &e))?;
        if r.error && !(r.capture || r.output || r.event) {
            std::thread::sleep(left.min(Duration::from_millis(2)));
        }
        Ok(())
    }

    fn take_pictures(&mut self) -> Result<(), Error> {
        let Some(cap) = &self.capture else {
            return Ok(());
        };
        let n = cap.slots.len();
        for _ in 0..=n {
            if self.last_seen {
                break;
            }
            let d = match self.backend.dequeue(Queue::Capture) {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                    self.last_seen = true;
                    break;
                }
                Err(e) => return Err(self.io_err("VIDIOC_DQBUF on the CAPTURE queue", &e)),
            };
            self.take_picture(d)?;
        }
        Ok(())
    }

    /// Copies a dequeued CAPTURE buffer out if its picture is wanted, and queues it again.
    fn take_picture(&mut self, d: Dequeued) -> Result<(), Error> {
        let Some(slot) = self.capture.as_mut().and_then(|c| c.slots.get_mut(d.index)) else {
            return Err(Error::BadBuffer {
                node: self.node.clone(),
                why: format!("has index {}, beyond the buffers requested", d.index),
            });
        };
        slot.queued = false;
        let last = d.flags & flags::LAST != 0;
        let empty = d.planes.iter().all(|p| p.bytesused <= p.data_offset);
        let res = if empty {
            if !last && !std::mem::replace(&mut self.empty_noted, true) {
                self.notes.push(Note::EmptyBuffer);
            }
            Ok(())
        } else {
            self.picture_out(&d)
        };
        self.requeue(d.index)?;
        if last {
            self.last_seen = true;
        }
        res
    }

    fn picture_out(&mut self, d: &Dequeued) -> Result<(), Error> {
        if !self.by_order && d.flags & flags::TIMESTAMP_MASK != flags::TIMESTAMP_COPY {
            self.by_order = true;
            self.notes.push(Note::TimestampsNotCopied);
        }
        let entry = if self.by_order {
            self.pending.pop_front()
        } else {
            let pos = self.pending.iter().position(|p| p.tag == d.timestamp_us);
            pos.and_then(|i| self.pending.remove(i))
        };
        // A picture of an access unit no longer remembered: nobody wants it.
        let Some(entry) = entry else {
            return Ok(());
        };
        if d.flags & flags::ERROR != 0 {
            if entry.want {
                self.bad = Some(entry.timestamp_us);
            } else {
                self.notes.push(Note::BadPictureDropped {
                    timestamp_us: entry.timestamp_us,
                });
            }
            return Ok(());
        }
        if !entry.want {
            return Ok(());
        }
        let Some(cap) = &self.capture else {
            return Ok(());
        };
        let mut planes: Vec<&[u8]> = Vec::with_capacity(d.planes.len());
        for (i, p) in d.planes.iter().enumerate() {
            let (off, used) = (p.data_offset as usize, p.bytesused as usize);
            match self.backend.plane(Queue::Capture, d.index, i) {
                Some(buf) if off <= used && used <= buf.len() => planes.push(&buf[off..used]),
                Some(buf) => {
                    return Err(Error::BadBuffer {
                        node: self.node.clone(),
                        why: format!(
                            "claims {used} bytes from offset {off} in plane {i} of {} bytes",
                            buf.len()
                        ),
                    })
                }
                None => {
                    return Err(Error::BadBuffer {
                        node: self.node.clone(),
                        why: format!("plane {i} is not mapped"),
                    })
                }
            }
        }
        match cap.layout.read_i420(&planes, cap.visible) {
            Ok([y, u, v]) => {
                self.ready.push(Decoded {
                    width: cap.visible.width,
                    height: cap.visible.height,
                    timestamp_us: entry.timestamp_us,
                    y,
                    u,
                    v,
                });
                Ok(())
            }
            Err(e) => Err(Error::BadBuffer {
                node: self.node.clone(),
                why: e.to_string(),
            }),
        }
    }

    fn requeue(&mut self, index: usize) -> Result<(), Error> {
        let Some(slot) = self.capture.as_mut().and_then(|c| c.slots.get_mut(index)) else {
            return Ok(());
        };
        let planes = vec![0; slot.lengths.len().max(1)];
        match self.backend.queue(Queue::Capture, index, &planes, 0) {
            Ok(()) => {
                slot.queued = true;
                Ok(())
            }
            Err(e) => Err(io_err(&self.node, "VIDIOC_QBUF on the CAPTURE queue", &e)),
        }
    }

    /// The CAPTURE setup sequence, after a source-change event.
    fn setup_capture(&mut self) -> Result<(), Error> {
        self.source_changed = false;
        let offered = self
            .backend
            .formats(Queue::Capture)
            .map_err(|e| self.io_err("VIDIOC_ENUM_FMT on the CAPTURE queue", &e))?;
        let Some(fourcc) = layout::choose(&offered) else {
            return Err(Error::NoRawFormat {
                node: self.node.clone(),
                offered: list(&offered),
            });
        };
        let current = self
            .backend
            .get_format(Queue::Capture)
            .map_err(|e| self.io_err("VIDIOC_G_FMT on the CAPTURE queue", &e))?;
        let format = if current.fourcc == fourcc {
            current
        } else {
            let n_planes = match fourcc {
                Fourcc::YM12 => 3,
                Fourcc::NM12 => 2,
                _ => 1,
            };
            let want = Format {
                width: current.width,
                height: current.height,
                fourcc,
                planes: vec![PlaneFormat::default(); n_planes],
            };
            let got = self
                .backend
                .set_format(Queue::Capture, &want)
                .map_err(|e| {
                    self.io_err(&format!("VIDIOC_S_FMT on the CAPTURE queue ({want})"), &e)
                })?;
            if got.fourcc != fourcc {
                return Err(Error::FormatRefused {
                    node: self.node.clone(),
                    queue: Queue::Capture,
                    want: want.to_string(),
                    got: got.to_string(),
                    hint: "the driver listed a format it then refused; decode in software",
                });
            }
            got
        };
        let layout = Layout::new(&format).map_err(|source| Error::Layout {
            node: self.node.clone(),
            source,
        })?;
        let whole = Rect {
            left: 0,
            top: 0,
            width: format.width,
            height: format.height,
        };
        let visible = match self.backend.selection(Queue::Capture, SEL_TGT_COMPOSE) {
            Ok(r) if inside(r, &format) => r,
            Ok(r) => {
                self.note_selection(format!(
                    "{r} does not lie inside the {}x{} picture",
                    format.width, format.height
                ));
                whole
            }
            Err(e) if is_gone(&e) => return Err(self.io_err("VIDIOC_G_SELECTION", &e)),
            Err(e) => {
                self.note_selection(describe(&e));
                whole
            }
        };
        let min = match self.backend.control(CID_MIN_BUFFERS_FOR_CAPTURE) {
            Ok(v) => u32::try_from(v).ok().filter(|&v| v > 0),
            Err(e) if is_gone(&e) => {
                return Err(self.io_err("VIDIOC_G_CTRL (MIN_BUFFERS_FOR_CAPTURE)", &e))
            }
            Err(_) => None,
        };
        let count = min
            .map_or(self.config.default_capture_buffers, |m| {
                m.saturating_add(self.config.extra_capture_buffers)
            })
            .clamp(1, 32);
        let lengths = self.backend.allocate(Queue::Capture, count).map_err(|e| {
            self.io_err(
                &format!("requesting {count} CAPTURE buffers (VIDIOC_REQBUFS, QUERYBUF, mmap)"),
                &e,
            )
        })?;
        if lengths.is_empty() {
            return Err(Error::Ioctl {
                node: self.node.clone(),
                what: "VIDIOC_REQBUFS on the CAPTURE queue".into(),
                detail: "the driver granted no buffers".into(),
            });
        }
        for l in &lengths {
            for i in 0..layout.buffer_planes() {
                let have = l.get(i).copied().unwrap_or(0);
                if have < layout.used(i) {
                    return Err(Error::Layout {
                        node: self.node.clone(),
                        source: LayoutError::TooSmall {
                            plane: i,
                            have,
                            need: layout.used(i),
                            width: format.width,
                            height: format.height,
                        },
                    });
                }
            }
        }
        let buffers = lengths.len();
        let note = Note::CaptureSetUp {
            format: format.to_string(),
            bytesperline: format.planes.first().map_or(0, |p| p.bytesperline),
            visible,
            buffers,
            again: self.resolution_changes > 0,
        };
        self.capture = Some(Capture {
            format,
            layout,
            visible,
            slots: lengths
                .into_iter()
                .map(|lengths| Slot {
                    queued: false,
                    lengths,
                })
                .collect(),
        });
        for i in 0..buffers {
            self.requeue(i)?;
        }
        self.backend
            .stream(Queue::Capture, true)
            .map_err(|e| self.io_err("VIDIOC_STREAMON on the CAPTURE queue", &e))?;
        self.last_seen = false;
        self.eos_seen = false;
        self.notes.push(note);
        Ok(())
    }

    fn note_selection(&mut self, error: String) {
        if !std::mem::replace(&mut self.selection_noted, true) {
            self.notes.push(Note::NoSelection { error });
        }
    }

    /// `STREAMOFF` and `REQBUFS 0` on CAPTURE (before it is set up again).
    fn teardown_capture(&mut self) -> Result<(), Error> {
        if self.capture.take().is_some() {
            self.backend
                .stream(Queue::Capture, false)
                .map_err(|e| self.io_err("VIDIOC_STREAMOFF on the CAPTURE queue", &e))?;
            self.backend
                .allocate(Queue::Capture, 0)
                .map_err(|e| self.io_err("VIDIOC_REQBUFS 0 on the CAPTURE queue", &e))?;
        }
        self.last_seen = false;
        Ok(())
    }

    /// The drain sequence, bounded by `within`. Without a CAPTURE queue (no SPS seen yet)
    /// there is nothing to drain.
    fn drain_within(&mut self, within: Duration) -> Result<(), Error> {
        self.pump()?;
        if self.capture.is_none() {
            return Ok(());
        }
        if !self.last_seen {
            self.backend
                .decoder_command(DEC_CMD_STOP)
                .map_err(|e| self.io_err("VIDIOC_DECODER_CMD (V4L2_DEC_CMD_STOP)", &e))?;
        }
        let deadline = Instant::now() + within;
        loop {
            self.pump()?;
            if self.capture.is_some() && self.change_pending.is_none() {
                if self.last_seen {
                    return Ok(());
                }
                if self.eos_seen {
                    // EOS without (or before) the last buffer: take what is ready and stop.
                    self.pump()?;
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    node: self.node.clone(),
                    what: "the drain did not finish (no buffer flagged V4L2_BUF_FLAG_LAST)",
                    ms: within.as_millis(),
                });
            }
            self.wait(deadline)?;
        }
    }

    /// After a drain: decoding goes on (`V4L2_DEC_CMD_START`; a driver without it restarts
    /// with `STREAMOFF`/`STREAMON` on CAPTURE). Access units queued before the drain that gave
    /// no picture never will.
    fn resume(&mut self) -> Result<(), Error> {
        self.pending.clear();
        let Some(cap) = &self.capture else {
            return Ok(());
        };
        let n = cap.slots.len();
        self.last_seen = false;
        self.eos_seen = false;
        match self.backend.decoder_command(DEC_CMD_START) {
            Ok(()) => Ok(()),
            Err(e) if is_gone(&e) => {
                Err(self.io_err("VIDIOC_DECODER_CMD (V4L2_DEC_CMD_START)", &e))
            }
            Err(_) => {
                self.backend
                    .stream(Queue::Capture, false)
                    .map_err(|e| self.io_err("VIDIOC_STREAMOFF on the CAPTURE queue", &e))?;
                if let Some(c) = self.capture.as_mut() {
                    c.slots.iter_mut().for_each(|s| s.queued = false);
                }
                for i in 0..n {
                    self.requeue(i)?;
                }
                self.backend
                    .stream(Queue::Capture, true)
                    .map_err(|e| self.io_err("VIDIOC_STREAMON on the CAPTURE queue", &e))
            }
        }
    }

    /// `STREAMOFF` on both queues (every buffer comes back); errors do not matter any more.
    fn stop(&mut self) {
        if !std::mem::replace(&mut self.closed, true) {
            let _ = self.backend.stream(Queue::Output, false);
            if self.capture.take().is_some() {
                let _ = self.backend.stream(Queue::Capture, false);
            }
        }
    }
}

/// Whether `r` is a non-empty rectangle inside the format's picture.
fn inside(r: Rect, f: &Format) -> bool {
    r.left >= 0
        && r.top >= 0
        && r.width > 0
        && r.height > 0
        && u64::from(r.left.unsigned_abs()) + u64::from(r.width) <= u64::from(f.width)
        && u64::from(r.top.unsigned_abs()) + u64::from(r.height) <= u64::from(f.height)
}

impl<B: Backend> Drop for Decoder<B> {
    fn drop(&mut self) {
        if !self.closed {
            // A short, bounded drain so the driver ends the stream cleanly; then stop.
            let within = self.config.timeout.min(Duration::from_millis(250));
            let _ = self.drain_within(within);
            self.stop();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bitstream_buffers_hold_an_idr_access_unit() {
        assert_eq!(bitstream_buffer_size(None), 2 << 20);
        assert_eq!(bitstream_buffer_size(Some((640, 480))), 1 << 20);
        assert_eq!(bitstream_buffer_size(Some((1920, 1080))), 2_073_600);
        assert_eq!(bitstream_buffer_size(Some((8192, 8192))), 16 << 20);
    }

    #[test]
    fn visible_rectangles_must_lie_inside_the_picture() {
        let f = Format {
            width: 1920,
            height: 1088,
            fourcc: Fourcc::YU12,
            planes: vec![],
        };
        let r = |left, top, width, height| Rect {
            left,
            top,
            width,
            height,
        };
        assert!(inside(r(0, 0, 1920, 1080), &f));
        assert!(!inside(r(0, 0, 1920, 1090), &f));
        assert!(!inside(r(-2, 0, 16, 16), &f));
        assert!(!inside(r(0, 0, 0, 16), &f));
    }

    #[test]
    fn a_missing_or_deviceless_dev_directory_finds_no_decoder() {
        assert_eq!(find_in(Path::new("/nonexistent-pinhole-dir")), None);
        // Entries named like nodes that are not V4L2 devices (QUERYCAP fails) are skipped.
        let dir = std::env::temp_dir().join(format!("pinhole-v4l2-find-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("video10"), b"not a device").unwrap();
        std::fs::write(dir.join("videoX"), b"").unwrap();
        assert_eq!(find_in(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errnos_read_as_what_to_do_and_enodev_means_gone() {
        let e = io_err(
            "/dev/video10",
            "poll",
            &io::Error::from_raw_os_error(libc::ENODEV),
        );
        assert!(matches!(e, Error::Gone { .. }));
        assert!(!e.is_transient());
        assert!(e.to_string().contains("decode in software"), "{e}");
        let d = describe(&io::Error::from_raw_os_error(libc::EBUSY));
        assert!(d.contains("another program is using the decoder"), "{d}");
    }
}
