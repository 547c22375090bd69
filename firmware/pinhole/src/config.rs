//! Configuration: the flags ([`Flags`], parsed by `crate::cli`) layered over an optional TOML
//! file.
//!
//! Precedence: built-in defaults < `--config FILE` < flags. Every bad value is reported as one
//! line naming the key, the value and what is allowed; TOML syntax errors carry line and column.
//! [`check_file`] is what `pinhole --config FILE --check` runs, and what first boot runs on the
//! owner's file: one validator for every way configuration arrives.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::gate::access::{AccessConfig, DEFAULT_LEEWAY};
use crate::gate::tls::CertSource;
use crate::source::SourceSpec;

/// Fragment (CMAF part) duration bounds in milliseconds. Below 100 ms the per-fragment overhead
/// dominates and tunnels dislike tiny writes; above 300 ms latency suffers.
pub const FRAGMENT_MS_RANGE: std::ops::RangeInclusive<u32> = 100..=300;
pub const DEFAULT_FRAGMENT_MS: u32 = 100;
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_SOURCE: &str = "testsrc";

/// A LAN listen address: `ADDR` or `http://ADDR` (HTTP), `https://ADDR` (HTTPS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr {
    pub addr: SocketAddr,
    pub https: bool,
}

impl ListenAddr {
    pub fn parse(s: &str) -> Result<ListenAddr, String> {
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            (false, s)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let addr = rest.parse::<SocketAddr>().map_err(|_| {
            format!(
                "{s:?} is not an IP address with port; allowed e.g. \"127.0.0.1:8080\", \"[::]:8080\" or \"https://0.0.0.0:8443\""
            )
        })?;
        Ok(ListenAddr { addr, https })
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.https {
            write!(f, "https://{}", self.addr)
        } else {
            write!(f, "http://{}", self.addr)
        }
    }
}

/// The TOML file's shape. Unknown keys are errors (`deny_unknown_fields`) so typos never
/// silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<Vec<String>>,
    source: Option<String>,
    source_timeout_ms: Option<u32>,
    rtsp: Option<crate::source::rtsp::RtspSettings>,
    fragment_ms: Option<u32>,
    log: Option<String>,
    state_dir: Option<PathBuf>,
    lan: Option<LanFile>,
    tunnel: Option<TunnelFile>,
    stream: Option<Vec<StreamFile>>,
}

/// One `[[stream]]` table: a camera with its own name, source and routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamFile {
    name: String,
    source: String,
    fragment_ms: Option<u32>,
    source_timeout_ms: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LanFile {
    listen: Option<Vec<String>>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    password_hash: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    hosts: Option<Vec<String>>,
    cors_origins: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TunnelFile {
    listen: Option<String>,
    team: Option<String>,
    aud: Option<String>,
    certs_url: Option<String>,
    leeway_s: Option<u64>,
}

/// The tunnel listener: loopback only, Cloudflare Access always.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    pub listen: SocketAddr,
    pub access: AccessConfig,
}

/// The effective configuration after defaults, file and flags are merged and validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The LAN listeners.
    pub listen: Vec<ListenAddr>,
    /// The cameras, at least one. The first is also served at the contract's default paths.
    pub streams: Vec<StreamConfig>,
    pub log: Option<String>,
    /// Where the HTTPS certificate comes from, if any LAN listener speaks HTTPS.
    pub tls: Option<CertSource>,
    /// The LAN password's argon2 PHC string (checked to parse); `None`: the LAN is open.
    pub password_hash: Option<String>,
    pub tunnel: Option<TunnelConfig>,
    /// `[lan] trusted_proxies`: peers whose `X-Forwarded-For`/`Forwarded` name the client.
    pub trusted_proxies: Vec<crate::gate::origin::Cidr>,
    /// `[lan] hosts`: more names an open listener accepts in `Host`.
    pub hosts: Vec<String>,
    /// `[lan] cors_origins`: more origins whose pages may read the LL-HLS.
    pub cors_origins: Vec<String>,
}

