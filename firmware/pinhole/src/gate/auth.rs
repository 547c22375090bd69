//! The LAN password: an argon2 hash in the configuration, a login page that sets a session
//! cookie for the browser, and HTTP Basic for tools (ffmpeg, Home Assistant; any user name).
//!
//! * **Sessions** are 256-bit random tokens, held in memory only (a restart logs everyone out),
//!   stored under their SHA-256 so that finding one takes no time that depends on the secret.
//!   At most [`MAX_SESSIONS`]; each lasts [`SESSION_TTL`].
//! * **Basic** credentials cost an argon2 run the first time; a right one is then remembered for
//!   [`BASIC_CACHE_TTL`] (under a keyed SHA-256, never in clear), so a player sending the header
//!   with every LL-HLS part does not burn a core.
//! * **Guessing is slowed**: every password check takes a token from its client's bucket
//!   ([`PER_CLIENT`]: a burst of 5, then one per 12 s) and from one bucket for everybody
//!   ([`GLOBAL`]); a right password gives the client's token back. Without a token the answer is
//!   `429` with `Retry-After`, before any argon2 work.
//! * **argon2 runs off the async thread** (`spawn_blocking`), at most [`MAX_CONCURRENT_CHECKS`]
//!   at once (each takes the hash's memory cost, 19 MiB with the defaults).
//!
//! Nothing here logs a password, a token or a header value.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use http::{header, HeaderMap};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::Semaphore;

use crate::gate::limits::{Buckets, ClientKey, Limiter, Rate};

/// The session cookie's name.
pub const COOKIE: &str = "pinhole_session";
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
pub const MAX_SESSIONS: usize = 256;
pub const BASIC_CACHE_TTL: Duration = Duration::from_secs(600);
const MAX_CACHED_BASIC: usize = 64;
pub const MAX_CONCURRENT_CHECKS: usize = 2;
/// How long a password check waits for a free argon2 slot before answering 503.
const CHECK_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// Password checks per client: a burst of 5 (typos), then one every 12 s.
pub const PER_CLIENT: Rate = Rate {
    capacity: 5,
    period: Duration::from_secs(12),
};
/// Password checks for all clients together: a burst of 20, then two a second.
pub const GLOBAL: Rate = Rate {
    capacity: 20,
    period: Duration::from_millis(500),
};
/// Longest password accepted (argon2 takes any length; this bounds the work per request).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No cookie or Basic credentials.
    Missing,
    /// A password was given and is wrong (or the cookie is unknown or expired).
    Wrong,
    /// Too many password checks; retry after this long.
    Limited(Duration),
    /// Every argon2 slot stayed busy.
    Busy,
}

/// Makes an argon2id PHC string for `password` with the crate's defaults (m=19 MiB, t=2, p=1).
pub fn hash_password(password: &str) -> Result<String, String> {
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "the system's random number generator failed".to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| format!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("argon2: {e}"))
}

/// Checks that `phc` is an argon2 PHC string (what `pinhole hash-password` prints).
pub fn check_hash(phc: &str) -> Result<(), String> {
    let h = PasswordHash::new(phc).map_err(|e| {
        format!("not a PHC hash string ({e}); make one with `pinhole hash-password`")
    })?;
    if !h.algorithm.as_str().starts_with("argon2") {
        return Err(format!(
            "algorithm {} is not argon2; make a hash with `pinhole hash-password`",
            h.algorithm
        ));
    }
    if h.salt.is_none() || h.hash.is_none() {
        return Err(
            "the hash has no salt or no output; make one with `pinhole hash-password`".into(),
        );
    }
    argon2::Params::try_from(&h).map_err(|e| format!("argon2 parameters: {e}"))?;
    Ok(())
}

#[derive(Debug, Default)]
struct Counters {
    logins: u64,
    failures: u64,
    limited: u64,
}

