//! pinhole: H.264 from a camera (or the built-in test source) to browsers, as chunked CMAF over
//! HTTP with an LL-HLS fallback. See `docs/` and `pinhole --help`.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use clap::Parser;
use tokio::sync::watch;

use media::segmenter::SegmenterConfig;
use pinhole::config::{Cli, Config};
use pinhole::{http, hub, pipeline, sdnotify, source, status};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_cli(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pinhole: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log.as_deref());
    // One thread runs every connection: the work per fragment is tiny, and a Pi has four cores
    // to share with the encoder and cloudflared. Waking viewers then needs no hand-over between
    // workers, which measured cheaper than two workers. The sources that block (the exec pipe
    // reader, the test encoder) have threads of their own.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pinhole: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("pinhole: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(f) => EnvFilter::try_new(f).unwrap_or_else(|e| {
            eprintln!("pinhole: log filter {f:?} is invalid ({e}); using \"info\"");
            EnvFilter::new("info")
        }),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(config: Config) -> anyhow::Result<()> {
    let listeners = http::bind(&config.listen).await?;
    for l in &listeners {
        if let Ok(addr) = l.local_addr() {
            tracing::info!("serving on http://{addr}/");
        }
    }

    let hub = hub::Hub::new();
    let status = Arc::new(status::Status::new(
        config.source.display_uri(),
        config.fragment_ms,
    ));
    let seg_config = SegmenterConfig {
        fragment_duration_90k: config.fragment_ms * 90,
        low_delay_vui: true,
    };
    let pipeline = pipeline::Pipeline::new(seg_config, hub.clone(), status.clone())
        .context("segmenter configuration")?;
    let flow = pipeline.flow();
    let pipeline = Arc::new(Mutex::new(pipeline));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let notify_task = spawn_sd_notify(
        flow,
        pipeline.clone(),
        status.clone(),
        hub.clone(),
        shutdown_rx.clone(),
    );
    let source_task = tokio::spawn(source::supervise_with(
        config.source.clone(),
        config.source_timeout,
        pipeline,
        status.clone(),
        shutdown_rx.clone(),
    ));
    let state = Arc::new(http::AppState {
        hub: hub.clone(),
        status,
    });
    let server = tokio::spawn(http::serve(listeners, state, shutdown_rx));

    wait_for_signal().await?;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    // Ends the endless responses so graceful shutdown can finish.
    hub.close();
    let grace = http::SHUTDOWN_GRACE + std::time::Duration::from_secs(1);
    let _ = tokio::time::timeout(grace, server).await;
    let _ = tokio::time::timeout(grace, source_task).await;
    if let Some(t) = notify_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), t).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Under systemd (`Type=notify`): `READY=1` after the first fragment, `STATUS=` lines, and the
/// watchdog fed from the frame path (see `pinhole::sdnotify`). Nothing otherwise.
fn spawn_sd_notify(
    flow: Arc<sdnotify::Flow>,
    pipeline: source::SharedPipeline,
    status: Arc<status::Status>,
    hub: Arc<hub::Hub>,
    shutdown: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(feature = "test-hooks")]
    sdnotify::wedge_hook(flow.clone(), pipeline.clone());
    match sdnotify::Notifier::from_env() {
        Ok(Some(n)) => Some(tokio::spawn(sdnotify::run(
            n, flow, pipeline, status, hub, shutdown,
        ))),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("not telling systemd about readiness: {e}");
            None
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
