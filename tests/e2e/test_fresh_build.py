"""The README's first command on a fresh machine: the default features build with nothing but
Debian's Rust and a C/C++ compiler, and the binary they make serves video.

* The machine: a minimal Debian bookworm root made by mmdebstrap (`--variant=minbase` plus
  `build-essential`, `rustc-web` and `cargo-web`, Debian's Rust 1.85, and nothing else: no
  clang, no libv4l, no pkg-config, no nasm), cached in tests/.cache/rootfs like
  test_systemd.py's (debian_root.py). It is mounted read-only; the build works in a scratch
  directory bound into it.
* The crates: fetched on the host by `cargo vendor --locked` (cached in tests/.cache/vendor by
  the hash of Cargo.lock) and handed in read-only as a directory source; the tree itself is the
  work tree's tracked and unignored files, copied.
* The build: `cargo build --offline --locked -j2 --bin pinhole` (what `cargo run` builds) inside
  the root with `systemd-nspawn --private-network`, so nothing can be fetched. A debug build
  (no debug info, not incremental): it runs the same build scripts and C/C++ compiles as
  `--release`, which is what a fresh machine breaks on, without the release profile's
  one-codegen-unit thin-LTO optimisation, the costliest part of a release build on 2 cores;
  the dev profile's opt-level 3 for OpenH264 keeps the test source real-time.
* The binary, still inside the root (so it runs with only the root's libraries): `pinhole
  --version`, then `pinhole --source testsrc?...` on a free 127.0.0.1 port (the container
  shares the host's network); ~4 s of /api/video/cmaf read from the host and checked by
  cmaf.py's reader (init first, then fragments that keep the contract), and SIGTERM ends it
  with exit 0.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cmaf import TIMESCALE, CmafClient, check_fragments, parse_stream
from conftest import REPO, free_port, http_get, require_tool
from debian_root import mmdebstrap_root, run

# What a new user has: Debian's Rust (1.85 in bookworm, the workspace's rust-version) and a
# C/C++ compiler. Nothing else may be added here: that is the point of the test.
PACKAGES = ["build-essential", "cargo-web", "rustc-web"]
VENDOR_CACHE = REPO / "tests" / ".cache" / "vendor"
BUILD_TIMEOUT_S = 1800
SIZE, FPS, FRAGMENT_MS = (320, 240), 15, 200
READ_S = 4.0


def vendored() -> Path:
    """The crates of Cargo.lock as a cargo directory source (fetched on the host; cached)."""
    require_tool("cargo")
    key = hashlib.sha256((REPO / "Cargo.lock").read_bytes()).hexdigest()[:12]
    out = VENDOR_CACHE / key
    if (out / ".complete").exists():
        return out
    VENDOR_CACHE.mkdir(parents=True, exist_ok=True)
    for old in VENDOR_CACHE.iterdir():  # one Cargo.lock at a time: drop the others
        shutil.rmtree(old, ignore_errors=True)
    t0 = time.time()
    tmp = VENDOR_CACHE / f".{key}.{os.getpid()}"
    p = subprocess.run(["cargo", "vendor", "--locked", "--versioned-dirs", "--quiet", str(tmp)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise AssertionError(f"cargo vendor --locked (on the host) exited {p.returncode}:\n{p.stderr[-3000:]}")
    (tmp / ".complete").write_text("")
    tmp.rename(out)
    print(f"cargo vendor: {len(list(out.iterdir())) - 1} crates in {time.time() - t0:.1f} s")
    return out


def copy_tree(dest: Path) -> int:
    """The work tree as a new clone would have it plus uncommitted edits: tracked and untracked
    files that .gitignore does not exclude (so no target/, no tests/.cache)."""
    require_tool("git")
    names = run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
                ).stdout.split("\0")
    n = 0
    for name in filter(None, names):
        src = REPO / name
        if not src.is_file():  # deleted in the work tree, or a submodule
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name)
        n += 1
    return n


class Root:
    """Commands in the read-only root by systemd-nspawn, with `work` bound at /work and the
    vendored crates at /vendor."""

    def __init__(self, root: Path, work: Path, vendor: Path):
        require_tool("systemd-nspawn")
        self.root, self.work, self.vendor = root, work, vendor
        for mount_point in ("work", "vendor"):  # nspawn cannot make them in a read-only root
            (root / mount_point).mkdir(exist_ok=True)

    def argv(self, cmd: list[str], *, offline: bool, extra: tuple[str, ...] = (), pid1: bool = False
             ) -> list[str]:
        """`pid1`: the command is the container's PID 1, so SIGTERM to nspawn reaches it
        (--kill-signal); otherwise nspawn's stub init runs it as PID 2 and reaps for it."""
        return ["systemd-nspawn", "--quiet", "-D", str(self.root), "--read-only", "--register=no",
                "--keep-unit", "--console=pipe", *([] if pid1 else ["--as-pid2"]), f"--bind={self.work}:/work",
                f"--bind-ro={self.vendor}:/vendor", "--chdir=/work/src",
                "--setenv=HOME=/work", "--setenv=CARGO_HOME=/work/cargo-home", "--setenv=TMPDIR=/work/tmp",
                "--setenv=CARGO_TARGET_DIR=/work/target", "--setenv=CARGO_TERM_COLOR=never",
                *(["--private-network"] if offline else []), *extra, "--", *cmd]

    def run(self, cmd: list[str], *, offline: bool = True, timeout: float = 60.0, log: Path | None = None,
            extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        argv = self.argv(cmd, offline=offline, extra=extra)
        if log is None:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        with log.open("wb") as f:
            p = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, stdin=subprocess.DEVNULL)
        return subprocess.CompletedProcess(p.args, p.returncode, log.read_text(errors="replace"), "")


