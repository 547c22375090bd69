//! `testsrc`: pinhole's built-in source, a moving test pattern encoded to H.264 in-process.
//!
//! URI: `testsrc?size=1280x720&fps=30&gop=30&bitrate=2M` (every option optional; see
//! [`TestsrcOptions::from_query`]). Needs nothing installed: the picture comes from
//! [`super::pattern`] and is encoded by the bundled OpenH264.
//!
//! Each picture carries its capture wall-clock time twice: as text for people and as a 48-bit
//! band along the top edge for machines ([`super::pattern::decode_time_band`]); the same
//! millisecond value is the frame's `capture_unix_us`, so glass-to-glass latency can be read
//! from the screen and compared with the `prft` time.
//!
//! Encoder settings, for latency and for late joiners:
//! - OpenH264 never emits B-frames: decode order = display order, `cts_offset_90k = 0`.
//! - An IDR every `gop` frames, exactly: frame `n` is an IDR iff `n % gop == 0` (after a skip,
//!   see below: iff it is the first frame at or past a multiple of `gop`). The IDR is forced
//!   explicitly at each boundary; the encoder's own intra period, also `gop`, is only a backstop
//!   (a forced IDR restarts its count, so it never fires between our boundaries).
//! - SPS and PPS precede every IDR, with constant ids (`SpsPpsStrategy::ConstantId`), so a
//!   viewer joining at any IDR can decode and the segmenter sees no spurious parameter change.
//! - Bitrate rate control, real-time camera usage, one slice per picture, one encoder thread,
//!   low complexity, constrained Baseline profile, BT.709 video-range VUI. Frame skipping and
//!   scene-change IDRs are disabled: every frame is coded and GOPs stay exact. (OpenH264 warns
//!   on stderr at start-up that the bitrate "can't be controlled" without frame skipping: the
//!   target is then a ceiling the rate control aims under, which suits a test pattern that
//!   compresses well; measured 0.5–0.6 Mbit/s for a 2 Mbit/s target at 720p.)
//!
//! Timing: frame `n` has `dts_90k = n * 90000 / fps` and `duration_90k = dts(n + 1) - dts(n)`
//! (integer division, so for a rate that does not divide 90 000 the durations alternate and
//! never drift). [`run`] paces frames against a monotonic clock: frame `n` is due at
//! `start + n / fps`. When the source falls more than one frame behind (a stall, an overloaded
//! core), it does not burst the missed frames: it skips to the latest frame that is due, so the
//! frame number, the picture's counter and `dts_90k` jump forward together and media time stays
//! locked to the clock (the segmenter allows a forward gap and starts a new part there, as it
//! does for the `exec` source's clock). Skips are counted and logged; see [`Pacer`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openh264::encoder::{Encoder, FrameType, VuiConfig};
use openh264::Timestamp;

use super::pattern::{I420Frame, Pattern, PatternError};

/// Options of the `testsrc` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestsrcOptions {
    /// Picture width in pixels: even, 64..=3840.
    pub width: u32,
    /// Picture height in pixels: even, 64..=2160.
    pub height: u32,
    /// Frames per second: 1..=60.
    pub fps: u32,
    /// Frames from one IDR to the next: 1..=600. Defaults to `fps` (one second).
    pub gop_frames: u32,
    /// Target bitrate in bits per second: 100 000..=50 000 000.
    pub bitrate_bps: u32,
}

impl Default for TestsrcOptions {
    fn default() -> Self {
        Self {
            width: 1280,
            height: 720,
            fps: 30,
            gop_frames: 30,
            bitrate_bps: 2_000_000,
        }
    }
}

const WIDTH_RANGE: std::ops::RangeInclusive<u32> = 64..=3840;
const HEIGHT_RANGE: std::ops::RangeInclusive<u32> = 64..=2160;
const FPS_RANGE: std::ops::RangeInclusive<u32> = 1..=60;
const GOP_RANGE: std::ops::RangeInclusive<u32> = 1..=600;
const BITRATE_RANGE: std::ops::RangeInclusive<u32> = 100_000..=50_000_000;

const SIZE_ALLOWED: &str = "allowed WIDTHxHEIGHT, both even, width 64..=3840, height 64..=2160";
const FPS_ALLOWED: &str = "allowed 1..=60";
const GOP_ALLOWED: &str = "allowed 1..=600 (frames)";
const BITRATE_ALLOWED: &str =
    "allowed 100k..=50M bits per second (a number with an optional k or M suffix, e.g. 2M, 500k)";
const KEYS_ALLOWED: &str = "allowed options: size, fps, gop, bitrate";

/// A `testsrc` option that could not be used. Displays as one line naming the key, the value
/// and what is allowed, e.g. `testsrc option "fps": "abc" is not a number; allowed 1..=60`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("testsrc option \"{key}\": \"{value}\" {problem}; {allowed}")]
pub struct OptionError {
    /// The option's key as given.
    pub key: String,
    /// The value as given.
    pub value: String,
    /// What is wrong with it ("is not a number", "is out of range", …).
    pub problem: String,
    /// What would be accepted.
    pub allowed: &'static str,
}

