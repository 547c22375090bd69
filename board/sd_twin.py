#!/usr/bin/env python3
"""board/sd_twin.py — the Raspberry Pi SD card's twin, booted in QEMU.

A disk laid out as the image's .wks (yocto/meta-pinhole/files/wic/
pinhole-sdimage-dual-raspberrypi.wks.in), booted by real U-Boot from its boot script and
environment, with root slots that hold systemd, OpenSSH, the libubootenv tools, RAUC 1.15.2 (the
release meta-rauc's recipe builds, from the same tarball) and the files of yocto/meta-pinhole and
ota/device installed where their recipes install them, read from this repository. The emulated
machine is `qemu-system-aarch64 -M virt` (Cortex-A72, software emulation: no KVM here) with an SD
card on an SDHCI controller, so the guest sees /dev/mmcblk0p1..p6 and U-Boot `mmc 0:N`, the names
every file of the image uses (boot script, fstab, system.conf, fw_env.config): none is renamed.

    board/sd_twin.py build [--bin PINHOLE_AARCH64] [--version V]   make (or reuse) every part and
                                                                   the pristine card image
    board/sd_twin.py boot [--card FILE] [--ssh-port N] [--http-port N] [--setup FILE]
                                                                   boot a copy of the card
    board/sd_twin.py slot --version V --out FILE [--never-ready | --panic]
                                                                   a root slot image (ext4)
    board/sd_twin.py bundle --slot FILE --version V --key K --cert C --out FILE
                                                                   a signed verity bundle

Everything slow is made once and kept in target/sd-twin (PINHOLE_TWIN_CACHE): the sources (from
Debian's archive, checked against pinned SHA-256 sums), U-Boot, RAUC for the guest and for this
host, Debian's arm64 kernel and busybox, the Debian root (mmdebstrap, arm64, maintainer scripts
run under qemu-user via binfmt_misc). A second run reuses them; `--fresh` makes them again.

What differs from the Raspberry Pi, and why (yocto/README.md, "The SD card's twin"):
- Firmware: QEMU starts U-Boot directly (-bios); on the Pi, its GPU firmware loads U-Boot from the
  boot partition with config.txt. The firmware, config.txt and the device tree are not tested here.
- U-Boot: 2025.01 from Debian's source package, built with qemu_arm64_defconfig plus the Pi's
  environment settings (in uboot.env on mmc 0:1, 16 KiB: rpi_arm64_defconfig) and SDHCI on PCI;
  the image builds 2026.01 for the Pi. Debian's own u-boot-qemu keeps its environment in flash
  (its binary has no FAT environment), which is not how the Pi keeps it.
- Kernel: Debian's arm64 kernel (its SD, ext4 and virtio drivers are modules, so each slot carries
  an initramfs beside its kernel, which the boot script loads when present); the Pi's kernel is
  linux-raspberrypi with these built in.
- Root: Debian bookworm packages instead of the image's Yocto-built ones; Debian's OpenSSH has no
  sshdgenkeys.service (OE-core's unit), so the twin carries a small unit of that name which makes
  the host keys on /data, and the image's drop-in for it applies to it.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYER = REPO / "yocto/meta-pinhole"
CACHE = Path(os.environ.get("PINHOLE_TWIN_CACHE", REPO / "target/sd-twin"))
SUITE = "bookworm"
MIRROR = os.environ.get("PINHOLE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
MiB = 1 << 20

# RAUC 1.15.2: Debian's orig tarball is RAUC's release tarball, byte for byte: the SHA-256 below is
# the one meta-rauc's recipe pins (meta-rauc 38da0e5866a953e664001ba90b5edad68d68cd5d,
# recipes-core/rauc/rauc-1.15.2.inc, SRC_URI[sha256sum]). U-Boot 2025.01: Debian trixie's source.
SOURCES = {
    "rauc": ("pool/main/r/rauc/rauc_1.15.2.orig.tar.xz",
             "127a24cde208c65b837ae978c695a00730f1094ee8b6c7d48cf58ef846eae340", "rauc-1.15.2"),
    "u-boot": ("pool/main/u/u-boot/u-boot_2025.01.orig.tar.bz2",
               "cdef7d507c93f1bbd9f015ea9bc21fa074268481405501945abc6f854d5b686f", "u-boot-2025.01"),
}

# U-Boot: the Pi's environment (rpi_arm64_defconfig: ENV_SIZE 0x4000; ENV_IS_IN_FAT, uboot.env on
# mmc 0:1, the defaults of board/raspberrypi) and an SD card on QEMU's sdhci-pci. The Pi's SD
# controller is on the SoC, found before U-Boot reads its environment; QEMU's is on PCI, which
# U-Boot enumerates after that (common/board_r.c: initr_env before initr_pci), so the twin's
# preboot enumerates PCI (the Pi's preboot does too: "pci enum; usb start;") and then loads the
# environment from uboot.env: the one command the Pi does not run. The Pi's boot command scans
# its boot_targets, "mmc usb pxe dhcp" (include/configs/rpi.h); QEMU's list has no mmc, so the
# twin's boot command names mmc. No DMA, where the Pi's U-Boot uses SDMA: on QEMU 7.2's
# sdhci-pci, every SDMA read that crosses a 512 KiB DMA boundary ends in "Transfer data timeout"
# (boot.scr and uboot.env load, the kernel does not), and with ADMA2 every read does.
UBOOT_FRAGMENT = """\
CONFIG_MMC=y
CONFIG_DM_MMC=y
CONFIG_CMD_MMC=y
CONFIG_MMC_SDHCI=y
# CONFIG_MMC_SDHCI_SDMA is not set
# CONFIG_MMC_SDHCI_ADMA is not set
CONFIG_MMC_PCI=y
# CONFIG_ENV_IS_IN_FLASH is not set
CONFIG_ENV_IS_IN_FAT=y
CONFIG_ENV_FAT_INTERFACE="mmc"
CONFIG_ENV_FAT_DEVICE_AND_PART="0:1"
CONFIG_ENV_FAT_FILE="uboot.env"
CONFIG_ENV_SIZE=0x4000
CONFIG_FAT_WRITE=y
CONFIG_CMD_NVEDIT_LOAD=y
CONFIG_USE_PREBOOT=y
CONFIG_PREBOOT="pci enum; env load"
CONFIG_BOOTCOMMAND="bootflow scan -lb mmc"
"""

# meta-rauc's rauc-target.inc PACKAGECONFIG ("service network streaming json nocreate gpt") and
# rauc.inc's EXTRA_OEMESON, as meson options.
RAUC_TARGET_OPTIONS = [
    "-Dtests=false", "-Dsystemdunitdir=/usr/lib/systemd/system",
    "-Ddbuspolicydir=/usr/share/dbus-1/system.d",
    "-Ddbussystemservicedir=/usr/share/dbus-1/system-services",
    "-Ddbusinterfacesdir=/usr/share/dbus-1/interfaces",
    "-Dservice=true", "-Dstreaming=true", "-Dnetwork=true", "-Djson=enabled", "-Dcreate=false",
    "-Dgpt=enabled", "-Dcomposefs=disabled",
]
# rauc-native (what bundles are made with): creation only.
RAUC_HOST_OPTIONS = ["-Dtests=false", "-Dservice=false", "-Dstreaming=false", "-Dnetwork=false",
                     "-Djson=disabled", "-Dgpt=disabled", "-Dcomposefs=disabled", "-Dcreate=true"]
RAUC_SYSROOT_PACKAGES = ["libc6-dev", "libglib2.0-dev", "libssl-dev", "libjson-glib-dev",
                         "libcurl4-openssl-dev", "libnl-genl-3-dev", "libdbus-1-dev", "libfdisk-dev"]

# The guest's Debian root: systemd, OpenSSH, the libubootenv tools, what RAUC 1.15 links, and
# little else (every package costs boot time under emulation).
ROOT_PACKAGES = [
    "systemd", "systemd-sysv", "udev", "dbus", "openssh-server", "libubootenv-tool", "kmod",
    "e2fsprogs", "util-linux", "mount", "iproute2", "squashfs-tools", "parted",
    "libglib2.0-0", "libssl3", "libjson-glib-1.0-0", "libcurl4", "libnl-genl-3-200", "libfdisk1",
]

# Kernel modules: in the initramfs (to mount the root slot), and in the root (what RAUC's verity
# bundles, the FAT boot partition and the network need; udev and RAUC load them).
INITRD_MODULES = ["sdhci-pci", "ext4"]
ROOT_MODULES = INITRD_MODULES + ["loop", "dm-verity", "squashfs", "vfat", "nls_cp437", "nls_ascii",
                                 "nls_iso8859-1", "nls_utf8", "virtio_net", "virtio_pci", "nbd",
                                 "overlay"]

# The card (the .wks): sizes in MiB.
BOOT_MB, SLOT_MB, DATA_MB, HOME_MB = 100, 1024, 100, 500
CARD_BYTES = 4 << 30  # QEMU's SD card must be a power of two in size
COMPATIBLE = "pinhole-sd-twin"
MACHINE = "sd-twin"
BOARD = "rpi5"


def say(msg: str) -> None:
    print(f"sd-twin: {msg}", file=sys.stderr, flush=True)


class TwinError(RuntimeError):
    pass


def run(cmd: list[str], *, timeout: float = 600, cwd: Path | None = None, env: dict | None = None,
        quiet: bool = True, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, env=env, text=True, input=input, timeout=timeout,
                       stdout=subprocess.PIPE if quiet else None, stderr=subprocess.STDOUT if quiet else None)
    if check and p.returncode != 0:
        out = (p.stdout or "")[-4000:]
        raise TwinError(f"`{' '.join(map(str, cmd))}` exited {p.returncode}:\n{out}")
    return p


def key_of(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, Path):
            h.update(p.read_bytes() if p.is_file() else str(p).encode())
        else:
            h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def stage(name: str, key: str) -> tuple[Path, bool]:
    """A cache directory for one part; True when a finished one is there."""
    d = CACHE / f"{name}-{key}"
    return d, (d / ".done").exists()


def finish(d: Path, t0: float, what: str) -> None:
    (d / ".done").write_text(f"{time.time() - t0:.1f}\n")
    say(f"{what}: {time.time() - t0:.1f} s -> {d}")


# ---------------------------------------------------------------------------- host tools

HOST_PACKAGES = {
    "qemu-system-aarch64": "qemu-system-arm", "qemu-aarch64-static": "qemu-user-static",
    "arch-test": "arch-test", "mmdebstrap": "mmdebstrap", "mkimage": "u-boot-tools",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu", "bison": "bison", "flex": "flex",
    "bc": "bc", "dtc": "device-tree-compiler", "meson": "meson", "ninja": "ninja-build",
    "pkg-config": "pkgconf", "mkfs.vfat": "dosfstools", "mcopy": "mtools", "sfdisk": "fdisk",
    "mksquashfs": "squashfs-tools", "mkfs.ext4": "e2fsprogs", "cpio": "cpio", "depmod": "kmod",
    "openssl": "openssl", "ssh": "openssh-client", "ssh-keygen": "openssh-client",
    "systemctl": "systemd", "fw_printenv": "libubootenv-tool",
}
# Build dependencies without a command of their own: U-Boot's host tools and rauc-native.
HOST_LIBRARIES = ["libssl-dev", "libgnutls28-dev", "python3-setuptools", "python3-pyelftools",
                  "uuid-dev", "libglib2.0-dev", "swig", "python3-dev"]


def ensure_host() -> None:
    missing = sorted({pkg for cmd, pkg in HOST_PACKAGES.items() if not shutil.which(cmd)})
    for pkg in HOST_LIBRARIES:
        if subprocess.run(["dpkg", "-s", pkg], capture_output=True).returncode != 0:
            missing.append(pkg)
    if missing:
        if os.geteuid() != 0:
            raise TwinError(f"missing: {' '.join(missing)} (apt-get install -y {' '.join(missing)}, as root)")
        say(f"apt-get install {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
        if run(cmd, env=env, check=False, timeout=1800).returncode != 0:
            run(["apt-get", "update", "-qq"], env=env, timeout=600)
            run(cmd, env=env, timeout=1800)
    ensure_binfmt()


def ensure_binfmt() -> None:
    """arm64 programs run here through qemu-user (mmdebstrap runs the root's maintainer scripts)."""
    bm = Path("/proc/sys/fs/binfmt_misc")
    if not (bm / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(bm)], check=False)
    if (bm / "qemu-aarch64").exists():
        return
    conf = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
    if not conf.exists() or not (bm / "register").exists():
        raise TwinError("arm64 binaries cannot run here: binfmt_misc is not mounted or qemu-user-static "
                        "has no /usr/lib/binfmt.d/qemu-aarch64.conf")
    line = conf.read_text().strip().splitlines()[-1]
    try:
        (bm / "register").write_text(line)  # the kernel decodes the \x escapes itself
    except OSError as e:
        raise TwinError(f"registering qemu-aarch64 with binfmt_misc failed: {e}") from e


