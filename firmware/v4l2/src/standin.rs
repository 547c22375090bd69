//! A stand-in V4L2 encoder driver, and the encoder's tests against it; [`camera`] is the
//! stand-in capture driver, [`decoder`] the stand-in stateful H.264 decoder.
//!
//! Why a stand-in: the machines this is built and tested on have no `/dev/video*` and cannot
//! load a driver (no vivid, no v4l2loopback, and neither has an H.264 encoder anyway), so the
//! [`Backend`] seam is driven by this model of a stateful encoder. It behaves as vb2 and
//! bcm2835-codec do where the encoder depends on it: `EAGAIN` until a frame is "encoded",
//! buffers owned by the driver while queued (no access, no second QBUF), formats adjusted
//! rather than refused, timestamps copied from OUTPUT to CAPTURE, FIFO CAPTURE buffers,
//! everything returned on STREAMOFF. Each test scripts what the "hardware" answers per frame:
//! delays, headers in a buffer of their own, error flags, stale or reordered timestamps,
//! empty, overlong or garbage buffers, refused formats and failing ioctls.

//!
//! Public behind the `stand-in` feature so that pinhole's tests can drive their encoder
//! wrapper with it too. Not for production: it panics when the encoder breaks a rule.

use std::io;
use std::time::Duration;

pub mod camera;
pub mod decoder;

use crate::backend::{
    flags, Backend, Caps, Dequeued, DequeuedPlane, Format, Fourcc, PlaneFormat, Queue, Ready,
};

/// Which timestamp a scripted output carries.
#[derive(Debug, Clone, Copy)]
pub enum Ts {
    /// The OUTPUT buffer's (what encoders do).
    Copy,
    /// A fixed value (a driver stamping buffers itself, or a leftover from an earlier frame).
    Fixed(i64),
}

/// One CAPTURE buffer the "hardware" produces for a frame.
#[derive(Debug, Clone)]
pub struct Out {
    /// Ready after this many `poll()` calls following the QBUF.
    pub after: u64,
    pub ts: Ts,
    pub data: Vec<u8>,
    pub flags: u32,
    /// Overrides `bytesused` (a driver bug: more than the buffer holds).
    pub bytesused: Option<u32>,
}

pub fn out(after: u64, data: &[u8]) -> Out {
    Out {
        after,
        ts: Ts::Copy,
        data: data.to_vec(),
        flags: 0,
        bytesused: None,
    }
}

/// What the "hardware" does with one queued frame.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub outs: Vec<Out>,
    /// The OUTPUT buffer comes back after this many polls, with these flags.
    pub output_after: u64,
    pub output_flags: u32,
}

/// A frame as the stand-in received it.
#[derive(Debug, Clone)]
pub struct Frame {
    pub n: usize,
    pub ts: i64,
    /// The used bytes of each plane.
    pub planes: Vec<Vec<u8>>,
}

#[derive(Debug)]
struct Buf {
    planes: Vec<Vec<u8>>,
    queued: bool,
    order: u64,
}

type Script = Box<dyn FnMut(&Frame) -> Reply>;

