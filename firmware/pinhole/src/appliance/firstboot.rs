//! First boot: the owner's `pinhole-setup.toml` from the card's FAT boot partition into `/data`.
//!
//! `pinhole setup-import --from /boot/pinhole-setup.toml --to /data --defaults
//! /etc/pinhole/pinhole.toml` (run by the image's `pinhole-setup-import.service` at every boot,
//! before pinhole, cloudflared, sshd and Wi-Fi). The file has four optional tables:
//!
//! ```toml
//! [wifi]            # country, ssid, password (8..63 characters, or none: an open network)
//! [ssh]             # authorized_keys = ["ssh-ed25519 AAAA... me@laptop", ...]
//! [cloudflared]     # token = "eyJh..." (the tunnel token)
//! [pinhole]         # pinhole.toml as `pinhole --help` documents it, plus lan.password in clear
//! ```
//!
//! What a table gives replaces what the camera had; the rest stays. The `[pinhole]` table is
//! merged over the configuration in `/data` (the board's defaults on a first boot) and checked
//! by the daemon's own [`check_file`] on the very file that goes into place, so the import
//! never accepts what the daemon would refuse. A clear `lan.password` is stored only as its
//! argon2id hash, the Wi-Fi password only as its WPA pre-shared key.
//!
//! Atomic across all files: every new file is written beside the old one (`NAME.new`) and
//! flushed, then a journal naming them is put in place (the commit point), then the renames,
//! then the owner's file leaves the card, then the journal goes. The next run first finishes a
//! journalled import or throws away unjournalled `.new` files, so a power cut at any moment
//! leaves either the old configuration or the new one, never a mix.
//!
//! A rejected file keeps the previous configuration. The reason goes to stderr (the journal),
//! to `pinhole/state/setup-error` (pinhole's state directory; `/api/status` shows it as
//! `device.setup_error`), and to the top of `pinhole-setup.rejected.toml`, which replaces the
//! owner's file on the card with every secret blanked.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::cli::SetupImportArgs;
use crate::config::check_file;

/// Where things go, relative to `--to` (the data partition).
pub const CONFIG: &str = "pinhole/pinhole.toml";
pub const TOKEN: &str = "pinhole/cloudflared/token";
pub const AUTHORIZED_KEYS: &str = "ssh/authorized_keys";
pub const WIFI: &str = "wifi/wpa_supplicant-wlan0.conf";
/// pinhole's state directory on the data partition (its systemd StateDirectory in the image).
pub const STATE_DIR: &str = "pinhole/state";
/// The reason the last file was rejected; absent after a good import.
pub const SETUP_ERROR: &str = "setup-error";
/// The SSH host key fingerprints, one a line, for pinhole (whose sandbox cannot read
/// `/data/ssh`, a root-only directory): rewritten by every run when they change.
pub const SSH_HOST_KEYS: &str = "ssh-host-keys";
const JOURNAL: &str = "pinhole/setup-import.journal";
/// The owner's file is small; anything bigger is not one.
const MAX_FILE_BYTES: u64 = 64 * 1024;
const REJECTED_NAME: &str = "pinhole-setup.rejected.toml";
const TABLES: [&str; 4] = ["wifi", "ssh", "cloudflared", "pinhole"];

/// What a run did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No file; the configuration in DIR was already there.
    NothingToDo,
    /// No file and no configuration yet: the defaults went into place.
    Seeded,
    /// The file was imported: the tables it had.
    Imported(Vec<&'static str>),
    /// The file was refused; the previous configuration stays.
    Rejected(String),
}

/// Reading or writing failed (not the owner's fault): exit status 3.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IoFailure(String);

fn io_err(what: &str, path: &Path, e: std::io::Error) -> IoFailure {
    IoFailure(format!("{what} {}: {e}", path.display()))
}

/// What a run did, and whether it first finished an import a power cut had interrupted.
#[derive(Debug)]
pub struct Report {
    pub outcome: Outcome,
    pub finished_interrupted: bool,
    /// Why the result file on the boot partition could not be written, if it could not (the
    /// import itself stands).
    pub result_file_error: Option<String>,
}

/// The result file on the boot partition, beside the owner's file.
pub const RESULT_NAME: &str = "pinhole-setup.result.txt";

