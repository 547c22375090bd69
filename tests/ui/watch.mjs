#!/usr/bin/env node
// Opens a page in headless Chromium and reports what the viewer saw, as JSON on stdout: pinhole's
// own UI (tests/e2e/test_ui.py, bench/latency) or any page with a <video> (the naive baseline).
//
//   node tests/ui/watch.mjs --url 'http://127.0.0.1:8080/?mode=chunked' --seconds 20 \
//        [--no-mse] [--screenshot out.png] [--timeline-ms 500] [--warmup 5]
//
// The sampler is injected before the page's own scripts. It reads testsrc's time band (48 cells
// across the top height/24 rows, rounded down to even; cell i white when bit 47-i of the
// capture Unix ms is 1 — docs/time.md) from the pixels actually displayed: every frame the
// <video> presents (requestVideoFrameCallback, at its expected display time) or, for the
// WebCodecs canvas, every animation frame whose band changed. Latency = display time − capture
// time; both are this machine's clock, as pinhole runs on the same machine.
//
// --hold-get holds every GET of /api/video/cmaf unanswered, as a tunnel that buffers GET
// streams does (cloudflared #1449); POST goes through.
// --no-mse deletes window.MediaSource, ManagedMediaSource and WebKitMediaSource before the page
// runs (compatibility mode). Timeline entries every --timeline-ms: the player's state
// (window.pinhole) and the sampler's counters. The report ends with the mean and standard
// deviation of the luma of the frame on screen (a black frame has both near 0).
//
// Exit 0 even when playback failed (the caller judges the report); 2 on bad arguments or when
// the browser cannot start. Runs in the node_modules of tests/hls (playwright-core).

import { launch, readTimeBand } from '../hls/browser.mjs';

function parseArgs(argv) {
  const o = { seconds: 20, chromium: '/usr/bin/chromium', noMse: false, screenshot: null, timelineMs: 500 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    if (k === '--url') { o.url = v; i++; }
    else if (k === '--seconds') { o.seconds = Number(v); i++; }
    else if (k === '--chromium') { o.chromium = v; i++; }
    else if (k === '--screenshot') { o.screenshot = v; i++; }
    else if (k === '--timeline-ms') { o.timelineMs = Number(v); i++; }
    else if (k === '--no-mse') { o.noMse = true; }
    else if (k === '--hold-get') { o.holdGet = true; }
    else { throw new Error(`unknown argument ${k}`); }
  }
  if (!o.url) throw new Error('--url is required');
  if (!(o.seconds > 0)) throw new Error('--seconds must be > 0');
  return o;
}

