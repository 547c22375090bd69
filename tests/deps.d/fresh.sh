# tests/e2e/test_fresh_build.py: a bare Debian root made by mmdebstrap and entered with
# systemd-nspawn; git lists the tree copied into it; the host's cargo vendors the crates.
if wants e2e; then
  local deb
  for deb in mmdebstrap systemd-container git; do
    deb_installed "$deb" || pkgs+=("$deb")
  done
fi
