//! `rtsp://HOST[:PORT]/PATH[#OPTIONS]`: H.264 pulled from an RTSP server with `retina`.
//!
//! One run is one RTSP session: `DESCRIBE`, `SETUP` of the first H.264 video stream, `PLAY`,
//! then frames until the server closes the connection, an error, or shutdown. The supervisor
//! restarts it with backoff, and its watchdog restarts a session that stops delivering frames
//! (a camera that keeps the TCP connection open but sends nothing).
//!
//! * **Transport.** RTP interleaved on the RTSP TCP connection by default: it crosses NAT and
//!   firewalls, and nothing is lost silently. UDP on request (`#transport=udp`, or
//!   `[rtsp] transport = "udp"`): retina has no reorder buffer, so UDP suits a quiet LAN only.
//! * **Credentials** come from the URL's `user:password@` or the `[rtsp]` table (`user`,
//!   `password`); the URL wins. They are taken out of the URL before it reaches retina or a log
//!   line, and [`RtspSpec`]'s `Debug` and [`RtspSpec::display_uri`] never show the password.
//! * **Timing.** RTP timestamps (64-bit extended by retina) go through
//!   [`media::rtp_timeline::RtpTimeline`]: a forward-only 90 kHz timeline with predicted frame
//!   durations (no frame of delay), re-based with one log line when the camera's timestamps go
//!   backwards or jump. The capture time in `prft` is the wall clock when the frame arrived.
//! * **Parameter sets.** Cameras that send SPS/PPS only in the SDP (`sprop-parameter-sets`) get
//!   them put back in front of each IDR from retina's decoder configuration, so the segmenter
//!   (which takes parameter sets in band) can start; in-band SPS/PPS pass through as they are,
//!   and a change of them (a new resolution) makes the segmenter send a new init segment.
//! * **Tolerance.** retina's policies for broken cameras are options (see [`OPTION_KEYS`]),
//!   passed through by name; retina's own docs describe each.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use media::h264::{avcc_nals, AccessUnit};
use media::rtp_timeline::{RtpTimeline, TimelineEvent};
use media::segmenter::Frame;
use retina::client::{
    Credentials, InitialSequenceNumberPolicy, InitialTimestampPolicy, PlayOptions, SessionIdPolicy,
    SessionOptions, SetupOptions, TeardownPolicy, Transport, UnassignedChannelDataPolicy,
    UnknownRtcpSsrcPolicy,
};
use retina::codec::{CodecItem, ParametersRef};
use serde::Deserialize;
use tokio::sync::watch;
use url::Url;

use super::{unix_now_us, Delivery, FrameSink as _, SharedPipeline, SourceError};
use crate::error::ErrorKind;
use crate::status::Status;

/// How long `DESCRIBE`, `SETUP` and `PLAY` together may take before the run is given up.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(4);

/// The options a URI fragment or the `[rtsp]` table may set.
pub const OPTION_KEYS: &str = "transport (tcp|udp), teardown (auto|always|never), \
initial_timestamp (default|require|ignore|permissive), \
initial_seq (default|respect|ignore-suspicious-values|ignore), \
unknown_rtcp_ssrc (default|abort-session|drop-packets|process-packets), \
unassigned_channel_data (auto|assume-stale-session|error|ignore), \
session_id (default|require-match|use-first), \
tls_ca (PEM file; rtsps), tls_insecure (true|false; rtsps)";

/// The `[rtsp]` table of the config file: defaults for every `rtsp://` source. Keys as in
/// [`OPTION_KEYS`], plus `user` and `password`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtspSettings {
    pub transport: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub teardown: Option<String>,
    pub initial_timestamp: Option<String>,
    pub initial_seq: Option<String>,
    pub unknown_rtcp_ssrc: Option<String>,
    pub unassigned_channel_data: Option<String>,
    pub session_id: Option<String>,
    /// rtsps: a PEM file of certificates to trust (a camera's own self-signed one works).
    pub tls_ca: Option<String>,
    /// rtsps: accept any certificate (encrypted, not authenticated).
    pub tls_insecure: Option<bool>,
}

