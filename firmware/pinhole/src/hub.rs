//! The hub: one per stream, between the segmenter and the viewers.
//!
//! It keeps a ring of recent parts (shared `Arc`s: the bytes exist once however many viewers
//! there are) and a small queue per viewer. Rules:
//!
//! * A new viewer starts at the latest IDR: it gets the current GOP at once, so the picture
//!   appears without waiting for the next key frame (go2rtc #1595, MediaMTX #1209).
//! * The source never waits: [`Hub::publish`] only takes short locks and never blocks on a
//!   viewer.
//! * A viewer that falls behind — its queue is full, or its oldest queued part is more than
//!   [`max_lag_90k`] older than the newest — has its queue dropped and resumes at the next IDR.
//!   The skip is counted. Memory per viewer is therefore bounded by its queue, whatever the
//!   viewer does (MediaMTX #2784, go2rtc #1685).
//! * Each queued entry carries the init segment it needs, so a parameter change mid-stream is
//!   sent in-band before the first part that depends on it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use media::segmenter::{InitSegment, Part};

/// Entries a viewer may have queued (not yet handed to its connection).
pub const VIEWER_QUEUE: usize = 64;
/// A viewer may lag at least this much (90 kHz) before it is skipped forward.
pub const MIN_LAG_90K: u64 = 4 * 90_000;
/// Parts older than this are dropped from the ring unless they belong to the current GOP.
///
/// What needs the ring: the LL-HLS playlist lists six seconds of complete segments and the one
/// being cut (`media::hls::WindowOptions`), and what it lists must stay fetchable for longer than
/// that playlist is current (a part, or one target duration for a client that does not block):
/// with one-second GOPs, 6 s + 1 s being cut + 1 s + a second to spare. New viewers start at the
/// last IDR, and a lagging one skips forward: neither reads further back. It was 12 s; at
/// 1080p30 6 Mbit/s each second is 0.75 MB, and the two seconds given back keep pinhole's peak
/// RSS at 10 viewers under 20 MB now that the snapshot tap holds a GOP too (issue 25).
const RING_KEEP_90K: u64 = 10 * 90_000;
/// Hard cap on the ring's bytes, for streams whose GOP never ends (IDR only on request).
const RING_MAX_BYTES: usize = 32 << 20;

/// The lag a viewer is allowed before it skips: four seconds, or a whole GOP and a second
/// when GOPs are longer, so a viewer that just joined at the start of a long GOP is not
/// skipped for being where it was put.
pub fn max_lag_90k(gop_90k: u64) -> u64 {
    MIN_LAG_90K.max(gop_90k + 90_000)
}

/// One queued record: a part and the init segment it decodes with, and where it sits in the
/// LL-HLS numbering: segment `msn` (a segment starts at each IDR), part `part_index` within it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub part: Arc<Part>,
    pub init: Arc<InitSegment>,
    pub msn: u64,
    pub part_index: u32,
    /// The first part after a break in the timeline (source restart) or an init change.
    pub discontinuity: bool,
}

/// The position of the newest part, for LL-HLS blocking reloads: `(msn, part_index)`.
pub type PartPosition = Option<(u64, u32)>;

#[derive(Debug, Default, Clone, Copy)]
pub struct HubCounters {
    pub viewers: u64,
    pub skips: u64,
    pub bytes_sent: u64,
}

#[derive(Debug)]
pub struct Hub {
    inner: Mutex<Inner>,
    /// Changes each time a part is published; LL-HLS requests wait on it.
    latest: tokio::sync::watch::Sender<PartPosition>,
    skips: AtomicU64,
    bytes_sent: AtomicU64,
    next_viewer_id: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    init: Option<Arc<InitSegment>>,
    ring: VecDeque<Entry>,
    ring_bytes: usize,
    /// Duration of the last complete GOP (90 kHz), and where the current one started.
    gop_90k: u64,
    gop_start_90k: Option<u64>,
    viewers: Vec<Arc<ViewerShared>>,
    closed: bool,
    /// Position of the last published part.
    position: PartPosition,
    /// The next part starts a discontinuity (set at a source restart).
    discontinuity: bool,
}

#[derive(Debug)]
struct ViewerShared {
    id: u64,
    state: Mutex<ViewerState>,
}

