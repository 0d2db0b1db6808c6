// The page's one connection to the backend: a single EventSource on `/api/events` carrying
// `sample`, `alert`, `change` and `subscription`, reconnecting by itself, plus the bounded
// state it feeds (history rings, alerts, jobs board). Views read `live` (reactive) and
// subscribe to `hub` (counted); neither opens a stream of its own.

import { api, apiUrl, ApiError, errorText, toApiError } from './api';
import { Emitter } from './hub';
import { HealthHistory } from './history';
import { BoundedList } from './ring';
import { openStream, Scope, type TrackedStream } from './tracked';
import type {
  Alert,
  EventMap,
  HealthInfo,
  HealthSample,
  MemoryInfo,
  Row,
  RowChange,
  SubscriptionEvent,
} from './types';

export type Phase = 'connecting' | 'open' | 'reconnecting';

export interface HubMap extends EventMap {
  /** A backfill landed (charts redraw). */
  history: number;
  /** The page clock: every second, epoch ms. */
  tick: number;
}

export const hub = new Emitter<HubMap>();
export const history = new HealthHistory();

/** Seconds without a sample before charts are marked stale. */
export const STALE_AFTER_MS = 3000;
/** Seconds without any event on an open stream before it is treated as dead and reopened. */
const DEAD_AFTER_MS = 10_000;
const MAX_ALERTS = 200;
const MAX_JOBS = 200;

export interface ShownError {
  message: string;
  code: string;
}

class LiveState {
  phase = $state<Phase>('connecting');
  phaseSince = $state(Date.now());
  /** Why the stream is not open, as the backend said it (`{error, code}`) or as we saw it. */
  error = $state<ShownError | null>(null);
  /** The token was refused: the page asks for one. */
  needsToken = $state(false);
  now = $state(Date.now());
  lastSampleAt = $state(0);
  stale = $state(true);
  latest = $state.raw<HealthSample | null>(null);
  alerts = $state.raw<Alert[]>([]);
  alertsError = $state<string | null>(null);
  health = $state.raw<HealthInfo | null>(null);
  /** When `health` was fetched (its uptime is as of then). */
  healthAt = $state(0);
  memory = $state.raw<MemoryInfo | null>(null);
  jobs = $state.raw<Row[]>([]);
  jobsTotal = $state<number | null>(null);
  jobsError = $state<ShownError | null>(null);
  jobsLoaded = $state(false);
  /** Epoch ms of the last row change per job key (the board flashes it). */
  jobsTouched = $state.raw<Map<string, number>>(new Map());
  /** Chart window in seconds: 300 or 3600. */
  windowSec = $state(300);
  /** `limits`: y axes include thresholds and capacity; `data`: fit the data. */
  scale = $state<'limits' | 'data'>('limits');
  reconnects = $state(0);
}

export const live = new LiveState();

const alertList = new BoundedList<Alert>(MAX_ALERTS);

function unwrap<T>(raw: string): T | null {
  try {
    const v: unknown = JSON.parse(raw);
    // The bus serializes `{type, data}`; the SSE data is documented as the inner object.
    // Accept both.
    if (v && typeof v === 'object' && 'type' in v && 'data' in v && Object.keys(v).length === 2) {
      return (v as { data: T }).data;
    }
    return v as T;
  } catch {
    return null;
  }
}

export function jobKey(row: Row | null | undefined): string | null {
  if (!row) return null;
  const id = row.id ?? row.job_id ?? row.ro_number ?? row.roNumber;
  return id === undefined || id === null ? null : String(id);
}

function jobTime(row: Row): number {
  const v = row.updated_at ?? row.updatedAt ?? row.created_at ?? row.createdAt;
  if (typeof v === 'number') return v;
  if (typeof v === 'string') {
    const t = Date.parse(v);
    return Number.isNaN(t) ? 0 : t;
  }
  return 0;
}

function sortJobs(rows: Iterable<Row>): Row[] {
  return Array.from(rows)
    .sort((a, b) => jobTime(b) - jobTime(a))
    .slice(0, MAX_JOBS);
}

class LiveService {
  private scope: Scope | null = null;
  private stream: TrackedStream | null = null;
  private attempt = 0;
  private openedThisAttempt = false;
  private lastEventAt = 0;
  private backfilling = false;
  private buffered: HealthSample[] = [];
  private cancelRetry: (() => void) | null = null;
  private jobsMap = new Map<string, Row>();
  private lastUpstream: string | null = null;
  /** A backfill started together with the stream (first connect), picked up on open. */
  private earlyBackfill: Promise<HealthSample[]> | null = null;

  start(): void {
    if (this.scope) return;
    this.scope = new Scope();
    this.scope.every(1000, () => this.tick());
    // Ask for the last hour while the stream connects: the charts fill on open, not a round
    // trip later.
    this.earlyBackfill = this.fetchSamples(Date.now() - 3600_000);
    this.connect();
  }

