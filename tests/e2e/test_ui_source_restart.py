"""Picture back after a source restart, in the web UI: the camera (an `exec:` ffmpeg) dies under
an open page, stays away 1.5 s, comes back; pinhole's supervisor restarts it and the page, which
keeps its one connection (heartbeats while the source is away), shows frames again. The target
(ARCHITECTURE.md, issue 12): back on the viewer's screen within 2 s of the camera's return.

The camera's return is the time the restarted script logs just before it starts ffmpeg; "picture
back" is the first 0.5 s sample of the page's state (tests/ui/watch.mjs) at which the player has
shown 5 more frames than when the camera came back. Shares test_ui.py's browser driver."""

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

AWAY_S = 1.5
# The target, 2 s from the camera's return. Measured on this machine: see tests/README.md. What
# it is made of: pinhole's restart backoff (250 ms after a run that was healthy), ffmpeg's start
# and first IDR (~0.3 s), one 100 ms fragment, and the page's append and decode.
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
    runs, returns = tmp_path / "runs", tmp_path / "returns"
    script = tmp_path / "camera.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"n=$(cat '{runs}' 2>/dev/null || echo 0); echo $((n + 1)) > '{runs}'\n"
        f"if [ \"$n\" -ge 1 ]; then sleep {AWAY_S}; fi\n"
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
        out, err = proc.communicate(timeout=seconds + 90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    ph.others = [pid for pid, _, _ in children() if pid != ph.pid]
    assert proc.returncode == 0, err[-2000:]
    r = json.loads(out)
    (ARTIFACTS / "source-restart.json").write_text(json.dumps(r, indent=1))
    back = [float(x) * 1000 for x in returns.read_text().split()]
    assert len(back) == 2, f"the camera ran {len(back)} times; expected one restart"
    back_ms = back[1]
    assert AWAY_S * 1000 <= back_ms - kill_ms <= AWAY_S * 1000 + 3000, (kill_ms, back_ms)
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
