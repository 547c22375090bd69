//! The seam: what the encoder needs from a V4L2 node, one method per ioctl (or per ioctl and
//! mmap), in plain types. [`crate::V4l2Device`] implements it with real ioctls; the tests
//! implement it with a stand-in driver.

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
    /// Motion JPEG (and its older name), decoded to YU12 by libv4lconvert.
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
/// device on OUTPUT, and H.264 is *captured* from it on CAPTURE.
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

    /// The multi-planar API (bcm2835-codec, most SoC codecs); single-planar otherwise.
    pub fn is_mplane(&self) -> bool {
        self.caps & CAP_VIDEO_M2M_MPLANE != 0
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
}

/// `V4L2_BUF_FLAG_*` the encoder looks at.
pub mod flags {
    pub const KEYFRAME: u32 = 0x0000_0008;
    pub const ERROR: u32 = 0x0000_0040;
    pub const TIMESTAMP_MASK: u32 = 0x0000_e000;
    pub const TIMESTAMP_COPY: u32 = 0x0000_4000;
    pub const LAST: u32 = 0x0010_0000;
}

/// A V4L2 memory-to-memory node, one call per ioctl. Errors are the driver's `errno`
/// (`io::Error::raw_os_error`); the encoder turns them into messages.
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
}
