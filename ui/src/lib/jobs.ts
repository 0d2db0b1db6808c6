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
  estimate: '--fg-muted',
  estimating: '--fg-muted',
  new: '--info',
  scheduled: '--info',
  intake: '--info',
  in_progress: '--accent',
  'in progress': '--accent',
  body: '--accent',
  paint: '--c-resident',
  painting: '--c-resident',
  waiting_parts: '--warning',
  'waiting for parts': '--warning',
  parts: '--warning',
  on_hold: '--failed',
  hold: '--failed',
  qc: '--c-allocated',
  quality_check: '--c-allocated',
  ready: '--ok',
  ready_for_pickup: '--ok',
  complete: '--ok',
  completed: '--ok',
  delivered: '--fg-faint',
  closed: '--fg-faint',
  cancelled: '--fg-faint',
};

export function statusTone(s: string): string {
  return TONES[s.toLowerCase()] ?? '--c-persistent';
}

export function statusLabel(s: string): string {
  return s.replace(/_/g, ' ');
}
