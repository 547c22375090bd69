//! HTTP: routes, the chunked CMAF stream, status and metrics.
//!
//! `/api/video/cmaf` is one endless response whose body is a sequence of records
//! `[u32 big-endian length][payload]`: the init segment first, then `prft`+`moof`+`mdat`
//! fragments, each handed to hyper the moment it is cut; a zero-length record is a heartbeat
//! after [`HEARTBEAT`] of silence, so tunnels and proxies keep the connection open. The socket
//! has `TCP_NODELAY`, so a fragment is not held back waiting for an ACK.
//!
//! `/hls/…` is the LL-HLS view of the same parts ([`crate::serve::hls`]); its requests may be held
//! (blocking playlist reload), so handling is async.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::appliance::{Device, DeviceInfo};
use crate::gate::access::Access;
use crate::gate::auth::Auth;
use crate::gate::limits;
use crate::gate::origin;
use crate::gate::policy::{self, Admission, Policy, LOGIN_PAGE};
use crate::hub::Viewer;
use crate::metrics::{self, Family};
use crate::serve::hls::Reply;
use crate::serve::progress::Progress;
use crate::serve::snapshot;
use crate::serve::ui;
use crate::stream::Stream;

/// Sent when nothing else went out for this long. Cloudflare cuts idle streams after 100 s;
/// a few seconds also lets clients notice a dead connection quickly.
pub const HEARTBEAT: Duration = Duration::from_secs(3);
/// How long shutdown waits for responses to finish before closing sockets.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Everything a request handler may look at.
#[derive(Debug)]
pub struct AppState {
    /// The cameras, at least one; the first is also served at the plain paths.
    pub streams: Vec<Arc<Stream>>,
    /// The LAN password policy, if any (for `/metrics`).
    pub auth: Option<Arc<Auth>>,
    /// The tunnel listener's Cloudflare Access policy, if any (for `/metrics`).
    pub access: Option<Arc<Access>>,
    /// What the appliance reports about itself (`"device"` in `/api/status`); `None` off the
    /// appliance.
    pub device: Option<Arc<Device>>,
}

/// `/api/status`: the stream's figures, and the device's when pinhole runs as the appliance.
#[derive(Debug, serde::Serialize)]
struct StatusBody {
    #[serde(flatten)]
    stream: crate::status::Snapshot,
    snapshot: snapshot::SnapshotCounters,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<DeviceInfo>,
}

/// The routes, decoded from method and path in one pure function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Index,
    /// A static file of the web UI: an index into [`ui::FILES`].
    Ui(usize),
    /// The server's wall clock, for the player's clock-offset estimate.
    Time,
    Cmaf,
    Status,
    /// A JPEG of the newest frame ([`snapshot`]).
    Snapshot,
    Metrics,
    /// The list of cameras.
    Streams,
    /// `/streams/NAME` without the slash: the player lives at `/streams/NAME/`.
    StreamRedirect,
    /// A name under `/hls/` (see [`media::hls::Resource`]).
    Hls(media::hls::Resource),
    NotFound,
    MethodNotAllowed(&'static str),
}

