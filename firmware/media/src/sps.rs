//! Sequence and picture parameter sets: parsing (ITU-T H.264 §7.3.2.1.1, §7.3.2.2, Annex E.1.1)
//! and the low-delay VUI rewrite.
//!
//! # Why rewrite the SPS
//!
//! A decoder may output a picture only once it knows no later picture in decode order comes
//! before it in display order. Without `bitstream_restriction` in the VUI, it must assume the
//! worst — up to `MaxDpbFrames` (16) pictures of reordering — and Chrome's H.264 decoder may do
//! exactly that: hold back up to 16 frames before showing the first, over half a second at
//! 30 fps, for a stream that has no B-frames at all. IP camera firmware that omits the VUI (or
//! its restriction) hits this; OpenIPC majestic-webui PR #394 fixed it by adding
//! `bitstream_restriction`. [`rewrite_low_delay`] re-emits the SPS with
//! `bitstream_restriction_flag = 1` and `max_num_reorder_frames = 0`, leaving every other field
//! bit-exact. (x264, openh264 and the Raspberry Pi's encoder already write the restriction; the
//! fixtures below show which encoders do not.)
//!
//! Only a stream without reordering may say so: no B-frames (see
//! [`AccessUnit::has_b_slices`](crate::h264::AccessUnit::has_b_slices)), output order equal to
//! decode order. The caller checks that; this module only edits the syntax.
//!
//! # Layout of an SPS NAL unit
//!
//! ```text
//!  header | profile_idc constraint_flags level_idc | sps_id [chroma, bit depth, scaling lists]
//!         | log2_max_frame_num, pic_order_cnt_type [...] | max_num_ref_frames ... cropping
//!         | vui_parameters_present_flag [ VUI: aspect, overscan, video signal, chroma loc,
//!         |   timing, NAL HRD, VCL HRD, low_delay_hrd, pic_struct, bitstream_restriction ]
//!         | rbsp_trailing_bits
//! ```
//!
//! The rewrite copies every bit up to `bitstream_restriction_flag` verbatim (HRD parameters
//! included) and writes a new restriction and trailing bits.

use thiserror::Error;

use crate::bits::{nal_to_rbsp, rbsp_to_nal, BitReader, BitWriter, BitsError};

/// NAL unit type of a sequence parameter set.
const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
const NAL_PPS: u8 = 8;

/// What can go wrong parsing a parameter set.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SpsError {
    /// The NAL unit has no bytes.
    #[error("empty NAL unit")]
    Empty,
    /// The NAL header's forbidden_zero_bit is set: not H.264, or corrupted.
    #[error("forbidden_zero_bit is set in NAL header {header:#04x}")]
    ForbiddenZeroBit {
        /// The NAL header byte.
        header: u8,
    },
    /// A NAL unit of another type was passed.
    #[error("expected NAL unit type {expected}, got {actual}")]
    WrongNalType {
        /// The type this parser handles.
        expected: u8,
        /// The type found.
        actual: u8,
    },
    /// Truncated or malformed bits (positions count RBSP bits after the NAL header).
    #[error("malformed parameter set: {0}")]
    Bits(#[from] BitsError),
    /// A field outside the range the spec allows.
    #[error("{field} = {value} is out of range")]
    OutOfRange {
        /// The syntax element, as the spec names it.
        field: &'static str,
        /// Its value.
        value: i64,
    },
}

/// `pic_order_cnt_type` and the fields that go with it (§7.4.2.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PicOrderCnt {
    /// POC from `pic_order_cnt_lsb` in each slice header.
    Type0 {
        /// `log2_max_pic_order_cnt_lsb_minus4` (0..=12).
        log2_max_pic_order_cnt_lsb_minus4: u32,
    },
    /// POC from frame_num and a cycle of expected deltas.
    Type1 {
        /// `delta_pic_order_always_zero_flag`.
        delta_pic_order_always_zero_flag: bool,
        /// `offset_for_non_ref_pic`.
        offset_for_non_ref_pic: i32,
        /// `offset_for_top_to_bottom_field`.
        offset_for_top_to_bottom_field: i32,
        /// `offset_for_ref_frame[]` (at most 255 entries).
        offset_for_ref_frame: Vec<i32>,
    },
    /// POC follows decode order: no reordering is possible.
    Type2,
}

/// `frame_crop_*_offset`, in crop units (§7.4.2.1.1: 2 luma samples for 4:2:0, etc.).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameCropping {
    /// `frame_crop_left_offset`.
    pub left: u32,
    /// `frame_crop_right_offset`.
    pub right: u32,
    /// `frame_crop_top_offset`.
    pub top: u32,
    /// `frame_crop_bottom_offset`.
    pub bottom: u32,
}

/// Sample aspect ratio (E.2.1, Table E-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AspectRatio {
    /// `aspect_ratio_idc`; 255 is `Extended_SAR`.
    pub aspect_ratio_idc: u8,
    /// SAR width: from Table E-1, or `sar_width` for Extended_SAR; 0 when unspecified/reserved.
    pub sar_width: u16,
    /// SAR height, likewise.
    pub sar_height: u16,
}

/// `aspect_ratio_idc` value meaning the SAR follows explicitly.
pub const EXTENDED_SAR: u8 = 255;

/// Table E-1, indexed by `aspect_ratio_idc` 1..=16.
const SAR_TABLE: [(u16, u16); 17] = [
    (0, 0),
    (1, 1),
    (12, 11),
    (10, 11),
    (16, 11),
    (40, 33),
    (24, 11),
    (20, 11),
    (32, 11),
    (80, 33),
    (18, 11),
    (15, 11),
    (64, 33),
    (160, 99),
    (4, 3),
    (3, 2),
    (2, 1),
];

/// `colour_description` (E.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColourDescription {
    /// `colour_primaries` (1 = BT.709).
    pub colour_primaries: u8,
    /// `transfer_characteristics`.
    pub transfer_characteristics: u8,
    /// `matrix_coefficients`.
    pub matrix_coefficients: u8,
}

/// `video_signal_type` (E.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoSignalType {
    /// `video_format` (5 = unspecified).
    pub video_format: u8,
    /// `video_full_range_flag`.
    pub video_full_range_flag: bool,
    /// Present when `colour_description_present_flag` is set.
    pub colour_description: Option<ColourDescription>,
}

/// `chroma_loc_info` (E.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChromaLoc {
    /// `chroma_sample_loc_type_top_field` (0..=5).
    pub top_field: u32,
    /// `chroma_sample_loc_type_bottom_field` (0..=5).
    pub bottom_field: u32,
}

/// `timing_info` (E.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimingInfo {
    /// `num_units_in_tick`.
    pub num_units_in_tick: u32,
    /// `time_scale`, in Hz.
    pub time_scale: u32,
    /// `fixed_frame_rate_flag`.
    pub fixed_frame_rate_flag: bool,
}

/// One CPB specification in `hrd_parameters()` (E.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpbSpec {
    /// `bit_rate_value_minus1[SchedSelIdx]`.
    pub bit_rate_value_minus1: u32,
    /// `cpb_size_value_minus1[SchedSelIdx]`.
    pub cpb_size_value_minus1: u32,
    /// `cbr_flag[SchedSelIdx]`.
    pub cbr_flag: bool,
}

