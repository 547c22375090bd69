"""Snapshots: `/api/snapshot.jpg`, a JPEG of the newest frame decoded from the stream pinhole
already has (OpenH264 decodes, jpeg-encoder encodes, both in the daemon).

Real parts: ffmpeg/ffprobe decode the JPEG (an independent reader), testsrc's burned-in time band
read from the JPEG's pixels gives the capture time of the frame it shows, and the access tests
use real RSA keys and a JWKS on 127.0.0.1 (access_helpers). The snippets in docs/integrations.md
are read from the file and requested as written.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import threading
import time
from pathlib import Path

import pytest

from access_helpers import basic, claims, hash_password, mint, request, wait_answering
from conftest import REPO, free_port, read_time_band
from test_access import jwks, tunnel_config  # noqa: F401  (jwks is a fixture)

SOURCE = "testsrc?size=640x360&fps=30"
# The bound: at 30 fps the newest frame is at most one frame interval (33 ms) plus the
# encoder old when the request is sent.
FRESH_MS = 50


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes, float]:
    t0 = time.time()
    code, h, body = request(port, path, headers=headers)
    return code, {k.lower(): v for k, v in h.items()}, body, t0


def jpeg_gray(tmp_path: Path, body: bytes) -> tuple[bytes, int, int]:
    """Decodes the JPEG with ffmpeg (not pinhole's code): its luma and size."""
    path = tmp_path / f"snap-{time.monotonic_ns()}.jpg"
    path.write_bytes(body)
    p = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=width,height,codec_name",
                        "-of", "csv=p=0", str(path)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"ffprobe refused the snapshot: {p.stderr}"
    codec, w, h = p.stdout.strip().split(",")
    assert codec == "mjpeg", codec
    w, h = int(w), int(h)
    d = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", str(path),
                        "-f", "rawvideo", "-pix_fmt", "gray", "-"], capture_output=True, timeout=30)
    assert d.returncode == 0 and not d.stderr, f"ffmpeg decode: {d.stderr!r}"
    assert len(d.stdout) == w * h
    return d.stdout, w, h


def snap_status(ph) -> dict:
    return ph.status()["snapshot"]


def test_a_snapshot_shows_the_newest_frame_cold_and_warm(pinhole, tmp_path, ffmpeg):
    ph = pinhole(SOURCE)
    ph.wait_video(fragments=3)
    assert snap_status(ph)["decoder_warm"] is False, "a decoder ran before anyone asked"

    ages = []
    for i in range(12):
        code, h, body, sent = get(ph.port, "/api/snapshot.jpg")
        assert code == 200, (code, body[:200])
        assert h["content-type"] == "image/jpeg"
        assert "no-store" in h["cache-control"], "a proxy could serve a stale picture"
        gray, w, hh = jpeg_gray(tmp_path, body)
        assert (w, hh) == (640, 360)
        captured = read_time_band(gray, w, hh)
        assert int(h["x-capture-unix-ms"]) == captured, "the header's capture time is not the picture's"
        age = sent * 1000 - captured
        # The decode may take in a frame that came after the request was sent: younger than the
        # request is fine, younger than the answer is impossible.
        assert captured <= time.time() * 1000, "a picture from the future"
        ages.append(age)
        if i == 0:
            s = snap_status(ph)
            assert s["decoder_warm"] and s["cold_starts"] == 1 and s["frames_decoded"] >= 1, s
            assert s["decoder"] == "OpenH264", "no hardware decoder here: OpenH264 decodes"
        time.sleep(0.1)
    cold, warm = ages[0], ages[1:]
    s = snap_status(ph)
    assert s["cold_starts"] == 1, f"the decoder did not stay warm between requests: {s}"
    assert cold <= FRESH_MS, f"cold snapshot shows a frame {cold:.0f} ms older than the request"
    # Each warm picture within the bound, the median with room: one slow request on a busy
    # machine may see the frame before (33 ms more).
    assert statistics.median(warm) <= FRESH_MS, f"warm ages {sorted(warm)}"
    assert max(warm) <= FRESH_MS + 34, f"warm ages {sorted(warm)}"


