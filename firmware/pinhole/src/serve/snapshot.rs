//! `/api/snapshot.jpg`: a JPEG of the newest frame, decoded from the stream pinhole already
//! has — never a second camera pipeline.
//!
//! ```text
//! pipeline ─► Tap (access units since the last IDR, refcounted) ─► Snapshots ─► JPEG
//!                               decoder: V4L2 M2M (hardware) or OpenH264, warm while asked
//! ```
//!
//! The [`Tap`] sees every frame as it enters the pipeline, before it is cut into a fragment:
//! a snapshot is one frame interval old, not one fragment. It keeps the access units since the
//! last IDR (the bytes are shared with the segmenter, not copied), so a cold decoder starts at
//! once from that IDR. The decoder runs only while someone asks: the first request decodes
//! from the IDR (cold), later ones decode just the frames that came since (warm), and a
//! decoder nobody asked for during the idle time is dropped. Requests that arrive while a
//! decode runs wait for it and share its picture; a picture is encoded once per size and
//! quality.
//!
//! Decoding is the board's V4L2 memory-to-memory H.264 decoder where there is one (the Pi 4's
//! `/dev/video10`; found by `v4l2::find_h264_decoder`), OpenH264 otherwise, and OpenH264 when
//! the hardware one cannot be opened or `PINHOLE_SNAPSHOT_SOFTWARE` is set. Jetson's NVDEC is
//! not used (it has no V4L2 M2M node of that kind).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use crate::codec::decode::{push_annexb, FrameDecoder};
use crate::codec::{jpeg, I420Frame};
use crate::metrics::Family;
use crate::pipeline::tap::{Catchup, Tap};
use crate::status::{SourceState, Status};

/// How long a decoder stays warm after the last request.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(10);
/// A newest frame older than this means the camera is down, whatever its state says.
const STALE: Duration = Duration::from_secs(2);
pub const WIDTH_RANGE: std::ops::RangeInclusive<usize> = 16..=7680;
pub const QUALITY_RANGE: std::ops::RangeInclusive<u8> = 1..=100;
pub const DEFAULT_QUALITY: u8 = 80;

/// A request's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Scale down to this width (aspect kept); `None`: the stream's size.
    pub width: Option<usize>,
    pub quality: u8,
}

impl Options {
    /// Parses `width=N&quality=N`; anything else in the query is a mistake worth naming.
    pub fn parse(query: Option<&str>) -> Result<Options, String> {
        let mut o = Options {
            width: None,
            quality: DEFAULT_QUALITY,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "width" => {
                    let w = v
                        .parse::<usize>()
                        .ok()
                        .filter(|w| WIDTH_RANGE.contains(w))
                        .ok_or_else(|| {
                            format!(
                                "width={v:?}: allowed {}..={} pixels (scaled down, aspect kept)",
                                WIDTH_RANGE.start(),
                                WIDTH_RANGE.end()
                            )
                        })?;
                    o.width = Some(w);
                }
                "quality" => {
                    o.quality = v
                        .parse::<u8>()
                        .ok()
                        .filter(|q| QUALITY_RANGE.contains(q))
                        .ok_or_else(|| {
                            format!(
                                "quality={v:?}: allowed {}..={} (JPEG quality, default {DEFAULT_QUALITY})",
                                QUALITY_RANGE.start(),
                                QUALITY_RANGE.end()
                            )
                        })?;
                }
                // Cache busters that tools add (`?t=…`, `?_=…`) are harmless.
                "t" | "_" | "timestamp" | "cachebust" => {}
                _ => {
                    return Err(format!(
                        "unknown option {k:?}: allowed width=16..7680, quality=1..100"
                    ))
                }
            }
        }
        Ok(o)
    }
}

/// A JPEG, with the capture time of the frame it shows.
#[derive(Debug, Clone)]
pub struct Jpeg {
    pub bytes: Bytes,
    pub capture_unix_us: u64,
    pub width: usize,
    pub height: usize,
}

/// Why there is no picture: the camera is down (503), or the request was wrong (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Unavailable(String),
    Failed(String),
}

#[derive(Debug)]
struct Picture {
    frame: I420Frame,
    seq: u64,
    capture_unix_us: u64,
}

