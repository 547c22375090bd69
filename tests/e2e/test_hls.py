"""LL-HLS from outside: the live playlist followed for 30 s with every invariant checked, headers,
ffmpeg as a plain HLS client, blocking reload timing against the chunked stream, bad requests and
many held requests. Browsers (hls.js, Chromium's own player) are in test_hls_browser.py."""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from access_helpers import request
from cmaf import CmafClient, StreamEnded, parse_init
from conftest import ffmpeg_decode_errors
from hls_helpers import Follower, Http, check_playlist, fetch, parse_playlist

SOURCE = "testsrc?size=640x360"
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"


def start(pinhole, source: str = SOURCE, warm_s: float = 4.0):
    ph = pinhole(source)
    ph.wait_video()
    time.sleep(warm_s)  # three target durations of complete segments
    return ph


def newest(h: Http) -> tuple[int, int, object]:
    code, _, body, _, _ = h.get("/hls/stream.m3u8")
    assert code == 200, body
    pl = parse_playlist(body.decode())
    m, i = pl.last_part
    return m, i, pl


def test_the_live_playlist_keeps_every_invariant_for_30_seconds(pinhole, tmp_path, ffmpeg):
    """Followed like a low-latency client (a blocking reload for the part after the newest):
    every reload passes check_playlist (part ≤ PART-TARGET, segment ≤ TARGETDURATION, numbering,
    INDEPENDENT on part 0, hint = next part, ≥ 3 target durations of complete segments), targets
    never change, the newest part strictly advances and is never older than asked, nothing listed
    changes, each part's trun agrees with its DURATION and sync flag, and every segment is
    byte-equal to its parts concatenated. The segments then decode without a word from ffmpeg."""
    ph = start(pinhole)
    rep = Follower(ph.port).follow(32.0)
    assert rep.reloads >= 200, f"only {rep.reloads} blocking reloads in 32 s (10 parts/s expected)"
    assert rep.segments_checked >= 25, f"only {rep.segments_checked} segments compared with their parts"
    assert rep.parts_checked >= 250
    assert rep.target_duration == 1 and abs(rep.part_target - 0.1) < 1e-9, (rep.target_duration, rep.part_target)
    assert len(rep.inits) == 1
    init_uri, init = next(iter(rep.inits.items()))
    assert init.width == 640 and init.height == 360
    path = tmp_path / "hls.mp4"
    path.write_bytes(init.payload + b"".join(rep.segments[m] for m in sorted(rep.segments)))
    errors = ffmpeg_decode_errors(path)
    assert errors == "", f"ffmpeg on init + {len(rep.segments)} HLS segments: {errors}"


def test_headers_types_caching_and_cors(pinhole):
    ph = start(pinhole, warm_s=1.5)
    h = Http(ph.port)
    code, hd, body, _, _ = h.get("/hls/index.m3u8")
    # CORS (issue 22): no Origin, no Access-Control-Allow-Origin; a page on the owner's network
    # gets its own origin back, any other page nothing (tests/e2e/test_hardening.py).
    assert code == 200 and hd["content-type"] == PLAYLIST_TYPE and hd["vary"] == "Origin", hd
    assert "access-control-allow-origin" not in hd, hd
    for origin, allowed in (("http://192.168.1.20:8080", True), ("https://elsewhere.example", False)):
        hd2 = request(ph.port, "/hls/index.m3u8", headers={"Origin": origin})[1]
        assert hd2.get("access-control-allow-origin") == (origin if allowed else None), (origin, hd2)
    text = body.decode()
    inf = next(line for line in text.splitlines() if line.startswith("#EXT-X-STREAM-INF:"))
    assert text.splitlines()[-1] == "stream.m3u8"
    m, i, pl = newest(h)
    init = parse_init(fetch(h, f"/hls/{pl.segments[0].map_uri}", "video/mp4"))
    assert f'CODECS="{init.codec}"' in inf and "RESOLUTION=640x360" in inf, inf
    assert int(re.search(r"BANDWIDTH=(\d+)", inf).group(1)) > 50_000, inf
    assert re.search(r"FRAME-RATE=(29\.9\d\d|30\.0\d\d)", inf), inf

    code, hd, _, _, _ = h.get("/hls/stream.m3u8")
    assert hd["content-type"] == PLAYLIST_TYPE and hd["cache-control"] == "no-cache"
    code, hd, _, _, _ = h.get(f"/hls/stream.m3u8?_HLS_msn={m}&_HLS_part={i}")
    assert code == 200 and re.fullmatch(r"public, max-age=\d+", hd["cache-control"]), hd
    for uri, ctype in [(pl.segments[0].map_uri, "video/mp4"), (pl.segments[0].uri, "video/iso.segment"),
                       (f"part-{m}-{i}.m4s", "video/iso.segment")]:
        code, hd, body, _, _ = h.get(f"/hls/{uri}")
        assert code == 200 and hd["content-type"] == ctype, (uri, code, hd)
        assert hd["cache-control"] == "public, max-age=31536000, immutable", (uri, hd)
        assert hd["vary"] == "Origin" and "access-control-allow-origin" not in hd, hd
        assert int(hd["content-length"]) == len(body) > 0
    code, hd, body, _, _ = h.get("/hls/seg-1.m4s")
    assert code == 404 and hd["cache-control"] == "no-store", (code, hd)
    h.close()
    # HEAD answers the headers; other methods are refused naming the allowed ones.
    for method, want in [("HEAD", 200), ("POST", 405), ("DELETE", 405)]:
        c = http.client.HTTPConnection("127.0.0.1", ph.port, timeout=5)
        c.request(method, "/hls/stream.m3u8")
        r = c.getresponse()
        body = r.read()
        assert r.status == want, (method, r.status)
        if method == "HEAD":
            assert body == b"" and r.getheader("Content-Type") == PLAYLIST_TYPE
        else:
            assert r.getheader("Allow") == "GET, HEAD"
        c.close()