/// The result file's text: the last setup's result (`previous`'s when this run had no file)
/// and the SSH host key fingerprints.
fn result_text(outcome: &Outcome, previous: Option<&str>, keys: &[String]) -> String {
    const RESULT: &str = "last setup: ";
    let line = match outcome {
        Outcome::Imported(tables) => format!(
            "{RESULT}imported [{}]; the file was removed from this partition",
            tables.join("], [")
        ),
        Outcome::Rejected(reason) => format!(
            "{RESULT}refused, the previous configuration stays: {} (see pinhole-setup.rejected.toml)",
            reason.replace('\n', " ")
        ),
        Outcome::NothingToDo | Outcome::Seeded => previous
            .and_then(|p| p.lines().find(|l| l.starts_with(RESULT)))
            .map_or_else(|| format!("{RESULT}none yet (no pinhole-setup.toml was given)"), str::to_owned),
    };
    let mut out = format!(
        "pinhole: the camera's first-boot setup (pinhole setup-import), written at each boot when it changes.\n{line}\n\n"
    );
    if keys.is_empty() {
        out.push_str(
            "SSH host keys: not made yet (the camera makes them at its first boot, after the setup);\n\
             the next boot writes them here, and the camera's web page shows them on its device line.\n",
        );
    } else {
        out.push_str(
            "SSH host keys of this camera. On your first `ssh` or `pinhole-ota` to it, the key it\n\
             shows must be one of these (compare every character):\n",
        );
        for k in keys {
            out.push_str(&format!("  {k}\n"));
        }
    }
    out
}

fn host_keys_dir(args: &SetupImportArgs) -> PathBuf {
    args.ssh_host_keys
        .clone()
        .unwrap_or_else(|| args.to.join("ssh"))
}

/// Copies the host key fingerprints into pinhole's state directory ([`SSH_HOST_KEYS`], 0600,
/// the directory's owner), when they changed; nothing when there are none yet.
fn write_host_keys(args: &SetupImportArgs) -> Result<(), IoFailure> {
    let keys = super::hostkeys::fingerprints(&host_keys_dir(args));
    if keys.is_empty() {
        return Ok(());
    }
    let state = args.to.join(STATE_DIR);
    let path = state.join(SSH_HOST_KEYS);
    let text: String = keys.iter().map(|k| format!("{k}\n")).collect();
    if fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    make_dirs(&state)?;
    write_atomic(&path, text.as_bytes(), 0o600)?;
    if let Ok(meta) = fs::metadata(&state) {
        use std::os::unix::fs::MetadataExt as _;
        std::os::unix::fs::chown(&path, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| io_err("cannot give to the state directory's owner", &path, e))?;
    }
    Ok(())
}

/// The host key fingerprints `setup-import` left in pinhole's state directory
/// (`$STATE_DIRECTORY`), if any.
pub fn host_keys_from_env() -> Vec<String> {
    let Some(dir) = std::env::var_os("STATE_DIRECTORY") else {
        return Vec::new();
    };
    let first = dir
        .to_string_lossy()
        .split(':')
        .next()
        .unwrap_or("")
        .to_string();
    fs::read_to_string(Path::new(&first).join(SSH_HOST_KEYS))
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Writes [`RESULT_NAME`] beside `from` when its text changes (the FAT is written rarely).
fn write_result(args: &SetupImportArgs, outcome: &Outcome) -> Result<(), String> {
    let Some(boot) = args.from.parent().filter(|p| p.is_dir()) else {
        return Ok(()); // no boot partition here
    };
    let path = boot.join(RESULT_NAME);
    let previous = fs::read_to_string(&path).ok();
    let keys_dir = host_keys_dir(args);
    let text = result_text(
        outcome,
        previous.as_deref(),
        &super::hostkeys::fingerprints(&keys_dir),
    );
    if previous.as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    write_atomic(&path, text.as_bytes(), 0o644).map_err(|e| e.to_string())
}

/// The one entry point: recover, then import (or seed).
pub fn run(args: &SetupImportArgs) -> Result<Report, IoFailure> {
    let finished_interrupted = recover(&args.to)?;
    let outcome = import(args)?;
    write_host_keys(args)?;
    let result_file_error = write_result(args, &outcome).err();
    Ok(Report {
        outcome,
        finished_interrupted,
        result_file_error,
    })
}

fn import(args: &SetupImportArgs) -> Result<Outcome, IoFailure> {
    let text = match read_owner_file(&args.from) {
        Ok(Some(t)) => t,
        Ok(None) => return seed(args),
        Err(reason) => return reject(args, None, reason),
    };
    remember_secrets(&text);
    let table: toml::Table = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => {
            let reason = toml_error(&text, &e);
            return reject(args, None, reason);
        }
    };
    match plan(args, &table) {
        Ok((files, tables)) => {
            commit(&args.to, &files, Some(&args.from))?;
            remove_file_synced(&args.to.join(STATE_DIR).join(SETUP_ERROR))?;
            Ok(Outcome::Imported(tables))
        }
        Err(Rejection::Owner(reason)) => reject(args, Some(&table), reason),
        Err(Rejection::Io(e)) => Err(e),
    }
}

