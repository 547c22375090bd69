"""Fixtures for pinhole's end-to-end tests: ports, the daemon process, ffmpeg helpers.

The binary is $PINHOLE_BIN (tests/run sets it to target/release/pinhole). Every daemon a test
starts is stopped with SIGTERM at teardown, and the test fails unless it exits 0 within 5 s
without a panic in its log.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHUTDOWN_S = 5.0

# Become a child subreaper, so processes that pinhole leaves behind (an exec: source it did not
# stop) are re-parented to this process, where teardown finds them.
try:
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    SUBREAPER = True
except (OSError, AttributeError):
    SUBREAPER = False


def children() -> list[tuple[int, str, bool]]:
    """(pid, command line, is_zombie) of every process whose parent is this one: our own Popen
    children, and orphans re-parented here (see SUBREAPER)."""
    me = str(os.getpid())
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            lines = (d / "status").read_text().splitlines()
            ppid = next(line.split()[1] for line in lines if line.startswith("PPid:"))
            state = next(line.split()[1] for line in lines if line.startswith("State:"))
            if ppid == me:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                out.append((int(d.name), cmd, state == "Z"))
        except (OSError, StopIteration):
            continue
    return out


def reap_orphans(known: set[int], grace: float = 2.0) -> list[tuple[int, str]]:
    """Children not in `known` (our own Popen pids) are orphans a daemon left behind. Those still
    alive after `grace` s are killed and returned; all of them are reaped."""
    deadline = time.time() + grace
    while True:
        left = [(pid, cmd) for pid, cmd, zombie in children() if pid not in known and not zombie]
        if not left or time.time() >= deadline:
            break
        time.sleep(0.1)
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.05)
    for pid, _, _ in children():
        if pid not in known:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
    return left


# A live H.264 stream from Debian's ffmpeg: libx264, no B-frames, 1 s GOP, paced in real time.
FFMPEG_EXEC = ("ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size={size}:rate={fps} "
               "-c:v libx264 -preset ultrafast -tune zerolatency -bf 0 -g {gop} -f h264 -")


def ffmpeg_exec(size: str = "640x360", fps: int = 30, gop: int = 30, extra: str = "") -> str:
    cmd = FFMPEG_EXEC.format(size=size, fps=fps, gop=gop)
    if extra:
        cmd = cmd.replace(" -f h264 -", f" {extra} -f h264 -")
    return cmd


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinhole_bin() -> str:
    path = Path(os.environ.get("PINHOLE_BIN") or REPO / "target" / "release" / "pinhole")
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"pinhole binary not found at {path}: build it with `cargo build --release -p pinhole` "
                    "(tests/run does) or set PINHOLE_BIN", pytrace=False)
    return str(path)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: tests/run installs it (apt-get install -y ffmpeg)", pytrace=False)
    return path


def run_pinhole(args: list[str], timeout: float = 15.0) -> subprocess.CompletedProcess:
    """Run pinhole to completion (for invocations that must fail or print and exit)."""
    env = dict(os.environ, RUST_BACKTRACE="1")
    try:
        return subprocess.run([pinhole_bin(), *args], capture_output=True, text=True, timeout=timeout,
                              env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`pinhole {' '.join(args)}` still running after {timeout} s; expected it to exit "
                    f"(output so far: {e.stdout!r} {e.stderr!r})")


def http_get(port: int, path: str, timeout: float = 5.0, method: str = "GET") -> tuple[int, dict, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


class Pinhole:
    """One daemon process listening on `self.port` (plus any extra --listen the test passes)."""

    def __init__(self, args: list[str], log_path: Path, port: int):
        self.args, self.log_path, self.port = args, log_path, port
        self.logf = open(log_path, "wb")
        env = dict(os.environ, RUST_BACKTRACE="1")
        self.proc = subprocess.Popen([pinhole_bin(), *args], stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        self.pid = self.proc.pid
        self.stopped = False
        self.others: list[int] = []  # pids of other live daemons (their children are not orphans)

    def log(self) -> str:
        if not self.logf.closed:
            self.logf.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if not self.alive():
                pytest.fail(f"pinhole {self.args} exited with {self.proc.returncode} before /api/status "
                            f"answered; log:\n{self.log_tail()}")
            try:
                code, _, _ = http_get(self.port, "/api/status", timeout=1.0)
                if code == 200:
                    return
                last = f"HTTP {code}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.05)
        pytest.fail(f"/api/status did not answer within {timeout} s (last: {last}); log:\n{self.log_tail()}")

    def get(self, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
        return http_get(self.port, path, method=method)

    def status(self) -> dict:
        code, headers, body = self.get("/api/status")
        assert code == 200, f"/api/status answered {code}: {body[:200]!r}"
        assert headers.get("content-type", "").startswith("application/json"), \
            f"/api/status Content-Type {headers.get('content-type')!r}"
        return json.loads(body)

    def metrics(self) -> dict[str, float]:
        code, _, body = self.get("/metrics")
        assert code == 200, f"/metrics answered {code}"
        return parse_prometheus(body.decode())

    def wait_video(self, timeout: float = 20.0, fragments: int = 3) -> dict:
        """Wait until the source runs and has produced `fragments` fragments; returns the status."""
        deadline = time.time() + timeout
        st = {}
        while time.time() < deadline:
            assert self.alive(), f"pinhole died (exit {self.proc.returncode}); log:\n{self.log_tail()}"
            st = self.status()
            if (st.get("video") or {}).get("codec") and st.get("fragments", 0) >= fragments:
                return st
            time.sleep(0.1)
        pytest.fail(f"no video within {timeout} s; last status {st}; log:\n{self.log_tail()}")

    def rss_kb(self, field: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"{field} missing from /proc/{self.pid}/status")

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = SHUTDOWN_S) -> int:
        """Signal and wait; fails unless the exit is clean (code 0, in time, no panic)."""
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self.logf.close()
                pytest.fail(f"pinhole did not exit within {timeout} s of {signal.Signals(sig).name}; "
                            f"killed; log:\n{self.log_tail()}")
        self.logf.close()
        rc = self.proc.returncode
        log = self.log()
        assert "panicked" not in log, f"pinhole panicked; log:\n{self.log_tail(80)}"
        left = reap_orphans(known={self.pid, *self.others}) if SUBREAPER else []
        assert not left, f"pinhole exited but left its child processes running (killed now): {left}"
        assert rc == 0, f"pinhole exited with {rc} after {signal.Signals(sig).name}; log:\n{self.log_tail()}"
        return rc


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)(?:\s+-?\d+)?$")


def parse_prometheus(text: str) -> dict[str, float]:
    """name{labels} -> value for every sample line (labels kept in the key). Fails on a line that is
    neither a comment nor a sample."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"/metrics: not a Prometheus sample line: {line!r}"
        out[m.group(1)] = float(m.group(2))
    return out


