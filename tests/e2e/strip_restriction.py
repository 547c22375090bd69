"""A filter between an encoder and pinhole's `exec:` source: Annex-B H.264 on stdin, the same on
stdout with every SPS's VUI `bitstream_restriction` removed (cmaf.strip_bitstream_restriction) —
the stream a hardware encoder or IP camera that omits the restriction sends. Everything else is
passed through byte for byte. Used by test_sps_rewrite.py."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cmaf import NAL_SPS, annexb_nals, strip_bitstream_restriction  # noqa: E402


def main() -> int:
    inp, out = sys.stdin.buffer.raw, sys.stdout.buffer
    pending = b""
    stripped = 0

    def emit(nals: list[bytes]) -> None:
        nonlocal stripped
        for nal in nals:
            if nal and nal[0] & 0x1F == NAL_SPS:
                new = strip_bitstream_restriction(nal)
                stripped += new != nal
                nal = new
            out.write(b"\x00\x00\x00\x01" + nal)
        out.flush()

    while True:
        chunk = inp.read(65536)
        if not chunk:
            break
        nals, pending = annexb_nals(pending + chunk)
        # The last NAL before `pending` is complete once the next start code arrived.
        emit(nals)
    nals, rest = annexb_nals(pending)
    emit(nals + ([rest[3:].lstrip(b"\x00") if rest.startswith(b"\x00\x00\x01") else rest] if rest else []))
    print(f"strip_restriction: {stripped} SPS stripped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