impl OptionError {
    fn new(key: &str, value: &str, problem: impl Into<String>, allowed: &'static str) -> Self {
        Self {
            key: key.to_owned(),
            value: value.to_owned(),
            problem: problem.into(),
            allowed,
        }
    }
}

impl TestsrcOptions {
    /// Parses the query part of a `testsrc` URI: `size=1280x720&fps=30&gop=30&bitrate=2000000`
    /// (a leading `?` is ignored; an empty query gives the defaults). `gop` defaults to `fps`.
    /// `bitrate` takes plain bits per second or a `k`/`M` suffix (`500k`, `2M`, `1.5M`).
    ///
    /// Unknown keys, repeated keys and bad values are errors naming the key, the value and what
    /// is allowed.
    pub fn from_query(query: &str) -> Result<Self, OptionError> {
        let mut opts = Self::default();
        let mut gop = None;
        let mut seen: Vec<&str> = Vec::new();
        for pair in query.strip_prefix('?').unwrap_or(query).split('&') {
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let allowed = match key {
                "size" => SIZE_ALLOWED,
                "fps" => FPS_ALLOWED,
                "gop" => GOP_ALLOWED,
                "bitrate" => BITRATE_ALLOWED,
                _ => {
                    return Err(OptionError::new(
                        key,
                        value,
                        "is not a known option",
                        KEYS_ALLOWED,
                    ))
                }
            };
            if seen.contains(&key) {
                return Err(OptionError::new(
                    key,
                    value,
                    "repeats an option already given",
                    allowed,
                ));
            }
            seen.push(key);
            if value.is_empty() {
                return Err(OptionError::new(key, value, "is empty", allowed));
            }
            match key {
                "size" => (opts.width, opts.height) = parse_size(value)?,
                "fps" => opts.fps = parse_in_range(key, value, FPS_RANGE, FPS_ALLOWED)?,
                "gop" => gop = Some(parse_in_range(key, value, GOP_RANGE, GOP_ALLOWED)?),
                _ => opts.bitrate_bps = parse_bitrate(value)?,
            }
        }
        opts.gop_frames = gop.unwrap_or(opts.fps);
        opts.validate()?;
        Ok(opts)
    }

    /// Checks every field against its allowed range (for options built in code).
    pub fn validate(&self) -> Result<(), OptionError> {
        let size = format!("{}x{}", self.width, self.height);
        check_size(self.width, self.height, &size)?;
        let check = |key: &str, v: u32, range: std::ops::RangeInclusive<u32>, allowed| {
            if range.contains(&v) {
                Ok(())
            } else {
                Err(OptionError::new(
                    key,
                    &v.to_string(),
                    "is out of range",
                    allowed,
                ))
            }
        };
        check("fps", self.fps, FPS_RANGE, FPS_ALLOWED)?;
        check("gop", self.gop_frames, GOP_RANGE, GOP_ALLOWED)?;
        check("bitrate", self.bitrate_bps, BITRATE_RANGE, BITRATE_ALLOWED)?;
        Ok(())
    }
}

fn parse_in_range(
    key: &str,
    value: &str,
    range: std::ops::RangeInclusive<u32>,
    allowed: &'static str,
) -> Result<u32, OptionError> {
    let n: u32 = parse_digits(value)
        .ok_or_else(|| OptionError::new(key, value, "is not a number", allowed))?;
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(OptionError::new(key, value, "is out of range", allowed))
    }
}

/// A plain decimal number (ASCII digits only: no sign, no spaces), if it fits in a `u32`.
fn parse_digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_size(value: &str) -> Result<(u32, u32), OptionError> {
    let (w, h) = value
        .split_once(['x', 'X'])
        .ok_or_else(|| OptionError::new("size", value, "is not WIDTHxHEIGHT", SIZE_ALLOWED))?;
    let (Some(width), Some(height)) = (parse_digits(w), parse_digits(h)) else {
        return Err(OptionError::new(
            "size",
            value,
            "is not WIDTHxHEIGHT",
            SIZE_ALLOWED,
        ));
    };
    check_size(width, height, value)?;
    Ok((width, height))
}

fn check_size(width: u32, height: u32, value: &str) -> Result<(), OptionError> {
    if width % 2 != 0 || height % 2 != 0 {
        return Err(OptionError::new(
            "size",
            value,
            "has an odd dimension",
            SIZE_ALLOWED,
        ));
    }
    if !WIDTH_RANGE.contains(&width) || !HEIGHT_RANGE.contains(&height) {
        return Err(OptionError::new(
            "size",
            value,
            "is out of range",
            SIZE_ALLOWED,
        ));
    }
    Ok(())
}

