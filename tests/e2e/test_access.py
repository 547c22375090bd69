"""The tunnel listener (for cloudflared): every request needs a valid Cloudflare Access token.

Real parts: RSA keys made here, a JWKS served on 127.0.0.1 the way
https://TEAM.cloudflareaccess.com/cdn-cgi/access/certs serves it (pinhole's `certs_url` points
there; plain http is only allowed to loopback), tokens built from RFC 7515/7519 in this file.
What Cloudflare itself does (the login, adding the header) cannot run here; the header is what
reaches the origin, so that is what is tested.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from access_helpers import (AUD, ISSUER, TEAM, JwksServer, basic, claims, hash_password, mint, new_key, open_stream,
                            public_pem, request)
from cmaf import parse_stream
from conftest import free_port, parse_prometheus

SOURCE = "testsrc?size=320x240&fps=15&bitrate=300k"


@pytest.fixture
def jwks():
    srv = JwksServer({"k1": new_key()})
    yield srv
    srv.close()


def tunnel_config(tmp_path: Path, jwks_url: str, tunnel_port: int, extra: str = "") -> Path:
    path = tmp_path / "pinhole.toml"
    path.write_text(f"""{extra}
[tunnel]
listen = "127.0.0.1:{tunnel_port}"
team = "{TEAM}"
aud = "{AUD}"
certs_url = "{jwks_url}"
""")
    return path


def wait_keys(ph, n: int = 1, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ph.metrics().get("pinhole_access_keys", 0) >= n:
            return
        time.sleep(0.05)
    pytest.fail(f"pinhole never loaded the key set; log:\n{ph.log_tail()}")


def refused(ph) -> dict[str, float]:
    return {k.split('"')[1]: v for k, v in ph.metrics().items() if k.startswith("pinhole_access_refused_total{")}


def test_only_a_valid_access_token_opens_the_tunnel_listener(pinhole, jwks, tmp_path):
    """Each way a token can be wrong is refused with 403 for its own reason (the refusal counters
    by reason prove it was not refused for some other, accidental reason), before any stream work:
    no viewer is ever subscribed for a refused /api/video/cmaf."""
    tport = free_port()
    ph = pinhole(source=SOURCE, args=["--config", str(tunnel_config(tmp_path, jwks.url, tport))])
    wait_keys(ph)
    ph.wait_video(fragments=2)
    k1 = jwks.keys["k1"]
    now = int(time.time())

    good = mint(k1, "k1", claims())
    code, _, body = request(tport, "/api/status", headers={"Cf-Access-Jwt-Assertion": good})
    assert code == 200, f"a valid token was refused: {code} {body!r}; log:\n{ph.log_tail()}"
    s = open_stream(tport, {"Cf-Access-Jwt-Assertion": good})
    try:
        s.check_headers()
        st = parse_stream(s.read_for(1.0, until=lambda r: sum(x.kind == "fragment" for x in r) >= 3))
        assert st.init.width == 320 and len(st.fragments) >= 3, "the stream through the tunnel listener is not video"
    finally:
        s.close()

    other = new_key()
    cases = [
        ("missing", None, {}),
        ("audience", mint(k1, "k1", claims(aud=["someone-elses-aud"])), {}),
        ("audience", mint(k1, "k1", claims(aud=None)), {}),
        ("issuer", mint(k1, "k1", claims(iss="https://evil.cloudflareaccess.com")), {}),
        ("expired", mint(k1, "k1", claims(exp=now - 120, nbf=now - 600, iat=now - 600)), {}),
        ("not_yet_valid", mint(k1, "k1", claims(nbf=now + 600, exp=now + 900)), {}),
        ("signature", mint(other, "k1", claims()), {}),
        ("unknown_key", mint(other, "not-a-key-" + secrets.token_hex(4), claims()), {}),
        ("algorithm", mint(None, "k1", claims(), alg="none"), {}),
        ("algorithm", mint(None, "k1", claims(), alg="HS256", hmac_secret=public_pem(k1)), {}),
        ("malformed", "not.a.jwt", {}),
        # LAN-style credentials mean nothing here.
        ("missing", None, {"Cookie": "pinhole_session=" + "A" * 43, **basic("whatever")}),
    ]
    viewers_before = ph.status()["viewers"]
    for reason, token, extra in cases:
        headers = dict(extra)
        if token is not None:
            headers["Cf-Access-Jwt-Assertion"] = token
        for path in ("/api/status", "/api/video/cmaf", "/", "/hls/index.m3u8"):
            code, h, body = request(tport, path, headers=headers)
            assert code == 403, f"{reason}: {path} answered {code}, expected 403; body {body[:200]!r}"
            assert len(body) < 200 and b"ftyp" not in body, f"{reason}: {path} body {body[:200]!r}"
    assert ph.status()["viewers"] == viewers_before, "a refused request subscribed a viewer"

    counts = refused(ph)
    want: dict[str, int] = {}
    for reason, _, _ in cases:
        want[reason] = want.get(reason, 0) + 4
    for reason, n in want.items():
        assert counts.get(reason) == n, f"refusals for {reason}: {counts.get(reason)}, expected {n} (all: {counts})"
    assert ph.metrics()["pinhole_access_passed_total"] == 2
    assert good not in ph.log(), "the token reached the log"


def test_a_rotated_key_is_picked_up_and_random_key_ids_cannot_hammer_the_key_server(pinhole, jwks, tmp_path):
    """Cloudflare rotates its signing keys: a token naming a new key id makes pinhole fetch the set
    again, once. A flood of tokens with made-up key ids costs at most a fetch or two."""
    tport = free_port()
    ph = pinhole(source=SOURCE, args=["--config", str(tunnel_config(tmp_path, jwks.url, tport))])
    wait_keys(ph)
    fetched = jwks.count()

    k2 = new_key()
    jwks.set_keys({"k2": k2})  # k1 retired, k2 new
    token = mint(k2, "k2", claims())
    code, _, body = request(tport, "/api/status", headers={"Cf-Access-Jwt-Assertion": token})
    assert code == 200, f"token signed by the rotated-in key refused: {code} {body!r}; log:\n{ph.log_tail()}"
    assert jwks.count() == fetched + 1, f"{jwks.count() - fetched} fetches for one new key id"
    code, _, _ = request(tport, "/api/status", headers={"Cf-Access-Jwt-Assertion": token})
    assert code == 200 and jwks.count() == fetched + 1, "a known key was fetched again"

    t0 = time.time()
    for i in range(40):
        t = mint(k2, f"random-{i}-{secrets.token_hex(6)}", claims())
        code, _, _ = request(tport, "/api/status", headers={"Cf-Access-Jwt-Assertion": t})
        assert code == 403, f"a token naming an unknown key id answered {code}"
    extra = jwks.count() - fetched - 1
    assert extra <= 2, f"40 random key ids caused {extra} key-set fetches in {time.time() - t0:.1f} s"
    assert refused(ph).get("unknown_key") == 40


def test_lan_credentials_never_open_the_tunnel_listener(pinhole, jwks, tmp_path):
    """Whatever the LAN policy (here: a password, and the LAN listener also open as a second
    case), a request on the tunnel listener is judged by its Access token alone; and an Access
    token is no LAN credential."""
    password = "tunnel-test-" + secrets.token_hex(4)
    tport = free_port()
    cfg = tunnel_config(tmp_path, jwks.url, tport,
                        extra=f'[lan]\npassword_hash = "{hash_password(password)}"\n')
    ph = pinhole(source=SOURCE, args=["--config", str(cfg)], ready=False)
    from access_helpers import wait_answering
    wait_answering(ph.port, ph)
    code, h, _ = request(ph.port, "/api/login", method="POST", body=f"password={password}".encode())
    assert code == 303, f"LAN login answered {code}"
    cookie = h["set-cookie"].split(";")[0]
    assert request(ph.port, "/api/status", headers={"Cookie": cookie})[0] == 200

    for headers in ({"Cookie": cookie}, basic(password), {"Cookie": cookie, **basic(password)},
                    {"Cookie": cookie, "Cf-Access-Jwt-Assertion": "garbage"}):
        for path in ("/api/status", "/api/video/cmaf", "/api/login", "/login.html"):
            code, _, body = request(tport, path, headers=headers)
            assert code == 403, f"tunnel {path} with {list(headers)} answered {code}: {body[:100]!r}"
    code, _, body = request(tport, "/api/login", method="POST", body=f"password={password}".encode())
    assert code == 403, f"a LAN login through the tunnel listener answered {code}"

    token = mint(jwks.keys["k1"], "k1", claims())
    code, _, _ = request(tport, "/api/status", headers={"Cf-Access-Jwt-Assertion": token})
    assert code == 200, "a valid token did not open the tunnel listener of a password-protected pinhole"
    code, _, _ = request(ph.port, "/api/status", headers={"Cf-Access-Jwt-Assertion": token})
    assert code == 401, f"an Access token opened the LAN listener ({code})"


def test_without_the_key_set_nothing_passes(pinhole, tmp_path):
    """The key server is unreachable: tokens cannot be checked, so every request is refused (503,
    and the log says why), and pinhole keeps serving its LAN listener."""
    dead = free_port()
    tport = free_port()
    cfg = tunnel_config(tmp_path, f"http://127.0.0.1:{dead}/cdn-cgi/access/certs", tport)
    ph = pinhole(source=SOURCE, args=["--config", str(cfg)])
    key = new_key()
    code, h, body = request(tport, "/api/status", headers={"Cf-Access-Jwt-Assertion": mint(key, "k1", claims())})
    assert code == 503, f"answered {code} {body!r} without a key set"
    assert ph.get("/api/status")[0] == 200
    deadline = time.time() + 5
    while "cannot fetch the Cloudflare Access key set" not in ph.log() and time.time() < deadline:
        time.sleep(0.1)
    assert "cannot fetch the Cloudflare Access key set" in ph.log(), ph.log_tail()


@pytest.mark.parametrize("addr", ["0.0.0.0", "192.0.2.1"])
def test_a_tunnel_listener_off_loopback_is_refused_at_start(tmp_path, addr):
    from conftest import run_pinhole
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[tunnel]\nlisten = "{addr}:8081"\nteam = "{TEAM}"\naud = "{AUD}"\n')
    p = run_pinhole(["--config", str(cfg), "--listen", f"127.0.0.1:{free_port()}"])
    assert p.returncode == 2, f"exit {p.returncode}: {p.stderr}"
    assert "tunnel.listen" in p.stderr and "loopback" in p.stderr, p.stderr
