#!/usr/bin/env node
// Opens a page in headless Chromium and reports what the viewer saw, as JSON on stdout: pinhole's
// own UI (tests/e2e/test_ui.py, bench/latency) or any page with a <video> (the naive baseline).
//
//   node tests/ui/watch.mjs --url 'http://127.0.0.1:8080/?mode=chunked' --seconds 20 \
//        [--no-mse] [--screenshot out.png] [--timeline-ms 500] [--run-at S JS]
//
// The sampler (tests/ui/sampler.mjs, shared with tests/ui/watch_webkit.py) is injected before the
// page's own scripts. It reads testsrc's time band (48 cells
// across the top height/24 rows, rounded down to even; cell i white when bit 47-i of the
// capture Unix ms is 1 — docs/time.md) from the pixels actually displayed: every frame the
// <video> presents (requestVideoFrameCallback, at its expected display time) or, for the
// WebCodecs canvas, every animation frame whose band changed. Latency = display time − capture
// time; both are this machine's clock, as pinhole runs on the same machine.
//
// --run-at S JS runs the script JS in the page S seconds after it was opened (repeatable).
// --hold-get holds every GET of /api/video/cmaf unanswered, as a tunnel that buffers GET
// streams does (cloudflared #1449); POST goes through.
// --no-mse deletes window.MediaSource, ManagedMediaSource and WebKitMediaSource before the page
// runs (compatibility mode). Timeline entries every --timeline-ms: the player's state
// (window.pinhole) and the sampler's counters. The report ends with the mean and standard
// deviation of the luma of the frame on screen (a black frame has both near 0).
//
// Exit 0 even when playback failed (the caller judges the report); 2 on bad arguments or when
// the browser cannot start. Runs in the node_modules of tests/hls (playwright-core).

import { launch } from '../hls/browser.mjs';
import { injected, finalReport, timelineEntry } from './sampler.mjs';

function parseArgs(argv) {
  const o = { seconds: 20, chromium: '/usr/bin/chromium', noMse: false, screenshot: null, timelineMs: 500, runAt: [] };
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
    else if (k === '--run-at') { o.runAt.push([Number(v), argv[i + 2]]); i += 2; }
    else { throw new Error(`unknown argument ${k}`); }
  }
  if (!o.url) throw new Error('--url is required');
  if (!(o.seconds > 0)) throw new Error('--seconds must be > 0');
  return o;
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
    await page.addInitScript({ content: injected(opts.noMse) });
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
      for (const item of opts.runAt) {
        if (!item.done && Date.now() - t0 >= item[0] * 1000) { item.done = true; await page.evaluate(item[1]); }
      }
      const e = await page.evaluate(timelineEntry);
      timeline.push(e);
    }
    const end = await page.evaluate(finalReport);
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
