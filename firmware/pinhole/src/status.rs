//! Live figures for `/api/status` and `/metrics`: one snapshot type feeds both, so the JSON and
//! the Prometheus text can never disagree.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::ErrorKind;
use crate::hub::HubCounters;
use crate::metrics::Family;

/// How much recent video the fps and bitrate figures average over (90 kHz units).
const RATE_WINDOW_90K: u64 = 2 * 90_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceState {
    Starting,
    Running,
    Restarting,
    Stopped,
}

#[derive(Debug)]
pub struct Status {
    started: Instant,
    /// The stream's name (`[[stream]] name`; "cam" for the single-camera config).
    name: String,
    source_uri: String,
    fragment_ms: u32,
    inner: Mutex<Inner>,
}

/// The frame path's own figures (counted lock-free by the pipeline, `pipeline::Counters`).
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameCounts {
    /// Frames the source handed to the pipeline.
    pub frames_in: u64,
    /// How long ago the last of them came (`None` before the first).
    pub last_frame_age: Option<Duration>,
}

#[derive(Debug)]
struct Inner {
    state: SourceState,
    last_error: Option<String>,
    /// What kind of failure stopped the source last, and the wait before its next run.
    error_kind: Option<ErrorKind>,
    retry_after: Option<Duration>,
    restarts: u64,
    watchdog_restarts: u64,
    codec: Option<String>,
    width: u32,
    height: u32,
    fragments: u64,
    frames: u64,
    /// (duration_90k, frames, bytes) of the most recent parts, newest last.
    window: VecDeque<(u32, u32, usize)>,
}

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub version: &'static str,
    /// The stream this is about.
    pub stream: String,
    pub uptime_s: f64,
    pub source: SourceSnapshot,
    pub video: VideoSnapshot,
    pub viewers: u64,
    pub viewer_skips: u64,
    pub fragments: u64,
    pub frames: u64,
    pub fragment_ms: u32,
    pub bytes_sent: u64,
}

