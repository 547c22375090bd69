//! A stand-in V4L2 *camera* driver behind the [`Backend`] seam.
//!
//! Why a stand-in: the machines this is built and tested on have no `/dev/video*` and cannot
//! load vivid or v4l2loopback, so pinhole's capture loop is driven by this model of a UVC-like
//! capture node. It behaves as vb2 and uvcvideo do where the loop depends on it: formats and
//! sizes enumerated from a table and adjusted (never refused) by `S_FMT`, frame rates only
//! where the driver says it can set them (`V4L2_CAP_TIMEPERFRAME`), MMAP buffers owned by the
//! driver while queued (no access, no second QBUF), FIFO delivery, `EAGAIN` when nothing is
//! ready, `POLLERR` when nothing is queued or the device is gone, `ENODEV` for every ioctl
//! after an unplug, everything returned on STREAMOFF. A script says per frame what the
//! "sensor" does: a frame (bytes, timestamp kind, flags, frames dropped before it), nothing
//! (a stall), a failing `DQBUF`, or vanishing.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use crate::backend::{
    flags, Backend, Caps, ControlInfo, Dequeued, DequeuedPlane, Format, FormatDesc, Fourcc,
    Fraction, FrameInterval, FrameSize, PlaneFormat, Queue, Ready, FMT_FLAG_COMPRESSED,
};

/// One pixel format the camera offers, with its sizes and the intervals at each.
#[derive(Debug, Clone)]
pub struct CamFormat {
    pub fourcc: Fourcc,
    pub sizes: Vec<(FrameSize, Vec<FrameInterval>)>,
}

impl CamFormat {
    /// `fourcc` at discrete sizes, each with discrete rates (frames per second).
    pub fn discrete(fourcc: Fourcc, sizes: &[(u32, u32)], fps: &[u32]) -> CamFormat {
        CamFormat {
            fourcc,
            sizes: sizes
                .iter()
                .map(|&(width, height)| {
                    (
                        FrameSize::Discrete { width, height },
                        fps.iter()
                            .map(|&f| FrameInterval::Discrete(Fraction { num: 1, den: f }))
                            .collect(),
                    )
                })
                .collect(),
        }
    }
}

/// Which timestamp a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CamTs {
    /// `V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC`: `CLOCK_MONOTONIC` at STREAMON plus the frame's
    /// place on the negotiated rate (as a sensor running at exactly that rate stamps them).
    Monotonic,
    /// `V4L2_BUF_FLAG_TIMESTAMP_COPY`: the timestamp the application queued the buffer with.
    Copy,
    /// No timestamp type and this value (a driver that stamps nothing useful).
    Unknown(i64),
}

/// What the "sensor" does at one `poll()`.
#[derive(Debug, Clone)]
pub enum Shot {
    /// A frame is ready.
    Frame {
        data: Vec<u8>,
        ts: CamTs,
        /// Extra `V4L2_BUF_FLAG_*` (e.g. `ERROR`).
        flags: u32,
        /// Frames the driver dropped before this one (a gap in `sequence`).
        dropped: u32,
    },
    /// Nothing arrives: `poll()` waits its whole timeout.
    Nothing,
    /// `poll()` says readable, and the next `DQBUF` fails with this errno.
    DequeueFails(i32),
    /// The device is unplugged: `POLLERR`, and `ENODEV` from every ioctl from now on.
    Vanish,
}

impl Shot {
    pub fn frame(data: Vec<u8>) -> Shot {
        Shot::Frame {
            data,
            ts: CamTs::Monotonic,
            flags: 0,
            dropped: 0,
        }
    }
}

type Script = Box<dyn FnMut(u64) -> Shot + Send>;

#[derive(Debug)]
struct Buf {
    data: Vec<u8>,
    queued: bool,
    queued_ts: i64,
}

/// The stand-in camera. Fields are public so a test can set it up and inspect it afterwards.
pub struct Camera {
    pub caps: Caps,
    pub formats: Vec<CamFormat>,
    /// `timeperframe` now; `None`: the driver cannot set a rate (no `TIMEPERFRAME`).
    pub interval: Option<Fraction>,
    /// `(operation prefix, errno)`: the operation fails with that errno.
    pub fail: Vec<(&'static str, i32)>,
    /// Most buffers `REQBUFS` grants.
    pub max_buffers: u32,
    /// Control values (`S_CTRL` sets only ids listed here; others are `EINVAL`).
    pub controls: Vec<(u32, i32)>,
    /// Every operation, in order.
    pub log: Vec<String>,
    /// `poll()` calls that produced a shot, i.e. the frame number passed to the script.
    pub shots: u64,
    script: Script,
    format: Option<Format>,
    bufs: Vec<Buf>,
    ready: VecDeque<Dequeued>,
    pending_error: Option<i32>,
    streaming: bool,
    gone: bool,
    sequence: u32,
    stream_start_us: i64,
    frames_made: i64,
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// `CLOCK_MONOTONIC` in µs.
pub fn monotonic_us() -> i64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() * 1_000_000 + t.tv_nsec() / 1_000)
        .unwrap_or(0)
}

