"""rtsp:// sources against real RTSP servers, and the source watchdog.

The good camera is GStreamer's RTSP server (rtsp_server.py, run by Debian's /usr/bin/python3,
which has `gi`): TCP and UDP, credentials, a server killed and restarted ten times under a
connected viewer, a resolution change mid-stream. The bad cameras (a broken SDP, SPS/PPS held
back, RTP timestamps stepping back, a camera that goes silent) come from fake_camera.py, since
GStreamer's server cannot be made to misbehave on demand.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cmaf import CmafClient, StreamEnded, check_fragments, parse_stream
from conftest import ffmpeg_decode_errors, free_port
from fake_camera import FakeCamera

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"


class RtspServer:
    """tests/e2e/rtsp_server.py on a fixed port, restartable."""

    def __init__(self, port: int, args: list[str], log: Path):
        self.port, self.args, self.log_path = port, args, log
        self.proc: subprocess.Popen | None = None
        self.returned_at = 0.0

    def start(self, timeout: float = 10.0) -> float:
        """Starts the server; returns the time its port began to listen."""
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(HERE / "rtsp_server.py"), "--port", str(self.port),
                                      *self.args], stdout=subprocess.PIPE, stderr=logf, stdin=subprocess.DEVNULL)
        logf.close()
        deadline = time.time() + timeout
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode(errors="replace").strip()
        if line != "READY" or time.time() > deadline:
            self.stop()
            pytest.fail(f"rtsp_server.py did not start (said {line!r}); log:\n{self.log_path.read_text()[-2000:]}")
        self.returned_at = time.time()
        # Keep reading its stdout (SWITCHED lines) so the pipe never fills.
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
        return self.returned_at

    @staticmethod
    def _drain(proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for _ in proc.stdout:
            pass

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/test"


def require_gst_rtsp_server() -> None:
    p = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                        "gi.require_version('Gst', '1.0'); from gi.repository import Gst, GstRtspServer; "
                        "Gst.init(None); assert Gst.ElementFactory.find('x264enc'), 'x264enc missing'"],
                       capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        pytest.fail("GStreamer's RTSP server is not usable from /usr/bin/python3 (tests/run installs "
                    "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-ugly python3-gi): " + p.stderr[-500:],
                    pytrace=False)


@pytest.fixture
def rtsp_server(tmp_path):
    """Factory: `rtsp_server(args...)` starts one; all are stopped at teardown (before pinhole,
    when the test lists this fixture after `pinhole`)."""
    require_gst_rtsp_server()
    servers: list[RtspServer] = []

    def start(*args: str) -> RtspServer:
        s = RtspServer(free_port(), list(args), tmp_path / f"rtsp-server-{len(servers)}.log")
        servers.append(s)
        s.start()
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def camera(h264_clip):
    cams: list[FakeCamera] = []

    def make(fault: str | None, **kw) -> FakeCamera:
        c = FakeCamera(h264_clip, fault=fault, **kw)
        cams.append(c)
        return c

    yield make
    for c in cams:
        c.close()


def read_stream(ph, seconds: float):
    c = CmafClient(ph.port)
    try:
        c.check_headers()
        return parse_stream(c.read_for(seconds))
    finally:
        c.close()


def warnings_of(ph) -> list[str]:
    return [line for line in ph.log().splitlines() if " WARN " in line or " ERROR " in line]


def decode_clean(st, tmp_path: Path, generation: int = 0, name: str = "rtsp") -> None:
    path = tmp_path / f"{name}-{generation}.mp4"
    path.write_bytes(st.mp4_bytes(generation))
    errors = ffmpeg_decode_errors(path)
    assert errors == "", f"ffmpeg -v error on generation {generation}: {errors[:1500]}"


# ---------------------------------------------------------------- a good camera


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_plays_end_to_end(pinhole, rtsp_server, tmp_path, ffmpeg, transport):
    """The RTSP stream reaches a viewer as contract-conforming CMAF that ffmpeg decodes; UDP
    only when asked for (the URI's #transport=udp)."""
    srv = rtsp_server("--size", "320x240")
    uri = srv.url + ("#transport=udp" if transport == "udp" else "")
    ph = pinhole(uri)
    ph.wait_video(timeout=10)
    st = read_stream(ph, 3.0)
    assert len(st.inits) == 1, f"{len(st.inits)} inits"
    assert (st.init.width, st.init.height) == (320, 240)
    check_fragments(st.fragments, st.init, 100)
    assert len(st.fragments) >= 20, f"only {len(st.fragments)} fragments in 3 s"
    decode_clean(st, tmp_path, name=transport)
    status = ph.status()
    assert status["source"]["state"] == "running", status["source"]
    assert status["source"]["uri"] == uri, status["source"]
    assert f'transport="{transport}"' in ph.log(), ph.log_tail()
    assert not warnings_of(ph), warnings_of(ph)


def test_rtsp_credentials_from_the_config_are_used_and_never_shown(pinhole, rtsp_server, tmp_path, ffmpeg):
    """A server that demands a password: the [rtsp] table's user/password get in; neither the
    log, /api/status nor /metrics shows the password. A wrong one is one clear error."""
    srv = rtsp_server("--user", "viewer", "--password", "s3cret-pw")
    cfg = tmp_path / "rtsp.toml"
    cfg.write_text(f'source = "{srv.url}"\n[rtsp]\nuser = "viewer"\npassword = "s3cret-pw"\n')
    ph = pinhole(None, args=["--config", str(cfg)])
    ph.wait_video(timeout=10)
    bad = pinhole("rtsp://viewer:wrong-pw@127.0.0.1:%d/test" % srv.port)
    time.sleep(2.0)
    for p in (ph, bad):
        _, _, status = p.get("/api/status")
        _, _, metrics = p.get("/metrics")
        for text in (p.log(), status.decode(), metrics.decode()):
            assert "s3cret-pw" not in text and "wrong-pw" not in text, "a password leaked"
    st = bad.status()["source"]
    assert st["uri"] == f"rtsp://viewer:***@127.0.0.1:{srv.port}/test", st
    assert st["state"] != "running" and "Unauthorized" in (st["last_error"] or ""), st


def test_a_wrong_rtsp_password_is_reported_as_such_and_retried_slowly_unlike_a_reset(pinhole, rtsp_server):
    """Issue 25: the real RTSP server refuses a wrong password (401 after digest): /api/status
    says error_kind "credentials" and retries it after seconds (cameras lock an account out
    after a few wrong tries), while a camera that went away (connection reset, then refused)
    is "transient" and retried about every second, so it is back within 2 s of its return."""
    locked = rtsp_server("--user", "viewer", "--password", "s3cret-pw")
    bad = pinhole("rtsp://viewer:wrong-pw@127.0.0.1:%d/test" % locked.port)
    gone = rtsp_server("--size", "320x240")
    reset = pinhole(gone.url)
    reset.wait_video(timeout=10)
    gone.kill()
    wait_for(lambda: bad.status()["source"]["restarts"] >= 1, 5, "the refused password", bad)
    wait_for(lambda: reset.status()["source"]["restarts"] >= 1, 5, "the reset", reset)
    st = bad.status()["source"]
    assert st["error_kind"] == "credentials", st
    assert "Unauthorized" in (st["last_error"] or ""), st
    assert st["retry_after_s"] >= 5, st
    window = 8.0
    bad0, reset0 = st["restarts"], reset.status()["source"]["restarts"]
    time.sleep(window)
    bad_n = bad.status()["source"]["restarts"] - bad0
    rs = reset.status()["source"]
    reset_n = rs["restarts"] - reset0
    # Refused credentials: 5 s, then 10 s: at most two tries in 8 s. A reset: 1 s at most.
    assert bad_n <= 2, f"{bad_n} retries of a refused password in {window} s"
    assert reset_n >= 4, f"only {reset_n} retries of a camera that went away in {window} s; {rs}"
    assert rs["error_kind"] == "transient" and rs["retry_after_s"] <= 1.0, rs
    assert bad.status()["source"]["error_kind"] == "credentials"


def make_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl): (cert+key for the server, cert alone)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=test camera",
                        "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"openssl could not make a test certificate: {p.stderr}"
    both = tmp_path / "cert-and-key.pem"
    both.write_text(cert.read_text() + key.read_text())
    return both, cert