/// The password policy of a LAN listener (shared by all LAN listeners).
pub struct Auth {
    phc: Arc<str>,
    rng: SystemRandom,
    /// SHA-256 of a session token → when it expires.
    sessions: Mutex<HashMap<[u8; 32], Instant>>,
    /// SHA-256 of (pepper, password) of Basic credentials found right → until when.
    basic_ok: Mutex<HashMap<[u8; 32], Instant>>,
    pepper: [u8; 32],
    per_client: Buckets<ClientKey>,
    global: Limiter,
    checks: Arc<Semaphore>,
    counters: Mutex<Counters>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hash, the sessions or the cache.
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

impl Auth {
    pub fn new(phc: &str) -> Result<Auth, String> {
        check_hash(phc)?;
        let rng = SystemRandom::new();
        let mut pepper = [0u8; 32];
        rng.fill(&mut pepper)
            .map_err(|_| "the system's random number generator failed".to_string())?;
        Ok(Auth {
            phc: Arc::from(phc),
            rng,
            sessions: Mutex::new(HashMap::new()),
            basic_ok: Mutex::new(HashMap::new()),
            pepper,
            per_client: Buckets::new(PER_CLIENT),
            global: Limiter::new(GLOBAL, Instant::now()),
            checks: Arc::new(Semaphore::new(MAX_CONCURRENT_CHECKS)),
            counters: Mutex::new(Counters::default()),
        })
    }

    /// Lets a request in on its session cookie or its Basic credentials.
    pub async fn check(&self, headers: &HeaderMap, ip: IpAddr) -> Result<(), Refusal> {
        let mut refusal = Refusal::Missing;
        if let Some(token) = cookie_value(headers, COOKIE) {
            if self.session_valid(token, Instant::now()) {
                return Ok(());
            }
            refusal = Refusal::Wrong;
        }
        match basic_password(headers) {
            Some(password) => self.check_password(&password, ip, true).await,
            None => Err(refusal),
        }
    }

    /// A login with `password`: the new session token, for the cookie.
    pub async fn login(&self, password: &str, ip: IpAddr) -> Result<String, Refusal> {
        self.check_password(password, ip, false).await?;
        let token = self.new_session(Instant::now())?;
        self.count(|c| c.logins += 1);
        Ok(token)
    }

    /// Ends the session named by the request's cookie, if any.
    pub fn logout(&self, headers: &HeaderMap) {
        if let Some(token) = cookie_value(headers, COOKIE) {
            let key = sha256(token.as_bytes());
            self.sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
        }
    }

    /// Prometheus lines for logins, failures and rate-limited attempts.
    /// Its metric families (`/metrics`).
    pub fn families(&self) -> Vec<crate::metrics::Family> {
        use crate::metrics::Family;
        let c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let sessions = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        vec![
            Family::counter(
                "pinhole_auth_logins_total",
                "Successful logins on the LAN login page.",
            )
            .with(c.logins),
            Family::counter(
                "pinhole_auth_failures_total",
                "Wrong passwords (login page and Basic).",
            )
            .with(c.failures),
            Family::counter(
                "pinhole_auth_limited_total",
                "Password checks refused by the rate limit.",
            )
            .with(c.limited),
            Family::gauge("pinhole_auth_sessions", "Open login sessions.").with(sessions),
        ]
    }

    /// [`Self::families`] as Prometheus text.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        crate::metrics::render(&mut out, &self.families());
        out
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.counters.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn session_valid(&self, token: &str, now: Instant) -> bool {
        let key = sha256(token.as_bytes());
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        match sessions.get(&key) {
            Some(&until) if until > now => true,
            Some(_) => {
                sessions.remove(&key);
                false
            }
            None => false,
        }
    }

    fn new_session(&self, now: Instant) -> Result<String, Refusal> {
        let mut raw = [0u8; 32];
        self.rng.fill(&mut raw).map_err(|_| Refusal::Busy)?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, until| *until > now);
        }
        if sessions.len() >= MAX_SESSIONS {
            // The oldest session (the one expiring first) makes room.
            if let Some(oldest) = sessions.iter().min_by_key(|(_, u)| **u).map(|(k, _)| *k) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(sha256(token.as_bytes()), now + SESSION_TTL);
        Ok(token)
    }

