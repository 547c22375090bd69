# tests/deps.d/twin.sh — tests/e2e/test_twin.py, the SD card's twin (board/sd_twin.py: its
# HOST_PACKAGES and HOST_LIBRARIES, which it also installs itself when run alone): QEMU for arm64
# and qemu-user (mmdebstrap's arm64 root; binfmt_misc is registered by deps.d/release.sh), U-Boot's
# build (cross gcc, bison, flex, bc, dtc, libssl/gnutls, pyelftools, setuptools, swig, uuid) and
# mkimage, RAUC's (meson, ninja, pkgconf, glib, libssl), the card (dosfstools, mtools, fdisk,
# e2fsprogs, squashfs-tools, cpio, kmod) and libubootenv's fw_printenv for reading a card's
# environment here.
if wants e2e; then
  for deb in qemu-system-arm qemu-user-static arch-test mmdebstrap u-boot-tools gcc-aarch64-linux-gnu \
             bison flex bc device-tree-compiler meson ninja-build pkgconf dosfstools mtools fdisk \
             squashfs-tools e2fsprogs cpio kmod openssl openssh-client libubootenv-tool libssl-dev \
             libgnutls28-dev python3-setuptools python3-pyelftools uuid-dev libglib2.0-dev swig python3-dev; do
    deb_installed "$deb" || pkgs+=("$deb")
  done
fi