# ---------------------------------------------------------------------------- sources


def fetch(name: str) -> Path:
    """A source tarball from Debian's archive, checked against its pinned SHA-256, unpacked."""
    rel, sha, top = SOURCES[name]
    src = CACHE / "src"
    src.mkdir(parents=True, exist_ok=True)
    tarball = src / Path(rel).name
    if not tarball.exists() or hashlib.sha256(tarball.read_bytes()).hexdigest() != sha:
        say(f"downloading {MIRROR}/{rel}")
        tmp = tarball.with_suffix(".part")
        run(["curl", "-fsS", "--retry", "3", "-o", str(tmp), f"{MIRROR}/{rel}"], timeout=900)
        got = hashlib.sha256(tmp.read_bytes()).hexdigest()
        if got != sha:
            tmp.unlink()
            raise TwinError(f"{rel}: SHA-256 {got}, expected {sha} (the archive changed, or the mirror lies)")
        tmp.replace(tarball)
    tree = src / top
    if not (tree / ".unpacked").exists():
        shutil.rmtree(tree, ignore_errors=True)
        run(["tar", "-xf", str(tarball), "-C", str(src)], timeout=600)
        (tree / ".unpacked").write_text(sha)
    return tree


# ---------------------------------------------------------------------------- U-Boot


