//! A stand-in V4L2 stateful H.264 *decoder* driver behind the [`Backend`] seam, and the
//! [`crate::decoder`] tests against it.
//!
//! Why a stand-in: the machines this is built and tested on have no `/dev/video*` and cannot
//! load a driver (no vivid or v4l2loopback, and neither decodes H.264 anyway), so the decoder
//! is driven by this model of the kernel's stateful decoder interface (dev-decoder.rst) as
//! vb2, the M2M framework and bcm2835-codec-decode behave where the decoder depends on it:
//! the CAPTURE queue cannot be set up (`G_FMT`, `S_FMT`, `G_SELECTION`, `REQBUFS`,
//! `STREAMON`: `EINVAL`) before the driver has found an SPS and raised
//! `V4L2_EVENT_SOURCE_CHANGE`; access units before the first SPS are consumed without a
//! picture; the access unit with the SPS waits in the OUTPUT queue until CAPTURE streams;
//! one picture per access unit with a slice, in a CAPTURE buffer taken in FIFO order, with the
//! OUTPUT timestamp copied; OUTPUT buffers come back once decoded; a mid-stream resolution
//! change decodes everything before it, returns an empty buffer flagged `LAST` (then `EPIPE`),
//! raises the event and holds the stream until CAPTURE is stopped and started again with
//! buffers of the new size; `V4L2_DEC_CMD_STOP` drains (pictures, an empty `LAST` buffer, the
//! EOS event) and `V4L2_DEC_CMD_START` resumes; `POLLERR` when neither queue has work;
//! `EAGAIN`/`ENOENT` when nothing is ready. Decoding happens on `poll()` (asynchronously, as
//! hardware does), never inside `QBUF`.
//!
//! The "hardware" reads no picture data: the stream's size is a knob ([`DecoderDriver::size`],
//! [`DecoderDriver::resize`]) rather than parsed from the SPS, and each picture is synthetic:
//! Y is filled with the access unit's *mark* (the first byte after the header of its first
//! slice NAL unit), U with mark+1, V with mark+2, the coded-but-not-visible area with 0xdd and
//! line padding with 0xee, so a test can tell which access unit a picture came from and that
//! neither crop nor stride leaks into the output. Knobs make it hold pictures back (`lag`),
//! flag pictures as errors, vanish (`ENODEV`) or stall.
//!
//! Public behind the `stand-in` feature so that pinhole's tests can drive their snapshot code
//! with it too. Not for production: it panics when the decoder breaks a rule.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use crate::backend::{
    flags, Backend, Caps, Dequeued, DequeuedPlane, Event, Format, Fourcc, PlaneFormat, Queue,
    Ready, Rect, DEC_CMD_START, DEC_CMD_STOP, EVENT_EOS, EVENT_SOURCE_CHANGE, SEL_TGT_COMPOSE,
    SRC_CH_RESOLUTION,
};
use crate::decoder::CID_MIN_BUFFERS_FOR_CAPTURE;

#[derive(Debug)]
struct Buf {
    data: Vec<u8>,
    queued: bool,
    order: u64,
}

/// A decoded picture not yet handed out (held back by `lag`).
#[derive(Debug, Clone, Copy)]
struct Pic {
    mark: u8,
    ts: i64,
    error: bool,
}

/// A queued access unit: buffer index, its number, bytes used, timestamp.
#[derive(Debug, Clone, Copy)]
struct Queued {
    index: usize,
    n: usize,
    used: usize,
    ts: i64,
}

const OUT: usize = 0;
const CAP: usize = 1;

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn qi(q: Queue) -> usize {
    match q {
        Queue::Output => OUT,
        Queue::Capture => CAP,
    }
}

