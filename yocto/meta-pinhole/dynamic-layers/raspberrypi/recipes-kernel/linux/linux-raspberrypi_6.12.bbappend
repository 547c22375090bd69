# The kernel the pinhole Raspberry Pi images boot through U-Boot (RPI_USE_U_BOOT): 6.12.41, the
# last linux-raspberrypi 6.12 of meta-raspberrypi before its commit 6f4c1d3 ("Upgrade to
# 6.12.58"). From that kernel on (and with 6.18, the layer's default for raspberrypi4-64 and
# raspberrypi5 at the commit of kas/base.lock.yml) U-Boot hangs on the 64-bit Pi 4 and the Pi 5:
# agherzan/meta-raspberrypi issue 1562, open, bisected there to raspberrypi/linux e165d4f5 (a
# device-tree change U-Boot reads from the firmware). The version is chosen in
# conf/distro/pinhole-os.conf (PREFERRED_VERSION_linux-raspberrypi); yocto/README.md says what
# this pin costs and when to drop it.
LINUX_VERSION:pinhole-os = "6.12.41"
# The kernel's and yocto-kernel-cache's commits of that release (names of the recipe's SRC_URI,
# whose SRCREV_<name> oelint-adv does not know).
# nooelint: oelint.vars.mispell.unknown
SRCREV_machine:pinhole-os = "11d5d0d30abe08fddc8a0e856d0e333ca6e22114"
# The yocto-kernel-cache commit of 6.12.41 (see above).
# nooelint: oelint.vars.mispell.unknown
SRCREV_meta:pinhole-os = "57f788e849d9b04dd6aa28b896546c56b45f69e7"
