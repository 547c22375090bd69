//! `rtsps://`: RTSP over TLS through a loopback bridge, since retina speaks plain TCP only.
//!
//! ```text
//!  retina ── rtsp://127.0.0.1:EPHEMERAL/path ──► bridge ══ TLS (rustls) ══► camera:322
//! ```
//!
//! The bridge connects and completes the TLS handshake *before* retina starts, so a refused
//! certificate is reported as what it is, not as a closed connection. It then accepts retina's
//! one connection on an ephemeral 127.0.0.1 port and copies both ways. In the direction of the
//! camera it parses the RTSP stream just enough to rewrite the request line's URI prefix
//! (`rtsp://127.0.0.1:PORT` → `rtsps://camera[:port]`), so the camera sees its own URL;
//! interleaved data (`$`, channel, length) and bodies pass untouched. Responses pass untouched:
//! retina takes the `Content-Base` (the camera's rtsps URL) as the base for `SETUP`, and those
//! requests go out as they are. RTP must use the RTSP connection (TCP): UDP would go to 127.0.0.1.
//!
//! Trust: the Mozilla roots (webpki-roots) by default; `tls_ca=FILE` trusts the PEM
//! certificates in FILE instead: as CAs for the usual chain and name check, and each also as
//! the exact certificate the camera may present (a camera's self-signed certificate, often
//! marked as a CA, which a chain check refuses as the server's own);
//! `tls_insecure=true` accepts any certificate (still encrypted, not authenticated: logged).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument as _;
use url::Url;

/// The IANA port for rtsps.
pub const DEFAULT_PORT: u16 = 322;
/// Longest RTSP request head the bridge accepts from retina.
const MAX_HEAD: usize = 64 * 1024;

/// Builds the TLS client configuration: Mozilla roots, the certificates of a PEM file, or none.
pub fn client_config(ca_file: Option<&str>, insecure: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client configuration: {e}"))?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let mut pinned = Vec::new();
        match ca_file {
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(path) => {
                use rustls::pki_types::pem::PemObject as _;
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect())
                    .map_err(|e| format!("tls_ca {path:?}: cannot read PEM certificates: {e}"))?;
                if certs.is_empty() {
                    return Err(format!("tls_ca {path:?}: no certificate in the file"));
                }
                for c in certs {
                    // A camera's self-signed certificate is often marked as a CA, which a
                    // chain check refuses as the server's own: such a one is matched exactly.
                    let _ = roots.add(c.clone());
                    pinned.push(c);
                }
            }
        }
        if roots.is_empty() {
            // None of the file's certificates can anchor a chain: they can still be matched.
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        let chain = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| format!("tls_ca: no usable certificate: {e}"))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedOrChain { pinned, chain }))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// A running bridge; dropping it closes both sides.
pub struct Bridge {
    /// The plain URL to give retina.
    pub local_url: Url,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects to the camera at `target` (an `rtsps://` URL without user info) and starts the
/// bridge. Errors are one line naming the camera and what failed.
pub async fn bridge(target: &Url, tls: Arc<ClientConfig>) -> Result<Bridge, String> {
    let host = target.host_str().unwrap_or_default().to_string();
    let port = target.port().unwrap_or(DEFAULT_PORT);
    let at = format!("{host}:{port}");
    let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("cannot connect to {at}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
        .map_err(|e| format!("{host:?} is not a valid TLS server name: {e}"))?;
    let tls_stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            format!(
                "TLS handshake with {at} failed: {e}; for a camera with its own certificate, \
                 give it as #tls_ca=FILE (PEM), or #tls_insecure=true to skip the check"
            )
        })?;
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1 for the TLS bridge: {e}"))?;
    let local_port = listener
        .local_addr()
        .map_err(|e| format!("TLS bridge: {e}"))?
        .port();
    let mut local_url = target.clone();
    local_url
        .set_scheme("rtsp")
        .map_err(|()| "TLS bridge: cannot make a plain URL".to_string())?;
    local_url
        .set_host(Some("127.0.0.1"))
        .map_err(|e| format!("TLS bridge: {e}"))?;
    local_url
        .set_port(Some(local_port))
        .map_err(|()| "TLS bridge: cannot set the port".to_string())?;
    let local_prefix = format!("rtsp://127.0.0.1:{local_port}");
    let remote_prefix = match target.port() {
        Some(p) => format!("rtsps://{host}:{p}"),
        None => format!("rtsps://{host}"),
    };
    let task = tokio::spawn(
        async move {
            let Ok((plain, _)) = listener.accept().await else {
                return;
            };
            drop(listener);
            let _ = plain.set_nodelay(true);
            let (mut from_retina, mut to_retina) = plain.into_split();
            let (mut from_camera, mut to_camera) = tokio::io::split(tls_stream);
            let up = async {
                let mut rw = Rewriter::new(local_prefix, remote_prefix);
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match from_retina.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let Ok(out) = rw.push(buf.get(..n).unwrap_or_default()) else {
                        break;
                    };
                    if to_camera.write_all(&out).await.is_err() || to_camera.flush().await.is_err()
                    {
                        break;
                    }
                }
                let _ = to_camera.shutdown().await;
            };
            let down = async {
                let _ = tokio::io::copy(&mut from_camera, &mut to_retina).await;
                let _ = to_retina.shutdown().await;
            };
            // Either side ending ends the session: retina then sees its connection close.
            tokio::select! {
                _ = up => {}
                _ = down => {}
            }
        }
        .in_current_span(),
    );
    Ok(Bridge { local_url, task })
}