/// Every secret the owner's file gives, remembered for [`crate::redact`], so that no reason
/// (a type error quoting a Wi-Fi password written as a number, a source URL) carries one to the
/// journal, `setup-error`, `/api/status` or the rejected file's header: all of [cloudflared],
/// all of [wifi] but the country and network name, any value under a secret's key, passwords in
/// URLs. A file that is not TOML is read line by line for `KEY = VALUE` under a secret's key.
fn remember_secrets(text: &str) {
    match toml::from_str::<toml::Table>(text) {
        Ok(t) => {
            for (name, v) in &t {
                match (name.as_str(), v) {
                    ("cloudflared", v) => crate::redact::remember_toml(v, true),
                    ("wifi", toml::Value::Table(w)) => {
                        for (k, v) in w {
                            let secret = !matches!(k.as_str(), "country" | "ssid");
                            crate::redact::remember_toml(v, secret);
                        }
                    }
                    (_, v) => crate::redact::remember_toml(v, false),
                }
            }
        }
        Err(_) => {
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    let k = k.trim().trim_matches(|c| c == '"' || c == '\'');
                    if crate::redact::secret_key(k) {
                        crate::redact::remember(v.trim().trim_matches(|c| c == '"' || c == '\''));
                    }
                }
                crate::redact::remember_url_passwords(line);
            }
        }
    }
}

/// The reason the last setup file was rejected, for `/api/status` (`device.setup_error`), from
/// the state directory systemd gives pinhole (`$STATE_DIRECTORY`; /data/pinhole/state on the
/// image).
pub fn setup_error_from_env() -> Option<String> {
    let dir = std::env::var_os("STATE_DIRECTORY")?;
    let first = dir.to_str()?.split(':').next()?.to_string();
    read_setup_error(Path::new(&first))
}

/// The reason the last setup file was rejected, read from pinhole's state directory.
pub fn read_setup_error(state_dir: &Path) -> Option<String> {
    let text = fs::read_to_string(state_dir.join(SETUP_ERROR)).ok()?;
    let line = text.trim();
    (!line.is_empty()).then(|| line.to_string())
}

enum Rejection {
    Owner(String),
    Io(IoFailure),
}

impl From<IoFailure> for Rejection {
    fn from(e: IoFailure) -> Self {
        Rejection::Io(e)
    }
}

fn read_owner_file(path: &Path) -> Result<Option<String>, String> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "it is {} bytes; a setup file is at most {MAX_FILE_BYTES}",
            meta.len()
        ));
    }
    let bytes = fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| "it is not UTF-8 text (save it as plain UTF-8 text)".into())
}

fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {col}: {what}")
        }
        None => what,
    }
}

