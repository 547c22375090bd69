"""The player in WebKitGTK, the engine nearest Safari that runs here (Debian's WebKitWebDriver
driving its MiniBrowser on a private Xvfb display; tests/ui/watch_webkit.py). The same page side
as the Chromium tests (tests/ui/sampler.mjs: testsrc's time band read from the displayed pixels),
the same report. What WebKit has shown to need beyond Chromium:

- a page opened the moment pinhole starts plays (the stream's first fragment sits where the
  playhead already is; a seek during WebKit's preroll closed the MediaSource: web-ui/js/mse.js);
- pinhole restarted under an open page is playing again within 2 s of its return;
- every mode plays, a source restart and a resolution change keep the page playing;
- ManagedMediaSource's endstreaming/startstreaming and a hidden page cost no buffering debt;
- a picture that stops while data arrives comes back within 2 s (also run in Chromium);
- the engine's own HLS (`?hls=native`) joined late: WebKitGTK's (GStreamer's legacy hlsdemux)
  freezes on one picture, and the page plays its part follower instead within 2 s (the
  GStreamer clients are also run bare, to show which demuxer does what).

Bounds: the issue's 2 s where it sets one; latency budgets as wide as test_ui.py's for Chromium
(a shared 2-core CI box). Screenshots and reports go to tests/ui/artifacts/ (git-ignored)."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from conftest import REPO, children, ffmpeg_exec, free_port, http_get
from hls_helpers import Playlist, parse_playlist

UI_DIR = REPO / "tests" / "ui"
ARTIFACTS = UI_DIR / "artifacts"
DRIVER = Path("/usr/bin/WebKitWebDriver")
SOURCE = "testsrc?size=640x360"
LATENCY_RE = re.compile(r"latency ≈?(\d+) ms")


def _requirements() -> None:
    if not DRIVER.exists():
        pytest.fail(f"{DRIVER} is missing: tests/run installs it (tests/deps.d/webkit.sh: webkit2gtk-driver)",
                    pytrace=False)
    for tool in ("Xvfb", "node"):
        if not any((Path(d) / tool).exists() for d in os.environ.get("PATH", "").split(":")):
            pytest.fail(f"`{tool}` is missing: tests/run installs it (tests/deps.d/webkit.sh)", pytrace=False)
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("selenium is missing from tests/.venv: tests/run installs tests/requirements.txt", pytrace=False)


def watch_cmd(url: str, seconds: float, name: str, *extra: str) -> list[str]:
    _requirements()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # niced as Chromium is in test_ui.py: on two cores the browser's start-up would otherwise
    # starve testsrc's encoder
    return ["nice", "-n", "10", sys.executable, str(UI_DIR / "watch_webkit.py"), "--url", url,
            "--seconds", str(seconds), "--screenshot", str(ARTIFACTS / f"webkit-{name}.png"), *extra]


def finish(proc: subprocess.Popen, name: str, seconds: float) -> dict:
    try:
        out, err = proc.communicate(timeout=seconds + 90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, f"watch_webkit.py exit {proc.returncode}: {err[-2000:]}"
    report = json.loads(out)
    (ARTIFACTS / f"webkit-{name}.json").write_text(json.dumps(report, indent=1))
    return report


def watch(url: str, seconds: float, name: str, *extra: str) -> dict:
    proc = subprocess.Popen(watch_cmd(url, seconds, name, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return finish(proc, name, seconds)


def pixel_latencies(report: dict, after_ms: float, before_ms: float = float("inf")) -> list[float]:
    return sorted(s["latency_ms"] for s in report["samples"] if after_ms <= s["t_ms"] < before_ms)


def pct(values: list[float], q: float) -> float:
    return values[int(q * (len(values) - 1))]


def media_errors(report: dict) -> list[str]:
    """The player's own errors that mean the engine failed (not a connection that dropped)."""
    errs = list(report.get("player_errors") or [])
    for e in report["timeline"][-1:]:
        st = e.get("state") or {}
        if st.get("error"):
            errs.append(f"video.error {st['error']}")
    return [e for e in errs if "media error" in e or "video.error" in e or "SourceBuffer" in e
            or e.startswith(("append:", "addSourceBuffer"))]


