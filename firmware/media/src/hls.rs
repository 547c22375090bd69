//! Low-Latency HLS: playlists rendered by pure functions from plain snapshots, resource names,
//! and the delivery directives (`_HLS_msn`, `_HLS_part`, `_HLS_skip`) parsed and decided purely.
//!
//! The HLS view of a stream is the same parts the chunked stream sends: an LL-HLS *partial
//! segment* is one [`Part`](crate::segmenter::Part) payload (`prft`+`moof`+`mdat`), and a
//! *segment* is the concatenation of its parts' payloads, from one IDR to the next. Nothing is
//! re-muxed, so the two paths cannot drift apart. The daemon turns its ring of parts into
//! [`PartInfo`]s, [`MediaPlaylist::from_parts`] picks the window, and [`MediaPlaylist::render`]
//! writes the text. No clock is read here; the daemon does the waiting that [`decide`] asks for.
//!
//! References are to draft-pantos-hls-rfc8216bis ("HLS 2nd edition", called 8216bis below).
//!
//! # The media playlist ([`MediaPlaylist::render`])
//!
//! ```text
//! #EXTM3U
//! #EXT-X-VERSION:6                          4.4.1.2: 6 for EXT-X-MAP outside I-frame playlists;
//!                                           nothing used here needs more (no EXT-X-SKIP)
//! #EXT-X-TARGETDURATION:1                   4.4.3.1: ≥ every EXTINF (we take the ceiling)
//! #EXT-X-PART-INF:PART-TARGET=0.10000       4.4.3.7: ≥ every EXT-X-PART DURATION
//! #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.30000,HOLD-BACK=3.00000
//!                                           4.4.3.8: PART-HOLD-BACK = 3 part targets (SHOULD ≥ 3),
//!                                           HOLD-BACK = 3 target durations (MUST ≥ 3)
//! #EXT-X-MEDIA-SEQUENCE:N                   4.4.3.2: MSN of the first listed segment
//! #EXT-X-DISCONTINUITY-SEQUENCE:D           4.4.3.3: only when D > 0
//! #EXT-X-INDEPENDENT-SEGMENTS               4.4.2.1: every segment starts with an IDR
//! per segment, oldest first:
//!   #EXT-X-DISCONTINUITY                    source restart or new init (4.4.4.3)
//!   #EXT-X-MAP:URI="init-G.mp4"             first segment, and whenever the init changes (4.4.4.5)
//!   #EXT-X-PROGRAM-DATE-TIME:…Z             capture wall clock of its first frame (4.4.4.6)
//!   #EXT-X-PART:DURATION=…,URI="part-N-I.m4s"[,INDEPENDENT=YES]
//!                                           only for segments ending within 3 target
//!                                           durations of the playlist's end (6.2.2)
//!   #EXTINF:1.00000,                        complete segments only: plain HLS clients play
//!   seg-N.m4s                               these and ignore every LL tag
//! #EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-N-I.m4s"   the part after the newest (4.4.5.3)
//! ```
//!
//! The last segment is the one still being cut: it has parts and no `EXTINF`. The preload hint
//! names the next part *of that segment*; if the encoder starts a new segment instead (an IDR),
//! the hinted part never exists and a request for it ends in 404 (8216bis 6.2.6 allows this:
//! the hint is a hint).
//!
//! # Names ([`Resource`])
//!
//! `index.m3u8` (multivariant), `stream.m3u8` (media), `init-G.mp4`, `seg-N.m4s`, `part-N-I.m4s`:
//! numbers in canonical decimal (no sign, no leading zero), so one resource has exactly one
//! name, which matters to a cache in front. The daemon offsets `N` and `G` by a per-process
//! epoch so that names are never reused after a restart, since the resources they name are
//! served as immutable.
//!
//! # Blocking reload ([`Query`], [`decide`]), 8216bis 6.2.5.2
//!
//! * `_HLS_msn=M` alone: ready once segment `M` is complete (a later segment has begun).
//! * `_HLS_msn=M&_HLS_part=P`: ready once part `P` of `M`, or anything later, exists. A part
//!   index past the end of a complete segment is "part 0 of the next one", which the
//!   lexicographic comparison of `(msn, part)` gives for free.
//! * `M` more than two past the newest segment, or `P` more than the Advance Part Limit past the
//!   newest part (3 / PART-TARGET parts when PART-TARGET < 1 s, else 3): [`Decision::TooFarAhead`],
//!   which the daemon answers with 400 at once.
//! * `_HLS_part` without `_HLS_msn`, a non-decimal or out-of-range number, a repeated directive:
//!   [`QueryError`], also 400.
//! * `_HLS_skip` is parsed but delta updates are not offered (no `CAN-SKIP-UNTIL`): the Skip
//!   Boundary must be at least six target durations (4.4.3.8) and the window is about that
//!   long, so a delta playlist would skip nothing. Clients must not send it when it is not
//!   offered (6.3.7); the daemon ignores it if they do.

use std::fmt::{self, Write as _};

use thiserror::Error;

use crate::TIMESCALE_90K;

const TICKS: u64 = TIMESCALE_90K as u64;

