//! The one redaction: everything that carries a source string, a source's error output or a
//! configuration error to a log line, a status field, a response body or a file goes through
//! [`redact`] first.
//!
//! It masks, wherever they stand in the text:
//! - the password of a URL's userinfo: `rtsp://admin:hunter2@cam/` → `rtsp://admin:***@cam/`
//!   (ffmpeg's own error line for a camera that refuses repeats the URL it was given);
//! - the value of a credential-like `key=value` (or `key = value`, `key: value`): `user-pw`
//!   (GStreamer's rtspsrc), `password`, `passwd`, `pass`, `pwd`, `psk`, `secret`, `token`, and
//!   `*_token`/`*-token`, `api_key`/`apikey`: in commands, pipelines, query strings and TOML;
//! - every secret value the configuration holds ([`remember`]): the `[rtsp]` password, the
//!   passwords in source URLs, the password hash, and during a first-boot import every value the
//!   owner's file gives under a secret's key, whatever its type (so a Wi-Fi password written as a
//!   number does not come back in a type error), with their percent-encoded forms.
//!
//! A remembered secret shorter than [`MIN_SECRET_CHARS`] is not searched for on its own (it
//! would mask ordinary words and numbers); the patterns above still catch it in place.

use std::sync::{PoisonError, RwLock};

/// What a masked value becomes.
pub const MASK: &str = "***";
/// Shorter remembered secrets are masked only where a pattern finds them.
pub const MIN_SECRET_CHARS: usize = 4;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Keys whose value is a secret (ASCII, lower case; matched whole, case-insensitively).
const SECRET_KEYS: [&str; 11] = [
    "user-pw",
    "password",
    "passwd",
    "pass",
    "pwd",
    "psk",
    "secret",
    "token",
    "api_key",
    "apikey",
    "password_hash",
];

/// Remembers `secret` (and its percent-encoded form) so that [`redact`] masks it anywhere.
pub fn remember(secret: &str) {
    let secret = secret.trim();
    if secret.chars().count() < MIN_SECRET_CHARS {
        return;
    }
    let mut forms = vec![secret.to_string()];
    let encoded = percent_encode(secret);
    if encoded != secret {
        forms.push(encoded);
    }
    let mut s = SECRETS.write().unwrap_or_else(PoisonError::into_inner);
    for f in forms {
        if !s.contains(&f) {
            s.push(f);
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    s.sort_by_key(|x| std::cmp::Reverse(x.len()));
}

/// `text` with every credential in it masked (see the module docs).
pub fn redact(text: &str) -> String {
    let mut out = mask_userinfo(text);
    out = mask_key_values(&out);
    let secrets = SECRETS.read().unwrap_or_else(PoisonError::into_inner);
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    out
}

/// Whether a configuration key names a secret: `password`, `password_hash`, `psk`, `token`,
/// `secret`… and their misspellings' stems.
pub fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "pass", "psk", "token", "secret", "pwd", "pasw", "user-pw", "api_key", "apikey",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// Remembers every value under a secret's key in `table` (any depth, any type), and every
/// password in a URL among its strings; `all_secret` treats every value as one.
pub fn remember_toml(value: &toml::Value, all_secret: bool) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                remember_toml(v, all_secret || secret_key(k));
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|v| remember_toml(v, all_secret)),
        toml::Value::String(s) if all_secret => remember(s),
        toml::Value::String(s) => remember_url_passwords(s),
        v if all_secret => remember(&v.to_string()),
        _ => {}
    }
}

/// Remembers the password of every `scheme://user:password@` in `text`.
pub fn remember_url_passwords(text: &str) {
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let tail = &rest[i + 3..];
        let end = authority_end(tail);
        let authority = &tail[..end];
        if let (Some(at), Some(colon)) = (authority.rfind('@'), authority.find(':')) {
            if colon < at {
                remember(&authority[colon + 1..at]);
            }
        }
        rest = &tail[end..];
    }
}

/// Where a URL's authority ends.
fn authority_end(tail: &str) -> usize {
    tail.find(|c: char| {
        c.is_whitespace() || matches!(c, '/' | '\'' | '"' | '?' | '#' | '`' | '<' | '>')
    })
    .unwrap_or(tail.len())
}

fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = authority_end(tail);
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push(':');
                out.push_str(MASK);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// Masks the value of every `KEY=value`, `KEY = value`, `KEY: value` whose KEY is a secret's
