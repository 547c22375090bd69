//! Dequeued V4L2 buffers → timed frames: buffer checks, H.264 buffers → access units, and
//! the capture timestamps mapped to the 90 kHz media timeline and to wall-clock time.
//!
//! Pure (time and buffers are inputs), so the tests drive it with stand-in buffers: there is
//! no camera on these machines.
//!
//! # Timestamps
//!
//! V4L2 drivers stamp each buffer with the `CLOCK_MONOTONIC` time of capture
//! (`V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC`; UVC takes it at the first USB packet of the frame).
//! [`Timeline`] lays frames on a grid of the measured frame duration — MSE wants each frame to
//! start exactly where the previous one ended — and steers the grid towards the buffer
//! timestamps by half the error per frame, so media time follows the camera's real rate (a
//! UVC camera drops to 15 fps in low light) without ever going backwards. An outage of more
//! than a second leaves a gap as long as the outage. The wall-clock capture time is the buffer
//! timestamp plus (`CLOCK_REALTIME` − `CLOCK_MONOTONIC`) read when the buffer is dequeued.
//!
//! A buffer whose timestamp is missing (`TIMESTAMP_UNKNOWN`), more than 5 s from its arrival,
//! or earlier than the previous buffer's is stamped with its arrival time instead, and the
//! problem is reported once per run.

use bytes::Bytes;
use media::h264::{self, nal_type, AccessUnit};

/// `V4L2_BUF_FLAG_ERROR`: the driver says the data is corrupt.
pub const FLAG_ERROR: u32 = 0x0000_0040;
pub const FLAG_TIMESTAMP_MASK: u32 = 0x0000_e000;
pub const FLAG_TIMESTAMP_MONOTONIC: u32 = 0x0000_2000;
pub const FLAG_TIMESTAMP_COPY: u32 = 0x0000_4000;

/// What `VIDIOC_DQBUF` said about a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferMeta {
    pub bytesused: u32,
    /// Size of the mapped buffer.
    pub length: usize,
    pub flags: u32,
    /// `timestamp` in µs (seconds × 10⁶ + microseconds).
    pub timestamp_us: i64,
    pub sequence: u32,
}

/// Why a buffer was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BufferProblem {
    #[error("the driver flagged the buffer as corrupt (V4L2_BUF_FLAG_ERROR)")]
    Corrupt,
    #[error("empty buffer (bytesused 0)")]
    Empty,
    #[error("bytesused {bytesused} exceeds the {length}-byte buffer")]
    Overrun { bytesused: u32, length: usize },
    #[error("partial frame: {got} bytes, a {width}x{height} frame needs {want}")]
    Partial {
        got: usize,
        want: usize,
        width: u32,
        height: u32,
    },
    #[error("no H.264 start code in the buffer")]
    NotAnnexB,
    #[error("H.264 buffer without a picture or parameter sets")]
    NoPicture,
}

/// Checks a dequeued buffer; returns how many bytes of it hold data.
pub fn check_buffer(meta: &BufferMeta) -> Result<usize, BufferProblem> {
    if meta.flags & FLAG_ERROR != 0 {
        return Err(BufferProblem::Corrupt);
    }
    if meta.bytesused == 0 {
        return Err(BufferProblem::Empty);
    }
    let used = usize::try_from(meta.bytesused).unwrap_or(usize::MAX);
    if used > meta.length {
        return Err(BufferProblem::Overrun {
            bytesused: meta.bytesused,
            length: meta.length,
        });
    }
    Ok(used)
}

/// Like [`check_buffer`] for a raw frame of `want` bytes at `width`×`height`.
pub fn check_raw_buffer(
    meta: &BufferMeta,
    want: usize,
    width: u32,
    height: u32,
) -> Result<usize, BufferProblem> {
    let used = check_buffer(meta)?;
    if used < want {
        return Err(BufferProblem::Partial {
            got: used,
            want,
            width,
            height,
        });
    }
    Ok(used)
}

