"""Over-the-air updates end to end: `ota/pinhole-ota` against a stand-in camera (ota_device.py:
a Debian root with Debian's rauc 1.8, sshd and pinhole, booted with systemd-nspawn from two
file-backed root slots, U-Boot's boot counting emulated — the module's docstring says exactly what
is real and what is emulated).

Bundles are made here with `rauc bundle` (plain format: this machine has no device-mapper, so no
verity bundles) from small ext4 root images, signed with openssl-made keys. The tests run in
order on one device (each starts from the state the previous one left, as a camera would):

- a good bundle installs into the other slot, the camera reboots into it, the slot is marked
  good after boot-complete.target, and pinhole-ota says so (exit 0); running it again is "up to
  date" (exit 0) and changes nothing;
- a bundle signed with another key, a corrupted one, one for another board, a truncated one:
  refused before the upload (exit 3) with what is wrong, nothing sent;
- an upload cut in the middle (the ssh carrying it killed): exit 5 saying run again; the next
  run resumes at the byte where it stopped and completes;
- a new slot whose pinhole never becomes ready: the trial deadline marks it bad, the camera
  reboots into the old slot, and pinhole-ota says ROLLED BACK, which slot, and why (exit 6);
- pinhole-ota killed (SIGKILL to its process group, ssh included) at each stage — device,
  check, upload, install, reboot, wait: the camera runs a good slot with /data intact each time,
  and the next run finishes the update (or finds it done).

After every case: the camera answers over SSH, its booted slot is marked good, pinhole answers
/api/status, and /data (the configuration and a marker file) is untouched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, free_port, pinhole_bin, require_tool
from ota_device import BOOT_TRIES, Device, make_bundle, make_image, make_keys, read_env, slot_tree

TOOL = REPO / "ota" / "pinhole-ota"
SLOT_MB = 40
DATA_MB = 256


class Ota:
    """The stand-in camera and everything the tests make for it."""

    def __init__(self, work: Path, slot_mb: int = SLOT_MB, data_mb: int = DATA_MB):
        self.work = work
        self.slot_mb, self.data_mb = slot_mb, data_mb
        self.ssh_port, self.http_port = free_port(), free_port()
        self.keys = work / "keys"
        self.key, self.cert = make_keys(self.keys, "dev")
        self.other_key, self.other_cert = make_keys(self.keys, "other")
        # The binary the slots carry, stripped (the release build keeps symbols).
        self.binary = work / "pinhole"
        shutil.copy2(pinhole_bin(), self.binary)
        subprocess.run(["strip", str(self.binary)], capture_output=True)
        # The owner's SSH key and a client configuration for the stand-in.
        require_tool("ssh-keygen")
        self.id = work / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.id)], check=True)
        self.ssh_config = work / "ssh_config"
        self.ssh_config.write_text(f"""Host *
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  IdentityFile {self.id}
  IdentitiesOnly yes