/// Whether an access unit carries an SPS, and its mark (see the module docs), if it has a
/// slice.
pub fn scan(au: &[u8]) -> (bool, Option<u8>) {
    let mut sps = false;
    let mut i = 0;
    while i + 3 < au.len() {
        if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
            let kind = au[i + 3] & 0x1f;
            if kind == 7 {
                sps = true;
            }
            if (1..=5).contains(&kind) {
                return (sps, Some(au.get(i + 4).copied().unwrap_or(0)));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    (sps, None)
}

/// The stand-in decoder. Fields are public so a test can set it up and inspect it afterwards.
pub struct DecoderDriver {
    pub caps: Caps,
    pub output_formats: Vec<Fourcc>,
    pub capture_formats: Vec<Fourcc>,
    /// The visible size the "hardware" finds in an SPS.
    pub size: (u32, u32),
    /// From access unit number `.0` on, an SPS means size `.1`: a mid-stream resolution change.
    pub resize: Option<(usize, (u32, u32))>,
    /// CAPTURE `bytesperline` alignment (the coded size is the visible one rounded up to
    /// whole macroblocks, 16x16).
    pub align: u32,
    /// A picture comes out only once this many later access units were decoded (or on a drain).
    pub lag: usize,
    /// Access units (by number) whose pictures come back flagged `V4L2_BUF_FLAG_ERROR`.
    pub error_at: Vec<usize>,
    /// At the `QBUF` of this access unit the device vanishes: `ENODEV` from every call, and
    /// `POLLERR`.
    pub vanish_at: Option<usize>,
    /// From this access unit on nothing is decoded: no picture, no OUTPUT buffer back.
    pub stall_from: Option<usize>,
    /// `V4L2_CID_MIN_BUFFERS_FOR_CAPTURE`; `None`: no such control (`EINVAL`).
    pub min_buffers: Option<i32>,
    /// `VIDIOC_G_SELECTION` exists (else `ENOTTY`).
    pub selection: bool,
    /// `V4L2_BUF_FLAG_TIMESTAMP_COPY` and the OUTPUT timestamp on pictures (else
    /// `TIMESTAMP_MONOTONIC` and the driver's own count).
    pub copy_timestamps: bool,
    /// `(operation prefix, errno)`: the operation fails with that errno.
    pub fail: Vec<(&'static str, i32)>,
    /// Every operation but `poll`, in order.
    pub log: Vec<String>,
    /// The access units received (bytes, timestamp the driver saw), in order.
    pub received: Vec<(Vec<u8>, i64)>,
    /// CAPTURE calls refused because no source change had been raised yet.
    pub refused_early: usize,
    output_format: Option<Format>,
    cap_fourcc: Fourcc,
    found: Option<(u32, u32)>,
    bufs: [Vec<Buf>; 2],
    out_queue: VecDeque<Queued>,
    out_done: VecDeque<(usize, i64)>,
    cap_done: VecDeque<Dequeued>,
    held: VecDeque<Pic>,
    events: VecDeque<Event>,
    subscribed: Vec<u32>,
    streaming: [bool; 2],
    waiting_restart: bool,
    draining: bool,
    stopped: bool,
    last_dequeued: bool,
    gone: bool,
    order: u64,
    event_seq: u32,
    own_clock: i64,
}

impl DecoderDriver {
    /// Like the Pi 4's `/dev/video10` (`bcm2835-codec-decode`): multi-planar M2M, H.264 (and
    /// more) in, YU12 (its default), YV12, NV12, NV21, RGBP out, 32-byte-aligned lines, at
    /// least 4 CAPTURE buffers.
    pub fn pi4(size: (u32, u32)) -> DecoderDriver {
        DecoderDriver {
            caps: Caps {
                driver: "bcm2835-codec".into(),
                card: "bcm2835-codec-decode".into(),
                bus: "platform:bcm2835-codec".into(),
                caps: 0x0420_4000,
            },
            output_formats: vec![Fourcc::H264, Fourcc::MJPG, Fourcc(*b"MPG2")],
            capture_formats: vec![
                Fourcc::YU12,
                Fourcc(*b"YV12"),
                Fourcc::NV12,
                Fourcc(*b"NV21"),
                Fourcc(*b"RGBP"),
            ],
            size,
            resize: None,
            align: 32,
            lag: 0,
            error_at: Vec::new(),
            vanish_at: None,
            stall_from: None,
            min_buffers: Some(4),
            selection: true,
            copy_timestamps: true,
            fail: Vec::new(),
            log: Vec::new(),
            received: Vec::new(),
            refused_early: 0,
            output_format: None,
            cap_fourcc: Fourcc::YU12,
            found: None,
            bufs: [Vec::new(), Vec::new()],
            out_queue: VecDeque::new(),
            out_done: VecDeque::new(),
            cap_done: VecDeque::new(),
            held: VecDeque::new(),
            events: VecDeque::new(),
            subscribed: Vec::new(),
            streaming: [false, false],
            waiting_restart: false,
            draining: false,
            stopped: false,
            last_dequeued: false,
            gone: false,
            order: 0,
            event_seq: 0,
            own_clock: 0,
        }
    }

    /// A single-planar stateful decoder (CODA-like) giving NV12 only, without
    /// `G_SELECTION` or `MIN_BUFFERS_FOR_CAPTURE`.
    pub fn single_planar_nv12(size: (u32, u32)) -> DecoderDriver {
        let mut d = DecoderDriver::pi4(size);
        d.caps = Caps {
            driver: "coda".into(),
            card: "CODA960".into(),
            bus: "platform:coda".into(),
            caps: 0x0400_8000,
        };
        d.output_formats = vec![Fourcc::H264];
        d.capture_formats = vec![Fourcc::NV12];
        d.cap_fourcc = Fourcc::NV12;
        d.align = 64;
        d.min_buffers = None;
        d.selection = false;
        d
    }

    pub fn is_streaming(&self, queue: Queue) -> bool {
        self.streaming[qi(queue)]
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

    /// The found size, or `EINVAL` (what the CAPTURE setup gets before the source change).
    fn found(&mut self) -> io::Result<(u32, u32)> {
        match self.found {
            Some(s) => Ok(s),
            None => {
                self.refused_early += 1;
                Err(errno(nix::libc::EINVAL))
            }
        }
    }

    fn capture_format(&self, fourcc: Fourcc, (w, h): (u32, u32)) -> Format {
        let (cw, ch) = (w.div_ceil(16) * 16, h.div_ceil(16) * 16);
        let bpl = cw.div_ceil(self.align) * self.align;
        let sizeimage = match fourcc {
            Fourcc::NV12 => bpl * ch + bpl * ch / 2,
            _ => bpl * ch + 2 * (bpl / 2) * (ch / 2),
        };
        Format {
            width: cw,
            height: ch,
            fourcc,
            planes: vec![PlaneFormat {
                bytesperline: bpl,
                sizeimage,
            }],
        }
    }

    /// A synthetic picture of the found size in the current CAPTURE format (module docs).
    fn paint(&self, mark: u8) -> Vec<u8> {
        let (w, h) = self.found.unwrap_or(self.size);
        let f = self.capture_format(self.cap_fourcc, (w, h));
        let (cw, ch) = (f.width as usize, f.height as usize);
        let bpl = f.planes[0].bytesperline as usize;
        let (w, h) = (w as usize, h as usize);
        let mut buf = vec![0xee; f.planes[0].sizeimage as usize];
        let mut fill = |offset: usize,
                        stride: usize,
                        coded: (usize, usize),
                        vis: (usize, usize),
                        value: &dyn Fn(usize) -> u8| {
            for row in 0..coded.1 {
                for col in 0..coded.0 {
                    buf[offset + row * stride + col] = if row < vis.1 && col < vis.0 {
                        value(col)
                    } else {
                        0xdd
                    };
                }
            }
        };
        fill(0, bpl, (cw, ch), (w, h), &|_| mark);
        let (vw, vh) = (w.div_ceil(2), h.div_ceil(2));
        if self.cap_fourcc == Fourcc::NV12 {
            let uv = |col: usize| mark.wrapping_add(1 + (col % 2) as u8);
            fill(bpl * ch, bpl, (cw, ch / 2), (2 * vw, vh), &uv);
        } else {
            let c = bpl / 2;
            fill(bpl * ch, c, (cw / 2, ch / 2), (vw, vh), &|_| {
                mark.wrapping_add(1)
            });
            fill(
                bpl * ch + c * (ch / 2),
                c,
                (cw / 2, ch / 2),
                (vw, vh),
                &|_| mark.wrapping_add(2),
            );
        }
        buf
    }

    fn raise(&mut self, kind: u32) {
        if self.subscribed.contains(&kind) {
            self.event_seq += 1;
            self.events.push_back(Event {
                kind,
                changes: if kind == EVENT_SOURCE_CHANGE {
                    SRC_CH_RESOLUTION
                } else {
                    0
                },
                pending: 0,
                sequence: self.event_seq,
            });
        }
    }

    /// The CAPTURE buffer queued longest ago.
    fn free_capture(&self) -> Option<usize> {
        self.bufs[CAP]
            .iter()
            .enumerate()
            .filter(|(_, b)| b.queued)
            .min_by_key(|(_, b)| b.order)
            .map(|(i, _)| i)
    }

    /// Hands a picture (or, with `None`, an empty buffer) to the application.
    fn finish(&mut self, pic: Option<Pic>, extra: u32) -> bool {
        let Some(index) = self.free_capture() else {
            return false;
        };
        let (used, ts, err) = match pic {
            Some(p) => {
                let data = self.paint(p.mark);
                let b = &mut self.bufs[CAP][index].data;
                let n = data.len().min(b.len());
                b[..n].copy_from_slice(&data[..n]);
                (n, p.ts, if p.error { flags::ERROR } else { 0 })
            }
            None => (0, 0, 0),
        };
        self.bufs[CAP][index].queued = false;
        self.own_clock += 33_333;
        let (tsflag, ts) = if self.copy_timestamps {
            (flags::TIMESTAMP_COPY, ts)
        } else {
            (flags::TIMESTAMP_MONOTONIC, self.own_clock)
        };
        self.cap_done.push_back(Dequeued {
            index,
            planes: vec![DequeuedPlane {
                bytesused: used as u32,
                data_offset: 0,
            }],
            flags: tsflag | err | extra,
            timestamp_us: ts,
            sequence: 0,
        });
        true
    }

    /// Hands out held pictures until at most `keep` remain; false when CAPTURE buffers ran out.
    fn release(&mut self, keep: usize) -> bool {
        while self.held.len() > keep {
            let Some(&p) = self.held.front() else {
                break;
            };
            if !self.finish(Some(p), 0) {
                return false;
            }
            self.held.pop_front();
        }
        true
    }

    /// What the hardware does between two polls: decode what it can.
    fn advance(&mut self) {
        for _ in 0..64 {
            if self.gone || self.waiting_restart || self.stopped || !self.streaming[OUT] {
                return;
            }
            if self.streaming[CAP] && !self.release(self.lag) {
                return;
            }
            let Some(&q) = self.out_queue.front() else {
                if self.draining
                    && self.streaming[CAP]
                    && self.release(0)
                    && self.finish(None, flags::LAST)
                {
                    self.draining = false;
                    self.stopped = true;
                    self.raise(EVENT_EOS);
                }
                return;
            };
            if self.stall_from.is_some_and(|s| q.n >= s) {
                return;
            }
            let (sps, mark) = scan(&self.bufs[OUT][q.index].data[..q.used]);
            if sps {
                let size = match self.resize {
                    Some((at, s)) if q.n >= at => s,
                    _ => self.size,
                };
                if self.found != Some(size) {
                    if self.found.is_some() && self.streaming[CAP] {
                        // Everything before the change first, then an empty LAST buffer.
                        if !self.release(0) || !self.finish(None, flags::LAST) {
                            return;
                        }
                        self.found = Some(size);
                        self.raise(EVENT_SOURCE_CHANGE);
                        self.waiting_restart = true;
                        return;
                    }
                    self.found = Some(size);
                    self.raise(EVENT_SOURCE_CHANGE);
                }
            }
            if self.found.is_some() {
                if !self.streaming[CAP] {
                    return; // the access unit waits for the CAPTURE setup
                }
                if let Some(mark) = mark {
                    self.held.push_back(Pic {
                        mark,
                        ts: q.ts,
                        error: self.error_at.contains(&q.n),
                    });
                }
            }
            // Decoded (or, before the first SPS, skipped): the OUTPUT buffer comes back.
            self.out_queue.pop_front();
            self.out_done.push_back((q.index, q.ts));
        }
    }
}

impl Backend for DecoderDriver {
    fn caps(&self) -> &Caps {
        &self.caps
    }

    fn formats(&mut self, queue: Queue) -> io::Result<Vec<Fourcc>> {
        self.check(&format!("ENUM_FMT {queue}"))?;
        Ok(match queue {
            Queue::Output => self.output_formats.clone(),
            Queue::Capture => self.capture_formats.clone(),
        })
    }

    fn set_format(&mut self, queue: Queue, want: &Format) -> io::Result<Format> {
        self.check(&format!("S_FMT {queue} {want}"))?;
        if self.streaming[qi(queue)] || !self.bufs[qi(queue)].is_empty() {
            return Err(errno(nix::libc::EBUSY));
        }
        match queue {
            Queue::Output => {
                let fourcc = if self.output_formats.contains(&want.fourcc) {
                    want.fourcc
                } else {
                    self.output_formats[0]
                };
                let asked = want.planes.first().map_or(0, |p| p.sizeimage);
                let f = Format {
                    width: want.width,
                    height: want.height,
                    fourcc,
                    planes: vec![PlaneFormat {
                        bytesperline: 0,
                        sizeimage: if asked == 0 { 512 << 10 } else { asked },
                    }],
                };
                self.output_format = Some(f.clone());
                Ok(f)
            }
            Queue::Capture => {
                let size = self.found()?;
                if self.capture_formats.contains(&want.fourcc)
                    && matches!(want.fourcc, Fourcc::YU12 | Fourcc::NV12)
                {
                    self.cap_fourcc = want.fourcc;
                }
                Ok(self.capture_format(self.cap_fourcc, size))
            }
        }
    }

    fn get_format(&mut self, queue: Queue) -> io::Result<Format> {
        self.check(&format!("G_FMT {queue}"))?;
        match queue {
            Queue::Output => self
                .output_format
                .clone()
                .ok_or_else(|| errno(nix::libc::EINVAL)),
            Queue::Capture => {
                let size = self.found()?;
                Ok(self.capture_format(self.cap_fourcc, size))
            }
        }
    }

    fn set_frame_interval(&mut self, num: u32, den: u32) -> io::Result<()> {
        self.check(&format!("S_PARM {num}/{den}"))?;
        Err(errno(nix::libc::ENOTTY))
    }

    fn set_control(&mut self, id: u32, value: i32) -> io::Result<()> {
        self.check(&format!("S_CTRL {id:#x}={value}"))?;
        Err(errno(nix::libc::EINVAL))
    }

    fn control(&mut self, id: u32) -> io::Result<i32> {
        self.check(&format!("G_CTRL {id:#x}"))?;
        match (id, self.min_buffers) {
            (CID_MIN_BUFFERS_FOR_CAPTURE, Some(n)) => Ok(n),
            _ => Err(errno(nix::libc::EINVAL)),
        }
    }

    fn allocate(&mut self, queue: Queue, count: u32) -> io::Result<Vec<Vec<usize>>> {
        self.check(&format!("REQBUFS {queue} {count}"))?;
        if self.streaming[qi(queue)] {
            return Err(errno(nix::libc::EBUSY));
        }
        let len = match queue {
            Queue::Output => match &self.output_format {
                Some(f) => f.planes[0].sizeimage as usize,
                None => return Err(errno(nix::libc::EINVAL)),
            },
            Queue::Capture => {
                let size = self.found()?;
                self.capture_format(self.cap_fourcc, size).planes[0].sizeimage as usize
            }
        };
        let n = match (queue, count) {
            (_, 0) => 0,
            (Queue::Capture, c) => {
                let min = self.min_buffers.unwrap_or(1).max(1) as u32;
                c.clamp(min, 32)
            }
            (Queue::Output, c) => c.clamp(1, 8),
        };
        self.bufs[qi(queue)] = (0..n)
            .map(|_| Buf {
                data: vec![0; len],
                queued: false,
                order: 0,
            })
            .collect();
        Ok(vec![vec![len]; n as usize])
    }

    fn plane(&self, queue: Queue, index: usize, plane: usize) -> Option<&[u8]> {
        let b = self.bufs[qi(queue)].get(index)?;
        (!b.queued && plane == 0).then_some(b.data.as_slice())
    }

    fn plane_mut(&mut self, queue: Queue, index: usize, plane: usize) -> Option<&mut [u8]> {
        let b = self.bufs[qi(queue)].get_mut(index)?;
        (!b.queued && plane == 0).then_some(b.data.as_mut_slice())
    }

    fn queue(
        &mut self,
        queue: Queue,
        index: usize,
        bytesused: &[u32],
        timestamp_us: i64,
    ) -> io::Result<()> {
        self.check(&format!("QBUF {queue} {index}"))?;
        if queue == Queue::Output && self.vanish_at == Some(self.received.len()) {
            self.gone = true;
            return Err(errno(nix::libc::ENODEV));
        }
        self.order += 1;
        let order = self.order;
        let b = self.bufs[qi(queue)]
            .get_mut(index)
            .ok_or_else(|| errno(nix::libc::EINVAL))?;
        assert!(!b.queued, "QBUF of a buffer the driver already owns");
        let used = bytesused.first().copied().unwrap_or(0) as usize;
        if queue == Queue::Output {
            assert!(
                used > 0 && used <= b.data.len(),
                "bytesused {used} out of range"
            );
            self.received.push((b.data[..used].to_vec(), timestamp_us));
        }
        b.queued = true;
        b.order = order;
        if queue == Queue::Output {
            self.out_queue.push_back(Queued {
                index,
                n: self.received.len() - 1,
                used,
                ts: timestamp_us,
            });
        }
        Ok(())
    }

    fn dequeue(&mut self, queue: Queue) -> io::Result<Option<Dequeued>> {
        if self.gone {
            return Err(errno(nix::libc::ENODEV));
        }
        if !self.streaming[qi(queue)] {
            return Err(errno(nix::libc::EINVAL));
        }
        match queue {
            Queue::Output => {
                let Some((index, ts)) = self.out_done.pop_front() else {
                    return Ok(None);
                };
                self.bufs[OUT][index].queued = false;
                Ok(Some(Dequeued {
                    index,
                    planes: vec![DequeuedPlane::default()],
                    flags: flags::TIMESTAMP_COPY,
                    timestamp_us: ts,
                    sequence: 0,
                }))
            }
            Queue::Capture => match self.cap_done.pop_front() {
                Some(d) => {
                    if d.flags & flags::LAST != 0 {
                        self.last_dequeued = true;
                    }
                    Ok(Some(d))
                }
                None if self.last_dequeued => Err(errno(nix::libc::EPIPE)),
                None => Ok(None),
            },
        }
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<Ready> {
        if self.gone {
            return Ok(Ready {
                error: true,
                ..Ready::default()
            });
        }
        self.advance();
        let mut r = Ready {
            capture: self.streaming[CAP] && (!self.cap_done.is_empty() || self.last_dequeued),
            output: self.streaming[OUT] && !self.out_done.is_empty(),
            event: !self.events.is_empty(),
            error: false,
        };
        if !(r.capture || r.output || r.event) {
            // v4l2_m2m_poll: POLLERR when neither queue has work.
            let out_idle = !self.streaming[OUT] || self.out_queue.is_empty();
            let cap_idle = !self.streaming[CAP] || !self.bufs[CAP].iter().any(|b| b.queued);
            r.error = out_idle && cap_idle;
            if !r.error {
                // Nothing yet: let real time pass so the caller's deadline does.
                std::thread::sleep(timeout.min(Duration::from_millis(2)));
            }
        }
        Ok(r)
    }

    fn stream(&mut self, queue: Queue, on: bool) -> io::Result<()> {
        self.check(&format!(
            "{} {queue}",
            if on { "STREAMON" } else { "STREAMOFF" }
        ))?;
        let i = qi(queue);
        if on {
            if queue == Queue::Capture {
                let size = self.found()?;
                let need = self.capture_format(self.cap_fourcc, size).planes[0].sizeimage as usize;
                if self.bufs[CAP].is_empty() || self.bufs[CAP].iter().any(|b| b.data.len() < need) {
                    return Err(errno(nix::libc::EINVAL));
                }
                self.waiting_restart = false;
                self.stopped = false;
                self.last_dequeued = false;
            }
            self.streaming[i] = true;
            return Ok(());
        }
        self.streaming[i] = false;
        for b in &mut self.bufs[i] {
            b.queued = false;
        }
        match queue {
            Queue::Output => {
                self.out_queue.clear();
                self.out_done.clear();
                self.held.clear();
                self.draining = false;
            }
            Queue::Capture => {
                self.cap_done.clear();
                self.last_dequeued = false;
            }
        }
        Ok(())
    }

    fn subscribe_event(&mut self, kind: u32) -> io::Result<()> {
        self.check(&format!("SUBSCRIBE_EVENT {kind}"))?;
        if kind != EVENT_EOS && kind != EVENT_SOURCE_CHANGE {
            return Err(errno(nix::libc::EINVAL));
        }
        self.subscribed.push(kind);
        Ok(())
    }

    fn dequeue_event(&mut self) -> io::Result<Option<Event>> {
        if self.gone {
            return Err(errno(nix::libc::ENODEV));
        }
        let pending = self.events.len().saturating_sub(1) as u32;
        Ok(self.events.pop_front().map(|e| Event { pending, ..e }))
    }

    fn selection(&mut self, queue: Queue, target: u32) -> io::Result<Rect> {
        self.check(&format!("G_SELECTION {queue} {target:#x}"))?;
        if !self.selection {
            return Err(errno(nix::libc::ENOTTY));
        }
        let (width, height) = self.found()?;
        if queue != Queue::Capture || target != SEL_TGT_COMPOSE {
            return Err(errno(nix::libc::EINVAL));
        }
        Ok(Rect {
            left: 0,
            top: 0,
            width,
            height,
        })
    }

    fn decoder_command(&mut self, cmd: u32) -> io::Result<()> {
        self.check(&format!("DECODER_CMD {cmd}"))?;
        match cmd {
            // Ignored unless both queues stream (dev-decoder.rst).
            DEC_CMD_STOP => {
                if self.streaming[OUT] && self.streaming[CAP] {
                    self.draining = true;
                }
                Ok(())
            }
            DEC_CMD_START => {
                self.stopped = false;
                self.draining = false;
                self.last_dequeued = false;
                Ok(())
            }
            _ => Err(errno(nix::libc::EINVAL)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Every test here runs the real [`Decoder`] against the stand-in driver above: no decoder
    //! device exists on the machines this was written on.
    use std::time::Instant;

    use super::*;
    use crate::decoder::{is_h264_decoder, Config, Decoded, Decoder, Error, Note};

    const SPS_PPS: &[u8] = &[
        0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0x8c, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80,
    ];

    /// An IDR access unit with SPS/PPS in front, marked `mark`.
    fn idr(mark: u8) -> Vec<u8> {
        let mut v = SPS_PPS.to_vec();
        v.extend_from_slice(&[0, 0, 0, 1, 0x65, mark, 0x88, 0x84]);
        v
    }

    /// A P access unit marked `mark`.
    fn p(mark: u8) -> Vec<u8> {
        vec![0, 0, 0, 1, 0x41, mark, 0x9a, 0x02]
    }

    fn quick() -> Config {
        Config {
            timeout: Duration::from_millis(300),
            picture_wait: Duration::from_millis(30),
            ..Config::default()
        }
    }

    fn open(d: &mut DecoderDriver) -> Result<Decoder<&mut DecoderDriver>, Error> {
        Decoder::with_config(d, "/dev/video10", &quick())
    }

    fn pos(log: &[String], prefix: &str) -> usize {
        log.iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} not in {log:#?}"))
    }

    /// Checks a picture: its size, its timestamp and the access unit it came from.
    fn assert_pic(d: &Decoded, (w, h): (u32, u32), ts: i64, mark: u8) {
        assert_eq!((d.width, d.height, d.timestamp_us), (w, h, ts), "{d:?}");
        let (cw, ch) = (w.div_ceil(2) as usize, h.div_ceil(2) as usize);
        assert_eq!(d.y, vec![mark; (w * h) as usize]);
        assert_eq!(d.u, vec![mark + 1; cw * ch]);
        assert_eq!(d.v, vec![mark + 2; cw * ch]);
    }

    #[test]
    fn a_pi4_like_decoder_is_set_up_in_the_stateful_order_and_gives_cropped_i420() {
        // Stand-in for bcm2835-codec-decode: 50x30 visible, coded 64x32 with 64-byte lines.
        let mut drv = DecoderDriver::pi4((50, 30));
        let mut dec = open(&mut drv).unwrap();
        assert!(dec.capture_format().is_none());
        let pics = dec.decode(&idr(10), 1_000).unwrap();
        assert_eq!(pics.len(), 1);
        assert_pic(&pics[0], (50, 30), 1_000, 10);
        let f = dec.capture_format().unwrap();
        assert_eq!((f.fourcc, f.width, f.height), (Fourcc::YU12, 64, 32));
        assert_eq!(
            dec.visible(),
            Some(Rect {
                left: 0,
                top: 0,
                width: 50,
                height: 30
            })
        );
        // Repeated and backward timestamps are the caller's business: carried as given.
        let pics = dec.decode(&p(20), 1_000).unwrap();
        assert_pic(&pics[0], (50, 30), 1_000, 20);
        let pics = dec.decode(&p(30), -5).unwrap();
        assert_pic(&pics[0], (50, 30), -5, 30);
        let notes = dec.take_notes();
        assert!(
            matches!(
                &notes[..],
                [Note::CaptureSetUp {
                    buffers: 6,
                    again: false,
                    ..
                }]
            ),
            "{notes:?}"
        );
        assert_eq!(
            notes[0].to_string(),
            "decoder found the stream's format: YU12 64x32 (bytesperline 64), visible 50x30+0+0, 6 buffers"
        );
        drop(dec);

        // The driver got the access units byte for byte, under strictly increasing tags.
        assert_eq!(drv.received.len(), 3);
        assert_eq!(drv.received[0].0, idr(10));
        assert!(drv.received.windows(2).all(|w| w[0].1 < w[1].1));
        // dev-decoder.rst's order; nothing on CAPTURE before the source change.
        assert_eq!(drv.refused_early, 0);
        let log = &drv.log;
        for (a, b) in [
            ("S_FMT OUTPUT H264", "SUBSCRIBE_EVENT 5"),
            ("SUBSCRIBE_EVENT 5", "REQBUFS OUTPUT 4"),
            ("SUBSCRIBE_EVENT 2", "REQBUFS OUTPUT 4"),
            ("REQBUFS OUTPUT", "STREAMON OUTPUT"),
            ("STREAMON OUTPUT", "QBUF OUTPUT"),
            ("QBUF OUTPUT", "ENUM_FMT CAPTURE"),
            ("ENUM_FMT CAPTURE", "G_FMT CAPTURE"),
            ("G_FMT CAPTURE", "G_SELECTION CAPTURE 0x100"),
            ("G_SELECTION CAPTURE", "G_CTRL 0x980927"),
            ("G_CTRL 0x980927", "REQBUFS CAPTURE 6"),
            ("REQBUFS CAPTURE 6", "QBUF CAPTURE"),
            ("QBUF CAPTURE", "STREAMON CAPTURE"),
            // Closing drains, then stops.
            ("STREAMON CAPTURE", "DECODER_CMD 1"),
            ("DECODER_CMD 1", "STREAMOFF OUTPUT"),
        ] {
            assert!(pos(log, a) < pos(log, b), "{a} before {b}: {log:#?}");
        }
        // YU12 was the driver's own: no S_FMT on CAPTURE.
        assert!(!log.iter().any(|l| l.starts_with("S_FMT CAPTURE")));
        assert!(!drv.is_streaming(Queue::Output) && !drv.is_streaming(Queue::Capture));
    }

    #[test]
    fn the_stand_in_refuses_capture_setup_before_the_source_change() {
        // What the decoder avoids: the stand-in says EINVAL, as drivers do.
        let mut drv = DecoderDriver::pi4((48, 32));
        assert!(drv.get_format(Queue::Capture).is_err());
        assert!(drv.allocate(Queue::Capture, 4).is_err());
        assert_eq!(drv.refused_early, 2);
        // Access units before the first SPS are consumed without a picture or an event.
        let mut dec = open(&mut drv).unwrap();
        assert!(dec.decode(&p(1), 1).unwrap().is_empty());
        assert!(dec.capture_format().is_none());
        assert!(dec.drain().unwrap().is_empty());
        assert_pic(&dec.decode(&idr(5), 2).unwrap()[0], (48, 32), 2, 5);
        drop(dec);
        assert_eq!(drv.refused_early, 2);
    }

    #[test]
    fn a_single_planar_nv12_only_decoder_is_deinterleaved_without_selection() {
        // Stand-in for a CODA-like single-planar decoder: NV12 only, 64-byte lines, no
        // G_SELECTION (the format's size is used) and no MIN_BUFFERS_FOR_CAPTURE.
        let mut drv = DecoderDriver::single_planar_nv12((48, 32));
        let mut dec = open(&mut drv).unwrap();
        let pics = dec.decode(&idr(40), 7).unwrap();
        assert_pic(&pics[0], (48, 32), 7, 40);
        assert_eq!(dec.capture_format().unwrap().fourcc, Fourcc::NV12);
        let notes = dec.take_notes();
        assert!(
            notes.iter().any(
                |n| matches!(n, Note::NoSelection { error } if error.contains("not supported"))
            ),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| matches!(n, Note::CaptureSetUp { buffers: 6, .. })),
            "{notes:?}"
        );
    }

    #[test]
    fn yu12_is_chosen_when_the_driver_defaults_to_nv12() {
        let mut drv = DecoderDriver::pi4((32, 16));
        drv.cap_fourcc = Fourcc::NV12;
        let mut dec = open(&mut drv).unwrap();
        assert_pic(&dec.decode(&idr(3), 1).unwrap()[0], (32, 16), 1, 3);
        assert_eq!(dec.capture_format().unwrap().fourcc, Fourcc::YU12);
        drop(dec);
        assert!(pos(&drv.log, "G_FMT CAPTURE") < pos(&drv.log, "S_FMT CAPTURE YU12 32x16"));
    }

    #[test]
    fn a_lagging_decoder_returns_pictures_late_and_only_the_wanted_ones_are_copied() {
        // Stand-in holding two pictures back. Like the snapshot: reference frames first,
        // unwanted, then the newest, wanted; a drain brings it out.
        let mut drv = DecoderDriver::pi4((16, 16));
        drv.lag = 2;
        let mut dec = open(&mut drv).unwrap();
        assert!(dec.decode_with(&idr(1), 100, false).unwrap().is_empty());
        assert!(dec.decode_with(&p(2), 200, false).unwrap().is_empty());
        let t = Instant::now();
        assert!(dec.decode_with(&p(3), 300, true).unwrap().is_empty());
        // It waited for the picture, boundedly (picture_wait is 30 ms here).
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        let pics = dec.drain().unwrap();
        assert_eq!(pics.len(), 1);
        assert_pic(&pics[0], (16, 16), 300, 3);
        // Decoding resumes after the drain (V4L2_DEC_CMD_START), still lagging.
        assert!(dec.decode(&p(4), 400).unwrap().is_empty());
        assert!(dec.decode(&p(5), 500).unwrap().is_empty());
        let pics = dec.decode(&p(6), 600).unwrap();
        assert_pic(&pics[0], (16, 16), 400, 4);
        let last: Vec<i64> = dec
            .close()
            .unwrap()
            .iter()
            .map(|d| d.timestamp_us)
            .collect();
        assert_eq!(last, [500, 600]);
        assert!(pos(&drv.log, "DECODER_CMD 1") < pos(&drv.log, "DECODER_CMD 0"));
    }

    #[test]
    fn a_mid_stream_resolution_change_drains_and_renegotiates_capture() {
        // Stand-in: from access unit 3 on, the SPS says 64x48; one picture held back.
        let mut drv = DecoderDriver::pi4((48, 30));
        drv.resize = Some((3, (64, 48)));
        drv.lag = 1;
        let mut dec = open(&mut drv).unwrap();
        let mut got = Vec::new();
        for (i, au) in [idr(10), p(11), p(12), idr(13), p(14)].iter().enumerate() {
            got.extend(dec.decode(au, i as i64 * 10).unwrap());
        }
        assert_eq!(dec.resolution_changes(), 1);
        let notes = dec.take_notes();
        assert!(!notes.contains(&Note::NoLastBuffer), "{notes:?}");
        assert!(
            notes.iter().any(|n| matches!(n, Note::CaptureSetUp { again: true, visible, .. } if (visible.width, visible.height) == (64, 48))),
            "{notes:?}"
        );
        got.extend(dec.close().unwrap());
        let seen: Vec<(u32, u32, i64)> = got
            .iter()
            .map(|d| (d.width, d.height, d.timestamp_us))
            .collect();
        assert_eq!(
            seen,
            [
                (48, 30, 0),
                (48, 30, 10),
                (48, 30, 20),
                (64, 48, 30),
                (64, 48, 40)
            ]
        );
        for (d, mark) in got.iter().zip(10..) {
            assert_pic(d, (d.width, d.height), d.timestamp_us, mark);
        }
        // The change: the last buffer, STREAMOFF, REQBUFS 0, the CAPTURE setup again.
        let log = &drv.log;
        let off = pos(log, "STREAMOFF CAPTURE");
        let order = [
            "REQBUFS CAPTURE 0",
            "ENUM_FMT CAPTURE",
            "G_FMT CAPTURE",
            "REQBUFS CAPTURE 6",
            "STREAMON CAPTURE",
        ];
        let mut at = off;
        for op in order {
            let i = log[at..]
                .iter()
                .position(|l| l.starts_with(op))
                .unwrap_or_else(|| panic!("{op} after STREAMOFF: {log:#?}"));
            at += i;
        }
        assert_eq!(drv.refused_early, 0);
    }

    #[test]
    fn a_picture_flagged_as_an_error_loses_that_picture_only() {
        // Stand-in: the pictures of access units 1 (wanted) and 3 (not wanted) are flagged.
        let mut drv = DecoderDriver::pi4((16, 16));
        drv.error_at = vec![1, 3];
        let mut dec = open(&mut drv).unwrap();
        assert_eq!(dec.decode(&idr(1), 10).unwrap().len(), 1);
        let e = dec.decode(&p(2), 20).unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(
            matches!(
                e,
                Error::Corrupt {
                    timestamp_us: 20,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("V4L2_BUF_FLAG_ERROR"), "{e}");
        assert_pic(&dec.decode(&p(3), 30).unwrap()[0], (16, 16), 30, 3);
        assert!(dec.decode_with(&p(4), 40, false).unwrap().is_empty());
        assert_pic(&dec.decode(&p(5), 50).unwrap()[0], (16, 16), 50, 5);
        let notes = dec.take_notes();
        assert!(
            notes.contains(&Note::BadPictureDropped { timestamp_us: 40 }),
            "{notes:?}"
        );
    }

    #[test]
    fn a_vanished_decoder_is_gone_at_once_and_dropping_it_does_not_hang() {
        let mut drv = DecoderDriver::pi4((16, 16));
        drv.vanish_at = Some(2);
        let mut dec = open(&mut drv).unwrap();
        dec.decode(&idr(1), 1).unwrap();
        dec.decode(&p(2), 2).unwrap();
        let t = Instant::now();
        let e = dec.decode(&p(3), 3).unwrap_err();
        assert!(matches!(e, Error::Gone { .. }) && !e.is_transient(), "{e}");
        assert!(
            e.to_string().starts_with(
                "/dev/video10: the decoder is gone (VIDIOC_QBUF on the OUTPUT queue: ENODEV"
            ),
            "{e}"
        );
        assert!(matches!(dec.decode(&p(4), 4), Err(Error::Gone { .. })));
        drop(dec);
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn a_stalled_decoder_hits_the_deadline_naming_the_node() {
        // Stand-in: from access unit 1 on nothing is decoded and no buffer comes back.
        let mut drv = DecoderDriver::pi4((16, 16));
        drv.stall_from = Some(1);
        let cfg = Config {
            output_buffers: 2,
            ..quick()
        };
        let mut dec = Decoder::with_config(&mut drv, "/dev/video10", &cfg).unwrap();
        assert_eq!(dec.decode(&idr(1), 1).unwrap().len(), 1);
        // Two buffers in hand: each call returns after picture_wait with nothing.
        for ts in [2, 3] {
            let t = Instant::now();
            assert!(dec.decode(&p(2), ts).unwrap().is_empty());
            assert!(
                t.elapsed() < Duration::from_millis(250),
                "{:?}",
                t.elapsed()
            );
        }
        let t = Instant::now();
        let e = dec.decode(&p(3), 4).unwrap_err();
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_millis(1000),
            "{waited:?}"
        );
        assert_eq!(
            e.to_string(),
            "/dev/video10: no bitstream (OUTPUT) buffer came back within 300 ms; the decoder is stuck (another program using it, or a firmware fault): reopen it or decode in software"
        );
        let t = Instant::now();
        let e = dec.close().unwrap_err();
        assert!(e.to_string().contains("the drain did not finish"), "{e}");
        assert!(
            t.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn drivers_that_stamp_pictures_themselves_are_matched_by_order() {
        let mut drv = DecoderDriver::pi4((16, 16));
        drv.copy_timestamps = false;
        let mut dec = open(&mut drv).unwrap();
        for (i, ts) in [5, 9, 11].into_iter().enumerate() {
            let au = if i == 0 { idr(i as u8) } else { p(i as u8) };
            assert_pic(&dec.decode(&au, ts).unwrap()[0], (16, 16), ts, i as u8);
        }
        assert!(dec.take_notes().contains(&Note::TimestampsNotCopied));
    }

    #[test]
    fn bad_access_units_are_refused_without_harm() {
        let mut drv = DecoderDriver::pi4((16, 16));
        let cfg = Config {
            bitstream_size: 64 << 10,
            ..quick()
        };
        let mut dec = Decoder::with_config(&mut drv, "/dev/video10", &cfg).unwrap();
        let e = dec.decode(&[], 1).unwrap_err();
        assert!(
            e.is_transient() && e.to_string().contains("is empty"),
            "{e}"
        );
        let big = vec![0u8; (64 << 10) + 1];
        let e = dec.decode(&big, 2).unwrap_err();
        assert!(
            e.is_transient()
                && e.to_string()
                    .contains("is 65537 bytes, more than a bitstream buffer holds (65536"),
            "{e}"
        );
        assert_eq!(dec.decode(&idr(1), 3).unwrap().len(), 1);
    }

    #[test]
    fn nodes_that_are_not_stateful_h264_decoders_say_why() {
        use crate::standin::camera::Camera;
        use crate::standin::{Reply, StandIn};
        let mut enc = StandIn::pi4(Box::new(|_| Reply::default()));
        assert!(!is_h264_decoder(&mut enc));
        let e = Decoder::new(&mut enc, "/dev/video11")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/dev/video11 (bcm2835-codec-encode) is not a stateful memory-to-memory H.264 decoder: its OUTPUT queue takes YU12"),
            "{e}"
        );
        let mut cam = Camera::uvc(
            Vec::new(),
            Box::new(|_| crate::standin::camera::Shot::Nothing),
        );
        assert!(!is_h264_decoder(&mut cam));
        assert!(Decoder::new(&mut cam, "/dev/video0").is_err());

        let mut drv = DecoderDriver::pi4((16, 16));
        assert!(is_h264_decoder(&mut drv));
        drv.capture_formats = vec![Fourcc(*b"RGBP")];
        assert!(!is_h264_decoder(&mut drv));
        // Found, but its CAPTURE side offers nothing this code reads.
        let mut dec = open(&mut drv).unwrap();
        let e = dec.decode(&idr(1), 1).unwrap_err().to_string();
        assert!(
            e.contains("gives none of YU12, NV12, YM12, NM12 (it offers RGBP)"),
            "{e}"
        );
        drop(dec);

        let mut drv = DecoderDriver::pi4((16, 16));
        drv.fail.push(("SUBSCRIBE_EVENT 5", nix::libc::EINVAL));
        let e = open(&mut drv).unwrap_err().to_string();
        assert!(e.contains("it sends no source-change events"), "{e}");

        let mut drv = DecoderDriver::pi4((16, 16));
        drv.fail.push(("REQBUFS CAPTURE", nix::libc::ENOMEM));
        let mut dec = open(&mut drv).unwrap();
        let e = dec.decode(&idr(1), 1).unwrap_err().to_string();
        assert!(
            e.contains("requesting 6 CAPTURE buffers") && e.contains("CMA"),
            "{e}"
        );
    }
}
