//! `exec:COMMAND`: H.264 Annex-B from a command's standard output.
//!
//! The command runs under `/bin/sh -c` in its own process group, so pipelines work and the
//! whole group is killed when the run ends. Its stderr is logged line by line. The supervisor
//! restarts it with backoff when it exits; a command that stays silent for [`STALL_TIMEOUT`]
//! is treated as hung and restarted too (cameras do hang: camera-streamer #33).
//!
//! The pipe is read on a thread of its own with plain blocking `read()` calls, straight into
//! the Annex-B splitter, and frames go into the pipeline from there (as the test source does):
//! one system call per chunk the command writes, and no reactor, task or timer work per read.
//! A watchdog task checks the time of the last data, and ends the run by killing the process
//! group, which makes the blocked `read()` return end of file.
//!
//! Latency note: an Annex-B stream does not say where an access unit ends, so a frame is known
//! complete only when the first NAL of the next one arrives (see `media::h264`). That costs one
//! frame interval; the test source avoids it because its encoder hands over whole frames.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use media::h264::AnnexBReader;
use media::segmenter::Frame;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{oneshot, watch};
use tracing::Instrument as _;

use super::clock::FrameClock;
use super::{unix_now_us, Delivery, FrameSink, SharedPipeline, SourceError};
use crate::status::Status;

/// A command that writes nothing for this long is considered hung and restarted.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest stderr line logged; the rest is cut.
const MAX_LOG_LINE: usize = 400;
/// Bytes asked for per `read()`: more than a pipe holds (64 KiB on Linux), so one call takes
/// whatever the command has written.
const READ_CHUNK: usize = 128 * 1024;
/// How long the end of a run waits for the reader thread, the exit status and the last
/// stderr line once the process group is killed.
const END_GRACE: Duration = Duration::from_secs(2);

pub async fn run(
    cmd: &str,
    pipeline: SharedPipeline,
    status: Arc<Status>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), SourceError> {
    run_with_stall_timeout(cmd, pipeline, status, shutdown, STALL_TIMEOUT).await
}

