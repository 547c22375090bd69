"""A stand-in camera for the OTA tests: a Debian root with Debian's real rauc (1.8), sshd and
pinhole, booted with systemd-nspawn from one of two file-backed root slots, with U-Boot's boot
counting emulated.

What is real: rauc (service, D-Bus, `rauc install` writing a slot image, mark-good/mark-bad,
the slot status file), the plain-format bundles and their signatures, OpenSSH, systemd with the
units from systemd/ and ota/device/ (boot-complete.target, the trial deadline), pinhole itself,
an ext4 /data on its own block device (a loop device).

What is emulated, and how:
- The SD card's slots are two image files (`slots/rootfs.0.img`, `rootfs.1.img`, ext4) that
  rauc writes as it would /dev/mmcblk0p2 and p3.
- A slot holds only what differs from the Debian base (pinhole, its units and configuration
  links, rauc's system.conf and keyring, os-release with IMAGE_VERSION, sshd's settings): the
  booted root is an overlayfs of the slot image (read-only) over the cached Debian root, with a
  fresh writable layer per boot (a read-only root with volatile /var, as on the image).
- U-Boot: `uboot_step()` runs the logic of meta-rauc-raspberrypi's boot.cmd (BOOT_ORDER,
  BOOT_A_LEFT, BOOT_B_LEFT: the first slot in the order with tries left is booted and its counter
  decremented; none left: both reset to 3) on an environment file, before each boot. The kernel
  command line it would pass (`rauc.slot=A`) is bind-mounted over /proc/cmdline inside the
  container (test-cmdline.service, before rauc and pinhole-ota-boot).
- rauc's `bootloader=uboot` (fw_setenv) is replaced by `bootloader=custom` with
  ota_uboot_env.sh, which edits the same environment file the way rauc's U-Boot backend does
  (set-primary: first in BOOT_ORDER with 3 tries; mark-good: 3 tries; mark-bad: out of the order).
- A reboot: `systemctl reboot` in the container makes systemd-nspawn exit with status 133; the
  supervisor thread then unmounts the slot, runs the U-Boot step and boots the chosen slot.
  Powering off (exit 0) ends the device.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from conftest import REPO, pinhole_bin, require_tool
from debian_root import mmdebstrap_root, run
from test_systemd import Container, library_packages

PACKAGES = ["systemd", "systemd-sysv", "dbus", "rauc", "rauc-service", "openssh-server", "e2fsprogs"]
HERE = Path(__file__).resolve().parent
OTA = REPO / "ota"
UNITS = REPO / "systemd"
COMPATIBLE = "pinhole-nspawn"
TRIAL_S = 20
BOOT_TRIES = 3


def base_root() -> Path:
    packages = set(PACKAGES) | set(library_packages(Path(pinhole_bin())))
    return mmdebstrap_root(sorted(packages), marker="usr/bin/rauc")


# ---------------------------------------------------------------- keys and bundles


def make_keys(where: Path, name: str) -> tuple[Path, Path]:
    """A self-signed signing certificate and its key (openssl), as make-dev-keys makes them."""
    require_tool("openssl")
    where.mkdir(parents=True, exist_ok=True)
    key, cert = where / f"{name}.key.pem", where / f"{name}.cert.pem"
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "30", "-subj", f"/O=pinhole test/CN={name}"])
    return key, cert


def slot_tree(tree: Path, *, version: str, binary: Path, keyring: Path, ssh_port: int, broken: bool = False,
              filler_mb: int = 0, compatible: str = COMPATIBLE) -> None:
    """The files a slot holds over the Debian base: what the image recipe installs."""
    def put(rel: str, text: str, mode: int = 0o644) -> None:
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)

    def link(rel: str, target: str) -> None:
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.symlink_to(target)

    os_release = (base_root() / "usr/lib/os-release").read_text()
    put("etc/os-release", os_release + f'IMAGE_ID=pinhole-test\nIMAGE_VERSION="{version}"\n')
    # pinhole, its unit and its configuration on /data (the image's layout).
    (tree / "usr/bin").mkdir(parents=True, exist_ok=True)
    if broken:
        put("usr/bin/pinhole", "#!/bin/sh\n# a pinhole that never becomes ready (never sends READY=1)\n"
                               "exec sleep infinity\n", 0o755)
    else:
        shutil.copy2(binary, tree / "usr/bin/pinhole")
    (tree / "etc/systemd/system").mkdir(parents=True, exist_ok=True)
    shutil.copy2(UNITS / "pinhole.service", tree / "etc/systemd/system/pinhole.service")
    link("etc/pinhole/pinhole.toml", "/data/pinhole/pinhole.toml")
    # RAUC: system.conf for the two file-backed slots, the keyring, the U-Boot stand-in.
    put("etc/rauc/system.conf", f"""[system]