impl Camera {
    /// Like a UVC webcam: single-planar capture with streaming, 30 fps settable.
    pub fn uvc(formats: Vec<CamFormat>, script: Script) -> Camera {
        Camera {
            caps: Caps {
                driver: "uvcvideo".into(),
                card: "Stand-in UVC Camera".into(),
                bus: "usb-0000:00:14.0-1".into(),
                caps: 0x0420_0001,
            },
            formats,
            interval: Some(Fraction { num: 1, den: 30 }),
            fail: Vec::new(),
            max_buffers: 8,
            controls: Vec::new(),
            log: Vec::new(),
            shots: 0,
            script,
            format: None,
            bufs: Vec::new(),
            ready: VecDeque::new(),
            pending_error: None,
            streaming: false,
            gone: false,
            sequence: 0,
            stream_start_us: 0,
            frames_made: 0,
        }
    }

    /// A capture node offering only the multi-planar API (a SoC camera pipeline).
    pub fn mplane(formats: Vec<CamFormat>, script: Script) -> Camera {
        let mut c = Camera::uvc(formats, script);
        c.caps.driver = "stand-in-isp".into();
        c.caps.card = "Stand-in multi-planar camera".into();
        c.caps.bus = "platform:stand-in-isp".into();
        c.caps.caps = 0x0420_1000;
        c
    }

    /// The number of buffers the application owns now (not queued).
    pub fn owned_buffers(&self) -> usize {
        self.bufs.iter().filter(|b| !b.queued).count()
    }

    pub fn is_streaming(&self) -> bool {
        self.streaming
    }

    fn check(&mut self, op: &str) -> io::Result<()> {
        self.log.push(op.to_string());
        if self.gone {
            return Err(errno(nix::libc::ENODEV));
        }
        match self.fail.iter().find(|(p, _)| op.starts_with(p)) {
            Some(&(_, e)) => Err(errno(e)),
            None => Ok(()),
        }
    }

    fn capture_only(queue: Queue) -> io::Result<()> {
        match queue {
            Queue::Capture => Ok(()),
            Queue::Output => Err(errno(nix::libc::EINVAL)),
        }
    }

    fn find(&self, fourcc: Fourcc) -> Option<&CamFormat> {
        self.formats.iter().find(|f| f.fourcc == fourcc)
    }

    /// The format the driver sets for `want`: the fourcc if offered (else the first), the
    /// nearest size by area, lines and image sizes as uvcvideo reports them.
    fn adjust(&self, want: &Format) -> Option<Format> {
        let f = self.find(want.fourcc).or_else(|| self.formats.first())?;
        let area = |w: u32, h: u32| u64::from(w) * u64::from(h);
        let target = area(want.width, want.height);
        let (width, height) = f
            .sizes
            .iter()
            .map(|(s, _)| match *s {
                FrameSize::Discrete { width, height } => (width, height),
                FrameSize::Stepwise {
                    min_width,
                    max_width,
                    step_width,
                    min_height,
                    max_height,
                    step_height,
                } => {
                    let snap = |v: u32, min: u32, max: u32, step: u32| {
                        min + (v.clamp(min, max) - min) / step.max(1) * step.max(1)
                    };
                    (
                        snap(want.width, min_width, max_width, step_width),
                        snap(want.height, min_height, max_height, step_height),
                    )
                }
            })
            .min_by_key(|&(w, h)| area(w, h).abs_diff(target))?;
        let (bytesperline, sizeimage) = match &f.fourcc.0 {
            b"YUYV" => (width * 2, width * height * 2),
            b"NV12" | b"YU12" => (width, width * height * 3 / 2),
            // Compressed: no lines; room for the largest frame.
            _ => (0, width * height * 2),
        };
        Some(Format {
            width,
            height,
            fourcc: f.fourcc,
            planes: vec![PlaneFormat {
                bytesperline,
                sizeimage,
            }],
        })
    }

