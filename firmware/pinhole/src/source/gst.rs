//! `gst:PIPELINE`: any GStreamer pipeline that makes H.264 (cargo feature `gstreamer`).
//!
//! The user's pipeline is completed by [`full_pipeline`]: unless it already ends in an appsink
//! named `pinhole`, ` ! h264parse config-interval=-1 ! <caps> ! appsink name=pinhole` is
//! appended, so the appsink always receives `video/x-h264,stream-format=byte-stream,
//! alignment=au` — Annex-B, one access unit per buffer, SPS/PPS in front of every IDR (a
//! restarted run or a new viewer can start at any IDR). Samples are pulled on a thread of
//! their own and written straight into the pipeline. Buffer PTS become 90 kHz media time on a
//! regular grid (as for `exec:`, [`super::clock::FrameClock`]). An error or end of stream on
//! the bus ends the run with a clear message, and the supervisor restarts it.
//!
//! Built without the feature, a `gst:` URI is refused when the configuration is read.
//! Example pipelines for Jetson and libcamera: `board/pipelines.md`.

/// The appsink pinhole pulls from.
pub const APPSINK_NAME: &str = "pinhole";
/// What the appsink accepts.
pub const APPSINK_CAPS: &str = "video/x-h264,stream-format=byte-stream,alignment=au";
/// The message for a build without the feature.
pub const NOT_BUILT: &str =
    "gst: URIs need GStreamer, and this pinhole was built without the gstreamer feature; rebuild with --features gstreamer";

/// Checks a `gst:` pipeline description (what follows `gst:`).
pub fn parse(rest: &str) -> Result<String, String> {
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(
            "gst: needs a pipeline, e.g. \"gst:videotestsrc is-live=true ! x264enc tune=zerolatency ! h264parse\""
                .into(),
        );
    }
    if cfg!(not(feature = "gstreamer")) {
        return Err(NOT_BUILT.into());
    }
    Ok(rest.to_string())
}

/// The pipeline as launched: the user's, plus the parser, caps and appsink unless it already
/// ends in `appsink name=pinhole`.
pub fn full_pipeline(user: &str) -> String {
    let user = user.trim().trim_end_matches('!').trim_end();
    let last = user.rsplit('!').next().unwrap_or("").trim();
    let ends_in_our_sink = last.starts_with("appsink")
        && last.split_whitespace().any(|p| {
            p == format!("name={APPSINK_NAME}") || p == format!("name=\"{APPSINK_NAME}\"")
        });
    if ends_in_our_sink {
        user.to_string()
    } else {
        format!(
            "{user} ! h264parse config-interval=-1 ! {APPSINK_CAPS} ! appsink name={APPSINK_NAME} sync=false max-buffers=8"
        )
    }
}

#[cfg(feature = "gstreamer")]
pub use imp::run;

#[cfg(feature = "gstreamer")]
mod imp {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use gstreamer as gst;
    use gstreamer::prelude::*;
    use gstreamer_app::AppSink;
    use tokio::sync::watch;

    use super::{browser_profile, full_pipeline, APPSINK_CAPS, APPSINK_NAME};
    use crate::pipeline::FrameSink;
    use crate::source::clock::FrameClock;
    use crate::source::v4l2::frames::H264Buffers;
    use crate::source::{run_blocking, unix_now_us, Delivery, SharedPipeline, SourceError};
    use crate::status::Status;

    /// How long one pull waits before the stop flag and the bus are checked again.
    const PULL_TIMEOUT: Duration = Duration::from_millis(200);

    /// One run of the pipeline, until shutdown, an error or end of stream.
    pub async fn run(
        description: &str,
        pipeline: SharedPipeline,
        status: Arc<Status>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), SourceError> {
        let description = full_pipeline(description);
        let out = Delivery::new(pipeline, status);
        run_blocking("gst", out, shutdown, move |stop, out| {
            pull_loop(&description, stop, &mut |frame| out.frame(frame))
        })
        .await
    }

