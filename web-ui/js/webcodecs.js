// Low-latency mode: the chunked stream's samples decoded by WebCodecs' VideoDecoder and drawn
// to a canvas the moment each frame comes out of the decoder. No media buffer at all; needs a
// secure context (https, or localhost).

import { parseFragment, parseInit, parsePrft } from './mp4.js';

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
  }

  destroy() {
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