def test_ffmpeg_plays_the_live_playlist_without_an_error(pinhole, ffmpeg):
    """ffmpeg's HLS demuxer ignores the LL tags: it plays the complete segments (EXTINF)."""
    ph = start(pinhole)
    url = f"http://127.0.0.1:{ph.port}/hls/stream.m3u8"
    p = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", url, "-t", "5",
                        "-f", "framecrc", "-"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr.strip() == "", f"ffmpeg exit {p.returncode}: {p.stderr}"
    frames = [line for line in p.stdout.splitlines() if line and not line.startswith("#")]
    assert len(frames) >= 140, f"ffmpeg decoded {len(frames)} frames in 5 s of 30 fps"
    p = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", url, "-t", "5", "-f", "null",
                        "-"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr


class CutTimes:
    """Reads /api/video/cmaf in a thread; remembers when each fragment (by its bytes) arrived.
    The hub publishes a part to the chunked viewers and to the LL-HLS watchers at one instant,
    so its arrival here is when it was cut, give or take a scheduling hiccup."""

    def __init__(self, port: int):
        self.client = CmafClient(port)
        self.client.check_headers()
        self.seen: dict[str, float] = {}
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop:
            try:
                rec = self.client.read_record()
            except (StreamEnded, OSError, AttributeError, ValueError):
                return  # closed by close(), from the test's thread
            if rec.payload:
                self.seen[hashlib.sha1(rec.payload).hexdigest()] = rec.t_recv

    def when(self, payload: bytes, wait: float = 1.0) -> float:
        key = hashlib.sha1(payload).hexdigest()
        deadline = time.time() + wait
        while key not in self.seen and time.time() < deadline:
            time.sleep(0.005)
        assert key in self.seen, "an HLS part is not byte-equal to any fragment of the chunked stream"
        return self.seen[key]

    def close(self) -> None:
        self.stop = True
        self.client.close()


def test_a_blocking_reload_is_answered_within_one_part_of_the_cut_and_never_before(pinhole):
    ph = start(pinhole, warm_s=1.5)
    cuts = CutTimes(ph.port)
    h = Http(ph.port)
    try:
        time.sleep(0.5)
        late, early, held = [], [], []
        for _ in range(25):
            m, i, _ = newest(h)
            t_req = time.time()
            code, _, body, _, t_resp = h.get(f"/hls/stream.m3u8?_HLS_msn={m}&_HLS_part={i + 1}")
            assert code == 200, body
            pl = parse_playlist(body.decode())
            got = pl.part(m, i + 1) or pl.part(m + 1, 0)
            assert got is not None, f"asked for {m}.{i + 1}; the answer lists neither it nor {m + 1}.0"
            t_cut = cuts.when(fetch(h, f"/hls/{got.uri}"))
            late.append(t_resp - t_cut)
            early.append(t_cut - t_resp)
            held.append(t_resp - t_req)
        part = pl.part_target
        # Never before: the answer always listed the part (above); and it came after its cut.
        assert max(early) < 0.03, f"answered up to {max(early) * 1000:.0f} ms before the part reached a viewer"
        assert max(late) <= part, f"answered {max(late) * 1000:.0f} ms after the cut; the bound is one part"
        assert max(held) <= 2 * part + 0.05, f"a request for the next part was held {max(held):.3f} s"
        print(f"blocking reload: answered {sorted(late)[len(late) // 2] * 1000:.1f} ms after the cut "
              f"(p50), {max(late) * 1000:.1f} ms max")
    finally:
        cuts.close()
        h.close()


