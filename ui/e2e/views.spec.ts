// Switching views destroys and recreates their components; everything they registered
// (listeners, timers, resize observers) must go with them, and the page keeps exactly one
// event stream. 1,000 view changes leave the counters where they were.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser } from 'playwright-core';
import { backend, counters, launchBrowser, newPage, shot, sleep, type Backend } from './support.ts';

let b: Backend;
let browser: Browser;

before(async () => {
  b = await backend();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await b?.stop();
});

const VIEWS = ['health', 'jobs', 'subscriptions'] as const;

test('1,000 view changes leave listeners() and streams() constant', { timeout: 600_000 }, async () => {
  const { context, page, errors } = await newPage(browser);
  try {
    await page.goto(b.uiUrl);
    await page.waitForSelector('[data-testid="connection-state"][data-phase="open"]', { timeout: 15_000 });
    await page.waitForSelector('[data-view="health"] [data-testid="chart-memory"] canvas');

    // A few real clicks through the tabs first.
    for (let i = 0; i < 6; i++) {
      const v = VIEWS[i % 3];
      await page.click(`[data-testid="tab-${v}"]`);
      await page.waitForSelector(`[data-view="${v}"]`);
    }
    await page.click('[data-testid="tab-health"]');
    await page.waitForSelector('[data-view="health"] [data-testid="chart-memory"] canvas');
    await sleep(1500);
    const cdp = await context.newCDPSession(page);
    await cdp.send('Performance.enable');
    const browserMetrics = async () => {
      await cdp.send('HeapProfiler.collectGarbage');
      const { metrics } = (await cdp.send('Performance.getMetrics')) as { metrics: { name: string; value: number }[] };
      const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
      return { jsListeners: m.JSEventListeners, nodes: m.Nodes, heapMb: m.JSHeapUsedSize / 1048576 };
    };
    const baseBrowser = await browserMetrics();
    const base = await counters(page);
    assert.equal(base.streams, 1, 'one event stream');
    assert.ok(base.listeners > 0);

    // 1,000 changes by clicking the tab links inside the page (each waits until the new view
    // is mounted), ending on Health again.
    const done = await page.evaluate(async (views) => {
      const wait = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
      let changes = 0;
      const peaks = { listeners: 0, streams: 0 };
      for (let i = 1; i <= 1000; i++) {
        const v = views[i % 3];
        (document.querySelector(`[data-testid="tab-${v}"]`) as HTMLAnchorElement).click();
        for (let k = 0; k < 50 && !document.querySelector(`[data-view="${v}"]`); k++) await wait();
        if (!document.querySelector(`[data-view="${v}"]`)) throw new Error(`view ${v} did not mount`);
        changes++;
        const c = window.__collisionos!;
        peaks.listeners = Math.max(peaks.listeners, c.listeners());
        peaks.streams = Math.max(peaks.streams, c.streams());
      }
      return { changes, peaks, last: views[1000 % 3] };
    }, VIEWS as unknown as string[]);
    assert.equal(done.changes, 1000);
    assert.equal(done.peaks.streams, 1, 'never more than one stream');

    // Back on Health and settled.
    await page.click('[data-testid="tab-health"]');
    await page.waitForSelector('[data-view="health"] [data-testid="chart-memory"] canvas');
    await sleep(1500);
    const end = await counters(page);
    const endBrowser = await browserMetrics();
    console.log('counters before', base, 'after', end, 'peak listeners', done.peaks.listeners);
    console.log('browser before', baseBrowser, 'after', endBrowser);
    assert.deepEqual(end, base, 'listeners, streams, timers and observers are back where they were');
    // The browser's own count of JS event listeners (uPlot's included) and DOM nodes agree.
    assert.ok(
      Math.abs(endBrowser.jsListeners - baseBrowser.jsListeners) <= 2,
      `JS event listeners ${baseBrowser.jsListeners} -> ${endBrowser.jsListeners}`,
    );
    assert.ok(Math.abs(endBrowser.nodes - baseBrowser.nodes) <= 200, `DOM nodes ${baseBrowser.nodes} -> ${endBrowser.nodes}`);
    assert.ok(endBrowser.heapMb < baseBrowser.heapMb + 8, `JS heap ${baseBrowser.heapMb.toFixed(1)} -> ${endBrowser.heapMb.toFixed(1)} MB`);
    await shot(page, 'after-1000-view-changes');
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