struct Warm {
    decoder: FrameDecoder,
    gop: u64,
    seq: Option<u64>,
    picture: Option<Arc<Picture>>,
    /// The buffers of a picture nobody holds any more, for the next copy.
    spare: Option<I420Frame>,
}

#[derive(Debug, Clone)]
struct Cached {
    seq: u64,
    opts: Options,
    jpeg: Jpeg,
    done_at: Instant,
}

/// What the decoder thread has reached, for the requests that wait on it.
#[derive(Debug, Clone, Default)]
struct Reached {
    /// The newest tap frame the decoder has been given (or skipped, after a failure).
    seq: Option<u64>,
    picture: Option<Arc<Picture>>,
    /// Why the frames up to `seq` gave no picture; cleared by the next good one.
    error: Option<String>,
}

/// The decoder thread of a warm decoder.
struct Worker {
    stop: Arc<AtomicBool>,
    reached: tokio::sync::watch::Receiver<Reached>,
}

/// Counters for `/api/status` and `/metrics`.
#[derive(Debug, Default, Serialize, Clone, PartialEq, Eq)]
pub struct SnapshotCounters {
    /// Whether a decoder is running (warm).
    pub decoder_warm: bool,
    /// Which decoder the warm one is: "OpenH264", or the hardware node and its card name.
    pub decoder: Option<String>,
    pub requests: u64,
    /// Pictures encoded to JPEG: one per request that found no JPEG of the newest picture.
    pub decodes: u64,
    /// Decoders started (the first request, or the first after the idle time).
    pub cold_starts: u64,
    pub frames_decoded: u64,
    /// Requests answered with a JPEG another request's encode made.
    pub shared: u64,
    pub unavailable: u64,
}

#[derive(Debug, Default)]
struct Counters {
    warm: AtomicBool,
    decoder: Mutex<Option<String>>,
    requests: AtomicU64,
    decodes: AtomicU64,
    cold_starts: AtomicU64,
    frames_decoded: AtomicU64,
    shared: AtomicU64,
    unavailable: AtomicU64,
}

/// When requests came, as the decoder thread sees them.
#[derive(Debug, Default)]
struct Asked {
    last: Option<Instant>,
    /// Between the last two requests.
    interval: Option<Duration>,
    /// The newest frame a waiting request needs.
    wanted: Option<u64>,
}

impl Asked {
    /// Follow the stream frame by frame: requests come often and the last is recent.
    fn following(&self) -> bool {
        self.last.is_some_and(|t| t.elapsed() < FOLLOW)
            && self.interval.is_some_and(|i| i <= FOLLOW_INTERVAL)
    }
}

/// One camera's snapshot service.
///
/// A decoder thread decodes only for requests. While they come often (at most
/// [`FOLLOW_INTERVAL`] apart, the last within [`FOLLOW`]) it follows the stream frame by frame,
/// so a request waits for at most one frame's decode and the JPEG encode. Slower polling (a
/// timelapse, Home Assistant, 2 a second) finds it paused: it catches up from where it was (or
/// from a newer IDR) for each request, which decodes the same frames without copying every
/// picture out. After the idle time it is dropped.
pub struct Snapshots {
    tap: Arc<Tap>,
    status: Arc<Status>,
    idle: Duration,
    counters: Arc<Counters>,
    worker: Mutex<Option<Worker>>,
    asked: Arc<Mutex<Asked>>,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

/// A decoder follows the stream while the last request is this recent …
pub const FOLLOW: Duration = Duration::from_secs(2);
/// … and requests come at least this often (about 3 a second).
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(350);
/// The longest a request waits for the decoder to reach the newest frame.
const CATCHUP_LIMIT: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("counters", &self.counters())
            .finish()
    }
}

impl Snapshots {
    pub fn new(tap: Arc<Tap>, status: Arc<Status>, idle: Duration) -> Arc<Snapshots> {
        Arc::new(Snapshots {
            tap,
            status,
            idle,
            counters: Arc::new(Counters::default()),
            worker: Mutex::new(None),
            asked: Arc::new(Mutex::new(Asked::default())),
            cache: tokio::sync::Mutex::new(None),
        })
    }

