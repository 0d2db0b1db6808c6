// Upstream down and back: the harness's stack gateway takes faults at
// `POST $STACK_URL/__stack/faults {"down": true|false}`. The page must show Supabase offline
// (with since when) and clear it when the upstream returns. With a backend this process
// started, the backend itself is also stopped and restarted: the page shows "reconnecting…",
// marks the charts stale, and recovers by itself.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser } from 'playwright-core';
import { apiJson, backend, launchBrowser, newPage, shot, sleep, until, type Backend } from './support.ts';

let b: Backend;
let browser: Browser;

before(async () => {
  b = await backend();
  browser = await launchBrowser();
});

after(async () => {
  if (process.env.STACK_URL) await faults(false).catch(() => {});
  await browser?.close();
  await b?.stop();
});

async function faults(down: boolean): Promise<void> {
  const res = await fetch(`${process.env.STACK_URL}/__stack/faults`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ down }),
  });
  assert.ok(res.ok, `stack faults answered ${res.status}`);
}

test('offline state appears when the upstream stops and clears when it returns', { timeout: 180_000 }, async (t) => {
  if (!process.env.STACK_URL) {
    t.skip('STACK_URL not set (the local stack gateway that takes faults)');
    return;
  }
  const h = await apiJson<{ supabase?: { configured?: boolean } }>(b, '/api/health');
  if (!h.body?.supabase?.configured) {
    t.skip('Supabase is not configured on this backend');
    return;
  }
  const { context, page, errors } = await newPage(browser);
  try {
    await page.goto(b.uiUrl);
    const status = page.locator('[data-testid="supabase-status"]');
    await until('online first', async () => (await status.getAttribute('data-state')) === 'online', 60_000);

    await faults(true);
    await until('offline shown', async () => (await status.getAttribute('data-state')) === 'offline', 90_000, 500);
    const since = await page.locator('[data-testid="supabase-offline-since"]').textContent();
    assert.match(since ?? '', /since \d\d:\d\d:\d\d/);
    assert.equal(await page.getAttribute('[data-testid="overall-status"]', 'data-level'), 'offline');
    await until('an offline alert', async () => (await page.locator('[data-testid="alerts"] li[data-level="offline"]').count()) > 0, 15_000);
    await shot(page, 'supabase-offline');

    await faults(false);
    await until('online again', async () => (await status.getAttribute('data-state')) === 'online', 90_000, 500);
    await until('an online alert', async () => (await page.locator('[data-testid="alerts"] li[data-level="online"]').count()) > 0, 15_000);
    await shot(page, 'supabase-back-online');
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test('backend down shows reconnecting and stale charts, then recovers', { timeout: 120_000 }, async (t) => {
  if (!b.owned) {
    t.skip('the backend was given by COLLISIONOS_URL; only a backend this run started can be stopped');
    return;
  }
  const { context, page, errors } = await newPage(browser);
  try {
    await page.goto(b.uiUrl);
    await page.waitForSelector('[data-testid="connection-state"][data-phase="open"]', { timeout: 15_000 });
    await page.waitForSelector('[data-testid="chart-memory"] canvas');
    await sleep(1500);
    await b.stop();
    await page.waitForSelector('[data-testid="reconnecting-banner"]', { timeout: 15_000 });
    await page.waitForSelector('[data-testid="card-memory"][data-stale="true"] [data-testid="stale-badge"]', { timeout: 10_000 });
    const streams = await page.evaluate(() => window.__collisionos!.streams());
    assert.ok(streams <= 1, `at most one stream while reconnecting (${streams})`);
    // The time axis keeps moving while stale: the canvas changes with no data coming in.
    const c1 = await page.locator('[data-testid="chart-memory"] canvas').evaluate((c: HTMLCanvasElement) => c.toDataURL());
    await sleep(2500);
    const c2 = await page.locator('[data-testid="chart-memory"] canvas').evaluate((c: HTMLCanvasElement) => c.toDataURL());
    assert.notEqual(c1, c2, 'a stale chart is not frozen');
    await shot(page, 'backend-down-reconnecting');

    await b.restart();
    await page.waitForSelector('[data-testid="connection-state"][data-phase="open"]', { timeout: 30_000 });
    await page.waitForSelector('[data-testid="reconnecting-banner"]', { state: 'detached', timeout: 10_000 });
    await page.waitForSelector('[data-testid="card-memory"][data-stale="false"]', { timeout: 10_000 });
    assert.equal(await page.evaluate(() => window.__collisionos!.streams()), 1);
    await shot(page, 'backend-back');
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