    fn intervals_at(&self, fourcc: Fourcc, width: u32, height: u32) -> Vec<FrameInterval> {
        let Some(f) = self.find(fourcc) else {
            return Vec::new();
        };
        f.sizes
            .iter()
            .find(|(s, _)| match *s {
                FrameSize::Discrete {
                    width: w,
                    height: h,
                } => (w, h) == (width, height),
                FrameSize::Stepwise {
                    min_width,
                    max_width,
                    min_height,
                    max_height,
                    ..
                } => {
                    (min_width..=max_width).contains(&width)
                        && (min_height..=max_height).contains(&height)
                }
            })
            .map(|(_, i)| i.clone())
            .unwrap_or_default()
    }

    /// Produces the next shot into the ready queue (or a pending error).
    fn shoot(&mut self, timeout: Duration) -> Ready {
        let n = self.shots;
        self.shots += 1;
        match (self.script)(n) {
            Shot::Nothing => {
                std::thread::sleep(timeout);
                Ready::default()
            }
            Shot::Vanish => {
                self.gone = true;
                Ready {
                    error: true,
                    ..Ready::default()
                }
            }
            Shot::DequeueFails(e) => {
                self.pending_error = Some(e);
                Ready {
                    capture: true,
                    ..Ready::default()
                }
            }
            Shot::Frame {
                data,
                ts,
                flags: extra,
                dropped,
            } => {
                let Some(index) = self.bufs.iter().position(|b| b.queued) else {
                    return Ready {
                        error: true,
                        ..Ready::default()
                    };
                };
                // FIFO: the buffer queued first is filled first (queue order is tracked by
                // the order of `ready`; all queued buffers are equal here).
                self.sequence = self.sequence.wrapping_add(dropped);
                self.frames_made += i64::from(dropped);
                let interval_us = self
                    .interval
                    .map_or(33_333, |f| i64::from(f.num) * 1_000_000 / i64::from(f.den));
                let buf = &mut self.bufs[index];
                let n = data.len().min(buf.data.len());
                buf.data[..n].copy_from_slice(&data[..n]);
                buf.queued = false;
                let (flag, timestamp_us) = match ts {
                    CamTs::Monotonic => (
                        flags::TIMESTAMP_MONOTONIC,
                        self.stream_start_us + self.frames_made * interval_us,
                    ),
                    CamTs::Copy => (flags::TIMESTAMP_COPY, buf.queued_ts),
                    CamTs::Unknown(t) => (flags::TIMESTAMP_UNKNOWN, t),
                };
                self.ready.push_back(Dequeued {
                    index,
                    planes: vec![DequeuedPlane {
                        bytesused: n as u32,
                        data_offset: 0,
                    }],
                    flags: flag | extra,
                    timestamp_us,
                    sequence: self.sequence,
                });
                self.sequence = self.sequence.wrapping_add(1);
                self.frames_made += 1;
                Ready {
                    capture: true,
                    ..Ready::default()
                }
            }
        }
    }
}

