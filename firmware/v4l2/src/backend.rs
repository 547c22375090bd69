//! The seam: what the encoder, the decoder and a capture loop need from a V4L2 node, one
//! method per ioctl (or per ioctl and mmap), in plain types. [`crate::V4l2Device`] implements
//! it with real ioctls; the tests implement it with stand-in drivers (an encoder, a decoder
//! and a camera).

use std::fmt;
use std::io;
use std::time::Duration;

/// A V4L2 pixel format code (`v4l2_fourcc(a, b, c, d)`, little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fourcc(pub [u8; 4]);

impl Fourcc {
    pub const H264: Fourcc = Fourcc(*b"H264");
    /// I420: Y, U, V planes one after the other in one buffer plane.
    pub const YU12: Fourcc = Fourcc(*b"YU12");
    /// Y plane, then interleaved U/V.
    pub const NV12: Fourcc = Fourcc(*b"NV12");
    /// I420 with the three planes in three buffer planes (multi-planar API only).
    pub const YM12: Fourcc = Fourcc(*b"YM12");
    /// NV12 with Y and UV in two buffer planes (multi-planar API only).
    pub const NM12: Fourcc = Fourcc(*b"NM12");
    /// Packed 4:2:2, what most UVC cameras deliver raw.
    pub const YUYV: Fourcc = Fourcc(*b"YUYV");
    /// Motion JPEG (and its older name): a JPEG picture per buffer, most UVC webcams' fast mode.
    pub const MJPG: Fourcc = Fourcc(*b"MJPG");
    pub const JPEG: Fourcc = Fourcc(*b"JPEG");

    pub fn from_u32(v: u32) -> Fourcc {
        Fourcc(v.to_le_bytes())
    }

    pub fn to_u32(self) -> u32 {
        u32::from_le_bytes(self.0)
    }
}

impl fmt::Display for Fourcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            let c = if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            };
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fourcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The two queues of a memory-to-memory device, named as V4L2 does: frames go *out* to the
/// device on OUTPUT, and H.264 is *captured* from it on CAPTURE. A camera has CAPTURE only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    Output,
    Capture,
}

impl fmt::Display for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Queue::Output => "OUTPUT",
            Queue::Capture => "CAPTURE",
        })
    }
}

pub const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
pub const CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
pub const CAP_VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
pub const CAP_VIDEO_M2M: u32 = 0x0000_8000;
pub const CAP_STREAMING: u32 = 0x0400_0000;
pub const CAP_DEVICE_CAPS: u32 = 0x8000_0000;

/// `VIDIOC_QUERYCAP`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    pub driver: String,
    pub card: String,
    pub bus: String,
    /// `device_caps` when the driver reports them (`V4L2_CAP_DEVICE_CAPS`), else
    /// `capabilities`: what this node can do.
    pub caps: u32,
}

impl Caps {
    pub fn is_m2m(&self) -> bool {
        self.caps & (CAP_VIDEO_M2M | CAP_VIDEO_M2M_MPLANE) != 0
    }

    /// A camera-like node: it captures video (single- or multi-planar) and is no M2M device.
    pub fn is_capture(&self) -> bool {
        self.caps & (CAP_VIDEO_CAPTURE | CAP_VIDEO_CAPTURE_MPLANE) != 0 && !self.is_m2m()
    }

    /// The multi-planar API: M2M nodes that say so (bcm2835-codec, most SoC codecs), and
    /// capture nodes that offer only it (SoC camera pipelines; a node offering both is driven
    /// single-planar, as UVC webcams are). Single-planar otherwise.
    pub fn is_mplane(&self) -> bool {
        if self.caps & (CAP_VIDEO_M2M | CAP_VIDEO_M2M_MPLANE) != 0 {
            return self.caps & CAP_VIDEO_M2M_MPLANE != 0;
        }
        self.caps & CAP_VIDEO_CAPTURE == 0 && self.caps & CAP_VIDEO_CAPTURE_MPLANE != 0
    }

    pub fn can_stream(&self) -> bool {
        self.caps & CAP_STREAMING != 0
    }
}

