//! systemd integration: readiness, status and a watchdog fed from the frame path.
//!
//! Under `Type=notify` systemd hands us `$NOTIFY_SOCKET` (a path, or an abstract socket name
//! written with a leading `@`) and, with `WatchdogSec=`, `$WATCHDOG_USEC` (and `$WATCHDOG_PID`,
//! which must be ours). We write the `sd_notify` datagrams ourselves — `READY=1`, `STATUS=…`,
//! `WATCHDOG=1`, `STOPPING=1` — over a plain unbound `AF_UNIX` datagram socket: the protocol is
//! one `key=value` per line, and a crate would add nothing.
//!
//! ## Readiness
//!
//! `READY=1` goes out once the first stream has produced its first fragment (a CMAF part is in
//! the hub, so a viewer would get a picture), not when the sockets are bound: with
//! `RequiredBy=boot-complete.target` an A/B update is committed only once that is true.
//!
//! ## The watchdog: what it guards, and what it leaves to the source supervisor
//!
//! A timer that pings unconditionally would prove only that the runtime thread runs. The
//! monitor here pings every second while the frame path is healthy, and withholds the ping when
//! it is wedged, so systemd restarts the process (`WatchdogSec=`, `Restart=always`):
//!
//! * the runtime thread is stuck — the monitor is a task on it, so no ping is sent at all;
//! * the pipeline lock is poisoned (a panic while segmenting: every later frame would be
//!   dropped), or held without a break for [`LOCK_PROBE`] (a deadlock, or a segmenter that
//!   loops);
//! * frames go into the pipeline but no fragment has come out for [`OUTPUT_STALL`].
//!
//! A camera that sends nothing, or is absent, is *not* a wedge: frames stop coming in, the
//! source supervisor restarts the source with backoff and `/api/status` says why. Restarting
//! the whole daemon would not bring the camera back, and would take the UI down meanwhile.
//!
//! ## Test hook
//!
//! With the cargo feature `test-hooks` (never in a release image), `PINHOLE_DEBUG_WEDGE_AFTER_S=N`
//! takes the pipeline lock N seconds after the first fragment and never gives it back: the
//! deadlock the watchdog exists for. `tests/e2e/test_systemd.py` uses it under a real systemd.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::{Arc, TryLockError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::pipeline::SharedPipeline;
use crate::stream::Stream;

/// How often the monitor looks at the frame path (and pings, when it is healthy). Well under
/// any sensible `WatchdogSec=`; the unit uses 10 s.
pub const TICK: Duration = Duration::from_secs(1);
/// Before the first fragment the monitor looks more often, so `READY=1` is prompt.
const STARTUP_TICK: Duration = Duration::from_millis(100);
/// The pipeline lock counts as stuck when it could not be taken once in this long. The frame
/// path holds it for about a millisecond per frame.
pub const LOCK_PROBE: Duration = Duration::from_millis(500);
const LOCK_PROBE_STEP: Duration = Duration::from_millis(10);
/// Frames coming in with no fragment out for this long is a wedged segmenter. Longer than any
/// camera's wait for its first key frame after a (re)start.
pub const OUTPUT_STALL: Duration = Duration::from_secs(30);
/// Frames count as "coming in" while the last one is at most this old.
const INFLOW_WINDOW: Duration = Duration::from_secs(2);

/// Why the notify socket cannot be used. Reported once; the daemon runs on without it.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={0:?} is neither a path nor an abstract name (@NAME)")]
    BadAddress(String),
    #[error("NOTIFY_SOCKET={0:?}: {1}")]
    Socket(String, #[source] io::Error),
}

/// A connection to systemd's notify socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the environment systemd sets: `Ok(None)` when not started by systemd with
    /// `Type=notify`.
    pub fn from_env() -> Result<Option<Notifier>, NotifyError> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let path = path.to_string_lossy().into_owned();
        let addr = notify_addr(&path)?;
        let socket = UnixDatagram::unbound().map_err(|e| NotifyError::Socket(path.clone(), e))?;
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Ok(Some(Notifier {
            socket,
            addr,
            watchdog,
        }))
    }

    /// `WatchdogSec=` as systemd told us, if it asked this process for pings.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one datagram of `KEY=value` lines.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.socket
            .send_to_addr(state.as_bytes(), &self.addr)
            .map(|_| ())
    }
}

fn notify_addr(var: &str) -> Result<SocketAddr, NotifyError> {
    if let Some(name) = var.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt as _;
        return SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(|e| NotifyError::Socket(var.to_string(), e));
    }
    if var.starts_with('/') {
        return SocketAddr::from_pathname(var).map_err(|e| NotifyError::Socket(var.to_string(), e));
    }
    Err(NotifyError::BadAddress(var.to_string()))
}

