//! How pinhole learns the device's A/B update state: the root slot U-Boot booted, this root's
//! version, and how the last over-the-air update ended (ota/README.md).
//!
//! pinhole's unit is sandboxed with no D-Bus, so it does not ask rauc. At every boot
//! `pinhole-ota-boot.service` (`ota/device/pinhole-ota-device`) writes
//! `/run/pinhole-ota/device.env` (`KEY='value'` lines: `VERSION`, `SLOT`, `TRIAL`,
//! `LAST_UPDATE_RESULT`, `LAST_UPDATE_VERSION`, `LAST_UPDATE_FROM_VERSION`, `LAST_UPDATE_TIME`,
//! `LAST_UPDATE_REASON`), and rewrites it when the update is committed — after pinhole is
//! ready, so [`spawn_refresh`] reads it again every few seconds. Without that file (an image
//! without pinhole-ota) the slot comes from `rauc.slot=` on `/proc/cmdline` and the version from
//! `/etc/os-release` (`IMAGE_VERSION`, else `VERSION_ID`). Neither file nor `rauc.slot=`: not an
//! A/B device, and nothing is reported.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Device, DeviceInfo};
use crate::metrics::Family;

/// Where the facts are read from; tests point these elsewhere.
#[derive(Debug, Clone)]
pub struct Sources<'a> {
    pub device_env: &'a Path,
    pub cmdline: &'a Path,
    pub os_release: &'a Path,
}

impl Default for Sources<'static> {
    fn default() -> Self {
        Sources {
            device_env: Path::new("/run/pinhole-ota/device.env"),
            cmdline: Path::new("/proc/cmdline"),
            os_release: Path::new("/etc/os-release"),
        }
    }
}

/// The A/B facts of the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateState {
    pub version: Option<String>,
    /// The RAUC bootname (`A` or `B`).
    pub slot: Option<String>,
    /// This boot is a new slot's trial: not marked good yet.
    pub trial: bool,
    /// `ok`, `rolled-back`, `install-failed` or `interrupted`.
    pub result: Option<String>,
    pub last_version: String,
    pub from_version: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub reason: String,
    /// How this boot is judged (`BOOT_NOTE`): a trial, or a normal boot kept on its slot.
    pub boot: Option<String>,
}

/// `KEY=value` lines (os-release syntax: optional single or double quotes).
pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .unwrap_or(v);
            out.insert(k.trim().to_string(), v.to_string());
        }
    }
    out
}

/// `rauc.slot=` on a kernel command line (the last one wins, as in the kernel).
pub fn slot_from_cmdline(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("rauc.slot="))
        .next_back()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `IMAGE_VERSION`, else `VERSION_ID`, of an os-release file.
pub fn version_from_os_release(text: &str) -> Option<String> {
    let env = parse_env(text);
    ["IMAGE_VERSION", "VERSION_ID"]
        .iter()
        .filter_map(|k| env.get(*k))
        .find(|v| !v.is_empty())
        .cloned()
}

/// The state from the files' texts (each optional).
pub fn from_texts(
    device_env: Option<&str>,
    cmdline: Option<&str>,
    os_release: Option<&str>,
) -> UpdateState {
    let env = device_env.map(parse_env).unwrap_or_default();
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    UpdateState {
        version: get("VERSION").or_else(|| os_release.and_then(version_from_os_release)),
        slot: get("SLOT").or_else(|| cmdline.and_then(slot_from_cmdline)),
        trial: env.get("TRIAL").is_some_and(|v| v == "yes"),
        result: get("LAST_UPDATE_RESULT"),
        last_version: get("LAST_UPDATE_VERSION").unwrap_or_default(),
        from_version: get("LAST_UPDATE_FROM_VERSION").unwrap_or_default(),
        time: get("LAST_UPDATE_TIME").unwrap_or_default(),
        reason: get("LAST_UPDATE_REASON").unwrap_or_default(),
        boot: get("BOOT_NOTE"),
    }
}

/// Reads the files; `None` when this is not an A/B device (no `device.env`, no `rauc.slot=`).
pub fn read(src: &Sources<'_>) -> Option<UpdateState> {
    let device_env = std::fs::read_to_string(src.device_env).ok();
    let cmdline = std::fs::read_to_string(src.cmdline).ok();
    if device_env.is_none() && cmdline.as_deref().and_then(slot_from_cmdline).is_none() {
        return None;
    }
    let os_release = std::fs::read_to_string(src.os_release).ok();
    Some(from_texts(
        device_env.as_deref(),
        cmdline.as_deref(),
        os_release.as_deref(),
    ))
}