/// Everything the file asks for, checked, as (path under DIR, contents).
type Plan = (Vec<(&'static str, Vec<u8>)>, Vec<&'static str>);

fn plan(args: &SetupImportArgs, table: &toml::Table) -> Result<Plan, Rejection> {
    if let Some(unknown) = table.keys().find(|k| !TABLES.contains(&k.as_str())) {
        return Err(Rejection::Owner(format!(
            "[{unknown}]: unknown table; allowed: [wifi], [ssh], [cloudflared], [pinhole] \
             (pinhole.toml's own keys go inside [pinhole])"
        )));
    }
    let mut files = Vec::new();
    let mut tables = Vec::new();
    if let Some(v) = table.get("wifi") {
        let wifi: WifiSetup = section(v, "wifi")?;
        files.push((WIFI, wifi.render().map_err(Rejection::Owner)?.into_bytes()));
        tables.push("wifi");
    }
    if let Some(v) = table.get("ssh") {
        let ssh: SshSetup = section(v, "ssh")?;
        files.push((
            AUTHORIZED_KEYS,
            ssh.render().map_err(Rejection::Owner)?.into_bytes(),
        ));
        tables.push("ssh");
    }
    if let Some(v) = table.get("cloudflared") {
        let cf: CloudflaredSetup = section(v, "cloudflared")?;
        files.push((TOKEN, cf.render().map_err(Rejection::Owner)?.into_bytes()));
        tables.push("cloudflared");
    }
    match table.get("pinhole") {
        Some(toml::Value::Table(new)) => {
            let base = current_config(args)?;
            let merged = merge_config(base, new.clone()).map_err(Rejection::Owner)?;
            let text = format!(
                "# Written by `pinhole setup-import` from the owner's pinhole-setup.toml ([pinhole]\n\
                 # merged over the previous configuration). Change it with a new pinhole-setup.toml\n\
                 # on the boot partition, or edit it here and check it with `pinhole --check`.\n{}",
                toml::to_string(&merged).map_err(|e| Rejection::Owner(format!("[pinhole]: {e}")))?
            );
            validate_config(&args.to, text.as_bytes(), &args.from)?;
            files.push((CONFIG, text.into_bytes()));
            tables.push("pinhole");
        }
        Some(_) => {
            return Err(Rejection::Owner(
                "pinhole: must be a table ([pinhole])".into(),
            ))
        }
        None => {
            if !args.to.join(CONFIG).exists() {
                files.push((CONFIG, defaults_text(args)?));
            }
        }
    }
    if tables.is_empty() {
        return Err(Rejection::Owner(
            "the file has no [wifi], [ssh], [cloudflared] or [pinhole] table: nothing to import"
                .into(),
        ));
    }
    Ok((files, tables))
}

fn section<T: serde::de::DeserializeOwned>(v: &toml::Value, name: &str) -> Result<T, Rejection> {
    v.clone()
        .try_into()
        .map_err(|e: toml::de::Error| Rejection::Owner(format!("[{name}]: {}", e.message().trim())))
}

/// The configuration the camera runs with now, or the defaults on a first boot, as a table.
fn current_config(args: &SetupImportArgs) -> Result<toml::Table, Rejection> {
    let current = args.to.join(CONFIG);
    let text = if current.exists() {
        fs::read_to_string(&current).map_err(|e| io_err("cannot read", &current, e))?
    } else {
        String::from_utf8_lossy(&defaults_text(args)?).into_owned()
    };
    toml::from_str(&text).map_err(|e| {
        Rejection::Io(IoFailure(format!(
            "the current configuration is not TOML ({}): fix or remove {}",
            e.message().trim(),
            current.display()
        )))
    })
}

fn defaults_text(args: &SetupImportArgs) -> Result<Vec<u8>, IoFailure> {
    match &args.defaults {
        Some(p) => fs::read(p).map_err(|e| io_err("cannot read the defaults", p, e)),
        None => Ok(b"# pinhole's built-in defaults (pinhole --help)\n".to_vec()),
    }
}

/// The `[pinhole]` table over the current configuration: tables merge key by key, anything else
/// is replaced. Where pinhole.toml has two spellings of one thing (`source` or `[[stream]]`,
/// top-level `listen` or `[lan] listen`) the new one removes the old. A clear `lan.password`
/// becomes `lan.password_hash`.
fn merge_config(mut base: toml::Table, mut new: toml::Table) -> Result<toml::Table, String> {
    if let Some(toml::Value::Table(lan)) = new.get_mut("lan") {
        if let Some(pw) = lan.remove("password") {
            if lan.contains_key("password_hash") {
                return Err("[pinhole.lan]: give password or password_hash, not both".to_string());
            }
            let toml::Value::String(pw) = pw else {
                return Err("[pinhole.lan] password: must be a string".to_string());
            };
            let hash = crate::gate::auth::hash_password(&pw)
                .map_err(|e| format!("[pinhole.lan] password: {e}"))?;
            lan.insert("password_hash".into(), toml::Value::String(hash));
        }
    }
    for (one, other) in [("source", "stream"), ("stream", "source")] {
        if new.contains_key(one) {
            base.remove(other);
        }
    }
    if new.contains_key("listen") {
        if let Some(toml::Value::Table(lan)) = base.get_mut("lan") {
            lan.remove("listen");
        }
    }
    if matches!(new.get("lan"), Some(toml::Value::Table(l)) if l.contains_key("listen")) {
        base.remove("listen");
    }
    deep_merge(&mut base, new);
    Ok(base)
}

fn deep_merge(base: &mut toml::Table, new: toml::Table) {
    for (k, v) in new {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(n)) => deep_merge(b, n),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The daemon's own check, on the bytes that will go into place: written as the staged file
/// and read back by [`check_file`], exactly as `pinhole --config FILE --check` does.
fn validate_config(to: &Path, text: &[u8], from: &Path) -> Result<(), Rejection> {
    let staged = to.join(format!("{CONFIG}.check"));
    if let Some(dir) = staged.parent() {
        make_dirs(dir)?;
    }
    write_synced(&staged, text, 0o600, false)?;
    let result = check_file(&staged);
    let _ = fs::remove_file(&staged);
    result.map(|_| ()).map_err(|e| {
        let msg = e.to_string().replace(
            &staged.display().to_string(),
            &format!("{} [pinhole]", from.display()),
        );
        Rejection::Owner(msg)
    })
}

// ---------------------------------------------------------------- the tables

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WifiSetup {
    country: String,
    ssid: String,
    password: Option<String>,
}

impl WifiSetup {
    fn render(&self) -> Result<String, String> {
        let country = self.country.trim().to_ascii_uppercase();
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "[wifi] country = {:?}: two letters, the ISO 3166 code of the country (e.g. \"GB\", \"DE\", \"US\")",
                self.country
            ));
        }
        if self.ssid.is_empty() || self.ssid.len() > 32 {
            return Err(format!(
                "[wifi] ssid: {} bytes; a network name is 1 to 32 bytes",
                self.ssid.len()
            ));
        }
        let security = match &self.password {
            None => "\tkey_mgmt=NONE\n".to_string(),
            Some(p) => format!(
                "\tkey_mgmt=WPA-PSK\n\tpsk={}\n",
                wpa_psk(p, self.ssid.as_bytes())?
            ),
        };
        Ok(format!(
            "# Written by `pinhole setup-import` from the owner's pinhole-setup.toml ([wifi]).\n\
             # The password is kept only as its WPA pre-shared key.\n\
             ctrl_interface=/run/wpa_supplicant\nupdate_config=0\ncountry={country}\n\n\
             network={{\n\tssid={}\n\tscan_ssid=1\n{security}}}\n",
            hex(self.ssid.as_bytes())
        ))
    }
}

