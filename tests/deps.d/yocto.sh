# tests/deps.d/yocto.sh — tests/e2e/test_yocto.py and test_firstboot.py (the SD-card image).
# test_yocto: kas (for its own JSON schema) and oelint-adv,
# pinned, from PyPI into their own venv tests/.cache/yocto-venv (oelint-adv's wheel installs a
# stray top-level `build` package, so it stays out of tests/.venv). Made with Debian's
# /usr/bin/python3 so that the unprivileged user bitbake runs as can use it too.
# With PINHOLE_YOCTO_LAYERS set (test_yocto's `bitbake -p` against local layer checkouts, see
# yocto/README.md), also bitbake's host packages and the en_US.UTF-8 locale its sanity check wants,
# and fakeroot (yocto/scripts/check-layer runs the recipes' do_install under it).
YOCTO_VENV="$ROOT/tests/.cache/yocto-venv"
YOCTO_PIP="kas==5.5 oelint-adv==9.11.2 oelint-data==1.5.26 oelint-parser==8.13.2"
if wants e2e; then
  # tests/e2e/test_firstboot.py (the image's first-boot import): strace injects the kills,
  # wpa_passphrase and ssh-keygen are the real peers for the Wi-Fi key and the SSH keys.
  have strace || pkgs+=(strace)
  have wpa_passphrase || pkgs+=(wpasupplicant)
  have ssh-keygen || pkgs+=(openssh-client)
  [[ -x /usr/bin/python3 ]] || pkgs+=(python3)
  /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || pkgs+=(python3-venv)
  if [[ -n "${PINHOLE_YOCTO_LAYERS:-}" ]]; then
    for deb in gawk wget git diffstat unzip texinfo gcc build-essential chrpath socat cpio \
               python3-pip python3-pexpect xz-utils debianutils iputils-ping python3-git \
               python3-jinja2 python3-subunit zstd liblz4-tool file locales libacl1 rpcsvc-proto lz4 \
               fakeroot; do
      deb_installed "$deb" || pkgs+=("$deb")
    done
  fi
fi

deps_after_yocto() {
  wants e2e || return 0
  if [[ "$(cat "$YOCTO_VENV/.requirements" 2>/dev/null)" != "$YOCTO_PIP" ]] \
      || ! "$YOCTO_VENV/bin/python" -c 'import kas, oelint_adv, jsonschema' >/dev/null 2>&1; then
    note "    pip install $YOCTO_PIP (into tests/.cache/yocto-venv)"
    rm -rf "$YOCTO_VENV"
    mkdir -p "$(dirname "$YOCTO_VENV")"
    /usr/bin/python3 -m venv "$YOCTO_VENV"
    # shellcheck disable=SC2086
    "$YOCTO_VENV/bin/python" -m pip install -q --disable-pip-version-check $YOCTO_PIP
    echo "$YOCTO_PIP" >"$YOCTO_VENV/.requirements"
  fi
  if [[ -n "${PINHOLE_YOCTO_LAYERS:-}" ]] && ! locale -a 2>/dev/null | grep -qi '^en_US\.utf-\?8$'; then
    note "    locale-gen en_US.UTF-8 (bitbake's sanity check)"
    sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' /etc/locale.gen
    grep -q '^en_US.UTF-8 UTF-8' /etc/locale.gen || echo 'en_US.UTF-8 UTF-8' >>/etc/locale.gen
    locale-gen >/dev/null
  fi
}
