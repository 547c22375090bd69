"""An independent LL-HLS reader for pinhole's /hls/ endpoints (stdlib only).

It knows nothing of pinhole's code: it parses playlist text per RFC 8216bis (attribute lists,
EXT-X-PART, EXT-X-PRELOAD-HINT, ...) and checks what any client relies on. `Follower` follows
the live playlist the way a low-latency client does (a blocking reload for the part after the
newest one it has seen), downloads every part and every completed segment, and checks the
invariants on every reload; it raises AssertionError naming the reload and the line.
"""

from __future__ import annotations

import http.client
import re
import time
from dataclasses import dataclass, field

from cmaf import parse_fragment, parse_init

TIMESCALE = 90_000
# Printed durations have five decimals; allow that much rounding per part.
EPS = 1e-5 + 1e-9


def parse_attrs(s: str) -> dict[str, str]:
    """An attribute list (RFC 8216bis 4.2): KEY=value pairs, quoted strings may hold commas."""
    out = {}
    for m in re.finditer(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)(?:,|$)', s):
        out[m.group(1)] = m.group(2).strip('"')
    return out


@dataclass
class Part:
    msn: int
    index: int
    duration: float
    uri: str
    independent: bool


@dataclass
class Segment:
    msn: int
    parts: list[Part] = field(default_factory=list)
    duration: float | None = None  # EXTINF, once complete
    uri: str | None = None
    pdt: str | None = None
    discontinuity: bool = False
    map_uri: str | None = None

    @property
    def complete(self) -> bool:
        return self.uri is not None


@dataclass
class Playlist:
    text: str
    version: int = 0
    target_duration: int = 0
    part_target: float = 0.0
    server_control: dict = field(default_factory=dict)
    media_sequence: int = 0
    discontinuity_sequence: int = 0
    independent_segments: bool = False
    segments: list[Segment] = field(default_factory=list)
    preload_hint: dict | None = None

    @property
    def last_part(self) -> tuple[int, int] | None:
        for s in reversed(self.segments):
            if s.parts:
                return (s.msn, s.parts[-1].index)
        return None

    def part(self, msn: int, index: int) -> Part | None:
        for s in self.segments:
            if s.msn == msn:
                return next((p for p in s.parts if p.index == index), None)
        return None


def parse_playlist(text: str) -> Playlist:
    """Parses a media playlist, asserting the structure (line numbers in messages)."""
    lines = text.split("\n")
    assert lines[0] == "#EXTM3U", f"line 1: {lines[0]!r}, expected #EXTM3U"
    assert text.endswith("\n"), "no final newline"
    pl = Playlist(text)
    msn = None
    cur: Segment | None = None
    pending = dict(discontinuity=False, map_uri=None, pdt=None)
    extinf = None
    for n, line in enumerate(lines[1:], start=2):
        where = f"line {n} ({line!r})"
        if not line:
            continue
        tag, _, value = line.partition(":")
        if tag == "#EXT-X-VERSION":
            pl.version = int(value)
        elif tag == "#EXT-X-TARGETDURATION":
            pl.target_duration = int(value)
        elif tag == "#EXT-X-PART-INF":
            pl.part_target = float(parse_attrs(value)["PART-TARGET"])
        elif tag == "#EXT-X-SERVER-CONTROL":
            pl.server_control = parse_attrs(value)
        elif tag == "#EXT-X-MEDIA-SEQUENCE":
            pl.media_sequence = int(value)
            msn = pl.media_sequence
        elif tag == "#EXT-X-DISCONTINUITY-SEQUENCE":
            pl.discontinuity_sequence = int(value)
        elif tag == "#EXT-X-INDEPENDENT-SEGMENTS":
            pl.independent_segments = True
        elif tag == "#EXT-X-DISCONTINUITY":
            pending["discontinuity"] = True
        elif tag == "#EXT-X-MAP":
            pending["map_uri"] = parse_attrs(value)["URI"]
        elif tag == "#EXT-X-PROGRAM-DATE-TIME":
            pending["pdt"] = value
        elif tag in ("#EXT-X-PART", "#EXTINF") or not line.startswith("#"):
            assert msn is not None, f"{where}: media before EXT-X-MEDIA-SEQUENCE"
            if cur is None:
                cur = Segment(msn, **pending)
                pending = dict(discontinuity=False, map_uri=None, pdt=None)
            if tag == "#EXT-X-PART":
                a = parse_attrs(value)
                cur.parts.append(Part(msn, len(cur.parts), float(a["DURATION"]), a["URI"],
                                      a.get("INDEPENDENT") == "YES"))
            elif tag == "#EXTINF":
                extinf = float(value.split(",")[0])
            else:
                assert extinf is not None, f"{where}: a URI without EXTINF"
                cur.duration, cur.uri, extinf = extinf, line, None
                pl.segments.append(cur)
                cur, msn = None, msn + 1
        elif tag == "#EXT-X-PRELOAD-HINT":
            pl.preload_hint = parse_attrs(value)
            assert n == len(lines) - 1, f"{where}: the preload hint is not the last line"
        else:
            assert line.startswith("#EXT"), f"{where}: not a tag"
    assert extinf is None, "EXTINF at the end without a URI"
    if cur is not None:
        pl.segments.append(cur)
    return pl