def busiest() -> str:
    """The load average and the processes using the most CPU: a WebKit that crawls (a few
    pictures a second, hundreds dropped) may be starved, or may be the one starving the rest."""
    p = subprocess.run(["ps", "-eo", "pcpu,etimes,comm", "--sort=-pcpu"], capture_output=True, text=True)
    top = "; ".join(" ".join(line.split()) for line in p.stdout.splitlines()[1:7])
    return f"load {os.getloadavg()}; busiest (%cpu, s, name): {top}"


def context(report: dict) -> str:
    last = report["timeline"][-1]
    return (f"player {last['player']}; state {last.get('state')}; stats {last['stats']!r}; "
            f"errors {report['player_errors'][:6]}; recoveries {report.get('recoveries')}; "
            f"console {report['console'][-6:]}; {busiest()}")


def picture_back_s(timeline: list[dict], recovery: dict) -> float | None:
    """Seconds from the last picture before a stall (a watchdog action's `at` − `stalledMs`) to
    the first timeline entry after it from which ≥ 8 frames follow within 500 ms; None if never."""
    stopped_at = recovery["at"] - recovery["stalledMs"]
    for i, e in enumerate(timeline):
        if e["t_ms"] <= stopped_at:
            continue
        later = [x for x in timeline[i:] if x["t_ms"] - e["t_ms"] >= 500]
        if later and later[0]["frames"] - e["frames"] >= 8:
            return (e["t_ms"] - stopped_at) / 1000
    return None


def wait_for_file(proc: subprocess.Popen, path: Path, seconds: float) -> bool:
    """Waits up to `seconds` for the watcher to write `path`; fails if the watcher exits first."""
    deadline = time.time() + seconds
    while not path.exists():
        assert proc.poll() is None, f"watch_webkit.py exited early: {proc.stderr.read()[-2000:]}"
        if time.time() >= deadline:
            return False
        time.sleep(0.05)
    return True


def pinhole_children(ph) -> list[int]:
    """Processes of this test's (a browser's helpers being reaped), not ones pinhole left behind:
    the daemon is stopped right after, with these known (the fixture's teardown would not)."""
    return [pid for pid, _, _ in children() if pid != ph.pid]


# --- every mode plays ------------------------------------------------------------------------------

# (name, query, expected (mode, submode), pixel p50 budget (ms) on a shared 2-core CI box)
MODES = [
    ("chunked", "?mode=chunked", ("chunked", ""), 500),
    ("compat-parts", "?mode=compat", ("compat", "LL-HLS parts"), 1200),
    ("compat-native", "?mode=compat&hls=native", ("compat", "native HLS"), 12_000),
]


