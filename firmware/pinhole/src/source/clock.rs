//! Media timestamps for sources that carry none (Annex-B on a pipe).
//!
//! An H.264 elementary stream has no timestamps, so they are made here: frames are laid on a
//! regular grid of the nominal frame duration (from the SPS VUI timing, or estimated from
//! arrival times when the stream has none). The grid keeps `tfdt` exactly continuous and the
//! fragment durations exact, which MSE players need. Arrival times only correct the grid when
//! it falls far behind wall-clock time (the source stalled): then the timeline jumps forward
//! to the arrival time, never backwards.
//!
//! Time is an input (`arrival_us`, a monotonic microsecond count); nothing here reads a clock.

/// Media timescale: 90 kHz.
const HZ: u64 = 90_000;
/// When the grid is this far behind arrival, jump forward (a stall or a frame-rate mismatch).
const RESYNC_BEHIND_90K: u64 = HZ / 2;
/// Frame durations are kept between 1/120 s and 1 s.
const MIN_DUR_90K: u32 = 750;
const MAX_DUR_90K: u32 = 90_000;
/// Until a rate is known, assume 30 fps.
const DEFAULT_DUR_90K: u32 = 3_000;

#[derive(Debug, Clone)]
pub struct FrameClock {
    /// Arrival time (µs) and media time (90 kHz) of the anchor frame.
    anchor: Option<(u64, u64)>,
    next_dts_90k: u64,
    last_arrival_us: Option<u64>,
    /// Estimated frame duration from arrival deltas (EWMA), in 90 kHz units ×256 fixed point.
    est_dur_q8: u64,
    /// How often the grid had to jump forward.
    pub resyncs: u64,
}

/// A frame's position on the media timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub dts_90k: u64,
    pub duration_90k: u32,
}

impl FrameClock {
    pub fn new(start_dts_90k: u64) -> FrameClock {
        FrameClock {
            anchor: None,
            next_dts_90k: start_dts_90k,
            last_arrival_us: None,
            est_dur_q8: u64::from(DEFAULT_DUR_90K) << 8,
            resyncs: 0,
        }
    }

    /// Stamps the next frame, which arrived at `arrival_us`. `nominal_90k` is the stream's own
    /// frame duration when it declares one.
    pub fn stamp(&mut self, arrival_us: u64, nominal_90k: Option<u32>) -> Stamp {
        if let Some(last) = self.last_arrival_us {
            let delta_90k = arrival_us.saturating_sub(last) * 9 / 100;
            let clamped = delta_90k.clamp(u64::from(MIN_DUR_90K), u64::from(MAX_DUR_90K));
            // EWMA with weight 1/16: smooths pipe jitter, follows a real rate change in a second.
            self.est_dur_q8 = self.est_dur_q8 - self.est_dur_q8 / 16 + (clamped << 8) / 16;
        }
        self.last_arrival_us = Some(arrival_us);
        let duration_90k = match nominal_90k {
            Some(d) => d.clamp(MIN_DUR_90K, MAX_DUR_90K),
            None => u32::try_from(self.est_dur_q8 >> 8).unwrap_or(DEFAULT_DUR_90K),
        };

        let mut dts = self.next_dts_90k;
        let mut duration_90k = duration_90k;
        match self.anchor {
            None => self.anchor = Some((arrival_us, dts)),
            Some((a_us, a_dts)) => {
                let arrival_90k = a_dts + arrival_us.saturating_sub(a_us) * 9 / 100;
                if arrival_90k > dts + RESYNC_BEHIND_90K {
                    let behind = arrival_90k - dts;
                    match u32::try_from(behind)
                        .ok()
                        .and_then(|b| b.checked_add(duration_90k))
                    {
                        // A short stall: this frame lasts longer, so tfdt stays continuous
                        // (players without gap handling keep playing) and the next frame is
                        // back on the arrival grid.
                        Some(longer) if longer <= MAX_DUR_90K => duration_90k = longer,
                        // A long outage: jump, leaving a gap as long as the outage.
                        _ => dts = arrival_90k,
                    }
                    self.anchor = Some((arrival_us, arrival_90k));
                    self.resyncs += 1;
                }
            }
        }
        self.next_dts_90k = dts + u64::from(duration_90k);
        Stamp {
            dts_90k: dts,
            duration_90k,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_frame_rate_gives_an_exact_grid_despite_jittery_arrivals() {
        let mut c = FrameClock::new(0);
        let jitter = [0u64, 9_000, 2_000, 15_000, 0, 7_000];
        let stamps: Vec<Stamp> = (0..6u64)
            .map(|i| c.stamp(i * 33_333 + jitter[i as usize], Some(3_000)))
            .collect();
        for (i, s) in stamps.iter().enumerate() {
            assert_eq!(s.dts_90k, i as u64 * 3_000);
            assert_eq!(s.duration_90k, 3_000);
        }
        assert_eq!(c.resyncs, 0);
    }

    #[test]
    fn without_a_declared_rate_the_duration_follows_arrivals() {
        let mut c = FrameClock::new(0);
        let mut last = Stamp {
            dts_90k: 0,
            duration_90k: 0,
        };
        for i in 0..200u64 {
            last = c.stamp(i * 40_000, None); // 25 fps
        }
        assert!((3_550..=3_650).contains(&last.duration_90k), "{last:?}");
    }

    #[test]
    fn a_short_stall_lengthens_one_frame_and_keeps_the_timeline_continuous() {
        let mut c = FrameClock::new(0);
        let a = c.stamp(0, Some(3_000));
        // 0.7 s of silence, then frames again.
        let b = c.stamp(733_333, Some(3_000));
        assert_eq!(b.dts_90k, a.dts_90k + 3_000);
        assert_eq!(
            b.dts_90k + u64::from(b.duration_90k),
            733_333 * 9 / 100 + 3_000
        );
        let d = c.stamp(766_666, Some(3_000));
        assert_eq!(d.dts_90k, b.dts_90k + u64::from(b.duration_90k));
        assert_eq!(d.duration_90k, 3_000);
    }

    #[test]
    fn a_stall_jumps_the_timeline_forward_and_never_back() {
        let mut c = FrameClock::new(1_000);
        let a = c.stamp(0, Some(3_000));
        let b = c.stamp(33_333, Some(3_000));
        assert_eq!((a.dts_90k, b.dts_90k), (1_000, 4_000));
        // Five seconds of silence, then frames again.
        let d = c.stamp(5_033_333, Some(3_000));
        assert_eq!(d.dts_90k, 1_000 + 5_033_333 * 9 / 100);
        assert_eq!(c.resyncs, 1);
        // A burst (frames faster than real time) stays on the grid: monotonic, contiguous.
        let e = c.stamp(5_033_400, Some(3_000));
        assert_eq!(e.dts_90k, d.dts_90k + 3_000);
    }
}