def uboot() -> Path:
    d, done = stage("u-boot", key_of(SOURCES["u-boot"], UBOOT_FRAGMENT))
    if done:
        return d / "u-boot.bin"
    tree = fetch("u-boot")
    t0 = time.time()
    shutil.rmtree(d, ignore_errors=True)
    build = d / "build"
    build.mkdir(parents=True)
    env = dict(os.environ, CROSS_COMPILE="aarch64-linux-gnu-", ARCH="arm")
    frag = d / "twin.config"
    frag.write_text(UBOOT_FRAGMENT)
    run(["make", f"O={build}", "qemu_arm64_defconfig"], cwd=tree, env=env)
    run(["scripts/kconfig/merge_config.sh", "-O", str(build), "-m", str(build / ".config"), str(frag)],
        cwd=tree, env=env)
    run(["make", f"O={build}", "olddefconfig"], cwd=tree, env=env)
    config = (build / ".config").read_text()
    for line in UBOOT_FRAGMENT.splitlines():
        want = line if not line.startswith("# ") else line
        if want not in config.splitlines():
            raise TwinError(f"U-Boot's configuration lost `{want}` (a dependency is missing)")
    say("building U-Boot (qemu_arm64 + the Pi's environment settings)")
    run(["make", f"O={build}", f"-j{os.cpu_count() or 2}"], cwd=tree, env=env, timeout=1800)
    shutil.copy2(build / "u-boot.bin", d / "u-boot.bin")
    shutil.copy2(build / ".config", d / "u-boot.config")
    shutil.rmtree(build)
    finish(d, t0, "U-Boot")
    return d / "u-boot.bin"


def boot_script(out_dir: Path) -> Path:
    """boot.scr as rpi-u-boot-scr makes it (its do_compile): the layer's boot.cmd.in with
    KERNEL_IMAGETYPE=Image, KERNEL_BOOTCMD=booti (aarch64) and BOOT_MEDIA=mmc, then mkimage."""
    src = LAYER / "dynamic-layers/rauc-raspberrypi/recipes-bsp/rpi-u-boot-scr/files/boot.cmd.in"
    cmd = out_dir / "boot.cmd"
    cmd.write_text(src.read_text().replace("@@KERNEL_IMAGETYPE@@", "Image")
                   .replace("@@KERNEL_BOOTCMD@@", "booti").replace("@@BOOT_MEDIA@@", "mmc"))
    scr = out_dir / "boot.scr"
    run(["mkimage", "-A", "arm64", "-T", "script", "-C", "none", "-n", "Boot script", "-d", str(cmd), str(scr)])
    return scr


# ---------------------------------------------------------------------------- RAUC


def sysroot() -> Path:
    """The arm64 -dev packages RAUC builds against (extracted, no maintainer scripts)."""
    return debian_extract("sysroot-arm64", RAUC_SYSROOT_PACKAGES)


def _meson_build(src: Path, build: Path, dest: Path, options: list[str], cross: Path | None) -> None:
    args = ["meson", "setup", str(build), "--wrap-mode=nodownload", "--prefix=/usr",
            "--buildtype=release", *options]
    if cross:
        args += ["--cross-file", str(cross)]
    run(args, cwd=src, timeout=600)
    run(["ninja", "-C", str(build)], timeout=1800)
    run(["meson", "install", "-C", str(build), "--destdir", str(dest)], timeout=600)


