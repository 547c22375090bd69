// Low-latency mode: the chunked stream's samples decoded by WebCodecs' VideoDecoder and drawn
// to a canvas as they come out of the decoder. No media buffer at all; needs a secure context
// (https, or localhost).
//
// A fragment's frames (three of 100 ms at 30 fps) decode within a few ms of each other; drawn
// at once, all but the last would be overdrawn before the screen shows them (10 pictures a
// second). So decoded frames wait in a queue and each animation frame draws one: by default
// the two newest of a burst, on consecutive refreshes (20 a second, p50 ≈ 63 ms on loopback);
// with `?pace=all` every frame (30 a second, ≈ 80–88 ms, a refresh later per frame of the
// burst). A queue that overflows MAX_PENDING (a hidden tab gets no animation frames) drops its
// oldest frames.

import { parseFragment, parseInit, parsePrft } from './mp4.js';

const MAX_PENDING = 4;

export class WebCodecsPlayer {
  constructor(canvas, opts = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.opts = opts;
    this.decoder = null;
    this.info = null;
    this.needKey = true;
    this.frames = 0;
    this.dropped = 0;
    this.errors = [];
    this.lastCapture = null; // Unix ms of the picture on the canvas
    this.captures = new Map(); // timestamp (µs) -> capture Unix ms
    this.width = 0;
    this.height = 0;
    this.pending = []; // decoded frames not yet drawn, oldest first
    this.keep = opts.pace === 'all' ? MAX_PENDING : 2;
    this.raf = 0;
  }

  static supported() {
    return typeof window.VideoDecoder === 'function' && window.isSecureContext;
  }

  onInit(bytes) {
    const info = parseInit(bytes);
    this.newest = undefined; // a new connection may bring a new timeline (pinhole restarted)
    const same = this.info && this.info.codec === info.codec && eq(this.info.description, info.description);
    this.info = info;
    if (same && this.decoder && this.decoder.state === 'configured') return;
    this.configure();
  }

  configure() {
    if (this.decoder && this.decoder.state !== 'closed') {
      try { this.decoder.close(); } catch { /* already closed */ }
    }
    this.decoder = new VideoDecoder({
      output: (frame) => this.draw(frame),
      error: (e) => {
        this.errors.push(`decoder: ${e.message}`);
        this.needKey = true;
        this.decoder = null;
      },
    });
    this.decoder.configure({
      codec: this.info.codec,
      description: this.info.description,
      optimizeForLatency: true,
    });
    this.needKey = true;
  }

  onFragment(bytes) {
    if (!this.info) return;
    if (!this.decoder || this.decoder.state === 'closed') this.configure();
    const ts = this.info.timescale;
    const prft = parsePrft(bytes);
    let samples;
    try {
      samples = parseFragment(bytes);
    } catch (e) {
      this.errors.push(`fragment: ${e.message}`);
      this.needKey = true;
      return;
    }
    for (const s of samples) {
      if (this.needKey && !s.key) { this.dropped++; continue; }
      // A decoder that fell far behind (a slow device): skip to the next IDR instead of lagging.
      // (A new connection's first burst, up to a GOP, is decoded; only its last frame is drawn.)
      if (this.decoder.decodeQueueSize > 45 && !s.key) { this.needKey = true; this.dropped++; continue; }
      this.needKey = false;
      const timestamp = Math.round((s.cts * 1e6) / ts);
      this.newest = Math.max(this.newest ?? -Infinity, timestamp);
      if (prft) {
        this.captures.set(timestamp, prft.unixMs + ((s.dts - prft.mediaTime) * 1000) / ts);
        if (this.captures.size > 120) this.captures.delete(this.captures.keys().next().value);
      }
      try {
        this.decoder.decode(new EncodedVideoChunk({
          type: s.key ? 'key' : 'delta',
          timestamp,
          duration: Math.round((s.duration * 1e6) / ts),
          data: s.data,
        }));
      } catch (e) {
        this.errors.push(`decode: ${e.message}`);
        this.needKey = true;
      }
    }
  }

  draw(frame) {
    // A frame already superseded by more than a fragment (a burst after connecting): not drawn.
    if (this.newest !== undefined && frame.timestamp < this.newest - 150000) {
      frame.close();
      this.skipped = (this.skipped || 0) + 1;
      return;
    }
    this.pending.push(frame);
    while (this.pending.length > MAX_PENDING) {
      this.pending.shift().close();
      this.dropped++;
    }
    if (!this.raf) this.raf = requestAnimationFrame(() => this.present());
  }

  present() {
    this.raf = 0;
    // Latency first: of a burst, the two newest frames are shown on consecutive refreshes
    // (?pace=all shows every frame, one refresh each, about 30 ms later on average).
    while (this.pending.length > this.keep) {
      this.pending.shift().close();
      this.skipped = (this.skipped || 0) + 1; // by choice, not a loss: not counted as dropped
    }
    const frame = this.pending.shift();
    if (!frame) return;
    const w = frame.displayWidth, h = frame.displayHeight;
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.width = w;
    this.height = h;
    this.ctx.drawImage(frame, 0, 0, w, h);
    this.frames++;
    const c = this.captures.get(frame.timestamp);
    if (c !== undefined) this.lastCapture = c;
    frame.close();
    this.opts.onFrame?.();
    if (this.pending.length) this.raf = requestAnimationFrame(() => this.present());
  }

  destroy() {
    if (this.raf) cancelAnimationFrame(this.raf);
    this.raf = 0;
    for (const f of this.pending) f.close();
    this.pending = [];
    if (this.decoder && this.decoder.state !== 'closed') {
      try { this.decoder.close(); } catch { /* closed */ }
    }
    this.decoder = null;
  }
}

function eq(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
