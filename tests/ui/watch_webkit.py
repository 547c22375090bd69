#!/usr/bin/env python3
"""tests/ui/watch_webkit.py — tests/ui/watch.mjs for WebKitGTK: opens a page in WebKit (Debian's
WebKitWebDriver driving its MiniBrowser, on a private Xvfb display) and reports what the viewer
saw, as the same JSON on stdout, so tests/e2e/test_webkit.py and bench/latency judge both engines
with one set of code.

    tests/.venv/bin/python tests/ui/watch_webkit.py --url 'http://127.0.0.1:8080/?mode=chunked' \\
        --seconds 20 [--screenshot out.png] [--timeline-ms 500] [--hidden-at S --visible-at S]

The page side is tests/ui/sampler.mjs (its source printed by `node tests/ui/sampler.mjs`): the
same time-band reader as Chromium's (tests/hls/browser.mjs). WebDriver has no init scripts, so the
sampler is installed right after the page loaded: frames before that are not sampled, and
`first_frame_ms` is the first frame the sampler saw (the player's own `player_first_frame_ms` is
from navigation start, as in Chromium). `--no-mse` is not available (it must run before the
page's scripts); use `?hls=native` for the engine's own HLS.

--ready-file F --wait-server: start the browser, write F, then wait until the URL's host:port
accepts a connection and open the page at once (a page opened the moment pinhole starts: the
caller starts pinhole after F appears).

--run-at S JS: run the script JS in the page S seconds after it loaded (e.g. dispatch an event).

--hidden-at S / --visible-at S: at S seconds after the page loaded, make the page hidden /
visible again the way a backgrounded tab is (the MiniBrowser window is minimised and restored,
which WebKit turns into visibilitychange and, for ManagedMediaSource, endstreaming /
startstreaming).

Exit 0 even when playback failed (the caller judges the report); 2 on bad arguments or when the
browser cannot start. Needs: selenium (tests/requirements.txt), /usr/bin/WebKitWebDriver
(webkit2gtk-driver), Xvfb, node with tests/hls/node_modules (tests/deps.d/webkit.sh).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLER = ROOT / "tests" / "ui" / "sampler.mjs"
DRIVER = "/usr/bin/WebKitWebDriver"

# Extra state the WebKit watcher keeps in the page: page errors (there is no console log over
# classic WebDriver), a marker that tells a reload, and the ManagedMediaSource streaming events.
EXTRA = r"""
(() => {
  window.__watch.navMarker = true;
  window.__watch.pageErrors = [];
  window.__watch.events = [];
  addEventListener('error', (e) => { if (window.__watch.pageErrors.length < 50) window.__watch.pageErrors.push(String(e.message)); });
  addEventListener('unhandledrejection', (e) => { if (window.__watch.pageErrors.length < 50) window.__watch.pageErrors.push(`unhandled rejection: ${e.reason}`); });
  document.addEventListener('visibilitychange', () => window.__watch.events.push([Math.round(performance.now()), `visibility ${document.visibilityState}`]));
})();
"""


def become_subreaper() -> None:
    """WebKit's helper processes (web, network, GPU) are re-parented here when MiniBrowser
    exits, so this script can end them all and none outlives it (the e2e tests count their
    children to find what pinhole left behind)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def end_children(grace: float = 3.0) -> None:
    """SIGTERM, then after `grace` s SIGKILL, every child still running; reap them all."""
    me = str(os.getpid())

    def kids() -> list[tuple[int, bool]]:
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                st = (d / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{me}\n" in st:
                out.append((int(d.name), "\nState:\tZ" in st))
        return out

    deadline = time.time() + grace
    sig = signal.SIGTERM
    while True:
        alive = []
        for pid, zombie in kids():
            if zombie:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            else:
                alive.append(pid)
        if not alive:
            return
        if time.time() > deadline:
            if sig == signal.SIGKILL:
                return
            sig = signal.SIGKILL
        for pid in alive:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        time.sleep(0.1)


def fail(msg: str) -> None:
    sys.stderr.write(f"watch_webkit.py: {msg}\n")
    sys.exit(2)


def sampler_source() -> dict:
    p = subprocess.run(["node", str(SAMPLER)], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        fail(f"`node {SAMPLER}` failed ({p.returncode}): {p.stderr[-1000:]} (tests/hls needs `npm ci`)")
    return json.loads(p.stdout)


def start_xvfb() -> tuple[subprocess.Popen, str]:
    """Xvfb on the first free display number, found by Xvfb itself (-displayfd)."""
    r, w = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1280x800x24", "-nolisten", "tcp",
                             "-noreset"], pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    os.close(w)
    with os.fdopen(r) as f:
        num = f.readline().strip()
    if not num:
        proc.kill()
        proc.wait()
        fail("Xvfb did not start (apt-get install -y xvfb; tests/run does)")
    return proc, f":{num}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_server(url: str, timeout: float = 60.0) -> None:
    from urllib.parse import urlsplit
    u = urlsplit(url)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((u.hostname, u.port or 80), timeout=1):
                return
        except OSError:
            time.sleep(0.01)
    fail(f"{u.hostname}:{u.port} did not accept a connection within {timeout} s")


def minibrowser() -> str:
    found = sorted(glob.glob("/usr/lib/*/webkit2gtk-4.1/MiniBrowser"))
    if not found:
        fail("WebKitGTK's MiniBrowser is missing (apt-get install -y webkit2gtk-driver; tests/run does)")
    return found[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--screenshot")
    ap.add_argument("--timeline-ms", type=float, default=500.0)
    ap.add_argument("--ready-file")
    ap.add_argument("--wait-server", action="store_true")
    ap.add_argument("--playing-file",
                    help="write this file once the sampler has counted --playing-frames pictures")
    ap.add_argument("--playing-frames", type=int, default=30)
    ap.add_argument("--run-at", nargs=2, action="append", default=[], metavar=("S", "JS"),
                    help="run the script JS in the page S seconds after it loaded (repeatable)")
    ap.add_argument("--hidden-at", type=float)
    ap.add_argument("--visible-at", type=float)
    o = ap.parse_args()
    if o.seconds <= 0:
        fail("--seconds must be > 0")
    if not Path(DRIVER).exists():
        fail(f"{DRIVER} is missing (apt-get install -y webkit2gtk-driver; tests/run does)")
    try:
        from selenium import webdriver
        from selenium.webdriver.webkitgtk.options import Options
        from selenium.webdriver.webkitgtk.service import Service
    except ImportError:
        fail("selenium is missing: run with tests/.venv/bin/python (tests/run installs tests/requirements.txt)")
    src = sampler_source()
    become_subreaper()
    xvfb, display = start_xvfb()
    os.environ["DISPLAY"] = display
    tmp = tempfile.mkdtemp(prefix="pinhole-webkit-")
    driver = None
    try:
        opts = Options()
        opts.binary_location = minibrowser()
        opts.add_argument("--automation")
        # WebKitGTK's own HLS player (GStreamer's hlsdemux) is off unless asked for; Safari has
        # one: `?hls=native` is to play with the engine's own HLS, as it would there.
        os.environ.setdefault("WEBKIT_GST_ENABLE_HLS_SUPPORT", "1")
        # its own profile (cache, storage) per run, as watch.mjs gives Chromium
        os.environ["XDG_CACHE_HOME"] = os.environ["XDG_DATA_HOME"] = tmp
        try:
            driver = webdriver.WebKitGTK(options=opts, service=Service(executable_path=DRIVER, port=free_port()))
        except Exception as e:  # noqa: BLE001 - any start-up failure is "cannot start"
            fail(f"cannot start WebKitGTK through {DRIVER}: {e}")
        driver.set_window_size(1280, 800)
        driver.set_script_timeout(10)
        if o.ready_file:
            Path(o.ready_file).write_text("ready\n")
        if o.wait_server:
            wait_server(o.url)
        opened_ms = time.time() * 1000
        driver.get(o.url)
        driver.execute_script(src["init"] + EXTRA)
        t0 = time.time()
        timeline = []
        hidden = visible = False
        while time.time() - t0 < o.seconds:
            time.sleep(max(0.0, (len(timeline) + 1) * o.timeline_ms / 1000 - (time.time() - t0)))
            now = time.time() - t0
            if o.hidden_at is not None and not hidden and now >= o.hidden_at:
                hidden = True
                driver.minimize_window()
            if o.visible_at is not None and hidden and not visible and now >= o.visible_at:
                visible = True
                driver.maximize_window()
            for item in o.run_at:
                if len(item) == 2 and now >= float(item[0]):
                    driver.execute_script(item[1])
                    item.append("done")
            e = driver.execute_script(f"return {src['timeline']}();")
            e["visibility"] = driver.execute_script("return document.visibilityState;")
            timeline.append(e)
            if o.playing_file and (e.get("frames") or 0) >= o.playing_frames \
                    and not Path(o.playing_file).exists():
                Path(o.playing_file).write_text(f"{e['frames']} frames at {now:.1f} s\n")
        end = driver.execute_script(f"return {src['final']}();")
        extra = driver.execute_script(
            "return {nav: !!window.__watch.navMarker, errors: window.__watch.pageErrors || [],"
            " events: window.__watch.events || []};")
        if o.screenshot:
            driver.save_screenshot(o.screenshot)
        report = {"url": o.url, "engine": "webkitgtk", "opened_wall_ms": opened_ms, "navigations": 1 if extra["nav"] else 2, "held_gets": 0,
                  "timeline": timeline, "console": [f"pageerror: {m}" for m in extra["errors"]],
                  "page_events": extra["events"], **end}
        sys.stdout.write(json.dumps(report) + "\n")
        return 0
    finally:
        if driver is not None:
            try:
                driver.quit()
            except Exception:  # noqa: BLE001 - the browser may already be gone
                pass
        try:
            os.killpg(xvfb.pid, signal.SIGTERM)
        except OSError:
            pass
        xvfb.wait(10)
        end_children()
        subprocess.run(["rm", "-rf", tmp], check=False)


if __name__ == "__main__":
    sys.exit(main())