impl fmt::Debug for RtspSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtspSettings")
            .field("transport", &self.transport)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// retina's tolerance policies, as chosen.
#[derive(Clone, Copy, Default)]
struct Policies {
    teardown: TeardownPolicy,
    initial_timestamp: InitialTimestampPolicy,
    initial_seq: InitialSequenceNumberPolicy,
    unknown_rtcp_ssrc: UnknownRtcpSsrcPolicy,
    unassigned_channel_data: UnassignedChannelDataPolicy,
    session_id: SessionIdPolicy,
}

/// A parsed `rtsp://` source.
#[derive(Clone)]
pub struct RtspSpec {
    /// The URL as sent to the server: no user info, no fragment.
    url: Url,
    user: Option<String>,
    password: Option<String>,
    /// Whether the user info came from the URL (it then wins over the config's).
    creds_from_url: bool,
    udp: bool,
    /// rtsps: trust the certificates in this PEM file instead of the Mozilla roots.
    tls_ca: Option<String>,
    /// rtsps: accept any certificate.
    tls_insecure: bool,
    policies: Policies,
    /// Keys set in the URI fragment: they win over the `[rtsp]` table.
    fragment_keys: Vec<String>,
}

impl fmt::Debug for RtspSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtspSpec")
            .field("url", &self.display_uri())
            .field("udp", &self.udp)
            .finish_non_exhaustive()
    }
}