#[derive(Debug)]
struct ViewerState {
    queue: heapless::Deque<Entry, VIEWER_QUEUE>,
    waker: Option<Waker>,
    /// Dropping parts until the next IDR.
    skipping: bool,
    closed: bool,
    skips: u64,
}

impl ViewerState {
    /// Queues `entry`, or skips. Returns true when the viewer was skipped forward.
    fn offer(&mut self, entry: &Entry, max_lag_90k: u64) -> bool {
        if self.closed {
            return false;
        }
        let independent = entry.part.independent;
        if self.skipping {
            if !independent {
                return false;
            }
            self.skipping = false;
        }
        let lagging = self.queue.is_full()
            || self.queue.front().is_some_and(|oldest| {
                entry
                    .part
                    .base_decode_time_90k
                    .saturating_sub(oldest.part.base_decode_time_90k)
                    > max_lag_90k
            });
        let mut skipped = false;
        if lagging {
            self.queue.clear();
            self.skips += 1;
            skipped = true;
            if !independent {
                self.skipping = true;
                return true;
            }
        }
        // Cannot fail: the queue was either not full or just cleared.
        let _ = self.queue.push_back(entry.clone());
        skipped
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (every update is a
    // single push/pop), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            inner: Mutex::default(),
            latest: tokio::sync::watch::Sender::new(None),
            skips: AtomicU64::default(),
            bytes_sent: AtomicU64::default(),
            next_viewer_id: AtomicU64::default(),
        }
    }
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// The init segment for the parts that follow. A different generation starts a
    /// discontinuity in the LL-HLS numbering.
    pub fn set_init(&self, init: Arc<InitSegment>) {
        let mut inner = lock(&self.inner);
        if inner
            .init
            .as_ref()
            .is_some_and(|i| i.generation != init.generation)
        {
            inner.discontinuity = true;
        }
        inner.init = Some(init);
    }

    /// The timeline breaks here (the source restarted): the next part is a discontinuity.
    pub fn mark_discontinuity(&self) {
        lock(&self.inner).discontinuity = true;
    }

    /// Watches the position of the newest part.
    pub fn watch_latest(&self) -> tokio::sync::watch::Receiver<PartPosition> {
        self.latest.subscribe()
    }

    pub fn init(&self) -> Option<Arc<InitSegment>> {
        lock(&self.inner).init.clone()
    }

    /// Publishes a part to the ring and every viewer. Never blocks on a viewer.
    pub fn publish(&self, part: Arc<Part>) {
        let mut wake = Vec::new();
        let position;
        {
            let mut inner = lock(&self.inner);
            let Some(init) = inner.init.clone() else {
                return; // The segmenter always emits an init first; nothing can decode without.
            };
            let (msn, part_index) = match inner.position {
                None => (0, 0),
                Some((msn, _)) if part.independent => (msn + 1, 0),
                Some((msn, idx)) => (msn, idx + 1),
            };
            let discontinuity =
                std::mem::take(&mut inner.discontinuity) && inner.position.is_some();
            inner.position = Some((msn, part_index));
            let entry = Entry {
                part,
                init,
                msn,
                part_index,
                discontinuity,
            };
            let t = entry.part.base_decode_time_90k;
            if entry.part.independent {
                if let Some(start) = inner.gop_start_90k {
                    inner.gop_90k = t.saturating_sub(start);
                }
                inner.gop_start_90k = Some(t);
            }
            position = inner.position;
            inner.ring_bytes += entry.part.framed.len();
            inner.ring.push_back(entry.clone());
            inner.trim_ring();
            let max_lag = max_lag_90k(inner.gop_90k);
            for v in &inner.viewers {
                let mut st = lock(&v.state);
                if st.offer(&entry, max_lag) {
                    self.skips.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(viewer = v.id, "viewer fell behind; skipped to the next IDR");
                }
                if let Some(w) = st.waker.take() {
                    wake.push(w);
                }
            }
        }
        // Wake outside the locks so woken tasks do not contend with us.
        self.latest.send_replace(position);
        for w in wake {
            w.wake();
        }
    }

