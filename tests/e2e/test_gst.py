"""gst: sources, with a pinhole built with `--features gstreamer` ($PINHOLE_GST_BIN; tests/run
builds it as target/pinhole-gst) and Debian's GStreamer (videotestsrc, x264enc, h264parse)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import REPO, run_pinhole
from test_stream import read_and_check

PIPELINE = ("gst:videotestsrc is-live=true ! video/x-raw,format=I420,width=320,height=240,framerate=30/1 "
            "! x264enc tune=zerolatency bframes=0 key-int-max=30 speed-preset=ultrafast")


@pytest.fixture
def gst_bin(monkeypatch) -> str:
    path = Path(os.environ.get("PINHOLE_GST_BIN") or REPO / "target" / "pinhole-gst")
    if not path.is_file():
        pytest.fail(f"{path} is missing: build it with `cargo build -p pinhole --features gstreamer` and copy "
                    "target/debug/pinhole there (tests/run's build step does), or set PINHOLE_GST_BIN", pytrace=False)
    if shutil.which("gst-inspect-1.0") is None:
        pytest.fail("GStreamer's tools are missing: tests/run installs gstreamer1.0-tools and the plugins",
                    pytrace=False)
    # The conftest fixtures start $PINHOLE_BIN: point it at the gstreamer build for this test.
    monkeypatch.setenv("PINHOLE_BIN", str(path))
    return str(path)


def test_gst_videotestsrc_x264enc_plays_end_to_end(gst_bin, pinhole, tmp_path, ffmpeg):
    """The stream from a GStreamer pipeline meets the same contract as testsrc: framing, boxes,
    fragment durations, low-delay SPS, decodable by ffmpeg, 30 fps timing from the buffer PTS."""
    ph = pinhole(PIPELINE)
    st = ph.wait_video()
    assert st["source"]["state"] == "running", st["source"]
    read_and_check(ph, tmp_path, seconds=3.0, size=(320, 240), fps=30, name="gst")
    assert "browsers do not decode" not in ph.log()


def test_gst_end_of_stream_and_bad_elements_are_clear_errors_and_the_source_restarts(gst_bin, pinhole):
    """A pipeline that ends (num-buffers) is restarted by the supervisor; one that names a missing
    element fails with GStreamer's own message; the server stays up through both."""
    ends = pinhole(PIPELINE.replace("is-live=true", "is-live=true num-buffers=15"))
    bad = pinhole("gst:nosuchelement ! x264enc")
    deadline = time.time() + 15
    while time.time() < deadline:
        a, b = ends.status()["source"], bad.status()["source"]
        if a["restarts"] >= 2 and b["restarts"] >= 2:
            break
        time.sleep(0.2)
    assert a["restarts"] >= 2 and a["frames_received"] > 15, a
    assert b["restarts"] >= 2 and b["frames_received"] == 0, b
    assert "end of stream" in ends.log(), ends.log_tail()
    assert 'no element "nosuchelement"' in (b["last_error"] or ""), b
    for ph in (ends, bad):
        code, _, _ = ph.get("/api/status")
        assert code == 200


def test_a_build_without_the_feature_refuses_gst_naming_the_feature():
    """The default build (PINHOLE_BIN) has no GStreamer: a gst: source is a one-line start-up error."""
    p = run_pinhole(["--source", "gst:videotestsrc ! x264enc"])
    assert p.returncode == 2, f"exit {p.returncode}; {p.stderr!r}"
    assert "rebuild with --features gstreamer" in p.stderr, p.stderr
