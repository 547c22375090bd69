//! The kernel ABI: the `linux/videodev2.h` structs this crate passes to ioctls (capture and
//! memory-to-memory encoders and decoders: events, selection, decoder commands), the ioctls
//! themselves, `mmap` and `poll`. The only module with `unsafe` code (see `lib.rs`).
//!
//! The structs are written out by hand (no bindgen at build time, nothing for the aarch64
//! cross build to find) and checked against the kernel headers: the sizes at compile time on
//! 64-bit Linux (x86_64 and aarch64 agree, both LP64; measured with a C program against
//! linux-libc-dev and aarch64-linux-gnu's headers) and the ioctl numbers in the unit tests.
//! Unions are plain byte arrays or `unsigned long` fields, so reading them needs no `unsafe`;
//! the pure encoding and decoding lives in [`crate::device`].
//!
//! Soundness rests on three rules the safe wrappers enforce themselves rather than trust the
//! caller with: buffer ioctls always use `V4L2_MEMORY_MMAP` (with `USERPTR` the kernel would
//! write wherever the caller's number pointed) and set the multi-planar `planes` pointer from
//! a slice they borrow for the call; format and parameter ioctls take only the four video
//! buffer types (an overlay format would carry pointers); and a [`Mapping`] is only handed out
//! as a slice by its owner while the buffer is dequeued (see `device.rs`).

#![allow(non_camel_case_types)]

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use nix::libc::{self, c_int, c_ulong};
use nix::sys::mman::{MapFlags, ProtFlags};

pub const VIDEO_MAX_PLANES: usize = 8;

/// `enum v4l2_buf_type`: only the four video types (see the module docs).
#[allow(clippy::enum_variant_names)] // the kernel's names
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum BufType {
    VideoCapture = 1,
    VideoOutput = 2,
    VideoCaptureMplane = 9,
    VideoOutputMplane = 10,
}

impl BufType {
    pub fn is_mplane(self) -> bool {
        matches!(
            self,
            BufType::VideoCaptureMplane | BufType::VideoOutputMplane
        )
    }

    fn from_raw(t: u32) -> Option<BufType> {
        match t {
            1 => Some(BufType::VideoCapture),
            2 => Some(BufType::VideoOutput),
            9 => Some(BufType::VideoCaptureMplane),
            10 => Some(BufType::VideoOutputMplane),
            _ => None,
        }
    }
}