/// One part as the daemon's ring holds it, in HLS numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartInfo {
    /// Media Sequence Number of its segment.
    pub msn: u64,
    /// Index of the part within the segment, from 0.
    pub index: u32,
    /// Media time of its first frame (`tfdt`), 90 kHz.
    pub start_90k: u64,
    pub duration_90k: u32,
    /// Starts with an IDR (the first part of a segment).
    pub independent: bool,
    /// Capture wall-clock time of its first frame, µs since the Unix epoch.
    pub capture_unix_us: u64,
    /// Which init segment it decodes with (the number in `init-G.mp4`).
    pub init_generation: u64,
    /// First part after a break in the timeline or an init change.
    pub discontinuity: bool,
    /// Payload bytes (for BANDWIDTH).
    pub bytes: u32,
    /// Frames (for FRAME-RATE).
    pub frames: u32,
}

/// How [`MediaPlaylist::from_parts`] picks its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowOptions {
    /// Complete segments are listed, newest first, while their total stays within this…
    pub window_90k: u64,
    /// …or until at least this many are listed.
    pub min_segments: usize,
    /// PART-TARGET never goes below this (the configured part duration); see
    /// [`MediaPlaylist::part_target_90k`].
    pub part_target_floor_90k: u32,
    /// TARGETDURATION never goes below this, in seconds.
    pub target_duration_floor_s: u32,
}

impl Default for WindowOptions {
    /// Six seconds of complete segments (at least three): more than the three target durations
    /// HOLD-BACK asks for, and inside the daemon's ten-second ring, so a listed segment
    /// stays fetchable for longer than the playlist that lists it is current.
    fn default() -> Self {
        WindowOptions {
            window_90k: 6 * TICKS,
            min_segments: 3,
            part_target_floor_90k: 9_000,
            target_duration_floor_s: 1,
        }
    }
}

/// A partial segment as listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaylistPart {
    pub index: u32,
    pub duration_90k: u32,
    pub independent: bool,
}

/// A segment as listed: complete (with `EXTINF`) or the one being cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub msn: u64,
    pub init_generation: u64,
    /// Preceded by `EXT-X-DISCONTINUITY`.
    pub discontinuity: bool,
    /// `EXT-X-PROGRAM-DATE-TIME`: capture time of its first frame, µs since the Unix epoch.
    pub program_date_time_unix_us: u64,
    /// Every part of the segment, in order, from index 0.
    pub parts: Vec<PlaylistPart>,
    /// Its `EXT-X-PART` lines are written (it ends near the live edge).
    pub list_parts: bool,
    /// Has an `EXTINF` and a URI: a later segment has begun.
    pub complete: bool,
}

impl Segment {
    pub fn duration_90k(&self) -> u64 {
        self.parts.iter().map(|p| u64::from(p.duration_90k)).sum()
    }

    /// The position of its last part.
    pub fn last_part(&self) -> Option<(u64, u32)> {
        self.parts.last().map(|p| (self.msn, p.index))
    }
}

/// The snapshot a media playlist is rendered from: plain data, no behaviour but arithmetic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaPlaylist {
    /// Floors for the two targets; the rendered values also cover every listed duration.
    pub part_target_floor_90k: u32,
    pub target_duration_floor_s: u32,
    /// Discontinuities before the first listed segment (the daemon keeps count).
    pub discontinuity_sequence: u64,
    /// Oldest first. Every one but possibly the last is complete.
    pub segments: Vec<Segment>,
}

/// Ceiling of a 90 kHz duration in whole seconds.
fn ceil_seconds(d_90k: u64) -> u64 {
    d_90k.div_ceil(TICKS)
}

