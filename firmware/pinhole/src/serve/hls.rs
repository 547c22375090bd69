//! LL-HLS over the hub's ring: the same parts the chunked stream sends, listed in playlists and
//! served as partial segments, segments (their parts' payloads concatenated) and init segments.
//!
//! Everything that decides anything lives in [`media::hls`] (pure, fuzzed, golden-tested): this
//! file only snapshots the ring, waits, and answers. Routes (under `/hls/`):
//!
//! | name | answer |
//! |---|---|
//! | `index.m3u8` | multivariant playlist: BANDWIDTH (peak segment rate in the ring), CODECS, RESOLUTION, FRAME-RATE |
//! | `stream.m3u8` | media playlist; with `_HLS_msn`/`_HLS_part`, held until that part exists (blocking reload) |
//! | `init-G.mp4` | init segment `G` |
//! | `seg-N.m4s` | segment `N` = its parts' payloads, concatenated: only once complete |
//! | `part-N-I.m4s` | part `I` of segment `N`; the next part (the preload hint) is held until it is cut |
//!
//! Rules:
//!
//! * **Numbers never repeat across restarts.** HLS numbers are the hub's `(msn, part_index)` and
//!   init generation plus an *epoch*, the Unix time in ms when this process started serving.
//!   The hub numbers from 0 in every process, while segments and parts are served as
//!   `immutable` for a year: without the epoch, a cache in front (Cloudflare) would serve the
//!   previous run's `seg-3.m4s` after a restart. A segment or init lasts at least one frame, so
//!   a process numbers fewer than 1000 per second and the next epoch is past them all. Media
//!   sequence numbers therefore also keep increasing across restarts. They are ~1.8e12: valid
//!   (RFC 8216 allows up to 2^64 − 1), but GStreamer's m3u8 parsers read EXT-X-MEDIA-SEQUENCE
//!   into a 32-bit int and log "Numerical result out of range". The legacy hlsdemux then numbers
//!   segments by matching URIs between reloads (gst-plugins-bad 1.22 `ext/hls/m3u8.c`), and
//!   hlsdemux2 plays them at full rate (tests/e2e/test_webkit.py's GStreamer test). What WebKitGTK's
//!   native HLS trips on is something else (bench/README.md, issue 17).
//! * **Held requests are bounded**: at most [`HlsConfig::max_held`] at once (blocking reloads
//!   and not-yet-cut parts together; the next one gets 503 with `Retry-After: 1`), each for at
//!   most three target durations (then 503, as 8216bis 6.2.5.2 says), and all are answered 503
//!   at shutdown. A request that needs no waiting takes no permit.
//! * **Targets only grow.** TARGETDURATION and PART-TARGET must not change (8216bis 4.4.3.1,
//!   4.4.3.7); they start at 1 s and the configured part duration and are raised, never
//!   lowered, if a longer segment or part appears (a 25 fps source cuts 120 ms parts for a 100 ms
//!   target; a GOP longer than a second).
//! * **Caching.** Init, segments and parts: `public, max-age=31536000, immutable`. The plain
//!   playlist: `no-cache` (it changes with every part, 10 times a second; one second of staleness
//!   would start a low-latency client ten parts late). A blocking reload's answer is a function
//!   of its URL (it contains at least the part named there), so it is `public` with a max-age of
//!   six target durations: a CDN can answer every viewer asking for the same next part with one
//!   request to the Pi. Errors are `no-store`. Every `/hls/` response allows any origin (CORS),
//!   so players on other origins (hls.js on a dashboard) can fetch it.
//! * **Window.** The playlist lists about six seconds of complete segments and the one being
//!   cut (see [`WindowOptions`]), inside the hub's ten-second ring, so what a playlist lists
//!   stays fetchable while that playlist is current. With GOPs longer than about two seconds
//!   the ring cannot hold three target durations beside the current GOP; the window is then
//!   whatever complete segments the ring still holds.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use media::hls::{
    bandwidth_bps, decide, frame_rate, part_is_next, render_multivariant, Decision, MediaPlaylist,
    PartInfo, Query, Resource, Variant, WindowOptions,
};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::metrics::Family;
use tokio::time::Instant;