/// One camera: `[[stream]]` in the file, or the single stream of `source =` / `--source`.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Its name in `/streams/NAME/…`, status and metrics.
    pub name: String,
    pub source: SourceSpec,
    /// The source watchdog's timeout: `None` for the source kind's default, zero for none.
    pub source_timeout: Option<std::time::Duration>,
    pub fragment_ms: u32,
}

/// The stream name used when the config has no `[[stream]]` tables.
pub const DEFAULT_STREAM_NAME: &str = "cam";

/// Stream names go into URL paths and metric labels: 1 to 32 of `a-z A-Z 0-9 _ -`.
pub fn check_stream_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: a stream name is 1 to 32 letters, digits, '_' or '-' (it goes into /streams/NAME/)"
        ))
    }
}

/// A configuration error: one line for the user, already naming the key and what is allowed.
/// Shown redacted ([`crate::redact`]): it may quote a source URL or a value the file gives.
#[derive(Debug, thiserror::Error)]
#[error("{}", crate::redact::redact(.0))]
pub struct ConfigError(pub String);

/// What the command line gives (`crate::cli::Cli::flags`): each one wins over the file.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    pub listen: Vec<ListenAddr>,
    pub state_dir: Option<PathBuf>,
    pub source: Option<String>,
    pub source_timeout_ms: Option<u32>,
    pub fragment_ms: Option<u32>,
    pub log: Option<String>,
}

/// `pinhole --config FILE --check`: the file as the daemon would run it, without flags.
pub fn check_file(path: &Path) -> Result<Config, ConfigError> {
    Config::resolve(&Flags {
        config: Some(path.to_path_buf()),
        ..Flags::default()
    })
}