def test_bad_requests_get_the_status_the_spec_asks_for(pinhole):
    ph = start(pinhole)
    h = Http(ph.port)
    m, i, pl = newest(h)
    old = pl.segments[0].msn
    cases = [
        ("_HLS_msn=abc", 400),
        ("_HLS_msn=-1", 400),
        ("_HLS_msn=99999999999999999999999", 400),
        (f"_HLS_msn={m}&_HLS_part=-2", 400),
        (f"_HLS_msn={m}&_HLS_part=abc", 400),
        ("_HLS_part=1", 400),  # _HLS_part without _HLS_msn
        (f"_HLS_msn={m}&_HLS_msn={m}", 400),
        (f"_HLS_msn={m}&_HLS_skip=maybe", 400),
        (f"_HLS_msn={m + 3}", 400),  # more than two segments ahead
        (f"_HLS_msn={2**64 - 1}", 400),
        (f"_HLS_msn={m}&_HLS_part={i + 31}", 400),  # past the Advance Part Limit (3 s of 100 ms parts)
        (f"_HLS_msn={m + 1}&_HLS_part=40", 400),
        # A part index past a complete segment's end means part 0 of the next one: there already.
        (f"_HLS_msn={old}&_HLS_part=999", 200),
        (f"_HLS_msn={old}", 200),
        ("_HLS_msn=1", 200),  # long gone: the current playlist at once
    ]
    for q, want in cases:
        code, hd, body, took, _ = h.get(f"/hls/stream.m3u8?{q}")
        assert code == want, f"{q}: {code} {body[:120]!r}, expected {want}"
        assert took < 0.5, f"{q}: took {took:.2f} s; it should not be held"
        if want == 400:
            assert hd["cache-control"] == "no-store"
    for path in ["/hls/seg-1.m4s", f"/hls/seg-{m}.m4s", f"/hls/seg-{m + 50}.m4s", f"/hls/part-{m + 5}-0.m4s",
                 f"/hls/part-{m}-{i + 7}.m4s", f"/hls/seg-0{m}.m4s", "/hls/init-1.mp4", "/hls/init-x.mp4",
                 "/hls/nothing.m3u8", "/hls/../api/status", "/hls/%2e%2e/api/status", "/hls/"]:
        code, _, body, took, _ = h.get(path)
        assert code == 404, f"{path}: {code} {body[:100]!r}"
        assert took < 0.5, f"{path} was held {took:.2f} s"
    h.close()
    assert ph.alive()


def _held_request(port: int, path: str) -> tuple[int, float, str | None]:
    t0 = time.time()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status, time.time() - t0, r.getheader("Retry-After")
    finally:
        c.close()


def test_many_held_requests_are_bounded_answered_and_leave_nothing_behind(pinhole):
    """130 blocking reloads at once for the segment after the current one: the first 100 are
    held and answered 200 when it completes, the other 30 get 503 with Retry-After at once.
    Abandoned held requests are released by the hold limit. Held count back to 0; RSS flat."""
    ph = start(pinhole)
    h = Http(ph.port)
    rss = []
    for round_ in range(3):
        m, _, _ = newest(h)
        with ThreadPoolExecutor(max_workers=130) as pool:
            results = list(pool.map(lambda _: _held_request(ph.port, f"/hls/stream.m3u8?_HLS_msn={m + 1}"),
                                    range(130)))
        ok = [r for r in results if r[0] == 200]
        busy = [r for r in results if r[0] == 503]
        assert len(ok) + len(busy) == 130, sorted({r[0] for r in results})
        assert len(ok) == 100, f"round {round_}: {len(ok)} answered 200, {len(busy)} 503; the limit is 100"
        assert all(r[2] == "1" for r in busy), "503 without Retry-After: 1"
        assert max(r[1] for r in busy) < 1.0, "an over-the-limit request was held"
        assert min(r[1] for r in ok) > 0.05, "a request for the next segment was answered at once"
        assert ph.metrics()["pinhole_hls_held_requests"] == 0
        rss.append(ph.rss_kb())
    # Clients that give up while held: the server still lets go within the hold limit (3 s).
    m, _, _ = newest(h)
    socks = []
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", ph.port))
        s.sendall(f"GET /hls/stream.m3u8?_HLS_msn={m + 2} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        socks.append(s)
    time.sleep(0.3)
    assert ph.metrics()["pinhole_hls_held_requests"] == 50
    for s in socks:
        s.close()
    deadline = time.time() + 4.0
    while ph.metrics()["pinhole_hls_held_requests"] > 0 and time.time() < deadline:
        time.sleep(0.1)
    metrics = ph.metrics()
    assert metrics["pinhole_hls_held_requests"] == 0, "held requests outlived the hold limit"
    assert metrics['pinhole_hls_refused_total{reason="busy"}'] == 90
    h.close()
    assert rss[-1] - rss[0] < 4_000, f"RSS grew {rss} kB over three rounds of 130 held requests"
