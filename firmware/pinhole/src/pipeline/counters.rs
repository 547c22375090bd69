//! The frame path's counters: bumped once per frame and once per part by the pipeline, read
//! lock-free by both watchdogs — the source supervisor's (no frame for its timeout: restart the
//! source) and systemd's (frames in but no part out: the process is wedged) — and by status.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::status::FrameCounts;

#[derive(Debug)]
pub struct Counters {
    started: Instant,
    /// Frames the source handed to the pipeline.
    frames_in: AtomicU64,
    /// When the last of them came, in µs since `started` (0: none yet).
    last_frame_us: AtomicU64,
    /// CMAF parts cut.
    parts_out: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            started: Instant::now(),
            frames_in: AtomicU64::new(0),
            last_frame_us: AtomicU64::new(0),
            parts_out: AtomicU64::new(0),
        }
    }
}

impl Counters {
    /// A frame came in (decodable yet or not: any frame feeds the source watchdog).
    pub fn frame_in(&self) {
        let us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_frame_us.store(us.max(1), Ordering::Relaxed);
        self.frames_in.fetch_add(1, Ordering::Relaxed);
    }

    /// A part went out to the hub.
    pub fn part_out(&self) {
        self.parts_out.fetch_add(1, Ordering::Relaxed);
    }

    pub fn frames_in(&self) -> u64 {
        self.frames_in.load(Ordering::Relaxed)
    }

    pub fn parts_out(&self) -> u64 {
        self.parts_out.load(Ordering::Relaxed)
    }

    /// When the last frame came in.
    pub fn last_frame_at(&self) -> Option<Instant> {
        match self.last_frame_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(self.started + Duration::from_micros(us)),
        }
    }

    /// What `/api/status` shows of them.
    pub fn frame_counts(&self) -> FrameCounts {
        FrameCounts {
            frames_in: self.frames_in(),
            last_frame_age: self.last_frame_at().map(|t| t.elapsed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_counts_once_and_stamps_its_arrival() {
        let c = Counters::default();
        assert_eq!(c.frame_counts().frames_in, 0);
        assert!(c.last_frame_at().is_none() && c.frame_counts().last_frame_age.is_none());
        c.frame_in();
        c.frame_in();
        c.part_out();
        assert_eq!((c.frames_in(), c.parts_out()), (2, 1));
        assert!(c.last_frame_at().is_some_and(|t| t <= Instant::now()));
    }
}
