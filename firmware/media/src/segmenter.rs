//! Cuts a stream of H.264 access units into CMAF parts: `push(Frame) -> Vec<Output>`.
//!
//! A [`Segmenter`] turns timed access units into the records of the chunked stream and the
//! LL-HLS parts: an [`InitSegment`] (`ftyp`+`moov`) whenever the decoder configuration changes,
//! and [`Part`]s (`prft`+`moof`+`mdat`, see [`fmp4`]) of about
//! [`SegmenterConfig::fragment_duration_90k`]. It is sans-IO: no clock, no I/O, no logging; what a
//! daemon would log is exposed in [`SegmenterStats`].
//!
//! # The push/flush contract
//!
//! * [`Segmenter::push`] takes one [`Frame`] and returns the outputs it completes, in order:
//!   possibly the part that the frame ends, possibly a new init, possibly the part the frame
//!   completes. Every output is ready to send; nothing is held back waiting for the next frame.
//! * On `Err` the segmenter is exactly as before the call (the next state is built first, then
//!   committed), so the caller may drop the frame and go on.
//! * [`Segmenter::flush`] emits the part in progress (end of stream, or a source that stalls).
//!
//! # Rules
//!
//! * **Start.** Frames are dropped until the first IDR for which an SPS and a PPS are known (from
//!   that access unit or an earlier one). Dropped frames are counted in
//!   [`SegmenterStats::frames_dropped_before_idr`] and
//!   [`SegmenterStats::frames_dropped_without_parameters`]; they are not errors.
//! * **Samples.** SPS, PPS and AUD NAL units (types 7, 8, 9) are stripped from the samples: the
//!   parameter sets live in `avcC` (sample entry `avc1`, ISO/IEC 14496-15 §5.4.2). SEI and slices
//!   are kept. Samples are AVCC: each NAL unit prefixed with its 4-byte big-endian length. An
//!   access unit left with nothing is dropped ([`SegmenterStats::frames_dropped_empty`]).
//! * **Parameter sets** come in band. The SPS list (and likewise the PPS list) is replaced by the
//!   SPSs of an access unit that carries any. When the bytes differ from those of the current
//!   init, the part in progress ends, a new [`InitSegment`] with `generation + 1` follows, and
//!   later parts carry that generation in [`Part::init_generation`].
//! * **Cut points.** A part is emitted as soon as its duration reaches the target, at the frame
//!   that reaches it: "reaches" allows 1 % below the target so that slightly jittery timestamps
//!   (a 30 fps camera stamping 2999, 3001, …) do not turn 3-frame parts into 4-frame ones. An
//!   IDR always ends the part in progress, however short, and starts a new *independent* part:
//!   the start of a new segment. A part never spans an init change or a timestamp gap.
//! * **Low-delay VUI.** With [`SegmenterConfig::low_delay_vui`], the SPS in the init is rewritten
//!   by [`sps::rewrite_low_delay`] (`max_num_reorder_frames = 0`) so that browsers' decoders
//!   output each frame at once. The in-band bytes are what is compared for changes. Once a frame
//!   with B slices arrives (the rewrite would now be a lie), rewriting stops for good
//!   ([`SegmenterStats::low_delay_vui_disabled`]), and the next IDR brings a new init with the
//!   SPS as the encoder wrote it.
//! * **Timestamps** are 90 kHz. A frame must not start before the previous accepted frame ends
//!   (`dts < previous dts + previous duration` is [`SegmentError::DtsWentBackwards`]): the
//!   previous frame's duration is already written, and `tfdt` must never go backwards (Safari
//!   stalls). A forward gap is allowed: the part in progress ends there and the next one starts
//!   at the new dts. A zero duration is an error: a part could never reach its target.
//! * **Numbers.** [`Part::sequence`] starts at 1 and grows by 1 per part (the `mfhd` sequence
//!   number is its low 32 bits); [`InitSegment::generation`] starts at 1 and grows by 1 per init.
//!   Parts get the capture time of their first frame ([`Part::capture_unix_us`], also in `prft`).

use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

use crate::fmp4::{self, FragmentSpec, SampleInfo, VideoTrack};
use crate::h264::{self, nal_type, AccessUnit};
use crate::sps::{self, SpsError};
use crate::TIMESCALE_90K;

/// Shortest allowed part: 100 ms. Shorter parts cost more in headers and requests than they save.
pub const MIN_FRAGMENT_DURATION_90K: u32 = 9_000;
/// Longest allowed part: 300 ms. Longer parts add latency for no gain.
pub const MAX_FRAGMENT_DURATION_90K: u32 = 27_000;

/// What the segmenter is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmenterConfig {
    /// Target part duration in 90 kHz ticks, 9000..=27000 (100–300 ms).
    pub fragment_duration_90k: u32,
    /// Rewrite the SPS in the init to say "no frame reordering", while no B slices are seen.
    pub low_delay_vui: bool,
}

impl Default for SegmenterConfig {
    /// 100 ms parts, low-delay VUI on: the latency-first settings.
    fn default() -> Self {
        SegmenterConfig {
            fragment_duration_90k: MIN_FRAGMENT_DURATION_90K,
            low_delay_vui: true,
        }
    }
}

