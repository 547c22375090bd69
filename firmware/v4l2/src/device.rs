//! [`V4l2Device`]: the [`Backend`] over a real node (a camera, an M2M encoder or decoder),
//! through [`crate::sys`]. The struct encoding and decoding (single- and multi-planar formats,
//! buffers, frame sizes and intervals, stream parameters, controls, events) are pure functions,
//! unit-tested here; the ioctls themselves need a device, which these machines do not have.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::backend::{
    Backend, Caps, ControlInfo, Dequeued, DequeuedPlane, Event, Format, FormatDesc, Fourcc,
    Fraction, FrameInterval, FrameSize, PlaneFormat, Queue, Ready, Rect, CAP_DEVICE_CAPS,
    EVENT_SOURCE_CHANGE,
};
use crate::sys::{self, BufOp, BufType, Mapping, VIDEO_MAX_PLANES};

/// A V4L2 node (camera or memory-to-memory device) opened read-write and non-blocking.
#[derive(Debug)]
pub struct V4l2Device {
    // Field order is drop order: the mappings go before the descriptor is closed.
    output: Vec<Buffer>,
    capture: Vec<Buffer>,
    caps: Caps,
    mplane: bool,
    fd: OwnedFd,
}

#[derive(Debug)]
struct Buffer {
    planes: Vec<Mapping>,
    queued: bool,
}

impl V4l2Device {
    /// Opens `path` (`O_RDWR | O_NONBLOCK`) and reads its capabilities.
    pub fn open(path: &Path) -> io::Result<V4l2Device> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        let fd = OwnedFd::from(file);
        let caps = caps_from_raw(&sys::querycap(fd.as_fd())?);
        Ok(V4l2Device {
            output: Vec::new(),
            capture: Vec::new(),
            mplane: caps.is_mplane(),
            caps,
            fd,
        })
    }

    fn buf_type(&self, queue: Queue) -> BufType {
        buf_type(self.mplane, queue)
    }

    fn buffers(&self, queue: Queue) -> &Vec<Buffer> {
        match queue {
            Queue::Output => &self.output,
            Queue::Capture => &self.capture,
        }
    }

    fn buffers_mut(&mut self, queue: Queue) -> &mut Vec<Buffer> {
        match queue {
            Queue::Output => &mut self.output,
            Queue::Capture => &mut self.capture,
        }
    }
}

pub(crate) fn buf_type(mplane: bool, queue: Queue) -> BufType {
    match (mplane, queue) {
        (false, Queue::Output) => BufType::VideoOutput,
        (false, Queue::Capture) => BufType::VideoCapture,
        (true, Queue::Output) => BufType::VideoOutputMplane,
        (true, Queue::Capture) => BufType::VideoCaptureMplane,
    }
}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

pub(crate) fn caps_from_raw(c: &sys::v4l2_capability) -> Caps {
    Caps {
        driver: cstr(&c.driver),
        card: cstr(&c.card),
        bus: cstr(&c.bus_info),
        caps: if c.capabilities & CAP_DEVICE_CAPS != 0 {
            c.device_caps
        } else {
            c.capabilities
        },
    }
}

fn put(raw: &mut [u8], at: usize, v: u32) {
    raw[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn get(raw: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]])
}

// Offsets in the `fmt` union (linux/videodev2.h).
mod pix {
    pub const WIDTH: usize = 0;
    pub const HEIGHT: usize = 4;
    pub const PIXELFORMAT: usize = 8;
    pub const FIELD: usize = 12;
    /// `v4l2_pix_format` only.
    pub const BYTESPERLINE: usize = 16;
    pub const SIZEIMAGE: usize = 20;
    /// `v4l2_pix_format_mplane`: `plane_fmt[i]` (20 bytes each, packed) from 20, then
    /// `num_planes` (u8) at 180.
    pub const MP_PLANES: usize = 20;
    pub const MP_PLANE_LEN: usize = 20;
    pub const MP_NUM_PLANES: usize = 180;
}

