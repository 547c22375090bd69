// The chunked CMAF stream: `fetch` of /api/video/cmaf read as a stream, split into records by
// their u32 big-endian length prefix. The first record of each connection is the init segment;
// later ones are fragments or in-band init segments; zero-length records are heartbeats.
//
// A connection that drops (or stays silent for longer than a few heartbeats) is reopened with
// a backoff capped at 1 s; every new connection starts at the server's latest IDR, so the player
// resumes without a reload. When a GET stream does not deliver its first record within
// START_TIMEOUT_MS, the next attempt uses POST (tunnels that hold back GET streams).

const START_TIMEOUT_MS = 3500;
const SILENCE_MS = 10000; // the server sends a heartbeat after 3 s of silence
const MAX_RECORD = 64 << 20;
const MAX_BACKOFF_MS = 1000;

export class CmafStream {
  // handlers: {onConnect(n), onRecord(Uint8Array, isFirst), onBytes(n), onDisconnect(err)}
  constructor(url, handlers) {
    this.url = url;
    this.h = handlers;
    this.method = 'GET';
    this.stopped = false;
    this.attempt = 0;
    this.connections = 0;
    this.ctrl = null;
  }

  start() {
    this.stopped = false;
    this.loop();
  }

  stop() {
    this.stopped = true;
    if (this.ctrl) this.ctrl.abort();
  }

  async loop() {
    while (!this.stopped) {
      let started = false;
      try {
        started = await this.once();
      } catch (e) {
        if (this.stopped) return;
        this.h.onDisconnect?.(e);
      }
      if (this.stopped) return;
      if (started) this.attempt = 0;
      else this.attempt++;
      // 250, 500, then every 1000 ms (±20 %): a camera that comes back (a restart, an update)
      // is picked up within about a second; a retry is one small request.
      const backoff = started ? 250 : Math.min(MAX_BACKOFF_MS, 250 * 2 ** Math.min(this.attempt, 2));
      await new Promise((r) => setTimeout(r, backoff * (0.8 + 0.4 * Math.random())));
    }
  }

  // One connection; resolves true when it delivered at least one record.
  async once() {
    const ctrl = new AbortController();
    this.ctrl = ctrl;
    let gotRecord = false;
    let lastData = performance.now();
    const method = this.method;
    const watchdog = setInterval(() => {
      const quiet = performance.now() - lastData;
      if (!gotRecord && quiet > START_TIMEOUT_MS) {
        // GET did not start: a tunnel may be holding it back; try the other method next.
        this.method = method === 'GET' ? 'POST' : 'GET';
        ctrl.abort(new Error(`${method} stream did not start`));
      } else if (quiet > SILENCE_MS) {
        ctrl.abort(new Error('stream silent'));
      }
    }, 500);
    try {
      const resp = await fetch(this.url, { method, cache: 'no-store', signal: ctrl.signal });
      if (!resp.ok || !resp.body) throw new Error(`HTTP ${resp.status}`);
      this.connections++;
      this.h.onConnect?.(this.connections, method);
      const reader = resp.body.getReader();
      let buf = new Uint8Array(0);
      let first = true;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        lastData = performance.now();
        this.h.onBytes?.(value.length);
        buf = buf.length ? concat(buf, value) : value;
        let off = 0;
        while (buf.length - off >= 4) {
          const len = ((buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]) >>> 0;
          if (len > MAX_RECORD) throw new Error(`record of ${len} bytes`);
          if (buf.length - off - 4 < len) break;
          const rec = buf.subarray(off + 4, off + 4 + len);
          off += 4 + len;
          if (len === 0) continue; // heartbeat
          gotRecord = true;
          this.h.onRecord(rec, first);
          first = false;
        }
        buf = off ? buf.slice(off) : buf;
      }
      throw new Error('stream ended');
    } catch (e) {
      if (this.stopped) return gotRecord;
      this.h.onDisconnect?.(e);
      return gotRecord;
    } finally {
      clearInterval(watchdog);
      ctrl.abort();
    }
  }
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}