    pub fn counters(&self) -> SnapshotCounters {
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SnapshotCounters {
            decoder_warm: c.warm.load(Ordering::Relaxed),
            decoder: c.decoder.lock().ok().and_then(|d| d.clone()),
            requests: n(&c.requests),
            decodes: n(&c.decodes),
            cold_starts: n(&c.cold_starts),
            frames_decoded: n(&c.frames_decoded),
            shared: n(&c.shared),
            unavailable: n(&c.unavailable),
        }
    }

    /// Its metric families (`/metrics`).
    pub fn families(&self) -> Vec<Family> {
        let c = self.counters();
        vec![
            Family::gauge(
                "pinhole_snapshot_decoder_warm",
                "1 while a snapshot decoder runs.",
            )
            .with(u64::from(c.decoder_warm)),
            Family::counter("pinhole_snapshot_requests_total", "Snapshot requests.")
                .with(c.requests),
            Family::counter(
                "pinhole_snapshot_decodes_total",
                "Snapshot pictures encoded to JPEG.",
            )
            .with(c.decodes),
            Family::counter(
                "pinhole_snapshot_cold_starts_total",
                "Snapshot decoders started from an IDR.",
            )
            .with(c.cold_starts),
            Family::counter(
                "pinhole_snapshot_frames_decoded_total",
                "Frames decoded for snapshots.",
            )
            .with(c.frames_decoded),
            Family::counter(
                "pinhole_snapshot_shared_total",
                "Snapshot requests served by another request's encode.",
            )
            .with(c.shared),
            Family::counter(
                "pinhole_snapshot_unavailable_total",
                "Snapshot requests refused because the camera was down.",
            )
            .with(c.unavailable),
        ]
    }