/// `$WATCHDOG_USEC`, if set, positive and meant for `my_pid` (`$WATCHDOG_PID` unset or ours).
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(my_pid) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// What the monitor saw of the pipeline lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockProbe {
    /// Taken (and released) at least once within [`LOCK_PROBE`].
    Free,
    /// Held by someone else for the whole of [`LOCK_PROBE`].
    Held,
    /// A thread panicked while holding it.
    Poisoned,
}

/// One look at the frame path.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub now: Instant,
    pub frames_in: u64,
    pub parts_out: u64,
    pub lock: LockProbe,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Wedged(String),
}

/// The watchdog's decision, from successive samples; pure, so it is tested without a clock.
#[derive(Debug, Default)]
pub struct Monitor {
    last: Option<(u64, u64)>,
    /// When frames were last seen arriving, and since when they have arrived without a gap
    /// longer than [`INFLOW_WINDOW`].
    frame_seen: Option<Instant>,
    inflow_since: Option<Instant>,
    part_seen: Option<Instant>,
}

impl Monitor {
    pub fn observe(&mut self, s: Sample) -> Verdict {
        let (frames0, parts0) = self.last.unwrap_or((0, 0));
        self.last = Some((s.frames_in, s.parts_out));
        if s.parts_out != parts0 {
            self.part_seen = Some(s.now);
        }
        if s.frames_in != frames0 {
            let flowing = self
                .frame_seen
                .is_some_and(|t| s.now.saturating_duration_since(t) <= INFLOW_WINDOW);
            if !flowing {
                self.inflow_since = Some(s.now);
            }
            self.frame_seen = Some(s.now);
        } else if self
            .frame_seen
            .is_none_or(|t| s.now.saturating_duration_since(t) > INFLOW_WINDOW)
        {
            self.inflow_since = None;
        }

        match s.lock {
            LockProbe::Poisoned => {
                return Verdict::Wedged(
                    "the pipeline lock is poisoned (a panic while segmenting)".into(),
                )
            }
            LockProbe::Held => {
                return Verdict::Wedged(format!(
                    "the pipeline lock has been held for over {} ms",
                    LOCK_PROBE.as_millis()
                ))
            }
            LockProbe::Free => {}
        }
        if let Some(since) = self.inflow_since {
            let quiet_from = self.part_seen.map_or(since, |p| p.max(since));
            let quiet = s.now.saturating_duration_since(quiet_from);
            if quiet >= OUTPUT_STALL {
                return Verdict::Wedged(format!(
                    "frames come in but no fragment came out for {} s",
                    quiet.as_secs()
                ));
            }
        }
        Verdict::Healthy
    }
}

/// Tries the pipeline lock for up to [`LOCK_PROBE`] without ever blocking the runtime thread
/// for more than a moment.
async fn probe_lock(pipeline: &SharedPipeline) -> LockProbe {
    let deadline = tokio::time::Instant::now() + LOCK_PROBE;
    loop {
        match pipeline.try_lock() {
            Ok(_) => return LockProbe::Free,
            Err(TryLockError::Poisoned(_)) => return LockProbe::Poisoned,
            Err(TryLockError::WouldBlock) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return LockProbe::Held;
        }
        tokio::time::sleep(LOCK_PROBE_STEP).await;
    }
}

