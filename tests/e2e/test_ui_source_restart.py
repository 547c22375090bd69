"""Picture back after a source restart, in the web UI: the camera (an `exec:` ffmpeg) dies under
an open page and is available again AWAY_S later; pinhole's supervisor restarts it and the page,
which keeps its one connection (heartbeats while the source is away), shows frames again. The
target (ARCHITECTURE.md, issue 12): back on the viewer's screen within 2 s of the camera's return.

The camera's return is when the test makes it available again (a flag file the restarted script
waits for, so pinhole's own restart delay counts); "picture back" is the first 0.5 s sample of
the page's state (tests/ui/watch.mjs) at which the player has shown 5 more frames than then.
Shares test_ui.py's browser driver."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

from conftest import children, ffmpeg_exec
from test_ui import ARTIFACTS, check_errors, watch_cmd

AWAY_S = 0.5
# The target, 2 s from the camera's return. Measured on this machine under a load average of
# ~23: 0.87 and 0.92 s (and 1.2-1.5 s when the camera was back only after 1.5 s). What it is made
# of: pinhole's restart (250 ms backoff after a healthy run, so the restarted script is already
# waiting when the camera comes back; a slower restart shows here), ffmpeg's start and first
# IDR, one 100 ms fragment, and the page's append and decode.
TARGET_S = 2.0


def child_pids(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def test_picture_is_back_within_2_s_of_the_cameras_return(pinhole, tmp_path, record_property):
    runs, returns, flag = tmp_path / "runs", tmp_path / "returns", tmp_path / "camera-back"
    script = tmp_path / "camera.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"n=$(cat '{runs}' 2>/dev/null || echo 0); echo $((n + 1)) > '{runs}'\n"
        f"if [ \"$n\" -ge 1 ]; then while [ ! -e '{flag}' ]; do sleep 0.02; done; fi\n"
        f"date +%s.%N >> '{returns}'\n"
        f"exec {ffmpeg_exec('640x360')}\n")
    ph = pinhole(f"exec:sh {script}")
    ph.wait_video()
    seconds = 22.0
    proc = subprocess.Popen(watch_cmd(f"http://127.0.0.1:{ph.port}/?mode=chunked", seconds, "source-restart"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 45
        while ph.status()["viewers"] < 1 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert ph.status()["viewers"] >= 1, "the page never connected to the stream"
        time.sleep(4.0)
        cams = child_pids(ph.pid)
        assert cams, "no camera process under pinhole"
        for pid in cams:  # pinhole runs the command as `sh -c` in a process group of its own
            os.killpg(pid, signal.SIGKILL)
        kill_ms = time.time() * 1000
        time.sleep(AWAY_S)
        flag.touch()
        back_ms = time.time() * 1000
        out, err = proc.communicate(timeout=seconds + 90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    ph.others = [pid for pid, _, _ in children() if pid != ph.pid]
    assert proc.returncode == 0, err[-2000:]
    r = json.loads(out)
    (ARTIFACTS / "source-restart.json").write_text(json.dumps(r, indent=1))
    started = [float(x) * 1000 for x in returns.read_text().split()]
    assert len(started) == 2, f"the camera ran {len(started)} times; expected one restart"
    record_property("camera_started_after_return_s", round((started[1] - back_ms) / 1000, 3))
    tl = r["timeline"]
    before = [e for e in tl if e["wall_ms"] < kill_ms]
    after = [e for e in tl if e["wall_ms"] >= back_ms]
    context = f"player {tl[-1]['player']}; errors {r['player_errors'][:5]}"
    assert before and before[-1]["player"]["frames"] > 30, f"no picture before the camera died: {before[-1:]}"
    assert after, f"the page's timeline ends before the camera came back: {context}"
    base = after[0]["player"]["frames"]
    resumed = next((e for e in after if e["player"]["frames"] >= base + 5), None)
    assert resumed is not None, f"no picture after the camera came back: {context}"
    resume_s = (resumed["wall_ms"] - back_ms) / 1000
    record_property("source_resume_s", resume_s)
    print(f"picture back {resume_s:.2f} s after the camera's return")
    assert resume_s < TARGET_S, f"picture came back {resume_s:.2f} s after the camera did (target {TARGET_S} s)"
    # ... and keeps coming: ~30 fps over the rest of the window, on the same connection.
    span_s = (tl[-1]["wall_ms"] - resumed["wall_ms"]) / 1000
    shown = tl[-1]["player"]["frames"] - resumed["player"]["frames"]
    assert span_s > 3 and shown >= 0.6 * 30 * span_s, f"{shown} frames in {span_s:.1f} s after the return: {context}"
    assert tl[-1]["player"]["connections"] == 1, f"the page reconnected: {context}"
    assert r["navigations"] == 1
    assert statistics.median(e["player"]["frames"] for e in tl[-3:]) > base
    # The stream's end and restart are not player errors (heartbeats kept the connection).
    check_errors(r, "chunked", context)