    fn peppered(&self, password: &str) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&self.pepper);
        ctx.update(password.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    async fn check_password(&self, password: &str, ip: IpAddr, cache: bool) -> Result<(), Refusal> {
        let now = Instant::now();
        let cache_key = cache.then(|| self.peppered(password));
        if let Some(key) = &cache_key {
            let ok = self
                .basic_ok
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(key)
                .is_some_and(|until| *until > now);
            if ok {
                return Ok(());
            }
        }
        if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
            self.count(|c| c.failures += 1);
            return Err(Refusal::Wrong);
        }
        let client = ClientKey::of(ip);
        if let Err(wait) = self.per_client.take(client, now) {
            self.count(|c| c.limited += 1);
            return Err(Refusal::Limited(wait));
        }
        if let Err(wait) = self.global.take(now) {
            self.per_client.refund(client, now);
            self.count(|c| c.limited += 1);
            return Err(Refusal::Limited(wait));
        }
        if !self.verify(password).await? {
            self.count(|c| c.failures += 1);
            return Err(Refusal::Wrong);
        }
        self.per_client.refund(client, Instant::now());
        if let Some(key) = cache_key {
            let mut m = self.basic_ok.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if m.len() >= MAX_CACHED_BASIC {
                m.retain(|_, until| *until > now);
                if m.len() >= MAX_CACHED_BASIC {
                    m.clear();
                }
            }
            m.insert(key, now + BASIC_CACHE_TTL);
        }
        Ok(())
    }

    /// argon2 on the blocking pool, at most [`MAX_CONCURRENT_CHECKS`] at once.
    async fn verify(&self, password: &str) -> Result<bool, Refusal> {
        let permit = tokio::time::timeout(CHECK_QUEUE_TIMEOUT, self.checks.clone().acquire_owned())
            .await
            .map_err(|_| Refusal::Busy)?
            .map_err(|_| Refusal::Busy)?;
        let phc = self.phc.clone();
        let password = password.to_owned();
        let r = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let Ok(hash) = PasswordHash::new(&phc) else {
                return false;
            };
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .await;
        r.map_err(|_| Refusal::Busy)
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, b).as_ref());
    out
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// The password of `Authorization: Basic base64(user:password)` (the user name is ignored).
pub fn basic_password(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (_user, password) = text.split_once(':')?;
    Some(password.to_owned())
}

