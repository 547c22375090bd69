//! The pinhole daemon as a library: the binary in `main.rs` wires these parts together, and
//! tests and benchmarks reach them directly.
//!
//! ```text
//! source::supervise ─► source (testsrc | exec) ─► pipeline (media::Segmenter) ─► hub ─► http
//! ```
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod access;
pub mod auth;
pub mod config;
pub mod hls;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod sdnotify;
pub mod source;
pub mod status;
pub mod tls;
pub mod ui;
