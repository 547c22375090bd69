"""Bad input: what a broken camera, a wrong command or a typo does. No bad input crashes the
process; each gets a clear error; the daemon stays up where it can and recovers when the input does."""

from __future__ import annotations

import random
import re
import socket
import time

import pytest

from cmaf import CmafClient, check_fragments, parse_fragment, parse_init, parse_stream
from conftest import ffmpeg_decode_errors, ffmpeg_exec, free_port, run_pinhole


STATES = {"starting", "running", "restarting", "failed"}


def stays_up(ph, seconds: float, states: list | None = None) -> dict:
    """Poll /api/status for `seconds`; the process must live and answer throughout."""
    deadline = time.time() + seconds
    st = {}
    while time.time() < deadline:
        assert ph.alive(), f"pinhole died (exit {ph.proc.returncode}); log:\n{ph.log_tail()}"
        st = ph.status()
        assert st["source"]["state"] in STATES, f"source.state {st['source']['state']!r}"
        if states is not None:
            states.append(st["source"]["state"])
        time.sleep(0.25)
    return st


def test_exec_garbage_leaves_the_daemon_up_and_reports_no_video(pinhole):
    """Random bytes on stdout (no start codes): no crash, no video, an error or empty video in
    status, and the HTTP side keeps serving (status, metrics, a stream that heartbeats)."""
    ph = pinhole("exec:head -c 100000 /dev/urandom; sleep 1")
    st = stays_up(ph, 5)
    src, video = st["source"], st["video"]
    assert src["last_error"] or not video.get("codec"), f"garbage looks like video: {st}"
    assert st["fragments"] == 0, f"garbage produced {st['fragments']} fragments"
    assert src["restarts"] >= 1, f"the command exits after 1 s; restarts = {src['restarts']}"
    ph.metrics()
    c = CmafClient(ph.port, timeout=8)
    try:
        c.check_headers()
        rec = c.read_record()
        assert rec.payload == b"", f"expected a heartbeat while there is no video, got {len(rec.payload)} bytes"
    finally:
        c.close()


