//! Cloudflare Access on the tunnel listener: every request must carry a valid
//! `Cf-Access-Jwt-Assertion`, a JWT signed by the team's key set.
//!
//! What a token must be (in this order; the first failure refuses it):
//!
//! 1. Three base64url parts; a header whose `alg` is exactly `RS256` (so `none`, `HS256` signed
//!    with the public key, `PS256`… are refused before any key is looked up), with a `kid` and
//!    no `crit`.
//! 2. `kid` names a key of the team's JWKS (`https://TEAM.cloudflareaccess.com/cdn-cgi/access/certs`).
//!    The set is fetched at start, every [`REFRESH_EVERY`], and again when a token names an
//!    unknown key (Cloudflare rotates keys), at most [`ON_DEMAND`] allows: a flood of random key
//!    ids costs Cloudflare one fetch per ten seconds, not one per request.
//! 3. The RS256 signature verifies (ring, RSASSA-PKCS1-v1_5 with SHA-256, 2048–8192-bit keys).
//! 4. `iss` is `https://TEAM.cloudflareaccess.com`; `aud` (a string or a list) contains the
//!    application's AUD tag; `exp` is not past and `nbf`, if present, is not ahead, each with
//!    the configured leeway.
//!
//! The token is never logged; refusals are logged by reason, at most once a minute at `info`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use ring::signature::{RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::gate::limits::{Limiter, Rate};

pub const HEADER: &str = "cf-access-jwt-assertion";
/// The key set is fetched again this often even when no token names a new key.
pub const REFRESH_EVERY: Duration = Duration::from_secs(3600);
/// Fetches caused by unknown key ids: two at once, then one per ten seconds.
pub const ON_DEMAND: Rate = Rate {
    capacity: 2,
    period: Duration::from_secs(10),
};
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_JWKS_BYTES: usize = 256 * 1024;
const MAX_KEYS: usize = 64;
const MAX_TOKEN_BYTES: usize = 8 * 1024;
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

/// The tunnel listener's configuration (`[tunnel]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessConfig {
    /// The team domain, `TEAM.cloudflareaccess.com`.
    pub team_domain: String,
    /// The application's AUD tag.
    pub aud: String,
    /// Where the key set is fetched: the team's certs URL unless overridden (tests).
    pub certs_url: String,
    pub leeway: Duration,
}

impl AccessConfig {
    /// `team` is `TEAM`, `TEAM.cloudflareaccess.com` or `https://TEAM.cloudflareaccess.com`.
    pub fn new(
        team: &str,
        aud: &str,
        certs_url: Option<&str>,
        leeway: Duration,
    ) -> Result<AccessConfig, String> {
        let t = team.trim().trim_end_matches('/');
        let t = t.strip_prefix("https://").unwrap_or(t);
        let name = t.strip_suffix(".cloudflareaccess.com").unwrap_or(t);
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(format!(
                "team = {team:?}: give the Zero Trust team name, e.g. \"myteam\" for myteam.cloudflareaccess.com"
            ));
        }
        let aud = aud.trim();
        if aud.is_empty() || aud.len() > 256 || !aud.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "aud = {aud:?}: give the application's Audience (AUD) tag from the Access application's overview"
            ));
        }
        let team_domain = format!("{name}.cloudflareaccess.com");
        let certs_url = match certs_url {
            Some(u) => {
                CertsUrl::parse(u)?;
                u.to_string()
            }
            None => format!("https://{team_domain}/cdn-cgi/access/certs"),
        };
        Ok(AccessConfig {
            team_domain,
            aud: aud.to_string(),
            certs_url,
            leeway,
        })
    }

    pub fn issuer(&self) -> String {
        format!("https://{}", self.team_domain)
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Missing,
    Malformed,
    Algorithm,
    UnknownKey,
    Signature,
    Issuer,
    Audience,
    Expired,
    NotYetValid,
    /// No key set could be fetched yet: nothing can be verified.
    NoKeys,
}

const REJECTIONS: [(Rejection, &str); 10] = [
    (Rejection::Missing, "missing"),
    (Rejection::Malformed, "malformed"),
    (Rejection::Algorithm, "algorithm"),
    (Rejection::UnknownKey, "unknown_key"),
    (Rejection::Signature, "signature"),
    (Rejection::Issuer, "issuer"),
    (Rejection::Audience, "audience"),
    (Rejection::Expired, "expired"),
    (Rejection::NotYetValid, "not_yet_valid"),
    (Rejection::NoKeys, "no_keys"),
];