def test_rtsps_plays_with_the_cameras_certificate_and_refuses_an_unknown_one(pinhole, rtsp_server, tmp_path,
                                                                             ffmpeg):
    """rtsps:// (RTSP over TLS, through pinhole's loopback TLS bridge): with the camera's
    self-signed certificate as tls_ca the stream plays and decodes; without it the handshake is
    refused with one line that says what to do; tls_insecure=true plays and says it is
    unverified."""
    both, cert = make_cert(tmp_path)
    srv = rtsp_server("--tls-cert", str(both))
    url = f"rtsps://127.0.0.1:{srv.port}/test"
    ph = pinhole(f"{url}#tls_ca={cert}")
    ph.wait_video(timeout=10)
    st = read_stream(ph, 2.0)
    check_fragments(st.fragments, st.init, 100)
    decode_clean(st, tmp_path, name="rtsps")
    assert 'tls="verified"' in ph.log(), ph.log_tail()
    untrusted = pinhole(url)
    insecure = pinhole(f"{url}#tls_insecure=true")
    insecure.wait_video(timeout=10)
    assert "UNVERIFIED" in insecure.log()
    wait_for(lambda: untrusted.status()["source"]["restarts"] >= 1, 5, "a refused handshake", untrusted)
    err = untrusted.status()["source"]["last_error"] or ""
    assert "TLS handshake" in err and "tls_ca" in err, err
    assert untrusted.status()["video"]["codec"] is None