/// Which camera a path is about, and the path within it: `/streams/NAME/REST` is camera NAME
/// with `/REST`; any other path is the first camera's. `None` for an unknown name.
pub fn split_stream<'a>(names: &[&str], path: &'a str) -> Option<(usize, &'a str)> {
    let Some(rest) = path.strip_prefix("/streams/") else {
        return Some((0, path));
    };
    let (name, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    names.iter().position(|n| *n == name).map(|i| (i, tail))
}

pub fn route(method: &Method, path: &str) -> Route {
    if path.is_empty() {
        return Route::StreamRedirect;
    }
    if let Some(name) = path.strip_prefix("/hls/") {
        return match media::hls::Resource::parse(name) {
            Some(r) if method == Method::GET || method == Method::HEAD => Route::Hls(r),
            Some(_) => Route::MethodNotAllowed("GET, HEAD"),
            None => Route::NotFound,
        };
    }
    let (allowed, r) = match path {
        "/" | "/index.html" => ("GET, HEAD", Route::Index),
        // POST too: quick tunnels hold back GET streams (cloudflared #1449).
        "/api/video/cmaf" => ("GET, POST", Route::Cmaf),
        "/api/status" => ("GET, HEAD", Route::Status),
        "/api/snapshot.jpg" => ("GET, HEAD", Route::Snapshot),
        "/metrics" => ("GET, HEAD", Route::Metrics),
        "/api/time" => ("GET, HEAD", Route::Time),
        "/api/streams" => ("GET, HEAD", Route::Streams),
        _ => match ui::find(path) {
            Some(i) => ("GET, HEAD", Route::Ui(i)),
            None => return Route::NotFound,
        },
    };
    let ok = match r {
        Route::Cmaf => method == Method::GET || method == Method::POST,
        _ => method == Method::GET || method == Method::HEAD,
    };
    if ok {
        r
    } else {
        Route::MethodNotAllowed(allowed)
    }
}

/// Response body: a whole buffer, or the endless stream.
#[derive(Debug)]
pub enum Body {
    Full(Option<Bytes>),
    Cmaf(Box<CmafBody>),
}

impl Body {
    fn full(b: impl Into<Bytes>) -> Body {
        Body::Full(Some(b.into()))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Cmaf(s) => s.poll_record(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Body::Full(Some(b)) => http_body::SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => http_body::SizeHint::with_exact(0),
            Body::Cmaf(_) => http_body::SizeHint::default(),
        }
    }
}

/// The body of `/api/video/cmaf` for one viewer.
#[derive(Debug)]
pub struct CmafBody {
    viewer: Viewer,
    heartbeat: Pin<Box<Sleep>>,
    /// Generation of the init segment this viewer has; a part needing another one gets it first.
    init_generation: Option<u32>,
    /// A part waiting behind the init segment sent just before it.
    pending: Option<Bytes>,
}

const HEARTBEAT_RECORD: Bytes = Bytes::from_static(&[0, 0, 0, 0]);

impl CmafBody {
    pub fn new(viewer: Viewer) -> CmafBody {
        CmafBody {
            viewer,
            heartbeat: Box::pin(tokio::time::sleep(HEARTBEAT)),
            init_generation: None,
            pending: None,
        }
    }

    fn sent(&mut self, b: Bytes) -> Poll<Option<Bytes>> {
        self.heartbeat.as_mut().reset(Instant::now() + HEARTBEAT);
        self.viewer.hub().add_bytes_sent(b.len());
        Poll::Ready(Some(b))
    }

    fn poll_record(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(b) = self.pending.take() {
            return self.sent(b);
        }
        match self.viewer.poll_next(cx) {
            Poll::Ready(Some(entry)) => {
                if self.init_generation != Some(entry.init.generation) {
                    self.init_generation = Some(entry.init.generation);
                    self.pending = Some(entry.part.framed.clone());
                    return self.sent(entry.init.framed.clone());
                }
                self.sent(entry.part.framed.clone())
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if self.heartbeat.as_mut().poll(cx).is_ready() {
                    return self.sent(HEARTBEAT_RECORD);
                }
                Poll::Pending
            }
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Body::full(format!("{text}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn with_type(body: Body, content_type: &'static str, cache: &'static str) -> Response<Body> {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static(cache),
    );
    r
}

/// `/api/snapshot.jpg`: the JPEG with its frame's capture time, never cached by anyone; `400`
/// naming the allowed range for a bad option, `503` with the reason when the camera is down.
async fn snapshot_response(stream: &Stream, req: &Request<Incoming>) -> Response<Body> {
    let opts = match snapshot::Options::parse(req.uri().query()) {
        Ok(o) => o,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &e),
    };
    match stream.snapshots().take(opts).await {
        Ok(j) => {
            let mut r = with_type(
                Body::full(j.bytes),
                "image/jpeg",
                "no-store, no-cache, max-age=0, must-revalidate",
            );
            let h = r.headers_mut();
            h.insert(header::PRAGMA, header::HeaderValue::from_static("no-cache"));
            h.insert(header::EXPIRES, header::HeaderValue::from_static("0"));
            h.insert(
                "x-capture-unix-ms",
                header::HeaderValue::from(j.capture_unix_us / 1000),
            );
            if let Ok(v) = header::HeaderValue::from_str(&httpdate(j.capture_unix_us)) {
                h.insert(header::LAST_MODIFIED, v);
            }
            r
        }
        Err(snapshot::Refused::Unavailable(why) | snapshot::Refused::Failed(why)) => {
            // Viewers through the tunnel read this: the camera's error, redacted.
            let mut r = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("no snapshot: {}", crate::redact::redact(&why)),
            );
            let h = r.headers_mut();
            h.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            h.insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            r
        }
    }
}

/// An HTTP date (RFC 9110 IMF-fixdate) from Unix microseconds.
fn httpdate(unix_us: u64) -> String {
    let secs = unix_us / 1_000_000;
    let days = secs / 86_400;
    let sod = secs % 86_400;
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let (y, m, d) = media::hls::civil_from_days(days);
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m.clamp(1, 12) - 1) as usize];
    format!(
        "{weekday}, {d:02} {month} {y} {:02}:{:02}:{:02} GMT",
        sod / 3_600,
        sod / 60 % 60,
        sod % 60
    )
}

