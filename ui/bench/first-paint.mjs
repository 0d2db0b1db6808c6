#!/usr/bin/env node
// First paint with data, in Chromium: time from navigation start to the page's performance
// marks — `collisionos:first-sample-drawn` (the first chart drew a real sample) and
// `collisionos:charts-painted` (all three charts drew data). Each run is a fresh browser
// context (cold page cache, same backend). Prints median / min / max in milliseconds.
//
//   COLLISIONOS_URL='http://127.0.0.1:3002/?token=…' node bench/first-paint.mjs [--runs 7] [--json]
//
// Without COLLISIONOS_URL the real backend binary is started (COLLISIONOS_BIN, default
// ../target/debug/collisionos; a release build gives the representative figure).

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const runs = Number(args[args.indexOf('--runs') + 1]) || 7;
const asJson = args.includes('--json');

async function startBackend() {
  if (process.env.COLLISIONOS_URL) return { url: process.env.COLLISIONOS_URL, stop: async () => {} };
  const bin = [
    process.env.COLLISIONOS_BIN,
    resolve(here, '../../target/release/collisionos'),
    resolve(here, '../../target/debug/collisionos'),
  ].find((p) => p && existsSync(p));
  if (!bin) throw new Error('set COLLISIONOS_URL or build the backend (cargo build -p collisionos)');
  const dataDir = mkdtempSync(join(tmpdir(), 'collisionos-bench-'));
  const child = spawn(bin, [], {
    env: {
      ...process.env,
      COLLISIONOS_DATA_DIR: dataDir,
      COLLISIONOS_UI_DIR: process.env.COLLISIONOS_UI_DIR ?? resolve(here, '../dist'),
      PORT: '0',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const url = await new Promise((res, rej) => {
    const t = setTimeout(() => rej(new Error(`no UI URL printed:\n${out}`)), 20_000);
    const on = (b) => {
      out += b;
      const m = /(http:\/\/[^\s]+\?token=[A-Za-z0-9._~%-]+)/.exec(out);
      if (m) {
        clearTimeout(t);
        res(m[1]);
      }
    };
    child.stdout.on('data', on);
    child.stderr.on('data', on);
    child.once('exit', (c) => rej(new Error(`backend exited ${c}:\n${out}`)));
  });
  return {
    url,
    stop: async () => {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const backend = await startBackend();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});

const results = [];
try {
  for (let i = 0; i < runs + 1; i++) {
    const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
    const page = await context.newPage();
    await page.goto(backend.url, { waitUntil: 'commit' });
    await page.waitForFunction(() => performance.getEntriesByName('collisionos:charts-painted').length > 0, null, {
      timeout: 30_000,
      polling: 50,
    });
    const r = await page.evaluate(() => {
      const mark = (n) => performance.getEntriesByName(n)[0]?.startTime ?? null;
      const nav = performance.getEntriesByType('navigation')[0];
      const paint = performance.getEntriesByName('first-contentful-paint')[0];
      return {
        fcp: paint ? paint.startTime : null,
        domContentLoaded: nav ? nav.domContentLoadedEventEnd : null,
        boot: mark('collisionos:boot'),
        streamOpen: mark('collisionos:stream-open'),
        backfillDone: mark('collisionos:backfill-done'),
        firstSample: mark('collisionos:first-sample-drawn'),
        chartsPainted: mark('collisionos:charts-painted'),
      };
    });
    await context.close();
    if (i > 0) results.push(r); // the first run warms the backend and the disk cache
  }
} finally {
  await browser.close();
  await backend.stop();
}

const keys = ['fcp', 'domContentLoaded', 'boot', 'streamOpen', 'backfillDone', 'firstSample', 'chartsPainted'];
const summary = Object.fromEntries(
  keys.map((k) => {
    const xs = results.map((r) => r[k]).filter((x) => typeof x === 'number');
    return [k, xs.length ? { median: +median(xs).toFixed(1), min: +Math.min(...xs).toFixed(1), max: +Math.max(...xs).toFixed(1) } : null];
  }),
);
if (asJson) {
  console.log(JSON.stringify({ runs: results.length, summary, results }, null, 2));
} else {
  console.log(`first paint with data, ${results.length} runs (ms from navigation start)`);
  for (const k of keys) {
    const s = summary[k];
    console.log(`${k.padEnd(18)} ${s ? `median ${s.median}  min ${s.min}  max ${s.max}` : 'n/a'}`);
  }
}