/// A [`Format`] as the `struct v4l2_format` for `queue` (`pix` or `pix_mp`).
pub(crate) fn format_to_raw(mplane: bool, queue: Queue, f: &Format) -> sys::v4l2_format {
    let mut raw = sys::v4l2_format {
        type_: buf_type(mplane, queue) as u32,
        fmt: sys::FormatUnion::zeroed(),
    };
    let r = &mut raw.fmt.raw;
    put(r, pix::WIDTH, f.width);
    put(r, pix::HEIGHT, f.height);
    put(r, pix::PIXELFORMAT, f.fourcc.to_u32());
    put(r, pix::FIELD, sys::V4L2_FIELD_NONE);
    if mplane {
        let n = f.planes.len().min(VIDEO_MAX_PLANES);
        for (i, p) in f.planes.iter().take(n).enumerate() {
            let at = pix::MP_PLANES + i * pix::MP_PLANE_LEN;
            put(r, at, p.sizeimage);
            put(r, at + 4, p.bytesperline);
        }
        r[pix::MP_NUM_PLANES] = n as u8;
    } else if let Some(p) = f.planes.first() {
        put(r, pix::BYTESPERLINE, p.bytesperline);
        put(r, pix::SIZEIMAGE, p.sizeimage);
    }
    raw
}

/// The [`Format`] in a `struct v4l2_format` the driver returned.
pub(crate) fn format_from_raw(mplane: bool, raw: &sys::v4l2_format) -> Format {
    let r = &raw.fmt.raw;
    let planes = if mplane {
        let n = usize::from(r[pix::MP_NUM_PLANES]).min(VIDEO_MAX_PLANES);
        (0..n)
            .map(|i| {
                let at = pix::MP_PLANES + i * pix::MP_PLANE_LEN;
                PlaneFormat {
                    sizeimage: get(r, at),
                    bytesperline: get(r, at + 4),
                }
            })
            .collect()
    } else {
        vec![PlaneFormat {
            bytesperline: get(r, pix::BYTESPERLINE),
            sizeimage: get(r, pix::SIZEIMAGE),
        }]
    };
    Format {
        width: get(r, pix::WIDTH),
        height: get(r, pix::HEIGHT),
        fourcc: Fourcc::from_u32(get(r, pix::PIXELFORMAT)),
        planes,
    }
}

/// `VIDIOC_S_PARM` for OUTPUT: `parm.output.timeperframe` sits 8 bytes into the union (after
/// `capability` and `outputmode`).
pub(crate) fn output_parm(mplane: bool, num: u32, den: u32) -> sys::v4l2_streamparm {
    let mut p = sys::v4l2_streamparm {
        type_: buf_type(mplane, Queue::Output) as u32,
        parm: [0; 200],
    };
    put(&mut p.parm, 8, num);
    put(&mut p.parm, 12, den);
    p
}

/// `VIDIOC_G_PARM`/`S_PARM` for CAPTURE: `parm.capture` is `capability` (with
/// `V4L2_CAP_TIMEPERFRAME` = 0x1000), `capturemode`, then `timeperframe` at 8.
pub(crate) fn capture_parm(mplane: bool, want: Option<Fraction>) -> sys::v4l2_streamparm {
    let mut p = sys::v4l2_streamparm {
        type_: buf_type(mplane, Queue::Capture) as u32,
        parm: [0; 200],
    };
    if let Some(f) = want {
        put(&mut p.parm, 8, f.num);
        put(&mut p.parm, 12, f.den);
    }
    p
}

const CAP_TIMEPERFRAME: u32 = 0x1000;

/// The capture `timeperframe` in a `v4l2_streamparm` the driver returned, or `None` when the
/// driver cannot set a rate or reports a zero fraction.
pub(crate) fn capture_interval_from_raw(p: &sys::v4l2_streamparm) -> Option<Fraction> {
    let f = Fraction {
        num: get(&p.parm, 8),
        den: get(&p.parm, 12),
    };
    (get(&p.parm, 0) & CAP_TIMEPERFRAME != 0 && f.num > 0 && f.den > 0).then_some(f)
}

