"""pinhole under a real systemd: the units in systemd/, checked offline and then booted.

* `systemd-analyze verify` on every unit (in a scratch root holding the host's systemd units, the
  real pinhole binary, and a stand-in /usr/bin/cloudflared: Debian does not package cloudflared,
  and verify only checks that ExecStart= is executable), warnings included; the Avahi service
  file against Avahi's own DTD (from the Debian root below).
* `systemd-analyze security --offline=true`: pinhole.service (and cloudflared.service) expose
  at most 2.0.
* The real thing: a minimal Debian bookworm root made by mmdebstrap (cached in
  tests/.cache/rootfs, ~35 s cold), with pinhole, its units, its config and the Avahi file
  installed as on a device and enabled with `systemctl --root enable`, booted with
  `systemd-nspawn -b --register=no --keep-unit` (the host has no systemd; the container shares
  the host's network, so the test reaches pinhole on a free 127.0.0.1 port, and runs
  `systemctl`/`journalctl` inside through nsenter). It shows:
  - the service becomes active only through sd_notify READY (Type=notify), with a STATUS line;
  - it serves /api/video/cmaf (an init segment and fragments that parse) under its hardening:
    a dynamic non-root user, no capabilities, no_new_privs, a seccomp filter;
  - boot-complete.target requires it and can be reached; cloudflared.service without a token
    file is skipped by its condition, not failed; avahi-daemon loads the service file;
  - with the `test-hooks` binary (`cargo build -p pinhole --features test-hooks`, copied to
    target/debug/pinhole-test-hooks by tests/run's build step) and
    PINHOLE_DEBUG_WEDGE_AFTER_S=3, the pipeline lock is taken for good: pinhole stops feeding
    the watchdog, systemd logs a watchdog timeout and restarts it (NRestarts + 1, a new
    MainPID), and the new process becomes ready again.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cmaf import CmafClient, parse_stream
from conftest import REPO, free_port, pinhole_bin, require_tool
from debian_root import mmdebstrap_root, run

UNITS = REPO / "systemd"
PACKAGES = ["systemd", "systemd-sysv", "dbus", "avahi-daemon"]
MAX_EXPOSURE = 2.0
WATCHDOG_S = 10


def hooks_bin() -> Path:
    path = Path(os.environ.get("PINHOLE_TEST_HOOKS_BIN")
                or REPO / "target" / "debug" / "pinhole-test-hooks")
    if not path.is_file():
        pytest.fail(f"{path} is missing: build it with `cargo build -p pinhole --features test-hooks "
                    f"&& cp target/debug/pinhole {path}` (tests/run's build step does)")
    return path


# ---------------------------------------------------------------- offline checks


def verify_root(tmp: Path) -> Path:
    root = tmp / "verify-root"
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy2(pinhole_bin(), root / "usr/bin/pinhole")
    stand_in = root / "usr/bin/cloudflared"
    stand_in.write_text("#!/bin/sh\n# stand-in: verify only checks that ExecStart= is executable\n")
    stand_in.chmod(0o755)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in ("pinhole.service", "cloudflared.service"):
        shutil.copy2(UNITS / unit, units / unit)
    return root


def test_every_unit_passes_systemd_analyze_verify_without_a_warning(tmp_path):
    require_tool("systemd-analyze")
    root = verify_root(tmp_path)
    for unit in ("pinhole.service", "cloudflared.service"):
        p = run(["systemd-analyze", "verify", "--man=no", f"--root={root}", unit], check=False)
        said = (p.stdout + p.stderr).strip()
        assert p.returncode == 0 and not said, f"systemd-analyze verify {unit}: exit {p.returncode}\n{said}"
    # Board drop-ins (board/*/pinhole.service.d/*.conf) on top of the unit.
    for dropin in sorted((REPO / "board").glob("*/pinhole.service.d/*.conf")):
        d = root / "etc/systemd/system/pinhole.service.d"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        shutil.copy2(dropin, d / dropin.name)
        p = run(["systemd-analyze", "verify", "--man=no", f"--root={root}", "pinhole.service"], check=False)
        said = (p.stdout + p.stderr).strip()
        assert p.returncode == 0 and not said, f"verify with {dropin}: exit {p.returncode}\n{said}"


def exposure(unit: Path) -> float:
    p = run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)], check=False)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", p.stdout + p.stderr)
    assert m, f"no exposure level in systemd-analyze security output:\n{p.stdout}\n{p.stderr}"
    return float(m.group(1))


def test_services_expose_at_most_2_0_to_systemd_analyze_security():
    require_tool("systemd-analyze")
    for unit in ("pinhole.service", "cloudflared.service"):
        level = exposure(UNITS / unit)
        print(f"{unit}: exposure {level}")
        assert level <= MAX_EXPOSURE, f"{unit}: exposure {level} > {MAX_EXPOSURE}"


def test_the_units_keep_the_appliance_promises():
    """What the issue asks of the unit files, read from them (systemd-analyze shows the rest)."""
    text = (UNITS / "pinhole.service").read_text()
    settings = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            settings.setdefault(k.strip(), []).append(v.strip())
    assert settings["Type"] == ["notify"] and settings["NotifyAccess"] == ["main"]
    assert settings["WatchdogSec"] == [f"{WATCHDOG_S}s"]
    assert settings["Restart"] == ["always"]
    assert settings["DevicePolicy"] == ["closed"]
    assert sorted(settings["DeviceAllow"]) == ["char-dma_heap rw", "char-media rw", "char-video4linux rw"]
    assert not any("*" in d for d in settings["DeviceAllow"]), "globs do not work in DeviceAllow="
    assert settings["CapabilityBoundingSet"] == [""]
    assert settings["SystemCallFilter"][0] == "@system-service"
    assert "boot-complete.target" in settings["RequiredBy"][0]
    assert "boot-complete.target" in settings["Before"][0]
    cf = (UNITS / "cloudflared.service").read_text()
    assert "--token-file %d/tunnel-token" in cf and "--no-autoupdate" in cf
    assert re.search(r"^LoadCredential=tunnel-token:/data/pinhole/cloudflared/token$", cf, re.M)
    assert "--token " not in cf, "the tunnel token must never be on the command line"


# ---------------------------------------------------------------- the Debian root


@functools.lru_cache(maxsize=None)
def library_packages(binary: Path) -> tuple[str, ...]:
    """The Debian packages holding the shared libraries `binary` links (libc6, libv4l-0, ...),
    so the root has what the host build needs, whatever features it was built with."""
    out = run(["ldd", str(binary)]).stdout
    paths = {os.path.realpath(m.group(1)) for m in re.finditer(r"=> (/\S+)", out)}
    owners: dict[str, str] = {}
    # One dpkg -S for all (it is slow per call); merged /usr: dpkg may know a file under /lib.
    for candidates in (sorted(paths), sorted(p.replace("/usr/lib/", "/lib/", 1) for p in paths)):
        p = run(["dpkg", "-S", *candidates], check=False)
        for line in p.stdout.splitlines():
            pkg, _, path = line.partition(": ")
            owners[path.replace("/lib/", "/usr/lib/", 1) if path.startswith("/lib/") else path] = \
                pkg.split(":")[0].split(",")[0].strip()
    missing = sorted(paths - owners.keys())
    assert not missing, f"{binary} links {missing}, which no Debian package owns"
    return tuple(sorted(set(owners[p] for p in paths)))


def rootfs() -> Path:
    """A pristine bookworm root with systemd and the binary's libraries, cached by package list
    (made once, ~35 s)."""
    packages = set(PACKAGES) | set(library_packages(Path(pinhole_bin()))) | set(library_packages(hooks_bin()))
    return mmdebstrap_root(sorted(packages), marker="usr/lib/systemd/systemd")


def test_the_avahi_service_file_is_valid_against_avahis_dtd():
    require_tool("xmllint")
    dtd = rootfs() / "usr/share/avahi/avahi-service.dtd"
    p = run(["xmllint", "--noout", "--dtdvalid", str(dtd), str(UNITS / "pinhole.avahi.service")],
            check=False)
    assert p.returncode == 0, f"pinhole.avahi.service is not valid for avahi:\n{p.stderr}"
    text = (UNITS / "pinhole.avahi.service").read_text()
    assert "<type>_http._tcp</type>" in text and "<port>80</port>" in text


# ---------------------------------------------------------------- booted


class Container:
    """A booted systemd-nspawn container over a scratch copy of the cached root."""

    def __init__(self, root: Path, log: Path):
        self.root = root
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.leader = 0

    def boot(self) -> None:
        require_tool("systemd-nspawn")
        require_tool("nsenter")
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "-D", str(self.root), "-b", "--register=no", "--keep-unit",
             "--console=read-only", f"--machine=pinhole-test-{os.getpid()}"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited {self.proc.returncode}:\n{self.console()}")
            kids = []
            for task in Path(f"/proc/{self.proc.pid}/task").glob("*/children"):
                try:
                    kids += task.read_text().split()
                except OSError:
                    pass
            if kids:
                self.leader = int(kids[0])
                if self.sh(["systemctl", "is-system-running"], check=False).stdout.strip() in (
                        "running", "degraded", "starting"):
                    return
            time.sleep(0.2)
        raise AssertionError(f"the container did not come up in 20 s:\n{self.console()}")

    def sh(self, cmd: list[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return run(["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-p", "--", *cmd],
                   check=check, timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(["systemctl", "show", unit, "-p", ",".join(props)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> str:
        return self.sh(["journalctl", "--no-pager", "-o", "short-monotonic", "-u", unit], check=False).stdout

    def console(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def wait_for(self, what: str, cond, timeout: float) -> float:
        t0 = time.time()
        last = None
        while time.time() - t0 < timeout:
            ok, last = cond()
            if ok:
                return time.time() - t0
            time.sleep(0.1)
        raise AssertionError(f"{what}: not within {timeout} s; last seen {last}\n"
                             f"--- journal of pinhole.service:\n{self.journal('pinhole.service')[-4000:]}")

    def poweroff(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to power off
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def install(root: Path, binary: Path, port: int) -> None:
    """Lays pinhole out as a device image would, and enables it like `systemctl enable`."""
    shutil.copy2(binary, root / "usr/bin/pinhole")
    for unit in ("pinhole.service", "cloudflared.service"):
        shutil.copy2(UNITS / unit, root / "etc/systemd/system" / unit)
    shutil.copy2(UNITS / "pinhole.avahi.service", root / "etc/avahi/services/pinhole.service")
    (root / "etc/pinhole").mkdir(parents=True, exist_ok=True)
    (root / "etc/pinhole/pinhole.toml").write_text(
        "# nspawn test: the built-in test source, small and cheap\n"
        'source = "testsrc?size=320x240&fps=15&gop=15"\n'
        f'listen = ["127.0.0.1:{port}"]\n')
    run(["systemctl", f"--root={root}", "enable", "pinhole.service", "cloudflared.service"])
    # A quiet container: no login prompt, no apt timers.
    for unit in ("console-getty.service", "apt-daily.timer", "apt-daily-upgrade.timer"):
        run(["systemctl", f"--root={root}", "mask", unit], check=False)


@pytest.fixture
def container(tmp_path):
    base = rootfs()
    work = tmp_path / "root"
    t0 = time.time()
    run(["cp", "-a", "--reflink=auto", str(base), str(work)], timeout=120)
    print(f"scratch copy of the root: {time.time() - t0:.1f} s")
    c = Container(work, tmp_path / "console.log")
    yield c
    c.poweroff()
    shutil.rmtree(work, ignore_errors=True)


def active(c: Container):
    s = c.show("pinhole.service", "ActiveState", "SubState", "MainPID", "NRestarts", "StatusText")
    return s.get("ActiveState") == "active", s


def test_pinhole_boots_under_systemd_becomes_ready_serves_hardened_and_the_watchdog_restarts_a_wedge(container):
    port = free_port()
    install(container.root, Path(pinhole_bin()), port)
    t0 = time.time()
    container.boot()
    t_boot = time.time() - t0

    # Ready only through sd_notify: Type=notify stays "activating" until READY=1.
    t_ready = container.wait_for("pinhole.service active (READY=1)", lambda: active(container), 30)
    s = container.show("pinhole.service", "MainPID", "StatusText", "WatchdogUSec", "NRestarts",
                       "Result", "NotifyAccess", "Type")
    print(f"boot {t_boot:.1f} s, pinhole ready {t_ready:.1f} s later; {s}")
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert s["WatchdogUSec"] == f"{WATCHDOG_S}s", s
    assert s["StatusText"].startswith("streaming"), f"STATUS= line: {s['StatusText']!r}"

    # The stream, from the host (the container shares its network).
    client = CmafClient(port, timeout=10)
    try:
        client.check_headers()
        records = client.read_for(2.0)
    finally:
        client.close()
    st = parse_stream(records)
    assert st.init.codec.startswith("avc1.") and st.init.width == 320, st.init
    assert len(st.fragments) >= 10, f"{len(st.fragments)} fragments in 2 s"

    # Under its hardening: read from the kernel, not from the unit file.
    pid = s["MainPID"]
    status = container.sh(["cat", f"/proc/{pid}/status"]).stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    uid = int(fields["Uid"].split()[0])
    assert uid != 0, "pinhole runs as root"
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0, status
    assert fields["NoNewPrivs"].strip() == "1", status
    assert fields["Seccomp"].strip() == "2", "no seccomp filter"
    groups = container.sh(["getent", "group", "video"]).stdout.split(":")[2]
    assert groups in fields["Groups"].split(), f"not in the video group ({groups}): {fields['Groups']}"

    # boot-complete.target requires pinhole (A/B commit) and is reachable now.
    req = container.root / "etc/systemd/system/boot-complete.target.requires/pinhole.service"
    assert req.is_symlink(), "systemctl enable did not add pinhole to boot-complete.target"
    container.sh(["systemctl", "start", "boot-complete.target"])
    assert container.show("boot-complete.target", "ActiveState")["ActiveState"] == "active"

    # cloudflared without a token: skipped by its condition, not failed.
    cf = container.show("cloudflared.service", "ActiveState", "ConditionResult", "Result")
    assert cf["ActiveState"] == "inactive" and cf["ConditionResult"] == "no", cf

    # Avahi loaded the service file (its chroot shows /etc/avahi as /).
    avahi = container.journal("avahi-daemon.service")
    assert re.search(r"Loading service file .*services/pinhole\.service", avahi), avahi[-2000:]
    assert not re.search(r"(?i)(fail|error).*pinhole\.service", avahi), avahi[-2000:]

    # The wedge: the test-hooks binary takes the pipeline lock for good 3 s after its first
    # fragment. Swapped in as an update would, with the knob in a drop-in.
    staged = container.root / "usr/bin/.pinhole.new"
    shutil.copy2(hooks_bin(), staged)
    staged.replace(container.root / "usr/bin/pinhole")  # as dpkg does: the old one is running
    dropin = container.root / "etc/systemd/system/pinhole.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "wedge.conf").write_text("[Service]\nEnvironment=PINHOLE_DEBUG_WEDGE_AFTER_S=3\nLimitCORE=0\n")
    container.sh(["systemctl", "daemon-reload"])
    container.sh(["systemctl", "restart", "pinhole.service"])
    container.wait_for("the test-hooks pinhole active", lambda: active(container), 30)
    before = container.show("pinhole.service", "MainPID", "NRestarts")
    t_wedge = time.time()

    def restarted():
        s = container.show("pinhole.service", "ActiveState", "MainPID", "NRestarts", "StatusText")
        ok = (int(s["NRestarts"]) > int(before["NRestarts"]) and s["MainPID"] not in ("0", before["MainPID"])
              and s["ActiveState"] == "active")
        return ok, s

    took = container.wait_for("a watchdog restart", restarted, 3 + 2 + WATCHDOG_S + 2 + 20)
    journal = container.journal("pinhole.service")
    print(f"wedged 3 s after ready; restarted and ready again {took:.1f} s after ready")
    assert re.search(r"pinhole\.service: Watchdog timeout", journal), journal[-3000:]
    assert "frame path wedged" in journal, journal[-3000:]
    assert took >= 3 + WATCHDOG_S - 1, f"restarted after {took:.1f} s: not by the watchdog's clock"
    print(f"wall time since the start of the boot: {time.time() - t0:.1f} s (wedge phase {time.time() - t_wedge:.1f} s)")
