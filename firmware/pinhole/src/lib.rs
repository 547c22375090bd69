//! The pinhole daemon as a library: the binary in `main.rs` wires these parts together, and
//! tests and benchmarks reach them directly.
//!
//! ```text
//! source ─► pipeline ─► hub ─► serve (http, hls, ui, metrics)
//!   │         │                  ▲
//!   │         └ media::Segmenter gate (limits, tls, policy: auth | access)
//!   └ supervise: testsrc | exec: | rtsp:// | v4l2: | gst:
//!
//! appliance: what the device around the stream reports (version, slot, setup)
//! ```
//!
//! The folders follow the flow: [`source`] makes access units and hands them to the
//! [`pipeline`] (its [`pipeline::FrameSink`]); the pipeline cuts fragments into the [`hub`];
//! [`serve`] sends them to viewers that the [`gate`] let in. [`status`], [`config`] and
//! [`sdnotify`] sit beside the flow.
#![deny(clippy::print_stdout, clippy::print_stderr)]

/// The version pinhole reports everywhere (`--version`, `/api/status`, user agents): a release
/// build's `PINHOLE_VERSION` (the tag's), else the Cargo version (`build.rs`).
pub const VERSION: &str = env!("PINHOLE_VERSION");
/// `pinhole/VERSION`, the user agent of pinhole's HTTP and RTSP requests.
pub const USER_AGENT: &str = concat!("pinhole/", env!("PINHOLE_VERSION"));

pub mod appliance;
pub mod config;
pub mod gate;
pub mod hub;
pub mod pipeline;
pub mod redact;
pub mod sdnotify;
pub mod serve;
pub mod source;
pub mod status;
