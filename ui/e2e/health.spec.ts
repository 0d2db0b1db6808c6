// The Health view against the real backend: live figures that move, three painted canvases,
// threshold lines from /api/health/memory, the window toggle, the token leaving the address
// bar, and screenshots in both themes.

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
  await browser?.close();
  await b?.stop();
});

test('health view shows live figures and painted charts', async () => {
  const { context, page, errors } = await newPage(browser);
  try {
    await page.goto(b.uiUrl);
    // The token is kept in sessionStorage and removed from the visible address.
    await until('token stripped from the URL', async () => !(await page.evaluate(() => location.search.includes('token='))));
    assert.equal(await page.evaluate(() => sessionStorage.getItem('collisionos.token')), b.token);

    await page.waitForSelector('[data-testid="connection-state"][data-phase="open"]', { timeout: 15_000 });
    for (const name of ['memory', 'pool', 'subscriptions']) {
      await page.waitForSelector(`[data-testid="chart-${name}"] canvas`, { timeout: 10_000 });
    }
    const rss = page.locator('[data-testid="figure-rss"] .v');
    await until('an RSS figure', async () => /^\d+(\.\d)?$/.test((await rss.textContent()) ?? ''));

    const read = async () => ({
      sample: await page.locator('[data-testid="last-sample"]').getAttribute('data-ts'),
      rss: await rss.textContent(),
      points: Number(await page.locator('[data-testid="chart-memory"]').getAttribute('data-points')),
      canvas: await page.locator('[data-testid="chart-memory"] canvas').evaluate((c: HTMLCanvasElement) => c.toDataURL()),
    });
    const first = await read();
    await sleep(3000);
    const second = await read();
    assert.ok(Number(second.sample) > Number(first.sample), `sample time moves: ${first.sample} -> ${second.sample}`);
    assert.ok(second.points >= 1 && second.points >= first.points, `points ${first.points} -> ${second.points}`);
    assert.notEqual(second.canvas, first.canvas, 'the memory canvas is redrawn with new data');
    assert.match(second.rss ?? '', /^\d+(\.\d)?$/);
    for (const id of ['figure-pool-active', 'figure-subs-total']) {
      const t = await page.locator(`[data-testid="${id}"] .v`).textContent();
      assert.match(t ?? '', /^\d+$/, `${id} shows a number`);
    }
    // First-paint marks are set once the charts drew real data.
    const marks = await page.evaluate(() => performance.getEntriesByType('mark').map((m) => m.name));
    assert.ok(marks.includes('collisionos:charts-painted'), `marks: ${marks.join(', ')}`);

    await shot(page, 'health-dark');
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test('threshold lines come from /api/health/memory', async () => {
  const mem = await apiJson<{ thresholds: { warning_mb: number; critical_mb: number } }>(b, '/api/health/memory');
  assert.equal(mem.status, 200);
  const { warning_mb, critical_mb } = mem.body.thresholds;
  const { context, page } = await newPage(browser);
  try {
    await page.goto(b.uiUrl);
    const warn = page.locator('[data-testid="card-memory"] [data-threshold="warning"]');
    const crit = page.locator('[data-testid="card-memory"] [data-threshold="critical"]');
    await warn.waitFor({ timeout: 15_000 });
    assert.equal(Number(await warn.getAttribute('data-mb')), warning_mb);
    assert.equal(Number(await crit.getAttribute('data-mb')), critical_mb);
    // Drawn on the canvas (the chart records which lines it drew).
    await until('both lines drawn', async () => {
      const l = await page.locator('[data-testid="chart-memory"]').getAttribute('data-limits');
      return l?.includes('warning') && l.includes('critical');
    });
    // Pool and subscription capacity lines are in the legends.
    assert.ok(await page.locator('[data-testid="pool-capacity-line"]').isVisible());
    assert.ok(await page.locator('[data-testid="subs-capacity-line"]').isVisible());
  } finally {
    await context.close();
  }
});

test('window toggle, light theme and the other views render', async () => {
  const { context, page, errors } = await newPage(browser, { colorScheme: 'light' });
  try {
    await page.goto(b.uiUrl);
    await page.waitForSelector('[data-testid="connection-state"][data-phase="open"]', { timeout: 15_000 });
    await page.click('[data-testid="window-3600"]');
    assert.equal(await page.getAttribute('[data-testid="window-3600"]', 'aria-pressed'), 'true');
    await page.waitForSelector('[data-testid="chart-memory"] canvas');
    assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), 'light');
    await sleep(1500);
    await shot(page, 'health-light-1h');
    await page.click('[data-testid="window-300"]');

    await page.click('[data-testid="tab-jobs"]');
    await page.waitForSelector('[data-view="jobs"] [data-testid="jobs-board"]');
    await sleep(500);
    await shot(page, 'jobs-light');
    await page.click('[data-testid="tab-subscriptions"]');
    await page.waitForSelector('[data-view="subscriptions"] [data-testid="subscription-form"]');
    await page.waitForSelector('[data-testid="chart-subscriptions"] canvas');
    await sleep(500);
    await shot(page, 'subscriptions-light');
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test("a wrong token shows the backend's message as it is, and a pasted URL connects", async () => {
  const direct = await fetch(`${b.origin}/api/alerts`, { headers: { Authorization: 'Bearer wrong-token-0000000000' } });
  assert.equal(direct.status, 401);
  const body = (await direct.json()) as { error: string; code: string };
  const { context, page } = await newPage(browser);
  try {
    await page.goto(`${b.origin}/?token=wrong-token-0000000000`);
    const reason = page.locator('[data-testid="reconnecting-reason"]');
    await reason.waitFor({ timeout: 15_000 });
    assert.equal((await reason.textContent())?.trim(), body.error);
    assert.equal(await reason.getAttribute('data-code'), body.code);
    await page.waitForSelector('[data-testid="token-form"]');
    await shot(page, 'wrong-token');
    await page.fill('[data-testid="token-form"] input[name="token"]', b.uiUrl);
    await page.click('[data-testid="token-form"] button[type="submit"]');
    await page.waitForSelector('[data-testid="connection-state"][data-phase="open"]', { timeout: 15_000 });
    await page.waitForSelector('[data-testid="token-form"]', { state: 'detached' });
    assert.equal(await page.evaluate(() => window.__collisionos!.streams()), 1);
  } finally {
    await context.close();
  }
});
