// Shared set-up for the e2e specs: the backend under test, Debian's Chromium through
// playwright-core, and small helpers. Works offline (no browser download).
//
// The backend: `COLLISIONOS_URL` (the UI address the backend printed, with `?token=`). When it
// is not set, a real `collisionos` binary is started here instead (`COLLISIONOS_BIN`, default
// ../target/debug/collisionos) on a free port with a throw-away data dir; a spec can then stop
// and restart it to see the page reconnect.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const ARTIFACTS = join(here, 'artifacts');
mkdirSync(ARTIFACTS, { recursive: true });

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // Timers keep their 1 s cadence in a background page.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
];

export interface Backend {
  /** Origin, e.g. http://127.0.0.1:3002 */
  origin: string;
  token: string;
  /** The UI address with `?token=`. */
  uiUrl: string;
  /** True when this process started the backend (so it can stop and restart it). */
  owned: boolean;
  stop(): Promise<void>;
  restart(): Promise<void>;
}

function parseUiUrl(u: string): { origin: string; token: string; uiUrl: string } {
  const url = new URL(u);
  const token = url.searchParams.get('token') ?? process.env.COLLISIONOS_TOKEN ?? '';
  return { origin: url.origin, token, uiUrl: `${url.origin}/?token=${encodeURIComponent(token)}` };
}

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => res(port));
    });
  });
}

function findBinary(): string | null {
  const candidates = [
    process.env.COLLISIONOS_BIN,
    resolve(here, '../../target/debug/collisionos'),
    resolve(here, '../../target/release/collisionos'),
  ].filter((x): x is string => !!x);
  return candidates.find((c) => existsSync(c)) ?? null;
}

async function startOwned(bin: string): Promise<Backend> {
  const dataDir = mkdtempSync(join(tmpdir(), 'collisionos-e2e-'));
  const port = await freePort();
  let child: ChildProcess | null = null;
  let current = { origin: '', token: '', uiUrl: '' };

  const launch = async (): Promise<void> => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      COLLISIONOS_DATA_DIR: dataDir,
      COLLISIONOS_UI_DIR: process.env.COLLISIONOS_UI_DIR ?? resolve(here, '../dist'),
      PORT: String(port),
    };
    const proc = spawn(bin, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    let out = '';
    const found = await new Promise<string>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`backend printed no UI URL in 20 s:\n${out}`)), 20_000);
      const onData = (b: Buffer) => {
        out += b.toString();
        const m = /(http:\/\/(?:127\.0\.0\.1|localhost|\[::1\]):\d+\/?\?token=[A-Za-z0-9._~%-]+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          res(m[1]);
        }
        if (out.length > 1 << 20) out = out.slice(-65536);
      };
      proc.stdout?.on('data', onData);
      proc.stderr?.on('data', onData);
      proc.once('exit', (code) => {
        clearTimeout(timer);
        rej(new Error(`backend exited (${code}) before printing its URL:\n${out}`));
      });
    });
    current = parseUiUrl(found);
  };

  const stop = async (): Promise<void> => {
    const c = child;
    child = null;
    if (!c || c.exitCode !== null) return;
    await new Promise<void>((res) => {
      const kill = setTimeout(() => c.kill('SIGKILL'), 10_000);
      c.once('exit', () => {
        clearTimeout(kill);
        res();
      });
      c.kill('SIGTERM');
    });
  };

  await launch();
  const backend: Backend = {
    get origin() {
      return current.origin;
    },
    get token() {
      return current.token;
    },
    get uiUrl() {
      return current.uiUrl;
    },
    owned: true,
    stop,
    restart: async () => {
      await stop();
      await launch();
    },
  };
  process.once('exit', () => {
    (child as ChildProcess | null)?.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  });
  return backend;
}

let backendPromise: Promise<Backend> | null = null;

/** The backend under test (one per spec file). */
export function backend(): Promise<Backend> {
  if (backendPromise) return backendPromise;
  backendPromise = (async () => {
    const env = process.env.COLLISIONOS_URL;
    if (env) {
      const p = parseUiUrl(env);
      return {
        ...p,
        owned: false,
        stop: async () => {},
        restart: async () => {},
      };
    }
    const bin = findBinary();
    if (!bin) {
      throw new Error(
        'Set COLLISIONOS_URL to the backend UI address (with ?token=), or build the backend ' +
          '(cargo build -p collisionos) so target/debug/collisionos can be started.',
      );
    }
    return startOwned(bin);
  })();
  return backendPromise;
}

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
}

export async function newPage(
  browser: Browser,
  opts: { colorScheme?: 'dark' | 'light'; width?: number; height?: number } = {},
): Promise<{ context: BrowserContext; page: Page; errors: string[] }> {
  const context = await browser.newContext({
    viewport: { width: opts.width ?? 1600, height: opts.height ?? 1000 },
    colorScheme: opts.colorScheme ?? 'dark',
    deviceScaleFactor: 1,
  });
  // tsx (esbuild keepNames) wraps named functions in `__name(...)`; functions handed to
  // page.evaluate run in the page, which has no such helper.
  await context.addInitScript('globalThis.__name = globalThis.__name || ((f) => f);');
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // A 4xx/5xx answer is shown on the page; Chromium also logs it, which is not an error here.
    if (m.type() === 'error' && !/Failed to load resource|EventSource/.test(m.text())) {
      errors.push(`console: ${m.text()}`);
    }
  });
  return { context, page, errors };
}

/** Calls the backend's API with the token. */
export async function apiJson<T>(b: Backend, path: string, init: RequestInit = {}): Promise<{ status: number; body: T }> {
  const res = await fetch(b.origin + path, {
    ...init,
    headers: {
      Authorization: `Bearer ${b.token}`,
      ...(init.body ? { 'Content-Type': 'application/json' } : {}),
      ...(init.headers ?? {}),
    },
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    /* text */
  }
  return { status: res.status, body: body as T };
}

export async function counters(page: Page): Promise<{ listeners: number; streams: number; timers: number; observers: number }> {
  return page.evaluate(() => {
    const c = window.__collisionos!;
    return { listeners: c.listeners(), streams: c.streams(), timers: c.timers(), observers: c.observers() };
  });
}

export async function shot(page: Page, name: string): Promise<string> {
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` until it returns a truthy value (or throw with the last value after `timeout`). */
export async function until<T>(what: string, fn: () => Promise<T> | T, timeout = 15_000, every = 250): Promise<T> {
  const end = Date.now() + timeout;
  let last: T | undefined;
  let lastErr: unknown;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      lastErr = e;
    }
    await sleep(every);
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)}${lastErr ? `, error: ${String(lastErr)}` : ''})`);
}
