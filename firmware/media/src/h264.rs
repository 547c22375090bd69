//! H.264 NAL units and access units (ITU-T H.264 §7.3.1, §7.4.1.2.3, §7.4.1.2.4), and the
//! AVCC (length-prefixed) form used inside MP4 (ISO/IEC 14496-15 §5.3.4.2).
//!
//! An *access unit* (AU) is one coded picture with the NAL units around it: optional AUD, SPS,
//! PPS and SEI, then the picture's slices. [`AuAssembler`] groups a stream of NAL units into
//! [`AccessUnit`]s; [`AnnexBReader`] does the same from Annex-B bytes.
//!
//! # Latency
//!
//! Annex B has no "end of picture" marker: an AU is known complete only when the first NAL unit
//! of the *next* AU arrives (§7.4.1.2.3), i.e. one frame interval after its last byte. The
//! splitter adds to that, since a NAL unit is known complete only at the next start code.
//! [`AnnexBReader`] removes the second delay: as soon as the first bytes of the next NAL unit
//! are buffered, it looks at them ([`NalSplitter::pending_prefix`]) and, if they begin a new
//! AU, releases the finished one without waiting for the rest of that NAL unit — for a stream
//! of single-slice frames without AUDs that is one frame interval earlier. A source that knows
//! frame boundaries (an in-process encoder handing over whole frames, like `testsrc`) bypasses
//! all this: it calls [`split_annexb`](crate::annexb::split_annexb) on the frame and
//! [`AccessUnit::from_nals`].
//!
//! # Errors
//!
//! A NAL unit that cannot be classified (empty, `forbidden_zero_bit` set, a slice header that
//! does not parse) is reported as an [`H264Error`] and dropped; the assembler carries on with
//! its state as it was.

use bytes::Bytes;
use thiserror::Error;

use crate::annexb::NalSplitter;
use crate::bits::{nal_to_rbsp, BitReader, BitsError};
use crate::sps::{parse_pps, parse_sps, PicOrderCnt};

/// NAL unit types (Table 7-1), for comparison with [`nal_type()`](fn@nal_type).
pub mod nal_type {
    /// Coded slice of a non-IDR picture.
    pub const SLICE: u8 = 1;
    /// Coded slice data partition A.
    pub const SLICE_DPA: u8 = 2;
    /// Coded slice data partition B.
    pub const SLICE_DPB: u8 = 3;
    /// Coded slice data partition C.
    pub const SLICE_DPC: u8 = 4;
    /// Coded slice of an IDR picture.
    pub const IDR: u8 = 5;
    /// Supplemental enhancement information.
    pub const SEI: u8 = 6;
    /// Sequence parameter set.
    pub const SPS: u8 = 7;
    /// Picture parameter set.
    pub const PPS: u8 = 8;
    /// Access unit delimiter.
    pub const AUD: u8 = 9;
    /// End of sequence.
    pub const END_OF_SEQUENCE: u8 = 10;
    /// End of stream.
    pub const END_OF_STREAM: u8 = 11;
    /// Filler data.
    pub const FILLER: u8 = 12;
    /// Sequence parameter set extension.
    pub const SPS_EXT: u8 = 13;
    /// Prefix NAL unit (SVC/MVC).
    pub const PREFIX: u8 = 14;
    /// Subset sequence parameter set (SVC/MVC).
    pub const SUBSET_SPS: u8 = 15;
    /// Coded slice of an auxiliary coded picture without partitioning.
    pub const SLICE_AUX: u8 = 19;
    /// Coded slice extension (SVC/MVC).
    pub const SLICE_EXT: u8 = 20;
}

/// `nal_unit_type` of a NAL unit (its first byte's low 5 bits); 0 (unspecified) when empty.
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// `nal_ref_idc` of a NAL unit; 0 when empty.
pub fn nal_ref_idc(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| (b >> 5) & 3)
}

/// Whether a NAL unit type is a VCL (coded slice) type of the primary picture (1..=5).
pub fn is_vcl(nal_type: u8) -> bool {
    (1..=5).contains(&nal_type)
}

/// What can go wrong with a NAL unit or an AVCC buffer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum H264Error {
    /// A NAL unit with no bytes.
    #[error("empty NAL unit")]
    EmptyNal,
    /// `forbidden_zero_bit` set: corrupted data, or not H.264 at all.
    #[error("NAL unit (type {nal_type}) has forbidden_zero_bit set")]
    ForbiddenZeroBit {
        /// The low 5 bits of the header.
        nal_type: u8,
    },
    /// The start of a slice header does not parse.
    #[error("slice header of NAL unit type {nal_type} does not parse: {source}")]
    SliceHeader {
        /// The NAL unit type.
        nal_type: u8,
        /// What the bit reader found.
        source: BitsError,
    },
    /// A slice header field outside its range.
    #[error("slice header of NAL unit type {nal_type}: {field} = {value} is out of range")]
    SliceHeaderOutOfRange {
        /// The NAL unit type.
        nal_type: u8,
        /// The syntax element.
        field: &'static str,
        /// Its value.
        value: u32,
    },
    /// An access unit grew past the limit; it was dropped.
    #[error("access unit exceeds {max_bytes} bytes or {max_nals} NAL units; dropped")]
    AccessUnitTooLarge {
        /// The byte limit.
        max_bytes: usize,
        /// The NAL unit count limit.
        max_nals: usize,
    },
    /// AVCC length fields are 1, 2 or 4 bytes (`lengthSizeMinusOne` 0, 1 or 3).
    #[error("AVCC length size {length_size} is not 1, 2 or 4")]
    AvccLengthSize {
        /// The size asked for.
        length_size: usize,
    },
    /// An AVCC length prefix or NAL unit runs past the end of the buffer.
    #[error("AVCC data truncated at offset {offset}: {needed} bytes needed, {available} left")]
    AvccTruncated {
        /// Offset of the length prefix.
        offset: usize,
        /// Bytes the prefix and NAL unit need from `offset`.
        needed: usize,
        /// Bytes left from `offset`.
        available: usize,
    },
}

