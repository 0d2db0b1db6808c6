import { toMs } from './format';
import type { Row } from './types';

function str(v: unknown): string | null {
  if (v === null || v === undefined || v === '') return null;
  return String(v);
}

export function roNumber(r: Row): string {
  return str(r.ro_number) ?? str(r.roNumber) ?? str(r.ro) ?? str(r.job_number) ?? str(r.number) ?? str(r.id) ?? '–';
}

export function status(r: Row): string {
  return str(r.status) ?? '–';
}

export function updatedAt(r: Row): number | null {
  return toMs((r.updated_at ?? r.updatedAt ?? r.created_at ?? r.createdAt) as string | number | null);
}

export function customer(r: Row): string | null {
  return str(r.customer_name) ?? str(r.customer) ?? str(r.owner) ?? null;
}

export function vehicle(r: Row): string | null {
  const direct = str(r.vehicle) ?? str(r.vehicle_description);
  if (direct) return direct;
  const parts = [r.year ?? r.vehicle_year, r.make ?? r.vehicle_make, r.model ?? r.vehicle_model]
    .map(str)
    .filter(Boolean);
  return parts.length ? parts.join(' ') : null;
}

const TONES: Record<string, string> = {
  // supabase/migrations/0001_init.sql: jobs_status_check
  estimate: '--fg-muted',
  approved: '--info',
  scheduled: '--info',
  intake: '--info',
  disassembly: '--accent',
  parts_pending: '--warning',
  body: '--accent',
  paint: '--c-resident',
  reassembly: '--accent',
  quality_check: '--c-allocated',
  ready: '--ok',
  delivered: '--fg-faint',
  on_hold: '--failed',
  cancelled: '--fg-faint',
};

export function statusTone(s: string): string {
  return TONES[s.toLowerCase()] ?? '--c-persistent';
}

export function statusLabel(s: string): string {
  return s.replace(/_/g, ' ');
}

export function estimate(r: Row): string | null {
  const v = r.estimate_total ?? r.estimateTotal ?? r.total;
  if (v === null || v === undefined || v === '') return null;
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  return n.toLocaleString(undefined, { style: 'currency', currency: 'USD', maximumFractionDigits: 0 });
}

export function createdAt(r: Row): number | null {
  return toMs((r.created_at ?? r.createdAt) as string | number | null);
}
