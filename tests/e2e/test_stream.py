"""The chunked CMAF stream (/api/video/cmaf), read as a player would and checked against the
contract: framing, box structure, fragment durations, tfdt continuity, prft, decodability with
Debian's ffmpeg, and the capture time that testsrc burns into the picture."""

from __future__ import annotations

import time

from cmaf import TIMESCALE, CmafClient, check_fragments, check_live, median_frame_duration, parse_stream
from conftest import (decode_gray, ffmpeg_decode_errors, ffmpeg_exec, ffprobe_frame_count,
                      read_time_band)


def read_and_check(ph, tmp_path, *, seconds=5.0, target_ms=100, method="GET", size=None, fps=None,
                   gop_s=1.0, name="stream"):
    """Read the stream for `seconds` and check everything a single-init stream must satisfy."""
    c = CmafClient(ph.port, method=method)
    try:
        c.check_headers()
        recs = c.read_for(seconds)
    finally:
        c.close()
    st = parse_stream(recs)
    assert len(st.inits) == 1, f"{len(st.inits)} init segments for a stream whose parameters never change"
    init = st.init
    frags = st.fragments
    try:
        check_fragments(frags, init, target_ms)
        check_live(frags)
    except AssertionError as e:
        warnings = "\n".join(line for line in ph.log().splitlines() if " WARN " in line or " ERROR " in line)
        raise AssertionError(f"{e}\npinhole's warnings:\n{warnings or '(none)'}") from None

    # A new viewer gets the latest GOP at once: no wait for the next keyframe.
    first = frags[0]
    assert first.t_recv - c.t_open < 0.5, \
        f"first fragment arrived {first.t_recv - c.t_open:.3f} s after connecting; expected at once"
    age = first.t_recv - first.prft.ntp_unix
    assert -0.05 <= age <= gop_s + 0.5, f"first fragment's prft is {age:.3f} s old; expected at most one GOP"

    # The SPS is rewritten for low decoder delay (no B-frames: max_num_reorder_frames = 0).
    assert init.sps.bitstream_restriction, "SPS VUI lacks bitstream_restriction (Chrome may buffer 16 frames)"
    assert init.sps.max_num_reorder_frames == 0, f"max_num_reorder_frames = {init.sps.max_num_reorder_frames}"
    assert (init.sps.width, init.sps.height) == (init.width, init.height), \
        f"SPS says {init.sps.width}x{init.sps.height}, avc1 says {init.width}x{init.height}"
    if size:
        assert (init.width, init.height) == size, f"stream is {init.width}x{init.height}, expected {size}"
    if fps:
        med = median_frame_duration(frags)
        assert abs(med - TIMESCALE / fps) <= 0.1 * TIMESCALE / fps, \
            f"median sample duration {med} (90 kHz), expected {TIMESCALE / fps} for {fps} fps"

    # The concatenated init + fragments form a clean fragmented MP4.
    path = tmp_path / f"{name}.mp4"
    path.write_bytes(st.mp4_bytes())
    errors = ffmpeg_decode_errors(path)
    assert errors == "", f"ffmpeg -v error reported: {errors[:2000]}"
    frames = ffprobe_frame_count(path)
    assert frames == st.sample_count, f"ffprobe counted {frames} frames, trun boxes declare {st.sample_count}"

    status = ph.status()
    video = status["video"]
    assert video["codec"].lower() == init.codec.lower(), f"status codec {video['codec']!r}, avcC says {init.codec!r}"
    assert (video["width"], video["height"]) == (init.width, init.height), f"status video {video}"
    return st, path


def check_time_band(st, path, frames=10):
    """testsrc's machine-readable band holds the capture time: it matches the first fragment's prft,
    is near now, and advances frame by frame with the media time."""
    init = st.init
    w, h = init.width, init.height
    values = [read_time_band(g, w, h) for g in decode_gray(path, w, h, frames)]
    assert len(values) == frames, f"decoded {len(values)} frames, wanted {frames}"
    first = st.fragments[0]
    v0 = values[0] / 1000
    assert abs(v0 - first.t_recv) < 3.0, \
        f"burned-in capture time {v0:.3f} is {first.t_recv - v0:+.3f} s from when it was received"
    assert abs(v0 - first.prft.ntp_unix) < 0.3, \
        f"burned-in capture time {v0:.3f} differs from the first fragment's prft {first.prft.ntp_unix:.3f}"
    durations = [s.duration for f in st.fragments for s in f.samples][:frames]
    elapsed = 0
    for k in range(1, frames):
        elapsed += durations[k - 1]
        expected = values[0] + elapsed * 1000 // TIMESCALE
        frame_ms = durations[k - 1] * 1000 / TIMESCALE
        assert abs(values[k] - expected) <= max(60, 1.5 * frame_ms), \
            f"frame {k}: band says {values[k]}, expected about {expected} from frame 0 plus media time " \
            f"(all: {[v - values[0] for v in values]})"


def test_testsrc_stream_meets_the_contract(pinhole, tmp_path, ffmpeg):
    """Default testsrc (1280x720, 30 fps, 100 ms fragments): the whole wire contract, and a picture
    whose burned-in clock reads back as the time it was captured."""
    ph = pinhole("testsrc")
    ph.wait_video()
    st, path = read_and_check(ph, tmp_path, size=(1280, 720), fps=30)
    check_time_band(st, path)
    status = ph.status()
    assert status["fragment_ms"] == 100