    /// Sets the pipeline to NULL however the run ends.
    struct Stopper(gst::Element);

    impl Drop for Stopper {
        fn drop(&mut self) {
            let _ = self.0.set_state(gst::State::Null);
        }
    }

    /// The first error (or end of stream) waiting on the bus, as one line.
    fn bus_problem(bus: &gst::Bus) -> Option<String> {
        while let Some(msg) = bus.pop_filtered(&[
            gst::MessageType::Error,
            gst::MessageType::Eos,
            gst::MessageType::Warning,
        ]) {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    let from = e
                        .src()
                        .map(|s| s.path_string().to_string())
                        .unwrap_or_else(|| "pipeline".into());
                    let debug = e
                        .debug()
                        .map(|d| format!(" ({})", d.lines().next().unwrap_or("")))
                        .unwrap_or_default();
                    return Some(crate::redact::redact(&format!(
                        "{from}: {}{debug}",
                        e.error()
                    )));
                }
                gst::MessageView::Eos(_) => {
                    return Some("the pipeline reached end of stream".into());
                }
                gst::MessageView::Warning(w) => {
                    let from = w
                        .src()
                        .map(|s| s.path_string().to_string())
                        .unwrap_or_default();
                    tracing::warn!(source = "gst", element = %from, "{}", crate::redact::redact(&w.error().to_string()));
                }
                _ => {}
            }
        }
        None
    }

    fn pull_loop(
        description: &str,
        stop: &AtomicBool,
        emit: &mut dyn FnMut(media::segmenter::Frame),
    ) -> Result<(), String> {
        gst::init().map_err(|e| format!("cannot initialise GStreamer: {e}"))?;
        let element = gst::parse::launch(description).map_err(|e| {
            crate::redact::redact(&format!("cannot build the pipeline {description:?}: {e}"))
        })?;
        let stopper = Stopper(element.clone());
        let bin = element.clone().downcast::<gst::Bin>().map_err(|_| {
            "the pipeline description is a single element, not a pipeline".to_string()
        })?;
        let sink = bin
            .by_name(APPSINK_NAME)
            .and_then(|e| e.downcast::<AppSink>().ok())
            .ok_or_else(|| format!("the pipeline has no appsink named {APPSINK_NAME}"))?;
        let caps = APPSINK_CAPS
            .parse::<gst::Caps>()
            .map_err(|e| format!("internal: bad appsink caps: {e}"))?;
        sink.set_caps(Some(&caps));
        sink.set_max_buffers(8);
        sink.set_drop(false);
        let bus = element
            .bus()
            .ok_or_else(|| "the pipeline has no bus".to_string())?;
        if element.set_state(gst::State::Playing).is_err() {
            let why = bus_problem(&bus).unwrap_or_else(|| "no error message".into());
            return Err(format!("the pipeline would not start: {why}"));
        }
        tracing::info!(source = "gst", pipeline = %crate::redact::redact(description), "started");

        let mut buffers = H264Buffers::new();
        let mut clock = FrameClock::new(0);
        let mut bad = 0u64;
        let mut warned_profile = false;
        let mut first_pts_ns: Option<u64> = None;
        let started = std::time::Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if let Some(problem) = bus_problem(&bus) {
                return Err(problem);
            }
            let Some(sample) =
                sink.try_pull_sample(gst::ClockTime::from_nseconds(PULL_TIMEOUT.as_nanos() as u64))
            else {
                if sink.is_eos() {
                    return Err(bus_problem(&bus)
                        .unwrap_or_else(|| "the pipeline reached end of stream".into()));
                }
                continue;
            };
            let nominal_90k = sample
                .caps()
                .and_then(|c| c.structure(0))
                .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
                .and_then(|f| {
                    let (num, den) = (i64::from(f.numer()), i64::from(f.denom()));
                    (num > 0 && den > 0).then(|| (90_000 * den + num / 2) / num)
                })
                .and_then(|t| u32::try_from(t).ok());
            let Some(buffer) = sample.buffer() else {
                continue;
            };
            // PTS (running time) in µs since the first buffer; arrival time when absent.
            let pts_us = match buffer.dts_or_pts() {
                Some(t) => {
                    let first = *first_pts_ns.get_or_insert(t.nseconds());
                    t.nseconds().saturating_sub(first) / 1_000
                }
                None => u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            };
            let map = match buffer.map_readable() {
                Ok(m) => m,
                Err(_) => continue,
            };
            let au = match buffers.push(map.as_slice()) {
                Ok(Some(au)) => au,
                Ok(None) => continue,
                Err(e) => {
                    bad += 1;
                    if bad <= 3 || bad % 100 == 0 {
                        tracing::warn!(source = "gst", count = bad, "dropped buffer: {e}");
                    }
                    continue;
                }
            };
            if let Some(profile) = au.sps().and_then(|s| s.get(1).copied()) {
                if !warned_profile && !browser_profile(profile) {
                    warned_profile = true;
                    tracing::warn!(source = "gst", profile_idc = profile,
                        "the encoder makes an H.264 profile browsers do not decode (4:2:2, 4:4:4 or 10-bit); put video/x-raw,format=I420 before the encoder");
                }
            }
            let stamp = clock.stamp(pts_us, nominal_90k);
            emit(media::segmenter::Frame {
                dts_90k: stamp.dts_90k,
                duration_90k: stamp.duration_90k,
                cts_offset_90k: 0,
                capture_unix_us: unix_now_us(),
                au,
            });
        }
        drop(stopper);
        Ok(())
    }
}