def rauc_target() -> Path:
    """RAUC 1.15.2 for the guest, cross-compiled with meta-rauc's options: a DESTDIR tree."""
    d, done = stage("rauc-arm64", key_of(SOURCES["rauc"], RAUC_TARGET_OPTIONS, RAUC_SYSROOT_PACKAGES))
    if done:
        return d / "dest"
    src = fetch("rauc")
    sr = sysroot()
    t0 = time.time()
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    cross = d / "cross.ini"
    cross.write_text(f"""[binaries]
c = 'aarch64-linux-gnu-gcc'
strip = 'aarch64-linux-gnu-strip'
pkgconfig = 'pkg-config'

[built-in options]
c_args = ['--sysroot={sr}']
c_link_args = ['--sysroot={sr}']

[properties]
sys_root = '{sr}'
pkg_config_libdir = '{sr}/usr/lib/aarch64-linux-gnu/pkgconfig:{sr}/usr/share/pkgconfig'

[host_machine]
system = 'linux'
cpu_family = 'aarch64'
cpu = 'cortex-a72'
endian = 'little'
""")
    say("building RAUC 1.15.2 for arm64")
    _meson_build(src, d / "build", d / "dest", RAUC_TARGET_OPTIONS, cross)
    shutil.rmtree(d / "build")
    finish(d, t0, "RAUC (arm64)")
    return d / "dest"


def rauc_host() -> Path:
    """RAUC 1.15.2 for this machine (rauc-native: makes the bundles)."""
    d, done = stage("rauc-host", key_of(SOURCES["rauc"], RAUC_HOST_OPTIONS))
    if done:
        return d / "dest/usr/bin/rauc"
    src = fetch("rauc")
    t0 = time.time()
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    say("building RAUC 1.15.2 for this host (bundles)")
    _meson_build(src, d / "build", d / "dest", RAUC_HOST_OPTIONS, None)
    shutil.rmtree(d / "build")
    finish(d, t0, "RAUC (host)")
    return d / "dest/usr/bin/rauc"


# ---------------------------------------------------------------------------- kernel, initramfs


def debian_extract(name: str, packages: list[str]) -> Path:
    d, done = stage(name, key_of(SUITE, MIRROR, packages))
    if done:
        return d / "root"
    t0 = time.time()
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    say(f"mmdebstrap (extract): {' '.join(packages)}")
    run(["mmdebstrap", "--arch=arm64", "--variant=extract", f"--include={','.join(packages)}",
         "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
         "--dpkgopt=path-exclude=/usr/share/locale/*", SUITE, str(d / "root"), MIRROR], timeout=1200)
    finish(d, t0, name)
    return d / "root"


@dataclass
class Kernel:
    version: str
    image: Path         # the uncompressed arm64 Image (booti)
    modules: Path       # lib/modules/VERSION of the package
    busybox: Path


