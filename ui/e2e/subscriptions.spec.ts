// Subscriptions from the UI: create one with the form, see it in the live table, destroy it
// with its button; a bad filter shows the backend's 422 reason exactly as it sent it.
// Needs a backend with Supabase configured (the harness's local stack).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser } from 'playwright-core';
import { apiJson, backend, launchBrowser, newPage, shot, until, type Backend } from './support.ts';

let b: Backend;
let browser: Browser;
let configured = false;

before(async () => {
  b = await backend();
  browser = await launchBrowser();
  const h = await apiJson<{ supabase?: { configured?: boolean } }>(b, '/api/health');
  configured = !!h.body?.supabase?.configured;
});

after(async () => {
  await browser?.close();
  await b?.stop();
});

test('create and destroy a subscription from the UI', async (t) => {
  if (!configured) {
    t.skip('Supabase is not configured on this backend (set SUPABASE_URL for it)');
    return;
  }
  const { context, page, errors } = await newPage(browser);
  const id = `e2e-ui-${Date.now().toString(36)}`;
  try {
    await page.goto(b.uiUrl + '#/subscriptions');
    await page.waitForSelector('[data-view="subscriptions"] [data-testid="subscription-form"]');
    await page.fill('input[name="schema"]', 'public');
    await page.fill('input[name="table"]', 'jobs');
    await page.selectOption('select[name="event"]', 'UPDATE');
    await page.fill('input[name="filter"]', 'status=eq.paint');
    await page.fill('input[name="ttl"]', '600');
    await page.fill('input[name="id"]', id);
    await page.click('[data-testid="subscription-create"]');
    await page.waitForSelector('[data-testid="subscription-created"]', { timeout: 15_000 });

    const row = page.locator(`tr[data-subscription-id="${id}"]`);
    await row.waitFor({ timeout: 10_000 });
    assert.match((await row.textContent()) ?? '', /jobs/);
    assert.match((await row.textContent()) ?? '', /status=eq\.paint/);
    const listed = await apiJson<{ subscriptions: { id: string }[] }>(b, '/api/subscriptions');
    assert.ok(listed.body.subscriptions.some((s) => s.id === id), 'the backend has it');
    // The state settles (subscribed, or whatever the backend reports) and is shown.
    await until('a state is shown', async () => (await row.getAttribute('data-state')) !== null);
    await shot(page, 'subscription-created');

    await row.locator('[data-testid="subscription-destroy"]').click();
    await row.waitFor({ state: 'detached', timeout: 10_000 });
    const after = await apiJson<{ subscriptions: { id: string }[] }>(b, '/api/subscriptions');
    assert.ok(!after.body.subscriptions.some((s) => s.id === id), 'gone from the backend');
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test("a bad filter shows the backend's 422 reason as it is", async (t) => {
  if (!configured) {
    t.skip('Supabase is not configured on this backend (set SUPABASE_URL for it)');
    return;
  }
  const bad = 'status=like.(((';
  // What the backend says about it, asked directly (a rejected filter creates nothing).
  const direct = await apiJson<{ error: string; code: string }>(b, '/api/subscriptions', {
    method: 'POST',
    body: JSON.stringify({ schema: 'public', table: 'jobs', event: '*', filter: bad }),
  });
  assert.equal(direct.status, 422, JSON.stringify(direct.body));
  const { context, page } = await newPage(browser);
  try {
    await page.goto(b.uiUrl + '#/subscriptions');
    await page.waitForSelector('[data-testid="subscription-form"]');
    await page.fill('input[name="table"]', 'jobs');
    await page.fill('input[name="filter"]', bad);
    await page.click('[data-testid="subscription-create"]');
    const err = page.locator('[data-testid="subscription-error"]');
    await err.waitFor({ timeout: 10_000 });
    assert.equal((await err.locator('.error-text').textContent())?.trim(), direct.body.error);
    assert.equal(await err.getAttribute('data-code'), direct.body.code);
    await shot(page, 'subscription-422');
  } finally {
    await context.close();
  }
});
