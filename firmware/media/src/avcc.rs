//! Reading an `AVCDecoderConfigurationRecord` (ISO/IEC 14496-15 §5.3.3.1), the `avcC` box
//! body, for its parameter sets.
//!
//! RTSP cameras often send SPS and PPS only out of band, in the SDP's `sprop-parameter-sets`
//! (RFC 6184 §8.1); the RTSP client hands them over as a decoder configuration record. The
//! segmenter takes parameter sets in band, so the source puts these back in front of an IDR.
//!
//! ```text
//! u8 configurationVersion = 1 · u8 profile · u8 compat · u8 level · u8 0b111111 + lengthSizeMinusOne
//! u8 0b111 + numOfSequenceParameterSets(5) · { u16 length · SPS NAL } ×n
//! u8 numOfPictureParameterSets · { u16 length · PPS NAL } ×n · (profile-specific extension)
//! ```

use thiserror::Error;

use crate::h264::nal_type;

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AvccError {
    #[error("avcC record truncated at offset {offset}")]
    Truncated { offset: usize },
    #[error("avcC configurationVersion {0}, expected 1")]
    Version(u8),
    #[error("avcC entry at offset {offset} is NAL type {found}, expected {expected}")]
    WrongNalType {
        offset: usize,
        found: u8,
        expected: u8,
    },
}

/// The SPS and PPS NAL units of a record, borrowed from it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParameterSets<'a> {
    pub sps: Vec<&'a [u8]>,
    pub pps: Vec<&'a [u8]>,
}

/// Parses the record's parameter set lists. Empty entries are skipped; an entry of the wrong
/// NAL type, or a length running past the end, is an error. Trailing bytes (the High-profile
/// extension) are ignored.
pub fn parameter_sets(record: &[u8]) -> Result<ParameterSets<'_>, AvccError> {
    let byte = |offset: usize| {
        record
            .get(offset)
            .copied()
            .ok_or(AvccError::Truncated { offset })
    };
    let version = byte(0)?;
    if version != 1 {
        return Err(AvccError::Version(version));
    }
    let mut out = ParameterSets::default();
    let sps_count = usize::from(byte(5)? & 0x1f);
    let mut pos = 6;
    for _ in 0..sps_count {
        out.sps.extend(entry(record, &mut pos, nal_type::SPS)?);
    }
    let pps_count = usize::from(byte(pos)?);
    pos += 1;
    for _ in 0..pps_count {
        out.pps.extend(entry(record, &mut pos, nal_type::PPS)?);
    }
    Ok(out)
}

/// One `u16 length · NAL` entry at `*pos` (moved past it); `None` for an empty one.
fn entry<'a>(
    record: &'a [u8],
    pos: &mut usize,
    expected: u8,
) -> Result<Option<&'a [u8]>, AvccError> {
    let offset = *pos;
    let truncated = AvccError::Truncated { offset };
    let len = match record.get(offset..offset + 2) {
        Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
        _ => return Err(truncated),
    };
    let nal = record.get(offset + 2..offset + 2 + len).ok_or(truncated)?;
    *pos = offset + 2 + len;
    if nal.is_empty() {
        return Ok(None);
    }
    let found = crate::h264::nal_type(nal);
    if found != expected {
        return Err(AvccError::WrongNalType {
            offset,
            found,
            expected,
        });
    }
    Ok(Some(nal))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_sps_and_one_pps_come_back_as_they_were_written() {
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xda];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let mut rec = vec![1, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0, 5];
        rec.extend_from_slice(&sps);
        rec.extend_from_slice(&[1, 0, 4]);
        rec.extend_from_slice(&pps);
        let got = parameter_sets(&rec).unwrap();
        assert_eq!(got.sps, vec![&sps[..]]);
        assert_eq!(got.pps, vec![&pps[..]]);
    }

    #[test]
    fn truncated_and_mislabelled_records_are_refused() {
        assert_eq!(
            parameter_sets(&[1, 0x42, 0, 0x1e, 0xff, 0xe1, 0, 9, 0x67]),
            Err(AvccError::Truncated { offset: 6 })
        );
        assert_eq!(parameter_sets(&[0]), Err(AvccError::Version(0)));
        assert!(matches!(
            parameter_sets(&[1, 0x42, 0, 0x1e, 0xff, 0xe1, 0, 1, 0x68, 0]),
            Err(AvccError::WrongNalType { found: 8, .. })
        ));
        assert_eq!(parameter_sets(&[]), Err(AvccError::Truncated { offset: 0 }));
    }
}