impl Backend for Camera {
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
        self.check("ENUM_FMT")?;
        Camera::capture_only(queue)?;
        Ok(self
            .formats
            .iter()
            .map(|f| {
                let compressed = matches!(&f.fourcc.0, b"MJPG" | b"JPEG" | b"H264");
                FormatDesc {
                    fourcc: f.fourcc,
                    description: match &f.fourcc.0 {
                        b"MJPG" => "Motion-JPEG".into(),
                        b"YUYV" => "YUYV 4:2:2".into(),
                        b"H264" => "H.264".into(),
                        _ => f.fourcc.to_string(),
                    },
                    flags: if compressed { FMT_FLAG_COMPRESSED } else { 0 },
                }
            })
            .collect())
    }

    fn frame_sizes(&mut self, fourcc: Fourcc) -> io::Result<Vec<FrameSize>> {
        self.check("ENUM_FRAMESIZES")?;
        match self.find(fourcc) {
            Some(f) => Ok(f.sizes.iter().map(|(s, _)| *s).collect()),
            None => Err(errno(nix::libc::EINVAL)),
        }
    }

    fn frame_intervals(
        &mut self,
        fourcc: Fourcc,
        width: u32,
        height: u32,
    ) -> io::Result<Vec<FrameInterval>> {
        self.check("ENUM_FRAMEINTERVALS")?;
        Ok(self.intervals_at(fourcc, width, height))
    }

    fn get_format(&mut self, queue: Queue) -> io::Result<Format> {
        self.check("G_FMT")?;
        Camera::capture_only(queue)?;
        match &self.format {
            Some(f) => Ok(f.clone()),
            None => self
                .formats
                .first()
                .and_then(|f| {
                    let (w, h) = match f.sizes.first()?.0 {
                        FrameSize::Discrete { width, height } => (width, height),
                        FrameSize::Stepwise {
                            max_width,
                            max_height,
                            ..
                        } => (max_width, max_height),
                    };
                    self.adjust(&Format {
                        width: w,
                        height: h,
                        fourcc: f.fourcc,
                        planes: Vec::new(),
                    })
                })
                .ok_or_else(|| errno(nix::libc::EINVAL)),
        }
    }

    fn set_format(&mut self, queue: Queue, want: &Format) -> io::Result<Format> {
        self.check(&format!("S_FMT {want}"))?;
        Camera::capture_only(queue)?;
        if !self.bufs.is_empty() {
            return Err(errno(nix::libc::EBUSY));
        }
        let got = self.adjust(want).ok_or_else(|| errno(nix::libc::EINVAL))?;
        self.format = Some(got.clone());
        Ok(got)
    }

    fn set_frame_interval(&mut self, _num: u32, _den: u32) -> io::Result<()> {
        // OUTPUT's S_PARM: a camera has no OUTPUT queue.
        Err(errno(nix::libc::EINVAL))
    }

    fn capture_interval(&mut self) -> io::Result<Option<Fraction>> {
        self.check("G_PARM")?;
        Ok(self.interval)
    }

    fn set_capture_interval(&mut self, want: Fraction) -> io::Result<Option<Fraction>> {
        self.check(&format!("S_PARM {}/{}", want.num, want.den))?;
        if self.interval.is_none() {
            return Ok(None);
        }
        let Some(f) = &self.format else {
            return Ok(self.interval);
        };
        let want_fps = f64::from(want.den) / f64::from(want.num.max(1));
        let fps = |i: Fraction| f64::from(i.den) / f64::from(i.num.max(1));
        // The offered interval nearest to the request (uvcvideo picks the nearest too).
        let best = self
            .intervals_at(f.fourcc, f.width, f.height)
            .into_iter()
            .map(|i| match i {
                FrameInterval::Discrete(i) => i,
                FrameInterval::Stepwise { min, max } => {
                    if want_fps > fps(min) {
                        min
                    } else if want_fps < fps(max) {
                        max
                    } else {
                        want
                    }
                }
            })
            .min_by(|a, b| {
                (fps(*a) - want_fps)
                    .abs()
                    .total_cmp(&(fps(*b) - want_fps).abs())
            });
        if let Some(b) = best {
            self.interval = Some(b);
        }
        Ok(self.interval)
    }

    fn set_control(&mut self, id: u32, value: i32) -> io::Result<()> {
        self.check(&format!("S_CTRL {id:#x}={value}"))?;
        match self.controls.iter_mut().find(|(i, _)| *i == id) {
            Some(c) => {
                c.1 = value;
                Ok(())
            }
            None => Err(errno(nix::libc::EINVAL)),
        }
    }

    fn control(&mut self, id: u32) -> io::Result<i32> {
        self.check(&format!("G_CTRL {id:#x}"))?;
        self.controls
            .iter()
            .find(|(i, _)| *i == id)
            .map(|c| c.1)
            .ok_or_else(|| errno(nix::libc::EINVAL))
    }

    fn query_control(&mut self, id: u32) -> io::Result<ControlInfo> {
        self.check(&format!("QUERYCTRL {id:#x}"))?;
        self.controls
            .iter()
            .find(|(i, _)| *i == id)
            .map(|&(id, value)| ControlInfo {
                id,
                kind: 1,
                name: format!("Control {id:#x}"),
                minimum: i32::MIN,
                maximum: i32::MAX,
                step: 1,
                default: value,
                flags: 0,
            })
            .ok_or_else(|| errno(nix::libc::EINVAL))
    }

    fn allocate(&mut self, queue: Queue, count: u32) -> io::Result<Vec<Vec<usize>>> {
        self.check(&format!("REQBUFS {count}"))?;
        Camera::capture_only(queue)?;
        if self.streaming {
            return Err(errno(nix::libc::EBUSY));
        }
        let size = match &self.format {
            Some(f) => f.planes.first().map_or(0, |p| p.sizeimage as usize),
            None => return Err(errno(nix::libc::EINVAL)),
        };
        let n = count.min(self.max_buffers) as usize;
        self.bufs = (0..n)
            .map(|_| Buf {
                data: vec![0; size],
                queued: false,
                queued_ts: 0,
            })
            .collect();
        Ok(self.bufs.iter().map(|b| vec![b.data.len()]).collect())
    }

    fn plane(&self, queue: Queue, index: usize, plane: usize) -> Option<&[u8]> {
        let b = self.bufs.get(index)?;
        (queue == Queue::Capture && plane == 0 && !b.queued).then_some(b.data.as_slice())
    }

    fn plane_mut(&mut self, queue: Queue, index: usize, plane: usize) -> Option<&mut [u8]> {
        let b = self.bufs.get_mut(index)?;
        (queue == Queue::Capture && plane == 0 && !b.queued).then_some(b.data.as_mut_slice())
    }

    fn queue(
        &mut self,
        queue: Queue,
        index: usize,
        _bytesused: &[u32],
        timestamp_us: i64,
    ) -> io::Result<()> {
        self.check(&format!("QBUF {index}"))?;
        Camera::capture_only(queue)?;
        // Not dequeued yet (still in `ready`) counts as queued for the application too.
        let in_ready = self.ready.iter().any(|d| d.index == index);
        match self.bufs.get_mut(index) {
            Some(b) if !b.queued && !in_ready => {
                b.queued = true;
                b.queued_ts = timestamp_us;
                Ok(())
            }
            _ => Err(errno(nix::libc::EINVAL)),
        }
    }

    fn dequeue(&mut self, queue: Queue) -> io::Result<Option<Dequeued>> {
        self.check("DQBUF")?;
        Camera::capture_only(queue)?;
        if let Some(e) = self.pending_error.take() {
            return Err(errno(e));
        }
        if !self.streaming {
            return Err(errno(nix::libc::EINVAL));
        }
        Ok(self.ready.pop_front())
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<Ready> {
        self.log.push("poll".into());
        if self.gone {
            return Ok(Ready {
                error: true,
                ..Ready::default()
            });
        }
        if !self.ready.is_empty() || self.pending_error.is_some() {
            return Ok(Ready {
                capture: true,
                ..Ready::default()
            });
        }
        // vb2: POLLERR when not streaming or nothing is queued.
        if !self.streaming || !self.bufs.iter().any(|b| b.queued) {
            return Ok(Ready {
                error: true,
                ..Ready::default()
            });
        }
        Ok(self.shoot(timeout))
    }

    fn stream(&mut self, queue: Queue, on: bool) -> io::Result<()> {
        self.check(if on { "STREAMON" } else { "STREAMOFF" })?;
        Camera::capture_only(queue)?;
        if on && self.bufs.is_empty() {
            return Err(errno(nix::libc::EINVAL));
        }
        self.streaming = on;
        if on {
            self.stream_start_us = monotonic_us();
            self.frames_made = 0;
        } else {
            self.ready.clear();
            for b in &mut self.bufs {
                b.queued = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The stand-in camera itself behaves as vb2 does where the capture loop relies on it.
    use super::*;

    #[test]
    fn buffers_are_owned_by_the_driver_while_queued_and_frames_come_in_order() {
        // A stand-in camera (no /dev/video* here).
        let mut cam = Camera::uvc(
            vec![CamFormat::discrete(Fourcc::YUYV, &[(64, 32)], &[30])],
            Box::new(|n| Shot::frame(vec![n as u8; 16])),
        );
        let want = Format {
            width: 640,
            height: 480,
            fourcc: Fourcc::YUYV,
            planes: Vec::new(),
        };
        let f = cam.set_format(Queue::Capture, &want).unwrap();
        assert_eq!((f.width, f.height, f.planes[0].bytesperline), (64, 32, 128));
        let lens = cam.allocate(Queue::Capture, 20).unwrap();
        assert_eq!(lens, vec![vec![64 * 32 * 2]; 8]);
        for i in 0..8 {
            cam.queue(Queue::Capture, i, &[], 0).unwrap();
        }
        assert!(cam.plane(Queue::Capture, 0, 0).is_none());
        assert!(cam.queue(Queue::Capture, 0, &[], 0).is_err());
        assert!(cam.wait(Duration::ZERO).unwrap().error, "not streaming");
        cam.stream(Queue::Capture, true).unwrap();
        assert!(cam.wait(Duration::ZERO).unwrap().capture);
        let d = cam.dequeue(Queue::Capture).unwrap().unwrap();
        assert_eq!((d.index, d.sequence), (0, 0));
        assert_eq!(d.flags & flags::TIMESTAMP_MASK, flags::TIMESTAMP_MONOTONIC);
        assert_eq!(cam.plane(Queue::Capture, 0, 0).unwrap()[0], 0);
        assert_eq!(cam.dequeue(Queue::Capture).unwrap(), None, "EAGAIN");
        cam.stream(Queue::Capture, false).unwrap();
        assert_eq!(cam.owned_buffers(), 8);
    }
}
