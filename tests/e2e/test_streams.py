"""Several cameras in one pinhole: `[[stream]]` tables, each camera under /streams/NAME/ for every
endpoint, the first one also at the plain paths, /api/streams for the UI's picker, /metrics with
a stream label, and the player page of the second camera in headless Chromium."""

from __future__ import annotations

import http.client
import json
import time

from cmaf import CmafClient, check_fragments, parse_stream
from conftest import ffmpeg_exec, parse_prometheus, run_pinhole

CONFIG = """
fragment_ms = 100
[[stream]]
name = "front"
source = "testsrc?size=640x360"
[[stream]]
name = "garage-2"
source = "exec:{exec}"
fragment_ms = 200
"""


def start_two(pinhole, tmp_path):
    cfg = tmp_path / "two.toml"
    cfg.write_text(CONFIG.format(exec=ffmpeg_exec("320x240").replace('"', '\\"')))
    ph = pinhole(source=None, args=["--config", str(cfg)])
    ph.wait_video()
    return ph


def read(ph, path: str, seconds: float = 3.0):
    c = CmafClient(ph.port, path=path)
    try:
        c.check_headers()
        return parse_stream(c.read_for(seconds))
    finally:
        c.close()


def test_each_camera_is_served_under_its_name_and_the_first_at_the_plain_paths(pinhole, tmp_path, ffmpeg):
    ph = start_two(pinhole, tmp_path)

    code, _, body = ph.get("/api/streams")
    assert code == 200, body
    streams = json.loads(body)["streams"]
    assert [s["name"] for s in streams] == ["front", "garage-2"], streams
    assert [s["path"] for s in streams] == ["/streams/front/", "/streams/garage-2/"]
    assert streams[1]["source"].startswith("exec:ffmpeg"), streams

    plain = read(ph, "/api/video/cmaf")
    front = read(ph, "/streams/front/api/video/cmaf")
    garage = read(ph, "/streams/garage-2/api/video/cmaf", seconds=4.0)
    assert (plain.init.width, plain.init.height) == (640, 360)
    assert (front.init.width, front.init.height) == (640, 360)
    assert (garage.init.width, garage.init.height) == (320, 240), "the second camera's picture"
    check_fragments(front.fragments, front.init, 100)
    check_fragments(garage.fragments, garage.init, 200)

    # status, HLS and the player under each name
    for name, width in (("front", 640), ("garage-2", 320)):
        code, _, body = ph.get(f"/streams/{name}/api/status")
        assert code == 200
        st = json.loads(body)
        assert st["stream"] == name and st["video"]["width"] == width, st
        code, _, body = ph.get(f"/streams/{name}/hls/stream.m3u8")
        assert code == 200 and body.startswith(b"#EXTM3U"), (name, code, body[:100])
        assert b"/streams/" not in body and b"\n/" not in body, "playlist URIs must stay relative"
        code, _, page = ph.get(f"/streams/{name}/")
        assert code == 200 and b"<video" in page
    assert json.loads(ph.get("/api/status")[2])["stream"] == "front"

    # every family described once, each camera's figures labelled
    code, _, body = ph.get("/metrics")
    text = body.decode()
    helps = [line for line in text.splitlines() if line.startswith("# HELP ")]
    assert len(helps) == len(set(helps)), "a metric family is described twice"
    m = parse_prometheus(text)
    assert m['pinhole_video_width_pixels{stream="front"}'] == 640, text
    assert m['pinhole_video_width_pixels{stream="garage-2"}'] == 320, text
    assert "pinhole_video_width_pixels" not in m, "unlabelled per-camera figure with two cameras"

    # unknown names and the bare name
    assert ph.get("/streams/attic/api/video/cmaf")[0] == 404
    assert ph.get("/streams/../api/status")[0] == 404
    c = http.client.HTTPConnection("127.0.0.1", ph.port, timeout=5)
    c.request("GET", "/streams/garage-2")
    r = c.getresponse()
    assert r.status == 301 and r.getheader("Location") == "/streams/garage-2/", (r.status, r.getheaders())
    c.close()


def test_bad_stream_tables_are_refused_at_start_naming_the_key(tmp_path):
    cfg = tmp_path / "dup.toml"
    cfg.write_text('[[stream]]\nname = "a"\nsource = "testsrc"\n[[stream]]\nname = "a"\nsource = "testsrc"\n')
    p = run_pinhole(["--config", str(cfg)])
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = [line for line in p.stderr.splitlines() if "stream[1].name" in line and "unique" in line]
    assert len(lines) == 1, p.stderr


def test_the_second_cameras_page_plays_and_lists_both(pinhole, tmp_path):
    from test_ui import watch

    ph = start_two(pinhole, tmp_path)
    r = watch(f"http://127.0.0.1:{ph.port}/streams/garage-2/?mode=chunked", 10.0, "streams-garage")
    last = r["timeline"][-1]
    context = f"{last}; errors {r['player_errors'][:5]}; console {r['console'][-6:]}"
    assert tuple(last["size"] or ()) == (320, 240), context
    assert last["player"]["frames"] >= 60, context
    assert r["navigations"] == 1, context
    assert r["stream_options"] == ["front", "garage-2"], r.get("stream_options")
    assert r["stream_selected"] == "garage-2", r.get("stream_selected")


def test_each_cameras_log_lines_name_its_stream(pinhole, tmp_path):
    # Two broken cameras: every line about a source's failure says which camera it is, so an
    # owner with several cameras can tell them apart in `journalctl -u pinhole`.
    cfg = tmp_path / "broken.toml"
    cfg.write_text('[[stream]]\nname = "front"\nsource = "exec:exit 3"\n'
                   '[[stream]]\nname = "back"\nsource = "v4l2:/dev/video42"\n')
    ph = pinhole(source=None, args=["--config", str(cfg)])
    ph.wait_ready()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "stream{name=back}" not in ph.log():
        time.sleep(0.1)
    lines = [line for line in ph.log().splitlines() if "restarting" in line]
    front = [line for line in lines if "exit status: 3" in line]
    back = [line for line in lines if "/dev/video42" in line]
    assert front and back, ph.log_tail()
    assert all("stream{name=front}" in line for line in front), front
    assert all("stream{name=back}" in line for line in back), back
