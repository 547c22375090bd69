#!/usr/bin/env node
// The LAN login in a real browser (headless Chromium): the player page sends it to the login
// page, a wrong password shows the message, the right one lands on the player with a cookie the
// page's scripts cannot read, and the player plays. Prints a JSON report; the caller judges it
// (tests/e2e/test_auth.py).
//
//   node tests/ui/login.mjs --url http://127.0.0.1:8080 --password PW [--chromium /usr/bin/chromium]
//
// Runs in the node_modules of tests/hls (playwright-core).

import { launch } from '../hls/browser.mjs';

function parseArgs(argv) {
  const o = { chromium: '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (k === '--url') o.url = v;
    else if (k === '--password') o.password = v;
    else if (k === '--chromium') o.chromium = v;
    else throw new Error(`unknown argument ${k}`);
  }
  if (!o.url || o.password === undefined) throw new Error('--url and --password are required');
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
  const report = { errors: [] };
  try {
    const page = await b.context.newPage();
    page.on('pageerror', (e) => report.errors.push(String(e)));
    const path = () => new URL(page.url()).pathname;

    await page.goto(`${o.url}/`);
    report.landedOn = path();

    await page.fill('input[name=password]', `${o.password}-wrong`);
    await Promise.all([page.waitForLoadState('load'), page.click('button[type=submit]')]);
    await page.waitForSelector('#msg:has-text("Wrong password.")', { timeout: 5000 });
    report.wrongMessage = (await page.textContent('#msg')).trim();

    await page.fill('input[name=password]', o.password);
    await Promise.all([page.waitForURL((u) => u.pathname === '/', { timeout: 5000 }),
      page.click('button[type=submit]')]);
    report.afterLogin = path();
    report.cookieVisibleToScripts = await page.evaluate(() => document.cookie.includes('pinhole_session'));
    report.cookies = (await b.context.cookies()).map((c) => ({
      name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite, secure: c.secure,
    }));
    report.statusFromPage = await page.evaluate(async () => (await fetch('/api/status')).status);
    await page.waitForFunction(() => window.pinhole && window.pinhole.frames >= 10, null, { timeout: 15000 });
    report.frames = await page.evaluate(() => window.pinhole.frames);

    // Back on the login page with a valid cookie: it forwards to the player by itself.
    await page.goto(`${o.url}/login.html`);
    await page.waitForURL((u) => u.pathname === '/', { timeout: 5000 });
    report.loginPageForwards = true;
  } catch (e) {
    report.errors.push(String(e));
  } finally {
    await b.close();
  }
  console.log(JSON.stringify(report));
}

main().catch((e) => {
  console.error(String(e));
  process.exit(2);
});