def test_width_and_quality_and_garbage_options(pinhole, tmp_path, ffmpeg):
    ph = pinhole(SOURCE)
    ph.wait_video(fragments=2)
    code, _, body, _ = get(ph.port, "/api/snapshot.jpg?width=320&quality=40")
    assert code == 200
    _, w, h = jpeg_gray(tmp_path, body)
    assert (w, h) == (320, 180), "aspect kept"
    small = len(body)
    code, _, body, _ = get(ph.port, "/api/snapshot.jpg?width=320&quality=95")
    assert code == 200 and len(body) > small, "quality has no effect"
    code, _, body, _ = get(ph.port, "/api/snapshot.jpg?width=4000")
    assert code == 200 and jpeg_gray(tmp_path, body)[1:] == (640, 360), "never scaled up"
    for query, allowed in [("width=0", "16..=7680"), ("width=wide", "16..=7680"), ("quality=0", "1..=100"),
                           ("quality=500", "1..=100"), ("quality=-1", "1..=100"), ("frame=3", "width=16..7680")]:
        code, _, body, _ = get(ph.port, f"/api/snapshot.jpg?{query}")
        assert code == 400 and allowed.encode() in body, (query, code, body)
    assert ph.alive()


def test_a_camera_that_is_down_answers_503_at_once(pinhole, ffmpeg):
    ph = pinhole("exec:sleep 30")
    for _ in range(3):
        t0 = time.monotonic()
        code, h, body, _ = get(ph.port, "/api/snapshot.jpg")
        took = time.monotonic() - t0
        assert code == 503, (code, body)
        assert b"no snapshot: camera is" in body, body
        assert h.get("retry-after") == "1" and "no-store" in h["cache-control"]
        assert took < 0.1, f"503 took {took * 1000:.0f} ms"
    assert snap_status(ph)["unavailable"] == 3


def test_fifty_concurrent_requests_cost_one_decode(pinhole, ffmpeg):
    # 1280x720 with a 2 s GOP: the cold decode (up to 60 frames) is long enough for all fifty
    # requests to be waiting on it.
    ph = pinhole("testsrc?size=1280x720&fps=30&gop=60")
    ph.wait_video(fragments=3)
    before = snap_status(ph)
    barrier = threading.Barrier(50)
    results: list[tuple[int, int]] = []
    lock = threading.Lock()

    def one():
        barrier.wait()
        code, h, body, _ = get(ph.port, "/api/snapshot.jpg")
        with lock:
            results.append((code, int(h.get("x-capture-unix-ms", 0))))

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 50 and all(c == 200 for c, _ in results), results
    after = snap_status(ph)
    assert after["requests"] - before["requests"] == 50
    assert after["decodes"] - before["decodes"] == 1, f"{after['decodes'] - before['decodes']} decodes for 50 requests: {after}"
    assert after["shared"] - before["shared"] == 49
    assert len({t for _, t in results}) == 1, "they did not all get the same picture"


def test_the_decoder_stops_after_the_quiet_period(pinhole, ffmpeg):
    ph = pinhole("testsrc?size=320x240&fps=15")
    ph.wait_video(fragments=2)
    code, _, _, _ = get(ph.port, "/api/snapshot.jpg")
    assert code == 200 and snap_status(ph)["decoder_warm"] is True
    # One request: the decoder catches up for it and pauses (it follows the stream only while
    # requests come ~3 a second, and then for at most 2 s after the last).
    time.sleep(2.5)
    frames = snap_status(ph)["frames_decoded"]
    time.sleep(3)
    s = snap_status(ph)
    assert s["decoder_warm"] is True and s["frames_decoded"] == frames, f"decoding while nobody asks: {s}"
    deadline = time.time() + 12
    while time.time() < deadline and snap_status(ph)["decoder_warm"]:
        time.sleep(0.5)
    assert snap_status(ph)["decoder_warm"] is False, "the decoder kept running after 10 s without requests"
    m = ph.metrics()
    assert m["pinhole_snapshot_decoder_warm"] == 0 and m["pinhole_snapshot_requests_total"] == 1
    code, _, _, _ = get(ph.port, "/api/snapshot.jpg")
    assert code == 200 and snap_status(ph)["cold_starts"] == 2, "a new request after the quiet period starts it again"