  stop(): void {
    this.closeStream();
    this.cancelRetry?.();
    this.cancelRetry = null;
    this.scope?.dispose();
    this.scope = null;
  }

  /** Reconnect now (after a new token, or the user pressed "retry"). */
  reconnect(): void {
    if (!this.scope) return;
    this.attempt = 0;
    this.closeStream();
    this.cancelRetry?.();
    this.cancelRetry = null;
    this.connect();
  }

  private setPhase(p: Phase): void {
    if (live.phase !== p) {
      live.phase = p;
      live.phaseSince = Date.now();
    }
  }

  private closeStream(): void {
    this.stream?.close();
    this.stream = null;
  }

  private connect(): void {
    const scope = this.scope;
    if (!scope) return;
    this.closeStream();
    this.openedThisAttempt = false;
    this.lastEventAt = Date.now();
    const s = openStream(apiUrl('/api/events', true));
    this.stream = s;
    s.on('open', () => this.onOpen(s))
      .on('error', () => this.onError(s))
      .on('sample', (e) => this.onSample(e))
      .on('alert', (e) => this.onAlert(e))
      .on('change', (e) => this.onChange(e))
      .on('subscription', (e) => this.onSubscription(e));
  }

  private onOpen(s: TrackedStream): void {
    if (s !== this.stream) return;
    this.openedThisAttempt = true;
    this.attempt = 0;
    if (!performance.getEntriesByName('collisionos:stream-open').length) performance.mark('collisionos:stream-open');
    this.lastEventAt = Date.now();
    if (live.phase !== 'connecting') live.reconnects++;
    live.error = null;
    live.needsToken = false;
    this.setPhase('open');
    void this.refreshAfterOpen();
  }

  private onError(s: TrackedStream): void {
    if (s !== this.stream) return;
    // Take over from the browser's own retry: one stream at a time, our backoff, and the
    // backend's reason shown when it refuses.
    const neverOpened = !this.openedThisAttempt;
    this.closeStream();
    this.setPhase('reconnecting');
    live.stale = true;
    if (neverOpened) void this.diagnose();
    else live.error = { code: 'stream_lost', message: 'Live updates interrupted' };
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (!this.scope) return;
    this.cancelRetry?.();
    const base = Math.min(500 * 2 ** this.attempt, live.needsToken ? 15_000 : 5000);
    this.attempt++;
    const delay = base + Math.random() * 250;
    this.cancelRetry = this.scope.after(delay, () => {
      this.cancelRetry = null;
      this.connect();
    });
  }

  /** The stream failed to open: ask the same URL with fetch to see the status and body. */
  private async diagnose(): Promise<void> {
    const ctrl = new AbortController();
    const stop = this.scope?.after(4000, () => ctrl.abort());
    try {
      const res = await fetch(apiUrl('/api/events', true), {
        signal: ctrl.signal,
        headers: { Accept: 'text/event-stream' },
      });
      if (res.ok) {
        ctrl.abort(); // it would have worked: release the slot, the retry opens a real stream
        return;
      }
      const err = await toApiError(res);
      live.error = { code: err.code, message: err.message };
      live.needsToken = res.status === 401;
    } catch {
      if (ctrl.signal.aborted) return;
      live.error = { code: 'unreachable', message: 'The backend cannot be reached' };
    } finally {
      stop?.();
    }
  }

  private async refreshAfterOpen(): Promise<void> {
    // Fill the charts from the backend's ring before taking live samples in, so the two
    // never interleave out of order.
    this.backfilling = true;
    const early = this.earlyBackfill;
    this.earlyBackfill = null;
    let samples = early ? await early : [];
    if (!early || (samples.length === 0 && history.length === 0)) {
      samples = await this.fetchSamples(history.newestTs ?? Date.now() - 3600_000);
    }
    for (const s of samples) history.push(s);
    this.backfilling = false;
    for (const s of this.buffered.splice(0)) history.push(s);
    if (!performance.getEntriesByName('collisionos:backfill-done').length) performance.mark('collisionos:backfill-done');
    this.afterSamples();
    hub.emit('history', history.version);
    void this.loadAlerts();
    void this.loadJobs();
    void this.loadHealth();
    void this.loadMemory();
  }

  private async fetchSamples(since: number): Promise<HealthSample[]> {
    try {
      const r = await api<{ samples: HealthSample[] }>(`/api/health/samples?since=${Math.floor(since)}`);
      return r?.samples ?? [];
    } catch (e) {
      console.warn('backfill failed', errorText(e));
      return [];
    }
  }

  private afterSamples(): void {
    const latest = history.latest;
    if (!latest) return;
    if (live.latest !== latest) live.latest = latest;
    const age = Date.now() - latest.ts;
    // A fresh sample (by the backend's clock, allowing some skew) counts as live.
    if (age < STALE_AFTER_MS + 2000) live.lastSampleAt = Date.now();
    live.stale = live.phase !== 'open' || Date.now() - live.lastSampleAt > STALE_AFTER_MS;
    const up = latest.upstream?.state ?? null;
    if (up !== this.lastUpstream) {
      if (this.lastUpstream !== null) void this.loadHealth();
      this.lastUpstream = up;
    }
  }