/// H.264 buffers (one access unit each, as UVC cameras and V4L2 encoders deliver them) →
/// access units. A buffer holding only SPS/PPS (encoders that send headers separately) is
/// kept and put in front of the next picture.
#[derive(Debug, Default)]
pub struct H264Buffers {
    params: Vec<Bytes>,
    /// NAL units dropped because they were empty or had the forbidden bit set.
    pub bad_nals: u64,
}

impl H264Buffers {
    pub fn new() -> H264Buffers {
        H264Buffers::default()
    }

    /// The access unit in `data`, or `Ok(None)` for a headers-only buffer.
    pub fn push(&mut self, data: &[u8]) -> Result<Option<AccessUnit>, BufferProblem> {
        let nals = media::annexb::split_annexb(data);
        if nals.is_empty() {
            return Err(BufferProblem::NotAnnexB);
        }
        let before = nals.len();
        let nals: Vec<Bytes> = nals
            .into_iter()
            .filter(|n| n.first().is_some_and(|h| h & 0x80 == 0))
            .collect();
        self.bad_nals += (before - nals.len()) as u64;
        let has_picture = nals.iter().any(|n| h264::is_vcl(h264::nal_type(n)));
        if !has_picture {
            let params: Vec<Bytes> = nals
                .into_iter()
                .filter(|n| matches!(h264::nal_type(n), nal_type::SPS | nal_type::PPS))
                .collect();
            if params.is_empty() {
                return Err(BufferProblem::NoPicture);
            }
            self.params = params;
            return Ok(None);
        }
        let mut nals = nals;
        let stashed = std::mem::take(&mut self.params);
        if !stashed.is_empty() && !nals.iter().any(|n| h264::nal_type(n) == nal_type::SPS) {
            let mut with = stashed;
            with.append(&mut nals);
            nals = with;
        }
        Ok(Some(AccessUnit::from_nals(nals)))
    }
}

/// A frame's place in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub dts_90k: u64,
    pub duration_90k: u32,
    pub capture_unix_us: u64,
    /// Frames the driver dropped before this one (gap in `sequence`).
    pub dropped: u32,
}

/// Something about a run's timestamps worth one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeNote {
    /// Buffer timestamps are missing or implausible: arrival times are used.
    UsingArrival,
    /// A buffer's timestamp was earlier than the previous one's.
    WentBackwards { by_us: i64 },
    /// More than a second without frames: the timeline jumps (a gap).
    Gap { ms: u64 },
}

const HZ: i64 = 90_000;
const MIN_DUR_90K: i64 = 750;
const MAX_DUR_90K: i64 = 90_000;
const DEFAULT_DUR_90K: i64 = 3_000;
/// Buffer timestamps further than this from arrival are not believed.
const PLAUSIBLE_US: i64 = 5_000_000;
/// A grid this far behind the timestamps jumps instead of stretching one frame.
const GAP_90K: i64 = HZ;

/// Buffer timestamps → media timeline. See the module docs.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Monotonic µs that maps to media time 0.
    origin_us: Option<i64>,
    next_90k: u64,
    last_ts_us: Option<i64>,
    est_dur_90k: i64,
    next_sequence: Option<u32>,
    use_arrival: bool,
}

impl Timeline {
    /// `nominal_90k`: the negotiated frame interval, the first estimate of the duration.
    pub fn new(nominal_90k: Option<u32>) -> Timeline {
        Timeline {
            origin_us: None,
            next_90k: 0,
            last_ts_us: None,
            est_dur_90k: nominal_90k.map_or(DEFAULT_DUR_90K, i64::from),
            next_sequence: None,
            use_arrival: false,
        }
    }

