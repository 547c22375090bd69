"""LL-HLS in real players: hls.js (npm, lowLatencyMode) in headless Chromium, and Chromium's own
HLS player. Both are driven by tests/hls/play.mjs (playwright-core), which reads the burned-in
capture time from every displayed frame. tests/run installs chromium and the npm packages."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO

HLS_DIR = REPO / "tests" / "hls"
CHROMIUM = "/usr/bin/chromium"
WARMUP_S = 6.0


def play(url: str, player: str, seconds: float) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.fail("`node` is not installed: tests/run installs it (apt-get install -y nodejs npm)", pytrace=False)
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: tests/run installs it (apt-get install -y chromium)", pytrace=False)
    if not (HLS_DIR / "node_modules" / "hls.js").is_dir() or not (HLS_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.fail("tests/hls/node_modules is missing: run `npm ci` in tests/hls (tests/run does)", pytrace=False)
    # Chromium at a lower priority: on two cores its start-up would otherwise starve testsrc's
    # encoder, which then skips frames mid-GOP (a hole MSE players cannot play through).
    p = subprocess.run(["nice", "-n", "10", node, str(HLS_DIR / "play.mjs"), "--url", url, "--player", player, "--seconds",
                        str(seconds), "--chromium", CHROMIUM], capture_output=True, text=True,
                       timeout=seconds + 90)
    assert p.returncode == 0, f"play.mjs exit {p.returncode}: {p.stderr[-2000:]}"
    return json.loads(p.stdout)


def episodes(times_ms: list[int], after_ms: float) -> int:
    """Stall episodes: `waiting` events closer than a second apart are one."""
    n, last = 0, None
    for t in times_ms:
        if t >= after_ms and (last is None or t - last > 1000):
            n += 1
        last = t
    return n


FORCED_PAUSE_MS = 200
# hls.js errors that may appear while it plays on, with the reason; any other (fatal or not:
# a failed load, a parsing error, a buffer append error) fails the test. These three are how
# hls.js reports a stall and its own recovery from it (non-fatal); the stall rule below judges
# the stalls themselves. Chromium's native player: none tolerated.
HLSJS_TOLERATED = ("mediaError bufferStalledError", "mediaError bufferSeekOverHole", "mediaError bufferNudgeOnStall")


def forced_pauses(log: str) -> list[int]:
    """late_ms of each "testsrc fell behind real time" warning of at least FORCED_PAUSE_MS."""
    out = []
    for line in log.splitlines():
        if "testsrc fell behind real time" in line:
            m = re.search(r"late_ms=(\d+)", line)
            assert m, f"pinhole's pause warning no longer carries late_ms: {line!r}"
            if int(m.group(1)) >= FORCED_PAUSE_MS:
                out.append(int(m.group(1)))
    return out


def summary(report: dict) -> dict:
    late = [s for s in report["samples"] if s["t_ms"] >= WARMUP_S * 1000]
    lat = sorted(s["latency_ms"] for s in late)
    hls = [s["hls_latency_s"] for s in late if s["hls_latency_s"] is not None]
    return {
        "frames": report["frames"],
        "frames_after_warmup": len(late),
        "pixel_latency_p50_ms": statistics.median(lat) if lat else None,
        "pixel_latency_p90_ms": lat[int(0.9 * (len(lat) - 1))] if lat else None,
        "hls_latency_p50_s": statistics.median(hls) if hls else None,
        "stalls_after_warmup": episodes(report.get("stall_times_ms", []), WARMUP_S * 1000),
        "first_frame_ms": report["first_frame_ms"],
        "span_s": (late[-1]["current_time_s"] - late[0]["current_time_s"]) if len(late) > 1 else 0.0,
        "errors": report["errors"][:10],
    }


def test_hls_js_plays_the_low_latency_stream(pinhole, record_property):
    """hls.js 1.x with lowLatencyMode: plays without a fatal error, shows live frames whose
    burned-in capture time is within a second of now, and reports its own latency figure."""
    ph = pinhole("testsrc?size=640x360")
    ph.wait_video()
    time.sleep(2.0)
    seconds = 20.0
    log_before = len(ph.log())
    report = play(f"http://127.0.0.1:{ph.port}/hls/stream.m3u8", "hlsjs", seconds)
    forced = forced_pauses(ph.log()[log_before:])
    s = summary(report)
    s["testsrc_pauses"] = forced
    record_property("hlsjs", s)
    print(f"hls.js: {s}")
    assert not report["sampler_errors"], f"the pixel sampler failed: {report['sampler_errors']}"
    bad = [e for e in report["errors"] if e not in HLSJS_TOLERATED]
    assert not bad, f"hls.js errors: {bad}; console: {report.get('console', [])[-10:]}"
    assert s["frames_after_warmup"] >= 0.8 * 30 * (seconds - WARMUP_S), \
        f"{s['frames_after_warmup']} frames shown in the last {seconds - WARMUP_S} s of 30 fps: {s}"
    assert s["span_s"] >= 0.9 * (seconds - WARMUP_S - 1), f"playback did not keep up with live: {s}"
    assert s["hls_latency_p50_s"] is not None and 0 < s["hls_latency_p50_s"] < 1.5, s
    # ARCHITECTURE.md: LL-HLS ≤ 1 s glass-to-glass (the benchmark holds hls.js to 700 ms p50).
    assert 0 < s["pixel_latency_p50_ms"] <= 1000, f"hls.js shows frames {s['pixel_latency_p50_ms']:.0f} ms old: {s}"
    # At most one stall episode after warm-up (as before), plus one per pause that pinhole's log proves was forced on the
    # source: testsrc fell behind real time (the machine starved its encoder) by at least
    # FORCED_PAUSE_MS, so the live edge stood still longer than hls.js's part buffer. A stall
    # without such a line is pinhole's (or hls.js's) and fails. (Until 9a634e6 the excuse was
    # any "skipping ahead" line, counted whatever its size; that source no longer skips.)
    assert s["stalls_after_warmup"] <= 1 + len(forced), \
        f"hls.js stalled after warm-up at {report['stall_times_ms']} ms; forced source pauses: {forced}"


def test_chromium_plays_it_with_its_own_hls_player(pinhole, record_property):
    """No hls.js: video.src is the playlist. Chromium's native player is not a low-latency one
    (its figure is recorded, not held to a target); it must play live frames without error."""
    ph = pinhole("testsrc?size=640x360")
    ph.wait_video()
    time.sleep(4.0)
    seconds = 25.0
    report = play(f"http://127.0.0.1:{ph.port}/hls/stream.m3u8", "native", seconds)
    s = summary(report)
    record_property("native", s)
    print(f"chromium native: {s}, canPlayType={report.get('can_play')!r}")
    assert not report["sampler_errors"], f"the pixel sampler failed: {report['sampler_errors']}"
    assert not report["errors"], f"native player errors (none tolerated): {report['errors']}"
    assert s["frames_after_warmup"] >= 0.7 * 30 * (seconds - WARMUP_S), s
    assert s["span_s"] >= 0.8 * (seconds - WARMUP_S - 1), f"currentTime did not advance with live: {s}"
    assert 0 < s["pixel_latency_p50_ms"] < 10_000, s
