# pinhole's own boot script (files/boot.cmd.in: meta-rauc-raspberrypi's A/B protocol, plus a
# reset when a slot cannot start, panic=5, and the environment saved before every boot). This
# layer's priority (10) is above meta-rauc-raspberrypi's (6), so this directory comes first in
# FILESPATH and its boot.cmd.in is the one rpi-u-boot-scr reads (tests/e2e/test_yocto.py checks
# it on the parsed stack). The QEMU twin (board/sd_twin.py) boots this same file. For the pinhole
# distro only, as the other appends of this layer.
FILESEXTRAPATHS:prepend:pinhole-os := "${THISDIR}/files:"