/// The gate's answer rendered: its status and headers as they are, its [`policy::Reply`] as
/// plain text or as the embedded login page showing the message.
fn refusal(r: Response<policy::Reply>) -> Response<Body> {
    let (mut parts, reply) = r.into_parts();
    let (body, content_type) = match reply {
        policy::Reply::Empty => (Body::Full(None), None),
        policy::Reply::Text(msg) => (
            Body::full(format!("{msg}\n")),
            Some("text/plain; charset=utf-8"),
        ),
        policy::Reply::LoginPage(msg) => {
            let html = ui::find(LOGIN_PAGE)
                .and_then(|i| ui::FILES.get(i))
                .map(|f| String::from_utf8_lossy(f.body).replace("<!--MESSAGE-->", &msg))
                .unwrap_or_else(|| format!("{msg}\n"));
            (Body::full(html), Some("text/html; charset=utf-8"))
        }
    };
    if let Some(t) = content_type {
        parts
            .headers
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(t));
    }
    Response::from_parts(parts, body)
}

/// An LL-HLS answer as a response. Which pages elsewhere may read it is decided in [`serve`]
/// ([`cors_readable`], [`crate::gate::origin::Names::cors_allowed`]).
fn hls_response(r: Reply) -> Response<Body> {
    let mut resp = Response::new(Body::full(r.body));
    *resp.status_mut() = r.status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(r.content_type),
    );
    if let Ok(v) = header::HeaderValue::from_str(&r.cache_control) {
        h.insert(header::CACHE_CONTROL, v);
    }
    if let Some(s) = r.retry_after {
        h.insert(header::RETRY_AFTER, header::HeaderValue::from(s));
    }
    resp
}

/// The answers a page on another origin may read when the origin is allowed: the LL-HLS files
/// (players such as Mainsail's hls.js on the printer's host) and the clock.
pub fn cors_readable(path: &str) -> bool {
    let p = path
        .strip_prefix("/streams/")
        .and_then(|r| r.find('/').map(|i| &r[i..]))
        .unwrap_or(path);
    p.starts_with("/hls/") || p == "/api/time"
}

