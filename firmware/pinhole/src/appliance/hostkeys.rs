//! The device's SSH host keys, as fingerprints the owner can compare with what `ssh` (or
//! `pinhole-ota`) shows on a first connection: `ED25519 SHA256:…`, the form of
//! `ssh-keygen -l` (SHA-256 of the key blob, base64 without padding).
//!
//! Read from the public halves (`ssh_host_*_key.pub`) in the directory the image keeps them in
//! ([`DEFAULT_DIR`], or `$PINHOLE_SSH_HOST_KEYS`) by `pinhole setup-import`, which runs as root
//! at every boot and writes them into `pinhole-setup.result.txt` on the boot partition and into
//! pinhole's state directory (`ssh-host-keys`: pinhole's sandbox cannot read the root-only
//! `/data/ssh`); pinhole shows them in `/api/status` (`device.ssh_host_keys`) and the UI's device
//! line ([`crate::appliance::firstboot::host_keys_from_env`], else this directory).

use std::path::Path;

use base64::Engine as _;

/// Where the image keeps its host keys (the data partition, made on first boot).
pub const DEFAULT_DIR: &str = "/data/ssh";
/// Overrides [`DEFAULT_DIR`] (a Debian box: `/etc/ssh`).
pub const DIR_ENV: &str = "PINHOLE_SSH_HOST_KEYS";

/// The directory in use.
pub fn dir_from_env() -> std::path::PathBuf {
    std::env::var_os(DIR_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| DEFAULT_DIR.into(), Into::into)
}

/// `ED25519 SHA256:…` for each `ssh_host_*_key.pub` in `dir`, sorted; none when the directory
/// is missing or unreadable (a plain install).
pub fn fingerprints(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("ssh_host_") && n.ends_with("_key.pub")
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| fingerprint(&text))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The fingerprint of one OpenSSH public key line (`TYPE BASE64 [comment]`).
pub fn fingerprint(line: &str) -> Option<String> {
    let mut f = line.split_whitespace();
    let kind = f.next()?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(f.next()?)
        .ok()?;
    let label = match kind {
        "ssh-ed25519" => "ED25519",
        "ssh-rsa" => "RSA",
        k if k.starts_with("ecdsa-sha2-") => "ECDSA",
        "ssh-dss" => "DSA",
        _ => return None,
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, &blob);
    Some(format!(
        "{label} SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest.as_ref())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_as_ssh_keygen_prints_them() {
        // Made and read with OpenSSH 9.2's ssh-keygen: `ssh-keygen -lf` prints
        // 256 SHA256:l0Qbmmh0U/t45CEIQfiPV/AyxX60kcUEgO0CVEKVoAM root@pinhole (ED25519)
        let pubkey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHPxAZNs/8vrP8PwrQJcWryB2wrR9nKCKL+zndgBQEgf root@pinhole";
        assert_eq!(
            fingerprint(pubkey).as_deref(),
            Some("ED25519 SHA256:l0Qbmmh0U/t45CEIQfiPV/AyxX60kcUEgO0CVEKVoAM")
        );
        assert_eq!(fingerprint("ssh-ed25519 not-base64!"), None);
        assert_eq!(fingerprint(""), None);
    }
}
