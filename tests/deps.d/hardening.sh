# tests/e2e/test_hardening.py (issue 22): nginx as the real reverse proxy in front of pinhole
# for `[lan] trusted_proxies` (X-Forwarded-For); Debian's nginx-light is enough (run as an
# unprivileged foreground process with its own config and prefix in the test's tmp dir).
if wants e2e; then
  deb_installed nginx-light || have nginx || pkgs+=(nginx-light)
fi
