//! Video sources and their supervisor.
//!
//! Each source is one thin adapter that turns its input into [`media::segmenter::Frame`]s and
//! hands them to a [`FrameSink`]. Retry and backoff live in one place, [`supervise`], so every
//! source gets the same behaviour: restart with capped exponential backoff, reset once a run has
//! been healthy for a while, state and last error visible in `/api/status`.

pub mod clock;
pub mod exec;
pub mod pattern;
pub mod testsrc;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::pipeline::Pipeline;
use crate::status::{SourceState, Status};

/// A parsed source URI.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    Testsrc(testsrc::TestsrcOptions),
    Exec(String),
}

impl SourceSpec {
    pub const SCHEMES: &'static str = "testsrc[?options], exec:COMMAND";

    pub fn parse(uri: &str) -> Result<SourceSpec, String> {
        let uri = uri.trim();
        if let Some(rest) = uri.strip_prefix("testsrc") {
            let query = match rest {
                "" => "",
                r if r.starts_with('?') => &r[1..],
                _ => {
                    return Err(format!(
                        "{uri:?} is not a known source; allowed: {}",
                        Self::SCHEMES
                    ))
                }
            };
            return testsrc::TestsrcOptions::from_query(query)
                .map(SourceSpec::Testsrc)
                .map_err(|e| e.to_string());
        }
        if let Some(cmd) = uri.strip_prefix("exec:") {
            if cmd.trim().is_empty() {
                return Err(
                    "exec: needs a command, e.g. \"exec:rpicam-vid -t 0 --inline -o -\"".into(),
                );
            }
            return Ok(SourceSpec::Exec(cmd.to_string()));
        }
        Err(format!(
            "{uri:?} is not a known source; allowed: {}",
            Self::SCHEMES
        ))
    }

    /// The URI as shown in status and logs, with any `user:password@` in it masked.
    pub fn display_uri(&self) -> String {
        match self {
            SourceSpec::Testsrc(o) => format!(
                "testsrc?size={}x{}&fps={}&gop={}&bitrate={}",
                o.width, o.height, o.fps, o.gop_frames, o.bitrate_bps
            ),
            SourceSpec::Exec(cmd) => format!("exec:{}", redact_credentials(cmd)),
        }
    }

    /// A short name for logs and status, without options that might carry secrets.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Testsrc(_) => "testsrc",
            SourceSpec::Exec(_) => "exec",
        }
    }
}

/// Masks the password in every `scheme://user:password@host` inside `text`.
pub fn redact_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Where sources deliver frames. Implemented by the pipeline (segmenter + hub).
pub trait FrameSink: Send {
    fn frame(&mut self, frame: media::segmenter::Frame);
}

/// Shared handle to the pipeline that sources write into.
pub type SharedPipeline = Arc<Mutex<Pipeline>>;

/// Why a source run ended.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Failed(String),
    #[error("stopped")]
    Stopped,
}

/// Capped exponential backoff: 250 ms, 500 ms, 1 s, 2 s, 2 s, …; reset after a healthy run.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(250);
    /// The cap is short so a camera that returns is back on screen quickly.
    pub const CAP: Duration = Duration::from_secs(2);
    /// A run at least this long counts as healthy and resets the backoff.
    pub const HEALTHY: Duration = Duration::from_secs(10);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= Self::HEALTHY {
            self.next = Self::FIRST;
        }
        let d = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        d
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the source until shutdown, restarting it with backoff whenever it ends.
pub async fn supervise(
    spec: SourceSpec,
    pipeline: SharedPipeline,
    status: Arc<Status>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        status.set_source_state(SourceState::Starting);
        let started = tokio::time::Instant::now();
        let result = match &spec {
            SourceSpec::Testsrc(opts) => {
                testsrc_run(
                    opts.clone(),
                    pipeline.clone(),
                    status.clone(),
                    shutdown.clone(),
                )
                .await
            }
            SourceSpec::Exec(cmd) => {
                exec::run(cmd, pipeline.clone(), status.clone(), shutdown.clone()).await
            }
        };
        // Whatever ended the run, the partial fragment it left is sent on, so nothing is lost.
        if let Ok(mut p) = pipeline.lock() {
            p.end_of_run();
        }
        let err = match result {
            Err(SourceError::Stopped) => break,
            Ok(()) => "source ended".to_string(),
            Err(SourceError::Failed(e)) => e,
        };
        if *shutdown.borrow() {
            break;
        }
        let delay = backoff.next_delay(started.elapsed());
        tracing::warn!(source = spec.kind(), error = %err, retry_in_ms = delay.as_millis() as u64, "source stopped; restarting");
        status.source_failed(err);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => break,
        }
    }
    status.set_source_state(SourceState::Stopped);
}

/// The test source encodes on a blocking thread (OpenH264 is CPU-bound) and writes straight
/// into the pipeline: no channel hop, no extra latency.
async fn testsrc_run(
    opts: testsrc::TestsrcOptions,
    pipeline: SharedPipeline,
    status: Arc<Status>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SourceError> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let mut task = tokio::task::spawn_blocking(move || {
        let mut running = false;
        testsrc::run(&opts, &stop2, &mut |frame| {
            if !running {
                running = true;
                status.set_source_state(SourceState::Running);
            }
            if let Ok(mut p) = pipeline.lock() {
                p.frame(frame);
            }
        })
    });
    let res = tokio::select! {
        r = &mut task => r,
        _ = shutdown.changed() => {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = task.await;
            return Err(SourceError::Stopped);
        }
    };
    match res {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SourceError::Failed(format!("testsrc: {e}"))),
        Err(e) => Err(SourceError::Failed(format!("testsrc thread failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_after_a_healthy_run() {
        let mut b = Backoff::new();
        let short = Duration::from_millis(10);
        let seq: Vec<u128> = (0..6).map(|_| b.next_delay(short).as_millis()).collect();
        assert_eq!(seq, vec![250, 500, 1000, 2000, 2000, 2000]);
        assert_eq!(b.next_delay(Duration::from_secs(11)).as_millis(), 250);
    }

    #[test]
    fn passwords_in_source_commands_are_masked() {
        assert_eq!(
            redact_credentials("ffmpeg -i rtsp://admin:hunter2@10.0.0.5:554/s1 -f h264 -"),
            "ffmpeg -i rtsp://admin:***@10.0.0.5:554/s1 -f h264 -"
        );
        assert_eq!(
            redact_credentials("rtsp://10.0.0.5:554/s"),
            "rtsp://10.0.0.5:554/s"
        );
    }

    #[test]
    fn source_uris_parse_and_unknown_schemes_are_refused() {
        assert!(matches!(
            SourceSpec::parse("testsrc"),
            Ok(SourceSpec::Testsrc(_))
        ));
        assert!(matches!(
            SourceSpec::parse("exec:ffmpeg -i x -f h264 -"),
            Ok(SourceSpec::Exec(c)) if c == "ffmpeg -i x -f h264 -"
        ));
        assert!(SourceSpec::parse("exec:").is_err());
        assert!(SourceSpec::parse("testsrcfoo").is_err());
        let e = SourceSpec::parse("http://x").unwrap_err();
        assert!(e.contains("exec:COMMAND"), "{e}");
    }
}