impl MediaPlaylist {
    /// Picks the window from the ring's parts (oldest first, in `(msn, index)` order, as the
    /// hub numbers them). Segments whose first part has already left the ring are not listed,
    /// nor anything older; the newest segment is taken to be in progress.
    pub fn from_parts(parts: &[PartInfo], opts: &WindowOptions) -> MediaPlaylist {
        // A playlist's timeline is the sum of its durations, so a forward jump in media time
        // (a source that stalled and skipped ahead) must be a discontinuity, or players look
        // for frames where there are none (hls.js: "skipping hole", stalls). A discontinuity
        // belongs to a whole segment: a jump before a segment's first part marks that segment;
        // a jump inside a segment marks the next one, so the damage stays in one segment.
        let mut parts = parts.to_vec();
        let mut carry = false;
        for i in 1..parts.len() {
            let prev = parts[i - 1];
            let jump = parts[i].start_90k != prev.start_90k + u64::from(prev.duration_90k);
            if parts[i].index == 0 {
                parts[i].discontinuity |= jump || carry;
                carry = false;
            } else {
                carry |= jump;
            }
        }
        // Group into segments, keeping only runs that start at part 0 and have no holes.
        let mut groups: Vec<Vec<PartInfo>> = Vec::new();
        for p in &parts {
            match groups.last_mut() {
                Some(g)
                    if g.last()
                        .is_some_and(|l| l.msn == p.msn && l.index + 1 == p.index) =>
                {
                    g.push(*p)
                }
                _ => groups.push(vec![*p]),
            }
        }
        // Everything before the newest group that does not start a segment is unusable.
        if let Some(bad) = groups.iter().rposition(|g| g[0].index != 0) {
            groups.drain(..=bad);
        }
        let mut segments: Vec<Segment> = groups
            .iter()
            .map(|g| Segment {
                msn: g[0].msn,
                init_generation: g[0].init_generation,
                discontinuity: g.iter().any(|p| p.discontinuity),
                program_date_time_unix_us: g[0].capture_unix_us,
                parts: g
                    .iter()
                    .map(|p| PlaylistPart {
                        index: p.index,
                        duration_90k: p.duration_90k,
                        independent: p.independent,
                    })
                    .collect(),
                list_parts: false,
                complete: true,
            })
            .collect();
        if let Some(last) = segments.last_mut() {
            last.complete = false;
        }
        // Segment numbers must be consecutive within the window; start after any gap.
        if let Some(gap) = segments
            .windows(2)
            .rposition(|w| w[1].msn != w[0].msn.wrapping_add(1))
        {
            segments.drain(..=gap);
        }
        // The window: the segment in progress plus the newest complete ones.
        // At least three target durations of complete segments (RFC 8216 6.2.2), as far as
        // the ring reaches.
        let complete = segments.len().saturating_sub(1);
        let longest = segments
            .iter()
            .map(Segment::duration_90k)
            .max()
            .unwrap_or(0);
        let td_90k = TICKS * ceil_seconds(longest).max(u64::from(opts.target_duration_floor_s));
        let mut keep = 0;
        let mut total = 0u64;
        for s in segments[..complete].iter().rev() {
            let d = s.duration_90k();
            let enough = keep >= opts.min_segments && total >= 3 * td_90k;
            if enough && total + d > opts.window_90k {
                break;
            }
            total += d;
            keep += 1;
        }
        segments.drain(..complete - keep);
        // A new init is a discontinuity even if the source did not say so.
        for i in 1..segments.len() {
            if segments[i].init_generation != segments[i - 1].init_generation {
                segments[i].discontinuity = true;
            }
        }
        let mut playlist = MediaPlaylist {
            part_target_floor_90k: opts.part_target_floor_90k,
            target_duration_floor_s: opts.target_duration_floor_s,
            discontinuity_sequence: 0,
            segments,
        };
        // Parts are listed for segments ending within three target durations of the end.
        let end: u64 = playlist.segments.iter().map(Segment::duration_90k).sum();
        let horizon = end.saturating_sub(3 * TICKS * u64::from(playlist.target_duration_s()));
        let mut t = 0u64;
        for s in &mut playlist.segments {
            t += s.duration_90k();
            s.list_parts = t > horizon || !s.complete;
        }
        playlist
    }

    /// PART-TARGET in 90 kHz ticks: the floor, or the longest part in the window if longer.
    pub fn part_target_90k(&self) -> u32 {
        self.segments
            .iter()
            .flat_map(|s| s.parts.iter().map(|p| p.duration_90k))
            .fold(self.part_target_floor_90k, u32::max)
            .max(1)
    }

    /// TARGETDURATION in seconds: the floor, or the ceiling of the longest segment (the one in
    /// progress included, so the value is already right when it completes).
    pub fn target_duration_s(&self) -> u32 {
        let longest = self
            .segments
            .iter()
            .map(|s| ceil_seconds(s.duration_90k()))
            .max()
            .unwrap_or(0);
        u32::try_from(longest)
            .unwrap_or(u32::MAX)
            .max(self.target_duration_floor_s)
            .max(1)
    }

    /// Media Sequence Number of the first listed segment.
    pub fn media_sequence(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.msn)
    }

    /// The newest listed part.
    pub fn last_part(&self) -> Option<(u64, u32)> {
        self.segments.last().and_then(Segment::last_part)
    }

    /// The part the preload hint names: the one after the newest.
    pub fn preload_hint(&self) -> Option<Resource> {
        self.last_part().map(|(msn, index)| Resource::Part {
            msn,
            index: index.saturating_add(1),
        })
    }

    /// The playlist text (lines end in `\n`).
    pub fn render(&self) -> String {
        let part_target = self.part_target_90k();
        let target_s = self.target_duration_s();
        let mut out = String::with_capacity(256 + 64 * self.segments.len() * 4);
        let _ = writeln!(out, "#EXTM3U");
        let _ = writeln!(out, "#EXT-X-VERSION:{VERSION}");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target_s}");
        let part_target = Seconds::ceil(u64::from(part_target));
        // Three times the value as written, so a client's own arithmetic agrees.
        let part_hold_back = Seconds {
            hundred_thousandths: 3 * part_target.hundred_thousandths,
        };
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part_target}");
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={part_hold_back},HOLD-BACK={}",
            Seconds::ceil(3 * TICKS * u64::from(target_s))
        );
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence());
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(
                out,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_sequence
            );
        }
        let _ = writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS");
        let mut map: Option<u64> = None;
        for s in &self.segments {
            if s.discontinuity {
                let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
            }
            if map != Some(s.init_generation) {
                map = Some(s.init_generation);
                let _ = writeln!(
                    out,
                    "#EXT-X-MAP:URI=\"{}\"",
                    Resource::Init {
                        generation: s.init_generation
                    }
                );
            }
            let _ = writeln!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                ProgramDateTime(s.program_date_time_unix_us)
            );
            if s.list_parts {
                for p in &s.parts {
                    let _ = write!(
                        out,
                        "#EXT-X-PART:DURATION={},URI=\"{}\"",
                        Seconds::nearest(u64::from(p.duration_90k)),
                        Resource::Part {
                            msn: s.msn,
                            index: p.index
                        }
                    );
                    if p.independent {
                        out.push_str(",INDEPENDENT=YES");
                    }
                    out.push('\n');
                }
            }
            if s.complete {
                let _ = writeln!(out, "#EXTINF:{},", Seconds::nearest(s.duration_90k()));
                let _ = writeln!(out, "{}", Resource::Segment { msn: s.msn });
            }
        }
        if let Some(hint) = self.preload_hint() {
            let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{hint}\"");
        }
        out
    }
}