pub struct StandIn {
    pub caps: Caps,
    pub capture_formats: Vec<Fourcc>,
    pub output_formats: Vec<Fourcc>,
    /// bytesperline alignment of raw formats (bcm2835-codec-encode: 64 for YU12).
    pub align: u32,
    /// The OUTPUT size the driver sets, whatever was asked.
    pub force_size: Option<(u32, u32)>,
    /// `V4L2_BUF_FLAG_TIMESTAMP_*` on dequeued buffers.
    pub timestamp_flag: u32,
    /// `(operation prefix, errno)`: the operation fails with that errno.
    pub fail: Vec<(&'static str, i32)>,
    pub script: Script,
    pub log: Vec<String>,
    pub frames: Vec<Frame>,
    pub max_in_flight: usize,
    formats: [Option<Format>; 2],
    bufs: [Vec<Buf>; 2],
    pending: Vec<(u64, i64, Out)>,
    output_done: Vec<(u64, usize, i64, u32)>,
    tick: u64,
    order: u64,
    streaming: [bool; 2],
}

fn qi(q: Queue) -> usize {
    match q {
        Queue::Output => 0,
        Queue::Capture => 1,
    }
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

impl StandIn {
    /// Like the Pi 4's `/dev/video11` (bcm2835-codec-encode): multi-planar M2M, H.264 out,
    /// YU12/YV12/NV12/NV21/RGB565/YUYV in, YU12 lines aligned to 64 bytes, one buffer plane.
    pub fn pi4(script: Script) -> StandIn {
        StandIn {
            caps: Caps {
                driver: "bcm2835-codec".into(),
                card: "bcm2835-codec-encode".into(),
                bus: "platform:bcm2835-codec".into(),
                caps: 0x0420_4000,
            },
            capture_formats: vec![Fourcc::H264],
            output_formats: vec![
                Fourcc::YU12,
                Fourcc(*b"YV12"),
                Fourcc::NV12,
                Fourcc(*b"NV21"),
                Fourcc(*b"RGBP"),
                Fourcc(*b"YUYV"),
            ],
            align: 64,
            force_size: None,
            timestamp_flag: flags::TIMESTAMP_COPY,
            fail: Vec::new(),
            script,
            log: Vec::new(),
            frames: Vec::new(),
            max_in_flight: 0,
            formats: [None, None],
            bufs: [Vec::new(), Vec::new()],
            pending: Vec::new(),
            output_done: Vec::new(),
            tick: 0,
            order: 0,
            streaming: [false, false],
        }
    }

    /// A generic single-planar M2M encoder (Hantro/Rockchip style) taking NV12 only.
    pub fn single_planar_nv12(script: Script) -> StandIn {
        let mut s = StandIn::pi4(script);
        s.caps = Caps {
            driver: "hantro-vpu".into(),
            card: "rockchip,rk3288-vpu-enc".into(),
            bus: "platform:hantro".into(),
            caps: 0x0400_8000,
        };
        s.output_formats = vec![Fourcc::NV12];
        s.align = 16;
        s
    }

    fn check(&mut self, op: &str) -> io::Result<()> {
        self.log.push(op.to_string());
        match self.fail.iter().find(|(p, _)| op.starts_with(p)) {
            Some(&(_, e)) => Err(errno(e)),
            None => Ok(()),
        }
    }

    fn raw_format(&self, fourcc: Fourcc, w: u32, h: u32) -> Format {
        let bpl = w.div_ceil(self.align) * self.align;
        let ch = h.div_ceil(2);
        let planes = match fourcc {
            Fourcc::YM12 => vec![
                (bpl, bpl * h),
                (bpl / 2, bpl / 2 * ch),
                (bpl / 2, bpl / 2 * ch),
            ],
            Fourcc::NM12 => vec![(bpl, bpl * h), (bpl, bpl * ch)],
            _ => vec![(bpl, bpl * h + bpl * ch)],
        };
        Format {
            width: w,
            height: h,
            fourcc,
            planes: planes
                .into_iter()
                .map(|(bytesperline, sizeimage)| PlaneFormat {
                    bytesperline,
                    sizeimage,
                })
                .collect(),
        }
    }

    fn in_flight(&self) -> usize {
        self.bufs[0].iter().filter(|b| b.queued).count()
    }
}

impl Backend for StandIn {
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
        if self.streaming.iter().any(|s| *s) {
            return Err(errno(nix::libc::EBUSY));
        }
        // Like V4L2 drivers: an unsupported format is replaced, not refused.
        let got = match queue {
            Queue::Capture => {
                let fourcc = if self.capture_formats.contains(&want.fourcc) {
                    want.fourcc
                } else {
                    self.capture_formats[0]
                };
                let asked = want.planes.first().map_or(0, |p| p.sizeimage);
                Format {
                    width: want.width,
                    height: want.height,
                    fourcc,
                    planes: vec![PlaneFormat {
                        bytesperline: 0,
                        sizeimage: asked.max(512 << 10),
                    }],
                }
            }
            Queue::Output => {
                let fourcc = if self.output_formats.contains(&want.fourcc) {
                    want.fourcc
                } else {
                    self.output_formats[0]
                };
                let (w, h) = self.force_size.unwrap_or((want.width, want.height));
                self.raw_format(fourcc, w, h)
            }
        };
        self.formats[qi(queue)] = Some(got.clone());
        Ok(got)
    }

    fn set_frame_interval(&mut self, num: u32, den: u32) -> io::Result<()> {
        self.check(&format!("S_PARM {num}/{den}"))
    }

    fn set_control(&mut self, id: u32, value: i32) -> io::Result<()> {
        self.check(&format!("S_CTRL {id:#x}={value}"))
    }

    fn allocate(&mut self, queue: Queue, count: u32) -> io::Result<Vec<Vec<usize>>> {
        self.check(&format!("REQBUFS {queue} {count}"))?;
        let Some(f) = &self.formats[qi(queue)] else {
            return Err(errno(nix::libc::EINVAL));
        };
        let lengths: Vec<usize> = f.planes.iter().map(|p| p.sizeimage as usize).collect();
        self.bufs[qi(queue)] = (0..count.clamp(1, 8))
            .map(|_| Buf {
                planes: lengths.iter().map(|&n| vec![0; n]).collect(),
                queued: false,
                order: 0,
            })
            .collect();
        Ok(vec![lengths; count.clamp(1, 8) as usize])
    }

    fn plane(&self, queue: Queue, index: usize, plane: usize) -> Option<&[u8]> {
        let b = self.bufs[qi(queue)].get(index)?;
        if b.queued {
            return None;
        }
        b.planes.get(plane).map(Vec::as_slice)
    }

    fn plane_mut(&mut self, queue: Queue, index: usize, plane: usize) -> Option<&mut [u8]> {
        let b = self.bufs[qi(queue)].get_mut(index)?;
        if b.queued {
            return None;
        }
        b.planes.get_mut(plane).map(Vec::as_mut_slice)
    }

    fn queue(
        &mut self,
        queue: Queue,
        index: usize,
        bytesused: &[u32],
        timestamp_us: i64,
    ) -> io::Result<()> {
        self.check(&format!("QBUF {queue} {index}"))?;
        self.order += 1;
        let order = self.order;
        let b = self.bufs[qi(queue)]
            .get_mut(index)
            .ok_or_else(|| errno(nix::libc::EINVAL))?;
        assert!(!b.queued, "QBUF of a buffer the driver already owns");
        b.queued = true;
        b.order = order;
        if queue == Queue::Capture {
            return Ok(());
        }
        let mut planes = Vec::new();
        for (p, &used) in b.planes.iter().zip(bytesused) {
            assert!(used as usize <= p.len(), "bytesused beyond the plane");
            planes.push(p[..used as usize].to_vec());
        }
        let frame = Frame {
            n: self.frames.len(),
            ts: timestamp_us,
            planes,
        };
        let reply = (self.script)(&frame);
        self.frames.push(frame);
        self.max_in_flight = self.max_in_flight.max(self.in_flight());
        for o in reply.outs {
            self.pending.push((self.tick + o.after, timestamp_us, o));
        }
        self.output_done.push((
            self.tick + reply.output_after,
            index,
            timestamp_us,
            reply.output_flags,
        ));
        Ok(())
    }

    fn dequeue(&mut self, queue: Queue) -> io::Result<Option<Dequeued>> {
        self.check(&format!("DQBUF {queue}"))?;
        if !self.streaming[qi(queue)] {
            return Err(errno(nix::libc::EINVAL));
        }
        let tick = self.tick;
        match queue {
            Queue::Output => {
                let Some(pos) = self.output_done.iter().position(|o| o.0 <= tick) else {
                    return Ok(None);
                };
                let (_, index, ts, fl) = self.output_done.remove(pos);
                self.bufs[0][index].queued = false;
                Ok(Some(Dequeued {
                    index,
                    planes: vec![DequeuedPlane::default()],
                    flags: fl | self.timestamp_flag,
                    timestamp_us: ts,
                    sequence: 0,
                }))
            }
            Queue::Capture => {
                let Some(pos) = self.pending.iter().position(|p| p.0 <= tick) else {
                    return Ok(None);
                };
                // FIFO: the buffer queued longest ago.
                let Some(index) = self.bufs[1]
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.queued)
                    .min_by_key(|(_, b)| b.order)
                    .map(|(i, _)| i)
                else {
                    return Ok(None);
                };
                let (_, frame_ts, o) = self.pending.remove(pos);
                let buf = &mut self.bufs[1][index];
                let n = o.data.len().min(buf.planes[0].len());
                buf.planes[0][..n].copy_from_slice(&o.data[..n]);
                buf.queued = false;
                Ok(Some(Dequeued {
                    index,
                    planes: vec![DequeuedPlane {
                        bytesused: o.bytesused.unwrap_or(n as u32),
                        data_offset: 0,
                    }],
                    flags: o.flags | self.timestamp_flag,
                    timestamp_us: match o.ts {
                        Ts::Copy => frame_ts,
                        Ts::Fixed(t) => t,
                    },
                    sequence: 0,
                }))
            }
        }
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<Ready> {
        self.tick += 1;
        if self.fail.iter().any(|(p, _)| *p == "POLLERR") {
            return Ok(Ready {
                error: true,
                ..Ready::default()
            });
        }
        if self.pending.is_empty() && self.output_done.is_empty() {
            // Nothing will ever come: let real time pass so the caller's deadline does.
            std::thread::sleep(timeout.min(Duration::from_millis(2)));
        }
        let tick = self.tick;
        Ok(Ready {
            capture: self.pending.iter().any(|p| p.0 <= tick),
            output: self.output_done.iter().any(|o| o.0 <= tick),
            ..Ready::default()
        })
    }

    fn stream(&mut self, queue: Queue, on: bool) -> io::Result<()> {
        self.check(&format!(
            "{} {queue}",
            if on { "STREAMON" } else { "STREAMOFF" }
        ))?;
        self.streaming[qi(queue)] = on;
        if !on {
            for b in &mut self.bufs[qi(queue)] {
                b.queued = false;
            }
            match queue {
                Queue::Output => self.output_done.clear(),
                Queue::Capture => self.pending.clear(),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::encoder::{Config, Encoded, Encoder, Error, Note, CID_FORCE_KEY_FRAME};
    use crate::layout::Picture;

    const SPS_PPS: &[u8] = &[
        0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0x8c, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80,
    ];
    const IDR: &[u8] = &[0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00, 0x33];
    const P: &[u8] = &[0, 0, 0, 1, 0x41, 0x9a, 0x02, 0x03];

    /// A 48x32 I420 picture (tight strides): Y = row number, U = 100 + row, V = 200 + row.
    struct Pic {
        y: Vec<u8>,
        u: Vec<u8>,
        v: Vec<u8>,
    }

    const W: u32 = 48;
    const H: u32 = 32;

    fn pic() -> Pic {
        let (w, h) = (W as usize, H as usize);
        Pic {
            y: (0..w * h).map(|i| (i / w) as u8).collect(),
            u: (0..w * h / 4).map(|i| 100 + (i / (w / 2)) as u8).collect(),
            v: (0..w * h / 4).map(|i| 200 + (i / (w / 2)) as u8).collect(),
        }
    }

    impl Pic {
        fn picture(&self) -> Picture<'_> {
            Picture {
                width: W,
                height: H,
                y: &self.y,
                u: &self.u,
                v: &self.v,
                y_stride: W as usize,
                uv_stride: W as usize / 2,
            }
        }
    }

    fn config() -> Config {
        Config {
            frame_interval: Some((1, 30)),
            // Long enough that copying a picture in a debug build under qemu-aarch64 on a busy
            // machine does not use it up (40 ms did, once, in `build-aarch64 --test`); only the
            // silent-encoder test waits it out.
            timeout: Duration::from_millis(400),
            ..Config::new(W, H)
        }
    }

    fn open(s: &mut StandIn) -> Result<Encoder<&mut StandIn>, Error> {
        Encoder::new(s, "/dev/video11".into(), &config())
    }

    /// Headers in a buffer of their own first (as bcm2835-codec returns its codec config, with
    /// a timestamp of its own), then the IDR; P frames after that, each one poll later.
    fn pi4_script() -> Script {
        Box::new(|f: &Frame| Reply {
            outs: if f.n == 0 {
                vec![
                    Out {
                        ts: Ts::Fixed(0),
                        ..out(1, SPS_PPS)
                    },
                    Out {
                        flags: flags::KEYFRAME,
                        ..out(2, IDR)
                    },
                ]
            } else {
                vec![out(1, P)]
            },
            output_after: 1,
            output_flags: 0,
        })
    }

    fn pos(log: &[String], prefix: &str) -> usize {
        log.iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} not in {log:#?}"))
    }

    #[test]
    fn a_pi4_like_encoder_returns_each_frames_access_unit_before_the_next_is_queued() {
        // Stand-in for bcm2835-codec-encode (see the module docs for why a stand-in).
        let mut s = StandIn::pi4(pi4_script());
        let p = pic();
        let mut enc = open(&mut s).unwrap();
        assert_eq!(enc.input_format(), Fourcc::YU12);
        assert!(enc.take_notes().is_empty());
        let first = enc.encode(&p.picture(), 1_000_000).unwrap();
        let mut expect = SPS_PPS.to_vec();
        expect.extend_from_slice(IDR);
        assert_eq!(
            first,
            Encoded {
                data: expect,
                keyframe: true,
                timestamp_us: 1_000_000
            }
        );
        // Camera timestamps that repeat or go back still queue strictly increasing ones.
        let second = enc.encode(&p.picture(), 1_000_000).unwrap();
        assert_eq!(
            (second.data.as_slice(), second.timestamp_us),
            (P, 1_000_001)
        );
        let third = enc.encode(&p.picture(), 900_000).unwrap();
        assert_eq!(third.timestamp_us, 1_000_002);
        assert!(enc.take_notes().is_empty());
        drop(enc);

        // Setup order of the stateful encoder interface; IDR asked for before the first frame.
        let log = &s.log;
        assert!(pos(log, "S_FMT CAPTURE H264 48x32") < pos(log, "S_FMT OUTPUT YU12 48x32"));
        assert!(pos(log, "S_FMT OUTPUT") < pos(log, "S_PARM 1/30"));
        assert!(pos(log, "REQBUFS CAPTURE") < pos(log, "STREAMON CAPTURE"));
        assert!(pos(log, "STREAMON OUTPUT") < pos(log, "S_CTRL 0x9909e5=1"));
        assert!(pos(log, "S_CTRL 0x9909e5=1") < pos(log, "QBUF OUTPUT"));
        assert_eq!(
            log.iter()
                .filter(|l| l.starts_with("S_CTRL 0x9909e5"))
                .count(),
            1
        );
        // One frame in flight at a time: no frame of added latency.
        assert_eq!(s.max_in_flight, 1);
        // The frame as the driver saw it: lines 64 bytes apart (bcm2835's YU12 alignment),
        // chroma at half that stride after the luma.
        let f = &s.frames[0];
        assert_eq!(f.ts, 1_000_000);
        let buf = &f.planes[0];
        assert_eq!(buf.len(), 64 * 32 + 32 * 16 * 2);
        assert_eq!(&buf[64 * 5..64 * 5 + 48], &[5u8; 48][..]);
        assert_eq!(buf[64 * 32 + 32 * 3], 103);
        assert_eq!(buf[64 * 32 + 32 * 16 + 32 * 15 + 23], 215);
        // Dropping the encoder stops both queues.
        assert!(pos(&s.log, "STREAMOFF OUTPUT") < pos(&s.log, "STREAMOFF CAPTURE"));
    }

    #[test]
    fn a_single_planar_driver_taking_only_nv12_gets_interleaved_chroma() {
        // Stand-in for a single-planar M2M encoder (V4L2_CAP_VIDEO_M2M), e.g. Hantro.
        let mut s = StandIn::single_planar_nv12(Box::new(|_| Reply {
            outs: vec![out(0, IDR)],
            ..Reply::default()
        }));
        let p = pic();
        let mut enc = open(&mut s).unwrap();
        assert_eq!(enc.input_format(), Fourcc::NV12);
        assert_eq!(enc.encode(&p.picture(), 5).unwrap().data, IDR);
        drop(enc);
        let buf = &s.frames[0].planes[0];
        assert_eq!(buf.len(), 48 * 32 + 48 * 16);
        assert_eq!(&buf[48 * 32 + 48 * 2..][..4], &[102, 202, 102, 202]);
    }

    #[test]
    fn a_slow_frame_is_waited_for_and_a_silent_encoder_times_out_naming_the_node() {
        // Stand-in: frame 0 comes back after five polls; frame 1 never does.
        let mut s = StandIn::pi4(Box::new(|f| Reply {
            outs: if f.n == 0 { vec![out(5, IDR)] } else { vec![] },
            output_after: 5,
            output_flags: 0,
        }));
        let p = pic();
        let mut enc = open(&mut s).unwrap();
        assert_eq!(enc.encode(&p.picture(), 10).unwrap().data, IDR);
        let e = enc.encode(&p.picture(), 20).unwrap_err();
        assert!(!e.is_transient());
        let msg = e.to_string();
        assert!(
            msg.starts_with("/dev/video11: no encoded frame came back within 400 ms"),
            "{msg}"
        );
        assert!(msg.contains("will be reopened"), "{msg}");
    }

    #[test]
    fn a_buffer_flagged_as_an_error_loses_one_frame_and_asks_for_an_idr() {
        // Stand-in: frame 1's CAPTURE buffer and frame 3's OUTPUT buffer carry
        // V4L2_BUF_FLAG_ERROR.
        let mut s = StandIn::pi4(Box::new(|f| match f.n {
            1 => Reply {
                outs: vec![Out {
                    flags: flags::ERROR,
                    ..out(1, P)
                }],
                ..Reply::default()
            },
            3 => Reply {
                output_after: 1,
                output_flags: flags::ERROR,
                ..Reply::default()
            },
            _ => Reply {
                outs: vec![out(1, if f.n == 0 { IDR } else { P })],
                ..Reply::default()
            },
        }));
        let p = pic();
        let mut enc = open(&mut s).unwrap();
        enc.encode(&p.picture(), 1).unwrap();
        let e = enc.encode(&p.picture(), 2).unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(
            e.to_string()
                .contains("flagged the CAPTURE buffer as corrupt (V4L2_BUF_FLAG_ERROR)"),
            "{e}"
        );
        enc.encode(&p.picture(), 3).unwrap();
        let e = enc.encode(&p.picture(), 4).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Corrupt {
                    queue: Queue::Output,
                    ..
                }
            ),
            "{e}"
        );
        enc.encode(&p.picture(), 5).unwrap();
        drop(enc);
        // An IDR was asked for at the start and before each frame after a lost one.
        let idr_before: Vec<usize> = s
            .log
            .iter()
            .filter(|l| l.starts_with("S_CTRL 0x9909e5") || l.starts_with("QBUF OUTPUT"))
            .map(|l| usize::from(l.starts_with("S_CTRL")))
            .collect();
        assert_eq!(idr_before, [1, 0, 0, 1, 0, 0, 1, 0]);
    }

    #[test]
    fn late_pictures_for_earlier_frames_are_dropped_and_unstamped_drivers_match_by_order() {
        // Stand-in: with frame 2, a picture stamped with frame 1's time turns up first (a
        // duplicate or late buffer); only frame 2's own is returned for it.
        let mut s = StandIn::pi4(Box::new(|f| Reply {
            outs: if f.n == 2 {
                vec![
                    Out {
                        ts: Ts::Fixed(f.ts - 100),
                        ..out(0, IDR)
                    },
                    out(1, P),
                ]
            } else {
                vec![out(0, if f.n == 0 { IDR } else { P })]
            },
            ..Reply::default()
        }));
        let p = pic();
        let mut enc = open(&mut s).unwrap();
        enc.encode(&p.picture(), 100).unwrap();
        enc.encode(&p.picture(), 200).unwrap();
        let third = enc.encode(&p.picture(), 300).unwrap();
        assert_eq!((third.data.as_slice(), third.timestamp_us), (P, 300));
        assert_eq!(
            enc.take_notes(),
            [Note::StaleDropped {
                timestamp_us: 200,
                bytes: IDR.len()
            }]
        );
        drop(enc);

        // Stand-in for a driver that stamps CAPTURE buffers with its own clock
        // (TIMESTAMP_MONOTONIC, not COPY): buffers are matched by order, noted once.
        let mut s = StandIn::pi4(Box::new(|f| Reply {
            outs: vec![Out {
                ts: Ts::Fixed(77_000 + f.n as i64),
                ..out(1, P)
            }],
            ..Reply::default()
        }));
        s.timestamp_flag = 0x2000;
        let mut enc = open(&mut s).unwrap();
        for t in [10, 20, 30] {
            assert_eq!(enc.encode(&p.picture(), t).unwrap().timestamp_us, t);
        }
        assert_eq!(enc.take_notes(), [Note::TimestampsNotCopied]);
    }

    #[test]
    fn empty_overlong_and_garbage_buffers_are_skipped_or_lose_one_frame() {
        // Stand-in: an empty buffer before frame 0's picture; frame 1's buffer claims more bytes
        // than it holds; frame 2's holds no H.264; frame 3 is fine.
        let mut s = StandIn::pi4(Box::new(|f| Reply {
            outs: match f.n {
                0 => vec![out(0, &[]), out(1, IDR)],
                1 => vec![Out {
                    bytesused: Some(10 << 20),
                    ..out(0, P)
                }],
                2 => vec![out(0, &[0xde, 0xad, 0xbe, 0xef])],
                _ => vec![out(0, P)],
            },
            ..Reply::default()
        }));
        let p = pic();
        let mut enc = open(&mut s).unwrap();
        assert_eq!(enc.encode(&p.picture(), 1).unwrap().data, IDR);
        assert_eq!(enc.take_notes(), [Note::EmptyBuffer]);
        let e = enc.encode(&p.picture(), 2).unwrap_err();
        assert!(
            e.is_transient() && e.to_string().contains("claims 10485760 bytes"),
            "{e}"
        );
        let e = enc.encode(&p.picture(), 3).unwrap_err();
        assert!(
            e.is_transient()
                && e.to_string()
                    .contains("4 bytes without an H.264 start code"),
            "{e}"
        );
        assert_eq!(enc.encode(&p.picture(), 4).unwrap().data, P);
        // Every CAPTURE buffer went back to the driver, whatever it held.
        drop(enc);
        let qbufs = s
            .log
            .iter()
            .filter(|l| l.starts_with("QBUF CAPTURE"))
            .count();
        let dqbufs_with_data = 5;
        assert_eq!(qbufs, 3 + dqbufs_with_data);
    }

    fn idle() -> Script {
        Box::new(|_| Reply::default())
    }

    #[test]
    fn nodes_that_are_not_h264_encoders_or_refuse_the_format_say_what_and_what_to_do() {
        // Stand-ins: a camera, a decoder, an encoder without a usable raw format, one that
        // changes the size, and failing ioctls.
        let err = |s: &mut StandIn| open(s).unwrap_err().to_string();
        let mut s = StandIn::pi4(idle());
        s.caps.caps = 0x0420_0001;
        s.caps.card = "USB Camera".into();
        let e = err(&mut s);
        assert!(
            e.starts_with("/dev/video11 (USB Camera) is not a memory-to-memory H.264 encoder"),
            "{e}"
        );

        let mut s = StandIn::pi4(idle());
        s.caps.card = "bcm2835-codec-decode".into();
        s.capture_formats = vec![Fourcc::YU12, Fourcc::NV12];
        let e = err(&mut s);
        assert!(
            e.contains("its CAPTURE queue gives YU12, NV12, not H264"),
            "{e}"
        );

        let mut s = StandIn::pi4(idle());
        s.output_formats = vec![Fourcc(*b"YUYV"), Fourcc(*b"RGB3")];
        let e = err(&mut s);
        assert!(
            e.contains("takes none of YU12, NV12, YM12, NM12 (it offers YUYV, RGB3)"),
            "{e}"
        );

        let mut s = StandIn::pi4(idle());
        s.force_size = Some((64, 48));
        let e = err(&mut s);
        assert!(
            e.contains("asked for YU12 48x32 on the OUTPUT queue, the driver set YU12 64x48")
                && e.contains("size=1280x720"),
            "{e}"
        );

        let mut s = StandIn::pi4(idle());
        s.fail.push(("S_FMT OUTPUT", nix::libc::EINVAL));
        let e = err(&mut s);
        assert!(
            e.starts_with(
                "/dev/video11: VIDIOC_S_FMT on the OUTPUT queue (YU12 48x32) failed: invalid argument"
            ),
            "{e}"
        );

        let mut s = StandIn::pi4(idle());
        s.fail.push(("REQBUFS CAPTURE", nix::libc::ENOMEM));
        let e = err(&mut s);
        assert!(
            e.contains("requesting 3 CAPTURE buffers") && e.contains("CMA"),
            "{e}"
        );

        // A refused S_PARM is a note, not an error.
        let mut s = StandIn::pi4(idle());
        s.fail.push(("S_PARM", nix::libc::ENOTTY));
        let mut enc = open(&mut s).unwrap();
        let notes = enc.take_notes();
        assert!(
            matches!(&notes[..], [Note::FrameIntervalNotSet { error }] if error.contains("not supported")),
            "{notes:?}"
        );
    }

    #[test]
    fn eio_pollerr_and_busy_devices_fail_the_run() {
        // Stand-in: the driver fails DQBUF with EIO once streaming; another reports POLLERR;
        // a third is busy at STREAMON.
        let p = pic();
        let mut s = StandIn::pi4(Box::new(|_| Reply {
            outs: vec![out(1, IDR)],
            ..Reply::default()
        }));
        s.fail.push(("DQBUF CAPTURE", nix::libc::EIO));
        let mut enc = open(&mut s).unwrap();
        let e = enc.encode(&p.picture(), 1).unwrap_err();
        assert!(!e.is_transient());
        assert!(
            e.to_string().starts_with(
                "/dev/video11: VIDIOC_DQBUF on the CAPTURE queue failed: I/O error: the encoder hardware"
            ),
            "{e}"
        );
        drop(enc);

        let mut s = StandIn::pi4(idle());
        s.fail.push(("POLLERR", 0));
        let mut enc = open(&mut s).unwrap();
        let e = enc.encode(&p.picture(), 1).unwrap_err();
        assert!(matches!(e, Error::Device { .. }), "{e}");
        drop(enc);

        let mut s = StandIn::pi4(idle());
        s.fail.push(("STREAMON", nix::libc::EBUSY));
        let mut enc = open(&mut s).unwrap();
        let e = enc.encode(&p.picture(), 1).unwrap_err().to_string();
        assert!(
            e.contains("STREAMON on the CAPTURE queue failed: device busy"),
            "{e}"
        );
    }

    #[test]
    fn a_refused_idr_request_is_noted_once_and_idr_can_be_asked_for() {
        // Stand-in: a driver without V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME.
        let p = pic();
        let mut s = StandIn::pi4(Box::new(|_| Reply {
            outs: vec![out(0, P)],
            ..Reply::default()
        }));
        s.fail.push(("S_CTRL 0x9909e5", nix::libc::EINVAL));
        let mut enc = open(&mut s).unwrap();
        enc.encode(&p.picture(), 1).unwrap();
        enc.request_idr();
        enc.encode(&p.picture(), 2).unwrap();
        let notes = enc.take_notes();
        assert!(matches!(&notes[..], [Note::IdrRefused { .. }]), "{notes:?}");
        assert!(enc.set_control(CID_FORCE_KEY_FRAME, 1).is_err());
        let e = enc
            .set_control(0x0099_09cf, 1 << 40)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not fit"), "{e}");
        drop(enc);
        assert_eq!(
            s.log
                .iter()
                .filter(|l| l.starts_with("S_CTRL 0x9909e5"))
                .count(),
            3
        );
    }

    #[test]
    fn a_picture_of_the_wrong_size_is_refused_before_anything_is_queued() {
        let mut s = StandIn::pi4(idle());
        let mut enc = open(&mut s).unwrap();
        let y = vec![0u8; 16];
        let small = Picture {
            width: 4,
            height: 4,
            y: &y,
            u: &y,
            v: &y,
            y_stride: 4,
            uv_stride: 2,
        };
        let e = enc.encode(&small, 1).unwrap_err().to_string();
        assert!(
            e.contains("the picture is 4x4, the encoder was set up for 48x32"),
            "{e}"
        );
        drop(enc);
        assert!(!s.log.iter().any(|l| l.starts_with("QBUF OUTPUT")));
    }
}
