//! Fragmented MP4 / CMAF box writers: pure functions from a plain struct to bytes.
//!
//! Every box goes through one helper, [`write_box`] (and [`write_full_box`] on top of it), which
//! writes a placeholder size, lets a closure write the body, then back-patches the size. Nothing
//! here allocates more than the output buffer, reads a clock or fails: the caller (the
//! [`segmenter`](crate::segmenter)) has already validated its input (parameter sets that parse,
//! sizes that fit their fields); what still does not fit is clamped, never a panic.
//!
//! # Init segment ([`init_segment`])
//!
//! ```text
//! ftyp                       major iso6, minor 0, compatible iso6 cmfc mp41       14496-12 §4.3
//! moov                                                                            §8.2.1
//! ├── mvhd  v0              timescale = track timescale, duration 0, next_track_ID 2  §8.2.2
//! ├── trak                                                                        §8.3.1
//! │   ├── tkhd  v0 flags 3   enabled|in_movie, track_ID 1, width/height 16.16      §8.3.2
//! │   └── mdia                                                                    §8.4.1
//! │       ├── mdhd  v0       timescale (90 kHz), language "und"                   §8.4.2
//! │       ├── hdlr           "vide", name "pinhole"                               §8.4.3
//! │       └── minf                                                                §8.4.4
//! │           ├── vmhd  flags 1                                                   §12.1.2
//! │           ├── dinf / dref / "url " flags 1 (media in this file)               §8.7.1-2
//! │           └── stbl                                                            §8.5.1
//! │               ├── stsd / avc1 (VisualSampleEntry)                             §8.5.2, §12.1.3
//! │               │          └── avcC (AVCDecoderConfigurationRecord)             14496-15 §5.3.3
//! │               └── stts, stsc, stsz, stco: all empty (samples live in moofs)   §8.6.1, 8.7.3-5
//! └── mvex                                                                        §8.8.1
//!     └── trex               track_ID 1, default_sample_description_index 1       §8.8.3
//! ```
//!
//! # Media fragment ([`media_fragment`])
//!
//! ```text
//! prft  v1 flags 24          capture wall-clock time (NTP) ↔ media time           §8.16.5
//! moof                                                                            §8.8.4
//! ├── mfhd                   sequence_number                                      §8.8.5
//! └── traf                                                                        §8.8.6
//!     ├── tfhd  flags 0x020000  track_ID 1, default-base-is-moof                  §8.8.7
//!     ├── tfdt  v1           baseMediaDecodeTime (64 bit)                         §8.8.12
//!     └── trun  flags 0x000701 (+0x800, v1, when any composition offset ≠ 0)      §8.8.8
//!                            data_offset, then per sample: duration, size, flags[, offset]
//! mdat                       the samples, AVCC (4-byte big-endian NAL lengths)    §8.1.1
//! ```
//!
//! This follows the CMAF track constraints (ISO/IEC 23000-19 §7.3, §7.5): one track per file,
//! `default-base-is-moof` and no `base_data_offset`, a `tfdt` in every fragment, an empty sample
//! table in the header, and `trex` defaults that the fragments override explicitly.
//!
//! # Brands
//!
//! `iso6` (major and compatible) because the fragments use boxes and versions defined after the
//! older brands: `tfdt`, `trun` version 1 (signed composition offsets), `prft`. `cmfc` is the
//! CMAF structural brand (23000-19 §7.2): it says "these are CMAF fragments", which Safari's and
//! Chrome's MSE paths do not require but DASH/HLS tooling checks. `mp41` keeps players that only
//! look for a brand they recognise (older QuickTime-derived stacks) happy; ffmpeg's CMAF output
//! uses the same three. No CMAF *media profile* brand (`cfhd`, `cfsd`) is claimed: those constrain
//! the bitstream (level, colour VUI) in ways we do not check.
//!
//! # Output stability
//!
//! [`FORMAT_VERSION`] names the byte layout. The integration tests compare the output for a fixed
//! input against golden files named after it (`tests/golden/*.v{FORMAT_VERSION}.hex`): change the
//! bytes, bump the version, regenerate the goldens with `UPDATE_GOLDEN=1 cargo test`.
//!
//! # Framing
//!
//! The chunked stream carries records `[u32 BE length][payload]`. [`framed_init_segment`] and
//! [`framed_media_fragment`] write the prefix in place, so each record is one allocation whose
//! payload is `framed.slice(4..)`.

use bytes::Bytes;

use crate::sps;

/// The version of the byte layout written here. Bump it whenever the output for the same input
/// changes (a new box, a different flag, another brand), and regenerate the golden files.
pub const FORMAT_VERSION: u32 = 1;

/// The one track of every file: pinhole streams video only.
pub const TRACK_ID: u32 = 1;

/// `trun` sample flags (14496-12 §8.8.3.1) for a sync sample (an IDR picture):
/// `sample_depends_on = 2` (does not depend on others), `sample_is_non_sync_sample = 0`.
pub const SAMPLE_FLAGS_SYNC: u32 = 2 << 24;