/// `hrd_parameters()` (E.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HrdParameters {
    /// `bit_rate_scale`.
    pub bit_rate_scale: u8,
    /// `cpb_size_scale`.
    pub cpb_size_scale: u8,
    /// One entry per `SchedSelIdx` (`cpb_cnt_minus1 + 1`, at most 32).
    pub cpbs: Vec<CpbSpec>,
    /// `initial_cpb_removal_delay_length_minus1`.
    pub initial_cpb_removal_delay_length_minus1: u8,
    /// `cpb_removal_delay_length_minus1`.
    pub cpb_removal_delay_length_minus1: u8,
    /// `dpb_output_delay_length_minus1`.
    pub dpb_output_delay_length_minus1: u8,
    /// `time_offset_length`.
    pub time_offset_length: u8,
}

/// `bitstream_restriction` fields of the VUI (E.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitstreamRestriction {
    /// `motion_vectors_over_pic_boundaries_flag`.
    pub motion_vectors_over_pic_boundaries_flag: bool,
    /// `max_bytes_per_pic_denom`.
    pub max_bytes_per_pic_denom: u32,
    /// `max_bits_per_mb_denom`.
    pub max_bits_per_mb_denom: u32,
    /// `log2_max_mv_length_horizontal`.
    pub log2_max_mv_length_horizontal: u32,
    /// `log2_max_mv_length_vertical`.
    pub log2_max_mv_length_vertical: u32,
    /// `max_num_reorder_frames`: 0 lets a decoder output each frame as soon as it is decoded.
    pub max_num_reorder_frames: u32,
    /// `max_dec_frame_buffering`.
    pub max_dec_frame_buffering: u32,
}

impl BitstreamRestriction {
    /// The values §E.2.1 infers when `bitstream_restriction_flag` is 0, except the two the
    /// low-delay rewrite sets. `log2_max_mv_length_*` are 15, the inferred value: the current
    /// edition limits them to 0..=15, and strict parsers reject the 16 older editions allowed.
    fn inferred(max_dec_frame_buffering: u32) -> Self {
        BitstreamRestriction {
            motion_vectors_over_pic_boundaries_flag: true,
            max_bytes_per_pic_denom: 2,
            max_bits_per_mb_denom: 1,
            log2_max_mv_length_horizontal: 15,
            log2_max_mv_length_vertical: 15,
            max_num_reorder_frames: 0,
            max_dec_frame_buffering,
        }
    }
}

/// `vui_parameters()` (E.1.1). Absent parts are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vui {
    /// `aspect_ratio_info`.
    pub aspect_ratio: Option<AspectRatio>,
    /// `overscan_appropriate_flag`, when `overscan_info_present_flag`.
    pub overscan_appropriate: Option<bool>,
    /// `video_signal_type`.
    pub video_signal_type: Option<VideoSignalType>,
    /// `chroma_loc_info`.
    pub chroma_loc: Option<ChromaLoc>,
    /// `timing_info`.
    pub timing: Option<TimingInfo>,
    /// NAL HRD parameters.
    pub nal_hrd: Option<HrdParameters>,
    /// VCL HRD parameters.
    pub vcl_hrd: Option<HrdParameters>,
    /// `low_delay_hrd_flag`, present when either HRD is.
    pub low_delay_hrd_flag: Option<bool>,
    /// `pic_struct_present_flag`.
    pub pic_struct_present_flag: bool,
    /// `bitstream_restriction`.
    pub bitstream_restriction: Option<BitstreamRestriction>,
}

/// A parsed sequence parameter set (§7.3.2.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sps {
    /// `profile_idc` (66 baseline, 77 main, 100 high, …).
    pub profile_idc: u8,
    /// The byte after `profile_idc`: `constraint_set0_flag` (MSB) … `constraint_set5_flag`,
    /// `reserved_zero_2bits`.
    pub constraint_flags: u8,
    /// `level_idc` (31 = level 3.1).
    pub level_idc: u8,
    /// `seq_parameter_set_id` (0..=31).
    pub seq_parameter_set_id: u32,
    /// `chroma_format_idc` (1 = 4:2:0, inferred when absent).
    pub chroma_format_idc: u32,
    /// `separate_colour_plane_flag`.
    pub separate_colour_plane_flag: bool,
    /// `bit_depth_luma_minus8`.
    pub bit_depth_luma_minus8: u32,
    /// `bit_depth_chroma_minus8`.
    pub bit_depth_chroma_minus8: u32,
    /// `qpprime_y_zero_transform_bypass_flag`.
    pub qpprime_y_zero_transform_bypass_flag: bool,
    /// `seq_scaling_matrix_present_flag` (the lists are skipped, not kept).
    pub seq_scaling_matrix_present_flag: bool,
    /// `log2_max_frame_num_minus4` (0..=12).
    pub log2_max_frame_num_minus4: u32,
    /// `pic_order_cnt_type` and its fields.
    pub pic_order_cnt: PicOrderCnt,
    /// `max_num_ref_frames` (0..=16).
    pub max_num_ref_frames: u32,
    /// `gaps_in_frame_num_value_allowed_flag`.
    pub gaps_in_frame_num_value_allowed_flag: bool,
    /// `pic_width_in_mbs_minus1`.
    pub pic_width_in_mbs_minus1: u32,
    /// `pic_height_in_map_units_minus1`.
    pub pic_height_in_map_units_minus1: u32,
    /// `frame_mbs_only_flag`: 0 means fields (interlaced) may occur.
    pub frame_mbs_only_flag: bool,
    /// `mb_adaptive_frame_field_flag`.
    pub mb_adaptive_frame_field_flag: bool,
    /// `direct_8x8_inference_flag`.
    pub direct_8x8_inference_flag: bool,
    /// `frame_cropping`, when `frame_cropping_flag`.
    pub frame_cropping: Option<FrameCropping>,
    /// `vui_parameters`, when `vui_parameters_present_flag`.
    pub vui: Option<Vui>,
    /// Display width in luma samples, after cropping.
    pub width: u32,
    /// Display height in luma samples (frame, not field), after cropping.
    pub height: u32,
}