pub const V4L2_MEMORY_MMAP: u32 = 1;
pub const V4L2_FIELD_NONE: u32 = 1;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_capability {
    pub driver: [u8; 16],
    pub card: [u8; 32],
    pub bus_info: [u8; 32],
    pub version: u32,
    pub capabilities: u32,
    pub device_caps: u32,
    pub reserved: [u32; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_fmtdesc {
    pub index: u32,
    pub type_: u32,
    pub flags: u32,
    pub description: [u8; 32],
    pub pixelformat: u32,
    pub mbus_code: u32,
    pub reserved: [u32; 3],
}

/// The 200-byte `fmt` union of `struct v4l2_format`, pointer-aligned as in the kernel (its
/// `v4l2_window` member holds pointers).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FormatUnion {
    pub raw: [u8; 200],
    _align: [c_ulong; 0],
}

impl FormatUnion {
    pub fn zeroed() -> FormatUnion {
        FormatUnion {
            raw: [0; 200],
            _align: [],
        }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_format {
    pub type_: u32,
    pub fmt: FormatUnion,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_requestbuffers {
    pub count: u32,
    pub type_: u32,
    pub memory: u32,
    pub capabilities: u32,
    pub flags: u8,
    pub reserved: [u8; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct v4l2_timecode {
    pub type_: u32,
    pub flags: u32,
    pub frames: u8,
    pub seconds: u8,
    pub minutes: u8,
    pub hours: u8,
    pub userbits: [u8; 4],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_buffer {
    pub index: u32,
    pub type_: u32,
    pub bytesused: u32,
    pub flags: u32,
    pub field: u32,
    pub timestamp: libc::timeval,
    pub timecode: v4l2_timecode,
    pub sequence: u32,
    pub memory: u32,
    /// `union { __u32 offset; unsigned long userptr; struct v4l2_plane *planes; __s32 fd; }`.
    pub m: c_ulong,
    pub length: u32,
    pub reserved2: u32,
    /// `union { __s32 request_fd; __u32 reserved; }`.
    pub request_fd: i32,
}

impl v4l2_buffer {
    pub fn new(type_: BufType, index: u32) -> v4l2_buffer {
        v4l2_buffer {
            index,
            type_: type_ as u32,
            bytesused: 0,
            flags: 0,
            field: 0,
            timestamp: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            timecode: v4l2_timecode::default(),
            sequence: 0,
            memory: V4L2_MEMORY_MMAP,
            m: 0,
            length: 0,
            reserved2: 0,
            request_fd: 0,
        }
    }

    /// `m.offset` (single-planar MMAP): the union's first four bytes.
    pub fn mem_offset(&self) -> u32 {
        first_u32(self.m)
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct v4l2_plane {
    pub bytesused: u32,
    pub length: u32,
    /// `union { __u32 mem_offset; unsigned long userptr; __s32 fd; }`.
    pub m: c_ulong,
    pub data_offset: u32,
    pub reserved: [u32; 11],
}

impl v4l2_plane {
    pub fn mem_offset(&self) -> u32 {
        first_u32(self.m)
    }
}

/// The `__u32` member at the start of an `unsigned long` union, on either endianness.
fn first_u32(m: c_ulong) -> u32 {
    let b = m.to_ne_bytes();
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct v4l2_control {
    pub id: u32,
    pub value: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_streamparm {
    pub type_: u32,
    /// `union { v4l2_captureparm; v4l2_outputparm; __u8 raw_data[200]; }`.
    pub parm: [u8; 200],
}

/// `struct v4l2_frmsizeenum`: the union (`discrete` 8 bytes, `stepwise` 24) as six u32s.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct v4l2_frmsizeenum {
    pub index: u32,
    pub pixel_format: u32,
    pub type_: u32,
    /// `discrete { width, height }` in `[0..2]`, or `stepwise { min_width, max_width,
    /// step_width, min_height, max_height, step_height }`.
    pub size: [u32; 6],
    pub reserved: [u32; 2],
}

pub const V4L2_FRMSIZE_TYPE_DISCRETE: u32 = 1;
pub const V4L2_FRMSIZE_TYPE_CONTINUOUS: u32 = 2;
pub const V4L2_FRMSIZE_TYPE_STEPWISE: u32 = 3;

/// `struct v4l2_frmivalenum`: the union (`discrete` fraction, or `stepwise { min, max, step }`
/// fractions) as six u32s (numerator, denominator pairs).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct v4l2_frmivalenum {
    pub index: u32,
    pub pixel_format: u32,
    pub width: u32,
    pub height: u32,
    pub type_: u32,
    pub interval: [u32; 6],
    pub reserved: [u32; 2],
}

pub const V4L2_FRMIVAL_TYPE_DISCRETE: u32 = 1;

/// `struct v4l2_queryctrl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct v4l2_queryctrl {
    pub id: u32,
    pub type_: u32,
    pub name: [u8; 32],
    pub minimum: i32,
    pub maximum: i32,
    pub step: i32,
    pub default_value: i32,
    pub flags: u32,
    pub reserved: [u32; 2],
}

/// `struct v4l2_event_subscription` (`VIDIOC_SUBSCRIBE_EVENT`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct v4l2_event_subscription {
    pub type_: u32,
    pub id: u32,
    pub flags: u32,
    pub reserved: [u32; 5],
}

/// The 64-byte `u` union of `struct v4l2_event`, 8-byte aligned as in the kernel (its
/// `v4l2_event_ctrl` member holds an `__s64`). `src_change.changes` is its first `__u32`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EventUnion {
    pub raw: [u8; 64],
    _align: [u64; 0],
}

/// `struct v4l2_event` (`VIDIOC_DQEVENT`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct v4l2_event {
    pub type_: u32,
    pub u: EventUnion,
    pub pending: u32,
    pub sequence: u32,
    pub timestamp: libc::timespec,
    pub id: u32,
    pub reserved: [u32; 8],
}

impl v4l2_event {
    pub fn zeroed() -> v4l2_event {
        v4l2_event {
            type_: 0,
            u: EventUnion {
                raw: [0; 64],
                _align: [],
            },
            pending: 0,
            sequence: 0,
            timestamp: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            id: 0,
            reserved: [0; 8],
        }
    }
}

/// `struct v4l2_rect`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct v4l2_rect {
    pub left: i32,
    pub top: i32,
    pub width: u32,
    pub height: u32,
}

/// `struct v4l2_selection` (`VIDIOC_G_SELECTION`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct v4l2_selection {
    pub type_: u32,
    pub target: u32,
    pub flags: u32,
    pub r: v4l2_rect,
    pub reserved: [u32; 9],
}

/// `struct v4l2_decoder_cmd` (`VIDIOC_DECODER_CMD`): the union (`stop { __u64 pts }`,
/// `start { __s32 speed; __u32 format }`, `raw { __u32 data[16] }`) as eight u64s.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct v4l2_decoder_cmd {
    pub cmd: u32,
    pub flags: u32,
    pub data: [u64; 8],
}

// Sizes from linux/videodev2.h on LP64 (x86_64 and aarch64 measured identical). A 32-bit
// build is not checked here (pinhole ships for aarch64); the layouts use the C types, so the
// classic 32-bit ABI would come out right too, but that is not verified.
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(size_of::<v4l2_capability>() == 104);
    assert!(size_of::<v4l2_fmtdesc>() == 64);
    assert!(size_of::<v4l2_format>() == 208);
    assert!(size_of::<v4l2_requestbuffers>() == 20);
    assert!(size_of::<v4l2_timecode>() == 16);
    assert!(size_of::<v4l2_buffer>() == 88);
    assert!(std::mem::offset_of!(v4l2_buffer, timestamp) == 24);
    assert!(std::mem::offset_of!(v4l2_buffer, m) == 64);
    assert!(std::mem::offset_of!(v4l2_buffer, request_fd) == 80);
    assert!(size_of::<v4l2_plane>() == 64);
    assert!(std::mem::offset_of!(v4l2_plane, data_offset) == 16);
    assert!(size_of::<v4l2_control>() == 8);
    assert!(size_of::<v4l2_streamparm>() == 204);
    assert!(size_of::<v4l2_frmsizeenum>() == 44);
    assert!(size_of::<v4l2_frmivalenum>() == 52);
    assert!(size_of::<v4l2_queryctrl>() == 68);
    assert!(size_of::<v4l2_event_subscription>() == 32);
    assert!(size_of::<v4l2_event>() == 136);
    assert!(std::mem::offset_of!(v4l2_event, u) == 8);
    assert!(std::mem::offset_of!(v4l2_event, timestamp) == 80);
    assert!(size_of::<v4l2_selection>() == 64);
    assert!(size_of::<v4l2_decoder_cmd>() == 72);
};

mod ioctls {
    use super::*;
    nix::ioctl_read!(querycap, b'V', 0, v4l2_capability);
    nix::ioctl_readwrite!(enum_fmt, b'V', 2, v4l2_fmtdesc);
    nix::ioctl_readwrite!(g_fmt, b'V', 4, v4l2_format);
    nix::ioctl_readwrite!(s_fmt, b'V', 5, v4l2_format);
    nix::ioctl_readwrite!(reqbufs, b'V', 8, v4l2_requestbuffers);
    nix::ioctl_readwrite!(querybuf, b'V', 9, v4l2_buffer);
    nix::ioctl_readwrite!(qbuf, b'V', 15, v4l2_buffer);
    nix::ioctl_readwrite!(dqbuf, b'V', 17, v4l2_buffer);
    nix::ioctl_write_ptr!(streamon, b'V', 18, c_int);
    nix::ioctl_write_ptr!(streamoff, b'V', 19, c_int);
    nix::ioctl_readwrite!(g_parm, b'V', 21, v4l2_streamparm);
    nix::ioctl_readwrite!(s_parm, b'V', 22, v4l2_streamparm);
    nix::ioctl_readwrite!(g_ctrl, b'V', 27, v4l2_control);
    nix::ioctl_readwrite!(s_ctrl, b'V', 28, v4l2_control);
    nix::ioctl_readwrite!(queryctrl, b'V', 36, v4l2_queryctrl);
    nix::ioctl_readwrite!(enum_framesizes, b'V', 74, v4l2_frmsizeenum);
    nix::ioctl_readwrite!(enum_frameintervals, b'V', 75, v4l2_frmivalenum);
    nix::ioctl_read!(dqevent, b'V', 89, v4l2_event);
    nix::ioctl_write_ptr!(subscribe_event, b'V', 90, v4l2_event_subscription);
    nix::ioctl_readwrite!(g_selection, b'V', 94, v4l2_selection);
    nix::ioctl_readwrite!(decoder_cmd, b'V', 96, v4l2_decoder_cmd);
}

/// Retries on EINTR and turns nix's errno into `io::Error`.
fn retry(mut f: impl FnMut() -> nix::Result<c_int>) -> io::Result<()> {
    loop {
        match f() {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

fn video_type(t: u32) -> io::Result<BufType> {
    BufType::from_raw(t).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `VIDIOC_QUERYCAP`.
pub fn querycap(fd: BorrowedFd<'_>) -> io::Result<v4l2_capability> {
    let mut cap = v4l2_capability {
        driver: [0; 16],
        card: [0; 32],
        bus_info: [0; 32],
        version: 0,
        capabilities: 0,
        device_caps: 0,
        reserved: [0; 3],
    };
    // SAFETY: `fd` is open for the call (borrowed); `cap` is an exclusively borrowed
    // v4l2_capability whose layout matches the kernel's (size asserted above), and the kernel
    // writes exactly size_of::<v4l2_capability>() bytes, encoded in the request number.
    retry(|| unsafe { ioctls::querycap(fd.as_raw_fd(), &mut cap) })?;
    Ok(cap)
}

/// `VIDIOC_ENUM_FMT`; `desc.type_` must be one of the video buffer types.
pub fn enum_fmt(fd: BorrowedFd<'_>, desc: &mut v4l2_fmtdesc) -> io::Result<()> {
    video_type(desc.type_)?;
    // SAFETY: valid fd; `desc` is exclusively borrowed, kernel-sized and holds no pointers.
    retry(|| unsafe { ioctls::enum_fmt(fd.as_raw_fd(), desc) })
}

/// `VIDIOC_G_FMT` / `VIDIOC_S_FMT` (`set`); `f.type_` must be a video buffer type, whose
/// union members (`pix`, `pix_mp`) hold no pointers.
pub fn format(fd: BorrowedFd<'_>, f: &mut v4l2_format, set: bool) -> io::Result<()> {
    video_type(f.type_)?;
    // SAFETY: valid fd; `f` is exclusively borrowed and kernel-sized; for the video buffer
    // types checked above the kernel reads and writes only the struct itself.
    retry(|| unsafe {
        if set {
            ioctls::s_fmt(fd.as_raw_fd(), f)
        } else {
            ioctls::g_fmt(fd.as_raw_fd(), f)
        }
    })
}

/// `VIDIOC_REQBUFS` with MMAP memory: returns the count the driver granted.
pub fn reqbufs(fd: BorrowedFd<'_>, type_: BufType, count: u32) -> io::Result<u32> {
    let mut req = v4l2_requestbuffers {
        count,
        type_: type_ as u32,
        memory: V4L2_MEMORY_MMAP,
        capabilities: 0,
        flags: 0,
        reserved: [0; 3],
    };
    // SAFETY: valid fd; `req` is a local, kernel-sized struct without pointers.
    retry(|| unsafe { ioctls::reqbufs(fd.as_raw_fd(), &mut req) })?;
    Ok(req.count)
}

/// Which buffer ioctl [`buffer`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufOp {
    Query,
    Queue,
    Dequeue,
}

/// `VIDIOC_QUERYBUF` / `VIDIOC_QBUF` / `VIDIOC_DQBUF` on an MMAP buffer of `type_`. For a
/// multi-planar type, `planes` is the plane array the kernel reads and fills (`buf.m.planes`
/// and `buf.length` are set from it here); for a single-planar one it is not used.
pub fn buffer(
    fd: BorrowedFd<'_>,
    op: BufOp,
    type_: BufType,
    buf: &mut v4l2_buffer,
    planes: &mut [v4l2_plane],
) -> io::Result<()> {
    buf.type_ = type_ as u32;
    buf.memory = V4L2_MEMORY_MMAP;
    if type_.is_mplane() {
        if planes.is_empty() || planes.len() > VIDEO_MAX_PLANES {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        buf.m = planes.as_mut_ptr() as usize as c_ulong;
        buf.length = planes.len() as u32;
    } else {
        buf.m = 0;
    }
    let raw = fd.as_raw_fd();
    // SAFETY: valid fd; `buf` is exclusively borrowed and kernel-sized; memory is MMAP, so the
    // kernel dereferences no user pointer except, for multi-planar types, `buf.m.planes`,
    // which points at `planes` (exclusively borrowed for this call) with `buf.length` set to
    // its element count, so the kernel copies in and out of exactly that array.
    retry(|| unsafe {
        match op {
            BufOp::Query => ioctls::querybuf(raw, buf),
            BufOp::Queue => ioctls::qbuf(raw, buf),
            BufOp::Dequeue => ioctls::dqbuf(raw, buf),
        }
    })
}

/// `VIDIOC_STREAMON` / `VIDIOC_STREAMOFF`.
pub fn stream(fd: BorrowedFd<'_>, type_: BufType, on: bool) -> io::Result<()> {
    let t: c_int = type_ as c_int;
    // SAFETY: valid fd; the kernel reads one int from `&t`, which lives across the call.
    retry(|| unsafe {
        if on {
            ioctls::streamon(fd.as_raw_fd(), &t)
        } else {
            ioctls::streamoff(fd.as_raw_fd(), &t)
        }
    })
}

/// `VIDIOC_G_PARM` / `VIDIOC_S_PARM` (`set`); `p.type_` must be a video buffer type.
pub fn parm(fd: BorrowedFd<'_>, p: &mut v4l2_streamparm, set: bool) -> io::Result<()> {
    video_type(p.type_)?;
    // SAFETY: valid fd; `p` is exclusively borrowed, kernel-sized and holds no pointers.
    retry(|| unsafe {
        if set {
            ioctls::s_parm(fd.as_raw_fd(), p)
        } else {
            ioctls::g_parm(fd.as_raw_fd(), p)
        }
    })
}

/// `VIDIOC_S_CTRL`.
pub fn s_ctrl(fd: BorrowedFd<'_>, id: u32, value: i32) -> io::Result<()> {
    let mut c = v4l2_control { id, value };
    // SAFETY: valid fd; `c` is a local, kernel-sized struct without pointers.
    retry(|| unsafe { ioctls::s_ctrl(fd.as_raw_fd(), &mut c) })
}

/// `VIDIOC_G_CTRL`: the control's current value.
pub fn g_ctrl(fd: BorrowedFd<'_>, id: u32) -> io::Result<i32> {
    let mut c = v4l2_control { id, value: 0 };
    // SAFETY: valid fd; `c` is a local, kernel-sized struct without pointers.
    retry(|| unsafe { ioctls::g_ctrl(fd.as_raw_fd(), &mut c) })?;
    Ok(c.value)
}

/// `VIDIOC_QUERYCTRL` for `id` (which may carry `V4L2_CTRL_FLAG_NEXT_CTRL`).
pub fn queryctrl(fd: BorrowedFd<'_>, id: u32) -> io::Result<v4l2_queryctrl> {
    let mut q = v4l2_queryctrl {
        id,
        ..Default::default()
    };
    // SAFETY: valid fd; `q` is a local, kernel-sized struct without pointers.
    retry(|| unsafe { ioctls::queryctrl(fd.as_raw_fd(), &mut q) })?;
    Ok(q)
}

/// `VIDIOC_ENUM_FRAMESIZES`: `e.index` and `e.pixel_format` are the question.
pub fn enum_framesizes(fd: BorrowedFd<'_>, e: &mut v4l2_frmsizeenum) -> io::Result<()> {
    // SAFETY: valid fd; `e` is exclusively borrowed, kernel-sized and holds no pointers.
    retry(|| unsafe { ioctls::enum_framesizes(fd.as_raw_fd(), e) })
}

/// `VIDIOC_ENUM_FRAMEINTERVALS`: `index`, `pixel_format`, `width`, `height` are the question.
pub fn enum_frameintervals(fd: BorrowedFd<'_>, e: &mut v4l2_frmivalenum) -> io::Result<()> {
    // SAFETY: valid fd; `e` is exclusively borrowed, kernel-sized and holds no pointers.
    retry(|| unsafe { ioctls::enum_frameintervals(fd.as_raw_fd(), e) })
}

/// `VIDIOC_SUBSCRIBE_EVENT` for event `type_` (id 0, no flags).
pub fn subscribe_event(fd: BorrowedFd<'_>, type_: u32) -> io::Result<()> {
    let sub = v4l2_event_subscription {
        type_,
        ..Default::default()
    };
    // SAFETY: valid fd; the kernel reads one kernel-sized struct without pointers from `&sub`,
    // which lives across the call.
    retry(|| unsafe { ioctls::subscribe_event(fd.as_raw_fd(), &sub) })
}

/// `VIDIOC_DQEVENT`: the next pending event, or `None` (`ENOENT`: nothing pending).
pub fn dqevent(fd: BorrowedFd<'_>) -> io::Result<Option<v4l2_event>> {
    let mut ev = v4l2_event::zeroed();
    // SAFETY: valid fd; `ev` is a local, kernel-sized struct (size asserted above, encoded in
    // the request number) without pointers; the kernel writes exactly that many bytes.
    match retry(|| unsafe { ioctls::dqevent(fd.as_raw_fd(), &mut ev) }) {
        Ok(()) => Ok(Some(ev)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `VIDIOC_G_SELECTION` of `target` on the queue of `type_` (the core accepts the
/// multi-planar types since Linux 4.13 and passes drivers the single-planar one).
pub fn g_selection(fd: BorrowedFd<'_>, type_: BufType, target: u32) -> io::Result<v4l2_rect> {
    let mut sel = v4l2_selection {
        type_: type_ as u32,
        target,
        ..Default::default()
    };
    // SAFETY: valid fd; `sel` is a local, kernel-sized struct without pointers.
    retry(|| unsafe { ioctls::g_selection(fd.as_raw_fd(), &mut sel) })?;
    Ok(sel.r)
}

/// `VIDIOC_DECODER_CMD` with `cmd` (`V4L2_DEC_CMD_*`) and no flags or arguments.
pub fn decoder_cmd(fd: BorrowedFd<'_>, cmd: u32) -> io::Result<()> {
    let mut c = v4l2_decoder_cmd {
        cmd,
        ..Default::default()
    };
    // SAFETY: valid fd; `c` is a local, kernel-sized struct without pointers.
    retry(|| unsafe { ioctls::decoder_cmd(fd.as_raw_fd(), &mut c) })
}

/// One `mmap`ed buffer plane, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is plain shared memory owned by this value alone (no thread-local state);
// moving it to another thread is as safe as moving a Vec<u8>.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `len` bytes of the buffer at `offset` (from QUERYBUF) read-write and shared.
    pub fn new(fd: BorrowedFd<'_>, len: usize, offset: u32) -> io::Result<Mapping> {
        let length =
            NonZeroUsize::new(len).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a fresh mapping chosen by the kernel (no address given), so it cannot alias
        // any existing Rust object; the fd stays open for the call, and a mapping outlives the
        // fd being closed.
        let ptr = unsafe {
            nix::sys::mman::mmap(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                libc::off_t::from(offset),
            )
        }
        .map_err(io::Error::from)?;
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The mapped bytes. The owner only calls this while the device does not own the buffer
    /// (it is dequeued), so nothing else writes them meanwhile.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes for as long as `self`
        // exists (unmapped only in Drop); the borrow of `self` bounds the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The mapped bytes, writable (same rule as [`Mapping::as_slice`]).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and the mapping is writable; `&mut self` makes this the
        // only slice into it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned and no slice into the mapping can
        // outlive `self`. A failure would leave the mapping in place; nothing to do about it.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unnecessary_cast)] // the request type is c_ulong or c_int by libc
    fn ioctl_numbers_are_the_kernels() {
        // The values printed by a C program including linux/videodev2.h, identical for x86_64
        // and aarch64 (built with gcc and aarch64-linux-gnu-gcc, run under qemu-aarch64).
        use std::mem::size_of;
        let rw = |nr, size| nix::request_code_readwrite!(b'V', nr, size) as u64;
        assert_eq!(
            nix::request_code_read!(b'V', 0, size_of::<v4l2_capability>()) as u64,
            0x8068_5600
        );
        assert_eq!(rw(2, size_of::<v4l2_fmtdesc>()), 0xc040_5602);
        assert_eq!(rw(4, size_of::<v4l2_format>()), 0xc0d0_5604);
        assert_eq!(rw(5, size_of::<v4l2_format>()), 0xc0d0_5605);
        assert_eq!(rw(8, size_of::<v4l2_requestbuffers>()), 0xc014_5608);
        assert_eq!(rw(9, size_of::<v4l2_buffer>()), 0xc058_5609);
        assert_eq!(rw(15, size_of::<v4l2_buffer>()), 0xc058_560f);
        assert_eq!(rw(17, size_of::<v4l2_buffer>()), 0xc058_5611);
        assert_eq!(
            nix::request_code_write!(b'V', 18, size_of::<c_int>()) as u64,
            0x4004_5612
        );
        assert_eq!(
            nix::request_code_write!(b'V', 19, size_of::<c_int>()) as u64,
            0x4004_5613
        );
        assert_eq!(rw(21, size_of::<v4l2_streamparm>()), 0xc0cc_5615);
        assert_eq!(rw(22, size_of::<v4l2_streamparm>()), 0xc0cc_5616);
        assert_eq!(rw(27, size_of::<v4l2_control>()), 0xc008_561b);
        assert_eq!(rw(28, size_of::<v4l2_control>()), 0xc008_561c);
        assert_eq!(rw(36, size_of::<v4l2_queryctrl>()), 0xc044_5624);
        assert_eq!(rw(74, size_of::<v4l2_frmsizeenum>()), 0xc02c_564a);
        assert_eq!(rw(75, size_of::<v4l2_frmivalenum>()), 0xc034_564b);
        // The decoder's: events, selection, decoder commands (gcc with linux-libc-dev's
        // headers on x86_64, and aarch64-linux-gnu-gcc run under qemu-aarch64: identical).
        assert_eq!(
            nix::request_code_read!(b'V', 89, size_of::<v4l2_event>()) as u64,
            0x8088_5659
        );
        assert_eq!(
            nix::request_code_write!(b'V', 90, size_of::<v4l2_event_subscription>()) as u64,
            0x4020_565a
        );
        assert_eq!(rw(94, size_of::<v4l2_selection>()), 0xc040_565e);
        assert_eq!(rw(96, size_of::<v4l2_decoder_cmd>()), 0xc048_5660);
    }

    #[test]
    fn struct_sizes_and_union_offsets_match_the_headers() {
        // Also asserted at compile time; here with the field offsets the kernel uses.
        use std::mem::{offset_of, size_of};
        assert_eq!(size_of::<v4l2_buffer>(), 88);
        assert_eq!(offset_of!(v4l2_buffer, timecode), 40);
        assert_eq!(offset_of!(v4l2_buffer, sequence), 56);
        assert_eq!(offset_of!(v4l2_buffer, memory), 60);
        assert_eq!(offset_of!(v4l2_buffer, length), 72);
        assert_eq!(offset_of!(v4l2_plane, m), 8);
        assert_eq!(offset_of!(v4l2_format, fmt), 8);
        assert_eq!(offset_of!(v4l2_streamparm, parm), 4);
        assert_eq!(offset_of!(v4l2_fmtdesc, pixelformat), 44);
        assert_eq!(offset_of!(v4l2_requestbuffers, capabilities), 12);
        assert_eq!(offset_of!(v4l2_requestbuffers, flags), 16);
        assert_eq!(offset_of!(v4l2_capability, device_caps), 88);
        // Capture's enumeration and control structs (gcc, linux/videodev2.h, x86_64; only
        // 32-bit fields, so the same on aarch64).
        assert_eq!(size_of::<v4l2_frmsizeenum>(), 44);
        assert_eq!(offset_of!(v4l2_frmsizeenum, type_), 8);
        assert_eq!(offset_of!(v4l2_frmsizeenum, size), 12);
        assert_eq!(offset_of!(v4l2_frmsizeenum, reserved), 36);
        assert_eq!(size_of::<v4l2_frmivalenum>(), 52);
        assert_eq!(offset_of!(v4l2_frmivalenum, type_), 16);
        assert_eq!(offset_of!(v4l2_frmivalenum, interval), 20);
        assert_eq!(offset_of!(v4l2_frmivalenum, reserved), 44);
        assert_eq!(size_of::<v4l2_queryctrl>(), 68);
        assert_eq!(offset_of!(v4l2_queryctrl, name), 8);
        assert_eq!(offset_of!(v4l2_queryctrl, minimum), 40);
        assert_eq!(offset_of!(v4l2_queryctrl, default_value), 52);
        assert_eq!(offset_of!(v4l2_queryctrl, flags), 56);
        // The decoder's structs (same C program; x86_64 and aarch64 agree).
        assert_eq!(size_of::<v4l2_event_subscription>(), 32);
        assert_eq!(offset_of!(v4l2_event_subscription, id), 4);
        assert_eq!(offset_of!(v4l2_event_subscription, flags), 8);
        assert_eq!(offset_of!(v4l2_event_subscription, reserved), 12);
        assert_eq!(size_of::<v4l2_event>(), 136);
        assert_eq!(std::mem::align_of::<v4l2_event>(), 8);
        assert_eq!(offset_of!(v4l2_event, u), 8);
        assert_eq!(offset_of!(v4l2_event, pending), 72);
        assert_eq!(offset_of!(v4l2_event, sequence), 76);
        assert_eq!(offset_of!(v4l2_event, timestamp), 80);
        assert_eq!(offset_of!(v4l2_event, id), 96);
        assert_eq!(offset_of!(v4l2_event, reserved), 100);
        assert_eq!(size_of::<v4l2_rect>(), 16);
        assert_eq!(size_of::<v4l2_selection>(), 64);
        assert_eq!(offset_of!(v4l2_selection, target), 4);
        assert_eq!(offset_of!(v4l2_selection, flags), 8);
        assert_eq!(offset_of!(v4l2_selection, r), 12);
        assert_eq!(offset_of!(v4l2_selection, reserved), 28);
        assert_eq!(size_of::<v4l2_decoder_cmd>(), 72);
        assert_eq!(std::mem::align_of::<v4l2_decoder_cmd>(), 8);
        assert_eq!(offset_of!(v4l2_decoder_cmd, flags), 4);
        assert_eq!(offset_of!(v4l2_decoder_cmd, data), 8);
        // The union's `offset` is its first four bytes whatever the endianness.
        let mut b = v4l2_buffer::new(BufType::VideoOutput, 0);
        let mut bytes = [0u8; size_of::<c_ulong>()];
        bytes[..4].copy_from_slice(&0x1234_5678u32.to_ne_bytes());
        b.m = c_ulong::from_ne_bytes(bytes);
        assert_eq!(b.mem_offset(), 0x1234_5678);
    }

    #[test]
    fn only_video_buffer_types_reach_format_ioctls() {
        // No device is opened: the type check fails before the ioctl (fd 0 is never used).
        let fd = std::io::stdin();
        let mut f = v4l2_format {
            type_: 3, // V4L2_BUF_TYPE_VIDEO_OVERLAY: its union member holds pointers
            fmt: FormatUnion::zeroed(),
        };
        use std::os::fd::AsFd;
        let e = format(fd.as_fd(), &mut f, true).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        let mut b = v4l2_buffer::new(BufType::VideoOutputMplane, 0);
        let e = buffer(
            fd.as_fd(),
            BufOp::Query,
            BufType::VideoOutputMplane,
            &mut b,
            &mut [],
        )
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }
}