/// `EXT-X-VERSION`: 6 is what EXT-X-MAP in a media playlist needs (8216bis 4.4.4.5, 8); the LL
/// tags need no higher version, and players that check the version accept 6 widely.
pub const VERSION: u32 = 6;

/// Seconds from 90 kHz ticks, written with five decimals (a tick is 11.1 µs).
struct Seconds {
    hundred_thousandths: u64,
}

impl Seconds {
    fn nearest(d_90k: u64) -> Seconds {
        Seconds {
            hundred_thousandths: (d_90k * 100_000 + TICKS / 2) / TICKS,
        }
    }
    /// Rounded up: for targets, which must not be below what they bound.
    fn ceil(d_90k: u64) -> Seconds {
        Seconds {
            hundred_thousandths: (d_90k * 100_000).div_ceil(TICKS),
        }
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:05}",
            self.hundred_thousandths / 100_000,
            self.hundred_thousandths % 100_000
        )
    }
}

/// ISO 8601 UTC with milliseconds: `2024-06-01T12:34:56.789Z` (8216bis 4.4.4.6).
pub struct ProgramDateTime(pub u64);

impl fmt::Display for ProgramDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0 / 1_000;
        let secs = ms / 1_000;
        let days = secs / 86_400;
        let sod = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            sod / 3_600,
            sod / 60 % 60,
            sod % 60,
            ms % 1_000
        )
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

// ------------------------------------------------------------------ multivariant playlist

/// The one variant the multivariant playlist names.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    /// Peak segment bit rate (BANDWIDTH, 8216bis 4.4.6.2).
    pub bandwidth_bps: u64,
    pub average_bandwidth_bps: Option<u64>,
    /// RFC 6381, e.g. `avc1.64001f`.
    pub codecs: String,
    pub width: u32,
    pub height: u32,
    pub frame_rate: Option<f64>,
}

/// Peak and average bit rate of the complete segments among `parts` (all parts when there is
/// no complete segment yet); `None` without any duration.
pub fn bandwidth_bps(parts: &[PartInfo]) -> Option<(u64, u64)> {
    let newest = parts.last()?.msn;
    let complete: Vec<&PartInfo> = parts.iter().filter(|p| p.msn != newest).collect();
    let set: Vec<&PartInfo> = if complete.is_empty() {
        parts.iter().collect()
    } else {
        complete
    };
    let rate = |bytes: u64, d: u64| (d > 0).then(|| bytes * 8 * TICKS / d);
    let mut peak = None::<u64>;
    let mut i = 0;
    while i < set.len() {
        let msn = set[i].msn;
        let (mut b, mut d) = (0u64, 0u64);
        while i < set.len() && set[i].msn == msn {
            b += u64::from(set[i].bytes);
            d += u64::from(set[i].duration_90k);
            i += 1;
        }
        if let Some(r) = rate(b, d) {
            peak = Some(peak.map_or(r, |p: u64| p.max(r)));
        }
    }
    let bytes: u64 = set.iter().map(|p| u64::from(p.bytes)).sum();
    let d: u64 = set.iter().map(|p| u64::from(p.duration_90k)).sum();
    Some((peak?, rate(bytes, d)?))
}

/// Frames per second over `parts`.
pub fn frame_rate(parts: &[PartInfo]) -> Option<f64> {
    let frames: u64 = parts.iter().map(|p| u64::from(p.frames)).sum();
    let d: u64 = parts.iter().map(|p| u64::from(p.duration_90k)).sum();
    (d > 0 && frames > 0).then(|| frames as f64 * TICKS as f64 / d as f64)
}

/// The multivariant playlist (`index.m3u8`) naming [`Resource::MediaPlaylist`].
pub fn render_multivariant(v: &Variant) -> String {
    let mut out = String::with_capacity(256);
    let _ = writeln!(out, "#EXTM3U");
    let _ = writeln!(out, "#EXT-X-VERSION:{VERSION}");
    let _ = writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS");
    let _ = write!(
        out,
        "#EXT-X-STREAM-INF:BANDWIDTH={}",
        v.bandwidth_bps.max(1)
    );
    if let Some(avg) = v.average_bandwidth_bps {
        let _ = write!(out, ",AVERAGE-BANDWIDTH={}", avg.max(1));
    }
    // CODECS is a quoted string: keep only what RFC 6381 codec strings contain.
    let codecs: String = v
        .codecs
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ',' | '-' | '_'))
        .collect();
    let _ = write!(
        out,
        ",CODECS=\"{codecs}\",RESOLUTION={}x{}",
        v.width, v.height
    );
    if let Some(fps) = v.frame_rate.filter(|f| f.is_finite() && *f > 0.0) {
        let _ = write!(out, ",FRAME-RATE={fps:.3}");
    }
    out.push('\n');
    let _ = writeln!(out, "{}", Resource::MediaPlaylist);
    out
}