impl SegmenterConfig {
    /// Checks the fragment duration is within 100–300 ms.
    pub fn validate(&self) -> Result<(), SegmentError> {
        if (MIN_FRAGMENT_DURATION_90K..=MAX_FRAGMENT_DURATION_90K)
            .contains(&self.fragment_duration_90k)
        {
            Ok(())
        } else {
            Err(SegmentError::InvalidFragmentDuration {
                fragment_duration_90k: self.fragment_duration_90k,
            })
        }
    }
}

/// One access unit with its timing, as a source produces it.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Decode timestamp, 90 kHz.
    pub dts_90k: u64,
    /// Time until the next frame's dts, 90 kHz; must be > 0.
    pub duration_90k: u32,
    /// Presentation minus decode time, 90 kHz; 0 without B-frames.
    pub cts_offset_90k: i32,
    /// Wall-clock time of capture, microseconds since the Unix epoch (goes into `prft`).
    pub capture_unix_us: u64,
    /// The NAL units of the picture, in-band parameter sets included.
    pub au: AccessUnit,
}

/// What [`Segmenter::push`] and [`Segmenter::flush`] produce. `Arc`ed for fan-out to viewers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A new decoder configuration; parts that follow refer to it.
    Init(Arc<InitSegment>),
    /// A media fragment.
    Part(Arc<Part>),
}

/// An init segment (`ftyp`+`moov`), framed for the chunked stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitSegment {
    /// `[u32 BE length][ftyp+moov]`.
    pub framed: Bytes,
    /// RFC 6381 codec string for MSE and HLS, e.g. `avc1.64001f`.
    pub codec: String,
    /// Picture width in pixels, after SPS cropping.
    pub width: u32,
    /// Picture height in pixels, after SPS cropping.
    pub height: u32,
    /// 1 for the first init of this segmenter, then +1 for each new one.
    pub generation: u32,
}

impl InitSegment {
    /// The init segment without the length prefix (for HLS `EXT-X-MAP`).
    pub fn payload(&self) -> Bytes {
        self.framed.slice(4..)
    }
}

/// A media fragment (`prft`+`moof`+`mdat`), framed for the chunked stream; an LL-HLS part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// `[u32 BE length][prft+moof+mdat]`.
    pub framed: Bytes,
    /// 1 for the first part, then +1 for each (across inits).
    pub sequence: u64,
    /// Decode time of the first frame (`tfdt`), 90 kHz.
    pub base_decode_time_90k: u64,
    /// Sum of the frames' durations, 90 kHz.
    pub duration_90k: u32,
    /// Number of frames (samples).
    pub frame_count: u32,
    /// Starts with an IDR: a viewer can start here; the first part of a segment.
    pub independent: bool,
    /// Capture wall-clock time of the first frame, µs since the Unix epoch.
    pub capture_unix_us: u64,
    /// The [`InitSegment::generation`] needed to decode this part.
    pub init_generation: u32,
}

impl Part {
    /// The fragment without the length prefix (an LL-HLS part body).
    pub fn payload(&self) -> Bytes {
        self.framed.slice(4..)
    }
}

/// Why a frame or a configuration was refused. After an `Err` from [`Segmenter::push`] the
/// segmenter is unchanged.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// [`SegmenterConfig::fragment_duration_90k`] is outside 100–300 ms.
    #[error(
        "fragment duration {fragment_duration_90k} (90 kHz ticks) is outside \
         {MIN_FRAGMENT_DURATION_90K}..={MAX_FRAGMENT_DURATION_90K} (100-300 ms)"
    )]
    InvalidFragmentDuration {
        /// The value asked for.
        fragment_duration_90k: u32,
    },
    /// A frame with `duration_90k == 0`.
    #[error("frame at dts {dts_90k} has a zero duration")]
    ZeroDuration {
        /// The frame's dts.
        dts_90k: u64,
    },
    /// A frame that starts before the previous frame ends.
    #[error("frame dts {dts_90k} is before the end of the previous frame at {min_dts_90k}")]
    DtsWentBackwards {
        /// The frame's dts.
        dts_90k: u64,
        /// The previous frame's dts + duration: the smallest dts allowed.
        min_dts_90k: u64,
    },
    /// The SPS that would go into a new init does not parse.
    #[error("SPS of a new init segment does not parse: {0}")]
    InvalidSps(#[source] SpsError),
    /// More, or longer, parameter sets than `avcC` can hold (31 SPS, 255 PPS, 65535 bytes each).
    #[error(
        "{count} {kind} NAL units, the largest {largest} bytes: too many or too large for avcC"
    )]
    ParameterSetsTooLarge {
        /// "SPS" or "PPS".
        kind: &'static str,
        /// How many there were.
        count: usize,
        /// The longest, in bytes.
        largest: usize,
    },
    /// A NAL unit too long for a 4-byte AVCC length, or a sample too long for `trun`.
    #[error("sample at dts {dts_90k} has {len} bytes: too large for a 32-bit length")]
    SampleTooLarge {
        /// The frame's dts.
        dts_90k: u64,
        /// The size that did not fit.
        len: usize,
    },
}

