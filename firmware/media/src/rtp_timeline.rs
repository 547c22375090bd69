//! RTP timestamps → a 90 kHz media timeline that only moves forward.
//!
//! A camera's RTP timestamps (RFC 3550 §5.1) are 32-bit counters at the codec's clock rate
//! (90 kHz for video, RFC 6184 §8.2.1) starting at a random value. They wrap every 13 hours at
//! 90 kHz, and real cameras also jump (a clock reset, an encoder restart behind the same RTSP
//! session) or step backwards. The segmenter, and behind it every player, needs the opposite:
//! decode times that never go backwards, each frame with a duration known when it is pushed,
//! and parts without holes (`tfdt` continuity: MSE players and Safari stall on gaps).
//!
//! [`RtpTimeline`] maps each frame's timestamp to a `(dts_90k, duration_90k)`:
//!
//! * **Wrap.** Timestamps are handled as 64-bit extended values; [`RtpTimeline::extend_rtp32`]
//!   unwraps raw 32-bit ones (the shortest signed distance from the previous one). `retina`
//!   already hands over extended timestamps.
//! * **Duration now, not one frame later.** A frame's duration is only really known when the
//!   next frame arrives; waiting for it would cost a frame interval of latency. So the duration
//!   is *predicted* from the last timestamp step, and the next frame corrects the error: it is
//!   laid exactly where the previous one ended, with a duration that brings the timeline back
//!   onto the source's times. A camera with steady timestamps gets exact durations; one with
//!   jittery timestamps gets durations that jitter by the same amount, and no drift.
//! * **Gaps.** A step up to [`MAX_STRETCH_90K`] beyond the prediction (lost frames, a short
//!   stall) is absorbed by a longer frame, keeping `tfdt` continuous. A longer real gap (the
//!   timestamps and the arrival times both advanced) is kept as a gap.
//! * **Backwards** (or repeated) timestamps, and **jumps** (the timestamps advanced more than
//!   [`MAX_AHEAD_90K`] beyond the wall-clock time that passed between the two arrivals): the
//!   timeline is re-based. After a step backwards the frame follows the previous one directly;
//!   after a jump it lands where the arrival times put it. Each such event is reported in
//!   [`RtpStamp::event`] for the caller to log; the timeline goes on.
//!
//! Time is an input (`arrival_us`, a monotonic microsecond count); nothing here reads a clock.
//!
//! Invariants (checked by the `rtp_timeline` fuzz target): `dts_90k` of each frame is at least
//! the previous frame's `dts_90k + duration_90k`, and `duration_90k` is within
//! [`MIN_DUR_90K`]`..=`[`MAX_DUR_90K`].

/// Shortest duration handed out: 1 ms. The segmenter refuses zero.
pub const MIN_DUR_90K: u32 = 90;
/// Longest single frame duration: 1 s.
pub const MAX_DUR_90K: u32 = 90_000;
/// Until a timestamp step is seen, frames are assumed 1/30 s long.
pub const DEFAULT_DUR_90K: u32 = 3_000;
/// A frame up to this far after the predicted position is pulled back onto the continuous
/// timeline (the previous frame's prediction was too short); further is a real gap.
pub const MAX_STRETCH_90K: u64 = 45_000;
/// Timestamps that advance this much more than the wall-clock time between arrivals are a jump.
pub const MAX_AHEAD_90K: u64 = 90_000;

/// How many recent timestamp steps the duration prediction looks at.
const STEPS: usize = 8;

/// Something a camera did to its timestamps that made the timeline re-base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimelineEvent {
    /// The timestamp went backwards by `by_90k` (0: the same timestamp as the previous frame).
    Backwards { by_90k: u64 },
    /// The timestamp jumped forward by `source_90k` while `wall_90k` passed between arrivals.
    Jump { source_90k: u64, wall_90k: u64 },
}

impl std::fmt::Display for TimelineEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            TimelineEvent::Backwards { by_90k: 0 } => {
                write!(f, "timestamp repeated the previous frame's")
            }
            TimelineEvent::Backwards { by_90k } => {
                write!(f, "timestamp went backwards by {} ms", by_90k / 90)
            }
            TimelineEvent::Jump {
                source_90k,
                wall_90k,
            } => write!(
                f,
                "timestamp jumped forward by {} ms while {} ms passed",
                source_90k / 90,
                wall_90k / 90
            ),
        }
    }
}