#[derive(Debug, Serialize)]
pub struct SourceSnapshot {
    pub uri: String,
    pub state: SourceState,
    pub last_error: Option<String>,
    /// The kind of the failure that stopped the source last (`credentials`: the camera refused
    /// the user name or password), while `last_error` is shown.
    pub error_kind: Option<ErrorKind>,
    /// The wait chosen after that failure before the next try (seconds).
    pub retry_after_s: Option<f64>,
    pub restarts: u64,
    /// Restarts because the source delivered no frames for its timeout (also in `restarts`).
    pub watchdog_restarts: u64,
    /// Frames the source delivered, and seconds since the last one (`None` before the first).
    pub frames_received: u64,
    pub last_frame_age_s: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct VideoSnapshot {
    pub codec: Option<String>,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub bitrate_bps: u64,
}

impl Status {
    /// The status of the stream `name`. `source_uri` is shown as is: pass a redacted form if
    /// the URI can carry credentials.
    pub fn new(name: &str, source_uri: String, fragment_ms: u32) -> Status {
        Status {
            started: Instant::now(),
            name: name.to_string(),
            source_uri,
            fragment_ms,
            inner: Mutex::new(Inner {
                state: SourceState::Starting,
                last_error: None,
                error_kind: None,
                retry_after: None,
                restarts: 0,
                watchdog_restarts: 0,
                codec: None,
                width: 0,
                height: 0,
                fragments: 0,
                frames: 0,
                window: VecDeque::new(),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The watchdog restarted the source (counted on top of [`Self::source_failed`]).
    pub fn watchdog_fired(&self) {
        self.with(|i| i.watchdog_restarts += 1);
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> Option<R> {
        self.inner.lock().ok().map(|mut g| f(&mut g))
    }

    pub fn set_source_state(&self, state: SourceState) {
        self.with(|i| {
            // Once the source delivers frames, its last error is history.
            if state == SourceState::Running && i.state != SourceState::Running {
                i.last_error = None;
                i.error_kind = None;
                i.retry_after = None;
            }
            i.state = state;
        });
    }

    /// The source's state and its last error, for answers that depend on a live camera.
    pub fn source_health(&self) -> (SourceState, Option<String>) {
        self.with(|i| (i.state, i.last_error.clone()))
            .unwrap_or((SourceState::Restarting, Some("status lock poisoned".into())))
    }

    /// The error is redacted ([`crate::redact`]) on its way in: it reaches `/api/status`,
    /// `/metrics` and the snapshot's `503`, which viewers can read.
    pub fn source_failed(&self, kind: ErrorKind, error: String, retry_after: Duration) {
        let error = crate::redact::redact(&error);
        self.with(|i| {
            i.state = SourceState::Restarting;
            i.last_error = Some(error);
            i.error_kind = Some(kind);
            i.retry_after = Some(retry_after);
            i.restarts += 1;
            i.window.clear();
        });
    }

    /// Records a problem that does not stop the source (a corrupt NAL unit, say).
    pub fn note_source_error(&self, error: String) {
        let error = crate::redact::redact(&error);
        self.with(|i| {
            i.last_error = Some(error);
            i.error_kind = None;
            i.retry_after = None;
        });
    }

    pub fn set_video(&self, codec: &str, width: u32, height: u32) {
        self.with(|i| {
            i.codec = Some(codec.to_string());
            i.width = width;
            i.height = height;
        });
    }

    pub fn record_part(&self, duration_90k: u32, frames: u32, bytes: usize) {
        self.with(|i| {
            i.fragments += 1;
            i.frames += u64::from(frames);
            i.window.push_back((duration_90k, frames, bytes));
            let mut total: u64 = i.window.iter().map(|w| u64::from(w.0)).sum();
            while total > RATE_WINDOW_90K && i.window.len() > 1 {
                if let Some((d, _, _)) = i.window.pop_front() {
                    total -= u64::from(d);
                }
            }
        });
    }

    pub fn snapshot(&self, hub: HubCounters, path: FrameCounts) -> Snapshot {
        let uptime_s = self.started.elapsed().as_secs_f64();
        let empty = || Snapshot {
            version: crate::VERSION,
            stream: self.name.clone(),
            uptime_s,
            source: SourceSnapshot {
                uri: self.source_uri.clone(),
                state: SourceState::Restarting,
                last_error: Some("status lock poisoned".into()),
                error_kind: None,
                retry_after_s: None,
                restarts: 0,
                watchdog_restarts: 0,
                frames_received: path.frames_in,
                last_frame_age_s: None,
            },
            video: VideoSnapshot {
                codec: None,
                width: 0,
                height: 0,
                fps: 0.0,
                bitrate_bps: 0,
            },
            viewers: hub.viewers,
            viewer_skips: hub.skips,
            fragments: 0,
            frames: 0,
            fragment_ms: self.fragment_ms,
            bytes_sent: hub.bytes_sent,
        };
        self.with(|i| {
            let dur: u64 = i.window.iter().map(|w| u64::from(w.0)).sum();
            let frames: u64 = i.window.iter().map(|w| u64::from(w.1)).sum();
            let bytes: u64 = i.window.iter().map(|w| w.2 as u64).sum();
            let (fps, bitrate_bps) = if dur > 0 {
                (
                    (frames as f64 * 90_000.0 / dur as f64 * 100.0).round() / 100.0,
                    bytes * 8 * 90_000 / dur,
                )
            } else {
                (0.0, 0)
            };
            Snapshot {
                version: crate::VERSION,
                stream: self.name.clone(),
                uptime_s: (uptime_s * 1000.0).round() / 1000.0,
                source: SourceSnapshot {
                    uri: self.source_uri.clone(),
                    state: i.state,
                    last_error: i.last_error.clone(),
                    error_kind: i.error_kind,
                    retry_after_s: i
                        .retry_after
                        .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0),
                    restarts: i.restarts,
                    watchdog_restarts: i.watchdog_restarts,
                    frames_received: path.frames_in,
                    last_frame_age_s: path
                        .last_frame_age
                        .map(|age| (age.as_secs_f64() * 1000.0).round() / 1000.0),
                },
                video: VideoSnapshot {
                    codec: i.codec.clone(),
                    width: i.width,
                    height: i.height,
                    fps,
                    bitrate_bps,
                },
                viewers: hub.viewers,
                viewer_skips: hub.skips,
                fragments: i.fragments,
                frames: i.frames,
                fragment_ms: self.fragment_ms,
                bytes_sent: hub.bytes_sent,
            }
        })
        .unwrap_or_else(empty)
    }
}

impl Snapshot {
    /// The stream's metric families (`/metrics`; the renderer adds `stream=` with several).
    pub fn families(&self) -> Vec<Family> {
        let mut out = vec![
            Family::gauge("pinhole_uptime_seconds", "Seconds since pinhole started.")
                .with(format!("{:.3}", self.uptime_s)),
            Family::gauge("pinhole_source_up", "1 while the source delivers frames.")
                .with(u8::from(self.source.state == SourceState::Running)),
            Family::counter(
                "pinhole_source_restarts_total",
                "Times the source was restarted.",
            )
            .with(self.source.restarts),
            Family::counter(
                "pinhole_source_watchdog_restarts_total",
                "Times the source was restarted because it delivered no frames for its timeout.",
            )
            .with(self.source.watchdog_restarts),
            Family::counter(
                "pinhole_source_frames_received_total",
                "Frames the source delivered to the segmenter.",
            )
            .with(self.source.frames_received),
        ];
        if let Some(age) = self.source.last_frame_age_s {
            out.push(
                Family::gauge(
                    "pinhole_source_last_frame_age_seconds",
                    "Seconds since the source delivered its last frame.",
                )
                .with(format!("{age:.3}")),
            );
        }
        out.extend([
            Family::gauge("pinhole_viewers", "Open /api/video/cmaf streams.").with(self.viewers),
            Family::counter(
                "pinhole_viewer_skips_total",
                "Times a lagging viewer was moved forward to the next IDR.",
            )
            .with(self.viewer_skips),
            Family::counter("pinhole_fragments_total", "CMAF fragments cut.").with(self.fragments),
            Family::counter("pinhole_frames_total", "Video frames muxed.").with(self.frames),
            Family::gauge("pinhole_video_fps", "Frame rate over the last 2 s.")
                .with(self.video.fps),
            Family::gauge(
                "pinhole_video_bitrate_bps",
                "Video bitrate over the last 2 s.",
            )
            .with(self.video.bitrate_bps),
            Family::gauge("pinhole_video_width_pixels", "Coded picture width.")
                .with(self.video.width),
            Family::gauge("pinhole_video_height_pixels", "Coded picture height.")
                .with(self.video.height),
            Family::counter(
                "pinhole_sent_bytes_total",
                "Bytes of stream records sent to viewers.",
            )
            .with(self.bytes_sent),
        ]);
        let mut state = Family::gauge(
            "pinhole_source_state",
            "The source's state (the labelled one is 1).",
        );
        for (s, name) in [
            (SourceState::Starting, "starting"),
            (SourceState::Running, "running"),
            (SourceState::Restarting, "restarting"),
            (SourceState::Stopped, "stopped"),
        ] {
            state = state.labelled(&[("state", name)], u8::from(s == self.source.state));
        }
        out.push(state);
        let mut error = Family::gauge(
            "pinhole_source_error_info",
            "The source's last error, while it has one.",
        );
        if let Some(e) = &self.source.last_error {
            let e: String = e.chars().take(300).collect();
            error = error.labelled(&[("error", &e)], 1);
        }
        out.push(error);
        out
    }

    /// Prometheus text exposition format 0.0.4, for this stream alone.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(1024);
        crate::metrics::render(&mut out, &self.families());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fps_and_bitrate_come_from_the_last_two_seconds_of_parts() {
        let s = Status::new("cam", "testsrc".into(), 100);
        for _ in 0..100 {
            s.record_part(9_000, 3, 25_000); // 100 ms, 30 fps, 2 Mbit/s
        }
        let snap = s.snapshot(HubCounters::default(), FrameCounts::default());
        assert_eq!(snap.video.fps, 30.0);
        assert_eq!(snap.video.bitrate_bps, 2_000_000);
        assert_eq!(snap.fragments, 100);
    }

    #[test]
    fn metrics_text_has_help_type_and_value_for_each_figure() {
        let s = Status::new("cam", "testsrc".into(), 100);
        s.set_source_state(SourceState::Running);
        let text = s
            .snapshot(
                HubCounters {
                    viewers: 3,
                    skips: 1,
                    bytes_sent: 9,
                },
                FrameCounts::default(),
            )
            .to_prometheus();
        assert!(
            text.contains("# TYPE pinhole_viewers gauge\npinhole_viewers 3\n"),
            "{text}"
        );
        assert!(text.contains("pinhole_source_up 1\n"));
        assert!(text.contains("pinhole_viewer_skips_total 1\n"));
    }

    #[test]
    fn a_failure_is_shown_until_the_source_runs_again() {
        let s = Status::new("cam", "exec:x".into(), 100);
        s.source_failed(
            ErrorKind::Transient,
            "exec: command ended".into(),
            Duration::from_millis(250),
        );
        let snap = s.snapshot(HubCounters::default(), FrameCounts::default());
        assert_eq!(snap.source.state, SourceState::Restarting);
        assert_eq!(snap.source.restarts, 1);
        assert!(snap.source.last_error.is_some());
        assert_eq!(snap.source.error_kind, Some(ErrorKind::Transient));
        assert_eq!(snap.source.retry_after_s, Some(0.25));
        s.set_source_state(SourceState::Running);
        assert!(s
            .snapshot(HubCounters::default(), FrameCounts::default())
            .source
            .last_error
            .is_none());
    }
}
