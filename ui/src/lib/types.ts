// Shapes from docs/CONTRACTS.md and crates/backend/src/events.rs.

export type UpstreamState = 'not_configured' | 'online' | 'offline';

export interface HealthSample {
  ts: number;
  memory: {
    rss_bytes: number;
    allocated_bytes: number;
    resident_bytes: number;
    children_rss_bytes: number;
  };
  pool: {
    capacity: number;
    size: number;
    idle: number;
    active: number;
    waiting: number;
    timeouts_total: number;
    upstream_errors_total: number;
  };
  subscriptions: {
    total: number;
    active: number;
    persistent: number;
    capacity: number;
    failed: number;
  };
  upstream: {
    state: UpstreamState;
    latency_ms: number | null;
    offline_since: number | null;
  };
}

export type AlertLevel = 'warning' | 'critical' | 'leak' | 'offline' | 'online' | 'subscription_failed';

export interface Alert {
  ts: number;
  level: AlertLevel;
  message: string;
  value: number | null;
}

export type Row = Record<string, unknown>;

export interface RowChange {
  subscription: string;
  schema: string;
  table: string;
  type: 'INSERT' | 'UPDATE' | 'DELETE' | string;
  commit_timestamp: string;
  record: Row | null;
  old_record: Row | null;
  received_at: number;
}

export interface SubscriptionEvent {
  ts: number;
  id: string;
  state: string;
  reason: string | null;
}

export interface MemoryInfo {
  current?: { timestamp: string | number; rss: number; heapUsed: number };
  leak: null | { rate: number; first?: unknown; last?: unknown };
  slope_mb_per_h: number | null;
  thresholds: { warning_mb: number; critical_mb: number };
  verdict: 'ok' | 'warning' | 'critical' | 'leak' | string;
}

export interface HealthInfo {
  status: 'ok' | 'degraded' | 'offline' | string;
  version: string;
  uptime_s: number;
  supabase: {
    configured: boolean;
    reachable: boolean;
    latency_ms: number | null;
    offline_since: number | null;
    last_error: string | null;
  };
}

export interface Subscription {
  id: string;
  schema: string;
  table: string;
  event: string;
  filter: string | null;
  state: string;
  persistent: boolean;
  created_at: number | string;
  last_activity: number | string | null;
  events: number;
  retries: number;
  expires_at: number | string | null;
  error: string | null;
}

export interface NewSubscription {
  id?: string;
  schema: string;
  table: string;
  event: '*' | 'INSERT' | 'UPDATE' | 'DELETE';
  filter?: string;
  ttl_ms?: number;
  persistent?: boolean;
}

/** The API's one error shape. */
export interface ApiErrorBody {
  error: string;
  code: string;
  details?: unknown;
}

export interface EventMap {
  sample: HealthSample;
  alert: Alert;
  change: RowChange;
  subscription: SubscriptionEvent;
}