/// `2000000`, `500k`, `2M`, `1.5M` → bits per second (the result must be a whole number).
fn parse_bitrate(value: &str) -> Result<u32, OptionError> {
    let bad = || OptionError::new("bitrate", value, "is not a bitrate", BITRATE_ALLOWED);
    let (number, multiplier) = match value.as_bytes().last() {
        Some(b'k' | b'K') => (&value[..value.len() - 1], 1_000u64),
        Some(b'm' | b'M') => (&value[..value.len() - 1], 1_000_000u64),
        _ => (value, 1u64),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || fraction.len() > 6 {
        return Err(bad());
    }
    // At most 10 digits keeps every product below in u64 (and 10 digits exceed the range anyway).
    let whole: u64 = if whole.len() > 10 {
        u64::MAX
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let bps = if fraction.is_empty() {
        whole.saturating_mul(multiplier)
    } else {
        let scale = 10u64.pow(fraction.len() as u32);
        let frac: u64 = fraction.parse().map_err(|_| bad())?;
        if frac * multiplier % scale != 0 {
            return Err(OptionError::new(
                "bitrate",
                value,
                "is not a whole number of bits per second",
                BITRATE_ALLOWED,
            ));
        }
        whole
            .saturating_mul(multiplier)
            .saturating_add(frac * multiplier / scale)
    };
    match u32::try_from(bps) {
        Ok(bps) if BITRATE_RANGE.contains(&bps) => Ok(bps),
        _ => Err(OptionError::new(
            "bitrate",
            value,
            "is out of range",
            BITRATE_ALLOWED,
        )),
    }
}

/// What can go wrong making or running the test source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestsrcError {
    /// The options are out of range.
    #[error(transparent)]
    Options(#[from] OptionError),
    /// The pattern cannot be drawn at this size (caught by the options first).
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// OpenH264 could not be created.
    #[error("testsrc: creating the OpenH264 encoder failed")]
    EncoderInit(#[source] openh264::Error),
    /// OpenH264 failed to encode a picture.
    #[error("testsrc: encoding frame {frame_index} failed")]
    Encode {
        /// The frame that failed.
        frame_index: u64,
        /// OpenH264's error.
        #[source]
        source: openh264::Error,
    },
    /// OpenH264 returned no picture (it skipped the frame, which is configured off).
    #[error("testsrc: the encoder produced no picture for frame {frame_index} (frame type {frame_type:?})")]
    NoPicture {
        /// The frame that came out empty.
        frame_index: u64,
        /// What OpenH264 reported.
        frame_type: FrameType,
    },
    /// The wall clock reads before 1970, so no capture time can be burned in.
    #[error("testsrc: the system clock reads before 1970-01-01")]
    ClockBeforeEpoch,
}

/// One encoded picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Frame number, from 0 (also the number drawn in the picture).
    pub frame_index: u64,
    /// The access unit in Annex-B form (start codes); for an IDR it begins with SPS and PPS.
    pub annexb: Vec<u8>,
    /// Whether this is an IDR picture.
    pub is_idr: bool,
}

/// `dts_90k` of frame `n` at `fps`: `n * 90000 / fps`, exact integer arithmetic.
pub fn dts_90k(frame_index: u64, fps: u32) -> u64 {
    let dts = u128::from(frame_index) * u128::from(media::TIMESCALE_90K) / u128::from(fps.max(1));
    u64::try_from(dts).unwrap_or(u64::MAX)
}

/// Duration of frame `n` at `fps` in 90 kHz units: `dts(n + 1) - dts(n)`.
pub fn duration_90k(frame_index: u64, fps: u32) -> u32 {
    let d = dts_90k(frame_index.saturating_add(1), fps) - dts_90k(frame_index, fps);
    u32::try_from(d).unwrap_or(u32::MAX)
}

/// The test pattern plus its H.264 encoder: renders and encodes one frame per call.
pub struct Testsrc {
    opts: TestsrcOptions,
    pattern: Pattern,
    picture: I420Frame,
    encoder: Encoder,
    next_index: u64,
    /// Index of the last frame encoded, to tell whether a GOP boundary was crossed since.
    last_encoded: Option<u64>,
}

impl std::fmt::Debug for Testsrc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testsrc")
            .field("opts", &self.opts)
            .field("next_index", &self.next_index)
            .finish_non_exhaustive()
    }
}

impl Testsrc {
    /// Checks the options and creates the pattern and the encoder (see the module docs for the
    /// encoder settings).
    pub fn new(opts: TestsrcOptions) -> Result<Self, TestsrcError> {
        opts.validate()?;
        let (width, height) = (opts.width as usize, opts.height as usize);
        let pattern = Pattern::new(width, height)?;
        let picture = I420Frame::black(width, height)?;
        // The pattern's colours are BT.709 video range; say so in the SPS.
        let config = crate::codec::encoder::live_config(
            opts.bitrate_bps,
            f64::from(opts.fps),
            opts.gop_frames,
        )
        .vui(VuiConfig::bt709());
        let encoder = crate::codec::encoder::open(config).map_err(TestsrcError::EncoderInit)?;
        Ok(Self {
            opts,
            pattern,
            picture,
            encoder,
            next_index: 0,
            last_encoded: None,
        })
    }

    /// The options this source was made with.
    pub fn options(&self) -> &TestsrcOptions {
        &self.opts
    }

