//! pinhole's one V4L2 crate: the kernel ABI written out in Rust (no bindgen, no libclang, no
//! libv4l at build or run time) for capture devices (cameras, single- and multi-planar, MMAP
//! buffers), for a memory-to-memory H.264 encoder driven one frame at a time (the Raspberry
//! Pi 4's `bcm2835-codec-encode`, `/dev/video11`, multi-planar, and other stateful encoders),
//! and for a memory-to-memory H.264 decoder driven one access unit at a time (the Pi 4's
//! `bcm2835-codec-decode`, `/dev/video10`, and other stateful decoders, single- or
//! multi-planar), which pinhole's snapshots use where there is one.
//!
//! Capture is the [`Backend`] itself (pinhole's `source/v4l2/device.rs` drives it:
//! `QUERYCAP`, `ENUM_FMT/FRAMESIZES/FRAMEINTERVALS`, `S_FMT`, `S_PARM`, controls,
//! `REQBUFS` + `QUERYBUF` + `mmap`, `QBUF`/`DQBUF`, `STREAMON/OFF`, `poll`); the encoder and
//! the decoder are below.
//!
//! ```text
//! encoder: I420 picture ─► OUTPUT buffer (YU12/NV12/YM12/NM12, driver's bytesperline) ─► QBUF(ts)
//!                                                                      │ encoder
//!          Encoded { Annex B access unit } ◄─ DQBUF CAPTURE buffer(s) with ts ◄─┘
//!
//! decoder: Annex B access unit ─► OUTPUT buffer ─► QBUF(tag)     SOURCE_CHANGE event ─► CAPTURE
//!                                                    │ decoder     set up (YU12 > NV12, visible
//!          Decoded { tight I420, ts } ◄─ DQBUF CAPTURE (tag → ts) ◄─┘   rectangle, MMAP buffers)
//! ```
//!
//! Layers:
//! - `sys` (private): the `#[repr(C)]` kernel structs, ioctls and `mmap` — the only code
//!   allowed `unsafe` (the crate denies it everywhere else).
//! - [`Backend`]: one method per ioctl in plain types, the seam the tests replace (with
//!   [`standin`]'s encoder, decoder and camera).
//! - [`V4l2Device`]: the `Backend` over a real node: camera, encoder or decoder.
//! - [`Encoder`]: setup order, buffer ownership, timestamp matching and errors, over any
//!   `Backend` ([`layout`] does the plane arithmetic).
//! - [`Decoder`] ([`decoder`]): the stateful decoder interface (source-change events,
//!   resolution changes, drain) over any `Backend`; [`find_h264_decoder`] finds the node.
//!
//! Nothing here has run against a real encoder or decoder on the machines this was written on
//! (they have no `/dev/video*`); see pinhole's `board/v4l2.md` for what is verified and what
//! is not.

#![deny(unsafe_code)]

pub mod backend;
pub mod decoder;
mod device;
pub mod encoder;
pub mod layout;
#[allow(unsafe_code)]
mod sys;

#[cfg(any(test, feature = "stand-in"))]
pub mod standin;

pub use backend::{
    Backend, Caps, ControlInfo, Dequeued, DequeuedPlane, Event, Format, FormatDesc, Fourcc,
    Fraction, FrameInterval, FrameSize, PlaneFormat, Queue, Ready, Rect,
};
pub use decoder::{find_h264_decoder, Decoded, Decoder};
pub use device::V4l2Device;
pub use encoder::{
    capture_buffer_size, Config, Encoded, Encoder, Error, Note, CID_FORCE_KEY_FRAME,
};
pub use layout::Picture;
