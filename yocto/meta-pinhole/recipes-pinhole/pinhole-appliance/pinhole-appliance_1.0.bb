# nooelint: oelint.var.mandatoryvar.HOMEPAGE oelint.var.suggestedvar.BUGTRACKER oelint.var.suggestedvar.CVE_PRODUCT oelint.var.bbclassextend
# (line 1 suppresses the file-wide findings) no public home page or bug tracker yet, these
# files belong to the repository this layer lives in; no CPE product; device configuration only.
SUMMARY = "The pinhole image's glue: first-boot import, /data, SSH, Wi-Fi, journal"
DESCRIPTION = "Drop-ins and small units that turn a read-only root file system into the pinhole \
               appliance: pinhole-setup-import.service (the owner's pinhole-setup.toml from the boot \
               partition into /data), pinhole's configuration and state on /data, SSH by key only with host \
               keys on /data, Wi-Fi from /data, DHCP on Ethernet and Wi-Fi, a journal sized for an SD card. \
               The units themselves come from the pinhole recipe (the repository's systemd/)."
SECTION = "base"
LICENSE = "MIT | Apache-2.0"
# Files of this layer, under pinhole's licences; their texts are OE-core's common licences.
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302 \
                    file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

SRC_URI = "file://pinhole-setup-import.service \
           file://pinhole.service.d/50-appliance.conf \
           file://var-lib-private-pinhole.mount \
           file://pinhole-tmpfiles.conf \
           file://journald-pinhole.conf \
           file://sshd-pinhole.conf \
           file://sshdgenkeys.service.d/50-data.conf \
           file://20-wired.network \
           file://25-wireless.network \
           file://wpa_supplicant@wlan0.service.d/50-data.conf \
"

S = "${UNPACKDIR}"

inherit systemd allarch

do_install() {
    install -d ${D}${systemd_system_unitdir}/pinhole.service.d \
        ${D}${systemd_system_unitdir}/sshdgenkeys.service.d \
        ${D}${systemd_system_unitdir}/wpa_supplicant@wlan0.service.d \
        ${D}${sysconfdir}/systemd/system/multi-user.target.wants \
        ${D}${nonarch_libdir}/tmpfiles.d ${D}${nonarch_libdir}/systemd/journald.conf.d \
        ${D}${nonarch_libdir}/systemd/network ${D}${sysconfdir}/ssh/sshd_config.d
    install -m 0644 ${S}/pinhole-setup-import.service ${S}/var-lib-private-pinhole.mount \
        ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/pinhole.service.d/50-appliance.conf ${D}${systemd_system_unitdir}/pinhole.service.d/
    install -m 0644 ${S}/sshdgenkeys.service.d/50-data.conf ${D}${systemd_system_unitdir}/sshdgenkeys.service.d/
    install -m 0644 ${S}/wpa_supplicant@wlan0.service.d/50-data.conf \
        ${D}${systemd_system_unitdir}/wpa_supplicant@wlan0.service.d/
    install -m 0644 ${S}/pinhole-tmpfiles.conf ${D}${nonarch_libdir}/tmpfiles.d/pinhole.conf
    install -m 0644 ${S}/journald-pinhole.conf ${D}${nonarch_libdir}/systemd/journald.conf.d/50-pinhole.conf
    install -m 0644 ${S}/20-wired.network ${S}/25-wireless.network ${D}${nonarch_libdir}/systemd/network/
    install -m 0600 ${S}/sshd-pinhole.conf ${D}${sysconfdir}/ssh/sshd_config.d/50-pinhole.conf
    # Wi-Fi on wlan0 (skipped by its condition until the owner's file gave a network).
    ln -s ${systemd_system_unitdir}/wpa_supplicant@.service \
        ${D}${sysconfdir}/systemd/system/multi-user.target.wants/wpa_supplicant@wlan0.service
}

SYSTEMD_SERVICE:${PN} = "pinhole-setup-import.service"
FILES:${PN} += "${systemd_system_unitdir} ${nonarch_libdir}/tmpfiles.d ${nonarch_libdir}/systemd"
RDEPENDS:${PN} = "openssh-sshd pinhole wpa-supplicant"