use crate::hub::{Entry, Hub, PartPosition};

/// Held requests allowed at once, by default: a few per viewer for a few dozen viewers.
pub const MAX_HELD: usize = 100;

pub const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
pub const INIT_TYPE: &str = "video/mp4";
/// The registered type for CMAF/ISO BMFF media segments (RFC 8216bis 4.4.4, IANA `iso.segment`).
pub const SEGMENT_TYPE: &str = "video/iso.segment";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const NO_STORE: &str = "no-store";

#[derive(Clone, Copy, Debug)]
pub struct HlsConfig {
    /// The configured part (fragment) duration: PART-TARGET starts here.
    pub part_target_90k: u32,
    pub max_held: usize,
    /// Overrides "three target durations" as the longest hold (tests).
    pub hold_limit: Option<Duration>,
}

impl HlsConfig {
    pub fn new(part_target_90k: u32) -> HlsConfig {
        HlsConfig {
            part_target_90k,
            max_held: MAX_HELD,
            hold_limit: None,
        }
    }
}

/// An answer, independent of the HTTP library: `http.rs` turns it into a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub cache_control: String,
    /// Seconds, for 503.
    pub retry_after: Option<u32>,
    pub body: Bytes,
}

impl Reply {
    fn ok(content_type: &'static str, cache_control: impl Into<String>, body: Bytes) -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type,
            cache_control: cache_control.into(),
            retry_after: None,
            body,
        }
    }

    fn error(status: StatusCode, text: impl std::fmt::Display) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            cache_control: NO_STORE.into(),
            retry_after: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1),
            body: Bytes::from(format!("{text}\n")),
        }
    }
}

/// Why a request was not answered with what it asked for (counted for `/metrics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Malformed,
    TooFarAhead,
    Busy,
    Timeout,
    NotFound,
    ShuttingDown,
}

const REFUSALS: [(Refusal, &str); 6] = [
    (Refusal::Malformed, "malformed"),
    (Refusal::TooFarAhead, "too_far_ahead"),
    (Refusal::Busy, "busy"),
    (Refusal::Timeout, "timeout"),
    (Refusal::NotFound, "not_found"),
    (Refusal::ShuttingDown, "shutting_down"),
];

/// Discontinuities counted for EXT-X-DISCONTINUITY-SEQUENCE, and the targets' high-water marks.
#[derive(Debug, Default)]
struct Tracker {
    part_target_90k: u32,
    target_duration_s: u32,
    /// MSNs of segments that start a discontinuity, still in the window or ahead of it.
    discontinuities: VecDeque<u64>,
    /// Discontinuities that have left the window.
    discontinuity_sequence: u64,
    /// The newest segment ever counted as a discontinuity.
    newest_discontinuity: Option<u64>,
}

pub struct Hls {
    hub: Arc<Hub>,
    epoch: u64,
    config: HlsConfig,
    held: Arc<Semaphore>,
    tracker: Mutex<Tracker>,
    shutdown: watch::Receiver<bool>,
    served: AtomicU64,
    blocked: AtomicU64,
    refused: [AtomicU64; REFUSALS.len()],
}

impl std::fmt::Debug for Hls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hls")
            .field("epoch", &self.epoch)
            .field("held", &self.held())
            .finish_non_exhaustive()
    }
}

enum Wake {
    Changed,
    Timeout,
    Shutdown,
}

impl Hls {
    /// Numbers from an epoch of now (Unix ms).
    pub fn new(hub: Arc<Hub>, config: HlsConfig, shutdown: watch::Receiver<bool>) -> Hls {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
        Hls::with_epoch(hub, config, shutdown, epoch)
    }

