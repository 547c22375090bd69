#!/usr/bin/env node
// Mainsail's webcam player against pinhole's LL-HLS, from a page on another origin, in headless
// Chromium; reports what the page could do, as JSON on stdout.
//
//   node tests/hls/mainsail.mjs --url http://127.0.0.1:8080/hls/index.m3u8 --page-host 127.0.0.1 --seconds 8
//
// The player is set up exactly as Mainsail's Hlsstreamer.vue does it (mainsail-crew/mainsail,
// commit df0ef3e34b57cb3d2efc6247b22367052b14f4cb, src/components/webcams/streamers/
// Hlsstreamer.vue, play()): new Hls({enableWorker: true, lowLatencyMode: true,
// maxLiveSyncPlaybackRate: 2, liveSyncDuration: 0.5, liveMaxLatencyDuration: 2,
// backBufferLength: 5}), loadSource(url), attachMedia(video), play() on MANIFEST_PARSED. hls.js
// is the one in tests/hls/node_modules (Mainsail asks for ^1.3.3).
//
// The page is served by this script on 127.0.0.1 at a port of its own, and opened as
// http://PAGE_HOST:PORT/: --page-host 127.0.0.1 is a second origin on the device's own address
// (as Mainsail on the printer's host is); any other name is mapped to 127.0.0.1 with Chromium's
// --host-resolver-rules, so the page's origin is that name (a foreign site) while it still
// reaches pinhole over loopback.
//
// Output: {origin, frames, errors: [...], manifest_parsed, hls_version, console}. Exit 0 even
// when playback failed (the caller judges); 2 on bad arguments or when Chromium cannot start.

import { launch, CHROMIUM_ARGS, servePage } from './browser.mjs';


function parseArgs(argv) {
  const o = { seconds: 8, chromium: '/usr/bin/chromium', pageHost: '127.0.0.1' };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    if (k === '--url') { o.url = v; i++; }
    else if (k === '--page-host') { o.pageHost = v; i++; }
    else if (k === '--seconds') { o.seconds = Number(v); i++; }
    else if (k === '--chromium') { o.chromium = v; i++; }
    else { throw new Error(`unknown argument ${k}`); }
  }
  if (!o.url) throw new Error('--url is required');
  if (!/^[a-z0-9.-]+$/i.test(o.pageHost)) throw new Error('--page-host: a host name or IPv4 address');
  if (!(o.seconds > 0)) throw new Error('--seconds must be > 0');
  return o;
}

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>Mainsail's hls.js setup</title></head>
<body style="margin:0;background:#000">
<video id="v" autoplay muted style="width:640px"></video>
<script src="/hls.min.js"></script>
<script>
window.report = { frames: 0, errors: [], manifest_parsed: false, hls_version: Hls.version };
const R = window.report;
const video = document.getElementById('v');
const url = new URLSearchParams(location.search).get('url');
function onFrame() { R.frames++; video.requestVideoFrameCallback(onFrame); }
video.requestVideoFrameCallback(onFrame);
if (!Hls.isSupported()) R.errors.push('hls.js: MSE not supported');
// Mainsail's Hlsstreamer.vue, play(), as it is.
const hls = new Hls({
  enableWorker: true,
  lowLatencyMode: true,
  maxLiveSyncPlaybackRate: 2,
  liveSyncDuration: 0.5,
  liveMaxLatencyDuration: 2,
  backBufferLength: 5,
});
hls.loadSource(url);
hls.attachMedia(video);
hls.on(Hls.Events.MANIFEST_PARSED, () => {
  R.manifest_parsed = true;
  video.play().catch(e => R.errors.push('play(): ' + e.message));
});
hls.on(Hls.Events.ERROR, (_, d) => {
  R.errors.push((d.fatal ? 'fatal ' : '') + d.type + ' ' + d.details);
});
</script></body></html>`;

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`mainsail.mjs: ${e.message}\n`);
    process.exit(2);
  }
  const server = await servePage(PAGE);
  const port = server.address().port;
  const args = [...CHROMIUM_ARGS];
  if (opts.pageHost !== '127.0.0.1') args.push(`--host-resolver-rules=MAP ${opts.pageHost} 127.0.0.1`);
  let browser;
  try {
    browser = await launch(opts.chromium, { args });
  } catch (e) {
    process.stderr.write(`mainsail.mjs: cannot start ${opts.chromium}: ${e.message}\n`);
    server.close();
    process.exit(2);
  }
  const consoleLines = [];
  try {
    const page = browser.context.pages()[0] || await browser.context.newPage();
    page.on('console', m => { if (consoleLines.length < 200) consoleLines.push(m.type() + ': ' + m.text()); });
    page.on('pageerror', e => consoleLines.push('pageerror: ' + e.message));
    const origin = `http://${opts.pageHost}:${port}`;
    await page.goto(`${origin}/?${new URLSearchParams({ url: opts.url })}`);
    await page.waitForTimeout(opts.seconds * 1000);
    const report = await page.evaluate(() => window.report);
    report.origin = await page.evaluate(() => location.origin);
    report.console = consoleLines;
    process.stdout.write(JSON.stringify(report) + '\n');
  } finally {
    await browser.close();
    server.close();
  }
}

main().catch(e => {
  process.stderr.write(`mainsail.mjs: ${e.stack || e}\n`);
  process.exit(2);
});