/// The one line `DeviceInfo::last_update` carries (the UI shows it as is).
pub fn last_update_line(s: &UpdateState) -> Option<String> {
    if s.trial {
        return Some(format!(
            "trial boot of {} on slot {}: kept once pinhole serves its first fragment",
            s.version.as_deref().unwrap_or("?"),
            s.slot.as_deref().unwrap_or("?")
        ));
    }
    let result = s.result.as_deref()?;
    let at = if s.time.is_empty() {
        String::new()
    } else {
        format!(" ({})", s.time)
    };
    let why = if s.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", s.reason)
    };
    Some(match result {
        "ok" => format!("updated from {} to {}{at}", s.from_version, s.last_version),
        "rolled-back" => format!("update rolled back, running {}{at}{why}", s.last_version),
        "install-failed" => format!("update failed to install{at}{why}"),
        "interrupted" => format!("update interrupted{at}{why}"),
        other => format!("update {other}{at}{why}"),
    })
}

/// Fills the A/B fields of `info` (version, slot, last update); false when this is not an A/B
/// device (then `info` is unchanged).
pub fn apply(info: &mut DeviceInfo, src: &Sources<'_>) -> bool {
    let Some(s) = read(src) else {
        return false;
    };
    if let Some(v) = &s.version {
        info.version.clone_from(v);
    }
    info.slot.clone_from(&s.slot);
    info.last_update = last_update_line(&s);
    info.boot.clone_from(&s.boot);
    true
}

/// What pinhole reports as `"device"` on an A/B device, or `None` off one.
pub fn ota_info() -> Option<DeviceInfo> {
    let mut info = DeviceInfo {
        version: crate::VERSION.to_string(),
        ..DeviceInfo::default()
    };
    apply(&mut info, &Sources::default()).then_some(info)
}

/// Keeps the device's A/B fields current: a trial boot is committed (and `device.env`
/// rewritten) only after pinhole is ready, so the file is read again every 5 s.
pub fn spawn_refresh(device: Arc<Device>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let mut info = device.get();
            if apply(&mut info, &Sources::default()) && info != device.get() {
                device.set(info);
            }
        }
    })
}

/// `pinhole_device_last_update{result}` (1 for the last update's result) and
/// `pinhole_device_trial_boot`, from what [`last_update_line`] wrote; empty off an A/B device.
pub fn families(info: &DeviceInfo) -> Vec<Family> {
    let mut out = Vec::new();
    if info.slot.is_none() {
        return out;
    }
    let line = info.last_update.as_deref().unwrap_or("");
    let trial = line.starts_with("trial boot");
    out.push(
        Family::gauge(
            "pinhole_device_trial_boot",
            "1 while a newly installed slot's first boot is not yet marked good.",
        )
        .with(u8::from(trial)),
    );
    let result = [
        ("updated from", "ok"),
        ("update rolled back", "rolled-back"),
        ("update failed", "install-failed"),
        ("update interrupted", "interrupted"),
    ]
    .iter()
    .find(|(prefix, _)| line.starts_with(prefix))
    .map(|(_, r)| *r);
    if let Some(r) = result {
        out.push(
            Family::gauge(
                "pinhole_device_last_update",
                "How the last over-the-air update ended (ok, rolled-back, install-failed, interrupted).",
            )
            .labelled(&[("result", r)], 1),
        );
    }
    out
}

