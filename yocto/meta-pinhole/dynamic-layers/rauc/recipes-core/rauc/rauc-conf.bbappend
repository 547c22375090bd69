# pinhole's RAUC system configuration and keyring (recipes-core/rauc/README.md): the Raspberry Pi
# A/B layout of meta-rauc-raspberrypi (rootfs.0 = p2 = A, rootfs.1 = p3 = B, U-Boot boot counting),
# verity bundles only, RAUC's data on /data. The keyring is the owner's CA certificate, read from
# PINHOLE_RAUC_KEY_DIR (default yocto/keys of this repository, made by yocto/scripts/make-dev-keys;
# never committed): a build without it fails at fetch time, naming the file. For the pinhole
# distro only (conf/distro/pinhole-os.conf), whose Raspberry Pi images carry RAUC.
#
# meta-rauc's rauc-conf (at the commit of kas/base.lock.yml) installs both files into
# ${nonarch_libdir}/rauc ("hermetic /usr"), where RAUC 1.15 finds system.conf last in its search
# order (/etc, /run, /usr/lib: src/context.c); the keyring path in system.conf is relative, so
# RAUC reads it beside that file (src/utils.c, resolve_path). The key directory is a FILESPATH
# entry and the keyring a plain file:// name: bitbake 2.18 unpacks an absolute file:///DIR/NAME
# to ${UNPACKDIR}/DIR/NAME (fetch2/__init__.py, unpack), not to ${UNPACKDIR}/NAME where
# rauc-conf's do_install reads ${RAUC_KEYRING_FILE}. tests/e2e/test_yocto.py runs that
# do_install (yocto/scripts/check-layer).
FILESEXTRAPATHS:prepend:pinhole-os := "${THISDIR}/files:${@d.getVar('PINHOLE_RAUC_KEY_DIR') or d.getVar('PINHOLE_REPO') + '/yocto/keys'}:"

# meta-rauc's rauc-conf variable (the keyring's file name in ${UNPACKDIR}).
RAUC_KEYRING_FILE:pinhole-os = "ca.cert.pem"
# meta-rauc's rauc-conf variable (the keyring's URI), unknown to oelint-adv.
# nooelint: oelint.vars.mispell.unknown
RAUC_KEYRING_URI:pinhole-os = "file://ca.cert.pem"

do_install:append:pinhole-os() {
    sed -i -e "s/@@MACHINE@@/${MACHINE}/g" ${D}${nonarch_libdir}/rauc/system.conf
}
