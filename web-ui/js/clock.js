// The offset between the device's wall clock and this viewer's, estimated as NTP does: a few
// round trips to /api/time, and the sample with the smallest round-trip time wins (its
// midpoint is the least uncertain). offsetMs = server - local; serverNow() = Date.now() + offset.

export class Clock {
  constructor(url = '/api/time') {
    this.url = url;
    this.offsetMs = 0;
    this.rttMs = null;
    this.valid = false;
    this.samples = [];
  }

  async sample() {
    const t0 = performance.timeOrigin + performance.now();
    const r = await fetch(this.url, { cache: 'no-store' });
    const j = await r.json();
    const t1 = performance.timeOrigin + performance.now();
    if (!Number.isFinite(j.unix_ms)) throw new Error('bad /api/time');
    return { rtt: t1 - t0, offset: j.unix_ms - (t0 + t1) / 2 };
  }

  // n round trips; keeps the best of the last 16 samples (old ones age out so a stepped clock
  // is followed).
  async measure(n = 5) {
    for (let i = 0; i < n; i++) {
      try {
        this.samples.push(await this.sample());
      } catch {
        // the server is away: keep the last estimate
      }
    }
    this.samples = this.samples.slice(-16);
    if (!this.samples.length) return;
    const best = this.samples.reduce((a, b) => (b.rtt < a.rtt ? b : a));
    // performance.timeOrigin + now() is the local clock; Date.now() may differ by a ms or so.
    this.offsetMs = best.offset + (performance.timeOrigin + performance.now() - Date.now());
    this.rttMs = best.rtt;
    this.valid = true;
  }

  serverNow() {
    return Date.now() + this.offsetMs;
  }

  keepMeasuring(everyMs = 30000) {
    this.measure();
    this.timer = setInterval(() => this.measure(3), everyMs);
  }
}