def kernel() -> Kernel:
    root = debian_extract("kernel-arm64", ["linux-image-arm64", "busybox-static"])
    vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise TwinError(f"no kernel in {root}/boot")
    version = vmlinuz[-1].name.removeprefix("vmlinuz-")
    image = root.parent / "Image"
    if not image.exists():
        data = vmlinuz[-1].read_bytes()
        image.write_bytes(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    mods = root / "lib/modules" / version
    if not (mods / "modules.dep").exists():
        run(["depmod", "-b", str(root), version])
    return Kernel(version, image, mods, root / "bin/busybox")


def module_files(k: Kernel, names: list[str]) -> list[str]:
    """The .ko files (relative to lib/modules/VERSION) `names` need, dependencies first."""
    base = k.modules.parent.parent.parent
    out: list[str] = []
    for name in names:
        p = run(["modprobe", "-d", str(base), "-S", k.version, "--show-depends", name], check=False)
        if p.returncode != 0:
            if "builtin" in p.stdout or "not found" not in p.stdout:
                continue
            raise TwinError(f"kernel {k.version} has no module {name}: {p.stdout.strip()}")
        for line in p.stdout.splitlines():
            m = re.match(r"insmod (\S+)", line)
            if m:
                rel = str(Path(m.group(1)).relative_to(k.modules))
                if rel not in out:
                    out.append(rel)
    return out


INIT = """#!/bin/busybox sh
# The twin's initramfs (board/sd_twin.py): load the SD card's and ext4's modules, mount the
# root= the boot script chose, read-only, and hand over to systemd. The Pi needs none of this.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m; done
root=
for arg in $(cat /proc/cmdline); do
  case "$arg" in root=*) root="${arg#root=}" ;; esac
done
i=0
while [ ! -b "$root" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /newroot
mount -t ext4 -o ro "$root" /newroot || { echo "initramfs: cannot mount root '$root'"; exit 1; }
umount /proc /sys
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot /sbin/init
"""

PANIC_INIT = """#!/bin/busybox sh
# A slot that never reaches user space (board/sd_twin.py --panic): the first process exits, so
# the kernel panics ("Attempted to kill init") and, with the boot script's panic=5, restarts.
echo "sd-twin: this slot's init exits on purpose: kernel panic next"
exit 1
"""


def initramfs(k: Kernel, out: Path, panic: bool = False) -> None:
    with tempfile.TemporaryDirectory(dir=CACHE) as t:
        tree = Path(t)
        for sub in ("bin", "proc", "sys", "dev", "newroot"):
            (tree / sub).mkdir()
        shutil.copy2(k.busybox, tree / "bin/busybox")
        mods = module_files(k, INITRD_MODULES)
        for rel in mods:
            dst = tree / "lib/modules" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(k.modules / rel, dst)
        (tree / "modules.order").write_text("\n".join(mods) + "\n")
        init = tree / "init"
        init.write_text(PANIC_INIT if panic else INIT)
        init.chmod(0o755)
        files = run(["find", ".", "-print0"], cwd=tree).stdout
        p = subprocess.run(["cpio", "-o", "-H", "newc", "--null", "--quiet"], cwd=tree, input=files.encode(),
                           capture_output=True, check=True)
        out.write_bytes(gzip.compress(p.stdout, compresslevel=6))


# ---------------------------------------------------------------------------- the Debian root


def base_root() -> Path:
    d, done = stage("root-arm64", key_of(SUITE, MIRROR, ROOT_PACKAGES))
    if done:
        return d / "root"
    t0 = time.time()
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    say(f"mmdebstrap: the guest's arm64 root ({len(ROOT_PACKAGES)} packages; maintainer scripts "
        "under qemu-user, a few minutes)")
    run(["mmdebstrap", "--arch=arm64", "--variant=minbase", f"--include={','.join(ROOT_PACKAGES)}",
         "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
         "--dpkgopt=path-exclude=/usr/share/locale/*", SUITE, str(d / "root"), MIRROR], timeout=1800)
    finish(d, t0, "arm64 root")
    return d / "root"


# ---------------------------------------------------------------------------- a slot


def _install(src: Path, dst: Path, mode: int = 0o644) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    shutil.copyfile(src, dst)
    dst.chmod(mode)


def _write(dst: Path, text: str, mode: int = 0o644) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink():
        dst.unlink()
    dst.write_text(text)
    dst.chmod(mode)


SSHDGENKEYS = """[Unit]
# The twin's stand-in for OE-core's sshdgenkeys.service (Debian's OpenSSH makes its keys in its
# postinst, into /etc/ssh): the host keys of the image's read-only root live in /data/ssh
# (pinhole-os.conf: OPENSSH_HOST_KEY_DIR_READONLY_CONFIG), made on the first boot. ECDSA and
# Ed25519 only: OE-core's also makes an RSA key, which under emulation takes minutes.
Description=OpenSSH host keys on /data (sd-twin stand-in for OE-core's sshdgenkeys)
RequiresMountsFor=/data
Before=ssh.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mkdir -p /data/ssh && for t in ecdsa ed25519; do [ -s /data/ssh/ssh_host_$${t}_key ] || ssh-keygen -q -t $$t -N "" -f /data/ssh/ssh_host_$${t}_key; done'

[Install]
WantedBy=multi-user.target
"""

# meta-raspberrypi's u-boot bbappend installs this as /etc/fw_env.config (files/fw_env.config):
# the environment U-Boot keeps in uboot.env on the boot partition, 16 KiB.
FW_ENV_CONFIG = "/boot/uboot.env 0x0000    0x4000\n"


def slot_tree(tree: Path, *, version: str, binary: Path, keyring: Path, never_ready: bool = False,
              panic: bool = False, filler_mb: int = 0, trial_s: int = 0) -> None:
    """A root slot: the Debian root, then what the image's recipes install, from the repository.
    never_ready: pinhole never sends READY=1; panic: the slot's first process exits (a kernel
    panic before user space); filler_mb: incompressible bytes (a bigger slot); trial_s: the trial
    deadline of pinhole-ota-deadline.service (PINHOLE_OTA_TRIAL_S) instead of /etc/pinhole-ota.conf's
    300 s, for tests that wait for a trial to fail."""
    k = kernel()
    base = base_root()
    if tree.exists():
        shutil.rmtree(tree)
    run(["cp", "-a", "--reflink=auto", str(base), str(tree)], timeout=600)
    t = tree

    # --- RAUC 1.15.2 (meta-rauc rauc, rauc-service) and its configuration (rauc-conf with
    # meta-pinhole's bbappend: system.conf and the keyring in /usr/lib/rauc).
    run(["cp", "-a", f"{rauc_target()}/.", str(t)])
    rauc_dir = LAYER / "dynamic-layers/rauc/recipes-core/rauc/files"
    _write(t / "usr/lib/rauc/system.conf",
           (rauc_dir / "system.conf").read_text().replace("@@MACHINE@@", MACHINE))
    _install(keyring, t / "usr/lib/rauc/ca.cert.pem")
    _write(t / "etc/fw_env.config", FW_ENV_CONFIG)

    # --- pinhole (recipes-pinhole/pinhole/pinhole_git.bb do_install:append)
    if never_ready:
        # pinhole's daemon never becomes ready (never sends READY=1); its subcommands, such as the
        # first-boot import every boot runs, work.
        _install(binary, t / "usr/libexec/sd-twin/pinhole", 0o755)
        _write(t / "usr/bin/pinhole", "#!/bin/sh\n# sd-twin: a pinhole whose daemon never becomes "
               "ready; its subcommands work\ncase \"$1\" in\n  -*) exec sleep infinity ;;\nesac\n"
               "exec /usr/libexec/sd-twin/pinhole \"$@\"\n", 0o755)
    else:
        _install(binary, t / "usr/bin/pinhole", 0o755)
    sysd = t / "usr/lib/systemd/system"
    _install(REPO / "systemd/pinhole.service", sysd / "pinhole.service")
    _install(REPO / "systemd/cloudflared.service", sysd / "cloudflared.service")
    _install(REPO / "systemd/50-pinhole-port80.conf", t / "usr/lib/sysctl.d/50-pinhole-port80.conf")
    _install(REPO / f"board/{BOARD}/pinhole.toml", t / "etc/pinhole/pinhole.toml")

    # --- pinhole-appliance (recipes-pinhole/pinhole-appliance/pinhole-appliance_1.0.bb do_install)
    app = LAYER / "recipes-pinhole/pinhole-appliance/files"
    _install(app / "pinhole-setup-import.service", sysd / "pinhole-setup-import.service")
    _install(app / "var-lib-private-pinhole.mount", sysd / "var-lib-private-pinhole.mount")
    _install(app / "pinhole.service.d/50-appliance.conf", sysd / "pinhole.service.d/50-appliance.conf")
    _install(app / "sshdgenkeys.service.d/50-data.conf", sysd / "sshdgenkeys.service.d/50-data.conf")
    _install(app / "wpa_supplicant@wlan0.service.d/50-data.conf",
             sysd / "wpa_supplicant@wlan0.service.d/50-data.conf")
    _install(app / "pinhole-tmpfiles.conf", t / "usr/lib/tmpfiles.d/pinhole.conf")
    _install(app / "journald-pinhole.conf", t / "usr/lib/systemd/journald.conf.d/50-pinhole.conf")
    _install(app / "20-wired.network", t / "usr/lib/systemd/network/20-wired.network")
    _install(app / "25-wireless.network", t / "usr/lib/systemd/network/25-wireless.network")
    _install(app / "sshd-pinhole.conf", t / "etc/ssh/sshd_config.d/50-pinhole.conf", 0o600)

    # --- pinhole-ota (dynamic-layers/rauc/recipes-core/pinhole-ota/pinhole-ota_1.0.bb do_install)
    ota = REPO / "ota/device"
    _install(ota / "pinhole-ota-device", t / "usr/libexec/pinhole-ota-device", 0o755)
    for unit in ("pinhole-ota-boot.service", "pinhole-ota-commit.service", "pinhole-ota-deadline.service"):
        _install(ota / unit, sysd / unit)
    _install(ota / "pinhole-ota.conf", t / "etc/pinhole-ota.conf")
    _install(ota / "boot-complete.target.d/50-pinhole-ota-cloudflared.conf",
             sysd / "boot-complete.target.d/50-pinhole-ota-cloudflared.conf")

    if trial_s:
        _write(sysd / "pinhole-ota-deadline.service.d/50-sd-twin-trial.conf",
               f"[Service]\nEnvironment=PINHOLE_OTA_TRIAL_S={trial_s}\n")

    # --- OpenSSH as the image has it: keys on /data, made on the first boot (see SSHDGENKEYS).
    for f in (t / "etc/ssh").glob("ssh_host_*"):
        f.unlink()
    _write(sysd / "sshdgenkeys.service", SSHDGENKEYS)
    _write(t / "etc/ssh/sshd_config.d/40-sd-twin-hostkeys.conf",
           "# sd-twin: the image's read-only-rootfs sshd_config names these host keys\n"
           "HostKey /data/ssh/ssh_host_ecdsa_key\n"
           "HostKey /data/ssh/ssh_host_ed25519_key\n")
    _write(sysd / "ssh.service.d/50-sd-twin.conf",
           "[Unit]\nRequires=sshdgenkeys.service\nAfter=sshdgenkeys.service\n")

    # --- the image's base files: hostname, os-release with the build's version, fstab (the
    # partitions of the .wks), a read-only root with volatile /var as OE-core's
    # read-only-rootfs makes it (tmpfs where a running system writes).
    _write(t / "etc/hostname", "pinhole\n")
    osr = (t / "usr/lib/os-release").read_text()
    (t / "etc/os-release").unlink(missing_ok=True)
    _write(t / "etc/os-release", osr + f'IMAGE_ID=pinhole-image\nIMAGE_VERSION="{version}"\n')
    _write(t / "etc/fstab", """# sd-twin: the partitions of pinhole-sdimage-dual-raspberrypi.wks.in, as the image mounts them
/dev/mmcblk0p1  /boot  vfat   defaults  0  0
/dev/mmcblk0p5  /data  ext4   defaults  0  0
/dev/mmcblk0p6  /home  ext4   defaults  0  0
tmpfs  /var/volatile  tmpfs  defaults  0  0
tmpfs  /tmp           tmpfs  mode=1777,nosuid,nodev  0  0
""")
    # OE-core's base-files: /var/log and /var/tmp are links into /var/volatile.
    for d in ("log", "tmp"):
        p = t / "var" / d
        shutil.rmtree(p, ignore_errors=True)
        p.unlink(missing_ok=True)
        p.symlink_to(f"volatile/{d}")
    # OE-core's volatile-binds (systemd RDEPENDS on it): /var/lib, /var/cache and /var/spool are
    # copied into /var/volatile and bound back over themselves at boot, before local-fs.target.
    # This unit is the twin's stand-in for its units (volatile-binds.service.in and mount-copybind
    # of OE-core, which cannot be fetched where tests run), with their ordering: no default
    # dependencies, after /var/volatile is mounted, before local-fs.target.
    for d in ("lib", "cache", "spool"):
        _write(sysd / f"var-volatile-{d}.service", f"""[Unit]
Description=Bind mount volatile /var/{d} (sd-twin stand-in for OE-core's volatile-binds)
DefaultDependencies=no
Before=local-fs.target
RequiresMountsFor=/var/volatile /var
ConditionPathIsReadWrite=!/var/{d}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mkdir -p /var/volatile/{d} && cp -a /var/{d}/. /var/volatile/{d}/ && mount --bind /var/volatile/{d} /var/{d}'
ExecStop=/bin/umount /var/{d}

[Install]
WantedBy=local-fs.target
""")
    _write(t / "usr/lib/tmpfiles.d/sd-twin-volatile.conf", "d /var/volatile/log 0755 root root -\n"
           "d /var/volatile/tmp 1777 root root -\n")
    for d in ("data", "boot", "home", "var/lib/private/pinhole", "var/spool", "var/volatile"):
        (t / d).mkdir(parents=True, exist_ok=True)
    (t / "var/lib/private").chmod(0o700)
    _write(t / "etc/machine-id", "")

    # --- systemd: enable what the recipes' SYSTEMD_SERVICE enables; mask what a Debian root
    # starts that the image has not.
    enable = ["pinhole.service", "cloudflared.service", "pinhole-setup-import.service",
              "pinhole-ota-boot.service", "pinhole-ota-commit.service", "pinhole-ota-deadline.service",
              "rauc.service", "systemd-networkd.service", "sshdgenkeys.service", "ssh.service",
              "var-volatile-lib.service", "var-volatile-cache.service", "var-volatile-spool.service"]
    run(["systemctl", f"--root={t}", "enable", *enable])
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer", "getty@tty1.service", "e2scrub_all.timer",
                 "e2scrub_reap.service", "fstrim.timer", "systemd-timesyncd.service", "dpkg-db-backup.timer",
                 "systemd-networkd-wait-online.service"):
        p = t / "etc/systemd/system" / unit
        p.unlink(missing_ok=True)
        p.symlink_to("/dev/null")

    # --- the kernel, its modules and the twin's initramfs (see the module's docstring)
    (t / "boot").mkdir(exist_ok=True)
    shutil.copyfile(k.image, t / "boot/Image")
    initramfs(k, t / "boot/initrd", panic=panic)
    mods = module_files(k, ROOT_MODULES)
    mdst = t / "lib/modules" / k.version
    shutil.rmtree(mdst, ignore_errors=True)
    for rel in mods:
        _install(k.modules / rel, mdst / rel)
    for f in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (k.modules / f).exists():
            _install(k.modules / f, mdst / f)
    run(["depmod", "-b", str(t), k.version])

    if filler_mb:
        with open(t / "usr/share/sd-twin-filler.bin", "wb") as f:
            for _ in range(filler_mb):
                f.write(os.urandom(MiB))