/// The `Set-Cookie` value for a new session. `Secure` on HTTPS listeners only: a browser would
/// drop a Secure cookie set over plain HTTP.
pub fn session_cookie(token: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The value of `name` in an `application/x-www-form-urlencoded` body.
pub fn form_value(body: &[u8], name: &str) -> Option<String> {
    for pair in body.split(|&b| b == b'&') {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        if percent_decode(k)?.as_slice() == name.as_bytes() {
            return String::from_utf8(percent_decode(v)?).ok();
        }
    }
    None
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    // A cheap hash (m=64 KiB, t=1) keeps the tests fast; the format is what `hash-password` makes.
    fn cheap_hash(password: &str) -> String {
        let params = argon2::Params::new(64, 1, 1, None).unwrap();
        let a = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        a.hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn hash_password_makes_an_argon2id_string_that_verifies() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        check_hash(&h).unwrap();
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        assert!(hash_password("").is_err());
    }

    #[test]
    fn config_hashes_that_are_not_argon2_are_refused_with_the_remedy() {
        for bad in [
            "hunter2",
            "$2b$12$abcdefghijklmnopqrstuv",
            "$argon2id$v=19$m=19456",
        ] {
            let e = check_hash(bad).unwrap_err();
            assert!(e.contains("hash-password"), "{bad}: {e}");
        }
        assert!(check_hash(&cheap_hash("x")).is_ok());
    }

    #[tokio::test]
    async fn login_gives_a_session_that_the_cookie_then_opens() {
        let auth = Auth::new(&cheap_hash("pw")).unwrap();
        let me = ip("192.0.2.1");
        assert_eq!(auth.login("nope", me).await, Err(Refusal::Wrong));
        let token = auth.login("pw", me).await.unwrap();
        assert_eq!(token.len(), 43, "256 bits in unpadded base64url");
        let mut h = HeaderMap::new();
        assert_eq!(auth.check(&h, me).await, Err(Refusal::Missing));
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {COOKIE}={token}; c=d")).unwrap(),
        );
        assert_eq!(auth.check(&h, me).await, Ok(()));
        auth.logout(&h);
        assert_eq!(auth.check(&h, me).await, Err(Refusal::Wrong));
        let forged = HeaderValue::from_str(&format!("{COOKIE}={}", "A".repeat(43))).unwrap();
        h.insert(header::COOKIE, forged);
        assert_eq!(auth.check(&h, me).await, Err(Refusal::Wrong));
    }

    #[tokio::test]
    async fn basic_credentials_open_with_any_user_name() {
        let auth = Auth::new(&cheap_hash("s3cret:x")).unwrap();
        let mut h = HeaderMap::new();
        let b64 = base64::engine::general_purpose::STANDARD.encode("ffmpeg:s3cret:x");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {b64}")).unwrap(),
        );
        assert_eq!(auth.check(&h, ip("192.0.2.1")).await, Ok(()));
        // Now cached: still fine, and costs no token even from a client out of tokens.
        assert_eq!(auth.check(&h, ip("192.0.2.1")).await, Ok(()));
        let b64 = base64::engine::general_purpose::STANDARD.encode("ffmpeg:wrong");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {b64}")).unwrap(),
        );
        assert_eq!(auth.check(&h, ip("192.0.2.1")).await, Err(Refusal::Wrong));
    }

    #[tokio::test]
    async fn the_sixth_wrong_password_from_one_client_is_refused_without_checking() {
        let auth = Auth::new(&cheap_hash("pw")).unwrap();
        let me = ip("192.0.2.1");
        for _ in 0..5 {
            assert_eq!(auth.login("guess", me).await, Err(Refusal::Wrong));
        }
        match auth.login("pw", me).await {
            Err(Refusal::Limited(wait)) => assert!(wait > Duration::from_secs(10), "{wait:?}"),
            other => panic!("expected Limited, got {other:?}"),
        }
        // Another client still gets in; a right password gives its token back.
        for _ in 0..10 {
            auth.login("pw", ip("192.0.2.2")).await.unwrap();
        }
        assert_eq!(auth.counters.lock().unwrap().failures, 5);
    }

    #[test]
    fn cookies_basic_and_forms_parse() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("x=1"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("y=2;  pinhole_session=abc "),
        );
        assert_eq!(cookie_value(&h, COOKIE), Some("abc"));
        assert_eq!(cookie_value(&h, "z"), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("basic dTpwOnc="),
        );
        assert_eq!(basic_password(&h).as_deref(), Some("p:w"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_password(&h), None);
        assert_eq!(
            form_value(b"a=1&password=p%40ss+word%26&x", "password").as_deref(),
            Some("p@ss word&")
        );
        assert_eq!(form_value(b"password=%zz", "password"), None);
        assert_eq!(form_value(b"pass=1", "password"), None);
        assert!(session_cookie("t", true).contains("; Secure"));
        assert!(!session_cookie("t", false).contains("Secure"));
        assert!(session_cookie("t", false).contains("HttpOnly; SameSite=Strict"));
    }

    #[test]
    fn sessions_are_bounded_and_expire() {
        let auth = Auth::new(&cheap_hash("pw")).unwrap();
        let t0 = Instant::now();
        let first = auth.new_session(t0).unwrap();
        for i in 0..MAX_SESSIONS {
            auth.new_session(t0 + Duration::from_millis(i as u64 + 1))
                .unwrap();
        }
        assert_eq!(auth.sessions.lock().unwrap().len(), MAX_SESSIONS);
        assert!(!auth.session_valid(&first, t0), "the oldest made room");
        let t = auth.new_session(t0).unwrap();
        assert!(auth.session_valid(&t, t0 + SESSION_TTL - Duration::from_secs(1)));
        assert!(!auth.session_valid(&t, t0 + SESSION_TTL));
    }
}
