import { ColumnRing, MAX_POINTS } from './ring';
import type { HealthSample } from './types';

const MB = 1024 * 1024;

/** Column indexes in the history ring. */
export const C = {
  x: 0, // seconds since the epoch (uPlot's time unit)
  rss: 1,
  resident: 2,
  allocated: 3,
  children: 4,
  poolCapacity: 5,
  poolActive: 6,
  poolIdle: 7,
  poolWaiting: 8,
  poolSize: 9,
  timeoutsTotal: 10,
  errorsTotal: 11,
  timeoutsDelta: 12, // new acquire timeouts since the previous sample (markers)
  errorsDelta: 13, // new upstream errors since the previous sample (markers)
  subTotal: 14,
  subActive: 15,
  subPersistent: 16,
  subCapacity: 17,
  subFailed: 18,
} as const;

const COLUMNS = 19;

/**
 * The last hour of 1 s health samples, in place: 19 columns × 3600 points, allocated once.
 * Only samples newer than the newest one are taken, so a backfill and the live stream can
 * overlap without duplicates.
 */
export class HealthHistory {
  readonly ring = new ColumnRing(COLUMNS, MAX_POINTS);
  private row = new Float64Array(COLUMNS);
  private lastTs = -Infinity;
  private prevTimeouts = NaN;
  private prevErrors = NaN;
  /** Bumped on every change; charts redraw when it moved. */
  version = 0;
  latest: HealthSample | null = null;

  get newestTs(): number | null {
    return Number.isFinite(this.lastTs) ? this.lastTs : null;
  }

  get length(): number {
    return this.ring.length;
  }

  /** Append one sample; returns false when it is not newer than what we have. */
  push(s: HealthSample): boolean {
    if (!s || typeof s.ts !== 'number' || !(s.ts > 0) || !(s.ts > this.lastTs)) return false;
    const m = s.memory ?? ({} as HealthSample['memory']);
    const p = s.pool ?? ({} as HealthSample['pool']);
    const sub = s.subscriptions ?? ({} as HealthSample['subscriptions']);
    const r = this.row;
    const timeouts = num(p.timeouts_total);
    const errors = num(p.upstream_errors_total);
    r[C.x] = s.ts / 1000;
    r[C.rss] = num(m.rss_bytes) / MB;
    r[C.resident] = num(m.resident_bytes) / MB;
    r[C.allocated] = num(m.allocated_bytes) / MB;
    r[C.children] = num(m.children_rss_bytes) / MB;
    r[C.poolCapacity] = num(p.capacity);
    r[C.poolActive] = num(p.active);
    r[C.poolIdle] = num(p.idle);
    r[C.poolWaiting] = num(p.waiting);
    r[C.poolSize] = num(p.size);
    r[C.timeoutsTotal] = timeouts;
    r[C.errorsTotal] = errors;
    // A counter that went down means the backend restarted: no marker for that step.
    r[C.timeoutsDelta] = Number.isNaN(this.prevTimeouts) ? 0 : Math.max(0, timeouts - this.prevTimeouts);
    r[C.errorsDelta] = Number.isNaN(this.prevErrors) ? 0 : Math.max(0, errors - this.prevErrors);
    r[C.subTotal] = num(sub.total);
    r[C.subActive] = num(sub.active);
    r[C.subPersistent] = num(sub.persistent);
    r[C.subCapacity] = num(sub.capacity);
    r[C.subFailed] = num(sub.failed);
    this.ring.push(r);
    this.prevTimeouts = timeouts;
    this.prevErrors = errors;
    this.lastTs = s.ts;
    this.latest = s;
    this.version++;
    return true;
  }

  /** Views of every column from `fromSec` (epoch seconds) on. */
  since(fromSec: number): Float64Array[] {
    return this.ring.since(fromSec);
  }
}

function num(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}
