// Conformance of the Realtime stand-in to the official client: @supabase/realtime-js (the last
// line that runs on Node 20) subscribes to postgres_changes on public.jobs through the stack's
// gateway, then a job is inserted, updated and deleted through PostgREST. Every change the client
// hands to its callbacks is printed as one JSON line, so a Rust client's view can be compared
// line by line:
//
//   {"kind":"status","status":"SUBSCRIBED"}
//   {"kind":"system","status":"ok","message":"Subscribed to PostgreSQL","extension":"postgres_changes"}
//   {"kind":"change","binding":"all","eventType":"INSERT","schema":"public","table":"jobs",
//    "commit_timestamp":"...","new":{...},"old":{},"errors":null}
//   {"kind":"change","binding":"filtered","eventType":"UPDATE",...}   (the `id=eq.<job>` binding)
//   ...
//   {"kind":"status","status":"CLOSED"}
//   {"kind":"done","removed":"ok","channels_after_remove":0}
//
// Environment: SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY; REALTIME_VSN (default "2.0.0");
// JOB_ID (default: random). Exit 0 when the three changes arrived, 1 otherwise (after printing
// {"kind":"error",...}). Run by tests/tests/realtime_conformance.rs.

import { RealtimeClient } from '@supabase/realtime-js';
import WebSocket from 'ws';
import { randomUUID } from 'node:crypto';

const url = process.env.SUPABASE_URL;
const key = process.env.SUPABASE_SERVICE_ROLE_KEY;
const vsn = process.env.REALTIME_VSN || '2.0.0';
const jobId = process.env.JOB_ID || randomUUID();
const STEP_TIMEOUT_MS = 15000;

if (!url || !key) {
  console.error('SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are required');
  process.exit(2);
}

const print = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

function fail(message) {
  print({ kind: 'error', message });
  process.exit(1);
}

// Waiters for events, resolved by the callbacks below.
const waiters = [];
function waitFor(what, predicate) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), STEP_TIMEOUT_MS);
    waiters.push({
      predicate,
      resolve: (value) => {
        clearTimeout(timer);
        resolve(value);
      },
    });
  });
}
function notify(event) {
  for (let i = waiters.length - 1; i >= 0; i--) {
    if (waiters[i].predicate(event)) {
      waiters[i].resolve(event);
      waiters.splice(i, 1);
    }
  }
}

// What supabase-js does: http(s) -> ws(s), `/realtime/v1`, the key as `apikey`.
const client = new RealtimeClient(url.replace(/^http/, 'ws') + '/realtime/v1', {
  params: { apikey: key },
  transport: WebSocket,
  vsn,
});
client.setAuth(key);

const channel = client
  .channel('jobs-board')
  .on('postgres_changes', { event: '*', schema: 'public', table: 'jobs' }, (p) => change('all', p))
  .on(
    'postgres_changes',
    { event: 'UPDATE', schema: 'public', table: 'jobs', filter: `id=eq.${jobId}` },
    (p) => change('filtered', p),
  )
  .on('system', {}, (p) => {
    const line = { kind: 'system', status: p.status, message: p.message, extension: p.extension };
    print(line);
    notify(line);
  });

function change(binding, p) {
  const line = {
    kind: 'change',
    binding,
    eventType: p.eventType,
    schema: p.schema,
    table: p.table,
    commit_timestamp: p.commit_timestamp,
    new: p.new,
    old: p.old,
    errors: p.errors,
  };
  print(line);
  notify(line);
}

async function rest(method, query, body) {
  const res = await fetch(`${url}/rest/v1/jobs${query}`, {
    method,
    headers: {
      apikey: key,
      Authorization: `Bearer ${key}`,
      'Content-Type': 'application/json',
      'Content-Profile': 'public',
      Prefer: 'return=minimal',
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) {
    throw new Error(`${method} /rest/v1/jobs${query}: ${res.status} ${await res.text()}`);
  }
}

async function main() {
  const subscribed = waitFor('SUBSCRIBED', (e) => e.kind === 'status' && e.status === 'SUBSCRIBED');
  // SUBSCRIBED only means the join was accepted: changes are delivered once the server says
  // "Subscribed to PostgreSQL" (supabase-js #1599).
  const live = waitFor('the change feed', (e) => e.kind === 'system' && e.extension === 'postgres_changes');
  channel.subscribe((status, err) => {
    const line = { kind: 'status', status };
    if (err) line.error = String(err.message || err);
    print(line);
    notify(line);
    if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') fail(`subscribe: ${status} ${line.error || ''}`);
  });
  await subscribed;
  const system = await live;
  if (system.status !== 'ok') fail(`postgres_changes: ${system.message}`);

  // One write at a time, each awaited as the client sees it.
  const seen = (type, binding = 'all') => (e) =>
    e.kind === 'change' && e.binding === binding && e.eventType === type && (e.new.id === jobId || e.old.id === jobId);
  let got = waitFor('INSERT', seen('INSERT'));
  await rest('POST', '', { id: jobId, ro_number: `RO-${jobId.slice(0, 8)}` });
  await got;
  got = Promise.all([waitFor('UPDATE', seen('UPDATE')), waitFor('filtered UPDATE', seen('UPDATE', 'filtered'))]);
  await rest('PATCH', `?id=eq.${jobId}`, { status: 'approved' });
  await got;
  got = waitFor('DELETE', seen('DELETE'));
  await rest('DELETE', `?id=eq.${jobId}`);
  await got;

  const removed = await client.removeChannel(channel);
  await client.disconnect();
  print({ kind: 'done', removed, channels_after_remove: client.getChannels().length });
  process.exit(0);
}

main().catch((e) => fail(String(e && e.stack ? e.stack : e)));