/// One access unit: a coded picture and the NAL units that came with it, in stream order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessUnit {
    /// The NAL units, without start codes or length prefixes.
    pub nals: Vec<Bytes>,
    /// Whether it holds an IDR slice (a random access point).
    pub is_idr: bool,
    /// Whether any slice is a B slice (so frames are reordered).
    pub has_b_slices: bool,
}

impl AccessUnit {
    /// Builds an access unit from NAL units known to form one (e.g. an encoder's output for one
    /// frame, split with [`split_annexb`](crate::annexb::split_annexb)), computing `is_idr` and
    /// `has_b_slices`. Slices whose header does not parse count as not B.
    pub fn from_nals(nals: Vec<Bytes>) -> AccessUnit {
        let is_idr = nals.iter().any(|n| nal_type(n) == nal_type::IDR);
        let has_b_slices = nals.iter().any(|n| {
            has_slice_header(nal_type(n))
                && parse_slice_start(n).is_ok_and(|s| is_b_slice_type(s.slice_type))
        });
        AccessUnit {
            nals,
            is_idr,
            has_b_slices,
        }
    }

    /// The first SPS NAL unit, if any.
    pub fn sps(&self) -> Option<&Bytes> {
        self.nals.iter().find(|n| nal_type(n) == nal_type::SPS)
    }

    /// The first PPS NAL unit, if any.
    pub fn pps(&self) -> Option<&Bytes> {
        self.nals.iter().find(|n| nal_type(n) == nal_type::PPS)
    }

    /// Total size of the NAL units in bytes.
    pub fn byte_len(&self) -> usize {
        self.nals.iter().map(Bytes::len).sum()
    }
}

/// Whether a `slice_type` is B: 1, or 6 ("all slices of the picture are B"), Table 7-6.
fn is_b_slice_type(slice_type: u32) -> bool {
    slice_type % 5 == 1
}

/// Types whose payload starts with `first_mb_in_slice` and `slice_type`.
fn has_slice_header(t: u8) -> bool {
    matches!(t, nal_type::SLICE | nal_type::SLICE_DPA | nal_type::IDR)
}

/// How much of a NAL unit is read to parse the start of a slice header: far more than the
/// fields used (at most ~40 bytes even with maximal exp-Golomb codes).
const SLICE_HEADER_PREFIX: usize = 64;

/// The first fields of a slice header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SliceStart {
    first_mb_in_slice: u32,
    slice_type: u32,
    pps_id: u32,
}

#[derive(Debug)]
enum SliceError {
    Bits(BitsError),
    OutOfRange { field: &'static str, value: u32 },
}

impl SliceError {
    fn into_h264(self, nal_type: u8) -> H264Error {
        match self {
            SliceError::Bits(source) => H264Error::SliceHeader { nal_type, source },
            SliceError::OutOfRange { field, value } => H264Error::SliceHeaderOutOfRange {
                nal_type,
                field,
                value,
            },
        }
    }
}

impl From<BitsError> for SliceError {
    fn from(e: BitsError) -> Self {
        SliceError::Bits(e)
    }
}

fn slice_rbsp(nal: &[u8]) -> Vec<u8> {
    let end = nal.len().min(1 + SLICE_HEADER_PREFIX);
    nal_to_rbsp(nal.get(1..end).unwrap_or_default())
}

fn read_slice_start(r: &mut BitReader<'_>) -> Result<SliceStart, SliceError> {
    let first_mb_in_slice = r.read_ue()?;
    let slice_type = r.read_ue()?;
    if slice_type > 9 {
        return Err(SliceError::OutOfRange {
            field: "slice_type",
            value: slice_type,
        });
    }
    let pps_id = r.read_ue()?;
    if pps_id > 255 {
        return Err(SliceError::OutOfRange {
            field: "pic_parameter_set_id",
            value: pps_id,
        });
    }
    Ok(SliceStart {
        first_mb_in_slice,
        slice_type,
        pps_id,
    })
}

fn parse_slice_start(nal: &[u8]) -> Result<SliceStart, SliceError> {
    let rbsp = slice_rbsp(nal);
    read_slice_start(&mut BitReader::new(&rbsp))
}

/// What the assembler remembers of an SPS to read slice headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SpsInfo {
    separate_colour_plane_flag: bool,
    log2_max_frame_num: u32,
    frame_mbs_only_flag: bool,
    /// 0, 1 or 2.
    pic_order_cnt_type: u8,
    log2_max_pic_order_cnt_lsb: u32,
    delta_pic_order_always_zero_flag: bool,
}

/// What the assembler remembers of a PPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PpsInfo {
    sps_id: u32,
    bottom_field_pic_order_in_frame_present_flag: bool,
}

/// Parameter sets seen so far, by id.
#[derive(Debug, Clone)]
struct ParamSets {
    sps: [Option<SpsInfo>; 32],
    pps: Vec<Option<PpsInfo>>,
}

