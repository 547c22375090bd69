// What tests/hls/play.mjs, tests/hls/mainsail.mjs and tests/ui/watch.mjs (and through them the
// e2e tests and the latency benchmarks) share: starting Debian's Chromium headless, serving a
// test page with hls.js, and reading testsrc's time band from pixels.

import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));

// An HTTP server on a free 127.0.0.1 port serving PAGE at `/` and the npm package's hls.js at
// `/hls.min.js` (favicon: 204, anything else: 404). Resolves to the listening server.
export async function servePage(page) {
  const hlsJs = readFileSync(join(HERE, 'node_modules', 'hls.js', 'dist', 'hls.min.js'));
  const server = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(page);
    } else if (path === '/hls.min.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(hlsJs);
    } else if (path === '/favicon.ico') {
      res.writeHead(204);
      res.end();
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise(r => server.listen(0, '127.0.0.1', r));
  return server;
}

// As root on these machines Chromium needs no sandbox; without the background-networking
// switches it keeps trying hosts this closed network refuses.
export const CHROMIUM_ARGS = ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required'];

// A persistent context in a fresh profile directory. Returns {context, close()}; close() also
// removes the profile. Throws, with the profile removed, when the browser cannot start.
export async function launch(executablePath, options = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), 'pinhole-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(dataDir, {
      executablePath, headless: true, args: CHROMIUM_ARGS, ...options,
    });
  } catch (e) {
    rmSync(dataDir, { recursive: true, force: true });
    throw e;
  }
  return {
    context,
    async close() {
      await context.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

// Runs in the page. testsrc's time band: the top height/24 rows (rounded down to even) hold 48
// equal cells, cell i white when bit 47-i of the capture time in Unix ms is 1 (docs/time.md).
// Reads the middle half of each cell in both directions, so scaling and the codec's ringing at
// the edges don't matter. `ctx` is a 2D context of a scratch canvas; returns the capture Unix ms,
// or null when there is nothing to read yet.
export function readTimeBand(ctx, src, w, h) {
  const rows = Math.floor(h / 24) & ~1;
  if (rows < 2 || !w) return null;
  const scratch = ctx.canvas;
  if (scratch.width !== w || scratch.height !== rows) { scratch.width = w; scratch.height = rows; }
  ctx.drawImage(src, 0, 0, w, rows, 0, 0, w, rows);
  const img = ctx.getImageData(0, 0, w, rows).data;
  const y0 = Math.floor(rows / 4), y1 = Math.max(y0 + 1, Math.floor((3 * rows) / 4));
  let value = 0;
  for (let i = 0; i < 48; i++) {
    const x0 = Math.floor(((i + 0.25) * w) / 48);
    const x1 = Math.max(x0 + 1, Math.floor(((i + 0.75) * w) / 48));
    let total = 0, n = 0;
    for (let y = y0; y < y1; y++) {
      for (let x = x0; x < x1; x++) {
        const p = (y * w + x) * 4;
        total += 0.299 * img[p] + 0.587 * img[p + 1] + 0.114 * img[p + 2];
        n++;
      }
    }
    // 48 bits: exact in a double (2^53)
    value = value * 2 + (total / n >= 128 ? 1 : 0);
  }
  return value;
}
