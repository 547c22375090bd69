"""A misbehaving RTSP camera, for the fault tests in test_rtsp.py (stdlib only).

GStreamer's RTSP server (rtsp_server.py) is the real peer for everything a good camera does. It
cannot be made to send a broken SDP, hold back its SPS/PPS, or step its RTP clock backwards, so
this small server does exactly that and nothing else: it answers OPTIONS, DESCRIBE, SETUP
(RTP interleaved over TCP only), PLAY, GET_PARAMETER and TEARDOWN, then sends an H.264
Annex-B clip as RTP (RFC 6184: single NAL unit packets and FU-A) at its frame rate, looping.

Faults (`FakeCamera(fault=...)`):
  "broken-sdp"      DESCRIBE answers 200 with a body that is not SDP.
  "late-sps"        no sprop-parameter-sets in the SDP, and SPS/PPS stripped from the first
                    `late_s` seconds of frames: the first IDRs come without parameter sets.
  "ts-backwards"    after `late_s` seconds the RTP timestamp steps back by ten seconds.
  "silent"          answers PLAY, keeps the connection open, and sends nothing (a wedged camera).
  None              a well-behaved camera (SPS/PPS in band, no sprop).
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from pathlib import Path

NAL_IDR, NAL_SPS, NAL_PPS, NAL_AUD, NAL_SEI = 5, 7, 8, 9, 6
MAX_PAYLOAD = 1400


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex-B stream (start codes 00 00 01 or 00 00 00 01)."""
    starts = []
    i = 0
    while True:
        j = data.find(b"\x00\x00\x01", i)
        if j < 0:
            break
        starts.append(j + 3)
        i = j + 3
    nals = []
    for k, s in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else len(data)
        nal = data[s:end]
        while nal.endswith(b"\x00"):
            nal = nal[:-1]
        if nal:
            nals.append(nal)
    return nals


def access_units(nals: list[bytes]) -> list[list[bytes]]:
    """Groups NAL units into access units: a new one begins at a non-VCL NAL after a VCL one, or at
    a slice whose first_mb_in_slice is 0 (H.264 §7.4.1.2.3, single-slice streams are enough here)."""
    aus: list[list[bytes]] = []
    cur: list[bytes] = []
    seen_vcl = False
    for nal in nals:
        t = nal[0] & 0x1F
        vcl = 1 <= t <= 5
        first_mb_zero = vcl and len(nal) > 1 and nal[1] & 0x80
        if cur and seen_vcl and (not vcl or first_mb_zero):
            aus.append(cur)
            cur, seen_vcl = [], False
        cur.append(nal)
        seen_vcl = seen_vcl or vcl
    if cur:
        aus.append(cur)
    return aus