/// Where one frame goes on the media timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpStamp {
    pub dts_90k: u64,
    pub duration_90k: u32,
    /// Set when this frame's timestamp made the timeline re-base.
    pub event: Option<TimelineEvent>,
}

#[derive(Clone, Copy, Debug)]
struct Last {
    source: i64,
    arrival_us: u64,
    dts_90k: u64,
}

/// Maps one RTP stream's timestamps to the media timeline. See the module docs.
#[derive(Clone, Debug)]
pub struct RtpTimeline {
    clock_rate_hz: u32,
    /// Source timestamp and media time of the mapping's origin.
    anchor: (i64, u64),
    last: Option<Last>,
    /// End of the last frame handed out: the earliest dts the next one may have.
    next_dts_90k: u64,
    /// The last few timestamp steps (90 kHz), newest at `steps_next - 1`; 0 = empty slot.
    steps: [u32; STEPS],
    steps_next: usize,
    /// Last raw 32-bit timestamp and its extended value (for [`Self::extend_rtp32`]).
    last_raw: Option<(u32, i64)>,
    /// How often the timestamps went backwards / jumped.
    pub backwards: u64,
    pub jumps: u64,
}

impl RtpTimeline {
    /// A timeline for a stream with the given RTP clock rate (0 is taken as 90 kHz), whose
    /// first frame lands at `start_dts_90k`.
    pub fn new(clock_rate_hz: u32, start_dts_90k: u64) -> RtpTimeline {
        RtpTimeline {
            clock_rate_hz: if clock_rate_hz == 0 {
                90_000
            } else {
                clock_rate_hz
            },
            anchor: (0, start_dts_90k),
            last: None,
            next_dts_90k: start_dts_90k,
            steps: [0; STEPS],
            steps_next: 0,
            last_raw: None,
            backwards: 0,
            jumps: 0,
        }
    }

    /// Extends a raw 32-bit RTP timestamp to 64 bits: the nearest value (within ±2³¹) to the
    /// previous one, so a wrap from 0xffff_ffff to 0 is a step of +1.
    pub fn extend_rtp32(&mut self, raw: u32) -> i64 {
        let ext = match self.last_raw {
            None => i64::from(raw),
            Some((prev_raw, prev_ext)) => {
                // Two's complement distance: the wrap-around step is small.
                let step = raw.wrapping_sub(prev_raw) as i32;
                prev_ext.saturating_add(i64::from(step))
            }
        };
        self.last_raw = Some((raw, ext));
        ext
    }

    /// The next frame's predicted duration: the smallest recent step. A lost frame makes one
    /// step twice as long; guessing short only lengthens the next frame, guessing long would
    /// squeeze it to nothing.
    fn predicted_90k(&self) -> u32 {
        self.steps
            .iter()
            .copied()
            .filter(|&s| s > 0)
            .min()
            .unwrap_or(DEFAULT_DUR_90K)
    }

    /// Source clock ticks → 90 kHz ticks (signed, saturating).
    fn to_90k(&self, ticks: i128) -> i128 {
        ticks.saturating_mul(90_000) / i128::from(self.clock_rate_hz)
    }

