//! The pipeline: frames from a source → segmenter → hub.
//!
//! It also keeps one media timeline across source restarts: each run's timestamps are moved so
//! the first frame of a new run follows the last frame of the previous one, plus the wall-clock
//! time the source was away. Players therefore see time only ever move forward (Safari stalls on
//! backward jumps), and the gap equals the real outage.
//!
//! ```text
//! source ─► FrameSink ─► Pipeline ─┬─► Segmenter ─► hub (init, parts)
//!                                  ├─► Tap (access units since the last IDR, for snapshots)
//!                                  └─► Counters (frames in, parts out: both watchdogs read them)
//! ```
//!
//! It imports the hub, status and `media`, nothing else (`tests/module-cycles` checks): the
//! sources, the serving side and systemd's watchdog all know the pipeline, never the reverse.

pub(crate) mod counters;
pub(crate) mod tap;

use std::sync::{Arc, Mutex};

use media::segmenter::{Frame, Output, Segmenter, SegmenterConfig};

use crate::hub::Hub;
use crate::status::Status;

pub use self::counters::Counters;
pub use self::tap::Tap;

/// Shared handle to the pipeline that sources write into.
pub type SharedPipeline = Arc<Mutex<Pipeline>>;

/// Where sources deliver frames: the pipeline itself, or a source's wrapper around it (see
/// `source::Delivery`). Defined here, beside its implementation, so the arrow runs one way:
/// sources know the pipeline, the pipeline knows no source.
pub trait FrameSink: Send {
    fn frame(&mut self, frame: Frame);
}

pub struct Pipeline {
    segmenter: Segmenter,
    hub: Arc<Hub>,
    status: Arc<Status>,
    /// Mapping of this run's timestamps: (first source dts, where it lands on the timeline).
    run_base: Option<(u64, u64)>,
    /// End of the last frame on the timeline, and its capture time.
    last_end: Option<(u64, u64)>,
    rejected: u64,
    /// Frames in and parts out, for both watchdogs and status.
    counters: Arc<Counters>,
    /// The access units since the last IDR, for snapshots (shared bytes, no copies).
    tap: Arc<Tap>,
}

impl Pipeline {
    pub fn new(
        config: SegmenterConfig,
        hub: Arc<Hub>,
        status: Arc<Status>,
    ) -> Result<Pipeline, media::segmenter::SegmentError> {
        Ok(Pipeline {
            segmenter: Segmenter::new(config)?,
            hub,
            status,
            run_base: None,
            last_end: None,
            rejected: 0,
            counters: Arc::new(Counters::default()),
            tap: Arc::new(Tap::default()),
        })
    }

    /// The frame path's counters, read by both watchdogs and by status.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Where snapshots find the newest frames.
    pub fn tap(&self) -> Arc<Tap> {
        self.tap.clone()
    }

    /// The source run ended: send the partial part on and start a new timeline mapping.
    pub fn end_of_run(&mut self) {
        self.tap.end_of_run();
        let outputs = self.segmenter.flush();
        self.publish(outputs);
        self.run_base = None;
        self.hub.mark_discontinuity();
    }

    fn publish(&mut self, outputs: Vec<Output>) {
        for out in outputs {
            match out {
                Output::Init(init) => {
                    tracing::info!(codec = %init.codec, width = init.width, height = init.height, generation = init.generation, "new init segment");
                    self.status.set_video(&init.codec, init.width, init.height);
                    self.hub.set_init(init);
                }
                Output::Part(part) => {
                    self.counters.part_out();
                    // The tap's frames in this part now share its bytes (one copy of a GOP).
                    self.tap.share(&part.framed, part.frame_count);
                    self.status
                        .record_part(part.duration_90k, part.frame_count, part.framed.len());
                    self.hub.publish(part);
                }
            }
        }
    }
}

impl FrameSink for Pipeline {
    fn frame(&mut self, mut frame: Frame) {
        // Feeds both watchdogs: any frame counts, decodable yet or not.
        self.counters.frame_in();
        let (src0, dst0) = *self.run_base.get_or_insert_with(|| {
            let dst = match self.last_end {
                None => frame.dts_90k,
                Some((end, end_capture_us)) => {
                    let away_us = frame.capture_unix_us.saturating_sub(end_capture_us);
                    end + away_us * 9 / 100
                }
            };
            (frame.dts_90k, dst)
        });
        frame.dts_90k = dst0 + frame.dts_90k.saturating_sub(src0);
        let end = frame.dts_90k + u64::from(frame.duration_90k);
        let capture = frame.capture_unix_us;
        self.tap.push(&frame.au, capture);
        match self.segmenter.push(frame) {
            Ok(outputs) => {
                self.last_end = Some((end, capture));
                self.publish(outputs);
            }
            Err(e) => {
                self.rejected += 1;
                if self.rejected <= 5 || self.rejected % 100 == 0 {
                    tracing::warn!(error = %e, count = self.rejected, "frame rejected by the segmenter");
                }
                self.status.note_source_error(format!("segmenter: {e}"));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use media::h264::AnnexBReader;

    const CLIP: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../media/tests/fixtures/x264_high_720p30_gop6.h264"
    );

    /// Why: the snapshot tap held its own copy of the GOP beside the ring's (issue 25's
    /// memory). After each part, the tap's frames in it are views of the part the hub keeps.
    #[test]
    fn the_tap_holds_the_frames_of_cut_parts_as_views_of_the_hub_s_parts() {
        let hub = Hub::new();
        let status = Arc::new(Status::new("cam", "test".into(), 100));
        let config = SegmenterConfig {
            fragment_duration_90k: 9_000,
            low_delay_vui: true,
        };
        let mut p = Pipeline::new(config, hub.clone(), status).unwrap();
        // The clip: 9 frames, an IDR every 6, AUDs on. Three times over, then one GOP of 6
        // (two parts of 3 frames at 30 fps and 100 ms parts).
        let mut reader = AnnexBReader::new();
        reader.push(&std::fs::read(CLIP).unwrap());
        reader.finish();
        let clip: Vec<_> = std::iter::from_fn(|| reader.next_au())
            .map(Result::unwrap)
            .collect();
        assert_eq!(clip.len(), 9);
        let aus = clip.iter().cycle().take(27 + 6).cloned();
        for (n, au) in (0u64..).zip(aus) {
            p.frame(Frame {
                dts_90k: n * 3_000,
                duration_90k: 3_000,
                cts_offset_90k: 0,
                capture_unix_us: 1_000_000 + n * 33_333,
                au,
            });
        }
        let ring = hub.ring();
        let inside = |nal: &bytes::Bytes| {
            let at = nal.as_ptr() as usize;
            ring.iter().any(|e| {
                let r = e.part.framed.as_ptr() as usize;
                at >= r && at + nal.len() <= r + e.part.framed.len()
            })
        };
        let Ok(tap::Catchup::Restart { frames, .. }) = p.tap().catchup(0, None) else {
            panic!("the tap holds a GOP");
        };
        // Every frame but those of the part still being cut lives in the ring's bytes.
        let shared = frames.iter().filter(|f| f.nals.iter().all(&inside)).count();
        assert!(frames.len() >= 3, "{} frames", frames.len());
        assert!(
            shared + 3 >= frames.len(),
            "{shared} of {} shared",
            frames.len()
        );
        assert!(shared >= 1);
    }
}
