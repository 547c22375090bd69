//! One camera's stream: everything pinhole runs for it, started in one call and handed around
//! as one value.
//!
//! ```text
//!                    ┌──────────────────────── Stream ───────────────────────────┐
//! StreamConfig ─► source supervisor ─► Pipeline ─► hub ─► LL-HLS (serve::hls)   │
//!                    │                 │  └ Counters (both watchdogs, status)   │
//!                    │                 └ Tap ─► snapshots (serve::snapshot)     │
//!                    └ status (state, last error, video, rates) ────────────────┘
//! ```
//!
//! `main.rs` starts one per camera; the serving side (`serve::http`) and systemd's watchdog
//! (`sdnotify`) take the `Stream`s, never their parts one by one. Nothing here listens on a
//! socket, so a test can start a stream on the test source and subscribe to its hub.

use std::sync::{Arc, Mutex};

use media::segmenter::SegmenterConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::config::StreamConfig;
use crate::hub::Hub;
use crate::pipeline::{Counters, Pipeline, SharedPipeline};
use crate::serve::hls::{Hls, HlsConfig};
use crate::serve::snapshot::{self, Snapshots};
use crate::status::{Snapshot, Status};

/// Why a stream could not start.
#[derive(Debug, thiserror::Error)]
#[error("stream {name:?}: segmenter configuration: {cause}")]
pub struct StartError {
    name: String,
    #[source]
    cause: media::segmenter::SegmentError,
}

/// One camera, running.
pub struct Stream {
    name: String,
    fragment_ms: u32,
    hub: Arc<Hub>,
    status: Arc<Status>,
    pipeline: SharedPipeline,
    counters: Arc<Counters>,
    snapshots: Arc<Snapshots>,
    hls: Arc<Hls>,
    /// The source supervisor; taken by [`Stream::stopped`].
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("name", &self.name)
            .field("fragment_ms", &self.fragment_ms)
            .finish_non_exhaustive()
    }
}

impl Stream {
    /// Starts the camera's source under its supervisor (inside a `stream{name=…}` tracing
    /// span), its pipeline, hub, snapshot service and LL-HLS. Runs until `shutdown` turns true.
    /// Call it inside a tokio runtime.
    pub fn start(
        config: &StreamConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Stream>, StartError> {
        let hub = Hub::new();
        let status = Arc::new(Status::new(
            &config.name,
            config.source.display_uri(),
            config.fragment_ms,
        ));
        let seg_config = SegmenterConfig {
            fragment_duration_90k: config.fragment_ms * 90,
            low_delay_vui: true,
        };
        let pipeline =
            Pipeline::new(seg_config, hub.clone(), status.clone()).map_err(|cause| StartError {
                name: config.name.clone(),
                cause,
            })?;
        let counters = pipeline.counters();
        let snapshots = Snapshots::new(pipeline.tap(), status.clone(), snapshot::DEFAULT_IDLE);
        snapshots.spawn_expiry();
        let pipeline: SharedPipeline = Arc::new(Mutex::new(pipeline));
        let hls = Arc::new(Hls::new(
            hub.clone(),
            HlsConfig::new(config.fragment_ms.saturating_mul(90)),
            shutdown.clone(),
        ));
        // Every log line of this camera's source names the stream.
        let span = tracing::info_span!("stream", name = %config.name);
        let task = tokio::spawn(
            crate::source::supervise_with(
                config.source.clone(),
                config.source_timeout,
                pipeline.clone(),
                status.clone(),
                shutdown,
            )
            .instrument(span),
        );
        Ok(Arc::new(Stream {
            name: config.name.clone(),
            fragment_ms: config.fragment_ms,
            hub,
            status,
            pipeline,
            counters,
            snapshots,
            hls,
            task: Mutex::new(Some(task)),
        }))
    }

    /// Its name in `/streams/NAME/…`, status and metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn fragment_ms(&self) -> u32 {
        self.fragment_ms
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// The pipeline lock (systemd's watchdog probes it).
    pub fn pipeline(&self) -> &SharedPipeline {
        &self.pipeline
    }

    /// Frames in and parts out.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    pub fn snapshots(&self) -> &Arc<Snapshots> {
        &self.snapshots
    }

    pub fn hls(&self) -> &Arc<Hls> {
        &self.hls
    }

    /// What `/api/status` and `/metrics` show: status, the hub's and the pipeline's counters.
    pub fn snapshot(&self) -> Snapshot {
        self.status
            .snapshot(self.hub.counters(), self.counters.frame_counts())
    }

    /// Ends every viewer's endless response (shutdown).
    pub fn close(&self) {
        self.hub.close();
    }

    /// Waits for the source supervisor to end (after `shutdown` turned true).
    pub async fn stopped(&self) {
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}