    /// Places the next frame: `source` is its extended RTP timestamp, `arrival_us` when it was
    /// received (any monotonic microsecond clock).
    pub fn stamp(&mut self, source: i64, arrival_us: u64) -> RtpStamp {
        let mut event = None;
        match self.last {
            None => self.anchor = (source, self.next_dts_90k),
            Some(last) => {
                let step = self.to_90k(i128::from(source) - i128::from(last.source));
                let wall = i128::from(arrival_us.saturating_sub(last.arrival_us) / 100 * 9);
                if step <= 0 {
                    let by_90k = u64::try_from(-step).unwrap_or(u64::MAX);
                    event = Some(TimelineEvent::Backwards { by_90k });
                    self.backwards += 1;
                    self.anchor = (source, self.next_dts_90k);
                } else if step > wall + i128::from(MAX_AHEAD_90K) {
                    event = Some(TimelineEvent::Jump {
                        source_90k: u64::try_from(step).unwrap_or(u64::MAX),
                        wall_90k: u64::try_from(wall).unwrap_or(u64::MAX),
                    });
                    self.jumps += 1;
                    let by_arrival = last
                        .dts_90k
                        .saturating_add(u64::try_from(wall).unwrap_or(u64::MAX));
                    self.anchor = (source, by_arrival.max(self.next_dts_90k));
                } else {
                    self.steps[self.steps_next % STEPS] = u32::try_from(step)
                        .unwrap_or(MAX_DUR_90K)
                        .clamp(MIN_DUR_90K, MAX_DUR_90K);
                    self.steps_next = (self.steps_next + 1) % STEPS;
                }
            }
        }
        // Where the source's own timing puts this frame (the anchor keeps `source >= anchor`).
        let since_anchor = self.to_90k(i128::from(source) - i128::from(self.anchor.0));
        let target =
            u64::try_from(i128::from(self.anchor.1) + since_anchor.max(0)).unwrap_or(u64::MAX / 2);
        let dts_90k = if target > self.next_dts_90k.saturating_add(MAX_STRETCH_90K) {
            target // a real gap: keep it
        } else {
            self.next_dts_90k
        };
        // The predicted end of this frame, by the source's timing; never before a minimal frame.
        let end = i128::from(target) + i128::from(self.predicted_90k());
        let duration_90k = u32::try_from(
            (end - i128::from(dts_90k)).clamp(i128::from(MIN_DUR_90K), i128::from(MAX_DUR_90K)),
        )
        .unwrap_or(MAX_DUR_90K);
        self.next_dts_90k = dts_90k.saturating_add(u64::from(duration_90k));
        self.last = Some(Last {
            source,
            arrival_us,
            dts_90k,
        });
        RtpStamp {
            dts_90k,
            duration_90k,
            event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (dts, duration) of each frame, for frames at the given (source ts, arrival µs).
    fn run(tl: &mut RtpTimeline, frames: &[(i64, u64)]) -> Vec<(u64, u32)> {
        frames
            .iter()
            .map(|&(ts, at)| {
                let s = tl.stamp(ts, at);
                (s.dts_90k, s.duration_90k)
            })
            .collect()
    }

    fn assert_monotonic(stamps: &[(u64, u32)]) {
        for w in stamps.windows(2) {
            assert!(w[1].0 >= w[0].0 + u64::from(w[0].1), "{stamps:?}");
        }
    }

    #[test]
    fn steady_30fps_timestamps_give_exact_durations_from_the_first_frame() {
        let mut tl = RtpTimeline::new(90_000, 0);
        let frames: Vec<(i64, u64)> = (0..10)
            .map(|i| (12_345 + i * 3_000, i as u64 * 33_333))
            .collect();
        let got = run(&mut tl, &frames);
        for (i, (dts, dur)) in got.iter().enumerate() {
            assert_eq!((*dts, *dur), (i as u64 * 3_000, 3_000));
        }
    }

    #[test]
    fn a_15fps_camera_converges_after_one_frame_without_drift() {
        let mut tl = RtpTimeline::new(90_000, 1_000);
        let frames: Vec<(i64, u64)> = (0..6).map(|i| (i * 6_000, i as u64 * 66_666)).collect();
        let got = run(&mut tl, &frames);
        assert_monotonic(&got);
        // The first duration is a guess (30 fps); the second makes up for it.
        assert_eq!(got[0], (1_000, 3_000));
        assert_eq!(got[1], (4_000, 9_000));
        for (i, g) in got.iter().enumerate().skip(2) {
            assert_eq!(*g, (1_000 + i as u64 * 6_000, 6_000));
        }
    }

    #[test]
    fn a_32_bit_wrap_is_one_ordinary_step() {
        let mut tl = RtpTimeline::new(90_000, 0);
        // 2³² − 3000, then 0, 3000, 6000: the second step crosses the wrap.
        let raws = [u32::MAX - 2_999, 0, 3_000, 6_000];
        let ext: Vec<i64> = raws.iter().map(|&r| tl.extend_rtp32(r)).collect();
        for w in ext.windows(2) {
            assert!(w[1] > w[0], "{ext:?}");
        }
        assert_eq!(ext[2] - ext[0], 6_000);
        let mut tl = RtpTimeline::new(90_000, 0);
        let frames: Vec<(i64, u64)> = ext
            .iter()
            .enumerate()
            .map(|(i, &e)| (e, i as u64 * 33_000))
            .collect();
        let got = run(&mut tl, &frames);
        assert_monotonic(&got);
        assert_eq!(tl.backwards + tl.jumps, 0);
        assert_eq!(got[3], (9_000, 3_000));
    }

    #[test]
    fn timestamps_going_backwards_rebase_once_and_the_timeline_keeps_going() {
        let mut tl = RtpTimeline::new(90_000, 0);
        let mut frames: Vec<(i64, u64)> = (0..5)
            .map(|i| (900_000 + i * 3_000, i as u64 * 33_333))
            .collect();
        // The camera restarts its clock at 0.
        frames.extend((5..10).map(|i| ((i - 5) * 3_000, i as u64 * 33_333)));
        let mut events = Vec::new();
        let got: Vec<(u64, u32)> = frames
            .iter()
            .map(|&(ts, at)| {
                let s = tl.stamp(ts, at);
                events.extend(s.event);
                (s.dts_90k, s.duration_90k)
            })
            .collect();
        assert_eq!(events, vec![TimelineEvent::Backwards { by_90k: 912_000 }]);
        assert_eq!(tl.backwards, 1);
        assert_monotonic(&got);
        for (i, g) in got.iter().enumerate() {
            assert_eq!(*g, (i as u64 * 3_000, 3_000), "frame {i}");
        }
    }

    #[test]
    fn a_repeated_timestamp_gets_its_own_slot() {
        let mut tl = RtpTimeline::new(90_000, 0);
        let got = run(
            &mut tl,
            &[(0, 0), (3_000, 33_333), (3_000, 40_000), (6_000, 66_666)],
        );
        assert_monotonic(&got);
        assert_eq!(tl.backwards, 1);
        assert_eq!(got[2].0, 6_000);
    }

    #[test]
    fn a_jump_ahead_of_the_wall_clock_rebases_on_arrival_time() {
        let mut tl = RtpTimeline::new(90_000, 0);
        // One hour forward in RTP time while 33 ms pass.
        let hour = 3_600 * 90_000;
        let got = run(
            &mut tl,
            &[
                (0, 0),
                (3_000, 33_333),
                (3_000 + hour, 66_666),
                (6_000 + hour, 100_000),
            ],
        );
        assert_eq!(tl.jumps, 1);
        assert_monotonic(&got);
        assert_eq!(got[2], (6_000, 3_000));
        assert_eq!(got[3], (9_000, 3_000));
    }

    #[test]
    fn a_real_outage_is_kept_as_a_gap_and_a_lost_frame_is_absorbed() {
        let mut tl = RtpTimeline::new(90_000, 0);
        // Frame 2 lost (a 66 ms step), then a 3 s pause in both RTP and arrival time.
        let got = run(
            &mut tl,
            &[
                (0, 0),
                (3_000, 33_333),
                (9_000, 100_000),
                (12_000, 133_333),
                (282_000, 3_133_333),
            ],
        );
        assert_eq!(tl.jumps + tl.backwards, 0);
        assert_monotonic(&got);
        // Lost frame: the frame before it cannot be lengthened any more, so this one starts where
        // it ended and makes up for it; the prediction is not thrown off by the long step.
        assert_eq!(got[2], (6_000, 6_000));
        assert_eq!(got[3], (12_000, 3_000));
        // The 3 s pause stays a 3 s gap.
        assert_eq!(got[4].0, 282_000);
    }

    #[test]
    fn other_clock_rates_are_scaled_to_90khz() {
        let mut tl = RtpTimeline::new(1_000, 0);
        let got = run(
            &mut tl,
            &[(0, 0), (40, 40_000), (80, 80_000), (120, 120_000)],
        );
        assert_eq!(got[2], (7_200, 3_600));
        assert_eq!(got[3], (10_800, 3_600));
    }
}