    /// Stamps one buffer. `arrival_us` is `CLOCK_MONOTONIC` at dequeue, `unix_offset_us` is
    /// `CLOCK_REALTIME − CLOCK_MONOTONIC` then. Returns the stamp and, at most once per kind
    /// and run for the first two, a note to log.
    pub fn stamp(
        &mut self,
        meta: &BufferMeta,
        arrival_us: i64,
        unix_offset_us: i64,
    ) -> (Stamp, Option<TimeNote>) {
        let mut note = None;
        let dropped = match self.next_sequence {
            Some(n) => meta.sequence.wrapping_sub(n).min(1000),
            None => 0,
        };
        self.next_sequence = Some(meta.sequence.wrapping_add(1));

        let plausible = meta.flags & FLAG_TIMESTAMP_MASK != 0
            && (meta.timestamp_us - arrival_us).abs() <= PLAUSIBLE_US
            && meta.timestamp_us > 0;
        let mut ts = if plausible && !self.use_arrival {
            meta.timestamp_us
        } else {
            if !self.use_arrival {
                self.use_arrival = true;
                note = Some(TimeNote::UsingArrival);
            }
            arrival_us
        };
        if let Some(last) = self.last_ts_us {
            if ts < last {
                // Backwards: believe arrival from now on for this run.
                if !self.use_arrival {
                    self.use_arrival = true;
                    note = Some(TimeNote::WentBackwards { by_us: last - ts });
                }
                ts = arrival_us.max(last);
            }
        }
        let origin = *self.origin_us.get_or_insert(ts);
        let t90 = (ts - origin).max(0) * 9 / 100;
        if let Some(last) = self.last_ts_us {
            let delta = (ts - last) * 9 / 100;
            if (MIN_DUR_90K..=MAX_DUR_90K).contains(&delta) {
                // EWMA, weight 1/8, over the gaps between consecutive frames; a dropped frame
                // counts as a gap of two frames.
                let per_frame = delta / i64::from(dropped + 1);
                if per_frame >= MIN_DUR_90K {
                    self.est_dur_90k += (per_frame - self.est_dur_90k) / 8;
                }
            }
        }
        self.last_ts_us = Some(ts);

        let next = i64::try_from(self.next_90k).unwrap_or(i64::MAX);
        let mut dts = next;
        let err = t90 - next;
        if err > GAP_90K {
            dts = t90;
            note = note.or(Some(TimeNote::Gap {
                ms: u64::try_from(err / 90).unwrap_or(0),
            }));
        }
        // Steer: this frame absorbs half the remaining error.
        let err = t90 - dts;
        let duration = (self.est_dur_90k + err / 2).clamp(MIN_DUR_90K, MAX_DUR_90K);
        let dts = u64::try_from(dts).unwrap_or(0);
        self.next_90k = dts + duration as u64;
        let capture_unix_us = u64::try_from(ts.saturating_add(unix_offset_us)).unwrap_or(0);
        (
            Stamp {
                dts_90k: dts,
                duration_90k: duration as u32,
                capture_unix_us,
                dropped,
            },
            note,
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Stand-in buffers: no V4L2 device exists on these machines, so the tests build the
    //! `VIDIOC_DQBUF` results (bytes, flags, timestamps, sequence numbers) that a UVC camera
    //! or an M2M encoder would return.
    use super::*;

    const MONO: u32 = FLAG_TIMESTAMP_MONOTONIC;
    /// An arbitrary CLOCK_MONOTONIC reading (µs) and the REALTIME offset.
    const T0: i64 = 1_000_000_000;
    const OFF: i64 = 1_700_000_000_000_000;

    fn meta(ts: i64, seq: u32) -> BufferMeta {
        BufferMeta {
            bytesused: 100,
            length: 4096,
            flags: MONO,
            timestamp_us: ts,
            sequence: seq,
        }
    }

    #[test]
    fn corrupt_empty_overrun_and_partial_buffers_are_refused() {
        // Stand-in DQBUF results.
        let mut m = meta(T0, 0);
        m.flags |= FLAG_ERROR;
        assert_eq!(check_buffer(&m), Err(BufferProblem::Corrupt));
        let mut m = meta(T0, 0);
        m.bytesused = 0;
        assert_eq!(check_buffer(&m), Err(BufferProblem::Empty));
        let mut m = meta(T0, 0);
        m.bytesused = 5000;
        assert!(matches!(
            check_buffer(&m),
            Err(BufferProblem::Overrun { .. })
        ));
        let m = meta(T0, 0);
        let e = check_raw_buffer(&m, 640 * 480 * 2, 640, 480).unwrap_err();
        assert!(e.to_string().contains("partial frame: 100 bytes"), "{e}");
        assert_eq!(check_buffer(&m), Ok(100));
    }

    fn annexb(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for n in nals {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(n);
        }
        out
    }

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0x8c, 0x8d, 0x40];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33];
    const P: &[u8] = &[0x41, 0x9a, 0x02, 0x03];