@pytest.mark.parametrize("name,query,expect,budget_ms", MODES, ids=[m[0] for m in MODES])
def test_webkit_plays_each_mode(pinhole, record_property, name, query, expect, budget_ms):
    """Pictures move (~30 a second read from the pixels after warm-up), the band reads a recent
    time, the frame is not black, the status line's latency agrees with the pixels."""
    ph = pinhole(SOURCE)
    ph.wait_video()
    seconds, warmup = 12.0, 5.0
    r = watch(f"http://127.0.0.1:{ph.port}/{query}", seconds, f"mode-{name}")
    ph.others = pinhole_children(ph)
    ph.stop()
    last = r["timeline"][-1]
    lat = pixel_latencies(r, r["timeline"][0]["t_ms"] + warmup * 1000)
    summary = {"samples": len(lat), "p50_ms": statistics.median(lat) if lat else None,
               "p95_ms": pct(lat, 0.95) if lat else None, "luma": r["luma"], "status": last["stats"]}
    record_property(f"webkit-{name}", summary)
    print(f"webkit {name}: {summary}")
    ctx = f"{summary}; {context(r)}"
    assert last["player"] is not None, ctx
    assert (last["player"]["mode"], last["player"]["submode"]) == expect, ctx
    assert r["navigations"] == 1, ctx
    # pictures move: ≥ 10 a second with a readable band (~24–30 on a quiet 2-core box; 14–19
    # seen with the load average at 15–20; a frozen page reads 0, the old restart crawl 5–6)
    counted_s = (last["t_ms"] - r["timeline"][0]["t_ms"]) / 1000 - warmup
    assert len(lat) >= 10 * counted_s, ctx
    counted = [e for e in r["timeline"] if e["t_ms"] >= r["timeline"][0]["t_ms"] + warmup * 1000]
    advanced = counted[-1]["current_time"] - counted[0]["current_time"]
    assert advanced >= 0.7 * (counted[-1]["t_ms"] - counted[0]["t_ms"]) / 1000, f"currentTime did not advance: {ctx}"
    assert r["luma"]["mean"] > 20 and r["luma"]["std"] > 10, f"the frame on screen looks black: {ctx}"
    assert 0 < statistics.median(lat) <= budget_ms, ctx
    m = LATENCY_RE.search(last["stats"] or "")
    assert m, f"no latency figure in the status line: {ctx}"
    if name != "compat-native":
        assert abs(int(m.group(1)) - statistics.median(lat)) < 250, ctx
    # compat-native: the line's "≈" figure assumes the native player starts HOLD-BACK (3 s)
    # behind the live edge, as Chromium's does; WebKitGTK's native HLS (GStreamer's legacy
    # hlsdemux under playbin) starts three segments from the playlist's end whatever the
    # hold-backs say, and tells nothing of where (getStartDate() is NaN, seekable starts at 0),
    # so its figure is 0–6 s short: only its presence is checked. This test opens the page a few
    # seconds after pinhole started (its playlist not yet full), where that player still plays;
    # test_webkit_native_hls_joined_late_plays is the later join.
    assert not media_errors(r), ctx
    assert not [c for c in r["console"] if c.startswith("pageerror")], ctx


# --- the engine's own HLS, joined late --------------------------------------------------------------


def wait_joined_late(ph, behind_s: float = 15.0, seconds: float = 60.0) -> Playlist:
    """Waits until pinhole's playlist window begins `behind_s` seconds after its stream began (the
    first segment the first playlist listed): a viewer joining now joins a stream whose
    timestamps (tfdt) are that far past where a window-relative timeline would put them."""
    deadline = time.time() + seconds
    began = None
    text = ""
    while time.time() < deadline:
        status, _, body = http_get(ph.port, "/hls/stream.m3u8")
        text = body.decode(errors="replace")
        pl = parse_playlist(text) if status == 200 else None
        pdt = pl.segments[0].pdt if pl and pl.segments else None
        if pdt is not None:
            t = datetime.fromisoformat(pdt.replace("Z", "+00:00")).timestamp()
            began = t if began is None else began
            if t - began >= behind_s:
                return pl
        time.sleep(0.5)
    pytest.fail(f"pinhole's playlist window did not move {behind_s} s past its start within {seconds} s: {text!r}")