    /// A new viewer, primed with the current GOP.
    pub fn subscribe(self: &Arc<Self>) -> Viewer {
        let id = self.next_viewer_id.fetch_add(1, Ordering::Relaxed);
        let mut state = ViewerState {
            queue: heapless::Deque::new(),
            waker: None,
            skipping: false,
            closed: false,
            skips: 0,
        };
        let mut inner = lock(&self.inner);
        state.closed = inner.closed;
        let start = inner.ring.iter().rposition(|e| e.part.independent);
        match start {
            Some(i) if inner.ring.len() - i <= VIEWER_QUEUE => {
                for e in inner.ring.iter().skip(i) {
                    let _ = state.queue.push_back(e.clone());
                }
            }
            // No IDR yet, or the GOP is longer than a queue: start at the next IDR.
            _ => state.skipping = true,
        }
        let shared = Arc::new(ViewerShared {
            id,
            state: Mutex::new(state),
        });
        inner.viewers.push(shared.clone());
        let count = inner.viewers.len();
        drop(inner);
        tracing::info!(viewer = id, viewers = count, "viewer joined");
        Viewer {
            hub: self.clone(),
            shared,
        }
    }

    /// Ends every viewer's stream (graceful shutdown). New viewers end at once.
    pub fn close(&self) {
        let mut inner = lock(&self.inner);
        inner.closed = true;
        for v in &inner.viewers {
            let mut st = lock(&v.state);
            st.closed = true;
            if let Some(w) = st.waker.take() {
                w.wake();
            }
        }
    }

    pub fn counters(&self) -> HubCounters {
        HubCounters {
            viewers: lock(&self.inner).viewers.len() as u64,
            skips: self.skips.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
        }
    }

    pub fn add_bytes_sent(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The parts currently in the ring, oldest first.
    pub fn ring(&self) -> Vec<Entry> {
        lock(&self.inner).ring.iter().cloned().collect()
    }

    fn remove(&self, id: u64) {
        let mut inner = lock(&self.inner);
        inner.viewers.retain(|v| v.id != id);
        let count = inner.viewers.len();
        drop(inner);
        tracing::info!(viewer = id, viewers = count, "viewer left");
    }
}

impl Inner {
    fn trim_ring(&mut self) {
        let last_idr = self
            .ring
            .iter()
            .rposition(|e| e.part.independent)
            .unwrap_or(0);
        let mut removed = 0;
        while self.ring.len() > 1 {
            let (Some(front), Some(back)) = (self.ring.front(), self.ring.back()) else {
                break;
            };
            let span = back.part.base_decode_time_90k + u64::from(back.part.duration_90k)
                - front
                    .part
                    .base_decode_time_90k
                    .min(back.part.base_decode_time_90k);
            let old = span > RING_KEEP_90K && removed < last_idr;
            if !(old || self.ring_bytes > RING_MAX_BYTES) {
                break;
            }
            if let Some(e) = self.ring.pop_front() {
                self.ring_bytes -= e.part.framed.len();
                removed += 1;
            }
        }
    }
}

/// A viewer's handle. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Viewer {
    hub: Arc<Hub>,
    shared: Arc<ViewerShared>,
}

