//! The web UI: static files from `web-ui/`, embedded at compile time (no build step for the
//! JavaScript), each with a strong ETag computed at compile time from its bytes.
//!
//! Only names in [`FILES`] are ever served: a request path is matched exactly against the
//! table, after rejecting anything that could mean something else on a file system (`..`,
//! backslashes, percent-escapes, empty segments), so no request can reach another file.

/// One embedded file.
#[derive(Debug, PartialEq, Eq)]
pub struct File {
    /// Path under `/`, without the leading slash.
    pub name: &'static str,
    pub body: &'static [u8],
    pub content_type: &'static str,
    /// FNV-1a of the body, computed at compile time.
    pub hash: u64,
}

impl File {
    /// The strong entity tag, quoted as HTTP wants it.
    pub fn etag(&self) -> String {
        format!("\"{:016x}\"", self.hash)
    }

    /// Whether an `If-None-Match` header value names this file's current version.
    pub fn matches(&self, if_none_match: &str) -> bool {
        let tag = self.etag();
        if_none_match
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t == tag || t.strip_prefix("W/").is_some_and(|w| w == tag))
    }
}

/// FNV-1a, 64 bits: a const fn, so the ETag costs nothing at run time.
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

const fn content_type(name: &str) -> &'static str {
    let b = name.as_bytes();
    let n = b.len();
    if n >= 5 && b[n - 5] == b'.' && b[n - 4] == b'h' && b[n - 3] == b't' {
        "text/html; charset=utf-8"
    } else if n >= 3 && b[n - 3] == b'.' && b[n - 2] == b'j' && b[n - 1] == b's' {
        "text/javascript; charset=utf-8"
    } else if n >= 4 && b[n - 4] == b'.' && b[n - 3] == b'c' && b[n - 2] == b's' {
        "text/css; charset=utf-8"
    } else if n >= 4 && b[n - 4] == b'.' && b[n - 3] == b's' && b[n - 2] == b'v' {
        "image/svg+xml"
    } else {
        "application/octet-stream"
    }
}

macro_rules! embed {
    ($($name:literal),* $(,)?) => {
        &[$(File {
            name: $name,
            body: include_bytes!(concat!("../../../../web-ui/", $name)),
            content_type: content_type($name),
            hash: fnv1a(include_bytes!(concat!("../../../../web-ui/", $name))),
        }),*]
    };
}

/// Every file the UI consists of. A new file in `web-ui/` is served once it is listed here
/// (the test `every_web_ui_file_is_embedded` fails until it is).
pub static FILES: &[File] = embed![
    "index.html",
    "login.html",
    "style.css",
    "js/app.js",
    "js/mp4.js",
    "js/stream.js",
    "js/clock.js",
    "js/mse.js",
    "js/webcodecs.js",
    "js/llhls.js",
    "js/status.js",
];

/// Index of the file a request path names, if any. `/` is `index.html`.
pub fn find(path: &str) -> Option<usize> {
    let name = path.strip_prefix('/')?;
    let name = if name.is_empty() { "index.html" } else { name };
    let suspicious = name.contains("..")
        || name.contains('\\')
        || name.contains('%')
        || name.contains('\0')
        || name.starts_with('/')
        || name.contains("//");
    if suspicious {
        return None;
    }
    FILES.iter().position(|f| f.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_files_and_traversal_does_not() {
        let index = find("/").map(|i| FILES[i].name);
        assert_eq!(index, Some("index.html"));
        assert_eq!(
            find("/index.html").map(|i| FILES[i].name),
            Some("index.html")
        );
        assert_eq!(find("/js/app.js").map(|i| FILES[i].name), Some("js/app.js"));
        for bad in [
            "",
            "js/app.js",
            "/../Cargo.toml",
            "/js/../index.html",
            "/js/..%2fapp.js",
            "/%2e%2e/etc/passwd",
            "//etc/passwd",
            "/js//app.js",
            "/js\\app.js",
            "/js/",
            "/nope.js",
            "/index.html\0",
        ] {
            assert_eq!(find(bad), None, "{bad:?} must not name a file");
        }
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("js/app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("a.svg"), "image/svg+xml");
        assert_eq!(content_type("a.bin"), "application/octet-stream");
        for f in FILES {
            assert_ne!(f.content_type, "application/octet-stream", "{}", f.name);
        }
    }

    #[test]
    fn etags_differ_per_file_and_match_if_none_match() {
        let a = &FILES[0];
        let b = &FILES[1];
        assert_ne!(a.etag(), b.etag());
        assert_eq!(a.hash, fnv1a(a.body));
        assert!(a.matches(&a.etag()));
        assert!(a.matches(&format!("W/{}", a.etag())));
        assert!(a.matches(&format!("\"x\", {}", a.etag())));
        assert!(a.matches("*"));
        assert!(!a.matches(&b.etag()));
        assert!(!a.matches(""));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn every_web_ui_file_is_embedded_and_the_ui_stays_small() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web-ui");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p
                        .strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/");
                    on_disk.push(rel);
                }
            }
        }
        on_disk.sort();
        let mut listed: Vec<String> = FILES.iter().map(|f| f.name.to_string()).collect();
        listed.sort();
        assert_eq!(
            on_disk, listed,
            "web-ui/ and ui::FILES must list the same files"
        );
        let total: usize = FILES.iter().map(|f| f.body.len()).sum();
        assert!(
            total < 100 * 1024,
            "the UI is {total} bytes; keep it well under 100 KB"
        );
    }
}
