import { getToken } from './token';
import type { ApiErrorBody } from './types';

/** Where the backend is: same origin when served by it, else what the desktop shell injects. */
export function apiBase(): string {
  const injected = window.__COLLISIONOS_API__;
  if (typeof injected === 'string' && injected) return injected.replace(/\/+$/, '');
  if (window.location.protocol === 'http:' || window.location.protocol === 'https:') return '';
  return 'http://127.0.0.1:3002';
}

export function apiUrl(path: string, withToken = false): string {
  const url = apiBase() + path;
  const t = getToken();
  if (!withToken || !t) return url;
  return url + (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(t);
}

/** A failed request: the backend's `{error, code}` as it is, or what went wrong on the way. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: unknown;

  constructor(status: number, code: string, message: string, details: unknown = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details;
  }

  /** The backend could not be reached at all. */
  get unreachable(): boolean {
    return this.status === 0;
  }
}

function isErrorBody(v: unknown): v is ApiErrorBody {
  return typeof v === 'object' && v !== null && typeof (v as ApiErrorBody).error === 'string';
}

export async function toApiError(res: Response): Promise<ApiError> {
  const text = await res.text().catch(() => '');
  try {
    const body: unknown = JSON.parse(text);
    if (isErrorBody(body)) {
      return new ApiError(res.status, String(body.code ?? res.status), body.error, body.details ?? null);
    }
  } catch {
    /* not JSON */
  }
  const msg = text.trim().slice(0, 300) || `${res.status} ${res.statusText}`.trim();
  return new ApiError(res.status, `http_${res.status}`, msg);
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** fetch + `Authorization: Bearer`, JSON in and out, errors as `ApiError`. */
export async function api<T>(path: string, opts: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  const t = getToken();
  if (t) headers.Authorization = `Bearer ${t}`;
  let body: string | undefined;
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.body);
  }
  // One controller for the caller's signal and the time limit (AbortSignal.any is too new
  // for some WebKitGTK builds).
  const ctrl = new AbortController();
  let timedOut = false;
  const onAbort = () => ctrl.abort();
  if (opts.signal?.aborted) ctrl.abort();
  opts.signal?.addEventListener('abort', onAbort, { once: true }); // eslint-disable-line no-restricted-syntax -- removed in finally
  const timer = globalThis.setTimeout(() => {
    timedOut = true;
    ctrl.abort();
  }, opts.timeoutMs ?? 15_000);
  let res: Response;
  try {
    res = await fetch(apiBase() + path, { method: opts.method ?? 'GET', headers, body, signal: ctrl.signal });
  } catch (e) {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
    if (opts.signal?.aborted) throw e;
    throw new ApiError(
      0,
      timedOut ? 'timeout' : 'unreachable',
      timedOut ? 'The backend did not answer in time' : 'The backend cannot be reached',
    );
  }
  let text: string;
  try {
    if (!res.ok) throw await toApiError(res);
    if (res.status === 204) return undefined as T;
    text = await res.text();
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
  }
  if (!text) return undefined as T;
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new ApiError(res.status, 'bad_json', 'The backend sent something that is not JSON');
  }
}

export function isAbort(e: unknown): boolean {
  return e instanceof DOMException && e.name === 'AbortError';
}

export function errorText(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}
