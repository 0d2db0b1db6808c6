// The live jobs board: rows from GET /api/jobs, then `change` events for table jobs move them
// without a reload. The change is made upstream through the stack's PostgREST (service key),
// as another desktop in the shop would. Needs STACK_URL (or SUPABASE_URL) and
// SUPABASE_SERVICE_ROLE_KEY, and a backend that subscribes to `jobs`.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser } from 'playwright-core';
import { apiJson, backend, launchBrowser, newPage, shot, until, type Backend } from './support.ts';

let b: Backend;
let browser: Browser;

const REST = process.env.STACK_URL ?? process.env.SUPABASE_URL;
const KEY = process.env.SUPABASE_SERVICE_ROLE_KEY;

before(async () => {
  b = await backend();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await b?.stop();
});

async function patchJob(id: string, status: string): Promise<void> {
  const res = await fetch(`${REST}/rest/v1/jobs?id=eq.${encodeURIComponent(id)}`, {
    method: 'PATCH',
    headers: {
      apikey: KEY!,
      Authorization: `Bearer ${KEY}`,
      'Content-Type': 'application/json',
      Prefer: 'return=minimal',
    },
    body: JSON.stringify({ status, updated_at: new Date().toISOString() }),
  });
  assert.ok(res.ok, `PATCH jobs answered ${res.status}: ${await res.text()}`);
}

test('a job changed upstream moves on the board without a reload', { timeout: 120_000 }, async (t) => {
  if (!REST || !KEY) {
    t.skip('STACK_URL/SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are needed to change a job upstream');
    return;
  }
  const jobs = await apiJson<{ data: { id: string; ro_number: string; status: string }[] }>(b, '/api/jobs?limit=20');
  if (jobs.status !== 200 || !jobs.body.data?.length) {
    t.skip(`no jobs to change (GET /api/jobs answered ${jobs.status})`);
    return;
  }
  const subs = await apiJson<{ subscriptions?: { table: string; state: string }[] }>(b, '/api/subscriptions');
  if (subs.status !== 200 || !subs.body.subscriptions?.some((s) => s.table === 'jobs')) {
    t.skip('the backend has no subscription on table jobs');
    return;
  }
  const job = jobs.body.data[0];
  const next = job.status === 'paint' ? 'reassembly' : 'paint';
  const { context, page, errors } = await newPage(browser);
  try {
    await page.goto(b.uiUrl + '#/jobs');
    const row = page.locator(`[data-testid="jobs-board"] tr[data-ro="${job.ro_number}"]`);
    await row.waitFor({ timeout: 15_000 });
    const before = await page.evaluate(() => performance.getEntriesByType('resource').filter((r) => r.name.includes('/api/jobs')).length);
    await patchJob(job.id, next);
    await until('the new status on the board', async () => (await row.locator('[data-status]').getAttribute('data-status')) === next, 20_000);
    const afterCount = await page.evaluate(() => performance.getEntriesByType('resource').filter((r) => r.name.includes('/api/jobs')).length);
    assert.equal(afterCount, before, 'moved by the event stream, not by refetching /api/jobs');
    await shot(page, 'jobs-live-change');
    await patchJob(job.id, job.status);
    await until('back to the old status', async () => (await row.locator('[data-status]').getAttribute('data-status')) === job.status, 20_000);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
