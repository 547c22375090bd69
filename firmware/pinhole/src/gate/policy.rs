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

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::gate::access::Access;
use crate::gate::auth::{self, Auth, Refusal};

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
    /// Status and headers are final; the serving side renders the [`Reply`] into a body.
    Answer(Response<Reply>),
}

/// What a refusal shows. The gate decides; the serving side renders (`serve::http`): the
/// gate knows nothing of response bodies or of the embedded UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// No body (a redirect, `204`).
    Empty,
    /// A line of plain text, for tools.
    Text(String),
    /// The login page ([`LOGIN_PAGE`]) showing this message, for browsers.
    LoginPage(String),
}

/// Whether a request on `path` that `policy` let in showed credentials (so its connection no
/// longer counts as unauthenticated): under the password, everything but the login page;
/// under Cloudflare Access, everything; an open listener asks for none.
pub fn authenticated(policy: &Policy, path: &str) -> bool {
    match policy {
        Policy::Open => false,
        Policy::Password(_) => path != LOGIN_PAGE,
        Policy::CloudflareAccess(_) => true,
    }
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
            if get && is_player_page(path) {
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

/// The player's page, at `/` or a camera's `/streams/NAME/`: a browser without a session goes
/// to the login page rather than getting a Basic prompt.
fn is_player_page(path: &str) -> bool {
    let page = |p: &str| p == "/" || p == "/index.html";
    page(path)
        || path
            .strip_prefix("/streams/")
            .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
            .is_some_and(page)
}

/// `/api/login`: POST a form with `password` → `303 /` with the session cookie, or the login
/// page with a message. GET → `204` if the request is already let in (the login page asks),
/// else `401` (without a Basic challenge, so the browser shows no prompt).
async fn login<B>(a: &Auth, req: Request<B>, client: IpAddr, secure: bool) -> Response<Reply>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return match a.check(req.headers(), client).await {
            Ok(()) => {
                let mut r = Response::new(Reply::Empty);
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

/// Every answer of the gate: never cached.
fn answer(status: StatusCode, reply: Reply) -> Response<Reply> {
    let mut r = Response::new(reply);
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn text(status: StatusCode, msg: &str) -> Response<Reply> {
    answer(status, Reply::Text(msg.to_owned()))
}

/// The login page with `message`.
fn page(status: StatusCode, message: &str) -> Response<Reply> {
    answer(status, Reply::LoginPage(message.to_owned()))
}

fn redirect(to: &'static str) -> Response<Reply> {
    let mut r = answer(StatusCode::SEE_OTHER, Reply::Empty);
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    r
}

fn set_cookie(r: &mut Response<Reply>, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
}

fn limited(wait: Duration, html: bool) -> Response<Reply> {
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

fn busy() -> Response<Reply> {
    let mut r = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy checking passwords; retry shortly",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::access::{AccessConfig, DEFAULT_LEEWAY};
    use argon2::password_hash::{PasswordHasher, SaltString};
    use bytes::Bytes;
    use http_body_util::Empty;

    fn req(method: Method, path: &str, headers: &[(&str, &str)]) -> Request<Empty<Bytes>> {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Empty::new()).unwrap()
    }

    fn answer<B>(a: Admission<B>) -> Option<Response<Reply>> {
        match a {
            Admission::Serve(_) => None,
            Admission::Answer(r) => Some(r),
        }
    }

    fn password_policy() -> Policy {
        let params = argon2::Params::new(64, 1, 1, None).unwrap();
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let phc = a.hash_password(b"pw", &salt).unwrap().to_string();
        Policy::Password(Arc::new(Auth::new(&phc).unwrap()))
    }

    fn access_policy() -> Policy {
        // The key server is a closed port: no key is ever known, which does not matter for
        // requests that carry no token at all.
        let cfg = AccessConfig::new(
            "myteam",
            "aud",
            Some("http://127.0.0.1:9/certs"),
            DEFAULT_LEEWAY,
        )
        .unwrap();
        Policy::CloudflareAccess(Arc::new(Access::new(cfg).unwrap()))
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    // "x:pw" in Basic.
    const BASIC: (&str, &str) = ("authorization", "Basic eDpwdw==");

    #[tokio::test]
    async fn the_tunnel_policy_ignores_every_lan_credential() {
        let p = access_policy();
        let lan = [BASIC, ("cookie", "pinhole_session=AAAA")];
        for path in [
            "/",
            "/login.html",
            "/api/login",
            "/api/status",
            "/api/video/cmaf",
        ] {
            let r = answer(admit(&p, req(Method::GET, path, &lan), IP, true).await)
                .unwrap_or_else(|| panic!("{path} was served on LAN credentials"));
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
            assert!(r.headers().get(header::SET_COOKIE).is_none());
        }
        let r = answer(admit(&p, req(Method::POST, "/api/login", &[]), IP, true).await).unwrap();
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "no LAN login through the tunnel"
        );
    }

    #[tokio::test]
    async fn the_password_policy_lets_in_the_login_page_and_credentials_only() {
        let p = password_policy();
        let r = answer(admit(&p, req(Method::GET, "/", &[]), IP, false).await).unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[header::LOCATION], LOGIN_PAGE);
        assert!(answer(admit(&p, req(Method::GET, LOGIN_PAGE, &[]), IP, false).await).is_none());
        let jwt = [("cf-access-jwt-assertion", "a.b.c")];
        for path in [
            "/api/status",
            "/api/video/cmaf",
            "/hls/index.m3u8",
            "/js/app.js",
        ] {
            let r = answer(admit(&p, req(Method::GET, path, &jwt), IP, false).await).unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
            assert!(r.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Basic "));
        }
        let r = answer(admit(&p, req(Method::GET, "/api/login", &[]), IP, false).await).unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
        assert!(
            answer(admit(&p, req(Method::GET, "/api/status", &[BASIC]), IP, false).await).is_none()
        );
        let r =
            answer(admit(&p, req(Method::GET, "/api/login", &[BASIC]), IP, false).await).unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = answer(admit(&p, req(Method::PUT, "/api/login", &[]), IP, false).await).unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn the_open_policy_serves_everything() {
        for path in ["/", "/api/status", "/api/login"] {
            assert!(
                answer(admit(&Policy::Open, req(Method::GET, path, &[]), IP, false).await)
                    .is_none()
            );
        }
    }
}
