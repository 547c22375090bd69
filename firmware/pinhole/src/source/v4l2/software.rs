//! The in-process encoder for raw camera frames: OpenH264 with the settings the test source
//! uses too (`crate::codec::encoder::live_config`)
//! (Constrained Baseline, so no B-frames; an IDR every `gop_frames` with SPS/PPS in front;
//! CBR at the bitrate; no skipped frames).

use media::h264::AccessUnit;
use openh264::encoder::{Encoder, FrameType};
use openh264::Timestamp;

use super::encoder::EncodeParams;
use super::yuv::I420;

#[derive(Debug, thiserror::Error)]
pub enum SoftwareError {
    #[error("creating the OpenH264 encoder for {width}x{height} failed: {source}")]
    Init {
        width: u32,
        height: u32,
        source: openh264::Error,
    },
    #[error("OpenH264 failed to encode a frame: {0}")]
    Encode(openh264::Error),
}

pub struct SoftwareEncoder {
    encoder: Encoder,
    force_idr: bool,
}

impl std::fmt::Debug for SoftwareEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareEncoder").finish_non_exhaustive()
    }
}

impl SoftwareEncoder {
    pub fn new(
        width: u32,
        height: u32,
        fps: f64,
        params: EncodeParams,
    ) -> Result<SoftwareEncoder, SoftwareError> {
        let config = crate::codec::encoder::live_config(params.bitrate_bps, fps, params.gop_frames);
        let encoder =
            crate::codec::encoder::open(config).map_err(|source| SoftwareError::Init {
                width,
                height,
                source,
            })?;
        Ok(SoftwareEncoder {
            encoder,
            force_idr: false,
        })
    }

    /// The next frame will be an IDR (a stream restart, or a viewer-visible glitch).
    pub fn request_idr(&mut self) {
        self.force_idr = true;
    }

    /// Encodes one picture at `media_ms` (for the rate control). `Ok(None)` when the encoder
    /// produced nothing for it.
    pub fn encode(
        &mut self,
        picture: &I420,
        media_ms: u64,
    ) -> Result<Option<AccessUnit>, SoftwareError> {
        if std::mem::take(&mut self.force_idr) {
            self.encoder.force_intra_frame();
        }
        let ts = Timestamp::from_millis(media_ms.min(i64::MAX as u64 / 2));
        let bitstream = self
            .encoder
            .encode_at(picture, ts)
            .map_err(SoftwareError::Encode)?;
        if !matches!(
            bitstream.frame_type(),
            FrameType::IDR | FrameType::I | FrameType::P
        ) {
            return Ok(None);
        }
        let mut annexb = Vec::new();
        bitstream.write_vec(&mut annexb);
        let nals = media::annexb::split_annexb(&annexb);
        if nals.is_empty() {
            return Ok(None);
        }
        Ok(Some(AccessUnit::from_nals(nals)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn raw_frames_encode_to_an_idr_with_parameter_sets_then_p_frames_and_idr_on_request() {
        // A stand-in picture (no camera here): the converter's black frame.
        let mut enc = SoftwareEncoder::new(
            64,
            48,
            30.0,
            EncodeParams {
                bitrate_bps: 500_000,
                gop_frames: 30,
            },
        )
        .unwrap();
        let pic = I420::new(64, 48);
        let first = enc.encode(&pic, 0).unwrap().unwrap();
        assert!(first.is_idr && first.sps().is_some() && first.pps().is_some());
        let second = enc.encode(&pic, 33).unwrap().unwrap();
        assert!(!second.is_idr && !second.has_b_slices);
        enc.request_idr();
        let third = enc.encode(&pic, 66).unwrap().unwrap();
        assert!(third.is_idr && third.sps().is_some());
    }
}
