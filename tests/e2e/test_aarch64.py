"""The aarch64 build, run on an emulated arm64 machine: `board/qemu-boot` boots the binary that
`board/build-aarch64 --test` made (Debian's Rust 1.85, a debug build with OpenH264 optimised) under
`qemu-system-aarch64 -M virt -cpu cortex-a72`, with Debian's arm64 kernel from its package and an
initramfs holding busybox, the binary and its libraries. A client on the host, through QEMU's
user-mode networking (a free 127.0.0.1 port forwarded to the guest's 8080), reads `/api/status`
and several seconds of `/api/video/cmaf` from `testsrc?size=320x240&fps=10` and checks the bytes as
the core tests do (cmaf.py: framing, boxes, IDR joins, durations, tfdt continuity, prft), then
decodes them with ffmpeg.

The CPU is emulated in software (TCG), so the source is small and no real-time pace is asserted:
the frames the guest makes must be right, not early. The aarch64 unit tests run elsewhere, under
qemu-user, in tests/run's msrv step (board/build-aarch64 --test).

PINHOLE_AARCH64_BIN overrides the binary (e.g. the release pinhole.stripped of a plain
`board/build-aarch64`). A missing binary fails the test: it is never skipped.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cmaf import TIMESCALE, CmafClient, check_fragments, median_frame_duration, parse_stream
from conftest import REPO, ffmpeg_decode_errors, ffprobe_frame_count, free_port

SIZE = (320, 240)
FPS = 10
SOURCE = f"testsrc?size={SIZE[0]}x{SIZE[1]}&fps={FPS}"
READ_S = 6.0
# A cold cache first downloads Debian's arm64 kernel package (~60 MB) and busybox-static.
BOOT_TIMEOUT_S = 180.0


def rust_version() -> str:
    m = re.search(r'^rust-version = "([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M)
    assert m, "Cargo.toml declares no rust-version"
    return m.group(1)


def aarch64_bin() -> Path:
    default = REPO / "target" / f"debian-rust-{rust_version()}" / "aarch64-unknown-linux-gnu" / "debug" / "pinhole"
    path = Path(os.environ.get("PINHOLE_AARCH64_BIN") or default)
    if not path.is_file():
        pytest.fail(f"the aarch64 binary {path} is missing: build it with `board/build-aarch64 --test` "
                    "(tests/run's msrv step does) or set PINHOLE_AARCH64_BIN", pytrace=False)
    with open(path, "rb") as f:
        head = f.read(20)
    assert head[:4] == b"\x7fELF" and head[18:20] == b"\xb7\x00", f"{path} is not an aarch64 ELF binary"
    return path


class Vm:
    """board/qemu-boot in its own process group, its console in `log_path`."""

    def __init__(self, binary: Path, port: int, log_path: Path, args: list[str]):
        self.port, self.log_path = port, log_path
        self.logf = open(log_path, "wb")
        self.t_start = time.time()
        self.proc = subprocess.Popen(
            [str(REPO / "board" / "qemu-boot"), "--bin", str(binary), "--port", str(port), "--", *args],
            stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def log(self) -> str:
        self.logf.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def wait_status(self, timeout: float) -> dict:
        """Poll /api/status until it answers 200 (QEMU's forward accepts before the guest listens,
        so early attempts are reset) and the source has made a few fragments."""
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"board/qemu-boot exited with {self.proc.returncode} before /api/status answered; "
                            f"console:\n{self.log_tail()}")
            try:
                code, body = self.get("/api/status", timeout=5.0)
                if code == 200:
                    st = json.loads(body)
                    if (st.get("video") or {}).get("codec") and st.get("fragments", 0) >= 3:
                        return st
                    last = f"status {st}"
                else:
                    last = f"HTTP {code}"
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            time.sleep(0.2)
        pytest.fail(f"/api/status with video did not answer within {timeout} s (last: {last}); "
                    f"console:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.logf.close()


@pytest.fixture
def vm(tmp_path):
    binary = aarch64_bin()
    machine = Vm(binary, free_port(), tmp_path / "console.log",
                 ["--listen", "0.0.0.0:8080", "--source", SOURCE])
    yield machine
    machine.stop()


def test_aarch64_binary_boots_in_qemu_system_and_streams(vm, tmp_path, ffmpeg):
    """The cross-built binary on an emulated Cortex-A72: /api/status, then ~6 s of chunked CMAF
    that passes the contract checks and decodes."""
    status = vm.wait_status(BOOT_TIMEOUT_S)
    t_ready = time.time() - vm.t_start
    console = vm.log()
    # It really ran on the emulated arm64 kernel, not on the host.
    m = re.search(r"qemu-boot: (\S+) (\S+), up ([\d.]+) s, starting pinhole", console)
    assert m, f"/init never started pinhole; console:\n{vm.log_tail()}"
    assert m.group(1) == "aarch64", f"uname -m in the VM is {m.group(1)!r}"
    assert "panicked" not in console, f"pinhole panicked in the VM; console:\n{vm.log_tail()}"
    video = status["video"]
    assert (video["width"], video["height"]) == SIZE, f"status video {video}"

    c = CmafClient(vm.port, timeout=20.0)
    try:
        c.check_headers()
        recs = c.read_for(READ_S)
    finally:
        c.close()
    st = parse_stream(recs)
    assert len(st.inits) == 1, f"{len(st.inits)} init segments for a stream that never changes"
    init, frags = st.init, st.fragments
    check_fragments(frags, init, 100)
    assert (init.width, init.height) == SIZE, f"stream is {init.width}x{init.height}, expected {SIZE}"
    assert (init.sps.width, init.sps.height) == SIZE, f"SPS says {init.sps.width}x{init.sps.height}"
    assert init.sps.max_num_reorder_frames == 0, f"max_num_reorder_frames = {init.sps.max_num_reorder_frames}"
    assert video["codec"].lower() == init.codec.lower(), f"status codec {video['codec']!r}, avcC {init.codec!r}"
    media_s = (frags[-1].end - frags[0].tfdt) / TIMESCALE
    assert media_s >= READ_S / 2, \
        f"only {media_s:.2f} s of media in {READ_S} s of reading ({len(frags)} fragments): the guest falls behind"
    med = median_frame_duration(frags)
    assert abs(med - TIMESCALE / FPS) <= 0.1 * TIMESCALE / FPS, \
        f"median sample duration {med} (90 kHz), expected {TIMESCALE / FPS} for {FPS} fps"

    path = tmp_path / "aarch64.mp4"
    path.write_bytes(st.mp4_bytes())
    errors = ffmpeg_decode_errors(path)
    assert errors == "", f"ffmpeg -v error reported: {errors[:2000]}"
    frames = ffprobe_frame_count(path)
    assert frames == st.sample_count, f"ffprobe counted {frames} frames, trun boxes declare {st.sample_count}"
    print(f"aarch64 VM: /api/status with video {t_ready:.1f} s after start (kernel up {m.group(3)} s "
          f"when /init started pinhole); {len(frags)} fragments, {media_s:.1f} s of media in {READ_S} s")
