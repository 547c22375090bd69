# nooelint: oelint.var.mandatoryvar.HOMEPAGE oelint.var.suggestedvar.BUGTRACKER oelint.var.suggestedvar.CVE_PRODUCT oelint.var.bbclassextend
# (line 1 suppresses the file-wide findings) no public home page or bug tracker yet, the source
# is the repository this layer lives in; no CPE product name; a device daemon, no native variant.
SUMMARY = "Camera streaming with low latency: H.264 to chunked CMAF and LL-HLS"
SUMMARY:${PN}-cloudflared = "The hardened cloudflared.service for pinhole (token from /data)"
DESCRIPTION = "One daemon that takes H.264 from a camera, cuts it into CMAF fragments of \
               100-300 ms and serves them to browsers over chunked HTTP and LL-HLS, on the LAN \
               and through cloudflared. Installs its hardened systemd units, the Avahi service, \
               the port-80 sysctl and the board's configuration from the repository \
               (systemd/, board/)."
SECTION = "multimedia"
# Cargo.toml's `license = "MIT OR Apache-2.0"` line (tests/e2e/test_yocto.py keeps this true).
LICENSE = "MIT | Apache-2.0"
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=13;endline=13;md5=86b31c7756a1a7962f28b62856ed4f05"

# The repository this layer lives in, at its committed HEAD (PINHOLE_REPO: conf/layer.conf).
# For another clone or a remote set PINHOLE_GIT_URI; a release build pins SRCREV to the tag's
# commit (kas/release.yml).
PINHOLE_GIT_URI ?= "git://${PINHOLE_REPO};protocol=file;branch=main"
PV = "${PINHOLE_VERSION}+git"
# The version pinhole reports (firmware/pinhole/build.rs reads it): the distro's, from the tag.
export PINHOLE_VERSION
SRC_URI = "${PINHOLE_GIT_URI}"
# Builds what is committed, so an image always matches a commit of this repository.
# nooelint: oelint.vars.autorev
SRCREV ?= "${AUTOREV}"

inherit cargo cargo-update-recipe-crates systemd

# Both generated from Cargo.lock by yocto/scripts/update-crates (never edit by hand).
require ${BPN}-crates.inc
require ${BPN}-build-deps.inc

# A workspace: build the daemon's package; the lock file is the workspace's.
CARGO_SRC_DIR = "firmware/pinhole"
CARGO_LOCK_PATH = "${S}/Cargo.lock"

# gst:PIPELINE sources (Jetson's nvv4l2h264enc, libcamerasrc): the crate's `gstreamer` feature.
# Off on the boards here: their default sources are exec: and v4l2: (board/*/pinhole.toml).
PACKAGECONFIG ??= ""
PACKAGECONFIG[gstreamer] = "--features gstreamer,,gstreamer1.0 gstreamer1.0-plugins-base,gstreamer1.0-plugins-good"

# Which board/*/pinhole.toml becomes /etc/pinhole/pinhole.toml: the defaults the first-boot
# import starts from (the device runs /data/pinhole/pinhole.toml). The machines are
# meta-raspberrypi's and meta-tegra's, which oelint-adv does not know.
PINHOLE_BOARD ??= "rpi4"
# A board of meta-raspberrypi, which oelint-adv does not know.
# nooelint: oelint.vars.specific
PINHOLE_BOARD:raspberrypi4-64 = "rpi4"
# Likewise meta-raspberrypi's.
# nooelint: oelint.vars.specific
PINHOLE_BOARD:raspberrypi5 = "rpi5"
# A board of meta-tegra, which oelint-adv does not know either.
# nooelint: oelint.vars.specific
PINHOLE_BOARD:jetson-orin-nano-devkit = "jetson-orin-nano"
PACKAGE_ARCH = "${MACHINE_ARCH}"

do_install:append() {
    install -d ${D}${systemd_system_unitdir} ${D}${sysconfdir}/pinhole \
        ${D}${sysconfdir}/avahi/services ${D}${nonarch_libdir}/sysctl.d ${D}${docdir}/${BPN}
    install -m 0644 ${S}/systemd/pinhole.service ${D}${systemd_system_unitdir}/pinhole.service
    install -m 0644 ${S}/systemd/cloudflared.service ${D}${systemd_system_unitdir}/cloudflared.service
    install -m 0644 ${S}/systemd/pinhole.avahi.service ${D}${sysconfdir}/avahi/services/pinhole.service
    install -m 0644 ${S}/systemd/50-pinhole-port80.conf ${D}${nonarch_libdir}/sysctl.d/50-pinhole-port80.conf
    install -m 0644 ${S}/board/${PINHOLE_BOARD}/pinhole.toml ${D}${sysconfdir}/pinhole/pinhole.toml
    # Two files named README.md: one `install` call with both stops ("will not overwrite
    # just-created"), so each gets its own name.
    install -m 0644 ${S}/README.md ${D}${docdir}/${BPN}/README.md
    install -m 0644 ${S}/systemd/README.md ${D}${docdir}/${BPN}/README.systemd.md
}

PACKAGES =+ "${PN}-cloudflared"

SYSTEMD_PACKAGES = "${PN} ${PN}-cloudflared"
SYSTEMD_SERVICE:${PN} = "pinhole.service"
SYSTEMD_SERVICE:${PN}-cloudflared = "cloudflared.service"

FILES:${PN} += "${nonarch_libdir}/sysctl.d/50-pinhole-port80.conf ${sysconfdir}/avahi/services/pinhole.service"
FILES:${PN}-cloudflared += "${systemd_system_unitdir}/cloudflared.service"
CONFFILES:${PN} = "${sysconfdir}/pinhole/pinhole.toml"

RDEPENDS:${PN}-cloudflared = "cloudflared"
RRECOMMENDS:${PN} = "avahi-daemon"
