//! The tap: the access units since the last IDR, as the pipeline saw them, for whoever decodes
//! pictures from the stream (`serve::snapshot`). The bytes are shared with the segmenter, not
//! copied; a reader starts at the IDR, or continues from the frame it decoded last.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::h264::{nal_type, AccessUnit};

/// The longest keyframe interval the tap keeps (frames): 20 s at 30 fps.
pub(crate) const MAX_GOP_FRAMES: usize = 600;

/// One access unit as the tap keeps it.
#[derive(Debug, Clone)]
pub(crate) struct TapFrame {
    pub(crate) seq: u64,
    pub(crate) capture_unix_us: u64,
    pub(crate) nals: Vec<Bytes>,
}

#[derive(Debug, Default)]
struct Gop {
    /// Counts IDRs: a decoder on another GOP must start again.
    id: u64,
    frames: Vec<TapFrame>,
    /// The newest parameter sets seen, put before an IDR that comes without them.
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    /// The GOP outgrew [`MAX_GOP_FRAMES`]: nothing is kept until the next IDR.
    overflow: bool,
    next_seq: u64,
    /// Counts [`Tap::wake`] calls.
    wakes: u64,
    newest_at: Option<Instant>,
}

/// The access units since the last IDR, fed by the pipeline, read by [`Snapshots`].
#[derive(Debug, Default)]
pub struct Tap {
    gop: Mutex<Gop>,
    /// Signalled for every frame pushed and by [`Tap::wake`].
    changed: Condvar,
}

/// What a decoder must do to reach the newest frame.
#[derive(Debug)]
pub(crate) enum Catchup {
    /// Decode these frames after the ones it has (same GOP).
    Continue(Vec<TapFrame>),
    /// Start again: a fresh decoder, the parameter sets, then these frames from the IDR.
    Restart {
        gop: u64,
        params: Vec<Bytes>,
        frames: Vec<TapFrame>,
    },
}

impl Tap {
    /// Called by the pipeline with every frame, before it is segmented.
    pub fn push(&self, au: &AccessUnit, capture_unix_us: u64) {
        let Ok(mut g) = self.gop.lock() else { return };
        for n in &au.nals {
            match nal_type(n) {
                nal_type::SPS => g.sps = Some(n.clone()),
                nal_type::PPS => g.pps = Some(n.clone()),
                _ => {}
            }
        }
        if au.is_idr {
            g.id += 1;
            g.frames.clear();
            g.overflow = false;
        } else if g.frames.is_empty() || g.overflow {
            // No IDR to start from yet (a stream joined mid-GOP), or too long a GOP.
            return;
        }
        if g.frames.len() >= MAX_GOP_FRAMES {
            g.overflow = true;
            g.frames.clear();
            return;
        }
        let seq = g.next_seq;
        g.next_seq += 1;
        g.newest_at = Some(Instant::now());
        g.frames.push(TapFrame {
            seq,
            capture_unix_us,
            nals: au.nals.clone(),
        });
        drop(g);
        self.changed.notify_all();
    }

    /// Wakes a decoder thread waiting in [`wait_newer`](Self::wait_newer) or
    /// [`wait_woken`](Self::wait_woken).
    pub(crate) fn wake(&self) {
        if let Ok(mut g) = self.gop.lock() {
            g.wakes += 1;
        }
        self.changed.notify_all();
    }

    /// Waits up to `timeout` for a frame newer than `have`; returns the GOP and newest frame.
    pub(crate) fn wait_newer(&self, have: Option<u64>, timeout: Duration) -> Option<(u64, u64)> {
        let g = self.gop.lock().ok()?;
        let newer = |g: &Gop| {
            g.frames
                .last()
                .filter(|f| have.is_none_or(|h| f.seq > h))
                .map(|f| (g.id, f.seq))
        };
        if let Some(n) = newer(&g) {
            return Some(n);
        }
        let (g, _) = self
            .changed
            .wait_timeout_while(g, timeout, |g| newer(g).is_none())
            .ok()?;
        newer(&g)
    }

    /// Waits up to `timeout` for [`wake`](Self::wake).
    pub(crate) fn wait_woken(&self, timeout: Duration) {
        let Ok(g) = self.gop.lock() else { return };
        let seen = g.wakes;
        let _ = self
            .changed
            .wait_timeout_while(g, timeout, |g| g.wakes == seen);
    }

    /// The source run ended: what the tap holds belongs to a stream that is gone.
    pub fn end_of_run(&self) {
        if let Ok(mut g) = self.gop.lock() {
            g.frames.clear();
            g.newest_at = None;
        }
    }

    /// The newest frame's sequence number and its age, if any frame is held.
    pub(crate) fn newest(&self) -> Option<(u64, Duration)> {
        let g = self.gop.lock().ok()?;
        let f = g.frames.last()?;
        Some((f.seq, g.newest_at.map(|t| t.elapsed()).unwrap_or_default()))
    }

    pub(crate) fn catchup(&self, gop: u64, after_seq: Option<u64>) -> Result<Catchup, String> {
        let g = self
            .gop
            .lock()
            .map_err(|_| "snapshot tap lock poisoned".to_string())?;
        if g.overflow {
            return Err(format!(
                "the camera's keyframe interval is longer than {MAX_GOP_FRAMES} frames: \
                 snapshots need a shorter GOP (an IDR at least every few seconds)"
            ));
        }
        if g.frames.is_empty() {
            return Err("no picture since the last keyframe yet".into());
        }
        if let Some(after) = after_seq {
            if gop == g.id {
                let new = g.frames.iter().filter(|f| f.seq > after).cloned().collect();
                return Ok(Catchup::Continue(new));
            }
        }
        let params = [&g.sps, &g.pps].into_iter().flatten().cloned().collect();
        Ok(Catchup::Restart {
            gop: g.id,
            params,
            frames: g.frames.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tap_keeps_one_gop_and_starts_at_an_idr() {
        let tap = Tap::default();
        let au = |idr: bool| AccessUnit {
            nals: vec![Bytes::from_static(if idr {
                &[0x65, 0]
            } else {
                &[0x41, 0]
            })],
            is_idr: idr,
            has_b_slices: false,
        };
        tap.push(&au(false), 1);
        assert!(tap.newest().is_none(), "nothing before the first IDR");
        tap.push(&au(true), 2);
        tap.push(&au(false), 3);
        match tap.catchup(0, None).unwrap() {
            Catchup::Restart { gop, frames, .. } => {
                assert_eq!(gop, 1);
                assert_eq!(frames.len(), 2);
            }
            c => panic!("{c:?}"),
        }
        match tap.catchup(1, Some(0)).unwrap() {
            Catchup::Continue(f) => assert_eq!(f.len(), 1),
            c => panic!("{c:?}"),
        }
        tap.push(&au(true), 4);
        assert!(matches!(
            tap.catchup(1, Some(1)).unwrap(),
            Catchup::Restart { gop: 2, .. }
        ));
        tap.end_of_run();
        assert!(tap.catchup(2, Some(2)).is_err());
    }
}