/// The WPA pre-shared key: PBKDF2-HMAC-SHA1(passphrase, SSID, 4096 rounds, 32 bytes) as 64 hex
/// digits (IEEE 802.11i; what `wpa_passphrase` prints). 64 hex digits are taken as the key.
pub fn wpa_psk(passphrase: &str, ssid: &[u8]) -> Result<String, String> {
    if passphrase.len() == 64 && passphrase.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(passphrase.to_ascii_lowercase());
    }
    let printable = passphrase.bytes().all(|b| (0x20..=0x7e).contains(&b));
    if !(8..=63).contains(&passphrase.len()) || !printable {
        return Err(format!(
            "[wifi] password: {} characters; WPA needs 8 to 63 printable ASCII characters \
             (or the 64 hex digits of the key); leave it out for an open network",
            passphrase.chars().count()
        ));
    }
    let mut key = [0u8; 32];
    let rounds = std::num::NonZeroU32::new(4096).ok_or("internal: zero PBKDF2 rounds")?;
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA1,
        rounds,
        ssid,
        passphrase.as_bytes(),
        &mut key,
    );
    Ok(hex(&key))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SshSetup {
    authorized_keys: Vec<String>,
}

/// Key types OpenSSH accepts in authorized_keys today (DSA is gone from OpenSSH 10).
const SSH_KEY_TYPES: [&str; 7] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

impl SshSetup {
    fn render(&self) -> Result<String, String> {
        if self.authorized_keys.is_empty() {
            return Err(
                "[ssh] authorized_keys = []: give at least one public key (the line of your ~/.ssh/id_ed25519.pub)"
                    .into(),
            );
        }
        let mut out = String::from(
            "# Written by `pinhole setup-import` from the owner's pinhole-setup.toml ([ssh]).\n",
        );
        for (i, line) in self.authorized_keys.iter().enumerate() {
            let line = line.trim();
            check_ssh_key(line).map_err(|e| format!("[ssh] authorized_keys[{i}]: {e}"))?;
            out.push_str(line);
            out.push('\n');
        }
        Ok(out)
    }
}

