//! Who may watch: the policy a listener enforces, before routing and before any stream work.
//!
//! Each listener carries exactly one [`Policy`] value, fixed when it is bound; the request path
//! asks only that listener's policy. So a request that reached the tunnel listener is judged by
//! Cloudflare Access and nothing else: a LAN password, cookie or Basic header means nothing there,
//! whatever the LAN policy is.
//!
//! | policy | lets in | answers itself |
//! |---|---|---|
//! | [`Policy::Open`] | everything | — |
//! | [`Policy::Password`] | a session cookie or Basic credentials; `/login.html` without | `/api/login`, `/api/logout`; `303` to the login page for the player page, `401` + `WWW-Authenticate: Basic` for everything else, `429` when guessing |
//! | [`Policy::CloudflareAccess`] | a valid `Cf-Access-Jwt-Assertion` | `403` (`503` while the key set cannot be fetched) |

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::access::Access;
use crate::auth::{self, Auth, Refusal};
use crate::http::Body;
use crate::ui;

/// The login page (public under a password policy).
pub const LOGIN_PAGE: &str = "/login.html";
/// Largest login form body.
const MAX_LOGIN_BODY: usize = 4096;
/// How long a client may take to send the login form body.
const LOGIN_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a listener demands of a request.
#[derive(Debug, Clone)]
pub enum Policy {
    /// No check (the default LAN listener, and the owner's choice).
    Open,
    /// The LAN password.
    Password(Arc<Auth>),
    /// A Cloudflare Access token (the tunnel listener, always).
    CloudflareAccess(Arc<Access>),
}

impl Policy {
    pub fn describe(&self) -> String {
        match self {
            Policy::Open => "open".into(),
            Policy::Password(_) => "password".into(),
            Policy::CloudflareAccess(a) => {
                format!("Cloudflare Access, team {}", a.config().team_domain)
            }
        }
    }
}

/// The outcome: serve the request, or this answer instead.
#[derive(Debug)]
pub enum Admission<B> {
    Serve(Request<B>),
    Answer(Response<Body>),
}

/// Judges `req` under `policy`. `secure` is whether the listener speaks HTTPS (for the cookie's
/// `Secure` attribute); `client` is the peer address (for rate limits).
pub async fn admit<B>(
    policy: &Policy,
    req: Request<B>,
    client: IpAddr,
    secure: bool,
) -> Admission<B>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match policy {
        Policy::Open => Admission::Serve(req),
        Policy::CloudflareAccess(access) => match access.check(req.headers()).await {
            Ok(()) => Admission::Serve(req),
            Err(why) => Admission::Answer(text(why.status(), why.text())),
        },
        Policy::Password(a) => password(a, req, client, secure).await,
    }
}

async fn password<B>(a: &Auth, req: Request<B>, client: IpAddr, secure: bool) -> Admission<B>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path();
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match path {
        LOGIN_PAGE if get => return Admission::Serve(req),
        "/api/login" => return Admission::Answer(login(a, req, client, secure).await),
        "/api/logout" if req.method() == Method::POST => {
            a.logout(req.headers());
            let mut r = redirect(LOGIN_PAGE);
            set_cookie(&mut r, &auth::clear_cookie(secure));
            return Admission::Answer(r);
        }
        _ => {}
    }
    match a.check(req.headers(), client).await {
        Ok(()) => Admission::Serve(req),
        Err(Refusal::Limited(wait)) => Admission::Answer(limited(wait, false)),
        Err(Refusal::Busy) => Admission::Answer(busy()),
        Err(Refusal::Missing | Refusal::Wrong) => {
            if get && (path == "/" || path == "/index.html") {
                Admission::Answer(redirect(LOGIN_PAGE))
            } else {
                let mut r = text(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized: log in or send HTTP Basic credentials",
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"pinhole\", charset=\"UTF-8\""),
                );
                Admission::Answer(r)
            }
        }
    }
}

/// `/api/login`: POST a form with `password` → `303 /` with the session cookie, or the login
/// page with a message. GET → `204` if the request is already let in (the login page asks),
/// else `401` (without a Basic challenge, so the browser shows no prompt).
async fn login<B>(a: &Auth, req: Request<B>, client: IpAddr, secure: bool) -> Response<Body>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return match a.check(req.headers(), client).await {
            Ok(()) => {
                let mut r = Response::new(Body::Full(None));
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            }
            Err(Refusal::Limited(wait)) => limited(wait, false),
            Err(Refusal::Busy) => busy(),
            Err(_) => text(StatusCode::UNAUTHORIZED, "not logged in"),
        };
    }
    if req.method() != Method::POST {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
        return r;
    }
    let body = Limited::new(req.into_body(), MAX_LOGIN_BODY).collect();
    let body = match tokio::time::timeout(LOGIN_BODY_TIMEOUT, body).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => return text(StatusCode::PAYLOAD_TOO_LARGE, "login form too large"),
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                "login form not received in time",
            )
        }
    };
    let Some(password) = auth::form_value(&body, "password") else {
        return page(StatusCode::BAD_REQUEST, "Enter the password.");
    };
    match a.login(&password, client).await {
        Ok(token) => {
            let mut r = redirect("/");
            set_cookie(&mut r, &auth::session_cookie(&token, secure));
            r
        }
        Err(Refusal::Limited(wait)) => limited(wait, true),
        Err(Refusal::Busy) => busy(),
        Err(_) => page(StatusCode::UNAUTHORIZED, "Wrong password."),
    }
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(Body::Full(Some(Bytes::from(format!("{msg}\n")))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The login page with `message` in place of its placeholder.
fn page(status: StatusCode, message: &str) -> Response<Body> {
    let html = ui::find(LOGIN_PAGE)
        .and_then(|i| ui::FILES.get(i))
        .map(|f| String::from_utf8_lossy(f.body).replace("<!--MESSAGE-->", message))
        .unwrap_or_else(|| format!("{message}\n"));
    let mut r = Response::new(Body::Full(Some(Bytes::from(html))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn redirect(to: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::Full(None));
    *r.status_mut() = StatusCode::SEE_OTHER;
    let h = r.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static(to));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn set_cookie(r: &mut Response<Body>, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
}

fn limited(wait: Duration, html: bool) -> Response<Body> {
    let s = wait.as_secs().max(1);
    let mut r = if html {
        page(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Too many attempts; try again in {s} s."),
        )
    } else {
        text(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("too many password attempts; retry in {s} s"),
        )
    };
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(s));
    r
}

fn busy() -> Response<Body> {
    let mut r = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy checking passwords; retry shortly",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}
