//! The serving side: what a viewer gets once the gate let the request in.
//!
//! ```text
//! hub ─┬─► http: /api/video/cmaf (chunked records), routes, status, shutdown
//!      ├─► hls: /hls/… (LL-HLS playlists, segments and parts of the same fragments)
//!      ├─► ui: / (the embedded player)
//!      ├─► /metrics (crate::metrics: typed families, one renderer)
//! pipeline's tap ─► snapshot: /api/snapshot.jpg (decoded only while asked)
//!
//! Each camera reaches it as a `stream::Stream`, which owns its hub, tap, snapshots and LL-HLS.
//! ```

pub(crate) mod hls;
pub mod http;
pub mod progress;
pub(crate) mod snapshot;
pub(crate) mod ui;
