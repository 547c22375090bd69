# nooelint: oelint.var.suggestedvar.BUGTRACKER oelint.var.suggestedvar.CVE_PRODUCT
# (line 1 suppresses the file-wide findings) an image: no bug tracker of its own, no CPE product.
SUMMARY = "pinhole camera appliance image"
DESCRIPTION = "A read-only root file system with systemd, pinhole and cloudflared, Avahi \
               (http://pinhole.local), Wi-Fi (wpa_supplicant) and Ethernet \
               (systemd-networkd), SSH by key only; configuration, keys, tunnel token and \
               pinhole's state on the /data partition, filled from the owner's \
               pinhole-setup.toml on the boot partition at first boot. On the Raspberry Pis: \
               RAUC with A/B root slots and U-Boot boot counting (meta-rauc-raspberrypi's layout)."
SECTION = "images"
LICENSE = "MIT"

IMAGE_FEATURES += "read-only-rootfs ssh-server-openssh"
IMAGE_INSTALL = "packagegroup-core-boot \
                 avahi-daemon \
                 pinhole \
                 pinhole-appliance \
                 pinhole-cloudflared \
                 wpa-supplicant \
                 ${CORE_IMAGE_EXTRA_INSTALL} \
"
IMAGE_LINGUAS = ""

inherit core-image

# --- Raspberry Pi: meta-rauc-raspberrypi's A/B layout, unchanged (yocto/README.md) ----------
# p1 boot (FAT) | p2 rootfs A | p3 rootfs B | p4 extended: p5 /data (100 MB), p6 /home (grows).
# The override `rpi` is meta-raspberrypi's machine family, which oelint-adv does not know.
# nooelint: oelint.vars.specific
WKS_FILE:rpi = "sdimage-dual-raspberrypi.wks.in"
# Bundles take the ext4 root file system; the card image is the wic with its bmap.
# nooelint: oelint.vars.specific
IMAGE_FSTYPES:rpi = "wic.bz2 wic.bmap ext4"
# The kernel lives in each root slot (an update replaces it with the root file system);
# rpicam-vid for the Pi cameras; RAUC, the partition growing of meta-rauc-raspberrypi, and
# pinhole-ota's device half (health-gated commit of a new slot, ota/README.md).
# nooelint: oelint.vars.specific
IMAGE_INSTALL:append:rpi = " kernel-image kernel-modules libcamera-apps pinhole-ota rauc rauc-grow-data-part"
# A variable of meta-raspberrypi (rpi-bootfiles): no kernel on the FAT partition.
# nooelint: oelint.vars.specific oelint.vars.mispell.unknown
RPI_EXTRA_IMAGE_BOOT_FILES:remove:rpi = "${KERNEL_IMAGETYPE}"

# --- Jetson: meta-tegra's machine configuration already makes its flashing package
# (tegraflash-tar.zst). Its flash layout has no data partition from this layer, so the root file
# system stays writable there and /data is a directory on it (yocto/README.md). The override
# `tegra` is meta-tegra's SoC family, which oelint-adv does not know.
# nooelint: oelint.vars.specific
IMAGE_FEATURES:remove:tegra = "read-only-rootfs"