def test_rtsp_server_restarted_ten_times_under_one_viewer(pinhole, rtsp_server, tmp_path, ffmpeg):
    """The server is killed and restarted ten times while one viewer stays connected: each time
    frames reach that viewer within 2 s of the server's return, on the same connection, and
    pinhole's memory does not grow across the cycles."""
    srv = rtsp_server("--size", "320x240", "--gop", "15")
    ph = pinhole(srv.url)
    ph.wait_video(timeout=10)
    viewer = CmafClient(ph.port)
    viewer.check_headers()
    records: list = []
    ended: list[str] = []
    closing = threading.Event()

    def read() -> None:
        try:
            while True:
                records.append(viewer.read_record())
        except (StreamEnded, OSError, AttributeError) as e:  # AttributeError: closed under us
            if not closing.is_set():
                ended.append(repr(e))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    time.sleep(1.0)
    recoveries, rss = [], {}
    try:
        for cycle in range(1, 11):
            srv.kill()
            time.sleep(0.3)
            back = srv.start()
            deadline = back + 5.0
            got = None
            while time.time() < deadline and got is None:
                for r in reversed(records):
                    if r.t_recv <= back:
                        break
                    if r.kind == "fragment":
                        got = r
                time.sleep(0.01)
            assert not ended, f"cycle {cycle}: the viewer's stream ended: {ended}"
            assert got is not None, f"cycle {cycle}: no fragment within 5 s of the server's return; " \
                                    f"log:\n{ph.log_tail(20)}"
            recoveries.append(got.t_recv - back)
            time.sleep(0.4)
            if cycle in (2, 10):
                rss[cycle] = ph.rss_kb()
    finally:
        closing.set()
        viewer.close()
    print(f"recovery after server return (s): {[round(r, 3) for r in recoveries]}; RSS kB {rss}")
    assert max(recoveries) < 2.0, f"recovery times {recoveries}"
    assert rss[10] - rss[2] <= 1536, f"RSS grew {rss[10] - rss[2]} kB from cycle 2 to 10 ({rss})"
    st = parse_stream(records)
    assert all(g.width == 320 for g in st.inits)
    check_fragments(st.fragments, st.init, 100, contiguous=False)
    for a, b in zip(st.fragments, st.fragments[1:]):
        assert b.tfdt >= a.end, f"tfdt went backwards across a restart: {a.end} -> {b.tfdt}"
    decode_clean(st, tmp_path, name="restarts")
    status = ph.status()["source"]
    assert status["restarts"] >= 10 and status["state"] == "running", status


def test_rtsp_resolution_change_gives_viewers_a_new_init_in_band(pinhole, rtsp_server, tmp_path, ffmpeg):
    """The camera switches from 320x240 to 480x272 mid-session: the connected viewer gets a new
    init segment in band and both halves decode."""
    srv = rtsp_server("--size", "320x240", "--switch-after", "2.5", "--switch-size", "480x272")
    ph = pinhole(srv.url)
    ph.wait_video(timeout=10, fragments=1)
    c = CmafClient(ph.port)
    try:
        c.check_headers()
        recs = c.read_for(6.0, until=lambda rs: sum(r.kind == "init" for r in rs) >= 2 and
                          sum(r.kind == "fragment" for r in rs) >= 30 and rs[-1].kind == "fragment" and
                          sum(1 for r in rs[[i for i, x in enumerate(rs) if x.kind == "init"][-1]:]
                              if r.kind == "fragment") >= 10)
    finally:
        c.close()
    st = parse_stream(recs)
    sizes = [(i.width, i.height) for i in st.inits]
    assert sizes == [(320, 240), (480, 272)], f"init sizes {sizes}; log:\n{ph.log_tail(20)}"
    for gen in (0, 1):
        frags = [f for f in st.fragments if f.generation == gen]
        assert frags, f"no fragments in generation {gen}"
        check_fragments(frags, st.inits[gen], 100)
        decode_clean(st, tmp_path, gen, name="switch")
    assert ph.status()["video"]["width"] == 480