def why_the_build_failed(log: str) -> str:
    """The crates whose build scripts failed and the lines that say what they missed."""
    crates = sorted(set(re.findall(r"failed to run custom build command for `([^`]+)`", log)))
    hints = [line.strip() for line in log.splitlines()
             if re.search(r"(?i)libclang|not found|No such file|could not find|unable to find|error\[", line)]
    out = []
    if crates:
        out.append(f"build scripts that failed: {', '.join(crates)}")
    if hints:
        out.append("what they said:\n  " + "\n  ".join(dict.fromkeys(hints[:12])))
    return "\n".join(out)


@pytest.fixture
def fresh(tmp_path):
    t0 = time.time()
    root_path = mmdebstrap_root(PACKAGES, marker="usr/bin/cargo")
    t_root = time.time() - t0
    vendor = vendored()
    t_vendor = time.time() - t0 - t_root
    work = tmp_path / "work"
    for d in ("src", "cargo-home", "tmp", "target"):
        (work / d).mkdir(parents=True)
    (work / "cargo-home" / "config.toml").write_text(
        '[source.crates-io]\nreplace-with = "vendored-sources"\n\n'
        '[source.vendored-sources]\ndirectory = "/vendor"\n\n[net]\noffline = true\n')
    files = copy_tree(work / "src")
    print(f"root {t_root:.1f} s, vendored crates {t_vendor:.1f} s, {files} files of the tree copied")
    yield Root(root_path, work, vendor)
    shutil.rmtree(work, ignore_errors=True)  # the target dir is ~1 GB; pytest keeps tmp dirs