/// `trun` sample flags for any other picture: `sample_depends_on = 1` (depends on others),
/// `sample_is_non_sync_sample = 1`.
pub const SAMPLE_FLAGS_NON_SYNC: u32 = (1 << 24) | (1 << 16);

/// `prft` flags (14496-12:2022 §8.16.5.3): 24 (`0x18`) says "the UTC time has a consistent, small
/// (ideally zero) offset from the real-time of the experience depicted in the media at
/// `media_time`", i.e. the time of capture. The other values are 0 (frame input to the encoder),
/// 1 (output from the encoder), 2 (moof finalised), 4 (moof written), 8 (arbitrary but
/// consistent). Our timestamp is the capture time the source hands in, so 24 is the honest one
/// (mp4ff calls it `PrftTimeCaptured`). ffmpeg's movenc (`mov_write_prft_tag`) always writes 0,
/// "input to the encoder", with the wall clock at muxing time: wrong on both counts for a camera
/// that timestamps at exposure. Like ffmpeg, `media_time` is the first sample's *presentation*
/// time, which is what the spec ties the UTC time to.
pub const PRFT_FLAGS_CAPTURE_TIME: u32 = 24;

/// `tfhd` flag `default-base-is-moof` (14496-12 §8.8.7.1): data offsets count from the moof.
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;

/// `trun` flags (14496-12 §8.8.8.1).
const TRUN_DATA_OFFSET: u32 = 0x00_0001;
const TRUN_SAMPLE_DURATION: u32 = 0x00_0100;
const TRUN_SAMPLE_SIZE: u32 = 0x00_0200;
const TRUN_SAMPLE_FLAGS: u32 = 0x00_0400;
const TRUN_SAMPLE_COMPOSITION_TIME_OFFSET: u32 = 0x00_0800;

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// `mdhd` language "und" (ISO 639-2/T, three 5-bit letters minus 0x60; 14496-12 §8.4.2.3).
const LANGUAGE_UND: u16 =
    ((b'u' as u16 - 0x60) << 10) | ((b'n' as u16 - 0x60) << 5) | (b'd' as u16 - 0x60);

/// The 3×3 unity matrix of `mvhd`/`tkhd` (16.16 and 2.30 fixed point).
const UNITY_MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// What the init segment describes: one AVC video track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoTrack {
    /// Displayed width in pixels (after SPS cropping).
    pub width: u32,
    /// Displayed height in pixels (after SPS cropping).
    pub height: u32,
    /// SPS NAL units (header byte included, no start code), as they go into `avcC`: already
    /// rewritten for low delay if that is wanted. The first one gives profile and level.
    pub sps: Vec<Bytes>,
    /// PPS NAL units (header byte included, no start code).
    pub pps: Vec<Bytes>,
    /// Media timescale in ticks per second; 90 000 in pinhole.
    pub timescale: u32,
}

/// One sample (one access unit) of a fragment, apart from its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleInfo {
    /// Duration in timescale ticks.
    pub duration: u32,
    /// An IDR picture: decodable on its own.
    pub is_sync: bool,
    /// Presentation time minus decode time, in timescale ticks (0 without B-frames).
    pub composition_offset: i32,
}

impl SampleInfo {
    /// The `trun` sample flags of this sample.
    pub fn flags(&self) -> u32 {
        if self.is_sync {
            SAMPLE_FLAGS_SYNC
        } else {
            SAMPLE_FLAGS_NON_SYNC
        }
    }
}

/// What a media fragment describes, apart from the sample bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FragmentSpec {
    /// `mfhd` sequence number: 1 for the first fragment, then +1 each.
    pub sequence_number: u32,
    /// `tfdt` baseMediaDecodeTime: the decode time of the first sample, in timescale ticks.
    pub base_decode_time: u64,
    /// Wall-clock capture time of the first sample, microseconds since the Unix epoch (`prft`).
    pub capture_unix_us: u64,
    /// One entry per sample, in decode order; entry `i` describes `sample_data[i]`.
    pub samples: Vec<SampleInfo>,
}

/// The init segment (`ftyp` + `moov`) for `track`.
pub fn init_segment(track: &VideoTrack) -> Vec<u8> {
    let mut out = Vec::with_capacity(init_capacity(track));
    write_init_segment(&mut out, track);
    out
}

/// The init segment as one framed record `[u32 BE length][ftyp+moov]`, in one allocation.
pub fn framed_init_segment(track: &VideoTrack) -> Bytes {
    framed(init_capacity(track), |out| write_init_segment(out, track))
}

/// A media fragment: `prft` + `moof` + `mdat`. `sample_data[i]` is sample `i` in AVCC form
/// (4-byte lengths); `spec.samples[i]` describes it. The two should have the same length; if not,
/// only the common prefix is written.
pub fn media_fragment(spec: &FragmentSpec, sample_data: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fragment_capacity(spec, sample_data));
    write_media_fragment(&mut out, spec, sample_data);
    out
}

