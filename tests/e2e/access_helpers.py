"""Helpers for the access tests: RSA keys and JWTs made here (python `cryptography`), a JWKS served
on 127.0.0.1 like Cloudflare's /cdn-cgi/access/certs, plain HTTP(S) requests that do not follow
redirects, and a chunked-CMAF reader that can send headers.

Nothing here imports pinhole code: tokens are built from RFC 7515/7519 directly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cmaf import CmafClient
from conftest import pinhole_bin

TEAM = "pinhole-test"
ISSUER = f"https://{TEAM}.cloudflareaccess.com"
AUD = "3f1c2b9a8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170f6e5d4c"


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict:
    nums = key.public_key().public_numbers()
    n = nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")
    e = nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")
    return {"kid": kid, "kty": "RSA", "alg": "RS256", "use": "sig", "n": b64u(n), "e": b64u(e)}


def claims(**over) -> dict:
    now = int(time.time())
    c = {"aud": [AUD], "email": "owner@example.com", "exp": now + 300, "iat": now, "nbf": now,
         "iss": ISSUER, "type": "app", "identity_nonce": "x", "sub": "7335d417-61da-459d-899c-0a01c76a2ddf",
         "country": "CH"}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def mint(key: rsa.RSAPrivateKey | None, kid: str, body: dict, alg: str = "RS256",
         hmac_secret: bytes | None = None) -> str:
    header = {"alg": alg, "kid": kid, "typ": "JWT"}
    signing_input = f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(body).encode())}"
    if alg == "RS256":
        assert key is not None
        sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    elif alg == "HS256":
        assert hmac_secret is not None
        sig = hmac.new(hmac_secret, signing_input.encode(), hashlib.sha256).digest()
    elif alg == "none":
        sig = b""
    else:
        raise ValueError(alg)
    return f"{signing_input}.{b64u(sig)}"


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class JwksServer:
    """Serves {"keys": [...]} at /cdn-cgi/access/certs on 127.0.0.1; counts the fetches."""

    def __init__(self, keys: dict[str, rsa.RSAPrivateKey]):
        self.keys = dict(keys)
        self.fetches = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                with outer.lock:
                    outer.fetches += 1
                    doc = {"keys": [jwk(k, kid) for kid, k in outer.keys.items()],
                           "public_cert": {"kid": "unused", "cert": "-----BEGIN CERTIFICATE-----"}}
                body = json.dumps(doc).encode()
                if self.path != "/cdn-cgi/access/certs":
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/cdn-cgi/access/certs"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set_keys(self, keys: dict[str, rsa.RSAPrivateKey]) -> None:
        with self.lock:
            self.keys = dict(keys)

    def count(self) -> int:
        with self.lock:
            return self.fetches

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def request(port: int, path: str, method: str = "GET", headers: dict | None = None, body: bytes | None = None,
            https: bool = False, context: ssl.SSLContext | None = None, source: str | None = None,
            timeout: float = 5.0) -> tuple[int, dict, bytes]:
    """One request; redirects are returned, not followed. Header names come back lower-case; a
    repeated header (Set-Cookie) is joined with '\\n'."""
    src = (source, 0) if source else None
    if https:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context, source_address=src)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=src)
    try:
        h = dict(headers or {})
        if body is not None:
            h.setdefault("Content-Type", "application/x-www-form-urlencoded")
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        out: dict[str, str] = {}
        for k, v in r.getheaders():
            k = k.lower()
            out[k] = f"{out[k]}\n{v}" if k in out else v
        return r.status, out, r.read()
    finally:
        conn.close()


def basic(password: str, user: str = "viewer") -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def hash_password(password: str) -> str:
    p = subprocess.run([pinhole_bin(), "hash-password"], input=password + "\n", capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, f"pinhole hash-password failed ({p.returncode}): {p.stderr}"
    h = p.stdout.strip()
    assert h.startswith("$argon2id$"), f"hash-password printed {h!r}"
    assert password not in p.stdout + p.stderr, "hash-password echoed the password"
    return h


def wait_answering(port: int, ph, https: bool = False, context: ssl.SSLContext | None = None,
                   timeout: float = 20.0) -> None:
    """Wait until the listener answers anything at all (a policy may refuse /api/status)."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        if not ph.alive():
            pytest.fail(f"pinhole exited with {ph.proc.returncode}; log:\n{ph.log_tail()}")
        try:
            request(port, "/api/time", https=https, context=context, timeout=1.0)
            return
        except OSError as e:
            last = repr(e)
        time.sleep(0.05)
    pytest.fail(f"port {port} did not answer within {timeout} s ({last}); log:\n{ph.log_tail()}")


def open_stream(port: int, headers: dict, https: bool = False, context: ssl.SSLContext | None = None,
                timeout: float = 10.0) -> CmafClient:
    """A CmafClient for /api/video/cmaf whose request carries `headers` (and may be HTTPS)."""
    c = CmafClient.__new__(CmafClient)
    if https:
        c.conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    else:
        c.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.conn.putrequest("GET", "/api/video/cmaf")
    for k, v in headers.items():
        c.conn.putheader(k, v)
    c.conn.endheaders()
    c.resp = None
    c.t_open = time.time()
    return c
