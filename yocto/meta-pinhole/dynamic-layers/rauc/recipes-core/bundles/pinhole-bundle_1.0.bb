# nooelint: oelint.var.mandatoryvar.HOMEPAGE oelint.var.suggestedvar.BUGTRACKER oelint.var.suggestedvar.CVE_PRODUCT oelint.var.bbclassextend oelint.var.mandatoryvar.SRC_URI
# (line 1 suppresses the file-wide findings) no public home page or bug tracker yet; a bundle
# of this layer's image, no CPE product, no native variant; nothing to fetch (bundle.bbclass takes
# the image from the deploy directory).
SUMMARY = "pinhole update bundle: pinhole-image's root file system, signed, for pinhole-ota"
DESCRIPTION = "A RAUC bundle (verity format) holding pinhole-image's ext4 root file system for \
               the rootfs slot class, compatible pinhole-MACHINE, signed with the owner's key \
               from PINHOLE_RAUC_KEY_DIR (yocto/scripts/make-dev-keys makes a development pair). \
               Installed with ota/pinhole-ota BUNDLE DEVICE."
SECTION = "base"
LICENSE = "MIT"
# The licence text is OE-core's common MIT licence: a bundle has no source of its own.
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

inherit bundle

# The A/B slots exist on the Raspberry Pi machines only (meta-rauc-raspberrypi's layout).
COMPATIBLE_MACHINE = "^rpi$"

# The variables below are meta-rauc's bundle.bbclass's, which oelint-adv does not know.
# nooelint: oelint.vars.mispell.unknown
RAUC_BUNDLE_COMPATIBLE = "pinhole-${MACHINE}"
# The device reports its version from os-release (IMAGE_VERSION, else VERSION_ID = DISTRO_VERSION);
# pinhole-ota calls a bundle of the running version "up to date". DISTRO_VERSION is PINHOLE_VERSION:
# a release build's is the tag's (kas/release.yml, release/README.md).
# meta-rauc (bundle.bbclass)
# nooelint: oelint.vars.mispell.unknown
RAUC_BUNDLE_VERSION = "${DISTRO_VERSION}"
# meta-rauc (bundle.bbclass)
# nooelint: oelint.vars.mispell.unknown
RAUC_BUNDLE_DESCRIPTION = "pinhole-image ${DISTRO_VERSION} for ${MACHINE}"
# meta-rauc (bundle.bbclass)
# nooelint: oelint.vars.mispell.unknown
RAUC_BUNDLE_FORMAT = "verity"

# meta-rauc (bundle.bbclass)
# nooelint: oelint.vars.mispell.unknown
RAUC_BUNDLE_SLOTS = "rootfs"
# meta-rauc (bundle.bbclass)
# nooelint: oelint.vars.mispell.unknown
RAUC_SLOT_rootfs = "pinhole-image"
# meta-rauc (bundle.bbclass)
# nooelint: oelint.vars.mispell.unknown
RAUC_SLOT_rootfs[fstype] = "ext4"

PINHOLE_RAUC_KEY_DIR ??= "${PINHOLE_REPO}/yocto/keys"
# meta-rauc (bundle.bbclass)
# nooelint: oelint.vars.mispell.unknown
RAUC_KEY_FILE = "${PINHOLE_RAUC_KEY_DIR}/signing.key.pem"
# meta-rauc (bundle.bbclass)
# nooelint: oelint.vars.mispell.unknown
RAUC_CERT_FILE = "${PINHOLE_RAUC_KEY_DIR}/signing.cert.pem"
# meta-rauc (bundle.bbclass)
# nooelint: oelint.vars.mispell.unknown
RAUC_KEYRING_FILE = "${PINHOLE_RAUC_KEY_DIR}/ca.cert.pem"