@pytest.fixture
def pinhole(request, tmp_path):
    """Factory: `pinhole(source=..., args=[...])` starts a daemon on a free port and waits for
    /api/status. Every daemon is stopped at teardown and must exit cleanly."""
    started: list[Pinhole] = []

    def start(source: str | None = "testsrc", args: list[str] | None = None, port: int | None = None,
              listen: bool = True, ready: bool = True) -> Pinhole:
        port = port or free_port()
        argv = []
        if listen:
            argv += ["--listen", f"127.0.0.1:{port}"]
        if source is not None:
            argv += ["--source", source]
        argv += args or []
        ph = Pinhole(argv, tmp_path / f"pinhole-{len(started)}.log", port)
        started.append(ph)
        if ready:
            ph.wait_ready()
        return ph

    yield start

    errors = []
    for ph in started:
        ph.others = [o.pid for o in started if o is not ph and o.alive()]
        try:
            ph.stop()
        except (AssertionError, pytest.fail.Exception) as e:
            errors.append(str(e))
    if errors:
        pytest.fail("unclean shutdown:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    require_tool("ffprobe")
    return require_tool("ffmpeg")


def ffmpeg_decode_errors(path: Path) -> str:
    """What `ffmpeg -v error` says while decoding the whole file (empty means a clean decode)."""
    p = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
                       capture_output=True, text=True, timeout=120)
    out = p.stderr.strip()
    if p.returncode != 0:
        out = f"(exit {p.returncode}) {out}"
    return out