def test_fragment_ms_200_makes_200_ms_fragments(pinhole, tmp_path, ffmpeg):
    """--fragment-ms sets the target every fragment is cut at."""
    ph = pinhole("testsrc", ["--fragment-ms", "200"])
    ph.wait_video()
    st, _ = read_and_check(ph, tmp_path, target_ms=200, fps=30)
    assert ph.status()["fragment_ms"] == 200
    full = [f for f in st.fragments[:-1]]
    assert any(f.duration >= 200 * TIMESCALE // 1000 for f in full), "no fragment reached 200 ms"


def test_testsrc_options_size_and_fps(pinhole, tmp_path, ffmpeg):
    """testsrc?size=640x360&fps=25: options reach the encoder; 25 fps frames do not divide 100 ms, so
    fragments run to the next frame boundary (at most target + one frame)."""
    ph = pinhole("testsrc?size=640x360&fps=25")
    ph.wait_video()
    st, path = read_and_check(ph, tmp_path, size=(640, 360), fps=25)
    check_time_band(st, path)
    video = ph.status()["video"]
    assert abs(float(video["fps"]) - 25) < 0.5, f"status fps {video['fps']}"


def test_post_serves_the_same_stream_as_get(pinhole, tmp_path, ffmpeg):
    """POST /api/video/cmaf (for tunnels that hold back GET streams) carries the same bytes as GET:
    the same init segment, and byte-identical fragments for the same sequence numbers."""
    ph = pinhole("testsrc?size=640x360")
    ph.wait_video()
    st_post, _ = read_and_check(ph, tmp_path, method="POST", seconds=3, name="post")
    g, p = CmafClient(ph.port, "GET"), CmafClient(ph.port, "POST")
    try:
        g.check_headers()
        p.check_headers()
        a = parse_stream(g.read_for(2.5))
        b = parse_stream(p.read_for(2.5))
    finally:
        g.close()
        p.close()
    assert a.init.payload == b.init.payload, "GET and POST sent different init segments"
    by_seq = {f.sequence: f.payload for f in a.fragments}
    common = [f for f in b.fragments if f.sequence in by_seq]
    assert len(common) >= 10, f"only {len(common)} fragments seen by both GET and POST"
    for f in common:
        assert by_seq[f.sequence] == f.payload, f"fragment {f.sequence} differs between GET and POST"


def test_exec_ffmpeg_source_meets_the_contract(pinhole, tmp_path, ffmpeg):
    """exec: running Debian's ffmpeg (libx264, no B-frames) gives the same contract as testsrc."""
    ph = pinhole("exec:" + ffmpeg_exec("640x360", 30, 30))
    st0 = ph.wait_video()
    assert st0["source"]["state"] == "running", f"status {st0['source']}"
    read_and_check(ph, tmp_path, size=(640, 360), fps=30, name="exec")


def test_new_init_is_sent_in_band_when_parameters_change(pinhole, tmp_path, ffmpeg):
    """The source restarts at another resolution: a connected viewer gets a new init (ftyp+moov)
    in the same response, then fragments that start with an IDR and decode with it."""
    flag = tmp_path / "second-run"
    script = tmp_path / "switch.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"if [ -e '{flag}' ]; then exec {ffmpeg_exec('640x360')}; fi\n"
        f"touch '{flag}'\n"
        f"exec {ffmpeg_exec('320x240', extra='-t 3')}\n"
    )
    ph = pinhole(f"exec:sh {script}")
    ph.wait_video()
    c = CmafClient(ph.port)
    try:
        c.check_headers()

        def done(recs):
            inits = [i for i, r in enumerate(recs) if r.kind == "init"]
            return len(inits) >= 2 and sum(1 for r in recs[inits[1]:] if r.kind == "fragment") >= 10

        recs = c.read_for(25, until=done)
    finally:
        c.close()
    st = parse_stream(recs)
    assert len(st.inits) >= 2, f"no second init segment in 25 s ({len(st.fragments)} fragments); " \
                               f"log:\n{ph.log_tail()}"
    a, b = st.inits[0], st.inits[1]
    assert (a.width, a.height) == (320, 240), f"first init is {a.width}x{a.height}"
    assert (b.width, b.height) == (640, 360), f"second init is {b.width}x{b.height}"
    for gen, init in enumerate(st.inits[:2]):
        frags = [f for f in st.fragments if f.generation == gen]
        check_fragments(frags, init, 100)
    path = tmp_path / "after-change.mp4"
    path.write_bytes(st.mp4_bytes(1))
    errors = ffmpeg_decode_errors(path)
    assert errors == "", f"fragments after the new init do not decode cleanly: {errors[:2000]}"
    assert (ph.status()["video"]["width"], ph.status()["video"]["height"]) == (640, 360)


def test_viewers_are_counted(pinhole):
    """status.viewers follows open streams up and down."""
    ph = pinhole("testsrc?size=320x240")
    ph.wait_video()
    clients = [CmafClient(ph.port) for _ in range(3)]
    try:
        for c in clients:
            c.check_headers()
            c.read_record()
        time.sleep(0.3)
        assert ph.status()["viewers"] == 3
        m = ph.metrics()
        assert m["pinhole_viewers"] == 3
    finally:
        for c in clients:
            c.close()
    deadline = time.time() + 5
    while time.time() < deadline and ph.status()["viewers"] != 0:
        time.sleep(0.1)
    assert ph.status()["viewers"] == 0, "viewers not released 5 s after the clients closed"
