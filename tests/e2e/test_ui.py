"""The web UI (web-ui/, embedded in the binary): its files over HTTP, and the player in headless
Chromium in each mode — chunked CMAF into MSE, WebCodecs onto a canvas, compatibility mode (the
LL-HLS part follower, and the browser's native HLS when MSE is removed from the page) — a
resolution change mid-stream (in-band init segment) under an open page, plus a
pinhole restart under an open page and a page left open for two minutes.

The browser side is tests/ui/watch.mjs (playwright-core from tests/hls/node_modules, Debian's
chromium): it reads testsrc's burned-in capture time from the pixels the page displays, records
the player's state (window.pinhole) and the status line every half second, and saves a
screenshot. Screenshots go to tests/ui/artifacts/ (git-ignored)."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, children, ffmpeg_exec, free_port

UI_DIR = REPO / "tests" / "ui"
HLS_DIR = REPO / "tests" / "hls"
ARTIFACTS = UI_DIR / "artifacts"
CHROMIUM = "/usr/bin/chromium"
SOURCE = "testsrc?size=640x360"
LATENCY_RE = re.compile(r"latency ≈?(\d+) ms")


def _requirements() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("`node` is not installed: tests/run installs it (apt-get install -y nodejs npm)", pytrace=False)
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: tests/run installs it (apt-get install -y chromium)", pytrace=False)
    if not (HLS_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.fail("tests/hls/node_modules is missing: run `npm ci` in tests/hls (tests/run does)", pytrace=False)
    return node


def watch_cmd(url: str, seconds: float, name: str, no_mse: bool = False, hold_get: bool = False) -> list[str]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # Chromium at a lower priority: on two cores its start-up would otherwise starve testsrc's
    # encoder (see test_hls_browser.py).
    cmd = ["nice", "-n", "10", _requirements(), str(UI_DIR / "watch.mjs"), "--url", url, "--seconds", str(seconds),
           "--chromium", CHROMIUM, "--screenshot", str(ARTIFACTS / f"{name}.png")]
    if no_mse:
        cmd.append("--no-mse")
    if hold_get:
        cmd.append("--hold-get")
    return cmd


def watch(url: str, seconds: float, name: str, no_mse: bool = False, hold_get: bool = False) -> dict:
    p = subprocess.run(watch_cmd(url, seconds, name, no_mse, hold_get), capture_output=True, text=True, timeout=seconds + 90)
    assert p.returncode == 0, f"watch.mjs exit {p.returncode}: {p.stderr[-2000:]}"
    report = json.loads(p.stdout)
    (ARTIFACTS / f"{name}.json").write_text(json.dumps(report, indent=1))
    return report


def pixel_latencies(report: dict, after_ms: float, before_ms: float = float("inf")) -> list[float]:
    return sorted(s["latency_ms"] for s in report["samples"] if after_ms <= s["t_ms"] < before_ms)


def p(values: list[float], q: float) -> float:
    return values[int(q * (len(values) - 1))]


# --- files ---------------------------------------------------------------------------------------


def test_ui_files_are_served_with_types_etags_and_304(pinhole):
    ph = pinhole(SOURCE)
    ui_files = sorted(str(f.relative_to(REPO / "web-ui")) for f in (REPO / "web-ui").rglob("*") if f.is_file())
    assert "index.html" in ui_files and "js/app.js" in ui_files, ui_files
    total = 0
    for name in ui_files:
        code, headers, body = ph.get("/" + name)
        assert code == 200, f"/{name}: HTTP {code}"
        assert body == (REPO / "web-ui" / name).read_bytes(), f"/{name} is not the file in web-ui/"
        total += len(body)
        want = {"html": "text/html", "js": "text/javascript", "css": "text/css"}[name.rsplit(".", 1)[1]]
        assert headers["content-type"].startswith(want), (name, headers["content-type"])
        etag = headers.get("etag")
        assert etag and etag.startswith('"') and etag.endswith('"'), (name, etag)
        code2, headers2, body2 = _get_with(ph.port, "/" + name, {"If-None-Match": etag})
        assert code2 == 304 and body2 == b"", f"/{name} with its ETag: HTTP {code2}, {len(body2)} bytes"
        assert headers2.get("etag") == etag
        code3, _, body3 = _get_with(ph.port, "/" + name, {"If-None-Match": '"0000000000000000"'})
        assert code3 == 200 and body3 == body
    assert total < 100 * 1024, f"the UI is {total} bytes"
    code, _, root = ph.get("/")
    assert code == 200 and root == (REPO / "web-ui" / "index.html").read_bytes()
    for bad in ["/js/../Cargo.toml", "/js/..%2f..%2fCargo.toml", "/%2e%2e/Cargo.toml", "//etc/passwd", "/js/"]:
        code, _, _ = _raw_get(ph.port, bad)
        assert code == 404, f"{bad}: HTTP {code}"
    before = time.time() * 1000
    code, headers, body = ph.get("/api/time")
    after = time.time() * 1000
    assert code == 200 and headers["content-type"].startswith("application/json")
    assert headers.get("cache-control") == "no-store"
    server_ms = json.loads(body)["unix_ms"]
    assert before - 1 <= server_ms <= after + 1, (before, server_ms, after)


def _get_with(port: int, path: str, headers: dict) -> tuple[int, dict, bytes]:
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def _raw_get(port: int, path: str) -> tuple[int, dict, bytes]:
    """The path exactly as given (urllib would normalise dot segments away)."""
    return _get_with(port, path, {})


# --- modes ---------------------------------------------------------------------------------------

# Pixel latency p50 bounds (ms), from the targets (bench/README.md, ARCHITECTURE.md) and the
# spread measured on this machine: 640x360, 10 s after a 6 s warm-up, as the test reads it.
# - chunked: target 150. Quiet machine (bench/latency, 720p, 40 s): 113-119 ms; here, with
#   7 other engineers' builds on the 2 cores (load 6-8, 2026-12-02), three runs: 122, 137,
#   123 ms. At the target: 13 ms above the worst loaded run, and a 2x regression (~230) fails.
# - webcodecs: target 80 cannot be held robustly: quiet 66 ms (bench), loaded 59, 66, 83 ms
#   (one of three loaded runs over 80; A/B runs under a parallel build spread by +-25 ms). 100
#   is 1.5x the quiet figure: robust under load, and well below a 2x regression (132).
# - compat-parts (the UI's LL-HLS part follower): the LL-HLS target, 1 s (quiet 116 ms; loaded
#   156-485 ms, so anything tighter than the target would flake on a shared box).
# - native HLS: Chromium's own player holds HOLD-BACK (~3 s); recorded, not chased.
CHUNKED_P50_MS = 150
WEBCODECS_P50_MS = 100
LLHLS_P50_MS = 1000
NATIVE_P50_MS = 10_000

# Player errors (window.pinhole.errors) a mode may report while it plays on, with the reason.
# Anything else fails the test. Steady play in chunked, WebCodecs and the part follower reports
# none (measured: 0 in every run); a disconnect ("stream ended", "HTTP 5xx") would be a bug here.
TOLERATED_ERRORS = {
    "chunked": (),
    "webcodecs": (),
    "compat-parts": (),
    # Chromium's native HLS player sometimes fails right after its first frame (MEDIA_ERR_DECODE
    # on the first part boundary); the page starts it over, and the frame-count, currentTime and
    # latency checks hold it to playing on.
    "compat-native-no-mse": ("video error",),
}

# (name, query, MSE removed, expected mode/submode, pixel latency p50 bound in ms)
MODES = [
    ("chunked", "?mode=chunked", False, ("chunked", ""), CHUNKED_P50_MS),
    ("webcodecs", "?mode=webcodecs", False, ("webcodecs", ""), WEBCODECS_P50_MS),
    ("compat-parts", "?mode=compat", False, ("compat", "LL-HLS parts"), LLHLS_P50_MS),
    ("compat-native-no-mse", "", True, ("compat", "native HLS"), NATIVE_P50_MS),
]


def check_errors(r: dict, mode: str, context: str = "", also: tuple[str, ...] = ()) -> None:
    """No sampler error (the pixel reader itself failed: its figures would be hollow), no page
    error, and no player error beyond the mode's tolerated list (and `also`, for a test that
    provokes errors on purpose)."""
    assert "sampler_errors" in r, "watch.mjs no longer reports sampler_errors"
    assert not r["sampler_errors"], f"the pixel sampler failed: {r['sampler_errors']}"
    assert not [c for c in r["console"] if c.startswith("pageerror")], r["console"]
    tolerated = TOLERATED_ERRORS[mode] + also
    fatal = [e for e in r["player_errors"] if not (tolerated and e.startswith(tolerated))]
    assert not fatal, f"{mode}: player errors {fatal}; {context}"


@pytest.mark.parametrize("name,query,no_mse,expect,budget_ms", MODES, ids=[m[0] for m in MODES])
def test_the_page_plays_in_each_mode(pinhole, record_property, name, query, no_mse, expect, budget_ms):
    """The page plays: frames are presented at ~30 fps, the frame on screen is a picture (not
    black), the time band read from the displayed pixels is recent, the status line shows a
    latency, the player reports no errors."""
    ph = pinhole(SOURCE)
    ph.wait_video()
    seconds, warmup = 16.0, 6.0
    r = watch(f"http://127.0.0.1:{ph.port}/{query}", seconds, f"mode-{name}", no_mse=no_mse)
    last = r["timeline"][-1]
    lat = pixel_latencies(r, warmup * 1000)
    summary = {
        "frames": last["frames"], "samples_after_warmup": len(lat), "first_frame_ms": r["first_frame_ms"],
        "p50_ms": statistics.median(lat) if lat else None, "p95_ms": p(lat, 0.95) if lat else None,
        "luma": r["luma"], "status": last["stats"], "player": last["player"],
    }
    record_property(name, summary)
    print(f"{name}: {summary}")
    context = f"{summary}; player errors {r['player_errors'][:5]}; console {r['console'][-8:]}"
    assert last["player"] is not None, f"window.pinhole missing: {context}"
    assert (last["player"]["mode"], last["player"]["submode"]) == expect, context
    assert r["navigations"] == 1
    # ~30 fps after warm-up, read from the displayed pixels
    assert len(lat) >= 0.6 * 30 * (seconds - warmup - 1) / (3 if name == "webcodecs" else 1), context
    if name != "webcodecs":
        times = [e["current_time"] for e in r["timeline"] if e["t_ms"] >= warmup * 1000]
        assert times[-1] - times[0] >= 0.8 * (seconds - warmup - 2), f"currentTime did not advance: {times}"
    assert r["luma"]["mean"] > 20 and r["luma"]["std"] > 10, f"the frame on screen looks black: {r['luma']}"
    snap = r["snapshot"]
    assert snap and snap["head"] == "data:image/png;base64," and (snap["w"], snap["h"]) == (640, 360), snap
    assert snap["png_bytes"] > 5000, f"snapshot PNG suspiciously small: {snap}"
    assert 0 < statistics.median(lat) <= budget_ms, context
    m = LATENCY_RE.search(last["stats"] or "")
    assert m, f"no latency figure in the status line: {last['stats']!r}"
    # The UI's own figure over the same window (sampled every 0.5 s) against the pixels: one
    # status-line reading at the end is a single sample, which one stall moves by 250 ms.
    own = [e["player"]["latency_ms"] for e in r["timeline"]
           if e["t_ms"] >= warmup * 1000 and e["player"] and e["player"].get("latency_ms") is not None]
    shown = statistics.median(own) if own else int(m.group(1))
    if name != "compat-native-no-mse":
        # the prft figure, corrected for the clock offset, agrees with the pixels
        assert abs(shown - statistics.median(lat)) < 250, (shown, context)
    else:
        # an estimate from the playlist's PROGRAM-DATE-TIME: within a segment of the truth
        assert abs(shown - statistics.median(lat)) < 1500, (shown, context)
    check_errors(r, name, context)


def test_a_held_back_get_stream_falls_back_to_post(pinhole, record_property):
    """A tunnel that holds back GET streams (cloudflared #1449), played by intercepting the
    page's GETs of /api/video/cmaf: the player tries POST after a few seconds and plays."""
    ph = pinhole(SOURCE)
    ph.wait_video()
    seconds = 14.0
    r = watch(f"http://127.0.0.1:{ph.port}/?mode=chunked", seconds, "post-fallback", hold_get=True)
    last = r["timeline"][-1]
    assert r["held_gets"] >= 1, "the page never tried GET"
    assert last["player"]["method"] == "POST", last
    assert last["player"]["mode"] == "chunked", f"auto-switched away from chunked: {last}"
    lat = pixel_latencies(r, 8000)
    assert len(lat) >= 0.6 * 30 * (seconds - 9), f"{len(lat)} frames read after POST started: {last}"
    assert statistics.median(lat) <= 400, statistics.median(lat)
    record_property("post_first_frame_ms", r["first_frame_ms"])
    # The held GETs end in the page's own "GET stream did not start" before it tries POST.
    check_errors(r, "chunked", str(last), also=("GET stream did not start",))


@pytest.mark.parametrize("mode", ["chunked", "webcodecs"])
def test_a_resolution_change_mid_stream_keeps_the_page_playing(pinhole, record_property, mode):
    """The camera changes resolution mid-stream (an exec: source that runs ffmpeg at 640x360,
    then at 960x540): pinhole sends a new init segment in-band and the open page switches to
    the new size on the same connection, without a reload, and keeps presenting frames."""
    first = ffmpeg_exec("640x360").replace("-f lavfi", "-t 8 -f lavfi")
    ph = pinhole("exec:" + first + "; " + ffmpeg_exec("960x540"))
    ph.wait_video()
    seconds = 20.0
    r = watch(f"http://127.0.0.1:{ph.port}/?mode={mode}", seconds, f"resolution-change-{mode}")
    tl = r["timeline"]
    sizes = [tuple(e["size"] or (0, 0)) for e in tl]
    context = f"sizes {sorted(set(sizes))}; player {tl[-1]['player']}; errors {r['player_errors'][:5]}; console {r['console'][-6:]}"
    assert (640, 360) in sizes, context
    assert sizes[-1] == (960, 540), context
    switched = next(i for i, s in enumerate(sizes) if s == (960, 540))
    # frames keep arriving after the switch, for most of the time left
    after = tl[switched:]
    assert len(after) >= 4, context
    # the player's own count of pictures shown (the pixel sampler needs testsrc's band)
    frames_after = after[-1]["player"]["frames"] - after[0]["player"]["frames"]
    span_s = (after[-1]["t_ms"] - after[0]["t_ms"]) / 1000
    record_property("frames_per_s_after_switch", round(frames_after / max(span_s, 0.001), 1))
    assert frames_after >= 0.6 * 30 * span_s, f"{frames_after} frames in {span_s:.1f} s after the switch; {context}"
    assert r["navigations"] == 1, context
    assert tl[-1]["player"]["mode"] == mode, context
    assert tl[-1]["player"]["connections"] == 1, f"the page reconnected: {context}"
    check_errors(r, mode, context)
    st = ph.status()
    assert (st.get("video") or {}).get("width") == 960, st


@pytest.mark.parametrize("mode", ["chunked", "webcodecs"])
def test_restarting_pinhole_under_an_open_page_brings_the_picture_back(pinhole, record_property, mode):
    """The page shows a message while pinhole is away and picks the stream up again by itself
    (no reload) once a new pinhole listens on the same port."""
    port = free_port()
    ph = pinhole(SOURCE, port=port)
    ph.wait_video()
    seconds = 30.0
    proc = subprocess.Popen(watch_cmd(f"http://127.0.0.1:{port}/?mode={mode}", seconds, f"restart-{mode}"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Stop pinhole once the page has played for a while: wait for its stream to connect
        # (Chromium's start-up alone took 13 s on this machine under a load average of 19).
        deadline = time.time() + 45
        while ph.status()["viewers"] < 1 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert ph.status()["viewers"] >= 1, "the page never connected to the stream"
        time.sleep(4.0)
        down_ms = time.time() * 1000
        # the browser (and the crash handlers Chromium re-parents to this subreaper) are ours,
        # not processes pinhole left behind
        ph.others = [pid for pid, _, _ in children() if pid != ph.pid]
        ph.stop()
        time.sleep(5.0)
        ph2 = pinhole(SOURCE, port=port)
        ph2.wait_video()
        back_ms = time.time() * 1000
        out, err = proc.communicate(timeout=seconds + 90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err[-2000:]
    r = json.loads(out)
    (ARTIFACTS / f"restart-{mode}.json").write_text(json.dumps(r, indent=1))
    tl = r["timeline"]
    before = [e for e in tl if e["wall_ms"] < down_ms]
    during = [e for e in tl if down_ms + 3500 < e["wall_ms"] < back_ms]
    after = [e for e in tl if e["wall_ms"] > back_ms]
    assert before and before[-1]["frames"] > 60, f"no picture before the restart: {before[-1:]}"
    messages = {e["message"] for e in during if e["message"]}
    assert any("unreachable" in m or "offline" in m.lower() for m in messages), \
        f"no offline message while pinhole was away: {messages}; {during[-2:]}"
    # picture back: frames advance again, within the 2 s target (+ CI slack) of pinhole's return
    base = after[0]["frames"]
    resumed = next((e for e in after if e["frames"] >= base + 10), None)
    assert resumed is not None, f"no picture after the restart: {after[-3:]}"
    resume_s = (resumed["wall_ms"] - back_ms) / 1000
    record_property("resume_s", resume_s)
    print(f"picture back {resume_s:.2f} s after pinhole answered again")
    # The page retries every ~1 s while pinhole is away (web-ui/js/stream.js: 250, 500, then
    # 1000 ms, +-20 % jitter), so the picture is back within 2 s of pinhole's return (one retry
    # interval, the connection and the first fragment). Before the cap (5 s) it took up to 3.7 s.
    assert resume_s < 2.0, f"picture came back {resume_s:.2f} s after pinhole did"
    # frames the sampler saw (WebCodecs: band changes per animation frame, about 10 a second)
    rate = 10 if mode == "webcodecs" else 30
    assert after[-1]["frames"] - base >= 0.5 * rate * ((after[-1]["wall_ms"] - back_ms) / 1000 - 3), after[-1]
    assert after[-1]["player"]["connections"] >= 2
    assert after[-1]["message"] is None, after[-1]
    assert r["navigations"] == 1, "the page was reloaded"
    # While pinhole is away the page notes its stream's end and each refused reconnect
    # ("stream ended", then "Failed to fetch" per retry): this test causes those on purpose.
    check_errors(r, mode, str(after[-1]), also=("stream ended", "Failed to fetch"))
    lat = pixel_latencies(r, tl[-1]["t_ms"] - 6000)
    assert lat and statistics.median(lat) < 500, f"after the restart the page stays {statistics.median(lat) if lat else None} ms behind"
    ph2.others = [pid for pid, _, _ in children() if pid != ph2.pid]
    ph2.stop()


def test_a_page_left_open_stays_at_the_live_edge(pinhole, record_property):
    """Two minutes of the chunked player: the latency read from the pixels in the last 45 s is
    no more than 100 ms above that of the first 45 s after warm-up (no drift) and within the
    budget. (bench/latency runs the same page for ten minutes.)"""
    ph = pinhole(SOURCE)
    ph.wait_video()
    seconds = 120.0
    r = watch(f"http://127.0.0.1:{ph.port}/?mode=chunked", seconds, "long")
    t_end = r["timeline"][-1]["t_ms"]
    first = pixel_latencies(r, 10_000, 55_000)
    last = pixel_latencies(r, t_end - 45_000)
    s = {"first_min_p50": statistics.median(first), "last_min_p50": statistics.median(last),
         "last_min_p95": p(last, 0.95), "frames": r["timeline"][-1]["frames"],
         "jumps": r["timeline"][-1]["player"]["jumps"], "dropped": r["timeline"][-1]["player"]["dropped"]}
    record_property("long", s)
    print(f"2 min: {s}")
    assert len(last) >= 0.7 * 30 * 45, s
    check_errors(r, "chunked", str(s))
    assert s["last_min_p50"] - s["first_min_p50"] <= 100, f"drifted: {s}"
    assert s["last_min_p50"] <= 400 and s["last_min_p95"] <= 1000, s