impl Rejection {
    pub fn name(self) -> &'static str {
        REJECTIONS
            .iter()
            .find(|(r, _)| *r == self)
            .map_or("other", |(_, n)| n)
    }

    pub fn status(self) -> StatusCode {
        match self {
            Rejection::NoKeys => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// The response body: short, and says no more than a client needs to know.
    pub fn text(self) -> &'static str {
        match self {
            Rejection::Missing => "forbidden: this listener needs a Cloudflare Access token",
            Rejection::Expired => "forbidden: the Cloudflare Access token has expired",
            Rejection::NoKeys => "unavailable: the Cloudflare Access keys could not be fetched yet",
            _ => "forbidden: the Cloudflare Access token is not valid here",
        }
    }
}

/// One RSA public key of the set.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    n: Vec<u8>,
    e: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({} bits)", self.n.len() * 8)
    }
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    n: Option<String>,
    e: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.as_bytes())
        .ok()
}

/// The RS256 keys of a JWKS document, by key id. Keys of other types are skipped.
pub fn parse_jwks(body: &[u8]) -> Result<HashMap<String, Key>, String> {
    let set: Jwks =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut out = HashMap::new();
    for v in set.keys.into_iter().take(MAX_KEYS) {
        let Ok(k) = serde_json::from_value::<Jwk>(v) else {
            continue;
        };
        if k.kty != "RSA"
            || k.alg.as_deref().is_some_and(|a| a != "RS256")
            || k.use_.as_deref().is_some_and(|u| u != "sig")
        {
            continue;
        }
        let (Some(kid), Some(n), Some(e)) = (k.kid, k.n, k.e) else {
            continue;
        };
        let (Some(n), Some(e)) = (
            b64url(n.trim_end_matches('=')),
            b64url(e.trim_end_matches('=')),
        ) else {
            continue;
        };
        let strip = |v: Vec<u8>| -> Vec<u8> {
            let first = v.iter().position(|&b| b != 0).unwrap_or(v.len());
            v[first..].to_vec()
        };
        out.insert(
            kid,
            Key {
                n: strip(n),
                e: strip(e),
            },
        );
    }
    if out.is_empty() {
        return Err("the key set has no RS256 keys".into());
    }
    Ok(out)
}

#[derive(Deserialize)]
struct JwtHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    aud: Option<serde_json::Value>,
    exp: Option<f64>,
    nbf: Option<f64>,
}

/// A token split and its header checked: what remains needs the key.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub kid: String,
    signed: &'a str,
    payload: &'a str,
    signature: Vec<u8>,
}

/// Step 1: shape and header. Refuses every `alg` but RS256 before any key is looked at.
pub fn parse(token: &str) -> Result<Parsed<'_>, Rejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::Malformed);
    };
    let header: JwtHeader = b64url(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(Rejection::Malformed)?;
    if header.alg != "RS256" {
        return Err(Rejection::Algorithm);
    }
    if header.crit.is_some() {
        return Err(Rejection::Malformed);
    }
    let kid = header.kid.ok_or(Rejection::Malformed)?;
    let signature = b64url(s).ok_or(Rejection::Malformed)?;
    Ok(Parsed {
        kid,
        signed: &token[..h.len() + 1 + p.len()],
        payload: p,
        signature,
    })
}

/// Steps 3 and 4: signature, then claims at `now_unix` (seconds).
pub fn verify(
    parsed: &Parsed<'_>,
    key: &Key,
    config: &AccessConfig,
    now_unix: f64,
) -> Result<(), Rejection> {
    RsaPublicKeyComponents {
        n: &key.n,
        e: &key.e,
    }
    .verify(
        &RSA_PKCS1_2048_8192_SHA256,
        parsed.signed.as_bytes(),
        &parsed.signature,
    )
    .map_err(|_| Rejection::Signature)?;
    let claims: Claims = b64url(parsed.payload)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(Rejection::Malformed)?;
    if claims.iss.as_deref() != Some(config.issuer().as_str()) {
        return Err(Rejection::Issuer);
    }
    let aud_ok = match &claims.aud {
        Some(serde_json::Value::String(a)) => *a == config.aud,
        Some(serde_json::Value::Array(list)) => {
            list.iter().any(|a| a.as_str() == Some(&config.aud))
        }
        _ => false,
    };
    if !aud_ok {
        return Err(Rejection::Audience);
    }
    let leeway = config.leeway.as_secs_f64();
    match claims.exp {
        Some(exp) if now_unix <= exp + leeway => {}
        Some(_) => return Err(Rejection::Expired),
        None => return Err(Rejection::Malformed),
    }
    if let Some(nbf) = claims.nbf {
        if now_unix + leeway < nbf {
            return Err(Rejection::NotYetValid);
        }
    }
    Ok(())
}