impl Default for ParamSets {
    fn default() -> Self {
        ParamSets {
            sps: [None; 32],
            pps: vec![None; 256],
        }
    }
}

impl ParamSets {
    fn update(&mut self, nal: &[u8]) {
        match nal_type(nal) {
            nal_type::SPS => {
                if let Ok(s) = parse_sps(nal) {
                    let (pic_order_cnt_type, log2_lsb, always_zero) = match s.pic_order_cnt {
                        PicOrderCnt::Type0 {
                            log2_max_pic_order_cnt_lsb_minus4,
                        } => (0, log2_max_pic_order_cnt_lsb_minus4 + 4, false),
                        PicOrderCnt::Type1 {
                            delta_pic_order_always_zero_flag,
                            ..
                        } => (1, 0, delta_pic_order_always_zero_flag),
                        PicOrderCnt::Type2 => (2, 0, false),
                    };
                    if let Some(slot) = self.sps.get_mut(s.seq_parameter_set_id as usize) {
                        *slot = Some(SpsInfo {
                            separate_colour_plane_flag: s.separate_colour_plane_flag,
                            log2_max_frame_num: s.log2_max_frame_num(),
                            frame_mbs_only_flag: s.frame_mbs_only_flag,
                            pic_order_cnt_type,
                            log2_max_pic_order_cnt_lsb: log2_lsb,
                            delta_pic_order_always_zero_flag: always_zero,
                        });
                    }
                }
            }
            nal_type::PPS => {
                if let Ok(p) = parse_pps(nal) {
                    if let Some(slot) = self.pps.get_mut(p.pic_parameter_set_id as usize) {
                        *slot = Some(PpsInfo {
                            sps_id: p.seq_parameter_set_id,
                            bottom_field_pic_order_in_frame_present_flag: p
                                .bottom_field_pic_order_in_frame_present_flag,
                        });
                    }
                }
            }
            _ => {}
        }
    }

    fn lookup(&self, pps_id: u32) -> Option<(SpsInfo, PpsInfo)> {
        let pps = (*self.pps.get(pps_id as usize)?)?;
        let sps = (*self.sps.get(pps.sps_id as usize)?)?;
        Some((sps, pps))
    }
}

/// The slice header fields §7.4.1.2.4 compares to find the first slice of a new picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PicFields {
    frame_num: u32,
    field_pic_flag: bool,
    bottom_field_flag: bool,
    idr_pic_id: Option<u32>,
    pic_order_cnt_lsb: Option<u32>,
    delta_pic_order_cnt_bottom: Option<i32>,
    delta_pic_order_cnt: [Option<i32>; 2],
}

fn read_pic_fields(
    r: &mut BitReader<'_>,
    is_idr: bool,
    sps: SpsInfo,
    pps: PpsInfo,
) -> Result<PicFields, BitsError> {
    if sps.separate_colour_plane_flag {
        r.skip_bits(2)?; // colour_plane_id
    }
    let frame_num = r.read_bits(sps.log2_max_frame_num)?;
    let mut field_pic_flag = false;
    let mut bottom_field_flag = false;
    if !sps.frame_mbs_only_flag {
        field_pic_flag = r.read_flag()?;
        if field_pic_flag {
            bottom_field_flag = r.read_flag()?;
        }
    }
    let idr_pic_id = if is_idr { Some(r.read_ue()?) } else { None };
    let mut f = PicFields {
        frame_num,
        field_pic_flag,
        bottom_field_flag,
        idr_pic_id,
        pic_order_cnt_lsb: None,
        delta_pic_order_cnt_bottom: None,
        delta_pic_order_cnt: [None, None],
    };
    let bottom_present = pps.bottom_field_pic_order_in_frame_present_flag && !field_pic_flag;
    match sps.pic_order_cnt_type {
        0 => {
            f.pic_order_cnt_lsb = Some(r.read_bits(sps.log2_max_pic_order_cnt_lsb)?);
            if bottom_present {
                f.delta_pic_order_cnt_bottom = Some(r.read_se()?);
            }
        }
        1 if !sps.delta_pic_order_always_zero_flag => {
            f.delta_pic_order_cnt[0] = Some(r.read_se()?);
            if bottom_present {
                f.delta_pic_order_cnt[1] = Some(r.read_se()?);
            }
        }
        _ => {}
    }
    Ok(f)
}

/// What the assembler keeps of a VCL NAL unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SliceInfo {
    nal_type: u8,
    nal_ref_idc: u8,
    start: SliceStart,
    /// `None` when the parameter sets are unknown or the rest of the header did not parse.
    pic: Option<PicFields>,
}

/// Parses a slice NAL unit's header as far as the picture-boundary fields. `Err` only for the
/// first three fields; the rest is best effort.
fn parse_slice(nal: &[u8], params: &ParamSets) -> Result<SliceInfo, SliceError> {
    let t = nal_type(nal);
    let rbsp = slice_rbsp(nal);
    let mut r = BitReader::new(&rbsp);
    let start = read_slice_start(&mut r)?;
    let pic = params
        .lookup(start.pps_id)
        .and_then(|(sps, pps)| read_pic_fields(&mut r, t == nal_type::IDR, sps, pps).ok());
    Ok(SliceInfo {
        nal_type: t,
        nal_ref_idc: nal_ref_idc(nal),
        start,
        pic,
    })
}

