"""The lock-out attack of issue 22, shared by tests/e2e/test_hardening.py and bench/lockout:
from several loopback addresses (127.0.0.x, so the server sees distinct clients), many
connections that each pipeline a few thousand requests and never read an answer; and the
owner's request timed while they are held.

Server-side counts come from /proc/net/tcp (the server's own established sockets on its port),
so they say what pinhole holds, not what the attacker believes."""

from __future__ import annotations

import socket
import ssl
import time

from access_helpers import request


def attack_sources(n: int) -> list[str]:
    return [f"127.0.0.{2 + i}" for i in range(n)]


def any_cert() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def flood(port: int, sources: list[str], per_source: int, path: str = "/login.html",
          requests: int = 3000, https: bool = False) -> list[socket.socket]:
    """Opens `per_source` connections from each source, pipelines `requests` GETs of `path` on
    each (as many as the socket takes without blocking) and reads nothing. Returns the sockets
    (the caller closes them)."""
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    data = head * requests
    ctx = any_cert() if https else None
    out = []
    for src in sources:
        for _ in range(per_source):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # Small buffers: the server's writes block sooner, as on a client that never reads.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.bind((src, 0))
            s.settimeout(3)
            try:
                s.connect(("127.0.0.1", port))
                if ctx is not None:
                    s = ctx.wrap_socket(s)
                s.setblocking(False)
                sent = 0
                while sent < len(data):
                    try:
                        sent += s.send(data[sent:sent + 16384])
                    except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                        break
            except (OSError, ssl.SSLError):
                pass  # refused at once by the server: counted on its side below
            out.append(s)
    return out


def held(port: int, sources: list[str]) -> int:
    """Established connections the server (local port `port`) holds with any of `sources`."""
    want = {socket.inet_aton(s) for s in sources}
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            local, remote, state = cols[1], cols[2], cols[3]
            if state != "01" or int(local.split(":")[1], 16) != port:
                continue
            ip_hex = remote.split(":")[0]
            ip = bytes.fromhex(ip_hex)[::-1]  # little-endian in /proc
            n += ip in want
    return n


def owner_latency(port: int, headers: dict, source: str, https: bool = False, tries: int = 5,
                  timeout: float = 8.0, path: str = "/api/status") -> list[float]:
    """The owner's request timed `tries` times (s); a request that got no answer in `timeout`
    counts as `timeout`. Asserts nothing: the caller decides."""
    ctx = any_cert() if https else None
    out = []
    for _ in range(tries):
        t0 = time.monotonic()
        try:
            code = request(port, path, headers=headers, https=https, context=ctx, source=source,
                           timeout=timeout)[0]
            out.append(time.monotonic() - t0 if code == 200 else timeout)
        except OSError:
            out.append(timeout)
        time.sleep(0.2)
    return out