/// Where the key set comes from: `https://…`, or `http://` to a loopback address (tests).
#[derive(Debug, Clone)]
struct CertsUrl {
    https: bool,
    host: String,
    port: u16,
    authority: String,
    path: String,
}

impl CertsUrl {
    fn parse(s: &str) -> Result<CertsUrl, String> {
        let bad = |why: &str| format!("certs_url = {s:?}: {why}");
        let uri: Uri = s.parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("give an https:// URL")),
        };
        let host = uri.host().ok_or_else(|| bad("the URL has no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if !https {
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(bad(
                    "plain http is only allowed to a loopback address (keys must not travel in clear)",
                ));
            }
        }
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .ok_or_else(|| bad("the URL has no host"))?;
        if authority.contains('@') {
            return Err(bad("no user information in the URL"));
        }
        Ok(CertsUrl {
            https,
            port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
            host,
            authority,
            path: uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
        })
    }
}

#[derive(Debug, Default)]
struct KeySet {
    keys: HashMap<String, Key>,
    /// Bumped by every successful fetch.
    generation: u64,
}

/// Logs a refusal reason at most once a minute at `info`, counting the ones in between.
#[derive(Debug)]
struct Throttle {
    last: Mutex<Option<Instant>>,
    since: AtomicU64,
}

impl Throttle {
    fn hit(&self, what: &str) {
        let n = self.since.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60)) {
            *last = Some(now);
            self.since.store(0, Ordering::Relaxed);
            tracing::info!(
                reason = what,
                refused = n,
                "tunnel listener refused requests without a valid Cloudflare Access token (logged at most once a minute)"
            );
        } else {
            tracing::debug!(reason = what, "tunnel listener refused a request");
        }
    }
}

/// The Cloudflare Access policy: configuration, the cached key set, and its fetcher.
pub struct Access {
    config: AccessConfig,
    url: CertsUrl,
    tls: tokio_rustls::TlsConnector,
    keys: Mutex<KeySet>,
    /// One fetch at a time; requests that found an unknown key wait for it.
    fetching: tokio::sync::Mutex<()>,
    on_demand: Limiter,
    fetches: AtomicU64,
    fetch_failures: AtomicU64,
    passed: AtomicU64,
    refused: [AtomicU64; REJECTIONS.len()],
    throttle: Throttle,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Access {
    /// Trusts the Mozilla roots (webpki-roots) for fetching the key set.
    pub fn new(config: AccessConfig) -> Result<Access, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Access::with_roots(config, roots)
    }