/// Whether `cur` is the first slice of a new primary coded picture, given the previous slice
/// of the current one (§7.4.1.2.4, plus `first_mb_in_slice == 0`). `None` when it cannot tell
/// because `cur`'s picture fields are missing but `prev`'s are known.
fn starts_new_picture(prev: &SliceInfo, cur: &SliceInfo) -> Option<bool> {
    if cur.start.first_mb_in_slice == 0
        || cur.start.pps_id != prev.start.pps_id
        || (cur.nal_type == nal_type::IDR) != (prev.nal_type == nal_type::IDR)
        || (cur.nal_ref_idc == 0) != (prev.nal_ref_idc == 0)
    {
        return Some(true);
    }
    match (prev.pic, cur.pic) {
        (Some(a), Some(b)) => Some(a != b),
        (None, _) => Some(false),
        (Some(_), None) => None,
    }
}

/// Limit on one access unit's size: several times the largest real frame.
pub const DEFAULT_MAX_AU_BYTES: usize = 32 << 20;
/// Limit on NAL units per access unit: a 1080p picture has at most 8160 slices.
pub const MAX_NALS_PER_AU: usize = 8192;

/// Groups NAL units into access units (§7.4.1.2.3). See the [module docs](self).
///
/// A new AU begins, once the current one has a slice, with an AUD, SPS, PPS, SEI, a NAL unit
/// of type 14..=18, the NAL unit after an end of sequence/stream, or the first slice of a new
/// picture: `first_mb_in_slice == 0`, or (§7.4.1.2.4) a change of PPS id, IDR-ness, zero-ness
/// of `nal_ref_idc`, `frame_num`, field flags, `idr_pic_id` or POC fields — the last ones read
/// using the SPS/PPS seen earlier in the stream, so a picture whose first slice was lost still
/// starts its own AU.
#[derive(Debug, Clone)]
pub struct AuAssembler {
    nals: Vec<Bytes>,
    bytes: usize,
    has_vcl: bool,
    is_idr: bool,
    has_b_slices: bool,
    /// The last slice (with a header) of the current AU.
    last_slice: Option<SliceInfo>,
    /// An end of sequence/stream NAL unit closed the current AU.
    closed: bool,
    params: ParamSets,
    max_au_bytes: usize,
}

impl Default for AuAssembler {
    fn default() -> Self {
        Self::new()
    }
}

/// What pushing a NAL unit would do.
struct Classified {
    nal_type: u8,
    slice: Option<SliceInfo>,
    new_au: bool,
}

impl AuAssembler {
    /// An assembler with the [`DEFAULT_MAX_AU_BYTES`] limit.
    pub fn new() -> Self {
        Self::with_max_au_bytes(DEFAULT_MAX_AU_BYTES)
    }

    /// An assembler that drops access units larger than `max_au_bytes`.
    pub fn with_max_au_bytes(max_au_bytes: usize) -> Self {
        AuAssembler {
            nals: Vec::new(),
            bytes: 0,
            has_vcl: false,
            is_idr: false,
            has_b_slices: false,
            last_slice: None,
            closed: false,
            params: ParamSets::default(),
            max_au_bytes,
        }
    }

    fn classify(&self, nal: &[u8]) -> Result<Classified, H264Error> {
        let header = *nal.first().ok_or(H264Error::EmptyNal)?;
        let t = header & 0x1f;
        if header & 0x80 != 0 {
            return Err(H264Error::ForbiddenZeroBit { nal_type: t });
        }
        let slice = if has_slice_header(t) {
            Some(parse_slice(nal, &self.params).map_err(|e| e.into_h264(t))?)
        } else {
            None
        };
        let new_au = self.has_vcl
            && (self.closed
                || match t {
                    nal_type::SEI..=nal_type::AUD | 14..=18 => true,
                    _ => match (&self.last_slice, &slice) {
                        // Without its picture fields, the slice belongs to the current picture
                        // unless the basic fields say otherwise.
                        (Some(prev), Some(cur)) => starts_new_picture(prev, cur).unwrap_or(false),
                        _ => false,
                    },
                });
        Ok(Classified {
            nal_type: t,
            slice,
            new_au,
        })
    }

    /// Adds one NAL unit (no start code). Returns the previous access unit when this NAL unit
    /// begins a new one. On error the NAL unit is dropped and the state is unchanged, except
    /// for [`H264Error::AccessUnitTooLarge`], which also drops the AU being assembled.
    pub fn push(&mut self, nal: Bytes) -> Result<Option<AccessUnit>, H264Error> {
        let c = self.classify(&nal)?;
        let done = if c.new_au { self.take() } else { None };
        if done.is_none()
            && !self.nals.is_empty()
            && (self.bytes.saturating_add(nal.len()) > self.max_au_bytes
                || self.nals.len() >= MAX_NALS_PER_AU)
        {
            self.reset();
            return Err(H264Error::AccessUnitTooLarge {
                max_bytes: self.max_au_bytes,
                max_nals: MAX_NALS_PER_AU,
            });
        }
        self.params.update(&nal);
        self.bytes += nal.len();
        if c.nal_type == nal_type::IDR {
            self.is_idr = true;
        }
        if is_vcl(c.nal_type) {
            self.has_vcl = true;
        }
        if let Some(s) = c.slice {
            self.has_b_slices |= is_b_slice_type(s.start.slice_type);
            self.last_slice = Some(s);
        }
        if matches!(
            c.nal_type,
            nal_type::END_OF_SEQUENCE | nal_type::END_OF_STREAM
        ) {
            self.closed = true;
        }
        self.nals.push(nal);
        Ok(done)
    }