compatible={compatible}
bootloader=custom
# rauc 1.8: one status file on /data (1.9+: data-directory=/data/rauc, as on the image)
statusfile=/data/rauc/status.raucs
bundle-formats=plain verity

[keyring]
path=/etc/rauc/keyring.pem

[handlers]
bootloader-custom-backend=/usr/libexec/ota-uboot-env

[slot.rootfs.0]
device=/slots/rootfs.0.img
type=ext4
bootname=A

[slot.rootfs.1]
device=/slots/rootfs.1.img
type=ext4
bootname=B
""")
    shutil.copy2(keyring, tree / "etc/rauc/keyring.pem")
    (tree / "usr/libexec").mkdir(parents=True, exist_ok=True)
    shutil.copy2(HERE / "ota_uboot_env.sh", tree / "usr/libexec/ota-uboot-env")
    (tree / "usr/libexec/ota-uboot-env").chmod(0o755)
    # The device half of pinhole-ota and its units.
    shutil.copy2(OTA / "device/pinhole-ota-device", tree / "usr/libexec/pinhole-ota-device")
    (tree / "usr/libexec/pinhole-ota-device").chmod(0o755)
    for unit in ("pinhole-ota-boot.service", "pinhole-ota-commit.service", "pinhole-ota-deadline.service"):
        shutil.copy2(OTA / "device" / unit, tree / "etc/systemd/system" / unit)
    # The tunnel's unit (skipped without a token) and the drop-in that makes boot-complete wait for it.
    shutil.copy2(UNITS / "cloudflared.service", tree / "etc/systemd/system/cloudflared.service")
    dropin = tree / "etc/systemd/system/boot-complete.target.d"
    dropin.mkdir(parents=True, exist_ok=True)
    shutil.copy2(OTA / "device/boot-complete.target.d/50-pinhole-ota-cloudflared.conf", dropin)
    put("etc/systemd/system/pinhole-ota-deadline.service.d/test.conf",
        f"[Service]\nEnvironment=PINHOLE_OTA_TRIAL_S={TRIAL_S}\n")
    # The kernel command line U-Boot would pass (see the module's docstring).
    put("etc/systemd/system/test-cmdline.service", """[Unit]
Description=test stand-in: the kernel command line the emulated U-Boot chose
DefaultDependencies=no
Before=sysinit.target pinhole-ota-boot.service rauc.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/mount --bind /boot/cmdline /proc/cmdline
""")
    # What `systemctl enable` does for these units.
    wants = {
        "sysinit.target.wants": ["test-cmdline.service", "pinhole-ota-boot.service"],
        "multi-user.target.wants": ["pinhole.service", "pinhole-ota-commit.service",
                                    "pinhole-ota-deadline.service"],
        "boot-complete.target.requires": ["pinhole.service"],
    }
    for d, units in wants.items():
        for u in units:
            link(f"etc/systemd/system/{d}/{u}", f"/etc/systemd/system/{u}")
    for u in ("console-getty.service", "apt-daily.timer", "apt-daily-upgrade.timer", "getty@tty1.service"):
        link(f"etc/systemd/system/{u}", "/dev/null")
    # sshd: on a test port, keys only, the owner's keys on /data.
    put("etc/ssh/sshd_config.d/pinhole.conf", f"""Port {ssh_port}