/// A UI file with its ETag; `304 Not Modified` when the client already has this version.
/// `no-cache`: the browser revalidates every time, so a new firmware's UI is never mixed with
/// an old one's cached modules.
fn ui_file(i: usize, req: &Request<Incoming>) -> Response<Body> {
    let Some(f) = ui::FILES.get(i) else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let etag = f.etag();
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| f.matches(v));
    let mut r = if fresh {
        let mut r = Response::new(Body::Full(None));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        );
        r
    } else {
        with_type(Body::full(f.body), f.content_type, "no-cache")
    };
    if let Ok(v) = header::HeaderValue::from_str(&etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

pub async fn handle(state: &AppState, req: &Request<Incoming>) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    let names: Vec<&str> = state.streams.iter().map(|s| s.name()).collect();
    let Some((idx, path)) = split_stream(&names, req.uri().path()) else {
        return plain(StatusCode::NOT_FOUND, "no such stream (see /api/streams)");
    };
    let Some(stream) = state.streams.get(idx) else {
        return plain(StatusCode::NOT_FOUND, "no such stream (see /api/streams)");
    };
    let mut resp = match route(req.method(), path) {
        Route::Index => match ui::find("/") {
            Some(i) => ui_file(i, req),
            None => plain(StatusCode::NOT_FOUND, "not found"),
        },
        Route::StreamRedirect => {
            let mut r = plain(StatusCode::MOVED_PERMANENTLY, "moved");
            let to = format!("/streams/{}/", stream.name());
            if let Ok(v) = header::HeaderValue::from_str(&to) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Route::Ui(i) => ui_file(i, req),
        Route::Streams => {
            let list: Vec<serde_json::Value> = state
                .streams
                .iter()
                .map(|s| {
                    let snap = s.snapshot();
                    serde_json::json!({
                        "name": s.name(),
                        "path": format!("/streams/{}/", s.name()),
                        "source": snap.source.uri,
                        "state": snap.source.state,
                        "codec": snap.video.codec,
                        "width": snap.video.width,
                        "height": snap.video.height,
                        "viewers": snap.viewers,
                    })
                })
                .collect();
            match serde_json::to_vec(&serde_json::json!({ "streams": list })) {
                Ok(json) => with_type(Body::full(json), "application/json", "no-store"),
                Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("streams: {e}")),
            }
        }
        Route::Time => {
            let unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64() * 1000.0)
                .unwrap_or(0.0);
            with_type(
                Body::full(format!("{{\"unix_ms\":{unix_ms:.3}}}")),
                "application/json",
                "no-store",
            )
        }
        Route::Cmaf => {
            let viewer = stream.hub().subscribe();
            with_type(
                Body::Cmaf(Box::new(CmafBody::new(viewer))),
                "video/mp4",
                "no-store",
            )
        }
        Route::Snapshot => snapshot_response(stream, req).await,
        Route::Status => {
            let body = StatusBody {
                stream: stream.snapshot(),
                snapshot: stream.snapshots().counters(),
                device: state.device.as_ref().map(|d| d.get()),
            };
            match serde_json::to_vec(&body) {
                Ok(json) => with_type(Body::full(json), "application/json", "no-store"),
                Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("status: {e}")),
            }
        }
        Route::Metrics => {
            // Each camera's families (labelled stream="NAME" when there are several), then the
            // device's own, unlabelled.
            let per_stream: Vec<(&str, Vec<Family>)> = state
                .streams
                .iter()
                .map(|s| {
                    let mut f = s.snapshot().families();
                    f.extend(s.hls().families());
                    f.extend(s.snapshots().families());
                    (s.name(), f)
                })
                .collect();
            let mut text = String::with_capacity(8192);
            metrics::render_streams(&mut text, &per_stream);
            let mut device = Vec::new();
            if let Some(a) = &state.auth {
                device.extend(a.families());
            }
            if let Some(a) = &state.access {
                device.extend(a.families());
            }
            if let Some(d) = &state.device {
                device.extend(d.families());
            }
            metrics::render(&mut text, &device);
            with_type(
                Body::full(text),
                "text/plain; version=0.0.4; charset=utf-8",
                "no-store",
            )
        }
        Route::Hls(res) => hls_response(stream.hls().respond(res, req.uri().query()).await),
        Route::NotFound => plain(StatusCode::NOT_FOUND, "not found"),
        Route::MethodNotAllowed(allowed) => {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allowed));
            r
        }
    };
    if head {
        *resp.body_mut() = Body::Full(None);
    }
    resp
}

/// Binds every address up front so a busy port is a startup error, not a later surprise.
pub async fn bind(addrs: &[SocketAddr]) -> anyhow::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for addr in addrs {
        out.push(bind_one(*addr).await?);
    }
    Ok(out)
}

