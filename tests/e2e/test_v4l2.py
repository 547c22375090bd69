"""v4l2: sources and `pinhole probe` on a machine without cameras.

These machines have no /dev/video* and cannot load vivid or v4l2loopback, so capture itself is
tested through stand-in device descriptions in the Rust unit tests (source/v4l2/*). What can be
tested here end to end is what a user without (or with an unplugged) camera sees: a clear error,
a supervisor that keeps retrying, an HTTP server that stays up, and a probe that says there is
nothing to probe.
"""

from __future__ import annotations

import glob
import time

from cmaf import CmafClient
from conftest import run_pinhole


def wait_restarts(ph, n: int, timeout: float = 10.0) -> dict:
    deadline = time.time() + timeout
    st = {}
    while time.time() < deadline:
        assert ph.alive(), f"pinhole died (exit {ph.proc.returncode}); log:\n{ph.log_tail()}"
        st = ph.status()
        if st["source"]["restarts"] >= n:
            return st
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} restarts in {timeout} s; last status {st}")


def test_a_missing_v4l2_device_is_a_clear_error_retried_while_the_server_stays_up(pinhole):
    ph = pinhole("v4l2:/dev/video99")
    st = wait_restarts(ph, 3)
    src = st["source"]
    assert src["state"] in ("restarting", "starting"), src
    err = src["last_error"] or ""
    assert "no such device /dev/video99" in err and "pinhole probe" in err, err
    assert src["uri"].startswith("v4l2:/dev/video99"), src
    m = ph.metrics()
    assert m["pinhole_source_up"] == 0 and m["pinhole_source_restarts_total"] >= 3, m
    # The server keeps answering: the UI, and a stream that waits with heartbeats.
    code, _, body = ph.get("/")
    assert code == 200 and body, f"GET / answered {code}"
    c = CmafClient(ph.port, timeout=8)
    try:
        c.check_headers()
        rec = c.read_record()
        assert rec.payload == b"", "a record with data from a source that has no device"
    finally:
        c.close()
    # Still retrying afterwards (the backoff is capped, so restarts keep coming).
    later = wait_restarts(ph, src["restarts"] + 2)
    assert "no such device" in (later["source"]["last_error"] or "")
    assert "no such device /dev/video99" in ph.log()


def test_probe_says_plainly_when_there_are_no_video_devices_and_exits_zero():
    p = run_pinhole(["probe"])
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr}"
    nodes = sorted(glob.glob("/dev/video*"))
    if nodes:  # a developer machine with a camera: every node is listed
        for n in nodes:
            assert n in p.stdout, f"{n} missing from:\n{p.stdout}"
    else:
        assert p.stdout.startswith("No video devices"), p.stdout
    assert "H.264 encoders for raw cameras" in p.stdout and "software: OpenH264" in p.stdout, p.stdout


def test_bad_v4l2_options_are_refused_at_start_in_one_line():
    p = run_pinhole(["--source", "v4l2:/dev/video0?fps=500"])
    assert p.returncode == 2, f"exit {p.returncode}; stderr {p.stderr!r}"
    line = p.stderr.strip()
    assert "\n" not in line and "fps" in line and "1..=120" in line, line
    p = run_pinhole(["--source", "v4l2:video0"])
    assert p.returncode == 2 and "v4l2:/dev/video0" in p.stderr, p.stderr


def test_help_documents_v4l2_gst_and_probe():
    p = run_pinhole(["--help"])
    assert p.returncode == 0, p.stderr
    for word in ("v4l2:/dev/videoN", "gst:PIPELINE", "probe", "--features gstreamer"):
        assert word in p.stdout, f"--help does not mention {word}"