# ---------------------------------------------------------------- bad cameras


def wait_for(pred, timeout: float, what: str, ph) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    pytest.fail(f"{what} within {timeout} s; log:\n{ph.log_tail(30)}")


def test_rtsp_broken_sdp_is_one_clear_error_and_retried(pinhole, camera):
    """DESCRIBE answers with garbage: no panic, the source keeps retrying with backoff, the
    status names the problem, and the log says it once (not once per retry)."""
    cam = camera("broken-sdp")
    ph = pinhole(cam.url)
    wait_for(lambda: cam.describes >= 4, 6, "four DESCRIBEs (retries)", ph)
    src = ph.status()["source"]
    assert src["state"] == "restarting" and src["restarts"] >= 3, src
    assert "DESCRIBE" in src["last_error"] and "SDP" in src["last_error"], src
    lines = [line for line in warnings_of(ph) if "DESCRIBE" in line]
    assert len(lines) == 1, "expected one log line for the repeated problem:\n" + "\n".join(lines)
    assert ph.metrics()["pinhole_source_up"] == 0


def test_rtsp_sps_pps_missing_until_later(pinhole, camera, tmp_path, ffmpeg):
    """No parameter sets in the SDP, and none in band for the first 2 s: one log line saying what
    is missing, then the stream starts at the first IDR that brings them, and decodes."""
    cam = camera("late-sps", late_s=2.0)
    ph = pinhole(cam.url)
    ph.wait_video(timeout=10)
    st = read_stream(ph, 2.0)
    check_fragments(st.fragments, st.init, 100)
    decode_clean(st, tmp_path, name="late-sps")
    waits = [line for line in warnings_of(ph) if "SPS/PPS" in line]
    assert len(waits) == 1, "expected one line about the missing SPS/PPS:\n" + "\n".join(warnings_of(ph))
    assert ph.status()["source"]["restarts"] == 0


def test_rtsp_timestamps_going_backwards(pinhole, camera, tmp_path, ffmpeg):
    """The camera's RTP clock steps back ten seconds: one log line, the timeline re-bases, the
    viewer's tfdt keeps going forward without a gap, and the session is not restarted."""
    cam = camera("ts-backwards", late_s=1.5)
    ph = pinhole(cam.url)
    ph.wait_video(timeout=10, fragments=1)
    c = CmafClient(ph.port)
    try:
        c.check_headers()
        recs = c.read_for(3.5)
    finally:
        c.close()
    st = parse_stream(recs)
    check_fragments(st.fragments, st.init, 100)  # contiguous tfdt across the step
    decode_clean(st, tmp_path, name="backwards")
    lines = [line for line in warnings_of(ph) if "backwards" in line]
    assert len(lines) == 1, "expected one line about the step back:\n" + "\n".join(warnings_of(ph))
    assert ph.status()["source"]["restarts"] == 0


def test_watchdog_restarts_a_camera_that_goes_silent(pinhole, camera):
    """A camera that answers PLAY and then sends nothing, keeping the connection open: the
    watchdog restarts the session after source_timeout_ms, and says so in status and metrics."""
    cam = camera("silent")
    ph = pinhole(cam.url, args=["--source-timeout-ms", "1000"])
    wait_for(lambda: ph.status()["source"]["watchdog_restarts"] >= 2, 8, "two watchdog restarts", ph)
    src = ph.status()["source"]
    assert "no frames for 1.0 s" in (src["last_error"] or ""), src
    m = ph.metrics()
    assert m["pinhole_source_watchdog_restarts_total"] >= 2
    assert m['pinhole_source_state{state="running"}'] == 0


def test_watchdog_stops_a_silent_command_and_its_process_group(pinhole):
    """The watchdog is the supervisor's, for every source: an exec: command that writes nothing
    is stopped (its whole process group: the fixture fails on leftovers) and started again."""
    ph = pinhole("exec:sleep 30 & sleep 30", args=["--source-timeout-ms", "800"])
    wait_for(lambda: ph.status()["source"]["watchdog_restarts"] >= 2, 8, "two watchdog restarts", ph)
    assert ph.metrics()["pinhole_source_watchdog_restarts_total"] >= 2