    pub fn with_epoch(
        hub: Arc<Hub>,
        config: HlsConfig,
        shutdown: watch::Receiver<bool>,
        epoch: u64,
    ) -> Hls {
        Hls {
            hub,
            epoch,
            held: Arc::new(Semaphore::new(config.max_held)),
            tracker: Mutex::new(Tracker {
                part_target_90k: config.part_target_90k,
                target_duration_s: 1,
                ..Tracker::default()
            }),
            config,
            shutdown,
            served: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
            refused: Default::default(),
        }
    }

    /// Requests being held right now.
    pub fn held(&self) -> usize {
        self.config
            .max_held
            .saturating_sub(self.held.available_permits())
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Prometheus lines for `/metrics`.
    /// Its metric families (`/metrics`).
    pub fn families(&self) -> Vec<Family> {
        let mut refused = Family::counter(
            "pinhole_hls_refused_total",
            "LL-HLS requests refused, by reason.",
        );
        for (i, (_, name)) in REFUSALS.iter().enumerate() {
            refused =
                refused.labelled(&[("reason", name)], self.refused[i].load(Ordering::Relaxed));
        }
        vec![
            Family::gauge(
                "pinhole_hls_held_requests",
                "LL-HLS requests being held (blocking reloads, hinted parts).",
            )
            .with(self.held()),
            Family::counter(
                "pinhole_hls_responses_total",
                "LL-HLS requests answered with what they asked for.",
            )
            .with(self.served.load(Ordering::Relaxed)),
            Family::counter(
                "pinhole_hls_blocked_total",
                "LL-HLS requests that were held before being answered.",
            )
            .with(self.blocked.load(Ordering::Relaxed)),
            refused,
        ]
    }

    /// [`Self::families`] as Prometheus text.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        crate::metrics::render(&mut out, &self.families());
        out
    }

    fn refuse(&self, why: Refusal, status: StatusCode, text: impl std::fmt::Display) -> Reply {
        if let Some(i) = REFUSALS.iter().position(|(r, _)| *r == why) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
        Reply::error(status, text)
    }

    fn served(&self, r: Reply) -> Reply {
        self.served.fetch_add(1, Ordering::Relaxed);
        r
    }

    /// The newest part in HLS numbering.
    fn to_hls(&self, p: PartPosition) -> Option<(u64, u32)> {
        p.map(|(m, i)| (m.saturating_add(self.epoch), i))
    }

    fn part_infos(&self, ring: &[Entry]) -> Vec<PartInfo> {
        ring.iter()
            .map(|e| PartInfo {
                msn: e.msn.saturating_add(self.epoch),
                index: e.part_index,
                start_90k: e.part.base_decode_time_90k,
                duration_90k: e.part.duration_90k,
                independent: e.part.independent,
                capture_unix_us: e.part.capture_unix_us,
                init_generation: u64::from(e.init.generation).saturating_add(self.epoch),
                discontinuity: e.discontinuity,
                bytes: u32::try_from(e.part.payload().len()).unwrap_or(u32::MAX),
                frames: e.part.frame_count,
            })
            .collect()
    }

    /// The playlist of the ring as it is now; raises the targets' high-water marks and keeps
    /// the discontinuity count.
    fn snapshot(&self) -> MediaPlaylist {
        let parts = self.part_infos(&self.hub.ring());
        let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        let opts = WindowOptions {
            part_target_floor_90k: t.part_target_90k,
            target_duration_floor_s: t.target_duration_s,
            ..WindowOptions::default()
        };
        // Every segment the ring still holds, for the discontinuities the window has not
        // reached yet or has just dropped.
        let everything = MediaPlaylist::from_parts(
            &parts,
            &WindowOptions {
                window_90k: u64::MAX,
                min_segments: usize::MAX,
                ..opts
            },
        );
        for s in everything.segments.iter().filter(|s| s.discontinuity) {
            if t.newest_discontinuity.is_none_or(|m| s.msn > m) {
                t.newest_discontinuity = Some(s.msn);
                t.discontinuities.push_back(s.msn);
            }
        }
        let mut p = MediaPlaylist::from_parts(&parts, &opts);
        let first = p.media_sequence();
        while t.discontinuities.front().is_some_and(|&m| m < first) {
            t.discontinuities.pop_front();
            t.discontinuity_sequence += 1;
        }
        for s in &mut p.segments {
            s.discontinuity = t.discontinuities.contains(&s.msn);
        }
        p.discontinuity_sequence = t.discontinuity_sequence;
        t.part_target_90k = p.part_target_90k();
        t.target_duration_s = p.target_duration_s();
        p
    }