    /// Whether a NAL unit beginning with `prefix` would certainly begin a new access unit, i.e.
    /// whether [`push`](Self::push) of the whole NAL unit will return the current one. `false`
    /// also when it cannot tell yet from that many bytes.
    fn would_start_new_au(&self, prefix: &[u8]) -> bool {
        if !self.has_vcl {
            return false;
        }
        let Some(&header) = prefix.first() else {
            return false;
        };
        if header & 0x80 != 0 {
            return false;
        }
        let t = header & 0x1f;
        // A slice whose header start does not parse yet may still be an error once complete,
        // and push drops an erroneous NAL unit without ending the AU: wait for it.
        let slice = if has_slice_header(t) {
            match parse_slice(prefix, &self.params) {
                Ok(s) => Some(s),
                Err(_) => return false,
            }
        } else {
            None
        };
        if self.closed || matches!(t, nal_type::SEI..=nal_type::AUD | 14..=18) {
            return true;
        }
        match (&self.last_slice, &slice) {
            (Some(prev), Some(cur)) => starts_new_picture(prev, cur) == Some(true),
            _ => false,
        }
    }

    /// The access unit being assembled, if it holds a picture; resets the assembler for the
    /// next one.
    fn take(&mut self) -> Option<AccessUnit> {
        if !self.has_vcl {
            return None;
        }
        let au = AccessUnit {
            nals: std::mem::take(&mut self.nals),
            is_idr: self.is_idr,
            has_b_slices: self.has_b_slices,
        };
        self.reset();
        Some(au)
    }

    fn reset(&mut self) {
        self.nals.clear();
        self.bytes = 0;
        self.has_vcl = false;
        self.is_idr = false;
        self.has_b_slices = false;
        self.last_slice = None;
        self.closed = false;
    }

    /// End of stream: the access unit being assembled, if it holds a picture. Parameter sets or
    /// SEI after the last picture are discarded.
    pub fn flush(&mut self) -> Option<AccessUnit> {
        let au = self.take();
        self.reset();
        au
    }
}

/// Annex-B bytes in, access units out: [`NalSplitter`] + [`AuAssembler`].
///
/// ```text
/// reader.push(bytes);                              // as they arrive
/// while let Some(au) = reader.next_au() { … }     // Ok(AccessUnit) or Err(bad NAL, dropped)
/// reader.finish();                                 // at end of stream, then drain next_au()
/// ```
#[derive(Debug, Default)]
pub struct AnnexBReader {
    splitter: NalSplitter,
    assembler: AuAssembler,
    finishing: bool,
}

impl AnnexBReader {
    /// A reader with default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends stream bytes, split anywhere.
    pub fn push(&mut self, data: &[u8]) {
        self.splitter.push(data);
    }

    /// Marks the end of the stream: the following [`next_au`](Self::next_au) calls return what
    /// is still buffered, including the last access unit. A later `push` starts a new stream.
    pub fn finish(&mut self) {
        self.finishing = true;
    }

    /// The next complete access unit, or an error for a NAL unit that was dropped; `None`
    /// until more bytes arrive.
    pub fn next_au(&mut self) -> Option<Result<AccessUnit, H264Error>> {
        loop {
            let nal = if self.finishing {
                self.splitter.flush()
            } else {
                self.splitter.pop()
            };
            if let Some(nal) = nal {
                match self.assembler.push(nal) {
                    Ok(Some(au)) => return Some(Ok(au)),
                    Ok(None) => continue,
                    Err(e) => return Some(Err(e)),
                }
            }
            if self.finishing {
                self.finishing = false;
                return self.assembler.flush().map(Ok);
            }
            // Release the current AU as soon as the next NAL unit's first bytes show it starts
            // a new one (see the module docs on latency).
            let prefix = self.splitter.pending_prefix()?;
            if self.assembler.would_start_new_au(prefix) {
                return self.assembler.take().map(Ok);
            }
            return None;
        }
    }

    /// The splitter, for its counters.
    pub fn splitter(&self) -> &NalSplitter {
        &self.splitter
    }
}

/// Splits AVCC data (each NAL unit preceded by its big-endian length in `length_size` bytes,
/// 1, 2 or 4: the avcC's `lengthSizeMinusOne + 1`) into NAL units. Zero-length entries are
/// skipped.
pub fn avcc_nals(data: &[u8], length_size: usize) -> Result<Vec<&[u8]>, H264Error> {
    if !matches!(length_size, 1 | 2 | 4) {
        return Err(H264Error::AvccLengthSize { length_size });
    }
    let mut nals = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        let available = data.len() - offset;
        let truncated = |needed| H264Error::AvccTruncated {
            offset,
            needed,
            available,
        };
        let len_bytes = data
            .get(offset..offset + length_size)
            .ok_or(truncated(length_size))?;
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let start = offset + length_size;
        let nal = start
            .checked_add(len)
            .and_then(|end| data.get(start..end))
            .ok_or(truncated(length_size.saturating_add(len)))?;
        if !nal.is_empty() {
            nals.push(nal);
        }
        offset = start + len;
    }
    Ok(nals)
}

