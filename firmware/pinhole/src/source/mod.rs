//! Video sources and their supervisor.
//!
//! Each source is one thin adapter that turns its input into [`media::segmenter::Frame`]s and
//! hands them to a [`FrameSink`]. Retry and backoff live in one place, [`supervise`], so every
//! source gets the same behaviour: restart with capped exponential backoff, reset once a run has
//! been healthy for a while, state and last error visible in `/api/status`.

pub(crate) mod clock;
pub(crate) mod exec;
pub mod gst;
pub mod pattern;
pub(crate) mod rtsp;
pub(crate) mod rtsps;
pub mod testsrc;
pub mod v4l2;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::ErrorKind;
use crate::pipeline::{FrameSink, SharedPipeline};
use crate::status::{SourceState, Status};

/// A parsed source URI.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    Testsrc(testsrc::TestsrcOptions),
    Exec(String),
    Rtsp(rtsp::RtspSpec),
    V4l2(v4l2::V4l2Options),
    /// A GStreamer pipeline description (cargo feature `gstreamer`).
    Gst(String),
}

impl SourceSpec {
    pub const SCHEMES: &'static str = "testsrc[?options], exec:COMMAND, rtsp://HOST/PATH, v4l2:/dev/videoN[?options], gst:PIPELINE";

    pub fn parse(uri: &str) -> Result<SourceSpec, String> {
        let uri = uri.trim();
        if let Some(rest) = uri.strip_prefix("testsrc") {
            let query = match rest {
                "" => "",
                r if r.starts_with('?') => &r[1..],
                _ => {
                    return Err(format!(
                        "{:?} is not a known source; allowed: {}",
                        redact_credentials(uri),
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
        if let Some(rest) = uri.strip_prefix("v4l2:") {
            return v4l2::V4l2Options::parse(rest).map(SourceSpec::V4l2);
        }
        if let Some(rest) = uri.strip_prefix("gst:") {
            return gst::parse(rest).map(SourceSpec::Gst);
        }
        if uri.starts_with("rtsp://") || uri.starts_with("rtsps://") {
            return rtsp::RtspSpec::parse(uri).map(SourceSpec::Rtsp);
        }
        Err(format!(
            "{:?} is not a known source; allowed: {}",
            redact_credentials(uri),
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
            SourceSpec::Rtsp(r) => r.display_uri(),
            SourceSpec::V4l2(o) => o.display_uri(),
            SourceSpec::Gst(p) => format!("gst:{}", redact_credentials(p)),
        }
    }

    /// A short name for logs and status, without options that might carry secrets.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Testsrc(_) => "testsrc",
            SourceSpec::Exec(_) => "exec",
            SourceSpec::Rtsp(_) => "rtsp",
            SourceSpec::V4l2(_) => "v4l2",
            SourceSpec::Gst(_) => "gst",
        }
    }

    /// The watchdog's default: a source that delivers no frame for this long is restarted.
    /// Commands get longer, since some (ffmpeg probing a camera) take seconds to start.
    pub fn default_frame_timeout(&self) -> Duration {
        match self {
            SourceSpec::Exec(_) => Duration::from_secs(10),
            _ => Duration::from_secs(5),
        }
    }
}

/// The wall-clock time now, in µs since the Unix epoch: the capture time of a frame that
/// carries none (an `exec:` pipe, an RTSP packet, a GStreamer buffer), stamped on arrival.
pub fn unix_now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Masks every credential in `text`: see [`crate::redact`], the one redaction.
pub fn redact_credentials(text: &str) -> String {
    crate::redact::redact(text)
}

/// Why a source run ended: its kind (which decides the backoff and what `/api/status` says)
/// and its cause, one line for the log and status.
#[derive(Debug, thiserror::Error)]
#[error("{cause}")]
pub struct SourceError {
    kind: ErrorKind,
    cause: String,
}

impl SourceError {
    pub fn new(kind: ErrorKind, cause: impl Into<String>) -> SourceError {
        SourceError {
            kind,
            cause: cause.into(),
        }
    }

    /// May work on the next try (a reset connection, a command that exited, a stall).
    pub fn transient(cause: impl Into<String>) -> SourceError {
        Self::new(ErrorKind::Transient, cause)
    }

    /// The camera refused the credentials.
    pub fn credentials(cause: impl Into<String>) -> SourceError {
        Self::new(ErrorKind::Credentials, cause)
    }

    /// The configuration cannot work as written.
    pub fn configuration(cause: impl Into<String>) -> SourceError {
        Self::new(ErrorKind::Configuration, cause)
    }

    /// The camera offers nothing pinhole can stream.
    pub fn unsupported(cause: impl Into<String>) -> SourceError {
        Self::new(ErrorKind::Unsupported, cause)
    }

    /// Shutdown (or the watchdog) asked the run to stop.
    pub fn stopped() -> SourceError {
        Self::new(ErrorKind::Stopped, "stopped")
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn is_stopped(&self) -> bool {
        self.kind == ErrorKind::Stopped
    }
}

/// Capped exponential backoff: 250 ms, 500 ms, 1 s, 1 s, …; reset after a healthy run. After
/// a failure that will not go away by itself (refused credentials, a configuration or camera
/// pinhole cannot use) it waits [`Backoff::SLOW_FIRST`] doubling to [`Backoff::SLOW_CAP`]
/// instead: a camera that locks an account after a few wrong passwords is not hammered.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    slow: Duration,
}

impl Backoff {
    /// The first wait after a failure that is not transient, and its cap.
    pub const SLOW_FIRST: Duration = Duration::from_secs(5);
    pub const SLOW_CAP: Duration = Duration::from_secs(60);

    pub const FIRST: Duration = Duration::from_millis(250);
    /// The cap is short so a camera that returns is back on screen quickly: at most this long
    /// after its return, plus the session setup (the target is 2 s).
    pub const CAP: Duration = Duration::from_secs(1);
    /// A run at least this long counts as healthy and resets the backoff.
    pub const HEALTHY: Duration = Duration::from_secs(10);

    pub fn new() -> Backoff {
        Backoff {
            next: Self::FIRST,
            slow: Self::SLOW_FIRST,
        }
    }

    /// Starts again from [`Self::FIRST`] (after a run that delivered frames).
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
        self.slow = Self::SLOW_FIRST;
    }

    /// The wait before the next run, after a run of `ran_for` that ended in `kind`.
    pub fn after(&mut self, kind: ErrorKind, ran_for: Duration) -> Duration {
        match kind {
            ErrorKind::Transient | ErrorKind::Stopped => {
                self.slow = Self::SLOW_FIRST;
                self.next_delay(ran_for)
            }
            _ => {
                self.next = Self::FIRST;
                let d = self.slow;
                self.slow = (self.slow * 2).min(Self::SLOW_CAP);
                d
            }
        }
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

/// Runs the source until shutdown, restarting it with backoff whenever it ends, with the
/// source kind's default frame watchdog ([`SourceSpec::default_frame_timeout`]).
pub async fn supervise(
    spec: SourceSpec,
    pipeline: SharedPipeline,
    status: Arc<Status>,
    shutdown: watch::Receiver<bool>,
) {
    supervise_with(spec, None, pipeline, status, shutdown).await;
}

/// How long a source asked to stop (shutdown, or the watchdog) may take to end its run.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// [`supervise`] with the watchdog's timeout given: `None` for the source's default,
/// `Some(Duration::ZERO)` for no watchdog.
///
/// The watchdog restarts a run that has delivered no frame into the pipeline for
/// `frame_timeout` (counted from the start of the run, or its last frame): a camera that keeps
/// its connection open and sends nothing, a wedged driver, an encoder that stopped. Each run
/// gets its own stop signal, raised by shutdown or by the watchdog; the source ends its run on
/// it as it does on shutdown.
pub async fn supervise_with(
    spec: SourceSpec,
    frame_timeout: Option<Duration>,
    pipeline: SharedPipeline,
    status: Arc<Status>,
    mut global: watch::Receiver<bool>,
) {
    let frame_timeout = frame_timeout.unwrap_or_else(|| spec.default_frame_timeout());
    // The pipeline's counters: the watchdog's "last frame" (read lock-free).
    let counters = pipeline
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .counters();
    let mut backoff = Backoff::new();
    let mut last_error: Option<String> = None;
    let mut repeats = 0u64;
    loop {
        if *global.borrow() {
            break;
        }
        status.set_source_state(SourceState::Starting);
        let started = tokio::time::Instant::now();
        let frames_before = counters.frames_in();
        let (stop_run, shutdown) = watch::channel(false);
        let run = async {
            match &spec {
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
                SourceSpec::Rtsp(r) => {
                    rtsp::run(r, pipeline.clone(), status.clone(), shutdown.clone()).await
                }
                SourceSpec::V4l2(o) => {
                    v4l2::run(o, pipeline.clone(), status.clone(), shutdown.clone()).await
                }
                SourceSpec::Gst(p) => {
                    gst::run(p, pipeline.clone(), status.clone(), shutdown.clone()).await
                }
            }
        };
        tokio::pin!(run);
        let result = loop {
            // The watchdog's deadline: the last frame of this run (or its start) + the timeout.
            let last = counters
                .last_frame_at()
                .filter(|_| counters.frames_in() != frames_before)
                .map_or(started, |t| tokio::time::Instant::from_std(t).max(started));
            let deadline = last + frame_timeout;
            tokio::select! {
                r = &mut run => break r,
                changed = global.changed() => {
                    if changed.is_ok() && !*global.borrow() {
                        continue;
                    }
                    let _ = stop_run.send(true);
                    let _ = tokio::time::timeout(STOP_GRACE, &mut run).await;
                    break Err(SourceError::stopped());
                }
                _ = tokio::time::sleep_until(deadline), if !frame_timeout.is_zero() => {
                    let now_last = counters
                        .last_frame_at()
                        .filter(|_| counters.frames_in() != frames_before)
                        .map(tokio::time::Instant::from_std);
                    if now_last.is_some_and(|t| t > last) {
                        continue; // frames came while we slept
                    }
                    let _ = stop_run.send(true);
                    if tokio::time::timeout(STOP_GRACE, &mut run).await.is_err() {
                        tracing::error!(source = spec.kind(), "the stalled source did not stop within {} s; starting a new run anyway", STOP_GRACE.as_secs());
                    }
                    status.watchdog_fired();
                    break Err(SourceError::transient(format!(
                        "{}: no frames for {:.1} s; restarted by the watchdog",
                        spec.kind(),
                        frame_timeout.as_secs_f64()
                    )));
                }
            }
        };
        // Whatever ended the run, the partial fragment it left is sent on, so nothing is lost.
        if let Ok(mut p) = pipeline.lock() {
            p.end_of_run();
        }
        // Whatever a source says about its failure may repeat its URL or command line.
        let (kind, err) = match result {
            Err(e) if e.is_stopped() => break,
            Ok(()) => (ErrorKind::Transient, "source ended".to_string()),
            Err(e) => (e.kind(), redact_credentials(&e.to_string())),
        };
        if *global.borrow() {
            break;
        }
        // A run that delivered frames was healthy: the next attempt comes quickly, and its
        // failure is news.
        if counters.frames_in() != frames_before {
            backoff.reset();
            last_error = None;
        }
        let delay = backoff.after(kind, started.elapsed());
        // One line per problem: the same error again (a camera that stays away) is logged at the
        // 1st, 10th, 100th, … repeat, not once a second.
        if last_error.as_deref() == Some(err.as_str()) {
            repeats += 1;
        } else {
            repeats = 0;
            last_error = Some(err.clone());
        }
        let retry_in_ms = delay.as_millis() as u64;
        if repeats == 0 {
            tracing::warn!(source = spec.kind(), error = %err, kind = %kind, retry_in_ms, "source stopped; restarting");
        } else if is_power_of_ten(repeats + 1) {
            tracing::warn!(source = spec.kind(), error = %err, kind = %kind, times = repeats + 1, retry_in_ms, "source still failing; restarting");
        } else {
            tracing::debug!(source = spec.kind(), error = %err, kind = %kind, times = repeats + 1, retry_in_ms, "source stopped again; restarting");
        }
        status.source_failed(kind, err, delay);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = global.changed() => break,
        }
    }
    status.set_source_state(SourceState::Stopped);
}

/// 1, 10, 100, …: when a repeated error is worth another log line.
fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n % 10 == 0 {
        n /= 10;
    }
    n == 1
}

/// The test source encodes on a blocking thread (OpenH264 is CPU-bound) and writes straight
/// into the pipeline: no channel hop, no extra latency.
async fn testsrc_run(
    opts: testsrc::TestsrcOptions,
    pipeline: SharedPipeline,
    status: Arc<Status>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), SourceError> {
    let out = Delivery::new(pipeline, status);
    run_blocking("testsrc", out, shutdown, move |stop, out| {
        testsrc::run(&opts, stop, &mut |frame| out.frame(frame)).map_err(|e| e.to_string())
    })
    .await
}

/// Where one run of a source delivers its frames: the pipeline, and the source's state, which
/// turns Running at the first frame.
pub struct Delivery {
    pipeline: SharedPipeline,
    status: Arc<Status>,
    running: bool,
}

impl Delivery {
    pub fn new(pipeline: SharedPipeline, status: Arc<Status>) -> Delivery {
        Delivery {
            pipeline,
            status,
            running: false,
        }
    }

    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }
}

impl FrameSink for Delivery {
    fn frame(&mut self, frame: media::segmenter::Frame) {
        if !std::mem::replace(&mut self.running, true) {
            self.status.set_source_state(SourceState::Running);
        }
        if let Ok(mut p) = self.pipeline.lock() {
            p.frame(frame);
        }
    }
}

/// One run of a source whose work blocks (an encoder, a device's `DQBUF`, a GStreamer pull):
/// `body` runs on a blocking thread, inside the caller's tracing span (so its log lines name the
/// stream), with a stop flag that is set at shutdown, and delivers into `out`. Its error becomes
/// `"{kind}: {error}"`.
pub async fn run_blocking<F>(
    kind: &'static str,
    out: Delivery,
    mut shutdown: watch::Receiver<bool>,
    body: F,
) -> Result<(), SourceError>
where
    F: FnOnce(&AtomicBool, &mut Delivery) -> Result<(), String> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let span = tracing::Span::current();
    let mut task = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let mut out = out;
        body(&thread_stop, &mut out)
    });
    let res = tokio::select! {
        r = &mut task => r,
        _ = shutdown.changed() => {
            stop.store(true, Ordering::Relaxed);
            let _ = task.await;
            return Err(SourceError::stopped());
        }
    };
    match res {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SourceError::transient(format!("{kind}: {e}"))),
        Err(e) => Err(SourceError::transient(format!(
            "{kind}: thread failed: {e}"
        ))),
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
        assert_eq!(seq, vec![250, 500, 1000, 1000, 1000, 1000]);
        assert_eq!(b.next_delay(Duration::from_secs(11)).as_millis(), 250);
    }

    #[test]
    fn refused_credentials_back_off_slowly_and_a_reset_quickly() {
        // Why: a wrong camera password was retried every second, like a reset connection, and
        // cameras lock an account out after a few wrong tries.
        let mut b = Backoff::new();
        let short = Duration::from_millis(10);
        let slow: Vec<u64> = (0..6)
            .map(|_| b.after(ErrorKind::Credentials, short).as_secs())
            .collect();
        assert_eq!(slow, vec![5, 10, 20, 40, 60, 60]);
        let quick: Vec<u128> = (0..3)
            .map(|_| b.after(ErrorKind::Transient, short).as_millis())
            .collect();
        assert_eq!(quick, vec![250, 500, 1000]);
        assert_eq!(b.after(ErrorKind::Configuration, short).as_secs(), 5);
        b.reset();
        assert_eq!(b.after(ErrorKind::Unsupported, short).as_secs(), 5);
    }

    #[test]
    fn a_repeated_error_is_logged_at_powers_of_ten() {
        let logged: Vec<u64> = (1..=1000).filter(|&n| is_power_of_ten(n)).collect();
        assert_eq!(logged, vec![1, 10, 100, 1000]);
    }

    #[test]
    fn an_unknown_source_s_error_does_not_repeat_its_password() {
        // Why: the first-boot reason and `pinhole --check` printed such a URL whole.
        let e = SourceSpec::parse("http://admin:hunter2@cam/video?password=hunter3").unwrap_err();
        assert!(!e.contains("hunter2") && !e.contains("hunter3"), "{e}");
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
