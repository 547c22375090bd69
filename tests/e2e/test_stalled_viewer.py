"""A viewer that stops reading must cost no more than its bounded queue, must not disturb the
others, and must be moved forward to the next IDR (and counted) rather than fall ever behind."""

from __future__ import annotations

import threading
import time

from cmaf import CmafClient, StreamEnded, check_fragments, check_live, parse_stream, quick_prft_time
from conftest import looped_exec

# Below limits::WRITE_STALL_TIMEOUT (20 s), after which a client that reads nothing is closed
# (issue 22; tests/e2e/test_hardening.py shows that).
STALL_S = 17.0
RSS_LIMIT_KB = 60 * 1024
# The hub's ring legitimately fills for its first ~12 s of media (~12 MB at 8 Mbit/s; pinhole
# has run for a few seconds when the stall begins); after that, and once the stalled viewer's
# queue is full, RSS must be flat.
RSS_FLAT_AFTER_S = 8.0
RSS_GROWTH_KB = 4 * 1024


def test_stalled_viewer_is_skipped_to_the_next_idr_and_memory_stays_bounded(pinhole, busy_clip):
    """An ~8 Mbit/s 720p30 source (testsrc's clean picture stays near 0.6 Mbit/s whatever its
    bitrate cap, which the kernel's socket buffers alone would absorb for half a minute)."""
    ph = pinhole(looped_exec(busy_clip))
    ph.wait_video()
    rate = 0
    for _ in range(20):
        time.sleep(0.25)
        rate = ph.status()["video"]["bitrate_bps"] or 0
        if rate > 5e6:
            break
    assert rate > 5e6, f"the source runs at {rate} bit/s; this test needs ~8 Mbit/s to overflow a queue"

    # The stalled viewer: a small receive buffer, the request sent, nothing read.
    stalled = CmafClient(ph.port, rcvbuf=4096, timeout=15)

    # A normal viewer reads in a thread for the whole stall.
    reader = CmafClient(ph.port)
    reader.check_headers()
    records, errors = [], []
    stop = threading.Event()

    def read():
        try:
            while not stop.is_set():
                records.append(reader.read_record())
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    rss: list[tuple[float, int]] = []
    t0 = time.time()
    while time.time() - t0 < STALL_S:
        assert ph.alive(), f"pinhole died; log:\n{ph.log_tail()}"
        rss.append((time.time() - t0, ph.rss_kb()))
        time.sleep(0.5)
    viewers_during = ph.status()["viewers"]
    stop.set()
    thread.join(10)
    reader.close()
    assert not errors, f"the reading viewer failed during the stall: {errors[0]!r}"
    assert viewers_during == 2, f"status.viewers = {viewers_during} with one reading and one stalled viewer"

    # The reading viewer saw no change: continuous, live.
    st = parse_stream(records)
    assert len(st.inits) == 1
    check_fragments(st.fragments, st.init, 100)
    check_live(st.fragments)

    # Memory: bounded, and flat once the stalled viewer's queue is full.
    peak = max(kb for _, kb in rss)
    mid = max(kb for t, kb in rss if RSS_FLAT_AFTER_S <= t <= RSS_FLAT_AFTER_S + 5)
    late = max(kb for t, kb in rss if t >= STALL_S - 4)
    series = [kb // 1024 for _, kb in rss]
    assert peak < RSS_LIMIT_KB, f"VmRSS peaked at {peak // 1024} MB (limit {RSS_LIMIT_KB // 1024} MB): {series}"
    assert late - mid < RSS_GROWTH_KB, \
        f"VmRSS grew {(late - mid) // 1024} MB from {RSS_FLAT_AFTER_S:.0f} s to the end of the stall " \
        f"(MB, every 0.5 s): {series}"

    # The stalled viewer reads again: after what was buffered, a forward jump onto an IDR, then live.
    stalled.check_headers()

    def caught_up(recs):
        t = quick_prft_time(recs[-1].payload)
        return t is not None and recs[-1].t_recv - t < 0.5 and len(recs) > 20

    try:
        recs = stalled.read_for(20, until=caught_up)
        recs += stalled.read_for(1.5)
    except StreamEnded as e:
        raise AssertionError(f"the server ended the stalled viewer's stream instead of skipping it forward: {e}")
    finally:
        stalled.close()
    st2 = parse_stream(recs)
    frags = st2.fragments
    last = frags[-1]
    assert last.t_recv - last.prft.ntp_unix < 1.0, \
        f"the stalled viewer is still {last.t_recv - last.prft.ntp_unix:.1f} s behind live after reading again"
    assert frags[0].starts_with_sync, "the stalled viewer's first fragment does not start with an IDR"
    jumps = []
    run_start = 0
    for i in range(1, len(frags)):
        prev, cur = frags[i - 1], frags[i]
        if cur.tfdt != prev.end:
            assert cur.tfdt > prev.end, f"tfdt went backwards: {prev.end} -> {cur.tfdt} at fragment {i}"
            assert cur.starts_with_sync, \
                f"skip from tfdt {prev.end} to {cur.tfdt} lands on a fragment that does not start with an IDR"
            assert cur.sequence > prev.sequence, f"sequence {prev.sequence} -> {cur.sequence} across a skip"
            jumps.append((prev.end, cur.tfdt))
            check_fragments(frags[run_start:i], st2.inits[frags[run_start].generation], 100)
            run_start = i
    check_fragments(frags[run_start:], st2.inits[frags[run_start].generation], 100)
    assert jumps, f"no forward skip in {len(frags)} fragments read after a {STALL_S:.0f} s stall"
    status = ph.status()
    assert status["viewer_skips"] >= 1, f"viewer_skips = {status['viewer_skips']} after a skip"
    assert ph.metrics()["pinhole_viewer_skips_total"] >= 1
