"""Hostile clients on the LAN listener: 1,000 idle connections, a slowloris head, a 1 MB head,
and `../` in every path, all while a normal viewer watches. The viewer must not notice (no gap
in its fragments), memory must stay bounded, and each attack gets the right answer.

The attacker connects from 127.0.0.2 (loopback on Linux), the viewer from 127.0.0.1: limits are
per client address, as they would be on a LAN."""

from __future__ import annotations

import resource
import socket
import threading
import time

from access_helpers import request
from cmaf import CmafClient, StreamEnded

SOURCE = "testsrc?size=320x240&fps=15&bitrate=300k"
ATTACKER = "127.0.0.2"
PER_CLIENT = 32  # limits::MAX_CONNECTIONS_PER_CLIENT
HEADER_TIMEOUT_S = 10.0  # limits::HEADER_TIMEOUT
RSS_GROWTH_KB = 3 * 1024


class Viewer(threading.Thread):
    """Reads the chunked stream and records the largest gap between records."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.client = CmafClient(port, timeout=5.0)
        self.client.check_headers()
        self.stop = threading.Event()
        self.records = 0
        self.max_gap = 0.0
        self.error: str | None = None

    def run(self) -> None:
        last = time.monotonic()
        try:
            while not self.stop.is_set():
                self.client.read_record()
                now = time.monotonic()
                self.max_gap = max(self.max_gap, now - last)
                last = now
                self.records += 1
        except (StreamEnded, OSError, AttributeError, ValueError) as e:  # the last two: closed under us
            if not self.stop.is_set():
                self.error = repr(e)


def raw(port: int, data: bytes, source: str = ATTACKER, timeout: float = 5.0) -> bytes:
    """Send bytes, read until the server closes (or timeout); what came back."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and b"Content-Length: 0" in out:
                break
        return out
    finally:
        s.close()


def test_hostile_clients_do_not_disturb_a_normal_viewer(pinhole):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    ph = pinhole(source=SOURCE)
    ph.wait_video(fragments=3)
    port = ph.port
    viewer = Viewer(port)
    viewer.start()
    time.sleep(0.5)
    rss0 = ph.rss_kb()

    # A slowloris head: a byte every half second, never finished. Runs alongside the rest.
    slow_result: dict = {}

    def slowloris() -> None:
        s = socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT_S + 5,
                                     source_address=("127.0.0.3", 0))
        t0 = time.monotonic()
        try:
            s.sendall(b"GET /api/status HTTP/1.1\r\nHost: x\r\n")
            while time.monotonic() - t0 < HEADER_TIMEOUT_S + 4:
                s.sendall(b"X")
                time.sleep(0.5)
            slow_result["closed_after"] = None
        except (BrokenPipeError, ConnectionResetError):
            slow_result["closed_after"] = time.monotonic() - t0
        finally:
            s.close()

    slow = threading.Thread(target=slowloris, daemon=True)
    slow.start()

    # 1,000 idle connections from one address: PER_CLIENT are held (until the header timeout),
    # the rest are closed at once.
    idle = []
    for _ in range(1000):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((ATTACKER, 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        idle.append(s)
    time.sleep(0.5)
    closed = 0
    for s in idle:
        s.setblocking(False)
        try:
            closed += s.recv(1) == b""
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed += 1
    assert 1000 - PER_CLIENT - 5 <= closed <= 1000 - PER_CLIENT, \
        f"{closed} of 1000 idle connections from one address were closed; expected all but {PER_CLIENT}"
    # The attacker's held connections do not lock out a normal client from another address.
    assert request(port, "/api/status", timeout=2)[0] == 200

    # A 1 MB head: 431, and nothing else happens.
    big = b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
    answer = raw(port, big, source="127.0.0.4")
    assert answer.startswith(b"HTTP/1.1 431"), f"1 MB header answered {answer[:80]!r}"

    # `../` and friends in every route's path: nothing outside the routes is ever served.
    traversal = [
        "/../../../etc/passwd", "/..%2f..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/etc/passwd",
        "/js/../../Cargo.toml", "/js/..%2f..%2fCargo.toml", "/js/%2e%2e/%2e%2e/Cargo.toml", "//etc/passwd",
        "/js//app.js", "/js/..\\..\\Cargo.toml", "/index.html/../../Cargo.toml", "/login.html/..",
        "/hls/../../etc/passwd", "/hls/..%2f..%2fetc%2fpasswd", "/hls/init-../../x.mp4",
        "/hls/part-1-../../x.m4s", "/hls/seg-..%2f1.m4s", "/hls/stream.m3u8/../../../etc/passwd",
        "/api/../../etc/passwd", "/api/video/cmaf/../../../etc/passwd", "/api/status/..",
        "/metrics/../../etc/passwd", "/web-ui/index.html", "/firmware/pinhole/Cargo.toml",
    ]
    for path in traversal:
        answer = raw(port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode(),
                     source="127.0.0.5")
        status = answer.split(b"\r\n", 1)[0]
        assert status in (b"HTTP/1.1 404 Not Found", b"HTTP/1.1 400 Bad Request"), f"{path}: {status!r}"
        assert b"root:" not in answer and b"[package]" not in answer, f"{path} leaked a file"

    # The slowloris head is cut at the header timeout.
    slow.join(HEADER_TIMEOUT_S + 6)
    after = slow_result.get("closed_after")
    assert after is not None, "a head trickled in for 14 s and the connection was still open"
    assert HEADER_TIMEOUT_S - 1 <= after <= HEADER_TIMEOUT_S + 2, f"slowloris closed after {after:.1f} s"
    # By now the header timeout has also dropped the attacker's held idle connections.
    for s in idle:
        s.close()

    rss1 = ph.rss_kb()
    viewer.stop.set()
    viewer.client.close()
    viewer.join(5)
    assert viewer.error is None, f"the viewer's stream broke: {viewer.error}"
    assert viewer.records > 60, f"the viewer got only {viewer.records} records in ~11 s (7.5 a second expected)"
    assert viewer.max_gap < 1.0, f"the viewer waited {viewer.max_gap:.2f} s for a record during the attacks"
    print(f"RSS {rss0} -> {rss1} kB ({rss1 - rss0:+d}) under the attacks")
    # Measured on this machine (2026-12-02, two runs under a load average of ~20): +956 and
    # +972 kB on a 9.3 MB process. 3 MB is 3x that: room for the allocator's mood, while a leak of
    # 3 KB per refused connection (1,000 of them) or of a held head's buffers fails.
    assert rss1 - rss0 < RSS_GROWTH_KB, f"RSS grew {rss1 - rss0} kB under the attacks (bound {RSS_GROWTH_KB} kB)"
    assert request(port, "/api/status", timeout=2)[0] == 200
