//! The sans-IO core of pinhole: H.264 parsing and fMP4/CMAF muxing.
//!
//! Nothing in this crate does I/O, reads a clock, spawns or blocks. Bytes and timestamps go in,
//! bytes and events come out. That makes every part deterministic, fuzzable and golden-testable.
//!
//! ```text
//!  Annex-B bytes ──► annexb::NalSplitter ──► h264::AuAssembler ──► AccessUnit (NALs, is_idr)
//!                                                                        │ + timing (source)
//!                                                                        ▼
//!                                    segmenter::Segmenter::push(Frame) ──► Output::{Init, Part}
//!                                        (uses sps:: for the avcC/VUI, fmp4:: for the boxes)
//! ```
//!
//! The one rule for callers: timestamps are 90 kHz media time, strictly increasing by the
//! frame's duration, and wall-clock times are passed in (never read here).
#![forbid(clippy::print_stdout, clippy::print_stderr)]

pub mod annexb;
pub mod avcc;
pub mod bits;
pub mod fmp4;
pub mod h264;
pub mod hls;
pub mod rtp_timeline;
pub mod segmenter;
pub mod sps;
#[cfg(test)]
mod test_fixtures;

/// The media timescale used everywhere in pinhole: 90 kHz, as RTP and MPEG-TS use.
pub const TIMESCALE_90K: u32 = 90_000;
