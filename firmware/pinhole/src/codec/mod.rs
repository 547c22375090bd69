//! Pictures and codecs, with no I/O of the daemon's own: I420 frames, H.264 decoding (V4L2
//! M2M or OpenH264), the shared OpenH264 encoder settings, scaling and JPEG encoding. It depends
//! on `media`, `v4l2` and codec crates only (`tests/module-cycles` checks that it names nothing
//! of the daemon), so the snapshot service, the test source and the V4L2 capture share one copy.
//!
//! ```text
//! source::testsrc ─┐                    ┌─ decode (V4L2 M2M | OpenH264) ─► I420Frame ─┬─ scale
//! source::v4l2 ────┼─ I420Frame ─ encoder::live_config ─► H.264       serve::snapshot ┴─ jpeg
//! ```

pub(crate) mod decode;
pub(crate) mod encoder;
pub(crate) mod i420;
pub(crate) mod jpeg;
pub(crate) mod scale;

pub use self::i420::I420Frame;