    /// [`Self::families`] as Prometheus text.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        crate::metrics::render(&mut out, &self.families());
        out
    }

    /// Drops a decoder nobody asked for during the idle time. Run every second or so.
    pub async fn expire(&self) {
        let quiet = match self.asked.lock() {
            Ok(a) => a.last.is_some_and(|t| t.elapsed() >= self.idle),
            Err(_) => true,
        };
        if !quiet {
            return;
        }
        let stopped = match self.worker.lock() {
            Ok(mut w) => w.take(),
            Err(_) => None,
        };
        if let Some(w) = stopped {
            w.stop.store(true, Ordering::Relaxed);
            self.tap.wake();
            *self.cache.lock().await = None;
            self.counters.warm.store(false, Ordering::Relaxed);
            if let Ok(mut d) = self.counters.decoder.lock() {
                *d = None;
            }
            tracing::info!(
                "snapshot decoder stopped after {} s without requests",
                self.idle.as_secs()
            );
        }
    }

    /// Runs [`expire`](Self::expire) every second until the process ends.
    pub fn spawn_expiry(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(s) = me.upgrade() else { break };
                s.expire().await;
            }
        });
    }

    /// The running decoder's progress, starting one (a cold start) if none runs.
    fn follow(&self) -> Result<tokio::sync::watch::Receiver<Reached>, String> {
        let mut slot = self
            .worker
            .lock()
            .map_err(|_| "snapshot worker lock poisoned".to_string())?;
        if let Some(w) = slot.as_ref() {
            return Ok(w.reached.clone());
        }
        let (tx, rx) = tokio::sync::watch::channel(Reached::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (tap, counters, asked, stop2) = (
            self.tap.clone(),
            self.counters.clone(),
            self.asked.clone(),
            stop.clone(),
        );
        std::thread::Builder::new()
            .name("snapshot-decode".into())
            .spawn(move || decode_loop(&tap, &counters, &asked, &stop2, &tx))
            .map_err(|e| format!("cannot start the snapshot decoder thread: {e}"))?;
        self.counters.warm.store(true, Ordering::Relaxed);
        *slot = Some(Worker {
            stop,
            reached: rx.clone(),
        });
        Ok(rx)
    }

    /// A JPEG of the newest frame.
    pub async fn take(&self, opts: Options) -> Result<Jpeg, Refused> {
        let asked = Instant::now();
        let c = &self.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut a) = self.asked.lock() {
            a.interval = a.last.map(|t| asked.saturating_duration_since(t));
            a.last = Some(asked);
        }
        if let Err(why) = self.check_live() {
            c.unavailable.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Unavailable(why));
        }
        let target = self.tap.newest().map_or(0, |(seq, _)| seq);
        if let Ok(mut a) = self.asked.lock() {
            a.wanted = Some(a.wanted.map_or(target, |w| w.max(target)));
        }
        let mut rx = self.follow().map_err(Refused::Failed)?;
        // A paused decoder goes on at once.
        self.tap.wake();
        let waited = tokio::time::timeout(CATCHUP_LIMIT, async {
            // The watch's guard is not Send: clone out of it before the next await.
            rx.wait_for(|r| r.seq.is_some_and(|s| s >= target))
                .await
                .map(|r| r.clone())
        })
        .await;
        let reached = match waited {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => {
                // The thread ended (stopped by the idle timer as this request came in).
                if let Ok(mut w) = self.worker.lock() {
                    w.take();
                }
                return Err(Refused::Failed(
                    "the snapshot decoder stopped; ask again".into(),
                ));
            }
            Err(_) => {
                return Err(Refused::Failed(format!(
                    "the decoder did not reach the newest frame within {} s",
                    CATCHUP_LIMIT.as_secs()
                )))
            }
        };
        let picture = match (reached.picture, reached.error) {
            (Some(p), None) => p,
            (Some(p), Some(_)) if p.seq >= target => p,
            (_, Some(e)) => return Err(Refused::Failed(e)),
            (None, None) => return Err(Refused::Failed("the decoder has no picture yet".into())),
        };
        let mut cache = self.cache.lock().await;
        if let Some(k) = cache.as_ref() {
            // Another request encoded after this one was asked (it waited for that encode),
            // or encoded this very picture: share its JPEG.
            if k.opts == opts && (k.done_at >= asked || k.seq >= picture.seq) {
                c.shared.fetch_add(1, Ordering::Relaxed);
                return Ok(k.jpeg.clone());
            }
        }
        let p = picture.clone();
        let jpeg = tokio::task::spawn_blocking(move || encode(&p, opts))
            .await
            .unwrap_or_else(|e| Err(format!("snapshot task failed: {e}")))
            .map_err(Refused::Failed)?;
        c.decodes.fetch_add(1, Ordering::Relaxed);
        *cache = Some(Cached {
            seq: picture.seq,
            opts,
            jpeg: jpeg.clone(),
            done_at: Instant::now(),
        });
        Ok(jpeg)
    }

    /// A camera that is not running, or whose newest frame is stale, has no snapshot.
    fn check_live(&self) -> Result<(), String> {
        let (state, error) = self.status.source_health();
        let why = |what: &str| match &error {
            Some(e) => format!("{what}: {e}"),
            None => what.to_string(),
        };
        if state != SourceState::Running {
            return Err(why(&format!("camera is {}", state_word(state))));
        }
        match self.tap.newest() {
            None => Err(why("no picture from the camera since its last keyframe")),
            Some((_, age)) if age > STALE => Err(why(&format!(
                "camera sent nothing for {:.1} s",
                age.as_secs_f64()
            ))),
            Some(_) => Ok(()),
        }
    }
}