def ext4_image(tree: Path, out: Path, size_mb: int | None = None, label: str = "") -> Path:
    """The slot's file system; size_mb None: sized to the content plus 30 % (IMAGE_OVERHEAD_FACTOR)."""
    if size_mb is None:
        used = int(run(["du", "-s", "--block-size=1M", str(tree)]).stdout.split()[0])
        size_mb = int(used * 1.3) + 16
    out.unlink(missing_ok=True)
    args = ["mkfs.ext4", "-q", "-F", "-d", str(tree)]
    if label:
        args += ["-L", label]
    run([*args, str(out), f"{size_mb}M"], timeout=600)
    return out


# ---------------------------------------------------------------------------- keys, bundles


def make_keys(where: Path, name: str) -> tuple[Path, Path]:
    where.mkdir(parents=True, exist_ok=True)
    key, cert = where / f"{name}.key.pem", where / f"{name}.cert.pem"
    if not key.exists():
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", "365", "-subj", f"/O=pinhole sd-twin/CN={name}"])
    return key, cert


def make_bundle(image: Path, out: Path, *, version: str, key: Path, cert: Path,
                compatible: str = COMPATIBLE) -> Path:
    """A verity bundle (the image's format, bundle-formats=-plain) made by RAUC 1.15.2."""
    rauc = rauc_host()
    with tempfile.TemporaryDirectory(dir=CACHE) as td:
        d = Path(td) / "content"
        d.mkdir()
        try:
            os.link(image, d / "rootfs.ext4")
        except OSError:
            shutil.copy2(image, d / "rootfs.ext4")
        (d / "manifest.raucm").write_text(f"""[update]
compatible={compatible}
version={version}
description=pinhole sd-twin {version}

[bundle]
format=verity

[image.rootfs]
filename=rootfs.ext4
""")
        out.unlink(missing_ok=True)
        run([str(rauc), "bundle", f"--cert={cert}", f"--key={key}", str(d), str(out)], timeout=900)
    return out


