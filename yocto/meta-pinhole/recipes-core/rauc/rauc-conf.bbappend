# pinhole's RAUC system configuration and keyring (recipes-core/rauc/README.md): the Raspberry Pi
# A/B layout of meta-rauc-raspberrypi (rootfs.0 = p2 = A, rootfs.1 = p3 = B, U-Boot boot counting),
# verity bundles only, RAUC's data on /data. The keyring is the owner's CA certificate, read from
# PINHOLE_RAUC_KEY_DIR (default yocto/keys of this repository, made by yocto/scripts/make-dev-keys;
# never committed): a build without it fails at fetch time, naming the file. For the pinhole
# distro only (conf/distro/pinhole-os.conf), whose Raspberry Pi images carry RAUC.
FILESEXTRAPATHS:prepend:pinhole-os := "${THISDIR}/files:"

# meta-rauc's rauc-conf variables, which oelint-adv does not know.
# nooelint: oelint.vars.mispell.unknown
RAUC_KEYRING_FILE:pinhole-os = "ca.cert.pem"
# meta-rauc's rauc-conf variable (the keyring's URI), unknown to oelint-adv.
# nooelint: oelint.vars.mispell.unknown
RAUC_KEYRING_URI:pinhole-os = "file://${@d.getVar('PINHOLE_RAUC_KEY_DIR') or d.getVar('PINHOLE_REPO') + '/yocto/keys'}/ca.cert.pem"

do_install:append:pinhole-os() {
    sed -i -e "s/@@MACHINE@@/${MACHINE}/g" ${D}${sysconfdir}/rauc/system.conf
}