/// The decoder thread: follows the tap while requests are recent, pauses otherwise, ends
/// when told to stop. A frame the decoder refuses drops it; the next IDR starts a new one.
fn decode_loop(
    tap: &Tap,
    counters: &Counters,
    asked: &Mutex<Asked>,
    stop: &AtomicBool,
    tx: &tokio::sync::watch::Sender<Reached>,
) {
    let mut warm: Option<Warm> = None;
    // The newest frame decoded, or skipped in a GOP the decoder failed in.
    let mut seen: Option<u64> = None;
    let mut failed_gop: Option<u64> = None;
    let mut logged: Option<String> = None;
    // Decode on: following, or a request waits for a frame not decoded yet.
    let needed = |seen: Option<u64>| {
        asked
            .lock()
            .map(|a| a.following() || a.wanted.is_some_and(|w| seen.is_none_or(|s| w > s)))
            .unwrap_or(true)
    };
    while !stop.load(Ordering::Relaxed) && !tx.is_closed() {
        let Some((gop, newest)) = tap.wait_newer(seen, Duration::from_millis(250)) else {
            continue;
        };
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if !needed(seen) {
            // No request waits and none is expected soon: wait for the next one (take()
            // wakes the tap) instead of decoding every frame.
            tap.wait_woken(Duration::from_millis(250));
            continue;
        }
        if failed_gop == Some(gop) {
            // The decoder failed in this GOP: nothing to decode until the next IDR.
            seen = Some(newest);
            tx.send_modify(|r| r.seq = Some(newest));
            continue;
        }
        failed_gop = None;
        let mut stats = Stats::default();
        let result = decode_newest(tap, &mut warm, &mut stats);
        counters
            .cold_starts
            .fetch_add(stats.cold, Ordering::Relaxed);
        if let (Some(w), Ok(mut d)) = (warm.as_ref(), counters.decoder.lock()) {
            if d.as_deref() != Some(w.decoder.name()) {
                *d = Some(w.decoder.name().to_string());
            }
        }
        counters
            .frames_decoded
            .fetch_add(stats.frames, Ordering::Relaxed);
        match result {
            Ok((reached, picture)) => {
                logged = None;
                seen = Some(reached);
                let mut old = None;
                tx.send_modify(|r| {
                    r.seq = Some(reached);
                    old = r.picture.replace(picture);
                    r.error = None;
                });
                // The picture it replaced, if no request is encoding it, lends its buffers to
                // the next copy.
                if let (Some(w), Some(Ok(p))) = (warm.as_mut(), old.map(Arc::try_unwrap)) {
                    w.spare = Some(p.frame);
                }
            }
            Err(e) => {
                if logged.as_deref() != Some(e.as_str()) {
                    tracing::warn!("snapshot decoder: {e}");
                    logged = Some(e.clone());
                }
                failed_gop = Some(gop);
                seen = Some(newest);
                tx.send_modify(|r| {
                    r.seq = Some(newest);
                    r.error = Some(e);
                });
            }
        }
    }
}

fn state_word(s: SourceState) -> &'static str {
    match s {
        SourceState::Starting => "starting",
        SourceState::Running => "running",
        SourceState::Restarting => "restarting",
        SourceState::Stopped => "stopped",
    }
}

#[derive(Debug, Default)]
struct Stats {
    cold: u64,
    frames: u64,
}

/// Brings `warm` to the newest frame the tap has and returns that picture.
/// Returns the newest frame given to the decoder and the newest picture it made.
fn decode_newest(
    tap: &Tap,
    warm: &mut Option<Warm>,
    stats: &mut Stats,
) -> Result<(u64, Arc<Picture>), String> {
    let (gop, seq) = warm.as_ref().map_or((0, None), |w| (w.gop, w.seq));
    let (frames, fresh) = match tap.catchup(gop, seq)? {
        Catchup::Continue(frames) => (frames, None),
        Catchup::Restart {
            gop,
            params,
            frames,
        } => (frames, Some((gop, params))),
    };
    // Parameter sets go in front of the IDR, in the same buffer (a stateful hardware decoder
    // wants whole access units).
    let mut annexb = Vec::new();
    if let Some((gop, params)) = fresh {
        // A new GOP starts at an IDR, which needs no earlier picture: a warm decoder goes on
        // from it; only a decoder that does not exist yet is a cold start.
        if warm.is_none() {
            stats.cold += 1;
            *warm = Some(Warm {
                decoder: FrameDecoder::open()?,
                gop,
                seq: None,
                picture: None,
                spare: None,
            });
        }
        if let Some(w) = warm.as_mut() {
            w.gop = gop;
        }
        for p in &params {
            push_annexb(&mut annexb, p);
        }
    }
    let mut failed = None;
    if let Some(w) = warm.as_mut() {
        let last = frames.len().saturating_sub(1);
        for (i, f) in frames.iter().enumerate() {
            for n in &f.nals {
                push_annexb(&mut annexb, n);
            }
            stats.frames += 1;
            w.seq = Some(f.seq);
            // Only the newest pictures are copied out (the last few: a hardware decoder may
            // hold pictures back); the others are decoded for their references.
            let want = i + WANT_LAST > last;
            match w
                .decoder
                .decode(&annexb, f.capture_unix_us, want, &mut w.spare)
            {
                Ok(Some((frame, captured))) => {
                    // A hardware decoder may hand out an earlier frame's picture.
                    let seq = frames
                        .iter()
                        .find(|g| g.capture_unix_us == captured)
                        .map_or(f.seq, |g| g.seq);
                    w.picture = Some(Arc::new(Picture {
                        frame,
                        seq,
                        capture_unix_us: captured,
                    }))
                }
                Ok(None) => {}
                Err(e) => {
                    failed = Some(format!(
                        "the H.264 decoder ({}) refused frame {}: {e}",
                        w.decoder.name(),
                        f.seq
                    ));
                    break;
                }
            }
            annexb.clear();
        }
    }
    if let Some(msg) = failed {
        // A broken frame: the next IDR starts a decoder again.
        *warm = None;
        return Err(msg);
    }
    warm.as_ref()
        .and_then(|w| Some((w.seq?, w.picture.clone()?)))
        .ok_or_else(|| "the decoder has no picture yet".to_string())
}

