//! The pinhole daemon as a library: the binary in `main.rs` wires these parts together, and
//! tests and benchmarks reach them directly.
//!
//! ```text
//! cli ─► config ─► main ─► stream::Stream::start, one per camera, owning:
//!
//!   source ─► pipeline ─┬─► hub ─┬─► serve::hls (LL-HLS)
//!   (supervised)        │        └─► serve::http: /api/video/cmaf, status, metrics ◄── gate
//!                       ├─► Tap ──► serve::snapshot (JPEG, decoded only while asked)
//!                       └─► Counters ─► the source's watchdog, sdnotify's watchdog, status
//!   sources: testsrc | exec: | rtsp:// | v4l2: | gst:
//!
//! appliance: what the device around the stream reports (version, slot, setup)
//! ```
//!
//! The folders follow the flow: [`source`] makes access units and hands them to the
//! [`pipeline`] (its [`pipeline::FrameSink`]); the pipeline cuts fragments into the [`hub`] and
//! imports nothing but the hub, [`status`] and `media`. A [`stream::Stream`] owns one camera's
//! parts; [`serve`] and [`sdnotify`] take `Stream`s and send them to viewers that the [`gate`]
//! let in. [`config`] resolves what [`cli`] parsed over the file. Arrows run one way:
//! `tests/module-cycles` (a step of `tests/run`) fails on any import cycle between these
//! modules and on the pipeline naming a source, the serving side or systemd.
#![deny(clippy::print_stdout, clippy::print_stderr)]

/// The version pinhole reports everywhere (`--version`, `/api/status`, user agents): a release
/// build's `PINHOLE_VERSION` (the tag's), else the Cargo version (`build.rs`).
pub const VERSION: &str = env!("PINHOLE_VERSION");
/// `pinhole/VERSION`, the user agent of pinhole's HTTP and RTSP requests.
pub const USER_AGENT: &str = concat!("pinhole/", env!("PINHOLE_VERSION"));

pub mod appliance;
pub mod cli;
pub(crate) mod codec;
pub mod config;
pub(crate) mod error;
pub mod gate;
pub(crate) mod hub;
pub(crate) mod metrics;
pub(crate) mod pipeline;
pub(crate) mod redact;
pub mod sdnotify;
pub mod serve;
pub mod source;
pub mod status;
pub mod stream;