    /// The number the next [`encode_next`](Self::encode_next) call will render and encode.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Moves the next frame number forward to `frame_index` (frames in between are never
    /// made); a number at or before the next one is ignored. Used when falling behind.
    pub fn skip_to(&mut self, frame_index: u64) {
        self.next_index = self.next_index.max(frame_index);
    }

    /// Renders frame `n` (the next index) with `capture_unix_ms` burned in and encodes it.
    ///
    /// Frame `n` is an IDR iff it is the first frame or a multiple of `gop_frames` lies in
    /// (previous frame, `n`]: without skips, iff `n % gop_frames == 0`.
    pub fn encode_next(&mut self, capture_unix_ms: u64) -> Result<EncodedFrame, TestsrcError> {
        let frame_index = self.next_index;
        self.pattern
            .render_into(frame_index, capture_unix_ms, &mut self.picture);
        let gop = u64::from(self.opts.gop_frames);
        // The first frame is always an IDR; before it the encoder is not yet initialised.
        if let Some(last) = self.last_encoded {
            if frame_index / gop != last / gop {
                self.encoder.force_intra_frame();
            }
        }
        // Media time in ms for the rate control; OpenH264 panics above i64::MAX, so clamp.
        let media_ms = frame_index.saturating_mul(1000) / u64::from(self.opts.fps);
        let timestamp = Timestamp::from_millis(media_ms.min(i64::MAX as u64));
        let bitstream = self
            .encoder
            .encode_at(&self.picture, timestamp)
            .map_err(|source| TestsrcError::Encode {
                frame_index,
                source,
            })?;
        let frame_type = bitstream.frame_type();
        let mut annexb = Vec::new();
        bitstream.write_vec(&mut annexb);
        if annexb.is_empty() || !matches!(frame_type, FrameType::IDR | FrameType::I | FrameType::P)
        {
            return Err(TestsrcError::NoPicture {
                frame_index,
                frame_type,
            });
        }
        self.last_encoded = Some(frame_index);
        self.next_index = frame_index.saturating_add(1);
        Ok(EncodedFrame {
            frame_index,
            annexb,
            is_idr: frame_type == FrameType::IDR,
        })
    }
}

/// What the pacer says to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// The next frame is not due yet: wait this long (then ask again).
    Wait(Duration),
    /// Produce frame `frame_index` now, then call [`Pacer::frame_done`].
    Go {
        /// The frame to produce: always the next one.
        frame_index: u64,
        /// How far the schedule was moved back because the source fell behind (zero when on
        /// time).
        slipped: Duration,
    },
}

/// Real-time pacing with the clock passed in (so it is tested without sleeping).
///
/// Frame `n` is due at `start + n / fps`, computed from `start` each time (no accumulated
/// rounding). A frame up to one frame period late is produced at once and the schedule kept, so
/// small delays are caught up. When a frame is more than one period late (the machine is
/// overloaded), the schedule slips: that frame is produced now and the ones after it follow at
/// the normal rate from here. No frame number is skipped and nothing bursts, so media time stays
/// continuous with exact frame durations (the CMAF and LL-HLS contracts), and a viewer simply
/// sees the picture pause for as long as the source did — a real camera behaves the same.
#[derive(Debug, Clone)]
pub struct Pacer {
    fps: u32,
    start: Instant,
    next_index: u64,
    slips: u64,
    slipped_total: Duration,
}

impl Pacer {
    /// A pacer whose frame 0 is due at `start`.
    pub fn new(fps: u32, start: Instant) -> Self {
        Self {
            fps: fps.max(1),
            start,
            next_index: 0,
            slips: 0,
            slipped_total: Duration::ZERO,
        }
    }