// ------------------------------------------------------------------ names

/// What a name under `/hls/` refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `index.m3u8`
    Multivariant,
    /// `stream.m3u8`
    MediaPlaylist,
    /// `init-G.mp4`
    Init { generation: u64 },
    /// `seg-N.m4s`
    Segment { msn: u64 },
    /// `part-N-I.m4s`
    Part { msn: u64, index: u32 },
}

impl Resource {
    /// Parses a file name (the path after `/hls/`). Anything else, including a number with a
    /// sign, a leading zero or too many digits, is `None`.
    pub fn parse(name: &str) -> Option<Resource> {
        match name {
            "index.m3u8" => return Some(Resource::Multivariant),
            "stream.m3u8" => return Some(Resource::MediaPlaylist),
            _ => {}
        }
        if let Some(g) = name
            .strip_prefix("init-")
            .and_then(|r| r.strip_suffix(".mp4"))
        {
            return Some(Resource::Init {
                generation: canonical(g)?,
            });
        }
        if let Some(n) = name
            .strip_prefix("seg-")
            .and_then(|r| r.strip_suffix(".m4s"))
        {
            return Some(Resource::Segment { msn: canonical(n)? });
        }
        let rest = name.strip_prefix("part-")?.strip_suffix(".m4s")?;
        let (n, i) = rest.split_once('-')?;
        Some(Resource::Part {
            msn: canonical(n)?,
            index: u32::try_from(canonical(i)?).ok()?,
        })
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Multivariant => f.write_str("index.m3u8"),
            Resource::MediaPlaylist => f.write_str("stream.m3u8"),
            Resource::Init { generation } => write!(f, "init-{generation}.mp4"),
            Resource::Segment { msn } => write!(f, "seg-{msn}.m4s"),
            Resource::Part { msn, index } => write!(f, "part-{msn}-{index}.m4s"),
        }
    }
}

/// A decimal number written the one way `Display` writes it.
fn canonical(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

// ------------------------------------------------------------------ delivery directives

/// `_HLS_skip` (8216bis 6.2.5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// `YES`: skip old segments.
    Yes,
    /// `v2`: and old date ranges.
    V2,
}

/// The delivery directives of a playlist request. Other query parameters are ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub msn: Option<u64>,
    pub part: Option<u32>,
    pub skip: Option<Skip>,
}

/// Why a query was refused (answered 400).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum QueryError {
    #[error("{key}={value:?} is not a decimal integer in 0..={max}")]
    NotANumber {
        key: &'static str,
        value: String,
        max: u64,
    },
    #[error("_HLS_skip={0:?}: allowed values are YES and v2")]
    BadSkip(String),
    #[error("{0} appears more than once")]
    Repeated(&'static str),
    #[error("_HLS_part without _HLS_msn")]
    PartWithoutMsn,
}

/// Longest value echoed back in an error.
const ECHO_MAX: usize = 32;

fn echo(v: &str) -> String {
    v.chars().take(ECHO_MAX).collect()
}

fn decimal(key: &'static str, value: &str, max: u64) -> Result<u64, QueryError> {
    let err = || QueryError::NotANumber {
        key,
        value: echo(value),
        max,
    };
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    match value.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(err()),
    }
}

impl Query {
    /// Parses a URI query string (without the `?`).
    pub fn parse(query: &str) -> Result<Query, QueryError> {
        let mut q = Query::default();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "_HLS_msn" => {
                    if q.msn.is_some() {
                        return Err(QueryError::Repeated("_HLS_msn"));
                    }
                    q.msn = Some(decimal("_HLS_msn", value, u64::MAX)?);
                }
                "_HLS_part" => {
                    if q.part.is_some() {
                        return Err(QueryError::Repeated("_HLS_part"));
                    }
                    q.part = Some(decimal("_HLS_part", value, u64::from(u32::MAX))? as u32);
                }
                "_HLS_skip" => {
                    if q.skip.is_some() {
                        return Err(QueryError::Repeated("_HLS_skip"));
                    }
                    q.skip = Some(match value {
                        "YES" => Skip::Yes,
                        "v2" => Skip::V2,
                        other => return Err(QueryError::BadSkip(echo(other))),
                    });
                }
                _ => {}
            }
        }
        if q.part.is_some() && q.msn.is_none() {
            return Err(QueryError::PartWithoutMsn);
        }
        Ok(q)
    }

    /// Is this a blocking request?
    pub fn blocking(&self) -> Option<(u64, Option<u32>)> {
        self.msn.map(|m| (m, self.part))
    }

    /// The query string for these directives (empty when there are none).
    pub fn render(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = self.msn {
            parts.push(format!("_HLS_msn={m}"));
        }
        if let Some(p) = self.part {
            parts.push(format!("_HLS_part={p}"));
        }
        match self.skip {
            Some(Skip::Yes) => parts.push("_HLS_skip=YES".into()),
            Some(Skip::V2) => parts.push("_HLS_skip=v2".into()),
            None => {}
        }
        parts.join("&")
    }
}

/// What to do with a blocking request, given the newest part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The playlist already contains what was asked for: answer now.
    Ready,
    /// Hold the request until the next part is published, then decide again.
    Wait,
    /// Further ahead than 8216bis 6.2.5.2 allows: answer 400 now.
    TooFarAhead,
}