/// Runs until shutdown: `READY=1` after the first stream's first fragment, `STATUS=` (about the
/// first stream) when it changes, `WATCHDOG=1` every [`TICK`] while every stream's frame path
/// is healthy, `STOPPING=1` at the end.
pub async fn run(notifier: Notifier, paths: Vec<Arc<Stream>>, mut shutdown: watch::Receiver<bool>) {
    let Some(first) = paths.first().cloned() else {
        return;
    };
    let send = |state: &str| {
        if let Err(e) = notifier.notify(state) {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    };
    match notifier.watchdog() {
        Some(w) if w <= TICK * 2 => tracing::warn!(
            watchdog_ms = w.as_millis() as u64,
            "WatchdogSec= is shorter than two monitor ticks ({} ms); expect spurious restarts",
            TICK.as_millis() * 2
        ),
        Some(w) => tracing::info!(watchdog_s = w.as_secs_f64(), "systemd watchdog armed"),
        None => {}
    }
    let mut monitors: Vec<Monitor> = paths.iter().map(|_| Monitor::default()).collect();
    let mut ready = false;
    let mut last_status = String::new();
    let mut wedged = false;
    loop {
        let mut verdict = Verdict::Healthy;
        for (path, monitor) in paths.iter().zip(monitors.iter_mut()) {
            let sample = Sample {
                now: Instant::now(),
                frames_in: path.counters().frames_in(),
                parts_out: path.counters().parts_out(),
                lock: probe_lock(path.pipeline()).await,
            };
            if let Verdict::Wedged(why) = monitor.observe(sample) {
                if verdict == Verdict::Healthy {
                    let name = path.snapshot().source.uri;
                    verdict = Verdict::Wedged(if paths.len() > 1 {
                        format!("{why} ({name})")
                    } else {
                        why
                    });
                }
            }
        }
        let snap = first.snapshot();
        let mut msg = String::new();
        if !ready && first.counters().parts_out() > 0 {
            ready = true;
            msg.push_str("READY=1\n");
            tracing::info!("first fragment out: told systemd we are ready");
        }
        let text = match &verdict {
            Verdict::Wedged(why) => format!("frame path wedged: {why}; watchdog not fed"),
            Verdict::Healthy if ready => match &snap.video.codec {
                Some(codec) => format!(
                    "streaming {codec} {}x{} from {}, {} viewer(s)",
                    snap.video.width, snap.video.height, snap.source.uri, snap.viewers
                ),
                None => format!("streaming from {}", snap.source.uri),
            },
            Verdict::Healthy => match &snap.source.last_error {
                Some(e) => format!("waiting for the first fragment: {e}"),
                None => format!("waiting for the first fragment from {}", snap.source.uri),
            },
        };
        match &verdict {
            Verdict::Wedged(why) if !wedged => {
                wedged = true;
                tracing::error!(reason = %why, "frame path wedged: withholding the watchdog ping so systemd restarts us");
            }
            Verdict::Healthy if wedged => {
                wedged = false;
                tracing::warn!("frame path moving again: feeding the watchdog");
            }
            _ => {}
        }
        if text != last_status {
            msg.push_str("STATUS=");
            msg.push_str(&text);
            msg.push('\n');
            last_status = text;
        }
        if verdict == Verdict::Healthy && notifier.watchdog().is_some() {
            msg.push_str("WATCHDOG=1\n");
        }
        if !msg.is_empty() {
            send(&msg);
        }
        let tick = if ready { TICK } else { STARTUP_TICK };
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => break,
        }
    }
    send("STOPPING=1\nSTATUS=shutting down\n");
}