def test_default_build_needs_only_debians_rust_and_a_c_compiler_and_streams(fresh):
    r = fresh
    # The toolchain is Debian's, and the root has no libclang or libv4l headers to lean on.
    p = r.run(["sh", "-c", "rustc --version && cargo --version && cc --version | head -1 && c++ --version | head -1"])
    assert p.returncode == 0, f"the root's toolchain does not run:\n{p.stdout}\n{p.stderr}"
    toolchain = p.stdout.strip()
    print(toolchain)
    m = re.search(r"^rustc 1\.(\d+)\.", toolchain, re.M)
    assert m and int(m.group(1)) >= 85, f"the root's rustc is not 1.85 or later:\n{toolchain}"
    for absent in ("usr/include/libv4l2.h", "usr/bin/clang", "usr/bin/pkg-config", "usr/bin/nasm"):
        assert not (r.root / absent).exists(), f"/{absent} is in the root: it is not a fresh machine"
    assert not list(r.root.glob("usr/lib/*/libclang*")), "libclang is in the root"

    # The build, offline (no network at all inside), default features, as `cargo run` builds it.
    t0 = time.time()
    log = r.work / "build.log"
    # bash's `time` adds the CPU seconds of the whole build (a figure that other load on the
    # machine does not inflate the way it does the wall time).
    p = r.run(["bash", "-c", "TIMEFORMAT='build cpu: %U user %S sys'; "
               "time cargo build --offline --locked -j2 --bin pinhole"],
              extra=("--setenv=CARGO_PROFILE_DEV_DEBUG=0", "--setenv=CARGO_INCREMENTAL=0"),
              timeout=BUILD_TIMEOUT_S, log=log)
    t_build = time.time() - t0
    out = p.stdout
    cpu = re.search(r"^build cpu: ([\d.]+) user ([\d.]+) sys", out, re.M)
    cpu_s = float(cpu.group(1)) + float(cpu.group(2)) if cpu else float("nan")
    if p.returncode != 0:
        tail = "\n".join(out.splitlines()[-40:])
        pytest.fail(f"the default build failed in the fresh root (exit {p.returncode}, {t_build:.0f} s, "
                    f"{cpu_s:.0f} CPU s)\n"
                    f"{why_the_build_failed(out)}\n--- last lines of cargo's output:\n{tail}", pytrace=False)
    compiled = len(re.findall(r"^\s*Compiling ", out, re.M))
    print(f"fresh build: {compiled} crates compiled in {t_build:.0f} s ({cpu_s:.0f} CPU s)")
    binary = r.work / "target" / "debug" / "pinhole"
    assert binary.is_file(), f"cargo build succeeded but left no {binary}"

    # The binary runs in the root, with only the root's libraries.
    p = r.run(["/work/target/debug/pinhole", "--version"])
    version = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M).group(1)
    assert p.returncode == 0 and p.stdout.strip() == f"pinhole {version}", \
        f"pinhole --version: exit {p.returncode}, {p.stdout!r} {p.stderr!r}"
    libs = r.run(["ldd", "/work/target/debug/pinhole"]).stdout
    print("links: " + " ".join(sorted(re.findall(r"^\s*(\S+\.so[.\d]*)", libs, re.M))))
    assert "not found" not in libs, libs

    # It serves the test source; the stream is read from the host.
    port = free_port()
    src = f"testsrc?size={SIZE[0]}x{SIZE[1]}&fps={FPS}"
    daemon_log = r.work / "pinhole.log"
    with daemon_log.open("wb") as f:
        proc = subprocess.Popen(
            r.argv(["/work/target/debug/pinhole", "--listen", f"127.0.0.1:{port}", "--source", src,
                    "--fragment-ms", str(FRAGMENT_MS)], offline=False, pid1=True,
                   extra=("--kill-signal=SIGTERM", "--setenv=RUST_BACKTRACE=1")),
            stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline, last = time.time() + 20, None
        while time.time() < deadline:
            assert proc.poll() is None, \
                f"pinhole in the root exited {proc.returncode}:\n{daemon_log.read_text(errors='replace')[-3000:]}"
            try:
                code, _, _ = http_get(port, "/api/status", timeout=1.0)
                if code == 200:
                    break
                last = f"HTTP {code}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.1)
        else:
            pytest.fail(f"/api/status did not answer within 20 s (last: {last}):\n"
                        f"{daemon_log.read_text(errors='replace')[-3000:]}")
        c = CmafClient(port, timeout=10.0)
        try:
            c.check_headers()
            recs = c.read_for(READ_S)
        finally:
            c.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # nspawn hands it to pinhole (--kill-signal)
        try:
            rc = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            rc = None
    said = daemon_log.read_text(errors="replace")
    assert rc == 0, f"pinhole in the root did not exit 0 on SIGTERM (exit {rc}):\n{said[-3000:]}"
    assert "panicked" not in said, said[-3000:]

    st = parse_stream(recs)  # init first, then fragments
    assert len(st.inits) == 1, f"{len(st.inits)} init segments"
    init, frags = st.init, st.fragments
    assert (init.width, init.height) == SIZE, f"stream is {init.width}x{init.height}, expected {SIZE}"
    assert init.codec.startswith("avc1."), init.codec
    check_fragments(frags, init, FRAGMENT_MS)
    media_s = (frags[-1].end - frags[0].tfdt) / TIMESCALE
    assert media_s >= READ_S / 2, f"only {media_s:.2f} s of media in {READ_S} s ({len(frags)} fragments)"
    print(f"stream: {len(frags)} fragments, {media_s:.1f} s of media, {init.codec} {init.width}x{init.height}")