impl Viewer {
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The next queued entry; `Ready(None)` once the hub closed.
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<Entry>> {
        let mut st = lock(&self.shared.state);
        if let Some(e) = st.queue.pop_front() {
            return Poll::Ready(Some(e));
        }
        if st.closed {
            return Poll::Ready(None);
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    pub fn skips(&self) -> u64 {
        lock(&self.shared.state).skips
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.hub.remove(self.shared.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::task::Waker;

    fn init(generation: u32) -> Arc<InitSegment> {
        Arc::new(InitSegment {
            framed: Bytes::from_static(&[0, 0, 0, 1, 0xAA]),
            codec: "avc1.42c01f".into(),
            width: 64,
            height: 64,
            generation,
        })
    }

    fn part(seq: u64, independent: bool) -> Arc<Part> {
        Arc::new(Part {
            framed: Bytes::from(vec![0u8; 100]),
            sequence: seq,
            base_decode_time_90k: seq * 9_000,
            duration_90k: 9_000,
            frame_count: 3,
            independent,
            capture_unix_us: 0,
            init_generation: 1,
        })
    }

    /// 1 s GOPs of 100 ms parts: part n is an IDR when n % 10 == 0.
    fn publish_range(hub: &Hub, range: std::ops::Range<u64>) {
        for n in range {
            hub.publish(part(n, n % 10 == 0));
        }
    }

    fn drain(v: &Viewer) -> Vec<u64> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(Some(e)) = v.poll_next(&mut cx) {
            out.push(e.part.sequence);
        }
        out
    }

    #[test]
    fn a_new_viewer_starts_at_the_latest_idr_with_the_whole_gop() {
        let hub = Hub::new();
        hub.set_init(init(1));
        publish_range(&hub, 0..25);
        let v = hub.subscribe();
        assert_eq!(drain(&v), (20..25).collect::<Vec<_>>());
    }

    #[test]
    fn a_viewer_joining_before_any_idr_waits_for_one() {
        let hub = Hub::new();
        hub.set_init(init(1));
        let v = hub.subscribe();
        hub.publish(part(1, false));
        hub.publish(part(2, true));
        assert_eq!(drain(&v), vec![2]);
    }

    #[test]
    fn a_stalled_viewer_is_skipped_to_the_next_idr_and_the_others_see_every_part() {
        let hub = Hub::new();
        hub.set_init(init(1));
        let stalled = hub.subscribe();
        let reader = hub.subscribe();
        let mut seen = Vec::new();
        // 0..205: the stalled viewer's last skip (at part 191) resumes at the IDR of part 200.
        for n in 0..205 {
            hub.publish(part(n, n % 10 == 0));
            seen.extend(drain(&reader));
        }
        assert_eq!(seen, (0..205).collect::<Vec<_>>());
        let got = drain(&stalled);
        // Never more than the lag allows, and it resumes on an IDR.
        assert!(got.len() as u64 <= MIN_LAG_90K / 9_000 + 1, "{}", got.len());
        assert_eq!(got.first().map(|s| s % 10), Some(0), "{got:?}");
        assert!(stalled.skips() >= 1);
        assert_eq!(reader.skips(), 0);
        assert_eq!(hub.counters().skips, stalled.skips());
    }

    #[test]
    fn the_ring_keeps_the_current_gop_but_not_much_more() {
        let hub = Hub::new();
        hub.set_init(init(1));
        publish_range(&hub, 0..1000);
        let ring = hub.ring();
        assert!(ring.len() <= 120, "{}", ring.len());
        assert!(ring.iter().any(|e| e.part.independent));
        assert_eq!(ring.last().map(|e| e.part.sequence), Some(999));
    }

    #[test]
    fn entries_carry_the_init_that_was_current_when_published() {
        let hub = Hub::new();
        hub.set_init(init(1));
        let v = hub.subscribe();
        hub.publish(part(0, true));
        hub.set_init(init(2));
        hub.publish(part(1, true));
        let mut cx = Context::from_waker(Waker::noop());
        let gens: Vec<u32> = std::iter::from_fn(|| match v.poll_next(&mut cx) {
            Poll::Ready(Some(e)) => Some(e.init.generation),
            _ => None,
        })
        .collect();
        assert_eq!(gens, vec![1, 2]);
    }

    #[test]
    fn parts_are_numbered_by_segment_and_part_with_discontinuities_marked() {
        let hub = Hub::new();
        hub.set_init(init(1));
        let mut latest = hub.watch_latest();
        publish_range(&hub, 0..12);
        assert_eq!(*latest.borrow_and_update(), Some((1, 1)));
        hub.mark_discontinuity();
        hub.publish(part(12, true));
        hub.set_init(init(2));
        hub.publish(part(13, true));
        hub.publish(part(14, false));
        let pos: Vec<(u64, u32, bool)> = hub
            .ring()
            .iter()
            .map(|e| (e.msn, e.part_index, e.discontinuity))
            .collect();
        assert_eq!(pos[0], (0, 0, false));
        assert_eq!(pos[9], (0, 9, false));
        assert_eq!(pos[10], (1, 0, false));
        assert_eq!(pos[11], (1, 1, false));
        assert_eq!(pos[12], (2, 0, true));
        assert_eq!(pos[13], (3, 0, true));
        assert_eq!(pos[14], (3, 1, false));
        assert!(latest.has_changed().unwrap());
    }

    #[test]
    fn closing_ends_every_viewer_and_dropping_unsubscribes() {
        let hub = Hub::new();
        let v = hub.subscribe();
        assert_eq!(hub.counters().viewers, 1);
        hub.close();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(v.poll_next(&mut cx), Poll::Ready(None)));
        drop(v);
        assert_eq!(hub.counters().viewers, 0);
    }
}
