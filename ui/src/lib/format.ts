export function mb(v: number | null | undefined, digits = 1): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  return v >= 1000 ? v.toFixed(0) : v.toFixed(digits);
}

export function bytesMb(b: number | null | undefined): number {
  return typeof b === 'number' ? b / (1024 * 1024) : NaN;
}

export function toMs(v: number | string | null | undefined): number | null {
  if (v === null || v === undefined || v === '') return null;
  if (typeof v === 'number') return v < 1e11 ? v * 1000 : v; // seconds or ms since the epoch
  const n = Number(v);
  if (Number.isFinite(n)) return n < 1e11 ? n * 1000 : n;
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : t;
}

export function clock(ms: number | null | undefined, seconds = true): string {
  if (ms === null || ms === undefined) return '–';
  const d = new Date(ms);
  return d.toLocaleTimeString([], {
    hour: '2-digit',
    minute: '2-digit',
    second: seconds ? '2-digit' : undefined,
    hour12: false,
  });
}

export function dateTime(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '–';
  const d = new Date(ms);
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return clock(ms);
  return `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${clock(ms, false)}`;
}

/** "42 s", "3 min", "2 h 5 min", "3 d". */
export function duration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) ms = 0;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d`;
}

export function ago(ms: number | null | undefined, now: number): string {
  if (ms === null || ms === undefined) return '–';
  const d = now - ms;
  if (d < 1500) return 'just now';
  return `${duration(d)} ago`;
}

export function int(v: number | null | undefined): string {
  return typeof v === 'number' && Number.isFinite(v) ? Math.round(v).toLocaleString() : '–';
}