/// Counters and flags for metrics and for the daemon to log (this crate never prints).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmenterStats {
    /// Frames that went into parts.
    pub frames_accepted: u64,
    /// Frames dropped before the first IDR.
    pub frames_dropped_before_idr: u64,
    /// IDR frames dropped at the start because no SPS or no PPS was known yet.
    pub frames_dropped_without_parameters: u64,
    /// Frames dropped because nothing was left once parameter sets and AUDs were stripped.
    pub frames_dropped_empty: u64,
    /// Frames with B slices.
    pub frames_with_b_slices: u64,
    /// Parts emitted.
    pub parts: u64,
    /// Init segments emitted.
    pub inits: u64,
    /// Set once B slices were seen with `low_delay_vui` on: the SPS is no longer rewritten.
    pub low_delay_vui_disabled: bool,
    /// Inits whose SPS `rewrite_low_delay` could not rewrite (used as the encoder wrote it).
    pub low_delay_rewrite_failures: u64,
}

/// The in-band parameter sets, as the encoder wrote them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ParamSets {
    sps: Vec<Bytes>,
    pps: Vec<Bytes>,
}

impl ParamSets {
    fn is_complete(&self) -> bool {
        !self.sps.is_empty() && !self.pps.is_empty()
    }

    /// These sets with each list replaced by the access unit's, when it carries any.
    fn updated_with(&self, sps: Vec<Bytes>, pps: Vec<Bytes>) -> ParamSets {
        ParamSets {
            sps: if sps.is_empty() {
                self.sps.clone()
            } else {
                dedup(sps)
            },
            pps: if pps.is_empty() {
                self.pps.clone()
            } else {
                dedup(pps)
            },
        }
    }
}

fn dedup(mut list: Vec<Bytes>) -> Vec<Bytes> {
    let mut seen = Vec::with_capacity(list.len());
    list.retain(|b| {
        let new = !seen.contains(b);
        if new {
            seen.push(b.clone());
        }
        new
    });
    list
}

/// The init in effect and what it was built from.
#[derive(Clone, Debug)]
struct Active {
    init: Arc<InitSegment>,
    /// The in-band bytes it was built from (before any rewrite).
    params: ParamSets,
    /// Whether its SPS was rewritten for low delay.
    sps_rewritten: bool,
}

/// The part being accumulated.
#[derive(Clone, Debug)]
struct Pending {
    base_dts_90k: u64,
    duration_90k: u64,
    independent: bool,
    capture_unix_us: u64,
    init_generation: u32,
    samples: Vec<SampleInfo>,
    /// Each sample's NAL units (no start codes), parameter sets and AUDs left out.
    data: Vec<Vec<Bytes>>,
}

/// The state machine described in the [module docs](self).
#[derive(Debug)]
pub struct Segmenter {
    config: SegmenterConfig,
    /// Latest in-band parameter sets, possibly incomplete before the start.
    params: ParamSets,
    /// `None` until the first IDR with parameter sets.
    active: Option<Active>,
    pending: Option<Pending>,
    /// The dts the next frame may start at: the previous accepted frame's dts + duration.
    next_dts_90k: Option<u64>,
    next_sequence: u64,
    next_generation: u32,
    b_slices_seen: bool,
    stats: SegmenterStats,
}