impl Sps {
    /// RFC 6381 codec string, `avc1.PPCCLL` in lowercase hex: profile_idc, constraint flags,
    /// level_idc — what `MediaSource.isTypeSupported` and an HLS `CODECS` attribute want.
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile_idc, self.constraint_flags, self.level_idc
        )
    }

    /// `ChromaArrayType` (§7.4.2.1.1): 0 for monochrome or separate colour planes.
    pub fn chroma_array_type(&self) -> u32 {
        if self.separate_colour_plane_flag {
            0
        } else {
            self.chroma_format_idc
        }
    }

    /// `log2(MaxFrameNum)`: the width of `frame_num` in slice headers.
    pub fn log2_max_frame_num(&self) -> u32 {
        self.log2_max_frame_num_minus4 + 4
    }

    /// Frame rate from the VUI timing, `time_scale / (2 * num_units_in_tick)` (one tick is a
    /// field, E.2.1), as a fraction `(numerator, denominator)`. `None` without timing info.
    pub fn frame_rate_ratio(&self) -> Option<(u64, u64)> {
        let t = self.vui.as_ref()?.timing?;
        if t.num_units_in_tick == 0 || t.time_scale == 0 {
            return None;
        }
        Some((u64::from(t.time_scale), 2 * u64::from(t.num_units_in_tick)))
    }

    /// Frame rate in frames per second from the VUI timing; `None` without timing info.
    pub fn frame_rate(&self) -> Option<f64> {
        let (num, den) = self.frame_rate_ratio()?;
        Some(num as f64 / den as f64)
    }

    /// `max_num_reorder_frames` from the VUI's bitstream restriction; `None` when absent (a
    /// decoder must then assume up to 16 frames of reordering).
    pub fn max_num_reorder_frames(&self) -> Option<u32> {
        Some(
            self.vui
                .as_ref()?
                .bitstream_restriction?
                .max_num_reorder_frames,
        )
    }

    /// `max_dec_frame_buffering` from the VUI's bitstream restriction, when present.
    pub fn max_dec_frame_buffering(&self) -> Option<u32> {
        Some(
            self.vui
                .as_ref()?
                .bitstream_restriction?
                .max_dec_frame_buffering,
        )
    }

    /// Whether two SPSs are equal in every field except the VUI's bitstream restriction (an
    /// absent VUI counts as an empty one): what [`rewrite_low_delay`] promises to keep.
    pub fn eq_ignoring_bitstream_restriction(&self, other: &Sps) -> bool {
        fn normalized(s: &Sps) -> Sps {
            let mut s = s.clone();
            let mut vui = s.vui.take().unwrap_or_default();
            vui.bitstream_restriction = None;
            s.vui = Some(vui);
            s
        }
        normalized(self) == normalized(other)
    }
}

/// A parsed picture parameter set: only the leading fields (§7.3.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pps {
    /// `pic_parameter_set_id` (0..=255).
    pub pic_parameter_set_id: u32,
    /// `seq_parameter_set_id` (0..=31).
    pub seq_parameter_set_id: u32,
    /// `entropy_coding_mode_flag`: CABAC.
    pub entropy_coding_mode_flag: bool,
    /// `bottom_field_pic_order_in_frame_present_flag`: slice headers carry
    /// `delta_pic_order_cnt_bottom`.
    pub bottom_field_pic_order_in_frame_present_flag: bool,
}

/// Checks the NAL header and returns the RBSP after it.
fn rbsp_of(nal: &[u8], expected: u8) -> Result<Vec<u8>, SpsError> {
    let (&header, payload) = nal.split_first().ok_or(SpsError::Empty)?;
    if header & 0x80 != 0 {
        return Err(SpsError::ForbiddenZeroBit { header });
    }
    let actual = header & 0x1f;
    if actual != expected {
        return Err(SpsError::WrongNalType { expected, actual });
    }
    Ok(nal_to_rbsp(payload))
}

fn check(field: &'static str, value: u32, max: u32) -> Result<u32, SpsError> {
    if value > max {
        return Err(SpsError::OutOfRange {
            field,
            value: i64::from(value),
        });
    }
    Ok(value)
}

/// Parses a picture parameter set NAL unit (header included).
pub fn parse_pps(nal: &[u8]) -> Result<Pps, SpsError> {
    let rbsp = rbsp_of(nal, NAL_PPS)?;
    let mut r = BitReader::new(&rbsp);
    Ok(Pps {
        pic_parameter_set_id: check("pic_parameter_set_id", r.read_ue()?, 255)?,
        seq_parameter_set_id: check("seq_parameter_set_id", r.read_ue()?, 31)?,
        entropy_coding_mode_flag: r.read_flag()?,
        bottom_field_pic_order_in_frame_present_flag: r.read_flag()?,
    })
}

/// Parses a sequence parameter set NAL unit (header included, emulation prevention present).
pub fn parse_sps(nal: &[u8]) -> Result<Sps, SpsError> {
    let rbsp = rbsp_of(nal, NAL_SPS)?;
    Ok(parse_rbsp(&rbsp)?.0)
}

/// Where the fields the rewrite replaces begin, in RBSP bits.
struct Positions {
    /// `vui_parameters_present_flag`.
    vui_flag: usize,
    /// `bitstream_restriction_flag`, when the VUI is present.
    restriction_flag: Option<usize>,
}

/// Profiles whose SPS carries chroma format, bit depths and scaling lists (§7.3.2.1.1).
fn has_chroma_info(profile_idc: u8) -> bool {
    matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    )
}