async fn run_with_stall_timeout(
    cmd: &str,
    pipeline: SharedPipeline,
    status: Arc<Status>,
    mut shutdown: watch::Receiver<bool>,
    stall_timeout: Duration,
) -> Result<(), SourceError> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| SourceError::transient(format!("exec: cannot start /bin/sh: {e}")))?;
    let pid = child.id();
    let group = ProcessGroup::new(pid);
    tracing::info!(source = "exec", pid, command = %super::redact_credentials(cmd), "started");

    let last_stderr = Arc::new(Mutex::new(String::new()));
    let stderr_task = child
        .stderr
        .take()
        .and_then(|e| tokio::process::ChildStderr::from_std(e).ok())
        .map(|e| tokio::spawn(log_stderr(e, pid, last_stderr.clone()).in_current_span()));
    let Some(stdout) = child.stdout.take() else {
        group.kill();
        reap(&mut child).await;
        return Err(SourceError::transient("exec: no stdout pipe"));
    };

    let started = Instant::now();
    let shared = Arc::new(ReaderShared {
        started,
        last_data_us: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let (done_tx, mut done) = oneshot::channel();
    let sink = ExecSink {
        out: Delivery::new(pipeline, status),
        nominal_90k: None,
        bad_nals: 0,
    };
    let thread_shared = shared.clone();
    let span = tracing::Span::current();
    let spawned = std::thread::Builder::new()
        .name("exec-reader".into())
        .spawn(move || {
            let _entered = span.enter();
            let end = read_stdout(stdout, sink, &thread_shared);
            let _ = done_tx.send(end);
        });
    if let Err(e) = spawned {
        group.kill();
        reap(&mut child).await;
        return Err(SourceError::transient(format!(
            "exec: cannot start the reader thread: {e}"
        )));
    }

    // The watchdog: sleeps until the stall deadline (last data + timeout), which data keeps
    // pushing back, so it wakes about once per timeout while the command is healthy.
    let mut outcome = loop {
        let last_us = shared.last_data_us.load(Ordering::Relaxed);
        let deadline = started + Duration::from_micros(last_us) + stall_timeout;
        tokio::select! {
            end = &mut done => break Ended::Reader(end.ok()),
            _ = shutdown.changed() => break Ended::Stopped,
            _ = tokio::time::sleep_until(deadline.into()) => {
                if shared.last_data_us.load(Ordering::Relaxed) == last_us {
                    break Ended::Stalled;
                }
            }
        }
    };
    // Whatever ended the run: no more frames from this run, and no survivor of the group. The
    // kill also ends a read() still blocked on the pipe.
    shared.stop.store(true, Ordering::Relaxed);
    group.kill();
    let reader = match &mut outcome {
        Ended::Reader(end) => end.take(),
        Ended::Stopped | Ended::Stalled => {
            // A descendant that left the group may still hold the pipe open: then the thread
            // is left behind, and `stop` keeps it from touching the pipeline again.
            tokio::time::timeout(END_GRACE, &mut done)
                .await
                .ok()
                .and_then(Result::ok)
        }
    };
    let exit = reap(&mut child).await;
    if exit.is_some() {
        group.disarm();
    } else {
        // Not dead yet (uninterruptible sleep): reap it whenever it goes, off the runtime.
        std::thread::spawn(move || child.wait());
    }
    if let Some(task) = stderr_task {
        // The group is dead, so stderr reaches end of file: wait for its last line.
        let _ = tokio::time::timeout(END_GRACE, task).await;
    }
    if let Some(r) = &reader {
        if r.resyncs > 0 {
            tracing::debug!(
                source = "exec",
                resyncs = r.resyncs,
                "timeline resynchronised to arrival"
            );
        }
    }
    match outcome {
        Ended::Stopped => Err(SourceError::stopped()),
        Ended::Stalled => Err(SourceError::transient(format!(
            "exec: no data for {} s; restarting the command",
            stall_timeout.as_secs()
        ))),
        Ended::Reader(_) => match reader.map(|r| r.result) {
            Some(Ok(())) => {
                let code = exit.map_or_else(|| "no exit status".to_string(), |s| s.to_string());
                let mut msg = format!("exec: command ended ({code})");
                let last = last_stderr.lock().map(|l| l.clone()).unwrap_or_default();
                if !last.is_empty() {
                    msg.push_str(&format!("; last stderr: {last}"));
                }
                Err(SourceError::transient(msg))
            }
            Some(Err(e)) => Err(SourceError::transient(format!("exec: reading stdout: {e}"))),
            None => Err(SourceError::transient("exec: the reader thread failed")),
        },
    }
}

/// Why the watchdog loop ended.
enum Ended {
    /// The reader thread finished (`None`: it panicked).
    Reader(Option<ReaderEnd>),
    Stopped,
    Stalled,
}

/// Shared between the reader thread and the watchdog.
struct ReaderShared {
    started: Instant,
    /// When data last arrived, in µs since `started`.
    last_data_us: AtomicU64,
    /// Set when the run is over: the thread must not deliver anything more.
    stop: AtomicBool,
}

impl ReaderShared {
    fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

struct ReaderEnd {
    /// `Ok` at end of file.
    result: std::io::Result<()>,
    resyncs: u64,
}

/// The reader thread: blocking reads into the Annex-B reader until end of file, an error, or
/// `stop`. At end of file the last access unit is complete and is delivered too.
fn read_stdout(mut stdout: ChildStdout, mut sink: ExecSink, shared: &ReaderShared) -> ReaderEnd {
    let mut reader = AnnexBReader::new();
    let mut clock = FrameClock::new(0);
    let mut buf = vec![0u8; READ_CHUNK];
    let result = loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        };
        reader.push(buf.get(..n).unwrap_or_default());
        let now_us = shared.now_us();
        shared.last_data_us.store(now_us, Ordering::Relaxed);
        if shared.stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        while let Some(next) = reader.next_au() {
            sink.accept(next, &mut clock, now_us);
        }
    };
    if result.is_ok() && !shared.stop.load(Ordering::Relaxed) {
        // End of stream: the last access unit is complete now.
        reader.finish();
        let now_us = shared.now_us();
        while let Some(next) = reader.next_au() {
            sink.accept(next, &mut clock, now_us);
        }
    }
    ReaderEnd {
        result,
        resyncs: clock.resyncs,
    }
}

/// Logs the command's stderr line by line, keeping the last line for the error message.
async fn log_stderr(stderr: tokio::process::ChildStderr, pid: u32, last: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match lines.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                // A command's error output may repeat its URL: ffmpeg's
                // `rtsp://admin:hunter2@cam/s: Connection refused`.
                let line: String = super::redact_credentials(text.trim_end())
                    .chars()
                    .take(MAX_LOG_LINE)
                    .collect();
                if line.is_empty() {
                    continue;
                }
                tracing::info!(source = "exec", pid, "stderr: {line}");
                if let Ok(mut l) = last.lock() {
                    *l = line;
                }
            }
        }
    }
}

/// Reaps the (killed) command, waiting at most [`END_GRACE`]; its exit status if it came.
async fn reap(child: &mut Child) -> Option<ExitStatus> {
    let until = tokio::time::Instant::now() + END_GRACE;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if tokio::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ => return None,
        }
    }
}

