//! `exec:COMMAND`: H.264 Annex-B from a command's standard output.
//!
//! The command runs under `/bin/sh -c` in its own process group, so pipelines work and the
//! whole group is killed when the run ends. Its stderr is logged line by line. The supervisor
//! restarts it with backoff when it exits; a command that stays silent for [`STALL_TIMEOUT`]
//! is treated as hung and restarted too (cameras do hang: camera-streamer #33).
//!
//! Latency note: an Annex-B stream does not say where an access unit ends, so a frame is known
//! complete only when the first NAL of the next one arrives (see `media::h264`). That costs one
//! frame interval; the test source avoids it because its encoder hands over whole frames.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use media::h264::AnnexBReader;
use media::segmenter::Frame;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

use super::clock::FrameClock;
use super::{FrameSink, SharedPipeline, SourceError};
use crate::status::{SourceState, Status};

/// A command that writes nothing for this long is considered hung and restarted.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest stderr line logged; the rest is cut.
const MAX_LOG_LINE: usize = 400;

pub async fn run(
    cmd: &str,
    pipeline: SharedPipeline,
    status: Arc<Status>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SourceError> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SourceError::Failed(format!("exec: cannot start /bin/sh: {e}")))?;
    let group = ProcessGroup(child.id());
    let pid = child.id().unwrap_or(0);
    tracing::info!(source = "exec", pid, command = cmd, "started");

    let last_stderr = Arc::new(std::sync::Mutex::new(String::new()));
    if let Some(stderr) = child.stderr.take() {
        let last = last_stderr.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match lines.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&buf);
                        let line: String = text.trim_end().chars().take(MAX_LOG_LINE).collect();
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
        });
    }
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| SourceError::Failed("exec: no stdout pipe".into()))?;

    let mut reader = AnnexBReader::new();
    let mut clock = FrameClock::new(0);
    let mut sink = ExecSink {
        pipeline,
        status: status.clone(),
        nominal_90k: None,
        bad_nals: 0,
        running: false,
    };
    let started = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let outcome = loop {
        let read = tokio::select! {
            r = tokio::time::timeout(STALL_TIMEOUT, stdout.read(&mut buf)) => r,
            _ = shutdown.changed() => break Err(SourceError::Stopped),
        };
        let n = match read {
            Err(_) => {
                break Err(SourceError::Failed(format!(
                    "exec: no data for {} s; restarting the command",
                    STALL_TIMEOUT.as_secs()
                )))
            }
            Ok(Err(e)) => break Err(SourceError::Failed(format!("exec: reading stdout: {e}"))),
            Ok(Ok(0)) => break Ok(()),
            Ok(Ok(n)) => n,
        };
        reader.push(buf.get(..n).unwrap_or_default());
        let now_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        while let Some(next) = reader.next_au() {
            sink.accept(next, &mut clock, now_us);
        }
    };
    if outcome.is_ok() {
        // End of stream: the last access unit is complete now.
        reader.finish();
        let now_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        while let Some(next) = reader.next_au() {
            sink.accept(next, &mut clock, now_us);
        }
    }
    group.kill();
    drop(stdout);
    let exit = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    let last = last_stderr.lock().map(|l| l.clone()).unwrap_or_default();
    if clock.resyncs > 0 {
        tracing::debug!(
            source = "exec",
            resyncs = clock.resyncs,
            "timeline resynchronised to arrival"
        );
    }
    match outcome {
        Ok(()) => {
            let code = match exit {
                Ok(Ok(s)) => s.to_string(),
                _ => "no exit status".to_string(),
            };
            let mut msg = format!("exec: command ended ({code})");
            if !last.is_empty() {
                msg.push_str(&format!("; last stderr: {last}"));
            }
            Err(SourceError::Failed(msg))
        }
        Err(e) => Err(e),
    }
}

/// Turns access units into timed frames for the pipeline.
struct ExecSink {
    pipeline: SharedPipeline,
    status: Arc<Status>,
    nominal_90k: Option<u32>,
    bad_nals: u64,
    running: bool,
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
                self.status
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
        if !self.running {
            self.running = true;
            self.status.set_source_state(SourceState::Running);
        }
        if let Ok(mut p) = self.pipeline.lock() {
            p.frame(frame);
        }
    }
}

pub fn unix_now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The command's process group; killed when the run ends so no grandchild survives.
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    fn kill(&self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}