def check_playlist(pl: Playlist, where: str = "") -> None:
    """The rules every playlist must follow on its own (RFC 8216bis)."""
    assert pl.version >= 6, f"{where}: EXT-X-VERSION {pl.version} is below 6 (EXT-X-MAP needs 6)"
    assert pl.target_duration >= 1, f"{where}: TARGETDURATION {pl.target_duration}"
    assert pl.part_target > 0, f"{where}: no EXT-X-PART-INF"
    sc = pl.server_control
    assert sc.get("CAN-BLOCK-RELOAD") == "YES", f"{where}: SERVER-CONTROL {sc}"
    assert float(sc["PART-HOLD-BACK"]) >= 3 * pl.part_target - EPS, f"{where}: PART-HOLD-BACK {sc}"
    assert float(sc.get("HOLD-BACK", 3 * pl.target_duration)) >= 3 * pl.target_duration - EPS, \
        f"{where}: HOLD-BACK {sc}"
    assert "CAN-SKIP-UNTIL" not in sc, f"{where}: delta updates advertised but not implemented"
    assert pl.independent_segments
    assert pl.segments, f"{where}: no segments"
    assert pl.segments[0].map_uri, f"{where}: the first segment has no EXT-X-MAP"
    for i, s in enumerate(pl.segments):
        w = f"{where} segment {s.msn}"
        assert s.msn == pl.media_sequence + i
        assert s.pdt and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", s.pdt), f"{w}: PDT {s.pdt!r}"
        if s.complete:
            assert s.uri == f"seg-{s.msn}.m4s", f"{w}: URI {s.uri}"
            assert 0 < s.duration <= pl.target_duration, \
                f"{w}: EXTINF {s.duration} > TARGETDURATION {pl.target_duration}"
            if s.parts:
                total = sum(p.duration for p in s.parts)
                assert abs(total - s.duration) <= EPS * (len(s.parts) + 1), \
                    f"{w}: parts add up to {total}, EXTINF says {s.duration}"
        else:
            assert i == len(pl.segments) - 1, f"{w}: only the last segment may be incomplete"
            assert s.parts, f"{w}: an incomplete segment without parts"
        for p in s.parts:
            assert p.uri == f"part-{s.msn}-{p.index}.m4s", f"{w}: part URI {p.uri}"
            assert 0 < p.duration <= pl.part_target + EPS / 2, \
                f"{w}: part {p.index} lasts {p.duration} > PART-TARGET {pl.part_target}"
            assert p.independent == (p.index == 0), f"{w}: part {p.index} INDEPENDENT={p.independent}"
    last = pl.last_part
    assert last is not None, f"{where}: no parts listed"
    hint = pl.preload_hint
    assert hint and hint.get("TYPE") == "PART", f"{where}: preload hint {hint}"
    assert hint["URI"] == f"part-{last[0]}-{last[1] + 1}.m4s", \
        f"{where}: preload hint {hint['URI']} is not the part after the newest {last}"
    # A plain client that ignores the LL tags has at least three target durations to play
    # (once the server has run that long: callers check after warm-up).
    plain = sum(s.duration for s in pl.segments if s.complete)
    assert plain >= 3 * pl.target_duration - EPS, \
        f"{where}: only {plain:.3f} s of complete segments for TARGETDURATION {pl.target_duration}"