ListenAddress 127.0.0.1
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile /data/ssh/authorized_keys
""")
    if filler_mb:
        (tree / "usr/share").mkdir(parents=True, exist_ok=True)
        with open(tree / "usr/share/filler.bin", "wb") as f:
            for _ in range(filler_mb):
                f.write(os.urandom(1 << 20))


def make_image(tree: Path, out: Path, size_mb: int) -> Path:
    run(["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", str(tree), str(out), f"{size_mb}M"], timeout=120)
    return out


def make_bundle(work: Path, image: Path, out: Path, *, version: str, key: Path, cert: Path,
                compatible: str = COMPATIBLE, fmt: str = "plain", fast: bool = True) -> Path:
    """`rauc bundle` with the image as rootfs: plain format for installing (no device-mapper on
    this machine, so the stand-in cannot install verity bundles), verity for the checks. `fast`:
    squashfs with lz4 rather than the default gzip."""
    require_tool("rauc")
    d = work / f"bundle-{out.stem}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    try:
        os.link(image, d / "rootfs.ext4")
    except OSError:
        shutil.copy2(image, d / "rootfs.ext4")
    (d / "manifest.raucm").write_text(f"""[update]
compatible={compatible}
version={version}
description=pinhole test image {version}

[bundle]
format={fmt}

[image.rootfs]
filename=rootfs.ext4
""")
    out.unlink(missing_ok=True)
    # lz4: half the time of mksquashfs' default gzip on these 2 cores (the tests make ~20 bundles).
    fast_args = ["--mksquashfs-args=-comp lz4"] if fast else []
    run(["rauc", "bundle", *fast_args, f"--cert={cert}", f"--key={key}", str(d), str(out)], timeout=300)
    shutil.rmtree(d, ignore_errors=True)
    return out


# ---------------------------------------------------------------- U-Boot, emulated


def read_env(path: Path) -> dict[str, str]:
    env = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                env[k] = v
    return env


def write_env(path: Path, env: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    tmp.replace(path)


def uboot_step(env_path: Path) -> str:
    """meta-rauc-raspberrypi's boot.cmd: pick the slot, decrement its counter, save the env."""
    for _ in range(2):
        env = read_env(env_path)
        env.setdefault("BOOT_ORDER", "A B")
        env.setdefault("BOOT_A_LEFT", str(BOOT_TRIES))
        env.setdefault("BOOT_B_LEFT", str(BOOT_TRIES))
        for slot in env["BOOT_ORDER"].split():
            left = int(env.get(f"BOOT_{slot}_LEFT", "0") or 0)
            if left > 0:
                env[f"BOOT_{slot}_LEFT"] = str(left - 1)
                write_env(env_path, env)
                return slot
        # "No valid RAUC slot found. Resetting tries to 3" and reset.
        env["BOOT_A_LEFT"] = env["BOOT_B_LEFT"] = str(BOOT_TRIES)
        write_env(env_path, env)
    raise AssertionError(f"U-Boot stand-in: no bootable slot in {read_env(env_path)}")


# ---------------------------------------------------------------- the device


class NspawnBoot(Container):
    """test_systemd's Container, booted with the device's extra nspawn arguments."""

    def __init__(self, root: Path, log: Path, extra: list[str]):
        super().__init__(root, log)
        self.extra = extra

    def boot(self) -> None:
        require_tool("systemd-nspawn")
        require_tool("nsenter")
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "-D", str(self.root), "-b", "--register=no", "--keep-unit",
             "--console=read-only", f"--machine=pinhole-ota-{os.getpid()}", *self.extra],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
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
        raise AssertionError(f"the container did not come up in 30 s:\n{self.console()}")


