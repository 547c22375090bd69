//! pinhole: H.264 from a camera (or the built-in test source) to browsers, as chunked CMAF over
//! HTTP with an LL-HLS fallback. See `docs/` and `pinhole --help`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use tokio::sync::watch;

use pinhole::cli::{Cli, Command};
use pinhole::config::Config;
use pinhole::gate::policy::Policy;
use pinhole::gate::{access, auth, limits, origin, tls};
use pinhole::serve::http;
use pinhole::stream::Stream;
use pinhole::{sdnotify, source};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::HashPassword) = cli.command {
        return hash_password();
    }
    if let Some(Command::SetupImport(args)) = &cli.command {
        return setup_import(args);
    }
    if let Some(Command::Probe) = cli.command {
        let report = source::v4l2::probe::render(&source::v4l2::probe::gather());
        // A closed pipe (`pinhole probe | head`) is not a failure.
        let _ = std::io::Write::write_all(&mut std::io::stdout(), report.as_bytes());
        return ExitCode::SUCCESS;
    }
    let config = match Config::resolve(&cli.flags()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pinhole: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        match &cli.config {
            Some(path) => println!("pinhole: {}: configuration OK", path.display()),
            None => println!("pinhole: configuration OK"),
        }
        return ExitCode::SUCCESS;
    }
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

/// `pinhole hash-password`: one line from stdin (echo off on a terminal) to an argon2id hash.
fn hash_password() -> ExitCode {
    use std::io::{BufRead as _, IsTerminal as _};
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let saved = if tty {
        eprint!("Password: ");
        no_echo()
    } else {
        None
    };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        let _ =
            nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &t);
        eprintln!();
    }
    if let Err(e) = read {
        eprintln!("pinhole hash-password: cannot read standard input: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    match auth::hash_password(password) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pinhole hash-password: {e} (give the password on standard input, one line)");
            ExitCode::FAILURE
        }
    }
}

