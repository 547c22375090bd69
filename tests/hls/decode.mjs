#!/usr/bin/env node
// Feeds H.264 samples to WebCodecs' VideoDecoder in headless Chromium, one chunk at a time, and
// reports when each decoded frame came out: the test of a decoder's output delay (reordering).
//
//   node tests/hls/decode.mjs --job job.json [--chromium /usr/bin/chromium]
//
// job.json: {"runs": [{"name", "codec" (RFC 6381, from avcC), "description" (avcC body, base64),
//            "chunks": [{"key": bool, "data": base64 AVCC sample}]}], "wait_ms": 1000}
// For each run the page configures a decoder, then for every chunk: decode() and wait up to
// wait_ms for the frame count to reach the chunks given so far (no flush: a decoder that
// reorders holds frames back, a low-delay one gives each frame back at once). Then flush().
// Output (stdout, JSON): {user_agent, runs: [{name, supported, outputs_after: [frames out after
// chunk i], lag_max, frames_before_flush, frames_after_flush, errors: [...]}]}.
// Exit 0 whatever the decoder did (the caller judges); exit 2 on bad arguments or no browser.

import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { launch } from './browser.mjs';

function parseArgs(argv) {
  const o = { chromium: '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    if (k === '--job') { o.job = v; i++; }
    else if (k === '--chromium') { o.chromium = v; i++; }
    else { throw new Error(`unknown argument ${k}`); }
  }
  if (!o.job) throw new Error('--job is required');
  return o;
}

// Runs in the page (a secure context: http://127.0.0.1).
async function decodeRun(run, waitMs) {
  const out = { name: run.name, supported: false, outputs_after: [], errors: [], lag_max: 0 };
  const b64 = s => Uint8Array.from(atob(s), c => c.charCodeAt(0));
  const config = { codec: run.codec, description: b64(run.description), optimizeForLatency: true,
    hardwareAcceleration: 'prefer-software' };
  try {
    const s = await VideoDecoder.isConfigSupported(config);
    out.supported = !!s.supported;
  } catch (e) {
    out.errors.push('isConfigSupported: ' + e.message);
    return out;
  }
  if (!out.supported) return out;
  let frames = 0;
  let wake = null;
  const dec = new VideoDecoder({
    output: f => { frames++; f.close(); if (wake) wake(); },
    error: e => { out.errors.push('decoder: ' + e.message); if (wake) wake(); },
  });
  dec.configure(config);
  let ts = 0;
  for (let i = 0; i < run.chunks.length; i++) {
    const c = run.chunks[i];
    try {
      dec.decode(new EncodedVideoChunk({ type: c.key ? 'key' : 'delta', timestamp: ts, duration: 33333,
        data: b64(c.data) }));
    } catch (e) {
      out.errors.push(`decode(${i}): ${e.message}`);
      break;
    }
    ts += 33333;
    const deadline = performance.now() + waitMs;
    while (frames < i + 1 && performance.now() < deadline && dec.state === 'configured') {
      await new Promise(r => { wake = r; setTimeout(r, 20); });
      wake = null;
    }
    out.outputs_after.push(frames);
    out.lag_max = Math.max(out.lag_max, i + 1 - frames);
    if (dec.state !== 'configured') break;
  }
  out.frames_before_flush = frames;
  try {
    await dec.flush();
  } catch (e) {
    out.errors.push('flush: ' + e.message);
  }
  out.frames_after_flush = frames;
  try { dec.close(); } catch (e) { /* closed by an error */ }
  return out;
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`decode.mjs: ${e.message}\n`);
    process.exit(2);
  }
  const job = JSON.parse(readFileSync(opts.job, 'utf8'));
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>pinhole decode test</title>');
  });
  await new Promise(r => server.listen(0, '127.0.0.1', r));
  let browser;
  try {
    browser = await launch(opts.chromium);
  } catch (e) {
    process.stderr.write(`decode.mjs: cannot start ${opts.chromium}: ${e.message}\n`);
    server.close();
    process.exit(2);
  }
  try {
    const page = browser.context.pages()[0] || await browser.context.newPage();
    const pageErrors = [];
    page.on('pageerror', e => pageErrors.push(e.message));
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    const runs = [];
    for (const run of job.runs) {
      runs.push(await page.evaluate(`(${decodeRun.toString()})(${JSON.stringify(run)}, ${job.wait_ms || 1000})`));
    }
    const userAgent = await page.evaluate(() => navigator.userAgent);
    process.stdout.write(JSON.stringify({ user_agent: userAgent, runs, page_errors: pageErrors }) + '\n');
  } finally {
    await browser.close();
    server.close();
  }
}

main().catch(e => {
  process.stderr.write(`decode.mjs: ${e.stack || e}\n`);
  process.exit(2);
});