impl RtspSpec {
    /// Parses `rtsp://[user[:password]@]host[:port]/path[#key=value&…]`.
    pub fn parse(uri: &str) -> Result<RtspSpec, String> {
        let shown = super::redact_credentials(uri);
        let mut url = Url::parse(uri).map_err(|e| format!("{shown:?} is not a valid URL: {e}"))?;
        if !matches!(url.scheme(), "rtsp" | "rtsps") {
            return Err(format!("{shown:?}: expected an rtsp:// or rtsps:// URL"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("{shown:?}: the URL has no host"));
        }
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let user = (!url.username().is_empty()).then(|| decode(url.username()));
        let password = url.password().map(decode);
        let fragment = url.fragment().map(str::to_owned);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_fragment(None);
        let mut spec = RtspSpec {
            url,
            creds_from_url: user.is_some(),
            user,
            password,
            udp: false,
            tls_ca: None,
            tls_insecure: false,
            policies: Policies::default(),
            fragment_keys: Vec::new(),
        };
        if let Some(fragment) = fragment {
            for (key, value) in url::form_urlencoded::parse(fragment.as_bytes()) {
                if matches!(&*key, "user" | "password") {
                    return Err(format!(
                        "{shown:?}: put credentials in the URL's user:password@ or the config's \
                         [rtsp] table, not in #options"
                    ));
                }
                spec.set(&key, &value)
                    .map_err(|e| format!("{shown:?}: #{key}={value}: {e}"))?;
                spec.fragment_keys.push(key.into_owned());
            }
        }
        spec.check().map_err(|e| format!("{shown:?}: {e}"))?;
        Ok(spec)
    }

    /// Sets one option from [`OPTION_KEYS`].
    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        fn policy<T: std::str::FromStr<Err = retina::Error>>(v: &str) -> Result<T, String> {
            v.parse::<T>().map_err(|e| one_line(&e.to_string()))
        }
        let p = &mut self.policies;
        match key {
            "transport" => {
                self.udp = match value {
                    "tcp" => false,
                    "udp" => true,
                    _ => return Err("allowed: tcp, udp".into()),
                }
            }
            "teardown" => p.teardown = policy(value)?,
            "initial_timestamp" => p.initial_timestamp = policy(value)?,
            "initial_seq" => p.initial_seq = policy(value)?,
            "unknown_rtcp_ssrc" => p.unknown_rtcp_ssrc = policy(value)?,
            "unassigned_channel_data" => p.unassigned_channel_data = policy(value)?,
            "session_id" => p.session_id = policy(value)?,
            "tls_ca" => self.tls_ca = Some(value.to_string()),
            "tls_insecure" => {
                self.tls_insecure = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err("allowed: true, false".into()),
                }
            }
            _ => return Err(format!("unknown option; allowed: {OPTION_KEYS}")),
        }
        Ok(())
    }

    /// Applies the config file's `[rtsp]` table under what the URI itself says. Errors name the
    /// key and what is allowed; the caller adds where the key was.
    pub fn apply_settings(&mut self, s: &RtspSettings) -> Result<(), String> {
        let insecure = s.tls_insecure.map(|b| b.to_string());
        let keys: [(&str, &Option<String>); 9] = [
            ("transport", &s.transport),
            ("teardown", &s.teardown),
            ("initial_timestamp", &s.initial_timestamp),
            ("initial_seq", &s.initial_seq),
            ("unknown_rtcp_ssrc", &s.unknown_rtcp_ssrc),
            ("unassigned_channel_data", &s.unassigned_channel_data),
            ("session_id", &s.session_id),
            ("tls_ca", &s.tls_ca),
            ("tls_insecure", &insecure),
        ];
        for (key, value) in keys {
            if let Some(v) = value {
                if self.fragment_keys.iter().any(|k| k == key) {
                    continue;
                }
                self.set(key, v)
                    .map_err(|e| format!("rtsp.{key} = {v:?}: {e}"))?;
            }
        }
        if !self.creds_from_url {
            if s.password.is_some() && s.user.is_none() {
                return Err("rtsp.password is set but rtsp.user is not".into());
            }
            self.user.clone_from(&s.user);
            self.password.clone_from(&s.password);
        }
        self.check()
    }

    fn is_tls(&self) -> bool {
        self.url.scheme() == "rtsps"
    }

    /// Combinations that cannot work, and an unreadable `tls_ca`, refused at start-up.
    fn check(&self) -> Result<(), String> {
        if self.is_tls() {
            if self.udp {
                return Err(
                    "rtsps:// carries RTP over its TLS connection only: drop transport=udp".into(),
                );
            }
            super::rtsps::client_config(self.tls_ca.as_deref(), self.tls_insecure)?;
        }
        Ok(())
    }

    /// The URL for status and logs: `user:***@` when there are credentials.
    pub fn display_uri(&self) -> String {
        let mut url = self.url.clone();
        if let Some(user) = &self.user {
            let _ = url.set_username(user);
            let _ = url.set_password(Some("***"));
        }
        let mut s = url.to_string();
        if self.udp {
            s.push_str("#transport=udp");
        }
        s
    }

    fn host_port(&self) -> String {
        format!(
            "{}:{}",
            self.url.host_str().unwrap_or("?"),
            self.url.port().unwrap_or(if self.is_tls() {
                super::rtsps::DEFAULT_PORT
            } else {
                554
            })
        )
    }
}