""")
        self.address = f"ssh://root@127.0.0.1:{self.ssh_port}"
        self.device = Device(work / "device", self.ssh_port, self.http_port)
        self.versions = 1
        self.bundles: dict[tuple, Path] = {}

    def image(self, version: str, **kw) -> Path:
        tree = self.work / f"tree-{version}"
        shutil.rmtree(tree, ignore_errors=True)
        slot_tree(tree, version=version, binary=self.binary, keyring=self.cert, ssh_port=self.ssh_port, **kw)
        img = make_image(tree, self.work / f"rootfs-{version}.ext4", self.slot_mb)
        shutil.rmtree(tree, ignore_errors=True)
        return img

    def bundle(self, version: str, *, key=None, cert=None, compatible=None, broken=False, filler_mb=0) -> Path:
        k = (version, key, compatible, broken, filler_mb)
        if k not in self.bundles:
            kw = {"broken": broken, "filler_mb": filler_mb}
            if compatible:
                kw["compatible"] = compatible
            img = self.image(version, **kw)
            extra = {"compatible": compatible} if compatible else {}
            self.bundles[k] = make_bundle(self.work, img, self.work / f"{version}-{len(self.bundles)}.raucb",
                                          version=version, key=key or self.key, cert=cert or self.cert, **extra)
            img.unlink()
        return self.bundles[k]

    def next_version(self) -> str:
        self.versions += 1
        return f"{self.versions}.0"

    def boot_factory_image(self) -> None:
        img = self.image("1.0")
        self.device.flash(img, self.slot_mb, self.data_mb)
        data = self.device.data
        (data / "ssh").mkdir(mode=0o700)
        shutil.copy2(self.id.with_suffix(".pub"), data / "ssh/authorized_keys")
        (data / "ssh/authorized_keys").chmod(0o600)
        (data / "pinhole").mkdir(mode=0o755)
        (data / "pinhole/pinhole.toml").write_text(
            "# the camera's configuration on /data: kept across updates\n"
            'source = "testsrc?size=320x240&fps=15&gop=15"\n'
            f'listen = ["127.0.0.1:{self.http_port}"]\n')
        (data / "pinhole/pinhole.toml").chmod(0o644)
        (data / "rauc").mkdir()
        self.marker = os.urandom(16).hex()
        (data / "owner-marker").write_text(self.marker)
        self.data_before = self.data_snapshot()
        self.device.start()

    def data_snapshot(self) -> dict[str, str]:
        d = self.device.data
        return {p: (d / p).read_text() for p in ("pinhole/pinhole.toml", "owner-marker", "ssh/authorized_keys")}

    # -- running the tool
    def cmd(self, bundle: Path, *extra: str) -> list[str]:
        return ["python3", str(TOOL), "-F", str(self.ssh_config), "--http-port", str(self.http_port),
                "--timeout", "120", *extra, str(bundle), self.address]

    def ota(self, bundle: Path, *extra: str, timeout: float = 200) -> subprocess.CompletedProcess:
        t0 = time.time()
        p = subprocess.run(self.cmd(bundle, *extra), capture_output=True, text=True, timeout=timeout)
        print(f"--- pinhole-ota {bundle.name} {' '.join(extra)}: exit {p.returncode} in {time.time() - t0:.1f} s\n"
              f"{p.stdout}{p.stderr}")
        return p

    # -- what the camera looks like
    def status(self) -> tuple[int, dict | None]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/api/status", timeout=3) as r:
                return r.status, json.loads(r.read())
        except (OSError, ValueError):
            return 0, None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=3) as r:
            return r.read().decode()

    def device_report(self, cond, timeout: float = 20) -> dict:
        """`"device"` of /api/status once `cond` holds for it."""
        t0, last = time.time(), None
        while time.time() - t0 < timeout:
            _, st = self.status()
            last = (st or {}).get("device")
            if last and cond(last):
                return last
            time.sleep(0.5)
        raise AssertionError(f'/api/status "device" not as expected within {timeout} s: {last}')

    def healthy(self, timeout: float = 90) -> dict[str, str]:
        """Waits until the camera is settled on a good slot and returns what it reports: the
        booted slot marked good by rauc, pinhole answering, /data untouched."""
        t0 = time.time()
        last = None
        while time.time() - t0 < timeout:
            if self.device.error:
                raise AssertionError(f"the stand-in device failed: {self.device.error}")
            if self.device.up.is_set():
                try:
                    st = self.device.sh(["rauc", "status", "--output-format=json"], check=False, timeout=10)
                    env = self.device.sh(["sh", "-c", "cat /run/pinhole-ota/device.env; test -e "
                                          "/run/pinhole-ota/rebooting && echo REBOOTING=yes"],
                                         check=False, timeout=10).stdout
                    commit = self.device.sh(["systemctl", "is-active", "pinhole-ota-commit.service"],
                                            check=False, timeout=10).stdout.strip()
                except (subprocess.TimeoutExpired, AssertionError) as e:
                    last = str(e)
                    time.sleep(0.5)
                    continue
                try:
                    rauc = json.loads(st.stdout)
                except ValueError:
                    rauc = {}
                booted = rauc.get("booted")
                state = {n: d for e in rauc.get("slots", []) for n, d in e.items()}
                good = any(d.get("bootname") == booted and d.get("boot_status") == "good" for d in state.values())
                code, _ = self.status()
                last = f"booted {booted}, good {good}, commit {commit}, /api/status {code}, env {env!r}"
                info = {k: v.strip("'") for k, v in (line.split("=", 1) for line in env.splitlines() if "=" in line)}
                if (booted and good and commit == "active" and code == 200 and info.get("TRIAL") == "no"
                        and "REBOOTING" not in info):
                    assert self.data_snapshot() == self.data_before, "/data changed"
                    return info
            time.sleep(0.5)
        raise AssertionError(f"the camera did not settle on a good slot within {timeout} s: {last}\n"
                             f"{self.device.console()[-3000:]}")


@pytest.fixture(scope="module")
def ota(tmp_path_factory):
    for tool in ("rauc", "mmdebstrap", "systemd-nspawn", "ssh", "mkfs.ext4", "losetup", "strip"):
        require_tool(tool)
    work = tmp_path_factory.mktemp("ota")
    o = Ota(work)
    t0 = time.time()
    o.boot_factory_image()
    first = o.healthy(timeout=120)
    print(f"factory image 1.0 booted and settled in {time.time() - t0:.1f} s: {first}")
    assert first["SLOT"] == "A" and first["VERSION"] == "1.0", first
    yield o
    o.device.stop()
    shutil.rmtree(work / "device", ignore_errors=True)


def other(slot: str) -> str:
    return {"A": "B", "B": "A"}[slot]


def test_help_documents_the_stages_and_every_exit_code():
    p = subprocess.run(["python3", str(TOOL), "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0
    for word in ("device", "check", "upload", "install", "reboot", "wait", "--cloudflared", "--timeout",
                 "--limit-rate", "resume"):
        assert word in p.stdout, f"--help does not mention {word}"
    for code in ("0", "2", "3", "4", "5", "6", "7", "130"):
        assert re.search(rf"^\s+{code}\s+\S", p.stdout, re.M), f"exit code {code} undocumented"
    p = subprocess.run(["python3", str(TOOL), "only-one-arg"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "needs BUNDLE and DEVICE" in p.stderr
    p = subprocess.run(["python3", str(TOOL), "/nonexistent.raucb", "root@127.0.0.1"], capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 2 and "no bundle at /nonexistent.raucb" in p.stderr, p.stderr


def test_an_unreachable_camera_is_exit_4_and_says_so(tmp_path):
    bundle = tmp_path / "any.raucb"
    bundle.write_bytes(b"not even a bundle")
    port = free_port()  # nothing listens there
    p = subprocess.run(["python3", str(TOOL), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                        str(bundle), f"ssh://root@127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 4, p.stdout + p.stderr
    assert f"cannot reach ssh://root@127.0.0.1:{port} over SSH" in p.stderr and "refused" in p.stderr, p.stderr


def test_a_good_bundle_installs_into_the_other_slot_and_is_reported(ota):
    before = ota.healthy()
    v = ota.next_version()
    b = ota.bundle(v)
    t0 = time.time()
    p = ota.ota(b)
    took = time.time() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    target = other(before["SLOT"])
    assert re.search(rf"updated: the camera runs {re.escape(v)} on slot {target} \(marked good\)", p.stdout), p.stdout
    for s in ("device", "check", "upload", "install", "reboot", "wait"):
        assert f"==> {s}:" in p.stdout
    after = ota.healthy()
    assert after["SLOT"] == target and after["VERSION"] == v, after
    assert after["LAST_UPDATE_RESULT"] == "ok" and after["LAST_UPDATE_FROM_VERSION"] == before["VERSION"], after
    assert ota.device.boots[-1] == target
    env = read_env(ota.device.env)
    assert env["BOOT_ORDER"].split()[0] == target and env[f"BOOT_{target}_LEFT"] == "3", env
    # boot-complete.target waited for the tunnel's unit, which no token skips (not fails).
    cf = ota.device.sh(["systemctl", "show", "cloudflared.service", "-p", "ConditionResult,ActiveState"]).stdout
    assert "ConditionResult=no" in cf and "ActiveState=inactive" in cf, cf
    # pinhole's own report (firmware/pinhole/src/appliance/update.rs): read from device.env, which
    # the commit rewrote after pinhole started, so within its 5 s refresh.
    dev = ota.device_report(lambda d: (d.get("last_update") or "").startswith("updated from"))
    assert dev["version"] == v and dev["slot"] == target, dev
    assert dev["last_update"].startswith(f"updated from {before['VERSION']} to {v} ("), dev
    metrics = ota.metrics()
    assert f'pinhole_device_info{{version="{v}",slot="{target}"}} 1' in metrics, metrics
    assert 'pinhole_device_last_update{result="ok"} 1' in metrics and "pinhole_device_trial_boot 0" in metrics
    print(f"good update {before['VERSION']} ({before['SLOT']}) -> {v} ({target}): {took:.1f} s")

    # Again: harmless, nothing happens.
    boots = len(ota.device.boots)
    p = ota.ota(b)
    assert p.returncode == 0 and "up to date" in p.stdout, p.stdout + p.stderr
    assert "==> upload" not in p.stdout and len(ota.device.boots) == boots


@pytest.mark.parametrize("case", ["another key", "corrupted", "another board", "truncated"])
def test_bad_bundles_are_refused_before_the_upload(ota, case):
    before = ota.healthy()
    v = f"{before['VERSION']}-bad"
    if case == "another key":
        b = ota.bundle(v, key=ota.other_key, cert=ota.other_cert)
        expect = "signed with a key the camera does not trust"
    elif case == "corrupted":
        good = ota.bundle(v)
        b = ota.work / "corrupted.raucb"
        shutil.copy2(good, b)
        with open(b, "r+b") as f:  # some bytes in the middle of the payload
            f.seek(os.path.getsize(b) // 2)
            f.write(os.urandom(64))
        expect = "changed or damaged after signing"
    elif case == "another board":
        b = ota.bundle(v, compatible="pinhole-raspberrypi5")
        expect = f"it is for 'pinhole-raspberrypi5', this camera is 'pinhole-nspawn'"
    else:
        good = ota.bundle(v)
        b = ota.work / "truncated.raucb"
        with open(good, "rb") as src, open(b, "wb") as dst:
            dst.write(src.read(os.path.getsize(good) // 3))
        expect = "bundle refused"
    listing = sorted(os.listdir(ota.device.data / "ota")) if (ota.device.data / "ota").exists() else []
    p = ota.ota(b)
    assert p.returncode == 3, p.stdout + p.stderr
    assert "bundle refused" in p.stderr and expect in p.stderr, p.stderr
    assert "==> upload" not in p.stdout, "the bundle was uploaded"
    now = sorted(os.listdir(ota.device.data / "ota")) if (ota.device.data / "ota").exists() else []
    assert now == listing, f"/data/ota changed: {listing} -> {now}"
    after = ota.healthy()
    assert after["SLOT"] == before["SLOT"] and after["VERSION"] == before["VERSION"]


def without_rauc(tmp: Path) -> dict[str, str]:
    """An environment whose PATH has what pinhole-ota may use but rauc (an owner's laptop)."""
    bin_dir = tmp / "bin-no-rauc"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("ssh", "openssl", "python3"):
        # The interpreter itself, not a wrapper script that needs more of PATH (pyenv's shims).
        src = os.path.realpath(sys.executable) if tool == "python3" else shutil.which(tool)
        assert src, tool
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(src)
    return dict(os.environ, PATH=str(bin_dir))


def test_verity_bundles_are_checked_here_with_rauc_or_with_openssl_alone(ota, tmp_path):
    """The image's format: the signed manifest carries the dm-verity root hash, and pinhole-ota
    hashes the payload against it before uploading (the stand-in cannot install verity bundles:
    no device-mapper here, so --check-only)."""
    before = ota.healthy()
    tree = tmp_path / "tree"
    slot_tree(tree, version="9.0", binary=ota.binary, keyring=ota.cert, ssh_port=ota.ssh_port, filler_mb=2)
    img = make_image(tree, tmp_path / "rootfs.ext4", ota.slot_mb)
    good = make_bundle(tmp_path, img, tmp_path / "verity.raucb", version="9.0", key=ota.key, cert=ota.cert,
                       fmt="verity")
    bad = tmp_path / "verity-damaged.raucb"
    shutil.copy2(good, bad)
    with open(bad, "r+b") as f:
        f.seek(1 << 20)  # inside the squashfs, far from the hash tree and the signature
        byte = f.read(1)
        f.seek(1 << 20)
        f.write(bytes([byte[0] ^ 0xFF]))
    other = make_bundle(tmp_path, img, tmp_path / "verity-other.raucb", version="9.0", key=ota.other_key,
                        cert=ota.other_cert, fmt="verity")
    for env, how in ((None, "with rauc"), (without_rauc(tmp_path), "openssl only")):
        p = subprocess.run(ota.cmd(good, "--check-only"), capture_output=True, text=True, timeout=120, env=env)
        print(f"--- {how}, good:\n{p.stdout}{p.stderr}")
        assert p.returncode == 0, p.stdout + p.stderr
        assert "verity payload matches the signed root hash" in p.stdout and "nothing sent" in p.stdout
        p = subprocess.run(ota.cmd(bad), capture_output=True, text=True, timeout=120, env=env)
        print(f"--- {how}, damaged:\n{p.stdout}{p.stderr}")
        assert p.returncode == 3 and "does not match the signed verity root hash" in p.stderr, p.stdout + p.stderr
        assert "changed or damaged after signing" in p.stderr and "==> upload" not in p.stdout
        p = subprocess.run(ota.cmd(other), capture_output=True, text=True, timeout=120, env=env)
        assert p.returncode == 3 and "signed with a key the camera does not trust" in p.stderr, p.stdout + p.stderr
    # A plain bundle without rauc: openssl checks the detached signature over the whole payload.
    env = without_rauc(tmp_path)
    p = subprocess.run(ota.cmd(ota.bundle(before["VERSION"] + "-bad", key=ota.other_key, cert=ota.other_cert)),
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 3 and "signed with a key the camera does not trust" in p.stderr, p.stdout + p.stderr
    after = ota.healthy()
    assert after["SLOT"] == before["SLOT"] and after["VERSION"] == before["VERSION"]


STAND_IN_CLOUDFLARED = """#!{python}
# Test stand-in for `cloudflared access ssh --hostname H` (no Cloudflare account or network
# here): checks the arguments pinhole-ota passes, logs them, and relays stdin/stdout to the
# stand-in camera's sshd, as the real one relays them through the tunnel.
import os, socket, sys, threading
args = sys.argv[1:]
open(os.environ["FAKE_CF_LOG"], "a").write(" ".join(args) + "\\n")
if args[:2] != ["access", "ssh"] or "--hostname" not in args:
    sys.exit("stand-in cloudflared: unexpected arguments %r" % args)
s = socket.create_connection(("127.0.0.1", int(os.environ["FAKE_CF_PORT"])))
def up():
    while True:
        b = os.read(0, 65536)
        if not b:
            s.shutdown(socket.SHUT_WR)
            return
        s.sendall(b)
threading.Thread(target=up, daemon=True).start()
while True:
    b = s.recv(65536)
    if not b:
        break
    os.write(1, b)
"""


def test_through_the_tunnel_pinhole_ota_goes_through_cloudflared_access_ssh(ota, tmp_path):
    """--cloudflared: ssh's ProxyCommand is `cloudflared access ssh --hostname %h`. cloudflared
    cannot reach Cloudflare here, so a stand-in (above) relays to the camera's sshd; what is
    shown is pinhole-ota's side: the device and check stages, and the tunnel host name."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "cloudflared"
    fake.write_text(STAND_IN_CLOUDFLARED.format(python=os.path.realpath(sys.executable)))
    fake.chmod(0o755)
    log = tmp_path / "cloudflared.log"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_CF_LOG=str(log),
               FAKE_CF_PORT=str(ota.ssh_port))
    before = ota.healthy()
    b = ota.bundle(before["VERSION"])  # the running version: checked, then "up to date"
    cmd = ["python3", str(TOOL), "-F", str(ota.ssh_config), "--cloudflared", "--http-port", str(ota.http_port),
           str(b), "root@ssh.camera.example"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    print(p.stdout + p.stderr)
    assert p.returncode == 0 and "up to date" in p.stdout, p.stdout + p.stderr
    assert f"version {before['VERSION']}; booted {before['SLOT']}" in p.stdout
    calls = log.read_text().splitlines()
    assert calls and all(c == "access ssh --hostname ssh.camera.example" for c in calls), calls


def children_of(pid: int) -> list[tuple[int, str]]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == pid:
                    out.append((int(d.name), (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
            except (OSError, ValueError, IndexError):
                pass
    return out


class Running:
    """pinhole-ota in the background, its output collected line by line."""

    def __init__(self, cmd: list[str]):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 120) -> str:
        t0 = time.time()
        while time.time() - t0 < timeout:
            for line in self.lines:
                if re.search(pattern, line):
                    return line
            if self.proc.poll() is not None and not self.thread.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"pinhole-ota never printed /{pattern}/ (exit {self.proc.poll()}):\n" + "\n".join(self.lines))

    def finish(self, timeout: float = 200) -> tuple[int, str]:
        rc = self.proc.wait(timeout=timeout)
        self.thread.join(timeout=5)
        return rc, "\n".join(self.lines)


def test_an_upload_cut_in_the_middle_resumes_on_the_next_run(ota):
    before = ota.healthy()
    v = ota.next_version()
    b = ota.bundle(v, filler_mb=12)  # incompressible, so the upload takes a while at 4 MiB/s
    r = Running(ota.cmd(b, "--limit-rate", "4096"))
    r.wait_for(r"upload \[#+ *\] +[3-9]\d%")
    cut = [(pid, c) for pid, c in children_of(r.proc.pid) if "cat > /data/ota/" in c]
    assert cut, f"no upload ssh among {children_of(r.proc.pid)}"
    os.kill(cut[0][0], signal.SIGKILL)  # the link drops
    rc, out = r.finish()
    print(out)
    assert rc == 5, out
    m = re.search(r"upload interrupted at ([\d.]+) MB of ([\d.]+) MB .*run the same command again to resume", out)
    assert m, out
    part = list((ota.device.data / "ota").glob("*.raucb.part"))
    assert part and 0 < part[0].stat().st_size < b.stat().st_size, part
    kept = part[0].stat().st_size
    assert ota.healthy()["SLOT"] == before["SLOT"]

    p = ota.ota(b)
    assert p.returncode == 0, p.stdout + p.stderr
    m = re.search(r"resuming the upload at ([\d.]+) MB of ([\d.]+) MB", p.stdout)
    assert m and abs(float(m.group(1)) - kept / 1e6) < 0.1, p.stdout
    after = ota.healthy()
    assert after["SLOT"] == other(before["SLOT"]) and after["VERSION"] == v


def test_a_slot_whose_pinhole_never_becomes_ready_rolls_back_to_the_old_slot(ota):
    before = ota.healthy()
    v = ota.next_version()
    b = ota.bundle(v, broken=True)
    boots = len(ota.device.boots)
    p = ota.ota(b)
    assert p.returncode == 6, p.stdout + p.stderr
    old, new = before["SLOT"], other(before["SLOT"])
    assert f"ROLLED BACK: the camera came back on slot {old} running {before['VERSION']}" in p.stdout, p.stdout
    assert f"slot {new} did not reach boot-complete.target" in p.stdout, p.stdout
    assert "not reached within 20 s" in p.stdout, p.stdout
    assert "pinhole.service" in p.stdout, "the trial boot's journal is not reported"
    assert ota.device.boots[boots:] == [new, old], ota.device.boots
    after = ota.healthy()
    assert after["SLOT"] == old and after["VERSION"] == before["VERSION"], after
    assert after["LAST_UPDATE_RESULT"] == "rolled-back", after
    dev = ota.device_report(lambda d: (d.get("last_update") or "").startswith("update rolled back"))
    assert dev["slot"] == old and dev["version"] == before["VERSION"], dev
    assert "did not reach boot-complete.target" in dev["last_update"], dev
    assert 'pinhole_device_last_update{result="rolled-back"} 1' in ota.metrics()
    st = json.loads(ota.device.sh(["rauc", "status", "--output-format=json"]).stdout)
    states = {d["bootname"]: d["boot_status"] for e in st["slots"] for d in e.values()}
    assert states == {old: "good", new: "bad"}, states


def test_a_good_slot_booted_again_and_again_without_a_camera_stays_on_its_slot(ota):
    """Normal boots are not trials: a camera unplugged (pinhole never serves a fragment, so
    boot-complete.target is never reached) must not run a good slot's U-Boot tries out. Before
    the fix only pinhole-ota-commit.service (after boot-complete.target) refilled them, and the
    fourth such boot left the slot (run against that script: "boot 4 … left slot A", the
    stand-in's U-Boot found A's tries used up). `device.boot` in /api/status says why it stays."""
    before = ota.healthy()
    slot = before["SLOT"]
    conf = ota.device.data / "pinhole/pinhole.toml"
    good = conf.read_text()
    # The camera is gone: a source that never produces a picture (pinhole runs, never ready).
    conf.write_text(good.replace('source = "testsrc?size=320x240&fps=15&gop=15"', 'source = "exec:sleep 100000"'))
    assert conf.read_text() != good
    notes = []
    try:
        for n in range(BOOT_TRIES + 1):
            boots = len(ota.device.boots)
            ota.device.sh(["systemctl", "reboot"], check=False, timeout=10)
            t0 = time.time()
            while len(ota.device.boots) == boots and time.time() - t0 < 60 and not ota.device.error:
                time.sleep(0.2)
            came = len(ota.device.boots) > boots and ota.device.boots[-1] == slot
            assert came, (f"boot {n + 1} without a camera left slot {slot}: U-Boot's environment "
                          f"{read_env(ota.device.env)}, boots {ota.device.boots}, device error {ota.device.error}")
            ota.device.wait_up()
            dev = ota.device_report(lambda d: d.get("slot") == slot, timeout=60)
            t0 = time.time()  # pinhole-ota-deadline.service marks the slot good once rauc runs
            while not re.search(r"marked good at boot|mark-good failed", dev.get("boot") or "") and time.time() - t0 < 30:
                time.sleep(0.5)
                dev = ota.device_report(lambda d: True)
            notes.append(dev.get("boot"))
            if "marked good at boot" not in (dev.get("boot") or ""):
                notes.append(ota.device.sh(["sh", "-c", "cat /run/pinhole-ota/device.env; systemctl status --no-pager "
                                            "pinhole-ota-deadline.service; journalctl -b --no-pager -u "
                                            "pinhole-ota-deadline.service | tail -n 20"], check=False).stdout)
            active = ota.device.sh(["systemctl", "is-active", "boot-complete.target"], check=False).stdout.strip()
            assert active != "active", "the camera-less boot reached boot-complete.target: the test shows nothing"
        left = read_env(ota.device.env)[f"BOOT_{slot}_LEFT"]
        assert left == str(BOOT_TRIES), f"U-Boot's tries for {slot} not refilled at a normal boot ({left})"
        for note in notes:
            assert (note or "").startswith(f"normal boot of slot {slot}: marked good at boot"), notes
    finally:
        conf.write_text(good)
    ota.device.sh(["systemctl", "reboot"], check=False, timeout=10)
    time.sleep(2)
    after = ota.healthy()
    assert after["SLOT"] == slot, after


@pytest.mark.parametrize("stage", ["device", "check", "upload", "install", "reboot", "wait"])
def test_killed_at_each_stage_the_camera_runs_a_good_slot_and_the_next_run_finishes(ota, stage):
    before = ota.healthy()
    v = ota.next_version()
    b = ota.bundle(v, filler_mb=8 if stage == "upload" else 0)
    extra = ("--limit-rate", "4096") if stage == "upload" else ()
    r = Running(ota.cmd(b, *extra))
    r.wait_for(rf"^==> {stage}:" if stage != "upload" else r"upload \[#+ *\] +[2-9]\d%")
    os.killpg(r.proc.pid, signal.SIGKILL)  # pinhole-ota and its ssh, at once
    rc, out = r.finish()
    assert rc == -signal.SIGKILL, out
    print(f"killed at {stage}:\n{out}")
    time.sleep(2)  # a reboot pinhole-ota asked for just before it died starts within 1 s
    now = ota.healthy()
    if stage in ("device", "check", "upload", "install"):
        assert now["SLOT"] == before["SLOT"] and now["VERSION"] == before["VERSION"], now
    else:  # the reboot may already have been asked for: either slot, but good and settled
        assert now["VERSION"] in (before["VERSION"], v), now
    if stage in ("device", "check"):
        assert not (ota.device.data / "ota" / "pending").exists()
        return  # nothing had happened yet; the next case installs
    p = ota.ota(b)
    assert p.returncode == 0, p.stdout + p.stderr
    if stage == "upload":
        assert "resuming the upload at" in p.stdout, p.stdout
    after = ota.healthy()
    assert after["VERSION"] == v and after["SLOT"] == other(before["SLOT"]), after


def test_make_dev_keys_signs_bundles_its_keyring_accepts_and_never_overwrites(tmp_path):
    """yocto/scripts/make-dev-keys: the CA certificate (the image's keyring) accepts a bundle
    signed with the signing pair; a second run refuses to replace the keys."""
    keys = tmp_path / "keys"
    script = REPO / "yocto" / "scripts" / "make-dev-keys"
    env = dict(os.environ, KEY_BITS="2048")
    p = subprocess.run([str(script), str(keys)], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert {f.name for f in keys.iterdir()} == {"ca.key.pem", "ca.cert.pem", "signing.key.pem", "signing.cert.pem"}
    assert (keys / "ca.key.pem").stat().st_mode & 0o077 == 0 and (keys / "signing.key.pem").stat().st_mode & 0o077 == 0
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hello").write_text("hello\n")
    img = make_image(tree, tmp_path / "rootfs.ext4", 8)
    b = make_bundle(tmp_path, img, tmp_path / "dev.raucb", version="9.9", key=keys / "signing.key.pem",
                    cert=keys / "signing.cert.pem")
    ok = subprocess.run(["rauc", f"--keyring={keys / 'ca.cert.pem'}", "info", str(b)], capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    _, other_cert = make_keys(tmp_path / "other", "other")
    bad = subprocess.run(["rauc", f"--keyring={other_cert}", "info", str(b)], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and "signature verification failed" in bad.stderr, bad.stderr
    before = (keys / "ca.key.pem").read_bytes()
    again = subprocess.run([str(script), str(keys)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "not overwriting" in again.stderr, again.stderr
    assert (keys / "ca.key.pem").read_bytes() == before


def test_the_device_units_pass_systemd_analyze_verify(tmp_path):
    """ota/device's units as the pinhole-ota recipe installs them, beside pinhole.service."""
    from test_systemd import verify_root

    require_tool("systemd-analyze")
    root = verify_root(tmp_path)
    (root / "usr/libexec").mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "ota/device/pinhole-ota-device", root / "usr/libexec/pinhole-ota-device")
    units = ("pinhole-ota-boot.service", "pinhole-ota-commit.service", "pinhole-ota-deadline.service")
    for unit in units:
        shutil.copy2(REPO / "ota/device" / unit, root / "etc/systemd/system" / unit)
    dropin = root / "etc/systemd/system/boot-complete.target.d"
    dropin.mkdir(parents=True)
    shutil.copy2(REPO / "ota/device/boot-complete.target.d/50-pinhole-ota-cloudflared.conf", dropin)
    for unit in (*units, "boot-complete.target"):
        p = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", unit],
                           capture_output=True, text=True, timeout=60)
        said = (p.stdout + p.stderr).strip()
        assert p.returncode == 0 and not said, f"systemd-analyze verify {unit}: exit {p.returncode}\n{said}"
    commit = (REPO / "ota/device/pinhole-ota-commit.service").read_text()
    assert "Requires=boot-complete.target" in commit and "After=boot-complete.target" in commit