/// One `VIDIOC_ENUM_FRAMESIZES` answer; `None` for a type this code does not know.
pub(crate) fn frame_size_from_raw(e: &sys::v4l2_frmsizeenum) -> Option<FrameSize> {
    let s = e.size;
    match e.type_ {
        sys::V4L2_FRMSIZE_TYPE_DISCRETE => Some(FrameSize::Discrete {
            width: s[0],
            height: s[1],
        }),
        sys::V4L2_FRMSIZE_TYPE_CONTINUOUS | sys::V4L2_FRMSIZE_TYPE_STEPWISE => {
            let continuous = e.type_ == sys::V4L2_FRMSIZE_TYPE_CONTINUOUS;
            Some(FrameSize::Stepwise {
                min_width: s[0],
                max_width: s[1].max(s[0]),
                step_width: if continuous { 1 } else { s[2].max(1) },
                min_height: s[3],
                max_height: s[4].max(s[3]),
                step_height: if continuous { 1 } else { s[5].max(1) },
            })
        }
        _ => None,
    }
}

/// One `VIDIOC_ENUM_FRAMEINTERVALS` answer; `None` for an unknown type or a zero fraction.
pub(crate) fn frame_interval_from_raw(e: &sys::v4l2_frmivalenum) -> Option<FrameInterval> {
    let i = e.interval;
    let frac = |n: u32, d: u32| (n > 0 && d > 0).then_some(Fraction { num: n, den: d });
    if e.type_ == sys::V4L2_FRMIVAL_TYPE_DISCRETE {
        return frac(i[0], i[1]).map(FrameInterval::Discrete);
    }
    // CONTINUOUS (2) and STEPWISE (3): { min, max, step }.
    if e.type_ == 2 || e.type_ == 3 {
        return Some(FrameInterval::Stepwise {
            min: frac(i[0], i[1])?,
            max: frac(i[2], i[3])?,
        });
    }
    None
}

pub(crate) fn control_from_raw(q: &sys::v4l2_queryctrl) -> ControlInfo {
    ControlInfo {
        id: q.id,
        kind: q.type_,
        name: cstr(&q.name),
        minimum: q.minimum,
        maximum: q.maximum,
        step: q.step,
        default: q.default_value,
        flags: q.flags,
    }
}

/// How many entries an enumeration ioctl is asked for at most (a driver that never says
/// `EINVAL` cannot keep a caller looping).
const MAX_ENUM: u32 = 256;

#[allow(clippy::useless_conversion)] // time_t and suseconds_t are i32 on 32-bit targets
pub(crate) fn timeval_us(t: &nix::libc::timeval) -> i64 {
    i64::from(t.tv_sec)
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(t.tv_usec))
}

pub(crate) fn timeval_from_us(us: i64) -> nix::libc::timeval {
    let us = us.max(0);
    nix::libc::timeval {
        tv_sec: (us / 1_000_000) as nix::libc::time_t,
        tv_usec: (us % 1_000_000) as nix::libc::suseconds_t,
    }
}

/// A dequeued `v4l2_buffer` (with its plane array when multi-planar).
pub(crate) fn dequeued_from_raw(
    mplane: bool,
    b: &sys::v4l2_buffer,
    planes: &[sys::v4l2_plane],
) -> Dequeued {
    let planes = if mplane {
        let n = (b.length as usize).min(planes.len());
        planes[..n]
            .iter()
            .map(|p| DequeuedPlane {
                bytesused: p.bytesused,
                data_offset: p.data_offset,
            })
            .collect()
    } else {
        vec![DequeuedPlane {
            bytesused: b.bytesused,
            data_offset: 0,
        }]
    };
    Dequeued {
        index: b.index as usize,
        planes,
        flags: b.flags,
        timestamp_us: timeval_us(&b.timestamp),
        sequence: b.sequence,
    }
}

