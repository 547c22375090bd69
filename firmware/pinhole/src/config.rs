//! Configuration: command-line flags layered over an optional TOML file.
//!
//! Precedence: built-in defaults < `--config FILE` < flags. Every bad value is reported as one
//! line naming the key, the value and what is allowed; TOML syntax errors carry line and column.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

use crate::source::SourceSpec;

/// Fragment (CMAF part) duration bounds in milliseconds. Below 100 ms the per-fragment overhead
/// dominates and tunnels dislike tiny writes; above 300 ms latency suffers.
pub const FRAGMENT_MS_RANGE: std::ops::RangeInclusive<u32> = 100..=300;
pub const DEFAULT_FRAGMENT_MS: u32 = 100;
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_SOURCE: &str = "testsrc";

const AFTER_HELP: &str = "\
SOURCES (--source URI):
  testsrc[?OPTIONS]   built-in moving test pattern with the capture time burned in, encoded to
                      H.264 in-process. Options: size=WxH (1280x720), fps=N (30), gop=FRAMES
                      (one second), bitrate=BITS (2M; accepts k/M suffixes).
                      Example: testsrc?size=1920x1080&fps=30&bitrate=6M
  exec:COMMAND        runs COMMAND with /bin/sh and reads H.264 Annex-B from its stdout; restarted
                      with capped backoff when it exits, its stderr goes to the log.
                      Example: 'exec:rpicam-vid -t 0 --inline --codec h264 -o -'
  rtsp://[USER:PASS@]HOST[:PORT]/PATH[#OPTIONS]
                      pulls H.264 from an RTSP camera or server (retina); RTP interleaved over
                      the RTSP TCP connection unless #transport=udp. Reconnects with backoff
                      (250 ms doubling to 1 s). OPTIONS (key=value joined by &, also settable
                      in the [rtsp] table): transport=tcp|udp, teardown=auto|always|never,
                      initial_timestamp=default|require|ignore|permissive,
                      initial_seq=default|respect|ignore-suspicious-values|ignore,
                      unknown_rtcp_ssrc=default|abort-session|drop-packets|process-packets,
                      unassigned_channel_data=auto|assume-stale-session|error|ignore,
                      session_id=default|require-match|use-first (tolerances for broken
                      cameras; see retina's docs). Passwords are never logged or shown.
                      rtsps:// is refused (no TLS in retina): use exec:ffmpeg for it.
                      Example: 'rtsp://admin:secret@192.168.1.20:554/stream1#transport=udp'
  Every source is restarted when it delivers no frame for source_timeout_ms (default 5000,
  exec: 10000; 0 turns the watchdog off).

CONFIG FILE (--config FILE), TOML; flags override it:
  listen = [\"127.0.0.1:8080\"]   # addresses to serve HTTP on
  source = \"testsrc\"            # source URI, as above
  fragment_ms = 100             # CMAF fragment duration, 100..=300
  source_timeout_ms = 5000      # restart a source silent this long; 0: never (500..=600000)
  [rtsp]                        # defaults for rtsp:// sources (the URI's #options win)
  transport = \"tcp\"             # or \"udp\"; also teardown, initial_timestamp, initial_seq,
  user = \"admin\"                #   unknown_rtcp_ssrc, unassigned_channel_data, session_id
  password = \"secret\"           # used when the URL has no user:password@
  log = \"info\"                  # log filter (tracing EnvFilter syntax)

ENDPOINTS:
  GET  /                  the player
  GET|POST /api/video/cmaf  live stream: [u32 BE length][payload] records, init segment first,
                          then moof+mdat fragments; a zero-length record is a heartbeat
  GET  /hls/index.m3u8    LL-HLS multivariant playlist (stream.m3u8: the media playlist,
                          with blocking reload; parts and segments cut from the same fragments)
  GET  /api/status        JSON status;  GET /metrics  Prometheus text;  GET /api/time  clock";

/// pinhole: a low-latency camera streamer. H.264 in, chunked CMAF and LL-HLS out.
#[derive(Debug, Parser)]
#[command(name = "pinhole", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// TOML configuration file; flags given on the command line override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to serve HTTP on; repeat for several. Default 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,

    /// Video source URI (see SOURCES below). Default: testsrc.
    #[arg(long, value_name = "URI")]
    pub source: Option<String>,

    /// Restart the source when it delivers no frame for this long (ms); 0 turns the watchdog
    /// off. Default 5000 (exec: 10000).
    #[arg(long, value_name = "MS", value_parser = parse_source_timeout)]
    pub source_timeout_ms: Option<u32>,

    /// Duration of each CMAF fragment in milliseconds, 100..=300. Default 100.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(100..=300))]
    pub fragment_ms: Option<u32>,

    /// Log filter, e.g. "info" or "pinhole=debug". Default: $RUST_LOG, else "info".
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
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
}

/// The effective configuration after defaults, file and flags are merged and validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub source: SourceSpec,
    /// The source watchdog's timeout: `None` for the source kind's default, zero for none.
    pub source_timeout: Option<std::time::Duration>,
    pub fragment_ms: u32,
    pub log: Option<String>,
}

