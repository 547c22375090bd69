"""Minimal Debian roots made by mmdebstrap, shared by test_systemd.py (boots one) and
test_fresh_build.py (builds pinhole in one).

A root is made once per suite, mirror and package list and cached in tests/.cache/rootfs
(ignored by git); tests that change files in it work on a copy or mount it read-only.
PINHOLE_DEBIAN_MIRROR picks the mirror (default deb.debian.org). Only the suite itself is used,
not its -security or -updates companions.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from conftest import REPO, require_tool

SUITE = "bookworm"
MIRROR = os.environ.get("PINHOLE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE = REPO / "tests" / ".cache" / "rootfs"


def run(cmd: list[str], timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def mmdebstrap_root(packages: list[str] | tuple[str, ...], marker: str, arch: str | None = None) -> Path:
    """A pristine `--variant=minbase` root of SUITE with `packages`, cached by package list.
    `marker` is a path inside the root that only a finished root has (a file of one of the
    packages); a cached root without it is made again. `arch` (e.g. arm64) makes a foreign
    root, whose maintainer scripts run under qemu-user through binfmt (test_release.py)."""
    require_tool("mmdebstrap")
    packages = sorted(set(packages))
    key = hashlib.sha256(" ".join([SUITE, MIRROR, *packages, *([arch] if arch else [])]).encode()).hexdigest()[:12]
    root = CACHE / (f"{SUITE}-{key}" if arch is None else f"{SUITE}-{arch}-{key}")
    if (root / marker).exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f".{root.name}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    p = subprocess.run(
        ["mmdebstrap", "--variant=minbase", f"--include={','.join(packages)}",
         *([f"--architectures={arch}"] if arch else []),
         "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
         "--dpkgopt=path-exclude=/usr/share/doc/*", SUITE, str(tmp), MIRROR],
        capture_output=True, text=True, timeout=900)
    if p.returncode != 0 or not (tmp / marker).exists():
        shutil.rmtree(tmp, ignore_errors=True)
        what = f"exit {p.returncode}" if p.returncode else f"exit 0 but no /{marker} in the root"
        raise AssertionError(f"mmdebstrap {SUITE} with {packages} failed ({what}); is {MIRROR} "
                             f"reachable?\n{p.stderr[-3000:]}")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    print(f"mmdebstrap {SUITE} with {packages}: {time.time() - t0:.1f} s -> {root}")
    return root