    /// When frame `frame_index` is due.
    pub fn due(&self, frame_index: u64) -> Instant {
        let ns = u128::from(frame_index) * 1_000_000_000 / u128::from(self.fps);
        self.start + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> Pace {
        let due = self.due(self.next_index);
        let Some(late) = now.checked_duration_since(due) else {
            return Pace::Wait(due - now);
        };
        let period_ns = 1_000_000_000 / u128::from(self.fps);
        let mut slipped = Duration::ZERO;
        if late.as_nanos() > period_ns {
            // Move the schedule so this frame is due now.
            self.start += late;
            self.slips += 1;
            self.slipped_total += late;
            slipped = late;
        }
        Pace::Go {
            frame_index: self.next_index,
            slipped,
        }
    }

    /// Marks the frame returned by the last [`Pace::Go`] as produced.
    pub fn frame_done(&mut self) {
        self.next_index = self.next_index.saturating_add(1);
    }

    /// How often, and by how much in all, the schedule slipped.
    pub fn slipped(&self) -> (u64, Duration) {
        (self.slips, self.slipped_total)
    }
}

/// The longest single sleep, so a stop request is noticed promptly even at 1 fps.
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// At most one "fell behind" warning per this interval.
const SKIP_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Milliseconds since 1970 on the wall clock.
fn unix_ms_now() -> Result<u64, TestsrcError> {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| TestsrcError::ClockBeforeEpoch)?;
    Ok(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// Runs the test source in real time until `stop` is set, handing each frame to `on_frame`.
///
/// Blocking: run it on its own thread. Frame `n` is due at `start + n / fps` on the monotonic
/// clock ([`Pacer`] explains falling behind). Each frame's `capture_unix_us` is the wall-clock
/// time read just before rendering, at millisecond precision: the very value in the picture.
pub fn run(
    opts: &TestsrcOptions,
    stop: &AtomicBool,
    on_frame: &mut dyn FnMut(media::segmenter::Frame),
) -> Result<(), TestsrcError> {
    let mut source = Testsrc::new(opts.clone())?;
    tracing::info!(
        source = "testsrc",
        width = opts.width,
        height = opts.height,
        fps = opts.fps,
        gop_frames = opts.gop_frames,
        bitrate_bps = opts.bitrate_bps,
        "testsrc started"
    );
    let mut pacer = Pacer::new(opts.fps, Instant::now());
    let mut last_warn: Option<Instant> = None;
    let mut produced: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        match pacer.poll(now) {
            Pace::Wait(d) => {
                std::thread::sleep(d.min(MAX_SLEEP));
                continue;
            }
            Pace::Go {
                frame_index,
                slipped,
            } => {
                debug_assert_eq!(frame_index, source.next_index());
                if !slipped.is_zero()
                    && last_warn.is_none_or(|t| now.duration_since(t) >= SKIP_WARN_INTERVAL)
                {
                    last_warn = Some(now);
                    let (slips, total) = pacer.slipped();
                    tracing::warn!(
                        source = "testsrc",
                        late_ms = slipped.as_millis() as u64,
                        slips,
                        slipped_total_ms = total.as_millis() as u64,
                        "testsrc fell behind real time (machine overloaded?); the picture pauses"
                    );
                }
            }
        }
        let capture_unix_ms = unix_ms_now()?;
        let encoded = source.encode_next(capture_unix_ms)?;
        let n = encoded.frame_index;
        let frame = media::segmenter::Frame {
            dts_90k: dts_90k(n, opts.fps),
            duration_90k: duration_90k(n, opts.fps),
            cts_offset_90k: 0,
            capture_unix_us: capture_unix_ms.saturating_mul(1000),
            au: media::h264::AccessUnit::from_nals(media::annexb::split_annexb(&encoded.annexb)),
        };
        on_frame(frame);
        pacer.frame_done();
        produced += 1;
    }
    tracing::info!(
        source = "testsrc",
        frames = produced,
        slips = pacer.slipped().0,
        "testsrc stopped"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::pattern::decode_time_band;
    use super::*;

    const SOME_MS: u64 = 1_735_787_045_678;

    /// NAL unit types in an Annex-B buffer, in order.
    fn nal_types(annexb: &[u8]) -> Vec<u8> {
        let mut types = Vec::new();
        let mut i = 0;
        while i + 3 < annexb.len() {
            if annexb[i..i + 3] == [0, 0, 1] {
                types.push(annexb[i + 3] & 0x1f);
                i += 3;
            } else {
                i += 1;
            }
        }
        types
    }

    fn small(gop: u32) -> TestsrcOptions {
        TestsrcOptions {
            width: 320,
            height: 180,
            fps: 30,
            gop_frames: gop,
            bitrate_bps: 500_000,
        }
    }

    #[test]
    fn defaults_are_720p30_one_second_gop_2_mbps() {
        let d = TestsrcOptions::default();
        assert_eq!(
            (d.width, d.height, d.fps, d.gop_frames, d.bitrate_bps),
            (1280, 720, 30, 30, 2_000_000)
        );
        assert_eq!(TestsrcOptions::from_query(""), Ok(d.clone()));
        assert_eq!(TestsrcOptions::from_query("?"), Ok(d));
    }

    #[test]
    fn query_options_parse() {
        let o = |width, height, fps, gop_frames, bitrate_bps| TestsrcOptions {
            width,
            height,
            fps,
            gop_frames,
            bitrate_bps,
        };
        let cases = [
            (
                "size=1280x720&fps=30&gop=30&bitrate=2000000",
                o(1280, 720, 30, 30, 2_000_000),
            ),
            ("?size=640x360", o(640, 360, 30, 30, 2_000_000)),
            ("size=1920X1080&fps=60", o(1920, 1080, 60, 60, 2_000_000)),
            // gop follows fps unless given, in either order.
            ("fps=25", o(1280, 720, 25, 25, 2_000_000)),
            ("gop=50&fps=25", o(1280, 720, 25, 50, 2_000_000)),
            ("bitrate=2M", o(1280, 720, 30, 30, 2_000_000)),
            ("bitrate=500k", o(1280, 720, 30, 30, 500_000)),
            ("bitrate=1.5M", o(1280, 720, 30, 30, 1_500_000)),
            ("bitrate=100K&gop=1", o(1280, 720, 30, 1, 100_000)),
            (
                "bitrate=50m&gop=600&fps=1",
                o(1280, 720, 1, 600, 50_000_000),
            ),
            ("size=64x64&&fps=1&", o(64, 64, 1, 1, 2_000_000)),
            ("size=3840x2160", o(3840, 2160, 30, 30, 2_000_000)),
        ];
        for (query, want) in cases {
            assert_eq!(TestsrcOptions::from_query(query), Ok(want), "{query}");
        }
    }

    /// Users see these messages on the command line: each names key, value and what is allowed.
    #[test]
    fn bad_query_options_say_what_is_allowed() {
        let cases = [
            (
                "fps=abc",
                r#"testsrc option "fps": "abc" is not a number; allowed 1..=60"#,
            ),
            (
                "fps=0",
                r#"testsrc option "fps": "0" is out of range; allowed 1..=60"#,
            ),
            (
                "fps=61",
                r#"testsrc option "fps": "61" is out of range; allowed 1..=60"#,
            ),
            (
                "fps=-1",
                r#"testsrc option "fps": "-1" is not a number; allowed 1..=60"#,
            ),
            (
                "fps=99999999999",
                r#"testsrc option "fps": "99999999999" is not a number; allowed 1..=60"#,
            ),
            (
                "fps",
                r#"testsrc option "fps": "" is empty; allowed 1..=60"#,
            ),
            (
                "gop=601",
                r#"testsrc option "gop": "601" is out of range; allowed 1..=600 (frames)"#,
            ),
            (
                "gop=0",
                r#"testsrc option "gop": "0" is out of range; allowed 1..=600 (frames)"#,
            ),
            (
                "size=1281x720",
                r#"testsrc option "size": "1281x720" has an odd dimension; allowed WIDTHxHEIGHT, both even, width 64..=3840, height 64..=2160"#,
            ),
            (
                "size=4096x2160",
                r#"testsrc option "size": "4096x2160" is out of range; allowed WIDTHxHEIGHT, both even, width 64..=3840, height 64..=2160"#,
            ),
            (
                "size=62x64",
                r#"testsrc option "size": "62x64" is out of range; allowed WIDTHxHEIGHT, both even, width 64..=3840, height 64..=2160"#,
            ),
            (
                "size=720p",
                r#"testsrc option "size": "720p" is not WIDTHxHEIGHT; allowed WIDTHxHEIGHT, both even, width 64..=3840, height 64..=2160"#,
            ),
            (
                "bitrate=99k",
                r#"testsrc option "bitrate": "99k" is out of range; allowed 100k..=50M bits per second (a number with an optional k or M suffix, e.g. 2M, 500k)"#,
            ),
            (
                "bitrate=51M",
                r#"testsrc option "bitrate": "51M" is out of range; allowed 100k..=50M bits per second (a number with an optional k or M suffix, e.g. 2M, 500k)"#,
            ),
            (
                "bitrate=2G",
                r#"testsrc option "bitrate": "2G" is not a bitrate; allowed 100k..=50M bits per second (a number with an optional k or M suffix, e.g. 2M, 500k)"#,
            ),
            (
                "bitrate=1.0000005M",
                r#"testsrc option "bitrate": "1.0000005M" is not a bitrate; allowed 100k..=50M bits per second (a number with an optional k or M suffix, e.g. 2M, 500k)"#,
            ),
            (
                "bitrate=100000.5",
                r#"testsrc option "bitrate": "100000.5" is not a whole number of bits per second; allowed 100k..=50M bits per second (a number with an optional k or M suffix, e.g. 2M, 500k)"#,
            ),
            (
                "bitrate=99999999999999999999M",
                r#"testsrc option "bitrate": "99999999999999999999M" is out of range; allowed 100k..=50M bits per second (a number with an optional k or M suffix, e.g. 2M, 500k)"#,
            ),
            (
                "colour=red",
                r#"testsrc option "colour": "red" is not a known option; allowed options: size, fps, gop, bitrate"#,
            ),
            (
                "fps=30&fps=25",
                r#"testsrc option "fps": "25" repeats an option already given; allowed 1..=60"#,
            ),
        ];
        for (query, want) in cases {
            match TestsrcOptions::from_query(query) {
                Err(e) => assert_eq!(e.to_string(), want, "{query}"),
                Ok(o) => panic!("{query} parsed as {o:?}"),
            }
        }
    }

    #[test]
    fn options_built_in_code_are_validated_too() {
        let odd = TestsrcOptions {
            width: 641,
            ..TestsrcOptions::default()
        };
        let err = Testsrc::new(odd).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                r#"testsrc option "size": "641x720" has an odd dimension; allowed WIDTHxHEIGHT, both even, width 64..=3840, height 64..=2160"#
            )
        );
        let no_gop = TestsrcOptions {
            gop_frames: 0,
            ..TestsrcOptions::default()
        };
        assert!(matches!(
            Testsrc::new(no_gop),
            Err(TestsrcError::Options(_))
        ));
    }