/// A `v4l2_event` the driver returned: `u.src_change.changes` is read for source changes only.
pub(crate) fn event_from_raw(e: &sys::v4l2_event) -> Event {
    Event {
        kind: e.type_,
        changes: if e.type_ == EVENT_SOURCE_CHANGE {
            get(&e.u.raw, 0)
        } else {
            0
        },
        pending: e.pending,
        sequence: e.sequence,
    }
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

impl Backend for V4l2Device {
    fn caps(&self) -> &Caps {
        &self.caps
    }

    fn formats(&mut self, queue: Queue) -> io::Result<Vec<Fourcc>> {
        Ok(self
            .format_descs(queue)?
            .into_iter()
            .map(|d| d.fourcc)
            .collect())
    }

    fn format_descs(&mut self, queue: Queue) -> io::Result<Vec<FormatDesc>> {
        let mut out = Vec::new();
        for index in 0..MAX_ENUM {
            let mut d = sys::v4l2_fmtdesc {
                index,
                type_: self.buf_type(queue) as u32,
                flags: 0,
                description: [0; 32],
                pixelformat: 0,
                mbus_code: 0,
                reserved: [0; 3],
            };
            match sys::enum_fmt(self.fd.as_fd(), &mut d) {
                Ok(()) => out.push(FormatDesc {
                    fourcc: Fourcc::from_u32(d.pixelformat),
                    description: cstr(&d.description),
                    flags: d.flags,
                }),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn frame_sizes(&mut self, fourcc: Fourcc) -> io::Result<Vec<FrameSize>> {
        let mut out = Vec::new();
        for index in 0..MAX_ENUM {
            let mut e = sys::v4l2_frmsizeenum {
                index,
                pixel_format: fourcc.to_u32(),
                ..Default::default()
            };
            match sys::enum_framesizes(self.fd.as_fd(), &mut e) {
                Ok(()) => {
                    let size = frame_size_from_raw(&e);
                    out.extend(size);
                    // A stepwise or continuous range is the only entry (index 0).
                    if matches!(size, Some(FrameSize::Stepwise { .. })) {
                        break;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn frame_intervals(
        &mut self,
        fourcc: Fourcc,
        width: u32,
        height: u32,
    ) -> io::Result<Vec<FrameInterval>> {
        let mut out = Vec::new();
        for index in 0..MAX_ENUM {
            let mut e = sys::v4l2_frmivalenum {
                index,
                pixel_format: fourcc.to_u32(),
                width,
                height,
                ..Default::default()
            };
            match sys::enum_frameintervals(self.fd.as_fd(), &mut e) {
                Ok(()) => {
                    let i = frame_interval_from_raw(&e);
                    out.extend(i);
                    if matches!(i, Some(FrameInterval::Stepwise { .. })) {
                        break;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn get_format(&mut self, queue: Queue) -> io::Result<Format> {
        let mut raw = sys::v4l2_format {
            type_: self.buf_type(queue) as u32,
            fmt: sys::FormatUnion::zeroed(),
        };
        sys::format(self.fd.as_fd(), &mut raw, false)?;
        Ok(format_from_raw(self.mplane, &raw))
    }

    fn capture_interval(&mut self) -> io::Result<Option<Fraction>> {
        let mut p = capture_parm(self.mplane, None);
        sys::parm(self.fd.as_fd(), &mut p, false)?;
        Ok(capture_interval_from_raw(&p))
    }

    fn set_capture_interval(&mut self, want: Fraction) -> io::Result<Option<Fraction>> {
        let mut p = capture_parm(self.mplane, Some(want));
        sys::parm(self.fd.as_fd(), &mut p, true)?;
        Ok(capture_interval_from_raw(&p))
    }

    fn control(&mut self, id: u32) -> io::Result<i32> {
        sys::g_ctrl(self.fd.as_fd(), id)
    }

    fn query_control(&mut self, id: u32) -> io::Result<ControlInfo> {
        Ok(control_from_raw(&sys::queryctrl(self.fd.as_fd(), id)?))
    }

    fn set_format(&mut self, queue: Queue, want: &Format) -> io::Result<Format> {
        let mut raw = format_to_raw(self.mplane, queue, want);
        sys::format(self.fd.as_fd(), &mut raw, true)?;
        Ok(format_from_raw(self.mplane, &raw))
    }

    fn set_frame_interval(&mut self, num: u32, den: u32) -> io::Result<()> {
        let mut p = output_parm(self.mplane, num, den);
        sys::parm(self.fd.as_fd(), &mut p, true)
    }

    fn set_control(&mut self, id: u32, value: i32) -> io::Result<()> {
        sys::s_ctrl(self.fd.as_fd(), id, value)
    }

    fn allocate(&mut self, queue: Queue, count: u32) -> io::Result<Vec<Vec<usize>>> {
        let t = self.buf_type(queue);
        self.buffers_mut(queue).clear();
        let granted = sys::reqbufs(self.fd.as_fd(), t, count)?;
        let mut buffers = Vec::new();
        for index in 0..granted {
            let mut b = sys::v4l2_buffer::new(t, index);
            let mut planes = [sys::v4l2_plane::default(); VIDEO_MAX_PLANES];
            sys::buffer(self.fd.as_fd(), BufOp::Query, t, &mut b, &mut planes)?;
            let spans: Vec<(usize, u32)> = if t.is_mplane() {
                let n = (b.length as usize).min(VIDEO_MAX_PLANES);
                planes[..n]
                    .iter()
                    .map(|p| (p.length as usize, p.mem_offset()))
                    .collect()
            } else {
                vec![(b.length as usize, b.mem_offset())]
            };
            let maps = spans
                .into_iter()
                .map(|(len, offset)| Mapping::new(self.fd.as_fd(), len, offset))
                .collect::<io::Result<Vec<_>>>()?;
            buffers.push(Buffer {
                planes: maps,
                queued: false,
            });
        }
        let lengths = buffers
            .iter()
            .map(|b| b.planes.iter().map(Mapping::len).collect())
            .collect();
        *self.buffers_mut(queue) = buffers;
        Ok(lengths)
    }

    fn plane(&self, queue: Queue, index: usize, plane: usize) -> Option<&[u8]> {
        let b = self.buffers(queue).get(index)?;
        if b.queued {
            return None;
        }
        b.planes.get(plane).map(Mapping::as_slice)
    }

    fn plane_mut(&mut self, queue: Queue, index: usize, plane: usize) -> Option<&mut [u8]> {
        let b = self.buffers_mut(queue).get_mut(index)?;
        if b.queued {
            return None;
        }
        b.planes.get_mut(plane).map(Mapping::as_mut_slice)
    }

    fn queue(
        &mut self,
        queue: Queue,
        index: usize,
        bytesused: &[u32],
        timestamp_us: i64,
    ) -> io::Result<()> {
        let t = self.buf_type(queue);
        let n_planes = match self.buffers(queue).get(index) {
            Some(b) if !b.queued => b.planes.len(),
            _ => return Err(einval()),
        };
        let mut b = sys::v4l2_buffer::new(t, u32::try_from(index).map_err(|_| einval())?);
        b.field = sys::V4L2_FIELD_NONE;
        b.timestamp = timeval_from_us(timestamp_us);
        let mut planes = [sys::v4l2_plane::default(); VIDEO_MAX_PLANES];
        if t.is_mplane() {
            for (p, used) in planes.iter_mut().zip(bytesused) {
                p.bytesused = *used;
            }
        } else {
            b.bytesused = bytesused.first().copied().unwrap_or(0);
        }
        let n = n_planes.clamp(1, VIDEO_MAX_PLANES);
        sys::buffer(self.fd.as_fd(), BufOp::Queue, t, &mut b, &mut planes[..n])?;
        if let Some(buf) = self.buffers_mut(queue).get_mut(index) {
            buf.queued = true;
        }
        Ok(())
    }

    fn dequeue(&mut self, queue: Queue) -> io::Result<Option<Dequeued>> {
        let t = self.buf_type(queue);
        let mut b = sys::v4l2_buffer::new(t, 0);
        let mut planes = [sys::v4l2_plane::default(); VIDEO_MAX_PLANES];
        match sys::buffer(self.fd.as_fd(), BufOp::Dequeue, t, &mut b, &mut planes) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
        let d = dequeued_from_raw(t.is_mplane(), &b, &planes);
        if let Some(buf) = self.buffers_mut(queue).get_mut(d.index) {
            buf.queued = false;
        }
        Ok(Some(d))
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<Ready> {
        // POLLPRI: events (a decoder's source change); none arrive unless subscribed.
        let mut fds = [PollFd::new(
            self.fd.as_fd(),
            PollFlags::POLLIN | PollFlags::POLLOUT | PollFlags::POLLPRI,
        )];
        let ms = u16::try_from(timeout.as_millis().max(1)).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(Ready::default()),
            Err(e) => return Err(e.into()),
        }
        let r = fds[0].revents().unwrap_or(PollFlags::empty());
        Ok(Ready {
            capture: r.intersects(PollFlags::POLLIN | PollFlags::POLLRDNORM),
            output: r.intersects(PollFlags::POLLOUT | PollFlags::POLLWRNORM),
            error: r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL),
            event: r.intersects(PollFlags::POLLPRI),
        })
    }

    fn subscribe_event(&mut self, kind: u32) -> io::Result<()> {
        sys::subscribe_event(self.fd.as_fd(), kind)
    }

    fn dequeue_event(&mut self) -> io::Result<Option<Event>> {
        Ok(sys::dqevent(self.fd.as_fd())?.map(|e| event_from_raw(&e)))
    }

    fn selection(&mut self, queue: Queue, target: u32) -> io::Result<Rect> {
        let r = sys::g_selection(self.fd.as_fd(), self.buf_type(queue), target)?;
        Ok(Rect {
            left: r.left,
            top: r.top,
            width: r.width,
            height: r.height,
        })
    }

    fn decoder_command(&mut self, cmd: u32) -> io::Result<()> {
        sys::decoder_cmd(self.fd.as_fd(), cmd)
    }

    fn stream(&mut self, queue: Queue, on: bool) -> io::Result<()> {
        let t = self.buf_type(queue);
        sys::stream(self.fd.as_fd(), t, on)?;
        if !on {
            // STREAMOFF returns every buffer to the application.
            for b in self.buffers_mut(queue) {
                b.queued = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Pure struct encoding, checked against the byte offsets of linux/videodev2.h (no device
    //! exists on these machines, so the ioctls themselves are not run).
    use super::*;

    #[test]
    fn a_multi_planar_format_round_trips_through_pix_mp_bytes() {
        let f = Format {
            width: 1280,
            height: 720,
            fourcc: Fourcc::YM12,
            planes: vec![
                PlaneFormat {
                    bytesperline: 1280,
                    sizeimage: 921_600,
                },
                PlaneFormat {
                    bytesperline: 640,
                    sizeimage: 230_400,
                },
                PlaneFormat {
                    bytesperline: 640,
                    sizeimage: 230_400,
                },
            ],
        };
        let raw = format_to_raw(true, Queue::Output, &f);
        assert_eq!(raw.type_, 10); // V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE
        assert_eq!(&raw.fmt.raw[8..12], b"YM12");
        assert_eq!(raw.fmt.raw[180], 3); // num_planes
        assert_eq!(get(&raw.fmt.raw, 20 + 20 + 4), 640); // plane_fmt[1].bytesperline
        assert_eq!(format_from_raw(true, &raw), f);
    }

    #[test]
    fn a_single_planar_format_uses_the_pix_fields() {
        let f = Format {
            width: 640,
            height: 480,
            fourcc: Fourcc::H264,
            planes: vec![PlaneFormat {
                bytesperline: 0,
                sizeimage: 512 << 10,
            }],
        };
        let raw = format_to_raw(false, Queue::Capture, &f);
        assert_eq!(raw.type_, 1);
        assert_eq!(get(&raw.fmt.raw, 20), 512 << 10); // pix.sizeimage
        assert_eq!(get(&raw.fmt.raw, 12), 1); // pix.field = V4L2_FIELD_NONE
        assert_eq!(format_from_raw(false, &raw), f);
    }

    #[test]
    fn events_decode_the_source_change_bits_from_the_union() {
        let mut e = sys::v4l2_event::zeroed();
        e.type_ = 5; // V4L2_EVENT_SOURCE_CHANGE
        e.u.raw[..4].copy_from_slice(&1u32.to_ne_bytes()); // V4L2_EVENT_SRC_CH_RESOLUTION
        e.pending = 1;
        e.sequence = 7;
        assert_eq!(
            event_from_raw(&e),
            Event {
                kind: EVENT_SOURCE_CHANGE,
                changes: 1,
                pending: 1,
                sequence: 7
            }
        );
        e.type_ = 2; // V4L2_EVENT_EOS: the union means nothing
        assert_eq!(event_from_raw(&e).changes, 0);
    }

    #[test]
    fn caps_prefer_device_caps_and_trim_c_strings() {
        let mut c = sys::v4l2_capability {
            driver: [0; 16],
            card: [0; 32],
            bus_info: [0; 32],
            version: 0,
            capabilities: 0x8420_4000,
            device_caps: 0x0420_4000,
            reserved: [0; 3],
        };
        c.driver[..13].copy_from_slice(b"bcm2835-codec");
        c.card[..20].copy_from_slice(b"bcm2835-codec-encode");
        let caps = caps_from_raw(&c);
        assert_eq!(caps.driver, "bcm2835-codec");
        assert_eq!(caps.card, "bcm2835-codec-encode");
        assert_eq!(caps.caps, 0x0420_4000);
        assert!(caps.is_m2m() && caps.is_mplane() && caps.can_stream());
        c.capabilities = 0x0400_8000; // no DEVICE_CAPS: `capabilities` is the node's
        assert!(!caps_from_raw(&c).is_mplane());
    }

    #[test]
    fn buffers_timestamps_and_stream_parameters_encode_as_the_kernel_reads_them() {
        let tv = timeval_from_us(1_234_567_890);
        assert_eq!((tv.tv_sec, tv.tv_usec), (1234, 567_890));
        assert_eq!(timeval_us(&tv), 1_234_567_890);
        let mut b = sys::v4l2_buffer::new(BufType::VideoCaptureMplane, 2);
        b.length = 1;
        b.flags = 0x4008;
        b.timestamp = tv;
        let planes = [sys::v4l2_plane {
            bytesused: 5000,
            data_offset: 16,
            ..Default::default()
        }];
        let d = dequeued_from_raw(true, &b, &planes);
        assert_eq!(d.index, 2);
        assert_eq!(
            d.planes,
            [DequeuedPlane {
                bytesused: 5000,
                data_offset: 16
            }]
        );
        assert_eq!(d.timestamp_us, 1_234_567_890);
        let p = output_parm(true, 1, 30);
        assert_eq!(p.type_, 10);
        assert_eq!((get(&p.parm, 8), get(&p.parm, 12)), (1, 30));
    }

    #[test]
    fn frame_sizes_intervals_capture_parameters_and_controls_decode_from_kernel_bytes() {
        // The union layouts of linux/videodev2.h, filled as a driver would.
        let mut e = sys::v4l2_frmsizeenum {
            type_: sys::V4L2_FRMSIZE_TYPE_DISCRETE,
            size: [1280, 720, 0, 0, 0, 0],
            ..Default::default()
        };
        assert_eq!(
            frame_size_from_raw(&e),
            Some(FrameSize::Discrete {
                width: 1280,
                height: 720
            })
        );
        e.type_ = sys::V4L2_FRMSIZE_TYPE_STEPWISE;
        e.size = [32, 1920, 16, 32, 1080, 0];
        assert_eq!(
            frame_size_from_raw(&e),
            Some(FrameSize::Stepwise {
                min_width: 32,
                max_width: 1920,
                step_width: 16,
                min_height: 32,
                max_height: 1080,
                step_height: 1, // a zero step is taken as 1, never a division by zero
            })
        );
        e.type_ = sys::V4L2_FRMSIZE_TYPE_CONTINUOUS;
        assert!(matches!(
            frame_size_from_raw(&e),
            Some(FrameSize::Stepwise { step_width: 1, .. })
        ));
        e.type_ = 9;
        assert_eq!(frame_size_from_raw(&e), None);

        let mut i = sys::v4l2_frmivalenum {
            type_: sys::V4L2_FRMIVAL_TYPE_DISCRETE,
            interval: [1001, 30000, 0, 0, 0, 0],
            ..Default::default()
        };
        assert_eq!(
            frame_interval_from_raw(&i),
            Some(FrameInterval::Discrete(Fraction {
                num: 1001,
                den: 30000
            }))
        );
        i.interval = [1, 0, 0, 0, 0, 0]; // a zero denominator is no interval
        assert_eq!(frame_interval_from_raw(&i), None);
        i.type_ = 3;
        i.interval = [1, 60, 1, 1, 1, 60];
        assert_eq!(
            frame_interval_from_raw(&i),
            Some(FrameInterval::Stepwise {
                min: Fraction { num: 1, den: 60 },
                max: Fraction { num: 1, den: 1 }
            })
        );

        let p = capture_parm(false, Some(Fraction { num: 1, den: 25 }));
        assert_eq!(p.type_, 1); // V4L2_BUF_TYPE_VIDEO_CAPTURE
        assert_eq!((get(&p.parm, 8), get(&p.parm, 12)), (1, 25));
        // Without V4L2_CAP_TIMEPERFRAME the driver's numbers are not a settable rate.
        assert_eq!(capture_interval_from_raw(&p), None);
        let mut p = p;
        put(&mut p.parm, 0, 0x1000);
        assert_eq!(
            capture_interval_from_raw(&p),
            Some(Fraction { num: 1, den: 25 })
        );
        assert_eq!(capture_parm(true, None).type_, 9);

        let mut q = sys::v4l2_queryctrl {
            id: 0x0098_0900,
            type_: 1,
            minimum: -64,
            maximum: 64,
            step: 1,
            default_value: 0,
            flags: 0x10,
            ..Default::default()
        };
        q.name[..10].copy_from_slice(b"Brightness");
        let c = control_from_raw(&q);
        assert_eq!(
            (c.name.as_str(), c.minimum, c.maximum, c.flags),
            ("Brightness", -64, 64, 0x10)
        );
    }

    #[test]
    fn capture_nodes_choose_single_or_multi_planar_from_their_caps() {
        let caps = |c: u32| Caps {
            driver: String::new(),
            card: String::new(),
            bus: String::new(),
            caps: c,
        };
        // A UVC webcam: single-planar capture.
        assert!(caps(0x0420_0001).is_capture() && !caps(0x0420_0001).is_mplane());
        // A SoC camera pipeline offering only the multi-planar API.
        assert!(caps(0x0420_1000).is_capture() && caps(0x0420_1000).is_mplane());
        // Both APIs: driven single-planar.
        assert!(!caps(0x0420_1001).is_mplane());
        // An M2M encoder is not a camera.
        assert!(!caps(0x0420_4000).is_capture() && caps(0x0420_4000).is_mplane());
    }

    #[test]
    fn opening_a_missing_node_is_an_io_error() {
        let e = V4l2Device::open(Path::new("/dev/video-none-here")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