/// The Advance Part Limit (8216bis 6.2.5.2), in parts: three divided by the Part Target
/// Duration when that is under a second, else three.
pub fn advance_part_limit(part_target_90k: u32) -> u64 {
    let pt = u64::from(part_target_90k.max(1));
    if pt < TICKS {
        3 * TICKS / pt
    } else {
        3
    }
}

/// Decides a blocking request for segment `msn` (part `part`) when the newest part is `last`
/// (`(msn, index)`), under a PART-TARGET of `part_target_90k`.
pub fn decide(msn: u64, part: Option<u32>, last: (u64, u32), part_target_90k: u32) -> Decision {
    let (m, i) = last;
    if msn > m.saturating_add(2) {
        return Decision::TooFarAhead;
    }
    match part {
        // Segment `msn` is complete once a later one has begun.
        None if m > msn => Decision::Ready,
        None => Decision::Wait,
        Some(p) if (m, i) >= (msn, p) => Decision::Ready,
        Some(p) => {
            let limit = advance_part_limit(part_target_90k);
            let ahead = if msn == m {
                u64::from(p - i)
            } else {
                u64::from(p) + 1
            };
            if ahead > limit {
                Decision::TooFarAhead
            } else {
                Decision::Wait
            }
        }
    }
}

/// Is a part that does not exist yet worth waiting for? Only the next one is: the one after the
/// newest in its segment, or the first of the next segment (8216bis 6.2.6: a preload-hinted
/// resource may be requested before it exists). Anything else is 404 at once.
pub fn part_is_next(want: (u64, u32), last: (u64, u32)) -> bool {
    let (m, i) = last;
    want == (m, i.saturating_add(1)) || want == (m.saturating_add(1), 0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Parts of 100 ms, segments of `per_segment` parts, starting at msn `first`.
    fn ring(first: u64, segments: u64, per_segment: u32, in_progress: u32) -> Vec<PartInfo> {
        let mut out = Vec::new();
        let mut t_us = 1_700_000_000_000_000u64;
        let mut start_90k = 0;
        let mut push = |msn: u64, index: u32| {
            out.push(PartInfo {
                msn,
                index,
                start_90k,
                duration_90k: 9_000,
                independent: index == 0,
                capture_unix_us: t_us,
                init_generation: 1,
                discontinuity: false,
                bytes: 25_000,
                frames: 3,
            });
            t_us += 100_000;
            start_90k += 9_000;
        };
        for s in 0..segments {
            for i in 0..per_segment {
                push(first + s, i);
            }
        }
        for i in 0..in_progress {
            push(first + segments, i);
        }
        out
    }

    #[test]
    fn the_window_lists_six_seconds_of_complete_segments_and_the_one_in_progress() {
        let p = MediaPlaylist::from_parts(&ring(10, 10, 10, 4), &WindowOptions::default());
        let msns: Vec<u64> = p.segments.iter().map(|s| s.msn).collect();
        assert_eq!(msns, (14..=20).collect::<Vec<_>>());
        assert!(p.segments[..6].iter().all(|s| s.complete));
        assert!(!p.segments[6].complete);
        assert_eq!(p.media_sequence(), 14);
        assert_eq!(p.last_part(), Some((20, 3)));
        assert_eq!(p.preload_hint(), Some(Resource::Part { msn: 20, index: 4 }));
    }

    #[test]
    fn parts_are_listed_for_the_last_three_target_durations_only() {
        let p = MediaPlaylist::from_parts(&ring(10, 10, 10, 4), &WindowOptions::default());
        // End = 6.4 s; three target durations back is 3.4 s: segments ending after it.
        let listed: Vec<bool> = p.segments.iter().map(|s| s.list_parts).collect();
        assert_eq!(listed, [false, false, false, true, true, true, true]);
    }

    #[test]
    fn a_segment_whose_head_left_the_ring_is_not_listed() {
        let mut parts = ring(10, 4, 10, 2);
        parts.drain(..3); // msn 10 now starts at part 3
        let p = MediaPlaylist::from_parts(&parts, &WindowOptions::default());
        assert_eq!(p.media_sequence(), 11);
    }

    #[test]
    fn at_least_three_segments_are_listed_when_they_are_long() {
        let p = MediaPlaylist::from_parts(&ring(0, 5, 40, 1), &WindowOptions::default());
        assert_eq!(p.segments.len(), 4);
        assert_eq!(p.target_duration_s(), 4);
    }

    #[test]
    fn targets_cover_every_duration_and_never_drop_below_the_floors() {
        let mut parts = ring(0, 3, 10, 2);
        parts[5].duration_90k = 12_000; // a 133 ms part
        parts[15].duration_90k = 90_000; // makes segment 1 last 1.9 s
        let p = MediaPlaylist::from_parts(&parts, &WindowOptions::default());
        assert_eq!(p.part_target_90k(), 90_000);
        assert_eq!(p.target_duration_s(), 2);
        let q = MediaPlaylist::from_parts(
            &ring(0, 3, 10, 2),
            &WindowOptions {
                part_target_floor_90k: 10_000,
                target_duration_floor_s: 4,
                ..WindowOptions::default()
            },
        );
        assert_eq!(q.part_target_90k(), 10_000);
        assert_eq!(q.target_duration_s(), 4);
    }

    #[test]
    fn a_new_init_starts_a_discontinuity_and_a_new_map() {
        let mut parts = ring(0, 3, 10, 2);
        for p in parts.iter_mut().filter(|p| p.msn >= 2) {
            p.init_generation = 2;
        }
        let p = MediaPlaylist::from_parts(&parts, &WindowOptions::default());
        assert!(p.segments[2].discontinuity && !p.segments[1].discontinuity);
        let text = p.render();
        let maps: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("#EXT-X-MAP"))
            .collect();
        assert_eq!(
            maps,
            [
                "#EXT-X-MAP:URI=\"init-1.mp4\"",
                "#EXT-X-MAP:URI=\"init-2.mp4\""
            ]
        );
    }

    #[test]
    fn a_jump_in_media_time_is_a_discontinuity_at_the_segment_it_reaches() {
        let mut parts = ring(0, 4, 10, 3);
        // Segment 1 starts after a jump; inside segment 2 part 4 comes after one.
        for p in parts.iter_mut().filter(|p| p.msn >= 1) {
            p.start_90k += 45_000;
        }
        for p in parts.iter_mut().filter(|p| (p.msn, p.index) >= (2, 4)) {
            p.start_90k += 3_000;
        }
        let p = MediaPlaylist::from_parts(&parts, &WindowOptions::default());
        let disc: Vec<(u64, bool)> = p
            .segments
            .iter()
            .map(|s| (s.msn, s.discontinuity))
            .collect();
        assert_eq!(
            disc,
            [(0, false), (1, true), (2, false), (3, true), (4, false)]
        );
    }

    #[test]
    fn rendering_writes_every_tag_in_order() {
        let p = MediaPlaylist::from_parts(&ring(7, 1, 3, 2), &WindowOptions::default());
        let text = p.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "#EXTM3U",
                "#EXT-X-VERSION:6",
                "#EXT-X-TARGETDURATION:1",
                "#EXT-X-PART-INF:PART-TARGET=0.10000",
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.30000,HOLD-BACK=3.00000",
                "#EXT-X-MEDIA-SEQUENCE:7",
                "#EXT-X-INDEPENDENT-SEGMENTS",
                "#EXT-X-MAP:URI=\"init-1.mp4\"",
                "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z",
                "#EXT-X-PART:DURATION=0.10000,URI=\"part-7-0.m4s\",INDEPENDENT=YES",
                "#EXT-X-PART:DURATION=0.10000,URI=\"part-7-1.m4s\"",
                "#EXT-X-PART:DURATION=0.10000,URI=\"part-7-2.m4s\"",
                "#EXTINF:0.30000,",
                "seg-7.m4s",
                "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.300Z",
                "#EXT-X-PART:DURATION=0.10000,URI=\"part-8-0.m4s\",INDEPENDENT=YES",
                "#EXT-X-PART:DURATION=0.10000,URI=\"part-8-1.m4s\"",
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-8-2.m4s\"",
            ]
        );
    }

    #[test]
    fn seconds_are_written_with_five_decimals_rounded_the_safe_way() {
        assert_eq!(Seconds::nearest(9_000).to_string(), "0.10000");
        assert_eq!(Seconds::nearest(9_009).to_string(), "0.10010");
        assert_eq!(Seconds::nearest(1).to_string(), "0.00001");
        assert_eq!(Seconds::ceil(1).to_string(), "0.00002");
        assert_eq!(Seconds::nearest(90_000 * 3).to_string(), "3.00000");
    }

    #[test]
    fn program_date_time_is_utc_with_milliseconds() {
        assert_eq!(ProgramDateTime(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            ProgramDateTime(951_782_400_123_456).to_string(),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            ProgramDateTime(4_102_444_799_999_000).to_string(),
            "2099-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn resource_names_round_trip_and_only_canonical_numbers_parse() {
        for r in [
            Resource::Multivariant,
            Resource::MediaPlaylist,
            Resource::Init { generation: 0 },
            Resource::Segment { msn: u64::MAX },
            Resource::Part {
                msn: 12,
                index: u32::MAX,
            },
        ] {
            assert_eq!(Resource::parse(&r.to_string()), Some(r));
        }
        for bad in [
            "seg-01.m4s",
            "seg-.m4s",
            "seg--1.m4s",
            "seg-+1.m4s",
            "seg-18446744073709551616.m4s",
            "part-1-4294967296.m4s",
            "part-1.m4s",
            "part-1-2-3.m4s",
            "init-1.m4s",
            "../stream.m3u8",
            "stream.m3u8/",
            "STREAM.M3U8",
            "",
        ] {
            assert_eq!(Resource::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn queries_parse_and_render_back() {
        let q = Query::parse("_HLS_msn=12&_HLS_part=3").unwrap();
        assert_eq!(
            q,
            Query {
                msn: Some(12),
                part: Some(3),
                skip: None
            }
        );
        assert_eq!(q.render(), "_HLS_msn=12&_HLS_part=3");
        assert_eq!(Query::parse("").unwrap(), Query::default());
        assert_eq!(
            Query::parse("t=123&_HLS_skip=v2&&_HLS_msn=0").unwrap(),
            Query {
                msn: Some(0),
                part: None,
                skip: Some(Skip::V2)
            }
        );
        for q in [
            Query::default(),
            Query {
                msn: Some(u64::MAX),
                part: Some(u32::MAX),
                skip: Some(Skip::Yes),
            },
        ] {
            assert_eq!(Query::parse(&q.render()), Ok(q));
        }
    }

    #[test]
    fn malformed_queries_are_refused_with_the_reason() {
        let cases: [(&str, QueryError); 9] = [
            (
                "_HLS_msn=abc",
                QueryError::NotANumber {
                    key: "_HLS_msn",
                    value: "abc".into(),
                    max: u64::MAX,
                },
            ),
            (
                "_HLS_msn=-1",
                QueryError::NotANumber {
                    key: "_HLS_msn",
                    value: "-1".into(),
                    max: u64::MAX,
                },
            ),
            (
                "_HLS_msn=18446744073709551616",
                QueryError::NotANumber {
                    key: "_HLS_msn",
                    value: "18446744073709551616".into(),
                    max: u64::MAX,
                },
            ),
            (
                "_HLS_msn",
                QueryError::NotANumber {
                    key: "_HLS_msn",
                    value: String::new(),
                    max: u64::MAX,
                },
            ),
            (
                "_HLS_msn=1&_HLS_part=4294967296",
                QueryError::NotANumber {
                    key: "_HLS_part",
                    value: "4294967296".into(),
                    max: u32::MAX.into(),
                },
            ),
            ("_HLS_part=1", QueryError::PartWithoutMsn),
            ("_HLS_msn=1&_HLS_msn=2", QueryError::Repeated("_HLS_msn")),
            (
                "_HLS_msn=1&_HLS_skip=yes",
                QueryError::BadSkip("yes".into()),
            ),
            (
                "_HLS_msn=%31",
                QueryError::NotANumber {
                    key: "_HLS_msn",
                    value: "%31".into(),
                    max: u64::MAX,
                },
            ),
        ];
        for (q, want) in cases {
            assert_eq!(Query::parse(q), Err(want), "{q}");
        }
    }

    #[test]
    fn blocking_requests_wait_for_exactly_what_they_name() {
        let pt = 9_000;
        let last = (20, 4);
        // What exists is ready; so is anything older, even if evicted.
        assert_eq!(decide(20, Some(4), last, pt), Decision::Ready);
        assert_eq!(decide(20, Some(0), last, pt), Decision::Ready);
        assert_eq!(decide(3, None, last, pt), Decision::Ready);
        assert_eq!(decide(19, None, last, pt), Decision::Ready);
        // The next part, the next segment, segment 20 complete: wait.
        assert_eq!(decide(20, Some(5), last, pt), Decision::Wait);
        assert_eq!(decide(21, Some(0), last, pt), Decision::Wait);
        assert_eq!(decide(20, None, last, pt), Decision::Wait);
        assert_eq!(decide(22, None, last, pt), Decision::Wait);
        // A part past a complete segment's end is part 0 of the next (6.2.5.2).
        assert_eq!(decide(19, Some(50), last, pt), Decision::Ready);
    }

    #[test]
    fn requests_too_far_ahead_are_refused() {
        let pt = 9_000; // 100 ms: the limit is 30 parts
        assert_eq!(advance_part_limit(pt), 30);
        assert_eq!(advance_part_limit(27_000), 10);
        assert_eq!(advance_part_limit(90_000), 3);
        assert_eq!(advance_part_limit(200_000), 3);
        let last = (20, 4);
        assert_eq!(decide(23, None, last, pt), Decision::TooFarAhead);
        assert_eq!(decide(u64::MAX, None, last, pt), Decision::TooFarAhead);
        assert_eq!(decide(20, Some(34), last, pt), Decision::Wait);
        assert_eq!(decide(20, Some(35), last, pt), Decision::TooFarAhead);
        assert_eq!(decide(21, Some(29), last, pt), Decision::Wait);
        assert_eq!(decide(21, Some(30), last, pt), Decision::TooFarAhead);
        assert_eq!(
            decide(u64::MAX - 1, Some(u32::MAX), (u64::MAX, 0), pt),
            Decision::Ready
        );
    }

    #[test]
    fn only_the_next_part_is_worth_waiting_for() {
        assert!(part_is_next((20, 5), (20, 4)));
        assert!(part_is_next((21, 0), (20, 4)));
        assert!(!part_is_next((20, 6), (20, 4)));
        assert!(!part_is_next((21, 1), (20, 4)));
        assert!(!part_is_next((22, 0), (20, 4)));
    }

    #[test]
    fn the_multivariant_playlist_names_the_media_playlist_with_codecs_and_size() {
        let parts = ring(0, 2, 10, 3);
        let (peak, avg) = bandwidth_bps(&parts).unwrap();
        assert_eq!((peak, avg), (2_000_000, 2_000_000));
        let fps = frame_rate(&parts).unwrap();
        assert!((fps - 30.0).abs() < 1e-9);
        let text = render_multivariant(&Variant {
            bandwidth_bps: peak,
            average_bandwidth_bps: Some(avg),
            codecs: "avc1.64001f\"evil".into(),
            width: 1280,
            height: 720,
            frame_rate: Some(fps),
        });
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-STREAM-INF:BANDWIDTH=2000000,AVERAGE-BANDWIDTH=2000000,\
             CODECS=\"avc1.64001fevil\",RESOLUTION=1280x720,FRAME-RATE=30.000\nstream.m3u8\n"
        );
        assert_eq!(bandwidth_bps(&[]), None);
    }
}