fn parse_rbsp(rbsp: &[u8]) -> Result<(Sps, Positions), SpsError> {
    let mut r = BitReader::new(rbsp);
    let profile_idc = r.read_bits(8)? as u8;
    let constraint_flags = r.read_bits(8)? as u8;
    let level_idc = r.read_bits(8)? as u8;
    let seq_parameter_set_id = check("seq_parameter_set_id", r.read_ue()?, 31)?;

    let mut chroma_format_idc = 1;
    let mut separate_colour_plane_flag = false;
    let mut bit_depth_luma_minus8 = 0;
    let mut bit_depth_chroma_minus8 = 0;
    let mut qpprime_y_zero_transform_bypass_flag = false;
    let mut seq_scaling_matrix_present_flag = false;
    if has_chroma_info(profile_idc) {
        chroma_format_idc = check("chroma_format_idc", r.read_ue()?, 3)?;
        if chroma_format_idc == 3 {
            separate_colour_plane_flag = r.read_flag()?;
        }
        bit_depth_luma_minus8 = check("bit_depth_luma_minus8", r.read_ue()?, 6)?;
        bit_depth_chroma_minus8 = check("bit_depth_chroma_minus8", r.read_ue()?, 6)?;
        qpprime_y_zero_transform_bypass_flag = r.read_flag()?;
        seq_scaling_matrix_present_flag = r.read_flag()?;
        if seq_scaling_matrix_present_flag {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.read_flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }

    let log2_max_frame_num_minus4 = check("log2_max_frame_num_minus4", r.read_ue()?, 12)?;
    let pic_order_cnt = match r.read_ue()? {
        0 => PicOrderCnt::Type0 {
            log2_max_pic_order_cnt_lsb_minus4: check(
                "log2_max_pic_order_cnt_lsb_minus4",
                r.read_ue()?,
                12,
            )?,
        },
        1 => {
            let delta_pic_order_always_zero_flag = r.read_flag()?;
            let offset_for_non_ref_pic = r.read_se()?;
            let offset_for_top_to_bottom_field = r.read_se()?;
            let n = check("num_ref_frames_in_pic_order_cnt_cycle", r.read_ue()?, 255)?;
            let offset_for_ref_frame =
                (0..n).map(|_| r.read_se()).collect::<Result<Vec<_>, _>>()?;
            PicOrderCnt::Type1 {
                delta_pic_order_always_zero_flag,
                offset_for_non_ref_pic,
                offset_for_top_to_bottom_field,
                offset_for_ref_frame,
            }
        }
        2 => PicOrderCnt::Type2,
        other => {
            return Err(SpsError::OutOfRange {
                field: "pic_order_cnt_type",
                value: i64::from(other),
            })
        }
    };
    let max_num_ref_frames = check("max_num_ref_frames", r.read_ue()?, 16)?;
    let gaps_in_frame_num_value_allowed_flag = r.read_flag()?;
    let pic_width_in_mbs_minus1 = r.read_ue()?;
    let pic_height_in_map_units_minus1 = r.read_ue()?;
    let frame_mbs_only_flag = r.read_flag()?;
    let mb_adaptive_frame_field_flag = if frame_mbs_only_flag {
        false
    } else {
        r.read_flag()?
    };
    let direct_8x8_inference_flag = r.read_flag()?;
    let frame_cropping = if r.read_flag()? {
        Some(FrameCropping {
            left: r.read_ue()?,
            right: r.read_ue()?,
            top: r.read_ue()?,
            bottom: r.read_ue()?,
        })
    } else {
        None
    };

    let vui_flag = r.position();
    let (vui, restriction_flag) = if r.read_flag()? {
        let (vui, pos) = parse_vui(&mut r)?;
        (Some(vui), Some(pos))
    } else {
        (None, None)
    };
    // rbsp_trailing_bits are not checked: some encoders get them wrong, and nothing after the
    // VUI matters to us.

    let mut sps = Sps {
        profile_idc,
        constraint_flags,
        level_idc,
        seq_parameter_set_id,
        chroma_format_idc,
        separate_colour_plane_flag,
        bit_depth_luma_minus8,
        bit_depth_chroma_minus8,
        qpprime_y_zero_transform_bypass_flag,
        seq_scaling_matrix_present_flag,
        log2_max_frame_num_minus4,
        pic_order_cnt,
        max_num_ref_frames,
        gaps_in_frame_num_value_allowed_flag,
        pic_width_in_mbs_minus1,
        pic_height_in_map_units_minus1,
        frame_mbs_only_flag,
        mb_adaptive_frame_field_flag,
        direct_8x8_inference_flag,
        frame_cropping,
        vui,
        width: 0,
        height: 0,
    };
    let (width, height) = display_size(&sps)?;
    sps.width = width;
    sps.height = height;
    Ok((
        sps,
        Positions {
            vui_flag,
            restriction_flag,
        },
    ))
}

/// Skips one `scaling_list()` (§7.3.2.1.1.1) of `size` coefficients.
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), SpsError> {
    let mut last_scale: i64 = 8;
    let mut next_scale: i64 = 8;
    for _ in 0..size {
        if next_scale != 0 {
            let delta_scale = r.read_se()?;
            if !(-128..=127).contains(&delta_scale) {
                return Err(SpsError::OutOfRange {
                    field: "delta_scale",
                    value: i64::from(delta_scale),
                });
            }
            next_scale = (last_scale + i64::from(delta_scale)).rem_euclid(256);
        }
        if next_scale != 0 {
            last_scale = next_scale;
        }
    }
    Ok(())
}