    #[test]
    fn a_headers_only_buffer_is_put_in_front_of_the_next_picture() {
        // Stand-in for an M2M encoder that returns SPS/PPS in a buffer of their own first.
        let mut b = H264Buffers::new();
        assert_eq!(b.push(&annexb(&[SPS, PPS])), Ok(None));
        let au = b.push(&annexb(&[IDR])).unwrap().unwrap();
        assert!(au.is_idr);
        assert_eq!(au.nals.len(), 3);
        assert!(au.sps().is_some() && au.pps().is_some());
        // Used once: the next picture goes as it is.
        let au = b.push(&annexb(&[P])).unwrap().unwrap();
        assert_eq!(au.nals.len(), 1);
        assert!(!au.is_idr);
    }

    #[test]
    fn a_uvc_buffer_with_inline_headers_is_one_access_unit() {
        // Stand-in for a UVC H.264 buffer: AUD, SPS, PPS, IDR in one buffer.
        let mut b = H264Buffers::new();
        let au = b
            .push(&annexb(&[&[0x09, 0xf0], SPS, PPS, IDR]))
            .unwrap()
            .unwrap();
        assert!(au.is_idr && au.sps().is_some());
        assert_eq!(au.nals.len(), 4);
    }

    #[test]
    fn garbage_and_truncated_h264_buffers_are_dropped_or_cleaned() {
        // Stand-in buffers: bytes with no start code, a buffer cut short after its start code,
        // and a picture preceded by a NAL unit with the forbidden bit set.
        let mut b = H264Buffers::new();
        assert_eq!(
            b.push(&[0xde, 0xad, 0xbe, 0xef]),
            Err(BufferProblem::NotAnnexB)
        );
        assert_eq!(b.push(&[0, 0, 0, 1]), Err(BufferProblem::NotAnnexB));
        assert_eq!(
            b.push(&annexb(&[&[0x06, 0x05]])),
            Err(BufferProblem::NoPicture)
        );
        let au = b.push(&annexb(&[&[0xff, 0x01], P])).unwrap().unwrap();
        assert_eq!(au.nals.len(), 1);
        assert_eq!(b.bad_nals, 1);
        // Leading garbage before the first start code is skipped.
        let mut buf = vec![0x12, 0x34];
        buf.extend(annexb(&[P]));
        assert_eq!(b.push(&buf).unwrap().unwrap().nals.len(), 1);
    }

    #[test]
    fn buffer_timestamps_map_to_an_exact_grid_and_to_wall_clock() {
        // Stand-in: a 30 fps camera stamping frames 33 333 µs apart, dequeued 2 ms later.
        let mut tl = Timeline::new(Some(3000));
        let mut stamps = Vec::new();
        for i in 0..10i64 {
            let ts = T0 + i * 33_333;
            let (s, note) = tl.stamp(&meta(ts, i as u32), ts + 2_000, OFF);
            assert_eq!(note, None);
            stamps.push(s);
        }
        assert_eq!(stamps[0].dts_90k, 0);
        assert_eq!(stamps[0].capture_unix_us, (T0 + OFF) as u64);
        for w in stamps.windows(2) {
            assert_eq!(w[1].dts_90k, w[0].dts_90k + u64::from(w[0].duration_90k));
        }
        for (i, s) in stamps.iter().enumerate() {
            let real = i as i64 * 33_333 * 9 / 100;
            assert!(
                (s.dts_90k as i64 - real).abs() <= 2,
                "frame {i}: {} vs {real}",
                s.dts_90k
            );
            assert_eq!(s.capture_unix_us, (T0 + i as i64 * 33_333 + OFF) as u64);
        }
    }