/// Turns access units into timed frames for the pipeline.
struct ExecSink {
    out: Delivery,
    nominal_90k: Option<u32>,
    bad_nals: u64,
}

impl ExecSink {
    fn accept(
        &mut self,
        next: Result<media::h264::AccessUnit, media::h264::H264Error>,
        clock: &mut FrameClock,
        now_us: u64,
    ) {
        let au = match next {
            Ok(au) => au,
            Err(e) => {
                self.bad_nals += 1;
                // Log the first few and then every hundredth: a garbage stream must not flood.
                if self.bad_nals <= 5 || self.bad_nals % 100 == 0 {
                    tracing::warn!(source = "exec", count = self.bad_nals, error = %e, "dropped bad NAL unit");
                }
                self.out
                    .status()
                    .note_source_error(format!("exec: bad input: {e}"));
                return;
            }
        };
        if let Some(sps) = au.sps() {
            if let Ok(parsed) = media::sps::parse_sps(sps) {
                self.nominal_90k = parsed.frame_rate_ratio().and_then(|(num, den)| {
                    // 90 kHz ticks per frame, rounded: 30 fps → 3000, 29.97 fps → 3003.
                    u32::try_from((90_000 * den + num / 2) / num).ok()
                });
            }
        }
        let stamp = clock.stamp(now_us, self.nominal_90k);
        let frame = Frame {
            dts_90k: stamp.dts_90k,
            duration_90k: stamp.duration_90k,
            cts_offset_90k: 0,
            capture_unix_us: unix_now_us(),
            au,
        };
        self.out.frame(frame);
    }
}

/// The command's process group; killed when the run ends so no grandchild survives. It is
/// disarmed once the leader is reaped, after which its id may belong to someone else.
struct ProcessGroup(Option<i32>);

impl ProcessGroup {
    fn new(leader: u32) -> ProcessGroup {
        ProcessGroup(i32::try_from(leader).ok())
    }

    fn kill(&self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test fails
mod tests {
    use super::*;
    use crate::hub::Hub;
    use crate::pipeline::Pipeline;
    use media::segmenter::SegmenterConfig;

    const CLIP: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../media/tests/fixtures/x264_baseline_zerolatency.h264"
    );

    fn setup() -> (SharedPipeline, Arc<Hub>, Arc<Status>) {
        let hub = Hub::new();
        let status = Arc::new(Status::new("cam", "exec:test".into(), 100));
        let config = SegmenterConfig {
            fragment_duration_90k: 9_000,
            low_delay_vui: true,
        };
        let pipeline = Pipeline::new(config, hub.clone(), status.clone()).unwrap();
        (Arc::new(Mutex::new(pipeline)), hub, status)
    }

    #[tokio::test]
    async fn a_clip_is_read_to_the_end_and_the_exit_reported_with_the_last_stderr_line() {
        let (pipeline, hub, status) = setup();
        let (_tx, rx) = watch::channel(false);
        let cmd = format!("cat {CLIP}; echo first >&2; echo 'last words' >&2; exit 3");
        let err = run(&cmd, pipeline.clone(), status, rx).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("command ended"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.ends_with("last stderr: last words"), "{msg}");
        pipeline.lock().unwrap().end_of_run();
        let frames: u32 = hub.ring().iter().map(|e| e.part.frame_count).sum();
        assert!(frames > 0, "no frames reached the hub");
        assert!(hub.init().is_some());
    }

    #[tokio::test]
    async fn a_silent_command_is_a_stall_and_its_group_is_killed() {
        let (pipeline, _hub, status) = setup();
        let (_tx, rx) = watch::channel(false);
        let started = Instant::now();
        let err = run_with_stall_timeout(
            "sleep 30 & sleep 30",
            pipeline,
            status,
            rx,
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("no data for"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn data_keeps_the_watchdog_quiet() {
        let (pipeline, _hub, status) = setup();
        let (_tx, rx) = watch::channel(false);
        // A byte every 100 ms for a second, with a 400 ms stall timeout.
        let cmd = "for i in 1 2 3 4 5 6 7 8 9 10; do printf x; sleep 0.1; done";
        let err = run_with_stall_timeout(cmd, pipeline, status, rx, Duration::from_millis(400))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("command ended"), "{err}");
    }

    #[tokio::test]
    async fn shutdown_stops_a_blocked_reader() {
        let (pipeline, _hub, status) = setup();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(async move { run("sleep 30", pipeline, status, rx).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        tx.send(true).unwrap();
        let res = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(res, Err(ref e) if e.is_stopped()), "{res:?}");
    }
}