/// Width and height after cropping (§7.4.2.1.1, equations 7-13 to 7-20).
fn display_size(sps: &Sps) -> Result<(u32, u32), SpsError> {
    let frame_mbs_only = u64::from(sps.frame_mbs_only_flag);
    let (sub_width_c, sub_height_c) = match sps.chroma_format_idc {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let (crop_unit_x, crop_unit_y) = if sps.chroma_array_type() == 0 {
        (1, 2 - frame_mbs_only)
    } else {
        (sub_width_c, sub_height_c * (2 - frame_mbs_only))
    };
    let coded_width = (u64::from(sps.pic_width_in_mbs_minus1) + 1) * 16;
    let coded_height =
        (2 - frame_mbs_only) * (u64::from(sps.pic_height_in_map_units_minus1) + 1) * 16;
    let c = sps.frame_cropping.unwrap_or_default();
    let crop_x = crop_unit_x * (u64::from(c.left) + u64::from(c.right));
    let crop_y = crop_unit_y * (u64::from(c.top) + u64::from(c.bottom));
    let size = |field, coded: u64, crop: u64| -> Result<u32, SpsError> {
        coded
            .checked_sub(crop)
            .filter(|&v| v > 0)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or(SpsError::OutOfRange {
                field,
                value: i64::try_from(crop).unwrap_or(i64::MAX),
            })
    };
    Ok((
        size(
            "frame_crop_left_offset + frame_crop_right_offset",
            coded_width,
            crop_x,
        )?,
        size(
            "frame_crop_top_offset + frame_crop_bottom_offset",
            coded_height,
            crop_y,
        )?,
    ))
}

/// Parses `vui_parameters()`; also returns the position of `bitstream_restriction_flag`.
fn parse_vui(r: &mut BitReader<'_>) -> Result<(Vui, usize), SpsError> {
    let mut vui = Vui::default();
    if r.read_flag()? {
        let aspect_ratio_idc = r.read_bits(8)? as u8;
        let (sar_width, sar_height) = if aspect_ratio_idc == EXTENDED_SAR {
            (r.read_bits(16)? as u16, r.read_bits(16)? as u16)
        } else {
            SAR_TABLE
                .get(usize::from(aspect_ratio_idc))
                .copied()
                .unwrap_or((0, 0))
        };
        vui.aspect_ratio = Some(AspectRatio {
            aspect_ratio_idc,
            sar_width,
            sar_height,
        });
    }
    if r.read_flag()? {
        vui.overscan_appropriate = Some(r.read_flag()?);
    }
    if r.read_flag()? {
        let video_format = r.read_bits(3)? as u8;
        let video_full_range_flag = r.read_flag()?;
        let colour_description = if r.read_flag()? {
            Some(ColourDescription {
                colour_primaries: r.read_bits(8)? as u8,
                transfer_characteristics: r.read_bits(8)? as u8,
                matrix_coefficients: r.read_bits(8)? as u8,
            })
        } else {
            None
        };
        vui.video_signal_type = Some(VideoSignalType {
            video_format,
            video_full_range_flag,
            colour_description,
        });
    }
    if r.read_flag()? {
        vui.chroma_loc = Some(ChromaLoc {
            top_field: check("chroma_sample_loc_type_top_field", r.read_ue()?, 5)?,
            bottom_field: check("chroma_sample_loc_type_bottom_field", r.read_ue()?, 5)?,
        });
    }
    if r.read_flag()? {
        vui.timing = Some(TimingInfo {
            num_units_in_tick: r.read_bits(32)?,
            time_scale: r.read_bits(32)?,
            fixed_frame_rate_flag: r.read_flag()?,
        });
    }
    if r.read_flag()? {
        vui.nal_hrd = Some(parse_hrd(r)?);
    }
    if r.read_flag()? {
        vui.vcl_hrd = Some(parse_hrd(r)?);
    }
    if vui.nal_hrd.is_some() || vui.vcl_hrd.is_some() {
        vui.low_delay_hrd_flag = Some(r.read_flag()?);
    }
    vui.pic_struct_present_flag = r.read_flag()?;
    let restriction_pos = r.position();
    if r.read_flag()? {
        vui.bitstream_restriction = Some(BitstreamRestriction {
            motion_vectors_over_pic_boundaries_flag: r.read_flag()?,
            max_bytes_per_pic_denom: r.read_ue()?,
            max_bits_per_mb_denom: r.read_ue()?,
            log2_max_mv_length_horizontal: r.read_ue()?,
            log2_max_mv_length_vertical: r.read_ue()?,
            max_num_reorder_frames: r.read_ue()?,
            max_dec_frame_buffering: r.read_ue()?,
        });
    }
    Ok((vui, restriction_pos))
}

/// Parses `hrd_parameters()` (E.1.2).
fn parse_hrd(r: &mut BitReader<'_>) -> Result<HrdParameters, SpsError> {
    let cpb_cnt_minus1 = check("cpb_cnt_minus1", r.read_ue()?, 31)?;
    let bit_rate_scale = r.read_bits(4)? as u8;
    let cpb_size_scale = r.read_bits(4)? as u8;
    let cpbs = (0..=cpb_cnt_minus1)
        .map(|_| {
            Ok(CpbSpec {
                bit_rate_value_minus1: r.read_ue()?,
                cpb_size_value_minus1: r.read_ue()?,
                cbr_flag: r.read_flag()?,
            })
        })
        .collect::<Result<Vec<_>, SpsError>>()?;
    Ok(HrdParameters {
        bit_rate_scale,
        cpb_size_scale,
        cpbs,
        initial_cpb_removal_delay_length_minus1: r.read_bits(5)? as u8,
        cpb_removal_delay_length_minus1: r.read_bits(5)? as u8,
        dpb_output_delay_length_minus1: r.read_bits(5)? as u8,
        time_offset_length: r.read_bits(5)? as u8,
    })
}

/// Re-emits an SPS NAL unit so that it promises no frame reordering (see the
/// [module docs](self) for why): the VUI present, `bitstream_restriction_flag = 1`,
/// `max_num_reorder_frames = 0`, `max_dec_frame_buffering = max(max_num_ref_frames, 1)`.
///
/// Every other field is kept bit-exact: the bits before the VUI, and within an existing VUI
/// everything before the restriction (HRD parameters included), are copied verbatim, and an
/// existing restriction keeps its other values. A VUI that was absent is written with nothing
/// but the restriction, whose other fields take the values the spec infers when it is absent.
/// The NAL header byte is kept; emulation prevention is redone.
///
/// Returns `Ok(None)` when the SPS already says `max_num_reorder_frames = 0`.
pub fn rewrite_low_delay(nal: &[u8]) -> Result<Option<Vec<u8>>, SpsError> {
    let rbsp = rbsp_of(nal, NAL_SPS)?;
    let (sps, pos) = parse_rbsp(&rbsp)?;
    if sps.max_num_reorder_frames() == Some(0) {
        return Ok(None);
    }
    let mut r = BitReader::new(&rbsp);
    let mut w = BitWriter::new();
    w.copy_bits(&mut r, pos.vui_flag)?;
    w.write_bit(true); // vui_parameters_present_flag
    r.skip_bits(1)?;
    let max_dec_frame_buffering = sps.max_num_ref_frames.max(1);
    let mut restriction = BitstreamRestriction::inferred(max_dec_frame_buffering);
    match (&sps.vui, pos.restriction_flag) {
        (Some(vui), Some(restriction_pos)) => {
            let n = restriction_pos - r.position();
            w.copy_bits(&mut r, n)?;
            if let Some(old) = vui.bitstream_restriction {
                restriction = BitstreamRestriction {
                    max_num_reorder_frames: 0,
                    max_dec_frame_buffering,
                    ..old
                };
            }
        }
        _ => {
            // aspect_ratio_info, overscan_info, video_signal_type, chroma_loc_info,
            // timing_info, nal_hrd, vcl_hrd present flags and pic_struct_present_flag: all 0.
            w.write_bits(8, 0);
        }
    }
    w.write_bit(true); // bitstream_restriction_flag
    w.write_bit(restriction.motion_vectors_over_pic_boundaries_flag);
    w.write_ue(restriction.max_bytes_per_pic_denom);
    w.write_ue(restriction.max_bits_per_mb_denom);
    w.write_ue(restriction.log2_max_mv_length_horizontal);
    w.write_ue(restriction.log2_max_mv_length_vertical);
    w.write_ue(restriction.max_num_reorder_frames);
    w.write_ue(restriction.max_dec_frame_buffering);
    w.write_trailing_bits();

    let mut out = Vec::with_capacity(nal.len() + 8);
    out.extend(nal.first());
    out.extend(rbsp_to_nal(&w.into_bytes()));
    Ok(Some(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // Fixtures. x264 ones come from `tests/fixtures/gen.sh sps` (x264 core 164, Debian 12).

    fn x264_baseline_1080p() -> Vec<u8> {
        hex("6742c028da01e0089f970110000003001000000303c0f1832a")
    }
    fn x264_main_1080p() -> Vec<u8> {
        hex("674d4028eca03c0113f2e022000003000200000300781e30632c")
    }
    fn x264_high_1080p() -> Vec<u8> {
        hex("67640028acd940780227e5c044000003000400000300f03c60c658")
    }
    fn x264_interlaced_1080i() -> Vec<u8> {
        hex("674d4028f403c0227ef0110000030001000003003c1f162ea0")
    }
    /// B-frames (so reordering), a NAL HRD, SAR 1:1, 25 fps.
    fn x264_main_720p25_nal_hrd() -> Vec<u8> {
        hex("674d401feca02802dd808800000300080000030193130007a12000f425261803c60c6580")
    }
    fn x264_high444_360p() -> Vec<u8> {
        hex("67f4001e919680a02ff89c0440000003004000000f03c58ba8")
    }
    fn x264_high422_362p() -> Vec<u8> {
        hex("677a001ebcb405017fcf8088000003000800000301e078b175")
    }
    fn x264_zerolatency_full_range_480p() -> Vec<u8> {
        hex("6742c01eda0280f6c05b808080a0000003002000000791e2c5d4")
    }
    /// A Raspberry Pi 3B+ (firmware encoder, High 4.0, 1280x720, POC type 2): a VUI holding
    /// only a bitstream restriction that already says no reordering.
    fn rpi3b_plus_720p() -> Vec<u8> {
        hex("27640028ac2b402802dd00f1226a")
    }
    /// A mobile hardware encoder's SPS (constrained baseline 3.0, 640x480) as published with an
    /// MP4 muxing example: no VUI at all, the case that makes Chrome buffer.
    fn mobile_hw_baseline_480p_no_vui() -> Vec<u8> {
        hex("6742801ee901407b20")
    }
    /// A Raspberry Pi camera recording (960x720, 25 fps): timing and a NAL HRD in the VUI, and
    /// a restriction that already says no reordering.
    fn rpi_camera_960x720_25fps() -> Vec<u8> {
        hex("27640028ac2b40780b742000000300200000065c14000f4240002faf37bdc03c489a80")
    }
    /// Written as openh264's encoder writes it (`WelsWriteSpsSyntax`/`WelsWriteVUI` in
    /// `au_set.cpp`): constrained baseline, a VUI that already has the restriction with
    /// `max_num_reorder_frames = 0` and `max_bytes_per_pic_denom = 0`.
    fn openh264_like_720p() -> Vec<u8> {
        hex("6742c01f8c8d402802dd00f08846a0")
    }
    /// An AMD Radeon Pro VII's VCE firmware under Mesa 24.0.5 (1920x1080, High 4.2, POC type
    /// 0, two reference frames): colour and timing in the VUI, no bitstream restriction.
    fn amd_vce_mesa_1080p() -> Vec<u8> {
        hex("6764402aac26c0780227e5c05a20000003002000000f1080")
    }

    pub(super) fn all_fixtures() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("x264_baseline_1080p", x264_baseline_1080p()),
            ("x264_main_1080p", x264_main_1080p()),
            ("x264_high_1080p", x264_high_1080p()),
            ("x264_interlaced_1080i", x264_interlaced_1080i()),
            ("x264_main_720p25_nal_hrd", x264_main_720p25_nal_hrd()),
            ("x264_high444_360p", x264_high444_360p()),
            ("x264_high422_362p", x264_high422_362p()),
            (
                "x264_zerolatency_full_range_480p",
                x264_zerolatency_full_range_480p(),
            ),
            ("rpi3b_plus_720p", rpi3b_plus_720p()),
            (
                "mobile_hw_baseline_480p_no_vui",
                mobile_hw_baseline_480p_no_vui(),
            ),
            ("rpi_camera_960x720_25fps", rpi_camera_960x720_25fps()),
            ("openh264_like_720p", openh264_like_720p()),
            ("amd_vce_mesa_1080p", amd_vce_mesa_1080p()),
            (
                "spec_high_scaling_lists_poc1",
                spec_high_scaling_lists_poc1(),
            ),
        ]
    }

    /// An SPS written from the spec to reach what the encoders above never emit: scaling lists
    /// in the SPS (including a "use default" list), pic_order_cnt_type 1, Extended_SAR, chroma
    /// location, a VCL HRD, and no frame cropping.
    fn spec_high_scaling_lists_poc1() -> Vec<u8> {
        let mut w = BitWriter::new();
        w.write_bits(8, 100);
        w.write_bits(8, 0);
        w.write_bits(8, 40);
        w.write_ue(3); // sps id
        w.write_ue(1); // chroma_format_idc
        w.write_ue(2); // bit_depth_luma_minus8
        w.write_ue(2);
        w.write_bit(false);
        w.write_bit(true); // seq_scaling_matrix_present_flag
        for i in 0..8 {
            let present = i % 3 != 2;
            w.write_bit(present);
            if present {
                let size = if i < 6 { 16 } else { 64 };
                if i == 1 {
                    w.write_se(-8); // next_scale 0 at j == 0: use the default list
                } else {
                    for j in 0..size {
                        w.write_se(if j % 2 == 0 { 5 } else { -3 });
                    }
                }
            }
        }
        w.write_ue(2); // log2_max_frame_num_minus4
        w.write_ue(1); // pic_order_cnt_type
        w.write_bit(false);
        w.write_se(-2);
        w.write_se(1);
        w.write_ue(3);
        for v in [4, -4, 2] {
            w.write_se(v);
        }
        w.write_ue(4); // max_num_ref_frames
        w.write_bit(false);
        w.write_ue(119); // 1920 wide
        w.write_ue(67); // 1088 tall
        w.write_bit(true);
        w.write_bit(true);
        w.write_bit(false); // no cropping
        w.write_bit(true); // VUI
        w.write_bit(true);
        w.write_bits(8, 255);
        w.write_bits(16, 64);
        w.write_bits(16, 45);
        w.write_bit(true);
        w.write_bit(false); // overscan not appropriate
        w.write_bit(false); // video signal
        w.write_bit(true);
        w.write_ue(1);
        w.write_ue(2);
        w.write_bit(true); // timing: 30000/1001 fields... 1001 units, 60000 Hz
        w.write_bits(32, 1001);
        w.write_bits(32, 60000);
        w.write_bit(true);
        w.write_bit(false); // nal hrd
        w.write_bit(true); // vcl hrd
        w.write_ue(1);
        w.write_bits(4, 3);
        w.write_bits(4, 5);
        for k in 0..2 {
            w.write_ue(1000 + k);
            w.write_ue(2000 + k);
            w.write_bit(k == 1);
        }
        w.write_bits(5, 23);
        w.write_bits(5, 22);
        w.write_bits(5, 21);
        w.write_bits(5, 24);
        w.write_bit(false); // low_delay_hrd_flag
        w.write_bit(true); // pic_struct_present_flag
        w.write_bit(true); // bitstream_restriction
        w.write_bit(false);
        w.write_ue(0);
        w.write_ue(0);
        w.write_ue(13);
        w.write_ue(11);
        w.write_ue(3);
        w.write_ue(5);
        w.write_trailing_bits();
        let mut nal = vec![0x67];
        nal.extend(rbsp_to_nal(&w.into_bytes()));
        nal
    }

    /// Display sizes exercise cropping in every chroma format and for field coding, where a
    /// slip gives 1088 instead of 1080 (or 2160 for 1080i).
    #[test]
    fn display_size_accounts_for_cropping_chroma_format_and_fields() {
        let cases: &[(&str, u32, u32)] = &[
            ("x264_baseline_1080p", 1920, 1080),
            ("x264_main_1080p", 1920, 1080),
            ("x264_high_1080p", 1920, 1080),
            ("x264_interlaced_1080i", 1920, 1080),
            ("x264_main_720p25_nal_hrd", 1280, 720),
            ("x264_high444_360p", 640, 360),
            ("x264_high422_362p", 640, 362),
            ("x264_zerolatency_full_range_480p", 640, 480),
            ("rpi3b_plus_720p", 1280, 720),
            ("mobile_hw_baseline_480p_no_vui", 640, 480),
            ("rpi_camera_960x720_25fps", 960, 720),
            ("openh264_like_720p", 1280, 720),
            ("amd_vce_mesa_1080p", 1920, 1080),
            ("spec_high_scaling_lists_poc1", 1920, 1088),
        ];
        let fixtures = all_fixtures();
        for &(name, w, h) in cases {
            let nal = &fixtures.iter().find(|f| f.0 == name).unwrap().1;
            let sps = parse_sps(nal).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((sps.width, sps.height), (w, h), "{name}");
        }
    }

    /// The codec string goes verbatim into MSE's isTypeSupported and the HLS CODECS attribute.
    #[test]
    fn codec_strings_are_lowercase_profile_constraints_level() {
        assert_eq!(
            parse_sps(&x264_high_1080p()).unwrap().codec_string(),
            "avc1.640028"
        );
        assert_eq!(
            parse_sps(&x264_baseline_1080p()).unwrap().codec_string(),
            "avc1.42c028"
        );
        assert_eq!(
            parse_sps(&x264_main_720p25_nal_hrd())
                .unwrap()
                .codec_string(),
            "avc1.4d401f"
        );
        assert_eq!(
            parse_sps(&x264_high444_360p()).unwrap().codec_string(),
            "avc1.f4001e"
        );
    }

    /// High-profile fields: a wrong skip of the chroma/bit-depth block shifts every later field.
    #[test]
    fn high_profile_chroma_and_bit_depth_fields_parse() {
        let s = parse_sps(&x264_high444_360p()).unwrap();
        assert_eq!((s.profile_idc, s.chroma_format_idc), (244, 3));
        assert!(!s.separate_colour_plane_flag);
        let s = parse_sps(&x264_high422_362p()).unwrap();
        assert_eq!((s.profile_idc, s.chroma_format_idc), (122, 2));
        let s = parse_sps(&x264_high_1080p()).unwrap();
        assert_eq!((s.chroma_format_idc, s.bit_depth_luma_minus8), (1, 0));
        assert!(!s.seq_scaling_matrix_present_flag);
    }

    /// Scaling lists are skipped by their own exp-Golomb grammar; if the skip were off by a bit,
    /// the fields after (POC type 1 offsets, size, the VUI) would come out wrong.
    #[test]
    fn scaling_lists_poc_type_1_and_a_full_vui_parse() {
        let s = parse_sps(&spec_high_scaling_lists_poc1()).unwrap();
        assert_eq!(s.seq_parameter_set_id, 3);
        assert_eq!((s.bit_depth_luma_minus8, s.bit_depth_chroma_minus8), (2, 2));
        assert!(s.seq_scaling_matrix_present_flag);
        assert_eq!(s.log2_max_frame_num(), 6);
        assert_eq!(
            s.pic_order_cnt,
            PicOrderCnt::Type1 {
                delta_pic_order_always_zero_flag: false,
                offset_for_non_ref_pic: -2,
                offset_for_top_to_bottom_field: 1,
                offset_for_ref_frame: vec![4, -4, 2],
            }
        );
        assert_eq!(s.max_num_ref_frames, 4);
        let vui = s.vui.as_ref().unwrap();
        assert_eq!(
            vui.aspect_ratio,
            Some(AspectRatio {
                aspect_ratio_idc: 255,
                sar_width: 64,
                sar_height: 45
            })
        );
        assert_eq!(vui.overscan_appropriate, Some(false));
        assert_eq!(
            vui.chroma_loc,
            Some(ChromaLoc {
                top_field: 1,
                bottom_field: 2
            })
        );
        let hrd = vui.vcl_hrd.as_ref().unwrap();
        assert_eq!((hrd.bit_rate_scale, hrd.cpb_size_scale), (3, 5));
        assert_eq!(hrd.cpbs.len(), 2);
        assert_eq!(hrd.cpbs[1].cpb_size_value_minus1, 2001);
        assert!(hrd.cpbs[1].cbr_flag);
        assert_eq!(hrd.time_offset_length, 24);
        assert_eq!(vui.nal_hrd, None);
        assert_eq!(vui.low_delay_hrd_flag, Some(false));
        assert!(vui.pic_struct_present_flag);
        assert_eq!(s.max_num_reorder_frames(), Some(3));
        assert_eq!(s.max_dec_frame_buffering(), Some(5));
        let fps = s.frame_rate().unwrap();
        assert!((fps - 29.97).abs() < 0.01, "{fps}");
    }

    /// VUI fields from real encoders: SAR from the table, NAL HRD, timing → frame rate,
    /// colour description and full range.
    #[test]
    fn real_vui_fields_parse() {
        let s = parse_sps(&x264_main_720p25_nal_hrd()).unwrap();
        let vui = s.vui.as_ref().unwrap();
        assert_eq!(
            vui.aspect_ratio,
            Some(AspectRatio {
                aspect_ratio_idc: 1,
                sar_width: 1,
                sar_height: 1
            })
        );
        assert!(vui.nal_hrd.is_some());
        assert_eq!(vui.vcl_hrd, None);
        assert_eq!(s.frame_rate(), Some(25.0));
        assert_eq!(s.frame_rate_ratio(), Some((50, 2)));
        assert!(
            s.max_num_reorder_frames().unwrap() > 0,
            "x264 with B-frames"
        );

        let s = parse_sps(&x264_zerolatency_full_range_480p()).unwrap();
        let vst = s.vui.as_ref().unwrap().video_signal_type.unwrap();
        assert!(vst.video_full_range_flag);
        assert_eq!(
            vst.colour_description,
            Some(ColourDescription {
                colour_primaries: 1,
                transfer_characteristics: 1,
                matrix_coefficients: 1
            })
        );
        assert_eq!(s.max_num_reorder_frames(), Some(0));
        assert_eq!(s.frame_rate(), Some(30.0));

        let s = parse_sps(&rpi3b_plus_720p()).unwrap();
        assert_eq!(s.pic_order_cnt, PicOrderCnt::Type2);
        assert_eq!(s.frame_rate(), None);
        assert_eq!(s.max_num_reorder_frames(), Some(0));

        let s = parse_sps(&mobile_hw_baseline_480p_no_vui()).unwrap();
        assert_eq!(s.vui, None);
        assert_eq!(s.max_num_reorder_frames(), None);

        let s = parse_sps(&rpi_camera_960x720_25fps()).unwrap();
        assert_eq!(s.frame_rate(), Some(25.0));
        assert!(s.vui.as_ref().unwrap().nal_hrd.is_some());
        assert_eq!(s.max_num_reorder_frames(), Some(0));

        let s = parse_sps(&amd_vce_mesa_1080p()).unwrap();
        let vui = s.vui.as_ref().unwrap();
        assert!(vui.video_signal_type.is_some());
        assert!(vui.timing.is_some());
        assert_eq!(vui.bitstream_restriction, None);
        assert_eq!(s.max_num_ref_frames, 2);

        let s = parse_sps(&x264_interlaced_1080i()).unwrap();
        assert!(!s.frame_mbs_only_flag);
        assert_eq!(s.pic_height_in_map_units_minus1, 33);
    }

    /// The rewrite's promise, checked on every fixture: only the restriction changes, it says
    /// no reordering, and rewriting again is a no-op.
    #[test]
    fn rewrite_low_delay_changes_only_the_bitstream_restriction() {
        for (name, nal) in all_fixtures() {
            let before = parse_sps(&nal).unwrap();
            let Some(out) = rewrite_low_delay(&nal).unwrap() else {
                assert_eq!(before.max_num_reorder_frames(), Some(0), "{name}");
                continue;
            };
            assert_eq!(out[0], nal[0], "{name}: header byte kept");
            let after = parse_sps(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                before.eq_ignoring_bitstream_restriction(&after),
                "{name}:\n{before:?}\n{after:?}"
            );
            let r = after.vui.as_ref().unwrap().bitstream_restriction.unwrap();
            assert_eq!(r.max_num_reorder_frames, 0, "{name}");
            assert_eq!(
                r.max_dec_frame_buffering,
                before.max_num_ref_frames.max(1),
                "{name}"
            );
            match before.vui.and_then(|v| v.bitstream_restriction) {
                Some(old) => {
                    assert_eq!(
                        (
                            old.motion_vectors_over_pic_boundaries_flag,
                            old.max_bytes_per_pic_denom,
                            old.max_bits_per_mb_denom,
                            old.log2_max_mv_length_horizontal,
                            old.log2_max_mv_length_vertical
                        ),
                        (
                            r.motion_vectors_over_pic_boundaries_flag,
                            r.max_bytes_per_pic_denom,
                            r.max_bits_per_mb_denom,
                            r.log2_max_mv_length_horizontal,
                            r.log2_max_mv_length_vertical
                        ),
                        "{name}: existing values kept"
                    );
                }
                None => assert_eq!(r, BitstreamRestriction::inferred(r.max_dec_frame_buffering)),
            }
            assert_eq!(rewrite_low_delay(&out).unwrap(), None, "{name}: idempotent");
            // The bytes before the VUI flag are byte-identical (bit-exact copy).
            let rb_before = nal_to_rbsp(&nal[1..]);
            let rb_after = nal_to_rbsp(&out[1..]);
            let (_, pos) = parse_rbsp(&rb_before).unwrap();
            let whole = pos.vui_flag / 8;
            assert_eq!(rb_before[..whole], rb_after[..whole], "{name}");
        }
    }

    /// `nal` with its VUI's bitstream restriction taken out (or the whole VUI): the SPS of an
    /// encoder that does not write one.
    fn without_restriction(nal: &[u8], whole_vui: bool) -> Vec<u8> {
        let rbsp = nal_to_rbsp(&nal[1..]);
        let (_, pos) = parse_rbsp(&rbsp).unwrap();
        let end = match (whole_vui, pos.restriction_flag) {
            (false, Some(flag)) => flag,
            _ => pos.vui_flag,
        };
        let mut r = BitReader::new(&rbsp);
        let mut w = BitWriter::new();
        w.copy_bits(&mut r, end).unwrap();
        w.write_bit(false);
        w.write_trailing_bits();
        let mut out = vec![nal[0]];
        out.extend(rbsp_to_nal(&w.into_bytes()));
        out
    }

    /// Every fixture, stripped of its restriction (keeping colour, timing and HRD bits) or of
    /// its whole VUI, gets one back, and the bits before it are copied exactly. (The stripped
    /// and rewritten x264 stream also decodes to the same frames in ffmpeg, checked by hand.)
    #[test]
    fn rewrite_restores_a_stripped_restriction_bit_exactly() {
        for (name, nal) in all_fixtures() {
            for whole_vui in [false, true] {
                let stripped = without_restriction(&nal, whole_vui);
                let before = parse_sps(&stripped).unwrap();
                assert_eq!(before.max_num_reorder_frames(), None, "{name}");
                let out = rewrite_low_delay(&stripped).unwrap().unwrap();
                let after = parse_sps(&out).unwrap();
                assert!(before.eq_ignoring_bitstream_restriction(&after), "{name}");
                assert_eq!(after.max_num_reorder_frames(), Some(0), "{name}");

                let (a, b) = (nal_to_rbsp(&stripped[1..]), nal_to_rbsp(&out[1..]));
                let (_, pos) = parse_rbsp(&a).unwrap();
                let kept = pos.restriction_flag.unwrap_or(pos.vui_flag);
                let (mut ra, mut rb) = (BitReader::new(&a), BitReader::new(&b));
                for i in 0..kept {
                    assert_eq!(ra.read_bit(), rb.read_bit(), "{name}: bit {i}");
                }
            }
        }
    }

    /// Which fixtures get rewritten: no VUI, a VUI without restriction (AMD VCE) and x264
    /// with B-frames do; openh264, both Pis and x264's zerolatency tune already say "no
    /// reordering".
    #[test]
    fn rewrite_low_delay_returns_none_when_already_low_delay() {
        assert!(rewrite_low_delay(&mobile_hw_baseline_480p_no_vui())
            .unwrap()
            .is_some());
        assert_eq!(rewrite_low_delay(&rpi3b_plus_720p()).unwrap(), None);
        assert!(rewrite_low_delay(&amd_vce_mesa_1080p()).unwrap().is_some());
        assert_eq!(
            rewrite_low_delay(&rpi_camera_960x720_25fps()).unwrap(),
            None
        );
        assert!(rewrite_low_delay(&x264_main_720p25_nal_hrd())
            .unwrap()
            .is_some());
        assert_eq!(rewrite_low_delay(&openh264_like_720p()).unwrap(), None);
        assert_eq!(
            rewrite_low_delay(&x264_zerolatency_full_range_480p()).unwrap(),
            None
        );
    }

    /// The exact bytes for an SPS without VUI, so a change in the writer shows up here.
    #[test]
    fn rewrite_of_an_sps_without_vui_is_byte_exact() {
        let out = rewrite_low_delay(&mobile_hw_baseline_480p_no_vui())
            .unwrap()
            .unwrap();
        let s = parse_sps(&out).unwrap();
        assert_eq!(s.max_num_ref_frames, 1);
        let v = s.vui.unwrap();
        assert_eq!(
            v,
            Vui {
                bitstream_restriction: Some(BitstreamRestriction::inferred(1)),
                ..Vui::default()
            }
        );
        // The original up to the VUI flag, then: vui=1, eight zero flags, restriction.
        assert_eq!(out, hex("6742801ee901407b403682010a80"));
    }

    /// Truncation anywhere is an error, never a panic or a half-parsed SPS.
    #[test]
    fn truncated_sps_is_an_error() {
        for (name, nal) in all_fixtures() {
            for len in 0..nal.len() - 1 {
                let cut = &nal[..len];
                assert!(parse_sps(cut).is_err(), "{name} cut at {len}");
                assert!(rewrite_low_delay(cut).is_err(), "{name} cut at {len}");
            }
        }
    }

    /// Wrong NAL type and forbidden bit are refused before any parsing.
    #[test]
    fn wrong_nal_type_and_forbidden_bit_are_refused() {
        assert_eq!(parse_sps(&[]), Err(SpsError::Empty));
        assert_eq!(
            parse_sps(&[0x68, 0xce, 0x38, 0x80]),
            Err(SpsError::WrongNalType {
                expected: 7,
                actual: 8
            })
        );
        let mut nal = x264_high_1080p();
        nal[0] |= 0x80;
        assert!(matches!(
            parse_sps(&nal),
            Err(SpsError::ForbiddenZeroBit { .. })
        ));
    }

    /// Out-of-range values are named, so a log line says what is wrong with a camera's SPS.
    #[test]
    fn out_of_range_fields_are_named() {
        let mut w = BitWriter::new();
        w.write_bits(24, 0x42_c0_1e);
        w.write_ue(32); // seq_parameter_set_id > 31
        w.write_trailing_bits();
        let mut nal = vec![0x67];
        nal.extend(rbsp_to_nal(&w.into_bytes()));
        assert_eq!(
            parse_sps(&nal),
            Err(SpsError::OutOfRange {
                field: "seq_parameter_set_id",
                value: 32
            })
        );
    }

    /// The PPS fields the access unit assembler needs.
    #[test]
    fn pps_leading_fields_parse() {
        // x264: pps 0 → sps 0, CABAC on, no bottom field POC.
        let p = parse_pps(&[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0]).unwrap();
        assert_eq!(
            p,
            Pps {
                pic_parameter_set_id: 0,
                seq_parameter_set_id: 0,
                entropy_coding_mode_flag: true,
                bottom_field_pic_order_in_frame_present_flag: false
            }
        );
        assert!(parse_pps(&[0x68]).is_err());
        assert!(parse_pps(&x264_high_1080p()).is_err());
    }
}