/// One authorized_keys line: `[options] TYPE BASE64 [comment]`, the blob's own type matching.
fn check_ssh_key(line: &str) -> Result<(), String> {
    if line.contains(['\n', '\r']) {
        return Err("one key per string, without line breaks".into());
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some(i) = words.iter().position(|w| SSH_KEY_TYPES.contains(w)) else {
        return Err(format!(
            "not an OpenSSH public key line (it starts with a key type: {}; ssh-dss is not accepted)",
            SSH_KEY_TYPES.join(", ")
        ));
    };
    let kind = words[i];
    let blob = words
        .get(i + 1)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .ok_or_else(|| format!("{kind}: the key after the type is missing or not base64"))?;
    // The blob is a run of SSH strings (u32 big-endian length, then the bytes), the first
    // naming the type again: ed25519 then the 32-byte key; RSA e, n; ECDSA curve, point; the
    // security-key types add the application. All of it, exactly: a cut key fails here.
    let fields = ssh_strings(&blob);
    let expected = match kind {
        "ssh-ed25519" => 2,
        "ssh-rsa"
        | "ecdsa-sha2-nistp256"
        | "ecdsa-sha2-nistp384"
        | "ecdsa-sha2-nistp521"
        | "sk-ssh-ed25519@openssh.com" => 3,
        _ => 4,
    };
    let ok = fields.as_ref().is_some_and(|f| {
        f.len() == expected
            && f[0] == kind.as_bytes()
            && (!kind.contains("ed25519") || f[1].len() == 32)
    });
    if !ok {
        return Err(format!(
            "{kind}: the key data is not a whole {kind} key (copied incompletely?)"
        ));
    }
    Ok(())
}

/// Splits an SSH wire-format blob into its strings; None unless it ends exactly.
fn ssh_strings(mut blob: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !blob.is_empty() {
        let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
        out.push(blob.get(4..4 + len)?);
        blob = &blob[4 + len..];
    }
    Some(out)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloudflaredSetup {
    token: String,
}

impl CloudflaredSetup {
    fn render(&self) -> Result<String, String> {
        let token = self.token.trim();
        check_tunnel_token(token).map_err(|e| format!("[cloudflared] token: {e}"))?;
        Ok(format!("{token}\n"))
    }
}

/// A tunnel token is base64 of a JSON object with the account tag `a`, tunnel id `t` and
/// secret `s` (what `cloudflared tunnel token` prints and the dashboard shows).
fn check_tunnel_token(token: &str) -> Result<(), String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let hint =
        "copy the whole token from the Cloudflare dashboard (Networks → Tunnels → the tunnel → \
                its install command: the long string after --token)";
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(format!("must be one word without spaces; {hint}"));
    }
    let raw = STANDARD
        .decode(token)
        .or_else(|_| URL_SAFE.decode(token))
        .map_err(|_| format!("not base64 ({} characters); {hint}", token.len()))?;
    let json: serde_json::Value = serde_json::from_slice(&raw)
        .map_err(|_| format!("does not decode to a tunnel token; {hint}"))?;
    for key in ["a", "t", "s"] {
        if !json.get(key).is_some_and(serde_json::Value::is_string) {
            return Err(format!("has no \"{key}\" field; {hint}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- no file: seed

fn seed(args: &SetupImportArgs) -> Result<Outcome, IoFailure> {
    if args.to.join(CONFIG).exists() {
        return Ok(Outcome::NothingToDo);
    }
    let text = defaults_text(args)?;
    commit(&args.to, &[(CONFIG, text)], None)?;
    Ok(Outcome::Seeded)
}

// ---------------------------------------------------------------- a rejected file

fn reject(
    args: &SetupImportArgs,
    parsed: Option<&toml::Table>,
    reason: String,
) -> Result<Outcome, IoFailure> {
    let file = args.from.display();
    // The one redaction: the reason may quote what the file gave (a URL, a value).
    let reason = crate::redact::redact(&format!("{file}: {reason}"));
    // The status first: if the card rewrite below is cut, the reason is already recorded.
    let state = args.to.join(STATE_DIR);
    make_dirs(&state)?;
    // 0600, owned by whoever owns the state directory (pinhole's dynamic user once systemd has
    // made it so; systemd chowns the directory's contents only when its top is not already
    // pinhole's), so pinhole reads it and no other local user does.
    let path = state.join(SETUP_ERROR);
    write_atomic(&path, format!("{reason}\n").as_bytes(), 0o600)?;
    if let Ok(meta) = fs::metadata(&state) {
        use std::os::unix::fs::MetadataExt as _;
        std::os::unix::fs::chown(&path, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| io_err("cannot give to the state directory's owner", &path, e))?;
    }
    let mut text = format!(
        "# pinhole did not import this file, and kept its previous configuration:\n#   {}\n\
         # Passwords, keys and tokens were removed from it. Fix it, type them again, and save it\n\
         # as pinhole-setup.toml (see `pinhole setup-import --help`).\n",
        reason.replace('\n', " ")
    );
    if let Some(t) = parsed {
        let mut t = t.clone();
        scrub(&mut t);
        text.push_str(&toml::to_string(&t).unwrap_or_default());
    }
    let rejected = args.from.with_file_name(REJECTED_NAME);
    write_atomic(&rejected, text.as_bytes(), 0o600)?;
    remove_file_synced(&args.from)?;
    Ok(Outcome::Rejected(reason))
}

/// Blanks every secret, typos included: all of [cloudflared], all of [wifi] but the country
/// and network name, any value whose key looks like a secret's, and user:password@ in URLs.
fn scrub(t: &mut toml::Table) {
    for (name, v) in t.iter_mut() {
        match (name.as_str(), v) {
            ("cloudflared", v) => scrub_value(true, v),
            ("wifi", toml::Value::Table(w)) => {
                for (k, v) in w.iter_mut() {
                    scrub_value(!matches!(k.as_str(), "country" | "ssid"), v);
                }
            }
            (_, v) => scrub_value(false, v),
        }
    }
}

fn scrub_table(t: &mut toml::Table) {
    for (k, v) in t.iter_mut() {
        scrub_value(looks_secret(k), v);
    }
}

/// `password`, `password_hash`, `psk`, `token`, `secret`… and their misspellings' stems.
fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["pass", "psk", "token", "secret", "pwd", "passw", "pasw"]
        .iter()
        .any(|s| k.contains(s))
}

fn scrub_value(secret: bool, v: &mut toml::Value) {
    match v {
        toml::Value::String(s) if secret => *s = "REMOVED".into(),
        toml::Value::String(s) => {
            if let Some(clean) = without_url_password(s) {
                *s = clean;
            }
        }
        toml::Value::Table(t) if secret => t.iter_mut().for_each(|(_, x)| scrub_value(true, x)),
        toml::Value::Table(t) => scrub_table(t),
        toml::Value::Array(a) => a.iter_mut().for_each(|x| scrub_value(secret, x)),
        _ if secret => *v = toml::Value::String("REMOVED".into()),
        _ => {}
    }
}

/// `rtsp://user:secret@host/…` → `rtsp://user:REMOVED@host/…` (anywhere in the string).
fn without_url_password(s: &str) -> Option<String> {
    let scheme = s.find("://")? + 3;
    let rest = &s[scheme..];
    let at = rest.find('@')?;
    let userinfo = &rest[..at];
    if userinfo.contains('/') {
        return None;
    }
    let colon = userinfo.find(':')?;
    Some(format!(
        "{}{}:REMOVED{}",
        &s[..scheme],
        &userinfo[..colon],
        &rest[at..]
    ))
}

// ---------------------------------------------------------------- the transaction

/// Puts every file into place, all or none; then removes `owner_file` from the card.
fn commit(
    to: &Path,
    files: &[(&str, Vec<u8>)],
    owner_file: Option<&Path>,
) -> Result<(), IoFailure> {
    // 1. Each new file beside the old one, flushed.
    for (rel, bytes) in files {
        let path = to.join(rel);
        if let Some(dir) = path.parent() {
            make_dirs(dir)?;
        }
        write_synced(&staged(&path), bytes, 0o600, true)?;
    }
    // 2. The commit point: the journal names the files (and the owner's file to remove).
    let mut journal = String::new();
    for (rel, _) in files {
        let _ = writeln!(journal, "file {rel}");
    }
    if let Some(f) = owner_file {
        let _ = writeln!(journal, "remove {}", f.display());
    }
    write_atomic(&to.join(JOURNAL), journal.as_bytes(), 0o600)?;
    // 3.–5. The renames, the card, the journal.
    finish(to)
}

/// Carries out the journal: every `.new` into place, the owner's file off the card, then the
/// journal itself. Repeating it is harmless, so an interrupted run is finished by the next.
fn finish(to: &Path) -> Result<(), IoFailure> {
    let journal_path = to.join(JOURNAL);
    let journal = fs::read_to_string(&journal_path)
        .map_err(|e| io_err("cannot read the import journal", &journal_path, e))?;
    for line in journal.lines() {
        if let Some(rel) = line.strip_prefix("file ") {
            let path = to.join(rel);
            let new = staged(&path);
            if new.exists() {
                fs::rename(&new, &path).map_err(|e| io_err("cannot put in place", &path, e))?;
                sync_parent(&path)?;
            }
        }
    }
    for line in journal.lines() {
        if let Some(f) = line.strip_prefix("remove ") {
            remove_file_synced(Path::new(f))?;
        }
    }
    remove_file_synced(&journal_path)
}

/// Before anything else: finish a journalled import (true), or drop the files of one that
/// never reached its journal (the old configuration is then still complete).
fn recover(to: &Path) -> Result<bool, IoFailure> {
    if to.join(JOURNAL).exists() {
        finish(to)?;
        return Ok(true);
    }
    for rel in [CONFIG, TOKEN, AUTHORIZED_KEYS, WIFI] {
        let new = staged(&to.join(rel));
        if new.exists() {
            remove_file_synced(&new)?;
        }
    }
    let _ = fs::remove_file(to.join(format!("{CONFIG}.check")));
    Ok(false)
}

fn staged(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".new");
    PathBuf::from(s)
}

fn make_dirs(dir: &Path) -> Result<(), IoFailure> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err("cannot make the directory", dir, e))
}

/// Writes `bytes` to `path` (a new file gets `mode`), flushed to the disk; with `sync_dir`, its
/// directory too.
fn write_synced(path: &Path, bytes: &[u8], mode: u32, sync_dir: bool) -> Result<(), IoFailure> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io_err("cannot write", path, e))?;
    // The mode even under a umask (the unit's UMask=0077) and for a file that was there.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .and_then(|()| f.write_all(bytes))
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err("cannot write", path, e))?;
    if sync_dir {
        sync_parent(path)?;
    }
    Ok(())
}