/// `pinhole setup-import`: one line on stderr (the journal) saying what happened.
fn setup_import(args: &pinhole::cli::SetupImportArgs) -> ExitCode {
    use pinhole::appliance::firstboot::{run, Outcome};
    let (from, to) = (args.from.display(), args.to.display());
    let report = match run(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pinhole setup-import: {e}");
            return ExitCode::from(3);
        }
    };
    if report.finished_interrupted {
        eprintln!("pinhole setup-import: finished an import that was interrupted (power cut?)");
    }
    if let Some(e) = &report.result_file_error {
        eprintln!(
            "pinhole setup-import: could not write the result file on the boot partition: {e}"
        );
    }
    match report.outcome {
        Outcome::NothingToDo => {
            eprintln!("pinhole setup-import: no {from}: nothing to import; the configuration in {to} stays");
        }
        Outcome::Seeded => {
            eprintln!("pinhole setup-import: no {from} and no configuration yet: {to} now holds the defaults");
        }
        Outcome::Imported(tables) => {
            eprintln!(
                "pinhole setup-import: imported [{}] from {from} into {to}, and removed the file from the boot partition",
                tables.join("], [")
            );
        }
        Outcome::Rejected(reason) => {
            eprintln!("pinhole setup-import: refused; the previous configuration stays. {reason}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

/// What the appliance reports about itself (`"device"` in `/api/status`), when there is
/// anything: on an A/B device its version, booted slot and last update (appliance/update.rs,
/// kept current: a new slot is committed after pinhole is ready), and a first-boot file that
/// `pinhole setup-import` refused ($STATE_DIRECTORY), and the SSH host key fingerprints
/// (`/data/ssh`, or `$PINHOLE_SSH_HOST_KEYS`).
fn device() -> Option<Arc<pinhole::appliance::Device>> {
    use pinhole::appliance::{firstboot, hostkeys, update, Device, DeviceInfo};
    let mut info = DeviceInfo {
        version: pinhole::VERSION.to_string(),
        ..DeviceInfo::default()
    };
    let ab = update::apply(&mut info, &update::Sources::default());
    info.setup_error = firstboot::setup_error_from_env();
    if let Some(e) = &info.setup_error {
        tracing::warn!("the owner's first-boot file was refused: {e}");
    }
    // The image: what setup-import copied into the state directory (pinhole's sandbox cannot
    // read /data/ssh); elsewhere the directory itself ($PINHOLE_SSH_HOST_KEYS).
    info.ssh_host_keys = firstboot::host_keys_from_env();
    if info.ssh_host_keys.is_empty() {
        info.ssh_host_keys = hostkeys::fingerprints(&hostkeys::dir_from_env());
    }
    if !ab && info.setup_error.is_none() && info.ssh_host_keys.is_empty() {
        return None;
    }
    let d = Arc::new(Device::new(info));
    if ab {
        update::spawn_refresh(d.clone());
    }
    Some(d)
}

/// Turns terminal echo off; returns the settings to restore.
fn no_echo() -> Option<nix::sys::termios::Termios> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let saved = tcgetattr(std::io::stdin()).ok()?;
    let mut t = saved.clone();
    t.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(std::io::stdin(), SetArg::TCSANOW, &t).ok()?;
    Some(saved)
}

/// Binds the LAN listeners and the tunnel listener, each with its own policy.
async fn listeners(
    config: &Config,
) -> anyhow::Result<(
    Vec<http::Listener>,
    Option<Arc<auth::Auth>>,
    Option<Arc<access::Access>>,
)> {
    let tls = match &config.tls {
        Some(source) => {
            let addrs: Vec<_> = config.listen.iter().map(|l| l.addr.ip()).collect();
            let loaded = tls::load(source, &addrs).map_err(|e| anyhow::anyhow!("HTTPS: {e}"))?;
            if loaded.generated {
                tracing::info!(cert = %loaded.cert_path.display(), "made a self-signed certificate for HTTPS");
            }
            tracing::info!(
                cert = %loaded.cert_path.display(),
                sha256 = %loaded.fingerprint,
                "HTTPS certificate (compare the fingerprint with what the browser shows)"
            );
            Some(tokio_rustls::TlsAcceptor::from(loaded.config))
        }
        None => None,
    };
    let auth = match &config.password_hash {
        Some(h) => Some(Arc::new(
            auth::Auth::new(h).map_err(|e| anyhow::anyhow!("lan.password_hash: {e}"))?,
        )),
        None => None,
    };
    let lan_policy = match &auth {
        Some(a) => Policy::Password(a.clone()),
        None => Policy::Open,
    };
    let mut out = Vec::new();
    let names = Arc::new(origin::Names::of_this_host(
        &config.hosts,
        &config.cors_origins,
    ));
    let trusted: Arc<[origin::Cidr]> = config.trusted_proxies.clone().into();
    for l in &config.listen {
        let listener = http::Listener {
            tcp: http::bind_one(l.addr).await?,
            tls: if l.https { tls.clone() } else { None },
            policy: lan_policy.clone(),
            per_client: Some(limits::MAX_CONNECTIONS_PER_CLIENT),
            trusted_proxies: trusted.clone(),
            names: names.clone(),
            // A password already keeps a rebound page out (it has no credentials).
            check_host: matches!(lan_policy, Policy::Open),
        };
        tracing::info!(
            "serving on {} (LAN, {})",
            listener.url(),
            listener.policy.describe()
        );
        if auth.is_none() && !l.addr.ip().is_loopback() {
            tracing::info!(
                "{} has no password: anyone who can reach it may watch (set [lan] password_hash)",
                listener.url()
            );
        }
        if auth.is_none() && l.addr.ip().is_loopback() && config.tunnel.is_some() {
            tracing::info!(
                "{} is open: point cloudflared at the tunnel listener, never at this one",
                listener.url()
            );
        }
        out.push(listener);
    }
    let access = match &config.tunnel {
        Some(t) => {
            let a = Arc::new(
                access::Access::new(t.access.clone())
                    .map_err(|e| anyhow::anyhow!("tunnel: {e}"))?,
            );
            let listener = http::Listener {
                tcp: http::bind_one(t.listen).await?,
                tls: None,
                policy: Policy::CloudflareAccess(a.clone()),
                per_client: None,
                // cloudflared connects from here; Access needs no client address.
                trusted_proxies: Arc::from(Vec::new()),
                // Cloudflare names the public host name; Access decides.
                names: names.clone(),
                check_host: false,
            };
            tracing::info!(
                "serving on {} (tunnel, {})",
                listener.url(),
                listener.policy.describe()
            );
            out.push(listener);
            Some(a)
        }
        None => None,
    };
    Ok((out, auth, access))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let (listeners, auth, access) = listeners(&config).await?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut streams = Vec::new();
    for sc in &config.streams {
        if config.streams.len() > 1 {
            tracing::info!(stream = %sc.name, source = %sc.source.display_uri(), "camera");
        }
        streams.push(Stream::start(sc, shutdown_rx.clone())?);
    }
    // systemd: readiness follows the first camera; the watchdog watches every frame path.
    let notify_task = spawn_sd_notify(streams.clone(), shutdown_rx.clone());
    if let Some(a) = &access {
        tokio::spawn(a.clone().keep_fresh(shutdown_rx.clone()));
    }
    let state = Arc::new(http::AppState {
        streams: streams.clone(),
        auth,
        access,
        device: device(),
    });
    let server = tokio::spawn(http::serve(listeners, state, shutdown_rx));

    wait_for_signal().await?;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    // Ends the endless responses so graceful shutdown can finish.
    for stream in &streams {
        stream.close();
    }
    let grace = http::SHUTDOWN_GRACE + std::time::Duration::from_secs(1);
    let _ = tokio::time::timeout(grace, server).await;
    let _ = tokio::time::timeout(grace, async {
        for stream in &streams {
            stream.stopped().await;
        }
    })
    .await;
    if let Some(t) = notify_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), t).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Under systemd (`Type=notify`): `READY=1` after the first fragment, `STATUS=` lines, and the
/// watchdog fed from the frame path (see `pinhole::sdnotify`). Nothing otherwise.
fn spawn_sd_notify(
    paths: Vec<Arc<Stream>>,
    shutdown: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(feature = "test-hooks")]
    if let Some(first) = paths.first() {
        sdnotify::wedge_hook(first);
    }
    match sdnotify::Notifier::from_env() {
        Ok(Some(n)) => Some(tokio::spawn(sdnotify::run(n, paths, shutdown))),
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