impl Segmenter {
    /// A segmenter waiting for its first IDR. Fails if the configuration does not validate.
    pub fn new(config: SegmenterConfig) -> Result<Self, SegmentError> {
        config.validate()?;
        Ok(Segmenter {
            config,
            params: ParamSets::default(),
            active: None,
            pending: None,
            next_dts_90k: None,
            next_sequence: 1,
            next_generation: 1,
            b_slices_seen: false,
            stats: SegmenterStats::default(),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> SegmenterConfig {
        self.config
    }

    /// Counters and flags so far.
    pub fn stats(&self) -> SegmenterStats {
        self.stats
    }

    /// The init segment in effect, once there is one.
    pub fn current_init(&self) -> Option<&Arc<InitSegment>> {
        self.active.as_ref().map(|a| &a.init)
    }

    /// Takes one frame; returns the outputs it completes, in order. On `Err` nothing changed.
    pub fn push(&mut self, mut frame: Frame) -> Result<Vec<Output>, SegmentError> {
        // Everything that can fail comes first; the state is only touched once nothing can.
        if frame.duration_90k == 0 {
            return Err(SegmentError::ZeroDuration {
                dts_90k: frame.dts_90k,
            });
        }
        if let Some(min_dts_90k) = self.next_dts_90k {
            if frame.dts_90k < min_dts_90k {
                return Err(SegmentError::DtsWentBackwards {
                    dts_90k: frame.dts_90k,
                    min_dts_90k,
                });
            }
        }

        let mut au_sps = Vec::new();
        let mut au_pps = Vec::new();
        for nal in &frame.au.nals {
            match h264::nal_type(nal) {
                nal_type::SPS if !nal.is_empty() => au_sps.push(nal.clone()),
                nal_type::PPS if !nal.is_empty() => au_pps.push(nal.clone()),
                _ => {}
            }
        }
        // The sample: the AU's other NAL units, kept as they are (shared, not copied) until the
        // part is written, where they go into the mdat in AVCC form.
        let mut sample = std::mem::take(&mut frame.au.nals);
        sample.retain(|n| {
            !n.is_empty()
                && !matches!(
                    h264::nal_type(n),
                    nal_type::SPS | nal_type::PPS | nal_type::AUD
                )
        });
        // Most access units carry no parameter sets: keep the current ones without copying.
        let new_params = (!au_sps.is_empty() || !au_pps.is_empty())
            .then(|| self.params.updated_with(au_sps, au_pps));
        let params = new_params.as_ref().unwrap_or(&self.params);
        let sample_len: usize = sample.iter().map(|n| n.len() + 4).sum();
        if u32::try_from(sample_len).is_err() {
            return Err(SegmentError::SampleTooLarge {
                dts_90k: frame.dts_90k,
                len: sample_len,
            });
        }
        let b_slices_seen = self.b_slices_seen || frame.au.has_b_slices;
        let mut stats = self.stats;
        stats.frames_with_b_slices += u64::from(frame.au.has_b_slices);
        stats.low_delay_vui_disabled = self.config.low_delay_vui && b_slices_seen;

        // What this frame does, decided before anything is committed.
        let new_active = match &self.active {
            _ if sample.is_empty() => None,
            None if !frame.au.is_idr => None,
            None if !params.is_complete() => None,
            None => Some(self.build_active(params, b_slices_seen, &mut stats)?),
            Some(active) => {
                let changed = active.params != *params;
                let undo_rewrite = frame.au.is_idr && b_slices_seen && active.sps_rewritten;
                if changed || undo_rewrite {
                    Some(self.build_active(params, b_slices_seen, &mut stats)?)
                } else {
                    None
                }
            }
        };

        // Commit.
        if let Some(params) = new_params {
            self.params = params;
        }
        self.b_slices_seen = b_slices_seen;
        self.stats = stats;
        if sample.is_empty() {
            self.stats.frames_dropped_empty += 1;
            return Ok(Vec::new());
        }
        if self.active.is_none() && new_active.is_none() {
            if frame.au.is_idr {
                self.stats.frames_dropped_without_parameters += 1;
            } else {
                self.stats.frames_dropped_before_idr += 1;
            }
            return Ok(Vec::new());
        }

        let mut out = Vec::new();
        let gap = self.next_dts_90k.is_some_and(|next| frame.dts_90k > next);
        if frame.au.is_idr || new_active.is_some() || gap {
            out.extend(self.finish_part());
        }
        if let Some(active) = new_active {
            out.push(Output::Init(active.init.clone()));
            self.active = Some(active);
            self.next_generation = self.next_generation.wrapping_add(1);
            self.stats.inits += 1;
        }
        let init_generation = self.active.as_ref().map_or(0, |a| a.init.generation);
        let pending = self.pending.get_or_insert_with(|| Pending {
            base_dts_90k: frame.dts_90k,
            duration_90k: 0,
            independent: frame.au.is_idr,
            capture_unix_us: frame.capture_unix_us,
            init_generation,
            samples: Vec::new(),
            data: Vec::new(),
        });
        pending.duration_90k += u64::from(frame.duration_90k);
        pending.samples.push(SampleInfo {
            duration: frame.duration_90k,
            is_sync: frame.au.is_idr,
            composition_offset: frame.cts_offset_90k,
        });
        pending.data.push(sample);
        let target = u64::from(self.config.fragment_duration_90k);
        // 1 % below the target counts as reaching it: timestamp jitter (module docs).
        if pending.duration_90k + target / 100 >= target {
            out.extend(self.finish_part());
        }
        self.next_dts_90k = Some(frame.dts_90k.saturating_add(u64::from(frame.duration_90k)));
        self.stats.frames_accepted += 1;
        Ok(out)
    }

    /// Emits the part in progress, if any (end of stream). The segmenter can go on afterwards.
    pub fn flush(&mut self) -> Vec<Output> {
        self.finish_part().into_iter().collect()
    }

    /// A new init from `params` (complete), with the SPS rewritten for low delay unless B slices
    /// were seen. Only reads `self`; the caller commits.
    fn build_active(
        &self,
        params: &ParamSets,
        b_slices_seen: bool,
        stats: &mut SegmenterStats,
    ) -> Result<Active, SegmentError> {
        check_avcc_limits("SPS", &params.sps, 31)?;
        check_avcc_limits("PPS", &params.pps, 255)?;
        let first_sps = params.sps.first().map(Bytes::as_ref).unwrap_or_default();
        let parsed = sps::parse_sps(first_sps).map_err(SegmentError::InvalidSps)?;

        let mut sps = params.sps.clone();
        let mut sps_rewritten = false;
        if self.config.low_delay_vui && !b_slices_seen {
            for s in &mut sps {
                match sps::rewrite_low_delay(s) {
                    Ok(Some(rewritten)) if u16::try_from(rewritten.len()).is_ok() => {
                        *s = Bytes::from(rewritten);
                        sps_rewritten = true;
                    }
                    Ok(None) => {}
                    Ok(Some(_)) | Err(_) => stats.low_delay_rewrite_failures += 1,
                }
            }
        }
        let track = VideoTrack {
            width: parsed.width,
            height: parsed.height,
            sps,
            pps: params.pps.clone(),
            timescale: TIMESCALE_90K,
        };
        let init = InitSegment {
            framed: fmp4::framed_init_segment(&track),
            codec: parsed.codec_string(),
            width: parsed.width,
            height: parsed.height,
            generation: self.next_generation,
        };
        Ok(Active {
            init: Arc::new(init),
            params: params.clone(),
            sps_rewritten,
        })
    }

    /// Turns the pending part, if any, into an output.
    fn finish_part(&mut self) -> Option<Output> {
        let pending = self.pending.take()?;
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.stats.parts += 1;
        let spec = FragmentSpec {
            // mfhd holds 32 bits; at 10 parts a second that wraps after 13 years.
            sequence_number: sequence as u32,
            base_decode_time: pending.base_dts_90k,
            capture_unix_us: pending.capture_unix_us,
            samples: pending.samples,
        };
        let framed = fmp4::framed_media_fragment_from_nals(&spec, &pending.data);
        Some(Output::Part(Arc::new(Part {
            framed,
            sequence,
            base_decode_time_90k: pending.base_dts_90k,
            duration_90k: u32::try_from(pending.duration_90k).unwrap_or(u32::MAX),
            frame_count: u32::try_from(spec.samples.len()).unwrap_or(u32::MAX),
            independent: pending.independent,
            capture_unix_us: pending.capture_unix_us,
            init_generation: pending.init_generation,
        })))
    }
}

fn check_avcc_limits(kind: &'static str, sets: &[Bytes], max: usize) -> Result<(), SegmentError> {
    let largest = sets.iter().map(Bytes::len).max().unwrap_or(0);
    if sets.len() > max || u16::try_from(largest).is_err() {
        return Err(SegmentError::ParameterSetsTooLarge {
            kind,
            count: sets.len(),
            largest,
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test fails
mod tests {
    use super::*;

    use crate::test_fixtures::{X264_HIGH_720P_PPS as PPS_X264, X264_HIGH_720P_SPS as SPS_X264};
    /// Hand-built Constrained Baseline 3.1 1280x720 SPS without VUI (checked with ffmpeg's
    /// trace_headers): what many hardware encoders send, and what `rewrite_low_delay` rewrites.
    const SPS_NO_VUI: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe4];
    const PPS_OTHER: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    const AUD: &[u8] = &[0x09, 0xf0];
    const SEI: &[u8] = &[0x06, 0x05, 0x01, 0xaa, 0x80];

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    fn idr_with(sps: &[u8], pps: &[u8]) -> AccessUnit {
        AccessUnit {
            nals: vec![b(AUD), b(sps), b(pps), b(SEI), b(&[0x65, 0x88, 0x84, 0x00])],
            is_idr: true,
            has_b_slices: false,
        }
    }

    fn idr() -> AccessUnit {
        idr_with(SPS_X264, PPS_X264)
    }

    fn idr_bare() -> AccessUnit {
        AccessUnit {
            nals: vec![b(AUD), b(&[0x65, 0x88, 0x84, 0x01])],
            is_idr: true,
            has_b_slices: false,
        }
    }

    fn p() -> AccessUnit {
        AccessUnit {
            nals: vec![b(AUD), b(&[0x41, 0x9a, 0x26, 0x20])],
            is_idr: false,
            has_b_slices: false,
        }
    }

    fn bframe() -> AccessUnit {
        AccessUnit {
            nals: vec![b(AUD), b(&[0x01, 0x9e, 0x42, 0x10])],
            is_idr: false,
            has_b_slices: true,
        }
    }

    fn frame(dts_90k: u64, duration_90k: u32, au: AccessUnit) -> Frame {
        Frame {
            dts_90k,
            duration_90k,
            cts_offset_90k: 0,
            capture_unix_us: 1_700_000_000_000_000 + dts_90k * 100 / 9,
            au,
        }
    }

    fn segmenter() -> Segmenter {
        Segmenter::new(SegmenterConfig::default()).unwrap()
    }

    /// A compact picture of the outputs: `I1` = init generation 1, `3i` = independent part of 3
    /// frames, `3` = dependent part of 3 frames.
    fn describe(outputs: &[Output]) -> Vec<String> {
        outputs
            .iter()
            .map(|o| match o {
                Output::Init(i) => format!("I{}", i.generation),
                Output::Part(p) => {
                    format!("{}{}", p.frame_count, if p.independent { "i" } else { "" })
                }
            })
            .collect()
    }

    fn parts(outputs: &[Output]) -> Vec<Arc<Part>> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Part(p) => Some(p.clone()),
                Output::Init(_) => None,
            })
            .collect()
    }

    fn inits(outputs: &[Output]) -> Vec<Arc<InitSegment>> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Init(i) => Some(i.clone()),
                Output::Part(_) => None,
            })
            .collect()
    }

