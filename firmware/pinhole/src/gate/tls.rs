//! HTTPS on the LAN: rustls with the ring provider, from the owner's certificate and key (PEM)
//! or from a self-signed one made on first start and kept in the state directory.
//!
//! The generated certificate (ECDSA P-256, valid ten years) names `pinhole.local`, the host
//! name and `HOST.local`, `localhost`, and the addresses of the machine's interfaces at the time
//! it is made. Its SHA-256 fingerprint is logged at every start so the owner can compare it
//! with what the browser shows before accepting it. Delete the two files to make a new one.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the generated certificate and key live, under the state directory.
pub const GENERATED_CERT: &str = "tls/cert.pem";
pub const GENERATED_KEY: &str = "tls/key.pem";

/// The certificate source of the HTTPS listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// The owner's PEM files.
    Files { cert: PathBuf, key: PathBuf },
    /// Made on first start in `state_dir`, then reused.
    Generated { state_dir: PathBuf },
}

/// A server configuration plus what to log about it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate, as colon-separated hex.
    pub fingerprint: String,
    /// Where the certificate came from; `generated` is true if it was made just now.
    pub cert_path: PathBuf,
    pub generated: bool,
}

/// Loads (or makes, then loads) the certificate. `addrs` are the listen addresses, named in a
/// generated certificate when they are specific.
pub fn load(source: &CertSource, addrs: &[IpAddr]) -> Result<Loaded, String> {
    let (cert_path, key_path, generated) = match source {
        CertSource::Files { cert, key } => (cert.clone(), key.clone(), false),
        CertSource::Generated { state_dir } => {
            let cert = state_dir.join(GENERATED_CERT);
            let key = state_dir.join(GENERATED_KEY);
            let made = if cert.exists() && key.exists() {
                false
            } else {
                generate(&cert, &key, addrs)?;
                true
            };
            (cert, key, made)
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate {}: {e}", cert_path.display()))?;
    let Some(leaf) = certs.first() else {
        return Err(format!(
            "certificate {}: no CERTIFICATE block in it",
            cert_path.display()
        ));
    };
    let fingerprint = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
        format!(
            "cannot read private key {} (PEM, PKCS#8, PKCS#1 or SEC1): {e}",
            key_path.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "certificate {} and key {} do not make a TLS identity: {e}",
                cert_path.display(),
                key_path.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        fingerprint,
        cert_path,
        generated,
    })
}

/// The names a generated certificate carries.
fn names(addrs: &[IpAddr]) -> Vec<String> {
    let mut out = vec!["pinhole.local".to_string(), "localhost".to_string()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        let ok = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if ok && h != "localhost" {
            out.push(h.to_string());
            if !h.contains('.') {
                out.push(format!("{h}.local"));
            }
        }
    }
    let mut ips: Vec<IpAddr> = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ];
    if addrs.iter().any(|a| a.is_unspecified()) {
        if let Ok(ifs) = nix::ifaddrs::getifaddrs() {
            for i in ifs {
                let Some(a) = i.address else { continue };
                if let Some(v4) = a.as_sockaddr_in() {
                    ips.push(IpAddr::V4(v4.ip()));
                } else if let Some(v6) = a.as_sockaddr_in6() {
                    let ip = v6.ip();
                    // Link-local addresses need a zone, which a certificate cannot name.
                    if ip.segments()[0] & 0xffc0 != 0xfe80 {
                        ips.push(IpAddr::V6(ip));
                    }
                }
            }
        }
    }
    ips.extend(addrs.iter().filter(|a| !a.is_unspecified()));
    for ip in ips {
        let s = ip.to_string();
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

fn generate(cert_path: &Path, key_path: &Path, addrs: &[IpAddr]) -> Result<(), String> {
    let dir = cert_path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let mut params = rcgen::CertificateParams::new(names(addrs))
        .map_err(|e| format!("certificate names: {e}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pinhole");
    let year = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(2025, |d| 1970 + (d.as_secs() / 31_556_952) as i32);
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let key = rcgen::KeyPair::generate().map_err(|e| format!("key generation: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("self-signing: {e}"))?;
    write_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            format!(
                "cannot create {} for the generated certificate: {e} (set state_dir, or give cert and key)",
                dir.display()
            )
        })
}

/// Writes through a temporary file and a rename, so a crash never leaves half a key.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pinhole-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_generated_certificate_is_made_once_then_reused_with_a_private_key_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempdir("gen");
        let src = CertSource::Generated {
            state_dir: dir.clone(),
        };
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let a = load(&src, &[ip]).unwrap();
        assert!(a.generated);
        let b = load(&src, &[ip]).unwrap();
        assert!(!b.generated);
        assert_eq!(
            a.fingerprint, b.fingerprint,
            "the same certificate after a restart"
        );
        assert_eq!(a.fingerprint.len(), 32 * 3 - 1);
        let mode = std::fs::metadata(dir.join(GENERATED_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(a.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn owner_files_that_are_missing_or_mismatched_are_named_in_the_error() {
        let dir = tempdir("files");
        let e = load(
            &CertSource::Files {
                cert: dir.join("nope.pem"),
                key: dir.join("nope.key"),
            },
            &[],
        )
        .unwrap_err();
        assert!(e.contains("nope.pem"), "{e}");
        // Two generated identities, crossed: the key does not match the certificate.
        let one = dir.join("one");
        let two = dir.join("two");
        load(
            &CertSource::Generated {
                state_dir: one.clone(),
            },
            &[],
        )
        .unwrap();
        load(
            &CertSource::Generated {
                state_dir: two.clone(),
            },
            &[],
        )
        .unwrap();
        let e = load(
            &CertSource::Files {
                cert: one.join(GENERATED_CERT),
                key: two.join(GENERATED_KEY),
            },
            &[],
        )
        .unwrap_err();
        assert!(e.contains("do not make a TLS identity"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn generated_names_cover_mdns_localhost_and_the_listen_address() {
        let n = names(&["192.0.2.10".parse().unwrap()]);
        for want in [
            "pinhole.local",
            "localhost",
            "127.0.0.1",
            "::1",
            "192.0.2.10",
        ] {
            assert!(n.iter().any(|x| x == want), "{want} missing from {n:?}");
        }
    }
}