/// One plane of a format (`v4l2_plane_pix_format`, or the single-planar fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlaneFormat {
    pub bytesperline: u32,
    pub sizeimage: u32,
}

/// `v4l2_pix_format` / `v4l2_pix_format_mplane`, as far as the encoder cares. A
/// single-planar format has exactly one plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub width: u32,
    pub height: u32,
    pub fourcc: Fourcc,
    pub planes: Vec<PlaneFormat>,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}x{}", self.fourcc, self.width, self.height)
    }
}

/// One plane of a dequeued buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DequeuedPlane {
    pub bytesused: u32,
    /// Where the data starts (multi-planar `data_offset`; 0 for single-planar).
    pub data_offset: u32,
}

/// What `VIDIOC_DQBUF` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dequeued {
    pub index: usize,
    pub planes: Vec<DequeuedPlane>,
    pub flags: u32,
    /// `timestamp` in µs.
    pub timestamp_us: i64,
    pub sequence: u32,
}

/// What `poll()` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ready {
    /// A CAPTURE buffer can be dequeued (`POLLIN`).
    pub capture: bool,
    /// An OUTPUT buffer can be dequeued (`POLLOUT`).
    pub output: bool,
    /// `POLLERR`: a queue is in error or nothing is queued.
    pub error: bool,
    /// `POLLPRI`: an event is pending ([`Backend::dequeue_event`]).
    pub event: bool,
}

/// `V4L2_EVENT_EOS`: a decoder finished draining (after `V4L2_DEC_CMD_STOP`).
pub const EVENT_EOS: u32 = 2;
/// `V4L2_EVENT_SOURCE_CHANGE`: a decoder found the stream's format (or a new one): the
/// CAPTURE queue must be set up (again).
pub const EVENT_SOURCE_CHANGE: u32 = 5;
/// `V4L2_EVENT_SRC_CH_RESOLUTION`, a bit of [`Event::changes`].
pub const SRC_CH_RESOLUTION: u32 = 1;
/// `V4L2_DEC_CMD_START`: resume a decoder after a drain.
pub const DEC_CMD_START: u32 = 0;
/// `V4L2_DEC_CMD_STOP`: drain a decoder (its last picture comes flagged `LAST`).
pub const DEC_CMD_STOP: u32 = 1;
/// `V4L2_SEL_TGT_CROP`.
pub const SEL_TGT_CROP: u32 = 0x0000;
/// `V4L2_SEL_TGT_COMPOSE`: on a decoder's CAPTURE queue, the visible part of the picture.
pub const SEL_TGT_COMPOSE: u32 = 0x0100;

/// What `VIDIOC_DQEVENT` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Event {
    /// `V4L2_EVENT_*` ([`EVENT_SOURCE_CHANGE`], [`EVENT_EOS`], …).
    pub kind: u32,
    /// `u.src_change.changes` for a source change ([`SRC_CH_RESOLUTION`]); 0 otherwise.
    pub changes: u32,
    /// Events still queued after this one.
    pub pending: u32,
    pub sequence: u32,
}

/// A `struct v4l2_rect` (`VIDIOC_G_SELECTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    pub left: i32,
    pub top: i32,
    pub width: u32,
    pub height: u32,
}

impl fmt::Display for Rect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}x{}+{}+{}",
            self.width, self.height, self.left, self.top
        )
    }
}

/// `V4L2_FMT_FLAG_COMPRESSED` (`VIDIOC_ENUM_FMT`): MJPEG, H.264 and the like.
pub const FMT_FLAG_COMPRESSED: u32 = 0x0000_0001;
/// `V4L2_FMT_FLAG_EMULATED`: made by libv4lconvert, never by the kernel (nothing here uses
/// libv4l, so a real node never sets it).
pub const FMT_FLAG_EMULATED: u32 = 0x0000_0002;

/// One entry of `VIDIOC_ENUM_FMT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatDesc {
    pub fourcc: Fourcc,
    pub description: String,
    pub flags: u32,
}

/// A `struct v4l2_fract`: `num`/`den` seconds (a frame interval).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction {
    pub num: u32,
    pub den: u32,
}

