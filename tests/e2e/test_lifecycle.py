"""Heartbeats, graceful shutdown with open streams, and the status and metrics endpoints."""

from __future__ import annotations

import re
import signal
import time

import pytest

from cmaf import CmafClient, StreamEnded
from conftest import run_pinhole


def test_heartbeats_flow_while_the_source_has_nothing(pinhole):
    """`exec:sleep 30` writes nothing: the stream still answers and sends zero-length records every
    few seconds, so tunnels and proxies keep the connection open."""
    ph = pinhole("exec:sleep 30")
    c = CmafClient(ph.port, timeout=8)
    try:
        c.check_headers()
        first = c.read_record()
        second = c.read_record()
    finally:
        c.close()
    assert first.payload == b"", f"first record has {len(first.payload)} bytes; the source has no video"
    assert first.t_recv - c.t_open <= 5.0, f"first heartbeat after {first.t_recv - c.t_open:.1f} s"
    assert second.payload == b""
    gap = second.t_recv - first.t_recv
    assert 1.0 <= gap <= 5.0, f"heartbeats {gap:.1f} s apart; expected about 3 s"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_ends_open_streams_and_exits_zero(pinhole, sig):
    """On SIGTERM/SIGINT the endless responses end within 3 s, each cleanly (the chunked body's
    terminator at a record boundary, not a reset), and the process exits 0."""
    ph = pinhole("testsrc?size=640x360")
    ph.wait_video()
    clients = [CmafClient(ph.port, timeout=5) for _ in range(2)]
    for c in clients:
        c.check_headers()
        c.read_for(1.0)
    t_sig = time.time()
    ph.send_signal(sig)
    ended = []
    for c in clients:
        try:
            while time.time() - t_sig < 4.0:
                c.read_record()
            raise AssertionError("the stream still flows 4 s after the signal")
        except StreamEnded as e:
            ended.append((time.time() - t_sig, e.clean, str(e)))
        except OSError as e:  # a timeout here means the stream hung open
            raise AssertionError(f"stream neither ended nor flowed after the signal: {e!r}") from e
        finally:
            c.close()
    for dt, clean, how in ended:
        assert dt <= 3.0, f"stream ended {dt:.2f} s after {sig.name}"
        # Ended cleanly: at a record boundary with the chunked terminator (0\r\n\r\n), not by a
        # reset or a bare close, which a player reports as a network error and retries.
        assert clean, f"after {sig.name} the stream was cut instead of ended ({how})"
    rc = ph.proc.wait(timeout=max(0.1, 5.0 - (time.time() - t_sig)))
    assert rc == 0, f"exit {rc} after {sig.name}; log:\n{ph.log_tail()}"
    ph.stop()  # checks the log for panics


def test_help_documents_every_flag():
    p = run_pinhole(["--help"])
    assert p.returncode == 0, p.stderr
    for flag in ("--config", "--listen", "--source", "--fragment-ms"):
        assert flag in p.stdout, f"--help does not mention {flag}"
    assert "testsrc" in p.stdout and "exec:" in p.stdout, "--help does not document the source URIs"


NUMBER = (int, float)


def test_status_reports_every_field_with_its_type(pinhole):
    ph = pinhole("testsrc?size=640x360&fps=30&gop=30&bitrate=1000000")
    ph.wait_video()
    st = ph.status()
    assert isinstance(st["version"], str) and st["version"], st
    assert isinstance(st["uptime_s"], NUMBER) and st["uptime_s"] >= 0, st
    src = st["source"]
    assert isinstance(src["uri"], str) and src["uri"].startswith("testsrc"), src
    assert src["state"] == "running", src
    assert src["last_error"] is None, src
    assert isinstance(src["restarts"], int) and src["restarts"] == 0, src
    v = st["video"]
    assert re.fullmatch(r"avc1\.[0-9a-fA-F]{6}", v["codec"] or ""), v
    assert (v["width"], v["height"]) == (640, 360), v
    assert isinstance(v["width"], int) and isinstance(v["height"], int), v
    assert isinstance(v["fps"], NUMBER) and abs(v["fps"] - 30) < 0.5, v
    assert isinstance(v["bitrate_bps"], NUMBER) and 0 < v["bitrate_bps"] < 20_000_000, v
    for key in ("viewers", "viewer_skips", "fragments", "fragment_ms"):
        assert isinstance(st[key], int) and not isinstance(st[key], bool), f"{key}: {st[key]!r}"
    assert st["viewers"] == 0 and st["viewer_skips"] == 0 and st["fragment_ms"] == 100, st
    time.sleep(2.0)
    st2 = ph.status()
    assert 1.0 <= st2["uptime_s"] - st["uptime_s"] <= 3.5, (st["uptime_s"], st2["uptime_s"])
    rate = (st2["fragments"] - st["fragments"]) / 2.0
    assert 7 <= rate <= 13, f"{rate} fragments/s at 30 fps with 100 ms fragments; expected about 10"


def test_metrics_exposes_the_required_series(pinhole):
    ph = pinhole("testsrc?size=320x240")
    ph.wait_video()
    code, headers, _ = ph.get("/metrics")
    assert code == 200 and headers.get("content-type", "").startswith("text/plain"), headers
    m = ph.metrics()
    for name in ("pinhole_viewers", "pinhole_viewer_skips_total", "pinhole_fragments_total",
                 "pinhole_source_restarts_total", "pinhole_source_up", "pinhole_uptime_seconds"):
        assert name in m, f"/metrics lacks {name}; has {sorted(m)}"
    assert m["pinhole_viewers"] == 0
    assert m["pinhole_viewer_skips_total"] == 0
    assert m["pinhole_source_restarts_total"] == 0
    assert m["pinhole_source_up"] == 1
    assert m["pinhole_uptime_seconds"] > 0
    time.sleep(1.0)
    m2 = ph.metrics()
    assert m2["pinhole_fragments_total"] > m["pinhole_fragments_total"] > 0
    st = ph.status()
    assert abs(st["fragments"] - m2["pinhole_fragments_total"]) <= 12, "status and metrics disagree"


def test_unknown_path_is_404(pinhole):
    ph = pinhole("testsrc?size=320x240")
    code, _, _ = ph.get("/api/no-such-thing")
    assert code == 404


def test_config_file_sets_listeners_source_and_fragment_ms(pinhole, tmp_path):
    """Every config key at once; `listen` is an array and every address in it answers."""
    from conftest import free_port, http_get

    a, b = free_port(), free_port()
    cfg = tmp_path / "pinhole.toml"
    cfg.write_text(
        f'listen = ["127.0.0.1:{a}", "127.0.0.1:{b}"]\n'
        'source = "testsrc?size=320x240&fps=15"\n'
        "fragment_ms = 150\n"
        'log = "info"\n'
    )
    ph = pinhole(source=None, args=["--config", str(cfg)], port=a, listen=False)
    st = ph.wait_video()
    assert st["fragment_ms"] == 150, st
    assert (st["video"]["width"], st["video"]["height"]) == (320, 240), st
    assert st["source"]["uri"].startswith("testsrc"), st
    code, _, _ = http_get(b, "/api/status")
    assert code == 200, f"second listen address {b} answered {code}"


def test_repeated_listen_flags_all_answer(pinhole):
    from conftest import free_port, http_get

    b = free_port()
    ph = pinhole("testsrc?size=320x240", args=["--listen", f"127.0.0.1:{b}"])
    assert http_get(b, "/api/status")[0] == 200
    assert http_get(ph.port, "/api/status")[0] == 200
