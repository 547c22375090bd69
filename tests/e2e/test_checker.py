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

from cmaf import (TIMESCALE, CmafClient, FormatError, StreamEnded, check_fragments, check_live, inherent_wait_s,
                  parse_boxes, parse_fragment, parse_init)
from conftest import decode_gray, read_time_band
from hls_helpers import check_playlist, parse_playlist


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
    """A fragment missing from the media timeline while the mfhd numbers run on (a server that
    drops a fragment but numbers the next one +1): only the tfdt rule can see it."""
    init, frags = parsed(*ffmpeg_cmaf)
    gapped = frags[:5] + frags[6:]
    for i, f in enumerate(gapped):
        f.sequence = gapped[0].sequence + i
    with pytest.raises(FormatError, match="tfdt not continuous") as e:
        check_fragments(gapped, init, 100, strict_samples=False)
    assert "sequence" not in str(e.value).split(":", 1)[1].split("(gap")[0]


def test_checker_catches_a_sequence_gap(ffmpeg_cmaf):
    init, frags = parsed(*ffmpeg_cmaf)
    frags[6].sequence += 1
    with pytest.raises(FormatError, match="next mfhd sequence"):
        check_fragments(frags[:7], init, 100, strict_samples=False)


def live_timing(frags, excess_s: float = 0.006, speed: float = 1.0, spike: tuple[int, float] | None = None):
    """Gives ffmpeg's fragments the timing of a live stream: prft = a wall clock at the fragment's
    tfdt, arrival = prft + the fragment's inherent wait + `excess_s` (media time runs `speed`
    times slower than wall time; `spike` = (index, extra seconds) delays one fragment)."""
    t0 = time.time() - 30
    for i, f in enumerate(frags):
        f.prft.ntp_unix = t0 + (f.tfdt - frags[0].tfdt) / TIMESCALE * speed
        f.t_recv = f.prft.ntp_unix + inherent_wait_s(f) + excess_s
        if spike and i == spike[0]:
            f.t_recv += spike[1]
    return frags


def test_check_live_accepts_a_live_stream_and_fails_on_a_late_or_slow_one(ffmpeg_cmaf):
    init, frags = parsed(*ffmpeg_cmaf)
    figures = check_live(live_timing(frags))
    assert abs(figures["excess_p50_ms"] - 6) < 1, figures
    assert figures["age_p50_ms"] > 60, figures  # 100 ms fragments of 30 fps: ~67 ms inherent wait
    # Every fragment 45 ms later than it could be (a sleep in the fragment path): the median rule.
    with pytest.raises(FormatError, match="median"):
        check_live(live_timing(frags, excess_s=0.045))
    # One fragment 0.6 s late: the per-fragment rule.
    with pytest.raises(FormatError, match="after its prft time"):
        check_live(live_timing(frags, spike=(len(frags) - 3, 0.6)))
    # Media advancing at half the wall-clock speed.
    with pytest.raises(FormatError, match="not real time"):
        check_live(live_timing(frags, speed=2.0))
    # A fragment that arrives before its capture time (clock confusion).
    with pytest.raises(FormatError, match="after its prft time"):
        check_live(live_timing(frags, spike=(len(frags) - 3, -0.2)))


def synthetic_playlist(part_target: float = 0.1, segments: int = 4, parts: int = 10) -> list[str]:
    lines = ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-TARGETDURATION:1",
             f"#EXT-X-PART-INF:PART-TARGET={part_target:.3f}",
             f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={3 * part_target:.3f}",
             "#EXT-X-MEDIA-SEQUENCE:7", "#EXT-X-INDEPENDENT-SEGMENTS", '#EXT-X-MAP:URI="init-1.mp4"']
    for msn in range(7, 7 + segments):
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:2026-12-02T06:00:{msn:02d}.000Z")
        for i in range(parts):
            ind = ",INDEPENDENT=YES" if i == 0 else ""
            lines.append(f'#EXT-X-PART:DURATION={part_target:.5f},URI="part-{msn}-{i}.m4s"{ind}')
        if msn < 6 + segments:
            lines += [f"#EXTINF:{parts * part_target:.5f},", f"seg-{msn}.m4s"]
    last = 6 + segments
    lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part-{last}-{parts}.m4s"')
    return lines


def playlist(lines: list[str]):
    return parse_playlist("\n".join(lines) + "\n")


def test_playlist_checker_accepts_a_valid_playlist_and_fails_on_broken_ones():
    good = synthetic_playlist()
    check_playlist(playlist(good), "synthetic")

    def broken(match: str, edit) -> None:
        lines = list(good)
        edit(lines)
        with pytest.raises(AssertionError, match=match):
            check_playlist(playlist(lines), "synthetic")

    def replace(old: str, new: str):
        def edit(lines):
            i = next(i for i, line in enumerate(lines) if old in line)
            lines[i] = lines[i].replace(old, new)
        return edit

    broken("SERVER-CONTROL", replace("CAN-BLOCK-RELOAD=YES", "CAN-BLOCK-RELOAD=NO"))
    broken("PART-HOLD-BACK", replace("PART-HOLD-BACK=0.300", "PART-HOLD-BACK=0.200"))
    broken("> PART-TARGET", replace('DURATION=0.10000,URI="part-10-3.m4s"', 'DURATION=0.15000,URI="part-10-3.m4s"'))
    broken("parts add up", replace("#EXTINF:1.00000,", "#EXTINF:0.90000,"))
    broken("INDEPENDENT", replace('URI="part-9-4.m4s"', 'URI="part-9-4.m4s",INDEPENDENT=YES'))
    broken("preload hint", replace('URI="part-10-10.m4s"', 'URI="part-10-11.m4s"'))
    broken("PDT", replace("06:00:09.000Z", "06:00:09Z"))
    broken("segment 8: URI seg-9", replace("seg-8.m4s", "seg-9.m4s"))


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