    /// A late viewer starts at an IDR, so every IDR must carry SPS and PPS, and segments are cut
    /// at IDRs, so IDRs must fall exactly on GOP boundaries and nowhere else.
    #[test]
    fn idrs_fall_exactly_on_gop_boundaries_and_carry_sps_pps() {
        for gop in [1, 7, 30] {
            let mut src = Testsrc::new(small(gop)).expect("encoder");
            for n in 0..75u64 {
                let f = src.encode_next(SOME_MS + n * 33).expect("encode");
                assert_eq!(f.frame_index, n);
                let types = nal_types(&f.annexb);
                let want_idr = n % u64::from(gop) == 0;
                assert_eq!(f.is_idr, want_idr, "gop {gop} frame {n}: {types:?}");
                if want_idr {
                    assert!(
                        types.contains(&7) && types.contains(&8),
                        "gop {gop} frame {n}: {types:?}"
                    );
                    assert!(types.contains(&5), "gop {gop} frame {n}: {types:?}");
                } else {
                    assert_eq!(types, vec![1], "gop {gop} frame {n}");
                }
            }
            assert_eq!(src.next_index(), 75);
        }
    }

    /// The band is the benchmarks' clock: it must survive real H.264 compression bit-exactly.
    #[test]
    fn time_band_survives_an_encode_decode_round_trip() {
        use openh264::decoder::Decoder;
        use openh264::formats::YUVSource;

        let opts = TestsrcOptions {
            width: 1280,
            height: 720,
            ..TestsrcOptions::default()
        };
        let mut src = Testsrc::new(opts).expect("encoder");
        let mut decoder = Decoder::new().expect("decoder");
        let times = [
            SOME_MS,
            1 << 47,
            0x5555_5555_5555,
            0xAAAA_AAAA_AAAA,
            1,
            (1 << 48) - 64,
        ];
        // Several GOP positions, including P frames long after the IDR.
        for n in 0..45u64 {
            let ms = times[n as usize % times.len()] + n;
            let f = src.encode_next(ms).expect("encode");
            let decoded = decoder
                .decode(&f.annexb)
                .expect("decode")
                .expect("a picture per frame");
            let (w, h) = decoded.dimensions();
            let (stride, _, _) = decoded.strides();
            assert_eq!((w, h), (1280, 720));
            assert_eq!(
                decode_time_band(decoded.y(), w, h, stride),
                Some(ms),
                "frame {n}"
            );
        }
    }

