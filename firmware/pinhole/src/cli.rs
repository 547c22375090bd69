//! The command line: clap's definitions and `--help`, nothing else. What the flags say goes to
//! the configuration resolver as [`Flags`] (`config::Config::resolve`); the subcommands' own
//! work lives with them (`appliance::firstboot` for `setup-import`).

use std::path::PathBuf;

use clap::Parser;

use crate::config::{parse_fragment_ms, parse_source_timeout, Flags, ListenAddr};

pub(crate) const AFTER_HELP: &str = "\
SOURCES (--source URI):
  testsrc[?OPTIONS]   built-in moving test pattern with the capture time burned in, encoded to
                      H.264 in-process. Options: size=WxH (1280x720), fps=N (30), gop=FRAMES
                      (one second), bitrate=BITS (2M; accepts k/M suffixes).
                      Example: testsrc?size=1920x1080&fps=30&bitrate=6M
  exec:COMMAND        runs COMMAND with /bin/sh and reads H.264 Annex-B from its stdout; restarted
                      with capped backoff when it exits, its stderr goes to the log.
                      Example: 'exec:rpicam-vid -t 0 --inline --codec h264 -o -'
  v4l2:/dev/videoN[?OPTIONS]
                      a V4L2 camera: H.264 from the camera itself (UVC), else raw YUYV/NV12/
                      YU12 (or MJPEG, decoded in pinhole) encoded by a V4L2
                      memory-to-memory hardware encoder (the Pi 4's /dev/video11) when there
                      is one, else by OpenH264. Options: size=WxH (nearest to 1280x720),
                      fps=N (30), bitrate=BITS (2M), gop=FRAMES (one second),
                      encoder=auto|software|/dev/videoN (auto: the hardware encoder, OpenH264
                      if it cannot be set up; /dev/videoN: that M2M encoder or an error).
                      `pinhole probe` lists the devices, their modes and the encoders found.
                      Example: v4l2:/dev/video0?size=1920x1080&fps=30
  gst:PIPELINE        a GStreamer pipeline making H.264; needs a pinhole built with
                      --features gstreamer. pinhole appends h264parse and its appsink.
                      Jetson and libcamera examples: board/pipelines.md. Example:
                      'gst:videotestsrc is-live=true ! video/x-raw,format=I420 ! x264enc
                      tune=zerolatency bframes=0 key-int-max=30'
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
                      rtsps:// (TLS, default port 322; TCP only) goes through a loopback TLS
                      bridge: Mozilla roots, or tls_ca=FILE (PEM; a camera's self-signed
                      certificate works), or tls_insecure=true (encrypted, not verified).
                      Example: 'rtsp://admin:secret@192.168.1.20:554/stream1#transport=udp'
  Every source is restarted when it delivers no frame for source_timeout_ms (default 5000,
  exec: 10000; 0 turns the watchdog off).

CONFIG FILE (--config FILE), TOML; flags override it:
  source = \"testsrc\"            # source URI, as above
  fragment_ms = 100             # CMAF fragment duration, 100..=300
  source_timeout_ms = 5000      # restart a source silent this long; 0: never (500..=600000)
  log = \"info\"                  # log filter (tracing EnvFilter syntax)
  state_dir = \"/var/lib/pinhole\" # generated certificate; default $STATE_DIRECTORY
  [rtsp]                        # defaults for rtsp:// sources (the URI's #options win)
  transport = \"tcp\"             # or \"udp\"; also teardown, initial_timestamp, initial_seq,
  user = \"admin\"                #   unknown_rtcp_ssrc, unassigned_channel_data, session_id
  password = \"secret\"           # used when the URL has no user:password@
  [lan]                         # the LAN listeners (top-level listen = [...] also works)
  listen = [\"0.0.0.0:8080\", \"https://0.0.0.0:8443\"]  # ADDR or https://ADDR
  cert = \"/etc/pinhole/cert.pem\"  # for https://; without cert and key, a self-signed
  key = \"/etc/pinhole/key.pem\"    #   one is made on first start in state_dir
  password_hash = \"$argon2id$...\" # from `pinhole hash-password`; unset: no password
  trusted_proxies = [\"127.0.0.1\"] # reverse proxies (ADDR or ADDR/PREFIX) whose
                                #   X-Forwarded-For (else Forwarded: for=) names the client;
                                #   guess limiting keys on it. Unset: the headers are ignored
  hosts = [\"cam.example.net\"]   # more names an open listener accepts in Host (besides its
                                #   addresses, pinhole.local, the host name, localhost)
  cors_origins = [\"https://mainsail.example.net\"]  # more origins whose pages may read
                                #   /hls/ and /api/time (besides private-range, link-local and
                                #   loopback addresses, .local names and the device's names)
  [tunnel]                      # for cloudflared only: every request needs Cloudflare Access
  listen = \"127.0.0.1:8081\"     # loopback only; point cloudflared's ingress here
  team = \"myteam\"               # myteam.cloudflareaccess.com
  aud = \"4f1c...\"               # the Access application's AUD tag
  leeway_s = 60                 # clock skew allowed on exp/nbf, 0..=600
  [[stream]]                    # several cameras: one table each, instead of source =
  name = \"printer\"              # 1-32 of a-z A-Z 0-9 _ -; served under /streams/printer/
  source = \"rtsp://10.0.0.5/s1\" # --source replaces the first table's source
  fragment_ms = 100             # optional, as above; also source_timeout_ms

ACCESS:
  LAN password: browsers get a login page and an HttpOnly, SameSite=Strict session cookie
  (kept in memory; 30 days); tools send HTTP Basic with any user name, e.g.
  ffmpeg -i http://u:PASSWORD@HOST:8080/hls/index.m3u8. Wrong guesses: 5, then 1 per 12 s per
  client (429). Make the hash with: pinhole hash-password < file-with-password
  Tunnel: each request must carry Cf-Access-Jwt-Assertion (RS256, the team's keys fetched from
  https://TEAM.cloudflareaccess.com/cdn-cgi/access/certs, aud, iss, exp/nbf), else 403.
  Limits: request head 16 KiB (431), 10 s to send it or between requests, 20 s for a client
  that stops reading an answer, 256 connections per listener (when full, a client with fewer
  takes the place of the busiest one's oldest) and 32 per LAN client (not 127.0.0.1), of them 8
  not yet authenticated under a password; 401/403/429 close the connection; 100 held LL-HLS
  requests. An open listener answers 421 to a Host that is not the device's (see [lan] hosts).
  Camera passwords (URL user:pass@, user-pw=, password=, pass=, token=, the config's secrets)
  are masked in logs, status and pages. The device's SSH host key fingerprints are in
  /api/status (device.ssh_host_keys) and the player's device line: from
  $STATE_DIRECTORY/ssh-host-keys (written by setup-import), else the ssh_host_*_key.pub files
  in $PINHOLE_SSH_HOST_KEYS (default /data/ssh).

ENDPOINTS:
  GET  /                  the player
  GET|POST /api/video/cmaf  live stream: [u32 BE length][payload] records, init segment first,
                          then moof+mdat fragments; a zero-length record is a heartbeat
  GET  /hls/index.m3u8    LL-HLS multivariant playlist (stream.m3u8: the media playlist,
                          with blocking reload; parts and segments cut from the same fragments)
  GET  /api/status        JSON status;  GET /metrics  Prometheus text;  GET /api/time  clock
  GET  /login.html        the login page;  POST /api/login (form: password), POST /api/logout
  GET  /api/streams       the cameras: [{name, path, source, state, ...}]
  Each camera's endpoints are also under /streams/NAME/ (/streams/NAME/api/video/cmaf,
  /streams/NAME/hls/index.m3u8, /streams/NAME/api/status, the player at /streams/NAME/); the
  first camera is at the plain paths above too. /metrics labels each camera's figures with
  stream=\"NAME\" when there is more than one.";

/// pinhole: a low-latency camera streamer. H.264 in, chunked CMAF and LL-HLS out.
#[derive(Debug, Parser)]
#[command(name = "pinhole", version = crate::VERSION, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// TOML configuration file; flags given on the command line override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// LAN address to serve on, ADDR (HTTP) or https://ADDR; repeat for several.
    /// Default 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR", value_parser = ListenAddr::parse)]
    pub listen: Vec<ListenAddr>,

    /// Directory for state kept across restarts (the generated TLS certificate).
    /// Default: $STATE_DIRECTORY (systemd), else /var/lib/pinhole.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Video source URI (see SOURCES below). Default: testsrc.
    #[arg(long, value_name = "URI")]
    pub source: Option<String>,

    /// Restart the source when it delivers no frame for this long (ms); 0 turns the watchdog
    /// off. Default 5000 (exec: 10000).
    #[arg(long, value_name = "MS", value_parser = parse_source_timeout)]
    pub source_timeout_ms: Option<u32>,

    /// Duration of each CMAF fragment in milliseconds, 100..=300. Default 100.
    #[arg(long, value_name = "MS", value_parser = parse_fragment_ms)]
    pub fragment_ms: Option<u32>,

    /// Log filter, e.g. "info" or "pinhole=debug". Default: $RUST_LOG, else "info".
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,

    /// Check the configuration (file and flags) and exit: 0 and "configuration OK" when it is
    /// valid, else 2 and the one-line error. Binds no port and starts no source.
    #[arg(long)]
    pub check: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Read a password from standard input (one line) and print its argon2id hash, for
    /// `password_hash` in the [lan] table.
    HashPassword,
    /// List the video devices (/dev/video*): driver, card, capabilities, formats, sizes and
    /// frame rates, what pinhole would capture from each camera, and the H.264 encoders found.
    Probe,
    /// First boot: import the owner's pinhole-setup.toml from the boot partition into the data
    /// partition: checked by this configuration code, written atomically, removed from the card.
    SetupImport(SetupImportArgs),
}

impl Cli {
    /// The flags for the configuration resolver.
    pub fn flags(&self) -> Flags {
        Flags {
            config: self.config.clone(),
            listen: self.listen.clone(),
            state_dir: self.state_dir.clone(),
            source: self.source.clone(),
            source_timeout_ms: self.source_timeout_ms,
            fragment_ms: self.fragment_ms,
            log: self.log.clone(),
        }
    }
}

/// `pinhole setup-import`: the command line.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = SETUP_IMPORT_HELP)]
pub struct SetupImportArgs {
    /// The owner's setup file on the boot partition. Missing: nothing to import (the run still
    /// finishes an interrupted import and makes sure a configuration exists).
    #[arg(long, value_name = "FILE", default_value = "/boot/pinhole-setup.toml")]
    pub from: PathBuf,
    /// The data partition: pinhole/pinhole.toml, pinhole/cloudflared/token,
    /// ssh/authorized_keys and wifi/wpa_supplicant-wlan0.conf are written under it.
    #[arg(long, value_name = "DIR", default_value = "/data")]
    pub to: PathBuf,
    /// The configuration to start from when DIR has none yet (the board's pinhole.toml).
    #[arg(long, value_name = "FILE")]
    pub defaults: Option<PathBuf>,
    /// Where the device's SSH host keys are (their fingerprints go into the result file on the
    /// boot partition). Default: DIR/ssh.
    #[arg(long, value_name = "DIR")]
    pub ssh_host_keys: Option<PathBuf>,
}

const SETUP_IMPORT_HELP: &str = "\
THE FILE (TOML; every table optional; what a table gives replaces what the camera had):
  [wifi]
  country = \"GB\"                 # two letters: the radio rules of the country
  ssid = \"Home network\"          # 1-32 bytes
  password = \"...\"               # 8-63 printable ASCII characters or 64 hex digits; none: open
  [ssh]
  authorized_keys = [\"ssh-ed25519 AAAA... me@laptop\"]   # OpenSSH public key lines
  [cloudflared]
  token = \"eyJh...\"              # the tunnel token from the Cloudflare dashboard
  [pinhole]                      # pinhole.toml (pinhole --help), merged over the current one
  source = \"...\"
  [pinhole.lan]
  password = \"...\"               # stored only as its argon2id hash (password_hash)

It is checked as a whole (the [pinhole] table by pinhole's own configuration code, as
`pinhole --check` would) and written atomically: a power cut at any moment leaves either the old
or the new configuration. Then the file is removed from the boot partition. A rejected file
becomes pinhole-setup.rejected.toml beside it, the reason at the top and the secrets blanked; the
previous configuration stays, and the reason is also in DIR/pinhole/state/setup-error
(/api/status: device.setup_error) and on stderr.

Every run leaves pinhole-setup.result.txt beside the file on the boot partition (rewritten only
when it changes): the last setup's result and the camera's SSH host key fingerprints
(`ED25519 SHA256:...`, from DIR/ssh or --ssh-host-keys), to compare with what ssh or
pinhole-ota shows on the first connection; the fingerprints also go to
DIR/pinhole/state/ssh-host-keys for /api/status (device.ssh_host_keys).

EXIT STATUS: 0 imported, or nothing to import; 1 the file was rejected (previous configuration
kept); 2 bad arguments; 3 the data or boot partition could not be read or written.";