/// Binds `addr` with the listener's bounded send buffer ([`limits::SEND_BUFFER_BYTES`]),
/// which every accepted connection inherits.
pub async fn bind_one(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let bind = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As TcpListener::bind does: a restart may bind while old connections linger.
        socket.set_reuseaddr(true)?;
        socket.set_send_buffer_size(limits::SEND_BUFFER_BYTES)?;
        socket.bind(addr)?;
        socket.listen(1024)
    };
    bind().map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (is another pinhole or another server already listening there? choose another address)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot listen on {addr}: {e}{hint}")
    })
}

/// One bound socket with what it speaks and whom it lets in. The policy travels with the
/// listener into every connection it accepts: see [`crate::gate::policy`].
pub struct Listener {
    pub tcp: TcpListener,
    /// HTTPS when set.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub policy: Policy,
    /// Open connections allowed per client (`None`: only the total applies; the tunnel
    /// listener's only client is cloudflared).
    pub per_client: Option<u32>,
    /// Peers whose forwarding headers name the client ([`origin::client_address`]).
    pub trusted_proxies: Arc<[origin::Cidr]>,
    /// The device's names: for the `Host` check and which origins may read (CORS).
    pub names: Arc<origin::Names>,
    /// Refuse (`421`) a `Host` that does not name the device: on open LAN listeners.
    pub check_host: bool,
}

impl Listener {
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        match self.tcp.local_addr() {
            Ok(a) => format!("{scheme}://{a}/"),
            Err(_) => format!("{scheme}://?/"),
        }
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("url", &self.url())
            .field("policy", &self.policy.describe())
            .finish_non_exhaustive()
    }
}