    /// Pushes `n` frames of `duration` with an IDR every `gop` frames; returns all outputs.
    fn run(seg: &mut Segmenter, n: u64, duration: u32, gop: u64) -> Vec<Output> {
        let mut out = Vec::new();
        for i in 0..n {
            let au = if i % gop == 0 { idr() } else { p() };
            out.extend(
                seg.push(frame(i * u64::from(duration), duration, au))
                    .unwrap(),
            );
        }
        out
    }

    /// The SPS bytes inside an init segment's avcC.
    fn avcc_sps(init: &InitSegment) -> Vec<u8> {
        let data = init.payload();
        let at = data.windows(4).position(|w| w == b"avcC").unwrap() + 4;
        let len = usize::from(u16::from_be_bytes([data[at + 6], data[at + 7]]));
        data[at + 8..at + 8 + len].to_vec()
    }

    #[test]
    fn config_accepts_100_to_300_ms_only() {
        for (d, ok) in [
            (8_999, false),
            (9_000, true),
            (27_000, true),
            (27_001, false),
            (0, false),
        ] {
            let config = SegmenterConfig {
                fragment_duration_90k: d,
                low_delay_vui: true,
            };
            assert_eq!(config.validate().is_ok(), ok, "{d}");
            assert_eq!(Segmenter::new(config).is_ok(), ok, "{d}");
        }
    }