def test_snapshots_follow_the_access_rules_of_both_listeners(pinhole, jwks, tmp_path, ffmpeg):  # noqa: F811
    password = "snap-pw"
    tport = free_port()
    cfg = tunnel_config(tmp_path, jwks.url, tport,
                        extra=f'[lan]\npassword_hash = "{hash_password(password)}"\n')
    ph = pinhole("testsrc?size=320x240&fps=15", args=["--config", str(cfg)], ready=False)
    wait_answering(ph.port, ph)
    lan = ph.port
    code, h, _, _ = get(lan, "/api/snapshot.jpg")
    assert code == 401 and h["www-authenticate"].startswith("Basic"), code
    code, _, _, _ = get(lan, "/api/snapshot.jpg", headers=basic("wrong"))
    assert code == 401
    deadline = time.time() + 15
    code = 0
    while time.time() < deadline and code != 200:
        code, h, body, _ = get(lan, "/api/snapshot.jpg", headers=basic(password))
        time.sleep(0.2)
    assert code == 200 and h["content-type"] == "image/jpeg", code
    code, _, _, _ = get(tport, "/api/snapshot.jpg", headers=basic(password))
    assert code == 403, "LAN credentials opened the tunnel listener"
    code, _, _, _ = get(tport, "/api/snapshot.jpg")
    assert code == 403
    good = mint(jwks.keys["k1"], "k1", claims())
    deadline = time.time() + 10
    code = 503
    while time.time() < deadline and code == 503:  # 503 only while the key set is being fetched
        code, h, _, _ = get(tport, "/api/snapshot.jpg", headers={"Cf-Access-Jwt-Assertion": good})
        time.sleep(0.1)
    assert code == 200 and h["content-type"] == "image/jpeg", code


def test_every_camera_has_its_snapshot_and_the_integration_snippets_answer(pinhole, tmp_path, ffmpeg):
    cfg = tmp_path / "two.toml"
    cfg.write_text('[[stream]]\nname = "printer"\nsource = "testsrc?size=320x240&fps=15"\n'
                   '[[stream]]\nname = "door"\nsource = "testsrc?size=256x144&fps=15"\n')
    port = free_port()
    ph = pinhole(None, args=["--config", str(cfg)], port=port)
    deadline = time.time() + 20
    while time.time() < deadline:
        if get(port, "/streams/door/api/snapshot.jpg")[0] == 200 and get(port, "/api/snapshot.jpg")[0] == 200:
            break
        time.sleep(0.3)
    _, _, body, _ = get(port, "/streams/door/api/snapshot.jpg")
    assert jpeg_gray(tmp_path, body)[1:] == (256, 144)
    _, _, body, _ = get(port, "/streams/printer/api/snapshot.jpg")
    assert jpeg_gray(tmp_path, body)[1:] == (320, 240)
    _, _, body, _ = get(port, "/api/snapshot.jpg")
    assert jpeg_gray(tmp_path, body)[1:] == (320, 240), "the first camera is the plain path's"

    # Every URL in docs/integrations.md (written for http://pinhole.local) answers as its
    # program expects: the snapshot as a JPEG, the streams and the page as what they are.
    doc = (REPO / "docs" / "integrations.md").read_text()
    paths = sorted(set(re.findall(r"http://pinhole\.local(/[A-Za-z0-9_./?=&-]*)", doc)))
    assert any("snapshot.jpg" in p for p in paths) and any(".m3u8" in p for p in paths), paths
    kinds = {"snapshot.jpg": "image/jpeg", ".m3u8": "application/vnd.apple.mpegurl", "/api/video/cmaf": "video/mp4",
             "/api/status": "application/json"}
    for path in paths:
        local = path.replace("/streams/CAMERA/", "/streams/door/")
        if "/api/video/cmaf" in local:
            continue  # an endless body: its headers are the stream tests' business
        code, h, body, _ = get(port, local)
        assert code == 200, f"docs/integrations.md: {path} answered {code}"
        for key, ctype in kinds.items():
            if key in local:
                assert h["content-type"].startswith(ctype), (path, h["content-type"])