/// The `test-hooks` deadlock: `PINHOLE_DEBUG_WEDGE_AFTER_S=N` takes the pipeline lock N seconds
/// after the first fragment and keeps it until the process dies.
#[cfg(feature = "test-hooks")]
pub fn wedge_hook(path: &Stream) {
    let (counters, pipeline) = (path.counters().clone(), path.pipeline().clone());
    let Ok(value) = std::env::var("PINHOLE_DEBUG_WEDGE_AFTER_S") else {
        return;
    };
    let Ok(after_s) = value.trim().parse::<u64>() else {
        tracing::error!(value = %value, "PINHOLE_DEBUG_WEDGE_AFTER_S is not a whole number of seconds; ignored");
        return;
    };
    tracing::warn!(
        after_s,
        "test hook: the frame path will wedge {after_s} s after the first fragment"
    );
    let spawned = std::thread::Builder::new()
        .name("wedge-hook".into())
        .spawn(move || {
            while counters.parts_out() == 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
            std::thread::sleep(Duration::from_secs(after_s));
            let _guard = pipeline.lock();
            tracing::warn!("test hook: pipeline lock taken for good");
            loop {
                std::thread::park();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "test hook: cannot start its thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t0: Instant, at_ms: u64, frames_in: u64, parts_out: u64) -> Sample {
        Sample {
            now: t0 + Duration::from_millis(at_ms),
            frames_in,
            parts_out,
            lock: LockProbe::Free,
        }
    }

    #[test]
    fn notify_socket_paths_and_abstract_names_parse() {
        use std::os::linux::net::SocketAddrExt as _;
        let a = notify_addr("/run/systemd/notify").unwrap();
        assert_eq!(
            a.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let b = notify_addr("@/org/freedesktop/systemd1/notify/42").unwrap();
        assert_eq!(
            b.as_abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify/42"[..])
        );
        assert!(matches!(
            notify_addr("vsock:2:1234"),
            Err(NotifyError::BadAddress(_))
        ));
    }

    #[test]
    fn the_watchdog_interval_is_honoured_only_for_our_pid() {
        assert_eq!(
            watchdog_interval(Some("10000000"), None, 7),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            watchdog_interval(Some("10000000"), Some("7"), 7),
            Some(Duration::from_secs(10))
        );
        assert_eq!(watchdog_interval(Some("10000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn notifications_arrive_as_one_datagram_on_a_real_socket() {
        let dir = std::env::temp_dir().join(format!("pinhole-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            addr: notify_addr(path.to_str().unwrap()).unwrap(),
            watchdog: None,
        };
        n.notify("READY=1\nSTATUS=streaming\n").unwrap();
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=streaming\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_flowing_stream_is_healthy() {
        let t0 = Instant::now();
        let mut m = Monitor::default();
        for s in 0..120u64 {
            let v = m.observe(sample(t0, s * 1000, s * 30, s * 10));
            assert_eq!(v, Verdict::Healthy, "at {s} s");
        }
    }

    #[test]
    fn an_absent_or_silent_camera_is_left_to_the_source_supervisor() {
        let t0 = Instant::now();
        let mut m = Monitor::default();
        // Nothing ever arrives: no frames, no fragments, for ten minutes.
        for s in 0..600u64 {
            assert_eq!(m.observe(sample(t0, s * 1000, 0, 0)), Verdict::Healthy);
        }
        // A camera that streamed and then went silent.
        let mut m = Monitor::default();
        for s in 0..10u64 {
            m.observe(sample(t0, s * 1000, s * 30, s * 10));
        }
        for s in 10..600u64 {
            assert_eq!(m.observe(sample(t0, s * 1000, 300, 100)), Verdict::Healthy);
        }
    }

    #[test]
    fn frames_in_with_nothing_out_is_a_wedge_after_the_stall_limit() {
        let t0 = Instant::now();
        let mut m = Monitor::default();
        for s in 0..10u64 {
            m.observe(sample(t0, s * 1000, s * 30, s * 10));
        }
        let stall = OUTPUT_STALL.as_secs();
        // Frames keep coming from 10 s on, parts stop at 100.
        for s in 10..10 + stall {
            let v = m.observe(sample(t0, s * 1000, s * 30, 100));
            assert_eq!(v, Verdict::Healthy, "at {s} s");
        }
        let v = m.observe(sample(t0, (10 + stall) * 1000, (10 + stall) * 30, 100));
        assert!(
            matches!(v, Verdict::Wedged(ref why) if why.contains("no fragment")),
            "{v:?}"
        );
        // Output resumes: healthy at once.
        let v = m.observe(sample(t0, (11 + stall) * 1000, (11 + stall) * 30, 101));
        assert_eq!(v, Verdict::Healthy);
    }

    #[test]
    fn a_camera_returning_after_an_outage_gets_the_full_stall_limit_for_its_first_key_frame() {
        let t0 = Instant::now();
        let mut m = Monitor::default();
        for s in 0..10u64 {
            m.observe(sample(t0, s * 1000, s * 30, s * 10));
        }
        // An hour without frames, then frames again but the first key frame takes 20 s.
        for s in 10..3600u64 {
            m.observe(sample(t0, s * 1000, 300, 100));
        }
        for s in 3600..3620u64 {
            let v = m.observe(sample(t0, s * 1000, 300 + (s - 3599) * 30, 100));
            assert_eq!(v, Verdict::Healthy, "at {s} s");
        }
    }

    #[test]
    fn a_stuck_or_poisoned_pipeline_lock_is_a_wedge_at_once() {
        let t0 = Instant::now();
        let mut m = Monitor::default();
        let mut s = sample(t0, 0, 30, 10);
        s.lock = LockProbe::Held;
        assert!(matches!(m.observe(s), Verdict::Wedged(ref w) if w.contains("held")));
        s.lock = LockProbe::Poisoned;
        assert!(matches!(m.observe(s), Verdict::Wedged(ref w) if w.contains("poisoned")));
        s.lock = LockProbe::Free;
        assert_eq!(m.observe(s), Verdict::Healthy);
    }

    // Holding the lock across the probe's await is the point: it stands for a stuck holder.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn the_lock_probe_tells_free_held_and_poisoned_apart() {
        use crate::hub::Hub;
        use crate::pipeline::Pipeline;
        use crate::status::Status;
        use media::segmenter::SegmenterConfig;
        let status = Arc::new(Status::new("cam", "testsrc".into(), 100));
        let p = Pipeline::new(
            SegmenterConfig {
                fragment_duration_90k: 9000,
                low_delay_vui: true,
            },
            Hub::new(),
            status,
        )
        .unwrap();
        let shared: SharedPipeline = Arc::new(std::sync::Mutex::new(p));
        assert_eq!(probe_lock(&shared).await, LockProbe::Free);
        let guard = shared.lock().unwrap();
        assert_eq!(probe_lock(&shared).await, LockProbe::Held);
        drop(guard);
        let s2 = shared.clone();
        let _ = std::thread::spawn(move || {
            let _g = s2.lock();
            panic!("poison the lock (expected in this test)");
        })
        .join();
        assert_eq!(probe_lock(&shared).await, LockProbe::Poisoned);
    }
}