    fn targets(&self) -> (u32, u32) {
        let t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        (t.part_target_90k, t.target_duration_s)
    }

    /// The longest a request may be held: three target durations.
    fn hold_limit(&self) -> Duration {
        self.config
            .hold_limit
            .unwrap_or_else(|| Duration::from_secs(3 * u64::from(self.targets().1)))
    }

    async fn wait(&self, rx: &mut watch::Receiver<PartPosition>, deadline: Instant) -> Wake {
        let mut shutdown = self.shutdown.clone();
        if *shutdown.borrow_and_update() {
            return Wake::Shutdown;
        }
        tokio::select! {
            r = rx.changed() => if r.is_ok() { Wake::Changed } else { Wake::Shutdown },
            _ = tokio::time::sleep_until(deadline) => Wake::Timeout,
            _ = shutdown.changed() => Wake::Shutdown,
        }
    }

    /// Holds a request until the next part is published: takes a place among the held
    /// requests on first use (refused when all are taken), then waits. `Err` is the reply to
    /// send instead (busy, timed out, shutting down).
    async fn hold(
        &self,
        permit: &mut Option<OwnedSemaphorePermit>,
        rx: &mut watch::Receiver<PartPosition>,
        deadline: Instant,
    ) -> Result<(), Reply> {
        if permit.is_none() {
            *permit = Some(self.take_permit()?);
            self.blocked.fetch_add(1, Ordering::Relaxed);
        }
        match self.wait(rx, deadline).await {
            Wake::Changed => Ok(()),
            w => Err(self.woke(w)),
        }
    }