    pub fn with_roots(
        config: AccessConfig,
        roots: rustls::RootCertStore,
    ) -> Result<Access, String> {
        let url = CertsUrl::parse(&config.certs_url)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS client configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Access {
            config,
            url,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            keys: Mutex::new(KeySet::default()),
            fetching: tokio::sync::Mutex::new(()),
            on_demand: Limiter::new(ON_DEMAND, Instant::now()),
            fetches: AtomicU64::new(0),
            fetch_failures: AtomicU64::new(0),
            passed: AtomicU64::new(0),
            refused: Default::default(),
            throttle: Throttle {
                last: Mutex::new(None),
                since: AtomicU64::new(0),
            },
        })
    }

    pub fn config(&self) -> &AccessConfig {
        &self.config
    }

    /// Lets a request in if its `Cf-Access-Jwt-Assertion` is valid now.
    pub async fn check(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let r = self.check_inner(headers).await;
        match r {
            Ok(()) => {
                self.passed.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => {
                if let Some(i) = REJECTIONS.iter().position(|(r, _)| *r == why) {
                    self.refused[i].fetch_add(1, Ordering::Relaxed);
                }
                self.throttle.hit(why.name());
            }
        }
        r
    }

    async fn check_inner(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let mut values = headers.get_all(HEADER).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(if headers.contains_key(HEADER) {
                Rejection::Malformed
            } else {
                Rejection::Missing
            });
        };
        let token = value.to_str().map_err(|_| Rejection::Malformed)?.trim();
        let parsed = parse(token)?;
        let key = self.key(&parsed.kid).await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        verify(&parsed, &key, &self.config, now)
    }

    fn cached(&self, kid: &str) -> (Option<Key>, u64) {
        let set = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        (set.keys.get(kid).cloned(), set.generation)
    }

    /// The key `kid`, fetching the set again (rate-limited) when it is unknown.
    async fn key(&self, kid: &str) -> Result<Key, Rejection> {
        let (key, seen) = self.cached(kid);
        if let Some(k) = key {
            return Ok(k);
        }
        let _one = self.fetching.lock().await;
        let (key, generation) = self.cached(kid);
        if let Some(k) = key {
            return Ok(k);
        }
        // Somebody fetched while this request waited, and the key is still unknown.
        let fresh = generation != seen;
        if !fresh && self.on_demand.take(Instant::now()).is_ok() {
            tracing::debug!("a token names an unknown key id; fetching the key set again");
            if let Err(e) = self.fetch_locked().await {
                tracing::warn!("cannot fetch the Cloudflare Access key set: {e}");
            }
        }
        match self.cached(kid) {
            (Some(k), _) => Ok(k),
            (None, 0) => Err(Rejection::NoKeys),
            (None, _) => Err(Rejection::UnknownKey),
        }
    }

    /// Fetches the key set now (one fetch at a time). Returns how many keys it has.
    pub async fn refresh(&self) -> Result<usize, String> {
        let _one = self.fetching.lock().await;
        self.fetch_locked().await
    }

    async fn fetch_locked(&self) -> Result<usize, String> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let r = match tokio::time::timeout(FETCH_TIMEOUT, self.get()).await {
            Ok(Ok(body)) => parse_jwks(&body),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {FETCH_TIMEOUT:?}")),
        };
        match r {
            Ok(keys) => {
                let n = keys.len();
                let mut set = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
                let changed = set.keys != keys;
                set.keys = keys;
                set.generation += 1;
                if changed {
                    let mut kids: Vec<&str> = set.keys.keys().map(String::as_str).collect();
                    kids.sort_unstable();
                    tracing::info!(url = %self.config.certs_url, keys = ?kids, "Cloudflare Access key set loaded");
                }
                Ok(n)
            }
            Err(e) => {
                self.fetch_failures.fetch_add(1, Ordering::Relaxed);
                Err(format!("{}: {e}", self.config.certs_url))
            }
        }
    }

    async fn get(&self) -> Result<Bytes, String> {
        let u = &self.url;
        let tcp = TcpStream::connect((u.host.as_str(), u.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = Request::get(u.path.as_str())
            .header(header::HOST, u.authority.as_str())
            .header(header::USER_AGENT, crate::USER_AGENT)
            .header(header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        if u.https {
            let name = rustls::pki_types::ServerName::try_from(u.host.clone())
                .map_err(|e| format!("server name: {e}"))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(TokioIo::new(tls), req).await
        } else {
            send(TokioIo::new(tcp), req).await
        }
    }

    /// Fetches at start (retrying with backoff until it works), then every [`REFRESH_EVERY`].
    pub async fn keep_fresh(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let wait = match self.refresh().await {
                Ok(_) => {
                    backoff = Duration::from_secs(1);
                    REFRESH_EVERY
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot fetch the Cloudflare Access key set (retrying in {backoff:?}): {e}"
                    );
                    let w = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    w
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Prometheus lines: tokens passed and refused by reason, key fetches.
    /// Its metric families (`/metrics`).
    pub fn families(&self) -> Vec<crate::metrics::Family> {
        use crate::metrics::Family;
        let keys = self
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .len();
        let mut refused = Family::counter(
            "pinhole_access_refused_total",
            "Tunnel requests refused, by reason.",
        );
        for (i, (_, name)) in REJECTIONS.iter().enumerate() {
            refused =
                refused.labelled(&[("reason", name)], self.refused[i].load(Ordering::Relaxed));
        }
        vec![
            Family::counter(
                "pinhole_access_passed_total",
                "Tunnel requests with a valid Cloudflare Access token.",
            )
            .with(self.passed.load(Ordering::Relaxed)),
            refused,
            Family::counter(
                "pinhole_access_key_fetches_total",
                "Fetches of the Access key set (failed ones too).",
            )
            .with(self.fetches.load(Ordering::Relaxed)),
            Family::counter(
                "pinhole_access_key_fetch_failures_total",
                "Failed fetches of the Access key set.",
            )
            .with(self.fetch_failures.load(Ordering::Relaxed)),
            Family::gauge("pinhole_access_keys", "Keys in the cached Access key set.").with(keys),
        ]
    }

    /// [`Self::families`] as Prometheus text.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        crate::metrics::render(&mut out, &self.families());
        out
    }
}

/// One request on a fresh HTTP/1.1 connection; the body of a 200, at most [`MAX_JWKS_BYTES`].
async fn send<IO>(io: TokioIo<IO>, req: Request<Empty<Bytes>>) -> Result<Bytes, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let driver = tokio::spawn(conn);
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        if resp.status() != StatusCode::OK {
            return Err(format!("HTTP status {}", resp.status()));
        }
        Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("body: {e}"))
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::RsaKeyPair;

    /// A 2048-bit RSA key made with `openssl genpkey` for these tests only: it protects nothing.
    const TEST_KEY_PEM: &str = include_str!("../../testdata/rsa2048-test-only.pem");

    fn keypair() -> RsaKeyPair {
        let b64: String = TEST_KEY_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        RsaKeyPair::from_pkcs8(&der).unwrap()
    }

    fn public(kp: &RsaKeyPair) -> Key {
        let c: RsaPublicKeyComponents<Vec<u8>> = kp.public().into();
        Key { n: c.n, e: c.e }
    }

    fn enc(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    fn sign(kp: &RsaKeyPair, header: &str, claims: &str) -> String {
        let input = format!("{}.{}", enc(header.as_bytes()), enc(claims.as_bytes()));
        let mut sig = vec![0; kp.public().modulus_len()];
        kp.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .unwrap();
        format!("{input}.{}", enc(&sig))
    }

    fn config() -> AccessConfig {
        AccessConfig::new("myteam", "aud-tag-1", None, DEFAULT_LEEWAY).unwrap()
    }

    const NOW: f64 = 1_700_000_000.0;
    const HEADER_JSON: &str = r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#;

    fn claims(iss: &str, aud: &str, exp: f64, nbf: f64) -> String {
        format!(r#"{{"iss":"{iss}","aud":{aud},"exp":{exp},"nbf":{nbf},"sub":"x","email":"a@b"}}"#)
    }

    fn check(token: &str) -> Result<(), Rejection> {
        let kp = keypair();
        let p = parse(token)?;
        assert_eq!(p.kid, "k1");
        verify(&p, &public(&kp), &config(), NOW)
    }

    #[test]
    fn a_valid_token_passes_with_aud_as_string_or_list() {
        let kp = keypair();
        let iss = "https://myteam.cloudflareaccess.com";
        let t = sign(
            &kp,
            HEADER_JSON,
            &claims(iss, r#"["other","aud-tag-1"]"#, NOW + 60.0, NOW - 1.0),
        );
        assert_eq!(check(&t), Ok(()));
        let t = sign(
            &kp,
            HEADER_JSON,
            &claims(iss, r#""aud-tag-1""#, NOW + 60.0, NOW - 1.0),
        );
        assert_eq!(check(&t), Ok(()));
    }

    #[test]
    fn each_bad_claim_is_refused_for_its_reason() {
        let kp = keypair();
        let iss = "https://myteam.cloudflareaccess.com";
        let aud = r#"["aud-tag-1"]"#;
        let cases = [
            (
                claims(iss, r#"["aud-tag-2"]"#, NOW + 60.0, NOW),
                Rejection::Audience,
            ),
            (claims(iss, r#""""#, NOW + 60.0, NOW), Rejection::Audience),
            (
                claims("https://evil.cloudflareaccess.com", aud, NOW + 60.0, NOW),
                Rejection::Issuer,
            ),
            (
                claims("https://myteam.cloudflareaccess.com/", aud, NOW + 60.0, NOW),
                Rejection::Issuer,
            ),
            (
                claims(iss, aud, NOW - 61.0, NOW - 120.0),
                Rejection::Expired,
            ),
            (
                claims(iss, aud, NOW + 600.0, NOW + 61.0),
                Rejection::NotYetValid,
            ),
            (
                format!(r#"{{"iss":"{iss}","aud":{aud}}}"#),
                Rejection::Malformed,
            ),
        ];
        for (c, want) in cases {
            assert_eq!(check(&sign(&kp, HEADER_JSON, &c)), Err(want), "{c}");
        }
        // Within the leeway: fine.
        assert_eq!(
            check(&sign(
                &kp,
                HEADER_JSON,
                &claims(iss, aud, NOW - 59.0, NOW + 59.0)
            )),
            Ok(())
        );
    }

    #[test]
    fn only_rs256_is_accepted_and_before_any_key_lookup() {
        let body =
            enc(br#"{"iss":"https://myteam.cloudflareaccess.com","aud":"aud-tag-1","exp":1e12}"#);
        for alg in ["none", "HS256", "RS384", "PS256", "ES256", "rs256", ""] {
            let h = enc(format!(r#"{{"alg":"{alg}","kid":"k1"}}"#).as_bytes());
            for sig in ["", "AAAA"] {
                assert_eq!(
                    parse(&format!("{h}.{body}.{sig}")).unwrap_err(),
                    Rejection::Algorithm,
                    "{alg}"
                );
            }
        }
        let h = enc(br#"{"alg":"RS256","kid":"k1","crit":["exp"]}"#);
        assert_eq!(
            parse(&format!("{h}.{body}.AAAA")).unwrap_err(),
            Rejection::Malformed
        );
        let h = enc(br#"{"alg":"RS256"}"#);
        assert_eq!(
            parse(&format!("{h}.{body}.AAAA")).unwrap_err(),
            Rejection::Malformed
        );
        for bad in ["", "a.b", "a.b.c.d", "...", "!!.??.**"] {
            assert_eq!(parse(bad).unwrap_err(), Rejection::Malformed, "{bad:?}");
        }
    }

    #[test]
    fn a_tampered_payload_or_another_key_fails_the_signature() {
        let kp = keypair();
        let iss = "https://myteam.cloudflareaccess.com";
        let t = sign(
            &kp,
            HEADER_JSON,
            &claims(iss, r#""aud-tag-1""#, NOW + 60.0, NOW),
        );
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        parts[1] = enc(claims(iss, r#""aud-tag-1""#, NOW + 6000.0, NOW).as_bytes());
        assert_eq!(check(&parts.join(".")), Err(Rejection::Signature));
        let p = parse(&t).unwrap();
        let mut other = public(&kp);
        other.n[10] ^= 1;
        assert_eq!(
            verify(&p, &other, &config(), NOW),
            Err(Rejection::Signature)
        );
    }

    #[test]
    fn jwks_documents_parse_to_rs256_keys_by_id() {
        let kp = keypair();
        let k = public(&kp);
        let mut n = vec![0u8];
        n.extend(&k.n);
        let doc = format!(
            r#"{{"keys":[{{"kid":"a","kty":"RSA","alg":"RS256","use":"sig","e":"{}","n":"{}"}},
                {{"kid":"b","kty":"EC","crv":"P-256","x":"AA","y":"AA"}},
                {{"kid":"c","kty":"RSA","alg":"RS512","e":"AQAB","n":"AQAB"}},
                {{"kid":"d","kty":"RSA","e":"{}","n":"{}"}}],
              "public_cert":{{"kid":"a","cert":"..."}}}}"#,
            enc(&k.e),
            enc(&k.n),
            enc(&k.e),
            enc(&n),
        );
        let keys = parse_jwks(doc.as_bytes()).unwrap();
        let mut ids: Vec<_> = keys.keys().cloned().collect();
        ids.sort();
        assert_eq!(ids, ["a", "d"]);
        assert_eq!(keys["a"], k);
        assert_eq!(keys["d"], k, "a leading zero byte of n is dropped");
        assert!(parse_jwks(br#"{"keys":[]}"#).is_err());
        assert!(parse_jwks(b"<html>").is_err());
    }

    #[test]
    fn config_accepts_team_spellings_and_refuses_plain_http_keys_off_loopback() {
        for t in [
            "myteam",
            "myteam.cloudflareaccess.com",
            "https://myteam.cloudflareaccess.com/",
        ] {
            let c = AccessConfig::new(t, "x", None, DEFAULT_LEEWAY).unwrap();
            assert_eq!(c.issuer(), "https://myteam.cloudflareaccess.com");
            assert_eq!(
                c.certs_url,
                "https://myteam.cloudflareaccess.com/cdn-cgi/access/certs"
            );
        }
        for t in ["", "My Team", "a/b", "evil.com/x"] {
            assert!(
                AccessConfig::new(t, "x", None, DEFAULT_LEEWAY).is_err(),
                "{t:?}"
            );
        }
        assert!(AccessConfig::new("t", "", None, DEFAULT_LEEWAY).is_err());
        for ok in [
            "http://127.0.0.1:9/certs",
            "http://[::1]:9/c",
            "http://localhost/c",
            "https://example.com/c",
        ] {
            assert!(
                AccessConfig::new("t", "x", Some(ok), DEFAULT_LEEWAY).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "http://192.0.2.1/certs",
            "ftp://127.0.0.1/x",
            "certs",
            "https://u:p@example.com/c",
        ] {
            let e = AccessConfig::new("t", "x", Some(bad), DEFAULT_LEEWAY).unwrap_err();
            assert!(e.contains("certs_url"), "{e}");
        }
    }

    /// A fresh state directory and the self-signed certificate `tls.rs` makes in it.
    fn generated_tls(tag: &str) -> (std::path::PathBuf, crate::gate::tls::Loaded) {
        let dir = std::env::temp_dir().join(format!("pinhole-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let source = crate::gate::tls::CertSource::Generated {
            state_dir: dir.clone(),
        };
        (dir, crate::gate::tls::load(&source, &[]).unwrap())
    }

    /// The key set over real HTTPS: a rustls server on 127.0.0.1 with a certificate made by
    /// `tls.rs`, trusted as the only root. Then a token passes `Access::check`, and a token naming
    /// an unknown key makes one more fetch.
    #[tokio::test]
    async fn the_key_set_is_fetched_over_https_and_refetched_for_an_unknown_key() {
        use hyper::service::service_fn;
        use std::sync::atomic::AtomicUsize;

        let (dir, loaded) = generated_tls("jwks");
        let kp = keypair();
        let k = public(&kp);
        let doc = format!(
            r#"{{"keys":[{{"kid":"k1","kty":"RSA","alg":"RS256","use":"sig","e":"{}","n":"{}"}}]}}"#,
            enc(&k.e),
            enc(&k.n)
        );
        let hits = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tokio_rustls::TlsAcceptor::from(loaded.config.clone());
        let server_hits = hits.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let tls = acceptor.accept(tcp).await.unwrap();
                let doc = doc.clone();
                let hits = server_hits.clone();
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(req.uri().path(), "/cdn-cgi/access/certs");
                    let body = http_body_util::Full::new(Bytes::from(doc.clone()));
                    async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc),
                );
            }
        });

        let pem = std::fs::read(dir.join(crate::gate::tls::GENERATED_CERT)).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject as _;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(c.unwrap()).unwrap();
        }
        let url = format!("https://localhost:{port}/cdn-cgi/access/certs");
        let cfg = AccessConfig::new("myteam", "aud-tag-1", Some(&url), DEFAULT_LEEWAY).unwrap();
        let access = Access::with_roots(cfg, roots).unwrap();
        assert_eq!(access.refresh().await, Ok(1));

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let iss = "https://myteam.cloudflareaccess.com";
        let c = claims(iss, r#""aud-tag-1""#, now + 60.0, now - 1.0);
        let mut h = HeaderMap::new();
        h.insert(HEADER, sign(&kp, HEADER_JSON, &c).parse().unwrap());
        assert_eq!(access.check(&h).await, Ok(()));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        let unknown = HEADER_JSON.replace("k1", "k9");
        h.insert(HEADER, sign(&kp, &unknown, &c).parse().unwrap());
        assert_eq!(access.check(&h).await, Err(Rejection::UnknownKey));
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "an unknown key id fetches the set again"
        );
        h.remove(HEADER);
        assert_eq!(access.check(&h).await, Err(Rejection::Missing));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_webpki_roots_refuse_a_self_signed_key_server() {
        let (dir, loaded) = generated_tls("jwks2");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tokio_rustls::TlsAcceptor::from(loaded.config);
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = acceptor.accept(tcp).await;
        });
        let url = format!("https://localhost:{port}/cdn-cgi/access/certs");
        let cfg = AccessConfig::new("myteam", "aud-tag-1", Some(&url), DEFAULT_LEEWAY).unwrap();
        let access = Access::new(cfg).unwrap();
        let e = access.refresh().await.unwrap_err();
        assert!(e.contains("TLS") && e.contains(&url), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
