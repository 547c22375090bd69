"""The LAN password: login page and session cookie for browsers, HTTP Basic for tools, guessing
slowed per client, HTTPS with a generated certificate, and no secret in the log or the status."""

from __future__ import annotations

import base64
import http.client
import re
import secrets
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from access_helpers import basic, hash_password, open_stream, request, wait_answering
from cmaf import parse_stream
from conftest import free_port, run_pinhole

SOURCE = "testsrc?size=320x240&fps=15&bitrate=300k"


def lan_config(tmp_path: Path, password: str) -> Path:
    path = tmp_path / "pinhole.toml"
    path.write_text(f'[lan]\npassword_hash = "{hash_password(password)}"\n')
    return path


def login(port: int, password: str, **kw) -> tuple[int, dict, bytes]:
    """POST the login form; every byte of the password percent-encoded, as a form may send it."""
    encoded = "".join(f"%{b:02X}" for b in password.encode())
    return request(port, "/api/login", method="POST", body=f"username=pinhole&password={encoded}".encode(), **kw)


def test_hash_password_reads_stdin_and_refuses_an_empty_password():
    h = hash_password("correct horse battery staple")
    assert re.fullmatch(r"\$argon2id\$v=19\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+", h), h
    from conftest import pinhole_bin
    p = subprocess.run([pinhole_bin(), "hash-password"], input="\n", capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "empty" in p.stderr, (p.returncode, p.stderr)
    p = run_pinhole(["--help"])
    assert "hash-password" in p.stdout and "password_hash" in p.stdout and "[tunnel]" in p.stdout


def test_without_the_password_nothing_is_served_and_with_it_everything_is(pinhole, tmp_path, ffmpeg):
    """Browser path (login page, cookie), tool path (Basic, ffmpeg with user:pass@ in the URL),
    logout; then the log (at debug level) and /api/status are searched for every secret used."""
    # URL-safe characters only: ffmpeg does not percent-decode credentials in a URL.
    password = "lan.pw~" + secrets.token_hex(6)
    ph = pinhole(source=SOURCE, args=["--config", str(lan_config(tmp_path, password)), "--log", "debug"],
                 ready=False)
    wait_answering(ph.port, ph)
    port = ph.port

    # Without: the player page redirects to the login page, everything else is 401 + Basic challenge.
    code, h, _ = request(port, "/")
    assert code == 303 and h.get("location") == "/login.html", (code, h)
    for path in ("/api/status", "/api/video/cmaf", "/hls/index.m3u8", "/hls/stream.m3u8", "/metrics",
                 "/js/app.js", "/style.css", "/api/time", "/nope"):
        code, h, body = request(port, path)
        assert code == 401, f"{path} answered {code} without credentials"
        assert h.get("www-authenticate", "").startswith("Basic realm="), f"{path}: {h}"
        assert b"ftyp" not in body and len(body) < 200
    code, h, body = request(port, "/login.html")
    assert code == 200 and b'name="password"' in body and b'action="/api/login"' in body, code
    code, h, _ = request(port, "/api/login")
    assert code == 401 and "www-authenticate" not in h, "the login page's check must not prompt"

    # Wrong password: the login page again with a message. Right one: 303 to / with the cookie.
    code, h, body = login(port, "not it")
    assert code == 401 and b"Wrong password." in body, (code, body[:300])
    code, h, _ = login(port, password)
    assert code == 303 and h.get("location") == "/", (code, h)
    cookie_line = h["set-cookie"]
    attrs = [a.strip() for a in cookie_line.split(";")]
    assert attrs[0].startswith("pinhole_session=") and len(attrs[0]) == len("pinhole_session=") + 43, cookie_line
    assert "HttpOnly" in attrs and "SameSite=Strict" in attrs and "Path=/" in attrs, cookie_line
    assert "Secure" not in attrs, "Secure on plain HTTP: the browser would drop the cookie"
    cookie = {"Cookie": attrs[0]}
    token = attrs[0].split("=", 1)[1]

    code, h, body = request(port, "/", headers=cookie)
    assert code == 200 and b"<html" in body.lower(), code
    assert request(port, "/api/login", headers=cookie)[0] == 204
    for path in ("/api/status", "/hls/index.m3u8", "/js/app.js", "/metrics"):
        assert request(port, path, headers=cookie)[0] == 200, path
    s = open_stream(port, cookie)
    try:
        s.check_headers()
        st = parse_stream(s.read_for(1.0, until=lambda r: sum(x.kind == "fragment" for x in r) >= 2))
        assert len(st.fragments) >= 2
    finally:
        s.close()

    # Basic, with any user name; a wrong password is refused.
    assert request(port, "/api/status", headers=basic(password, user="homeassistant"))[0] == 200
    assert request(port, "/api/status", headers=basic(password + "x"))[0] == 401
    # A tool: ffprobe reads LL-HLS with the credentials in the URL (Basic after the 401 challenge),
    # once the playlist lists a complete segment (ffmpeg 5 ignores parts).
    deadline = time.time() + 10
    while b"#EXTINF" not in request(port, "/hls/stream.m3u8", headers=basic(password))[2]:
        assert time.time() < deadline, "no complete LL-HLS segment within 10 s"
        time.sleep(0.1)
    url = f"http://ffprobe:{password}@127.0.0.1:{port}/hls/index.m3u8"
    p = subprocess.run(["ffprobe", "-v", "error", "-rw_timeout", "5000000", "-show_entries", "stream=codec_name,width",
                        "-of", "csv=p=0", url], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "h264,320" in p.stdout, f"ffprobe via Basic: {p.returncode} {p.stdout!r} {p.stderr}"

    # Logout ends the session.
    code, h, _ = request(port, "/api/logout", method="POST", headers=cookie)
    assert code == 303 and "Max-Age=0" in h.get("set-cookie", ""), (code, h)
    assert request(port, "/api/status", headers=cookie)[0] == 401

    # No secret anywhere it could leak.
    _, _, status = request(port, "/api/status", headers=basic(password))
    b64 = base64.b64encode(f"viewer:{password}".encode()).decode()
    ph.stop()
    log = ph.log()
    assert "DEBUG" in log, "the daemon did not log at debug level; this check would prove nothing"
    for secret, what in ((password, "password"), (token, "session token"), (b64, "Basic credentials"),
                         ("argon2id", "password hash")):
        assert secret not in log, f"the {what} is in the log"
        assert secret.encode() not in status, f"the {what} is in /api/status"


def test_guessing_is_slowed_per_client_while_others_still_get_in(pinhole, tmp_path):
    """Five wrong guesses from one address, then 429 with Retry-After at once (no argon2 work,
    so the answer is fast), even for the right password and for Basic; another address is not
    affected."""
    password = "guess-me-" + secrets.token_hex(4)
    ph = pinhole(source=SOURCE, args=["--config", str(lan_config(tmp_path, password))], ready=False)
    wait_answering(ph.port, ph)
    port = ph.port
    for i in range(5):
        code, _, _ = login(port, f"wrong-{i}")
        assert code == 401, f"guess {i + 1} answered {code}"
    t0 = time.monotonic()
    code, h, body = login(port, "wrong-6")
    dt = time.monotonic() - t0
    assert code == 429, f"the 6th wrong guess answered {code}"
    assert int(h.get("retry-after", "0")) >= 10, h
    assert b"Too many attempts" in body
    assert dt < 0.5, f"a rate-limited attempt took {dt:.2f} s: it should be refused before any hashing"
    assert login(port, password)[0] == 429, "the limit must hold for the right password too (no oracle)"
    assert request(port, "/api/status", headers=basic(password + "?"))[0] == 429
    # Another client (127.0.0.2 is loopback too on Linux) is unaffected.
    code, h, _ = login(port, password, source="127.0.0.2")
    assert code == 303, f"another address could not log in: {code}"
    cookie = {"Cookie": h["set-cookie"].split(";")[0]}
    # A logged-in browser on the limited address still works: cookies cost no password check.
    assert request(port, "/api/status", headers=cookie)[0] == 200
    assert ph_metric(port, password, "pinhole_auth_limited_total") >= 3


def ph_metric(port: int, password: str, name: str) -> float:
    from conftest import parse_prometheus
    code, _, body = request(port, "/metrics", headers=basic(password), source="127.0.0.3")
    assert code == 200, code
    return parse_prometheus(body.decode()).get(name, -1)


def test_https_with_a_generated_certificate_serves_the_stream(pinhole, tmp_path):
    """First start makes a self-signed certificate in the state directory; a client that trusts
    exactly that certificate (verification on, by IP address) logs in (the cookie is Secure) and
    reads the stream; a second start reuses the certificate."""
    password = "tls-" + secrets.token_hex(4)
    port = free_port()
    state = tmp_path / "state"
    args = ["--config", str(lan_config(tmp_path, password)), "--listen", f"https://127.0.0.1:{port}",
            "--state-dir", str(state)]
    ph = pinhole(source=SOURCE, args=args, listen=False, ready=False, port=port)
    cert = state / "tls" / "cert.pem"
    deadline = time.time() + 10
    while not cert.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert cert.exists(), f"no generated certificate at {cert}; log:\n{ph.log_tail()}"
    assert (state / "tls" / "key.pem").stat().st_mode & 0o077 == 0, "the key file is readable by others"
    ctx = ssl.create_default_context(cafile=str(cert))
    wait_answering(port, ph, https=True, context=ctx)
    fp = re.search(r"sha256=([0-9A-F:]{95})", ph.log())
    assert fp, f"the certificate fingerprint is not logged:\n{ph.log_tail()}"

    with pytest.raises(ssl.SSLError):
        request(port, "/api/time", https=True, context=ssl.create_default_context())  # not a public CA
    code, h, _ = login(port, password, https=True, context=ctx)
    assert code == 303, code
    attrs = [a.strip() for a in h["set-cookie"].split(";")]
    assert "Secure" in attrs, h["set-cookie"]
    s = open_stream(port, {"Cookie": attrs[0]}, https=True, context=ctx)
    try:
        s.check_headers()
        st = parse_stream(s.read_for(2.0, until=lambda r: sum(x.kind == "fragment" for x in r) >= 5))
        assert st.init.width == 320 and len(st.fragments) >= 5
    finally:
        s.close()
    # Plain HTTP on the HTTPS port gets nothing useful.
    try:
        answer = request(port, "/api/time", timeout=2)[0]
    except (OSError, http.client.HTTPException) as e:
        answer = repr(e)
    assert not isinstance(answer, int), f"plain HTTP on the HTTPS port answered {answer}"
    ph.stop()

    ph2 = pinhole(source=SOURCE, args=args, listen=False, ready=False, port=port)
    wait_answering(port, ph2, https=True, context=ctx)
    fp2 = re.search(r"sha256=([0-9A-F:]{95})", ph2.log())
    assert fp2 and fp2.group(1) == fp.group(1), "a restart made a new certificate"
    assert "made a self-signed certificate" not in ph2.log()


def test_a_browser_logs_in_through_the_login_page_and_plays(pinhole, tmp_path):
    """Headless Chromium (tests/ui/login.mjs): / sends it to the login page; a wrong password
    shows the message; the right one lands on the player with an HttpOnly, SameSite=Strict cookie
    its scripts cannot read, the page's own requests carry it and frames are shown; and the login
    page, visited again with the cookie, forwards to the player."""
    import json
    import shutil
    from conftest import REPO
    node = shutil.which("node")
    assert node, "`node` is not installed: tests/run installs it (apt-get install -y nodejs npm)"
    assert Path("/usr/bin/chromium").exists(), "/usr/bin/chromium is missing: tests/run installs it"
    assert (REPO / "tests" / "hls" / "node_modules" / "playwright-core").is_dir(), \
        "tests/hls/node_modules is missing: run `npm ci` in tests/hls (tests/run does)"
    password = "browser-" + secrets.token_hex(4)
    ph = pinhole(source="testsrc?size=320x240&fps=15&bitrate=300k",
                 args=["--config", str(lan_config(tmp_path, password))], ready=False)
    wait_answering(ph.port, ph)
    # Chromium at a lower priority: on two cores its start-up would otherwise starve testsrc.
    p = subprocess.run(["nice", "-n", "10", node, str(REPO / "tests" / "ui" / "login.mjs"),
                        "--url", f"http://127.0.0.1:{ph.port}", "--password", password],
                       capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, f"login.mjs exit {p.returncode}: {p.stderr[-2000:]}"
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert not r["errors"], r
    assert r["landedOn"] == "/login.html", r
    assert r["wrongMessage"] == "Wrong password.", r
    assert r["afterLogin"] == "/", r
    assert r["cookieVisibleToScripts"] is False, r
    assert {"name": "pinhole_session", "httpOnly": True, "sameSite": "Strict", "secure": False} in r["cookies"], r
    assert r["statusFromPage"] == 200, r
    assert r["frames"] >= 10, r
    assert r["loginPageForwards"] is True, r