/// One entry of `VIDIOC_ENUM_FRAMESIZES`. A continuous range is a stepwise one with step 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSize {
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

/// One entry of `VIDIOC_ENUM_FRAMEINTERVALS`: a fixed interval, or any from `min` (fastest)
/// to `max` (slowest) (continuous and stepwise alike; the step is not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameInterval {
    Discrete(Fraction),
    Stepwise { min: Fraction, max: Fraction },
}

/// `VIDIOC_QUERYCTRL`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlInfo {
    pub id: u32,
    /// `enum v4l2_ctrl_type` (1 integer, 2 boolean, 3 menu, 4 button, …).
    pub kind: u32,
    pub name: String,
    pub minimum: i32,
    pub maximum: i32,
    pub step: i32,
    pub default: i32,
    /// `V4L2_CTRL_FLAG_*` (0x0001 disabled, 0x0004 read-only, 0x0010 inactive, …).
    pub flags: u32,
}

/// `V4L2_BUF_FLAG_*` the encoder and the capture loop look at.
pub mod flags {
    pub const KEYFRAME: u32 = 0x0000_0008;
    pub const ERROR: u32 = 0x0000_0040;
    pub const TIMESTAMP_MASK: u32 = 0x0000_e000;
    pub const TIMESTAMP_UNKNOWN: u32 = 0x0000_0000;
    pub const TIMESTAMP_MONOTONIC: u32 = 0x0000_2000;
    pub const TIMESTAMP_COPY: u32 = 0x0000_4000;
    pub const LAST: u32 = 0x0010_0000;
}

/// A driver's errno in words, with what to do where there is something to do. `device` names
/// the kind ("encoder", "decoder"), `instead` what a busy one leaves the user.
pub fn describe_errno(e: &io::Error, device: &str, instead: &str) -> String {
    use nix::libc;
    let hint = match e.raw_os_error() {
        Some(libc::EBUSY) => {
            format!("device busy: another program is using the {device} (stop it, or {instead})")
        }
        Some(libc::EINVAL) => "invalid argument: the driver refused the request".into(),
        Some(libc::ENOTTY) => "not supported by this driver".into(),
        Some(libc::EIO) => format!("I/O error: the {device} hardware or its firmware failed"),
        Some(libc::ENOMEM) => {
            "out of memory for the buffers (on a Pi, contiguous memory: CMA)".into()
        }
        Some(libc::EPIPE) => "the queue has ended (after the last buffer)".into(),
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "permission denied: add the user running pinhole to the `video` group".into()
        }
        Some(libc::ENODEV) | Some(libc::ENXIO) => "the device is gone (driver unloaded?)".into(),
        Some(libc::ENOENT) => "no such device node: is the driver loaded?".into(),
        _ => return e.to_string(),
    };
    format!("{hint} ({e})")
}

fn enotty() -> io::Error {
    io::Error::from_raw_os_error(nix::libc::ENOTTY)
}