/// Writes NAL units in AVCC form with 4-byte lengths (`lengthSizeMinusOne = 3`), as an MP4
/// sample. A NAL unit over 4 GiB cannot be represented and is not expected.
pub fn to_avcc<T: AsRef<[u8]>>(nals: &[T]) -> Vec<u8> {
    let total: usize = nals.iter().map(|n| 4 + n.as_ref().len()).sum();
    let mut out = Vec::with_capacity(total);
    for nal in nals {
        let nal = nal.as_ref();
        let len = u32::try_from(nal.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::annexb::split_annexb;

    const MAIN_BFRAMES_AUD_2SLICES: &[u8] =
        include_bytes!("../tests/fixtures/x264_main_bframes_aud_2slices.h264");
    const BASELINE_ZEROLATENCY: &[u8] =
        include_bytes!("../tests/fixtures/x264_baseline_zerolatency.h264");

    /// Whole-buffer reference: split, assemble, flush.
    fn assemble(stream: &[u8]) -> Vec<AccessUnit> {
        let mut a = AuAssembler::new();
        let mut out = Vec::new();
        for nal in split_annexb(stream) {
            out.extend(a.push(nal).unwrap());
        }
        out.extend(a.flush());
        out
    }

    /// Streaming reference: AnnexBReader fed in `chunk`-byte pieces.
    fn read_chunked(stream: &[u8], chunk: usize) -> Vec<AccessUnit> {
        let mut r = AnnexBReader::new();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            r.push(piece);
            while let Some(au) = r.next_au() {
                out.push(au.unwrap());
            }
        }
        r.finish();
        while let Some(au) = r.next_au() {
            out.push(au.unwrap());
        }
        out
    }

    /// A slice NAL unit with the given header fields, pps 0, and nothing after them.
    fn slice(header: u8, first_mb_in_slice: u32, slice_type: u32) -> Bytes {
        use crate::bits::{rbsp_to_nal, BitWriter};
        let mut w = BitWriter::new();
        w.write_ue(first_mb_in_slice);
        w.write_ue(slice_type);
        w.write_ue(0);
        w.write_trailing_bits();
        let mut nal = vec![header];
        nal.extend(rbsp_to_nal(&w.into_bytes()));
        Bytes::from(nal)
    }

    fn types(au: &AccessUnit) -> Vec<u8> {
        au.nals.iter().map(|n| nal_type(n)).collect()
    }

    /// x264 with AUDs, two slices per picture, B-frames and SPS/PPS before each IDR: ten
    /// pictures must give ten AUs, each starting at its AUD and holding both slices.
    #[test]
    fn x264_stream_with_auds_and_two_slices_gives_one_au_per_frame() {
        let aus = assemble(MAIN_BFRAMES_AUD_2SLICES);
        assert_eq!(aus.len(), 10);
        assert_eq!(types(&aus[0]), [9, 7, 8, 6, 5, 5]);
        for (i, au) in aus.iter().enumerate() {
            assert_eq!(au.is_idr, i % 5 == 0, "AU {i}");
            assert_eq!(types(au)[0], nal_type::AUD, "AU {i} starts with its AUD");
            assert_eq!(au.nals.iter().filter(|n| is_vcl(nal_type(n))).count(), 2);
        }
        // Decode order I P B B | I P B B ...: ffprobe shows I B B P P in display order.
        assert!(aus.iter().any(|a| a.has_b_slices));
        assert!(!aus[0].has_b_slices);
        assert!(aus[0].sps().is_some() && aus[0].pps().is_some());
        assert!(aus[1].sps().is_none());
    }

    /// No AUDs, one slice per frame: boundaries come from first_mb_in_slice alone, and the
    /// SEI/SPS/PPS before an IDR start its AU rather than ending the previous one.
    #[test]
    fn x264_stream_without_auds_splits_on_first_mb_and_parameter_sets() {
        let aus = assemble(BASELINE_ZEROLATENCY);
        assert_eq!(aus.len(), 6);
        assert_eq!(types(&aus[0]), [7, 8, 6, 5]);
        assert_eq!(types(&aus[1]), [1]);
        assert_eq!(types(&aus[3]), [7, 8, 5]);
        assert_eq!(
            aus.iter().map(|a| a.is_idr).collect::<Vec<_>>(),
            [true, false, false, true, false, false]
        );
        assert!(aus.iter().all(|a| !a.has_b_slices));
    }

    /// Pipes deliver any chunking; the streaming reader (with its early release) must agree
    /// with the whole-buffer assembly for every chunk size.
    #[test]
    fn streaming_reader_matches_whole_buffer_assembly_at_any_chunking() {
        for stream in [MAIN_BFRAMES_AUD_2SLICES, BASELINE_ZEROLATENCY] {
            let expected = assemble(stream);
            for chunk in [1, 2, 3, 5, 7, 16, 100, 1000, stream.len()] {
                assert_eq!(read_chunked(stream, chunk), expected, "chunk {chunk}");
            }
        }
    }

    /// The latency promise: an AU comes out once the next AU's first bytes are in, without
    /// waiting for the next start code (which, with one slice per frame and no AUD, is a whole
    /// frame later).
    #[test]
    fn an_au_is_released_when_the_next_slice_begins() {
        let nals = split_annexb(BASELINE_ZEROLATENCY);
        let mut r = AnnexBReader::new();
        // Feed SPS, PPS, SEI, IDR and P, each behind a start code, then only the first bytes
        // of the second P slice.
        for nal in &nals[..5] {
            r.push(&[0, 0, 0, 1]);
            r.push(nal);
        }
        r.push(&[0, 0, 0, 1]);
        r.push(&nals[5][..4]);
        let first = r.next_au().unwrap().unwrap();
        assert!(first.is_idr);
        let second = r.next_au().unwrap().unwrap();
        assert_eq!(
            types(&second),
            [1],
            "the P frame whose end we only inferred"
        );
        assert!(r.next_au().is_none());
        // The rest of that slice arrives: nothing is duplicated or lost.
        r.push(&nals[5][4..]);
        r.finish();
        let third = r.next_au().unwrap().unwrap();
        assert_eq!(third.nals, vec![nals[5].clone()]);
    }

    /// SEI, SPS, PPS and AUD after a picture begin the next AU; repeated SPS/PPS before an IDR
    /// stay with it.
    #[test]
    fn non_vcl_nals_after_a_picture_begin_the_next_au() {
        let sps = Bytes::from_static(&[0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xf6, 0xc0]);
        let pps = Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80]);
        let idr = Bytes::from_static(&[0x65, 0x88, 0x84]); // first_mb 0, slice_type 7 (I)
        let p = Bytes::from_static(&[0x41, 0x9a, 0x02]); // first_mb 0, slice_type 5 (P)
        let sei = Bytes::from_static(&[0x06, 0x05, 0x01, 0xaa, 0x80]);
        let aud = Bytes::from_static(&[0x09, 0xf0]);
        let mut a = AuAssembler::new();
        let mut aus = Vec::new();
        for nal in [
            sps.clone(),
            pps.clone(),
            idr.clone(),
            sei.clone(),
            p.clone(),
            aud.clone(),
            p.clone(),
            sps.clone(),
            pps.clone(),
            sps.clone(),
            pps.clone(),
            idr.clone(),
        ] {
            aus.extend(a.push(nal).unwrap());
        }
        aus.extend(a.flush());
        let got: Vec<Vec<u8>> = aus.iter().map(types).collect();
        assert_eq!(
            got,
            vec![vec![7, 8, 5], vec![6, 1], vec![9, 1], vec![7, 8, 7, 8, 5]]
        );
    }

    /// Bad NALs are reported and dropped; the AU around them carries on as if they never came.
    #[test]
    fn bad_nals_are_reported_dropped_and_do_not_disturb_the_au() {
        let mut a = AuAssembler::new();
        a.push(Bytes::from_static(&[0x65, 0x88, 0x84])).unwrap();
        assert_eq!(a.push(Bytes::new()), Err(H264Error::EmptyNal));
        assert_eq!(
            a.push(Bytes::from_static(&[0xe5, 0x88])),
            Err(H264Error::ForbiddenZeroBit { nal_type: 5 })
        );
        // A slice header cut before slice_type: only first_mb_in_slice's bits are there.
        assert!(matches!(
            a.push(Bytes::from_static(&[0x41, 0x00])),
            Err(H264Error::SliceHeader { nal_type: 1, .. })
        ));
        assert!(matches!(
            a.push(Bytes::from_static(&[0x41])),
            Err(H264Error::SliceHeader { nal_type: 1, .. })
        ));
        // slice_type 10 does not exist: ue(10) = 0001011.
        assert!(matches!(
            a.push(Bytes::from_static(&[0x41, 0x80 | 0b000_1011 >> 1, 0x80])),
            Err(H264Error::SliceHeaderOutOfRange {
                field: "slice_type",
                ..
            })
        ));
        // Second slice of the same picture (first_mb 1), then the next picture.
        assert_eq!(a.push(slice(0x65, 1, 7)).unwrap(), None);
        let au = a
            .push(Bytes::from_static(&[0x41, 0x9a, 0x02]))
            .unwrap()
            .unwrap();
        assert_eq!(types(&au), [5, 5]);
        assert!(au.is_idr);
    }

    /// A picture whose first slice was lost (packet loss upstream) must still get its own AU:
    /// frame_num, read with the SPS seen earlier, shows the change.
    #[test]
    fn a_new_frame_num_starts_a_new_au_even_without_first_mb_zero() {
        let nals = split_annexb(BASELINE_ZEROLATENCY);
        // SPS, PPS, SEI, IDR, P(frame_num 1), P(frame_num 2): first_mb of the P slices is 0.
        // Rewrite the second P's first_mb to 5 by building a slice header from the spec.
        use crate::bits::{rbsp_to_nal, BitWriter};
        let sps = parse_sps(&nals[0]).unwrap();
        let mut w = BitWriter::new();
        w.write_ue(5); // first_mb_in_slice
        w.write_ue(5); // P
        w.write_ue(0); // pps id
        w.write_bits(sps.log2_max_frame_num(), 2); // frame_num 2
        w.write_trailing_bits();
        let mut p2 = vec![0x41];
        p2.extend(rbsp_to_nal(&w.into_bytes()));
        let mut a = AuAssembler::new();
        let mut aus = Vec::new();
        for nal in nals[..5].iter().cloned().chain([Bytes::from(p2)]) {
            aus.extend(a.push(nal).unwrap());
        }
        aus.extend(a.flush());
        assert_eq!(aus.len(), 3, "IDR, P1, P2 (headless)");
    }

    /// End of sequence closes the AU it belongs to; whatever follows begins a new one.
    #[test]
    fn end_of_sequence_closes_its_au() {
        let mut a = AuAssembler::new();
        a.push(Bytes::from_static(&[0x65, 0x88, 0x84])).unwrap();
        a.push(Bytes::from_static(&[0x0a])).unwrap();
        let au = a.push(slice(0x65, 1, 7)).unwrap().unwrap();
        assert_eq!(types(&au), [5, 10]);
    }

    /// Early release must not get ahead of an error. After an end of sequence any NAL unit
    /// begins a new AU, but a slice whose header turns out bad is dropped and the AU stays
    /// open; the streaming reader must report the same sequence as whole-buffer assembly
    /// (found by the au_assembler fuzz target).
    #[test]
    fn early_release_waits_for_a_slice_header_that_may_be_bad() {
        let bad = Bytes::from_static(&[0x41, 0x80 | 0b000_1011 >> 1, 0x80]); // slice_type 10
        let nals = [
            slice(0x65, 0, 7),
            Bytes::from_static(&[0x0a]),
            bad,
            slice(0x41, 0, 5),
        ];
        let mut stream = Vec::new();
        for n in &nals {
            stream.extend_from_slice(&[0, 0, 1]);
            stream.extend_from_slice(n);
        }
        let mut a = AuAssembler::new();
        let mut whole = Vec::new();
        for n in nals {
            match a.push(n) {
                Ok(Some(au)) => whole.push(Ok(au)),
                Ok(None) => {}
                Err(e) => whole.push(Err(e)),
            }
        }
        whole.extend(a.flush().map(Ok));
        assert!(
            whole[0].is_err(),
            "the error comes before the AU it interrupted"
        );
        for chunk in 1..stream.len() {
            let mut r = AnnexBReader::new();
            let mut streamed = Vec::new();
            for piece in stream.chunks(chunk) {
                r.push(piece);
                streamed.extend(std::iter::from_fn(|| r.next_au()));
            }
            r.finish();
            streamed.extend(std::iter::from_fn(|| r.next_au()));
            assert_eq!(streamed, whole, "chunk {chunk}");
        }
    }

    /// A stream that never sends a picture must not grow without bound.
    #[test]
    fn an_oversized_au_is_dropped_with_an_error() {
        let mut a = AuAssembler::with_max_au_bytes(100);
        a.push(Bytes::from_static(&[0x65, 0x88, 0x84])).unwrap();
        let filler = Bytes::from(vec![0x0c; 60]);
        a.push(filler.clone()).unwrap();
        assert!(matches!(
            a.push(filler.clone()),
            Err(H264Error::AccessUnitTooLarge { .. })
        ));
        assert_eq!(a.flush(), None, "the AU was dropped");
        a.push(Bytes::from_static(&[0x65, 0x88, 0x84])).unwrap();
        assert_eq!(a.flush().unwrap().nals.len(), 1, "and it keeps working");
    }

    /// from_nals is what testsrc uses; it must agree with the assembler's flags.
    #[test]
    fn from_nals_computes_the_same_flags_as_the_assembler() {
        for au in assemble(MAIN_BFRAMES_AUD_2SLICES)
            .into_iter()
            .chain(assemble(BASELINE_ZEROLATENCY))
        {
            assert_eq!(AccessUnit::from_nals(au.nals.clone()), au);
        }
    }

    /// Trailing parameter sets with no picture after them are not an access unit.
    #[test]
    fn flush_returns_only_aus_with_a_picture() {
        let mut a = AuAssembler::new();
        a.push(Bytes::from_static(&[0x09, 0xf0])).unwrap();
        assert_eq!(a.flush(), None);
        let mut r = AnnexBReader::new();
        r.push(&[
            0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x65, 0x88, 0x84, 0, 0, 1, 0x09, 0xf0,
        ]);
        assert!(r.next_au().unwrap().unwrap().is_idr, "released at the AUD");
        r.finish();
        assert!(r.next_au().is_none());
    }

    /// AVCC round trip at every length size, and the truncations a broken MP4 produces.
    #[test]
    fn avcc_round_trips_and_reports_truncation() {
        let nals: Vec<Bytes> = vec![
            Bytes::from_static(&[0x67, 1, 2, 3]),
            Bytes::from_static(&[0x68, 4]),
            Bytes::from(vec![0x65; 300]),
        ];
        let avcc = to_avcc(&nals);
        assert_eq!(&avcc[..4], &[0, 0, 0, 4]);
        assert_eq!(avcc_nals(&avcc, 4).unwrap(), nals);
        for size in [1usize, 2] {
            let mut data = Vec::new();
            for n in &nals[..2] {
                data.extend_from_slice(&n.len().to_be_bytes()[8 - size..]);
                data.extend_from_slice(n);
            }
            assert_eq!(avcc_nals(&data, size).unwrap(), nals[..2].to_vec());
        }
        assert_eq!(
            avcc_nals(&avcc[..avcc.len() - 1], 4),
            Err(H264Error::AvccTruncated {
                offset: 14,
                needed: 304,
                available: 303
            })
        );
        assert_eq!(
            avcc_nals(&avcc[..2], 4),
            Err(H264Error::AvccTruncated {
                offset: 0,
                needed: 4,
                available: 2
            })
        );
        assert_eq!(
            avcc_nals(&avcc, 3),
            Err(H264Error::AvccLengthSize { length_size: 3 })
        );
        assert_eq!(avcc_nals(&[0, 0, 0, 0], 4).unwrap(), Vec::<&[u8]>::new());
    }

    /// nal_type and friends on the edge cases the segmenter relies on.
    #[test]
    fn nal_header_helpers() {
        assert_eq!(nal_type(&[0x67]), nal_type::SPS);
        assert_eq!(nal_type(&[]), 0);
        assert_eq!(nal_ref_idc(&[0x67]), 3);
        assert_eq!(nal_ref_idc(&[0x27]), 1);
        assert!(is_vcl(nal_type::IDR) && !is_vcl(nal_type::SEI));
    }
}