class Device:
    """The stand-in camera: slots, /data on a loop device, the U-Boot environment, and a thread
    that boots the chosen slot again after every reboot."""

    def __init__(self, work: Path, ssh_port: int, http_port: int):
        require_tool("losetup")
        self.work = work
        self.ssh_port, self.http_port = ssh_port, http_port
        self.slots = work / "slots"
        self.bootdir = work / "boot"
        self.env = self.bootdir / "uboot.env"
        self.data_img = work / "data.img"
        self.data = work / "data"
        self.lower = work / "slot-mnt"
        self.merged = work / "root"
        self.log = work / "console.log"
        self.loop = ""
        self.slot_loop = ""
        self.boots: list[str] = []
        self.error: BaseException | None = None
        self.container: NspawnBoot | None = None
        self.stopping = False
        self.up = threading.Event()
        self.thread: threading.Thread | None = None
        self.base = base_root()
        for d in (self.slots, self.bootdir, self.data, self.lower, self.merged):
            d.mkdir(parents=True, exist_ok=True)

    # -- factory: what flashing the SD card does
    def flash(self, image: Path, slot_size_mb: int, data_mb: int) -> None:
        for i in (0, 1):
            p = self.slots / f"rootfs.{i}.img"
            if i == 0:
                shutil.copy2(image, p)
            else:
                p.write_bytes(b"")
            os.truncate(p, slot_size_mb << 20)
        run(["truncate", "-s", f"{data_mb}M", str(self.data_img)])
        run(["mkfs.ext4", "-q", "-F", "-L", "data", str(self.data_img)], timeout=120)
        self.loop = run(["losetup", "--find", "--show", str(self.data_img)]).stdout.strip()
        run(["mount", self.loop, str(self.data)])
        write_env(self.env, {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"})

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="ota-device", daemon=True)
        self.thread.start()

    def _mounts_down(self) -> None:
        for m in (self.merged, self.lower):
            subprocess.run(["umount", str(m)], capture_output=True)
        if self.slot_loop:
            subprocess.run(["losetup", "-d", self.slot_loop], capture_output=True)
            self.slot_loop = ""

    @staticmethod
    def _detach(image: Path) -> None:
        """Loop devices still attached to one of this device's slot files (ours only)."""
        out = subprocess.run(["losetup", "--associated", str(image), "--noheadings", "--output", "NAME"],
                             capture_output=True, text=True).stdout
        for dev in out.split():
            subprocess.run(["losetup", "-d", dev], capture_output=True)

    def _run(self) -> None:
        try:
            while not self.stopping:
                slot = uboot_step(self.env)
                index = {"A": 0, "B": 1}[slot]
                (self.bootdir / "cmdline").write_text(
                    f"root=/slots/rootfs.{index}.img rootwait rauc.slot={slot}\n")
                # A loop device of its own for each boot: `mount -o loop` may reuse one still
                # attached to the file, whose block cache predates rauc's last write to the slot.
                slot_img = self.slots / f"rootfs.{index}.img"
                self._detach(slot_img)
                self.slot_loop = run(["losetup", "--find", "--show", "--read-only", str(slot_img)]).stdout.strip()
                run(["mount", "-o", "ro", self.slot_loop, str(self.lower)])
                upper = self.work / f"upper-{len(self.boots)}"
                wdir = self.work / f"overlay-work-{len(self.boots)}"
                upper.mkdir()
                wdir.mkdir()
                run(["mount", "-t", "overlay", "overlay", "-o",
                     f"lowerdir={self.lower}:{self.base},upperdir={upper},workdir={wdir}", str(self.merged)])
                # rauc needs loop devices for the bundle: the free one losetup points at (made
                # if missing) and every other that exists.
                run(["losetup", "--find"])
                loops = sorted(str(p) for p in Path("/dev").glob("loop[0-9]*"))
                extra = [f"--bind={self.data}:/data", f"--bind={self.slots}:/slots",
                         f"--bind={self.bootdir}:/boot", "--bind=/dev/loop-control",
                         *[f"--bind={p}" for p in loops]]
                with self.log.open("a") as f:
                    f.write(f"\n===== U-Boot stand-in: booting slot {slot} ({read_env(self.env)})\n")
                self.container = NspawnBoot(self.merged, self.log, extra)
                self.boots.append(slot)
                self.container.boot()
                self.up.set()
                rc = self.container.proc.wait()
                self.up.clear()
                self._mounts_down()
                shutil.rmtree(upper, ignore_errors=True)
                shutil.rmtree(wdir, ignore_errors=True)
                if rc != 133:  # 133: the container asked for a reboot
                    break
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
            self.up.clear()
            self._mounts_down()

    def wait_up(self, timeout: float = 60) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.error:
                raise AssertionError(f"the stand-in device failed: {self.error}")
            if self.up.is_set():
                return
            time.sleep(0.2)
        raise AssertionError(f"the stand-in device did not come up in {timeout} s:\n{self.console()}")

    def sh(self, cmd: list[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
        self.wait_up()
        assert self.container
        return self.container.sh(cmd, check=check, timeout=timeout)

    def console(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self) -> None:
        self.stopping = True
        if self.container:
            self.container.poweroff()
        if self.thread:
            self.thread.join(timeout=30)
        self._mounts_down()
        if self.loop:
            subprocess.run(["umount", str(self.data)], capture_output=True)
            subprocess.run(["losetup", "-d", self.loop], capture_output=True)
            self.loop = ""