def rtp_packets(au: list[bytes], seq: int, ts: int, ssrc: int) -> tuple[list[bytes], int]:
    """RTP packets for one access unit (marker on the last), and the next sequence number."""
    payloads = []
    for nal in au:
        if len(nal) <= MAX_PAYLOAD:
            payloads.append(nal)
            continue
        hdr, body = nal[0], nal[1:]
        fu_ind = (hdr & 0xE0) | 28
        for off in range(0, len(body), MAX_PAYLOAD):
            chunk = body[off : off + MAX_PAYLOAD]
            start = 0x80 if off == 0 else 0
            end = 0x40 if off + MAX_PAYLOAD >= len(body) else 0
            payloads.append(bytes([fu_ind, start | end | (hdr & 0x1F)]) + chunk)
    out = []
    for i, p in enumerate(payloads):
        marker = 0x80 if i == len(payloads) - 1 else 0
        out.append(struct.pack(">BBHII", 0x80, marker | 96, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + p)
        seq += 1
    return out, seq


class FakeCamera:
    def __init__(self, clip: Path, fault: str | None = None, fps: int = 30, late_s: float = 2.0):
        self.aus = access_units(split_annexb(clip.read_bytes()))
        assert self.aus, f"no access units in {clip}"
        self.fault, self.fps, self.late_s = fault, fps, late_s
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self.stop = threading.Event()
        self.sessions = 0
        self.describes = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _sdp(self) -> bytes:
        if self.fault == "broken-sdp":
            return b"this is not an SDP\r\nm=garbage\r\n\x00\xff\xfe"
        return (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=fake camera\r\nt=0 0\r\n"
                b"m=video 0 RTP/AVP 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 H264/90000\r\n"
                b"a=fmtp:96 packetization-mode=1\r\na=control:track1\r\n")

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        playing = None
        try:
            conn.settimeout(0.05)
            while not self.stop.is_set():
                try:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                except socket.timeout:
                    pass
                while b"\r\n\r\n" in buf:
                    if buf.startswith(b"$"):  # interleaved RTCP from the client
                        if len(buf) < 4:
                            break
                        n = struct.unpack(">H", buf[2:4])[0]
                        buf = buf[4 + n :]
                        continue
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    lines = head.decode(errors="replace").split("\r\n")
                    method = lines[0].split(" ")[0]
                    cseq = next((l.split(":", 1)[1].strip() for l in lines if l.lower().startswith("cseq:")), "0")
                    hdrs, body = [f"CSeq: {cseq}"], b""
                    if method == "OPTIONS":
                        hdrs.append("Public: OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN")
                    elif method == "DESCRIBE":
                        self.describes += 1
                        body = self._sdp()
                        hdrs += ["Content-Type: application/sdp", f"Content-Base: {self.url}/"]
                    elif method == "SETUP":
                        hdrs += ["Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: 4711;timeout=60"]
                    elif method == "PLAY":
                        hdrs.append("Session: 4711")
                        playing = time.time()
                        self.sessions += 1
                    elif method == "TEARDOWN":
                        playing = None
                    if body:
                        hdrs.append(f"Content-Length: {len(body)}")
                    conn.sendall(("RTSP/1.0 200 OK\r\n" + "\r\n".join(hdrs) + "\r\n\r\n").encode() + body)
                if playing is not None and self.fault == "silent":
                    continue  # keep answering requests, never send media
                if playing is not None:
                    self._stream(conn, playing)
                    return
        except OSError:
            return
        finally:
            conn.close()

    def _stream(self, conn: socket.socket, t0: float) -> None:
        """Sends frames in real time until the client goes away or the camera stops."""
        seq, ssrc = random.randrange(1 << 16), random.randrange(1 << 32)
        ts0 = random.randrange(1 << 32)
        step = 90_000 // self.fps
        conn.settimeout(5)
        i = 0
        stepped_back = False
        while not self.stop.is_set():
            due = t0 + i / self.fps
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            elapsed = i / self.fps
            au = self.aus[i % len(self.aus)]
            if self.fault == "late-sps" and elapsed < self.late_s:
                au = [n for n in au if n[0] & 0x1F not in (NAL_SPS, NAL_PPS)]
            if self.fault == "ts-backwards" and elapsed >= self.late_s and not stepped_back:
                ts0 -= 10 * 90_000
                stepped_back = True
            pkts, seq = rtp_packets(au, seq, ts0 + i * step, ssrc)
            try:
                conn.sendall(b"".join(b"$\x00" + struct.pack(">H", len(p)) + p for p in pkts))
                # Drain whatever the client sends (keepalives, RTCP); answer GET_PARAMETER.
                conn.setblocking(False)
                try:
                    data = conn.recv(65536)
                    if data == b"":
                        return
                    for line in data.split(b"\r\n"):
                        if line.lower().startswith(b"cseq:"):
                            conn.setblocking(True)
                            conn.sendall(b"RTSP/1.0 200 OK\r\n" + line + b"\r\nSession: 4711\r\n\r\n")
                except BlockingIOError:
                    pass
                conn.setblocking(True)
                conn.settimeout(5)
            except OSError:
                return
            i += 1
