//! Placeholder: the pure-Rust MJPEG decoder comes from the `mjpeg` branch, which replaces
//! this file. Until then every frame fails to decode (so an MJPEG camera delivers nothing,
//! counted and logged as bad frames), but the capture path builds against the same signature.

use crate::source::pattern::I420Frame;

/// Why a JPEG frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MJPEG decoding is not built in yet (placeholder decoder)")]
pub struct MjpegError;

/// Decodes one JPEG picture to I420.
pub fn decode(jpeg: &[u8]) -> Result<I420Frame, MjpegError> {
    let _ = jpeg;
    Err(MjpegError)
}