/// A single file replaced atomically: a temporary beside it, flushed, renamed over it.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IoFailure> {
    let tmp = staged(path);
    let _ = fs::remove_file(&tmp); // a leftover would keep its old mode
    write_synced(&tmp, bytes, mode, false)?;
    fs::rename(&tmp, path).map_err(|e| io_err("cannot put in place", path, e))?;
    sync_parent(path)
}

fn remove_file_synced(path: &Path) -> Result<(), IoFailure> {
    match fs::remove_file(path) {
        Ok(()) => sync_parent(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("cannot remove", path, e)),
    }
}

fn sync_parent(path: &Path) -> Result<(), IoFailure> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("cannot flush the directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wpa_psk_is_the_ieee_802_11i_test_vector() {
        // IEEE 802.11i-2004, H.4.2: passphrase "password", SSID "IEEE".
        assert_eq!(
            wpa_psk("password", b"IEEE").as_deref(),
            Ok("f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e")
        );
        assert!(wpa_psk("short", b"x").is_err_and(|e| e.contains("8 to 63")));
        assert!(
            wpa_psk(&"a".repeat(64), b"x").is_ok(),
            "64 hex digits are the key"
        );
    }

    #[test]
    fn ssh_keys_are_checked_by_their_blob() {
        let blob = {
            let mut b = vec![0, 0, 0, 11];
            b.extend_from_slice(b"ssh-ed25519");
            b.extend_from_slice(&[0, 0, 0, 32]);
            b.extend_from_slice(&[7; 32]);
            base64::engine::general_purpose::STANDARD.encode(b)
        };
        assert!(check_ssh_key(&format!("ssh-ed25519 {blob} me@laptop")).is_ok());
        assert!(check_ssh_key(&format!("restrict ssh-ed25519 {blob}")).is_ok());
        assert!(check_ssh_key(&format!("ssh-rsa {blob}")).is_err_and(|e| e.contains("not a whole")));
        assert!(check_ssh_key(&format!("ssh-ed25519 {}", &blob[..20])).is_err());
        assert!(check_ssh_key("ssh-dss AAAA").is_err_and(|e| e.contains("ssh-dss")));
    }

    #[test]
    fn tunnel_tokens_must_decode_to_a_b_t_s() {
        let good = base64::engine::general_purpose::STANDARD
            .encode(br#"{"a":"acct","t":"7f0c-tunnel","s":"c2VjcmV0"}"#);
        assert!(check_tunnel_token(&good).is_ok());
        assert!(check_tunnel_token(&good[..good.len() - 8]).is_err());
        assert!(check_tunnel_token("eyJh not one word").is_err());
        let partial = base64::engine::general_purpose::STANDARD.encode(br#"{"a":"acct"}"#);
        assert!(check_tunnel_token(&partial).is_err_and(|e| e.contains("\"t\"")));
    }

    #[test]
    fn merging_replaces_values_keeps_the_rest_and_hashes_the_password() {
        let base: toml::Table = toml::from_str(
            "source = \"testsrc\"\nfragment_ms = 100\n[lan]\nlisten = [\"0.0.0.0:80\"]\n",
        )
        .unwrap();
        let new: toml::Table =
            toml::from_str("fragment_ms = 200\n[lan]\npassword = \"hunter22\"\n").unwrap();
        let m = merge_config(base, new).unwrap();
        assert_eq!(m.get("fragment_ms").and_then(|v| v.as_integer()), Some(200));
        assert_eq!(m.get("source").and_then(|v| v.as_str()), Some("testsrc"));
        let lan = m.get("lan").and_then(|v| v.as_table()).cloned().unwrap();
        assert!(lan.contains_key("listen"), "{lan:?}");
        assert!(!lan.contains_key("password"));
        let hash = lan
            .get("password_hash")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(crate::gate::auth::check_hash(hash).is_ok());
    }

    #[test]
    fn a_new_source_replaces_the_streams_and_the_other_way_round() {
        let base: toml::Table =
            toml::from_str("[[stream]]\nname = \"a\"\nsource = \"testsrc\"\n").unwrap();
        let m = merge_config(base, toml::from_str("source = \"testsrc\"").unwrap()).unwrap();
        assert!(!m.contains_key("stream"));
        let base: toml::Table = toml::from_str("listen = [\"0.0.0.0:80\"]").unwrap();
        let m = merge_config(
            base,
            toml::from_str("[lan]\nlisten = [\"0.0.0.0:81\"]").unwrap(),
        )
        .unwrap();
        assert!(!m.contains_key("listen"));
    }

    #[test]
    fn scrubbing_blanks_secrets_and_url_passwords() {
        let mut t: toml::Table = toml::from_str(
            "[wifi]\npasword = \"wifi-secret\"\nssid = \"home\"\n[cloudflared]\ntokn = \"tok\"\n\
             [pinhole]\nsource = \"rtsp://admin:cam-secret@10.0.0.2/s1\"\n[pinhole.lan]\npassword = \"pw\"\n",
        )
        .unwrap();
        scrub(&mut t);
        let text = toml::to_string(&t).unwrap();
        for secret in ["wifi-secret", "tok\"", "cam-secret", "\"pw\""] {
            assert!(!text.contains(secret), "{secret} left in {text}");
        }
        assert!(text.contains("rtsp://admin:REMOVED@10.0.0.2/s1"), "{text}");
        assert!(text.contains("ssid = \"home\""), "{text}");
    }
}