/// Whether browsers' decoders take this `profile_idc`: Baseline, Main, Extended, High (x264enc
/// picks High 4:4:4 when videotestsrc offers it Y444).
pub fn browser_profile(profile_idc: u8) -> bool {
    matches!(profile_idc, 66 | 77 | 88 | 100)
}

/// Without the feature the URI is refused at parse time; this is never reached.
#[cfg(not(feature = "gstreamer"))]
pub async fn run(
    _description: &str,
    _pipeline: super::SharedPipeline,
    _status: std::sync::Arc<crate::status::Status>,
    _shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), super::SourceError> {
    Err(super::SourceError::configuration(NOT_BUILT))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_appsink_with_forced_caps_is_appended_unless_the_pipeline_has_ours() {
        let p = full_pipeline("videotestsrc is-live=true ! x264enc tune=zerolatency ! ");
        assert_eq!(
            p,
            "videotestsrc is-live=true ! x264enc tune=zerolatency ! h264parse config-interval=-1 ! \
             video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=pinhole sync=false max-buffers=8"
        );
        let own = "nvarguscamerasrc ! nvv4l2h264enc ! h264parse ! appsink name=pinhole sync=false";
        assert_eq!(full_pipeline(own), own);
        // Another appsink is not ours: ours is appended after it (and GStreamer will refuse
        // the pipeline with a clear link error).
        assert!(full_pipeline("x ! appsink name=other")
            .ends_with("appsink name=pinhole sync=false max-buffers=8"));
    }

    #[test]
    fn only_profiles_browsers_decode_pass() {
        assert!(browser_profile(66) && browser_profile(100));
        assert!(!browser_profile(244) && !browser_profile(110) && !browser_profile(122));
    }

    #[test]
    fn an_empty_pipeline_is_refused_and_without_the_feature_every_pipeline_is() {
        assert!(parse("  ").unwrap_err().contains("needs a pipeline"));
        let r = parse("videotestsrc ! x264enc");
        if cfg!(feature = "gstreamer") {
            assert_eq!(r.unwrap(), "videotestsrc ! x264enc");
        } else {
            let e = r.unwrap_err();
            assert!(
                e.contains(
                    "built without the gstreamer feature; rebuild with --features gstreamer"
                ),
                "{e}"
            );
        }
    }
}