    /// The same round trip at a small size and the lowest bitrate, where compression is harshest.
    #[test]
    fn time_band_survives_a_low_bitrate_small_picture() {
        use openh264::decoder::Decoder;
        use openh264::formats::YUVSource;

        let opts = TestsrcOptions {
            width: 320,
            height: 180,
            fps: 30,
            gop_frames: 30,
            bitrate_bps: 100_000,
        };
        let mut src = Testsrc::new(opts).expect("encoder");
        let mut decoder = Decoder::new().expect("decoder");
        for n in 0..40u64 {
            let ms = SOME_MS + n * 33;
            let f = src.encode_next(ms).expect("encode");
            let decoded = decoder.decode(&f.annexb).expect("decode").expect("picture");
            let (w, h) = decoded.dimensions();
            let (stride, _, _) = decoded.strides();
            assert_eq!(
                decode_time_band(decoded.y(), w, h, stride),
                Some(ms),
                "frame {n}"
            );
        }
    }

    #[test]
    fn dts_is_exact_for_rates_that_do_not_divide_90k() {
        assert_eq!(dts_90k(0, 30), 0);
        assert_eq!(dts_90k(30, 30), 90_000);
        assert_eq!(duration_90k(5, 30), 3000);
        // 7 fps: 12857.14… per frame; durations alternate and a second is exactly 90 000.
        let durations: Vec<u32> = (0..7).map(|n| duration_90k(n, 7)).collect();
        assert!(
            durations.iter().all(|&d| d == 12_857 || d == 12_858),
            "{durations:?}"
        );
        assert_eq!(durations.iter().map(|&d| u64::from(d)).sum::<u64>(), 90_000);
        assert_eq!(
            dts_90k(7 * 3600, 7),
            3600 * 90_000,
            "no drift after an hour"
        );
        for n in 0..1000 {
            assert_eq!(
                dts_90k(n, 7) + u64::from(duration_90k(n, 7)),
                dts_90k(n + 1, 7)
            );
        }
        assert_eq!(
            dts_90k(u64::MAX, 1),
            u64::MAX,
            "saturates instead of wrapping"
        );
    }