/// A V4L2 node, one call per ioctl. Errors are the driver's `errno`
/// (`io::Error::raw_os_error`); the encoder and the capture loop turn them into messages.
///
/// The capture-side enumeration and parameter calls, and the decoder's events, selection and
/// commands, have defaults that answer `ENOTTY`, what the kernel says for an ioctl the driver
/// lacks (the encoder never makes them).
pub trait Backend {
    /// `VIDIOC_QUERYCAP` (done when the node was opened).
    fn caps(&self) -> &Caps;
    /// `VIDIOC_ENUM_FMT` until `EINVAL`.
    fn formats(&mut self, queue: Queue) -> io::Result<Vec<Fourcc>>;
    /// `VIDIOC_S_FMT`: returns the format the driver set (it may adjust any field).
    fn set_format(&mut self, queue: Queue, want: &Format) -> io::Result<Format>;
    /// `VIDIOC_S_PARM` on OUTPUT: `timeperframe` = `num`/`den` seconds.
    fn set_frame_interval(&mut self, num: u32, den: u32) -> io::Result<()>;
    /// `VIDIOC_S_CTRL`.
    fn set_control(&mut self, id: u32, value: i32) -> io::Result<()>;
    /// `VIDIOC_REQBUFS` (MMAP), then `VIDIOC_QUERYBUF` and `mmap` for each buffer: the
    /// length of each plane of each buffer granted.
    fn allocate(&mut self, queue: Queue, count: u32) -> io::Result<Vec<Vec<usize>>>;
    /// The mapped bytes of a plane of a buffer the application owns (not queued), or
    /// `None` (no such buffer or plane, or it is queued).
    fn plane(&self, queue: Queue, index: usize, plane: usize) -> Option<&[u8]>;
    /// Like [`Backend::plane`], writable.
    fn plane_mut(&mut self, queue: Queue, index: usize, plane: usize) -> Option<&mut [u8]>;
    /// `VIDIOC_QBUF` with `bytesused` per plane and the timestamp (µs).
    fn queue(
        &mut self,
        queue: Queue,
        index: usize,
        bytesused: &[u32],
        timestamp_us: i64,
    ) -> io::Result<()>;
    /// `VIDIOC_DQBUF`: `Ok(None)` on `EAGAIN` (nothing ready; the node is non-blocking).
    fn dequeue(&mut self, queue: Queue) -> io::Result<Option<Dequeued>>;
    /// `poll()` for up to `timeout`.
    fn wait(&mut self, timeout: Duration) -> io::Result<Ready>;
    /// `VIDIOC_STREAMON` / `VIDIOC_STREAMOFF`.
    fn stream(&mut self, queue: Queue, on: bool) -> io::Result<()>;

    /// `VIDIOC_ENUM_FMT` until `EINVAL`, with descriptions and flags.
    fn format_descs(&mut self, queue: Queue) -> io::Result<Vec<FormatDesc>> {
        Ok(self
            .formats(queue)?
            .into_iter()
            .map(|fourcc| FormatDesc {
                fourcc,
                description: fourcc.to_string(),
                flags: 0,
            })
            .collect())
    }
    /// `VIDIOC_ENUM_FRAMESIZES` until `EINVAL`.
    fn frame_sizes(&mut self, _fourcc: Fourcc) -> io::Result<Vec<FrameSize>> {
        Err(enotty())
    }
    /// `VIDIOC_ENUM_FRAMEINTERVALS` at one size until `EINVAL`.
    fn frame_intervals(
        &mut self,
        _fourcc: Fourcc,
        _width: u32,
        _height: u32,
    ) -> io::Result<Vec<FrameInterval>> {
        Err(enotty())
    }
    /// `VIDIOC_G_FMT`.
    fn get_format(&mut self, _queue: Queue) -> io::Result<Format> {
        Err(enotty())
    }
    /// `VIDIOC_G_PARM` on CAPTURE: `timeperframe`, or `None` when the driver cannot set a
    /// rate (no `V4L2_CAP_TIMEPERFRAME`).
    fn capture_interval(&mut self) -> io::Result<Option<Fraction>> {
        Err(enotty())
    }
    /// `VIDIOC_S_PARM` on CAPTURE: asks for `timeperframe` and returns what the driver set
    /// (`None` as for [`Backend::capture_interval`]).
    fn set_capture_interval(&mut self, _want: Fraction) -> io::Result<Option<Fraction>> {
        Err(enotty())
    }
    /// `VIDIOC_G_CTRL`.
    fn control(&mut self, _id: u32) -> io::Result<i32> {
        Err(enotty())
    }
    /// `VIDIOC_QUERYCTRL`.
    fn query_control(&mut self, _id: u32) -> io::Result<ControlInfo> {
        Err(enotty())
    }
    /// `VIDIOC_SUBSCRIBE_EVENT` for `kind` (`V4L2_EVENT_*`, id 0, no flags).
    fn subscribe_event(&mut self, _kind: u32) -> io::Result<()> {
        Err(enotty())
    }
    /// `VIDIOC_DQEVENT`: `Ok(None)` when no event is pending (`ENOENT`).
    fn dequeue_event(&mut self) -> io::Result<Option<Event>> {
        Err(enotty())
    }
    /// `VIDIOC_G_SELECTION` of `target` (`V4L2_SEL_TGT_*`) on `queue`.
    fn selection(&mut self, _queue: Queue, _target: u32) -> io::Result<Rect> {
        Err(enotty())
    }
    /// `VIDIOC_DECODER_CMD` with `cmd` ([`DEC_CMD_STOP`], [`DEC_CMD_START`]) and no flags.
    fn decoder_command(&mut self, _cmd: u32) -> io::Result<()> {
        Err(enotty())
    }
}

