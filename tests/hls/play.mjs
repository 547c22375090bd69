#!/usr/bin/env node
// Plays an HLS stream in headless Chromium and reports what the viewer saw, as JSON on stdout.
//
//   node tests/hls/play.mjs --url http://127.0.0.1:8080/hls/stream.m3u8 --player hlsjs --seconds 20
//
// --player hlsjs   hls.js from node_modules (lowLatencyMode: true), served to the page by this
//                  script's own static server on another port (a second origin on 127.0.0.1,
//                  which pinhole lets read /hls/: loopback is the owner's own machine).
// --player native  Chromium's own HLS player: video.src = the playlist.
// --catchup RATE   hls.js only: maxLiveSyncPlaybackRate (play up to RATE× to reach the target
//                  latency; hls.js's default, 1, never catches up after a slow start).
//
// For every displayed frame (requestVideoFrameCallback) the page draws the frame to a canvas and
// reads testsrc's time band: the top height/24 rows (rounded down to even) hold 48 equal cells,
// cell i white when bit 47-i of the capture time in Unix ms is 1 (docs/time.md). The glass-to-
// glass latency of that frame is its expected display time (as Unix ms) minus the capture time.
// hls.js's own `latency` figure is sampled beside it.
//
// Output: {player, url, samples: [{t_ms, latency_ms, hls_latency_s, current_time_s}], errors: [...],
// sampler_errors: [...],
// first_frame_ms, frames, stalls, hls_version, user_agent}. Exit 0 even when playback failed: the
// caller judges the report. Exit 2 on bad arguments or when the browser cannot start.

import { launch, readTimeBand, servePage } from './browser.mjs';


function parseArgs(argv) {
  const o = { player: 'hlsjs', seconds: 20, chromium: '/usr/bin/chromium', warmup: 0 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    if (k === '--url') { o.url = v; i++; }
    else if (k === '--player') { o.player = v; i++; }
    else if (k === '--seconds') { o.seconds = Number(v); i++; }
    else if (k === '--chromium') { o.chromium = v; i++; }
    else if (k === '--catchup') { o.catchup = v; i++; }
    else { throw new Error(`unknown argument ${k}`); }
  }
  if (!o.url) throw new Error('--url is required');
  if (!['hlsjs', 'native'].includes(o.player)) throw new Error(`--player ${o.player}: hlsjs or native`);
  if (!(o.seconds > 0)) throw new Error('--seconds must be > 0');
  return o;
}

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>pinhole hls test</title></head>
<body style="margin:0;background:#000">
<video id="v" muted autoplay playsinline style="width:640px"></video>
<canvas id="c" style="display:none"></canvas>
<script src="/hls.min.js"></script>
<script>
// errors: the player's (hls.js events, the video element, play()); sampler_errors: this page's
// own pixel reader (its latency figures are hollow when it fails).
window.report = { samples: [], errors: [], sampler_errors: [], frames: 0, stalls: 0, first_frame_ms: null };
const R = window.report;
const t0 = performance.now();
const video = document.getElementById('v');
const canvas = document.getElementById('c');
const ctx = canvas.getContext('2d', { willReadFrequently: true });
const params = new URLSearchParams(location.search);
const url = params.get('url');
const player = params.get('player');
let hls = null;

${readTimeBand.toString()}
function readBand() {
  return video.videoWidth && video.videoHeight ? readTimeBand(ctx, video, video.videoWidth, video.videoHeight) : null;
}

function onFrame(now, meta) {
  R.frames++;
  if (R.first_frame_ms === null) R.first_frame_ms = now - t0;
  let capture = null;
  try {
    capture = readBand();
  } catch (e) {
    if (!R.sampler_errors.includes('read band: ' + e.message)) R.sampler_errors.push('read band: ' + e.message);
  }
  const shown = performance.timeOrigin + (meta && meta.expectedDisplayTime ? meta.expectedDisplayTime : now);
  if (capture !== null) {
    R.samples.push({
      t_ms: now - t0,
      latency_ms: shown - capture,
      hls_latency_s: hls && Number.isFinite(hls.latency) ? hls.latency : null,
      current_time_s: video.currentTime,
    });
  }
  video.requestVideoFrameCallback(onFrame);
}
video.requestVideoFrameCallback(onFrame);
R.stall_times_ms = [];
video.addEventListener('waiting', () => { R.stalls++; R.stall_times_ms.push(Math.round(performance.now() - t0)); });
video.addEventListener('error', () => {
  R.errors.push('video error ' + (video.error ? video.error.code + ' ' + video.error.message : '?'));
});

if (player === 'hlsjs') {
  R.hls_version = Hls.version;
  if (!Hls.isSupported()) R.errors.push('hls.js: MSE not supported');
  const config = { lowLatencyMode: true, backBufferLength: 4, debug: params.get('debug') === '1' };
  // hls.js never speeds up to reach its target latency unless allowed to (default rate 1).
  if (params.get('catchup')) config.maxLiveSyncPlaybackRate = Number(params.get('catchup'));
  R.config = config;
  hls = new Hls(config);
  hls.on(Hls.Events.ERROR, (_, d) => {
    R.errors.push((d.fatal ? 'fatal ' : '') + d.type + ' ' + d.details);
    if (d.fatal) { try { hls.destroy(); } catch (e) {} }
  });
  hls.loadSource(url);
  hls.attachMedia(video);
} else {
  R.can_play = video.canPlayType('application/vnd.apple.mpegurl');
  // A CORS fetch (pinhole lets this loopback origin read /hls/), or the canvas would be tainted.
  video.crossOrigin = 'anonymous';
  video.src = url;
}
video.play().catch(e => R.errors.push('play(): ' + e.message));
</script></body></html>`;

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`play.mjs: ${e.message}\n`);
    process.exit(2);
  }
  const server = await servePage(PAGE);
  const port = server.address().port;
  let browser;
  try {
    browser = await launch(opts.chromium);
  } catch (e) {
    process.stderr.write(`play.mjs: cannot start ${opts.chromium}: ${e.message}\n`);
    server.close();
    process.exit(2);
  }
  const { context } = browser;
  const consoleLines = [];
  try {
    const page = context.pages()[0] || await context.newPage();
    page.on('console', m => { if (consoleLines.length < 3000) consoleLines.push(m.type() + ': ' + m.text()); });
    page.on('pageerror', e => consoleLines.push('pageerror: ' + e.message));
    const failed = [];
    page.on('response', r => { if (r.status() >= 400 && failed.length < 50) failed.push(r.status() + ' ' + r.url()); });
    const q = new URLSearchParams({ url: opts.url, player: opts.player, debug: process.env.HLS_DEBUG || '0' });
    if (opts.catchup) q.set('catchup', opts.catchup);
    await page.goto(`http://127.0.0.1:${port}/?${q}`);
    await page.waitForTimeout(opts.seconds * 1000);
    const report = await page.evaluate(() => window.report);
    report.player = opts.player;
    report.url = opts.url;
    report.user_agent = await page.evaluate(() => navigator.userAgent);
    report.console = consoleLines;
    report.failed_requests = failed;
    process.stdout.write(JSON.stringify(report) + '\n');
  } finally {
    await browser.close();
    server.close();
  }
}

main().catch(e => {
  process.stderr.write(`play.mjs: ${e.stack || e}\n`);
  process.exit(2);
});