/// A configuration error: one line for the user, already naming the key and what is allowed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    pub fn from_cli(cli: &Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let origin = |key: &str| match &cli.config {
            Some(path) => format!("{}: {key}", path.display()),
            None => key.to_string(),
        };

        let listen = if !cli.listen.is_empty() {
            cli.listen.clone()
        } else if let Some(list) = &file.listen {
            if list.is_empty() {
                return Err(ConfigError(format!(
                    "{} = []: give at least one address, e.g. [\"{DEFAULT_LISTEN}\"]",
                    origin("listen")
                )));
            }
            list.iter()
                .map(|s| {
                    s.parse::<SocketAddr>().map_err(|_| {
                        ConfigError(format!(
                            "{} = {s:?}: not an IP address with port; allowed e.g. \"127.0.0.1:8080\" or \"[::]:8080\"",
                            origin("listen")
                        ))
                    })
                })
                .collect::<Result<_, _>>()?
        } else {
            vec![DEFAULT_LISTEN
                .parse()
                .map_err(|_| ConfigError("internal: bad default listen address".into()))?]
        };

        let fragment_ms = match (cli.fragment_ms, file.fragment_ms) {
            (Some(ms), _) => ms,
            (None, Some(ms)) if FRAGMENT_MS_RANGE.contains(&ms) => ms,
            (None, Some(ms)) => {
                return Err(ConfigError(format!(
                    "{} = {ms}: allowed {}..={} (milliseconds)",
                    origin("fragment_ms"),
                    FRAGMENT_MS_RANGE.start(),
                    FRAGMENT_MS_RANGE.end()
                )))
            }
            (None, None) => DEFAULT_FRAGMENT_MS,
        };

        let (uri, key) = match (&cli.source, &file.source) {
            (Some(s), _) => (s.as_str(), "--source".to_string()),
            (None, Some(s)) => (s.as_str(), origin("source")),
            (None, None) => (DEFAULT_SOURCE, "source".to_string()),
        };
        let mut source = SourceSpec::parse(uri).map_err(|e| ConfigError(format!("{key}: {e}")))?;
        if let (SourceSpec::Rtsp(r), Some(settings)) = (&mut source, &file.rtsp) {
            r.apply_settings(settings).map_err(|e| {
                let where_ = cli
                    .config
                    .as_ref()
                    .map_or(String::new(), |p| format!("{}: ", p.display()));
                ConfigError(format!("{where_}{e}"))
            })?;
        }
        let source_timeout_ms = match (cli.source_timeout_ms, file.source_timeout_ms) {
            (Some(ms), _) => Some(ms),
            (None, Some(ms)) => Some(parse_source_timeout(&ms.to_string()).map_err(|e| {
                ConfigError(format!("{} = {ms}: {e}", origin("source_timeout_ms")))
            })?),
            (None, None) => None,
        };
        let source_timeout =
            source_timeout_ms.map(|ms| std::time::Duration::from_millis(u64::from(ms)));

        Ok(Config {
            listen,
            source,
            source_timeout,
            fragment_ms,
            log: cli.log.clone().or(file.log),
        })
    }
}

/// `source_timeout_ms`: 0 (off) or 500..=600000.
fn parse_source_timeout(text: &str) -> Result<u32, String> {
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

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pinhole").chain(args.iter().copied()))
    }

    #[test]
    fn no_arguments_serve_the_test_source_on_localhost_8080() {
        let cfg = Config::from_cli(&cli(&[]).unwrap()).unwrap();
        assert_eq!(cfg.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(cfg.fragment_ms, 100);
        assert!(matches!(cfg.source, SourceSpec::Testsrc(_)));
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
        let err = Config::from_cli(&c).unwrap_err().to_string();
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
        let cfg = Config::from_cli(&c).unwrap();
        assert_eq!(cfg.fragment_ms, 150);
        assert_eq!(cfg.listen, vec!["127.0.0.1:9000".parse().unwrap()]);
        assert!(matches!(cfg.source, SourceSpec::Exec(_)));
    }

    #[test]
    fn a_bad_listen_address_in_the_file_names_the_key_and_value() {
        let dir = std::env::temp_dir().join(format!("pinhole-cfg3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("l.toml");
        std::fs::write(&path, "listen = [\"localhost\"]\n").unwrap();
        let c = cli(&["--config", path.to_str().unwrap()]).unwrap();
        let err = Config::from_cli(&c).unwrap_err().to_string();
        assert!(
            err.contains("listen") && err.contains("\"localhost\""),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_source_scheme_is_refused_listing_the_known_ones() {
        let c = cli(&["--source", "bogus:x"]).unwrap();
        let err = Config::from_cli(&c).unwrap_err().to_string();
        assert!(err.contains("--source") && err.contains("testsrc"), "{err}");
    }
}
