//! The appliance around the stream: what the device reports about itself beside the cameras
//! (its firmware version, the root slot it booted, the last update, a first-boot setup that was
//! refused). `/api/status` carries it as `"device"` and `/metrics` as `pinhole_device_*`, only
//! when pinhole runs as the appliance ([`AppState::device`](crate::serve::http::AppState) is
//! `Some`); a plain install shows none of it.

pub mod firstboot;
pub mod hostkeys;
pub mod update;

use std::sync::RwLock;

use serde::Serialize;

use crate::metrics::Family;

/// What the device says about itself. Every field is a fact read on the device; `None` where
/// it does not apply (no A/B slots, never updated, setup accepted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// The firmware (image) version; pinhole's own version where there is no image.
    pub version: String,
    /// The booted root slot (`"A"` or `"B"`).
    pub slot: Option<String>,
    /// The last update's result, one line (`"installed 1.2.0 into B, booted"`).
    pub last_update: Option<String>,
    /// Why the owner's first-boot file was refused (the previous configuration is in use).
    pub setup_error: Option<String>,
    /// How this boot is judged, one line: a new slot's trial (kept only once pinhole streams),
    /// or a normal boot of a good slot, kept whatever the camera or the network do
    /// (`pinhole-ota-device boot`, `BOOT_NOTE` in `device.env`).
    pub boot: Option<String>,
    /// The device's SSH host key fingerprints (`ED25519 SHA256:…`), to compare with what `ssh`
    /// or `pinhole-ota` shows on a first connection ([`hostkeys`]).
    pub ssh_host_keys: Vec<String>,
}

/// The shared, updatable copy the HTTP side reads.
#[derive(Debug, Default)]
pub struct Device {
    info: RwLock<DeviceInfo>,
}

impl Device {
    pub fn new(info: DeviceInfo) -> Device {
        Device {
            info: RwLock::new(info),
        }
    }

    pub fn get(&self) -> DeviceInfo {
        match self.info.read() {
            Ok(i) => i.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set(&self, info: DeviceInfo) {
        match self.info.write() {
            Ok(mut i) => *i = info,
            Err(poisoned) => *poisoned.into_inner() = info,
        }
    }

    /// `pinhole_device_info{version,slot} 1` and `pinhole_device_setup_refused` (0/1); on an A/B
    /// device also the last update's result and the trial boot ([`update::families`]).
    pub fn families(&self) -> Vec<Family> {
        let i = self.get();
        let mut out = vec![
            Family::gauge(
                "pinhole_device_info",
                "The device's firmware version and booted root slot.",
            )
            .labelled(
                &[
                    ("version", &i.version),
                    ("slot", i.slot.as_deref().unwrap_or("")),
                ],
                1,
            ),
            Family::gauge(
                "pinhole_device_setup_refused",
                "1 when the owner's first-boot file was refused.",
            )
            .with(u8::from(i.setup_error.is_some())),
        ];
        out.extend(update::families(&i));
        out
    }

    /// [`Self::families`] as Prometheus text.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        crate::metrics::render(&mut out, &self.families());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_escape_what_the_device_reports() {
        let d = Device::new(DeviceInfo {
            version: "1.0 \"beta\"".into(),
            slot: Some("B".into()),
            last_update: None,
            setup_error: Some("bad".into()),
            boot: None,
            ssh_host_keys: Vec::new(),
        });
        let m = d.prometheus();
        assert!(
            m.contains("pinhole_device_info{version=\"1.0 \\\"beta\\\"\",slot=\"B\"} 1\n"),
            "{m}"
        );
        assert!(m.contains("pinhole_device_setup_refused 1\n"), "{m}");
    }

    #[test]
    fn status_json_has_every_field() {
        let v = serde_json::to_value(DeviceInfo::default()).unwrap_or_default();
        for k in [
            "version",
            "slot",
            "last_update",
            "setup_error",
            "ssh_host_keys",
        ] {
            assert!(v.get(k).is_some(), "{k} missing from {v}");
        }
    }
}