def ffprobe_frame_count(path: Path) -> int:
    p = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                        "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"ffprobe failed: {p.stderr}"
    return int(p.stdout.strip().split(",")[0])


def decode_gray(path: Path, width: int, height: int, frames: int) -> list[bytes]:
    p = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", str(path),
                        "-frames:v", str(frames), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                       capture_output=True, timeout=120)
    assert p.returncode == 0, f"ffmpeg gray decode failed: {p.stderr.decode(errors='replace')}"
    size = width * height
    assert len(p.stdout) >= size, f"decoded {len(p.stdout)} bytes, less than one {width}x{height} frame"
    return [p.stdout[i: i + size] for i in range(0, len(p.stdout) - size + 1, size)]


def read_time_band(gray: bytes, width: int, height: int) -> int:
    """The capture time (Unix ms) from testsrc's band: the top height/24 rows (rounded down to even)
    hold 48 equal cells; cell i is white when bit 47-i is set. Each cell is read at its centre."""
    rows = (height // 24) & ~1
    assert rows >= 2, f"{height} rows leave no time band"
    y0, y1 = rows // 4, max(rows // 4 + 1, (3 * rows) // 4)
    value = 0
    for i in range(48):
        x0 = int((i + 0.25) * width / 48)
        x1 = max(x0 + 1, int((i + 0.75) * width / 48))
        total = n = 0
        for y in range(y0, y1):
            row = gray[y * width + x0: y * width + x1]
            total += sum(row)
            n += len(row)
        value = (value << 1) | (1 if total / n >= 128 else 0)
    return value


@pytest.fixture(scope="session")
def h264_clip(tmp_path_factory, ffmpeg) -> Path:
    """4 s of 320x240 30 fps Annex-B H.264 (libx264, no B-frames, 1 s GOP) for exec: sources."""
    path = tmp_path_factory.mktemp("clips") / "clip-320x240.h264"
    p = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                        "testsrc2=size=320x240:rate=30", "-t", "4", "-c:v", "libx264", "-preset", "ultrafast",
                        "-tune", "zerolatency", "-bf", "0", "-g", "30", "-f", "h264", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"could not encode the test clip: {p.stderr}"
    return path


@pytest.fixture(scope="session")
def busy_clip(tmp_path_factory, ffmpeg) -> Path:
    """4 s of 1280x720 30 fps H.264 at ~8 Mbit/s: the test pattern with noise, so the encoder
    really spends the bits (testsrc's clean picture stays far below any bitrate cap)."""
    path = tmp_path_factory.mktemp("clips") / "clip-720p-8M.mp4"  # mp4: raw .h264 cannot loop (no seek)
    p = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                        "testsrc2=size=1280x720:rate=30", "-vf", "noise=alls=20:allf=t", "-t", "4",
                        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-bf", "0",
                        "-g", "30", "-b:v", "8M", "-maxrate", "8M", "-bufsize", "8M", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"could not encode the test clip: {p.stderr}"
    return path


def looped_exec(clip: Path) -> str:
    """exec: source command feeding `clip` in real time, looped forever (costs almost no CPU)."""
    return f"exec:ffmpeg -hide_banner -nostdin -loglevel error -re -stream_loop -1 -i {clip} -c copy -f h264 -"