# ---------------------------------------------------------------------------- the card


def wks_partitions() -> list[dict]:
    """The partitions of the image's .wks, in order (what the card is laid out from)."""
    wks = LAYER / "files/wic/pinhole-sdimage-dual-raspberrypi.wks.in"
    parts = []
    for line in wks.read_text().splitlines():
        if not line.startswith("part "):
            continue
        words = line.split()
        p = {"mount": words[1]}
        i = 2
        while i < len(words):
            w = words[i]
            if w.startswith("--"):
                opt, eq, val = w[2:].partition("=")
                if eq:
                    p[opt] = val
                elif i + 1 < len(words) and not words[i + 1].startswith("--"):
                    p[opt] = words[i + 1]
                    i += 1
                else:
                    p[opt] = True
            i += 1
        parts.append(p)
    return parts


def _mb(v: str) -> int:
    m = re.fullmatch(r"(\d+)([MG]?)", v)
    if not m:
        raise TwinError(f"size {v!r} in the .wks is not understood here")
    return int(m.group(1)) * (1024 if m.group(2) == "G" else 1)


def layout() -> list[tuple[str, int, int, str, bool]]:
    """(label, start sector, sectors, fstype, active) per partition, laid out the way wic's direct
    imager does for an msdos table (wic 0.3.1, layout_partitions, as read from its source
    elsewhere: it could not be fetched here to run): one sector for the MBR before the first
    partition, two before each logical one (its EBR), then each start rounded up to the
    partition's --align (KiB); more than four partitions make the fourth and later logical, inside
    an extended partition p4."""
    out = []
    pos = 0
    for i, p in enumerate(wks_partitions()):
        align = int(p.get("align", "1")) * 2  # KiB -> sectors
        size = _mb(p.get("fixed-size") or p.get("size"))
        pos += 1 if i == 0 else 2 if i >= 3 else 0
        pos = -(-pos // align) * align
        out.append((p.get("label", ""), pos, size * 2048, p.get("fstype", ""), bool(p.get("active"))))
        pos += size * 2048
    return out


def vfat_image(out: Path, files: dict[str, Path]) -> Path:
    out.unlink(missing_ok=True)
    run(["mkfs.vfat", "-n", "boot", "-C", str(out), str(BOOT_MB * 1024)])
    for name, src in files.items():
        run(["mcopy", "-o", "-i", str(out), str(src), f"::{name}"])
    return out


def assemble(card: Path, parts: dict[str, Path]) -> Path:
    """The card image: an msdos table as the .wks lays it out, each partition's file system."""
    lay = layout()
    card.unlink(missing_ok=True)
    with open(card, "wb") as f:
        f.truncate(CARD_BYTES)
    lines = ["label: dos", "unit: sectors", ""]
    types = {"vfat": "c", "ext4": "83"}
    ext_start = lay[3][1] - 2  # the extended partition starts at p5's EBR
    for n, (label, start, size, fstype, active) in enumerate(lay, 1):
        if n == 4:
            lines.append(f"start={ext_start}, type=5")
        lines.append(f"start={start}, size={size}, type={types.get(fstype, '83')}" + (", bootable" if active else ""))
    run(["sfdisk", "--no-reread", "--no-tell-kernel", str(card)], input="\n".join(lines) + "\n")
    for label, start, size, _, _ in lay:
        src = parts.get(label)
        if src is None:
            continue
        if src.stat().st_size > size * 512:
            raise TwinError(f"{src} ({src.stat().st_size} bytes) does not fit partition {label} ({size * 512})")
        run(["dd", f"if={src}", f"of={card}", "bs=4M", f"seek={start * 512}", "oflag=seek_bytes",
             "conv=notrunc,sparse", "status=none"], timeout=600)
    return card


def build(binary: Path, version: str = "1.0.0", keyring: Path | None = None) -> dict[str, Path]:
    """Every part, and the pristine card (slot A = `version`, slot B empty, /data and /home
    empty, no uboot.env: U-Boot writes it on the first boot, as on a freshly flashed card)."""
    ensure_host()
    CACHE.mkdir(parents=True, exist_ok=True)
    keys = CACHE / "keys"
    dev_key, dev_cert = make_keys(keys, "dev")
    keyring = keyring or dev_cert
    ub = uboot()
    rauc_host()
    key = key_of(binary, version, keyring, *sorted(p for p in (REPO / "ota/device").rglob("*") if p.is_file()),
                 *sorted(p for p in LAYER.rglob("*") if p.is_file()), *sorted((REPO / "systemd").glob("*")),
                 Path(__file__), ROOT_PACKAGES, ROOT_MODULES)
    d, done = stage("card", key)
    if done:
        return {"card": d / "card.img", "u-boot": ub, "slot": d / "slot.ext4", "key": dev_key, "cert": dev_cert}
    t0 = time.time()
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    say("the root slot (Debian root + the image's files)")
    slot_tree(d / "tree", version=version, binary=binary, keyring=keyring)
    say("file systems and the card")
    ext4_image(d / "tree", d / "slot.ext4", SLOT_MB, "rootfs_A")
    shutil.rmtree(d / "tree")
    with tempfile.TemporaryDirectory(dir=d) as td:
        scr = boot_script(Path(td))
        vfat_image(d / "boot.vfat", {"boot.scr": scr})
    empty = Path(tempfile.mkdtemp(dir=d))
    ext4_image(empty, d / "data.ext4", DATA_MB, "data")
    ext4_image(empty, d / "home.ext4", HOME_MB, "homefs")
    empty.rmdir()
    assemble(d / "card.img", {"boot": d / "boot.vfat", "rootfs_A": d / "slot.ext4", "data": d / "data.ext4",
                              "homefs": d / "home.ext4"})
    for f in ("boot.vfat", "data.ext4", "home.ext4"):
        (d / f).unlink()
    finish(d, t0, "card")
    return {"card": d / "card.img", "u-boot": ub, "slot": d / "slot.ext4", "key": dev_key, "cert": dev_cert}


# ---------------------------------------------------------------------------- booting


def copy_card(src: Path, dst: Path) -> Path:
    run(["cp", "--sparse=always", str(src), str(dst)], timeout=600)
    return dst


def put_on_boot(card: Path, name: str, data: bytes | None) -> None:
    """Write (or with None delete) a file on the card's boot partition (what an owner does with the
    card in a reader), with mtools at the partition's offset."""
    start = layout()[0][1] * 512
    img = f"{card}@@{start}"
    if data is None:
        run(["mdel", "-i", img, f"::{name}"], check=False)
        return
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        run(["mcopy", "-o", "-i", img, f.name, f"::{name}"])


def read_from_boot(card: Path, name: str) -> bytes | None:
    start = layout()[0][1] * 512
    p = subprocess.run(["mtype", "-i", f"{card}@@{start}", f"::{name}"], capture_output=True)
    return p.stdout if p.returncode == 0 else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Guest:
    """One QEMU machine booting a card. Reboots inside the guest are real resets (QEMU restarts
    the machine: U-Boot, the boot script, the kernel); kill() is a power cut."""

    def __init__(self, card: Path, u_boot: Path, log: Path, *, ssh_port: int | None = None,
                 http_port: int | None = None, smp: int = 2, mem_mb: int = 1024):
        self.card, self.u_boot, self.log = card, u_boot, log
        self.ssh_port = ssh_port or free_port()
        self.http_port = http_port or free_port()
        self.smp, self.mem_mb = smp, mem_mb
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def command(self) -> list[str]:
        return ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", str(self.smp),
                "-m", str(self.mem_mb), "-bios", str(self.u_boot), "-display", "none", "-monitor", "none",
                "-serial", "stdio", "-no-user-config", "-nodefaults",
                "-device", "sdhci-pci", "-drive", f"if=none,id=card,format=raw,file={self.card}",
                "-device", "sd-card,drive=card",
                "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22,"
                           f"hostfwd=tcp:127.0.0.1:{self.http_port}-:80",
                "-device", "virtio-net-pci,netdev=net0,romfile=",
                "-device", "virtio-rng-pci"]

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as f:
            f.write(f"\n===== sd-twin: power on ({time.strftime('%H:%M:%S')})\n".encode())
        self.started = time.time()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def console(self, tail: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def wait_for(self, text: str, timeout: float, since: int = 0) -> float:
        """Seconds from power-on until `text` appears on the console (after byte `since`)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise TwinError(f"QEMU exited {self.proc.returncode}:\n{self.console()}")
            try:
                data = self.log.read_bytes()[since:]
            except OSError:
                data = b""
            if text.encode() in data:
                return time.time() - self.started
            time.sleep(0.2)
        raise TwinError(f"no {text!r} on the console within {timeout:.0f} s:\n{self.console()}")

    def kill(self) -> None:
        """Pull the plug."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def alive(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="board/sd_twin.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="make every part and the pristine card")
    b.add_argument("--bin", type=Path, required=True, help="pinhole for aarch64 (board/build-aarch64)")
    b.add_argument("--version", default="1.0.0")
    s = sub.add_parser("boot", help="boot a copy of the pristine card, console on stdout")
    s.add_argument("--bin", type=Path, required=True)
    s.add_argument("--setup", type=Path, help="a pinhole-setup.toml to put on the boot partition")
    s.add_argument("--ssh-port", type=int)
    s.add_argument("--http-port", type=int)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "build":
            parts = build(args.bin.resolve(), args.version)
            print(parts["card"])
        elif args.cmd == "boot":
            parts = build(args.bin.resolve())
            work = Path(tempfile.mkdtemp(prefix="boot-", dir=CACHE))
            card = copy_card(parts["card"], work / "card.img")
            if args.setup:
                put_on_boot(card, "pinhole-setup.toml", args.setup.read_bytes())
            g = Guest(card, parts["u-boot"], work / "console.log", ssh_port=args.ssh_port, http_port=args.http_port)
            say(f"booting {card}; ssh on 127.0.0.1:{g.ssh_port}, http on 127.0.0.1:{g.http_port}; console: {g.log}")
            os.execvp(g.command()[0], g.command())
    except TwinError as e:
        say(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