/// A borrowed backend is a backend (the tests keep the stand-in driver to inspect it after
/// the encoder is gone).
impl<B: Backend + ?Sized> Backend for &mut B {
    fn caps(&self) -> &Caps {
        (**self).caps()
    }
    fn formats(&mut self, queue: Queue) -> io::Result<Vec<Fourcc>> {
        (**self).formats(queue)
    }
    fn set_format(&mut self, queue: Queue, want: &Format) -> io::Result<Format> {
        (**self).set_format(queue, want)
    }
    fn set_frame_interval(&mut self, num: u32, den: u32) -> io::Result<()> {
        (**self).set_frame_interval(num, den)
    }
    fn set_control(&mut self, id: u32, value: i32) -> io::Result<()> {
        (**self).set_control(id, value)
    }
    fn allocate(&mut self, queue: Queue, count: u32) -> io::Result<Vec<Vec<usize>>> {
        (**self).allocate(queue, count)
    }
    fn plane(&self, queue: Queue, index: usize, plane: usize) -> Option<&[u8]> {
        (**self).plane(queue, index, plane)
    }
    fn plane_mut(&mut self, queue: Queue, index: usize, plane: usize) -> Option<&mut [u8]> {
        (**self).plane_mut(queue, index, plane)
    }
    fn queue(
        &mut self,
        queue: Queue,
        index: usize,
        bytesused: &[u32],
        timestamp_us: i64,
    ) -> io::Result<()> {
        (**self).queue(queue, index, bytesused, timestamp_us)
    }
    fn dequeue(&mut self, queue: Queue) -> io::Result<Option<Dequeued>> {
        (**self).dequeue(queue)
    }
    fn wait(&mut self, timeout: Duration) -> io::Result<Ready> {
        (**self).wait(timeout)
    }
    fn stream(&mut self, queue: Queue, on: bool) -> io::Result<()> {
        (**self).stream(queue, on)
    }
    fn format_descs(&mut self, queue: Queue) -> io::Result<Vec<FormatDesc>> {
        (**self).format_descs(queue)
    }
    fn frame_sizes(&mut self, fourcc: Fourcc) -> io::Result<Vec<FrameSize>> {
        (**self).frame_sizes(fourcc)
    }
    fn frame_intervals(
        &mut self,
        fourcc: Fourcc,
        width: u32,
        height: u32,
    ) -> io::Result<Vec<FrameInterval>> {
        (**self).frame_intervals(fourcc, width, height)
    }
    fn get_format(&mut self, queue: Queue) -> io::Result<Format> {
        (**self).get_format(queue)
    }
    fn capture_interval(&mut self) -> io::Result<Option<Fraction>> {
        (**self).capture_interval()
    }
    fn set_capture_interval(&mut self, want: Fraction) -> io::Result<Option<Fraction>> {
        (**self).set_capture_interval(want)
    }
    fn control(&mut self, id: u32) -> io::Result<i32> {
        (**self).control(id)
    }
    fn query_control(&mut self, id: u32) -> io::Result<ControlInfo> {
        (**self).query_control(id)
    }
    fn subscribe_event(&mut self, kind: u32) -> io::Result<()> {
        (**self).subscribe_event(kind)
    }
    fn dequeue_event(&mut self) -> io::Result<Option<Event>> {
        (**self).dequeue_event()
    }
    fn selection(&mut self, queue: Queue, target: u32) -> io::Result<Rect> {
        (**self).selection(queue, target)
    }
    fn decoder_command(&mut self, cmd: u32) -> io::Result<()> {
        (**self).decoder_command(cmd)
    }
}