/// The media fragment as one framed record `[u32 BE length][prft+moof+mdat]`, in one allocation.
pub fn framed_media_fragment(spec: &FragmentSpec, sample_data: &[Bytes]) -> Bytes {
    framed(fragment_capacity(spec, sample_data), |out| {
        write_media_fragment(out, spec, sample_data)
    })
}

/// The media fragment as one framed record, with each sample given as its NAL units (no start
/// codes): they are written in AVCC form (4-byte big-endian lengths) straight into the `mdat`.
/// The same bytes as [`framed_media_fragment`] over the samples made with
/// [`to_avcc`](crate::h264::to_avcc), without building those samples first.
pub fn framed_media_fragment_from_nals(spec: &FragmentSpec, sample_nals: &[Vec<Bytes>]) -> Bytes {
    framed(fragment_capacity(spec, sample_nals), |out| {
        write_media_fragment(out, spec, sample_nals)
    })
}

/// Frames an arbitrary payload as `[u32 BE length][payload]` (a copy; the `framed_*` functions
/// avoid it for the boxes written here). An empty payload gives the 4-byte heartbeat record.
pub fn frame_record(payload: &[u8]) -> Bytes {
    framed(payload.len(), |out| out.extend_from_slice(payload))
}

/// A wall-clock time in microseconds since the Unix epoch as a 64-bit NTP timestamp (RFC 5905
/// §6: 32-bit seconds since 1900, 32-bit fraction). The seconds wrap in 2036 (NTP era 1), as
/// the format prescribes.
pub fn unix_us_to_ntp(unix_us: u64) -> u64 {
    let secs = (unix_us / 1_000_000).wrapping_add(NTP_UNIX_OFFSET_S) & 0xFFFF_FFFF;
    let frac = ((unix_us % 1_000_000) << 32) / 1_000_000;
    (secs << 32) | frac
}

// ---------------------------------------------------------------------------------------------
// The one box helper.

/// Writes a box: size placeholder, type, the body written by `body`, then back-patches the size.
/// A box larger than 4 GiB cannot occur here (the only large box, `mdat`, is written directly
/// with a 64-bit size when needed); its size field would saturate rather than wrap.
fn write_box(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.put_u32(0);
    out.extend_from_slice(kind);
    body(out);
    let size = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    patch_u32(out, start, size);
}

/// Writes a full box (14496-12 §4.2): a box whose body starts with version (8 bits) and flags
/// (24 bits).
fn write_full_box(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    write_box(out, kind, |out| {
        out.put_u32((u32::from(version) << 24) | (flags & 0x00FF_FFFF));
        body(out);
    });
}

/// Overwrites the big-endian u32 at `at` (a position this module wrote itself).
fn patch_u32(out: &mut [u8], at: usize, value: u32) {
    if let Some(slot) = out.get_mut(at..at + 4) {
        slot.copy_from_slice(&value.to_be_bytes());
    }
}

/// Writes a record `[u32 BE length][what `write` appends]` into one buffer.
fn framed(payload_capacity: usize, write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut out = Vec::with_capacity(4 + payload_capacity);
    out.put_u32(0);
    write(&mut out);
    let len = u32::try_from(out.len() - 4).unwrap_or(u32::MAX);
    patch_u32(&mut out, 0, len);
    Bytes::from(out)
}

/// Big-endian appends, to keep the box bodies one line per field.
trait PutBe {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    fn put_zeros(&mut self, n: usize);
}

