"""The SD card's twin as a camera the tests drive from the host (board/sd_twin.py makes and boots
it): power on and off, the owner's SSH key, `pinhole-ota` over SSH, /api/status over HTTP, files
on the card's boot partition. Everything on the guest is reached the way an owner reaches a
camera: QEMU forwards a 127.0.0.1 port to the guest's sshd (22) and one to pinhole (80).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from test_aarch64 import aarch64_bin

sys.path.insert(0, str(REPO / "board"))
import sd_twin  # noqa: E402

TOOL = REPO / "ota" / "pinhole-ota"
PASSWORD = "twin-lan-secret-4821"
SOURCE = "testsrc?size=320x240&fps=10&gop=10"
# Under software emulation one boot (U-Boot to pinhole's first fragment) takes ~1 min; a first
# boot also makes the SSH host keys and imports the owner's file.
BOOT_S = 300


def setup_toml(ssh_line: str, extra: str = "") -> str:
    """The owner's first-boot file: SSH key, the test source on port 80, a LAN password."""
    return (f'[ssh]\nauthorized_keys = ["{ssh_line}"]\n\n'
            f'[pinhole]\nsource = "{SOURCE}"\nlisten = ["0.0.0.0:80"]\n'
            f'[pinhole.lan]\npassword = "{PASSWORD}"\n{extra}')


class Parts:
    """What every camera of a test run shares: the pristine card, U-Boot, keys, the binary."""

    def __init__(self, work: Path):
        self.work = work
        self.binary = aarch64_bin()
        t0 = time.time()
        built = sd_twin.build(self.binary)
        print(f"sd-twin parts ready in {time.time() - t0:.1f} s")
        self.card, self.u_boot = built["card"], built["u-boot"]
        self.key, self.cert = built["key"], built["cert"]
        self.id = work / "id_ed25519"
        if not self.id.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "owner@twin", "-f", str(self.id)],
                           check=True, timeout=30)
        self.ssh_line = self.id.with_suffix(".pub").read_text().strip()
        self.ssh_config = work / "ssh_config"
        self.ssh_config.write_text(f"""Host *
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  IdentityFile {self.id}
  IdentitiesOnly yes
  ConnectTimeout 20
  ServerAliveInterval 5
  ServerAliveCountMax 6
""")
        self._bundles: dict[tuple, Path] = {}

    def slot_image(self, version: str, image_mb: int | None = None, **kw) -> Path:
        """A root file system image; image_mb: its size (default: the content plus 30 %)."""
        tree = self.work / f"tree-{version}"
        out = self.work / f"rootfs-{version}-{len(self._bundles)}.ext4"
        sd_twin.slot_tree(tree, version=version, binary=self.binary, keyring=self.cert, **kw)
        sd_twin.ext4_image(tree, out, image_mb)
        shutil.rmtree(tree, ignore_errors=True)
        return out

    def bundle(self, version: str, **kw) -> Path:
        key = (version, tuple(sorted(kw.items())))
        if key not in self._bundles:
            t0 = time.time()
            img = self.slot_image(version, **kw)
            out = self.work / f"pinhole-{version}-{len(self._bundles)}.raucb"
            sd_twin.make_bundle(img, out, version=version, key=self.key, cert=self.cert)
            img.unlink()
            print(f"bundle {out.name} ({out.stat().st_size >> 20} MiB) made in {time.time() - t0:.1f} s")
            self._bundles[key] = out
        return self._bundles[key]