/// ([`SECRET_KEYS`], or ending in `_token`/`-token`).
fn mask_key_values(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        // A key starts where the previous byte is not part of one.
        if !is_key_char(b[i]) || (i > 0 && is_key_char(b[i - 1])) {
            i += 1;
            continue;
        }
        let key_end = (i..b.len())
            .find(|&j| !is_key_char(b[j]))
            .unwrap_or(b.len());
        let key = text[i..key_end].to_ascii_lowercase();
        let secret = SECRET_KEYS.contains(&key.as_str())
            || key.ends_with("_token")
            || key.ends_with("-token");
        if !secret {
            i = key_end;
            continue;
        }
        // Separator: optional spaces, '=' or ':', optional spaces (a quote may close the key:
        // `"password": "x"`).
        let mut j = key_end;
        if j < b.len() && (b[j] == b'"' || b[j] == b'\'') {
            j += 1;
        }
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        if j >= b.len() || !(b[j] == b'=' || b[j] == b':') {
            i = key_end;
            continue;
        }
        // `://` is a URL, not a key's value.
        if b[j] == b':' && text[j..].starts_with("://") {
            i = key_end;
            continue;
        }
        j += 1;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        let (start, end) = match b.get(j) {
            Some(&q) if q == b'"' || q == b'\'' => {
                let close = text[j + 1..].find(q as char).map_or(b.len(), |k| j + 1 + k);
                (j + 1, close)
            }
            _ => {
                let end = text[j..]
                    .find(|c: char| {
                        c.is_whitespace()
                            || matches!(c, '&' | ';' | ',' | ')' | '!' | '"' | '\'' | '`' | '#')
                    })
                    .map_or(b.len(), |k| j + k);
                (j, end)
            }
        };
        if end > start {
            out.push_str(&text[copied..start]);
            out.push_str(MASK);
            copied = end;
        }
        i = end.max(key_end);
    }
    out.push_str(&text[copied..]);
    out
}

/// Percent-encoding of everything but RFC 3986's unreserved characters (as a URL's userinfo
/// carries a password with `@`, `:` or `%` in it).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_userinfo_is_masked_wherever_it_stands() {
        assert_eq!(
            redact("ffmpeg -i rtsp://admin:hunter2@10.0.0.5:554/s1 -f h264 -"),
            "ffmpeg -i rtsp://admin:***@10.0.0.5:554/s1 -f h264 -"
        );
        // ffmpeg's own error line for a camera that refuses (ffmpeg 5.1).
        assert_eq!(
            redact(
                "[rtsp @ 0x55d0c8e2a4c0] rtsp://admin:hunter2@127.0.0.1:9/s: Connection refused"
            ),
            "[rtsp @ 0x55d0c8e2a4c0] rtsp://admin:***@127.0.0.1:9/s: Connection refused"
        );
        assert_eq!(redact("rtsp://10.0.0.5:554/s"), "rtsp://10.0.0.5:554/s");
        assert_eq!(
            redact("'rtsp://u:p@ss@h/x'"),
            "'rtsp://u:***@h/x'",
            "an @ in the password"
        );
    }

    #[test]
    fn credential_keys_are_masked_in_pipelines_queries_and_toml() {
        let cases = [
            (
                "rtspsrc location=rtsp://cam/s user-id=admin user-pw=hunter2 ! rtph264depay",
                "rtspsrc location=rtsp://cam/s user-id=admin user-pw=*** ! rtph264depay",
            ),
            (
                "rtspsrc user-pw=\"two words\" latency=0",
                "rtspsrc user-pw=\"***\" latency=0",
            ),
            (
                "http://cam/video.cgi?user=admin&password=hunter2&res=hd",
                "http://cam/video.cgi?user=admin&password=***&res=hd",
            ),
            (
                "curl 'http://c/x?pass=hunter2'",
                "curl 'http://c/x?pass=***'",
            ),
            ("x?token=abc.def&y=1", "x?token=***&y=1"),
            ("?access_token=abc", "?access_token=***"),
            ("pwd=x1 PASSWORD = 'y 2'", "pwd=*** PASSWORD = '***'"),
            ("{\"password\": \"x\"}", "{\"password\": \"***\"}"),
            // Not credentials: longer keys, gst properties that merely contain the word.
            (
                "bypass=1 passthrough=true key-int-max=30",
                "bypass=1 passthrough=true key-int-max=30",
            ),
            (
                "password_hash = \"$argon2id$v=19$m=1\"",
                "password_hash = \"***\"",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), want, "{input}");
        }
    }

    #[test]
    fn remembered_secrets_are_masked_anywhere_and_in_their_percent_encoded_form() {
        remember("Sup3r-s3cr3t/p@ss");
        remember("abc"); // too short to search for on its own
        assert_eq!(
            redact("login failed for Sup3r-s3cr3t/p@ss (also Sup3r-s3cr3t%2Fp%40ss)"),
            "login failed for *** (also ***)"
        );
        assert_eq!(redact("abc def"), "abc def");
        let wifi: toml::Value = toml::from_str("[wifi]\nssid = 'home'\npassword = 87654321\n")
            .map(toml::Value::Table)
            .unwrap();
        remember_toml(&wifi, false);
        assert_eq!(
            redact("invalid type: integer `87654321`, expected a string"),
            "invalid type: integer `***`, expected a string"
        );
        assert_eq!(redact("home"), "home");
    }
}
