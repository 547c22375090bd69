// The device's health from /api/status: "camera offline" when the source is not running, and
// "pinhole unreachable" when the device does not answer at all.

export class StatusPoller {
  constructor(onChange, url = '/api/status', everyMs = 2000) {
    this.onChange = onChange;
    this.url = url;
    this.everyMs = everyMs;
    this.last = null;
  }

  start() {
    const tick = async () => {
      let s;
      try {
        const ctrl = new AbortController();
        const t = setTimeout(() => ctrl.abort(), 3000);
        const r = await fetch(this.url, { cache: 'no-store', signal: ctrl.signal });
        clearTimeout(t);
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        const j = await r.json();
        const state = j.source && j.source.state;
        s = state === 'running'
          ? { online: true, status: j }
          : {
            online: false,
            status: j,
            message: `Camera offline (${state || 'unknown'}${j.source && j.source.last_error ? `: ${j.source.last_error}` : ''}) — retrying…`,
          };
      } catch {
        s = { online: false, message: 'pinhole is unreachable — retrying…' };
      }
      this.last = s;
      this.onChange(s);
      this.timer = setTimeout(tick, this.everyMs);
    };
    tick();
  }
}