/// retina's multi-line error text as one line.
fn one_line(text: &str) -> String {
    text.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// One RTSP session, until it ends or `shutdown`.
pub async fn run(
    spec: &RtspSpec,
    pipeline: SharedPipeline,
    status: Arc<Status>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SourceError> {
    tokio::select! {
        r = session(spec, pipeline, status) => r,
        _ = shutdown.changed() => Err(SourceError::stopped()),
    }
}

async fn session(
    spec: &RtspSpec,
    pipeline: SharedPipeline,
    status: Arc<Status>,
) -> Result<(), SourceError> {
    // retina's errors end in a context paragraph (connection, time, packet position): logged
    // at debug level, left out of the one-line error so the same problem reads the same.
    // A `401 Unauthorized` (after retina tried the credentials it was given, or with none) is
    // a refused password: retried slowly. Everything else may pass on the next try.
    let fail = |what: &str, e: &retina::Error| {
        let kind = match e.status_code() {
            Some(401) => ErrorKind::Credentials,
            _ => ErrorKind::Transient,
        };
        let text = super::redact_credentials(&e.to_string());
        let (head, context) = text.split_once("\n\n").unwrap_or((&text, ""));
        if !context.is_empty() {
            tracing::debug!(source = "rtsp", context = %one_line(context), "{what} failed");
        }
        SourceError::new(
            kind,
            format!("rtsp: {what} {}: {}", spec.host_port(), one_line(head)),
        )
    };
    let setup =
        async {
            // rtsps: TLS is done by a loopback bridge, connected before retina starts.
            let bridge = if spec.is_tls() {
                let tls = super::rtsps::client_config(spec.tls_ca.as_deref(), spec.tls_insecure)
                    .map_err(|e| SourceError::transient(format!("rtsps: {e}")))?;
                let b = super::rtsps::bridge(&spec.url, tls)
                    .await
                    .map_err(|e| SourceError::transient(format!("rtsps: {e}")))?;
                Some(b)
            } else {
                None
            };
            let url = bridge
                .as_ref()
                .map_or_else(|| spec.url.clone(), |b| b.local_url.clone());
            let creds = spec.user.as_ref().map(|u| Credentials {
                username: u.clone(),
                password: spec.password.clone().unwrap_or_default(),
            });
            let p = spec.policies;
            let options = SessionOptions::default()
                .creds(creds)
                .user_agent(crate::USER_AGENT.to_string())
                .teardown(p.teardown)
                .unassigned_channel_data(p.unassigned_channel_data)
                .session_id(p.session_id);
            let mut session = retina::client::Session::describe(url, options)
                .await
                .map_err(|e| fail("DESCRIBE", &e))?;
            let Some(video) = session.streams().iter().position(|s| {
                s.media() == "video" && s.encoding_name().eq_ignore_ascii_case("h264")
            }) else {
                let offered: Vec<String> = session
                    .streams()
                    .iter()
                    .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
                    .collect();
                return Err(SourceError::unsupported(format!(
                "rtsp: {} offers no H.264 video stream (offered: {}); pinhole streams H.264 only",
                spec.host_port(),
                if offered.is_empty() {
                    "nothing".to_string()
                } else {
                    offered.join(", ")
                }
            )));
            };
            let clock_rate = session.streams()[video].clock_rate_hz();
            let transport = if spec.udp {
                Transport::Udp(Default::default())
            } else {
                Transport::Tcp(Default::default())
            };
            session
                .setup(video, SetupOptions::default().transport(transport))
                .await
                .map_err(|e| fail("SETUP", &e))?;
            let playing = session
                .play(
                    PlayOptions::default()
                        .initial_timestamp(p.initial_timestamp)
                        .initial_seq(p.initial_seq)
                        .unknown_rtcp_ssrc(p.unknown_rtcp_ssrc),
                )
                .await
                .map_err(|e| fail("PLAY", &e))?;
            let demuxed = playing.demuxed().map_err(|e| fail("PLAY", &e))?;
            Ok::<_, SourceError>((demuxed, video, clock_rate, bridge))
        };
    let (mut demuxed, video, clock_rate, _bridge) = tokio::time::timeout(SETUP_TIMEOUT, setup)
        .await
        .map_err(|_| {
            SourceError::transient(format!(
                "rtsp: {} did not answer DESCRIBE/SETUP/PLAY within {} s",
                spec.host_port(),
                SETUP_TIMEOUT.as_secs()
            ))
        })??;
    tracing::info!(
        source = "rtsp",
        url = %spec.display_uri(),
        transport = if spec.udp { "udp" } else { "tcp" },
        tls = match (spec.is_tls(), spec.tls_insecure) {
            (false, _) => "none",
            (true, false) => "verified",
            (true, true) => "UNVERIFIED (tls_insecure)",
        },
        tool = demuxed.tool().map_or("", |t| &**t),
        "playing"
    );

    let mut sink = RtspSink::new(pipeline, status, clock_rate);
    while let Some(item) = demuxed.next().await {
        let item = item.map_err(|e| fail("stream from", &e))?;
        let CodecItem::VideoFrame(frame) = item else {
            continue;
        };
        if frame.stream_id() != video {
            continue;
        }
        let params = match demuxed.streams().get(video).and_then(|s| s.parameters()) {
            Some(ParametersRef::Video(v)) => Some(v.extra_data()),
            _ => None,
        };
        let loss = frame.loss();
        let ts = frame.timestamp().timestamp();
        sink.accept(ts, loss, frame.into_data(), params);
    }
    Err(SourceError::transient(format!(
        "rtsp: {} closed the connection",
        spec.host_port()
    )))
}

/// Turns retina's frames into timed access units for the pipeline. Logs each kind of problem
/// once per run (later ones at debug level, all of them counted).
struct RtspSink {
    out: Delivery,
    timeline: RtpTimeline,
    started: Instant,
    /// The decoder configuration last seen, and its SPS/PPS as NAL units.
    config: Option<(Vec<u8>, Vec<Bytes>)>,
    waiting_logged: bool,
    backwards_logged: bool,
    jump_logged: bool,
    bad_frames: u64,
    lost_packets: u64,
}

impl RtspSink {
    fn new(pipeline: SharedPipeline, status: Arc<Status>, clock_rate: u32) -> RtspSink {
        RtspSink {
            out: Delivery::new(pipeline, status),
            timeline: RtpTimeline::new(clock_rate, 0),
            started: Instant::now(),
            config: None,
            waiting_logged: false,
            backwards_logged: false,
            jump_logged: false,
            bad_frames: 0,
            lost_packets: 0,
        }
    }

    /// One frame: `data` is AVCC with 4-byte lengths (retina's form), `config` the stream's
    /// current `AVCDecoderConfigurationRecord`, if known.
    fn accept(&mut self, ts: i64, loss: u16, data: Vec<u8>, config: Option<&[u8]>) {
        let arrival_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let capture_unix_us = unix_now_us();
        if loss > 0 {
            self.lost_packets += u64::from(loss);
            tracing::debug!(
                source = "rtsp",
                lost = loss,
                total = self.lost_packets,
                "RTP packets lost"
            );
        }
        let data = Bytes::from(data);
        let nals = match avcc_nals(&data, 4) {
            Ok(n) => n.into_iter().map(|n| data.slice_ref(n)).collect(),
            Err(e) => {
                self.bad_frames += 1;
                if self.bad_frames == 1 {
                    tracing::warn!(source = "rtsp", error = %e, "dropped a malformed frame");
                }
                self.out
                    .status()
                    .note_source_error(format!("rtsp: bad frame: {e}"));
                return;
            }
        };
        let mut au = AccessUnit::from_nals(nals);
        if au.is_idr && (au.sps().is_none() || au.pps().is_none()) {
            self.add_parameter_sets(&mut au, config);
        }

        let stamp = self.timeline.stamp(ts, arrival_us);
        if let Some(event) = stamp.event {
            let first = match event {
                TimelineEvent::Backwards { .. } => {
                    !std::mem::replace(&mut self.backwards_logged, true)
                }
                TimelineEvent::Jump { .. } => !std::mem::replace(&mut self.jump_logged, true),
            };
            if first {
                tracing::warn!(source = "rtsp", "RTP {event}; timeline re-based, stream continues (further ones at debug level)");
            } else {
                tracing::debug!(
                    source = "rtsp",
                    backwards = self.timeline.backwards,
                    jumps = self.timeline.jumps,
                    "RTP {event}; re-based"
                );
            }
            self.out
                .status()
                .note_source_error(format!("rtsp: RTP {event}"));
        }
        let frame = Frame {
            dts_90k: stamp.dts_90k,
            duration_90k: stamp.duration_90k,
            cts_offset_90k: 0,
            capture_unix_us,
            au,
        };
        self.out.frame(frame);
    }

    /// Puts the SPS/PPS from the decoder configuration (the SDP's `sprop-parameter-sets`, or
    /// the last in-band ones) in front of an IDR that came without them.
    fn add_parameter_sets(&mut self, au: &mut AccessUnit, config: Option<&[u8]>) {
        let Some(record) = config else {
            if !self.waiting_logged {
                self.waiting_logged = true;
                tracing::warn!(source = "rtsp", "IDR without SPS/PPS, and none in the SDP yet: waiting for the camera to send them");
                self.out
                    .status()
                    .note_source_error("rtsp: waiting for SPS/PPS".into());
            }
            return;
        };
        if self.config.as_ref().is_none_or(|(r, _)| r != record) {
            match media::avcc::parameter_sets(record) {
                Ok(sets) => {
                    let nals = sets
                        .sps
                        .into_iter()
                        .chain(sets.pps)
                        .map(Bytes::copy_from_slice)
                        .collect();
                    self.config = Some((record.to_vec(), nals));
                }
                Err(e) => {
                    tracing::warn!(source = "rtsp", error = %e, "the stream's decoder configuration does not parse");
                    self.config = None;
                    return;
                }
            }
        }
        if let Some((_, sets)) = &self.config {
            let have_sps = au.sps().is_some();
            let have_pps = au.pps().is_some();
            let missing = sets.iter().filter(|n| {
                let t = media::h264::nal_type(n);
                (t == media::h264::nal_type::SPS && !have_sps)
                    || (t == media::h264::nal_type::PPS && !have_pps)
            });
            let mut nals: Vec<Bytes> = missing.cloned().collect();
            nals.append(&mut au.nals);
            au.nals = nals;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test fails
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_never_show() {
        let s = RtspSpec::parse("rtsp://admin:hun%40ter2@10.0.0.5:8554/s1").unwrap();
        assert_eq!(s.url.as_str(), "rtsp://10.0.0.5:8554/s1");
        assert_eq!(s.user.as_deref(), Some("admin"));
        assert_eq!(s.password.as_deref(), Some("hun@ter2"));
        assert_eq!(s.display_uri(), "rtsp://admin:***@10.0.0.5:8554/s1");
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hun"), "{dbg}");
        let settings = RtspSettings {
            password: Some("secret".into()),
            ..Default::default()
        };
        assert!(!format!("{settings:?}").contains("secret"));
    }

    #[test]
    fn fragment_options_win_over_the_config_and_bad_values_name_what_is_allowed() {
        let mut s = RtspSpec::parse("rtsp://cam/s1#transport=udp&teardown=always").unwrap();
        assert!(s.udp);
        assert_eq!(s.url.as_str(), "rtsp://cam/s1");
        s.apply_settings(&RtspSettings {
            transport: Some("tcp".into()),
            user: Some("u".into()),
            password: Some("p".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(s.udp, "the URI's #transport wins");
        assert_eq!(s.display_uri(), "rtsp://u:***@cam/s1#transport=udp");

        let e = RtspSpec::parse("rtsp://cam/s#transport=carrier-pigeon").unwrap_err();
        assert!(e.contains("tcp, udp"), "{e}");
        let e = RtspSpec::parse("rtsp://cam/s#teardown=sometimes").unwrap_err();
        assert!(e.contains("auto, never, or always"), "{e}");
        let e = RtspSpec::parse("rtsp://cam/s#bogus=1").unwrap_err();
        assert!(e.contains("initial_seq"), "{e}");
        let e = RtspSpec::parse("rtsp://a:b@cam/s#password=x").unwrap_err();
        assert!(!e.contains(":b@"), "{e}");
        let mut s = RtspSpec::parse("rtsp://cam/s").unwrap();
        let e = s
            .apply_settings(&RtspSettings {
                initial_seq: Some("maybe".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.starts_with("rtsp.initial_seq = \"maybe\""), "{e}");
    }

    #[test]
    fn rtsps_takes_tls_options_and_refuses_udp() {
        let s = RtspSpec::parse("rtsps://u:pw@cam/s#tls_insecure=true").unwrap();
        assert!(s.is_tls() && s.tls_insecure);
        assert_eq!(s.host_port(), "cam:322");
        assert_eq!(s.display_uri(), "rtsps://u:***@cam/s");
        let e = RtspSpec::parse("rtsps://u:pw@cam/s#transport=udp").unwrap_err();
        assert!(e.contains("udp") && !e.contains("pw@"), "{e}");
        let e = RtspSpec::parse("rtsps://cam/s#tls_ca=/nonexistent.pem").unwrap_err();
        assert!(e.contains("/nonexistent.pem"), "{e}");
        assert!(RtspSpec::parse("rtsp:///s").is_err());
        assert!(RtspSpec::parse("http://cam/s").is_err());
    }

    fn sink() -> (RtspSink, Arc<crate::hub::Hub>, SharedPipeline) {
        let hub = crate::hub::Hub::new();
        let status = Arc::new(Status::new("cam", "rtsp://test".into(), 100));
        let config = media::segmenter::SegmenterConfig {
            fragment_duration_90k: 9_000,
            low_delay_vui: true,
        };
        let pipeline = crate::pipeline::Pipeline::new(config, hub.clone(), status.clone()).unwrap();
        let pipeline = Arc::new(std::sync::Mutex::new(pipeline));
        (
            RtspSink::new(pipeline.clone(), status, 90_000),
            hub,
            pipeline,
        )
    }

    /// The x264 fixture's access units in AVCC form, and its SPS/PPS as an avcC record.
    fn fixture() -> (Vec<(bool, Vec<u8>)>, Vec<u8>) {
        let clip = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../media/tests/fixtures/x264_baseline_zerolatency.h264"
        ))
        .unwrap();
        let mut reader = media::h264::AnnexBReader::new();
        reader.push(&clip);
        reader.finish();
        let (mut sps, mut pps) = (None, None);
        let mut aus = Vec::new();
        while let Some(au) = reader.next_au() {
            let au = au.unwrap();
            sps = sps.or(au.sps().cloned());
            pps = pps.or(au.pps().cloned());
            // Out-of-band parameter sets: strip them from the frames, as such cameras do.
            let nals: Vec<&Bytes> = au
                .nals
                .iter()
                .filter(|n| !matches!(media::h264::nal_type(n), 7 | 8))
                .collect();
            aus.push((au.is_idr, media::h264::to_avcc(&nals)));
        }
        let (sps, pps) = (sps.unwrap(), pps.unwrap());
        let mut rec = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
        rec.extend_from_slice(&u16::try_from(sps.len()).unwrap().to_be_bytes());
        rec.extend_from_slice(&sps);
        rec.push(1);
        rec.extend_from_slice(&u16::try_from(pps.len()).unwrap().to_be_bytes());
        rec.extend_from_slice(&pps);
        (aus, rec)
    }

    #[test]
    fn parameter_sets_from_the_sdp_let_the_stream_start_and_backwards_timestamps_do_not_stop_it() {
        let (aus, record) = fixture();
        let (mut sink, hub, pipeline) = sink();
        let half = aus.len() / 2;
        for (i, (_, data)) in aus.iter().enumerate() {
            // Halfway the camera's RTP clock goes back a minute.
            let ts = if i < half {
                1_000_000 + i as i64 * 3_000
            } else {
                i as i64 * 3_000 - 4_400_000
            };
            sink.accept(ts, 0, data.clone(), Some(&record));
        }
        pipeline.lock().unwrap().end_of_run();
        assert!(
            hub.init().is_some(),
            "no init: parameter sets were not put back"
        );
        // Every frame was muxed: none lost to the missing parameter sets or the step back.
        let muxed = sink
            .out
            .status()
            .snapshot(Default::default(), Default::default())
            .frames;
        assert_eq!(muxed, aus.len() as u64);
        assert_eq!(sink.timeline.backwards, 1);
    }

    #[test]
    fn without_any_parameter_sets_frames_wait_and_nothing_panics() {
        let (aus, _) = fixture();
        let (mut sink, hub, _pipeline) = sink();
        for (i, (_, data)) in aus.iter().enumerate().take(40) {
            sink.accept(i as i64 * 3_000, 0, data.clone(), None);
        }
        sink.accept(0, 0, vec![0, 0, 0, 9, 0x65], None); // truncated AVCC
        assert!(hub.init().is_none());
        assert!(sink.waiting_logged);
        assert_eq!(sink.bad_frames, 1);
    }
}