    fn take_permit(&self) -> Result<OwnedSemaphorePermit, Reply> {
        self.held.clone().try_acquire_owned().map_err(|_| {
            self.refuse(
                Refusal::Busy,
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many held LL-HLS requests ({}); retry",
                    self.config.max_held
                ),
            )
        })
    }

    fn woke(&self, w: Wake) -> Reply {
        match w {
            Wake::Timeout => self.refuse(
                Refusal::Timeout,
                StatusCode::SERVICE_UNAVAILABLE,
                "not available within three target durations",
            ),
            _ => self.refuse(
                Refusal::ShuttingDown,
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting down",
            ),
        }
    }

    /// Waits (unheld: every client's first request) until the hub has a part.
    async fn first_part(&self, rx: &mut watch::Receiver<PartPosition>) -> Result<(), Reply> {
        let deadline = Instant::now() + self.hold_limit();
        while rx.borrow_and_update().is_none() {
            match self.wait(rx, deadline).await {
                Wake::Changed => {}
                Wake::Timeout => {
                    return Err(self.refuse(
                        Refusal::Timeout,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no video yet",
                    ))
                }
                w => return Err(self.woke(w)),
            }
        }
        Ok(())
    }

    /// Answers a request for `res` with its query string.
    pub async fn respond(&self, res: Resource, query: Option<&str>) -> Reply {
        match res {
            Resource::MediaPlaylist => self.media_playlist(query.unwrap_or("")).await,
            Resource::Multivariant => self.multivariant().await,
            Resource::Init { generation } => self.init(generation),
            Resource::Segment { msn } => self.segment(msn),
            Resource::Part { msn, index } => self.part(msn, index).await,
        }
    }

    async fn media_playlist(&self, query: &str) -> Reply {
        let q = match Query::parse(query) {
            Ok(q) => q,
            Err(e) => return self.refuse(Refusal::Malformed, StatusCode::BAD_REQUEST, e),
        };
        let mut rx = self.hub.watch_latest();
        if let Err(r) = self.first_part(&mut rx).await {
            return r;
        }
        let Some((msn, part)) = q.blocking() else {
            let p = self.snapshot();
            return self.served(Reply::ok(
                PLAYLIST_TYPE,
                "no-cache",
                Bytes::from(p.render()),
            ));
        };
        let deadline = Instant::now() + self.hold_limit();
        let mut permit = None;
        loop {
            let Some(last) = self.to_hls(*rx.borrow_and_update()) else {
                // first_part saw a part, and the hub never forgets its position.
                return self.woke(Wake::Shutdown);
            };
            match decide(msn, part, last, self.targets().0) {
                Decision::Ready => break,
                Decision::TooFarAhead => {
                    return self.refuse(
                        Refusal::TooFarAhead,
                        StatusCode::BAD_REQUEST,
                        format!(
                            "_HLS_msn={msn} _HLS_part={part:?} is too far ahead of the newest part {}.{}",
                            last.0, last.1
                        ),
                    )
                }
                Decision::Wait => {}
            }
            if let Err(r) = self.hold(&mut permit, &mut rx, deadline).await {
                return r;
            }
        }
        drop(permit);
        let p = self.snapshot();
        let max_age = 6 * u64::from(p.target_duration_s());
        self.served(Reply::ok(
            PLAYLIST_TYPE,
            format!("public, max-age={max_age}"),
            Bytes::from(p.render()),
        ))
    }

    async fn multivariant(&self) -> Reply {
        let mut rx = self.hub.watch_latest();
        if let Err(r) = self.first_part(&mut rx).await {
            return r;
        }
        let Some(init) = self.hub.init() else {
            return self.refuse(
                Refusal::NotFound,
                StatusCode::SERVICE_UNAVAILABLE,
                "no video yet",
            );
        };
        let parts = self.part_infos(&self.hub.ring());
        let (peak, avg) = bandwidth_bps(&parts).unwrap_or((1, 1));
        let text = render_multivariant(&Variant {
            bandwidth_bps: peak,
            average_bandwidth_bps: Some(avg),
            codecs: init.codec.clone(),
            width: init.width,
            height: init.height,
            frame_rate: frame_rate(&parts),
        });
        self.served(Reply::ok(PLAYLIST_TYPE, "no-cache", Bytes::from(text)))
    }

    fn not_found(&self, res: Resource) -> Reply {
        self.refuse(
            Refusal::NotFound,
            StatusCode::NOT_FOUND,
            format!("{res} is not (or no longer) here"),
        )
    }

    fn init(&self, generation: u64) -> Reply {
        let res = Resource::Init { generation };
        let Some(hub_gen) = generation
            .checked_sub(self.epoch)
            .and_then(|g| u32::try_from(g).ok())
        else {
            return self.not_found(res);
        };
        let found = self
            .hub
            .init()
            .filter(|i| i.generation == hub_gen)
            .or_else(|| {
                self.hub
                    .ring()
                    .into_iter()
                    .find(|e| e.init.generation == hub_gen)
                    .map(|e| e.init)
            });
        match found {
            Some(init) => self.served(Reply::ok(INIT_TYPE, IMMUTABLE, init.payload())),
            None => self.not_found(res),
        }
    }

    fn segment(&self, msn: u64) -> Reply {
        let res = Resource::Segment { msn };
        let Some(hub_msn) = msn.checked_sub(self.epoch) else {
            return self.not_found(res);
        };
        let ring = self.hub.ring();
        // Complete once a later segment has begun; every part from 0 must still be here.
        let complete = ring.last().is_some_and(|e| e.msn > hub_msn);
        let parts: Vec<&Entry> = ring.iter().filter(|e| e.msn == hub_msn).collect();
        let whole = parts
            .iter()
            .enumerate()
            .all(|(i, e)| e.part_index as usize == i);
        if !complete || parts.is_empty() || !whole {
            return self.not_found(res);
        }
        let mut body = BytesMut::with_capacity(parts.iter().map(|e| e.part.payload().len()).sum());
        for e in parts {
            body.extend_from_slice(&e.part.payload());
        }
        self.served(Reply::ok(SEGMENT_TYPE, IMMUTABLE, body.freeze()))
    }

    fn find_part(&self, hub_msn: u64, index: u32) -> Option<Bytes> {
        self.hub
            .ring()
            .iter()
            .rev()
            .find(|e| e.msn == hub_msn && e.part_index == index)
            .map(|e| e.part.payload())
    }

    async fn part(&self, msn: u64, index: u32) -> Reply {
        let res = Resource::Part { msn, index };
        let Some(hub_msn) = msn.checked_sub(self.epoch) else {
            return self.not_found(res);
        };
        let mut rx = self.hub.watch_latest();
        let mut permit = None;
        let deadline = Instant::now() + self.hold_limit();
        loop {
            let last = *rx.borrow_and_update();
            if let Some(b) = self.find_part(hub_msn, index) {
                return self.served(Reply::ok(SEGMENT_TYPE, IMMUTABLE, b));
            }
            // Only the part after the newest is worth waiting for; once something later
            // exists, this one never will.
            let Some(last) = last else {
                return self.not_found(res);
            };
            if !part_is_next((hub_msn, index), last) {
                return self.not_found(res);
            }
            if let Err(r) = self.hold(&mut permit, &mut rx, deadline).await {
                return r;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::segmenter::{InitSegment, Part};

    const EPOCH: u64 = 1_000_000;

    fn init(generation: u32) -> Arc<InitSegment> {
        Arc::new(InitSegment {
            framed: Bytes::from_static(&[0, 0, 0, 2, 0xAA, 0xBB]),
            codec: "avc1.42c01f".into(),
            width: 64,
            height: 48,
            generation,
        })
    }

    /// Part `seq`: 100 ms, an IDR every 10; its payload is 4 bytes naming it.
    fn part(seq: u64) -> Arc<Part> {
        let mut framed = vec![0, 0, 0, 4];
        framed.extend_from_slice(&(seq as u32).to_be_bytes());
        Arc::new(Part {
            framed: Bytes::from(framed),
            sequence: seq,
            base_decode_time_90k: seq * 9_000,
            duration_90k: 9_000,
            frame_count: 3,
            independent: seq % 10 == 0,
            capture_unix_us: 1_700_000_000_000_000 + seq * 100_000,
            init_generation: 1,
        })
    }

    fn setup(max_held: usize, hold_ms: u64) -> (Arc<Hub>, Arc<Hls>, watch::Sender<bool>) {
        let hub = Hub::new();
        hub.set_init(init(1));
        let (tx, rx) = watch::channel(false);
        let hls = Arc::new(Hls::with_epoch(
            hub.clone(),
            HlsConfig {
                part_target_90k: 9_000,
                max_held,
                hold_limit: Some(Duration::from_millis(hold_ms)),
            },
            rx,
            EPOCH,
        ));
        (hub, hls, tx)
    }

    fn text(r: &Reply) -> &str {
        std::str::from_utf8(&r.body).unwrap()
    }

    #[tokio::test]
    async fn the_playlist_lists_the_ring_in_hls_numbering() {
        let (hub, hls, _tx) = setup(4, 500);
        for n in 0..25 {
            hub.publish(part(n));
        }
        let r = hls.respond(Resource::MediaPlaylist, None).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.content_type, PLAYLIST_TYPE);
        assert_eq!(r.cache_control, "no-cache");
        let t = text(&r);
        assert!(t.contains("#EXT-X-MEDIA-SEQUENCE:1000000\n"), "{t}");
        assert!(t.contains("#EXT-X-MAP:URI=\"init-1000001.mp4\"\n"), "{t}");
        assert!(t.contains("seg-1000001.m4s\n"), "{t}");
        assert!(t.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-1000002-5.m4s\"\n"));
    }

    #[tokio::test]
    async fn segments_are_their_parts_payloads_concatenated() {
        let (hub, hls, _tx) = setup(4, 500);
        for n in 0..25 {
            hub.publish(part(n));
        }
        let seg = hls
            .respond(Resource::Segment { msn: EPOCH + 1 }, None)
            .await;
        assert_eq!(seg.status, StatusCode::OK);
        assert_eq!(seg.cache_control, IMMUTABLE);
        let mut want = Vec::new();
        for n in 10..20u32 {
            want.extend_from_slice(&n.to_be_bytes());
            let p = hls
                .respond(
                    Resource::Part {
                        msn: EPOCH + 1,
                        index: n - 10,
                    },
                    None,
                )
                .await;
            assert_eq!(&p.body[..], &n.to_be_bytes());
        }
        assert_eq!(&seg.body[..], &want[..]);
        // The segment being cut is not served; nor is one from before the epoch.
        for msn in [EPOCH + 2, 1, EPOCH + 99] {
            let r = hls.respond(Resource::Segment { msn }, None).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{msn}");
            assert_eq!(r.cache_control, NO_STORE);
        }
        let i = hls
            .respond(
                Resource::Init {
                    generation: EPOCH + 1,
                },
                None,
            )
            .await;
        assert_eq!((i.status, &i.body[..]), (StatusCode::OK, &[0xAA, 0xBB][..]));
        let i = hls
            .respond(Resource::Init { generation: EPOCH }, None)
            .await;
        assert_eq!(i.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_blocking_reload_is_answered_when_the_part_is_published_and_not_before() {
        let (hub, hls, _tx) = setup(4, 2_000);
        for n in 0..5 {
            hub.publish(part(n));
        }
        let h = hls.clone();
        let waiter = tokio::spawn(async move {
            h.respond(
                Resource::MediaPlaylist,
                Some(&format!("_HLS_msn={EPOCH}&_HLS_part=5")),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished());
        assert_eq!(hls.held(), 1);
        hub.publish(part(5));
        let r = waiter.await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert!(text(&r).contains(&format!("part-{EPOCH}-5.m4s")));
        assert!(r.cache_control.starts_with("public, max-age="));
        assert_eq!(hls.held(), 0);
    }

    #[tokio::test]
    async fn the_hinted_part_is_served_once_cut_and_a_part_that_will_never_be_is_404() {
        let (hub, hls, _tx) = setup(4, 2_000);
        for n in 0..9 {
            hub.publish(part(n));
        }
        let h = hls.clone();
        let next = tokio::spawn(async move {
            h.respond(
                Resource::Part {
                    msn: EPOCH,
                    index: 9,
                },
                None,
            )
            .await
        });
        let h = hls.clone();
        // The hint after part 9 names part 10 of segment 0, but part 10 starts segment 1.
        let never = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            h.respond(
                Resource::Part {
                    msn: EPOCH,
                    index: 10,
                },
                None,
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        hub.publish(part(9));
        let r = next.await.unwrap();
        assert_eq!(
            (r.status, &r.body[..]),
            (StatusCode::OK, &9u32.to_be_bytes()[..])
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        hub.publish(part(10));
        assert_eq!(never.await.unwrap().status, StatusCode::NOT_FOUND);
        // Not the next part: 404 at once.
        let far = hls
            .respond(
                Resource::Part {
                    msn: EPOCH + 1,
                    index: 5,
                },
                None,
            )
            .await;
        assert_eq!(far.status, StatusCode::NOT_FOUND);
        assert_eq!(hls.held(), 0);
    }

    #[tokio::test]
    async fn bad_and_far_requests_are_400_held_requests_are_bounded_in_number_and_time() {
        let (hub, hls, _tx) = setup(2, 300);
        for n in 0..5 {
            hub.publish(part(n));
        }
        for q in [
            "_HLS_msn=abc",
            "_HLS_msn=-1",
            "_HLS_part=1",
            "_HLS_msn=99999999999999999999999",
        ] {
            let r = hls.respond(Resource::MediaPlaylist, Some(q)).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        }
        for q in [
            format!("_HLS_msn={}", EPOCH + 3),
            format!("_HLS_msn={EPOCH}&_HLS_part=40"),
            format!("_HLS_msn={}", u64::MAX),
        ] {
            let r = hls.respond(Resource::MediaPlaylist, Some(&q)).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", text(&r));
        }
        let q = format!("_HLS_msn={}", EPOCH + 1);
        let held: Vec<_> = (0..3)
            .map(|_| {
                let h = hls.clone();
                let q = q.clone();
                tokio::spawn(async move { h.respond(Resource::MediaPlaylist, Some(&q)).await })
            })
            .collect();
        let mut statuses = Vec::new();
        for h in held {
            let r = h.await.unwrap();
            statuses.push((r.status, r.retry_after));
        }
        statuses.sort();
        assert_eq!(
            statuses,
            [(StatusCode::SERVICE_UNAVAILABLE, Some(1)); 3],
            "two time out after 300 ms, one was over the limit"
        );
        assert_eq!(hls.held(), 0);
        let m = hls.prometheus();
        assert!(
            m.contains("pinhole_hls_refused_total{reason=\"busy\"} 1\n"),
            "{m}"
        );
        assert!(
            m.contains("pinhole_hls_refused_total{reason=\"timeout\"} 2\n"),
            "{m}"
        );
        assert!(
            m.contains("pinhole_hls_refused_total{reason=\"malformed\"} 4\n"),
            "{m}"
        );
        assert!(m.contains("pinhole_hls_held_requests 0\n"), "{m}");
    }

    #[tokio::test]
    async fn shutdown_answers_held_requests_at_once() {
        let (hub, hls, tx) = setup(4, 10_000);
        hub.publish(part(0));
        let h = hls.clone();
        let waiter = tokio::spawn(async move {
            h.respond(
                Resource::MediaPlaylist,
                Some(&format!("_HLS_msn={}", EPOCH + 1)),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send_replace(true);
        let r = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn discontinuities_are_counted_once_they_leave_the_window() {
        let (hub, hls, _tx) = setup(4, 500);
        for n in 0..30 {
            hub.publish(part(n));
        }
        hub.mark_discontinuity();
        for n in 30..60 {
            hub.publish(part(n));
            let _ = hls.snapshot(); // the daemon sees every playlist it serves
        }
        let p = hls.snapshot();
        assert_eq!(p.discontinuity_sequence, 0);
        assert!(p.segments.iter().any(|s| s.discontinuity));
        for n in 60..200 {
            hub.publish(part(n));
            let _ = hls.snapshot();
        }
        let p = hls.snapshot();
        assert_eq!(p.discontinuity_sequence, 1);
        assert!(!p.segments.iter().any(|s| s.discontinuity));
        assert!(!p.render().contains("#EXT-X-DISCONTINUITY\n"));
        assert!(p.render().contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"));
    }

    #[tokio::test]
    async fn the_multivariant_playlist_names_codec_size_and_rate() {
        let (hub, hls, _tx) = setup(4, 500);
        for n in 0..25 {
            hub.publish(part(n));
        }
        let r = hls.respond(Resource::Multivariant, None).await;
        assert_eq!(r.status, StatusCode::OK);
        let t = text(&r);
        assert!(
            t.contains("CODECS=\"avc1.42c01f\",RESOLUTION=64x48,FRAME-RATE=30.000\nstream.m3u8\n"),
            "{t}"
        );
        assert!(t.contains("BANDWIDTH=320,"), "{t}");
    }
}