/// The stream from retina to the camera: RTSP requests (head, optional body) and interleaved
/// data frames. Rewrites each request line's URI prefix; everything else passes as it is.
struct Rewriter {
    from: String,
    to: String,
    buf: Vec<u8>,
    /// Bytes of a body or data frame still to pass through unparsed.
    passthrough: usize,
}

impl Rewriter {
    fn new(from: String, to: String) -> Rewriter {
        Rewriter {
            from,
            to,
            buf: Vec::new(),
            passthrough: 0,
        }
    }

    /// Takes bytes from retina; returns the bytes to send on. `Err` on a head over 64 KiB.
    fn push(&mut self, data: &[u8]) -> Result<Vec<u8>, ()> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::with_capacity(self.buf.len() + 16);
        loop {
            if self.passthrough > 0 {
                let n = self.passthrough.min(self.buf.len());
                out.extend(self.buf.drain(..n));
                self.passthrough -= n;
                if self.passthrough > 0 {
                    return Ok(out);
                }
            }
            match self.buf.first() {
                None => return Ok(out),
                Some(b'$') => {
                    let Some(&[_, _, hi, lo]) = self.buf.get(..4) else {
                        return Ok(out);
                    };
                    self.passthrough = 4 + usize::from(u16::from_be_bytes([hi, lo]));
                }
                Some(_) => {
                    let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        return if self.buf.len() > MAX_HEAD {
                            Err(())
                        } else {
                            Ok(out)
                        };
                    };
                    let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                    self.passthrough = content_length(&head);
                    out.extend(self.rewrite_request_line(&head));
                }
            }
        }
    }

    fn rewrite_request_line(&self, head: &[u8]) -> Vec<u8> {
        let line_end = head
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(head.len());
        let line = head.get(..line_end).unwrap_or_default();
        let Some(sp) = line.iter().position(|&b| b == b' ') else {
            return head.to_vec();
        };
        let uri = line.get(sp + 1..).unwrap_or_default();
        if !uri.starts_with(self.from.as_bytes()) {
            return head.to_vec();
        }
        let mut out = Vec::with_capacity(head.len() + self.to.len());
        out.extend_from_slice(line.get(..=sp).unwrap_or_default());
        out.extend_from_slice(self.to.as_bytes());
        out.extend_from_slice(head.get(sp + 1 + self.from.len()..).unwrap_or_default());
        out
    }
}

/// The `Content-Length` of a message head (0 when absent or bad).
fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The certificates of `tls_ca` matched byte for byte, else the usual chain and name check.
#[derive(Debug)]
struct PinnedOrChain {
    pinned: Vec<CertificateDer<'static>>,
    chain: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for PinnedOrChain {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.chain
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// `tls_insecure=true`: any certificate is accepted; the handshake's signatures are still
/// checked, so the session is encrypted to whoever holds the presented key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test fails
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_rewritten_and_data_and_bodies_pass_untouched() {
        let mut rw = Rewriter::new(
            "rtsp://127.0.0.1:4000".into(),
            "rtsps://cam.local:8322".into(),
        );
        let mut input = Vec::new();
        input.extend_from_slice(b"DESCRIBE rtsp://127.0.0.1:4000/live RTSP/1.0\r\nCSeq: 1\r\n\r\n");
        input.extend_from_slice(b"$\x01\x00\x05\r\n\r\nx");
        input.extend_from_slice(
            b"SET_PARAMETER rtsp://127.0.0.1:4000/live RTSP/1.0\r\nContent-Length: 6\r\n\r\nrtsp:/",
        );
        input.extend_from_slice(b"SETUP rtsps://cam.local:8322/live/track1 RTSP/1.0\r\n\r\n");
        let want: &[u8] = b"DESCRIBE rtsps://cam.local:8322/live RTSP/1.0\r\nCSeq: 1\r\n\r\n\
$\x01\x00\x05\r\n\r\nx\
SET_PARAMETER rtsps://cam.local:8322/live RTSP/1.0\r\nContent-Length: 6\r\n\r\nrtsp:/\
SETUP rtsps://cam.local:8322/live/track1 RTSP/1.0\r\n\r\n";
        // Whole, and one byte at a time: the same bytes.
        assert_eq!(rw.push(&input).unwrap(), want);
        let mut rw = Rewriter::new(
            "rtsp://127.0.0.1:4000".into(),
            "rtsps://cam.local:8322".into(),
        );
        let bytewise: Vec<u8> = input.iter().flat_map(|b| rw.push(&[*b]).unwrap()).collect();
        assert_eq!(bytewise, want);
    }

    #[test]
    fn an_endless_head_is_refused() {
        let mut rw = Rewriter::new("a".into(), "b".into());
        assert!(rw.push(&vec![b'x'; MAX_HEAD + 1]).is_err());
    }

    #[test]
    fn a_missing_ca_file_is_one_clear_error() {
        let e = client_config(Some("/nonexistent/ca.pem"), false).unwrap_err();
        assert!(
            e.contains("tls_ca") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        assert!(client_config(None, false).is_ok());
        assert!(client_config(None, true).is_ok());
    }
}
