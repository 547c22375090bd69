# nooelint: oelint.var.mandatoryvar.HOMEPAGE oelint.var.suggestedvar.BUGTRACKER oelint.var.suggestedvar.CVE_PRODUCT oelint.var.bbclassextend
# (line 1 suppresses the file-wide findings) no public home page or bug tracker yet, these
# files belong to the repository this layer lives in; no CPE product; device side only.
SUMMARY = "The device half of pinhole-ota: health-gated A/B commit, rollback record, status"
DESCRIPTION = "pinhole-ota-device and its units from the repository's ota/device/: at boot it \
               learns the booted slot and version and settles an update in flight; the booted \
               slot is marked good only after boot-complete.target (pinhole's first fragment); \
               boot-complete.target also waits for cloudflared when a tunnel token exists; \
               a trial boot that does not get there within the bound is marked bad and the \
               device reboots into the old slot; pinhole reads /run/pinhole-ota/device.env."
SECTION = "base"
LICENSE = "MIT | Apache-2.0"
# Files of this repository under its licences; the texts are OE-core's common licences.
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302 \
                    file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# Installed from the repository this layer lives in (PINHOLE_REPO: conf/layer.conf), not copied:
# its ota/device/ is searched for the file:// sources.
# nooelint: oelint.vars.fileextrapaths oelint.vars.outofcontext
FILESEXTRAPATHS:prepend := "${PINHOLE_REPO}/ota/device:"
SRC_URI = "file://pinhole-ota-device \
           file://pinhole-ota-boot.service \
           file://pinhole-ota-commit.service \
           file://pinhole-ota-deadline.service \
           file://pinhole-ota.conf \
           file://boot-complete.target.d/50-pinhole-ota-cloudflared.conf \
"

S = "${UNPACKDIR}"

inherit systemd allarch

SYSTEMD_SERVICE:${PN} = "pinhole-ota-boot.service pinhole-ota-commit.service pinhole-ota-deadline.service"

do_install() {
    install -d ${D}${libexecdir} ${D}${systemd_system_unitdir}/boot-complete.target.d ${D}${sysconfdir}
    install -m 0755 ${S}/pinhole-ota-device ${D}${libexecdir}/pinhole-ota-device
    install -m 0644 ${S}/pinhole-ota-boot.service ${S}/pinhole-ota-commit.service \
        ${S}/pinhole-ota-deadline.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/pinhole-ota.conf ${D}${sysconfdir}/pinhole-ota.conf
    install -m 0644 ${S}/boot-complete.target.d/50-pinhole-ota-cloudflared.conf \
        ${D}${systemd_system_unitdir}/boot-complete.target.d/
}

# The boot-complete.target drop-in is no unit of SYSTEMD_SERVICE (systemd.bbclass adds only those
# to FILES) and lies outside the default FILES: without this line do_package stops on
# installed-vs-shipped (tests/e2e/test_yocto.py's install check).
FILES:${PN} += "${systemd_system_unitdir}/boot-complete.target.d"

RDEPENDS:${PN} = "rauc util-linux-flock"