impl Config {
    pub fn resolve(cli: &Flags) -> Result<Config, ConfigError> {
        if let Some(s) = &cli.source {
            crate::redact::remember_url_passwords(s);
        }
        let file = match &cli.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let origin = |key: &str| match &cli.config {
            Some(path) => format!("{}: {key}", path.display()),
            None => key.to_string(),
        };

        let lan = file.lan.unwrap_or_default();
        let (file_listen, listen_key) = match (&file.listen, &lan.listen) {
            (Some(_), Some(_)) => {
                return Err(ConfigError(format!(
                    "{} and {}: give the LAN addresses once (top-level listen is the same as [lan] listen)",
                    origin("listen"),
                    origin("lan.listen")
                )))
            }
            (Some(l), None) => (Some(l), origin("listen")),
            (None, Some(l)) => (Some(l), origin("lan.listen")),
            (None, None) => (None, String::new()),
        };
        let listen = if !cli.listen.is_empty() {
            cli.listen.clone()
        } else if let Some(list) = file_listen {
            if list.is_empty() {
                return Err(ConfigError(format!(
                    "{listen_key} = []: give at least one address, e.g. [\"{DEFAULT_LISTEN}\"]"
                )));
            }
            list.iter()
                .map(|s| {
                    ListenAddr::parse(s)
                        .map_err(|e| ConfigError(format!("{listen_key} = {s:?}: {e}")))
                })
                .collect::<Result<_, _>>()?
        } else {
            vec![ListenAddr::parse(DEFAULT_LISTEN)
                .map_err(|_| ConfigError("internal: bad default listen address".into()))?]
        };

        let state_dir = cli
            .state_dir
            .clone()
            .or(file.state_dir)
            .or_else(|| {
                std::env::var("STATE_DIRECTORY")
                    .ok()
                    .and_then(|v| v.split(':').next().map(PathBuf::from))
                    .filter(|p| !p.as_os_str().is_empty())
            })
            .unwrap_or_else(|| PathBuf::from("/var/lib/pinhole"));
        let any_https = listen.iter().any(|l| l.https);
        let tls = match (lan.cert, lan.key) {
            (Some(cert), Some(key)) if any_https => Some(CertSource::Files { cert, key }),
            (Some(_), Some(_)) => {
                return Err(ConfigError(format!(
                    "{}: cert and key are given but no LAN address is https://; e.g. listen = [\"https://0.0.0.0:8443\"]",
                    origin("lan")
                )))
            }
            (None, None) if any_https => Some(CertSource::Generated { state_dir }),
            (None, None) => None,
            _ => {
                return Err(ConfigError(format!(
                    "{}: give both cert and key (PEM files), or neither for a generated certificate",
                    origin("lan")
                )))
            }
        };
        let trusted_proxies = lan
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .map(|s| {
                crate::gate::origin::Cidr::parse(s).map_err(|e| {
                    ConfigError(format!(
                        "{} = {s:?}: {e}; e.g. [\"127.0.0.1\", \"10.0.0.0/8\"]",
                        origin("lan.trusted_proxies")
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hosts = lan.hosts.unwrap_or_default();
        if let Some(h) = hosts.iter().find(|h| {
            h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }) {
            return Err(ConfigError(format!(
                "{} = {h:?}: a host name (letters, digits, '-' and '.'), e.g. \"camera.example.net\"",
                origin("lan.hosts")
            )));
        }
        let cors_origins = lan.cors_origins.unwrap_or_default();
        if let Some(o) = cors_origins.iter().find(|o| {
            let rest = o
                .strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"));
            rest.is_none_or(|r| r.is_empty() || r.contains('/') || r.contains(char::is_whitespace))
        }) {
            return Err(ConfigError(format!(
                "{} = {o:?}: an origin is scheme://host[:port] with no path, e.g. \"https://mainsail.example.net\"",
                origin("lan.cors_origins")
            )));
        }
        let password_hash = match lan.password_hash {
            Some(h) => {
                crate::gate::auth::check_hash(&h)
                    .map_err(|e| ConfigError(format!("{}: {e}", origin("lan.password_hash"))))?;
                Some(h)
            }
            None => None,
        };
        let tunnel = match file.tunnel {
            Some(t) => Some(tunnel_config(t, &origin)?),
            None => None,
        };
        if let Some(t) = &tunnel {
            if let Some(l) = listen.iter().find(|l| l.addr == t.listen) {
                return Err(ConfigError(format!(
                    "{} = \"{}\" is also a LAN address ({l}): the tunnel listener needs a port of its own",
                    origin("tunnel.listen"),
                    t.listen
                )));
            }
        }

        // One resolver for every camera: flags over this level of the file over the level
        // below (the defaults under the top level, the top level under a [[stream]] table).
        let top = StreamSettings::DEFAULT.under(
            cli,
            &Level {
                fragment_ms: file.fragment_ms,
                source_timeout_ms: file.source_timeout_ms,
                key: &origin,
            },
        )?;
        let rtsp_where = cli
            .config
            .as_ref()
            .map_or(String::new(), |p| format!("{}: ", p.display()));
        let camera = |name: String, uri: &str, key: String, settings: StreamSettings| {
            stream_config(name, uri, &key, settings, file.rtsp.as_ref(), &rtsp_where)
        };

        let streams = match file.stream {
            // One camera: `source =` or --source (or the test source).
            None => {
                let (uri, key) = match (&cli.source, &file.source) {
                    (Some(s), _) => (s.as_str(), "--source".to_string()),
                    (None, Some(s)) => (s.as_str(), origin("source")),
                    (None, None) => (DEFAULT_SOURCE, "source".to_string()),
                };
                vec![camera(DEFAULT_STREAM_NAME.to_string(), uri, key, top)?]
            }
            Some(tables) => {
                if file.source.is_some() {
                    return Err(ConfigError(format!(
                        "{} and {}: give the source in each [[stream]] table, not also at the top level",
                        origin("source"),
                        origin("stream")
                    )));
                }
                if tables.is_empty() {
                    return Err(ConfigError(format!(
                        "{} = []: list at least one [[stream]] with a name and a source, or remove it",
                        origin("stream")
                    )));
                }
                let mut out: Vec<StreamConfig> = Vec::with_capacity(tables.len());
                for (i, t) in tables.into_iter().enumerate() {
                    let at = |key: &str| origin(&format!("stream[{i}].{key}"));
                    check_stream_name(&t.name)
                        .map_err(|e| ConfigError(format!("{} = {e}", at("name"))))?;
                    if out.iter().any(|o| o.name == t.name) {
                        return Err(ConfigError(format!(
                            "{} = {:?}: another [[stream]] already has this name; names must be unique",
                            at("name"),
                            t.name
                        )));
                    }
                    // --source replaces the first camera's source (handy for a quick test).
                    let (uri, key) = match (&cli.source, i) {
                        (Some(s), 0) => (s.clone(), "--source".to_string()),
                        _ => (t.source.clone(), at("source")),
                    };
                    let settings = top.under(
                        cli,
                        &Level {
                            fragment_ms: t.fragment_ms,
                            source_timeout_ms: t.source_timeout_ms,
                            key: &at,
                        },
                    )?;
                    out.push(camera(t.name, &uri, key, settings)?);
                }
                out
            }
        };

        Ok(Config {
            listen,
            streams,
            log: cli.log.clone().or(file.log),
            tls,
            password_hash,
            tunnel,
            trusted_proxies,
            hosts,
            cors_origins,
        })
    }
}

/// What one level of the file gives a camera: the top level, or one `[[stream]]` table.
struct Level<'a> {
    fragment_ms: Option<u32>,
    source_timeout_ms: Option<u32>,
    /// The key's full name for an error (file, table, key).
    key: &'a dyn Fn(&str) -> String,
}

/// A camera's settings, resolved down to some level of the file.
#[derive(Debug, Clone, Copy)]
struct StreamSettings {
    fragment_ms: u32,
    /// `None`: the source kind's default watchdog.
    source_timeout_ms: Option<u32>,
}

impl StreamSettings {
    const DEFAULT: StreamSettings = StreamSettings {
        fragment_ms: DEFAULT_FRAGMENT_MS,
        source_timeout_ms: None,
    };

    /// The flags, else `level`'s values (checked), else these.
    fn under(self, flags: &Flags, level: &Level<'_>) -> Result<StreamSettings, ConfigError> {
        let fragment_ms = match (flags.fragment_ms, level.fragment_ms) {
            (Some(ms), _) => ms,
            (None, Some(ms)) => check_fragment_ms(ms)
                .map_err(|e| ConfigError(format!("{} = {e}", (level.key)("fragment_ms"))))?,
            (None, None) => self.fragment_ms,
        };
        let source_timeout_ms = match (flags.source_timeout_ms, level.source_timeout_ms) {
            (Some(ms), _) => Some(ms),
            (None, Some(ms)) => Some(parse_source_timeout(&ms.to_string()).map_err(|e| {
                ConfigError(format!("{} = {ms}: {e}", (level.key)("source_timeout_ms")))
            })?),
            (None, None) => self.source_timeout_ms,
        };
        Ok(StreamSettings {
            fragment_ms,
            source_timeout_ms,
        })
    }
}

/// One camera from its name, source URI (named `key` in errors) and settings; `[rtsp]`
/// defaults apply to an `rtsp://` source.
fn stream_config(
    name: String,
    uri: &str,
    key: &str,
    settings: StreamSettings,
    rtsp: Option<&crate::source::rtsp::RtspSettings>,
    rtsp_where: &str,
) -> Result<StreamConfig, ConfigError> {
    let mut source = SourceSpec::parse(uri).map_err(|e| ConfigError(format!("{key}: {e}")))?;
    if let (SourceSpec::Rtsp(r), Some(rtsp)) = (&mut source, rtsp) {
        r.apply_settings(rtsp)
            .map_err(|e| ConfigError(format!("{rtsp_where}{e}")))?;
    }
    Ok(StreamConfig {
        name,
        source,
        source_timeout: settings
            .source_timeout_ms
            .map(|ms| Duration::from_millis(u64::from(ms))),
        fragment_ms: settings.fragment_ms,
    })
}

/// `fragment_ms`: within [`FRAGMENT_MS_RANGE`].
fn check_fragment_ms(ms: u32) -> Result<u32, String> {
    if FRAGMENT_MS_RANGE.contains(&ms) {
        Ok(ms)
    } else {
        Err(format!(
            "{ms}: allowed {}..={} (milliseconds)",
            FRAGMENT_MS_RANGE.start(),
            FRAGMENT_MS_RANGE.end()
        ))
    }
}

/// `--fragment-ms`: a whole number within [`FRAGMENT_MS_RANGE`] (the same check as the file's).
pub fn parse_fragment_ms(text: &str) -> Result<u32, String> {
    let ms = text.trim().parse::<u32>().map_err(|_| {
        format!(
            "{text:?}: allowed {}..={} (milliseconds)",
            FRAGMENT_MS_RANGE.start(),
            FRAGMENT_MS_RANGE.end()
        )
    })?;
    check_fragment_ms(ms)
}

fn tunnel_config(
    t: TunnelFile,
    origin: &dyn Fn(&str) -> String,
) -> Result<TunnelConfig, ConfigError> {
    let need = |v: Option<String>, key: &str, example: &str| {
        v.ok_or_else(|| {
            ConfigError(format!(
                "{}: missing; the tunnel listener needs it (e.g. {key} = {example})",
                origin(&format!("tunnel.{key}"))
            ))
        })
    };
    let listen_s = need(t.listen, "listen", "\"127.0.0.1:8081\"")?;
    let listen: SocketAddr = listen_s.parse().map_err(|_| {
        ConfigError(format!(
            "{} = {listen_s:?}: not an IP address with port; e.g. \"127.0.0.1:8081\"",
            origin("tunnel.listen")
        ))
    })?;
    if !listen.ip().is_loopback() {
        return Err(ConfigError(format!(
            "{} = {listen_s:?}: the tunnel listener must be on a loopback address (127.0.0.1 or [::1]): \
             only cloudflared on this machine may reach it; LAN clients use [lan] listen",
            origin("tunnel.listen")
        )));
    }
    let team = need(t.team, "team", "\"myteam\"")?;
    let aud = need(t.aud, "aud", "\"<the Access application's AUD tag>\"")?;
    let leeway = match t.leeway_s {
        None => DEFAULT_LEEWAY,
        Some(s) if s <= 600 => Duration::from_secs(s),
        Some(s) => {
            return Err(ConfigError(format!(
                "{} = {s}: allowed 0..=600 (seconds)",
                origin("tunnel.leeway_s")
            )))
        }
    };
    let access = AccessConfig::new(&team, &aud, t.certs_url.as_deref(), leeway)
        .map_err(|e| ConfigError(format!("{}: {e}", origin("tunnel"))))?;
    Ok(TunnelConfig { listen, access })
}

/// `source_timeout_ms`: 0 (off) or 500..=600000.
pub fn parse_source_timeout(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(ms) if ms == 0 || (500..=600_000).contains(&ms) => Ok(ms),
        _ => Err(format!(
            "{text:?}: allowed 0 (no watchdog) or 500..=600000 (milliseconds)"
        )),
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    // Its secret values, whatever their type, are masked wherever they might reappear (an
    // error about them, a source's error output).
    if let Ok(t) = toml::from_str::<toml::Table>(&text) {
        crate::redact::remember_toml(&toml::Value::Table(t), false);
    }
    parse_file(&text).map_err(|msg| ConfigError(format!("{}: {msg}", path.display())))
}

/// Parses the TOML text. The error is one line: "line L, column C: what is wrong".
fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str::<FileConfig>(text).map_err(|e| {
        let what = e.message().trim().replace('\n', " ");
        match e.span() {
            Some(span) => {
                let (line, col) = line_col(text, span.start);
                format!("line {line}, column {col}: {what}")
            }
            None => what,
        }
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags as the command line gives them.
    fn cli(args: &[&str]) -> Result<Flags, clap::Error> {
        use clap::Parser as _;
        crate::cli::Cli::try_parse_from(std::iter::once("pinhole").chain(args.iter().copied()))
            .map(|c| c.flags())
    }

    #[test]
    fn no_arguments_serve_the_test_source_on_localhost_8080() {
        let cfg = Config::resolve(&cli(&[]).unwrap()).unwrap();
        assert_eq!(
            cfg.listen,
            vec![ListenAddr::parse("127.0.0.1:8080").unwrap()]
        );
        assert!(!cfg.listen[0].https);
        assert!(cfg.tls.is_none() && cfg.password_hash.is_none() && cfg.tunnel.is_none());
        assert_eq!(cfg.streams[0].fragment_ms, 100);
        assert!(matches!(cfg.streams[0].source, SourceSpec::Testsrc(_)));
    }

    #[test]
    fn a_typo_in_the_file_is_an_error_naming_the_key_with_its_position() {
        let err = parse_file("source = \"testsrc\"\nfragmnet_ms = 100\n").unwrap_err();
        assert!(err.contains("fragmnet_ms"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn toml_syntax_errors_carry_line_and_column() {
        let err = parse_file("fragment_ms = \n").unwrap_err();
        assert!(err.starts_with("line 1, column"), "{err}");
    }

    #[test]
    fn fragment_duration_outside_the_range_is_refused_naming_the_range() {
        assert!(cli(&["--fragment-ms", "50"]).is_err());
        assert!(cli(&["--fragment-ms", "300"]).is_ok());
        let dir = std::env::temp_dir().join(format!("pinhole-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "fragment_ms = 500\n").unwrap();
        let c = cli(&["--config", path.to_str().unwrap()]).unwrap();
        let err = Config::resolve(&c).unwrap_err().to_string();
        assert!(
            err.contains("fragment_ms = 500") && err.contains("100..=300"),
            "{err}"
        );
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("pinhole-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ok.toml");
        std::fs::write(
            &path,
            "listen = [\"127.0.0.1:9000\"]\nfragment_ms = 200\nsource = \"exec:cat x.h264\"\n",
        )
        .unwrap();
        let c = cli(&["--config", path.to_str().unwrap(), "--fragment-ms", "150"]).unwrap();
        let cfg = Config::resolve(&c).unwrap();
        assert_eq!(cfg.streams[0].fragment_ms, 150);
        assert_eq!(
            cfg.listen,
            vec![ListenAddr::parse("127.0.0.1:9000").unwrap()]
        );
        assert!(matches!(cfg.streams[0].source, SourceSpec::Exec(_)));
    }

    #[test]
    fn a_bad_listen_address_in_the_file_names_the_key_and_value() {
        let dir = std::env::temp_dir().join(format!("pinhole-cfg3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("l.toml");
        std::fs::write(&path, "listen = [\"localhost\"]\n").unwrap();
        let c = cli(&["--config", path.to_str().unwrap()]).unwrap();
        let err = Config::resolve(&c).unwrap_err().to_string();
        assert!(
            err.contains("listen") && err.contains("\"localhost\""),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_source_scheme_is_refused_listing_the_known_ones() {
        let c = cli(&["--source", "bogus:x"]).unwrap();
        let err = Config::resolve(&c).unwrap_err().to_string();
        assert!(err.contains("--source") && err.contains("testsrc"), "{err}");
    }

    fn from_file(name: &str, text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("pinhole-cfg-acc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        Config::resolve(&cli(&["--config", path.to_str().unwrap()]).unwrap())
    }

    #[test]
    fn stream_tables_give_several_cameras_with_their_own_names_sources_and_durations() {
        let cfg = from_file(
            "streams.toml",
            "fragment_ms = 200\nsource_timeout_ms = 3000\n\
             [[stream]]\nname = \"printer\"\nsource = \"exec:cat a.h264\"\n\
             [[stream]]\nname = \"door-1\"\nsource = \"testsrc?size=640x360\"\nfragment_ms = 100\n\
             source_timeout_ms = 0\n",
        )
        .unwrap();
        let names: Vec<&str> = cfg.streams.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["printer", "door-1"]);
        assert!(matches!(cfg.streams[0].source, SourceSpec::Exec(_)));
        assert!(matches!(cfg.streams[1].source, SourceSpec::Testsrc(_)));
        // top-level values are the defaults; a table's own value wins
        assert_eq!(cfg.streams[0].fragment_ms, 200);
        assert_eq!(cfg.streams[1].fragment_ms, 100);
        assert_eq!(cfg.streams[0].source_timeout, Some(Duration::from_secs(3)));
        assert_eq!(cfg.streams[1].source_timeout, Some(Duration::ZERO));
        // without tables: one stream called "cam"
        let one = from_file("one.toml", "source = \"testsrc\"\n").unwrap();
        assert_eq!(one.streams.len(), 1);
        assert_eq!(one.streams[0].name, DEFAULT_STREAM_NAME);
    }

    #[test]
    fn one_resolver_layers_flags_over_a_stream_table_over_the_top_level_over_defaults() {
        // Why: the single camera and [[stream]] tables merged their settings in two copies.
        let dir = std::env::temp_dir().join(format!("pinhole-cfg-layers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("layers.toml");
        std::fs::write(
            &path,
            "source_timeout_ms = 3000\n\
             [[stream]]\nname = \"a\"\nsource = \"testsrc\"\nfragment_ms = 300\n\
             [[stream]]\nname = \"b\"\nsource = \"testsrc\"\nsource_timeout_ms = 0\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let cfg = Config::resolve(&cli(&["--config", p]).unwrap()).unwrap();
        let got: Vec<(u32, Option<u64>)> = cfg
            .streams
            .iter()
            .map(|s| {
                let t = s.source_timeout.map(|d| d.as_millis() as u64);
                (s.fragment_ms, t)
            })
            .collect();
        // a: its own 300 ms, the top level's 3 s; b: the default 100 ms, its own 0 (off).
        assert_eq!(got, [(300, Some(3000)), (100, Some(0))]);
        let cfg = Config::resolve(
            &cli(&[
                "--config",
                p,
                "--fragment-ms",
                "150",
                "--source-timeout-ms",
                "800",
            ])
            .unwrap(),
        )
        .unwrap();
        for s in &cfg.streams {
            assert_eq!(s.fragment_ms, 150, "the flag wins over the table");
            assert_eq!(s.source_timeout, Some(Duration::from_millis(800)));
        }
        let one = Config::resolve(&cli(&["--fragment-ms", "200"]).unwrap()).unwrap();
        assert_eq!(one.streams[0].fragment_ms, 200);
        assert_eq!(
            one.streams[0].source_timeout, None,
            "the source kind's default"
        );
    }

    #[test]
    fn bad_stream_tables_are_refused_naming_the_table_and_key() {
        let dup = "[[stream]]\nname = \"a\"\nsource = \"testsrc\"\n[[stream]]\nname = \"a\"\nsource = \"testsrc\"\n";
        let err = from_file("dup.toml", dup).unwrap_err().to_string();
        assert!(
            err.contains("stream[1].name") && err.contains("unique"),
            "{err}"
        );
        let slash = "[[stream]]\nname = \"../x\"\nsource = \"testsrc\"\n";
        let err = from_file("slash.toml", slash).unwrap_err().to_string();
        assert!(
            err.contains("stream[0].name") && err.contains("letters"),
            "{err}"
        );
        let both = "source = \"testsrc\"\n[[stream]]\nname = \"a\"\nsource = \"testsrc\"\n";
        let err = from_file("both.toml", both).unwrap_err().to_string();
        assert!(err.contains("each [[stream]]"), "{err}");
        let bad_src = "[[stream]]\nname = \"a\"\nsource = \"nope:x\"\n";
        let err = from_file("src.toml", bad_src).unwrap_err().to_string();
        assert!(err.contains("stream[0].source"), "{err}");
        let frag = "[[stream]]\nname = \"a\"\nsource = \"testsrc\"\nfragment_ms = 20\n";
        let err = from_file("frag.toml", frag).unwrap_err().to_string();
        assert!(
            err.contains("stream[0].fragment_ms = 20") && err.contains("100..=300"),
            "{err}"
        );
        let typo = "[[stream]]\nname = \"a\"\nsorce = \"testsrc\"\n";
        let err = from_file("typo.toml", typo).unwrap_err().to_string();
        assert!(err.contains("sorce"), "{err}");
        assert!(check_stream_name(&"x".repeat(33)).is_err());
        assert!(check_stream_name("Front_door-2").is_ok());
    }

    #[test]
    fn lan_listeners_may_be_http_or_https_and_https_alone_means_a_generated_certificate() {
        let cfg = from_file(
            "lan.toml",
            "state_dir = \"/tmp/x\"\n[lan]\nlisten = [\"0.0.0.0:8080\", \"https://[::]:8443\"]\n",
        )
        .unwrap();
        assert_eq!(cfg.listen.len(), 2);
        assert!(!cfg.listen[0].https && cfg.listen[1].https);
        assert_eq!(
            cfg.tls,
            Some(CertSource::Generated {
                state_dir: PathBuf::from("/tmp/x")
            })
        );
        let c = cli(&["--listen", "https://127.0.0.1:1", "--listen", "127.0.0.1:2"]).unwrap();
        assert_eq!(c.listen[0].to_string(), "https://127.0.0.1:1");
        assert_eq!(c.listen[1].to_string(), "http://127.0.0.1:2");
        assert!(cli(&["--listen", "ftp://127.0.0.1:1"]).is_err());
    }

    #[test]
    fn lan_mistakes_name_the_key() {
        let e = from_file(
            "l1.toml",
            "listen = [\"127.0.0.1:1\"]\n[lan]\nlisten = [\"127.0.0.1:2\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("lan.listen") && e.contains("once"), "{e}");
        let e = from_file("l2.toml", "[lan]\ncert = \"/c.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("both cert and key"), "{e}");
        let e = from_file("l3.toml", "[lan]\ncert = \"/c\"\nkey = \"/k\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no LAN address is https://"), "{e}");
        let e = from_file("l4.toml", "[lan]\npassword_hash = \"hunter2\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("lan.password_hash") && e.contains("hash-password"),
            "{e}"
        );
        let e = from_file("l5.toml", "[lan]\npasword_hash = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pasword_hash"), "{e}");
    }

    #[test]
    fn the_tunnel_listener_is_loopback_only_and_needs_team_and_aud() {
        let ok = "[tunnel]\nlisten = \"127.0.0.1:8081\"\nteam = \"myteam\"\naud = \"abc\"\n";
        let cfg = from_file("t1.toml", ok).unwrap();
        let t = cfg.tunnel.unwrap();
        assert_eq!(t.listen, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(t.access.issuer(), "https://myteam.cloudflareaccess.com");
        assert_eq!(t.access.leeway, DEFAULT_LEEWAY);
        for (addr, ok) in [
            ("0.0.0.0:8081", false),
            ("192.168.1.2:8081", false),
            ("[::]:8081", false),
            ("[::1]:8081", true),
        ] {
            let r = from_file("t2.toml", &ok_with(addr));
            assert_eq!(r.is_ok(), ok, "{addr}");
            if let Err(e) = r {
                let e = e.to_string();
                assert!(e.contains("tunnel.listen") && e.contains("loopback"), "{e}");
            }
        }
        let e = from_file(
            "t3.toml",
            "[tunnel]\nlisten = \"127.0.0.1:8081\"\nteam = \"t\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("tunnel.aud") && e.contains("missing"), "{e}");
        let e = from_file("t4.toml", &format!("{ok}leeway_s = 3600\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tunnel.leeway_s"), "{e}");
        let e = from_file("t5.toml", &format!("listen = [\"127.0.0.1:8081\"]\n{ok}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("port of its own"), "{e}");
        let e = from_file(
            "t6.toml",
            &format!("{ok}certs_url = \"http://10.0.0.1/certs\"\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("certs_url") && e.contains("loopback"), "{e}");
    }

    fn ok_with(addr: &str) -> String {
        format!("[tunnel]\nlisten = \"{addr}\"\nteam = \"myteam\"\naud = \"abc\"\n")
    }

    /// The CONFIG FILE example in --help is a valid file: every key is known and sits in the
    /// table the example puts it under.
    #[test]
    fn the_config_example_in_help_parses() {
        let start = crate::cli::AFTER_HELP.find("CONFIG FILE").unwrap();
        let block = &crate::cli::AFTER_HELP[start..];
        let block = &block[block.find('\n').unwrap() + 1..block.find("\n\n").unwrap()];
        let toml: String = block
            .lines()
            .map(|l| format!("{}\n", l.trim_start()))
            .collect();
        let parsed = parse_file(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert!(
            parsed.log.is_some() && parsed.state_dir.is_some(),
            "top-level keys read as top-level"
        );
        let t = parsed.tunnel.unwrap();
        assert_eq!(t.team.as_deref(), Some("myteam"));
        assert_eq!(parsed.lan.unwrap().listen.unwrap().len(), 2);
        let streams = parsed.stream.unwrap();
        assert_eq!(streams.len(), 1);
        assert_eq!(streams[0].name, "printer");
        assert_eq!(streams[0].fragment_ms, Some(100));
    }
}