def test_webkit_native_hls_joined_late_plays(pinhole, record_property):
    """`?hls=native` opened when pinhole's playlist window begins 15 s into its stream.
    WebKitGTK's native HLS (GStreamer's legacy hlsdemux, see the GStreamer test below) then
    presents one picture while its playhead runs on: the page's native watchdog
    (web-ui/js/app.js) notices within NATIVE_STALL_MS and plays pinhole's own part follower
    instead, saying so in the status line. Engine-neutral: a native player that plays passes too. Either way pictures move at ≥ 10/s after the first
    4 s, and a fall-back had the picture back within 2 s of the one the native player froze on."""
    ph = pinhole(SOURCE)
    ph.wait_video()
    wait_joined_late(ph)
    seconds = 12.0
    r = watch(f"http://127.0.0.1:{ph.port}/?mode=compat&hls=native", seconds, "native-late",
              "--timeline-ms", "200")
    ph.others = pinhole_children(ph)
    ph.stop()
    tl = r["timeline"]
    last = tl[-1]
    fell_back = [x for x in (r.get("recoveries") or []) if x.get("stage") == "native"]
    back_s = picture_back_s(tl, fell_back[0]) if fell_back else None
    lat = pixel_latencies(r, tl[0]["t_ms"] + 4000)
    span_s = (last["t_ms"] - tl[0]["t_ms"]) / 1000 - 4
    s = {"fell_back": fell_back, "back_s": back_s, "submode": (last["player"] or {}).get("submode"),
         "samples": len(lat), "p50_ms": statistics.median(lat) if lat else None, "status": last["stats"]}
    record_property("webkit-native-late", s)
    print(f"webkit native HLS joined late: {s}")
    ctx = f"{s}; {context(r)}"
    assert r["navigations"] == 1, ctx
    assert len(lat) >= 10 * span_s, f"pictures did not move: {ctx}"
    if fell_back:
        assert back_s is not None and back_s <= 2.0, f"picture back {back_s} s after it stopped: {ctx}"
        assert last["player"]["submode"] == "LL-HLS parts; native HLS froze", ctx
        assert "native HLS froze" in (last["stats"] or ""), ctx
        assert statistics.median(lat) <= 1200, ctx
    else:
        assert last["player"]["submode"] == "native HLS", ctx


GST_CLIENTS = [("playbin3", "GstHLSDemux2"), ("playbin", "GstHLSDemux")]


@pytest.mark.parametrize("playbin,demuxer", GST_CLIENTS, ids=[c[0] for c in GST_CLIENTS])
def test_gstreamer_hls_clients_joining_late(pinhole, record_property, playbin, demuxer):
    """What WebKitGTK's native HLS is made of, without the browser: gst-launch-1.0 plays
    pinhole's playlist (joined late: its window begins 15 s into the stream) into a
    clock-synchronised fakesink for 8 s.

    playbin3 picks hlsdemux2, which maps each fMP4 segment's tfdt onto its timeline: it must
    render ≥ 20 pictures a second. playbin picks the legacy hlsdemux (what Debian 12's WebKitGTK
    2.50 plays HLS with under WEBKIT_GST_ENABLE_HLS_SUPPORT=1, even with WEBKIT_GST_USE_PLAYBIN3=1:
    it never picked hlsdemux2 here, GST_DEBUG=GST_ELEMENT_FACTORY:4 in the WebProcess): it
    places the segment it starts at by the playlist (seconds since the window's first segment: a few) while
    qtdemux stamps the pictures with their tfdt (seconds since pinhole's stream began), so the
    sink waits pinhole's uptime for the first one and renders none here. That is the failure the
    page's native watchdog answers; if this half fails, GStreamer has changed, and the watchdog's
    comment in web-ui/js/app.js and bench/README.md's WebKit native row need a new look."""
    gst = shutil.which("gst-launch-1.0")
    assert gst, "`gst-launch-1.0` is missing: tests/run installs it (gstreamer1.0-tools)"
    ph = pinhole(SOURCE)
    ph.wait_video()
    playlist = wait_joined_late(ph)
    seconds = 8
    cmd = ["timeout", "-k", "3", "-s", "INT", str(seconds), gst, "-v", playbin,
           f"uri=http://127.0.0.1:{ph.port}/hls/stream.m3u8",
           "video-sink=fpsdisplaysink video-sink=fakesink text-overlay=false sync=true", "audio-sink=fakesink"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 20)
    ph.stop()
    log = out.stdout + out.stderr
    rendered = [int(m) for m in re.findall(r"rendered: (\d+)", log)]
    used = sorted(set(re.findall(r"(GstHLSDemux2?):", log)))
    s = {"rendered": rendered[-1] if rendered else 0, "demuxers": used, "rc": out.returncode,
         "media_sequence": playlist.media_sequence}
    record_property(f"gstreamer-{playbin}", s)
    print(f"gstreamer {playbin}: {s}")
    ctx = f"{s}; gst-launch-1.0's last lines: {log.splitlines()[-8:]}"
    assert out.returncode == 124, f"gst-launch-1.0 ended before the {seconds} s were up: {ctx}"
    assert used == [demuxer], f"{playbin} did not pick {demuxer}: {ctx}"
    if playbin == "playbin3":
        assert s["rendered"] >= 20 * (seconds - 2), ctx
    else:
        assert s["rendered"] <= 1, f"the legacy hlsdemux now plays a late join: {ctx}"