impl PutBe for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_zeros(&mut self, n: usize) {
        self.resize(self.len() + n, 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Init segment.

fn init_capacity(track: &VideoTrack) -> usize {
    let params: usize = track
        .sps
        .iter()
        .chain(&track.pps)
        .map(|p| p.len() + 2)
        .sum();
    700 + params
}

fn write_init_segment(out: &mut Vec<u8>, track: &VideoTrack) {
    // 14496-12 §4.3. minor_version is informative only; 0 says nothing.
    write_box(out, b"ftyp", |out| {
        out.extend_from_slice(b"iso6");
        out.put_u32(0);
        for brand in [b"iso6", b"cmfc", b"mp41"] {
            out.extend_from_slice(brand);
        }
    });
    write_box(out, b"moov", |out| {
        write_mvhd(out, track);
        write_box(out, b"trak", |out| {
            write_tkhd(out, track);
            write_box(out, b"mdia", |out| {
                write_mdhd(out, track);
                write_hdlr(out);
                write_box(out, b"minf", |out| {
                    // §12.1.2: graphicsmode 0 (copy), opcolor 0,0,0; flags must be 1.
                    write_full_box(out, b"vmhd", 0, 1, |out| out.put_zeros(8));
                    write_dinf(out);
                    write_stbl(out, track);
                });
            });
        });
        write_box(out, b"mvex", |out| {
            // §8.8.3: the defaults are overridden per sample in every trun.
            write_full_box(out, b"trex", 0, 0, |out| {
                out.put_u32(TRACK_ID);
                out.put_u32(1); // default_sample_description_index
                out.put_u32(0); // default_sample_duration
                out.put_u32(0); // default_sample_size
                out.put_u32(0); // default_sample_flags
            });
        });
    });
}

/// §8.2.2. Version 0 (32-bit times); a live stream has no duration (0 in fragmented files).
fn write_mvhd(out: &mut Vec<u8>, track: &VideoTrack) {
    write_full_box(out, b"mvhd", 0, 0, |out| {
        out.put_u32(0); // creation_time
        out.put_u32(0); // modification_time
        out.put_u32(track.timescale);
        out.put_u32(0); // duration
        out.put_u32(0x0001_0000); // rate 1.0
        out.put_u16(0x0100); // volume 1.0
        out.put_zeros(2 + 4 * 2); // reserved
        for m in UNITY_MATRIX {
            out.put_u32(m);
        }
        out.put_zeros(4 * 6); // pre_defined
        out.put_u32(TRACK_ID + 1); // next_track_ID
    });
}

/// §8.3.2. Flags 3 = track_enabled | track_in_movie. Width and height are 16.16 fixed point.
fn write_tkhd(out: &mut Vec<u8>, track: &VideoTrack) {
    write_full_box(out, b"tkhd", 0, 3, |out| {
        out.put_u32(0); // creation_time
        out.put_u32(0); // modification_time
        out.put_u32(TRACK_ID);
        out.put_u32(0); // reserved
        out.put_u32(0); // duration
        out.put_zeros(4 * 2); // reserved
        out.put_u16(0); // layer
        out.put_u16(0); // alternate_group
        out.put_u16(0); // volume: 0 for a video track
        out.put_u16(0); // reserved
        for m in UNITY_MATRIX {
            out.put_u32(m);
        }
        out.put_u32(u32::from(clamp_u16(track.width)) << 16);
        out.put_u32(u32::from(clamp_u16(track.height)) << 16);
    });
}

/// §8.4.2.
fn write_mdhd(out: &mut Vec<u8>, track: &VideoTrack) {
    write_full_box(out, b"mdhd", 0, 0, |out| {
        out.put_u32(0); // creation_time
        out.put_u32(0); // modification_time
        out.put_u32(track.timescale);
        out.put_u32(0); // duration
        out.put_u16(LANGUAGE_UND); // pad bit 0 + 3×5 bits
        out.put_u16(0); // pre_defined
    });
}

/// §8.4.3. The name is a null-terminated UTF-8 string; players show it as the track name.
fn write_hdlr(out: &mut Vec<u8>) {
    write_full_box(out, b"hdlr", 0, 0, |out| {
        out.put_u32(0); // pre_defined
        out.extend_from_slice(b"vide");
        out.put_zeros(4 * 3); // reserved
        out.extend_from_slice(b"pinhole\0");
    });
}

/// §8.7.1-2: one data reference, `url ` with flags 1 = "the media data is in the same file".
fn write_dinf(out: &mut Vec<u8>) {
    write_box(out, b"dinf", |out| {
        write_full_box(out, b"dref", 0, 0, |out| {
            out.put_u32(1); // entry_count
            write_full_box(out, b"url ", 0, 1, |_| {});
        });
    });
}

/// §8.5.1. The sample tables are present (they are mandatory) but empty: in a fragmented file
/// every sample is described by a trun.
fn write_stbl(out: &mut Vec<u8>, track: &VideoTrack) {
    write_box(out, b"stbl", |out| {
        write_full_box(out, b"stsd", 0, 0, |out| {
            out.put_u32(1); // entry_count
            write_avc1(out, track);
        });
        write_full_box(out, b"stts", 0, 0, |out| out.put_u32(0));
        write_full_box(out, b"stsc", 0, 0, |out| out.put_u32(0));
        write_full_box(out, b"stsz", 0, 0, |out| {
            out.put_u32(0); // sample_size
            out.put_u32(0); // sample_count
        });
        write_full_box(out, b"stco", 0, 0, |out| out.put_u32(0));
    });
}

/// 14496-12 §12.1.3 VisualSampleEntry with the `avc1` type of 14496-15 §5.4.2.1: parameter sets
/// in the sample entry only (they are stripped from the samples), unlike `avc3`.
fn write_avc1(out: &mut Vec<u8>, track: &VideoTrack) {
    write_box(out, b"avc1", |out| {
        out.put_zeros(6); // reserved (SampleEntry)
        out.put_u16(1); // data_reference_index
        out.put_u16(0); // pre_defined
        out.put_u16(0); // reserved
        out.put_zeros(4 * 3); // pre_defined
        out.put_u16(clamp_u16(track.width));
        out.put_u16(clamp_u16(track.height));
        out.put_u32(0x0048_0000); // horizresolution 72 dpi
        out.put_u32(0x0048_0000); // vertresolution 72 dpi
        out.put_u32(0); // reserved
        out.put_u16(1); // frame_count: one frame per sample
        out.put_zeros(32); // compressorname: empty Pascal string, padded to 32 bytes
        out.put_u16(0x0018); // depth: colour, no alpha
        out.put_u16(0xFFFF); // pre_defined = -1
        write_avcc(out, track);
    });
}

/// 14496-15 §5.3.3.1 AVCDecoderConfigurationRecord, in an `avcC` box (§5.4.2.1).
fn write_avcc(out: &mut Vec<u8>, track: &VideoTrack) {
    // Parameter sets longer than a u16 length cannot be described; a real SPS/PPS is < 100 bytes.
    let fits = |p: &&Bytes| u16::try_from(p.len()).is_ok();
    let sps: Vec<&Bytes> = track.sps.iter().filter(fits).take(31).collect();
    let pps: Vec<&Bytes> = track.pps.iter().filter(fits).take(255).collect();
    // Bytes 1..4 of an SPS NAL are profile_idc, constraint_set flags, level_idc (H.264 §7.3.2.1.1).
    let first = sps.first().map(|s| s.as_ref()).unwrap_or(&[]);
    let header = |i: usize| first.get(i).copied().unwrap_or(0);
    let profile_idc = header(1);
    write_box(out, b"avcC", |out| {
        out.put_u8(1); // configurationVersion
        out.put_u8(profile_idc); // AVCProfileIndication
        out.put_u8(header(2)); // profile_compatibility
        out.put_u8(header(3)); // AVCLevelIndication
        out.put_u8(0xFC | 3); // reserved 6 bits '1' + lengthSizeMinusOne = 3 (4-byte lengths)
        out.put_u8(0xE0 | sps.len() as u8); // reserved 3 bits '1' + numOfSequenceParameterSets
        for s in &sps {
            out.put_u16(s.len() as u16);
            out.extend_from_slice(s);
        }
        out.put_u8(pps.len() as u8);
        for p in &pps {
            out.put_u16(p.len() as u16);
            out.extend_from_slice(p);
        }
        // The extension is mandatory for these profiles (§5.3.3.1.2), and Chrome's parser
        // reads it: a missing one was seen to break 4:2:2/10-bit streams, harmless for 8-bit.
        if matches!(profile_idc, 100 | 110 | 122 | 144) {
            // 4:2:0, 8 bit (what H.264 infers when the fields are absent) if it does not parse;
            // the segmenter only builds inits from SPSs that do.
            let (chroma, luma8, chroma8) = sps::parse_sps(first).map_or((1, 0, 0), |s| {
                (
                    s.chroma_format_idc,
                    s.bit_depth_luma_minus8,
                    s.bit_depth_chroma_minus8,
                )
            });
            out.put_u8(0xFC | (chroma & 0x03) as u8);
            out.put_u8(0xF8 | (luma8 & 0x07) as u8);
            out.put_u8(0xF8 | (chroma8 & 0x07) as u8);
            out.put_u8(0); // numOfSequenceParameterSetExt
        }
    });
}

fn clamp_u16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

// ---------------------------------------------------------------------------------------------
// Media fragment.

/// The bytes of one sample in the `mdat`.
trait SampleData {
    fn sample_len(&self) -> usize;
    fn write_sample(&self, out: &mut Vec<u8>);
}

/// A sample already in AVCC form.
impl SampleData for Bytes {
    fn sample_len(&self) -> usize {
        self.len()
    }
    fn write_sample(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

/// A sample as its NAL units, written with 4-byte lengths (as `h264::to_avcc` does).
impl SampleData for Vec<Bytes> {
    fn sample_len(&self) -> usize {
        self.iter().map(|n| 4 + n.len()).sum()
    }
    fn write_sample(&self, out: &mut Vec<u8>) {
        for nal in self {
            out.put_u32(u32::try_from(nal.len()).unwrap_or(u32::MAX));
            out.extend_from_slice(nal);
        }
    }
}

fn fragment_capacity<D: SampleData>(spec: &FragmentSpec, sample_data: &[D]) -> usize {
    let data: usize = sample_data.iter().map(SampleData::sample_len).sum();
    200 + 16 * spec.samples.len() + data
}

fn write_media_fragment<D: SampleData>(out: &mut Vec<u8>, spec: &FragmentSpec, sample_data: &[D]) {
    let count = spec.samples.len().min(sample_data.len());
    let samples = spec.samples.get(..count).unwrap_or(&[]);
    let data = sample_data.get(..count).unwrap_or(&[]);
    let any_cts = samples.iter().any(|s| s.composition_offset != 0);
    let mdat_payload: u64 = data.iter().map(|d| d.sample_len() as u64).sum();
    // A compact mdat header is 8 bytes; one over 4 GiB needs size = 1 + a 64-bit largesize.
    let mdat_header_len: u64 = if mdat_payload + 8 <= u64::from(u32::MAX) {
        8
    } else {
        16
    };

    // §8.16.5. media_time is the *presentation* time of the first sample, the frame whose
    // capture time ntp_timestamp is; without B-frames that equals the tfdt decode time.
    let first_cts = samples.first().map_or(0, |s| s.composition_offset);
    let media_time = spec
        .base_decode_time
        .saturating_add_signed(i64::from(first_cts));
    write_full_box(out, b"prft", 1, PRFT_FLAGS_CAPTURE_TIME, |out| {
        out.put_u32(TRACK_ID); // reference_track_ID
        out.put_u64(unix_us_to_ntp(spec.capture_unix_us));
        out.put_u64(media_time);
    });

    let moof_start = out.len();
    let mut data_offset_at = None;
    write_box(out, b"moof", |out| {
        write_full_box(out, b"mfhd", 0, 0, |out| out.put_u32(spec.sequence_number));
        write_box(out, b"traf", |out| {
            write_full_box(out, b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, |out| {
                out.put_u32(TRACK_ID);
            });
            write_full_box(out, b"tfdt", 1, 0, |out| out.put_u64(spec.base_decode_time));
            // Version 1 makes the composition offsets signed (§8.8.8.2); only needed, and only
            // written, when there are any.
            let (version, cts_flag) = if any_cts {
                (1, TRUN_SAMPLE_COMPOSITION_TIME_OFFSET)
            } else {
                (0, 0)
            };
            let flags = TRUN_DATA_OFFSET
                | TRUN_SAMPLE_DURATION
                | TRUN_SAMPLE_SIZE
                | TRUN_SAMPLE_FLAGS
                | cts_flag;
            write_full_box(out, b"trun", version, flags, |out| {
                out.put_u32(count as u32); // sample_count
                data_offset_at = Some(out.len());
                out.put_u32(0); // data_offset, patched once the moof size is known
                for (info, bytes) in samples.iter().zip(data) {
                    out.put_u32(info.duration);
                    out.put_u32(u32::try_from(bytes.sample_len()).unwrap_or(u32::MAX));
                    out.put_u32(info.flags());
                    if any_cts {
                        out.put_u32(info.composition_offset as u32); // two's complement
                    }
                }
            });
        });
    });
    // default-base-is-moof: the offset counts from the first byte of the moof to the first
    // sample byte, just past the mdat header.
    let moof_len = (out.len() - moof_start) as u64;
    let data_offset = u32::try_from(moof_len + mdat_header_len).unwrap_or(u32::MAX);
    if let Some(at) = data_offset_at {
        patch_u32(out, at, data_offset);
    }

    if mdat_header_len == 8 {
        out.put_u32((mdat_payload + 8) as u32);
        out.extend_from_slice(b"mdat");
    } else {
        out.put_u32(1);
        out.extend_from_slice(b"mdat");
        out.put_u64(mdat_payload + 16);
    }
    for d in data {
        d.write_sample(out);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test fails
mod tests {
    use super::*;
    use crate::bits::{rbsp_to_nal, BitWriter};

    use crate::test_fixtures::{X264_HIGH_720P_PPS as PPS, X264_HIGH_720P_SPS as SPS};

    fn track() -> VideoTrack {
        VideoTrack {
            width: 1280,
            height: 720,
            sps: vec![Bytes::from_static(SPS)],
            pps: vec![Bytes::from_static(PPS)],
            timescale: 90_000,
        }
    }

    /// Walks the top-level boxes of `data`: (type, whole box).
    fn boxes(data: &[u8]) -> Vec<([u8; 4], &[u8])> {
        let mut out = Vec::new();
        let mut rest = data;
        while rest.len() >= 8 {
            let size = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let kind: [u8; 4] = rest[4..8].try_into().unwrap();
            assert!(size >= 8 && size <= rest.len(), "bad box size {size}");
            out.push((kind, &rest[..size]));
            rest = &rest[size..];
        }
        assert!(rest.is_empty(), "trailing bytes");
        out
    }

    fn find<'a>(data: &'a [u8], kind: &[u8; 4]) -> &'a [u8] {
        let pos = data.windows(4).position(|w| w == kind).unwrap();
        let size = u32::from_be_bytes(data[pos - 4..pos].try_into().unwrap()) as usize;
        &data[pos - 4..pos - 4 + size]
    }

    #[test]
    fn write_box_back_patches_nested_sizes() {
        let mut out = Vec::new();
        write_box(&mut out, b"abcd", |out| {
            write_full_box(out, b"efgh", 1, 0x020304, |out| out.put_u16(7));
        });
        assert_eq!(
            out,
            [
                0, 0, 0, 22, b'a', b'b', b'c', b'd', 0, 0, 0, 14, b'e', b'f', b'g', b'h', 1, 2, 3,
                4, 0, 7
            ]
        );
    }

    #[test]
    fn init_segment_is_ftyp_then_moov() {
        let init = init_segment(&track());
        let top = boxes(&init);
        let kinds: Vec<_> = top.iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, [b"ftyp", b"moov"]);
        assert_eq!(&top[0].1[8..], b"iso6\0\0\0\0iso6cmfcmp41");
    }

    #[test]
    fn avcc_carries_the_high_profile_extension_for_profile_100() {
        // Why: 14496-15 makes the chroma/bit-depth trailer mandatory for High profiles; some
        // parsers reject an avcC without it.
        let init = init_segment(&track());
        let avcc = find(&init, b"avcC");
        let body = &avcc[8..];
        assert_eq!(&body[..6], [1, 0x64, 0x00, 0x1f, 0xff, 0xe1]);
        assert_eq!(&body[6..8], (SPS.len() as u16).to_be_bytes());
        assert_eq!(&body[8..8 + SPS.len()], SPS);
        let rest = &body[8 + SPS.len()..];
        assert_eq!(rest[..3], [1, 0, 4]);
        assert_eq!(&rest[3..7], PPS);
        // 4:2:0, 8-bit luma and chroma, no SPS extensions.
        assert_eq!(&rest[7..], [0xfd, 0xf8, 0xf8, 0x00]);
    }

    #[test]
    fn avcc_has_no_extension_for_baseline() {
        let mut t = track();
        let baseline = [
            0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xec, 0x04, 0x40,
        ];
        t.sps = vec![Bytes::copy_from_slice(&baseline)];
        let init = init_segment(&t);
        let avcc = find(&init, b"avcC");
        assert_eq!(avcc.len(), 8 + 6 + 2 + baseline.len() + 1 + 2 + PPS.len());
    }

    #[test]
    fn avcc_extension_repeats_the_sps_chroma_format_and_bit_depths() {
        // A complete High 4:2:2 10-bit SPS (profile 122), 1280x720, no VUI.
        let mut w = BitWriter::new();
        w.write_ue(0); // seq_parameter_set_id
        w.write_ue(2); // chroma_format_idc: 4:2:2
        w.write_ue(2); // bit_depth_luma_minus8
        w.write_ue(2); // bit_depth_chroma_minus8
        w.write_bits(2, 0); // qpprime_y_zero_transform_bypass_flag, seq_scaling_matrix_present
        w.write_ue(0); // log2_max_frame_num_minus4
        w.write_ue(2); // pic_order_cnt_type
        w.write_ue(1); // max_num_ref_frames
        w.write_bit(false); // gaps_in_frame_num_value_allowed_flag
        w.write_ue(79); // pic_width_in_mbs_minus1
        w.write_ue(44); // pic_height_in_map_units_minus1
        w.write_bits(4, 0b1100); // frame_mbs_only, direct_8x8_inference, no cropping, no VUI
        w.write_trailing_bits();
        let mut nal = vec![0x67, 122, 0x00, 0x1f];
        nal.extend(rbsp_to_nal(&w.into_bytes()));
        let parsed = sps::parse_sps(&nal).unwrap();
        assert_eq!(
            (parsed.width, parsed.height, parsed.chroma_format_idc),
            (1280, 720, 2)
        );

        let mut t = track();
        t.sps = vec![Bytes::from(nal)];
        let init = init_segment(&t);
        let avcc = find(&init, b"avcC");
        assert_eq!(avcc[9], 122);
        assert_eq!(&avcc[avcc.len() - 4..], [0xfe, 0xfa, 0xfa, 0x00]);
    }

    #[test]
    fn ntp_conversion_matches_known_values() {
        assert_eq!(unix_us_to_ntp(0), NTP_UNIX_OFFSET_S << 32);
        // Half a second is a fraction of 2^31.
        assert_eq!(
            unix_us_to_ntp(1_500_000),
            ((NTP_UNIX_OFFSET_S + 1) << 32) | (1 << 31)
        );
        // 2036-02-07T06:28:16Z is the end of NTP era 0: the seconds wrap to 0.
        let era_end_unix_s = (1u64 << 32) - NTP_UNIX_OFFSET_S;
        assert_eq!(unix_us_to_ntp(era_end_unix_s * 1_000_000) >> 32, 0);
    }

    fn spec(samples: Vec<SampleInfo>) -> FragmentSpec {
        FragmentSpec {
            sequence_number: 7,
            base_decode_time: 123_456,
            capture_unix_us: 1_700_000_000_000_000,
            samples,
        }
    }

    #[test]
    fn fragment_data_offset_points_at_the_first_sample_byte() {
        let s = |is_sync| SampleInfo {
            duration: 3000,
            is_sync,
            composition_offset: 0,
        };
        let data = [
            Bytes::from_static(b"\0\0\0\x02\x65\x88"),
            Bytes::from_static(b"\0\0\0\x01\x41"),
        ];
        let frag = media_fragment(&spec(vec![s(true), s(false)]), &data);
        let top = boxes(&frag);
        let kinds: Vec<_> = top.iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, [b"prft", b"moof", b"mdat"]);
        let moof_start = top[0].1.len();
        let trun = find(top[1].1, b"trun");
        assert_eq!(
            &trun[8..12],
            [0, 0, 0x07, 0x01],
            "v0, no composition offsets"
        );
        let data_offset = u32::from_be_bytes(trun[16..20].try_into().unwrap()) as usize;
        assert_eq!(
            &frag[moof_start + data_offset..],
            b"\0\0\0\x02\x65\x88\0\0\0\x01\x41"
        );
        // Sample flags: sync, then non-sync.
        assert_eq!(&trun[28..32], SAMPLE_FLAGS_SYNC.to_be_bytes());
        assert_eq!(&trun[40..44], SAMPLE_FLAGS_NON_SYNC.to_be_bytes());
    }

    #[test]
    fn negative_composition_offsets_use_trun_version_1() {
        let s = |cts| SampleInfo {
            duration: 3000,
            is_sync: false,
            composition_offset: cts,
        };
        let data = [Bytes::from_static(b"a"), Bytes::from_static(b"b")];
        let frag = media_fragment(&spec(vec![s(3000), s(-3000)]), &data);
        let trun = find(&frag, b"trun");
        assert_eq!(&trun[8..12], [1, 0, 0x0f, 0x01]);
        assert_eq!(&trun[32..36], 3000i32.to_be_bytes());
        assert_eq!(&trun[48..52], (-3000i32).to_be_bytes());
        // prft media_time is the first sample's presentation time.
        let prft = find(&frag, b"prft");
        assert_eq!(&prft[24..32], (123_456u64 + 3000).to_be_bytes());
    }

    #[test]
    fn prft_is_version_1_with_capture_flags() {
        let frag = media_fragment(&spec(vec![]), &[]);
        let prft = find(&frag, b"prft");
        assert_eq!(prft.len(), 32);
        assert_eq!(&prft[8..12], [1, 0, 0, 24]);
        assert_eq!(&prft[12..16], TRACK_ID.to_be_bytes());
        assert_eq!(
            &prft[16..24],
            unix_us_to_ntp(1_700_000_000_000_000).to_be_bytes()
        );
        assert_eq!(&prft[24..32], 123_456u64.to_be_bytes());
    }

    #[test]
    fn mismatched_lengths_write_only_the_common_prefix() {
        let s = SampleInfo {
            duration: 1,
            is_sync: true,
            composition_offset: 0,
        };
        let frag = media_fragment(&spec(vec![s, s, s]), &[Bytes::from_static(b"xy")]);
        let trun = find(&frag, b"trun");
        assert_eq!(&trun[12..16], 1u32.to_be_bytes());
        assert_eq!(&frag[frag.len() - 10..], b"\0\0\0\x0amdatxy");
    }

    #[test]
    fn framed_records_carry_their_length_in_one_buffer() {
        let t = track();
        let framed = framed_init_segment(&t);
        let init = init_segment(&t);
        assert_eq!(&framed[..4], (init.len() as u32).to_be_bytes());
        assert_eq!(&framed[4..], init.as_slice());
        let s = spec(vec![SampleInfo {
            duration: 3000,
            is_sync: true,
            composition_offset: 0,
        }]);
        let data = [Bytes::from_static(b"\0\0\0\x01\x65")];
        let framed = framed_media_fragment(&s, &data);
        assert_eq!(&framed[4..], media_fragment(&s, &data).as_slice());
        assert_eq!(frame_record(b""), Bytes::from_static(&[0, 0, 0, 0]));
        assert_eq!(frame_record(b"ab"), Bytes::from_static(b"\0\0\0\x02ab"));
    }

    #[test]
    fn fragments_from_nal_units_are_the_bytes_of_fragments_from_avcc_samples() {
        let s = |is_sync, composition_offset| SampleInfo {
            duration: 3003,
            is_sync,
            composition_offset,
        };
        let big = Bytes::from((0..70_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let nals = vec![
            vec![
                Bytes::from_static(b"\x06\x05\x01\xaa\x80"),
                big.clone(),
                big.slice(9..),
            ],
            vec![Bytes::from_static(b"\x41\x9a")],
            vec![],
            vec![big.slice(..1), Bytes::from_static(b"\x01\x02\x03")],
        ];
        for cts in [0, -3003] {
            let spec = spec(vec![s(true, 0), s(false, cts), s(false, 0), s(false, 0)]);
            let avcc: Vec<Bytes> = nals
                .iter()
                .map(|n| Bytes::from(crate::h264::to_avcc(n)))
                .collect();
            assert_eq!(
                framed_media_fragment_from_nals(&spec, &nals),
                framed_media_fragment(&spec, &avcc)
            );
            // Fewer sample descriptions than samples: the same common prefix is written.
            let short = FragmentSpec {
                samples: spec.samples[..2].to_vec(),
                ..spec.clone()
            };
            assert_eq!(
                framed_media_fragment_from_nals(&short, &nals),
                framed_media_fragment(&short, &avcc)
            );
        }
    }
}
