//! The version pinhole reports (`--version`, `/api/status`, its HTTP and RTSP user agents):
//! `PINHOLE_VERSION` from the build's environment when set (a release build: the version of the
//! tag, `release/version`), else the workspace's Cargo version. Read in the code as
//! `pinhole::VERSION` (`env!("PINHOLE_VERSION")`), the one place that names it.
use std::env;

fn main() {
    println!("cargo:rerun-if-env-changed=PINHOLE_VERSION");
    let version = match env::var("PINHOLE_VERSION") {
        Ok(v) if !v.is_empty() => v,
        _ => env::var("CARGO_PKG_VERSION").unwrap_or_default(),
    };
    // It goes into HTTP headers, JSON and os-release-like lines: a version's characters only.
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '~' | '_');
    if version.is_empty() || version.len() > 64 || !version.chars().all(allowed) {
        panic!(
            "PINHOLE_VERSION={version:?}: a version is 1-64 characters of A-Z a-z 0-9 . - + ~ _ \
             (e.g. 1.2.0 or 1.2.0-rc.1)"
        );
    }
    println!("cargo:rustc-env=PINHOLE_VERSION={version}");
}