def nal_shaped_junk(seed: int, size: int = 400_000) -> bytes:
    """Start codes followed by random NAL headers of every type (SPS, PPS, IDR, slices, SEI, AUD,
    reserved) and random bodies, some tiny, some large: the parser sees NALs, not noise."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += b"\x00\x00\x00\x01" if rng.random() < 0.5 else b"\x00\x00\x01"
        out.append((rng.randrange(4) << 5) | rng.randrange(32))
        out += rng.randbytes(rng.choice([0, 1, 2, 3, 8, 30, 300, 5000]))
    return bytes(out)


def test_exec_nal_shaped_junk_does_not_crash(pinhole, tmp_path):
    """Junk that parses as NAL units (bogus SPS/PPS/slices) must not crash the process."""
    junk = tmp_path / "junk.h264"
    junk.write_bytes(nal_shaped_junk(2))
    ph = pinhole(f"exec:cat {junk}; sleep 1")
    st = stays_up(ph, 6)
    assert st["source"]["restarts"] >= 1, f"source {st['source']}"
    c = CmafClient(ph.port, timeout=8)
    try:
        c.check_headers()
        rec = c.read_record()
        # The HTTP side still answers, and what it sends is well-formed: a stream opens with a
        # heartbeat (no video) or an init segment; an init parses (ftyp+moov, avcC, an SPS that
        # reads), and the fragment after it parses against it and starts with an IDR.
        assert rec.kind in ("heartbeat", "init"), \
            f"first record: {rec.kind}, {len(rec.payload)} bytes starting {rec.payload[:16]!r}"
        if rec.kind == "init":
            init = parse_init(rec.payload)
            assert init.width > 0 and init.height > 0, init
            nxt = c.read_record()
            while nxt.kind == "heartbeat":
                nxt = c.read_record()
            assert nxt.kind == "fragment", f"after the init: {nxt.kind}"
            frag = parse_fragment(nxt.payload, init, nxt.t_recv)
            assert frag.starts_with_sync and frag.samples[0].has_idr, frag.samples[:1]
        else:
            assert rec.payload == b""
    finally:
        c.close()


def test_exec_garbage_then_valid_h264_recovers(pinhole, tmp_path, ffmpeg):
    """Leading garbage, then a real stream on the same stdout: the parser resynchronises at the
    first start code and viewers get a valid, decodable stream."""
    ph = pinhole("exec:head -c 50000 /dev/urandom; exec " + ffmpeg_exec("320x240"))
    ph.wait_video()
    c = CmafClient(ph.port)
    try:
        c.check_headers()
        st = parse_stream(c.read_for(3))
    finally:
        c.close()
    check_fragments(st.fragments, st.init, 100)
    path = tmp_path / "recovered.mp4"
    path.write_bytes(st.mp4_bytes())
    assert ffmpeg_decode_errors(path) == ""


def test_exec_truncated_nal_units_do_not_crash(pinhole, h264_clip):
    """A real stream cut mid-NAL by `head -c`, again and again: the daemon survives, keeps making
    fragments, and the framing it serves stays valid."""
    ph = pinhole(f"exec:while :; do head -c 37003 {h264_clip}; sleep 0.3; done")
    st = stays_up(ph, 4)
    assert st["fragments"] > 0, f"no fragments from a mostly valid stream: {st}"
    c = CmafClient(ph.port)
    try:
        c.check_headers()
        recs = c.read_for(3)
    finally:
        c.close()
    stream = parse_stream(recs)  # framing and box structure must hold even for damaged input
    assert stream.fragments, "no fragments served"
    assert stream.fragments[0].starts_with_sync, "first fragment does not start with a sync sample"
    stays_up(ph, 1)


def test_exec_truncated_then_exit_restarts(pinhole, h264_clip):
    """The command writes a stream cut mid-NAL and exits: the half NAL is dropped or flushed
    without a crash, and the source is restarted."""
    ph = pinhole(f"exec:head -c 23001 {h264_clip}")
    st = stays_up(ph, 4)
    assert st["source"]["restarts"] >= 1, f"source {st['source']}"


def test_exec_that_exits_at_once_is_restarted_with_capped_backoff(pinhole):
    """`exec:true` exits at once: restarts are counted and keep coming (capped backoff, not a
    give-up), but do not spin; the daemon stays up and answers."""
    ph = pinhole("exec:true")
    states: list[str] = []
    st5 = stays_up(ph, 5, states)
    r5 = st5["source"]["restarts"]
    st12 = stays_up(ph, 7, states)
    r12 = st12["source"]["restarts"]
    assert r5 >= 1, f"no restart counted after 5 s: {st5['source']}"
    assert r12 > r5, f"no restart between 5 s and 12 s ({r5} -> {r12}): backoff not capped at a few seconds"
    assert r12 <= 40, f"{r12} restarts in 12 s: the restart loop spins"
    src = st12["source"]
    assert states.count("running") < len(states) / 2, f"a source that always exits reported {states}"
    assert isinstance(src["last_error"], str) and src["last_error"], f"last_error {src['last_error']!r}"
    assert st12["video"]["codec"] is None, f"video {st12['video']} with no frames ever"
    m = ph.metrics()
    assert m["pinhole_source_restarts_total"] >= r12
    assert m["pinhole_source_up"] == 0


# ---------------------------------------------------------------- CLI and config errors


def error_line(proc, *needles: str) -> str:
    """The line of stderr that names every needle (the one-line error the contract asks for)."""
    assert proc.returncode not in (0, 101), \
        f"exit {proc.returncode} (0 = accepted, 101 = panic); stderr: {proc.stderr!r}"
    assert proc.returncode > 0, f"killed by signal {-proc.returncode}"
    assert "panicked" not in proc.stderr, proc.stderr
    for line in proc.stderr.splitlines():
        if all(n.lower() in line.lower() for n in needles):
            return line
    raise AssertionError(f"no stderr line names all of {needles}: {proc.stderr!r}")


def allowed_range(line: str) -> bool:
    return re.search(r"100\s*(\.\.=?|-|–|to)\s*300", line) is not None


def test_unknown_flag_is_an_error():
    p = run_pinhole(["--bogus-flag"])
    error_line(p, "--bogus-flag")


def test_fragment_ms_out_of_range_names_the_allowed_range():
    p = run_pinhole(["--fragment-ms", "50"])
    line = error_line(p, "fragment", "50")
    assert allowed_range(line), f"the error does not say 100..=300: {line!r}"


def test_config_typo_names_the_key_and_line(tmp_path):
    """`fragmnet_ms` on line 3: unknown keys are errors, with the key and the TOML position."""
    cfg = tmp_path / "pinhole.toml"
    cfg.write_text('source = "testsrc"\nlisten = ["127.0.0.1:0"]\nfragmnet_ms = 100\n')
    p = run_pinhole(["--config", str(cfg)])
    error_line(p, "fragmnet_ms")
    assert re.search(r"line\D{0,3}3\b|:3:\d+", p.stderr, re.I), f"no line 3 position in: {p.stderr!r}"


def test_config_bad_value_names_key_value_and_range(tmp_path):
    cfg = tmp_path / "pinhole.toml"
    cfg.write_text(f'listen = ["127.0.0.1:{free_port()}"]\nfragment_ms = 50\n')
    p = run_pinhole(["--config", str(cfg)])
    text = p.stderr
    error_line(p, "fragment_ms")
    assert "50" in text and allowed_range(text), f"error must name the value 50 and 100..=300: {text!r}"


def test_config_syntax_error_has_line_and_column(tmp_path):
    cfg = tmp_path / "pinhole.toml"
    cfg.write_text('source = "testsrc"\nlisten = ["127.0.0.1:8080"\nfragment_ms = 100\n')
    p = run_pinhole(["--config", str(cfg)])
    assert p.returncode not in (0, 101), f"exit {p.returncode}: {p.stderr!r}"
    assert re.search(r"line\s*\d+.*column\s*\d+|:\d+:\d+", p.stderr, re.I | re.S), \
        f"no line/column in: {p.stderr!r}"


def test_missing_config_file_is_an_error(tmp_path):
    missing = tmp_path / "nope.toml"
    p = run_pinhole(["--config", str(missing)])
    error_line(p, str(missing))


@pytest.mark.parametrize("source,needles", [
    ("nosuchscheme:foo", ["nosuchscheme"]),
    ("testsrc?size=banana", ["size", "banana"]),
    ("testsrc?fps=0", ["fps"]),
])
def test_bad_source_uri_is_an_error(source, needles):
    """A source URI pinhole cannot use is a bad value: a one-line error naming it, at start-up."""
    p = run_pinhole(["--listen", f"127.0.0.1:{free_port()}", "--source", source])
    error_line(p, *needles)


def test_second_instance_on_a_busy_port_exits_with_a_clear_error(pinhole):
    ph = pinhole("testsrc?size=320x240")
    addr = f"127.0.0.1:{ph.port}"
    p = run_pinhole(["--listen", addr, "--source", "testsrc?size=320x240"])
    error_line(p, addr)
    assert ph.status()["source"]["state"] in ("starting", "running"), "first instance disturbed"


def test_busy_port_held_by_another_program():
    """Any program holding the port, not only pinhole."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        addr = "127.0.0.1:%d" % s.getsockname()[1]
        p = run_pinhole(["--listen", addr])
        error_line(p, addr)
