//! H.264 decoding to [`I420Frame`]s: the board's V4L2 memory-to-memory decoder where there is one
//! (the Pi 4's `bcm2835-codec-decode`, `/dev/video10`; found by `v4l2::find_h264_decoder`),
//! OpenH264 otherwise. Snapshots (`serve::snapshot`) drive it.

use std::sync::atomic::{AtomicBool, Ordering};

use super::i420::I420Frame;

/// The H.264 decoder behind snapshots: the board's V4L2 memory-to-memory decoder where there
/// is one (the Pi 4's `bcm2835-codec-decode`, `/dev/video10`), OpenH264 otherwise or when the
/// hardware one cannot be opened.
pub enum FrameDecoder {
    Software(openh264::decoder::Decoder),
    Hardware {
        decoder: Box<dyn HwDecode>,
        name: String,
    },
}

/// A V4L2 memory-to-memory decoder over any backend (a device node; the stand-in driver in
/// the tests, as no machine this is tested on has a decoder).
pub trait HwDecode: Send {
    fn decode_with(
        &mut self,
        au: &[u8],
        timestamp_us: i64,
        want: bool,
    ) -> Result<Vec<v4l2::Decoded>, v4l2::decoder::Error>;
}

impl<B: v4l2::Backend + Send> HwDecode for v4l2::Decoder<B> {
    fn decode_with(
        &mut self,
        au: &[u8],
        timestamp_us: i64,
        want: bool,
    ) -> Result<Vec<v4l2::Decoded>, v4l2::decoder::Error> {
        v4l2::Decoder::decode_with(self, au, timestamp_us, want)
    }
}

/// Logs the hardware decoder's refusal once per process, not at every cold start.
static HW_REFUSAL_LOGGED: AtomicBool = AtomicBool::new(false);

impl FrameDecoder {
    /// The board's V4L2 M2M H.264 decoder when there is one and it opens (not when
    /// `PINHOLE_SNAPSHOT_SOFTWARE` is set), else OpenH264.
    pub fn open() -> Result<FrameDecoder, String> {
        if std::env::var_os("PINHOLE_SNAPSHOT_SOFTWARE").is_none() {
            if let Some(path) = v4l2::find_h264_decoder() {
                match v4l2::Decoder::open(&path) {
                    Ok(d) => {
                        let name = format!("{} ({})", path.display(), d.card());
                        tracing::info!("snapshot decoder: {name}");
                        return Ok(FrameDecoder::Hardware {
                            decoder: Box::new(d),
                            name,
                        });
                    }
                    Err(e) if !HW_REFUSAL_LOGGED.swap(true, Ordering::Relaxed) => {
                        tracing::warn!(
                            "snapshot decoder: {} cannot be used ({e}); decoding with OpenH264",
                            path.display()
                        );
                    }
                    Err(_) => {}
                }
            }
        }
        openh264::decoder::Decoder::new()
            .map(FrameDecoder::Software)
            .map_err(|e| format!("cannot start the H.264 decoder: {e}"))
    }

    pub fn name(&self) -> &str {
        match self {
            FrameDecoder::Software(_) => "OpenH264",
            FrameDecoder::Hardware { name, .. } => name,
        }
    }

    /// Decodes one access unit (Annex B). With `want`, returns the newest picture that came
    /// out and its frame's capture time.
    pub fn decode(
        &mut self,
        annexb: &[u8],
        capture_unix_us: u64,
        want: bool,
        spare: &mut Option<I420Frame>,
    ) -> Result<Option<(I420Frame, u64)>, String> {
        match self {
            FrameDecoder::Software(d) => match d.decode(annexb) {
                Ok(Some(yuv)) if want => Ok(Some((to_i420(&yuv, spare.take()), capture_unix_us))),
                Ok(_) => Ok(None),
                Err(e) => Err(e.to_string()),
            },
            FrameDecoder::Hardware { decoder, .. } => {
                let ts = i64::try_from(capture_unix_us).unwrap_or(i64::MAX);
                let pictures = decoder
                    .decode_with(annexb, ts, want)
                    .map_err(|e| e.to_string())?;
                Ok(pictures.into_iter().next_back().map(|d| {
                    let frame = I420Frame {
                        width: d.width as usize,
                        height: d.height as usize,
                        y: d.y,
                        u: d.u,
                        v: d.v,
                    };
                    (
                        frame,
                        u64::try_from(d.timestamp_us).unwrap_or(capture_unix_us),
                    )
                }))
            }
        }
    }
}

/// Appends one NAL unit to an Annex B buffer (4-byte start code).
pub fn push_annexb(out: &mut Vec<u8>, nal: &[u8]) {
    out.extend_from_slice(&[0, 0, 0, 1]);
    out.extend_from_slice(nal);
}

/// Copies OpenH264's picture out, into `reuse`'s buffers when there are some (a picture nobody
/// holds any more: no allocation, no fresh pages, for every frame the decoder follows).
fn to_i420(yuv: &openh264::decoder::DecodedYUV<'_>, reuse: Option<I420Frame>) -> I420Frame {
    use openh264::formats::YUVSource;
    let (w, h) = yuv.dimensions();
    let (sy, su, sv) = yuv.strides();
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let copy = |out: &mut Vec<u8>, plane: &[u8], stride: usize, pw: usize, ph: usize| {
        out.clear();
        out.reserve(pw * ph);
        for row in plane.chunks(stride).take(ph) {
            out.extend_from_slice(&row[..pw.min(row.len())]);
        }
        out.resize(pw * ph, 128);
    };
    let mut f = reuse.unwrap_or_else(|| I420Frame {
        width: 0,
        height: 0,
        y: Vec::new(),
        u: Vec::new(),
        v: Vec::new(),
    });
    f.width = w;
    f.height = h;
    copy(&mut f.y, yuv.y(), sy, w, h);
    copy(&mut f.u, yuv.u(), su, cw, ch);
    copy(&mut f.v, yuv.v(), sv, cw, ch);
    f
}