class Camera:
    """One twin: a copy of the card, and QEMU booting it."""

    def __init__(self, parts: Parts, work: Path, setup: str | None):
        self.parts, self.work = parts, work
        work.mkdir(parents=True, exist_ok=True)
        self.card = sd_twin.copy_card(parts.card, work / "card.img")
        if setup is not None:
            sd_twin.put_on_boot(self.card, "pinhole-setup.toml", setup.encode())
        self.guest = sd_twin.Guest(self.card, parts.u_boot, work / "console.log")
        self.address = f"ssh://root@127.0.0.1:{self.guest.ssh_port}"

    # -- power
    def power_on(self) -> None:
        self.guest.start()

    def power_cut(self) -> None:
        self.guest.kill()

    def console(self) -> str:
        return self.guest.console()

    # -- reaching it
    def ssh(self, cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        p = subprocess.run(["ssh", "-F", str(self.parts.ssh_config), "-p", str(self.guest.ssh_port),
                            "root@127.0.0.1", cmd], capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"ssh `{cmd}` exited {p.returncode}: {p.stdout}{p.stderr}\n"
                                 f"console:\n{self.console()[-3000:]}")
        return p

    def get(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        import base64
        conn = http.client.HTTPConnection("127.0.0.1", self.guest.http_port, timeout=timeout)
        try:
            auth = base64.b64encode(f"owner:{PASSWORD}".encode()).decode()
            conn.request("GET", path, headers={"Authorization": f"Basic {auth}"})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def status(self) -> dict | None:
        try:
            code, body = self.get("/api/status", timeout=10)
            return json.loads(body) if code == 200 else None
        except (OSError, http.client.HTTPException, ValueError):
            return None

    def wait_streaming(self, timeout: float = BOOT_S, fragments: int = 3) -> tuple[float, dict]:
        """Seconds since power-on until /api/status shows `fragments` fragments made."""
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if not self.guest.alive():
                raise AssertionError(f"QEMU exited:\n{self.console()}")
            st = self.status()
            if st and st.get("fragments", 0) >= fragments:
                return time.time() - self.guest.started, st
            last = st
            time.sleep(1)
        raise AssertionError(f"pinhole did not stream within {timeout} s (last status {last}):\n{self.console()}")

    def wait_ssh(self, timeout: float = BOOT_S) -> float:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.guest.alive():
                raise AssertionError(f"QEMU exited:\n{self.console()}")
            if self.ssh("true", check=False, timeout=30).returncode == 0:
                return time.time() - self.guest.started
            time.sleep(2)
        raise AssertionError(f"no SSH within {timeout} s:\n{self.console()}")

    def rauc_status(self) -> dict:
        return json.loads(self.ssh("rauc status --detailed --output-format=json").stdout)

    def env(self) -> dict[str, str]:
        out = self.ssh("fw_printenv").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    # -- pinhole-ota, as the owner runs it
    def ota(self, bundle: Path, *extra: str, timeout: float = 1500) -> subprocess.CompletedProcess:
        t0 = time.time()
        p = subprocess.run(["python3", str(TOOL), "-F", str(self.parts.ssh_config), "--timeout", "900",
                            *extra, str(bundle), self.address],
                           capture_output=True, text=True, timeout=timeout)
        print(f"--- pinhole-ota {bundle.name} {' '.join(extra)}: exit {p.returncode} in {time.time() - t0:.1f} s\n"
              f"{p.stdout}{p.stderr}")
        return p


@pytest.fixture(scope="session")
def twin_parts(tmp_path_factory) -> Parts:
    return Parts(tmp_path_factory.mktemp("twin"))


@pytest.fixture(scope="module")
def camera(twin_parts, tmp_path_factory):
    """One camera shared by a module's tests, in file order (a first boot, then what an owner does
    with it): each boot under emulation costs about a minute, each update several."""
    c = Camera(twin_parts, tmp_path_factory.mktemp("camera"), setup_toml(twin_parts.ssh_line))
    c.power_on()
    yield c
    c.power_cut()
    if os.environ.get("PINHOLE_TWIN_KEEP") != "1":
        c.card.unlink(missing_ok=True)


@pytest.fixture
def new_camera(twin_parts, tmp_path):
    made: list[Camera] = []

    def make(setup: str | None = "default") -> Camera:
        text = setup_toml(twin_parts.ssh_line) if setup == "default" else setup
        c = Camera(twin_parts, tmp_path / f"camera-{len(made)}", text)
        made.append(c)
        return c

    yield make
    for c in made:
        c.power_cut()
        if os.environ.get("PINHOLE_TWIN_KEEP") != "1":
            c.card.unlink(missing_ok=True)
