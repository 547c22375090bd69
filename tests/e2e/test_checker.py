"""Self-tests of the stream checker, without pinhole: it must accept a valid CMAF stream (cut by
Debian's ffmpeg), and it must fail on each defect the daemon tests rely on it to catch. A checker
that cannot fail proves nothing."""

from __future__ import annotations

import http.server
import struct
import subprocess
import threading
import time

import pytest

from cmaf import (CmafClient, FormatError, StreamEnded, check_fragments, parse_boxes, parse_fragment,
                  parse_init)
from conftest import decode_gray, read_time_band


@pytest.fixture(scope="module")
def ffmpeg_cmaf(h264_clip, tmp_path_factory):
    """ffmpeg's own CMAF cut of the test clip: 100 ms fragments with prft, as (init, [fragments])."""
    out = tmp_path_factory.mktemp("cmaf") / "ffmpeg.mp4"
    p = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-framerate", "30",
                        "-i", str(h264_clip), "-c", "copy", "-movflags",
                        "+empty_moov+default_base_moof+frag_keyframe+cmaf", "-frag_duration", "100000",
                        "-write_prft", "wallclock", "-video_track_timescale", "90000", "-f", "mp4", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    data = out.read_bytes()
    top = parse_boxes(data)
    init = data[top[0].start:top[1].end]
    frags = []
    i = 2
    while i + 2 < len(top) and top[i].type == "prft":
        frags.append(data[top[i].start:top[i + 2].end])
        i += 3
    return init, frags


def parsed(init_bytes, frag_bytes):
    init = parse_init(init_bytes)
    return init, [parse_fragment(f, init, time.time()) for f in frag_bytes]


def test_checker_accepts_ffmpegs_cmaf(ffmpeg_cmaf):
    init, frags = parsed(*ffmpeg_cmaf)
    assert (init.width, init.height, init.timescale) == (320, 240, 90000)
    assert len(frags) > 30
    check_fragments(frags, init, 100, strict_samples=False)


def test_checker_catches_in_band_parameter_sets(ffmpeg_cmaf):
    init, frags = parsed(*ffmpeg_cmaf)  # ffmpeg keeps SPS/PPS inside the IDR sample
    with pytest.raises(FormatError, match="SPS/PPS/AUD inside a sample"):
        check_fragments(frags, init, 100)


def test_checker_catches_a_tfdt_gap(ffmpeg_cmaf):
    init, frags = parsed(*ffmpeg_cmaf)
    with pytest.raises(FormatError, match="tfdt not continuous|sequence"):
        check_fragments(frags[:5] + frags[6:], init, 100, strict_samples=False)


def test_checker_catches_a_join_off_an_idr(ffmpeg_cmaf):
    init, frags = parsed(*ffmpeg_cmaf)
    with pytest.raises(FormatError, match="does not start with a sync sample"):
        check_fragments(frags[1:], init, 100, strict_samples=False)


def test_checker_catches_long_and_short_fragments(ffmpeg_cmaf):
    init, frags = parsed(*ffmpeg_cmaf)
    with pytest.raises(FormatError, match="> target"):
        check_fragments(frags, init, 50, strict_samples=False)  # ffmpeg's 100 ms fragments vs 50 ms
    with pytest.raises(FormatError, match="< target"):
        check_fragments(frags, init, 200, strict_samples=False)


def test_checker_catches_a_missing_prft(ffmpeg_cmaf):
    init_b, frag_b = ffmpeg_cmaf
    init = parse_init(init_b)
    prft_size = struct.unpack(">I", frag_b[0][:4])[0]
    with pytest.raises(FormatError, match="prft\\+moof\\+mdat"):
        parse_fragment(frag_b[0][prft_size:], init)


def serve_once(body_chunks: list[bytes], terminate: bool = True):
    """A one-shot HTTP/1.1 server that sends `body_chunks` as chunks of a chunked body."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for c in body_chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
                self.wfile.flush()
            if terminate:
                self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.handle_request, daemon=True).start()
    return srv


def test_framing_reader_reassembles_records_across_chunks(ffmpeg_cmaf):
    init_b, frags_b = ffmpeg_cmaf
    payloads = [init_b, b"", frags_b[0], frags_b[1], b""]
    body = b"".join(struct.pack(">I", len(p)) + p for p in payloads)
    cuts = [0, 3, 7, 100, 101, len(body) - 5, len(body)]  # chunk edges inside headers and payloads
    srv = serve_once([body[a:b] for a, b in zip(cuts, cuts[1:])])
    c = CmafClient(srv.server_address[1], timeout=5)
    c.check_headers()
    got = []
    with pytest.raises(StreamEnded) as end:
        while True:
            got.append(c.read_record().payload)
    assert end.value.clean
    assert got == payloads
    srv.server_close()


def test_framing_reader_reports_a_truncated_record(ffmpeg_cmaf):
    init_b, _ = ffmpeg_cmaf
    body = struct.pack(">I", len(init_b)) + init_b
    srv = serve_once([body[:-10]])
    c = CmafClient(srv.server_address[1], timeout=5)
    with pytest.raises(StreamEnded) as end:
        c.read_record()
    assert not end.value.clean
    srv.server_close()


def test_time_band_reads_back_through_h264(tmp_path, ffmpeg):
    """Draw the band for a known time into a 1280x720 frame, encode and decode it with libx264,
    and read it back: the band geometry (non-integer cell width) and threshold survive compression."""
    w, h, ms = 1280, 720, 1_795_361_754_739
    rows = (h // 24) & ~1
    frame = bytearray(b"\x40" * (w * h))
    for i in range(48):
        if ms >> (47 - i) & 1:
            x0, x1 = i * w // 48, (i + 1) * w // 48
            for y in range(rows):
                frame[y * w + x0:y * w + x1] = b"\xff" * (x1 - x0)
    raw = tmp_path / "band.gray"
    raw.write_bytes(bytes(frame))
    mp4 = tmp_path / "band.mp4"
    p = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "rawvideo",
                        "-pix_fmt", "gray", "-s", f"{w}x{h}", "-i", str(raw), "-c:v", "libx264", "-crf", "35",
                        "-pix_fmt", "yuv420p", str(mp4)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    (gray,) = decode_gray(mp4, w, h, 1)
    assert read_time_band(gray, w, h) == ms
