# tests/deps.d/ota.sh — tests/e2e/test_ota.py and bench/ota: Debian's rauc (`rauc bundle`,
# `rauc info`; squashfs-tools with it), openssl for the keys, the OpenSSH client (pinhole-ota's
# transport, ssh-keygen), mkfs.ext4 for the slot and data images, losetup/mount, strip for the
# slot's pinhole, and the stand-in device's mmdebstrap + systemd-nspawn (rauc 1.8, sshd and the
# rest come into its root from the Debian mirror, not onto this machine).
if wants e2e; then
  for deb in rauc squashfs-tools openssl openssh-client e2fsprogs util-linux binutils \
             mmdebstrap systemd-container; do
    deb_installed "$deb" || pkgs+=("$deb")
  done
fi