  private onSample(e: MessageEvent): void {
    this.lastEventAt = Date.now();
    const s = unwrap<HealthSample>(e.data);
    if (!s) return;
    if (this.backfilling) {
      this.buffered.push(s);
      if (this.buffered.length > 120) this.buffered.shift();
      return;
    }
    if (history.push(s)) {
      live.lastSampleAt = Date.now();
      this.afterSamples();
      hub.emit('sample', s);
    }
  }

  private onAlert(e: MessageEvent): void {
    this.lastEventAt = Date.now();
    const a = unwrap<Alert>(e.data);
    if (!a) return;
    alertList.push(a);
    live.alerts = alertList.toArray();
    hub.emit('alert', a);
    if (a.level === 'leak' || a.level === 'warning' || a.level === 'critical') void this.loadMemory();
  }

  private onChange(e: MessageEvent): void {
    this.lastEventAt = Date.now();
    const c = unwrap<RowChange>(e.data);
    if (!c) return;
    if (c.table === 'jobs') this.applyJobChange(c);
    hub.emit('change', c);
  }

  private onSubscription(e: MessageEvent): void {
    this.lastEventAt = Date.now();
    const s = unwrap<SubscriptionEvent>(e.data);
    if (s) hub.emit('subscription', s);
  }

  private applyJobChange(c: RowChange): void {
    const kind = String(c.type).toUpperCase();
    const key = jobKey(c.record) ?? jobKey(c.old_record);
    if (!key) return;
    if (kind === 'DELETE') {
      this.jobsMap.delete(key);
    } else if (c.record) {
      this.jobsMap.set(key, { ...(this.jobsMap.get(key) ?? {}), ...c.record });
    }
    const touched = new Map(live.jobsTouched);
    touched.set(key, Date.now());
    if (touched.size > MAX_JOBS) {
      const oldest = touched.keys().next().value;
      if (oldest !== undefined) touched.delete(oldest);
    }
    live.jobsTouched = touched;
    live.jobs = sortJobs(this.jobsMap.values());
    // Keep the map bounded to what the board shows.
    if (this.jobsMap.size > MAX_JOBS) {
      const keep = new Set(live.jobs.map((r) => jobKey(r)));
      for (const k of this.jobsMap.keys()) if (!keep.has(k)) this.jobsMap.delete(k);
    }
    if (live.jobsTotal !== null) {
      if (kind === 'INSERT') live.jobsTotal++;
      else if (kind === 'DELETE') live.jobsTotal = Math.max(0, live.jobsTotal - 1);
    }
  }

  async loadJobs(): Promise<void> {
    try {
      const r = await api<{ data: Row[]; total?: number }>(`/api/jobs?limit=${MAX_JOBS}`);
      this.jobsMap.clear();
      for (const row of r?.data ?? []) {
        const k = jobKey(row);
        if (k) this.jobsMap.set(k, row);
      }
      live.jobs = sortJobs(this.jobsMap.values());
      live.jobsTotal = typeof r?.total === 'number' ? r.total : live.jobs.length;
      live.jobsError = null;
    } catch (e) {
      live.jobsError =
        e instanceof ApiError ? { message: e.message, code: e.code } : { message: errorText(e), code: 'error' };
      if (e instanceof ApiError && e.status === 401) live.needsToken = true;
    } finally {
      live.jobsLoaded = true;
    }
  }

  async loadAlerts(): Promise<void> {
    try {
      const r = await api<{ alerts: Alert[] }>('/api/alerts');
      alertList.replace(r?.alerts ?? []);
      live.alerts = alertList.toArray();
      live.alertsError = null;
    } catch (e) {
      live.alertsError = errorText(e);
    }
  }

  async loadHealth(): Promise<void> {
    try {
      live.health = await api<HealthInfo>('/api/health');
      live.healthAt = Date.now();
    } catch {
      /* the stream state says enough */
    }
  }

  async loadMemory(): Promise<void> {
    try {
      live.memory = await api<MemoryInfo>('/api/health/memory');
    } catch {
      /* keep the last thresholds */
    }
  }

  private tick(): void {
    const now = Date.now();
    live.now = now;
    live.stale = live.phase !== 'open' || now - live.lastSampleAt > STALE_AFTER_MS;
    if (this.stream && live.phase === 'open' && now - this.lastEventAt > DEAD_AFTER_MS) {
      // Open but silent (samples come every second): a half-dead connection. Start over.
      live.error = { code: 'stream_silent', message: 'No data for 10 s' };
      this.closeStream();
      this.setPhase('reconnecting');
      this.scheduleRetry();
    }
    hub.emit('tick', now);
  }
}

export const service = new LiveService();