    #[test]
    fn thirty_fps_with_100_ms_parts_cuts_every_three_frames() {
        // Why: the part must go out at the frame that completes it, not when the next arrives.
        let mut seg = segmenter();
        let out = seg.push(frame(0, 3000, idr())).unwrap();
        assert_eq!(describe(&out), ["I1"]);
        assert!(seg.push(frame(3000, 3000, p())).unwrap().is_empty());
        let out = seg.push(frame(6000, 3000, p())).unwrap();
        assert_eq!(describe(&out), ["3i"]);

        let out = run(&mut segmenter(), 60, 3000, 30);
        let mut expected = vec!["I1".to_string()];
        for _ in 0..2 {
            expected.push("3i".into());
            expected.extend(std::iter::repeat_n("3".to_string(), 9));
        }
        assert_eq!(describe(&out), expected);
        let parts = parts(&out);
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(part.sequence, i as u64 + 1);
            assert_eq!(part.base_decode_time_90k, i as u64 * 9000);
            assert_eq!(part.duration_90k, 9000);
            assert_eq!(part.init_generation, 1);
            assert_eq!(
                part.capture_unix_us,
                1_700_000_000_000_000 + i as u64 * 100_000
            );
            assert_eq!(
                &part.framed[..4],
                (part.framed.len() as u32 - 4).to_be_bytes()
            );
            assert_eq!(part.payload(), part.framed.slice(4..));
        }
    }

    #[test]
    fn twenty_five_fps_gives_120_ms_parts_and_a_short_last_part_per_gop() {
        // 3600 ticks a frame: two frames (80 ms) are short of 100 ms, three (120 ms) reach it.
        // A GOP of 25 is 8 parts of 3 and one of 1 before the next IDR.
        let out = run(&mut segmenter(), 50, 3600, 25);
        let mut expected = vec!["I1".to_string()];
        for _ in 0..2 {
            expected.push("3i".into());
            expected.extend(std::iter::repeat_n("3".to_string(), 7));
            expected.push("1".into());
        }
        assert_eq!(describe(&out), expected[..expected.len() - 1]);
        // The last single frame is still pending until flushed or the next IDR.
        let mut seg = segmenter();
        run(&mut seg, 50, 3600, 25);
        assert_eq!(describe(&seg.flush()), ["1"]);
        assert!(seg.flush().is_empty());
        assert_eq!(parts(&out)[1].duration_90k, 10_800);
    }

    #[test]
    fn gop_not_a_multiple_of_the_part_size_ends_with_a_short_part() {
        let out = run(&mut segmenter(), 20, 3000, 10);
        assert_eq!(describe(&out), ["I1", "3i", "3", "3", "1", "3i", "3", "3"]);
    }

    #[test]
    fn an_idr_mid_part_ends_the_part_and_starts_an_independent_one() {
        let mut seg = segmenter();
        let mut out = seg.push(frame(0, 3000, idr())).unwrap();
        out.extend(seg.push(frame(3000, 3000, p())).unwrap());
        out.extend(seg.push(frame(6000, 3000, idr())).unwrap());
        assert_eq!(describe(&out), ["I1", "2i"]);
        out.extend(seg.push(frame(9000, 3000, p())).unwrap());
        out.extend(seg.push(frame(12000, 3000, p())).unwrap());
        assert_eq!(describe(&out), ["I1", "2i", "3i"]);
        let parts = parts(&out);
        assert_eq!(parts[1].base_decode_time_90k, 6000);
        assert_eq!(parts[0].duration_90k, 6000);
        // The same SPS/PPS repeated at the IDR is not a change: no new init.
        assert_eq!(seg.stats().inits, 1);
    }

    #[test]
    fn changed_parameter_sets_end_the_part_and_bring_a_new_init() {
        let mut seg = segmenter();
        let mut out = seg.push(frame(0, 3000, idr())).unwrap();
        out.extend(seg.push(frame(3000, 3000, p())).unwrap());
        // The camera switches to another SPS/PPS at its next IDR.
        let out2 = seg
            .push(frame(6000, 3000, idr_with(SPS_NO_VUI, PPS_OTHER)))
            .unwrap();
        assert_eq!(describe(&out2), ["2i", "I2"]);
        let init2 = &inits(&out2)[0];
        assert_eq!(init2.codec.to_ascii_lowercase(), "avc1.42c01f");
        assert_eq!((init2.width, init2.height), (1280, 720));
        let init1 = &inits(&out)[0];
        assert_eq!(init1.codec.to_ascii_lowercase(), "avc1.64001f");
        out.extend(seg.push(frame(9000, 3000, p())).unwrap());
        let out3 = seg.push(frame(12000, 3000, p())).unwrap();
        assert_eq!(describe(&out3), ["3i"]);
        assert_eq!(parts(&out3)[0].init_generation, 2);

        // A PPS alone changing on a non-IDR frame also ends the part and brings an init.
        let mut pps_change = p();
        pps_change.nals.insert(1, b(PPS_X264));
        seg.push(frame(15000, 3000, p())).unwrap();
        let out4 = seg.push(frame(18000, 3000, pps_change)).unwrap();
        assert_eq!(describe(&out4), ["1", "I3"]);
        let out5 = seg.push(frame(21000, 3000, p())).unwrap();
        assert!(out5.is_empty());
        let out6 = seg.push(frame(24000, 3000, p())).unwrap();
        assert_eq!(describe(&out6), ["3"]);
        assert_eq!(parts(&out6)[0].init_generation, 3);
        assert_eq!(seg.current_init().unwrap().generation, 3);
    }

    #[test]
    fn frames_before_the_first_idr_with_parameters_are_dropped_and_counted() {
        // Why: a viewer can only start decoding at an IDR whose SPS/PPS it has.
        let mut seg = segmenter();
        assert!(seg.push(frame(0, 3000, p())).unwrap().is_empty());
        assert!(seg.push(frame(3000, 3000, p())).unwrap().is_empty());
        // An IDR, but no parameter sets were ever seen.
        assert!(seg.push(frame(6000, 3000, idr_bare())).unwrap().is_empty());
        // Parameter sets arrive on a non-IDR access unit: remembered, the frame still dropped.
        let mut with_params = p();
        with_params.nals.splice(1..1, [b(SPS_X264), b(PPS_X264)]);
        assert!(seg.push(frame(9000, 3000, with_params)).unwrap().is_empty());
        let stats = seg.stats();
        assert_eq!(stats.frames_dropped_before_idr, 3);
        assert_eq!(stats.frames_dropped_without_parameters, 1);
        assert_eq!(stats.frames_accepted, 0);
        // The next IDR starts the stream, with the remembered parameters, at its own dts.
        let out = seg.push(frame(12000, 3000, idr_bare())).unwrap();
        assert_eq!(describe(&out), ["I1"]);
        seg.push(frame(15000, 3000, p())).unwrap();
        let out = seg.push(frame(18000, 3000, p())).unwrap();
        assert_eq!(parts(&out)[0].base_decode_time_90k, 12000);
        assert_eq!(parts(&out)[0].sequence, 1);
    }

    #[test]
    fn backwards_dts_is_rejected_and_leaves_the_state_unchanged() {
        // Why: tfdt must never go backwards (Safari stalls), and the previous frame's duration
        // is already written when the next frame arrives.
        let frames = |bad: bool| {
            let mut seg = segmenter();
            let mut out = Vec::new();
            out.extend(seg.push(frame(0, 3000, idr())).unwrap());
            out.extend(seg.push(frame(3000, 3000, p())).unwrap());
            if bad {
                let before = seg.stats();
                for (dts, what) in [(2999, "overlaps the previous frame"), (0, "repeats a dts")] {
                    let err = seg.push(frame(dts, 3000, p())).unwrap_err();
                    assert!(
                        matches!(err, SegmentError::DtsWentBackwards { dts_90k, min_dts_90k: 6000 } if dts_90k == dts),
                        "{what}: {err}"
                    );
                }
                // A bad IDR with new parameters is refused too, without its SPS taking effect.
                let err = seg
                    .push(frame(100, 3000, idr_with(SPS_NO_VUI, PPS_OTHER)))
                    .unwrap_err();
                assert!(matches!(err, SegmentError::DtsWentBackwards { .. }));
                let err = seg.push(frame(6000, 0, p())).unwrap_err();
                assert!(matches!(err, SegmentError::ZeroDuration { dts_90k: 6000 }));
                assert_eq!(seg.stats(), before);
            }
            for i in 2..12 {
                out.extend(seg.push(frame(i * 3000, 3000, p())).unwrap());
            }
            out.extend(seg.flush());
            out
        };
        assert_eq!(frames(true), frames(false));
    }

    #[test]
    fn a_forward_gap_ends_the_part_and_the_next_starts_at_the_new_dts() {
        let mut seg = segmenter();
        let mut out = seg.push(frame(0, 3000, idr())).unwrap();
        out.extend(seg.push(frame(3000, 3000, p())).unwrap());
        // Two frames lost: the next dts is 15000, not 6000.
        out.extend(seg.push(frame(15000, 3000, p())).unwrap());
        assert_eq!(describe(&out), ["I1", "2i"]);
        out.extend(seg.push(frame(18000, 3000, p())).unwrap());
        out.extend(seg.push(frame(21000, 3000, p())).unwrap());
        let parts = parts(&out);
        assert_eq!(describe(&out), ["I1", "2i", "3"]);
        assert_eq!(parts[1].base_decode_time_90k, 15000);
        assert_eq!(parts[1].sequence, 2);
    }

    #[test]
    fn jittery_timestamps_still_give_three_frame_parts() {
        let durations = [2999, 3001, 2998, 3002, 3000, 2999];
        let mut seg = segmenter();
        let mut out = Vec::new();
        let mut dts = 0;
        for (i, d) in durations.iter().enumerate() {
            let au = if i == 0 { idr() } else { p() };
            out.extend(seg.push(frame(dts, *d, au)).unwrap());
            dts += u64::from(*d);
        }
        assert_eq!(describe(&out), ["I1", "3i", "3"]);
        assert_eq!(parts(&out)[0].duration_90k, 8998);
    }

    #[test]
    fn parameter_sets_and_auds_are_stripped_sei_and_slices_kept() {
        let mut seg = segmenter();
        let out = seg.push(frame(0, 9000, idr())).unwrap();
        let part = &parts(&out)[0];
        let payload = part.payload();
        let mdat = payload.windows(4).rposition(|w| w == b"mdat").unwrap() + 4;
        let mut expected = Vec::new();
        for nal in [SEI, &[0x65, 0x88, 0x84, 0x00]] {
            expected.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            expected.extend_from_slice(nal);
        }
        assert_eq!(&payload[mdat..], expected.as_slice());
    }

    #[test]
    fn an_access_unit_with_nothing_but_parameter_sets_is_dropped() {
        let mut seg = segmenter();
        seg.push(frame(0, 3000, idr())).unwrap();
        let only_params = AccessUnit {
            nals: vec![b(AUD), b(SPS_X264), b(PPS_X264)],
            is_idr: false,
            has_b_slices: false,
        };
        assert!(seg.push(frame(3000, 3000, only_params)).unwrap().is_empty());
        assert_eq!(seg.stats().frames_dropped_empty, 1);
        assert_eq!(seg.stats().frames_accepted, 1);
    }

    #[test]
    fn b_slices_stop_the_low_delay_rewrite_at_the_next_idr() {
        // Why: max_num_reorder_frames = 0 makes Chrome output frames at once; with B-frames that
        // shows them out of order, so the encoder's own SPS must come back.
        let rewritten = sps::rewrite_low_delay(SPS_NO_VUI).unwrap().unwrap();
        let mut seg = segmenter();
        let idr = || idr_with(SPS_NO_VUI, PPS_OTHER);
        let out = seg.push(frame(0, 3000, idr())).unwrap();
        assert_eq!(avcc_sps(&inits(&out)[0]), rewritten);
        seg.push(frame(3000, 3000, p())).unwrap();
        let mut b = frame(6000, 3000, bframe());
        b.cts_offset_90k = -3000;
        let out = seg.push(b).unwrap();
        assert_eq!(describe(&out), ["3i"]);
        assert!(seg.stats().low_delay_vui_disabled);
        assert_eq!(seg.stats().frames_with_b_slices, 1);
        // More frames of the GOP: no init yet (a new init mid-GOP would need an IDR to decode).
        assert!(seg.push(frame(9000, 3000, p())).unwrap().is_empty());
        let out = seg.push(frame(12000, 3000, idr())).unwrap();
        assert_eq!(describe(&out), ["1", "I2"]);
        assert_eq!(avcc_sps(&inits(&out)[0]), SPS_NO_VUI);
        // And it stays off.
        for i in 5..20 {
            let au = if i % 5 == 0 { idr() } else { p() };
            let out = seg.push(frame(i * 3000, 3000, au)).unwrap();
            assert!(inits(&out).is_empty());
        }
    }

    #[test]
    fn low_delay_vui_off_keeps_the_encoders_sps() {
        let mut seg = Segmenter::new(SegmenterConfig {
            fragment_duration_90k: 9000,
            low_delay_vui: false,
        })
        .unwrap();
        let out = seg
            .push(frame(0, 3000, idr_with(SPS_NO_VUI, PPS_OTHER)))
            .unwrap();
        assert_eq!(avcc_sps(&inits(&out)[0]), SPS_NO_VUI);
        seg.push(frame(3000, 3000, bframe())).unwrap();
        assert!(!seg.stats().low_delay_vui_disabled);
    }

    #[test]
    fn an_sps_that_does_not_parse_is_an_error_without_effect() {
        let mut seg = segmenter();
        let bad = idr_with(&[0x67, 0x64], PPS_X264);
        assert!(matches!(
            seg.push(frame(0, 3000, bad)).unwrap_err(),
            SegmentError::InvalidSps(_)
        ));
        assert_eq!(seg.stats(), SegmenterStats::default());
        assert_eq!(describe(&seg.push(frame(0, 3000, idr())).unwrap()), ["I1"]);
    }

    #[test]
    fn part_sizes_and_durations_add_up() {
        let mut seg = Segmenter::new(SegmenterConfig {
            fragment_duration_90k: 27_000,
            low_delay_vui: true,
        })
        .unwrap();
        let out = run(&mut seg, 18, 3000, 100);
        assert_eq!(describe(&out), ["I1", "9i", "9"]);
        assert_eq!(parts(&out)[1].duration_90k, 27_000);
        assert_eq!(seg.stats().parts, 2);
        assert_eq!(seg.stats().frames_accepted, 18);
    }
}