/// Serves until `shutdown` turns true, then lets open responses finish for up to
/// [`SHUTDOWN_GRACE`] (the caller has already closed the hub, which ends the endless ones).
pub async fn serve(
    listeners: Vec<Listener>,
    state: Arc<AppState>,
    shutdown: watch::Receiver<bool>,
) {
    let graceful = Arc::new(hyper_util::server::graceful::GracefulShutdown::new());
    let mut loops = Vec::new();
    for listener in listeners {
        let state = state.clone();
        let graceful = graceful.clone();
        let mut shutdown = shutdown.clone();
        loops.push(tokio::spawn(async move {
            let Listener {
                tcp,
                tls,
                policy,
                per_client,
                trusted_proxies,
                names,
                check_host,
            } = listener;
            // Until a request carried credentials, a connection counts as unauthenticated,
            // on a listener that asks for them and bounds clients at all.
            let asks = matches!(policy, Policy::Password(_));
            let slots = limits::Slots::new(limits::Limits {
                total: limits::MAX_CONNECTIONS,
                per_client,
                unauthenticated: per_client
                    .filter(|_| asks)
                    .map(|_| limits::MAX_UNAUTHENTICATED_PER_CLIENT),
            });
            let policy = Arc::new(policy);
            loop {
                let (stream, peer) = tokio::select! {
                    r = tcp.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            // EMFILE and friends: back off briefly instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = shutdown.changed() => break,
                };
                // Over its share, or the listener is full: closed at once, before any byte is
                // read.
                let slot = match slots.admit(peer.ip()) {
                    Ok(slot) => Arc::new(slot),
                    Err(why) => {
                        tracing::debug!(%peer, ?why, "connection refused by the limits; closed");
                        continue;
                    }
                };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY not set");
                }
                let local = match stream.local_addr() {
                    Ok(a) => a.ip(),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "no local address; closed");
                        continue;
                    }
                };
                let (stream, stall) = Progress::new(stream);
                let secure = tls.is_some();
                let state = state.clone();
                let policy = policy.clone();
                let conn_slot = slot.clone();
                let trusted = trusted_proxies.clone();
                let names = names.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let state = state.clone();
                    let policy = policy.clone();
                    let slot = conn_slot.clone();
                    let trusted = trusted.clone();
                    let names = names.clone();
                    async move {
                        // DNS rebinding: a page elsewhere whose name now points here.
                        if check_host {
                            let host = req
                                .headers()
                                .get(header::HOST)
                                .and_then(|h| h.to_str().ok())
                                .map(str::to_owned)
                                .or_else(|| req.uri().authority().map(|a| a.to_string()));
                            if let Some(h) = host.filter(|h| !names.host_allowed(h, local)) {
                                tracing::debug!(%peer, host = %h, "Host is not this device; refused");
                                return Ok::<_, Infallible>(plain(
                                    StatusCode::MISDIRECTED_REQUEST,
                                    "this Host is not one of the camera's names or addresses \
                                     (add it to [lan] hosts)",
                                ));
                            }
                        }
                        let cors = cors_readable(req.uri().path());
                        let allowed_origin = req
                            .headers()
                            .get(header::ORIGIN)
                            .filter(|o| {
                                o.to_str().is_ok_and(|o| names.cors_allowed(o, local))
                            })
                            .cloned();
                        let client = origin::client_address(peer.ip(), req.headers(), &trusted);
                        let mut resp = match policy::admit(&policy, req, client, secure).await {
                            Admission::Serve(req) => {
                                if policy::authenticated(&policy, req.uri().path()) {
                                    slot.authenticated();
                                }
                                handle(&state, &req).await
                            }
                            Admission::Answer(resp) => refusal(resp),
                        };
                        if cors {
                            let h = resp.headers_mut();
                            h.insert(header::VARY, header::HeaderValue::from_static("Origin"));
                            if let Some(o) = allowed_origin {
                                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
                            }
                        }
                        // A refusal ends the connection: whatever the client pipelined
                        // behind it is not read, and it costs a new connection (and a
                        // place among its few unauthenticated ones) to try again.
                        if matches!(
                            resp.status(),
                            StatusCode::UNAUTHORIZED
                                | StatusCode::FORBIDDEN
                                | StatusCode::TOO_MANY_REQUESTS
                        ) {
                            resp.headers_mut().insert(
                                header::CONNECTION,
                                header::HeaderValue::from_static("close"),
                            );
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits::HEADER_TIMEOUT)
                    .max_buf_size(limits::MAX_HEADER_BYTES);
                let graceful = graceful.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let serve = async {
                        match tls {
                            None => {
                                let conn = builder.serve_connection(TokioIo::new(stream), service);
                                graceful.watch(conn).await
                            }
                            Some(acceptor) => {
                                let handshake = tokio::time::timeout(
                                    limits::TLS_HANDSHAKE_TIMEOUT,
                                    acceptor.accept(stream),
                                );
                                match handshake.await {
                                    Ok(Ok(tls)) => {
                                        let conn =
                                            builder.serve_connection(TokioIo::new(tls), service);
                                        graceful.watch(conn).await
                                    }
                                    Ok(Err(e)) => {
                                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                        Ok(())
                                    }
                                    Err(_) => {
                                        tracing::debug!(%peer, "TLS handshake timed out");
                                        Ok(())
                                    }
                                }
                            }
                        }
                    };
                    // Dropping the connection closes it: a client that stopped reading, or
                    // one whose place a newcomer took (the listener was full).
                    let result = tokio::select! {
                        r = serve => r,
                        _ = stall.stalled(limits::WRITE_STALL_TIMEOUT) => {
                            tracing::debug!(%peer, "client read nothing for {} s; closed", limits::WRITE_STALL_TIMEOUT.as_secs());
                            Ok(())
                        }
                        _ = slot.closed() => {
                            tracing::debug!(%peer, "closed to make room on a full listener");
                            Ok(())
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    drop(slot);
                });
            }
        }));
    }
    for l in loops {
        let _ = l.await;
    }
    let graceful = Arc::try_unwrap(graceful).unwrap_or_default();
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("connections still open after {:?}; closing", SHUTDOWN_GRACE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_imf_fixdate() {
        assert_eq!(httpdate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            httpdate(1_700_000_000_123_456),
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
    }
    use media::hls::Resource;

    #[test]
    fn stream_paths_pick_the_camera_and_everything_else_is_the_first() {
        let names = ["front", "garage"];
        assert_eq!(
            split_stream(&names, "/api/video/cmaf"),
            Some((0, "/api/video/cmaf"))
        );
        assert_eq!(
            split_stream(&names, "/streams/garage/api/video/cmaf"),
            Some((1, "/api/video/cmaf"))
        );
        assert_eq!(split_stream(&names, "/streams/front/"), Some((0, "/")));
        assert_eq!(split_stream(&names, "/streams/garage"), Some((1, "")));
        assert_eq!(
            split_stream(&names, "/streams/garage/hls/part-7-1.m4s"),
            Some((1, "/hls/part-7-1.m4s"))
        );
        assert_eq!(split_stream(&names, "/streams/attic/"), None);
        assert_eq!(split_stream(&names, "/streams/../etc/passwd"), None);
        assert_eq!(split_stream(&names, "/streams//api/status"), None);
        assert_eq!(route(&Method::GET, ""), Route::StreamRedirect);
        assert_eq!(route(&Method::GET, "/api/streams"), Route::Streams);
    }

    #[test]
    fn routes_decode_as_a_table() {
        let cases = [
            (Method::GET, "/", Route::Index),
            (Method::HEAD, "/", Route::Index),
            (Method::GET, "/api/video/cmaf", Route::Cmaf),
            (Method::POST, "/api/video/cmaf", Route::Cmaf),
            (
                Method::PUT,
                "/api/video/cmaf",
                Route::MethodNotAllowed("GET, POST"),
            ),
            (Method::GET, "/api/status", Route::Status),
            (
                Method::POST,
                "/api/status",
                Route::MethodNotAllowed("GET, HEAD"),
            ),
            (Method::GET, "/metrics", Route::Metrics),
            (Method::GET, "/api/snapshot.jpg", Route::Snapshot),
            (Method::GET, "/../etc/passwd", Route::NotFound),
            (Method::GET, "/api/video/cmaf/", Route::NotFound),
            (
                Method::GET,
                "/hls/stream.m3u8",
                Route::Hls(Resource::MediaPlaylist),
            ),
            (
                Method::HEAD,
                "/hls/index.m3u8",
                Route::Hls(Resource::Multivariant),
            ),
            (
                Method::GET,
                "/hls/part-12-3.m4s",
                Route::Hls(Resource::Part { msn: 12, index: 3 }),
            ),
            (
                Method::GET,
                "/hls/seg-7.m4s",
                Route::Hls(Resource::Segment { msn: 7 }),
            ),
            (
                Method::GET,
                "/hls/init-2.mp4",
                Route::Hls(Resource::Init { generation: 2 }),
            ),
            (
                Method::POST,
                "/hls/stream.m3u8",
                Route::MethodNotAllowed("GET, HEAD"),
            ),
            (Method::GET, "/hls/seg-07.m4s", Route::NotFound),
            (Method::GET, "/hls/../index.html", Route::NotFound),
            (Method::GET, "/hls/", Route::NotFound),
            (Method::GET, "/hls", Route::NotFound),
        ];
        for (m, p, want) in cases {
            assert_eq!(route(&m, p), want, "{m} {p}");
        }
    }

    #[test]
    fn ui_files_and_time_decode_as_a_table() {
        let ui = |name: &str| {
            Route::Ui(
                crate::serve::ui::FILES
                    .iter()
                    .position(|f| f.name == name)
                    .unwrap(),
            )
        };
        let cases = [
            (Method::GET, "/index.html", Route::Index),
            (Method::GET, "/js/app.js", ui("js/app.js")),
            (Method::HEAD, "/style.css", ui("style.css")),
            (
                Method::POST,
                "/js/app.js",
                Route::MethodNotAllowed("GET, HEAD"),
            ),
            (Method::GET, "/api/time", Route::Time),
            (Method::HEAD, "/api/time", Route::Time),
            (
                Method::POST,
                "/api/time",
                Route::MethodNotAllowed("GET, HEAD"),
            ),
            (Method::GET, "/js/../Cargo.toml", Route::NotFound),
            (Method::GET, "/js/..%2f..%2fCargo.toml", Route::NotFound),
            (Method::GET, "/%2e%2e/etc/passwd", Route::NotFound),
            (Method::GET, "//etc/passwd", Route::NotFound),
            (Method::GET, "/js/", Route::NotFound),
            (Method::GET, "/js", Route::NotFound),
            (Method::GET, "/web-ui/index.html", Route::NotFound),
        ];
        for (m, p, want) in cases {
            assert_eq!(route(&m, p), want, "{m} {p}");
        }
    }
}