class Http:
    """One keep-alive connection; `get` returns (status, headers, body, seconds taken, t_done)."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def get(self, path: str) -> tuple[int, dict, bytes, float, float]:
        t0 = time.time()
        for attempt in (0, 1):
            try:
                self.conn.request("GET", path)
                r = self.conn.getresponse()
                body = r.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                if attempt:
                    raise
        t1 = time.time()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body, t1 - t0, t1

    def close(self) -> None:
        self.conn.close()


def fetch(h: Http, path: str, ctype: str | None = None) -> bytes:
    code, headers, body, _, _ = h.get(path)
    assert code == 200, f"GET {path} answered {code}: {body[:200]!r}"
    if ctype:
        assert headers.get("content-type") == ctype, f"GET {path}: Content-Type {headers.get('content-type')}"
    return body


@dataclass
class FollowReport:
    reloads: int = 0
    parts_checked: int = 0
    segments_checked: int = 0
    max_response_s: float = 0.0
    inits: dict = field(default_factory=dict)
    segments: dict = field(default_factory=dict)  # msn -> bytes
    target_duration: int = 0
    part_target: float = 0.0


class Follower:
    """Follows /hls/stream.m3u8 like a low-latency client for `seconds`, checking every reload."""

    def __init__(self, port: int):
        self.h = Http(port)
        self.port = port
        self.parts: dict[tuple[int, int], bytes] = {}
        self.report = FollowReport()

    def _check_part_bytes(self, pl: Playlist, p: Part, body: bytes) -> None:
        init = self.report.inits[self._map_for(pl, p.msn)]
        frag = parse_fragment(body, init)
        d = frag.duration / TIMESCALE
        assert abs(d - p.duration) <= EPS, f"part {p.uri}: trun says {d} s, playlist {p.duration}"
        assert frag.starts_with_sync == p.independent, f"part {p.uri}: sync {frag.starts_with_sync}"

    def _map_for(self, pl: Playlist, msn: int) -> str:
        uri = None
        for s in pl.segments:
            if s.map_uri:
                uri = s.map_uri
            if s.msn == msn:
                return uri
        raise AssertionError(f"segment {msn} not in the playlist")

    def follow(self, seconds: float, warmup_s: float = 0.0) -> FollowReport:
        rep = self.report
        code, _, body, _, _ = self.h.get("/hls/stream.m3u8")
        assert code == 200, f"stream.m3u8 answered {code}: {body[:200]!r}"
        pl = parse_playlist(body.decode())
        t_end = time.time() + seconds
        t_strict = time.time() + warmup_s
        prev: Playlist | None = None
        while True:
            where = f"reload {rep.reloads}"
            check_playlist_or_warmup(pl, where, strict=time.time() >= t_strict)
            if prev is not None:
                self._check_progress(prev, pl, where)
            else:
                rep.target_duration, rep.part_target = pl.target_duration, pl.part_target
            for s in pl.segments:
                if s.map_uri and s.map_uri not in rep.inits:
                    rep.inits[s.map_uri] = parse_init(fetch(self.h, f"/hls/{s.map_uri}", "video/mp4"))
            for s in pl.segments:
                for p in s.parts:
                    if (s.msn, p.index) not in self.parts:
                        b = fetch(self.h, f"/hls/{p.uri}")
                        self._check_part_bytes(pl, p, b)
                        self.parts[(s.msn, p.index)] = b
                        rep.parts_checked += 1
                if s.complete and s.msn not in rep.segments and s.parts:
                    seg = fetch(self.h, f"/hls/{s.uri}")
                    mine = [self.parts.get((s.msn, i)) for i in range(len(s.parts))]
                    if all(m is not None for m in mine):
                        assert seg == b"".join(mine), \
                            f"segment {s.msn}: {len(seg)} bytes differ from its {len(mine)} parts concatenated"
                        rep.segments_checked += 1
                    rep.segments[s.msn] = seg
            if time.time() >= t_end:
                break
            m, i = pl.last_part
            q = f"_HLS_msn={m}&_HLS_part={i + 1}"
            code, headers, body, took, _ = self.h.get(f"/hls/stream.m3u8?{q}")
            assert code == 200, f"{where}: blocking reload {q} answered {code}: {body[:200]!r}"
            assert headers.get("content-type") == "application/vnd.apple.mpegurl"
            rep.max_response_s = max(rep.max_response_s, took)
            prev, pl = pl, parse_playlist(body.decode())
            got = pl.last_part
            assert got is not None and (got[0] > m or (got[0] == m and got[1] >= i + 1)), \
                f"{where}: asked {q}, answered with the newest part {got}: answered too early"
            rep.reloads += 1
        self.h.close()
        return rep

    def _check_progress(self, prev: Playlist, pl: Playlist, where: str) -> None:
        assert pl.target_duration == prev.target_duration, \
            f"{where}: TARGETDURATION changed {prev.target_duration} -> {pl.target_duration}"
        assert pl.part_target == prev.part_target, f"{where}: PART-TARGET changed"
        assert pl.media_sequence >= prev.media_sequence, f"{where}: MEDIA-SEQUENCE went back"
        assert pl.discontinuity_sequence >= prev.discontinuity_sequence
        assert pl.last_part > prev.last_part, f"{where}: newest part {pl.last_part} after {prev.last_part}"
        # The part the previous hint named exists now, or its segment ended just before it.
        pm, pi = prev.last_part
        if pl.part(pm, pi + 1) is None:
            ended = next((s for s in pl.segments if s.msn == pm), None)
            assert ended is None or (ended.complete and ended.parts and ended.parts[-1].index == pi), \
                f"{where}: hinted part {pm}.{pi + 1} neither exists nor did segment {pm} end at {pi}"
            assert pl.part(pm + 1, 0) is not None, f"{where}: after segment {pm} no part {pm + 1}.0"
        # What was listed does not change.
        old = {s.msn: s for s in prev.segments}
        for s in pl.segments:
            o = old.get(s.msn)
            if o is None:
                continue
            if o.complete:
                assert s.complete and s.duration == o.duration, f"{where}: segment {s.msn} changed"
            for p in s.parts:
                q = o.parts[p.index] if p.index < len(o.parts) else None
                if q is not None:
                    assert (q.duration, q.independent) == (p.duration, p.independent), \
                        f"{where}: part {s.msn}.{p.index} changed"
            assert s.pdt == o.pdt, f"{where}: PDT of segment {s.msn} changed"


def check_playlist_or_warmup(pl: Playlist, where: str, strict: bool) -> None:
    """check_playlist, except the three-target-durations rule while the server warms up."""
    try:
        check_playlist(pl, where)
    except AssertionError as e:
        if strict or "complete segments for TARGETDURATION" not in str(e):
            raise
