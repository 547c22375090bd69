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
# CORE_IMAGE_BASE_INSTALL (core-image.bbclass) keeps packagegroup-base-extended, which carries the
# machine's MACHINE_EXTRA_RDEPENDS/RRECOMMENDS (packagegroup-machine-base): the Pi's Wi-Fi
# firmware and udev-rules-rpi (/dev/dma_heap for rpicam-vid as pinhole's dynamic user), the
# Jetson's Ethernet, Wi-Fi and camera modules. Assigning IMAGE_INSTALL without it drops them all
# (tests/e2e/test_yocto.py checks the image's build list for every machine's extra packages).
IMAGE_INSTALL = "${CORE_IMAGE_BASE_INSTALL} \
                 avahi-daemon \
                 pinhole \
                 pinhole-appliance \
                 pinhole-cloudflared \
                 wpa-supplicant \
"
IMAGE_LINGUAS = ""

inherit core-image

# --- Raspberry Pi: meta-rauc-raspberrypi's A/B layout with fixed-size slots (yocto/README.md) --
# p1 boot (FAT) | p2 rootfs A | p3 rootfs B | p4 extended: p5 /data (100 MB), p6 /home (grows).
# The override `rpi` is meta-raspberrypi's machine family, which oelint-adv does not know.
# nooelint: oelint.vars.specific
WKS_FILE:rpi = "pinhole-sdimage-dual-raspberrypi.wks.in"
# The slots are 1024 MiB each (files/wic/pinhole-sdimage-dual-raspberrypi.wks.in): a root file
# system larger than that (in KiB, with IMAGE_OVERHEAD_FACTOR and the extra space included) stops
# the build (image.bbclass), so every bundle built fits the slot it is installed into.
# nooelint: oelint.vars.specific
IMAGE_ROOTFS_MAXSIZE:rpi = "1048576"
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