# --- a stream that has just begun -------------------------------------------------------------------


def test_webkit_page_opened_as_pinhole_starts_plays(pinhole, record_property):
    """The page is opened within a second of pinhole's start (the browser waits for the port,
    then navigates): its first fragments begin at media time 0, where the playhead already is.
    Before the fix WebKit failed the player's seek during its preroll (video.error 4 "Failed to
    push buffer", the MediaSource closed) and the picture froze at currentTime 0.01 for good,
    3 times in 3 here. Now: no media error, and the picture plays on."""
    port = free_port()
    ready = ARTIFACTS / "webkit-fresh.ready"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ready.unlink(missing_ok=True)
    seconds = 12.0
    proc = subprocess.Popen(watch_cmd(f"http://127.0.0.1:{port}/?mode=chunked", seconds, "fresh",
                                      "--ready-file", str(ready), "--wait-server"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for_file(proc, ready, 60), "WebKit did not start within 60 s"
        start_ms = time.time() * 1000
        ph = pinhole(SOURCE, port=port, ready=False)
        r = finish(proc, "fresh", seconds)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    ph.others = pinhole_children(ph)
    ph.stop()
    opened_after_ms = r["opened_wall_ms"] - start_ms
    tl = r["timeline"]
    # playing: frames read from the pixels in the second half, and the playhead moving there
    half = tl[len(tl) // 2]
    lat = pixel_latencies(r, half["t_ms"])
    span_s = (tl[-1]["t_ms"] - half["t_ms"]) / 1000
    s = {"opened_after_start_ms": round(opened_after_ms), "samples_2nd_half": len(lat),
         "p50_ms": statistics.median(lat) if lat else None, "recoveries": r.get("recoveries"),
         "first_frame_ms": r.get("player_first_frame_ms")}
    record_property("webkit-fresh", s)
    print(f"webkit fresh start: {s}")
    ctx = f"{s}; {context(r)}"
    assert opened_after_ms < 1000, f"the page was not opened within a second of pinhole's start: {ctx}"
    assert not media_errors(r), ctx
    assert tl[-1]["current_time"] - half["current_time"] >= 0.7 * span_s, ctx
    assert len(lat) >= 10 * span_s, ctx  # ≥ 10 pictures/s (see test_webkit_plays_each_mode)
    assert statistics.median(lat) <= 500, ctx


def test_webkit_restarting_pinhole_under_an_open_page_plays_again_within_2_s(pinhole, record_property):
    """pinhole stops under an open page and a new one listens on the same port 3 s later (a
    reboot, an update, a crash): the page is playing again (the playhead and the pixels' band
    moving) within 2 s of the new pinhole answering, at ~30 pictures a second, without a
    reload and without a media error."""
    port = free_port()
    ph = pinhole(SOURCE, port=port)
    ph.wait_video()
    seconds = 30.0
    ready = ARTIFACTS / "webkit-restart.ready"
    playing = ARTIFACTS / "webkit-restart.playing"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ready.unlink(missing_ok=True)
    playing.unlink(missing_ok=True)
    proc = subprocess.Popen(watch_cmd(f"http://127.0.0.1:{port}/?mode=chunked", seconds, "restart",
                                      "--timeline-ms", "200", "--ready-file", str(ready),
                                      "--playing-file", str(playing), "--playing-frames", "60"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the browser is up and opens the page now
        assert wait_for_file(proc, ready, 60), "WebKit did not start within 60 s"
        # pinhole goes down once the page has shown 60 pictures (2 s of video), not after a
        # fixed time: a start slowed by a busy machine is not what this test is about (the
        # fresh-start test is). At most 14 s, leaving the watcher 13 s after pinhole is back.
        wait_for_file(proc, playing, 14)
        time.sleep(1.0)
        down_ms = time.time() * 1000
        ph.others = pinhole_children(ph)
        ph.stop()
        time.sleep(3.0)
        back_ms = time.time() * 1000
        ph2 = pinhole(SOURCE, port=port, ready=False)
        r = finish(proc, "restart", seconds)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    ph2.others = pinhole_children(ph2)
    ph2.stop()
    tl = r["timeline"]
    before = [e for e in tl if e["wall_ms"] < down_ms]
    assert before and before[-1]["frames"] >= 30, f"the page was not playing before the restart: {context(r)}"
    after = [e for e in tl if e["wall_ms"] > back_ms]
    assert after, context(r)
    # playing again: from this entry on, the sampler's frame count grows by ≥ 8 within 0.5 s
    resumed = None
    for i, e in enumerate(after):
        later = [x for x in after[i:] if x["wall_ms"] - e["wall_ms"] >= 500]
        if later and later[0]["frames"] - e["frames"] >= 8:
            resumed = e
            break
    resume_s = (resumed["wall_ms"] - back_ms) / 1000 if resumed else None
    lat = pixel_latencies(r, tl[-1]["t_ms"] - 5000)
    s = {"resume_s": resume_s, "p50_last_5s": statistics.median(lat) if lat else None,
         "recoveries": r.get("recoveries"), "connections": tl[-1]["player"]["connections"]}
    record_property("webkit-restart", s)
    print(f"webkit restart: {s}")
    ctx = f"{s}; {context(r)}"
    assert resumed is not None, f"no picture after the restart: {ctx}"
    assert resume_s <= 2.0, f"picture back {resume_s:.2f} s after pinhole: {ctx}"
    assert r["navigations"] == 1, ctx
    assert tl[-1]["player"]["connections"] >= 2, ctx
    assert not media_errors(r), ctx
    assert len(lat) >= 10 * 5, ctx  # ≥ 10 pictures/s (see test_webkit_plays_each_mode)
    assert statistics.median(lat) <= 500, ctx


def test_webkit_source_restart_and_resolution_change_keep_playing(pinhole, record_property):
    """An exec: source that plays 320x180 for 5 s, then 480x270 for 5 s, then exits (pinhole
    restarts it: a gap in the timeline, and back to 320x180). Small pictures: two encoders and
    WebKit's software decoder share the 2 cores. The open page follows the in-band
    init segments and the source restart on its one connection and keeps presenting pictures."""
    cmd = f"sh -c '{ffmpeg_exec('320x180').replace('-f lavfi', '-t 5 -f lavfi')}; " \
          f"{ffmpeg_exec('480x270').replace('-f lavfi', '-t 5 -f lavfi')}'"
    ph = pinhole("exec:" + cmd)
    ph.wait_video()
    seconds = 24.0
    r = watch(f"http://127.0.0.1:{ph.port}/?mode=chunked", seconds, "source-restart")
    ph.others = pinhole_children(ph)
    ph.stop()
    tl = r["timeline"]
    sizes = [tuple(e["size"] or (0, 0)) for e in tl]
    changes = [i for i in range(1, len(sizes)) if sizes[i] != sizes[i - 1] and sizes[i] != (0, 0)]
    frames = [e["player"]["frames"] for e in tl]
    # pictures in every 3 s window after the first 3 s (a restart costs < 1 s of picture): at
    # least 9 (3 a second: a stopped page shows none; ~25 a second on a quiet box, 2-6 a
    # second seen at 960x540 with the load average at 15-20)
    gaps = []
    for i, e in enumerate(tl):
        j = next((k for k in range(i, len(tl)) if tl[k]["t_ms"] - e["t_ms"] >= 3000), None)
        if e["t_ms"] - tl[0]["t_ms"] >= 3000 and j is not None and frames[j] - frames[i] < 9:
            gaps.append((e["t_ms"], frames[j] - frames[i]))
    s = {"sizes": [sizes[i] for i in changes], "frames": frames[-1], "gaps": gaps,
         "recoveries": r.get("recoveries")}
    record_property("webkit-source-restart", s)
    print(f"webkit source restart: {s}")
    ctx = f"{s}; {context(r)}"
    assert (320, 180) in sizes and (480, 270) in sizes, ctx
    assert len(changes) >= 2, f"expected 320→480→320: {ctx}"
    assert not gaps, f"no pictures for 3 s: {ctx}"
    assert r["navigations"] == 1, ctx
    assert not media_errors(r), ctx


def test_webkit_hidden_page_and_endstreaming_cost_no_buffering_debt(pinhole, record_property):
    """ManagedMediaSource's streaming events are honoured, and neither a hidden page nor the
    engine asking to stop leaves the picture behind when it comes back. The window is minimised
    (document hidden) from 5 s to 9 s; then, as WebKit's own ManagedMediaSource only says
    endstreaming when 30 s are buffered ahead or when it closes (neither happens to a live
    stream here), the test dispatches endstreaming at 11 s and startstreaming at 15 s on the
    page's ManagedMediaSource — what the player does with them is under test, not when WebKit
    sends them. While stopped the player fetches nothing; after each return the pixels are
    back near the live edge within 2 s."""
    ph = pinhole(SOURCE)
    ph.wait_video()
    seconds = 22.0
    ms = "window.pinhole.mediaSource()"
    r = watch(f"http://127.0.0.1:{ph.port}/?mode=chunked", seconds, "streaming",
              "--hidden-at", "5", "--visible-at", "9",
              "--run-at", "11", f"{ms}.dispatchEvent(new Event('endstreaming'))",
              "--run-at", "15", f"{ms}.dispatchEvent(new Event('startstreaming'))")
    ph.others = pinhole_children(ph)
    ph.stop()
    tl = r["timeline"]
    t0 = tl[0]["t_ms"] - 500  # the watcher's clock: entries every 500 ms from its start
    at = lambda s: t0 + s * 1000  # noqa: E731 - page time of the watcher's second s
    hidden = [e for e in tl if e["visibility"] == "hidden"]
    stopped = [e for e in tl if (e.get("state") or {}).get("streaming") is False]
    # Bytes received while stopped, from 0.5 s after the first entry that says so (the entry
    # may be read just before an in-flight read returns) to the last one: the player's own
    # byte counter, so a late dispatch on a slow machine moves the window, not the verdict.
    stopped_bytes = None
    if len(stopped) >= 3:
        first = next((e for e in stopped if e["t_ms"] >= stopped[0]["t_ms"] + 500), stopped[-1])
        stopped_bytes = stopped[-1]["player"]["bytes"] - first["player"]["bytes"]
    stretch = [(round((e["t_ms"] - t0) / 1000, 1), (e.get("state") or {}).get("streaming"),
                e["player"]["bytes"], e["player"]["connections"]) for e in tl if at(10) <= e["t_ms"] <= at(17)]
    after_visible = pixel_latencies(r, at(10), at(11))
    after_resume = pixel_latencies(r, at(17), at(22))
    conns = [e["player"]["connections"] for e in tl]
    s = {"hidden_entries": len(hidden), "stopped_entries": len(stopped), "stopped_bytes": stopped_bytes,
         "stretch (s, streaming, bytes, connections)": stretch,
         "p50_after_visible": statistics.median(after_visible) if after_visible else None,
         "p50_after_resume": statistics.median(after_resume) if after_resume else None,
         "connections": sorted(set(conns)), "recoveries": r.get("recoveries"), "events": r.get("page_events")}
    record_property("webkit-streaming", s)
    print(f"webkit streaming: {s}")
    ctx = f"{s}; {context(r)}"
    assert hidden, f"the page never became hidden: {ctx}"
    assert stopped and all(at(10.5) <= e["t_ms"] <= at(16) for e in stopped), \
        f"streaming not off from endstreaming to startstreaming: {ctx}"
    assert stopped_bytes == 0, f"the player kept fetching after endstreaming: {ctx}"
    assert conns[-1] == conns[0] + 1, f"startstreaming must reconnect once: {ctx}"
    assert after_visible and statistics.median(after_visible) <= 500, f"behind after the page came back: {ctx}"
    assert len(after_resume) >= 10 * 5 and statistics.median(after_resume) <= 500, \
        f"behind after startstreaming: {ctx}"
    assert not media_errors(r), ctx


@pytest.mark.parametrize("engine", ["webkit", "chromium"])
def test_a_picture_that_stops_while_data_arrives_comes_back_within_2_s(pinhole, record_property, engine):
    """The player's stall watchdog (web-ui/js/app.js), in both engines. At 8 s the test takes
    the SourceBuffer away from the page's MediaSource (what WebKit's failed preroll seek did
    to it: the appends fail from then on) while fragments keep arriving, so the picture stops.
    The player notices and starts over: pictures move again within 2 s of the last one before
    the stall, and the page ends near the live edge. (Chromium runs through tests/ui/watch.mjs,
    as in test_ui.py.)"""
    ph = pinhole(SOURCE)
    ph.wait_video()
    seconds = 16.0
    url = f"http://127.0.0.1:{ph.port}/?mode=chunked"
    inject = ["--run-at", "8",
              "(() => { const ms = window.pinhole.mediaSource(); ms.removeSourceBuffer(ms.sourceBuffers[0]); })()"]
    if engine == "webkit":
        r = watch(url, seconds, "stall", "--timeline-ms", "200", *inject)
    else:
        node = shutil.which("node")
        assert node, "`node` is missing: tests/run installs it"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        cmd = ["nice", "-n", "10", node, str(UI_DIR / "watch.mjs"), "--url", url, "--seconds", str(seconds),
               "--chromium", "/usr/bin/chromium", "--timeline-ms", "200",
               "--screenshot", str(ARTIFACTS / "chromium-stall.png"), *inject]
        r = finish(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                   "chromium-stall", seconds)
    ph.others = pinhole_children(ph)
    ph.stop()
    tl = r["timeline"]
    t0 = tl[0]["t_ms"] - 200
    recov = [x for x in (r.get("recoveries") or []) if x["at"] >= t0 + 8000]
    back_s = picture_back_s(tl, recov[0]) if recov else None
    lat = pixel_latencies(r, tl[-1]["t_ms"] - 3000)
    s = {"back_s": back_s, "recoveries": recov, "p50_last_3s": statistics.median(lat) if lat else None}
    record_property(f"{engine}-stall", s)
    print(f"{engine} stall: {s}")
    ctx = f"{s}; {context(r)}"
    assert recov, f"the watchdog did nothing: {ctx}"
    assert back_s is not None and back_s <= 2.0, f"picture back {back_s} s after it stopped: {ctx}"
    assert r["navigations"] == 1, ctx
    assert lat and statistics.median(lat) <= 1000, ctx