    #[test]
    fn a_camera_slowing_to_15_fps_is_followed_without_gaps() {
        // Stand-in for a UVC camera whose auto-exposure halves the rate in low light.
        let mut tl = Timeline::new(Some(3000));
        let mut ts = T0;
        let mut last = None;
        for i in 0..60u32 {
            ts += if i < 10 { 33_333 } else { 66_667 };
            let (s, note) = tl.stamp(&meta(ts, i), ts + 1_000, OFF);
            assert_eq!(note, None, "frame {i}");
            if let Some(prev) = last {
                let prev: Stamp = prev;
                assert_eq!(
                    s.dts_90k,
                    prev.dts_90k + u64::from(prev.duration_90k),
                    "frame {i}"
                );
            }
            last = Some(s);
        }
        let s = last.unwrap();
        assert!((5_900..=6_100).contains(&s.duration_90k), "{s:?}");
        let real = (ts - T0 - 33_333) * 9 / 100;
        assert!(
            (s.dts_90k as i64 - real).abs() < 3_000,
            "{} vs {real}",
            s.dts_90k
        );
    }

    #[test]
    fn an_outage_leaves_a_gap_and_dropped_frames_are_counted() {
        // Stand-in: sequence numbers jump from 4 to 8 (the driver dropped three frames), then
        // the camera is silent for 3 s.
        let mut tl = Timeline::new(Some(3000));
        for i in 0..5u32 {
            let ts = T0 + i64::from(i) * 33_333;
            tl.stamp(&meta(ts, i), ts, OFF);
        }
        let ts = T0 + 8 * 33_333;
        let (s, _) = tl.stamp(&meta(ts, 8), ts, OFF);
        assert_eq!(s.dropped, 3);
        let ts = ts + 3_000_000;
        let (s, note) = tl.stamp(&meta(ts, 9), ts, OFF);
        assert!(
            matches!(note, Some(TimeNote::Gap { ms }) if ms > 2_500),
            "{note:?}"
        );
        assert_eq!(s.dts_90k as i64, (ts - T0) * 9 / 100);
    }

    #[test]
    fn timestamps_that_go_backwards_never_move_media_time_back() {
        // Stand-in: a buffer stamped 100 ms before its predecessor.
        let mut tl = Timeline::new(Some(3000));
        let (a, _) = tl.stamp(&meta(T0, 0), T0, OFF);
        let (b, _) = tl.stamp(&meta(T0 + 33_333, 1), T0 + 33_333, OFF);
        let (c, note) = tl.stamp(&meta(T0 - 66_667, 2), T0 + 66_666, OFF);
        assert!(
            matches!(note, Some(TimeNote::WentBackwards { by_us: 100_000 })),
            "{note:?}"
        );
        assert!(b.dts_90k > a.dts_90k && c.dts_90k == b.dts_90k + u64::from(b.duration_90k));
        // Later frames follow arrival; the note is not repeated.
        let (d, note) = tl.stamp(&meta(T0 - 33_333, 3), T0 + 100_000, OFF);
        assert_eq!(note, None);
        assert_eq!(d.dts_90k, c.dts_90k + u64::from(c.duration_90k));
    }

    #[test]
    fn missing_or_implausible_timestamps_fall_back_to_arrival_once() {
        // Stand-in: a driver that leaves the timestamp type unknown and the time zero.
        let mut tl = Timeline::new(None);
        let mut m = meta(0, 0);
        m.flags = 0;
        let (s, note) = tl.stamp(&m, T0, OFF);
        assert_eq!(note, Some(TimeNote::UsingArrival));
        assert_eq!(s.capture_unix_us, (T0 + OFF) as u64);
        let mut m = meta(0, 1);
        m.flags = 0;
        let (s2, note) = tl.stamp(&m, T0 + 40_000, OFF);
        assert_eq!(note, None);
        assert_eq!(s2.dts_90k, u64::from(s.duration_90k));
        // A monotonic stamp far from arrival (another clock) is not believed either.
        let mut tl = Timeline::new(None);
        let (_, note) = tl.stamp(&meta(T0 + 60_000_000, 0), T0, OFF);
        assert_eq!(note, Some(TimeNote::UsingArrival));
    }
}