/// [`families`] as Prometheus text.
pub fn prometheus(info: &DeviceInfo) -> String {
    let mut out = String::new();
    crate::metrics::render(&mut out, &families(info));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLLED_BACK: &str = "VERSION='1.0'\nSLOT='A'\nTRIAL='no'\nLAST_UPDATE_RESULT='rolled-back'\n\
        LAST_UPDATE_VERSION='1.0'\nLAST_UPDATE_FROM_VERSION='1.0'\nLAST_UPDATE_TIME='2026-12-02T06:00:00Z'\n\
        LAST_UPDATE_REASON='slot B did not reach boot-complete.target'\n";

    #[test]
    fn device_env_gives_version_slot_and_the_last_update() {
        let s = from_texts(
            Some(ROLLED_BACK),
            Some("root=/dev/mmcblk0p3 rauc.slot=B"),
            None,
        );
        assert_eq!(s.version.as_deref(), Some("1.0"));
        assert_eq!(
            s.slot.as_deref(),
            Some("A"),
            "device.env wins over the command line"
        );
        assert_eq!(s.result.as_deref(), Some("rolled-back"));
        assert_eq!(
            last_update_line(&s).as_deref(),
            Some("update rolled back, running 1.0 (2026-12-02T06:00:00Z): slot B did not reach boot-complete.target")
        );
        let ok = "VERSION='2.0'\nSLOT='B'\nLAST_UPDATE_RESULT='ok'\nLAST_UPDATE_VERSION='2.0'\nLAST_UPDATE_FROM_VERSION='1.0'\n";
        let s = from_texts(Some(ok), None, None);
        assert_eq!(
            last_update_line(&s).as_deref(),
            Some("updated from 1.0 to 2.0")
        );
        let trial = "VERSION='2.0'\nSLOT='B'\nTRIAL='yes'\n";
        let line = last_update_line(&from_texts(Some(trial), None, None));
        assert_eq!(
            line.as_deref(),
            Some("trial boot of 2.0 on slot B: kept once pinhole serves its first fragment")
        );
        assert_eq!(
            last_update_line(&from_texts(Some("VERSION='1'\nSLOT='A'\n"), None, None)),
            None
        );
    }

    #[test]
    fn without_device_env_the_command_line_and_os_release_answer() {
        let os = "NAME=\"pinhole\"\nVERSION_ID=0.1.0\nIMAGE_VERSION=\"0.1.0+r7\"\n";
        let s = from_texts(None, Some("console=ttyS0 rauc.slot=B quiet\n"), Some(os));
        assert_eq!(s.slot.as_deref(), Some("B"));
        assert_eq!(s.version.as_deref(), Some("0.1.0+r7"));
        assert_eq!(s.result, None);
        assert_eq!(
            version_from_os_release("VERSION_ID=12\n").as_deref(),
            Some("12")
        );
        assert_eq!(slot_from_cmdline("rauc.slot= quiet"), None);
        assert_eq!(
            slot_from_cmdline("rauc.slot=A rauc.slot=B").as_deref(),
            Some("B")
        );
    }

    #[test]
    fn a_box_without_slots_reports_nothing_and_an_ab_device_fills_device_info() {
        let dir = std::env::temp_dir().join(format!("pinhole-update-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (cmdline, os, env) = (
            dir.join("cmdline"),
            dir.join("os-release"),
            dir.join("device.env"),
        );
        std::fs::write(&cmdline, "console=ttyS0 quiet\n").expect("write");
        std::fs::write(&os, "VERSION_ID=12\n").expect("write");
        let src = Sources {
            device_env: &env,
            cmdline: &cmdline,
            os_release: &os,
        };
        let mut info = DeviceInfo {
            version: "0.1.0".into(),
            setup_error: Some("bad".into()),
            ..DeviceInfo::default()
        };
        assert_eq!(read(&src), None);
        assert!(!apply(&mut info, &src));
        assert_eq!(info.slot, None);
        std::fs::write(&env, ROLLED_BACK).expect("write");
        assert!(apply(&mut info, &src));
        assert_eq!(
            (info.version.as_str(), info.slot.as_deref()),
            ("1.0", Some("A"))
        );
        assert!(info
            .last_update
            .as_deref()
            .is_some_and(|l| l.starts_with("update rolled back")));
        assert_eq!(
            info.setup_error.as_deref(),
            Some("bad"),
            "the setup error is not ours to change"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_normal_boot_says_why_it_is_kept() {
        let s = from_texts(
            Some("VERSION='1.0'\nSLOT='B'\nTRIAL='no'\nBOOT='normal'\nBOOT_NOTE='normal boot of slot B: marked good at boot'\n"),
            None,
            None,
        );
        assert!(!s.trial);
        assert_eq!(
            s.boot.as_deref(),
            Some("normal boot of slot B: marked good at boot")
        );
        assert_eq!(from_texts(Some("SLOT='A'\n"), None, None).boot, None);
    }

    #[test]
    fn metrics_name_the_result_and_the_trial() {
        let mut info = DeviceInfo {
            version: "1.0".into(),
            slot: Some("A".into()),
            last_update: last_update_line(&from_texts(Some(ROLLED_BACK), None, None)),
            setup_error: None,
            boot: None,
            ssh_host_keys: Vec::new(),
        };
        let m = prometheus(&info);
        assert!(m.contains("pinhole_device_trial_boot 0\n"), "{m}");
        assert!(
            m.contains("pinhole_device_last_update{result=\"rolled-back\"} 1\n"),
            "{m}"
        );
        assert!(
            m.contains("# TYPE pinhole_device_last_update gauge\n"),
            "{m}"
        );
        info.last_update = last_update_line(&from_texts(
            Some("VERSION='2'\nSLOT='B'\nTRIAL='yes'\n"),
            None,
            None,
        ));
        let m = prometheus(&info);
        assert!(
            m.contains("pinhole_device_trial_boot 1\n")
                && !m.contains("pinhole_device_last_update{"),
            "{m}"
        );
        info.slot = None;
        assert_eq!(prometheus(&info), "");
    }
}