    /// Pacing is pure over the clock passed in: no sleeping, no real time read.
    #[test]
    fn pacer_waits_until_due_and_catches_up_small_delays() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let go = |frame_index| Pace::Go {
            frame_index,
            slipped: Duration::ZERO,
        };
        let mut p = Pacer::new(25, t0); // 40 ms per frame
        assert_eq!(p.poll(t0), go(0));
        p.frame_done();
        assert_eq!(p.poll(t0 + ms(10)), Pace::Wait(ms(30)));
        // 30 ms late (less than a frame): produce now and keep the schedule.
        assert_eq!(p.poll(t0 + ms(70)), go(1));
        p.frame_done();
        assert_eq!(p.due(2), t0 + ms(80));
        assert_eq!(p.poll(t0 + ms(75)), Pace::Wait(ms(5)));
        // Exactly one frame late still counts as on time.
        assert_eq!(p.poll(t0 + ms(120)), go(2));
        assert_eq!(p.slipped().0, 0);
    }

    /// After a stall the source must neither burst stale frames (they would arrive late and
    /// all at once) nor skip frame numbers (media time would jump, leaving a gap a player
    /// stalls on): the schedule slips and the next frames follow at the normal rate.
    #[test]
    fn pacer_slips_the_schedule_after_a_stall_instead_of_bursting_or_skipping() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let go = |frame_index, slipped| Pace::Go {
            frame_index,
            slipped,
        };
        let mut p = Pacer::new(25, t0);
        assert_eq!(p.poll(t0), go(0, Duration::ZERO));
        p.frame_done();
        // Frame 1 was due at 40 ms; at 190 ms it is 150 ms late: produce it now.
        assert_eq!(p.poll(t0 + ms(190)), go(1, ms(150)));
        p.frame_done();
        // Frame 2 follows one period after the late frame, not at once.
        assert_eq!(p.poll(t0 + ms(191)), Pace::Wait(ms(39)));
        assert_eq!(p.poll(t0 + ms(230)), go(2, Duration::ZERO));
        assert_eq!(p.slipped(), (1, ms(150)));
    }

    #[test]
    fn pacer_schedule_does_not_drift_for_rates_that_do_not_divide_a_second() {
        let t0 = Instant::now();
        let p = Pacer::new(7, t0);
        assert_eq!(p.due(7 * 60), t0 + Duration::from_secs(60));
        assert_eq!(p.due(1), t0 + Duration::from_nanos(142_857_142));
    }

    /// A skip over a GOP boundary must still start a new GOP at once: a segment must not run
    /// long because its boundary frame was never made.
    #[test]
    fn a_skip_across_a_gop_boundary_makes_the_next_frame_an_idr() {
        let mut src = Testsrc::new(small(10)).expect("encoder");
        let encode = |src: &mut Testsrc| {
            let f = src.encode_next(SOME_MS).expect("encode");
            (f.frame_index, f.is_idr)
        };
        assert_eq!(encode(&mut src), (0, true));
        assert_eq!(encode(&mut src), (1, false));
        src.skip_to(5); // within the GOP
        assert_eq!(encode(&mut src), (5, false));
        src.skip_to(13); // across the boundary at 10
        assert_eq!(encode(&mut src), (13, true));
        assert_eq!(encode(&mut src), (14, false));
        src.skip_to(3); // backwards: ignored
        assert_eq!(encode(&mut src), (15, false));
        for n in 16..20 {
            assert_eq!(encode(&mut src), (n, false));
        }
        assert_eq!(
            encode(&mut src),
            (20, true),
            "the grid of boundaries is kept"
        );
    }

    /// `run` end to end: it stops when asked, and each frame's timing, IDR flag and capture
    /// time agree with its number and with the time burned into its picture.
    #[test]
    fn run_emits_frames_with_the_burned_in_capture_time() {
        use openh264::decoder::Decoder;
        use openh264::formats::YUVSource;

        let opts = TestsrcOptions {
            width: 192,
            height: 108,
            fps: 30,
            gop_frames: 3,
            bitrate_bps: 300_000,
        };
        let stop = AtomicBool::new(false);
        let mut frames = Vec::new();
        let mut on_frame = |f: media::segmenter::Frame| {
            frames.push(f);
            if frames.len() == 6 {
                stop.store(true, Ordering::Relaxed);
            }
        };
        run(&opts, &stop, &mut on_frame).expect("run");
        assert_eq!(frames.len(), 6);
        let mut decoder = Decoder::new().expect("decoder");
        let mut prev_index: Option<u64> = None;
        for f in &frames {
            // A loaded test machine may make the source skip: derive the frame number from dts.
            let n = f.dts_90k / 3000;
            assert_eq!(f.dts_90k, dts_90k(n, 30));
            assert_eq!(f.duration_90k, 3000);
            assert_eq!(f.cts_offset_90k, 0);
            let want_idr = prev_index.is_none_or(|p| p / 3 != n / 3);
            assert_eq!(f.au.is_idr, want_idr, "frame {n}");
            assert!(prev_index.is_none_or(|p| p < n));
            prev_index = Some(n);
            assert_eq!(f.capture_unix_us % 1000, 0, "ms precision");
            let mut annexb = Vec::new();
            for nal in &f.au.nals {
                annexb.extend_from_slice(&[0, 0, 0, 1]);
                annexb.extend_from_slice(nal);
            }
            let decoded = decoder.decode(&annexb).expect("decode").expect("picture");
            let (w, h) = decoded.dimensions();
            let (stride, _, _) = decoded.strides();
            assert_eq!(
                decode_time_band(decoded.y(), w, h, stride),
                Some(f.capture_unix_us / 1000),
                "frame {n}"
            );
        }
    }
}