// Runs in the page before its scripts.
function sampler(noMse) {
  if (noMse) {
    delete window.MediaSource;
    delete window.ManagedMediaSource;
    delete window.WebKitMediaSource;
  }
  const W = { samples: [], firstFrameMs: null, frames: 0, errors: [] };
  window.__watch = W;
  // readTimeBand is defined beside this function in the injected script (tests/hls/browser.mjs)
  const scratch = document.createElement('canvas').getContext('2d', { willReadFrequently: true });
  const band = (src, w, h) => readTimeBand(scratch, src, w, h);
  function record(capture, shownMs, now) {
    if (W.firstFrameMs === null) W.firstFrameMs = now;
    W.frames++;
    // a band that is not a time near now (a black or partial frame) is not a sample
    if (capture === null || Math.abs(shownMs - capture) > 60000) return;
    W.samples.push({ t_ms: Math.round(now), latency_ms: shownMs - capture });
  }
  function onVideoFrame(video) {
    const cb = (now, meta) => {
      try {
        const shown = performance.timeOrigin + (meta && meta.expectedDisplayTime ? meta.expectedDisplayTime : now);
        record(band(video, video.videoWidth, video.videoHeight), shown, now);
      } catch (e) {
        if (W.errors.length < 20) W.errors.push(`band: ${e.message}`);
      }
      video.requestVideoFrameCallback(cb);
    };
    video.requestVideoFrameCallback(cb);
  }
  let lastCanvasValue = null;
  function onAnimationFrame(now) {
    const c = document.querySelector('canvas#canvas');
    if (c && !c.hidden && c.width > 0) {
      try {
        const v = band(c, c.width, c.height);
        if (v !== null && v !== lastCanvasValue) {
          lastCanvasValue = v;
          record(v, performance.timeOrigin + now, now);
        }
      } catch (e) {
        if (W.errors.length < 20) W.errors.push(`band: ${e.message}`);
      }
    }
    requestAnimationFrame(onAnimationFrame);
  }
  document.addEventListener('DOMContentLoaded', () => {
    const video = document.querySelector('video');
    if (video) onVideoFrame(video);
    requestAnimationFrame(onAnimationFrame);
  });
  W.luma = () => {
    const c = document.querySelector('canvas#canvas');
    const v = document.querySelector('video');
    const useCanvas = c && !c.hidden && c.width > 0;
    const src = useCanvas ? c : v;
    const w = useCanvas ? c.width : v.videoWidth, h = useCanvas ? c.height : v.videoHeight;
    if (!w || !h) return { mean: 0, std: 0, w, h };
    const s = document.createElement('canvas');
    s.width = 160; s.height = 90;
    const x = s.getContext('2d', { willReadFrequently: true });
    // below the time band: the picture itself
    x.drawImage(src, 0, Math.floor(h / 12), w, h - Math.floor(h / 12), 0, 0, 160, 90);
    const d = x.getImageData(0, 0, 160, 90).data;
    let sum = 0, sq = 0;
    const n = d.length / 4;
    for (let i = 0; i < d.length; i += 4) {
      const l = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
      sum += l; sq += l * l;
    }
    const mean = sum / n;
    return { mean, std: Math.sqrt(Math.max(0, sq / n - mean * mean)), w, h };
  };
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`watch.mjs: ${e.message}\n`);
    process.exit(2);
  }
  let browser;
  try {
    browser = await launch(opts.chromium, { viewport: { width: 1280, height: 800 } });
  } catch (e) {
    process.stderr.write(`watch.mjs: cannot start ${opts.chromium}: ${e.message}\n`);
    process.exit(2);
  }
  const { context } = browser;
  const consoleLines = [];
  try {
    const page = context.pages()[0] || await context.newPage();
    page.on('console', (m) => { if (consoleLines.length < 500) consoleLines.push(`${m.type()}: ${m.text()}`); });
    page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
    let navigations = 0;
    page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations++; });
    await page.addInitScript({ content: `${readTimeBand}\n(${sampler})(${JSON.stringify(!!opts.noMse)});` });
    let heldGets = 0;
    if (opts.holdGet) {
      await page.route('**/api/video/cmaf', (route) => {
        if (route.request().method() === 'GET') { heldGets++; return; } // never answered
        route.continue();
      });
    }
    await page.goto(opts.url);
    const timeline = [];
    const t0 = Date.now();
    while (Date.now() - t0 < opts.seconds * 1000) {
      await page.waitForTimeout(opts.timelineMs);
      const e = await page.evaluate(() => {
        const p = window.pinhole;
        const v = document.querySelector('video');
        const W = window.__watch;
        return {
          t_ms: Math.round(performance.now()),
          wall_ms: Date.now(),
          frames: W.frames,
          samples: W.samples.length,
          current_time: v ? v.currentTime : null,
          // what is on screen: the <video>'s decoded size, or the WebCodecs canvas's
          size: (() => {
            const c = document.getElementById('canvas');
            if (c && !c.hidden && c.width) return [c.width, c.height];
            return v ? [v.videoWidth, v.videoHeight] : null;
          })(),
          player: p ? {
            mode: p.mode, submode: p.submode, frames: p.frames, latency_ms: p.latencyMs,
            connections: p.connections, offline: p.offline, jumps: p.jumps, dropped: p.dropped, method: p.method,
          } : null,
          stats: document.getElementById('stats')?.textContent ?? null,
          message: document.getElementById('message')?.hidden === false ? document.getElementById('message').textContent : null,
        };
      });
      timeline.push(e);
    }
    const end = await page.evaluate(() => ({
      samples: window.__watch.samples,
      first_frame_ms: window.__watch.firstFrameMs,
      sampler_errors: window.__watch.errors,
      luma: window.__watch.luma(),
      player_errors: window.pinhole ? window.pinhole.errors : [],
      player_first_frame_ms: window.pinhole ? window.pinhole.firstFrameMs : null,
      // when each start-up step first happened (ms since navigation): where the first frame's time goes
      startup_marks: window.pinhole ? window.pinhole.marks : null,
      dom_content_loaded_ms: Math.round(performance.getEntriesByType('navigation')[0]?.domContentLoadedEventEnd ?? -1),
      // the UI's snapshot (the PNG its button downloads): its size and its first bytes
      snapshot: (() => {
        const c = window.pinhole && window.pinhole.snapshot ? window.pinhole.snapshot() : null;
        if (!c) return null;
        const url = c.toDataURL('image/png');
        return { w: c.width, h: c.height, png_bytes: Math.floor((url.length - 22) * 3 / 4), head: url.slice(0, 22) };
      })(),
      clock_offset_ms: window.pinhole && window.pinhole.clock ? window.pinhole.clock.offsetMs : null,
      // the camera picker (shown when the device has several)
      stream_options: [...document.querySelectorAll('#stream option')].map((o) => o.textContent),
      stream_selected: document.querySelector('#stream option:checked')?.textContent ?? null,
      user_agent: navigator.userAgent,
      secure: window.isSecureContext,
    }));
    if (opts.screenshot) await page.screenshot({ path: opts.screenshot });
    process.stdout.write(`${JSON.stringify({ url: opts.url, navigations, held_gets: heldGets, timeline, console: consoleLines, ...end })}\n`);
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  process.stderr.write(`watch.mjs: ${e.stack || e}\n`);
  process.exit(2);
});
