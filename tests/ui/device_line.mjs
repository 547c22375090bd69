#!/usr/bin/env node
// The player page's device line in headless Chromium: waits until it is shown and prints its
// text as JSON ({text, errors}); the caller judges it (tests/e2e/test_hardening.py).
//
//   node tests/ui/device_line.mjs --url http://127.0.0.1:8080/ [--chromium /usr/bin/chromium]
//
// Runs in the node_modules of tests/hls (playwright-core).

import { launch } from '../hls/browser.mjs';

function parseArgs(argv) {
  const o = { chromium: '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (k === '--url') o.url = v;
    else if (k === '--chromium') o.chromium = v;
    else throw new Error(`unknown argument ${k}`);
  }
  if (!o.url) throw new Error('--url is required');
  return o;
}

async function main() {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(String(e));
    process.exit(2);
  }
  const b = await launch(o.chromium);
  const report = { errors: [], text: null };
  try {
    const page = await b.context.newPage();
    page.on('pageerror', (e) => report.errors.push(String(e)));
    await page.goto(o.url);
    try {
      await page.waitForSelector('#device:not([hidden])', { timeout: 15000 });
    } catch (e) {
      report.errors.push('the device line was never shown: ' + e.message);
    }
    report.text = await page.evaluate(() => document.getElementById('device').textContent);
  } finally {
    await b.close();
  }
  process.stdout.write(JSON.stringify(report) + '\n');
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(2);
});
