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

    /// A part was just cut from the newest frames (`framed`: its `[u32 length]` + prft, moof,
    /// mdat record; `frame_count` frames). Their NAL units are in its mdat already, in AVCC
    /// form: the tap's own references are swapped for views of those bytes, so the current GOP
    /// is held once — by the hub's ring, which keeps the current GOP anyway — and not also
    /// through the source's buffers (0.75 MB per second of GOP at 6 Mbit/s; issue 25).
    ///
    /// The part holds either the newest `frame_count` frames (cut when it reached its
    /// duration) or the ones before the newest (cut by the next frame: an IDR, new parameters,
    /// a gap); whichever matches NAL for NAL (count, lengths and header bytes; SPS, PPS and AUD
    /// are not in samples) is swapped. Nothing matches (frames the segmenter dropped): nothing
    /// changes.
    pub fn share(&self, framed: &Bytes, frame_count: u32) {
        let Some(mdat) = mdat_nals(framed) else {
            return;
        };
        let Ok(mut g) = self.gop.lock() else { return };
        let count = frame_count as usize;
        let n = g.frames.len();
        for end in [n, n.saturating_sub(1)] {
            let Some(start) = end.checked_sub(count) else {
                continue;
            };
            if count == 0 || !same_nals(&g.frames[start..end], framed, &mdat) {
                continue;
            }
            let mut next = mdat.iter();
            for f in &mut g.frames[start..end] {
                let kept = f.nals.iter().filter(|nal| in_sample(nal)).count();
                f.nals = next
                    .by_ref()
                    .take(kept)
                    .map(|r| framed.slice(r.clone()))
                    .collect();
            }
            return;
        }
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

/// NAL units the segmenter puts into a sample (it keeps SPS, PPS and AUD out, in the init).
fn in_sample(nal: &Bytes) -> bool {
    !nal.is_empty() && !matches!(nal_type(nal), nal_type::SPS | nal_type::PPS | nal_type::AUD)
}

/// Whether `frames`' sample NAL units are, in order, the ones at `mdat` in `framed`.
fn same_nals(frames: &[TapFrame], framed: &Bytes, mdat: &[std::ops::Range<usize>]) -> bool {
    let mut at = mdat.iter();
    for nal in frames
        .iter()
        .flat_map(|f| f.nals.iter())
        .filter(|n| in_sample(n))
    {
        let Some(r) = at.next() else { return false };
        if r.len() != nal.len() || framed.get(r.start) != nal.first() {
            return false;
        }
    }
    at.next().is_none()
}

/// The byte ranges, within `framed` (`[u32 BE length][boxes…]`), of the NAL units in its
/// `mdat` (AVCC: each a 4-byte big-endian length, then the unit). `None` when there is no
/// well-formed mdat.
fn mdat_nals(framed: &[u8]) -> Option<Vec<std::ops::Range<usize>>> {
    let be32 = |at: usize| -> Option<usize> {
        let b = framed.get(at..at.checked_add(4)?)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let mut at = 4;
    let (start, end) = loop {
        let size = be32(at)?;
        let kind = framed.get(at + 4..at + 8)?;
        if size < 8 {
            return None; // 0 (to the end) and 1 (64-bit size) are not what the muxer writes
        }
        let end = at.checked_add(size)?;
        if kind == b"mdat" {
            break (at + 8, end.min(framed.len()));
        }
        at = end;
    };
    let mut nals = Vec::new();
    let mut at = start;
    while at < end {
        let len = be32(at)?;
        let from = at + 4;
        let to = from.checked_add(len)?;
        if to > end {
            return None;
        }
        nals.push(from..to);
        at = to;
    }
    Some(nals)
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

    /// A record as the muxer frames it: `[u32 length]` then prft, moof and an mdat holding the
    /// frames' sample NAL units in AVCC form.
    fn record(frames: &[&[&[u8]]]) -> Bytes {
        let mut mdat = Vec::new();
        for f in frames {
            for nal in f.iter().filter(|n| !matches!(n[0] & 0x1f, 7..=9)) {
                mdat.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                mdat.extend_from_slice(nal);
            }
        }
        let mut payload = Vec::new();
        for (kind, body) in [
            (&b"prft"[..], &[0u8; 12][..]),
            (b"moof", &[0u8; 16]),
            (b"mdat", &mdat),
        ] {
            payload.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
            payload.extend_from_slice(kind);
            payload.extend_from_slice(body);
        }
        let mut framed = (payload.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&payload);
        Bytes::from(framed)
    }

    fn au(nals: &[&[u8]], idr: bool) -> AccessUnit {
        AccessUnit {
            nals: nals.iter().map(|n| Bytes::copy_from_slice(n)).collect(),
            is_idr: idr,
            has_b_slices: false,
        }
    }

    fn points_into(nal: &Bytes, framed: &Bytes) -> bool {
        let (p, r) = (nal.as_ptr() as usize, framed.as_ptr() as usize);
        p >= r && p + nal.len() <= r + framed.len()
    }

    #[test]
    fn frames_in_a_cut_part_are_held_as_views_of_the_part_and_decode_the_same() {
        // Why: the tap kept the source's copy of every frame of the GOP beside the ring's.
        let idr: &[&[u8]] = &[
            &[0x09, 0xf0],
            &[0x67, 1, 2],
            &[0x68, 3],
            &[0x65, 0xaa, 0xbb],
        ];
        let p1: &[&[u8]] = &[&[0x41, 0x11, 0x12, 0x13]];
        let p2: &[&[u8]] = &[&[0x06, 0x05], &[0x41, 0x21]];
        let tap = Tap::default();
        tap.push(&au(idr, true), 1);
        tap.push(&au(p1, false), 2);
        // Cut by reaching its duration: the part holds the newest two frames.
        let part = record(&[idr, p1]);
        tap.share(&part, 2);
        tap.push(&au(p2, false), 3);
        let Catchup::Restart { frames, params, .. } = tap.catchup(0, None).unwrap() else {
            panic!("a fresh decoder restarts");
        };
        assert_eq!(params.len(), 2, "SPS and PPS still come first");
        assert!(frames[0]
            .nals
            .iter()
            .chain(&frames[1].nals)
            .all(|n| points_into(n, &part)));
        assert_eq!(
            frames[0].nals,
            vec![Bytes::from_static(&[0x65, 0xaa, 0xbb])]
        );
        assert_eq!(
            frames[1].nals,
            vec![Bytes::from_static(&[0x41, 0x11, 0x12, 0x13])]
        );
        assert!(!points_into(&frames[2].nals[0], &part), "not in that part");
        // Cut by the next frame (new parameters, a gap): the frames before the newest.
        tap.push(&au(&[&[0x41, 0x31]], false), 4);
        let part2 = record(&[p2]);
        tap.share(&part2, 1);
        let Catchup::Restart { frames, .. } = tap.catchup(0, None).unwrap() else {
            panic!("restart");
        };
        assert_eq!(frames[2].nals.len(), 2);
        assert!(frames[2].nals.iter().all(|n| points_into(n, &part2)));
        assert!(!points_into(&frames[3].nals[0], &part2));
    }

    #[test]
    fn a_part_that_does_not_match_the_newest_frames_changes_nothing() {
        let tap = Tap::default();
        tap.push(&au(&[&[0x65, 1]], true), 1);
        tap.push(&au(&[&[0x41, 2, 2]], false), 2);
        let other = record(&[&[&[0x41, 9]]]);
        tap.share(&other, 1);
        tap.share(&Bytes::from_static(&[0, 0, 0, 4, 1, 2, 3, 4]), 1); // no mdat at all
        let Catchup::Restart { frames, .. } = tap.catchup(0, None).unwrap() else {
            panic!("restart");
        };
        assert!(frames
            .iter()
            .flat_map(|f| &f.nals)
            .all(|n| !points_into(n, &other)));
        assert_eq!(frames[1].nals, vec![Bytes::from_static(&[0x41, 2, 2])]);
    }
}
