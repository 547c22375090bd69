// The page side of the UI tests and bench/latency, shared by every browser driver: Chromium
// through playwright-core (tests/ui/watch.mjs) and WebKitGTK through WebDriver
// (tests/e2e/webkit.py, which runs `node tests/ui/sampler.mjs` to get these functions' source).
// One band reader for all: readTimeBand from tests/hls/browser.mjs.
//
//   node tests/ui/sampler.mjs   prints {"init": <script, noMse false>, "timeline": <expression>,
//                               "final": <expression>} as JSON
//
// `init` installs window.__watch: it reads testsrc's time band (docs/time.md) from every frame
// the <video> presents (requestVideoFrameCallback, at its expected display time) or, for the
// WebCodecs canvas, every animation frame whose band changed. `timeline` and `final` are
// functions to evaluate in the page: the player's state now, and the report at the end.

import { readTimeBand } from '../hls/browser.mjs';

// Runs in the page: before its scripts (Chromium: addInitScript), or right after the page loaded
// (WebDriver has no init scripts; the frames before it are not sampled).
export function sampler(noMse) {
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
  const go = () => {
    const video = document.querySelector('video');
    if (video) onVideoFrame(video);
    requestAnimationFrame(onAnimationFrame);
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', go);
  else go();
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

// The script that installs the sampler (readTimeBand defined beside it).
export function injected(noMse = false) {
  return `${readTimeBand}\n(${sampler})(${JSON.stringify(!!noMse)});`;
}

// Evaluated in the page every timeline step.
export function timelineEntry() {
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
      bytes: p.bytes,
    } : null,
    // the engine's view of the MSE player (buffered ranges, readyState, …), when there is one
    state: p && p.state ? p.state() : (v ? {
      currentTime: v.currentTime, readyState: v.readyState, paused: v.paused, seeking: v.seeking,
      buffered: [...Array(v.buffered.length).keys()].map((i) => [v.buffered.start(i), v.buffered.end(i)]),
      error: v.error ? v.error.code : null,
    } : null),
    recoveries: p && p.recoveries ? p.recoveries.length : null,
    stats: document.getElementById('stats')?.textContent ?? null,
    message: document.getElementById('message')?.hidden === false ? document.getElementById('message').textContent : null,
  };
}

// Evaluated in the page at the end.
export function finalReport() {
  return ({
    samples: window.__watch.samples,
    first_frame_ms: window.__watch.firstFrameMs,
    sampler_errors: window.__watch.errors,
    luma: window.__watch.luma(),
    player_errors: window.pinhole ? window.pinhole.errors : [],
    // what the stall watchdog did: [{at, stage, stalledMs}]
    recoveries: window.pinhole ? window.pinhole.recoveries : null,
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
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.stdout.write(`${JSON.stringify({ init: injected(false), timeline: `(${timelineEntry})`, final: `(${finalReport})` })}\n`);
}