/// How many of the newest frames of a catch-up are copied out of the decoder: enough for a
/// stateful hardware decoder that holds two pictures back to hand one out.
const WANT_LAST: usize = 3;

/// The picture scaled to `width` (never up), as a 4:2:0 JPEG ([`crate::codec::jpeg`]).
fn encode(p: &Picture, opts: Options) -> Result<Jpeg, String> {
    let j = jpeg::encode(&p.frame, opts.width, opts.quality)?;
    Ok(Jpeg {
        bytes: Bytes::from(j.bytes),
        capture_unix_us: p.capture_unix_us,
        width: j.width,
        height: j.height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::h264::AccessUnit;

    #[test]
    fn options_name_the_allowed_range() {
        assert_eq!(
            Options::parse(Some("width=320&quality=50")),
            Ok(Options {
                width: Some(320),
                quality: 50
            })
        );
        assert_eq!(Options::parse(None).map(|o| o.quality), Ok(DEFAULT_QUALITY));
        assert!(Options::parse(Some("t=12345")).is_ok());
        for (q, needle) in [
            ("width=0", "16..=7680"),
            ("width=abc", "16..=7680"),
            ("width=99999", "16..=7680"),
            ("quality=0", "1..=100"),
            ("quality=101", "1..=100"),
            ("quality=", "1..=100"),
            ("size=1", "unknown option"),
        ] {
            let e = Options::parse(Some(q)).unwrap_err();
            assert!(e.contains(needle), "{q}: {e}");
        }
    }

    #[test]
    fn a_flat_picture_encodes_to_a_jpeg_of_the_asked_width() {
        let frame = I420Frame::new(64, 48);
        let p = Picture {
            frame,
            seq: 0,
            capture_unix_us: 1,
        };
        let j = encode(
            &p,
            Options {
                width: Some(32),
                quality: 80,
            },
        )
        .unwrap();
        assert_eq!((j.width, j.height), (32, 24));
        assert_eq!(&j.bytes[..2], &[0xff, 0xd8], "SOI");
        assert_eq!(&j.bytes[j.bytes.len() - 2..], &[0xff, 0xd9], "EOI");
        let j = encode(
            &p,
            Options {
                width: Some(6400),
                quality: 80,
            },
        )
        .unwrap();
        assert_eq!((j.width, j.height), (64, 48), "never scaled up");
    }

    /// An access unit the stand-in decoder reads: an SPS before an IDR, and `mark` as the
    /// first byte after the slice header byte (the stand-in fills Y with it).
    fn marked(idr: bool, mark: u8) -> AccessUnit {
        let mut nals = Vec::new();
        if idr {
            nals.push(Bytes::from_static(&[0x67, 0x42, 0xc0, 0x1e]));
            nals.push(Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80]));
        }
        nals.push(Bytes::from(vec![if idr { 0x65 } else { 0x41 }, mark, 0x80]));
        AccessUnit {
            nals,
            is_idr: idr,
            has_b_slices: false,
        }
    }

    fn hardware(driver: v4l2::standin::decoder::DecoderDriver) -> Option<Warm> {
        // Mock: no machine these tests run on has a V4L2 decoder; the stand-in driver models
        // the stateful decoder protocol (firmware/v4l2/src/standin/decoder.rs).
        let decoder = v4l2::Decoder::new(driver, "standin-video10").expect("stand-in opens");
        Some(Warm {
            decoder: FrameDecoder::Hardware {
                decoder: Box::new(decoder),
                name: "stand-in".into(),
            },
            gop: 0,
            seq: None,
            picture: None,
            spare: None,
        })
    }

    #[test]
    fn the_hardware_decoder_gives_the_newest_frame_with_its_capture_time() {
        let tap = Tap::default();
        tap.push(&marked(true, 10), 1_000);
        tap.push(&marked(false, 11), 1_033);
        tap.push(&marked(false, 12), 1_066);
        let mut warm = hardware(v4l2::standin::decoder::DecoderDriver::pi4((64, 48)));
        let mut stats = Stats::default();
        let (seq, p) = decode_newest(&tap, &mut warm, &mut stats).expect("decodes");
        assert_eq!((seq, p.seq, p.capture_unix_us), (2, 2, 1_066));
        assert_eq!((p.frame.width, p.frame.height), (64, 48));
        assert!(
            p.frame.y.iter().all(|&y| y == 12),
            "the newest frame's picture"
        );
        assert_eq!(stats.frames, 3);
        // Warm: only the frame that came since is decoded.
        tap.push(&marked(false, 13), 1_100);
        let mut stats = Stats::default();
        let (_, p) = decode_newest(&tap, &mut warm, &mut stats).expect("decodes");
        assert_eq!((stats.frames, stats.cold, p.capture_unix_us), (1, 0, 1_100));
        assert!(p.frame.y.iter().all(|&y| y == 13));
        let jpeg = encode(&p, Options::parse(None).expect("defaults")).expect("encodes");
        assert_eq!(
            (jpeg.width, jpeg.height, jpeg.capture_unix_us),
            (64, 48, 1_100)
        );
    }

    #[test]
    fn a_lagging_hardware_decoder_never_passes_an_older_picture_off_as_newer() {
        let tap = Tap::default();
        let mut driver = v4l2::standin::decoder::DecoderDriver::pi4((64, 48));
        driver.lag = 1;
        let mut warm = hardware(driver);
        tap.push(&marked(true, 20), 2_000);
        tap.push(&marked(false, 21), 2_033);
        tap.push(&marked(false, 22), 2_066);
        let mut stats = Stats::default();
        // The newest picture is still held back (not waited for forever); the one that came
        // out is labelled with its own frame's capture time.
        {
            let (seq, p) = decode_newest(&tap, &mut warm, &mut stats).expect("a picture");
            assert_eq!(seq, 2, "the decoder was given every frame");
            let mark = p.frame.y[0];
            let expect = match mark {
                20 => 2_000,
                21 => 2_033,
                22 => 2_066,
                m => panic!("a picture of no frame given: {m}"),
            };
            assert_eq!(
                p.capture_unix_us, expect,
                "picture {mark} labelled as another frame"
            );
            assert_eq!(p.seq, u64::from(mark - 20));
        }
    }

    #[test]
    fn a_hardware_decoder_that_vanishes_is_dropped_and_says_so() {
        let tap = Tap::default();
        let mut driver = v4l2::standin::decoder::DecoderDriver::pi4((64, 48));
        driver.vanish_at = Some(1);
        let mut warm = hardware(driver);
        tap.push(&marked(true, 30), 3_000);
        tap.push(&marked(false, 31), 3_033);
        let e = decode_newest(&tap, &mut warm, &mut Stats::default()).expect_err("gone");
        assert!(e.contains("stand-in") && e.contains("frame 1"), "{e}");
        assert!(warm.is_none(), "the next request starts a new decoder");
    }

    #[test]
    fn without_a_hardware_decoder_openh264_decodes() {
        // No /dev/video* on the machines this runs on: open() falls back to OpenH264.
        let d = FrameDecoder::open().expect("OpenH264 starts");
        if v4l2::find_h264_decoder().is_none() {
            assert_eq!(d.name(), "OpenH264");
        }
    }

    #[test]
    fn the_decoder_follows_only_frequent_recent_requests() {
        let at = |ago_ms: u64, interval_ms: Option<u64>| Asked {
            last: Instant::now().checked_sub(Duration::from_millis(ago_ms)),
            interval: interval_ms.map(Duration::from_millis),
            wanted: None,
        };
        assert!(at(0, Some(100)).following(), "10 a second");
        assert!(at(0, Some(300)).following(), "about 3 a second");
        assert!(
            !at(0, Some(500)).following(),
            "2 a second: catch up per request"
        );
        assert!(!at(0, None).following(), "a single request");
        assert!(
            !at(2500, Some(100)).following(),
            "a burst that ended 2.5 s ago"
        );
    }
}
